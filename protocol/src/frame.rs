//! The frame layer: `len: u32 LE | crc32c(body): u32 LE | body`, body = version byte + payload.
//!
//! This layer knows nothing of messages and needs no heap, so firmware without an allocator can
//! frame a payload it encoded into a fixed buffer. [`FrameHeader::parse`] is what a streaming
//! reader calls: it says how many bytes the frame needs before any of the body is trusted, and
//! refuses an oversize length before anything is allocated for it.

use core::fmt;

/// The protocol version this crate speaks; the first byte of every frame body.
///
/// - 1: the first release.
/// - 2: `Hello` carries the device's password and a boot session id; NACK code `forbidden`.
///   Version 1 frames are still read, and answered in version 1 ([`crate::codec`]).
/// - 3: every EVENTS batch gets exactly one answer, [`ANSWER`](crate::message::Answer), which
///   says what was stored and what was refused, and why. Version 1 and 2 devices keep their
///   answers (a NACK per refused event, then the ACK).
/// - 4: commands. The gateway may send a v4 device [`COMMAND`](crate::message::CommandFrame)
///   frames at any time after HELLO; the device answers each with a
///   [`COMMAND_RESULT`](crate::message::CommandResult), which is not answered. Older devices
///   get no commands, and nothing else changed.
pub const PROTOCOL_VERSION: u8 = 4;
/// The oldest version this crate still reads.
pub const OLDEST_VERSION: u8 = 1;
/// Bytes before the body: length and CRC.
pub const FRAME_HEADER_LEN: usize = 8;
/// The default limit on a frame body, in bytes.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 256 * 1024;

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Everything that can be wrong with a frame or the message inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The input ended before the frame did.
    Truncated { needed: usize, available: usize },
    /// The length field exceeds the receiver's limit.
    Oversize { len: usize, limit: usize },
    /// The body's CRC does not match the header.
    BadCrc { expected: u32, actual: u32 },
    /// The body is empty: not even a version byte.
    Empty,
    /// The body's version byte is one this side does not speak.
    UnknownVersion { version: u8 },
    /// The body is not a valid message (postcard's reason).
    Malformed { reason: &'static str },
    /// The message is well formed but names an invalid device id.
    InvalidDeviceId(crate::DeviceIdError),
    /// An output buffer is too small for the frame being encoded.
    BufferTooSmall { needed: usize, available: usize },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { needed, available } => write!(
                f,
                "truncated frame: {needed} bytes needed, {available} available"
            ),
            Self::Oversize { len, limit } => {
                write!(f, "frame too large: length is {len}, limit is {limit}")
            }
            Self::BadCrc { expected, actual } => write!(
                f,
                "bad frame CRC: header says 0x{expected:08x}, body has 0x{actual:08x}"
            ),
            Self::Empty => write!(f, "empty frame body: no version byte"),
            Self::UnknownVersion { version } => write!(
                f,
                "unknown protocol version {version}; this side speaks {PROTOCOL_VERSION}"
            ),
            Self::Malformed { reason } => write!(f, "malformed message: {reason}"),
            Self::InvalidDeviceId(e) => write!(f, "invalid device id: {e}"),
            Self::BufferTooSmall { needed, available } => write!(
                f,
                "output buffer too small: {needed} bytes needed, {available} available"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FrameError {}

/// The fixed-size header in front of every frame body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Length of the body in bytes (version byte included).
    pub len: usize,
    /// CRC-32C of the body.
    pub crc: u32,
}

impl FrameHeader {
    /// Reads a header from the start of `buf`. `Ok(None)` means fewer than
    /// [`FRAME_HEADER_LEN`] bytes are there yet. An oversize length is refused here, before
    /// the caller waits for or allocates the body.
    pub fn parse(buf: &[u8], max_body: usize) -> Result<Option<Self>, FrameError> {
        let Some(header) = buf.get(..FRAME_HEADER_LEN) else {
            return Ok(None);
        };
        let mut len_bytes = [0u8; 4];
        let mut crc_bytes = [0u8; 4];
        len_bytes.copy_from_slice(&header[..4]);
        crc_bytes.copy_from_slice(&header[4..]);
        let len = u32::from_le_bytes(len_bytes) as usize;
        if len > max_body {
            return Err(FrameError::Oversize {
                len,
                limit: max_body,
            });
        }
        Ok(Some(Self {
            len,
            crc: u32::from_le_bytes(crc_bytes),
        }))
    }

    /// The whole frame's length: header plus body.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_LEN + self.len
    }
}

/// Checks a frame's CRC and version and returns the payload after the version byte.
/// `frame` must start at the header; it may run on past the end of this frame.
pub fn open(frame: &[u8], max_body: usize) -> Result<(&[u8], usize), FrameError> {
    match open_versioned(frame, max_body)? {
        (PROTOCOL_VERSION, payload, used) => Ok((payload, used)),
        (version, _, _) => Err(FrameError::UnknownVersion { version }),
    }
}

