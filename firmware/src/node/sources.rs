//! Opening the configured sensors as [`Source`]s: real chips on Linux buses, or simulated ones.

use embedded_hal::i2c::I2c;
use linux_embedded_hal::{Delay, I2cdev};
use tributary_protocol::{Body, Reading, SensorValue};

use super::config::SensorConfig;
use super::sim::{SimBme280, SimGnss};
use super::NodeError;
use crate::ads1115::{Ads1115, Channel, Range};
use crate::bme280::Bme280;
use crate::device::Source;
use crate::gnss::Gnss;

/// Opens every configured sensor, checking each is there.
pub fn open(sensors: &[SensorConfig]) -> Result<Vec<Box<dyn Source>>, NodeError> {
    sensors.iter().map(open_one).collect()
}

fn open_one(config: &SensorConfig) -> Result<Box<dyn Source>, NodeError> {
    match config {
        SensorConfig::Bme280 {
            bus,
            address,
            interval_ms,
        } => {
            if bus == "sim" {
                bme280(SimBme280::new(*address), bus, *address, *interval_ms)
            } else {
                bme280(open_i2c(bus)?, bus, *address, *interval_ms)
            }
        }
        SensorConfig::Ads1115 {
            bus,
            address,
            channel,
            range,
            name,
            unit,
            scale,
            offset,
            interval_ms,
        } => {
            let channel = parse_channel(channel)?;
            let range = parse_range(*range)?;
            let mut adc = Ads1115::new(open_i2c(bus)?, *address);
            adc.set_range(range);
            let mut delay = Delay;
            // One conversion now, so a missing chip is a start-up error.
            adc.read_raw(channel, &mut delay)
                .map_err(|e| NodeError::NoDevice {
                    chip: "ADS1115",
                    address: *address,
                    bus: bus.clone(),
                    reason: format!("{e:?}"),
                })?;
            Ok(Box::new(AdcSource {
                adc,
                channel,
                name: name.clone(),
                unit: unit.clone(),
                scale: *scale,
                offset: *offset,
                interval_ms: *interval_ms,
            }))
        }
        SensorConfig::Gnss {
            port,
            baud,
            interval_ms,
        } => {
            if port == "sim" {
                return Ok(Box::new(GnssSource {
                    gnss: Gnss::new(SimGnss::new()),
                    interval_ms: *interval_ms,
                }));
            }
            let serial = serialport::new(port, *baud)
                .timeout(std::time::Duration::from_millis(5))
                .open()
                .map_err(|e| NodeError::OpenBus {
                    bus: port.clone(),
                    reason: e.to_string(),
                    hint: " (on a Raspberry Pi: raspi-config, Interface Options, Serial Port: login shell no, hardware yes)",
                })?;
            Ok(Box::new(GnssSource {
                gnss: Gnss::new(SerialReader(serial)),
                interval_ms: *interval_ms,
            }))
        }
    }
}

fn open_i2c(bus: &str) -> Result<I2cdev, NodeError> {
    I2cdev::new(bus).map_err(|e| NodeError::OpenBus {
        bus: bus.to_owned(),
        reason: e.to_string(),
        hint: " (on a Raspberry Pi: raspi-config, Interface Options, I2C)",
    })
}

fn bme280<I: I2c + 'static>(
    i2c: I,
    bus: &str,
    address: u8,
    interval_ms: u64,
) -> Result<Box<dyn Source>, NodeError>
where
    I::Error: std::fmt::Debug,
{
    let mut delay = Delay;
    let no_device = |reason: String| NodeError::NoDevice {
        chip: "BME280",
        address,
        bus: bus.to_owned(),
        reason,
    };
    let mut sensor = Bme280::new(i2c, address, &mut delay).map_err(|(e, _)| match e {
        crate::bme280::Error::WrongChipId(id) => no_device(format!(
            "chip id read {id:#04x}, a BME280 says {:#04x}",
            crate::bme280::CHIP_ID
        )),
        other => no_device(format!("{other:?}")),
    })?;
    sensor
        .configure(crate::bme280::Settings::default())
        .map_err(|e| no_device(format!("configuring: {e:?}")))?;
    Ok(Box::new(Bme280Source {
        sensor,
        delay,
        interval_ms,
    }))
}

fn parse_channel(s: &str) -> Result<Channel, NodeError> {
    Ok(match s {
        "A0" => Channel::A0,
        "A1" => Channel::A1,
        "A2" => Channel::A2,
        "A3" => Channel::A3,
        "A0A1" => Channel::A0A1,
        "A0A3" => Channel::A0A3,
        "A1A3" => Channel::A1A3,
        "A2A3" => Channel::A2A3,
        other => {
            return Err(NodeError::Config {
                key: "sensor.channel".into(),
                problem: format!("{other:?} is not A0..A3, A0A1, A0A3, A1A3 or A2A3"),
            })
        }
    })
}

