//! Playlist text every role may write: the renditions sidecar the
//! transcode job records (`encoded/{id}/renditions.json`), the VOD media
//! playlist of a rendition, the subtitle tracks a video has
//! (`encoded/{id}/subtitles.json`), their WebVTT media playlists, and the
//! master playlist over all of them.
//!
//! The master is built here, not in the worker, because two roles write
//! it: the worker's manifest job when a video is first ready, and the api
//! whenever a subtitle is added or removed afterwards (roles do not
//! depend on each other; both depend on `core`). The function is pure:
//! the same sidecars give the same bytes whoever writes them.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// The first presentation timestamp of the MPEG-TS segments (90 kHz
/// ticks): room for the negative decode timestamps of B-frames, as the
/// ffmpeg CLI does. WebVTT files carry it in `X-TIMESTAMP-MAP` so their
/// cue times line up with the video (RFC 8216 §3.5).
pub const MPEGTS_START_90K: i64 = 126_000;

/// The `GROUP-ID` of the subtitle renditions in the master playlist.
pub const SUBTITLES_GROUP: &str = "subs";

/// One segment as a playlist lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentEntry {
    /// Duration, seconds.
    pub duration: f64,
    /// Bytes.
    pub bytes: u64,
}

/// What a rendition turned out to be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenditionSummary {
    /// Rung name.
    pub name: String,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Frames per second.
    pub frame_rate: f64,
    /// RFC 6381 codecs, e.g. `avc1.64001f,mp4a.40.2`.
    pub codecs: String,
    /// The segments, in order.
    pub segments: Vec<SegmentEntry>,
}

impl RenditionSummary {
    /// Sum of segment durations, seconds.
    pub fn duration(&self) -> f64 {
        self.segments.iter().map(|s| s.duration).sum()
    }

    /// Total bytes.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Bits per second over the whole rendition (AVERAGE-BANDWIDTH).
    pub fn average_bandwidth(&self) -> u64 {
        let d = self.duration();
        if d <= 0.0 {
            return 0;
        }
        (self.bytes() as f64 * 8.0 / d).ceil() as u64
    }

    /// The highest segment bitrate (BANDWIDTH).
    pub fn peak_bandwidth(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.duration > 0.0)
            .map(|s| (s.bytes as f64 * 8.0 / s.duration).ceil() as u64)
            .max()
            .unwrap_or(0)
            .max(self.average_bandwidth())
    }

    /// EXT-X-TARGETDURATION: every EXTINF rounded is at most this.
    pub fn target_duration(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.duration.ceil() as u64)
            .max()
            .unwrap_or(1)
            .max(1)
    }

    /// The VOD media playlist (`playlist.m3u8`) over `segment_{n}.ts`.
    pub fn media_playlist(&self) -> String {
        self.media_playlist_for(Packaging::Ts)
    }

    /// The VOD media playlist for `packaging`: version 3 over
    /// `segment_{n}.ts`, or version 7 with `EXT-X-MAP` (`init.mp4`) over
    /// `segment_{n}.m4s`.
    pub fn media_playlist_for(&self, packaging: Packaging) -> String {
        let mut p = String::new();
        let (version, ext) = match packaging {
            Packaging::Ts => (3, "ts"),
            Packaging::Cmaf => (7, "m4s"),
        };
        let _ = writeln!(p, "#EXTM3U\n#EXT-X-VERSION:{version}");
        let _ = writeln!(p, "#EXT-X-TARGETDURATION:{}", self.target_duration());
        p.push_str(
            "#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n",
        );
        if packaging == Packaging::Cmaf {
            p.push_str("#EXT-X-MAP:URI=\"init.mp4\"\n");
        }
        for (i, s) in self.segments.iter().enumerate() {
            let _ = writeln!(p, "#EXTINF:{:.6},\nsegment_{i}.{ext}", s.duration);
        }
        p.push_str("#EXT-X-ENDLIST\n");
        p
    }
}

