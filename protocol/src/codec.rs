//! A tokio-util codec for [`Message`] frames, used by the gateway and the simulator.
//!
//! Decoding yields `Ok(Inbound)`, never a decoder error, for malformed frames: tokio-util ends a
//! framed stream after the first decoder error, and a server wants to answer a bad frame with a
//! NACK first. [`BadFrame::fatal`] says whether the stream can go on: after a bad length or CRC
//! the frame boundaries cannot be trusted; after a bad version or body they can.
//!
//! The codec answers in the protocol version its peer spoke: the version of the last frame it
//! decoded (the newest version until then), so a version 1 device gets version 1 answers.

use alloc::vec::Vec;

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::PROTOCOL_VERSION;
use crate::frame::{FrameError, FrameHeader};
use crate::message::{decode_frame_versioned, encode_frame_version, Message};

/// A frame that could not be decoded, with its raw bytes for the dead-letter destination.
#[derive(Debug, Clone, PartialEq)]
pub struct BadFrame {
    pub error: FrameError,
    /// The frame's bytes (or what was read of it), at most the limit given to the codec.
    pub raw: Vec<u8>,
    /// The connection cannot continue: frame boundaries are lost.
    pub fatal: bool,
}

/// What the decoder yields.
pub type Inbound = Result<Message, BadFrame>;

/// Frames [`Message`]s with a receive limit.
#[derive(Debug, Clone)]
pub struct MessageCodec {
    max_body: usize,
    /// Set after a fatal frame: everything after it is ignored.
    poisoned: bool,
    /// The version frames are encoded in: the peer's, once it sent one.
    version: u8,
}

impl MessageCodec {
    pub fn new(max_body: usize) -> Self {
        Self {
            max_body,
            poisoned: false,
            version: PROTOCOL_VERSION,
        }
    }

    /// The protocol version of the peer's last frame (the newest until one arrived).
    pub fn peer_version(&self) -> u8 {
        self.version
    }
}

impl Decoder for MessageCodec {
    type Item = Inbound;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, std::io::Error> {
        if self.poisoned {
            src.clear();
            return Ok(None);
        }
        let header = match FrameHeader::parse(src, self.max_body) {
            Ok(None) => return Ok(None),
            Ok(Some(h)) => h,
            Err(error) => {
                self.poisoned = true;
                let raw = src.split().to_vec();
                return Ok(Some(Err(BadFrame {
                    error,
                    raw,
                    fatal: true,
                })));
            }
        };
        if src.len() < header.frame_len() {
            // Grow as bytes arrive, not by what the header announces: a peer that announces a
            // large frame and sends nothing must not cost that much memory. Doubling what has
            // arrived keeps the number of reads for a large frame small.
            let missing = header.frame_len() - src.len();
            src.reserve(missing.min(src.len().max(512)));
            return Ok(None);
        }
        let result = decode_frame_versioned(&src[..header.frame_len()], self.max_body);
        let raw = &src[..header.frame_len()];
        let out = match result {
            Ok((message, _, version)) => {
                self.version = version;
                Ok(message)
            }
            Err(error) => {
                let fatal = matches!(error, FrameError::BadCrc { .. });
                self.poisoned = fatal;
                Err(BadFrame {
                    error,
                    raw: raw.to_vec(),
                    fatal,
                })
            }
        };
        src.advance(header.frame_len());
        Ok(Some(out))
    }
}

impl Encoder<&Message> for MessageCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: &Message, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        let bytes = encode_frame_version(item, self.version)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        dst.extend_from_slice(&bytes);
        Ok(())
    }
}

/// Owned messages, for a sink split off a `Framed` (its item type cannot borrow).
impl Encoder<Message> for MessageCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: Message, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        <Self as Encoder<&Message>>::encode(self, &item, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode_frame;
    use crate::message::Ack;

    #[test]
    fn frames_split_across_reads_decode_once_complete() {
        let bytes = encode_frame(&Message::Ack(Ack { up_to_seq: 9 })).unwrap();
        let mut codec = MessageCodec::new(1024);
        let mut buf = BytesMut::from(&bytes[..3]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&bytes[3..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Ok(Message::Ack(Ack { up_to_seq: 9 })))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn a_bad_body_is_skipped_and_the_next_frame_still_decodes() {
        let good = encode_frame(&Message::Ack(Ack { up_to_seq: 1 })).unwrap();
        let mut bad = alloc::vec![0u8; crate::FRAME_HEADER_LEN + 2];
        bad[crate::FRAME_HEADER_LEN + 1] = 250;
        crate::frame::seal_in_place(&mut bad, 1).unwrap();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&bad);
        buf.extend_from_slice(&good);
        let mut codec = MessageCodec::new(1024);
        let first = codec.decode(&mut buf).unwrap().unwrap().unwrap_err();
        assert!(!first.fatal);
        assert!(matches!(first.error, FrameError::Malformed { .. }));
        assert!(codec.decode(&mut buf).unwrap().unwrap().is_ok());
    }

    #[test]
    fn an_oversize_length_is_fatal_before_the_body_arrives() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0x00, 0, 0, 0, 0][..]);
        let mut codec = MessageCodec::new(1024);
        let bad = codec.decode(&mut buf).unwrap().unwrap().unwrap_err();
        assert!(bad.fatal);
        assert!(matches!(bad.error, FrameError::Oversize { .. }));
    }
}
