//! The TCP protocol's messages and their framing.
//!
//! A session: the device sends [`Message::Hello`], then any number of [`Message::Events`]
//! batches. The gateway answers each batch with exactly one message:
//!
//! - [`Message::Answer`] once the batch is settled: every event in it is either committed to the
//!   spool or refused for good (invalid, or not allowed by the ACL), the refused ones listed with
//!   their seq, code and reason. The device may drop everything up to `up_to_seq` (the batch's
//!   highest seq) from its buffer; resending a refused event would be refused again.
//! - [`Message::Nack`] when nothing of the batch was settled: `busy` (retry the whole batch
//!   later), `invalid_event` for an empty batch, `protocol_violation` before HELLO, `malformed`
//!   for a frame that could not be read.
//!
//! From protocol 4 the gateway may also send a device that said 4 in its HELLO a
//! [`Message::Command`] at any time after HELLO, between answers; the device answers it with a
//! [`Message::CommandResult`], which the gateway does not answer.
//!
//! Version 1 and 2 devices get what they always got instead of ANSWER: one NACK per refused event,
//! then [`Message::Ack`]. Retransmitting a stored event is safe: the gateway recognises
//! `(device_id, session, seq)` and answers for it again without storing it twice.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::frame::{self, FrameError, FRAME_HEADER_LEN, PROTOCOL_VERSION};

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    Hello(Hello),
    Events(Vec<Event>),
    Ack(Ack),
    Nack(Nack),
    /// Version 3: the one answer to a settled EVENTS batch.
    Answer(Answer),
    /// Version 4, gateway to device: a command for the device.
    Command(CommandFrame),
    /// Version 4, device to gateway: what became of a command. Not answered.
    CommandResult(CommandResult),
}

/// A command from Kafka, for the device (protocol 4). The same fields as the JSON form MQTT
/// devices get (`tributary_client::command`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandFrame {
    /// The author's id: a device that sees an id again answers again without acting again.
    pub id: String,
    pub name: String,
    /// The arguments, JSON text (`{}` for none).
    pub args: String,
    /// When it stops being worth doing (ms since the Unix epoch).
    pub expires_ms: i64,
}

/// A device's answer to a command (protocol 4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command's id.
    pub id: String,
    /// The result: JSON text, or any text.
    pub result: String,
}

/// The gateway's answer to an EVENTS batch it settled (protocol version 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The batch's highest seq: everything up to it is stored or refused for good.
    pub up_to_seq: u64,
    /// Events stored now.
    pub stored: u32,
    /// Events already stored before (retransmissions), not stored again.
    pub duplicates: u32,
    /// Events refused for good, in batch order. Resending them would not help.
    pub refused: Vec<Refused>,
}

/// One event of a batch that the gateway refused; it is kept as a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub seq: u64,
    /// `invalid_event` or `forbidden`.
    pub code: NackCode,
    pub text: String,
}

/// The first message of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the device speaks.
    pub protocol_version: u8,
    pub device_id: String,
    /// The device's password, where the gateway requires one (and the device has no client
    /// certificate). Send it over TLS only.
    pub password: Option<String>,
    /// This boot of the device: random, non-zero, fixed until the next boot. See the module doc.
    pub session: Option<u64>,
}

/// Version 1 of the protocol, as it was: read, and answered, for devices not yet updated.
mod v1 {
    use super::*;

    #[derive(Deserialize)]
    pub(super) struct Hello {
        protocol_version: u8,
        device_id: String,
        token: Option<String>,
    }

    /// The same variants in the same order; only `Hello` differs.
    #[derive(Deserialize)]
    pub(super) enum Message {
        Hello(Hello),
        Events(Vec<Event>),
        Ack(Ack),
        Nack(Nack),
    }

