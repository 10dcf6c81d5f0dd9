//! Keyset cursors: where a page of hits ended, so the next page starts
//! after it without OFFSET (the index skips straight there, and hits
//! added meanwhile do not shift the pages).
//!
//! On the wire a cursor is base64url JSON: the search it belongs to (a
//! hash of the query, filters and order), whether the page came from the
//! strict or the typo-tolerant match, and the sort key of the last hit
//! (its shape is the index's business: [`crate::index::SearchIndex`]
//! checks it). A cursor is not secret: editing one only moves where a
//! page of public hits starts.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Which match made the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Full text: every word (or its prefix) found.
    #[serde(rename = "s")]
    Strict,
    /// Typo-tolerant title similarity, used when the strict match found
    /// nothing.
    #[serde(rename = "f")]
    Fuzzy,
}

/// A decoded cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// The match the pages come from.
    pub mode: Mode,
    /// The last hit's sort key.
    pub keys: Vec<Value>,
}

/// Why a cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// Not base64url JSON of our shape.
    #[error("not a cursor returned by this api")]
    Malformed,
    /// A cursor of another query, filter set or order.
    #[error("the cursor belongs to a different search (same q, filters and sort are needed)")]
    OtherSearch,
    /// Our shape, but a sort key the index cannot use.
    #[error("the cursor's position is not valid for this order")]
    BadKeys,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    v: u8,
    h: String,
    m: Mode,
    k: Vec<Value>,
}

fn hash(fingerprint: &str) -> String {
    Sha256::digest(fingerprint.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Cursor {
    /// The cursor's text for the search `fingerprint`
    /// ([`crate::query::SearchRequest::fingerprint`]).
    pub fn encode(&self, fingerprint: &str) -> String {
        let wire = Wire {
            v: 1,
            h: hash(fingerprint),
            m: self.mode,
            k: self.keys.clone(),
        };
        // Serializing a Vec of JSON values cannot fail.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap_or_default())
    }

    /// Reads a cursor of the search `fingerprint`.
    pub fn decode(text: &str, fingerprint: &str) -> Result<Cursor, CursorError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|_| CursorError::Malformed)?;
        let wire: Wire = serde_json::from_slice(&bytes).map_err(|_| CursorError::Malformed)?;
        if wire.v != 1 || wire.k.is_empty() || wire.k.len() > 4 {
            return Err(CursorError::Malformed);
        }
        if wire.h != hash(fingerprint) {
            return Err(CursorError::OtherSearch);
        }
        Ok(Cursor {
            mode: wire.m,
            keys: wire.k,
        })
    }

    /// Key `i` as an integer.
    pub fn int(&self, i: usize) -> Result<i64, CursorError> {
        self.keys
            .get(i)
            .and_then(Value::as_i64)
            .ok_or(CursorError::BadKeys)
    }

    /// Key `i` as a finite float.
    pub fn float(&self, i: usize) -> Result<f64, CursorError> {
        self.keys
            .get(i)
            .and_then(Value::as_f64)
            .filter(|f| f.is_finite())
            .ok_or(CursorError::BadKeys)
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no keys (never, for a decoded cursor).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_and_refusals() {
        let c = Cursor {
            mode: Mode::Strict,
            keys: vec![json!(0.607_927_1_f32), json!(42)],
        };
        let text = c.encode("guitar");
        let back = Cursor::decode(&text, "guitar").expect("decodes");
        assert_eq!(back, c);
        // An f32 score comes back exactly.
        assert_eq!(back.float(0).expect("f") as f32, 0.607_927_1_f32);
        assert_eq!(back.int(1), Ok(42));
        assert_eq!(back.int(0), Err(CursorError::BadKeys));
        assert_eq!(
            Cursor::decode(&text, "drums"),
            Err(CursorError::OtherSearch)
        );
        for bad in ["", "!!", "e30", &URL_SAFE_NO_PAD.encode(b"{\"v\":2}")] {
            assert_eq!(
                Cursor::decode(bad, "guitar"),
                Err(CursorError::Malformed),
                "{bad}"
            );
        }
        let no_keys = Cursor {
            mode: Mode::Fuzzy,
            keys: vec![],
        };
        assert_eq!(
            Cursor::decode(&no_keys.encode("x"), "x"),
            Err(CursorError::Malformed)
        );
    }
}
