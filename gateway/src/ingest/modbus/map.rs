//! A device's register map: what each configured value is, the fewest requests that read them
//! all, and turning what those requests returned into numbers.
//!
//! # Invariants
//! - **Fewest requests.** Values of one table whose registers touch or overlap are read by one
//!   request, up to the protocol's limit per request ([`MAX_REGISTERS`] registers,
//!   [`MAX_BITS`] coils or discrete inputs). Registers between two values are never read to
//!   join them: a device may answer an address it does not have with an exception, failing the
//!   whole poll.
//! - **Exact decoding.** A multi-register value is its registers put in `word_order`, each
//!   register's two bytes in `byte_order`, read as one big-endian number of its type:
//!   `big`/`big` is the Modbus convention (ABCD), `word_order = "little"` the common CDAB,
//!   `byte_order = "little"` BADC, both DCBA. The result is `raw * scale + offset`, an `f64`:
//!   64-bit integers above 2^53 lose their lowest bits, as every f64 does.
//! - **A value is read or the poll fails.** [`decode`] takes every request's answer; a missing or
//!   short answer is an error, never a zero.

use std::fmt;

/// The most registers one read request may ask for (Modbus application protocol, 6.3 and 6.4).
pub const MAX_REGISTERS: u16 = 125;
/// The most coils or discrete inputs one read request may ask for (6.1 and 6.2).
pub const MAX_BITS: u16 = 2000;

/// The four Modbus data tables a value can be read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Coil,
    Discrete,
    Holding,
    Input,
}

impl Table {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "coil" => Self::Coil,
            "discrete" => Self::Discrete,
            "holding" => Self::Holding,
            "input" => Self::Input,
            _ => return None,
        })
    }

    /// Whether the table holds bits (coils, discrete inputs) rather than 16-bit registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Self::Coil | Self::Discrete)
    }

    fn limit(self) -> u16 {
        if self.is_bits() {
            MAX_BITS
        } else {
            MAX_REGISTERS
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Coil => "coil",
            Self::Discrete => "discrete",
            Self::Holding => "holding",
            Self::Input => "input",
        })
    }
}

/// A value's type, as the device stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "bool" => Self::Bool,
            "u16" => Self::U16,
            "i16" => Self::I16,
            "u32" => Self::U32,
            "i32" => Self::I32,
            "u64" => Self::U64,
            "i64" => Self::I64,
            "f32" => Self::F32,
            "f64" => Self::F64,
            _ => return None,
        })
    }

    /// How many registers (or bits, for `Bool` in a bit table) it takes.
    pub fn width(self) -> u16 {
        match self {
            Self::Bool | Self::U16 | Self::I16 => 1,
            Self::U32 | Self::I32 | Self::F32 => 2,
            Self::U64 | Self::I64 | Self::F64 => 4,
        }
    }
}

/// The order of bytes within a register, or of registers within a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Big,
    Little,
}

impl Order {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "big" => Some(Self::Big),
            "little" => Some(Self::Little),
            _ => None,
        }
    }
}

/// One configured value.
#[derive(Debug, Clone, PartialEq)]
pub struct Register {
    /// The name the value has in the event.
    pub name: String,
    pub table: Table,
    /// The first register's (or the bit's) address, 0-based as on the wire.
    pub address: u16,
    pub kind: Kind,
    pub byte_order: Order,
    pub word_order: Order,
    pub scale: f64,
    pub offset: f64,
    pub unit: String,
}

impl Register {
    /// The address after its last register.
    fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.kind.width())
    }
}

/// One read request: `count` registers or bits of `table` from `address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    pub table: Table,
    pub address: u16,
    pub count: u16,
}

/// What one read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

