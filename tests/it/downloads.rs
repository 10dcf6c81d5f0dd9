//! MP4 downloads end to end: api, coordinator, a real worker and an
//! origin on s3s-fs. The MP4 is decoded with `ffmpeg -xerror`, its boxes
//! read for `moov` before `mdat`, its duration compared with the HLS
//! rendition's, and it is served with Range and the access rules.

use crate::api_support::{ApiProcess, SIGNING_SECRET};
use crate::common::{free_port, CoordinatorProcess, TestDb};
use crate::media_support::{check_media_playlist, ffmpeg, ffprobe, lavfi, WorkerProcess};
use crate::origin_support::OriginProcess;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use vodfarm_core::store::S3Store;
use vodfarm_core::testing::S3Server;

const BUCKET: &str = "vodfarm-downloads";

/// Top-level MP4 box types, in file order.
fn top_level_boxes(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let size32 = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as u64;
        let kind = String::from_utf8_lossy(&bytes[at + 4..at + 8]).into_owned();
        let size = match size32 {
            1 => u64::from_be_bytes(bytes[at + 8..at + 16].try_into().unwrap()),
            0 => (bytes.len() - at) as u64,
            n => n,
        };
        assert!(size >= 8, "box {kind} of size {size}");
        out.push(kind);
        at += size as usize;
    }
    assert_eq!(at, bytes.len(), "boxes end at the end of the file");
    out
}

