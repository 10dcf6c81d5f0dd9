//! `cargo bench --bench transcode`: our full ladder against one ffmpeg
//! CLI command doing the same ladder, same source, same machine, same run.
//!
//! Source: BENCH_SECONDS (default 60) of 1080p30 `testsrc2` with temporal
//! noise (real-looking motion: nothing repeats, every block changes) and
//! a tone. Both sides: 240p/720p/1080p at the default ladder's bitrates,
//! libx264 `veryfast` (BENCH_PRESET), High profile, VBV max 1.5x / buffer
//! 2x, closed GOPs with IDR every segment (6 s), AAC 128k, HLS MPEG-TS.
//! Ours decodes once, shares one AAC encode and runs each rung's scale +
//! encode on its own thread; the peer is
//! `split → 3 scales → 3 libx264 → 3 AAC → hls`.
//!
//! Also prints the bytes a CMAF video (HLS + DASH from one set of
//! segments) stores against MPEG-TS plus a separate fMP4 copy for DASH:
//! `cmaf_storage: ours=<bytes> peer=<bytes> ratio=<x>`.
//!
//! Last line: `transcode: ours=<fps> peer=<fps> ratio=<x> psnr_delta_db=<x>`.

#[path = "support/ffmpeg.rs"]
mod ffmpeg_support;

use anyhow::Result;
use ffmpeg_support::{psnr, run};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use vodfarm_core::ladder::RenditionLadder;
use vodfarm_core::playlists::{Packaging, RenditionSet};
use vodfarm_gpu_worker::media::probe::{rung_size, Limits};
use vodfarm_gpu_worker::media::stages::{StageChoice, VideoEncoderSettings};
use vodfarm_gpu_worker::media::transcode::{transcode, TranscodeRequest};
use vodfarm_gpu_worker::media::JobControl;

const SEGMENT: u32 = 6;

