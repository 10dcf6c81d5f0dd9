//! What the transcode benches share: running ffmpeg and reading a PSNR
//! out of it. Included by path (`#[path = "support/ffmpeg.rs"]`), so it is
//! no bench target of its own.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// Runs `cmd`; its stderr (where ffmpeg reports) on success.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Mean PSNR (dB) of `encoded` against `source` scaled to `w`x`h` with
/// swscale's `flags` (`area`, `bicubic`). `framerate`: for raw
/// elementary streams, which carry none.
pub(crate) fn psnr(
    encoded: &Path,
    source: &Path,
    w: u32,
    h: u32,
    flags: &str,
    framerate: Option<u32>,
) -> Result<f64> {
    let graph = format!(
        "[1:v]scale={w}:{h}:flags={flags},format=yuv420p,setpts=PTS-STARTPTS[ref];[0:v]setpts=PTS-STARTPTS[enc];[enc][ref]psnr"
    );
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostats"]);
    if let Some(fps) = framerate {
        cmd.args(["-framerate", &fps.to_string()]);
    }
    let text = run(cmd
        .arg("-i")
        .arg(encoded)
        .arg("-i")
        .arg(source)
        .args(["-lavfi", &graph, "-f", "null", "-"]))?;
    text.lines()
        .rev()
        .filter_map(|l| l.split("average:").nth(1))
        .filter_map(|v| v.split_whitespace().next())
        .find_map(|v| v.parse::<f64>().ok())
        .context("no PSNR in ffmpeg's output")
}
