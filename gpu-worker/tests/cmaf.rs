//! CMAF packaging on its own: a 720p source with audio through
//! `transcode` as CMAF; its files laid out as the origin serves them with
//! the playlists and MPD `vodfarm_core` writes; then ffmpeg decodes the
//! video through `master.m3u8` (HLS v7) and through `manifest.mpd`
//! (DASH) with `-xerror`, ffprobe reads every representation of the
//! MPD, and libavformat's MP4 demuxer reads each segment after its init
//! segment at the decode time its `tfdt` says (continuous across
//! segments, aligned across renditions); the MPDs validate against the
//! DASH schema where it is installed (`DASH_MPD_XSD`).

use std::path::Path;
use std::process::Command;
use vodfarm_core::ladder::RenditionLadder;
use vodfarm_core::playlists::{Packaging, RenditionSet, SubtitleTrack, AUDIO_TRACK};
use vodfarm_gpu_worker::media::hls::SegmentKind;
use vodfarm_gpu_worker::media::probe::Limits;
use vodfarm_gpu_worker::media::stages::StageChoice;
use vodfarm_gpu_worker::media::transcode::{transcode, TranscodeRequest};
use vodfarm_gpu_worker::media::JobControl;

fn run(cmd: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(cmd).args(args).output().expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// First packet's dts (seconds) of `stream` (v or a) in init + segment.
fn first_dts(init: &Path, seg: &Path, joined: &Path, stream: &str) -> f64 {
    let mut bytes = std::fs::read(init).unwrap();
    bytes.extend(std::fs::read(seg).unwrap());
    std::fs::write(joined, bytes).unwrap();
    let (ok, out, err) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            stream,
            "-show_entries",
            "packet=dts_time",
            "-read_intervals",
            "%+#1",
            "-of",
            "csv=p=0",
            joined.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    out.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no packet in {}: {out} {err}", seg.display()))
}

/// Validates MPDs against the DASH schema (ISO/IEC 23009-1
/// `DASH-MPD.xsd` from github.com/MPEGGroup/DASHSchema, with its XLink
/// import resolvable locally) with `xmllint`, when `DASH_MPD_XSD` names
/// it. The schema is not vendored (its licence is not ours to
/// redistribute); without it this check says clearly that it did not run.
fn validate_mpd(mpds: &[&Path]) {
    let Some(xsd) = std::env::var_os("DASH_MPD_XSD") else {
        eprintln!(
            "NOT RUN: DASH schema validation (set DASH_MPD_XSD to DASH-MPD.xsd and install xmllint)"
        );
        return;
    };
    for mpd in mpds {
        let out = Command::new("xmllint")
            .arg("--noout")
            .arg("--schema")
            .arg(&xsd)
            .arg(mpd)
            .output()
            .expect("run xmllint (apt-get install libxml2-utils)");
        assert!(
            out.status.success(),
            "{} does not validate: {}",
            mpd.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{} validates against {:?}", mpd.display(), xsd);
    }
}

#[test]
fn cmaf_plays_over_hls_and_dash_with_continuous_fragments() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.mp4");
    let (ok, _, err) = run(
        "ffmpeg",
        &[
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30000/1001:duration=5",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=300:duration=5",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
            src.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let out_dir = dir.path().join("v");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let files = seen.clone();
    let request = TranscodeRequest {
        source: src,
        work_dir: out_dir.clone(),
        ladder: RenditionLadder::default(),
        segment_seconds: 2,
        preset: "ultrafast".into(),
        stages: StageChoice::SOFTWARE,
        limits: Limits::default(),
        packaging: Packaging::Cmaf,
        chunk: None,
        gpu: None,
    };
    let output = transcode(&request, &JobControl::default(), move |s| {
        files.lock().unwrap().push(s);
        Ok(())
    })
    .unwrap();
    let names: Vec<&str> = output.renditions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["240p", "720p"]);
    let audio = output.audio.clone().expect("an audio track");
    assert_eq!(audio.codecs, "mp4a.40.2");
    for r in &output.renditions {
        assert!(
            r.codecs.starts_with("avc1.") && r.codecs.len() == 11,
            "{}",
            r.codecs
        );
        assert!(!r.codecs.contains("mp4a"), "video-only renditions");
        // 5 s at 2 s segments, cut at the same frames in every rendition.
        let d: Vec<String> = r
            .segments
            .iter()
            .map(|s| format!("{:.3}", s.duration))
            .collect();
        assert_eq!(d, ["2.002", "2.002", "1.001"], "{}", r.name);
    }
    assert!(audio.segments.len() >= 2, "{:?}", audio.segments);
    let total: f64 = audio.segments.iter().map(|s| s.duration).sum();
    assert!(
        total > 4.5 && total < 5.1,
        "audio lasts {total}: {:?}",
        audio.segments
    );
    let files = seen.lock().unwrap().clone();
    let inits = files
        .iter()
        .filter(|f| f.kind == SegmentKind::CmafInit)
        .count();
    assert_eq!(inits, 3, "one init per track");
    assert!(files.iter().all(|f| f.kind != SegmentKind::Ts));

    // The layout the origin serves (`/v/{id}/…`), with core's manifests.
    let set = RenditionSet {
        renditions: output.renditions.clone(),
        packaging: Packaging::Cmaf,
        audio: Some(audio.clone()),
    };
    for r in output.renditions.iter().chain([&audio]) {
        std::fs::write(
            out_dir.join(&r.name).join("playlist.m3u8"),
            r.media_playlist_for(Packaging::Cmaf),
        )
        .unwrap();
    }
    let subs = [SubtitleTrack {
        lang: "en".into(),
        label: "English".into(),
    }];
    let master = set.master_playlist("v_test", &[]);
    assert!(
        master.starts_with("#EXTM3U\n#EXT-X-VERSION:7\n"),
        "{master}"
    );
    assert!(
        master.contains("#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\""),
        "{master}"
    );
    assert!(
        master.contains(",AUDIO=\"aud\"\n720p/playlist.m3u8"),
        "{master}"
    );
    std::fs::write(out_dir.join("master.m3u8"), master).unwrap();
    std::fs::write(out_dir.join("manifest.mpd"), set.mpd("v_test", &[])).unwrap();
    let mpd_with_subs = set.mpd("v_test", &subs);
    assert!(mpd_with_subs.contains("mimeType=\"text/vtt\" lang=\"en\""));
    let with_subs = dir.path().join("with_subs.mpd");
    std::fs::write(&with_subs, &mpd_with_subs).unwrap();
    validate_mpd(&[&out_dir.join("manifest.mpd"), &with_subs]);
    let media = std::fs::read_to_string(out_dir.join("720p/playlist.m3u8")).unwrap();
    assert!(
        media.contains("#EXT-X-VERSION:7\n") && media.contains("#EXT-X-MAP:URI=\"init.mp4\"\n")
    );

    // Decodes clean through both manifests, to the end.
    for manifest in ["master.m3u8", "manifest.mpd"] {
        let path = out_dir.join(manifest);
        let (ok, out, err) = run(
            "ffmpeg",
            &[
                "-nostdin",
                "-v",
                "error",
                "-xerror",
                "-i",
                path.to_str().unwrap(),
                "-map",
                "0",
                "-f",
                "null",
                "-progress",
                "pipe:1",
                "-",
            ],
        );
        assert!(ok && err.trim().is_empty(), "{manifest}: {err}");
        let reached: f64 = out
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("out_time_us="))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1e6;
        // (The AAC track ends ~0.4 s before the video: the audio
        // encoder's tail, as in the MPEG-TS path.)
        assert!(
            reached > 4.5 && reached < 5.2,
            "{manifest}: reached {reached} s"
        );
    }
    // ffprobe reads every representation of the MPD.
    let (ok, out, err) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
            out_dir.join("manifest.mpd").to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let mut streams: Vec<&str> = out
        .lines()
        .map(|l| l.trim().trim_end_matches(','))
        .filter(|l| !l.is_empty())
        .collect();
    streams.sort_unstable();
    // (Listed once per program and once per stream.)
    streams.dedup();
    assert_eq!(streams, ["aac", "h264,1280,720", "h264,426,240"], "{out:?}");

    // tfdt: each segment, read after its init segment, starts where the
    // previous one ended (video: at its first frame, less the B-frame
    // delay; the same in every rendition).
    let joined = dir.path().join("joined.mp4");
    let mut firsts = Vec::new();
    for r in &output.renditions {
        let init = out_dir.join(&r.name).join("init.mp4");
        let times: Vec<f64> = (0..r.segments.len())
            .map(|n| {
                first_dts(
                    &init,
                    &out_dir.join(&r.name).join(format!("segment_{n}.m4s")),
                    &joined,
                    "v",
                )
            })
            .collect();
        let mut expect = times[0];
        for (n, t) in times.iter().enumerate() {
            assert!(
                (t - expect).abs() < 0.002,
                "{} segment {n}: dts {t}, expected {expect}",
                r.name
            );
            expect += r.segments[n].duration;
        }
        assert!(
            (times[0] - 1.4).abs() < 0.2,
            "{}: starts at {}",
            r.name,
            times[0]
        );
        firsts.push(times);
    }
    assert_eq!(firsts[0], firsts[1], "aligned across renditions");
    let init = out_dir.join(AUDIO_TRACK).join("init.mp4");
    let mut expect = 1.4;
    for (n, s) in audio.segments.iter().enumerate() {
        let t = first_dts(
            &init,
            &out_dir.join(AUDIO_TRACK).join(format!("segment_{n}.m4s")),
            &joined,
            "a",
        );
        assert!(
            (t - expect).abs() < 0.03,
            "audio segment {n}: {t}, expected {expect}"
        );
        expect = t + s.duration;
    }
}
