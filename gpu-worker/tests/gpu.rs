//! The GPU path on a real NVIDIA GPU: NVDEC against libavcodec (bit
//! exact), the CUDA scaler against its CPU reference (within 1 LSB), and
//! the GPU ladder's output (NVENC, or libx264 after download) decoded
//! clean by `ffmpeg -xerror` as HLS. Without a GPU each test prints that
//! it did NOT run and returns: they never count as passed there
//! (`scripts/gpu-check.sh` runs them on a GPU machine).

use std::path::Path;
use std::process::Command;
use vodfarm_gpu_worker::media::gpu::frames::{planes_of, OwnedSource};
use vodfarm_gpu_worker::media::gpu::ladder::{run_gpu_ladder, GpuLadderRequest, GpuRung};
use vodfarm_gpu_worker::media::gpu::plan::{startup_plan, Device, Stage, StagePlan};
use vodfarm_native::cuda::CudaContext;
use vodfarm_native::nvdec::{Codec, NvdecDecoder};
use vodfarm_native::nvrtc::Nvrtc;
use vodfarm_native::probe::GpuReport;
use vodfarm_native::reference::{scale_ladder, thumbnail_rgb, ChromaSiting};
use vodfarm_native::scaler::{CudaScaler, DeviceSurface, DeviceYuv420};

/// `Some(reason)` when this machine has no usable GPU.
fn no_gpu() -> Option<String> {
    let report = GpuReport::probe();
    match (&report.cuda, report.devices.is_empty()) {
        (Err(e), _) => Some(e.clone()),
        (Ok(_), true) => Some("the CUDA driver sees no device".to_owned()),
        _ => None,
    }
}

macro_rules! require_gpu {
    ($name:literal) => {
        if let Some(why) = no_gpu() {
            println!(
                "GPU test {} did NOT run (no GPU: {why}); it is not counted as passed",
                $name
            );
            return;
        }
    };
}

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn source(dir: &Path, size: &str, seconds: &str) -> String {
    let path = dir.join("src.mp4").to_string_lossy().into_owned();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={size}:rate=30,noise=alls=12:allf=t"),
        "-t",
        seconds,
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-pix_fmt",
        "yuv420p",
        "-bf",
        "2",
        &path,
    ]);
    path
}

#[test]
fn nvdec_output_is_bit_exact_with_libavcodec() {
    require_gpu!("nvdec_output_is_bit_exact_with_libavcodec");
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source(dir.path(), "640x360", "2");
    ffmpeg_next::init().expect("libav");
    // libavcodec's frames, yuv420p.
    let mut input = ffmpeg_next::format::input(&src).expect("open");
    let stream = input
        .streams()
        .best(ffmpeg_next::media::Type::Video)
        .expect("video");
    let index = stream.index();
    let params = stream.parameters();
    let annexb = vodfarm_gpu_worker::media::gpu::annexb::AnnexB::new(
        "h264",
        &vodfarm_native::extradata(&params),
    )
    .expect("avcC");
    let mut dec = ffmpeg_next::codec::context::Context::from_parameters(params)
        .expect("ctx")
        .decoder()
        .video()
        .expect("decoder");
    let ctx = CudaContext::new(0).expect("context");
    let mut nvdec = NvdecDecoder::new(&ctx, Codec::H264, ChromaSiting::Left).expect("nvdec");
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let take = |frames: Vec<vodfarm_native::nvdec::DecodedFrame>,
                nvdec: &NvdecDecoder,
                ours: &mut Vec<Vec<u8>>| {
        for f in frames {
            let mut bytes = vec![0u8; f.surface.pitch * (f.surface.height as usize * 3 / 2)];
            f.buffer.download(&mut bytes).expect("download");
            ours.push(bytes);
            nvdec.recycle(f);
        }
    };
    for (s, packet) in input.packets() {
        if s.index() != index {
            continue;
        }
        dec.send_packet(&packet).expect("send");
        let mut frame = ffmpeg_next::frame::Video::empty();
        while dec.receive_frame(&mut frame).is_ok() {
            theirs.push(planes_of(&frame));
        }
        let data = annexb
            .convert(packet.data().unwrap_or_default(), packet.is_key())
            .expect("annexb");
        let frames = nvdec
            .decode(Some(&data), packet.pts().unwrap_or(0))
            .expect("nvdec decode");
        take(frames, &nvdec, &mut ours);
    }
    dec.send_eof().expect("eof");
    let mut frame = ffmpeg_next::frame::Video::empty();
    while dec.receive_frame(&mut frame).is_ok() {
        theirs.push(planes_of(&frame));
    }
    let frames = nvdec.decode(None, 0).expect("flush");
    take(frames, &nvdec, &mut ours);
    assert_eq!(ours.len(), theirs.len(), "frame counts");
    let (w, h) = (640usize, 360usize);
    for (n, (nv12, [y, u, v])) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(&nv12[..w * h], &y[..], "frame {n} luma");
        let uv = &nv12[w * h..w * h + w * h / 2];
        let (nu, nv): (Vec<u8>, Vec<u8>) = uv.chunks(2).map(|p| (p[0], p[1])).unzip();
        assert_eq!(&nu, u, "frame {n} Cb");
        assert_eq!(&nv, v, "frame {n} Cr");
    }
    println!("NVDEC: {} frames bit-exact with libavcodec", ours.len());
}

