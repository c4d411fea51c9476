//! Teltonika's Codec 8 and Codec 8 Extended, as their public protocol documentation defines
//! them: the IMEI handshake and AVL data packets. Pure functions over bytes, so the session,
//! the tests and the fuzz target share them.
//!
//! - Handshake: `len: u16 BE | IMEI` (15 ASCII digits); the server answers `0x01` (accept) or
//!   `0x00` (refuse).
//! - Packet: `0u32 | data_len: u32 BE | codec id | n1: u8 | n1 records | n2: u8 | crc: u32 BE`,
//!   where `data_len` counts codec id to n2, and the CRC (CRC-16/ARC, in the low 16 bits) covers
//!   the same bytes. The server answers the number of records accepted, `u32 BE`.
//! - Record: `timestamp ms: u64 | priority: u8 | GPS (15 bytes) | IO element`. GPS:
//!   `lon, lat: i32 (1e-7 degrees) | altitude m: i16 | angle deg: u16 | satellites: u8 |
//!   speed km/h: u16`. IO element: event IO id, total count, then groups of 1-, 2-, 4- and
//!   8-byte values, each `count | (id, value)*`; Codec 8 uses 1-byte ids and counts, Codec 8E
//!   2-byte ones and adds a group of variable-length values (`id | len: u16 | bytes`).
//!
//! - Codec 12 (GPRS commands): the same framing, with data `0x0C | n1: u8 | type: u8 |
//!   size: u32 BE | text | n2: u8`; type `0x05` is a command to the tracker ([`command`]),
//!   `0x06` the tracker's response, which [`packet`] returns as [`Packet::response`].
//!
//! Every length is checked before it is used; nothing here panics on input.

/// Codec 8's id.
pub const CODEC_8: u8 = 0x08;
/// Codec 8 Extended's id.
pub const CODEC_8E: u8 = 0x8E;
/// Codec 12's id (GPRS commands and responses).
pub const CODEC_12: u8 = 0x0C;
/// Codec 12's message types.
pub const COMMAND: u8 = 0x05;
pub const RESPONSE: u8 = 0x06;
/// The longest Codec 12 command text sent (trackers take a few hundred bytes).
pub const MAX_COMMAND_BYTES: usize = 1024;

/// Why bytes are not a Teltonika handshake or packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("IMEI length {0} is not 15")]
    ImeiLength(u16),
    #[error("IMEI {0:?} is not 15 digits")]
    ImeiDigits(String),
    #[error("packet preamble is {0:#010x}, not 0")]
    Preamble(u32),
    #[error("packet data length {len} is over the limit of {max} bytes")]
    TooLong { len: usize, max: usize },
    #[error("CRC mismatch: the packet says {said:#06x}, its data gives {computed:#06x}")]
    Crc { said: u32, computed: u16 },
    #[error("codec {0:#04x} is not Codec 8 (0x08) or Codec 8 Extended (0x8e)")]
    Codec(u8),
    #[error("record counts differ: {first} at the start, {last} at the end")]
    Counts { first: u8, last: u8 },
    #[error("Codec 12 message type {0:#04x} from a tracker; it sends responses (0x06)")]
    Codec12Type(u8),
    #[error("the data ends inside {0}")]
    Truncated(&'static str),
    #[error("{0} bytes left over after the last record")]
    Trailing(usize),
}

/// A GNSS element as the device sent it, in the units of the documentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gps {
    pub lon: f64,
    pub lat: f64,
    pub altitude_m: i16,
    pub angle_deg: u16,
    pub satellites: u8,
    pub speed_kmh: u16,
}

/// One AVL record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub timestamp_ms: u64,
    pub priority: u8,
    pub gps: Gps,
    /// The IO element that caused the record (0: periodic).
    pub event_io: u16,
    /// Fixed-size IO values, by IO id, in packet order.
    pub io: Vec<(u16, u64)>,
    /// Variable-length IO values (Codec 8E only).
    pub io_bytes: Vec<(u16, Vec<u8>)>,
}

/// One AVL data packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub codec: u8,
    pub records: Vec<Record>,
    /// Codec 12: the tracker's response to a command (no records then).
    pub response: Option<String>,
}

/// The IMEI of a complete handshake at the start of `buf`, and the bytes it took; `Ok(None)`
/// until it is complete.
pub fn imei(buf: &[u8]) -> Result<Option<(String, usize)>, CodecError> {
    let Some(len) = buf.get(..2) else {
        return Ok(None);
    };
    let len = u16::from_be_bytes([len[0], len[1]]);
    if len != 15 {
        return Err(CodecError::ImeiLength(len));
    }
    let Some(digits) = buf.get(2..17) else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(digits).into_owned();
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(CodecError::ImeiDigits(text));
    }
    Ok(Some((text, 17)))
}

