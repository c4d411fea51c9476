//! A GNSS receiver on a UART: reads bytes, assembles NMEA lines, keeps the latest fix.
//!
//! Generic over `embedded_hal_nb::serial::Read<u8>`. [`Gnss::poll`] reads whatever bytes are
//! available without blocking and returns after each complete sentence. Lines longer than NMEA's
//! 82 characters are discarded, not overflowed. The receiver's bus is owned (`new`, `release`).

use embedded_hal_nb::serial::Read;

use crate::nmea::{self, Fix, NmeaError, Sentence};

/// NMEA's longest sentence is 82 characters including `$` and CR LF.
const LINE: usize = 96;

/// Errors from [`Gnss::poll`], generic over the UART error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    Uart(E),
    /// A complete line that is not a usable sentence.
    Nmea(NmeaError),
    /// A line longer than NMEA allows was dropped.
    Overlong,
}

pub struct Gnss<S> {
    uart: S,
    line: [u8; LINE],
    len: usize,
    overlong: bool,
    fix: Fix,
}

impl<S: Read<u8>> Gnss<S> {
    pub fn new(uart: S) -> Self {
        Self {
            uart,
            line: [0; LINE],
            len: 0,
            overlong: false,
            fix: Fix::default(),
        }
    }

    pub fn release(self) -> S {
        self.uart
    }

    /// The latest fix, merged from GGA and RMC.
    pub fn fix(&self) -> &Fix {
        &self.fix
    }

    /// Reads available bytes. `Ok(Some(_))` after a sentence that updated the fix, `Ok(None)`
    /// when no more bytes are available, `Err` for a bad line (the next call goes on).
    pub fn poll(&mut self) -> Result<Option<Sentence>, Error<S::Error>> {
        loop {
            let byte = match self.uart.read() {
                Ok(b) => b,
                Err(nb::Error::WouldBlock) => return Ok(None),
                Err(nb::Error::Other(e)) => return Err(Error::Uart(e)),
            };
            match byte {
                b'$' => {
                    self.line[0] = b'$';
                    self.len = 1;
                    self.overlong = false;
                }
                b'\n' => {
                    let len = core::mem::take(&mut self.len);
                    if core::mem::take(&mut self.overlong) {
                        return Err(Error::Overlong);
                    }
                    if len == 0 {
                        continue;
                    }
                    let text = core::str::from_utf8(&self.line[..len])
                        .map_err(|_| Error::Nmea(NmeaError::Framing))?;
                    let sentence = nmea::parse(text).map_err(Error::Nmea)?;
                    self.fix.update(sentence);
                    return Ok(Some(sentence));
                }
                _ if self.len == 0 => {} // noise before the first '$'
                _ if self.len < LINE => {
                    self.line[self.len] = byte;
                    self.len += 1;
                }
                _ => self.overlong = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use embedded_hal_mock::eh1::serial::{Mock, Transaction};

    use super::*;

    #[test]
    fn sentences_are_assembled_from_the_uart_and_update_the_fix() {
        let bytes = b"noise$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n\
$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n";
        let mut uart = Mock::new(&[
            Transaction::read_many(bytes),
            Transaction::read_error(nb::Error::WouldBlock),
        ]);
        let mut gnss = Gnss::new(uart.clone());
        assert!(matches!(gnss.poll(), Ok(Some(Sentence::Gga(_)))));
        assert!(matches!(gnss.poll(), Ok(Some(Sentence::Rmc(_)))));
        assert_eq!(gnss.poll(), Ok(None));
        assert_eq!(gnss.fix().time_ms(), Some(764_426_119_000));
        gnss.release();
        uart.done();
    }

    #[test]
    fn a_bad_line_is_reported_and_the_next_one_still_parses() {
        let bytes = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*00\r\n\
$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n";
        let mut uart = Mock::new(&[Transaction::read_many(bytes)]);
        let mut gnss = Gnss::new(uart.clone());
        assert!(matches!(
            gnss.poll(),
            Err(Error::Nmea(NmeaError::Checksum { .. }))
        ));
        assert!(matches!(gnss.poll(), Ok(Some(Sentence::Rmc(_)))));
        gnss.release();
        uart.done();
    }

    #[test]
    fn an_overlong_line_is_dropped_not_overflowed() {
        let mut bytes = [b'A'; 200];
        bytes[0] = b'$';
        bytes[199] = b'\n';
        let mut uart = Mock::new(&[Transaction::read_many(bytes)]);
        let mut gnss = Gnss::new(uart.clone());
        assert_eq!(gnss.poll(), Err(Error::Overlong));
        gnss.release();
        uart.done();
    }
}
