//! A PUBLISH too large to buffer, read through as it arrives and answered like any refusal.
//!
//! A session buffers a packet only up to `mqtt.max_payload_bytes` plus room for its topic. A
//! PUBLISH announcing more is not a broken stream: its fixed header says exactly how long it is.
//! So once its topic and packet id have arrived, the session keeps the first
//! [`DEAD_LETTER_BYTES`] of the payload, drops the rest as it arrives (memory stays bounded
//! whatever the size), and then treats it like a payload over the limit: acknowledged (PUBACK or
//! PUBREC, so the device does not resend it forever), counted as `too_large`, and kept as a dead
//! letter that gives both sizes.

use bytes::{Buf, Bytes, BytesMut};
use rumqttc::mqttbytes::QoS;

use super::codec::{remaining_length, Publish};
use crate::route::DEAD_LETTER_BYTES;

/// The most bytes of MQTT 5 properties an oversize PUBLISH may carry (they are buffered).
const MAX_PROPERTIES: usize = 64 * 1024;

/// A PUBLISH being read through.
#[derive(Debug)]
pub struct Oversize {
    topic: String,
    qos: QoS,
    pkid: u16,
    /// The payload's size, as the fixed header announced it.
    size: usize,
    /// The payload's first bytes, kept for the dead letter.
    head: Vec<u8>,
    /// Bytes of the packet not read yet.
    left: usize,
}

/// What the start of a buffer says.
#[derive(Debug)]
pub enum Start {
    /// Not an oversize PUBLISH (or not a PUBLISH at all): parse it as usual.
    No,
    /// An oversize PUBLISH whose topic and packet id have not all arrived yet.
    Pending,
    Started(Oversize),
}

impl Oversize {
    /// Looks at the packet at the start of `buf`. If it is a PUBLISH with a remaining length
    /// over `max_packet` and its variable header is in (with MQTT 5's properties, `v5`, which
    /// are skipped), takes what has arrived of it. `Err` says why the header is malformed.
    pub fn start(buf: &mut BytesMut, max_packet: usize, v5: bool) -> Result<Start, String> {
        let Some(&first) = buf.first() else {
            return Ok(Start::No);
        };
        if first >> 4 != 3 {
            return Ok(Start::No);
        }
        let Some((header_len, remaining)) = remaining_length(&buf[1..])? else {
            return Ok(Start::Pending);
        };
        let header_len = header_len + 1;
        if remaining <= max_packet {
            return Ok(Start::No);
        }
        let qos = match (first >> 1) & 0b11 {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            _ => return Err("PUBLISH with QoS 3".into()),
        };
        let variable = &buf[header_len..];
        let Some(topic_len) = variable
            .get(..2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return Ok(Start::Pending);
        };
        let id_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
        let mut variable_len = 2 + topic_len + id_len;
        if v5 {
            let Some(after) = variable.get(variable_len..) else {
                return Ok(Start::Pending);
            };
            let Some((len_len, properties)) = remaining_length(after)? else {
                return Ok(Start::Pending);
            };
            if properties > MAX_PROPERTIES {
                return Err(format!("PUBLISH with {properties} bytes of properties"));
            }
            variable_len += len_len + properties;
        }
        if variable_len > remaining {
            return Err("PUBLISH topic longer than the packet".into());
        }
        if variable.len() < variable_len {
            return Ok(Start::Pending);
        }
        let topic = std::str::from_utf8(&variable[2..2 + topic_len])
            .map_err(|_| "PUBLISH topic is not UTF-8".to_string())?
            .to_owned();
        let pkid = match qos {
            QoS::AtMostOnce => 0,
            _ => u16::from_be_bytes([variable[2 + topic_len], variable[3 + topic_len]]),
        };
        buf.advance(header_len + variable_len);
        Ok(Start::Started(Oversize {
            topic,
            qos,
            pkid,
            size: remaining - variable_len,
            head: Vec::with_capacity(DEAD_LETTER_BYTES),
            left: remaining - variable_len,
        }))
    }

    /// Takes what `buf` holds of the rest of the packet; `true` once all of it is read.
    pub fn consume(&mut self, buf: &mut BytesMut) -> bool {
        let n = self.left.min(buf.len());
        let keep = (DEAD_LETTER_BYTES - self.head.len()).min(n);
        self.head.extend_from_slice(&buf[..keep]);
        buf.advance(n);
        self.left -= n;
        self.left == 0
    }

    /// The publish as read: its payload the first bytes only, its size the real one.
    pub fn into_publish(self) -> Publish {
        let mut publish = Publish::new(self.topic, Bytes::from(self.head), self.qos, self.pkid);
        publish.size = self.size;
        publish
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish_header(topic: &str, qos: u8, payload_len: usize) -> Vec<u8> {
        let id_len = if qos > 0 { 2 } else { 0 };
        let mut remaining = 2 + topic.len() + id_len + payload_len;
        let mut out = vec![0x30 | (qos << 1)];
        loop {
            let mut byte = (remaining % 128) as u8;
            remaining /= 128;
            if remaining > 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if remaining == 0 {
                break;
            }
        }
        out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        out.extend_from_slice(topic.as_bytes());
        if qos > 0 {
            out.extend_from_slice(&7u16.to_be_bytes());
        }
        out
    }

    #[test]
    fn an_oversize_publish_is_read_through_in_pieces_keeping_only_its_head() {
        let mut wire = publish_header("devices/a/readings", 1, 100_000);
        wire.extend(std::iter::repeat_n(b'x', 100_000));
        wire.extend_from_slice(&[0xC0, 0x00]); // PINGREQ after it
        let mut buf = BytesMut::new();
        let mut pieces = wire.chunks(1000);
        let mut state = None;
        while state.is_none() {
            buf.extend_from_slice(pieces.next().unwrap());
            match Oversize::start(&mut buf, 10_000, false).unwrap() {
                Start::Started(o) => state = Some(o),
                Start::Pending => {}
                Start::No => panic!("an oversize PUBLISH"),
            }
        }
        let mut o = state.unwrap();
        while !o.consume(&mut buf) {
            assert!(buf.is_empty());
            buf.extend_from_slice(pieces.next().unwrap());
        }
        for piece in pieces {
            buf.extend_from_slice(piece);
        }
        assert_eq!(&buf[..], [0xC0, 0x00], "the next packet is left intact");
        let publish = o.into_publish();
        assert_eq!(
            (publish.topic.as_str(), publish.pkid, publish.size),
            ("devices/a/readings", 7, 100_000)
        );
        assert_eq!(publish.payload.len(), DEAD_LETTER_BYTES);
    }

    #[test]
    fn a_publish_within_the_limit_or_another_packet_is_left_alone() {
        let mut buf = BytesMut::from(&publish_header("t", 0, 10)[..]);
        assert!(matches!(
            Oversize::start(&mut buf, 10_000, false),
            Ok(Start::No)
        ));
        let mut buf = BytesMut::from(&[0xC0u8, 0x00][..]);
        assert!(matches!(Oversize::start(&mut buf, 1, false), Ok(Start::No)));
        let mut buf = BytesMut::from(&[0x30u8, 0xff, 0xff][..]);
        assert!(matches!(
            Oversize::start(&mut buf, 1, false),
            Ok(Start::Pending)
        ));
        let mut buf = BytesMut::from(&[0x36u8, 0xff, 0xff, 0xff, 0x7f, 0, 1][..]);
        assert!(Oversize::start(&mut buf, 1, false).is_err(), "QoS 3");
    }
}