/// The packet at the start of `buf`, and the bytes it took; `Ok(None)` until it is complete.
/// A packet whose data is over `max_len` bytes is refused from its header.
pub fn packet(buf: &[u8], max_len: usize) -> Result<Option<(Packet, usize)>, CodecError> {
    let Some(header) = buf.get(..8) else {
        return Ok(None);
    };
    let preamble = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if preamble != 0 {
        return Err(CodecError::Preamble(preamble));
    }
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if len > max_len {
        return Err(CodecError::TooLong { len, max: max_len });
    }
    let total = 8 + len + 4;
    let Some(whole) = buf.get(..total) else {
        return Ok(None);
    };
    let data = &whole[8..8 + len];
    let said = u32::from_be_bytes([
        whole[total - 4],
        whole[total - 3],
        whole[total - 2],
        whole[total - 1],
    ]);
    let computed = crc16(data);
    if said != u32::from(computed) {
        return Err(CodecError::Crc { said, computed });
    }
    Ok(Some((parse_data(data)?, total)))
}

fn parse_data(data: &[u8]) -> Result<Packet, CodecError> {
    let mut r = Reader { data, at: 0 };
    let codec = r.u8("the codec id")?;
    let extended = match codec {
        CODEC_8 => false,
        CODEC_8E => true,
        CODEC_12 => return response(&mut r, data.len()),
        other => return Err(CodecError::Codec(other)),
    };
    let first = r.u8("the record count")?;
    let mut records = Vec::with_capacity(usize::from(first).min(data.len() / 24));
    for _ in 0..first {
        records.push(record(&mut r, extended)?);
    }
    let last = r.u8("the closing record count")?;
    if first != last {
        return Err(CodecError::Counts { first, last });
    }
    if r.at != data.len() {
        return Err(CodecError::Trailing(data.len() - r.at));
    }
    Ok(Packet {
        codec,
        records,
        response: None,
    })
}

/// A Codec 12 response, after its codec id.
fn response(r: &mut Reader, len: usize) -> Result<Packet, CodecError> {
    let first = r.u8("the response count")?;
    let kind = r.u8("the message type")?;
    if kind != RESPONSE {
        return Err(CodecError::Codec12Type(kind));
    }
    let size = r.uint(4, "the response size")? as usize;
    let text = String::from_utf8_lossy(r.bytes(size, "the response text")?).into_owned();
    let last = r.u8("the closing response count")?;
    if first != last {
        return Err(CodecError::Counts { first, last });
    }
    if r.at != len {
        return Err(CodecError::Trailing(len - r.at));
    }
    Ok(Packet {
        codec: CODEC_12,
        records: Vec::new(),
        response: Some(text),
    })
}

/// A Codec 12 command packet carrying `text`, as the server sends it (at most
/// [`MAX_COMMAND_BYTES`] of it).
pub fn command(text: &str) -> Vec<u8> {
    let text = &text.as_bytes()[..text.len().min(MAX_COMMAND_BYTES)];
    let mut data = Vec::with_capacity(text.len() + 8);
    data.extend_from_slice(&[CODEC_12, 1, COMMAND]);
    data.extend_from_slice(&(text.len() as u32).to_be_bytes());
    data.extend_from_slice(text);
    data.push(1);
    let mut out = Vec::with_capacity(data.len() + 12);
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(&data);
    out.extend_from_slice(&u32::from(crc16(&data)).to_be_bytes());
    out
}