fn parse_range(volts: f32) -> Result<Range, NodeError> {
    let ranges = [
        (6.144, Range::V6_144),
        (4.096, Range::V4_096),
        (2.048, Range::V2_048),
        (1.024, Range::V1_024),
        (0.512, Range::V0_512),
        (0.256, Range::V0_256),
    ];
    ranges
        .iter()
        .find(|(v, _)| (v - volts).abs() < 1e-3)
        .map(|(_, r)| *r)
        .ok_or_else(|| NodeError::Config {
            key: "sensor.range".into(),
            problem: format!("{volts} is not 6.144, 4.096, 2.048, 1.024, 0.512 or 0.256"),
        })
}

fn value(name: &str, value: f64, unit: &str) -> SensorValue {
    SensorValue {
        name: name.into(),
        value,
        unit: unit.into(),
    }
}

struct Bme280Source<I> {
    sensor: Bme280<I>,
    delay: Delay,
    interval_ms: u64,
}

impl<I: I2c> Source for Bme280Source<I>
where
    I::Error: std::fmt::Debug,
{
    fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    fn set_interval_ms(&mut self, ms: u64) -> bool {
        self.interval_ms = ms.max(1);
        true
    }

    fn sample(&mut self) -> Option<Body> {
        match self.sensor.measure_forced(&mut self.delay) {
            Ok(m) => Some(Body::Reading(Reading {
                values: vec![
                    value(
                        "temperature",
                        f64::from(m.temperature_centi_c) / 100.0,
                        "Cel",
                    ),
                    value("humidity", f64::from(m.humidity_q22_10) / 1024.0, "%"),
                    value("pressure", f64::from(m.pressure_q24_8) / 25_600.0, "hPa"),
                ],
            })),
            Err(error) => {
                tracing::warn!(message = "BME280 read failed.", error = ?error);
                None
            }
        }
    }
}

struct AdcSource<I> {
    adc: Ads1115<I>,
    channel: Channel,
    name: String,
    unit: String,
    scale: f64,
    offset: f64,
    interval_ms: u64,
}

impl<I: I2c> Source for AdcSource<I>
where
    I::Error: std::fmt::Debug,
{
    fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    fn set_interval_ms(&mut self, ms: u64) -> bool {
        self.interval_ms = ms.max(1);
        true
    }

    fn sample(&mut self) -> Option<Body> {
        match self.adc.read_microvolts(self.channel, &mut Delay) {
            Ok(uv) => Some(Body::Reading(Reading {
                values: vec![value(
                    &self.name,
                    f64::from(uv) / 1e6 * self.scale + self.offset,
                    &self.unit,
                )],
            })),
            Err(error) => {
                tracing::warn!(message = "ADS1115 read failed.", error = ?error);
                None
            }
        }
    }
}

struct GnssSource<S> {
    gnss: Gnss<S>,
    interval_ms: u64,
}

impl<S: embedded_hal_nb::serial::Read<u8>> Source for GnssSource<S>
where
    S::Error: std::fmt::Debug,
{
    fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    fn set_interval_ms(&mut self, ms: u64) -> bool {
        self.interval_ms = ms.max(1);
        true
    }

    fn sample(&mut self) -> Option<Body> {
        loop {
            match self.gnss.poll() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(crate::gnss::Error::Nmea(crate::nmea::NmeaError::NoFix)) => {}
                Err(error) => tracing::debug!(message = "GNSS line skipped.", error = ?error),
            }
        }
        self.gnss.fix().position().map(Body::Position)
    }
}

/// A serial port as a non-blocking UART.
struct SerialReader(Box<dyn serialport::SerialPort>);

impl embedded_hal_nb::serial::ErrorType for SerialReader {
    type Error = embedded_hal_nb::serial::ErrorKind;
}

impl embedded_hal_nb::serial::Read<u8> for SerialReader {
    fn read(&mut self) -> nb::Result<u8, Self::Error> {
        let mut b = [0u8];
        match std::io::Read::read(&mut self.0, &mut b) {
            Ok(1) => Ok(b[0]),
            Ok(_) => Err(nb::Error::WouldBlock),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(nb::Error::WouldBlock),
            Err(_) => Err(nb::Error::Other(embedded_hal_nb::serial::ErrorKind::Other)),
        }
    }
}
