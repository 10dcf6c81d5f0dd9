//! The DASH manifest (`encoded/{id}/manifest.mpd`, served at
//! `/v/{id}/manifest.mpd`) of a CMAF video: ISO/IEC 23009-1 static MPD,
//! one video AdaptationSet (a Representation per rendition), one audio
//! AdaptationSet (the shared AAC track) and one text AdaptationSet per
//! subtitle track (the WebVTT file at `/s/{id}/{lang}.vtt`).
//!
//! Segments are addressed by `SegmentTemplate` + `SegmentTimeline` (their
//! durations vary by a frame or an AAC packet); times are in each
//! track's own timescale and start at the packager's shift, which
//! `presentationTimeOffset` takes off so the period starts at 0. Built
//! from the same sidecars as the HLS master, by the worker's manifest job
//! and by the api when subtitles change.

use crate::playlists::{
    RenditionSet, RenditionSummary, SubtitleTrack, AUDIO_TRACK, MPEGTS_START_90K,
};
use std::fmt::Write as _;

/// Video timescale of the CMAF tracks (ticks per second).
pub const VIDEO_TIMESCALE: u64 = 90_000;
/// Audio timescale (the AAC sample rate).
pub const AUDIO_TIMESCALE: u64 = 48_000;
/// Audio channels of the shared AAC track.
pub const AUDIO_CHANNELS: u32 = 2;

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `PT…S` with millisecond precision.
fn duration(seconds: f64) -> String {
    format!("PT{:.3}S", seconds.max(0.0))
}

/// A frame rate as DASH writes it: `30`, `30000/1001`.
pub fn frame_rate(fps: f64) -> String {
    let whole = fps.round();
    if (fps - whole).abs() < 1e-6 {
        return format!("{}", whole as u64);
    }
    let ntsc = (fps * 1001.0).round();
    if (ntsc / 1001.0 - fps).abs() < 1e-6 {
        return format!("{}/1001", ntsc as u64);
    }
    format!("{}/1000", (fps * 1000.0).round() as u64)
}

/// `<SegmentTimeline>` of a track whose segments last `durations`
/// seconds, in `timescale` ticks from `start`: cumulative times rounded
/// once, so the entries add up to the track without drift.
fn timeline(durations: &[f64], timescale: u64, start: u64) -> String {
    let mut cum = 0.0;
    let mut times = vec![start];
    for d in durations {
        cum += d;
        times.push(start + (cum * timescale as f64).round() as u64);
    }
    // (t, d, r): runs of equal durations.
    let mut runs: Vec<(u64, u64, u32)> = Vec::new();
    for w in times.windows(2) {
        let d = w[1] - w[0];
        match runs.last_mut() {
            Some(last) if last.1 == d => last.2 += 1,
            _ => runs.push((w[0], d, 0)),
        }
    }
    let mut out = String::from("<SegmentTimeline>");
    for (i, (t, d, r)) in runs.iter().enumerate() {
        out.push_str("<S ");
        if i == 0 {
            let _ = write!(out, "t=\"{t}\" ");
        }
        let _ = write!(out, "d=\"{d}\"");
        if *r > 0 {
            let _ = write!(out, " r=\"{r}\"");
        }
        out.push_str("/>");
    }
    out.push_str("</SegmentTimeline>");
    out
}

fn template(r: &RenditionSummary, timescale: u64) -> String {
    let start = MPEGTS_START_90K as u64 * timescale / 90_000;
    let durations: Vec<f64> = r.segments.iter().map(|s| s.duration).collect();
    format!(
        "<SegmentTemplate timescale=\"{timescale}\" presentationTimeOffset=\"{start}\" startNumber=\"0\" initialization=\"{n}/init.mp4\" media=\"{n}/segment_$Number$.m4s\">{}</SegmentTemplate>",
        timeline(&durations, timescale, start),
        n = xml(&r.name)
    )
}

