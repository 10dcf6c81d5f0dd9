//! Subtitle files: WebVTT checked cue by cue, SRT converted to WebVTT, and
//! both written out as the one normalised WebVTT the origin serves.
//!
//! The output always starts with an `X-TIMESTAMP-MAP` header mapping cue
//! time 0 to the first timestamp of the video's segments, so HLS players
//! line cues up with the video (RFC 8216 §3.5); browsers' own WebVTT
//! parsers ignore the header line.

use std::fmt::Write as _;
use vodfarm_core::playlists::MPEGTS_START_90K;

/// Why a subtitle file was refused; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SubtitleError {
    /// The line of the input the problem is on.
    pub line: usize,
    /// What is wrong there.
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> SubtitleError {
    SubtitleError {
        line,
        message: message.into(),
    }
}

/// What the upload was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// WebVTT.
    Vtt,
    /// SubRip.
    Srt,
}

impl SourceFormat {
    /// `vtt` or `srt`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vtt => "vtt",
            Self::Srt => "srt",
        }
    }
}

/// A checked subtitle file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalised {
    /// The WebVTT text to store.
    pub vtt: String,
    /// What was uploaded.
    pub source: SourceFormat,
    /// Number of cues.
    pub cues: usize,
}

/// Checks `bytes` (WebVTT, or SRT) and returns the WebVTT to store.
pub fn normalise(bytes: &[u8]) -> Result<Normalised, SubtitleError> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            return Err(err(line, "not UTF-8 text"));
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, l) in lines.iter().enumerate() {
        if l.chars().any(|c| c.is_control() && c != '\t') {
            return Err(err(
                i + 1,
                "control characters are not allowed (binary data?)",
            ));
        }
    }
    let first = lines.first().copied().unwrap_or("");
    let is_vtt = first == "WEBVTT" || first.starts_with("WEBVTT ") || first.starts_with("WEBVTT\t");
    let mut out = String::from(first.trim_end());
    if !is_vtt {
        out = "WEBVTT".into();
    }
    let _ = write!(
        out,
        "\nX-TIMESTAMP-MAP=MPEGTS:{MPEGTS_START_90K},LOCAL:00:00:00.000"
    );
    let (cues, source) = if is_vtt {
        (vtt_body(&lines, &mut out)?, SourceFormat::Vtt)
    } else {
        let n = srt_body(&lines, &mut out)?;
        if n == 0 {
            return Err(err(
                1,
                "neither a WebVTT file (no WEBVTT header) nor SRT cues",
            ));
        }
        (n, SourceFormat::Srt)
    };
    out.push('\n');
    Ok(Normalised {
        vtt: out,
        source,
        cues,
    })
}

/// Blocks of non-empty lines: (first line's index, lines).
fn blocks<'a>(lines: &[&'a str], from: usize) -> Vec<(usize, Vec<&'a str>)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, Vec<&str>)> = None;
    for (i, l) in lines.iter().enumerate().skip(from) {
        if l.trim().is_empty() {
            if let Some(b) = cur.take() {
                out.push(b);
            }
        } else {
            cur.get_or_insert_with(|| (i, Vec::new())).1.push(l);
        }
    }
    out.extend(cur);
    out
}

