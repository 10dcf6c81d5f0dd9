//! `vodfarm upload`: the creators' command-line uploader.
//!
//! Initiates the upload (`POST /v1/videos`), then sends the file with tus
//! PATCHes of `--chunk-size` bytes. The upload URL and token are kept in a
//! small state file keyed by the file's path, size and modification time,
//! so running the same command again after any interruption resumes where
//! the server says the upload is (`HEAD`). `--wait` then follows
//! processing until the video is ready and prints its playback URL.

use anyhow::{anyhow, bail, Context};
use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Flags and environment of `vodfarm upload`.
#[derive(Debug, Clone, clap::Args)]
pub struct UploadArgs {
    /// The video file to upload.
    pub file: PathBuf,
    /// The video's title.
    #[arg(long)]
    pub title: String,
    /// Channel id to upload to (default: your oldest channel).
    #[arg(long)]
    pub channel: Option<String>,
    /// public, unlisted or private.
    #[arg(long, default_value = "public", value_parser = ["public", "unlisted", "private"])]
    pub privacy: String,
    /// The video's description.
    #[arg(long)]
    pub description: Option<String>,
    /// After the upload, follow processing until the video is ready, then
    /// print its playback URL.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (0: never).
    #[arg(long, default_value = "0s", value_parser = vodfarm_core::config::parse_duration)]
    pub wait_timeout: Duration,
    /// Base URL of the vodfarm api.
    #[arg(long, env = "VODFARM_API", default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// Your user token (from POST /v1/users or /v1/tokens).
    #[arg(long, env = "VODFARM_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Bytes per PATCH request; an interrupted request is resent whole.
    #[arg(long, env = "VODFARM_UPLOAD_CHUNK", default_value = "64MiB", value_parser = vodfarm_core::config::parse_size)]
    pub chunk_size: u64,
    /// Where unfinished uploads are remembered (default:
    /// $XDG_STATE_HOME/vodfarm/uploads.json or ~/.local/state/…).
    #[arg(long, env = "VODFARM_UPLOAD_STATE")]
    pub state_file: Option<PathBuf>,
    /// Consecutive failed requests before giving up (the next run resumes).
    #[arg(long, default_value_t = 8)]
    pub retries: u32,
    /// Rungs also made as progressive MP4 downloads, comma-separated
    /// (e.g. 720p).
    #[arg(long, value_delimiter = ',')]
    pub mp4_renditions: Vec<String>,
}

/// An unfinished upload, remembered across runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Remembered {
    /// The video's id.
    pub video_id: String,
    /// The tus upload URL.
    pub upload_url: String,
    /// Its upload token.
    pub upload_token: String,
}

fn default_state_file() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("vodfarm/uploads.json")
}

/// The key an upload is remembered by: path, size and mtime, so an edited
/// file starts over instead of resuming with other bytes.
pub fn file_key(path: &Path, meta: &std::fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{}|{}|{}", path.display(), meta.len(), mtime)
}

fn load_state(path: &Path) -> BTreeMap<String, Remembered> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_state(path: &Path, state: &BTreeMap<String, Remembered>) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

async fn error_text(resp: reqwest::Response) -> String {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or(body);
    format!("{status}: {message}")
}

/// Asks the server where an upload is: `Ok(None)` when it is gone.
async fn head(http: &reqwest::Client, up: &Remembered) -> anyhow::Result<Option<u64>> {
    let resp = http
        .head(&up.upload_url)
        .header("Tus-Resumable", "1.0.0")
        .bearer_auth(&up.upload_token)
        .send()
        .await?;
    match resp.status() {
        StatusCode::OK => Ok(Some(
            resp.headers()
                .get("upload-offset")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| anyhow!("HEAD without Upload-Offset"))?,
        )),
        StatusCode::NOT_FOUND | StatusCode::GONE | StatusCode::UNAUTHORIZED => Ok(None),
        _ => bail!("HEAD {}: {}", up.upload_url, error_text(resp).await),
    }
}

async fn initiate(
    http: &reqwest::Client,
    args: &UploadArgs,
    size: u64,
) -> anyhow::Result<Remembered> {
    let filename = args
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let resp = http
        .post(format!("{}/v1/videos", args.api.trim_end_matches('/')))
        .bearer_auth(&args.token)
        .json(&serde_json::json!({
            "channel_id": args.channel,
            "title": args.title,
            "description": args.description,
            "privacy": args.privacy,
            "filename": filename,
            "size_bytes": size,
            "mp4_renditions": args.mp4_renditions,
        }))
        .send()
        .await
        .context("POST /v1/videos")?;
    if resp.status() != StatusCode::CREATED {
        bail!("starting the upload: {}", error_text(resp).await);
    }
    Ok(resp.json().await?)
}

