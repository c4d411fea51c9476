//! One log event, one line: a writer for the text log that escapes line breaks inside an event.
//!
//! Text logs carry what devices send: a client id, a topic, a refused payload's reason. A value
//! with a newline in it would start a line of its own in the journal, where it reads as an
//! event the gateway never logged (a forged `ERROR` line). tracing's fmt layer writes each
//! event with one `write_all` ending in `\n`, so [`OneLine`] writes every `\n` and `\r` before
//! the last byte as `\n` and `\r` escapes. The JSON log escapes them already.

use std::borrow::Cow;
use std::io::{self, Write};

/// The most characters of an identifier a peer sent (a client id, a claimed device id) that a
/// log line or the status page keeps: an MQTT client id may be 65,535 bytes.
pub const MAX_ID_CHARS: usize = 128;

/// `text` cut to [`MAX_ID_CHARS`] characters, with `…` where it was cut.
pub fn clip(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(MAX_ID_CHARS) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}…", &text[..end])),
    }
}

/// Wraps the log's writer; see the module documentation.
pub struct OneLine<W>(pub W);

impl<W: Write> Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (body, end) = match buf.split_last() {
            Some((b'\n', body)) => (body, &b"\n"[..]),
            _ => (buf, &b""[..]),
        };
        if !body.iter().any(|b| matches!(b, b'\n' | b'\r')) {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut out = Vec::with_capacity(buf.len() + 8);
        for &b in body {
            match b {
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b => out.push(b),
            }
        }
        out.extend_from_slice(end);
        self.0.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_break_inside_an_event_is_escaped_and_the_last_kept() {
        let mut w = OneLine(Vec::new());
        w.write_all(b"WARN refused client_id=x\nERROR forged\r\n")
            .unwrap();
        w.write_all(b"INFO plain\n").unwrap();
        assert_eq!(
            String::from_utf8(w.0).unwrap(),
            "WARN refused client_id=x\\nERROR forged\\r\nINFO plain\n"
        );
    }

    #[test]
    fn a_long_identifier_is_clipped_on_a_character_boundary() {
        assert_eq!(clip("env-1"), "env-1");
        let long = "é".repeat(70_000);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), MAX_ID_CHARS + 1);
        assert!(clipped.ends_with('…'));
    }
}