/// How a video's renditions are packaged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Packaging {
    /// MPEG-TS segments (`segment_{n}.ts`), audio muxed into every
    /// rendition; HLS only.
    #[default]
    Ts,
    /// CMAF fMP4 (`init.mp4` + `segment_{n}.m4s`), video-only renditions
    /// and one shared audio track; HLS (version 7) and DASH.
    Cmaf,
}

impl Packaging {
    /// `ts` or `cmaf`.
    pub fn as_str(self) -> &'static str {
        match self {
            Packaging::Ts => "ts",
            Packaging::Cmaf => "cmaf",
        }
    }

    /// `ts` or `cmaf`, `None` otherwise.
    pub fn parse(s: &str) -> Option<Packaging> {
        match s {
            "ts" => Some(Packaging::Ts),
            "cmaf" => Some(Packaging::Cmaf),
            _ => None,
        }
    }
}

/// The name of the shared audio track of a CMAF video (its directory).
pub const AUDIO_TRACK: &str = "audio";

/// The `GROUP-ID` of the shared audio track in the master playlist.
pub const AUDIO_GROUP: &str = "aud";

/// The transcode job's sidecar (`encoded/{id}/renditions.json`): what the
/// master playlist (and the MPD) is written from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenditionSet {
    /// Lowest first.
    pub renditions: Vec<RenditionSummary>,
    /// How they are packaged (`ts` for sidecars written before CMAF).
    #[serde(default)]
    pub packaging: Packaging,
    /// The shared audio track (CMAF only).
    #[serde(default)]
    pub audio: Option<RenditionSummary>,
}

/// A subtitle track of a video.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtitleTrack {
    /// BCP 47 language tag (`en`, `pt-BR`).
    pub lang: String,
    /// What players show in their captions menu.
    pub label: String,
}

/// The api's sidecar (`encoded/{id}/subtitles.json`): the video's subtitle
/// tracks, so that a manifest job that runs after a subtitle was added
/// lists it too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtitleSet {
    /// By language tag.
    pub tracks: Vec<SubtitleTrack>,
}

/// Escapes a quoted-string attribute value of a playlist tag: RFC 8216
/// quoted strings cannot hold `"`, CR or LF.
fn quoted(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' => '\'',
            '\r' | '\n' => ' ',
            c => c,
        })
        .collect()
}

impl RenditionSet {
    /// The video's duration: its longest rendition's, seconds.
    pub fn duration(&self) -> f64 {
        self.renditions
            .iter()
            .map(RenditionSummary::duration)
            .fold(0.0, f64::max)
    }

    /// The master playlist (`master.m3u8`), variants lowest first, each
    /// at `{name}/playlist.m3u8`; every subtitle track is an
    /// `EXT-X-MEDIA:TYPE=SUBTITLES` rendition whose playlist is
    /// `/s/{id}/{lang}.m3u8` (relative: `../../s/{id}/{lang}.m3u8`, so the
    /// master works under any prefix a CDN mounts the origin on).
    pub fn master_playlist(&self, video_id: &str, subtitles: &[SubtitleTrack]) -> String {
        let version = match self.packaging {
            Packaging::Ts => 3,
            Packaging::Cmaf => 7,
        };
        let mut p = format!("#EXTM3U\n#EXT-X-VERSION:{version}\n#EXT-X-INDEPENDENT-SEGMENTS\n");
        for t in subtitles {
            let _ = writeln!(
                p,
                "#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"{SUBTITLES_GROUP}\",NAME=\"{}\",LANGUAGE=\"{}\",DEFAULT=NO,AUTOSELECT=YES,FORCED=NO,URI=\"../../s/{video_id}/{}.m3u8\"",
                quoted(&t.label),
                quoted(&t.lang),
                t.lang
            );
        }
        let audio = self
            .audio
            .as_ref()
            .filter(|_| self.packaging == Packaging::Cmaf);
        if audio.is_some() {
            let _ = writeln!(
                p,
                "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"{AUDIO_GROUP}\",NAME=\"Audio\",DEFAULT=YES,AUTOSELECT=YES,URI=\"{AUDIO_TRACK}/playlist.m3u8\""
            );
        }
        let mut extra = String::new();
        if audio.is_some() {
            let _ = write!(extra, ",AUDIO=\"{AUDIO_GROUP}\"");
        }
        if !subtitles.is_empty() {
            let _ = write!(extra, ",SUBTITLES=\"{SUBTITLES_GROUP}\"");
        }
        for r in &self.renditions {
            let (peak, avg, codecs) = match audio {
                Some(a) => (
                    r.peak_bandwidth() + a.peak_bandwidth(),
                    r.average_bandwidth() + a.average_bandwidth(),
                    format!("{},{}", r.codecs, a.codecs),
                ),
                None => (r.peak_bandwidth(), r.average_bandwidth(), r.codecs.clone()),
            };
            let _ = writeln!(
                p,
                "#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={avg},RESOLUTION={}x{},CODECS=\"{codecs}\",FRAME-RATE={:.3}{extra}\n{}/playlist.m3u8",
                r.width,
                r.height,
                r.frame_rate,
                r.name
            );
        }
        p
    }

