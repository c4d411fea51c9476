//! One log event, one line: a writer for the text log that escapes line breaks inside an event.
//!
//! Text logs carry what devices send: a client id, a topic, a refused payload's reason. A value
//! with a newline in it would start a line of its own in the journal, where it reads as an
//! event the gateway never logged (a forged `ERROR` line). tracing's fmt layer writes each
//! event with one `write_all` ending in `\n`, so [`OneLine`] writes every `\n` and `\r` before
//! the last byte as `\n` and `\r` escapes. The JSON log escapes them already.

use std::io::{self, Write};

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
}