    impl From<Message> for super::Message {
        fn from(m: Message) -> Self {
            match m {
                Message::Hello(h) => super::Message::Hello(super::Hello {
                    protocol_version: h.protocol_version,
                    device_id: h.device_id,
                    password: h.token,
                    session: None,
                }),
                Message::Events(e) => super::Message::Events(e),
                Message::Ack(a) => super::Message::Ack(a),
                Message::Nack(n) => super::Message::Nack(n),
            }
        }
    }

    /// Codes a version 1 device knows; newer ones fall back to the nearest old one.
    pub(super) fn downgrade(code: NackCode) -> NackCode {
        match code {
            NackCode::Forbidden => NackCode::Unauthorized,
            other => other,
        }
    }
}

/// Everything up to and including `up_to_seq` is durably stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub up_to_seq: u64,
}

/// A refusal, with a machine-readable code and a human-readable text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    pub code: NackCode,
    pub text: String,
}

/// Why the gateway refused. `Busy` is the only code after which the same data may succeed
/// unchanged; the others describe the data or the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NackCode {
    /// The frame could not be decoded (CRC, length, version, postcard).
    Malformed,
    /// An event failed validation; the text names it.
    InvalidEvent,
    /// The device could not be authenticated: unknown, wrong password, or an id that is not
    /// the one its certificate or password proves.
    Unauthorized,
    /// The gateway cannot store right now (spool full, shutting down); retry later.
    Busy,
    /// EVENTS before HELLO, a second HELLO.
    ProtocolViolation,
    /// The device is authenticated but may not publish this event (an event for another
    /// device, which the ACL does not allow); the text names the event. Do not resend it.
    Forbidden,
}

impl fmt::Display for NackCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NackCode::Malformed => "malformed",
            NackCode::InvalidEvent => "invalid_event",
            NackCode::Unauthorized => "unauthorized",
            NackCode::Busy => "busy",
            NackCode::ProtocolViolation => "protocol_violation",
            NackCode::Forbidden => "forbidden",
        })
    }
}

/// Encodes `message` as one frame (header, version byte, postcard body).
pub fn encode_frame(message: &Message) -> Result<Vec<u8>, FrameError> {
    encode_frame_version(message, PROTOCOL_VERSION)
}

/// Encodes `message` for a peer that speaks `version`. Only answers (ACK, NACK) are encoded
/// for version 1 peers; a NACK code that version 1 lacks becomes its nearest old code.
pub fn encode_frame_version(message: &Message, version: u8) -> Result<Vec<u8>, FrameError> {
    let downgraded;
    let message = match message {
        Message::Nack(n) if version < 2 => {
            downgraded = Message::Nack(Nack {
                code: v1::downgrade(n.code),
                text: n.text.clone(),
            });
            &downgraded
        }
        Message::Hello(_) if version < 2 => {
            return Err(FrameError::UnknownVersion { version });
        }
        Message::Answer(_) if version < 3 => {
            return Err(FrameError::UnknownVersion { version });
        }
        Message::Command(_) | Message::CommandResult(_) if version < 4 => {
            return Err(FrameError::UnknownVersion { version });
        }
        m => m,
    };
    let payload = postcard::to_allocvec(message).map_err(|e| FrameError::Malformed {
        reason: postcard_reason(&e),
    })?;
    let mut out = alloc::vec![0u8; FRAME_HEADER_LEN + 1 + payload.len()];
    out[FRAME_HEADER_LEN + 1..].copy_from_slice(&payload);
    frame::seal_in_place_version(&mut out, payload.len(), version)?;
    Ok(out)
}

/// Decodes the frame at the start of `buf`; returns the message and the bytes it used.
/// Device ids in HELLO and EVENTS are validated here, so a decoded message is safe to route.
pub fn decode_frame(buf: &[u8], max_body: usize) -> Result<(Message, usize), FrameError> {
    decode_frame_versioned(buf, max_body).map(|(m, used, _)| (m, used))
}

