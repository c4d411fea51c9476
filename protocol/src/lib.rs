//! Tributary's event model and wire format, shared by the gateway, the simulator and the firmware.
//!
//! The crate is `no_std`. Without features it offers the pieces a microcontroller needs to talk to
//! the gateway without a heap: [`device_id`] validation and the [`frame`] layer (length, CRC,
//! version). With `alloc` (the default) it adds the event model ([`event`]), the TCP messages
//! ([`message`]) and the JSON form used for MQTT payloads and Kafka values ([`json`]).
//!
//! # Wire format
//! A TCP frame is `len: u32 LE | crc32c(body): u32 LE | body`, where `body` is one version byte
//! followed by a postcard-encoded [`message::Message`]. The CRC catches corruption the transport
//! did not; the version lets the model grow without breaking deployed devices; the length is
//! bounded by a maximum frame size that the receiver chooses, so a bad length cannot make it
//! allocate without limit.
//!
//! # Invariants
//! - Decoding never panics, whatever the input; every malformed input class has its own error.
//! - An event's identity is `(device_id, seq)`; the gateway uses it to recognise retransmissions.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod device_id;
pub mod frame;

#[cfg(feature = "codec")]
pub mod codec;
#[cfg(feature = "alloc")]
pub mod event;
#[cfg(feature = "alloc")]
pub mod json;
#[cfg(feature = "alloc")]
pub mod message;
#[cfg(feature = "alloc")]
pub mod position;
#[cfg(feature = "alloc")]
pub mod refusal;
#[cfg(feature = "alloc")]
pub mod topic;

pub use device_id::{validate_device_id, DeviceIdError, MAX_DEVICE_ID_LEN};
pub use frame::{
    FrameError, FrameHeader, DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_LEN, OLDEST_VERSION,
    PROTOCOL_VERSION,
};

#[cfg(feature = "alloc")]
pub use event::{Body, Event, EventError, FixQuality, Kind, Position, Reading, SensorValue};
#[cfg(feature = "alloc")]
pub use message::{
    decode_frame, decode_frame_versioned, encode_frame, encode_frame_version, Ack, Answer,
    CommandFrame, CommandResult, Hello, Message, Nack, NackCode, Refused,
};
#[cfg(feature = "alloc")]
pub use position::{FieldValue, PositionField};
