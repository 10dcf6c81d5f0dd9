//! The rendition ladder: which renditions a source becomes.

use serde::{Deserialize, Serialize};

/// One rung: a target height and bitrate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rung {
    /// Name used in object keys and playlists, e.g. `720p`.
    pub name: String,
    /// Target frame height (the short side for portrait sources).
    pub height: u32,
    /// Target average video bitrate, bits per second.
    pub video_bitrate: u32,
}

/// The renditions to produce, lowest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenditionLadder {
    /// The rungs, sorted by height.
    pub rungs: Vec<Rung>,
    /// AAC-LC stereo bitrate shared by all renditions, bits per second.
    pub audio_bitrate: u32,
}

impl Default for RenditionLadder {
    /// 240p at ~400 kb/s, 720p at ~2.8 Mb/s, 1080p at ~5 Mb/s, AAC 128 kb/s.
    fn default() -> Self {
        let rung = |h: u32, b: u32| Rung {
            name: format!("{h}p"),
            height: h,
            video_bitrate: b,
        };
        RenditionLadder {
            rungs: vec![
                rung(240, 400_000),
                rung(720, 2_800_000),
                rung(1080, 5_000_000),
            ],
            audio_bitrate: 128_000,
        }
    }
}

impl RenditionLadder {
    /// The rungs a source whose short side is `source_short_side` pixels
    /// gets: never an upscale, but always at least the lowest rung (scaled
    /// down to the source if the source is smaller still).
    pub fn rungs_for_source(&self, source_short_side: u32) -> Vec<Rung> {
        let mut out: Vec<Rung> = self
            .rungs
            .iter()
            .filter(|r| r.height <= source_short_side)
            .cloned()
            .collect();
        if out.is_empty() {
            if let Some(lowest) = self.rungs.first() {
                let h = source_short_side.max(2) & !1;
                out.push(Rung {
                    name: format!("{h}p"),
                    height: h,
                    ..lowest.clone()
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_upscales() {
        let l = RenditionLadder::default();
        let names = |h| {
            l.rungs_for_source(h)
                .into_iter()
                .map(|r| r.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(1080), ["240p", "720p", "1080p"]);
        assert_eq!(names(2160), ["240p", "720p", "1080p"]);
        assert_eq!(names(479), ["240p"]);
        assert_eq!(names(145), ["144p"]);
    }
}
