//! ADS1115 16-bit ADC over I2C (TI datasheet SBAS444): single-shot conversions of one channel.
//!
//! For the analog sensors vehicle and machine users attach: current clamps, vibration
//! sensors, fuel and pressure senders. Owns its bus (`new`, `release`), returns
//! [`Error<E>`], allocates nothing, never panics.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

/// ADDR pin to GND.
pub const DEFAULT_ADDRESS: u8 = 0x48;

const REG_CONVERSION: u8 = 0x00;
const REG_CONFIG: u8 = 0x01;
/// Bit 15: write 1 to start a conversion; reads 1 when idle (conversion done).
const OS: u16 = 1 << 15;
/// Bit 8: single-shot mode. Bits 1:0 = 11: comparator off.
const SINGLE_SHOT: u16 = 1 << 8;
const COMPARATOR_OFF: u16 = 0b11;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    Bus(E),
    /// The conversion did not finish in time.
    Timeout,
}

impl<E> From<E> for Error<E> {
    fn from(e: E) -> Self {
        Error::Bus(e)
    }
}

/// What to measure: a single input against GND, or a differential pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    A0,
    A1,
    A2,
    A3,
    A0A1,
    A0A3,
    A1A3,
    A2A3,
}

impl Channel {
    fn mux(self) -> u16 {
        let m = match self {
            Channel::A0A1 => 0b000,
            Channel::A0A3 => 0b001,
            Channel::A1A3 => 0b010,
            Channel::A2A3 => 0b011,
            Channel::A0 => 0b100,
            Channel::A1 => 0b101,
            Channel::A2 => 0b110,
            Channel::A3 => 0b111,
        };
        m << 12
    }
}

/// Full-scale range (the programmable gain amplifier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    V6_144,
    V4_096,
    V2_048,
    V1_024,
    V0_512,
    V0_256,
}

impl Range {
    fn pga(self) -> u16 {
        (self as u16) << 9
    }

    /// Full scale in microvolts.
    pub fn full_scale_uv(self) -> i64 {
        match self {
            Range::V6_144 => 6_144_000,
            Range::V4_096 => 4_096_000,
            Range::V2_048 => 2_048_000,
            Range::V1_024 => 1_024_000,
            Range::V0_512 => 512_000,
            Range::V0_256 => 256_000,
        }
    }
}

/// Data rate, samples per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Sps8,
    Sps16,
    Sps32,
    Sps64,
    Sps128,
    Sps250,
    Sps475,
    Sps860,
}

impl Rate {
    fn bits(self) -> u16 {
        (self as u16) << 5
    }

    /// How long one conversion takes, in microseconds (rounded up, plus margin).
    fn conversion_us(self) -> u32 {
        let sps = [8, 16, 32, 64, 128, 250, 475, 860][self as usize];
        1_000_000 / sps + 100
    }
}

pub struct Ads1115<I2C> {
    i2c: I2C,
    address: u8,
    range: Range,
    rate: Rate,
}

impl<I2C: I2c> Ads1115<I2C> {
    pub fn new(i2c: I2C, address: u8) -> Self {
        Self {
            i2c,
            address,
            range: Range::V2_048,
            rate: Rate::Sps128,
        }
    }

    pub fn release(self) -> I2C {
        self.i2c
    }

    pub fn set_range(&mut self, range: Range) {
        self.range = range;
    }

    pub fn set_rate(&mut self, rate: Rate) {
        self.rate = rate;
    }

    /// The config word a single-shot conversion of `channel` writes.
    pub fn config_word(&self, channel: Channel) -> u16 {
        OS | channel.mux() | self.range.pga() | SINGLE_SHOT | self.rate.bits() | COMPARATOR_OFF
    }