fn record(r: &mut Reader, extended: bool) -> Result<Record, CodecError> {
    let timestamp_ms = r.uint(8, "a record's timestamp")?;
    let priority = r.u8("a record's priority")?;
    let lon = r.uint(4, "the GPS element")? as u32 as i32;
    let lat = r.uint(4, "the GPS element")? as u32 as i32;
    let gps = Gps {
        lon: f64::from(lon) / 1e7,
        lat: f64::from(lat) / 1e7,
        altitude_m: r.uint(2, "the GPS element")? as u16 as i16,
        angle_deg: r.uint(2, "the GPS element")? as u16,
        satellites: r.u8("the GPS element")?,
        speed_kmh: r.uint(2, "the GPS element")? as u16,
    };
    let width = if extended { 2 } else { 1 };
    let event_io = r.uint(width, "the IO element")? as u16;
    let _total = r.uint(width, "the IO element")?;
    let mut io = Vec::new();
    for size in [1, 2, 4, 8] {
        let n = r.uint(width, "the IO element")?;
        for _ in 0..n {
            let id = r.uint(width, "an IO value")? as u16;
            io.push((id, r.uint(size, "an IO value")?));
        }
    }
    let mut io_bytes = Vec::new();
    if extended {
        let n = r.uint(2, "the variable-length IO values")?;
        for _ in 0..n {
            let id = r.uint(2, "a variable-length IO value")? as u16;
            let len = r.uint(2, "a variable-length IO value")? as usize;
            io_bytes.push((id, r.bytes(len, "a variable-length IO value")?.to_vec()));
        }
    }
    Ok(Record {
        timestamp_ms,
        priority,
        gps,
        event_io,
        io,
        io_bytes,
    })
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
        let end = self.at.checked_add(n).ok_or(CodecError::Truncated(what))?;
        let out = self
            .data
            .get(self.at..end)
            .ok_or(CodecError::Truncated(what))?;
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        Ok(self.bytes(1, what)?[0])
    }

    /// A big-endian unsigned integer of `n` (at most 8) bytes.
    fn uint(&mut self, n: usize, what: &'static str) -> Result<u64, CodecError> {
        Ok(self
            .bytes(n, what)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }
}

/// CRC-16/ARC (the documentation's CRC-16/IBM): reflected polynomial 0xA001, initial 0.
pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |mut crc, byte| {
        crc ^= u16::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
        crc
    })
}

