//! How a record's headers are stored in `records.headers`: a compact binary list (schema 8)
//! instead of JSON text (schema 1 to 7, still read).
//!
//! # Format
//! A blob: the format byte [`FORMAT`], then for each header its name and its value, each one
//! string written as
//! - one byte below [`WORDS`]`.len()`: that entry of [`WORDS`], the names and values nearly
//!   every record carries (`event-id`, `kind`, `content-type`, the kinds, the content types);
//! - [`ORIGIN`]: the record's own event id (`origin`, formatted as [`EventId`] does), which
//!   the row already holds as `device_id`, `session` and `seq`;
//! - [`LITERAL`], a LEB128 length, then that many bytes of UTF-8.
//!
//! A device event's usual headers (`event-id`, `kind`, `content-type`) take 7 bytes this way,
//! against about 90 as JSON: about a third of a 100-byte event's row.
//!
//! # Invariants
//! - [`WORDS`] is part of the file format: entries are only ever appended, never reordered or
//!   removed, and the decoder refuses a byte it does not know rather than guessing.
//! - Decoding what [`encode`] wrote gives back the same headers, in order, for any strings.
//! - Decoding never panics on any bytes: a row from a damaged or foreign file is an error that
//!   names what was wrong.

use crate::record::EventId;

/// The first byte of every encoded list.
pub const FORMAT: u8 = 0x01;
/// The string is the record's event id.
pub const ORIGIN: u8 = 0xFE;
/// A literal string follows: LEB128 length, then UTF-8.
pub const LITERAL: u8 = 0xFF;

/// Strings stored as one byte: their index. Append only (see the module doc).
pub const WORDS: &[&str] = &[
    "event-id",
    "kind",
    "content-type",
    "reason",
    "schema-id",
    "rule",
    "rule-version",
    "source-seqs",
    "reading",
    "position",
    "application/json",
    "text/csv",
    "application/avro",
    "application/vnd.confluent.avro",
    "application/x-postcard",
    "text/plain; charset=utf-8",
];

/// `headers` as [`FORMAT`] bytes; `origin` is the record's event id, if it has one.
pub fn encode(headers: &[(String, String)], origin: Option<&EventId>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + headers.len() * 2);
    encode_into(&mut out, headers, origin);
    out
}

/// [`encode`] into `out`, cleared first: the spool's writer reuses one buffer for every row.
pub fn encode_into(out: &mut Vec<u8>, headers: &[(String, String)], origin: Option<&EventId>) {
    out.clear();
    out.push(FORMAT);
    for (name, value) in headers {
        put(out, name, None);
        put(out, value, origin);
    }
}

/// Whether `s` is `origin` as its `Display` writes it, without formatting the device id.
fn is_origin(s: &str, origin: &EventId) -> bool {
    use std::io::Write;
    let Some(tail) = s.strip_prefix(origin.device_id.as_str()) else {
        return false;
    };
    // ":" + 16 hex digits + ":" + 20 decimal digits at most.
    let mut buf = [0u8; 40];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let written = match origin.session {
        0 => write!(cursor, ":{}", origin.seq),
        s => write!(cursor, ":{s:x}:{}", origin.seq),
    };
    let len = cursor.position() as usize;
    written.is_ok() && buf.get(..len) == Some(tail.as_bytes())
}

fn put(out: &mut Vec<u8>, s: &str, origin: Option<&EventId>) {
    if origin.is_some_and(|o| is_origin(s, o)) {
        out.push(ORIGIN);
    } else if let Some(i) = WORDS.iter().position(|w| *w == s) {
        // WORDS has fewer than ORIGIN entries, so the index fits a byte below it.
        out.push(i as u8);
    } else {
        out.push(LITERAL);
        let mut n = s.len();
        loop {
            let low = (n & 0x7F) as u8;
            n >>= 7;
            if n == 0 {
                out.push(low);
                break;
            }
            out.push(low | 0x80);
        }
        out.extend_from_slice(s.as_bytes());
    }
}

