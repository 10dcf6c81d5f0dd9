//! Rules for the text people give us to show to other people (titles,
//! descriptions, channel names, tags, categories, file names): no control
//! characters, and no bidirectional embeddings, overrides or isolates,
//! which can make a text display as something else (U+202E makes
//! `evil<U+202E>gpj.exe` display as `evilexe.jpg`). Such text is refused, not stripped:
//! the client learns at once what we will not store, and what we store is
//! exactly what it sent. Line breaks and tabs are allowed only in
//! multi-line fields (descriptions).

use crate::http::ApiError;

/// Whether a field may hold line breaks and tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// A one-line field (titles, names, tags).
    Single,
    /// A field that may hold `\n`, `\r` and `\t` (descriptions).
    Multi,
}

/// Why a character is refused, if it is.
fn refused(c: char, lines: Lines) -> Option<&'static str> {
    match c {
        '\n' | '\r' | '\t' if lines == Lines::Multi => None,
        '\u{2028}' | '\u{2029}' if lines == Lines::Multi => None,
        '\u{2028}' | '\u{2029}' => Some("line breaks"),
        c if c.is_control() => Some("control characters"),
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => {
            Some("bidirectional embedding, override or isolate characters")
        }
        _ => None,
    }
}

/// The first character `value` may not hold, and why.
pub fn forbidden_char(value: &str, lines: Lines) -> Option<(char, &'static str)> {
    value
        .chars()
        .find_map(|c| refused(c, lines).map(|why| (c, why)))
}

/// Checks one field: 1..=`max` characters (0 allowed when
/// `allow_empty`; blank counts as empty) and no refused character.
/// 422 `invalid_request` naming the field otherwise.
pub fn check(
    field: &str,
    value: &str,
    max: usize,
    allow_empty: bool,
    lines: Lines,
) -> Result<(), ApiError> {
    if (!allow_empty && value.trim().is_empty()) || value.chars().count() > max {
        let range = if allow_empty { 0 } else { 1 };
        return Err(ApiError::invalid_field(
            field,
            format!("{field} must be {range}..={max} characters"),
        ));
    }
    if let Some((c, why)) = forbidden_char(value, lines) {
        return Err(ApiError::invalid_field(
            field,
            format!(
                "{field} must not contain {why} (found U+{:04X})",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_in_any_script_passes() {
        for ok in [
            "Hello",
            "Ünïcödé ✓",
            "שלום עולם",
            "مرحبا",
            "日本語",
            "emoji 🎬",
            "a\u{200F}b",
        ] {
            assert!(
                check("title", ok, 100, false, Lines::Single).is_ok(),
                "{ok:?}"
            );
        }
        assert!(check(
            "description",
            "two\nlines\twith tab\r\n",
            100,
            true,
            Lines::Multi
        )
        .is_ok());
        assert!(check("description", "", 100, true, Lines::Multi).is_ok());
    }

    #[test]
    fn controls_and_bidi_overrides_are_refused() {
        for bad in [
            "evil\u{202E}gpj.exe",
            "a\u{202A}b",
            "a\u{2066}b",
            "a\u{2069}",
            "bell\u{7}",
            "nul\0",
            "esc\u{1b}[31m",
            "c1\u{85}",
            "del\u{7f}",
            "line\nbreak",
            "tab\there",
            "sep\u{2028}",
        ] {
            let e = check("title", bad, 100, false, Lines::Single).expect_err(bad);
            assert_eq!(e.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(e.field.as_deref(), Some("title"));
            assert!(e.message.contains("U+"), "{}", e.message);
        }
        assert!(check("description", "x\u{202E}y", 100, true, Lines::Multi).is_err());
        assert!(check("description", "x\u{1b}y", 100, true, Lines::Multi).is_err());
    }

    #[test]
    fn lengths() {
        assert!(check("name", "   ", 10, false, Lines::Single).is_err());
        assert!(check("name", &"é".repeat(10), 10, false, Lines::Single).is_ok());
        assert!(check("name", &"é".repeat(11), 10, false, Lines::Single).is_err());
    }
}