/// The server's answer to a packet: how many records it accepted.
pub fn accepted(records: usize) -> [u8; 4] {
    (records as u32).to_be_bytes()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Codec 8, first example of Teltonika's "Codec 8" documentation: one record, no fix,
    /// IO 21 = 3, IO 1 = 1, IO 66 = 0x5E0F, IO 241 = 0x601A, IO 78 = 0.
    pub const CODEC8_EXAMPLE: &str = "000000000000003608010000016B40D8EA30010000000000000000000000000000000105021503010101425E0F01F10000601A014E0000000000000000010000C7CF";
    /// Codec 8 Extended, the documentation's example: IO ids and counts on two bytes.
    pub const CODEC8E_EXAMPLE: &str = "000000000000004A8E010000016B412CEE000100000000000000000000000000000000010005000100010100010011001D00010010015E2C880002000B000000003544C87A000E000000001DD7E06A00000100002994";

    #[test]
    fn the_documented_codec_8_example_decodes() {
        let bytes = hex(CODEC8_EXAMPLE);
        let (p, used) = packet(&bytes, 1 << 16).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(p.codec, CODEC_8);
        assert_eq!(p.records.len(), 1);
        let r = &p.records[0];
        assert_eq!(r.timestamp_ms, 0x0000_016B_40D8_EA30);
        assert_eq!(r.priority, 1);
        assert_eq!(r.gps.satellites, 0);
        assert_eq!(r.event_io, 1);
        assert_eq!(
            r.io,
            [(21, 3), (1, 1), (66, 0x5E0F), (241, 0x601A), (78, 0)]
        );
        assert_eq!(accepted(p.records.len()), [0, 0, 0, 1]);
    }

    #[test]
    fn the_documented_codec_8_extended_example_decodes() {
        let bytes = hex(CODEC8E_EXAMPLE);
        let (p, _) = packet(&bytes, 1 << 16).unwrap().unwrap();
        assert_eq!(p.codec, CODEC_8E);
        let r = &p.records[0];
        assert_eq!(r.timestamp_ms, 0x0000_016B_412C_EE00);
        assert_eq!(
            r.io,
            [
                (1, 1),
                (0x11, 0x1D),
                (0x10, 0x015E_2C88),
                (0x0B, 0x3544_C87A),
                (0x0E, 0x1DD7_E06A)
            ]
        );
        assert!(r.io_bytes.is_empty());
    }

    #[test]
    fn the_handshake_is_two_length_bytes_and_fifteen_digits() {
        let mut bytes = vec![0x00, 0x0F];
        bytes.extend_from_slice(b"356307042441013");
        assert_eq!(imei(&bytes[..10]), Ok(None));
        assert_eq!(imei(&bytes), Ok(Some(("356307042441013".into(), 17))));
        assert_eq!(imei(&[0x00, 0x10]), Err(CodecError::ImeiLength(16)));
        let mut bad = vec![0x00, 0x0F];
        bad.extend_from_slice(b"35630704244101x");
        assert!(matches!(imei(&bad), Err(CodecError::ImeiDigits(_))));
    }

    #[test]
    fn damaged_and_truncated_packets_say_what_is_wrong() {
        let good = hex(CODEC8_EXAMPLE);
        for cut in 0..good.len() {
            assert_eq!(
                packet(&good[..cut], 1 << 16),
                Ok(None),
                "a prefix of {cut} bytes"
            );
        }
        let mut flipped = good.clone();
        flipped[20] ^= 0x01;
        assert!(matches!(
            packet(&flipped, 1 << 16),
            Err(CodecError::Crc { .. })
        ));
        assert_eq!(
            packet(&good, 16),
            Err(CodecError::TooLong { len: 0x36, max: 16 })
        );
        let mut preamble = good.clone();
        preamble[0] = 1;
        assert!(matches!(
            packet(&preamble, 1 << 16),
            Err(CodecError::Preamble(_))
        ));
        // A record count of 2 where one record follows: the data ends inside the second.
        let mut data = good[8..good.len() - 4].to_vec();
        data[1] = 2;
        *data.last_mut().unwrap() = 2;
        let framed = frame(&data);
        assert_eq!(
            packet(&framed, 1 << 16),
            Err(CodecError::Truncated("a record's timestamp"))
        );
        let mut data = good[8..good.len() - 4].to_vec();
        data[0] = 0x0D;
        assert_eq!(packet(&frame(&data), 1 << 16), Err(CodecError::Codec(0x0D)));
    }

    /// Wraps codec-id-to-count bytes in preamble, length and CRC.
    pub fn frame(data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 0, 0];
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(&u32::from(crc16(data)).to_be_bytes());
        out
    }

    /// A test record: timestamp ms, lat, lon, satellites, speed km/h, IO 1-byte values.
    pub type TestRecord = (u64, f64, f64, u8, u16, Vec<(u8, u8)>);

    /// A Codec 8 packet of `records`, as a device would send it.
    pub fn codec8(records: &[TestRecord]) -> Vec<u8> {
        let mut d = vec![CODEC_8, records.len() as u8];
        for (ts, lat, lon, sats, speed, io) in records {
            d.extend_from_slice(&ts.to_be_bytes());
            d.push(0);
            d.extend_from_slice(&((lon * 1e7).round() as i32).to_be_bytes());
            d.extend_from_slice(&((lat * 1e7).round() as i32).to_be_bytes());
            d.extend_from_slice(&120i16.to_be_bytes());
            d.extend_from_slice(&90u16.to_be_bytes());
            d.push(*sats);
            d.extend_from_slice(&speed.to_be_bytes());
            d.extend_from_slice(&[0, io.len() as u8, io.len() as u8]);
            for (id, v) in io {
                d.extend_from_slice(&[*id, *v]);
            }
            d.extend_from_slice(&[0, 0, 0]);
        }
        d.push(records.len() as u8);
        frame(&d)
    }

    #[test]
    fn codec_12_matches_the_documented_example_and_reads_a_response() {
        // Teltonika's documentation: "getinfo" as a Codec 12 command.
        let expected = "000000000000000F0C010500000007676574696E666F0100004312";
        let hex: String = command("getinfo")
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert_eq!(hex, expected);
        let mut data = vec![CODEC_12, 1, RESPONSE];
        data.extend_from_slice(&7u32.to_be_bytes());
        data.extend_from_slice(b"DOUT1:1");
        data.push(1);
        let (p, used) = packet(&frame(&data), 1 << 16).unwrap().unwrap();
        assert_eq!(used, data.len() + 12);
        assert_eq!(p.response.as_deref(), Some("DOUT1:1"));
        assert!(p.records.is_empty());
        data[2] = COMMAND;
        assert_eq!(
            packet(&frame(&data), 1 << 16),
            Err(CodecError::Codec12Type(COMMAND))
        );
        data[2] = RESPONSE;
        data[6] = 200;
        assert!(matches!(
            packet(&frame(&data), 1 << 16),
            Err(CodecError::Truncated(_))
        ));
    }

    #[test]
    fn a_packet_built_like_a_device_round_trips() {
        let bytes = codec8(&[(1_700_000_000_000, 52.5163, 13.3777, 9, 54, vec![(239, 1)])]);
        let (p, _) = packet(&bytes, 1 << 16).unwrap().unwrap();
        let g = p.records[0].gps;
        assert_eq!(
            (g.lat, g.lon, g.satellites, g.speed_kmh),
            (52.5163, 13.3777, 9, 54)
        );
        assert_eq!(p.records[0].io, [(239, 1)]);
    }
}
