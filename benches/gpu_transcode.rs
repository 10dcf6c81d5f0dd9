//! `cargo bench --bench gpu_transcode`: the transcode job's own pipeline
//! (`transcode()` with the worker's GPU access, as the transcode and chunk
//! jobs call it) on the GPU (NVDEC → one fused CUDA scale pass → NVENC, or
//! libx264 after downloading the rungs where the GPU has no NVENC; HLS
//! MPEG-TS segments written) against one ffmpeg command doing the same
//! ladder on the GPU: `-hwaccel cuda -hwaccel_output_format cuda`,
//! `scale_cuda` per rung, `h264_nvenc` (or `hwdownload` + libx264).
//!
//! Source: BENCH_SECONDS (default 30) of 1080p30 `testsrc2` with temporal
//! noise. Rungs: the default ladder's (240p/720p/1080p) at its bitrates,
//! an IDR every 6 s segment. Video only: audio and packaging are the
//! software bench's business (`benches/transcode.rs`).
//!
//! Last line: `gpu: stages=<decode,scale,encode devices> ours_fps=<x>
//! peer_fps=<x> ratio=<x> psnr_delta_db=<x>` (ours minus peer, mean over
//! rungs, each against the source scaled with the area filter). Without a
//! GPU: `gpu: NOT RUN (<reason>)`.

#[path = "support/ffmpeg.rs"]
mod ffmpeg_support;

use anyhow::{Context, Result};
use ffmpeg_support::{psnr, run};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;
use vodfarm_core::ladder::RenditionLadder;
use vodfarm_core::playlists::Packaging;
use vodfarm_gpu_worker::media::gpu::plan::{Device, StagePlan};
use vodfarm_gpu_worker::media::gpu::select::{GpuAccess, GpuEnvironment};
use vodfarm_gpu_worker::media::probe::{rung_size, Limits};
use vodfarm_gpu_worker::media::stages::StageChoice;
use vodfarm_gpu_worker::media::transcode::{transcode, TranscodeRequest};
use vodfarm_gpu_worker::media::JobControl;

const SEGMENT: u32 = 6;
const FPS: u32 = 30;

/// A rung of the peer's command and of the PSNR check.
struct Rung {
    width: u32,
    height: u32,
    bitrate: u32,
}