fn main() -> Result<()> {
    let seconds: u32 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let preset = std::env::var("BENCH_PRESET").unwrap_or_else(|_| "veryfast".into());
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("source.mp4");
    println!("making a {seconds} s 1080p30 source with motion and noise …");
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-y", "-f", "lavfi", "-i"])
        .arg(format!(
            "testsrc2=size=1920x1080:rate=30:duration={seconds},noise=alls=10:allf=t+u"
        ))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={seconds}"))
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "14",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
        ])
        .arg(&source))?;
    let ladder = RenditionLadder::default();
    let frames = f64::from(seconds * 30);

    // Ours: the worker's pipeline in-process, segments moved to a
    // directory as they are finished (as the uploader would take them).
    let ours_dir = dir.path().join("ours");
    let finished = ours_dir.join("done");
    std::fs::create_dir_all(&finished)?;
    let request = TranscodeRequest {
        source: source.clone(),
        work_dir: ours_dir.join("work"),
        ladder: ladder.clone(),
        segment_seconds: SEGMENT,
        preset: preset.clone(),
        stages: StageChoice::SOFTWARE,
        limits: Limits::default(),
        packaging: Packaging::Ts,
        chunk: None,
        gpu: None,
    };
    let done = finished.clone();
    let started = Instant::now();
    let output = transcode(&request, &JobControl::default(), move |seg| {
        let to = done.join(&seg.rendition);
        std::fs::create_dir_all(&to)?;
        std::fs::rename(&seg.path, to.join(format!("segment_{}.ts", seg.index)))?;
        Ok(())
    })?;
    let ours_secs = started.elapsed().as_secs_f64();
    for r in &output.renditions {
        std::fs::write(
            finished.join(&r.name).join("playlist.m3u8"),
            r.media_playlist(),
        )?;
    }
    let ours_fps = frames / ours_secs;
    println!("ours: {ours_secs:.1} s, {ours_fps:.1} source fps");

    // Peer: one ffmpeg command, the same ladder.
    let peer_dir = dir.path().join("peer");
    std::fs::create_dir_all(&peer_dir)?;
    let mut filter = String::from("[0:v]split=3");
    for i in 0..ladder.rungs.len() {
        filter.push_str(&format!("[s{i}]"));
    }
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-y", "-i"]).arg(&source);
    let mut maps = Vec::new();
    for (i, r) in ladder.rungs.iter().enumerate() {
        let (w, h) = rung_size(1920, 1080, r.height);
        filter.push_str(&format!(";[s{i}]scale={w}:{h}:flags=bicubic[v{i}]"));
        let s = VideoEncoderSettings {
            width: w,
            height: h,
            fps: ffmpeg_next::Rational::new(30, 1),
            bitrate: r.video_bitrate,
            gop: 30 * SEGMENT,
            preset: preset.clone(),
            global_header: false,
        };
        maps.extend([
            "-map".to_string(),
            format!("[v{i}]"),
            "-map".into(),
            "0:a".into(),
            format!("-b:v:{i}"),
            s.bitrate.to_string(),
            format!("-maxrate:v:{i}"),
            s.max_bitrate().to_string(),
            format!("-bufsize:v:{i}"),
            s.buffer_size().to_string(),
        ]);
    }
    cmd.args(["-filter_complex", &filter]).args(&maps);
    cmd.args([
        "-c:v",
        "libx264",
        "-preset",
        &preset,
        "-profile:v",
        "high",
        "-pix_fmt",
        "yuv420p",
    ])
    .args([
        "-g",
        &(30 * SEGMENT).to_string(),
        "-flags",
        "+cgop",
        "-forced-idr",
        "1",
    ])
    .args([
        "-force_key_frames",
        &format!("expr:gte(t,n_forced*{SEGMENT})"),
    ])
    .args(["-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2"])
    .args([
        "-f",
        "hls",
        "-hls_time",
        &SEGMENT.to_string(),
        "-hls_playlist_type",
        "vod",
    ])
    .args([
        "-var_stream_map",
        "v:0,a:0 v:1,a:1 v:2,a:2",
        "-master_pl_name",
        "master.m3u8",
    ])
    .arg("-hls_segment_filename")
    .arg(peer_dir.join("%v/segment_%d.ts"))
    .arg(peer_dir.join("%v/playlist.m3u8"));
    let started = Instant::now();
    run(&mut cmd)?;
    let peer_secs = started.elapsed().as_secs_f64();
    let peer_fps = frames / peer_secs;
    println!("peer (ffmpeg CLI): {peer_secs:.1} s, {peer_fps:.1} source fps");

    let mut deltas = Vec::new();
    for (i, r) in ladder.rungs.iter().enumerate() {
        let (w, h) = rung_size(1920, 1080, r.height);
        let ours_pl: PathBuf = finished.join(&r.name).join("playlist.m3u8");
        let peer_pl: PathBuf = peer_dir.join(i.to_string()).join("playlist.m3u8");
        let o = psnr(&ours_pl, &source, w, h, "bicubic", None)?;
        let p = psnr(&peer_pl, &source, w, h, "bicubic", None)?;
        println!("{:>6}: PSNR ours {o:.2} dB, peer {p:.2} dB", r.name);
        deltas.push(o - p);
    }
    let delta = deltas.iter().sum::<f64>() / deltas.len() as f64;

    // Storage: the same source packaged as CMAF (one set of fMP4
    // segments + HLS playlists + MPD) against what serving both HLS and
    // DASH costs without it: the MPEG-TS set plus a separate fMP4 copy
    // (+ MPD) for DASH.
    let cmaf_dir = dir.path().join("cmaf");
    let cmaf_request = TranscodeRequest {
        work_dir: cmaf_dir.clone(),
        packaging: Packaging::Cmaf,
        ..request.clone()
    };
    let cmaf = transcode(&cmaf_request, &JobControl::default(), |_| Ok(()))?;
    let mut fmp4_bytes = 0u64;
    let mut hls_bytes = 0u64;
    for r in cmaf.renditions.iter().chain(cmaf.audio.iter()) {
        let init = std::fs::metadata(cmaf_dir.join(&r.name).join("init.mp4"))?.len();
        fmp4_bytes += init + r.bytes();
        hls_bytes += r.media_playlist_for(Packaging::Cmaf).len() as u64;
    }
    let set = RenditionSet {
        renditions: cmaf.renditions.clone(),
        packaging: Packaging::Cmaf,
        audio: cmaf.audio.clone(),
    };
    let mpd_bytes = set.mpd("v_bench", &[]).len() as u64;
    hls_bytes += set.master_playlist("v_bench", &[]).len() as u64;
    let ts_bytes = dir_bytes(&finished)?;
    let cmaf_total = fmp4_bytes + hls_bytes + mpd_bytes;
    let separate = ts_bytes + fmp4_bytes + mpd_bytes;
    println!(
        "storage: CMAF (HLS + DASH) {:.1} MB; MPEG-TS {:.1} MB + separate fMP4 copy {:.1} MB = {:.1} MB",
        cmaf_total as f64 / 1e6,
        ts_bytes as f64 / 1e6,
        (fmp4_bytes + mpd_bytes) as f64 / 1e6,
        separate as f64 / 1e6
    );
    println!(
        "cmaf_storage: ours={cmaf_total} peer={separate} ratio={:.2}",
        cmaf_total as f64 / separate as f64
    );
    println!(
        "transcode: ours={ours_fps:.1} peer={peer_fps:.1} ratio={:.2} psnr_delta_db={delta:.2}",
        ours_fps / peer_fps
    );
    Ok(())
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            dir_bytes(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}
