//! Protocol frames encoded in place into a caller-provided buffer, with no second buffer and no
//! panics: what a microcontroller without a heap needs to talk to the gateway.

use tributary_protocol::frame::{seal_in_place, FrameError};
use tributary_protocol::{Message, FRAME_HEADER_LEN};

/// Encodes `message` as one frame at the start of `buf`; returns the frame's length.
/// A buffer too small for the message is an error, never a panic.
pub fn encode_into(message: &Message, buf: &mut [u8]) -> Result<usize, FrameError> {
    let available = buf.len();
    let payload_area = buf
        .get_mut(FRAME_HEADER_LEN + 1..)
        .ok_or(FrameError::BufferTooSmall {
            needed: FRAME_HEADER_LEN + 2,
            available,
        })?;
    let payload_len = postcard::to_slice(message, payload_area)
        .map_err(|_| FrameError::BufferTooSmall {
            needed: available + 1,
            available,
        })?
        .len();
    seal_in_place(buf, payload_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate alloc;
    use alloc::string::ToString;
    use alloc::vec;
    use tributary_protocol::{decode_frame, Body, Event, Reading, SensorValue};

    fn message() -> Message {
        Message::Events(vec![Event {
            device_id: "node-1".to_string(),
            seq: 3,
            time_ms: 1_700_000_000_000,
            body: Body::Reading(Reading {
                values: vec![SensorValue {
                    name: "temperature".to_string(),
                    value: 22.25,
                    unit: "Cel".to_string(),
                }],
            }),
        }])
    }

    #[test]
    fn a_frame_encoded_in_place_decodes_on_the_gateway_side() {
        let mut buf = [0u8; 256];
        let n = encode_into(&message(), &mut buf).unwrap();
        let (decoded, used) = decode_frame(&buf[..n], 1024).unwrap();
        assert_eq!((decoded, used), (message(), n));
    }

    #[test]
    fn a_buffer_too_small_is_an_error() {
        let mut buf = [0u8; 20];
        assert!(matches!(
            encode_into(&message(), &mut buf),
            Err(FrameError::BufferTooSmall { .. })
        ));
    }
}
