//! Scenarios: who is in the fleet, how they reach the gateway, how fast time runs.
//!
//! A scenario is a TOML file (`config/sim.toml` is the default, built in; see it for every key
//! with its unit and default). It is read in two phases, like the gateway's config: [`Raw`] as
//! written, then [`Scenario`], validated once, with typed values. Errors name the key.
//! Command-line flags override a scenario after it is read and before it is validated.
//!
//! **Time.** Every device has a simulated clock that starts at `start_ms` (default: now) and
//! advances by its model's steps. With `speedup = 0` devices send as fast as acknowledgements
//! allow; with `speedup = s` an event is sent when `s` × the wall time since the start reaches
//! its simulated time, so `speedup = 1` is real time and `60` is a minute per second.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::vehicle::ReportPolicy;
use crate::model::FaultRates;

/// Most devices one group may hold (each is a task and a connection).
pub const MAX_GROUP_DEVICES: usize = 1_000_000;

/// The built-in default scenario.
pub const DEFAULT_SCENARIO: &str = include_str!("../../config/sim.toml");

/// Why a scenario was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("{path}: {key}: {what}")]
    Invalid {
        path: String,
        key: String,
        what: String,
    },
}

/// A device model a group can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Environment,
    Machine,
    Truck,
    Car,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Environment => "environment",
            ModelKind::Machine => "machine",
            ModelKind::Truck => "truck",
            ModelKind::Car => "car",
        }
    }
}

/// How a group reaches the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Link {
    Tcp,
    Mqtt {
        qos: u8,
    },
    /// MQTT 5: the same publishes, with reason codes and the gateway's Receive Maximum.
    Mqtt5 {
        qos: u8,
    },
}

impl Link {
    /// MQTT QoS 0: no acknowledgements expected.
    pub fn fire_and_forget(self) -> bool {
        matches!(self, Link::Mqtt { qos: 0 } | Link::Mqtt5 { qos: 0 })
    }
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Link::Tcp => f.write_str("tcp"),
            Link::Mqtt { qos } => write!(f, "mqtt-qos{qos}"),
            Link::Mqtt5 { qos } => write!(f, "mqtt5-qos{qos}"),
        }
    }
}

/// A scenario file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    pub seed: u64,
    pub prefix: String,
    pub events: u64,
    pub duration_s: f64,
    pub speedup: f64,
    pub start_ms: Option<u64>,
    pub seq_start: Option<u64>,
    pub batch: usize,
    pub ramp_s: f64,
    pub ack_timeout_s: f64,
    pub give_up_s: f64,
    pub gateway: RawGateway,
    pub backoff: RawBackoff,
    #[serde(default)]
    pub faults: FaultRates,
    pub area: RawArea,
    #[serde(default)]
    pub report: ReportPolicy,
    #[serde(default)]
    pub group: Vec<RawGroup>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub tcp: String,
    pub mqtt: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackoff {
    pub initial_ms: u64,
    pub max_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArea {
    pub centre: [f64; 2],
    pub half_size_km: f64,
    pub waypoints: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    pub name: String,
    pub model: ModelKind,
    pub count: usize,
    pub transport: String,
    #[serde(default = "one")]
    pub qos: u8,
    #[serde(default = "sixty")]
    pub interval_s: f64,
}

fn one() -> u8 {
    1
}

fn sixty() -> f64 {
    60.0
}

/// Where vehicles drive.
#[derive(Debug, Clone, PartialEq)]
pub enum Area {
    /// A generated grid within `half_size_m` of `centre` (lat, lon).
    Grid {
        centre: (f64, f64),
        half_size_m: f64,
    },
    /// Roads from a waypoints file.
    Waypoints(PathBuf),
}

/// Exponential backoff with equal jitter between reconnects.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

/// One group of like devices, named `{prefix}-{name}-{index}` (`{prefix}-{index}` for the
/// unnamed group of [`Scenario::plain`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub model: ModelKind,
    pub count: usize,
    pub link: Link,
    /// Sensors: simulated time between samples. Vehicles report by [`ReportPolicy`].
    pub interval: Duration,
}

/// A validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub seed: u64,
    pub prefix: String,
    /// Events per device; 0: until `duration` or Ctrl-C.
    pub events: u64,
    pub duration: Option<Duration>,
    pub speedup: f64,
    pub start_ms: Option<u64>,
    pub seq_start: Option<u64>,
    pub batch: usize,
    pub ramp: Duration,
    pub ack_timeout: Duration,
    pub give_up: Duration,
    pub tcp: SocketAddr,
    pub mqtt: SocketAddr,
    pub backoff: Backoff,
    pub faults: FaultRates,
    pub area: Area,
    pub report: ReportPolicy,
    pub groups: Vec<Group>,
    /// TLS, passwords and boot sessions (flags only).
    pub credentials: crate::security::Credentials,
    /// Devices subscribe to their commands and obey them (`--commands`; MQTT links).
    pub commands: bool,
}

impl Raw {
    /// The built-in default scenario.
    pub fn default_scenario() -> Result<Self, ScenarioError> {
        Self::parse(DEFAULT_SCENARIO, "built-in scenario")
    }