fn vtt_body(lines: &[&str], out: &mut String) -> Result<usize, SubtitleError> {
    // Header lines after `WEBVTT` up to the first blank line: kept, but
    // our own timestamp map replaces any the file brings.
    let mut i = 1;
    while i < lines.len() && !lines[i].trim().is_empty() {
        if lines[i].contains("-->") {
            return Err(err(i + 1, "a blank line must follow the WEBVTT header"));
        }
        if !lines[i].starts_with("X-TIMESTAMP-MAP") {
            out.push('\n');
            out.push_str(lines[i]);
        }
        i += 1;
    }
    let mut cues = 0;
    let mut last_start = 0u64;
    for (at, block) in blocks(lines, i) {
        let head = block[0];
        let is_kw = |k: &str| {
            head == k || head.starts_with(&format!("{k} ")) || head.starts_with(&format!("{k}\t"))
        };
        if is_kw("NOTE") || ((is_kw("STYLE") || is_kw("REGION")) && cues == 0) {
            out.push_str("\n\n");
            out.push_str(&block.join("\n"));
            continue;
        }
        let (id, timing_at) = if head.contains("-->") {
            (None, 0)
        } else {
            (Some(head), 1)
        };
        let Some(timing) = block.get(timing_at) else {
            return Err(err(at + 1, "a cue identifier without a timing line"));
        };
        let line = at + timing_at + 1;
        let (start, end, settings) = timing_line(timing, '.', line)?;
        if start < last_start {
            // Allowed by the spec's parser but a sign of a broken file;
            // players (and HLS segmenting) expect cues in start order.
            return Err(err(line, "cues must be in order of start time"));
        }
        last_start = start;
        for (k, p) in block.iter().enumerate().skip(timing_at + 1) {
            if p.contains("-->") {
                return Err(err(
                    at + k + 1,
                    "\"-->\" in cue text (a missing blank line?)",
                ));
            }
        }
        out.push_str("\n\n");
        if let Some(id) = id {
            out.push_str(id);
            out.push('\n');
        }
        let _ = write!(out, "{} --> {}", stamp(start), stamp(end));
        if !settings.is_empty() {
            out.push(' ');
            out.push_str(settings);
        }
        for p in &block[timing_at + 1..] {
            out.push('\n');
            out.push_str(p);
        }
        cues += 1;
    }
    Ok(cues)
}

fn srt_body(lines: &[&str], out: &mut String) -> Result<usize, SubtitleError> {
    let mut cues = 0;
    let mut last_start = 0u64;
    for (at, block) in blocks(lines, 0) {
        let head = block[0].trim();
        let timing_at = if head.contains("-->") {
            0
        } else if !head.is_empty() && head.bytes().all(|b| b.is_ascii_digit()) {
            1
        } else {
            return Err(err(
                at + 1,
                if cues == 0 {
                    "neither a WebVTT file (no WEBVTT header) nor an SRT cue number"
                } else {
                    "expected an SRT cue number or timing line"
                },
            ));
        };
        let Some(timing) = block.get(timing_at) else {
            return Err(err(at + 1, "a cue number without a timing line"));
        };
        let line = at + timing_at + 1;
        // SRT uses `,` before milliseconds; some writers use `.`. Trailing
        // `X1:… Y2:…` positions have no WebVTT equivalent: dropped.
        let (start, end, _) = timing_line(&timing.replace(',', "."), '.', line)?;
        if start < last_start {
            return Err(err(line, "cues must be in order of start time"));
        }
        last_start = start;
        let text = &block[timing_at + 1..];
        if text.is_empty() {
            // An SRT cue with no text: nothing to show.
            continue;
        }
        let _ = write!(out, "\n\n{} --> {}", stamp(start), stamp(end));
        for (k, p) in text.iter().enumerate() {
            if p.contains("-->") {
                return Err(err(
                    line + k + 1,
                    "\"-->\" in cue text (a missing blank line?)",
                ));
            }
            out.push('\n');
            out.push_str(p);
        }
        cues += 1;
    }
    Ok(cues)
}

/// `start --> end [settings]`, times in milliseconds.
fn timing_line(l: &str, frac: char, line: usize) -> Result<(u64, u64, &str), SubtitleError> {
    let Some((a, rest)) = l.split_once("-->") else {
        return Err(err(line, "expected a cue timing line \"start --> end\""));
    };
    let rest = rest.trim_start();
    let (b, settings) = rest
        .split_once([' ', '\t'])
        .map_or((rest, ""), |(b, s)| (b, s.trim()));
    let start = timestamp(a.trim(), frac).ok_or_else(|| {
        err(
            line,
            format!("bad start time {:?} (want hh:mm:ss.ttt)", a.trim()),
        )
    })?;
    let end = timestamp(b.trim(), frac).ok_or_else(|| {
        err(
            line,
            format!("bad end time {:?} (want hh:mm:ss.ttt)", b.trim()),
        )
    })?;
    if end <= start {
        return Err(err(line, "a cue must end after it starts"));
    }
    Ok((start, end, settings))
}