    /// Runs one conversion and returns the raw two's-complement result.
    pub fn read_raw(
        &mut self,
        channel: Channel,
        delay: &mut impl DelayNs,
    ) -> Result<i16, Error<I2C::Error>> {
        let config = self.config_word(channel).to_be_bytes();
        self.i2c
            .write(self.address, &[REG_CONFIG, config[0], config[1]])?;
        delay.delay_us(self.rate.conversion_us());
        for _ in 0..10 {
            let mut status = [0u8; 2];
            self.i2c
                .write_read(self.address, &[REG_CONFIG], &mut status)?;
            if u16::from_be_bytes(status) & OS != 0 {
                let mut value = [0u8; 2];
                self.i2c
                    .write_read(self.address, &[REG_CONVERSION], &mut value)?;
                return Ok(i16::from_be_bytes(value));
            }
            delay.delay_us(200);
        }
        Err(Error::Timeout)
    }

    /// Runs one conversion and returns microvolts.
    pub fn read_microvolts(
        &mut self,
        channel: Channel,
        delay: &mut impl DelayNs,
    ) -> Result<i32, Error<I2C::Error>> {
        let raw = self.read_raw(channel, delay)?;
        Ok((i64::from(raw) * self.range.full_scale_uv() / 32_768) as i32)
    }
}

#[cfg(test)]
mod tests {
    use embedded_hal::i2c::ErrorKind;
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

    use super::*;

    #[test]
    // Grouped by register field, as the datasheet draws them: OS MUX PGA MODE DR COMP.
    #[allow(clippy::unusual_byte_groupings)]
    fn the_config_word_matches_the_datasheet_layout() {
        let adc = Ads1115::new(Mock::new(&[]), DEFAULT_ADDRESS);
        // OS=1, MUX=100 (AIN0), PGA=010 (2.048 V), MODE=1, DR=100 (128 SPS), COMP_QUE=11
        assert_eq!(adc.config_word(Channel::A0), 0b1_100_010_1_100_00011);
        adc.release().done();
    }

    #[test]
    fn a_single_shot_conversion_waits_for_ready_and_scales_to_microvolts() {
        let expectations = [
            T::write(DEFAULT_ADDRESS, vec![REG_CONFIG, 0b1101_0011, 0b1000_0011]),
            T::write_read(DEFAULT_ADDRESS, vec![REG_CONFIG], vec![0x53, 0x83]),
            T::write_read(DEFAULT_ADDRESS, vec![REG_CONFIG], vec![0xd3, 0x83]),
            T::write_read(DEFAULT_ADDRESS, vec![REG_CONVERSION], vec![0x40, 0x00]),
        ];
        let mut i2c = Mock::new(&expectations);
        let mut adc = Ads1115::new(i2c.clone(), DEFAULT_ADDRESS);
        adc.set_range(Range::V4_096);
        adc.set_rate(Rate::Sps128);
        // A1 single-ended: MUX=101.
        let uv = adc.read_microvolts(Channel::A1, &mut NoopDelay).unwrap();
        assert_eq!(uv, 2_048_000, "half of full scale at ±4.096 V");
        adc.release();
        i2c.done();
    }

    #[test]
    fn negative_differential_readings_keep_their_sign() {
        let expectations = [
            T::write(DEFAULT_ADDRESS, vec![REG_CONFIG, 0b1000_0101, 0b1000_0011]),
            T::write_read(DEFAULT_ADDRESS, vec![REG_CONFIG], vec![0x85, 0x83]),
            T::write_read(DEFAULT_ADDRESS, vec![REG_CONVERSION], vec![0x80, 0x00]),
        ];
        let mut i2c = Mock::new(&expectations);
        let mut adc = Ads1115::new(i2c.clone(), DEFAULT_ADDRESS);
        assert_eq!(
            adc.read_raw(Channel::A0A1, &mut NoopDelay).unwrap(),
            i16::MIN
        );
        adc.release();
        i2c.done();
    }

    #[test]
    fn a_bus_error_is_reported() {
        let expectations = [
            T::write(DEFAULT_ADDRESS, vec![REG_CONFIG, 0b1100_0101, 0b1000_0011])
                .with_error(ErrorKind::Other),
        ];
        let mut i2c = Mock::new(&expectations);
        let mut adc = Ads1115::new(i2c.clone(), DEFAULT_ADDRESS);
        assert_eq!(
            adc.read_raw(Channel::A0, &mut NoopDelay),
            Err(Error::Bus(ErrorKind::Other))
        );
        adc.release();
        i2c.done();
    }
}