    /// Reads a scenario file. Relative waypoints paths are resolved against its folder.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut raw = Self::parse(&text, &shown)?;
        if let (Some(w), Some(dir)) = (&raw.area.waypoints, path.parent()) {
            raw.area.waypoints = Some(dir.join(w).display().to_string());
        }
        Ok(raw)
    }

    /// Parses a scenario document: the built-in defaults, overlaid with `text`. `path` names
    /// it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, ScenarioError> {
        let parse_err = |e: toml::de::Error| ScenarioError::Parse {
            path: path.to_owned(),
            source: Box::new(e),
        };
        let mut base: toml::Table = toml::from_str(DEFAULT_SCENARIO).map_err(parse_err)?;
        let over: toml::Table = toml::from_str(text).map_err(parse_err)?;
        merge(&mut base, over);
        base.try_into().map_err(parse_err)
    }

    /// Checks every value once; `path` names the file in errors.
    pub fn validate(self, path: &str) -> Result<Scenario, ScenarioError> {
        let bad = |key: &str, what: String| ScenarioError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            what,
        };
        let secs = |key: &str, v: f64| {
            if (0.0..1e9).contains(&v) {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(bad(
                    key,
                    format!("{v} is not a number of seconds (0 or more)"),
                ))
            }
        };
        let addr = |key: &str, v: &str| {
            v.parse::<SocketAddr>()
                .map_err(|e| bad(key, format!("{v:?} is not host:port with an IP: {e}")))
        };
        if !(self.speedup.is_finite() && self.speedup >= 0.0) {
            return Err(bad("speedup", format!("{} is not 0 or more", self.speedup)));
        }
        if self.batch == 0 || self.batch > 10_000 {
            return Err(bad(
                "batch",
                format!("{} is not from 1 to 10000", self.batch),
            ));
        }
        if let Err(e) = tributary_protocol::validate_device_id(&format!("{}-x-0", self.prefix)) {
            return Err(bad(
                "prefix",
                format!("{:?} makes bad device ids: {e}", self.prefix),
            ));
        }
        let f = &self.faults;
        for (key, p) in [
            ("faults.spike", f.spike),
            ("faults.stuck", f.stuck),
            ("faults.dropout", f.dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(bad(key, format!("{p} is not a probability below 1")));
            }
        }
        for (key, m) in [
            ("faults.stuck_samples", f.stuck_samples),
            ("faults.dropout_samples", f.dropout_samples),
        ] {
            if !(1.0..=1e6).contains(&m) {
                return Err(bad(key, format!("{m} is not from 1 to 1000000")));
            }
        }
        let r = &self.report;
        for (key, v) in [
            ("report.distance_m", r.distance_m),
            ("report.min_interval_s", r.min_interval_s),
            ("report.max_interval_s", r.max_interval_s),
            ("report.stopped_interval_s", r.stopped_interval_s),
        ] {
            if !(v.is_finite() && v >= 1.0) {
                return Err(bad(key, format!("{v} is not 1 or more")));
            }
        }
        if r.min_interval_s > r.max_interval_s {
            return Err(bad(
                "report.min_interval_s",
                format!(
                    "{} is above max_interval_s {}",
                    r.min_interval_s, r.max_interval_s
                ),
            ));
        }
        let [lat, lon] = self.area.centre;
        if !((-85.0..=85.0).contains(&lat) && (-180.0..=180.0).contains(&lon)) {
            return Err(bad(
                "area.centre",
                format!("[{lat}, {lon}] is not a position"),
            ));
        }
        if !(0.1..=100.0).contains(&self.area.half_size_km) {
            return Err(bad(
                "area.half_size_km",
                format!("{} is not from 0.1 to 100", self.area.half_size_km),
            ));
        }
        let area = match self.area.waypoints {
            Some(w) => Area::Waypoints(PathBuf::from(w)),
            None => Area::Grid {
                centre: (lat, lon),
                half_size_m: self.area.half_size_km * 1000.0,
            },
        };
        let mut groups = Vec::with_capacity(self.group.len());
        for (i, g) in self.group.into_iter().enumerate() {
            let key = |k: &str| format!("group[{i}].{k}");
            if let Err(e) = tributary_protocol::validate_device_id(&g.name) {
                return Err(bad(&key("name"), format!("{:?}: {e}", g.name)));
            }
            if groups.iter().any(|o: &Group| o.name == g.name) {
                return Err(bad(&key("name"), format!("{:?} is used twice", g.name)));
            }
            let link = match (g.transport.as_str(), g.qos) {
                ("tcp", _) => Link::Tcp,
                ("mqtt", qos @ (0 | 1)) => Link::Mqtt { qos },
                ("mqtt5", qos @ (0 | 1)) => Link::Mqtt5 { qos },
                ("mqtt" | "mqtt5", qos) => {
                    return Err(bad(&key("qos"), format!("{qos} is not 0 or 1")))
                }
                (other, _) => {
                    return Err(bad(
                        &key("transport"),
                        format!("{other:?} is not \"tcp\", \"mqtt\" or \"mqtt5\""),
                    ))
                }
            };
            if g.count > MAX_GROUP_DEVICES {
                return Err(bad(
                    &key("count"),
                    format!("{} is more than {MAX_GROUP_DEVICES}", g.count),
                ));
            }
            let interval = secs(&key("interval_s"), g.interval_s)?;
            if interval.is_zero() {
                return Err(bad(&key("interval_s"), "must be more than 0".into()));
            }
            groups.push(Group {
                name: g.name,
                model: g.model,
                count: g.count,
                link,
                interval,
            });
        }
        if groups.iter().all(|g| g.count == 0) {
            return Err(bad("group", "no devices: every group has count 0".into()));
        }
        let backoff = Backoff {
            initial: Duration::from_millis(self.backoff.initial_ms.max(1)),
            max: Duration::from_millis(self.backoff.max_ms.max(self.backoff.initial_ms).max(1)),
        };
        let duration = secs("duration_s", self.duration_s)?;
        if self.events == 0 && duration.is_zero() {
            return Err(bad(
                "events",
                "0 events and 0 duration_s would never end; set one".into(),
            ));
        }
        Ok(Scenario {
            seed: self.seed,
            prefix: self.prefix,
            events: self.events,
            duration: (!duration.is_zero()).then_some(duration),
            speedup: self.speedup,
            start_ms: self.start_ms,
            seq_start: self.seq_start,
            batch: self.batch,
            ramp: secs("ramp_s", self.ramp_s)?,
            ack_timeout: secs("ack_timeout_s", self.ack_timeout_s)?.max(Duration::from_millis(100)),
            give_up: secs("give_up_s", self.give_up_s)?,
            tcp: addr("gateway.tcp", &self.gateway.tcp)?,
            mqtt: addr("gateway.mqtt", &self.gateway.mqtt)?,
            backoff,
            faults: self.faults,
            area,
            report: self.report,
            groups,
            credentials: Default::default(),
            commands: false,
        })
    }
}

