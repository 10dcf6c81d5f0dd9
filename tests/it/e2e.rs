//! The whole system end to end, every part its own process: the machine's
//! PostgreSQL (a fresh database), a real S3-protocol server (s3s-fs),
//! `vodfarm api`, `vodfarm coordinator`, two `vodfarm worker`s, a
//! `vodfarm origin` over the store and a shield `vodfarm origin` in front
//! of it. A creator signs up, makes a channel and uploads sources of
//! several shapes with a stock tus client (tuspy); each becomes `ready`
//! and ffmpeg plays its master playlist through the shield to the end.
//! A worker is SIGKILLed in the middle of a transcode and leaves no
//! trace; a corrupt upload fails with a clear message; a deleted video is
//! 404 at the shield within a second. Captions added while a video
//! processes and after it is ready are listed by its master playlist at
//! the shield at once (NOTIFY) and read back by ffmpeg.
//!
//! Redis is not started: no role uses it yet.

use crate::api_support;
use crate::common;
use crate::media_support;
use crate::origin_support;

use anyhow::{anyhow, bail, ensure, Context, Result};
use api_support::{ApiProcess, SIGNING_SECRET};
use common::{free_port, CoordinatorProcess, TestDb, OPERATOR_TOKEN};
use media_support::{ffprobe, lavfi, Source, WorkerProcess};
use origin_support::OriginProcess;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use vodfarm_core::store::S3Store;
use vodfarm_core::testing::S3Server;

/// The bucket of this test's store.
const BUCKET: &str = "vodfarm-e2e";

/// Generous safety deadline for processing (never a speed requirement).
const SETTLE: Duration = Duration::from_secs(300);

/// Every process of the farm. Fields drop in declaration order: the
/// `vodfarm` processes are killed before the S3 server and the database
/// go away, also when the test fails.
struct Farm {
    workers: BTreeMap<String, WorkerProcess>,
    shield: OriginProcess,
    origin: OriginProcess,
    api: ApiProcess,
    coordinator: CoordinatorProcess,
    s3: S3Server,
    db: TestDb,
    tmp: tempfile::TempDir,
    http: reqwest::Client,
}

/// The two workers' ids.
const WORKER_IDS: [&str; 2] = ["e2e-worker-a", "e2e-worker-b"];