/// The fewest reads that cover `registers` (see the module's invariants), in table and address
/// order.
pub fn plan(registers: &[Register]) -> Vec<Read> {
    let mut spans: Vec<(Table, u32, u32)> = registers
        .iter()
        .map(|r| (r.table, u32::from(r.address), r.end()))
        .collect();
    spans.sort_unstable();
    let mut reads: Vec<Read> = Vec::new();
    let mut current: Option<(Table, u32, u32)> = None;
    for (table, start, end) in spans {
        if let Some((t, s, e)) = current.as_mut() {
            let joined_end = end.max(*e);
            if *t == table && start <= *e && joined_end - *s <= u32::from(table.limit()) {
                *e = joined_end;
                continue;
            }
        }
        if let Some(done) = current.replace((table, start, end)) {
            reads.push(read(done));
        }
    }
    reads.extend(current.map(read));
    reads
}

fn read((table, start, end): (Table, u32, u32)) -> Read {
    // Addresses and widths were checked at validation: a value ends by 65536, a span is at most
    // the table's limit.
    Read {
        table,
        address: u16::try_from(start).unwrap_or(u16::MAX),
        count: u16::try_from(end - start).unwrap_or(u16::MAX),
    }
}

/// Why a poll's answers could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

/// Each register's value, in `registers`' order, from the answers to `reads` (what [`plan`]
/// gave, in its order).
pub fn decode(
    registers: &[Register],
    reads: &[Read],
    answers: &[Answer],
) -> Result<Vec<f64>, DecodeError> {
    if answers.len() != reads.len() {
        return Err(DecodeError(format!(
            "{} answers to {} reads",
            answers.len(),
            reads.len()
        )));
    }
    registers
        .iter()
        .map(|r| {
            let (read, answer) = reads
                .iter()
                .zip(answers)
                .find(|(q, _)| {
                    q.table == r.table
                        && q.address <= r.address
                        && r.end() <= u32::from(q.address) + u32::from(q.count)
                })
                .ok_or_else(|| DecodeError(format!("no read covers {}", r.name)))?;
            let at = usize::from(r.address - read.address);
            let width = usize::from(r.kind.width());
            let raw = match answer {
                Answer::Bits(bits) => match bits.get(at) {
                    Some(b) => f64::from(u8::from(*b)),
                    None => return Err(short(r, bits.len(), read)),
                },
                Answer::Words(words) => match words.get(at..at + width) {
                    Some(words) => number(r, words),
                    None => return Err(short(r, words.len(), read)),
                },
            };
            Ok(raw * r.scale + r.offset)
        })
        .collect()
}

fn short(r: &Register, got: usize, read: &Read) -> DecodeError {
    DecodeError(format!(
        "{} {} from {}: the device answered {got} of {} (value {})",
        read.count, read.table, read.address, read.count, r.name
    ))
}