/// Like [`open`], for any version from [`OLDEST_VERSION`] to [`PROTOCOL_VERSION`]; returns the
/// version too.
pub fn open_versioned(frame: &[u8], max_body: usize) -> Result<(u8, &[u8], usize), FrameError> {
    let header = FrameHeader::parse(frame, max_body)?.ok_or(FrameError::Truncated {
        needed: FRAME_HEADER_LEN,
        available: frame.len(),
    })?;
    let body = frame
        .get(FRAME_HEADER_LEN..header.frame_len())
        .ok_or(FrameError::Truncated {
            needed: header.frame_len(),
            available: frame.len(),
        })?;
    let actual = CRC.checksum(body);
    if actual != header.crc {
        return Err(FrameError::BadCrc {
            expected: header.crc,
            actual,
        });
    }
    match body.split_first() {
        None => Err(FrameError::Empty),
        Some((&version, payload)) if (OLDEST_VERSION..=PROTOCOL_VERSION).contains(&version) => {
            Ok((version, payload, header.frame_len()))
        }
        Some((&version, _)) => Err(FrameError::UnknownVersion { version }),
    }
}

/// Writes header and version byte around a payload already placed at
/// `out[FRAME_HEADER_LEN + 1..FRAME_HEADER_LEN + 1 + payload_len]`; returns the frame length.
/// This lets a caller encode the payload in place with no second buffer.
pub fn seal_in_place(out: &mut [u8], payload_len: usize) -> Result<usize, FrameError> {
    seal_in_place_version(out, payload_len, PROTOCOL_VERSION)
}

/// [`seal_in_place`] with an explicit version byte (to answer a peer in the version it spoke).
pub fn seal_in_place_version(
    out: &mut [u8],
    payload_len: usize,
    version: u8,
) -> Result<usize, FrameError> {
    let body_len = payload_len + 1;
    let total = FRAME_HEADER_LEN + body_len;
    if out.len() < total {
        return Err(FrameError::BufferTooSmall {
            needed: total,
            available: out.len(),
        });
    }
    let len = u32::try_from(body_len).map_err(|_| FrameError::Oversize {
        len: body_len,
        limit: u32::MAX as usize,
    })?;
    out[FRAME_HEADER_LEN] = version;
    let crc = CRC.checksum(&out[FRAME_HEADER_LEN..total]);
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..FRAME_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(payload: &[u8]) -> ([u8; 64], usize) {
        let mut buf = [0u8; 64];
        buf[FRAME_HEADER_LEN + 1..FRAME_HEADER_LEN + 1 + payload.len()].copy_from_slice(payload);
        let n = seal_in_place(&mut buf, payload.len()).unwrap();
        (buf, n)
    }

    #[test]
    fn a_sealed_frame_opens_to_its_payload() {
        let (buf, n) = sealed(b"hello");
        assert_eq!(open(&buf[..n], 1024), Ok((&b"hello"[..], n)));
    }

    #[test]
    fn a_short_header_is_not_yet_a_header() {
        assert_eq!(FrameHeader::parse(&[1, 2, 3], 1024), Ok(None));
    }

    #[test]
    fn each_malformed_class_has_its_own_error() {
        let (buf, n) = sealed(b"hello");
        assert!(matches!(
            open(&buf[..n - 1], 1024),
            Err(FrameError::Truncated { .. })
        ));
        assert_eq!(
            open(&buf[..n], 3),
            Err(FrameError::Oversize { len: 6, limit: 3 })
        );
        let mut flipped = buf;
        flipped[n - 1] ^= 0x40;
        assert!(matches!(
            open(&flipped[..n], 1024),
            Err(FrameError::BadCrc { .. })
        ));
        let mut versioned = [0u8; 64];
        versioned[FRAME_HEADER_LEN + 1] = b'x';
        let m = seal_in_place(&mut versioned, 1).unwrap();
        versioned[FRAME_HEADER_LEN] = 9;
        let crc = CRC.checksum(&versioned[FRAME_HEADER_LEN..m]);
        versioned[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            open(&versioned[..m], 1024),
            Err(FrameError::UnknownVersion { version: 9 })
        );
        let mut empty = [0u8; 8];
        empty[4..8].copy_from_slice(&CRC.checksum(&[]).to_le_bytes());
        assert_eq!(open(&empty, 1024), Err(FrameError::Empty));
    }

    #[test]
    fn sealing_into_a_small_buffer_is_an_error() {
        let mut buf = [0u8; 10];
        assert_eq!(
            seal_in_place(&mut buf, 5),
            Err(FrameError::BufferTooSmall {
                needed: 14,
                available: 10
            })
        );
    }
}
