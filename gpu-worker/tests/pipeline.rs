//! The media pipeline on its own (no coordinator): a lavfi source through
//! `transcode` and `thumbnails`, outputs checked with ffprobe.

use std::path::Path;
use std::process::Command;
use vodfarm_core::ladder::RenditionLadder;
use vodfarm_core::playlists::Packaging;
use vodfarm_gpu_worker::media::probe::Limits;
use vodfarm_gpu_worker::media::stages::StageChoice;
use vodfarm_gpu_worker::media::thumbs::{thumbnails, ThumbnailRequest};
use vodfarm_gpu_worker::media::transcode::{transcode, TranscodeRequest};
use vodfarm_gpu_worker::media::{JobControl, MediaError};

fn ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg {args:?}");
}

fn probe_json(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}

/// `dir/src.mp4`: `seconds` of 640x360 25 fps H.264 and an AAC tone.
fn source(dir: &Path, seconds: u32) -> std::path::PathBuf {
    let src = dir.join("src.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size=640x360:rate=25:duration={seconds}"),
        "-f",
        "lavfi",
        "-i",
        &format!("sine=frequency=300:duration={seconds}"),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        "-shortest",
        src.to_str().unwrap(),
    ]);
    src
}

/// The default ladder, software stages, MPEG-TS, `ultrafast`.
fn ts_request(
    source: &Path,
    work_dir: &Path,
    segment_seconds: u32,
    gpu: Option<vodfarm_gpu_worker::media::gpu::select::GpuAccess>,
) -> TranscodeRequest {
    TranscodeRequest {
        source: source.to_path_buf(),
        work_dir: work_dir.to_path_buf(),
        ladder: RenditionLadder::default(),
        segment_seconds,
        preset: "ultrafast".into(),
        stages: StageChoice::SOFTWARE,
        limits: Limits::default(),
        packaging: Packaging::Ts,
        chunk: None,
        gpu,
    }
}

#[test]
fn a_one_second_source_becomes_segments_and_thumbnails() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path(), 1);
    let segments = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = segments.clone();
    let request = ts_request(&src, &dir.path().join("out"), 1, None);
    let out = transcode(&request, &JobControl::default(), move |s| {
        seen.lock().unwrap().push(s);
        Ok(())
    })
    .unwrap();
    assert_eq!(out.renditions.len(), 1, "a 360p source gets 240p only");
    let r = &out.renditions[0];
    assert_eq!((r.width, r.height), (426, 240));
    assert_eq!(out.frames, 25);
    let segs = segments.lock().unwrap().clone();
    assert_eq!(segs.len(), r.segments.len());
    let p = probe_json(&segs[0].path);
    let streams = p["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2, "video and audio: {p}");
    assert_eq!(streams[0]["width"], 426, "{p}");

    let t = thumbnails(
        &ThumbnailRequest {
            source: src,
            work_dir: dir.path().join("thumbs"),
            interval_seconds: 10,
            sprite_columns: 10,
            sprite_tile_width: 160,
            limits: Limits::default(),
        },
        &JobControl::default(),
    )
    .unwrap();
    assert_eq!(t.frames.len(), 1);
    let p = probe_json(&t.sprite.path);
    assert_eq!(p["streams"][0]["codec_name"], "mjpeg");
    assert_eq!(p["streams"][0]["width"], 160);
}

#[test]
fn junk_is_refused_as_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.path().join("text.mp4");
    std::fs::write(
        &text,
        b"this is not a video at all, just some words\n".repeat(100),
    )
    .unwrap();
    for (path, want) in [(&empty, "empty"), (&text, "not a video")] {
        let request = ts_request(path, &dir.path().join("out"), 2, None);
        let err = transcode(&request, &JobControl::default(), |_| Ok(())).unwrap_err();
        assert!(err.is_bad_input(), "{err}");
        assert!(err.to_string().contains(want), "{err}");
        assert!(!matches!(err, MediaError::Internal(_)));
    }
}

