//! The worker end to end: a real coordinator process, real `vodfarm
//! worker` processes, the real PostgreSQL, a local-directory store (and
//! once an S3 server); every output checked by decoding it with
//! ffprobe/ffmpeg.

use crate::common;
use crate::media_support;

use common::*;
use media_support::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vodfarm_coordinator::pipeline::upload_jobs;
use vodfarm_core::ladder::RenditionLadder;
use vodfarm_core::layout;

/// Inserts a video, stores `source` as its original under `store_root`
/// (a LocalStore directory) and enqueues its jobs.
async fn submit(
    db: &TestDb,
    store: &vodfarm_core::store::SharedStore,
    source: &Path,
    segment_seconds: u32,
) -> (i64, String) {
    let (video, public) = insert_video(&db.pool).await;
    let original = layout::original(&public, "mp4").unwrap();
    store.put_file(original.as_str(), source).await.unwrap();
    let jobs = upload_jobs(
        &public,
        &original,
        &RenditionLadder::default(),
        segment_seconds,
        vodfarm_core::playlists::Packaging::Ts,
        0,
    )
    .unwrap();
    enqueue(&db.pool, video, &jobs).await;
    (video, public)
}

/// Waits until every video is `ready` or `failed` (a safety deadline only).
async fn wait_settled(
    db: &TestDb,
    videos: &[i64],
    deadline: Duration,
) -> HashMap<i64, (String, Option<String>)> {
    let end = Instant::now() + deadline;
    loop {
        let mut out = HashMap::new();
        for &v in videos {
            let (status, _, err) = video_row(&db.pool, v).await;
            out.insert(v, (status, err));
        }
        if out.values().all(|(s, _)| s == "ready" || s == "failed") {
            return out;
        }
        assert!(Instant::now() < end, "videos did not settle: {out:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Expect {
    source: Source,
    rungs: Vec<(&'static str, u32, u32)>,
}

/// Checks one ready video's HLS ladder and thumbnails in `store_root`.
async fn check_video(
    db: &TestDb,
    store_root: &Path,
    video: i64,
    public: &str,
    src_path: &Path,
    expect: &Expect,
) {
    let enc = store_root.join("encoded").join(public);
    let master = std::fs::read_to_string(enc.join("master.m3u8")).expect("master.m3u8");
    let lines: Vec<&str> = master.lines().collect();
    assert_eq!(lines[0], "#EXTM3U");
    assert!(lines.contains(&"#EXT-X-INDEPENDENT-SEGMENTS"), "{master}");
    let variants: Vec<(HashMap<String, String>, String)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("#EXT-X-STREAM-INF:"))
        .map(|(i, l)| (attributes(l), lines[i + 1].to_owned()))
        .collect();
    let names: Vec<String> = variants
        .iter()
        .map(|(_, uri)| uri.split('/').next().unwrap().to_owned())
        .collect();
    let want: Vec<String> = expect.rungs.iter().map(|r| r.0.to_owned()).collect();
    assert_eq!(names, want, "{}: rungs", expect.source.name);

    let src = ffprobe(src_path, &["-show_streams", "-select_streams", "v:0"]);
    let src_duration: f64 = src["streams"][0]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut extinfs_by_rung = Vec::new();
    for ((attrs, uri), (name, w, h)) in variants.iter().zip(&expect.rungs) {
        let ctx = format!("{} {name}", expect.source.name);
        assert_eq!(attrs["RESOLUTION"], format!("{w}x{h}"), "{ctx}");
        let bw: u64 = attrs["BANDWIDTH"].parse().unwrap();
        let avg: u64 = attrs["AVERAGE-BANDWIDTH"].parse().unwrap();
        assert!(bw >= avg && avg > 0, "{ctx}: {attrs:?}");
        let codecs = &attrs["CODECS"];
        assert!(codecs.starts_with("avc1.64"), "{ctx}: H.264 High: {codecs}");
        assert_eq!(
            codecs.contains("mp4a.40.2"),
            expect.source.audio,
            "{ctx}: {codecs}"
        );
        let fr: f64 = attrs["FRAME-RATE"].parse().unwrap();
        assert!(
            (fr - expect.source.fps).abs() < 0.01,
            "{ctx}: FRAME-RATE {fr}"
        );

        let playlist_path = enc.join(uri);
        let text = std::fs::read_to_string(&playlist_path).expect("playlist");
        let (target, durations, uris) = check_media_playlist(&text);
        for (seg_uri, extinf) in uris.iter().zip(&durations) {
            let seg = playlist_path.parent().unwrap().join(seg_uri);
            let p = ffprobe(
                &seg,
                &["-show_streams", "-show_packets", "-select_streams", "v:0"],
            );
            let stream = &p["streams"][0];
            assert_eq!(
                stream["width"].as_u64(),
                Some(u64::from(*w)),
                "{ctx} {seg_uri}"
            );
            assert_eq!(
                stream["height"].as_u64(),
                Some(u64::from(*h)),
                "{ctx} {seg_uri}"
            );
            assert_eq!(stream["profile"], "High", "{ctx}");
            assert_eq!(stream["pix_fmt"], "yuv420p", "{ctx}");
            let packets = p["packets"].as_array().unwrap();
            let first = &packets[0];
            assert!(
                first["flags"].as_str().unwrap().starts_with('K'),
                "{ctx} {seg_uri} starts on a keyframe"
            );
            let pts: Vec<f64> = packets
                .iter()
                .map(|p| p["pts_time"].as_str().unwrap().parse().unwrap())
                .collect();
            let span = pts.iter().copied().fold(f64::MIN, f64::max)
                - pts.iter().copied().fold(f64::MAX, f64::min)
                + 1.0 / expect.source.fps;
            assert!(
                span <= target as f64 + 0.001,
                "{ctx} {seg_uri}: {span} s > TARGETDURATION {target}"
            );
            assert!(
                (span - extinf).abs() < 0.002,
                "{ctx} {seg_uri}: EXTINF {extinf} vs {span}"
            );
            let all = ffprobe(&seg, &["-show_streams"]);
            let has_audio = all["streams"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["codec_type"] == "audio");
            assert_eq!(has_audio, expect.source.audio, "{ctx} {seg_uri}: audio");
        }
        extinfs_by_rung.push(durations.clone());
        let total: f64 = durations.iter().sum();
        assert!(
            (total - src_duration).abs() <= 0.1,
            "{ctx}: {total} s vs source {src_duration} s"
        );
        let counted = ffprobe(
            &playlist_path,
            &["-count_frames", "-show_streams", "-select_streams", "v:0"],
        );
        let frames: f64 = counted["streams"][0]["nb_read_frames"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (frames / expect.source.fps - src_duration).abs() <= 0.1,
            "{ctx}: {frames} frames"
        );
        // Played as one stream, the segments decode without a single
        // error (continuity counters carry across segment files).
        let played = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-xerror", "-i"])
            .arg(&playlist_path)
            .args(["-f", "null", "-"])
            .output()
            .expect("ffmpeg");
        assert!(
            played.status.success() && played.stderr.is_empty(),
            "{ctx}: {}",
            String::from_utf8_lossy(&played.stderr)
        );
        let db = psnr(&playlist_path, src_path, *w, *h, expect.source.fps);
        eprintln!("{ctx}: PSNR {db:.2} dB");
        assert!(db > 30.0, "{ctx}: PSNR {db:.2} dB below the floor");
    }
    for d in &extinfs_by_rung[1..] {
        assert_eq!(d, &extinfs_by_rung[0], "segments aligned across renditions");
    }
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM video_encodings WHERE video_id = $1 AND status = 'ready'",
    )
    .bind(video)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows as usize, expect.rungs.len());

    let th = store_root.join("thumbnails").join(public);
    for f in ["thumb_0.jpg", "default.jpg", "sprite.jpg"] {
        let p = ffprobe(&th.join(f), &["-show_streams"]);
        assert_eq!(p["streams"][0]["codec_name"], "mjpeg", "{f}");
    }
    let vtt = std::fs::read_to_string(th.join("storyboard.vtt")).unwrap();
    assert!(
        vtt.starts_with("WEBVTT") && vtt.contains("sprite.jpg#xywh=0,0,160,"),
        "{vtt}"
    );
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM video_thumbs WHERE video_id = $1 ORDER BY kind")
            .bind(video)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(
        kinds.contains(&"sprite".to_owned()) && kinds.contains(&"default".to_owned()),
        "{kinds:?}"
    );
    let (w, h, dur): (Option<i32>, Option<i32>, i32) = sqlx::query_as(
        "SELECT source_width, source_height, duration_seconds FROM videos WHERE id = $1",
    )
    .bind(video)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (w, h),
        (
            Some(expect.source.display.0 as i32),
            Some(expect.source.display.1 as i32)
        )
    );
    assert_eq!(dur, src_duration.round() as i32);
}

