//! Device identifiers: 1 to 64 bytes of `[A-Za-z0-9_.-]`.
//!
//! The device id is the Kafka message key and a path segment in MQTT topics and file names, so
//! the alphabet is deliberately narrow: no `/`, `+`, `#`, spaces or non-ASCII.

use core::fmt;

/// The longest device id accepted, in bytes.
pub const MAX_DEVICE_ID_LEN: usize = 64;

/// Why a device id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceIdError {
    /// The id is empty.
    Empty,
    /// The id is longer than [`MAX_DEVICE_ID_LEN`] bytes.
    TooLong { len: usize },
    /// The byte at `position` is outside `[A-Za-z0-9_.-]`.
    InvalidByte { position: usize, byte: u8 },
}

impl fmt::Display for DeviceIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "device id is empty"),
            Self::TooLong { len } => write!(
                f,
                "device id is {len} bytes long, the limit is {MAX_DEVICE_ID_LEN}"
            ),
            Self::InvalidByte { position, byte } => write!(
                f,
                "device id has byte 0x{byte:02x} at position {position}; allowed are A-Z a-z 0-9 _ . -"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DeviceIdError {}

/// Checks that `id` is a valid device id.
pub fn validate_device_id(id: &str) -> Result<(), DeviceIdError> {
    if id.is_empty() {
        return Err(DeviceIdError::Empty);
    }
    if id.len() > MAX_DEVICE_ID_LEN {
        return Err(DeviceIdError::TooLong { len: id.len() });
    }
    match id
        .bytes()
        .enumerate()
        .find(|(_, b)| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))
    {
        Some((position, byte)) => Err(DeviceIdError::InvalidByte { position, byte }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        assert_eq!(validate_device_id("env-01_a.B9"), Ok(()));
        assert_eq!(validate_device_id(&"x".repeat(64)), Ok(()));
    }

    #[test]
    fn refuses_empty_long_and_foreign_bytes() {
        assert_eq!(validate_device_id(""), Err(DeviceIdError::Empty));
        assert_eq!(
            validate_device_id(&"x".repeat(65)),
            Err(DeviceIdError::TooLong { len: 65 })
        );
        assert_eq!(
            validate_device_id("dev/1"),
            Err(DeviceIdError::InvalidByte {
                position: 3,
                byte: b'/'
            })
        );
        assert!(validate_device_id("dév").is_err());
    }
}
