//! NMEA 0183 sentences from a GNSS receiver: GGA (fix, satellites, HDOP, altitude) and RMC
//! (validity, speed, course, date), with checksum validation. No heap, no panics.
//!
//! [`parse`] turns one sentence (`$GPGGA,...*47`, with or without the line ending) into a
//! [`Sentence`]; [`Fix`] merges the latest GGA and RMC into what Tributary's `Position` needs.
//! Any talker id is accepted (GP, GN, GL, GA, BD, ...).

use core::fmt;

/// Why a sentence was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NmeaError {
    /// No leading `$`, or no `*HH` checksum.
    Framing,
    /// The checksum does not match; `expected` is what the sentence says.
    Checksum { expected: u8, computed: u8 },
    /// A sentence type other than GGA or RMC.
    Unsupported,
    /// Field `index` is missing or not a number.
    Field { index: usize },
    /// The sentence is valid but the receiver has no fix.
    NoFix,
}

impl fmt::Display for NmeaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Framing => write!(f, "not an NMEA sentence ($...*HH)"),
            Self::Checksum { expected, computed } => write!(
                f,
                "bad NMEA checksum: sentence says {expected:02X}, computed {computed:02X}"
            ),
            Self::Unsupported => write!(f, "unsupported NMEA sentence (only GGA and RMC)"),
            Self::Field { index } => write!(f, "NMEA field {index} is missing or malformed"),
            Self::NoFix => write!(f, "the receiver has no fix"),
        }
    }
}

/// Time of day, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeOfDay {
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub millis: u16,
}

/// A calendar date, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

/// GGA: the fix itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gga {
    pub time: TimeOfDay,
    pub lat: f64,
    pub lon: f64,
    /// 1 GPS, 2 DGPS, 4 RTK fixed, 5 RTK float, 6 estimated.
    pub quality: u8,
    pub satellites: u8,
    pub hdop: Option<f32>,
    pub altitude_m: Option<f32>,
}

/// RMC: the recommended minimum: position, speed, course, date.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rmc {
    pub time: TimeOfDay,
    pub date: Date,
    pub lat: f64,
    pub lon: f64,
    pub speed_knots: Option<f32>,
    pub course_deg: Option<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sentence {
    Gga(Gga),
    Rmc(Rmc),
}

const MAX_FIELDS: usize = 24;

/// Parses one sentence.
pub fn parse(line: &str) -> Result<Sentence, NmeaError> {
    let line = line.trim_end_matches(['\r', '\n']);
    let body = line.strip_prefix('$').ok_or(NmeaError::Framing)?;
    let (data, sum) = body.rsplit_once('*').ok_or(NmeaError::Framing)?;
    let expected = u8::from_str_radix(sum, 16).map_err(|_| NmeaError::Framing)?;
    let computed = data.bytes().fold(0u8, |acc, b| acc ^ b);
    if expected != computed {
        return Err(NmeaError::Checksum { expected, computed });
    }
    let mut fields = [""; MAX_FIELDS];
    let mut n = 0;
    for (i, f) in data.split(',').enumerate().take(MAX_FIELDS) {
        fields[i] = f;
        n = i + 1;
    }
    let fields = &fields[..n];
    let kind = fields[0].get(2..).ok_or(NmeaError::Framing)?;
    match kind {
        "GGA" => gga(fields).map(Sentence::Gga),
        "RMC" => rmc(fields).map(Sentence::Rmc),
        _ => Err(NmeaError::Unsupported),
    }
}

fn field<'a>(fields: &[&'a str], index: usize) -> Result<&'a str, NmeaError> {
    match fields.get(index) {
        Some(f) if !f.is_empty() => Ok(f),
        _ => Err(NmeaError::Field { index }),
    }
}

fn number<T: core::str::FromStr>(fields: &[&str], index: usize) -> Result<T, NmeaError> {
    field(fields, index)?
        .parse()
        .map_err(|_| NmeaError::Field { index })
}

fn optional<T: core::str::FromStr>(fields: &[&str], index: usize) -> Option<T> {
    number(fields, index).ok()
}

