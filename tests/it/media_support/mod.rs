//! Media test support: lavfi sources, a `vodfarm worker` process, and
//! checks that decode our output with ffprobe/ffmpeg.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Runs ffmpeg quietly; panics when it fails.
pub(crate) fn ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg {args:?}");
}

/// ffprobe's JSON for `path` with extra arguments.
pub(crate) fn ffprobe(path: &Path, extra: &[&str]) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json"])
        .args(extra)
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}

/// A test source: how to make it and what it is.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// Short name (file name).
    pub(crate) name: &'static str,
    /// ffmpeg arguments after the inputs are defined, before the output.
    pub(crate) args: Vec<String>,
    /// Upright display size.
    pub(crate) display: (u32, u32),
    /// Has an audio track.
    pub(crate) audio: bool,
    /// Output frame rate we expect (constant).
    pub(crate) fps: f64,
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(ToString::to_string).collect()
}

/// `testsrc2` video (+ a sine tone) of `w`x`h` at `rate` for `secs`.
pub(crate) fn lavfi(
    name: &'static str,
    w: u32,
    h: u32,
    rate: u32,
    secs: f64,
    audio: bool,
) -> Source {
    let mut args = s(&["-f", "lavfi", "-i"]);
    args.push(format!("testsrc2=size={w}x{h}:rate={rate}:duration={secs}"));
    if audio {
        args.extend(s(&["-f", "lavfi", "-i"]));
        args.push(format!(
            "sine=frequency=440:sample_rate=44100:duration={secs}"
        ));
        args.extend(s(&["-c:a", "aac", "-b:a", "96k", "-shortest"]));
    }
    args.extend(s(&[
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
    ]));
    Source {
        name,
        args,
        display: (w, h),
        audio,
        fps: rate as f64,
    }
}

impl Source {
    /// Writes the source file into `dir`.
    pub(crate) fn make(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{}.mp4", self.name));
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let p = path.to_str().expect("utf-8 path");
        args.push(p);
        ffmpeg(&args);
        path
    }
}

/// A `vodfarm worker` process, killed on drop.
pub(crate) struct WorkerProcess {
    pub(crate) child: Child,
    pub(crate) metrics_base: String,
}

impl WorkerProcess {
    /// Starts a worker against `coordinator` and `store_url` with extra flags.
    pub(crate) fn start(
        coordinator: &str,
        store_url: &str,
        scratch: &Path,
        env: &[(&str, String)],
        extra: &[&str],
    ) -> WorkerProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let child = Command::new(env!("CARGO_BIN_EXE_vodfarm"))
            .arg("worker")
            .args(["--coordinator", coordinator])
            .args(["--store", store_url])
            .arg("--scratch-dir")
            .arg(scratch)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--poll-wait",
                "1s",
                "--heartbeat-interval",
                "500ms",
                "--gpu",
                // scripts/gpu-check.sh runs the worker tests with `auto`
                // on a GPU machine; everywhere else the software path.
                &std::env::var("VODFARM_TEST_GPU").unwrap_or_else(|_| "off".into()),
            ])
            .args(extra)
            .env("VODFARM_WORKER_TOKEN", "test-worker-token")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn vodfarm worker");
        WorkerProcess {
            child,
            metrics_base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// SIGTERM, then wait up to `timeout` for the exit status.
    pub(crate) fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        crate::common::terminate_child(&mut self.child, timeout)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The attributes of an `#EXT-X-STREAM-INF` line.
pub(crate) fn attributes(line: &str) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    let body = line.split_once(':').map(|(_, b)| b).unwrap_or("");
    let mut rest = body;
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').expect("closing quote");
            (&q[..end], q[end + 1..].trim_start_matches(','))
        } else {
            match after.split_once(',') {
                Some((v, n)) => (v, n),
                None => (after, ""),
            }
        };
        out.insert(key.to_owned(), value.to_owned());
        rest = next;
    }
    out
}

/// A media playlist checked against RFC 8216 VOD rules; returns
/// (target duration, EXTINF durations, segment URIs).
pub(crate) fn check_media_playlist(text: &str) -> (u64, Vec<f64>, Vec<String>) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"#EXTM3U"), "{text}");
    assert!(lines.contains(&"#EXT-X-PLAYLIST-TYPE:VOD"), "{text}");
    assert_eq!(lines.last(), Some(&"#EXT-X-ENDLIST"), "{text}");
    let target: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:"))
        .expect("TARGETDURATION")
        .parse()
        .expect("integer TARGETDURATION");
    let mut durations = Vec::new();
    let mut uris = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some(d) = l.strip_prefix("#EXTINF:") {
            let d: f64 = d
                .trim_end_matches(',')
                .split(',')
                .next()
                .unwrap()
                .parse()
                .expect("EXTINF");
            assert!(
                d.round() as u64 <= target,
                "EXTINF {d} rounds above TARGETDURATION {target}"
            );
            durations.push(d);
            uris.push(lines[i + 1].to_owned());
        }
    }
    assert!(!uris.is_empty());
    (target, durations, uris)
}

/// PSNR (average, dB) of `encoded` against `source` scaled to `w`x`h`
/// at `fps` (the reference goes through the same upright/CFR/scale path
/// the ffmpeg CLI would use).
pub(crate) fn psnr(encoded: &Path, source: &Path, w: u32, h: u32, fps: f64) -> f64 {
    let graph = format!(
        "[1:v]fps={fps},scale={w}:{h}:flags=bicubic,format=yuv420p,setpts=PTS-STARTPTS[ref];[0:v]format=yuv420p,setpts=PTS-STARTPTS[enc];[enc][ref]psnr"
    );
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(encoded)
        .arg("-i")
        .arg(source)
        .args(["-lavfi", &graph, "-f", "null", "-"])
        .output()
        .expect("run ffmpeg psnr");
    let text = String::from_utf8_lossy(&out.stderr);
    let avg = text
        .lines()
        .rev()
        .filter_map(|l| l.split("average:").nth(1))
        .filter_map(|v| v.split_whitespace().next())
        .find_map(|v| v.parse::<f64>().ok());
    avg.unwrap_or_else(|| panic!("no PSNR in ffmpeg output: {text}"))
}
