//! Subtitles through the real api, store, database and origin: uploads
//! of WebVTT and SRT, the clear 4xx answers to malformed, binary and
//! oversized files (with the line of the problem), owner-only changes,
//! the playlists rewritten on every change (the master lists the track,
//! the WebVTT playlist points at the file), every change purging the
//! video's cached answers at the origin at once and at the CDNs through
//! the outbox, and a private video's subtitles needing its token.

use crate::api_support::{ApiEnv, BUCKET};
use crate::origin_support::{within, OriginProcess};
use serde_json::Value;
use std::time::Duration;
use vodfarm_core::playlists::{Packaging, RenditionSet, RenditionSummary, SegmentEntry};

const VTT: &str = "WEBVTT\n\n00:00.500 --> 00:01.500\nHello <i>there</i>\n\nbye\n00:01.600 --> 00:01.900 align:start\nBye\n";
const SRT: &str = "1\r\n00:00:00,500 --> 00:00:01,500\r\nOlá\r\n\r\n2\r\n00:00:01,600 --> 00:00:01,900\r\nTchau\r\n";

async fn object(env: &ApiEnv, key: &str) -> Option<String> {
    let r = env
        .s3c
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .ok()?;
    let b = r.body.collect().await.ok()?.into_bytes();
    Some(String::from_utf8(b.to_vec()).expect("utf-8 object"))
}