fn time(fields: &[&str], index: usize) -> Result<TimeOfDay, NmeaError> {
    let t = field(fields, index)?;
    let err = NmeaError::Field { index };
    let two = |s: Option<&str>| s.and_then(|s| s.parse::<u8>().ok()).ok_or(err);
    let millis = match t.get(6..) {
        Some(frac) if frac.len() > 1 => {
            let secs: f32 = frac.parse().map_err(|_| err)?;
            (secs * 1000.0) as u16
        }
        _ => 0,
    };
    Ok(TimeOfDay {
        hour: two(t.get(0..2))?,
        minute: two(t.get(2..4))?,
        second: two(t.get(4..6))?,
        millis,
    })
}

/// `ddmm.mmmm` + hemisphere into signed degrees.
fn coordinate(fields: &[&str], index: usize, degree_digits: usize) -> Result<f64, NmeaError> {
    let raw = field(fields, index)?;
    let err = NmeaError::Field { index };
    let degrees: f64 = raw
        .get(..degree_digits)
        .ok_or(err)?
        .parse()
        .map_err(|_| err)?;
    let minutes: f64 = raw
        .get(degree_digits..)
        .ok_or(err)?
        .parse()
        .map_err(|_| err)?;
    let value = degrees + minutes / 60.0;
    match field(fields, index + 1)? {
        "N" | "E" => Ok(value),
        "S" | "W" => Ok(-value),
        _ => Err(NmeaError::Field { index: index + 1 }),
    }
}

fn gga(f: &[&str]) -> Result<Gga, NmeaError> {
    let quality: u8 = number(f, 6)?;
    if quality == 0 {
        return Err(NmeaError::NoFix);
    }
    Ok(Gga {
        time: time(f, 1)?,
        lat: coordinate(f, 2, 2)?,
        lon: coordinate(f, 4, 3)?,
        quality,
        satellites: optional(f, 7).unwrap_or(0),
        hdop: optional(f, 8),
        altitude_m: optional(f, 9),
    })
}

fn rmc(f: &[&str]) -> Result<Rmc, NmeaError> {
    if field(f, 2)? != "A" {
        return Err(NmeaError::NoFix);
    }
    let d = field(f, 9)?;
    let err = NmeaError::Field { index: 9 };
    let two = |s: Option<&str>| s.and_then(|s| s.parse::<u8>().ok()).ok_or(err);
    // Two-digit years: 80..=99 are 1980..=1999 (GPS began in 1980), the rest 2000..=2079.
    let yy = u16::from(two(d.get(4..6))?);
    let date = Date {
        day: two(d.get(0..2))?,
        month: two(d.get(2..4))?,
        year: if yy >= 80 { 1900 + yy } else { 2000 + yy },
    };
    Ok(Rmc {
        time: time(f, 1)?,
        date,
        lat: coordinate(f, 3, 2)?,
        lon: coordinate(f, 5, 3)?,
        speed_knots: optional(f, 7),
        course_deg: optional(f, 8),
    })
}

/// The latest GGA and RMC, merged.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Fix {
    pub gga: Option<Gga>,
    pub rmc: Option<Rmc>,
}

impl Fix {
    pub fn update(&mut self, sentence: Sentence) {
        match sentence {
            Sentence::Gga(g) => self.gga = Some(g),
            Sentence::Rmc(r) => self.rmc = Some(r),
        }
    }