/// The number `words` hold, as `r` says to read them.
fn number(r: &Register, words: &[u16]) -> f64 {
    let mut bytes = [0u8; 8];
    let n = words.len();
    for (i, w) in words.iter().enumerate() {
        let slot = match r.word_order {
            Order::Big => i,
            Order::Little => n - 1 - i,
        };
        let pair = match r.byte_order {
            Order::Big => w.to_be_bytes(),
            Order::Little => w.to_le_bytes(),
        };
        bytes[slot * 2..slot * 2 + 2].copy_from_slice(&pair);
    }
    let b2 = [bytes[0], bytes[1]];
    let b4 = [bytes[0], bytes[1], bytes[2], bytes[3]];
    match r.kind {
        Kind::Bool => f64::from(u8::from(u16::from_be_bytes(b2) != 0)),
        Kind::U16 => f64::from(u16::from_be_bytes(b2)),
        Kind::I16 => f64::from(i16::from_be_bytes(b2)),
        Kind::U32 => f64::from(u32::from_be_bytes(b4)),
        Kind::I32 => f64::from(i32::from_be_bytes(b4)),
        Kind::F32 => f64::from(f32::from_be_bytes(b4)),
        // Above 2^53 an f64 keeps the nearest value it can (see the module's invariants).
        Kind::U64 => u64::from_be_bytes(bytes) as f64,
        Kind::I64 => i64::from_be_bytes(bytes) as f64,
        Kind::F64 => f64::from_be_bytes(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(name: &str, table: Table, address: u16, kind: Kind) -> Register {
        Register {
            name: name.into(),
            table,
            address,
            kind,
            byte_order: Order::Big,
            word_order: Order::Big,
            scale: 1.0,
            offset: 0.0,
            unit: String::new(),
        }
    }

    #[test]
    fn touching_and_overlapping_values_share_a_read_gaps_do_not() {
        let regs = [
            reg("a", Table::Holding, 0, Kind::U16),
            reg("b", Table::Holding, 1, Kind::F32),
            reg("c", Table::Holding, 2, Kind::U16),
            reg("d", Table::Holding, 10, Kind::U16),
            reg("e", Table::Input, 0, Kind::U16),
            reg("f", Table::Coil, 3, Kind::Bool),
            reg("g", Table::Coil, 4, Kind::Bool),
        ];
        let reads = plan(&regs);
        let q = |table, address, count| Read {
            table,
            address,
            count,
        };
        assert_eq!(
            reads,
            vec![
                q(Table::Coil, 3, 2),
                q(Table::Holding, 0, 3),
                q(Table::Holding, 10, 1),
                q(Table::Input, 0, 1),
            ]
        );
    }

    #[test]
    fn a_read_asks_for_at_most_125_registers() {
        let regs: Vec<Register> = (0..100)
            .map(|i| reg(&format!("v{i}"), Table::Holding, i * 2, Kind::U32))
            .collect();
        let reads = plan(&regs);
        assert_eq!(reads.len(), 2);
        assert!(reads.iter().all(|r| r.count <= MAX_REGISTERS));
        assert_eq!(reads.iter().map(|r| u32::from(r.count)).sum::<u32>(), 200);
        // 125 would split a u32: the first read stops at 124.
        assert_eq!(reads[0].count, 124);
    }

    #[test]
    fn each_byte_and_word_order_reads_the_same_number() {
        // 0x11223344 as the device stores it in each of the four orders.
        for (byte_order, word_order, words) in [
            (Order::Big, Order::Big, [0x1122, 0x3344]),
            (Order::Big, Order::Little, [0x3344, 0x1122]),
            (Order::Little, Order::Big, [0x2211, 0x4433]),
            (Order::Little, Order::Little, [0x4433, 0x2211]),
        ] {
            let r = Register {
                byte_order,
                word_order,
                ..reg("x", Table::Holding, 0, Kind::U32)
            };
            assert_eq!(number(&r, &words), f64::from(0x1122_3344u32));
        }
        let f = Register {
            word_order: Order::Little,
            ..reg("f", Table::Holding, 0, Kind::F64)
        };
        let bits = (-1234.5678f64).to_bits();
        let w = |i: u32| (bits >> (16 * i)) as u16;
        assert_eq!(number(&f, &[w(0), w(1), w(2), w(3)]), -1234.5678);
    }

    #[test]
    fn signed_types_scale_and_offset() {
        let r = Register {
            scale: 0.1,
            offset: -40.0,
            ..reg("t", Table::Input, 5, Kind::I16)
        };
        let reads = plan(std::slice::from_ref(&r));
        let answer = Answer::Words(vec![(-25i16) as u16]);
        let v = decode(&[r], &reads, &[answer]).unwrap();
        assert!((v[0] - (-42.5)).abs() < 1e-9, "{v:?}");
    }

    #[test]
    fn a_short_answer_is_an_error_not_a_zero() {
        let regs = [reg("a", Table::Holding, 0, Kind::U32)];
        let reads = plan(&regs);
        let error = decode(&regs, &reads, &[Answer::Words(vec![1])]).unwrap_err();
        assert!(error.to_string().contains("answered 1 of 2"), "{error}");
        assert!(decode(&regs, &reads, &[]).is_err());
    }
}