/// Every segment file `transcode` wrote, by name, with its bytes.
fn outputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for rung in std::fs::read_dir(dir).unwrap() {
        let rung = rung.unwrap().path();
        for f in std::fs::read_dir(&rung).unwrap() {
            let f = f.unwrap().path();
            let name = f.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            files.push((name, std::fs::read(&f).unwrap()));
        }
    }
    files.sort();
    files
}

#[test]
fn with_the_workers_gpu_access_and_no_gpu_the_output_is_packet_for_packet_the_software_one() {
    use std::sync::Arc;
    use vodfarm_gpu_worker::media::gpu::plan::Device;
    use vodfarm_gpu_worker::media::gpu::select::{GpuAccess, GpuEnvironment};
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path(), 2);
    let env = GpuEnvironment::probe(true);
    if env.report.cuda.is_ok() && !env.report.devices.is_empty() {
        println!("this machine has a GPU: the software-equality check is for machines without one");
        return;
    }
    let run = |out: &str, gpu: Option<GpuAccess>| {
        let request = ts_request(&src, &dir.path().join(out), 1, gpu);
        transcode(&request, &JobControl::default(), |_| Ok(())).unwrap()
    };
    let access = GpuAccess {
        env: Arc::new(env),
        nvenc_sessions: Arc::new(tokio::sync::Semaphore::new(8)),
        metrics: None,
    };
    let with = run("with", Some(access));
    let without = run("without", None);
    assert_eq!(with.plan.summary(), "decode=cpu,scale=cpu,encode=cpu");
    assert_eq!(with.plan.decode.device, Device::Cpu);
    assert!(!with.plan.decode.reason.is_empty(), "the fallback says why");
    assert_eq!(with.decoder, without.decoder);
    // The same segment files, carrying the same packets: per rung and
    // stream, every packet's timestamps and flags, in order. (Not the
    // files' bytes: how audio and video packets interleave in the
    // transport stream depends on which encoder thread delivered first.)
    let (a, b) = (
        outputs(&dir.path().join("with")),
        outputs(&dir.path().join("without")),
    );
    assert!(!a.is_empty());
    let names = |o: &[(String, Vec<u8>)]| o.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "the same segment files");
    for rung in std::fs::read_dir(dir.path().join("with")).unwrap() {
        let rung = rung.unwrap().file_name();
        let (pa, pb) = (
            packets(&dir.path().join("with").join(&rung)),
            packets(&dir.path().join("without").join(&rung)),
        );
        assert!(!pa.is_empty());
        for (stream, la) in &pa {
            let lb = &pb[stream];
            let first = la.iter().zip(lb).position(|(x, y)| x != y);
            assert!(
                first.is_none() && la.len() == lb.len(),
                "{rung:?} stream {stream}: the packets differ between the two runs \
                 (at packet {first:?} of {} / {}: {:?} vs {:?})",
                la.len(),
                lb.len(),
                first.map(|i| &la[i]),
                first.map(|i| &lb[i]),
            );
        }
    }
}

/// Every packet of a rung's segments (in segment order), per stream:
/// `pts,dts,flags` as ffprobe reads them. Not the payloads: two runs of
/// the same software transcode gave different payloads for one 240p
/// packet about one time in three (same timestamps and flags; see
/// ARCHITECTURE.md's Known gaps).
fn packets(rung: &Path) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut segments: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(rung)
        .unwrap()
        .filter_map(|f| {
            let path = f.unwrap().path();
            let n = path
                .file_stem()?
                .to_str()?
                .strip_prefix("segment_")?
                .parse()
                .ok()?;
            Some((n, path))
        })
        .collect();
    segments.sort();
    let mut per_stream: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (_, seg) in segments {
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-print_format", "json"])
            .args(["-show_entries", "packet=stream_index,pts,dts,flags"])
            .arg(&seg)
            .output()
            .expect("ffprobe");
        assert!(out.status.success(), "ffprobe {}", seg.display());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
        for p in v["packets"].as_array().expect("packets") {
            per_stream
                .entry(p["stream_index"].to_string())
                .or_default()
                .push(format!("{},{},{}", p["pts"], p["dts"], p["flags"]));
        }
    }
    per_stream
}