impl Farm {
    async fn start() -> Result<Farm> {
        let tmp = tempfile::Builder::new().prefix("e2e-").tempdir()?;
        let db = TestDb::new().await;
        let s3 = S3Server::start().await;
        S3Store::with_client(s3.client(), BUCKET, "")
            .ensure_bucket()
            .await
            .context("create the bucket")?;
        let store = format!("s3://{BUCKET}");
        let coordinator = CoordinatorProcess::start(
            &db,
            &[
                "--lease-ttl",
                "3s",
                "--reap-interval",
                "500ms",
                "--retry-base",
                "200ms",
                "--retry-max",
                "1s",
            ],
        )
        .await;
        let mut origin_env = s3.env();
        origin_env.push(("VODFARM_STORE", store.clone()));
        let origin = OriginProcess::start(&db, "store", &origin_env, &[]).await;
        let shield = OriginProcess::start(&db, &origin.base, &[], &[]).await;
        let api_args: Vec<String> = [
            "--database-url",
            &db.url,
            "--store",
            &store,
            "--signing-secret",
            SIGNING_SECRET,
            "--public-origin-url",
            &shield.base,
            "--db-max-connections",
            "8",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        let api = ApiProcess::start(free_port(), api_args, s3.env()).await;
        let mut farm = Farm {
            workers: BTreeMap::new(),
            shield,
            origin,
            api,
            coordinator,
            s3,
            db,
            tmp,
            http: reqwest::Client::new(),
        };
        for id in WORKER_IDS {
            farm.start_worker(id);
        }
        Ok(farm)
    }

    /// The scratch directory of worker `id` (the same across restarts).
    fn scratch(&self, id: &str) -> PathBuf {
        self.tmp.path().join("scratch").join(id)
    }

    /// Starts (or restarts) worker `id` on its own scratch directory.
    fn start_worker(&mut self, id: &str) {
        let w = WorkerProcess::start(
            &self.coordinator.base,
            &format!("s3://{BUCKET}"),
            &self.scratch(id),
            &self.s3.env(),
            &["--worker-id", id],
        );
        self.workers.insert(id.to_owned(), w);
    }

    fn api_url(&self, path: &str) -> String {
        format!("{}{path}", self.api.base)
    }

    /// `POST` JSON to the api; checks the status; returns the JSON answer.
    async fn post(&self, path: &str, token: Option<&str>, body: Value, want: u16) -> Result<Value> {
        let mut req = self.http.post(self.api_url(path)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        ensure!(status == want, "POST {path}: {status} {text}");
        Ok(serde_json::from_str(&text)?)
    }

    /// `GET /v1/videos/{id}` as `token`.
    async fn video(&self, token: &str, id: &str) -> Result<Value> {
        let r = self
            .http
            .get(self.api_url(&format!("/v1/videos/{id}")))
            .bearer_auth(token)
            .send()
            .await?;
        ensure!(r.status() == 200, "GET video {id}: {}", r.status());
        Ok(r.json().await?)
    }

    /// The coordinator's view of a video's jobs (operator API).
    async fn jobs(&self, video_id: &str) -> Result<Vec<Value>> {
        let r = self
            .http
            .get(format!("{}/v1/jobs", self.coordinator.base))
            .query(&[("video_id", video_id)])
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await?;
        ensure!(r.status() == 200, "GET /v1/jobs: {}", r.status());
        let v: Value = r.json().await?;
        Ok(v["jobs"].as_array().cloned().unwrap_or_default())
    }

    /// Initiates a video (`POST /v1/videos`) and uploads `file` to it with
    /// tuspy in 1 MiB chunks; returns the video's id.
    async fn upload(&self, token: &str, channel: &str, title: &str, file: &Path) -> Result<String> {
        self.upload_packaged(token, channel, title, file, None)
            .await
    }

    /// [`upload`](Self::upload), choosing the packaging (`ts`, `cmaf`).
    async fn upload_packaged(
        &self,
        token: &str,
        channel: &str,
        title: &str,
        file: &Path,
        packaging: Option<&str>,
    ) -> Result<String> {
        let size = std::fs::metadata(file)?.len();
        let filename = file.file_name().unwrap().to_string_lossy().into_owned();
        let created = self
            .post(
                "/v1/videos",
                Some(token),
                json!({"channel_id": channel, "title": title, "description": "e2e",
                       "tags": ["e2e"], "privacy": "public", "filename": filename,
                       "size_bytes": size, "packaging": packaging}),
                201,
            )
            .await?;
        let video_id = created["video_id"].as_str().context("video_id")?.to_owned();
        let upload_url = created["upload_url"].as_str().context("upload_url")?;
        let upload_token = created["upload_token"].as_str().context("upload_token")?;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tus/upload.py");
        let out = tokio::process::Command::new("python3")
            .arg(script)
            .args([upload_url, upload_token])
            .arg(file)
            .arg((1024 * 1024).to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .context("python3 with tuspy (pip install tuspy)")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success() && stdout.contains(&format!("done {size}")),
            "tuspy upload of {filename}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(video_id)
    }

    /// Waits until every video is `ready` or `failed`; returns their views.
    async fn settle(&self, token: &str, ids: &[&str]) -> Result<BTreeMap<String, Value>> {
        let end = Instant::now() + SETTLE;
        loop {
            let mut views = BTreeMap::new();
            for id in ids {
                views.insert(id.to_string(), self.video(token, id).await?);
            }
            if views
                .values()
                .all(|v| v["status"] == "ready" || v["status"] == "failed")
            {
                return Ok(views);
            }
            if Instant::now() > end {
                let st: Vec<_> = views
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v["status"].clone(),
                            v["processing_progress"].clone(),
                        )
                    })
                    .collect();
                bail!("videos did not settle: {st:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The keys stored under `prefix`.
    async fn keys(&self, prefix: &str) -> Result<BTreeSet<String>> {
        let mut keys = BTreeSet::new();
        let mut token = None;
        loop {
            let out = self
                .s3
                .client()
                .list_objects_v2()
                .bucket(BUCKET)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            match out.next_continuation_token() {
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(keys),
            }
        }
    }

    /// `GET` a shield path: (status, body).
    async fn shield_get(&self, path: &str) -> Result<(u16, bytes::Bytes)> {
        let r = self.http.get(self.shield.url(path)).send().await?;
        let status = r.status().as_u16();
        Ok((status, r.bytes().await?))
    }
}

/// Captions as a creator's SRT file.
const SUBS_SRT: &str = "1\n00:00:00,500 --> 00:00:01,250\nHello from the captions\n";

impl Farm {
    /// `PUT /v1/videos/{id}/subtitles/{lang}` with `body`, expecting 201.
    async fn put_subtitles(&self, token: &str, id: &str, lang: &str, body: &str) -> Result<()> {
        let r = self
            .http
            .put(self.api_url(&format!("/v1/videos/{id}/subtitles/{lang}")))
            .bearer_auth(token)
            .body(body.to_owned())
            .send()
            .await?;
        let status = r.status().as_u16();
        ensure!(status == 201, "PUT subtitles: {status} {}", r.text().await?);
        Ok(())
    }
}

/// The master lists one subtitle track, whose WebVTT playlist ffmpeg reads
/// through the shield to the cue the creator uploaded.
async fn check_subtitles(farm: &Farm, id: &str, master: &str) -> Result<()> {
    let uri = master
        .lines()
        .find(|l| l.starts_with("#EXT-X-MEDIA:TYPE=SUBTITLES,"))
        .and_then(|l| l.split("URI=\"").nth(1))
        .and_then(|u| u.split('"').next())
        .with_context(|| format!("no subtitle track in\n{master}"))?;
    ensure!(master.contains(",SUBTITLES=\"subs\"\n"), "{master}");
    let url = reqwest::Url::parse(&farm.shield.url(&format!("/v/{id}/master.m3u8")))?.join(uri)?;
    let out = tokio::process::Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-v",
            "error",
            "-xerror",
            "-i",
            url.as_str(),
            "-f",
            "webvtt",
            "-",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("run ffmpeg")?;
    let vtt = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && vtt.contains("00:00.500 --> 00:01.250\nHello from the captions"),
        "subtitles of {id} through the shield ({url}): {}\n{vtt}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// One uploaded source and what it should become.
struct Case {
    source: Source,
    path: PathBuf,
    duration: f64,
    rungs: Vec<&'static str>,
    video_id: String,
}

/// A source's container duration by ffprobe.
fn duration_of(path: &Path) -> f64 {
    ffprobe(path, &["-show_format"])["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no duration for {}", path.display()))
}

/// ffmpeg plays `url` (every stream of every variant) to the end: exit 0
/// with `-xerror`, nothing on stderr at `-v error`. Returns the time the
/// player reached (seconds).
async fn play(url: &str) -> Result<f64> {
    let out = tokio::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-xerror", "-i", url])
        .args(["-map", "0", "-f", "null", "-progress", "pipe:1", "-"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("run ffmpeg")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && stderr.trim().is_empty(),
        "ffmpeg playing {url}: {}\n{stderr}",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        stdout.lines().any(|l| l == "progress=end"),
        "{url}: ffmpeg did not reach the end:\n{stdout}"
    );
    let us: i64 = stdout
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix("out_time_us="))
        .find_map(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("{url}: no out_time_us in\n{stdout}"))?;
    Ok(us as f64 / 1e6)
}

/// The `#EXT-X-STREAM-INF` URIs of a master playlist.
fn variant_uris(master: &str) -> Vec<String> {
    let lines: Vec<&str> = master.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("#EXT-X-STREAM-INF:"))
        .filter_map(|(i, _)| lines.get(i + 1).map(ToString::to_string))
        .collect()
}

/// The `job-*` directories in a worker's scratch directory.
fn job_dirs(scratch: &Path) -> Vec<String> {
    std::fs::read_dir(scratch)
        .map(|d| {
            d.filter_map(std::result::Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("job-"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_transcode_play_through_the_shield_survive_a_killed_worker_and_delete() -> Result<()>
{
    let mut farm = Farm::start().await?;
    let src_dir = farm.tmp.path().join("src");
    std::fs::create_dir_all(&src_dir)?;

    // Sources: a longer 720p one (the worker is killed while it encodes
    // it), then short ones of several shapes, and junk named .mp4.
    let long = lavfi("long720", 1280, 720, 30, 10.0, true);
    let mut odd = lavfi("odd426x241", 426, 242, 25, 2.0, true);
    // libx264 needs even sizes in 4:2:0; 4:4:4 keeps the odd height.
    odd.args.iter_mut().for_each(|a| {
        if a == "yuv420p" {
            *a = "yuv444p".into();
        }
    });
    odd.args
        .extend(["-vf", "scale=426:241,setsar=1"].map(String::from));
    let shapes = vec![
        (long, vec!["240p", "720p"]),
        (lavfi("landscape360", 640, 360, 30, 2.0, true), vec!["240p"]),
        (
            lavfi("portrait_silent", 360, 640, 30, 2.0, false),
            vec!["240p"],
        ),
        (odd, vec!["240p"]),
    ];
    let mut cases: Vec<Case> = shapes
        .into_iter()
        .map(|(source, rungs)| {
            let path = source.make(&src_dir);
            let duration = duration_of(&path);
            Case {
                source,
                path,
                duration,
                rungs,
                video_id: String::new(),
            }
        })
        .collect();
    let corrupt = src_dir.join("corrupt.mp4");
    std::fs::write(&corrupt, api_support::bytes(300_000, 7))?;

    // A real creator.
    let user = farm
        .post(
            "/v1/users",
            None,
            json!({"username": "e2e_creator", "email": "e2e@example.com", "password": "a long secret"}),
            201,
        )
        .await?;
    let token = user["token"].as_str().context("token")?.to_owned();
    let channel = farm
        .post(
            "/v1/channels",
            Some(&token),
            json!({"name": "E2E", "description": "end to end"}),
            201,
        )
        .await?["channel_id"]
        .as_str()
        .context("channel_id")?
        .to_owned();

    // 1. The long source first; SIGKILL the worker that holds its
    // transcode job while the job's scratch directory is in use.
    cases[0].video_id = farm
        .upload(&token, &channel, "long", &cases[0].path)
        .await?;
    let long_id = cases[0].video_id.clone();
    let end = Instant::now() + SETTLE;
    let (job_id, victim) = loop {
        let jobs = farm.jobs(&long_id).await?;
        let t = jobs
            .iter()
            .find(|j| j["job_type"] == "transcode")
            .context("a transcode job")?;
        ensure!(
            t["status"] == "pending" || t["status"] == "processing",
            "the transcode ended before the worker could be killed: {t}"
        );
        if t["status"] == "processing" {
            let id = t["id"].as_i64().context("job id")?;
            let worker = t["worker_id"].as_str().context("worker_id")?.to_owned();
            let prefix = format!("job-{id}-");
            if job_dirs(&farm.scratch(&worker))
                .iter()
                .any(|d| d.starts_with(&prefix))
            {
                break (id, worker);
            }
        }
        ensure!(Instant::now() < end, "the transcode never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut killed = farm.workers.remove(&victim).context("victim worker")?;
    killed.child.kill()?; // SIGKILL
    killed.child.wait()?;
    drop(killed);
    let after_kill = farm.jobs(&long_id).await?;
    let t = after_kill
        .iter()
        .find(|j| j["id"] == job_id)
        .context("job")?;
    ensure!(
        t["status"] == "processing" && t["worker_id"] == victim.as_str(),
        "the worker was killed mid-transcode: {t}"
    );
    eprintln!("SIGKILLed {victim} while it ran transcode job {job_id}");

    // 2. The other sources and the corrupt upload, while the surviving
    // worker takes the long video's job over once its lease expires.
    for c in cases.iter_mut().skip(1) {
        c.video_id = farm
            .upload(&token, &channel, c.source.name, &c.path)
            .await?;
    }
    // Captions added while the silent video is still processing: its
    // manifest job lists them.
    let captioned_early = cases[2].video_id.clone();
    farm.put_subtitles(&token, &captioned_early, "en", SUBS_SRT)
        .await?;
    let corrupt_id = farm.upload(&token, &channel, "corrupt", &corrupt).await?;
    // The landscape source once more, packaged as CMAF.
    let cmaf_id = farm
        .upload_packaged(&token, &channel, "cmaf", &cases[1].path, Some("cmaf"))
        .await?;

    let mut ids: Vec<&str> = cases.iter().map(|c| c.video_id.as_str()).collect();
    ids.push(&corrupt_id);
    ids.push(&cmaf_id);
    let views = farm.settle(&token, &ids).await?;

    // 3. The corrupt upload failed, clearly, without retries.
    let bad = &views[&corrupt_id];
    assert_eq!(bad["status"], "failed", "{bad}");
    let msg = bad["processing_error"].as_str().unwrap_or_default();
    assert!(
        msg.contains("not a video we can read") || msg.contains("damaged"),
        "a creator can read why: {msg:?}"
    );
    let bad_jobs = farm.jobs(&corrupt_id).await?;
    let bad_transcode = bad_jobs
        .iter()
        .find(|j| j["job_type"] == "transcode")
        .context("transcode job")?;
    assert_eq!(bad_transcode["status"], "failed", "{bad_transcode}");
    assert_eq!(bad_transcode["attempts"], 1, "not retried: {bad_transcode}");

    // 4. Every good upload is ready and plays through the shield.
    for c in &cases {
        let name = c.source.name;
        let v = &views[&c.video_id];
        assert_eq!(v["status"], "ready", "{name}: {v}");
        let hls = v["playback"]["hls_url"].as_str().context("hls_url")?;
        assert_eq!(
            hls,
            format!("{}/v/{}/master.m3u8", farm.shield.base, c.video_id),
            "{name}: playback goes through the shield"
        );
        let mut names: Vec<String> = v["encodings"]
            .as_array()
            .context("encodings")?
            .iter()
            .map(|e| e["resolution"].as_str().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        assert_eq!(names, c.rungs, "{name}: renditions in the api");

        // Exactly one video_encodings row per rendition.
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT e.resolution, count(*) FROM video_encodings e JOIN videos v ON v.id = e.video_id
             WHERE v.video_id = $1 GROUP BY e.resolution ORDER BY e.resolution",
        )
        .bind(&c.video_id)
        .fetch_all(&farm.db.pool)
        .await?;
        let want: Vec<(String, i64)> = c.rungs.iter().map(|r| (r.to_string(), 1)).collect();
        assert_eq!(rows, want, "{name}: one video_encodings row per rendition");

        let (status, master) = farm
            .shield_get(&format!("/v/{}/master.m3u8", c.video_id))
            .await?;
        assert_eq!(status, 200, "{name}: master at the shield");
        let master = String::from_utf8(master.to_vec())?;
        let mut variants: Vec<String> = variant_uris(&master)
            .iter()
            .map(|u| u.split('/').next().unwrap_or_default().to_owned())
            .collect();
        variants.sort();
        assert_eq!(variants, c.rungs, "{name}: master variants\n{master}");
        if !c.source.audio {
            assert!(!master.contains("mp4a"), "{name}: no audio\n{master}");
        }

        if c.video_id == captioned_early {
            check_subtitles(&farm, &c.video_id, &master).await?;
        }

        let reached = play(hls).await?;
        eprintln!(
            "{name}: played to {reached:.3} s through the shield (source {:.3} s)",
            c.duration
        );
        assert!(
            (reached - c.duration).abs() <= 0.35,
            "{name}: played {reached} s of a {} s source",
            c.duration
        );
    }

    // The shield fetched from the origin tier, which read the store.
    assert!(
        farm.origin
            .metric("vodfarm_origin_cache_misses_total")
            .await
            > 0.0,
        "the shield's misses went to the origin"
    );

    // 4a. The CMAF video plays through the shield over HLS (version 7,
    // fMP4) and over DASH; ffprobe reads every representation of its MPD;
    // captions added to it are in its MPD at once.
    let v = &views[&cmaf_id];
    assert_eq!(v["status"], "ready", "cmaf: {v}");
    assert_eq!(v["packaging"], "cmaf", "{v}");
    let hls = v["playback"]["hls_url"].as_str().context("hls_url")?;
    let dash = v["playback"]["dash_url"].as_str().context("dash_url")?;
    assert_eq!(
        dash,
        format!("{}/v/{cmaf_id}/manifest.mpd", farm.shield.base)
    );
    let (_, master) = farm
        .shield_get(&format!("/v/{cmaf_id}/master.m3u8"))
        .await?;
    let master = String::from_utf8(master.to_vec())?;
    assert!(
        master.contains("#EXT-X-VERSION:7\n") && master.contains("TYPE=AUDIO"),
        "{master}"
    );
    let (status, media) = farm
        .shield_get(&format!("/v/{cmaf_id}/240p/playlist.m3u8"))
        .await?;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&media).contains("#EXT-X-MAP:URI=\"init.mp4\""));
    let r = farm
        .http
        .get(farm.shield.url(&format!("/v/{cmaf_id}/240p/segment_0.m4s")))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "video/iso.segment");
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let r = farm.http.get(dash).send().await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/dash+xml");
    for url in [hls, dash] {
        let reached = play(url).await?;
        eprintln!("cmaf: played {url} to {reached:.3} s through the shield");
        assert!(
            (reached - cases[1].duration).abs() <= 0.5,
            "{url}: {reached}"
        );
    }
    let probe = tokio::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
            dash,
        ])
        .output()
        .await?;
    let listed = String::from_utf8_lossy(&probe.stdout);
    ensure!(
        probe.status.success() && listed.contains("h264") && listed.contains("aac"),
        "ffprobe {dash}: {listed}"
    );
    farm.put_subtitles(&token, &cmaf_id, "en", SUBS_SRT).await?;
    let mpd_path = format!("/v/{cmaf_id}/manifest.mpd");
    origin_support::within(Duration::from_secs(5), "captions in the MPD at the shield", || async {
        matches!(farm.shield_get(&mpd_path).await, Ok((200, b)) if String::from_utf8_lossy(&b).contains("mimeType=\"text/vtt\" lang=\"en\""))
    })
    .await;

    // 4b. Captions added to a ready video whose master the shield has
    // cached: the shield serves the new master at once (NOTIFY; the
    // deadline only bounds a loaded machine), and the
    // video still plays.
    let captioned_late = &cases[1];
    let master_path = format!("/v/{}/master.m3u8", captioned_late.video_id);
    farm.put_subtitles(&token, &captioned_late.video_id, "pt-BR", SUBS_SRT)
        .await?;
    let took = origin_support::within(Duration::from_secs(5), "the new master at the shield", || async {
        matches!(farm.shield_get(&master_path).await, Ok((200, b)) if String::from_utf8_lossy(&b).contains("LANGUAGE=\"pt-BR\""))
    })
    .await;
    eprintln!("captions listed at the shield {took:?} after the PUT");
    let (_, master) = farm.shield_get(&master_path).await?;
    check_subtitles(
        &farm,
        &captioned_late.video_id,
        &String::from_utf8(master.to_vec())?,
    )
    .await?;
    play(&farm.shield.url(&master_path)).await?;

    // 5. The killed worker left no trace: the job was taken over and
    // completed by the other worker, the store holds exactly the files
    // the playlists name (no leftover segments), and the killed worker's
    // scratch is removed when it starts again.
    let long_jobs = farm.jobs(&long_id).await?;
    let t = long_jobs
        .iter()
        .find(|j| j["id"] == job_id)
        .context("job")?;
    assert_eq!(t["status"], "completed", "{t}");
    assert!(t["attempts"].as_i64().unwrap_or(0) >= 2, "re-leased: {t}");
    assert_ne!(t["worker_id"], victim.as_str(), "another worker: {t}");
    let prefix = format!("encoded/{long_id}/");
    let stored = farm.keys(&prefix).await?;
    let mut named: BTreeSet<String> = ["master.m3u8", "renditions.json"]
        .iter()
        .map(|k| format!("{prefix}{k}"))
        .collect();
    for rung in &cases[0].rungs {
        let (status, body) = farm
            .shield_get(&format!("/v/{long_id}/{rung}/playlist.m3u8"))
            .await?;
        assert_eq!(status, 200);
        let text = String::from_utf8(body.to_vec())?;
        let (_, _, uris) = media_support::check_media_playlist(&text);
        named.insert(format!("{prefix}{rung}/playlist.m3u8"));
        named.extend(uris.iter().map(|u| format!("{prefix}{rung}/{u}")));
    }
    assert_eq!(stored, named, "the store holds exactly what is named");
    let victim_scratch = farm.scratch(&victim);
    let leftovers = job_dirs(&victim_scratch);
    assert!(
        !leftovers.is_empty(),
        "SIGKILL left the job's scratch behind (nothing cleaned it yet)"
    );
    farm.start_worker(&victim);
    let health = format!("{}/healthz", farm.workers[&victim].metrics_base);
    let end = Instant::now() + Duration::from_secs(60);
    while !matches!(farm.http.get(&health).send().await, Ok(r) if r.status().is_success()) {
        assert!(
            Instant::now() < end,
            "restarted worker never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        job_dirs(&victim_scratch).is_empty(),
        "a restarted worker removes what its killed run left: {:?}",
        job_dirs(&victim_scratch)
    );

    // 6. Delete: a segment cached at the shield is 404 there within a
    // second of the owner's DELETE; the other videos still play.
    let gone = &cases[1];
    let seg = format!("/v/{}/240p/segment_0.ts", gone.video_id);
    let hits_before = farm.shield.metric("vodfarm_origin_cache_hits_total").await;
    for _ in 0..2 {
        let (status, body) = farm.shield_get(&seg).await?;
        assert_eq!(status, 200, "segment before the delete");
        assert!(!body.is_empty());
    }
    let hits_after = farm.shield.metric("vodfarm_origin_cache_hits_total").await;
    assert!(
        hits_after > hits_before,
        "the segment is cached at the shield"
    );
    let r = farm
        .http
        .delete(farm.api_url(&format!("/v1/videos/{}", gone.video_id)))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(r.status(), 204, "DELETE by the owner");
    let took = origin_support::within(Duration::from_secs(1), "404 at the shield", || async {
        matches!(farm.shield_get(&seg).await, Ok((404, _)))
    })
    .await;
    eprintln!("deleted video 404 at the shield after {took:?}");
    let (status, _) = farm
        .shield_get(&format!("/v/{}/master.m3u8", gone.video_id))
        .await?;
    assert_eq!(status, 404, "master of the deleted video");
    let (status, _) = farm
        .shield_get(&format!("/v/{}/master.m3u8", cases[2].video_id))
        .await?;
    assert_eq!(status, 200, "other videos still served");
    Ok(())
}