/// One PATCH of up to `chunk` bytes from `offset`; returns the new offset
/// and whether the server started processing.
async fn patch(
    http: &reqwest::Client,
    up: &Remembered,
    file: &Path,
    offset: u64,
    len: u64,
    bar: &ProgressBar,
) -> Result<(u64, bool), (bool, String)> {
    let mut f = tokio::fs::File::open(file)
        .await
        .map_err(|e| (false, e.to_string()))?;
    f.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|e| (false, e.to_string()))?;
    let bar2 = bar.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(f.take(len), 256 * 1024)
        .inspect_ok(move |b| bar2.inc(b.len() as u64));
    let resp = http
        .patch(&up.upload_url)
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", offset.to_string())
        .header("Content-Length", len.to_string())
        .bearer_auth(&up.upload_token)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .map_err(|e| (true, e.to_string()))?;
    let status = resp.status();
    if status == StatusCode::NO_CONTENT {
        let new = resp
            .headers()
            .get("upload-offset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or((true, "answer without Upload-Offset".to_owned()))?;
        let processing = resp
            .headers()
            .get("vodfarm-video-status")
            .is_some_and(|v| v == "processing");
        return Ok((new, processing));
    }
    // 409 (offset moved), 423 (another writer), 408/5xx: HEAD and retry.
    let retry = matches!(status.as_u16(), 408 | 409 | 423 | 460) || status.is_server_error();
    Err((retry, error_text(resp).await))
}

/// Runs `vodfarm upload`; returns the video's id.
pub async fn run(args: UploadArgs) -> anyhow::Result<String> {
    let path = std::fs::canonicalize(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let meta = std::fs::metadata(&path)?;
    let size = meta.len();
    let key = file_key(&path, &meta);
    let state_path = args.state_file.clone().unwrap_or_else(default_state_file);
    let mut state = load_state(&state_path);
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let chunk = args.chunk_size.max(1);

    let mut remembered = None;
    if let Some(up) = state.get(&key).cloned() {
        match head(&http, &up).await {
            Ok(Some(offset)) => {
                eprintln!("resuming {} at {offset} of {size} bytes", up.video_id);
                remembered = Some((up, offset));
            }
            Ok(None) => eprintln!("the earlier upload of this file is gone; starting over"),
            Err(e) => bail!("cannot reach the api to resume: {e:#}"),
        }
    }
    let (up, mut offset) = match remembered {
        Some(r) => r,
        None => {
            let up = initiate(&http, &args, size).await?;
            state.insert(key.clone(), up.clone());
            save_state(&state_path, &state)?;
            (up, 0)
        }
    };
    println!("video_id: {}", up.video_id);

    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(offset);
    let mut failures = 0;
    let mut processing = offset == size && size > 0;
    while offset < size || (size == 0 && !processing) {
        let len = chunk.min(size - offset);
        match patch(&http, &up, &path, offset, len, &bar).await {
            Ok((new, done)) => {
                offset = new;
                processing = done;
                failures = 0;
                if size == 0 {
                    break;
                }
            }
            Err((retry, message)) => {
                failures += 1;
                if !retry || failures > args.retries {
                    bar.abandon();
                    bail!("upload stopped at {offset} bytes: {message} (run the same command again to resume)");
                }
                bar.println(format!("retrying after: {message}"));
                tokio::time::sleep(Duration::from_millis(500 * (1 << failures.min(5)))).await;
                match head(&http, &up).await {
                    Ok(Some(o)) => offset = o,
                    Ok(None) => bail!("the upload is gone (expired or terminated)"),
                    Err(_) => {}
                }
            }
        }
        bar.set_position(offset);
    }
    bar.finish();
    state.remove(&key);
    save_state(&state_path, &state)?;
    println!("uploaded {size} bytes; processing started");
    if args.wait {
        let url = wait_ready(&http, &args, &up.video_id).await?;
        println!("{url}");
    }
    Ok(up.video_id)
}

async fn wait_ready(
    http: &reqwest::Client,
    args: &UploadArgs,
    video_id: &str,
) -> anyhow::Result<String> {
    let spinner = ProgressBar::new_spinner();
    let started = std::time::Instant::now();
    loop {
        let resp = http
            .get(format!(
                "{}/v1/videos/{video_id}",
                args.api.trim_end_matches('/')
            ))
            .bearer_auth(&args.token)
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                let v: serde_json::Value = r.json().await?;
                match v["status"].as_str().unwrap_or_default() {
                    "ready" => {
                        spinner.finish_and_clear();
                        return v["playback"]["hls_url"]
                            .as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| anyhow!("ready without a playback URL"));
                    }
                    "failed" => bail!(
                        "processing failed: {}",
                        v["processing_error"].as_str().unwrap_or("unknown error")
                    ),
                    status => spinner.set_message(format!(
                        "{status} {}%",
                        v["processing_progress"].as_i64().unwrap_or(0)
                    )),
                }
            }
            Ok(r) if r.status() == StatusCode::NOT_FOUND => bail!("the video was deleted"),
            Ok(r) => spinner.set_message(error_text(r).await),
            Err(e) => spinner.set_message(e.to_string()),
        }
        if !args.wait_timeout.is_zero() && started.elapsed() > args.wait_timeout {
            bail!("still not ready after {:?}", args.wait_timeout);
        }
        spinner.tick();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