    /// Milliseconds since the Unix epoch of the latest RMC (which has the date).
    pub fn time_ms(&self) -> Option<u64> {
        let r = self.rmc?;
        let days = days_from_civil(i64::from(r.date.year), r.date.month, r.date.day);
        let secs = days * 86_400
            + i64::from(r.time.hour) * 3600
            + i64::from(r.time.minute) * 60
            + i64::from(r.time.second);
        u64::try_from(secs * 1000 + i64::from(r.time.millis)).ok()
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u8, d: u8) -> i64 {
    let (m, d) = (i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(feature = "alloc")]
impl Fix {
    /// The fix as Tributary's `Position`: needs a GGA or RMC with a fix.
    pub fn position(&self) -> Option<tributary_protocol::Position> {
        use tributary_protocol::{FixQuality, Position};
        let (lat, lon) = match (self.gga, self.rmc) {
            (Some(g), _) => (g.lat, g.lon),
            (None, Some(r)) => (r.lat, r.lon),
            (None, None) => return None,
        };
        let fix = match self.gga.map(|g| g.quality) {
            Some(2) => FixQuality::Dgps,
            Some(4) => FixQuality::RtkFixed,
            Some(5) => FixQuality::RtkFloat,
            Some(6) => FixQuality::Estimated,
            _ => FixQuality::Gps,
        };
        Some(Position {
            lat,
            lon,
            alt_m: self.gga.and_then(|g| g.altitude_m),
            speed_mps: self.rmc.and_then(|r| r.speed_knots).map(|k| k * 0.514_444),
            heading_deg: self.rmc.and_then(|r| r.course_deg),
            hdop: self.gga.and_then(|g| g.hdop),
            satellites: self.gga.map(|g| g.satellites),
            fix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Sentences as real receivers send them (u-blox NEO-6M/M8N and the NMEA reference).
    const GGA: &str = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n";
    const RMC: &str = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A";
    const GNRMC: &str = "$GNRMC,083559.00,A,4717.11437,N,00833.91522,E,0.004,77.52,091202,,,A*49";
    const GGA_NO_FIX: &str = "$GPGGA,002153.000,,,,,0,00,,,M,,M,,*7D";
    const RMC_VOID: &str = "$GPRMC,002153.000,V,,,,,,,261124,,,N*4A";

    #[test]
    fn gga_gives_position_quality_satellites_hdop_and_altitude() {
        let Sentence::Gga(g) = parse(GGA).unwrap() else {
            panic!("GGA")
        };
        assert!((g.lat - 48.1173).abs() < 1e-4);
        assert!((g.lon - 11.516_667).abs() < 1e-4);
        assert_eq!((g.quality, g.satellites), (1, 8));
        assert_eq!(g.hdop, Some(0.9));
        assert_eq!(g.altitude_m, Some(545.4));
        assert_eq!((g.time.hour, g.time.minute, g.time.second), (12, 35, 19));
    }

    #[test]
    fn rmc_gives_date_speed_and_course_from_any_talker() {
        let Sentence::Rmc(r) = parse(GNRMC).unwrap() else {
            panic!("RMC")
        };
        assert_eq!(
            r.date,
            Date {
                year: 2002,
                month: 12,
                day: 9
            }
        );
        assert!((r.lat - 47.285_239).abs() < 1e-5);
        assert_eq!(r.course_deg, Some(77.52));
        let Sentence::Rmc(r) = parse(RMC).unwrap() else {
            panic!("RMC")
        };
        assert_eq!(r.speed_knots, Some(22.4));
    }

    #[test]
    fn a_bad_checksum_is_refused_with_both_values() {
        let bad = GGA.replace("*47", "*48");
        assert_eq!(
            parse(&bad),
            Err(NmeaError::Checksum {
                expected: 0x48,
                computed: 0x47
            })
        );
    }

    #[test]
    fn no_fix_is_its_own_error() {
        assert_eq!(parse(GGA_NO_FIX), Err(NmeaError::NoFix));
        assert_eq!(parse(RMC_VOID), Err(NmeaError::NoFix));
    }

    #[test]
    fn truncated_and_foreign_input_is_refused_without_panicking() {
        assert_eq!(parse("$GPGGA,123519,4807.0"), Err(NmeaError::Framing));
        assert_eq!(parse("GPGGA*00"), Err(NmeaError::Framing));
        assert_eq!(
            parse("$GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00*74"),
            Err(NmeaError::Unsupported)
        );
        for cut in 0..GGA.len() {
            let _ = parse(&GGA[..cut]);
        }
        let _ = parse("$*00");
        let _ = parse("$,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,*00");
    }

    #[test]
    fn a_fix_merges_gga_and_rmc_into_a_timestamped_position() {
        let mut fix = Fix::default();
        fix.update(parse(GGA).unwrap());
        fix.update(parse(RMC).unwrap());
        // 1994-03-23 12:35:19 UTC
        assert_eq!(fix.time_ms(), Some(764_426_119_000));
        #[cfg(feature = "alloc")]
        {
            let p = fix.position().unwrap();
            assert_eq!(p.satellites, Some(8));
            assert!((p.speed_mps.unwrap() - 11.523).abs() < 0.01);
            assert_eq!(p.heading_deg, Some(84.4));
        }
    }
}