/// Waits until `id` is ready (panics if it fails); returns its view.
async fn ready(http: &reqwest::Client, api: &str, token: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let v: Value = http
            .get(format!("{api}/v1/videos/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match v["status"].as_str() {
            Some("ready") => return v,
            Some("failed") => panic!("processing failed: {v}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "not ready: {v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Uploads `bytes` in one tus PATCH as a new video; returns its id.
async fn upload(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    body: Value,
    bytes: Vec<u8>,
) -> String {
    let created: Value = http
        .post(format!("{api}/v1/videos"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = http
        .patch(created["upload_url"].as_str().expect("upload_url"))
        .bearer_auth(created["upload_token"].as_str().unwrap())
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    created["video_id"].as_str().unwrap().to_owned()
}

async fn object(s3: &aws_sdk_s3::Client, key: &str) -> Vec<u8> {
    s3.get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e:?}"))
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_mp4_download_starts_at_once_plays_whole_and_serves_ranges() {
    let tmp = tempfile::Builder::new().prefix("mp4-").tempdir().unwrap();
    let db = TestDb::new().await;
    let s3 = S3Server::start().await;
    let s3c = s3.client();
    S3Store::with_client(s3c.clone(), BUCKET, "")
        .ensure_bucket()
        .await
        .expect("bucket");
    let store = format!("s3://{BUCKET}");
    let coordinator = CoordinatorProcess::start(&db, &[]).await;
    let mut origin_env = s3.env();
    origin_env.push(("VODFARM_STORE", store.clone()));
    let origin = OriginProcess::start(&db, "store", &origin_env, &[]).await;
    let api_args: Vec<String> = [
        "--database-url",
        &db.url,
        "--store",
        &store,
        "--signing-secret",
        SIGNING_SECRET,
        "--public-origin-url",
        &origin.base,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let api = ApiProcess::start(free_port(), api_args, s3.env()).await;
    let _worker = WorkerProcess::start(
        &coordinator.base,
        &store,
        &tmp.path().join("scratch"),
        &s3.env(),
        &["--worker-id", "mp4-worker"],
    );
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", api.base);
    let user: Value = http
        .post(url("/v1/users"))
        .json(&json!({"username": "downloader", "email": "d@example.com", "password": "correct horse"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = user["token"].as_str().expect("token").to_owned();
    let channel: Value = http
        .post(url("/v1/channels"))
        .bearer_auth(&token)
        .json(&json!({"name": "Downloads"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let channel = channel["channel_id"].as_str().unwrap().to_owned();

    // A rung name that is not one is refused, naming the field.
    let r = http
        .post(url("/v1/videos"))
        .bearer_auth(&token)
        .json(
            &json!({"channel_id": channel, "title": "x", "size_bytes": 10,
                      "mp4_renditions": ["../etc"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["field"], "mp4_renditions");

    // A short 240-line source with a tone: the ladder makes 240p.
    let source = lavfi("mp4src", 426, 240, 25, 4.0, true).make(tmp.path());
    let bytes = std::fs::read(&source).unwrap();
    let id = upload(
        &http,
        &api.base,
        &token,
        json!({"channel_id": channel, "title": "Trip: day 1", "filename": "trip.mp4",
               "size_bytes": bytes.len(), "mp4_renditions": ["240p", "1080p"]}),
        bytes.clone(),
    )
    .await;
    let served_source = bytes;
    let video = ready(&http, &api.base, &token, &id).await;
    // Ready waits for the MP4: it is listed at once, and the rung this
    // source has no room for (1080p) is simply absent.
    let downloads = video["downloads"].as_array().expect("downloads");
    assert_eq!(downloads.len(), 1, "{video}");
    assert_eq!(downloads[0]["rendition"], "240p");
    let key = format!("encoded/{id}/240p/video.mp4");
    let stored = object(&s3c, &key).await;
    assert_eq!(downloads[0]["size_bytes"], stored.len());
    let dl_url = downloads[0]["url"].as_str().unwrap().to_owned();
    assert_eq!(dl_url, origin.url(&format!("/v/{id}/240p/video.mp4")));

    // Through the origin: the whole file, named after the title.
    let r = http.get(&dl_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cd = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cd.starts_with("attachment;"), "{cd}");
    assert!(cd.contains("filename=\"Trip_ day 1.mp4\""), "{cd}");
    assert!(cd.contains("filename*=UTF-8''Trip_%20day%201.mp4"), "{cd}");
    let served = r.bytes().await.unwrap().to_vec();
    assert_eq!(served, stored);
    let path = tmp.path().join("download.mp4");
    std::fs::write(&path, &served).unwrap();

    // moov before mdat: a player starts without reading to the end.
    let boxes = top_level_boxes(&served);
    let moov = boxes.iter().position(|b| b == "moov").expect("moov");
    let mdat = boxes.iter().position(|b| b == "mdat").expect("mdat");
    assert!(moov < mdat, "{boxes:?}");
    // It decodes whole, without an error.
    ffmpeg(&["-xerror", "-i", path.to_str().unwrap(), "-f", "null", "-"]);
    // H.264 + AAC, and as long as the HLS rendition (within a frame).
    let probe = ffprobe(&path, &["-show_streams", "-show_format"]);
    let streams = probe["streams"].as_array().unwrap();
    let v = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .expect("video stream");
    assert_eq!(v["codec_name"], "h264");
    assert_eq!(v["codec_tag_string"], "avc1");
    let a = streams
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .expect("audio stream");
    assert_eq!(a["codec_name"], "aac");
    let playlist =
        String::from_utf8(object(&s3c, &format!("encoded/{id}/240p/playlist.m3u8")).await).unwrap();
    let (_, extinf, _) = check_media_playlist(&playlist);
    let hls: f64 = extinf.iter().sum();
    let mp4: f64 = v["duration"].as_str().unwrap().parse().unwrap();
    assert!(
        (mp4 - hls).abs() <= 1.0 / 25.0 + 1e-3,
        "MP4 video {mp4} s, HLS rendition {hls} s"
    );

    // A Range in the middle: 206 and exactly those bytes.
    let (from, to) = (served.len() / 2, served.len() / 2 + 999);
    let r = http
        .get(&dl_url)
        .header("Range", format!("bytes={from}-{to}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes {from}-{to}/{}", served.len()).as_str()
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), &served[from..=to]);

    // The same access rules as segments: private needs the token.
    let r = http
        .patch(url(&format!("/v1/videos/{id}")))
        .bearer_auth(&token)
        .json(&json!({"privacy": "private"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let private_url = v["downloads"][0]["url"].as_str().unwrap().to_owned();
    assert!(private_url.contains("?token="), "{private_url}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = http.get(&dl_url).send().await.unwrap().status();
        if status == 403 {
            break;
        }
        assert!(Instant::now() < deadline, "still {status} without a token");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = http
        .get(&private_url)
        .header("Range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &served[..100]);
    let status = http
        .get(origin.url(&format!("/v/{id}/240p/video.mp4?token=nope")))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 403);

    // PATCH on a ready video: a removed rung goes away, an added one is
    // made by a new mp4 job while the video stays ready.
    let patch = |list: Value| {
        let http = http.clone();
        let (u, t) = (url(&format!("/v1/videos/{id}")), token.clone());
        async move {
            let r = http
                .patch(u)
                .bearer_auth(t)
                .json(&json!({"mp4_renditions": list}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let v = patch(json!([])).await;
    assert_eq!(v["downloads"], json!([]));
    assert!(
        s3c.head_object()
            .bucket(BUCKET)
            .key(&key)
            .send()
            .await
            .is_err(),
        "the removed rung's file is deleted"
    );
    let v = patch(json!(["240p"])).await;
    assert_eq!(v["status"], "ready");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = ready(&http, &api.base, &token, &id).await;
        if v["downloads"].as_array().is_some_and(|d| d.len() == 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the download was not made again: {v}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(object(&s3c, &key).await.len(), served.len());

    // CMAF packaging: the rung's fMP4 track and the shared audio track
    // become one progressive MP4 too.
    let cmaf = upload(
        &http,
        &api.base,
        &token,
        json!({"channel_id": channel, "title": "CMAF", "filename": "c.mp4", "packaging": "cmaf",
               "size_bytes": served_source.len(), "mp4_renditions": ["240p"]}),
        served_source,
    )
    .await;
    let v = ready(&http, &api.base, &token, &cmaf).await;
    assert_eq!(v["downloads"][0]["rendition"], "240p", "{v}");
    let got = object(&s3c, &format!("encoded/{cmaf}/240p/video.mp4")).await;
    let boxes = top_level_boxes(&got);
    assert!(
        boxes.iter().position(|b| b == "moov") < boxes.iter().position(|b| b == "mdat"),
        "{boxes:?}"
    );
    assert!(
        !boxes.iter().any(|b| b == "moof"),
        "progressive, not fragmented: {boxes:?}"
    );
    let path = tmp.path().join("cmaf.mp4");
    std::fs::write(&path, &got).unwrap();
    ffmpeg(&["-xerror", "-i", path.to_str().unwrap(), "-f", "null", "-"]);
    let probe = ffprobe(&path, &["-show_streams"]);
    let kinds: Vec<&str> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["video", "audio"]);
}