impl RenditionSet {
    /// The MPD of a CMAF video with `subtitles`.
    pub fn mpd(&self, video_id: &str, subtitles: &[SubtitleTrack]) -> String {
        let total = self.duration();
        let max_segment = self
            .renditions
            .iter()
            .flat_map(|r| r.segments.iter().map(|s| s.duration))
            .fold(1.0, f64::max);
        let mut m = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            m,
            "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019\" type=\"static\" mediaPresentationDuration=\"{}\" minBufferTime=\"{}\">",
            duration(total),
            duration(max_segment.ceil())
        );
        let _ = writeln!(m, " <Period id=\"0\" start=\"PT0S\">");
        let max_w = self.renditions.iter().map(|r| r.width).max().unwrap_or(0);
        let max_h = self.renditions.iter().map(|r| r.height).max().unwrap_or(0);
        let max_fps = self
            .renditions
            .iter()
            .map(|r| r.frame_rate)
            .fold(0.0, f64::max);
        let _ = writeln!(
            m,
            "  <AdaptationSet id=\"0\" contentType=\"video\" mimeType=\"video/mp4\" segmentAlignment=\"true\" startWithSAP=\"1\" maxWidth=\"{max_w}\" maxHeight=\"{max_h}\" maxFrameRate=\"{}\">",
            frame_rate(max_fps)
        );
        for r in &self.renditions {
            let _ = writeln!(
                m,
                "   <Representation id=\"{}\" bandwidth=\"{}\" codecs=\"{}\" width=\"{}\" height=\"{}\" frameRate=\"{}\" sar=\"1:1\">{}</Representation>",
                xml(&r.name),
                r.peak_bandwidth().max(1),
                xml(&r.codecs),
                r.width,
                r.height,
                frame_rate(r.frame_rate),
                template(r, VIDEO_TIMESCALE)
            );
        }
        m.push_str("  </AdaptationSet>\n");
        if let Some(a) = &self.audio {
            let _ = writeln!(
                m,
                "  <AdaptationSet id=\"1\" contentType=\"audio\" mimeType=\"audio/mp4\" segmentAlignment=\"true\" startWithSAP=\"1\">\n   <Representation id=\"{AUDIO_TRACK}\" bandwidth=\"{}\" codecs=\"{}\" audioSamplingRate=\"{AUDIO_TIMESCALE}\"><AudioChannelConfiguration schemeIdUri=\"urn:mpeg:dash:23003:3:audio_channel_configuration:2011\" value=\"{AUDIO_CHANNELS}\"/>{}</Representation>\n  </AdaptationSet>",
                a.peak_bandwidth().max(1),
                xml(&a.codecs),
                template(a, AUDIO_TIMESCALE)
            );
        }
        for (i, t) in subtitles.iter().enumerate() {
            let _ = writeln!(
                m,
                "  <AdaptationSet id=\"{}\" contentType=\"text\" mimeType=\"text/vtt\" lang=\"{}\">\n   <Label>{}</Label>\n   <Role schemeIdUri=\"urn:mpeg:dash:role:2011\" value=\"subtitle\"/>\n   <Representation id=\"sub-{}\" bandwidth=\"256\"><BaseURL>../../s/{}/{}.vtt</BaseURL></Representation>\n  </AdaptationSet>",
                i + 2,
                xml(&t.lang),
                xml(&t.label),
                xml(&t.lang),
                xml(video_id),
                xml(&t.lang)
            );
        }
        m.push_str(" </Period>\n</MPD>\n");
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playlists::{Packaging, SegmentEntry};

    fn track(name: &str, durations: &[f64]) -> RenditionSummary {
        RenditionSummary {
            name: name.into(),
            width: 426,
            height: 240,
            frame_rate: 30000.0 / 1001.0,
            codecs: "avc1.64000d".into(),
            segments: durations
                .iter()
                .map(|&d| SegmentEntry {
                    duration: d,
                    bytes: 1000,
                })
                .collect(),
        }
    }

    #[test]
    fn frame_rates() {
        assert_eq!(frame_rate(30.0), "30");
        assert_eq!(frame_rate(30000.0 / 1001.0), "30000/1001");
        assert_eq!(frame_rate(12.5), "12500/1000");
    }

    #[test]
    fn timelines_add_up() {
        let t = timeline(&[2.002, 2.002, 1.0], 90_000, 126_000);
        assert_eq!(
            t,
            "<SegmentTimeline><S t=\"126000\" d=\"180180\" r=\"1\"/><S d=\"90000\"/></SegmentTimeline>"
        );
    }

    #[test]
    fn mpd_lists_every_track() {
        let set = RenditionSet {
            renditions: vec![track("240p", &[2.002, 1.0])],
            packaging: Packaging::Cmaf,
            audio: Some(RenditionSummary {
                codecs: "mp4a.40.2".into(),
                ..track("audio", &[2.0, 1.0])
            }),
        };
        let subs = [SubtitleTrack {
            lang: "en".into(),
            label: "English & more".into(),
        }];
        let m = set.mpd("v_a", &subs);
        assert!(m.contains("mediaPresentationDuration=\"PT3.002S\""), "{m}");
        assert!(m.contains("frameRate=\"30000/1001\" sar=\"1:1\""), "{m}");
        assert!(m.contains("initialization=\"240p/init.mp4\" media=\"240p/segment_$Number$.m4s\""));
        assert!(m.contains("timescale=\"48000\" presentationTimeOffset=\"67200\""));
        assert!(m.contains("<Label>English &amp; more</Label>"));
        assert!(m.contains("<BaseURL>../../s/v_a/en.vtt</BaseURL>"));
    }
}
