//! The demo: a creator, a channel and a video, made through the public
//! API and the real tus upload path, so the first run shows the whole
//! pipeline and later runs reuse what exists.

use super::args::DevArgs;
use super::envfile::{read_env_file, update_env_file};
use super::roles::{flags, role_args};
use super::secrets::DevSecrets;
use anyhow::Context;
use std::path::{Path, PathBuf};

/// The demo creator, as the page and dev.env see it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct DemoSession {
    pub(crate) username: String,
    pub(crate) token: String,
    pub(crate) channel_id: String,
}

/// The demo source: 1080p, so every rung of the ladder (240p, 720p,
/// 1080p) is made and the quality menu shows all of them.
const SAMPLE_SIZE: &str = "1920x1080";
/// Length of the generated demo source, seconds.
const SAMPLE_SECONDS: u32 = 30;

/// Token of the api's answer to a sign-up or log-in.
async fn token_of(r: reqwest::Response) -> anyhow::Result<String> {
    Ok(r.json::<serde_json::Value>().await?["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// Creates (or logs in) the demo creator and its channel.
pub(crate) async fn demo_session(
    api: &str,
    dir: &Path,
    secrets: &DevSecrets,
) -> anyhow::Result<DemoSession> {
    let http = reqwest::Client::new();
    let username = "demo".to_owned();
    let state_path = dir.join("demo.env");
    let state = read_env_file(&state_path);
    let created = http
        .post(format!("{api}/v1/users"))
        .json(&serde_json::json!({
            "username": username, "email": "demo@vodfarm.invalid", "password": secrets.demo_password
        }))
        .send()
        .await?;
    let token = if created.status().is_success() {
        token_of(created).await?
    } else {
        let login = http
            .post(format!("{api}/v1/tokens"))
            .json(&serde_json::json!({"username": username, "password": secrets.demo_password}))
            .send()
            .await?;
        anyhow::ensure!(
            login.status().is_success(),
            "cannot log the demo creator in: {}",
            login.text().await?
        );
        token_of(login).await?
    };
    anyhow::ensure!(!token.is_empty(), "the api gave the demo creator no token");
    let channel_id = match state.get("VODFARM_CHANNEL") {
        Some(c)
            if http
                .get(format!("{api}/v1/channels/{c}"))
                .send()
                .await?
                .status()
                .is_success() =>
        {
            c.clone()
        }
        _ => {
            let r = http
                .post(format!("{api}/v1/channels"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"name": "vodfarm demo", "description": "Made by vodfarm dev"}))
                .send()
                .await?;
            anyhow::ensure!(
                r.status().is_success(),
                "cannot create the demo channel: {}",
                r.text().await?
            );
            r.json::<serde_json::Value>().await?["channel_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
    };
    update_env_file(&state_path, "VODFARM_CHANNEL", &channel_id)?;
    Ok(DemoSession {
        username,
        token,
        channel_id,
    })
}

/// A 1080p test pattern with moving content and a tone, made with
/// libavfilter (through the ffmpeg CLI).
async fn make_sample(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let tmp = path.with_extension("tmp.mp4");
    let video = format!("testsrc2=size={SAMPLE_SIZE}:rate=30:duration={SAMPLE_SECONDS}");
    let audio = format!("sine=frequency=440:sample_rate=48000:duration={SAMPLE_SECONDS}");
    let status = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", &video, "-f", "lavfi", "-i", &audio])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ])
        .args(["-c:a", "aac", "-shortest"])
        .arg(&tmp)
        .status()
        .await
        .context("running ffmpeg to make the demo video (install ffmpeg, or pass --sample FILE)")?;
    anyhow::ensure!(status.success(), "ffmpeg could not make the demo video");
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Whether the demo video recorded in `demo.env` still exists.
async fn existing_demo_video(api: &str, dir: &Path, token: &str) -> Option<String> {
    let id = read_env_file(&dir.join("demo.env"))
        .get("VODFARM_DEMO_VIDEO")
        .cloned()?;
    let r = reqwest::Client::new()
        .get(format!("{api}/v1/videos/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    matches!(v["status"].as_str(), Some("ready" | "processing")).then_some(id)
}

/// The demo video's id: the one a previous run uploaded if it still
/// exists, else `--sample` (or a generated test pattern) uploaded now
/// through `vodfarm upload --wait`, exactly as a creator would.
pub(crate) async fn demo_video(
    args: &DevArgs,
    api: &str,
    dir: &Path,
    session: &DemoSession,
) -> anyhow::Result<String> {
    if let Some(id) = existing_demo_video(api, dir, &session.token).await {
        println!("demo video {id} is already uploaded");
        return Ok(id);
    }
    let sample: PathBuf = match &args.sample {
        Some(p) => p.clone(),
        None => {
            let p = dir.join("demo-sample-1080p.mp4");
            println!("making a {SAMPLE_SECONDS}-second {SAMPLE_SIZE} demo video with libavfilter…");
            make_sample(&p).await?;
            p
        }
    };
    println!("uploading {} through tus…", sample.display());
    let mut argv = flags(&[
        ("title", "vodfarm demo"),
        ("channel", &session.channel_id),
        // The page offers the demo as an MP4 download too.
        ("mp4-renditions", "720p"),
        ("api", api),
        ("token", &session.token),
        (
            "state-file",
            &dir.join("uploads.json").display().to_string(),
        ),
    ]);
    argv.push("--wait".into());
    argv.push(sample.display().to_string());
    let upload: crate::upload::UploadArgs = role_args(&argv)?;
    let id = crate::upload::run(upload).await?;
    update_env_file(&dir.join("demo.env"), "VODFARM_DEMO_VIDEO", &id)?;
    Ok(id)
}