/// Overlays `over` onto `base`, table by table; arrays (such as `group`) are replaced whole.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

impl Group {
    /// The id of this group's `index`-th device.
    pub fn device_id(&self, prefix: &str, index: usize) -> String {
        if self.name.is_empty() {
            format!("{prefix}-{index}")
        } else {
            format!("{prefix}-{}-{index}", self.name)
        }
    }
}

impl Scenario {
    /// Devices in all groups.
    pub fn device_count(&self) -> usize {
        self.groups.iter().map(|g| g.count).sum()
    }

    /// Sets the total number of devices, shared among the groups in proportion to their
    /// counts (largest remainder), each non-empty group keeping at least one while `total`
    /// allows.
    pub fn scale_to(&mut self, total: usize) {
        let before = self.device_count();
        if before == 0 {
            return;
        }
        let live: Vec<usize> = (0..self.groups.len())
            .filter(|&i| self.groups[i].count > 0)
            .collect();
        let mut shares: Vec<(usize, usize, usize)> = live
            .iter()
            .map(|&i| {
                let exact = self.groups[i].count * total;
                (i, exact / before, exact % before)
            })
            .collect();
        let mut left = total - shares.iter().map(|s| s.1).sum::<usize>();
        // First lift empty shares to one, then hand out by largest remainder.
        for s in shares.iter_mut().filter(|s| s.1 == 0) {
            if left == 0 {
                break;
            }
            s.1 = 1;
            s.2 = 0;
            left -= 1;
        }
        shares.sort_by_key(|s| std::cmp::Reverse(s.2));
        for s in shares.iter_mut() {
            if left == 0 {
                break;
            }
            s.1 += 1;
            left -= 1;
        }
        for (i, count, _) in shares {
            self.groups[i].count = count;
        }
    }

    /// Sends every group over `link`.
    pub fn force_link(&mut self, link: Link) {
        for g in &mut self.groups {
            g.link = link;
        }
    }

    /// A scenario of `devices` environment sensors named `{prefix}-{i}` over `link`, each
    /// sending `events` readings as fast as acknowledgements allow, without faults: the plain
    /// load the end-to-end tests use.
    pub fn plain(
        tcp: SocketAddr,
        mqtt: SocketAddr,
        link: Link,
        prefix: &str,
        devices: usize,
        events: u64,
    ) -> Self {
        Self {
            seed: 1,
            prefix: prefix.to_owned(),
            events,
            duration: None,
            speedup: 0.0,
            start_ms: None,
            seq_start: Some(1),
            batch: 10,
            ramp: Duration::ZERO,
            ack_timeout: Duration::from_secs(30),
            give_up: Duration::from_secs(120),
            tcp,
            mqtt,
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(2),
            },
            faults: FaultRates::NONE,
            credentials: Default::default(),
            commands: false,
            area: Area::Grid {
                centre: (52.52, 13.405),
                half_size_m: 3000.0,
            },
            report: ReportPolicy::default(),
            groups: vec![Group {
                name: String::new(),
                model: ModelKind::Environment,
                count: devices,
                link,
                interval: Duration::from_secs(60),
            }],
        }
    }
}

#[cfg(test)]
mod tests;