fn store_dir(root: &Path) -> (PathBuf, String) {
    let dir = root.join("store");
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("file://{}", dir.display());
    (dir, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_of_every_shape_become_hls_ladders_and_bad_uploads_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let (store_root, store_url) = store_dir(tmp.path());
    let store = vodfarm_core::store::open(&store_url).await.unwrap();
    let src_dir = tmp.path().join("src");
    std::fs::create_dir_all(&src_dir).unwrap();

    let full = vec![
        ("240p", 426, 240),
        ("720p", 1280, 720),
        ("1080p", 1920, 1080),
    ];
    let mut rotated = lavfi("rotated", 640, 360, 30, 1.0, true);
    rotated.display = (360, 640);
    let mut ten_bit = lavfi("ten_bit", 1280, 720, 30, 1.0, true);
    ten_bit.args.iter_mut().for_each(|a| {
        if a == "yuv420p" {
            *a = "yuv420p10le".into();
        }
    });
    // libx264 needs even sizes in 4:2:0; 4:4:4 keeps 853x479 odd.
    // (testsrc2 itself only makes even sizes: scale after it.)
    let mut odd = lavfi("odd", 854, 480, 25, 1.0, true);
    odd.display = (853, 479);
    odd.args.iter_mut().for_each(|a| {
        if a == "yuv420p" {
            *a = "yuv444p".into();
        }
    });
    odd.args
        .extend(["-vf", "scale=853:479,setsar=1"].map(String::from));
    let mut vfr = lavfi("vfr", 640, 360, 30, 2.0, true);
    vfr.args.extend(
        [
            "-vf",
            "select='lt(n\\,30)+not(mod(n\\,2))'",
            "-fps_mode",
            "vfr",
        ]
        .map(String::from),
    );
    let cases = vec![
        Expect {
            source: lavfi("landscape30", 1920, 1080, 30, 2.0, true),
            rungs: full.clone(),
        },
        Expect {
            source: lavfi("landscape60", 1920, 1080, 60, 1.0, true),
            rungs: full.clone(),
        },
        Expect {
            source: lavfi("portrait", 1080, 1920, 30, 1.0, true),
            rungs: vec![
                ("240p", 240, 426),
                ("720p", 720, 1280),
                ("1080p", 1080, 1920),
            ],
        },
        Expect {
            source: odd,
            rungs: vec![("240p", 428, 240)],
        },
        Expect {
            source: rotated,
            rungs: vec![("240p", 240, 426)],
        },
        Expect {
            source: ten_bit,
            rungs: vec![("240p", 426, 240), ("720p", 1280, 720)],
        },
        Expect {
            source: vfr,
            rungs: vec![("240p", 426, 240)],
        },
        Expect {
            source: lavfi("no_audio", 1280, 720, 30, 1.0, false),
            rungs: vec![("240p", 426, 240), ("720p", 1280, 720)],
        },
    ];
    let mut paths = Vec::new();
    for c in &cases {
        let mut p = c.source.make(&src_dir);
        if c.source.name == "rotated" {
            let r = src_dir.join("rotated_tagged.mp4");
            ffmpeg(&[
                "-i",
                p.to_str().unwrap(),
                "-c",
                "copy",
                "-metadata:s:v:0",
                "rotate=90",
                r.to_str().unwrap(),
            ]);
            p = r;
        }
        paths.push(p);
    }
    // Bad uploads: zero bytes, not a video, a truncated file, a frame
    // larger than the limit, and one frame that claims ten hours.
    let empty = src_dir.join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let junk = src_dir.join("junk.mp4");
    std::fs::write(
        &junk,
        b"PK\x03\x04 this is a zip file, not a video ".repeat(200),
    )
    .unwrap();
    let whole = lavfi("whole", 640, 360, 30, 1.0, true).make(&src_dir);
    let bytes = std::fs::read(&whole).unwrap();
    let truncated = src_dir.join("truncated.mp4");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let huge = src_dir.join("huge.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=gray:size=9000x64:rate=1:duration=1",
        "-c:v",
        "ffv1",
        huge.to_str().unwrap(),
    ]);
    let one_frame = src_dir.join("one_frame_ten_hours.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=red:size=320x240:rate=1/36000",
        "-frames:v",
        "2",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        one_frame.to_str().unwrap(),
    ]);
    let bad: Vec<(&Path, &str)> = vec![
        (&empty, "empty"),
        (&junk, "not a video"),
        (&truncated, "not a video"),
        (&huge, "9000x64 pixels"),
        (&one_frame, "longest accepted"),
    ];

    let db = TestDb::new().await;
    let coordinator =
        CoordinatorProcess::start(&db, &["--retry-base", "100ms", "--retry-max", "200ms"]).await;
    let mut good = Vec::new();
    for p in &paths {
        good.push(submit(&db, &store, p, 1).await);
    }
    let mut failed = Vec::new();
    for (p, _) in &bad {
        failed.push(submit(&db, &store, p, 1).await);
    }
    let scratch = tmp.path().join("scratch");
    let mut worker = WorkerProcess::start(
        &coordinator.base,
        &store_url,
        &scratch,
        &[],
        &["--x264-preset", "veryfast"],
    );
    let all: Vec<i64> = good.iter().chain(&failed).map(|(v, _)| *v).collect();
    let settled = wait_settled(&db, &all, Duration::from_secs(600)).await;

    for ((video, _), (path, want)) in failed.iter().zip(&bad) {
        let (status, err) = &settled[video];
        assert_eq!(status, "failed", "{}", path.display());
        let err = err.clone().unwrap_or_default();
        assert!(
            err.contains(want),
            "{}: {err:?} should say {want:?}",
            path.display()
        );
        let attempts: i32 =
            sqlx::query_scalar("SELECT max(attempts) FROM processing_jobs WHERE video_id = $1")
                .bind(video)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(attempts, 1, "bad input is not retried");
    }
    for (((video, public), path), expect) in good.iter().zip(&paths).zip(&cases) {
        assert_eq!(
            settled[video].0, "ready",
            "{}: {:?}",
            expect.source.name, settled[video]
        );
        check_video(&db, &store_root, *video, public, path, expect).await;
    }
    // The worker kept serving through the bad uploads, and cleaned up.
    let metrics = reqwest::get(format!("{}/metrics", worker.metrics_base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metric(
            &metrics,
            "vodfarm_worker_jobs_total{job_type=\"transcode\",outcome=\"completed\"}"
        )
        .unwrap_or(0.0)
            >= cases.len() as f64,
        "{metrics}"
    );
    // Per-stage frames, on the device each stage ran on: the CPU here;
    // the GPU where scripts/gpu-check.sh runs this with --gpu auto.
    let device = match std::env::var("VODFARM_TEST_GPU").as_deref() {
        Ok("auto") => "gpu0",
        _ => "cpu",
    };
    for stage in ["decode", "scale"] {
        let name =
            format!("vodfarm_worker_stage_frames_total{{device=\"{device}\",stage=\"{stage}\"}}");
        assert!(
            metric(&metrics, &name).unwrap_or(0.0) > 0.0,
            "{name}: {metrics}"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&scratch).unwrap().collect();
    assert!(leftovers.is_empty(), "scratch cleaned: {leftovers:?}");
    assert_eq!(
        worker
            .terminate(Duration::from_secs(30))
            .map(|s| s.success()),
        Some(true),
        "exit 0 on SIGTERM"
    );
}

/// Waits until the video's `job_type` job is processing.
async fn wait_processing(db: &TestDb, video: i64, job_type: &str) {
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let status: String = sqlx::query_scalar(
            "SELECT status FROM processing_jobs WHERE video_id = $1 AND job_type = $2",
        )
        .bind(video)
        .bind(job_type)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if status == "processing" {
            return;
        }
        assert!(Instant::now() < end, "{job_type} never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_running_job_back_and_another_worker_finishes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (store_root, store_url) = store_dir(tmp.path());
    let store = vodfarm_core::store::open(&store_url).await.unwrap();
    let source = lavfi("drain", 1920, 1080, 30, 2.0, true);
    let path = source.make(tmp.path());
    let db = TestDb::new().await;
    let coordinator =
        CoordinatorProcess::start(&db, &["--retry-base", "100ms", "--retry-max", "200ms"]).await;
    let (video, public) = submit(&db, &store, &path, 1).await;
    let scratch = tmp.path().join("scratch");
    let flags = ["--job-types", "transcode", "--drain-timeout", "0s"];
    let mut first = WorkerProcess::start(&coordinator.base, &store_url, &scratch, &[], &flags);
    wait_processing(&db, video, "transcode").await;
    let status = first
        .terminate(Duration::from_secs(60))
        .expect("worker exits after SIGTERM");
    assert!(status.success(), "exit 0: {status:?}");
    let (job_status, attempts, error): (String, i32, Option<String>) = sqlx::query_as(
        "SELECT status, attempts, error_message FROM processing_jobs WHERE video_id = $1 AND job_type = 'transcode'",
    )
    .bind(video)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (job_status.as_str(), attempts),
        ("pending", 0),
        "handed back for a retry, the attempt not counted"
    );
    assert!(error.unwrap_or_default().contains("shut down"));
    assert!(
        std::fs::read_dir(&scratch).unwrap().next().is_none(),
        "scratch cleaned"
    );

    let _second = WorkerProcess::start(
        &coordinator.base,
        &store_url,
        &scratch,
        &[],
        &["--x264-preset", "ultrafast"],
    );
    let settled = wait_settled(&db, &[video], Duration::from_secs(300)).await;
    assert_eq!(settled[&video].0, "ready", "{:?}", settled[&video]);
    let master =
        std::fs::read_to_string(store_root.join("encoded").join(&public).join("master.m3u8"))
            .unwrap();
    assert_eq!(master.matches("#EXT-X-STREAM-INF").count(), 3);
}

/// A worker cut off from the coordinator (which stops answering: its
/// port stays open) stops its job once the lease has run out by its own
/// clock, since the coordinator may give the job to another worker and a
/// deleted video's last purge may run: the job ends as `lease_lost`
/// rather than finishing and being reported late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_the_coordinator_stops_when_its_lease_runs_out() {
    let tmp = tempfile::tempdir().unwrap();
    let (_store_root, store_url) = store_dir(tmp.path());
    let store = vodfarm_core::store::open(&store_url).await.unwrap();
    let source = lavfi("cutoff", 1920, 1080, 30, 2.0, true);
    let path = source.make(tmp.path());
    let db = TestDb::new().await;
    let coordinator = CoordinatorProcess::start(&db, &["--lease-ttl", "2s"]).await;
    let (video, _) = submit(&db, &store, &path, 1).await;
    let scratch = tmp.path().join("scratch");
    // The slowest preset: the job lasts far longer than the lease.
    let worker = WorkerProcess::start(
        &coordinator.base,
        &store_url,
        &scratch,
        &[],
        &["--job-types", "transcode", "--x264-preset", "placebo"],
    );
    wait_processing(&db, video, "transcode").await;
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .arg(sig)
            .arg(coordinator.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    let end = Instant::now() + Duration::from_secs(120);
    let outcome = loop {
        let text = metrics_text(&worker.metrics_base).await;
        let done: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("vodfarm_worker_jobs_total{") && !l.ends_with(" 0"))
            .map(str::to_owned)
            .collect();
        if !done.is_empty() {
            break done;
        }
        assert!(Instant::now() < end, "the job neither stopped nor ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    signal("-CONT");
    assert_eq!(outcome.len(), 1, "{outcome:?}");
    assert!(
        outcome[0].contains("outcome=\"lease_lost\"")
            && outcome[0].contains("job_type=\"transcode\""),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_an_s3_server() {
    let s3 = vodfarm_core::testing::S3Server::start().await;
    let client = s3.client();
    client.create_bucket().bucket("media").send().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let source = lavfi("s3", 640, 360, 30, 1.0, true);
    let path = source.make(tmp.path());
    let db = TestDb::new().await;
    let coordinator = CoordinatorProcess::start(&db, &[]).await;
    let (video, public) = insert_video(&db.pool).await;
    let original = layout::original(&public, "mp4").unwrap();
    client
        .put_object()
        .bucket("media")
        .key(original.as_str())
        .body(std::fs::read(&path).unwrap().into())
        .send()
        .await
        .unwrap();
    let jobs = upload_jobs(
        &public,
        &original,
        &RenditionLadder::default(),
        1,
        vodfarm_core::playlists::Packaging::Ts,
        0,
    )
    .unwrap();
    enqueue(&db.pool, video, &jobs).await;
    let _worker = WorkerProcess::start(
        &coordinator.base,
        "s3://media",
        &tmp.path().join("scratch"),
        &s3.env(),
        &["--x264-preset", "ultrafast"],
    );
    let settled = wait_settled(&db, &[video], Duration::from_secs(300)).await;
    assert_eq!(settled[&video].0, "ready", "{:?}", settled[&video]);
    let get = |key: String| {
        let client = client.clone();
        async move {
            let o = client
                .get_object()
                .bucket("media")
                .key(key)
                .send()
                .await
                .unwrap();
            o.body.collect().await.unwrap().into_bytes()
        }
    };
    let master = String::from_utf8(
        get(layout::master_playlist(&public).unwrap().to_string())
            .await
            .to_vec(),
    )
    .unwrap();
    assert!(master.contains("RESOLUTION=426x240"), "{master}");
    let playlist = String::from_utf8(
        get(layout::rendition_playlist(&public, "240p")
            .unwrap()
            .to_string())
        .await
        .to_vec(),
    )
    .unwrap();
    let (_, _, uris) = check_media_playlist(&playlist);
    let seg = tmp.path().join("seg.ts");
    std::fs::write(
        &seg,
        get(layout::segment(&public, "240p", 0).unwrap().to_string()).await,
    )
    .unwrap();
    assert_eq!(uris[0], "segment_0.ts");
    let p = ffprobe(&seg, &["-show_streams", "-select_streams", "v:0"]);
    assert_eq!(p["streams"][0]["width"], 426);
    let sprite = get(layout::thumb_file(&public, layout::ThumbFile::Sprite)
        .unwrap()
        .to_string())
    .await;
    assert!(sprite.starts_with(&[0xff, 0xd8]), "sprite is a JPEG");
}
