//! `[[modbus]]`: Modbus links the gateway polls. A link is one TCP connection (`tcp`) or one
//! serial line (`serial`, Modbus RTU); on it, `[[modbus.devices]]` by unit id, each with its
//! poll interval and `[[modbus.devices.registers]]`, its register map.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::map::{Kind, Order, Register, Table};
use tributary_common::validate::ConfigError;

/// Where a link's devices are reached.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// Modbus TCP (or a TCP gateway to an RS-485 line, by unit id).
    Tcp(SocketAddr),
    /// Modbus RTU on a serial line.
    Serial(Serial),
}

/// A serial line's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Serial {
    pub path: PathBuf,
    pub baud: u32,
    pub data_bits: tokio_serial::DataBits,
    pub parity: tokio_serial::Parity,
    pub stop_bits: tokio_serial::StopBits,
}

/// One `[[modbus]]` link, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusLink {
    pub name: String,
    pub line: Line,
    /// How long one request may take before it counts as a timeout.
    pub timeout: Duration,
    /// The longest wait between reconnection attempts (doubling from a tenth of a second).
    pub backoff_max: Duration,
    pub devices: Vec<ModbusDevice>,
}

/// One device on a link.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusDevice {
    /// The device id its events carry.
    pub device_id: String,
    /// The Modbus unit (slave) id.
    pub unit: u8,
    pub poll: Duration,
    pub registers: Vec<Register>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModbus {
    pub name: Option<String>,
    pub tcp: Option<String>,
    pub serial: Option<PathBuf>,
    pub baud: Option<u32>,
    pub data_bits: Option<u8>,
    pub parity: Option<String>,
    pub stop_bits: Option<u8>,
    pub timeout_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    #[serde(default)]
    pub devices: Vec<RawModbusDevice>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModbusDevice {
    pub device_id: Option<String>,
    pub unit: Option<u8>,
    pub poll_ms: Option<u64>,
    #[serde(default)]
    pub registers: Vec<RawRegister>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegister {
    pub name: Option<String>,
    pub table: Option<String>,
    pub address: Option<u16>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub byte_order: Option<String>,
    pub word_order: Option<String>,
    pub scale: Option<f64>,
    pub offset: Option<f64>,
    pub unit: Option<String>,
}

/// `[[modbus]]`: the Modbus links.
pub fn validate(raw: Vec<RawModbus>) -> Result<Vec<ModbusLink>, ConfigError> {
    let mut out: Vec<ModbusLink> = Vec::new();
    for (i, l) in raw.into_iter().enumerate() {
        let bad = |key: &str, problem: String| ConfigError::Rule {
            key: format!("modbus[{i}].{key}"),
            problem,
        };
        let name = tributary_common::validate::names::source_name(
            l.name,
            "Modbus link",
            "logs and metrics",
            |n| out.iter().any(|o| o.name == n),
        )
        .map_err(|problem| bad("name", problem))?;
        let serial_keys = l.baud.is_some()
            || l.data_bits.is_some()
            || l.parity.is_some()
            || l.stop_bits.is_some();
        let line = match (l.tcp, l.serial) {
            (Some(addr), None) => {
                if serial_keys {
                    return Err(bad(
                        "baud",
                        "baud, data_bits, parity and stop_bits are for a serial line".into(),
                    ));
                }
                Line::Tcp(addr.parse().map_err(|_| {
                    bad(
                        "tcp",
                        format!("{addr:?} is not an address and port (\"192.168.1.20:502\")"),
                    )
                })?)
            }
            (None, Some(path)) => Line::Serial(serial(
                path,
                l.baud,
                l.data_bits,
                &l.parity,
                l.stop_bits,
                &bad,
            )?),
            (Some(_), Some(_)) => {
                return Err(bad("serial", "a link is tcp or serial, not both".into()))
            }
            (None, None) => {
                return Err(bad(
                    "tcp",
                    "a link needs tcp = \"host:port\" or serial = \"/dev/ttyUSB0\"".into(),
                ))
            }
        };
        let timeout = match l.timeout_ms.unwrap_or(1000) {
            ms @ 10..=60_000 => Duration::from_millis(ms),
            _ => return Err(bad("timeout_ms", "must be from 10 to 60000".into())),
        };
        let backoff_max = match l.backoff_max_ms.unwrap_or(30_000) {
            ms @ 100..=3_600_000 => Duration::from_millis(ms),
            _ => return Err(bad("backoff_max_ms", "must be from 100 to 3600000".into())),
        };
        if l.devices.is_empty() {
            return Err(bad(
                "devices",
                "a link needs at least one [[modbus.devices]]".into(),
            ));
        }
        let mut devices: Vec<ModbusDevice> = Vec::new();
        for (j, d) in l.devices.into_iter().enumerate() {
            let device = device(d, &format!("modbus[{i}].devices[{j}]"))?;
            if devices.iter().any(|o| o.device_id == device.device_id)
                || out
                    .iter()
                    .flat_map(|o| &o.devices)
                    .any(|o| o.device_id == device.device_id)
            {
                return Err(ConfigError::Rule {
                    key: format!("modbus[{i}].devices[{j}].device_id"),
                    problem: format!("{:?} is polled twice", device.device_id),
                });
            }
            devices.push(device);
        }
        out.push(ModbusLink {
            name,
            line,
            timeout,
            backoff_max,
            devices,
        });
    }
    Ok(out)
}

fn serial(
    path: PathBuf,
    baud: Option<u32>,
    data_bits: Option<u8>,
    parity: &Option<String>,
    stop_bits: Option<u8>,
    bad: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Serial, ConfigError> {
    use tokio_serial::{DataBits, Parity, StopBits};
    let baud = match baud.unwrap_or(9600) {
        b @ 300..=4_000_000 => b,
        _ => return Err(bad("baud", "must be from 300 to 4000000".into())),
    };
    let data_bits = match data_bits.unwrap_or(8) {
        7 => DataBits::Seven,
        8 => DataBits::Eight,
        _ => return Err(bad("data_bits", "must be 7 or 8".into())),
    };
    // Modbus over serial line, 2.5.1: even parity is the default of the standard.
    let parity = match parity.as_deref().unwrap_or("even") {
        "none" => Parity::None,
        "even" => Parity::Even,
        "odd" => Parity::Odd,
        other => {
            return Err(bad(
                "parity",
                format!("{other:?} is not \"none\", \"even\" or \"odd\""),
            ))
        }
    };
    let stop_bits = match stop_bits.unwrap_or(1) {
        1 => StopBits::One,
        2 => StopBits::Two,
        _ => return Err(bad("stop_bits", "must be 1 or 2".into())),
    };
    Ok(Serial {
        path,
        baud,
        data_bits,
        parity,
        stop_bits,
    })
}

fn device(d: RawModbusDevice, at: &str) -> Result<ModbusDevice, ConfigError> {
    let bad = |key: &str, problem: String| ConfigError::Rule {
        key: format!("{at}.{key}"),
        problem,
    };
    let device_id = d
        .device_id
        .ok_or_else(|| bad("device_id", "the device id its events carry".into()))?;
    if tributary_protocol::validate_device_id(&device_id).is_err() {
        return Err(bad(
            "device_id",
            format!("{device_id:?} is not 1 to 64 of A-Z a-z 0-9 _ . -"),
        ));
    }
    let unit = match d.unit.unwrap_or(1) {
        u @ 0..=247 => u,
        _ => return Err(bad("unit", "must be from 0 to 247".into())),
    };
    let poll = match d.poll_ms.unwrap_or(1000) {
        ms @ 10..=86_400_000 => Duration::from_millis(ms),
        _ => return Err(bad("poll_ms", "must be from 10 to 86400000".into())),
    };
    if d.registers.is_empty() {
        return Err(bad(
            "registers",
            "a device needs at least one [[modbus.devices.registers]]".into(),
        ));
    }
    let mut registers: Vec<Register> = Vec::new();
    for (k, r) in d.registers.into_iter().enumerate() {
        let register = register(r, &format!("{at}.registers[{k}]"))?;
        if registers.iter().any(|o| o.name == register.name) {
            return Err(ConfigError::Rule {
                key: format!("{at}.registers[{k}].name"),
                problem: format!("{:?} names two values", register.name),
            });
        }
        registers.push(register);
    }
    // The event's own rules for names, units and how many values a reading holds, checked
    // once here on a reading of zeros.
    let sample = tributary_protocol::Event {
        device_id: device_id.clone(),
        seq: 0,
        time_ms: 0,
        body: tributary_protocol::Body::Reading(tributary_protocol::Reading {
            values: registers
                .iter()
                .map(|r| tributary_protocol::SensorValue {
                    name: r.name.clone(),
                    value: 0.0,
                    unit: r.unit.clone(),
                })
                .collect(),
        }),
    };
    if let Err(error) = sample.validate() {
        use tributary_protocol::EventError;
        let key = match error {
            EventError::BadName { index } => format!("registers[{index}].name"),
            EventError::BadUnit { index } => format!("registers[{index}].unit"),
            _ => "registers".to_owned(),
        };
        return Err(bad(&key, error.to_string()));
    }
    Ok(ModbusDevice {
        device_id,
        unit,
        poll,
        registers,
    })
}

fn register(r: RawRegister, at: &str) -> Result<Register, ConfigError> {
    let bad = |key: &str, problem: String| ConfigError::Rule {
        key: format!("{at}.{key}"),
        problem,
    };
    let name = r
        .name
        .filter(|n| !n.is_empty() && n.len() <= 64)
        .ok_or_else(|| bad("name", "each value needs a name of 1 to 64 bytes".into()))?;
    let table = r.table.as_deref().unwrap_or("holding");
    let table = Table::parse(table).ok_or_else(|| {
        bad(
            "table",
            format!("{table:?} is not \"holding\", \"input\", \"coil\" or \"discrete\""),
        )
    })?;
    let address = r
        .address
        .ok_or_else(|| bad("address", "the value's 0-based register address".into()))?;
    let default_kind = if table.is_bits() { "bool" } else { "u16" };
    let kind = r.kind.as_deref().unwrap_or(default_kind);
    let kind = Kind::parse(kind).ok_or_else(|| {
        bad(
            "type",
            format!("{kind:?} is not bool, u16, i16, u32, i32, u64, i64, f32 or f64"),
        )
    })?;
    if table.is_bits() && kind != Kind::Bool {
        return Err(bad(
            "type",
            format!("a {table} is one bit: its type is bool"),
        ));
    }
    if u32::from(address) + u32::from(kind.width()) > 65_536 {
        return Err(bad(
            "address",
            format!("a {kind:?} at {address} runs past the last address, 65535"),
        ));
    }
    let order = |key: &str, v: Option<String>| -> Result<Order, ConfigError> {
        let v = v.unwrap_or_else(|| "big".into());
        Order::parse(&v).ok_or_else(|| bad(key, format!("{v:?} is not \"big\" or \"little\"")))
    };
    let byte_order = order("byte_order", r.byte_order)?;
    let word_order = order("word_order", r.word_order)?;
    let scale = r.scale.unwrap_or(1.0);
    let offset = r.offset.unwrap_or(0.0);
    if !scale.is_finite() || scale == 0.0 {
        return Err(bad("scale", "must be a finite number other than 0".into()));
    }
    if !offset.is_finite() {
        return Err(bad("offset", "must be a finite number".into()));
    }
    Ok(Register {
        name,
        table,
        address,
        kind,
        byte_order,
        word_order,
        scale,
        offset,
        unit: r.unit.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<ModbusLink>, ConfigError> {
        #[derive(Deserialize)]
        struct File {
            modbus: Vec<RawModbus>,
        }
        let file: File = toml::from_str(text).expect("TOML");
        validate(file.modbus)
    }

    const GOOD: &str = r#"
[[modbus]]
name = "plant"
serial = "/dev/ttyUSB0"
baud = 19200
parity = "none"
[[modbus.devices]]
device_id = "meter-1"
unit = 3
poll_ms = 500
[[modbus.devices.registers]]
name = "voltage"
table = "input"
address = 0
type = "f32"
word_order = "little"
unit = "V"
[[modbus.devices.registers]]
name = "running"
table = "coil"
address = 0
"#;

    #[test]
    fn a_serial_link_with_its_devices() {
        let links = parse(GOOD).unwrap();
        let link = &links[0];
        assert!(
            matches!(&link.line, Line::Serial(s) if s.baud == 19200 && s.parity == tokio_serial::Parity::None)
        );
        let d = &link.devices[0];
        assert_eq!((d.unit, d.poll), (3, Duration::from_millis(500)));
        assert_eq!(d.registers[0].kind, Kind::F32);
        assert_eq!(d.registers[0].word_order, Order::Little);
        assert_eq!(d.registers[1].kind, Kind::Bool);
    }

    #[test]
    fn mistakes_name_their_key() {
        for (from, to, key) in [
            ("serial = \"/dev/ttyUSB0\"", "", "modbus[0].tcp"),
            ("baud = 19200", "baud = 7", "modbus[0].baud"),
            ("parity = \"none\"", "parity = \"mark\"", "modbus[0].parity"),
            ("unit = 3", "unit = 250", "modbus[0].devices[0].unit"),
            (
                "type = \"f32\"",
                "type = \"f16\"",
                "modbus[0].devices[0].registers[0].type",
            ),
            (
                "table = \"coil\"\naddress = 0",
                "table = \"coil\"\naddress = 0\ntype = \"u16\"",
                "modbus[0].devices[0].registers[1].type",
            ),
            (
                "address = 0\ntype = \"f32\"",
                "address = 65535\ntype = \"f32\"",
                "modbus[0].devices[0].registers[0].address",
            ),
            (
                "name = \"running\"",
                "name = \"voltage\"",
                "modbus[0].devices[0].registers[1].name",
            ),
            (
                "name = \"running\"",
                "name = \"run ning\"",
                "modbus[0].devices[0].registers[1].name",
            ),
            (
                "unit = \"V\"",
                "unit = \"V:AC\"",
                "modbus[0].devices[0].registers[0].unit",
            ),
            (
                "word_order = \"little\"",
                "word_order = \"middle\"",
                "modbus[0].devices[0].registers[0].word_order",
            ),
        ] {
            assert!(GOOD.contains(from), "{from}");
            let text = GOOD.replace(from, to);
            match parse(&text) {
                Err(ConfigError::Rule { key: k, .. }) => assert_eq!(k, key, "{to}"),
                other => panic!("{to}: {other:?}"),
            }
        }
        let twice = format!(
            "{GOOD}\n{}",
            GOOD.replace("name = \"plant\"", "name = \"other\"")
        );
        match parse(&twice) {
            Err(ConfigError::Rule { key, .. }) => assert_eq!(key, "modbus[1].devices[0].device_id"),
            other => panic!("{other:?}"),
        }
    }
}