    /// The WebVTT media playlist of subtitle track `lang`
    /// (`subtitles/{id}/{lang}.m3u8`): the whole file as one segment
    /// spanning the video.
    pub fn subtitle_playlist(&self, lang: &str) -> String {
        let d = self.duration().max(0.001);
        format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:{d:.6},\n{lang}.vtt\n#EXT-X-ENDLIST\n",
            d.ceil() as u64
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(durations: &[f64]) -> RenditionSummary {
        RenditionSummary {
            name: "720p".into(),
            width: 1280,
            height: 720,
            frame_rate: 30.0,
            codecs: "avc1.64001f,mp4a.40.2".into(),
            segments: durations
                .iter()
                .map(|&d| SegmentEntry {
                    duration: d,
                    bytes: (d * 100_000.0) as u64,
                })
                .collect(),
        }
    }

    #[test]
    fn media_playlist_follows_rfc_8216_vod() {
        let p = summary(&[6.006, 6.006, 1.5]).media_playlist();
        assert!(p.starts_with("#EXTM3U\n"));
        assert!(p.contains("#EXT-X-TARGETDURATION:7\n"));
        assert!(p.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"));
        assert!(p.contains("#EXTINF:1.500000,\nsegment_2.ts\n"));
        assert!(p.ends_with("#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn bandwidths_and_master() {
        let s = summary(&[2.0, 2.0]);
        assert_eq!(s.average_bandwidth(), 800_000);
        assert_eq!(s.peak_bandwidth(), 800_000);
        let set = RenditionSet {
            renditions: vec![s],
            packaging: Packaging::Ts,
            audio: None,
        };
        let m = set.master_playlist("v_a", &[]);
        assert!(m.contains("#EXT-X-INDEPENDENT-SEGMENTS\n"));
        assert!(m.contains("BANDWIDTH=800000,AVERAGE-BANDWIDTH=800000,RESOLUTION=1280x720,CODECS=\"avc1.64001f,mp4a.40.2\",FRAME-RATE=30.000\n720p/playlist.m3u8\n"));
        assert!(!m.contains("SUBTITLES"));
    }

    #[test]
    fn subtitles_in_master() {
        let set = RenditionSet {
            renditions: vec![summary(&[2.0, 1.5])],
            packaging: Packaging::Ts,
            audio: None,
        };
        let tracks = [SubtitleTrack {
            lang: "pt-BR".into(),
            label: "Português \"BR\"".into(),
        }];
        let m = set.master_playlist("v_a", &tracks);
        assert!(m.contains("#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"Português 'BR'\",LANGUAGE=\"pt-BR\",DEFAULT=NO,AUTOSELECT=YES,FORCED=NO,URI=\"../../s/v_a/pt-BR.m3u8\"\n"));
        assert!(m.contains("FRAME-RATE=30.000,SUBTITLES=\"subs\"\n720p/playlist.m3u8\n"));
        let p = set.subtitle_playlist("pt-BR");
        assert!(p.contains("#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n"));
        assert!(p.contains("#EXTINF:3.500000,\npt-BR.vtt\n#EXT-X-ENDLIST\n"));
    }
}