async fn put(
    env: &ApiEnv,
    token: Option<&str>,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut rq = env.http.put(env.url(path)).body(body);
    if let Some(t) = token {
        rq = rq.bearer_auth(t);
    }
    let r = rq.send().await.expect("put");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn purges(env: &ApiEnv, id: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT reason FROM cdn_purges WHERE video_id = $1 ORDER BY id")
        .bind(id)
        .fetch_all(&env.db.pool)
        .await
        .expect("purges")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subtitles_are_checked_stored_listed_in_the_playlists_and_purged() {
    let env = ApiEnv::start(&["--max-subtitle-size", "64KiB"]).await;
    let (_, owner) = env.signup("subs_owner").await;
    let (_, other) = env.signup("subs_other").await;
    let channel = env.channel(&owner).await;
    let v = env.initiate(&owner, &channel, 1000, "public").await;
    let id = v["video_id"].as_str().expect("video_id").to_owned();
    let base = format!("/v1/videos/{id}/subtitles");

    // Who may change them.
    assert_eq!(put(&env, None, &format!("{base}/en"), VTT).await.0, 401);
    let (st, body) = put(&env, Some(&other), &format!("{base}/en"), VTT).await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );

    // Malformed files: 4xx with the line, nothing stored.
    for (file, line, what) in [
        (
            "WEBVTT\n\n00:00.500 --> 00:01.500\nok\n\n00:02.000 --> 00:0x.000\nbad\n",
            "line 6",
            "bad end time",
        ),
        (
            "WEBVTT\n\n00:03.000 --> 00:01.000\nbackwards\n",
            "line 3",
            "end after it starts",
        ),
        (
            "1\n00:00:01,000 -> 00:00:02,000\nx\n",
            "line 2",
            "timing line",
        ),
        ("just some text\n", "line 1", "WEBVTT"),
    ] {
        let (st, body) = put(&env, Some(&owner), &format!("{base}/en"), file).await;
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(st, 422, "{file:?}: {body}");
        assert_eq!(body["error"]["code"], "invalid_subtitles");
        assert!(
            msg.starts_with(line) && msg.contains(what),
            "{file:?}: {msg}"
        );
    }
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (st, body) = put(&env, Some(&owner), &format!("{base}/en"), junk).await;
    assert_eq!(st, 422, "binary junk: {body}");
    let big = format!(
        "WEBVTT\n\n{}",
        "00:00.000 --> 00:01.000\nxxxxxxxxxxxxxxxxxxxxxxxxxx\n\n".repeat(400_000)
    );
    assert!(big.len() > 10_000_000);
    // The api answers 413 as soon as the body passes the limit and closes
    // the connection: a client still writing may see the close (EPIPE,
    // reset) before it reads the answer. Either is a refusal; an answer
    // must be the 413.
    match env
        .http
        .put(env.url(&format!("{base}/en")))
        .bearer_auth(&owner)
        .body(big)
        .send()
        .await
    {
        Ok(r) => {
            let st = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert_eq!(
                (st, body["error"]["code"].as_str()),
                (413, Some("payload_too_large"))
            );
        }
        Err(e) => {
            let why = format!("{e:?}");
            assert!(
                why.contains("BrokenPipe") || why.contains("ConnectionReset"),
                "a 10 MB subtitle file: {why}"
            );
        }
    }
    for bad_lang in ["e", "en_US", "toolong-language-tag"] {
        let (st, _) = put(&env, Some(&owner), &format!("{base}/{bad_lang}"), VTT).await;
        assert_eq!(st, 422, "{bad_lang}");
    }
    let (st, _) = put(&env, Some(&owner), &format!("{base}/en?label=%0A"), VTT).await;
    assert_eq!(st, 422, "a label with a newline");
    assert_eq!(object(&env, &format!("subtitles/{id}/en.vtt")).await, None);

    // WebVTT while the video is still processing: stored, recorded in the
    // sidecar for the manifest job; no CDN purge (nothing is cached).
    let (st, body) = put(&env, Some(&owner), &format!("{base}/en?label=English"), VTT).await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["lang"], "en");
    assert_eq!(body["label"], "English");
    assert_eq!(body["cue_count"], 2);
    assert_eq!(body["source_format"], "vtt");
    assert_eq!(body["url"], format!("http://origin.test/s/{id}/en.vtt"));
    let stored = object(&env, &format!("subtitles/{id}/en.vtt"))
        .await
        .expect("stored");
    assert_eq!(
        stored,
        "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:126000,LOCAL:00:00:00.000\n\n00:00:00.500 --> 00:00:01.500\nHello <i>there</i>\n\nbye\n00:00:01.600 --> 00:00:01.900 align:start\nBye\n"
    );
    let sidecar: Value = serde_json::from_str(
        &object(&env, &format!("encoded/{id}/subtitles.json"))
            .await
            .expect("sidecar"),
    )
    .expect("json");
    assert_eq!(sidecar["tracks"][0]["label"], "English");
    assert!(purges(&env, &id).await.is_empty());

    // The video becomes ready (as the manifest job leaves it).
    let set = RenditionSet {
        renditions: vec![RenditionSummary {
            name: "240p".into(),
            width: 426,
            height: 240,
            frame_rate: 30.0,
            codecs: "avc1.64000d,mp4a.40.2".into(),
            segments: vec![SegmentEntry {
                duration: 2.0,
                bytes: 100_000,
            }],
        }],
        packaging: Packaging::Ts,
        audio: None,
    };
    env.s3c
        .put_object()
        .bucket(BUCKET)
        .key(format!("encoded/{id}/renditions.json"))
        .body(serde_json::to_vec(&set).expect("json").into())
        .send()
        .await
        .expect("put sidecar");
    env.s3c
        .put_object()
        .bucket(BUCKET)
        .key(format!("encoded/{id}/master.m3u8"))
        .body(set.master_playlist(&id, &[]).into_bytes().into())
        .send()
        .await
        .expect("put master");
    sqlx::query("UPDATE videos SET status = 'ready' WHERE video_id = $1")
        .bind(&id)
        .execute(&env.db.pool)
        .await
        .expect("ready");
    let origin = OriginProcess::start(
        &env.db,
        "store",
        &env.s3.env(),
        &["--store", &format!("s3://{BUCKET}")],
    )
    .await;
    let master_url = origin.url(&format!("/v/{id}/master.m3u8"));
    let get = |url: String| async move {
        let r = reqwest::get(&url).await.expect("get");
        (r.status().as_u16(), r.text().await.expect("text"))
    };
    let (st, master) = get(master_url.clone()).await;
    assert_eq!(st, 200);
    assert!(!master.contains("SUBTITLES"), "{master}");

    // SRT in Portuguese: converted, listed, the master rewritten; the
    // origin drops its cached master at once.
    let (st, body) = put(
        &env,
        Some(&owner),
        &format!("{base}/PT-br?label=Portugu%C3%AAs"),
        SRT,
    )
    .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["lang"], "pt-BR");
    assert_eq!(body["source_format"], "srt");
    let vtt = object(&env, &format!("subtitles/{id}/pt-BR.vtt"))
        .await
        .expect("stored");
    assert!(
        vtt.contains(
            "\n\n00:00:00.500 --> 00:00:01.500\nOlá\n\n00:00:01.600 --> 00:00:01.900\nTchau\n"
        ),
        "{vtt}"
    );
    within(
        Duration::from_secs(5),
        "the origin serves the new master",
        || {
            let url = master_url.clone();
            async move { get(url).await.1.contains("LANGUAGE=\"pt-BR\"") }
        },
    )
    .await;
    let (_, master) = get(master_url.clone()).await;
    assert!(master.contains("#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"English\",LANGUAGE=\"en\",DEFAULT=NO,AUTOSELECT=YES,FORCED=NO,URI=\"../../s/"), "{master}");
    assert!(
        master.contains("NAME=\"Português\",LANGUAGE=\"pt-BR\""),
        "{master}"
    );
    assert!(
        master.contains(",SUBTITLES=\"subs\"\n240p/playlist.m3u8\n"),
        "{master}"
    );
    let (st, pl) = get(origin.url(&format!("/s/{id}/en.m3u8"))).await;
    assert_eq!(st, 200);
    assert!(
        pl.contains("#EXTINF:2.000000,\nen.vtt\n#EXT-X-ENDLIST\n"),
        "{pl}"
    );
    let r = reqwest::get(origin.url(&format!("/s/{id}/pt-BR.vtt")))
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/vtt"));
    assert_eq!(r.text().await.expect("text"), vtt);
    assert_eq!(purges(&env, &id).await, ["subtitles"]);

    // Replacing a track: 200, same URL, new bytes at the origin at once.
    let (st, body) = put(
        &env,
        Some(&owner),
        &format!("{base}/en?label=English%20(CC)"),
        VTT.replace("Bye", "Goodbye"),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let en_url = origin.url(&format!("/s/{id}/en.vtt"));
    within(
        Duration::from_secs(5),
        "the origin serves the new file",
        || {
            let url = en_url.clone();
            async move { get(url).await.1.contains("Goodbye") }
        },
    )
    .await;

    // The list: anyone may read a public video's tracks.
    let r = env.http.get(env.url(&base)).send().await.expect("list");
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.expect("json");
    let langs: Vec<&str> = list["subtitles"]
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["lang"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(langs, ["en", "pt-BR"]);
    assert_eq!(list["subtitles"][0]["label"], "English (CC)");

    // Removing one: the master no longer lists it, its files are gone.
    let r = env
        .http
        .delete(env.url(&format!("{base}/pt-br")))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    let r = env
        .http
        .delete(env.url(&format!("{base}/pt-BR")))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 404);
    within(Duration::from_secs(5), "the origin drops the track", || {
        let url = master_url.clone();
        async move { !get(url).await.1.contains("pt-BR") }
    })
    .await;
    assert_eq!(
        object(&env, &format!("subtitles/{id}/pt-BR.vtt")).await,
        None
    );
    assert_eq!(
        object(&env, &format!("subtitles/{id}/pt-BR.m3u8")).await,
        None
    );
    assert_eq!(
        purges(&env, &id).await,
        ["subtitles", "subtitles", "subtitles"]
    );

    // Private: the list is the owner's, the files need the token.
    sqlx::query("UPDATE videos SET privacy = 'private' WHERE video_id = $1")
        .bind(&id)
        .execute(&env.db.pool)
        .await
        .expect("private");
    let r = env.http.get(env.url(&base)).send().await.expect("list");
    assert_eq!(r.status(), 404);
    let r = env
        .http
        .get(env.url(&base))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("list");
    let list: Value = r.json().await.expect("json");
    let url = list["subtitles"][0]["url"]
        .as_str()
        .expect("url")
        .to_owned();
    let query = url.split_once('?').expect("a token").1.to_owned();
    assert!(query.starts_with("token="), "{url}");
    within(
        Duration::from_secs(5),
        "the origin refuses tokenless subtitles",
        || {
            let url = en_url.clone();
            async move { get(url).await.0 == 403 }
        },
    )
    .await;
    let (st, body) = get(format!("{en_url}?{query}")).await;
    assert_eq!(st, 200);
    assert!(body.contains("Goodbye"));
    // The master handed to the viewer carries the token to the subtitle
    // playlist, and that playlist to the file.
    let (_, master) = get(format!("{master_url}?{query}")).await;
    assert!(master.contains(&format!("/en.m3u8?{query}\"")), "{master}");
    let (st, pl) = get(origin.url(&format!("/s/{id}/en.m3u8?{query}"))).await;
    assert_eq!(st, 200);
    assert!(pl.contains(&format!("\nen.vtt?{query}\n")), "{pl}");

    // Deleting the video removes the tracks with it.
    let r = env
        .http
        .delete(env.url(&format!("/v1/videos/{id}")))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    env.wait_empty(&format!("subtitles/{id}/")).await;
}