#[test]
fn cuda_scaler_is_within_one_lsb_of_the_reference() {
    require_gpu!("cuda_scaler_is_within_one_lsb_of_the_reference");
    let ctx = CudaContext::new(0).expect("context");
    let nvrtc = Nvrtc::load().expect("NVRTC (set NVRTC_LIB)");
    let scaler = CudaScaler::new(&ctx, &nvrtc).expect("kernels");
    let stream = ctx.stream().expect("stream");
    for ten_bit in [false, true] {
        let (w, h) = (1920u32, 1080u32);
        let bpp = if ten_bit { 2 } else { 1 };
        let pitch = w as usize * bpp;
        let mut seed = 7u32;
        let mut bytes: Vec<u8> = (0..pitch * (h as usize * 3 / 2))
            .map(|i| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((i % 251) as u32 ^ (seed >> 28)) as u8
            })
            .collect();
        if ten_bit {
            for word in bytes.chunks_mut(2) {
                word[0] &= 0xc0; // 10 bits in the high bits
            }
        }
        let mut buf = ctx.alloc(bytes.len()).expect("alloc");
        buf.upload(&bytes).expect("upload");
        let rungs = [(1920u32, 1080u32), (1280, 720), (854, 480), (426, 240)];
        let mut outs: Vec<DeviceYuv420> = rungs
            .iter()
            .map(|&(rw, rh)| DeviceYuv420 {
                buffer: ctx.alloc(DeviceYuv420::bytes(rw, rh)).expect("alloc"),
                width: rw,
                height: rh,
            })
            .collect();
        let surface = DeviceSurface {
            ptr: buf.device_ptr(),
            pitch,
            chroma_row: h as usize,
            width: w,
            height: h,
            ten_bit,
        };
        scaler
            .scale_ladder(&surface, ChromaSiting::Left, &mut outs, &stream)
            .expect("launch");
        stream.synchronize().expect("sync");
        let src = OwnedSource {
            y: bytes[..pitch * h as usize].to_vec(),
            uv: bytes[pitch * h as usize..].to_vec(),
            pitch,
            width: w,
            height: h,
            ten_bit,
        };
        // The thumbnail kernel: a 160x90 tile at (160, 90) of a 480x270 sheet.
        let mut sheet = ctx.alloc(480 * 270 * 3).expect("alloc");
        sheet.upload(&vec![0u8; 480 * 270 * 3]).expect("clear");
        scaler
            .thumbnail(
                &surface,
                ChromaSiting::Left,
                &mut sheet,
                (480, 270),
                (160, 90),
                (160, 90),
                &stream,
            )
            .expect("thumbnail launch");
        stream.synchronize().expect("sync");
        let mut rgb = vec![0u8; 480 * 270 * 3];
        sheet.download(&mut rgb).expect("download");
        let want = thumbnail_rgb(&src.picture(), ChromaSiting::Left, 160, 90);
        for row in 0..90usize {
            let got = &rgb[((90 + row) * 480 + 160) * 3..((90 + row) * 480 + 320) * 3];
            let exp = &want[row * 160 * 3..(row + 1) * 160 * 3];
            let worst = got
                .iter()
                .zip(exp)
                .map(|(&p, &q)| (i32::from(p) - i32::from(q)).abs())
                .max();
            assert!(
                worst.unwrap_or(0) <= 1,
                "thumbnail row {row} ten_bit={ten_bit}: off by {worst:?}"
            );
        }
        assert!(
            rgb[..90 * 480 * 3].iter().all(|&b| b == 0),
            "the tile wrote outside its place"
        );
        let reference = scale_ladder(&src.picture(), ChromaSiting::Left, &rungs);
        for (gpu, cpu) in outs.iter().zip(&reference) {
            let (y, u, v) = gpu.download().expect("download");
            for (name, a, b) in [("Y", &y, &cpu.y), ("U", &u, &cpu.u), ("V", &v, &cpu.v)] {
                let worst = a
                    .iter()
                    .zip(b.iter())
                    .map(|(&p, &q)| (i32::from(p) - i32::from(q)).abs())
                    .max();
                assert!(
                    worst.unwrap_or(0) <= 1,
                    "{}x{} {name} ten_bit={ten_bit}: off by {worst:?}",
                    gpu.width,
                    gpu.height
                );
            }
        }
    }
    println!("CUDA scaler: every rung and the sprite tile within 1 LSB of the CPU reference (NV12 and P010)");
}

