//! BME280 temperature, humidity and pressure sensor over I2C (Bosch datasheet BST-BME280-DS002).
//!
//! The driver owns its bus ([`Bme280::new`], [`Bme280::release`]), checks the chip id, soft-resets
//! the chip, reads the factory calibration once, and converts raw readings with the datasheet's
//! integer compensation formulas ([`calibration`]). It allocates nothing and never panics: every
//! bus failure is an [`Error::Bus`], every surprise from the chip its own variant.

pub mod calibration;

#[cfg(test)]
mod tests;

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

pub use calibration::Calibration;

/// The address with SDO to GND; 0x77 with SDO to VDDIO.
pub const DEFAULT_ADDRESS: u8 = 0x76;
/// The value of the chip id register on a BME280 (a BMP280 says 0x58).
pub const CHIP_ID: u8 = 0x60;

pub(crate) mod reg {
    pub const CALIB_00: u8 = 0x88; // 26 bytes, 0x88..=0xA1
    pub const CHIP_ID: u8 = 0xD0;
    pub const RESET: u8 = 0xE0;
    pub const CALIB_26: u8 = 0xE1; // 7 bytes, 0xE1..=0xE7
    pub const CTRL_HUM: u8 = 0xF2;
    pub const STATUS: u8 = 0xF3;
    pub const CTRL_MEAS: u8 = 0xF4;
    pub const CONFIG: u8 = 0xF5;
    pub const DATA: u8 = 0xF7; // 8 bytes: press, temp, hum
    pub const SOFT_RESET: u8 = 0xB6;
}

/// Driver errors, generic over the bus error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// The I2C bus failed.
    Bus(E),
    /// The chip id register did not say BME280.
    WrongChipId(u8),
    /// The chip did not finish copying its calibration after reset.
    NotReady,
    /// A forced measurement did not complete in time.
    Timeout,
}

impl<E> From<E> for Error<E> {
    fn from(e: E) -> Self {
        Error::Bus(e)
    }
}

/// Oversampling of one measurement (the datasheet's osrs_x fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Oversampling {
    Skip = 0,
    X1 = 1,
    X2 = 2,
    X4 = 3,
    X8 = 4,
    X16 = 5,
}

/// IIR filter coefficient (the datasheet's `filter` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Filter {
    Off = 0,
    X2 = 1,
    X4 = 2,
    X8 = 3,
    X16 = 4,
}

/// Standby time between measurements in normal mode (the `t_sb` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Standby {
    Ms0_5 = 0,
    Ms62_5 = 1,
    Ms125 = 2,
    Ms250 = 3,
    Ms500 = 4,
    Ms1000 = 5,
    Ms10 = 6,
    Ms20 = 7,
}

/// Measurement settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub temperature: Oversampling,
    pub pressure: Oversampling,
    pub humidity: Oversampling,
    pub filter: Filter,
    pub standby: Standby,
}

impl Default for Settings {
    /// The datasheet's "weather monitoring" recommendation: x1 everywhere, filter off.
    fn default() -> Self {
        Self {
            temperature: Oversampling::X1,
            pressure: Oversampling::X1,
            humidity: Oversampling::X1,
            filter: Filter::Off,
            standby: Standby::Ms1000,
        }
    }
}

/// One compensated measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Hundredths of a degree Celsius.
    pub temperature_centi_c: i32,
    /// Pascal, Q24.8 (divide by 256).
    pub pressure_q24_8: u32,
    /// %RH, Q22.10 (divide by 1024).
    pub humidity_q22_10: u32,
}

impl Measurement {
    pub fn temperature_c(&self) -> f32 {
        self.temperature_centi_c as f32 / 100.0
    }
    pub fn pressure_hpa(&self) -> f32 {
        self.pressure_q24_8 as f32 / 256.0 / 100.0
    }
    pub fn humidity_percent(&self) -> f32 {
        self.humidity_q22_10 as f32 / 1024.0
    }
}

/// A BME280 on an I2C bus.
pub struct Bme280<I2C> {
    i2c: I2C,
    address: u8,
    calibration: Calibration,
    settings: Settings,
}