/// `[hh:]mm:ss.ttt` → milliseconds.
fn timestamp(s: &str, frac: char) -> Option<u64> {
    let (hms, ms) = s.split_once(frac)?;
    if ms.len() != 3 || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let parts: Vec<&str> = hms.split(':').collect();
    let num = |p: &str, min_len: usize| -> Option<u64> {
        (p.len() >= min_len && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse().ok())
            .flatten()
    };
    let (h, m, sec) = match parts.as_slice() {
        [h, m, s] if m.len() == 2 && s.len() == 2 => (num(h, 1)?, num(m, 2)?, num(s, 2)?),
        [m, s] if m.len() == 2 && s.len() == 2 => (0, num(m, 2)?, num(s, 2)?),
        _ => return None,
    };
    if m > 59 || sec > 59 {
        return None;
    }
    Some(((h * 60 + m) * 60 + sec) * 1000 + ms.parse::<u64>().ok()?)
}

fn stamp(ms: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webvtt_is_kept_and_mapped() {
        let src = "\u{feff}WEBVTT - demo\r\nKind: captions\r\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\r\n\r\nNOTE hi\r\n\r\n1\r\n00:01.000 --> 00:02.500 line:0\r\nHello <b>world</b>\r\n\r\n01:00:00.000 --> 01:00:01.000\r\nBye\r\n";
        let n = normalise(src.as_bytes()).unwrap();
        assert_eq!(n.source, SourceFormat::Vtt);
        assert_eq!(n.cues, 2);
        assert_eq!(
            n.vtt,
            "WEBVTT - demo\nX-TIMESTAMP-MAP=MPEGTS:126000,LOCAL:00:00:00.000\nKind: captions\n\nNOTE hi\n\n1\n00:00:01.000 --> 00:00:02.500 line:0\nHello <b>world</b>\n\n01:00:00.000 --> 01:00:01.000\nBye\n"
        );
    }

    #[test]
    fn srt_becomes_webvtt() {
        let src = "1\n00:00:01,000 --> 00:00:02,000\nHello\nthere\n\n2\n00:00:03,250 --> 00:00:04,000 X1:10 X2:20\nBye\n";
        let n = normalise(src.as_bytes()).unwrap();
        assert_eq!(n.source, SourceFormat::Srt);
        assert_eq!(n.cues, 2);
        assert_eq!(
            n.vtt,
            "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:126000,LOCAL:00:00:00.000\n\n00:00:01.000 --> 00:00:02.000\nHello\nthere\n\n00:00:03.250 --> 00:00:04.000\nBye\n"
        );
    }

    #[test]
    fn bad_files_name_the_line() {
        let e =
            normalise(b"WEBVTT\n\n00:01.000 --> 00:02.000\nok\n\n00:03.000 --> 00:0x.000\nbad\n")
                .unwrap_err();
        assert_eq!(e.line, 6);
        assert!(e.message.contains("bad end time"), "{e}");
        let e = normalise(b"WEBVTT\n\n00:05.000 --> 00:02.000\nbackwards\n").unwrap_err();
        assert_eq!(
            (e.line, e.message.as_str()),
            (3, "a cue must end after it starts")
        );
        let e = normalise(b"WEBVTT\n\n00:61.000 --> 00:62.000\nx\n").unwrap_err();
        assert_eq!(e.line, 3);
        let e = normalise(b"1\n00:00:01,000 -> 00:00:02,000\nx\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = normalise(b"hello\nworld\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = normalise(b"WEBVTT\n\nok\n\xff\xfe").unwrap_err();
        assert_eq!((e.line, e.message.as_str()), (4, "not UTF-8 text"));
        let e = normalise(b"WEBVTT\n\n00:01.000 --> 00:02.000\na\0b\n").unwrap_err();
        assert_eq!(e.line, 4);
        let e = normalise(b"WEBVTT\n\n00:01.000 --> 00:02.000\na\n00:03.000 --> 00:04.000\n")
            .unwrap_err();
        assert_eq!(e.line, 5);
        assert!(normalise(b"").is_err());
    }

    #[test]
    fn empty_webvtt_is_allowed() {
        let n = normalise(b"WEBVTT\n").unwrap();
        assert_eq!(n.cues, 0);
    }
}