fn ladder_decodes_clean(plan: &StagePlan, label: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source(dir.path(), "1280x720", "4");
    let req = GpuLadderRequest {
        input: Path::new(&src),
        rungs: vec![
            GpuRung {
                width: 1280,
                height: 720,
                bitrate: 2_500_000,
            },
            GpuRung {
                width: 426,
                height: 240,
                bitrate: 400_000,
            },
        ],
        gop: 60,
        preset: "veryfast".to_owned(),
    };
    let mut streams = [Vec::new(), Vec::new()];
    let mut keys = [Vec::new(), Vec::new()];
    let stats = run_gpu_ladder(&req, plan, None, &mut |p| {
        streams[p.rung].extend_from_slice(p.data);
        if p.keyframe {
            keys[p.rung].push(p.pts);
        }
        Ok(())
    })
    .expect("GPU ladder");
    assert_eq!(stats.frames, 120);
    for (i, es) in streams.iter().enumerate() {
        assert!(
            keys[i].contains(&0) && keys[i].contains(&60),
            "{label} rung {i}: IDRs at {:?}",
            keys[i]
        );
        let h264 = dir.path().join(format!("rung{i}.h264"));
        std::fs::write(&h264, es).expect("write");
        let hls = dir.path().join(format!("rung{i}.m3u8"));
        ffmpeg(&[
            "-r",
            "30",
            "-i",
            &h264.to_string_lossy(),
            "-c",
            "copy",
            "-f",
            "hls",
            "-hls_time",
            "2",
            "-hls_playlist_type",
            "vod",
            &hls.to_string_lossy(),
        ]);
        ffmpeg(&["-xerror", "-i", &hls.to_string_lossy(), "-f", "null", "-"]);
    }
    println!(
        "GPU ladder ({label}, {}): {} frames, HLS decodes clean",
        plan.summary(),
        stats.frames
    );
}

#[test]
fn gpu_ladder_hls_decodes_clean() {
    require_gpu!("gpu_ladder_hls_decodes_clean");
    let plan = startup_plan(true);
    if plan.scale.device == Device::Cpu {
        println!(
            "GPU ladder did NOT run: the scaler is on the CPU ({})",
            plan.scale.reason
        );
        return;
    }
    ladder_decodes_clean(&plan, "as probed");
    if plan.encode.device != Device::Cpu {
        // Also the no-NVENC path (A100/H100/H200) on this GPU.
        let mut download = plan.clone();
        download.encode = Stage {
            device: Device::Cpu,
            implementation: "libx264",
            reason: "forced by the test".to_owned(),
        };
        ladder_decodes_clean(&download, "download + libx264");
    } else {
        println!(
            "NVENC part skipped: this GPU has no usable NVENC ({}); the download + libx264 path ran",
            plan.encode.reason
        );
    }
}

#[test]
fn probe_on_a_gpu_lists_devices() {
    require_gpu!("probe_on_a_gpu_lists_devices");
    let report = GpuReport::probe();
    let d = &report.devices[0];
    assert!(d.info.total_memory > 0);
    println!("{report:#?}");
}
