//! Simulated chips behind the real driver code: a BME280 register map on a fake I2C bus and a
//! GNSS receiver that emits NMEA on a fake UART. `bus = "sim"` in `config/node.toml` uses them.

use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};

use crate::bme280::reg;

/// A BME280 at `address` that answers like the real chip, with readings that drift slowly
/// around 25 °C, 1006 hPa and 57 %RH.
pub struct SimBme280 {
    address: u8,
    pointer: u8,
    ticks: u32,
}

impl SimBme280 {
    pub fn new(address: u8) -> Self {
        Self {
            address,
            pointer: 0,
            ticks: 0,
        }
    }

    /// The datasheet's worked calibration (see the driver's tests).
    fn calibration(register: u8) -> u8 {
        const LOW: [u8; 26] = [
            0x70, 0x6b, 0x43, 0x67, 0x18, 0xfc, 0x7d, 0x8e, 0x43, 0xd6, 0xd0, 0x0b, 0x27, 0x0b,
            0x8c, 0x00, 0xf9, 0xff, 0x8c, 0x3c, 0xf8, 0xc6, 0x70, 0x17, 0x00, 0x4b,
        ];
        const HIGH: [u8; 7] = [0x6a, 0x01, 0x00, 0x14, 0x24, 0x03, 0x1e];
        match register {
            0x88..=0xa1 => LOW[usize::from(register - 0x88)],
            0xe1..=0xe7 => HIGH[usize::from(register - 0xe1)],
            _ => 0,
        }
    }

    fn register(&self, register: u8) -> u8 {
        let wobble = (self.ticks % 64) as i32 * 8;
        let adc_t = 519_888 + wobble;
        let adc_p = 415_148 - wobble;
        let adc_h = 31_003 + wobble;
        match register {
            reg::CHIP_ID => crate::bme280::CHIP_ID,
            reg::STATUS => 0,
            0xf7 => (adc_p >> 12) as u8,
            0xf8 => (adc_p >> 4) as u8,
            0xf9 => ((adc_p & 0xf) << 4) as u8,
            0xfa => (adc_t >> 12) as u8,
            0xfb => (adc_t >> 4) as u8,
            0xfc => ((adc_t & 0xf) << 4) as u8,
            0xfd => (adc_h >> 8) as u8,
            0xfe => adc_h as u8,
            r => Self::calibration(r),
        }
    }
}

impl ErrorType for SimBme280 {
    type Error = ErrorKind;
}

impl I2c for SimBme280 {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), ErrorKind> {
        if address != self.address {
            return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
        }
        for op in operations {
            match op {
                Operation::Write(bytes) => {
                    if let Some(&r) = bytes.first() {
                        self.pointer = r;
                    }
                    if bytes.first() == Some(&reg::DATA) || bytes.first() == Some(&reg::CTRL_MEAS) {
                        self.ticks = self.ticks.wrapping_add(1);
                    }
                }
                Operation::Read(buf) => {
                    for b in buf.iter_mut() {
                        *b = self.register(self.pointer);
                        self.pointer = self.pointer.wrapping_add(1);
                    }
                }
            }
        }
        Ok(())
    }
}

/// A GNSS receiver driving a loop around Berlin, one GGA and one RMC per read burst.
pub struct SimGnss {
    pending: Vec<u8>,
    at: usize,
    step: u32,
    quiet: bool,
}

impl Default for SimGnss {
    fn default() -> Self {
        Self::new()
    }
}

impl SimGnss {
    pub fn new() -> Self {
        Self {
            pending: Vec::new(),
            at: 0,
            step: 0,
            quiet: false,
        }
    }

    fn next_burst(&mut self) {
        let angle = f64::from(self.step) / 60.0;
        self.step += 1;
        let lat = 52.52 + 0.01 * angle.sin();
        let lon = 13.405 + 0.015 * angle.cos();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (h, m, s) = ((now / 3600) % 24, (now / 60) % 60, now % 60);
        let days = now / 86_400;
        let (y, mo, d) = civil_from_days(days as i64);
        let lat_s = format!("{:02}{:07.4}", lat.trunc(), lat.fract() * 60.0);
        let lon_s = format!("{:03}{:07.4}", lon.trunc(), lon.fract() * 60.0);
        let gga =
            format!("GPGGA,{h:02}{m:02}{s:02}.00,{lat_s},N,{lon_s},E,1,09,0.9,34.0,M,39.7,M,,");
        let rmc = format!(
            "GPRMC,{h:02}{m:02}{s:02}.00,A,{lat_s},N,{lon_s},E,23.3,{:.1},{d:02}{mo:02}{:02},,,A",
            (angle.to_degrees() + 90.0).rem_euclid(360.0),
            y % 100
        );
        self.pending.clear();
        for body in [gga, rmc] {
            let sum = body.bytes().fold(0u8, |a, b| a ^ b);
            self.pending
                .extend_from_slice(format!("${body}*{sum:02X}\r\n").as_bytes());
        }
        self.at = 0;
    }
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl embedded_hal_nb::serial::ErrorType for SimGnss {
    type Error = embedded_hal_nb::serial::ErrorKind;
}

impl embedded_hal_nb::serial::Read<u8> for SimGnss {
    fn read(&mut self) -> nb::Result<u8, Self::Error> {
        if self.at >= self.pending.len() {
            // One burst per poll: a WouldBlock between bursts, as a real UART at 9600 baud.
            self.quiet = !self.quiet;
            if self.quiet {
                return Err(nb::Error::WouldBlock);
            }
            self.next_burst();
        }
        let b = self.pending[self.at];
        self.at += 1;
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_driver_reads_the_simulated_bme280() {
        let mut delay = linux_embedded_hal::Delay;
        let mut sensor = crate::bme280::Bme280::new(SimBme280::new(0x76), 0x76, &mut delay)
            .map_err(|(e, _)| e)
            .unwrap();
        let m = sensor.measure_forced(&mut delay).unwrap();
        assert!((20.0..30.0).contains(&m.temperature_c()));
        assert!((900.0..1100.0).contains(&m.pressure_hpa()));
    }

    #[test]
    fn the_real_parser_reads_the_simulated_receiver() {
        let mut gnss = crate::gnss::Gnss::new(SimGnss::new());
        let _ = gnss.poll();
        while let Ok(Some(_)) = gnss.poll() {}
        let p = gnss.fix().position().expect("a fix");
        assert!((p.lat - 52.52).abs() < 0.02 && (p.lon - 13.405).abs() < 0.02);
        assert!(gnss.fix().time_ms().is_some());
    }
}