/// The headers [`encode`] wrote; `Err` says what is wrong with `bytes`.
pub fn decode(bytes: &[u8], origin: Option<&EventId>) -> Result<Vec<(String, String)>, String> {
    let (first, mut rest) = bytes
        .split_first()
        .ok_or_else(|| "the header list is empty (no format byte)".to_owned())?;
    if *first != FORMAT {
        return Err(format!("unknown header format byte 0x{first:02x}"));
    }
    let mut headers = Vec::new();
    while !rest.is_empty() {
        let name = take(&mut rest, None)?;
        let value = take(&mut rest, origin)?;
        headers.push((name, value));
    }
    Ok(headers)
}

fn take(rest: &mut &[u8], origin: Option<&EventId>) -> Result<String, String> {
    let (tag, tail) = rest
        .split_first()
        .ok_or_else(|| "a header name has no value".to_owned())?;
    *rest = tail;
    match *tag {
        ORIGIN => origin
            .map(ToString::to_string)
            .ok_or_else(|| "a header refers to the event id of a row without one".to_owned()),
        LITERAL => {
            let mut len: usize = 0;
            let mut shift = 0u32;
            loop {
                let (b, tail) = rest
                    .split_first()
                    .ok_or_else(|| "a header's length is cut short".to_owned())?;
                *rest = tail;
                if shift > 28 {
                    return Err("a header's length is too long".to_owned());
                }
                len |= usize::from(b & 0x7F) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
            if len > rest.len() {
                return Err(format!(
                    "a header says {len} bytes but {} are left",
                    rest.len()
                ));
            }
            let (s, tail) = rest.split_at(len);
            *rest = tail;
            String::from_utf8(s.to_vec()).map_err(|_| "a header is not UTF-8".to_owned())
        }
        i => WORDS
            .get(usize::from(i))
            .map(|w| (*w).to_owned())
            .ok_or_else(|| format!("unknown header word 0x{i:02x}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(session: u64) -> EventId {
        EventId {
            device_id: "truck-7".into(),
            session,
            seq: 42,
            writer: None,
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_device_events_usual_headers_take_seven_bytes_and_come_back() {
        for session in [0, 0xbeef] {
            let origin = id(session);
            let headers = pairs(&[
                ("event-id", &origin.to_string()),
                ("kind", "reading"),
                ("content-type", "application/json"),
            ]);
            let bytes = encode(&headers, Some(&origin));
            assert_eq!(bytes.len(), 7);
            assert!(is_origin(&origin.to_string(), &origin));
            assert_eq!(decode(&bytes, Some(&origin)), Ok(headers));
        }
    }

    #[test]
    fn any_strings_come_back_in_order() {
        let long = "x".repeat(300);
        let headers = pairs(&[
            ("mqtt.site", "depot 4"),
            ("", ""),
            ("kind", "ü"),
            ("event-id", "not-the-origin:1"),
            ("event-id", "truck-7:42/rule"),
            ("event-id", "truck-7:042"),
            ("event-id", "truck-7:4"),
            ("mqtt.note", &long),
            ("mqtt.site", "again"),
        ]);
        for origin in [None, Some(id(0))] {
            let bytes = encode(&headers, origin.as_ref());
            assert_eq!(decode(&bytes, origin.as_ref()), Ok(headers.clone()));
        }
        assert_eq!(decode(&[FORMAT], None), Ok(Vec::new()));
    }

    #[test]
    fn damaged_lists_are_errors_that_say_what_is_wrong() {
        let cases: &[(&[u8], &str)] = &[
            (&[], "no format byte"),
            (&[0x7B], "format byte 0x7b"),
            (&[FORMAT, 0], "no value"),
            (&[FORMAT, 0, 0xF0], "unknown header word 0xf0"),
            (&[FORMAT, 0, ORIGIN], "without one"),
            (&[FORMAT, 0, LITERAL, 5, b'a'], "says 5 bytes but 1"),
            (&[FORMAT, 0, LITERAL, 0x80], "cut short"),
            (
                &[FORMAT, 0, LITERAL, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
                "too long",
            ),
            (&[FORMAT, 0, LITERAL, 1, 0xC3], "not UTF-8"),
        ];
        for (bytes, says) in cases {
            let e = decode(bytes, None).expect_err("damaged");
            assert!(e.contains(says), "{bytes:?}: {e}");
        }
    }
}