fn main() -> Result<()> {
    let env = GpuEnvironment::probe(true);
    let plan = StagePlan::choose(&env.report, env.nvrtc.clone(), "h264", 8, true);
    if plan.decode.device == Device::Cpu || plan.scale.device == Device::Cpu {
        let why = if plan.decode.device == Device::Cpu {
            &plan.decode.reason
        } else {
            &plan.scale.reason
        };
        println!("gpu: NOT RUN ({why})");
        return Ok(());
    }
    let seconds: u32 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let preset = std::env::var("BENCH_PRESET").unwrap_or_else(|_| "veryfast".into());
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("source.mp4");
    println!(
        "stages: {} (encode: {})",
        plan.summary(),
        plan.encode.implementation
    );
    println!("making a {seconds} s 1080p30 source with motion and noise …");
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-y", "-f", "lavfi", "-i"])
        .arg(format!(
            "testsrc2=size=1920x1080:rate={FPS}:duration={seconds},noise=alls=10:allf=t+u"
        ))
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "14",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(&source))?;
    let ladder = RenditionLadder::default();
    let rungs: Vec<Rung> = ladder
        .rungs
        .iter()
        .map(|r| {
            let (width, height) = rung_size(1920, 1080, r.height);
            Rung {
                width,
                height,
                bitrate: r.video_bitrate,
            }
        })
        .collect();
    let frames = f64::from(seconds * FPS);
    let gop = SEGMENT * FPS;

    // Ours: the job's pipeline, segments and playlists on disk.
    let out_dir = dir.path().join("ours");
    let request = TranscodeRequest {
        source: source.clone(),
        work_dir: out_dir.clone(),
        ladder: ladder.clone(),
        segment_seconds: SEGMENT,
        preset: preset.clone(),
        stages: StageChoice::SOFTWARE,
        limits: Limits::default(),
        packaging: Packaging::Ts,
        chunk: None,
        gpu: Some(GpuAccess {
            env: Arc::new(env),
            nvenc_sessions: Arc::new(tokio::sync::Semaphore::new(64)),
            metrics: None,
        }),
    };
    let started = Instant::now();
    let output = transcode(&request, &JobControl::default(), |_| Ok(()))?;
    let ours_secs = started.elapsed().as_secs_f64();
    let ran = output.plan.clone();
    // The peer encodes where ours did.
    let nvenc = ran.encode.device != Device::Cpu;
    if ran.decode.device == Device::Cpu || ran.scale.device == Device::Cpu {
        println!(
            "gpu: NOT RUN (the job took the software path: {})",
            ran.decode.reason
        );
        return Ok(());
    }
    let mut ours = Vec::new();
    for r in &ladder.rungs {
        let rendition = output
            .renditions
            .iter()
            .find(|x| x.name == r.name)
            .with_context(|| format!("no rendition {}", r.name))?;
        let playlist = out_dir.join(&r.name).join("index.m3u8");
        std::fs::write(&playlist, rendition.media_playlist_for(Packaging::Ts))?;
        ours.push(playlist);
    }
    let ours_fps = frames / ours_secs;
    println!(
        "ours: {} frames in {ours_secs:.1} s, {ours_fps:.1} source fps ({})",
        output.frames,
        ran.summary()
    );

    // Peer: one ffmpeg command, frames on the GPU, one scale_cuda per rung.
    let peer: Vec<PathBuf> = (0..rungs.len())
        .map(|i| dir.path().join(format!("peer{i}.h264")))
        .collect();
    let mut filter = format!("[0:v]split={}", rungs.len());
    for i in 0..rungs.len() {
        filter.push_str(&format!("[s{i}]"));
    }
    for (i, r) in rungs.iter().enumerate() {
        if nvenc {
            filter.push_str(&format!(
                ";[s{i}]scale_cuda={}:{}:interp_algo=bilinear[v{i}]",
                r.width, r.height
            ));
        } else {
            filter.push_str(&format!(
                ";[s{i}]scale_cuda={}:{}:interp_algo=bilinear,hwdownload,format=nv12[v{i}]",
                r.width, r.height
            ));
        }
    }
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-y",
        "-hwaccel",
        "cuda",
        "-hwaccel_output_format",
        "cuda",
        "-i",
    ])
    .arg(&source)
    .args(["-filter_complex", &filter]);
    for (i, r) in rungs.iter().enumerate() {
        let (b, max, buf) = (r.bitrate, r.bitrate / 2 * 3, r.bitrate * 2);
        cmd.args(["-map", &format!("[v{i}]")]);
        if nvenc {
            cmd.args([
                "-c:v",
                "h264_nvenc",
                "-preset",
                "p5",
                "-tune",
                "hq",
                "-profile:v",
                "high",
                "-bf",
                "0",
            ]);
            cmd.args(["-forced-idr", "1"]);
        } else {
            cmd.args(["-c:v", "libx264", "-preset", &preset, "-profile:v", "high"]);
        }
        cmd.args([
            "-b:v",
            &b.to_string(),
            "-maxrate",
            &max.to_string(),
            "-bufsize",
            &buf.to_string(),
            "-g",
            &gop.to_string(),
            "-keyint_min",
            &gop.to_string(),
        ]);
        cmd.arg(&peer[i]);
    }
    let started = Instant::now();
    run(&mut cmd)?;
    let peer_secs = started.elapsed().as_secs_f64();
    let peer_fps = frames / peer_secs;
    println!("peer: {peer_secs:.1} s, {peer_fps:.1} source fps");

    let mut delta = 0.0;
    for (i, r) in rungs.iter().enumerate() {
        let a = psnr(&ours[i], &source, r.width, r.height, "area", None)?;
        let b = psnr(&peer[i], &source, r.width, r.height, "area", Some(FPS))?;
        println!(
            "{}x{}: PSNR ours {a:.2} dB, peer {b:.2} dB",
            r.width, r.height
        );
        delta += a - b;
    }
    delta /= rungs.len() as f64;
    println!(
        "gpu: stages={} ours_fps={ours_fps:.1} peer_fps={peer_fps:.1} ratio={:.2} psnr_delta_db={delta:.2}",
        ran.summary(),
        ours_fps / peer_fps
    );
    Ok(())
}
