//! `vodfarm worker --probe`: the machine's GPUs and which stage runs
//! where, as JSON an operator (or a node-labelling job) can read.

use super::plan::{Stage, StagePlan};
use serde_json::{json, Value};
use vodfarm_native::nvrtc::Nvrtc;
use vodfarm_native::probe::{DeviceReport, GpuReport};

/// Probes the GPUs and NVRTC and says where each stage of an 8-bit
/// H.264 source would run (`allow_gpu`: `--gpu auto`).
pub fn probe_json(allow_gpu: bool) -> Value {
    let report = GpuReport::probe();
    let nvrtc = Nvrtc::load().and_then(|n| n.version());
    let plan = StagePlan::choose(
        &report,
        nvrtc.as_ref().map(|_| ()).map_err(ToString::to_string),
        "h264",
        8,
        allow_gpu,
    );
    render(&report, &nvrtc.map_err(|e| e.to_string()), &plan)
}

fn outcome<T>(r: &Result<T, String>, ok: impl FnOnce(&T) -> Value) -> Value {
    match r {
        Ok(v) => ok(v),
        Err(e) => json!({ "available": false, "reason": e }),
    }
}

fn stage(s: &Stage) -> Value {
    json!({
        "device": s.device.label(),
        "implementation": s.implementation,
        "reason": if s.reason.is_empty() { Value::Null } else { Value::from(s.reason.clone()) },
    })
}

fn device(d: &DeviceReport) -> Value {
    json!({
        "ordinal": d.info.ordinal,
        "name": d.info.name,
        "compute_capability": format!("{}.{}", d.info.compute_capability.0, d.info.compute_capability.1),
        "memory_total_bytes": d.info.total_memory,
        "memory_free_bytes": d.free_memory,
        "nvdec": outcome(&d.nvdec, |caps| json!({
            "available": caps.iter().any(|c| c.supported),
            "codecs": caps.iter().filter(|c| c.supported).map(|c| json!({
                "codec": c.codec.name(),
                "bit_depth": c.bit_depth,
                "max_width": c.max_width,
                "max_height": c.max_height,
                "engines": c.engines,
            })).collect::<Vec<_>>(),
        })),
        "nvenc": outcome(&d.nvenc, |caps| json!({
            "available": true,
            "codecs": caps.codecs,
            "max_width": caps.max_width,
            "max_height": caps.max_height,
            "engines": caps.engines,
            "ten_bit": caps.ten_bit,
        })),
    })
}

/// The JSON document of a report and plan.
pub fn render(report: &GpuReport, nvrtc: &Result<String, String>, plan: &StagePlan) -> Value {
    json!({
        "cuda": outcome(&report.cuda, |v| json!({ "available": true, "driver_version": v })),
        "nvrtc": outcome(nvrtc, |v| json!({ "available": true, "version": v })),
        "devices": report.devices.iter().map(device).collect::<Vec<_>>(),
        "stages": {
            "decode": stage(&plan.decode),
            "scale": stage(&plan.scale),
            "encode": stage(&plan.encode),
            "thumbnails": stage(&plan.thumbnails),
        },
        "summary": plan.summary(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_on_this_machine_is_complete_json() {
        let doc = probe_json(true);
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        for key in ["cuda", "nvrtc", "devices", "stages", "summary"] {
            assert!(doc.get(key).is_some(), "missing {key}");
        }
        for s in ["decode", "scale", "encode", "thumbnails"] {
            let device = doc["stages"][s]["device"].as_str().unwrap_or_default();
            assert!(
                device == "cpu" || device.starts_with("gpu"),
                "{s}: {device}"
            );
            if device == "cpu" {
                assert!(
                    doc["stages"][s]["reason"].is_string(),
                    "{s} on the CPU says why"
                );
            }
        }
        if doc["cuda"]["available"] == false {
            assert_eq!(doc["summary"], "decode=cpu,scale=cpu,encode=cpu");
            assert!(doc["cuda"]["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("libcuda.so.1"));
            println!("no GPU here: GPU stages did NOT run (software plan checked)");
        }
    }

    #[test]
    fn gpu_off_says_so() {
        let doc = probe_json(false);
        assert_eq!(doc["stages"]["encode"]["reason"], "--gpu off");
    }
}