/// [`decode_frame`], also returning the frame's protocol version.
pub fn decode_frame_versioned(
    buf: &[u8],
    max_body: usize,
) -> Result<(Message, usize, u8), FrameError> {
    let (version, payload, used) = frame::open_versioned(buf, max_body)?;
    let malformed = |e: postcard::Error| FrameError::Malformed {
        reason: postcard_reason(&e),
    };
    let message: Message = if version == 1 {
        postcard::from_bytes::<v1::Message>(payload)
            .map_err(malformed)?
            .into()
    } else {
        postcard::from_bytes(payload).map_err(malformed)?
    };
    let invalid = match &message {
        Message::Hello(h) => crate::validate_device_id(&h.device_id).err(),
        Message::Events(events) => events
            .iter()
            .find_map(|e| crate::validate_device_id(&e.device_id).err()),
        Message::Ack(_)
        | Message::Nack(_)
        | Message::Answer(_)
        | Message::Command(_)
        | Message::CommandResult(_) => None,
    };
    match invalid {
        Some(e) => Err(FrameError::InvalidDeviceId(e)),
        None => Ok((message, used, version)),
    }
}

fn postcard_reason(e: &postcard::Error) -> &'static str {
    use postcard::Error as E;
    match e {
        E::DeserializeUnexpectedEnd => "payload ends early",
        E::DeserializeBadVarint => "bad varint",
        E::DeserializeBadBool => "bad bool",
        E::DeserializeBadChar => "bad char",
        E::DeserializeBadUtf8 => "bad UTF-8 in a string",
        E::DeserializeBadOption => "bad option tag",
        E::DeserializeBadEnum => "unknown message or enum variant",
        E::DeserializeBadEncoding => "bad encoding",
        E::SerializeBufferFull => "buffer full",
        _ => "postcard error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::{position, reading};
    use crate::{DeviceIdError, DEFAULT_MAX_FRAME_BYTES};
    use alloc::string::ToString;
    use alloc::vec;
    use proptest::prelude::*;

    fn roundtrip(m: &Message) {
        let bytes = encode_frame(m).unwrap();
        let (back, used) = decode_frame(&bytes, DEFAULT_MAX_FRAME_BYTES).unwrap();
        assert_eq!(&back, m);
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn commands_round_trip_from_protocol_4_and_are_never_written_to_an_older_peer() {
        let command = Message::Command(CommandFrame {
            id: "c-17".to_string(),
            name: "set_interval".to_string(),
            args: "{\"interval_ms\":5000}".to_string(),
            expires_ms: 1_796_673_000_000,
        });
        let result = Message::CommandResult(CommandResult {
            id: "c-17".to_string(),
            result: "{\"ok\":true}".to_string(),
        });
        roundtrip(&command);
        roundtrip(&result);
        for m in [&command, &result] {
            assert!(matches!(
                encode_frame_version(m, 3),
                Err(FrameError::UnknownVersion { version: 3 })
            ));
        }
    }

    #[test]
    fn every_message_round_trips() {
        roundtrip(&Message::Hello(Hello {
            protocol_version: 1,
            device_id: "truck-7".to_string(),
            password: Some("s3cret".to_string()),
            session: Some(0x1234_5678_9abc_def0),
        }));
        roundtrip(&Message::Events(vec![reading("d", 1), position("d", 2)]));
        roundtrip(&Message::Ack(Ack { up_to_seq: 42 }));
        roundtrip(&Message::Nack(Nack {
            code: NackCode::Busy,
            text: "spool full".to_string(),
        }));
        roundtrip(&Message::Answer(Answer {
            up_to_seq: 9,
            stored: 7,
            duplicates: 1,
            refused: vec![Refused {
                seq: 4,
                code: NackCode::InvalidEvent,
                text: "reading has no values".to_string(),
            }],
        }));
    }

    #[test]
    fn an_answer_cannot_be_sent_to_a_version_2_peer() {
        let answer = Message::Answer(Answer {
            up_to_seq: 1,
            stored: 1,
            duplicates: 0,
            refused: vec![],
        });
        assert_eq!(
            encode_frame_version(&answer, 2),
            Err(FrameError::UnknownVersion { version: 2 })
        );
    }

    #[test]
    fn a_version_1_hello_still_decodes_with_its_token_as_the_password() {
        #[derive(Serialize)]
        enum OldMessage {
            Hello {
                protocol_version: u8,
                device_id: String,
                token: Option<String>,
            },
        }
        let payload = postcard::to_allocvec(&OldMessage::Hello {
            protocol_version: 1,
            device_id: "old-1".to_string(),
            token: Some("t".to_string()),
        })
        .unwrap();
        let mut raw = vec![0u8; FRAME_HEADER_LEN + 1 + payload.len()];
        raw[FRAME_HEADER_LEN + 1..].copy_from_slice(&payload);
        crate::frame::seal_in_place_version(&mut raw, payload.len(), 1).unwrap();
        let (message, _, version) = decode_frame_versioned(&raw, 1024).unwrap();
        assert_eq!(version, 1);
        assert_eq!(
            message,
            Message::Hello(Hello {
                protocol_version: 1,
                device_id: "old-1".to_string(),
                password: Some("t".to_string()),
                session: None,
            })
        );
    }

    #[test]
    fn a_version_1_peer_gets_version_1_answers_with_codes_it_knows() {
        let nack = Message::Nack(Nack {
            code: NackCode::Forbidden,
            text: "no".to_string(),
        });
        let bytes = encode_frame_version(&nack, 1).unwrap();
        let (back, _, version) = decode_frame_versioned(&bytes, 1024).unwrap();
        assert_eq!(version, 1);
        assert_eq!(
            back,
            Message::Nack(Nack {
                code: NackCode::Unauthorized,
                text: "no".to_string()
            })
        );
    }

    #[test]
    fn a_frame_followed_by_more_bytes_reports_its_own_length() {
        let mut bytes = encode_frame(&Message::Ack(Ack { up_to_seq: 1 })).unwrap();
        let n = bytes.len();
        bytes.extend_from_slice(&[0xff; 5]);
        assert_eq!(decode_frame(&bytes, 1024).unwrap().1, n);
    }

    #[test]
    fn an_invalid_device_id_in_a_batch_is_its_own_error() {
        let bytes = encode_frame(&Message::Events(vec![
            reading("ok", 1),
            reading("no/pe", 2),
        ]))
        .unwrap();
        assert_eq!(
            decode_frame(&bytes, 1024),
            Err(FrameError::InvalidDeviceId(DeviceIdError::InvalidByte {
                position: 2,
                byte: b'/'
            }))
        );
    }

    #[test]
    fn a_valid_frame_with_garbage_inside_is_malformed() {
        let mut raw = vec![0u8; FRAME_HEADER_LEN + 1 + 3];
        raw[FRAME_HEADER_LEN + 1..].copy_from_slice(&[200, 1, 2]);
        crate::frame::seal_in_place(&mut raw, 3).unwrap();
        assert!(matches!(
            decode_frame(&raw, 1024),
            Err(FrameError::Malformed { .. })
        ));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame(&bytes, 256);
        }

        #[test]
        fn any_single_bit_flip_is_detected(bit in 0usize..(8 * 60)) {
            let bytes = encode_frame(&Message::Events(vec![reading("dev-1", 7)])).unwrap();
            let bit = bit % (bytes.len() * 8);
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_frame(&flipped, DEFAULT_MAX_FRAME_BYTES).is_err());
        }

        #[test]
        fn events_round_trip(seq in any::<u64>(), time_ms in any::<u64>(), value in -1e9f64..1e9) {
            let mut e = reading("d", seq);
            e.time_ms = time_ms;
            if let crate::Body::Reading(r) = &mut e.body { r.values[0].value = value; }
            roundtrip(&Message::Events(vec![e]));
        }
    }
}