impl<I2C: I2c> Bme280<I2C> {
    /// Checks the chip id, soft-resets the chip, waits for it, and reads its calibration.
    pub fn new(
        mut i2c: I2C,
        address: u8,
        delay: &mut impl DelayNs,
    ) -> Result<Self, (Error<I2C::Error>, I2C)> {
        match Self::init(&mut i2c, address, delay) {
            Ok(calibration) => Ok(Self {
                i2c,
                address,
                calibration,
                settings: Settings::default(),
            }),
            Err(e) => Err((e, i2c)),
        }
    }

    fn init(
        i2c: &mut I2C,
        address: u8,
        delay: &mut impl DelayNs,
    ) -> Result<Calibration, Error<I2C::Error>> {
        let mut id = [0u8];
        i2c.write_read(address, &[reg::CHIP_ID], &mut id)?;
        if id[0] != CHIP_ID {
            return Err(Error::WrongChipId(id[0]));
        }
        i2c.write(address, &[reg::RESET, reg::SOFT_RESET])?;
        // After reset the chip copies its NVM; status bit 0 (im_update) clears when done.
        let mut ready = false;
        for _ in 0..10 {
            delay.delay_ms(2);
            let mut status = [0u8];
            i2c.write_read(address, &[reg::STATUS], &mut status)?;
            if status[0] & 0x01 == 0 {
                ready = true;
                break;
            }
        }
        if !ready {
            return Err(Error::NotReady);
        }
        let mut low = [0u8; 26];
        let mut high = [0u8; 7];
        i2c.write_read(address, &[reg::CALIB_00], &mut low)?;
        i2c.write_read(address, &[reg::CALIB_26], &mut high)?;
        Ok(Calibration::parse(&low, &high))
    }

    /// Gives the bus back.
    pub fn release(self) -> I2C {
        self.i2c
    }

    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// Writes oversampling and filter settings; the chip stays in sleep mode.
    pub fn configure(&mut self, settings: Settings) -> Result<(), Error<I2C::Error>> {
        self.settings = settings;
        // ctrl_hum takes effect only after a write to ctrl_meas, so write it first.
        self.i2c
            .write(self.address, &[reg::CTRL_HUM, settings.humidity as u8])?;
        self.i2c.write(
            self.address,
            &[
                reg::CONFIG,
                ((settings.standby as u8) << 5) | ((settings.filter as u8) << 2),
            ],
        )?;
        self.write_ctrl_meas(0b00)
    }

    /// Starts continuous measurements (normal mode); read them with [`Bme280::read`].
    pub fn start_normal_mode(&mut self) -> Result<(), Error<I2C::Error>> {
        self.write_ctrl_meas(0b11)
    }

    /// Takes one measurement in forced mode and returns it.
    pub fn measure_forced(
        &mut self,
        delay: &mut impl DelayNs,
    ) -> Result<Measurement, Error<I2C::Error>> {
        self.write_ctrl_meas(0b01)?;
        // Status bit 3 (measuring) clears when the conversion is done; at x16 everywhere a
        // conversion takes up to 113 ms.
        for _ in 0..50 {
            delay.delay_ms(5);
            let mut status = [0u8];
            self.i2c
                .write_read(self.address, &[reg::STATUS], &mut status)?;
            if status[0] & 0x08 == 0 {
                return self.read();
            }
        }
        Err(Error::Timeout)
    }

    /// Reads the latest conversion and compensates it.
    pub fn read(&mut self) -> Result<Measurement, Error<I2C::Error>> {
        let mut d = [0u8; 8];
        self.i2c.write_read(self.address, &[reg::DATA], &mut d)?;
        let adc_p = (i32::from(d[0]) << 12) | (i32::from(d[1]) << 4) | (i32::from(d[2]) >> 4);
        let adc_t = (i32::from(d[3]) << 12) | (i32::from(d[4]) << 4) | (i32::from(d[5]) >> 4);
        let adc_h = (i32::from(d[6]) << 8) | i32::from(d[7]);
        Ok(self.calibration.compensate(adc_t, adc_p, adc_h))
    }

    fn write_ctrl_meas(&mut self, mode: u8) -> Result<(), Error<I2C::Error>> {
        let s = self.settings;
        let value = ((s.temperature as u8) << 5) | ((s.pressure as u8) << 2) | mode;
        self.i2c.write(self.address, &[reg::CTRL_MEAS, value])?;
        Ok(())
    }
}
