//! What simulated devices measure: the signal models behind every stream.
//!
//! A [`Model`] is stepped in simulated time. Each [`Step`] says how much simulated time passed
//! and what the device reported then: a reading, a position, or nothing (a dropout: the sensor
//! did not answer, the GNSS had no fix). Models own no randomness: the caller passes the device's
//! seeded generator, so a device's stream is a pure function of the scenario seed and its id.
//!
//! - [`environment`]: a weather station or room sensor (temperature with a daily cycle,
//!   humidity from a dew point, pressure, CO2 with occupancy).
//! - [`machine`]: a motor with duty cycles (vibration with bearing wear, current with load).
//! - [`faults`]: spikes, stuck values and dropouts, injected at configured rates.
//! - [`roads`] and [`vehicle`]: trucks and cars driving a road network with GPS noise.

pub mod environment;
pub mod faults;
pub mod geo;
pub mod machine;
pub mod roads;
pub mod vehicle;

use rand::rngs::StdRng;
use tributary_protocol::Body;

pub use environment::Environment;
pub use faults::{FaultRates, Faults};
pub use machine::Machine;
pub use vehicle::{Vehicle, VehicleClass};

/// One step of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Simulated milliseconds since the previous step.
    pub after_ms: u64,
    /// What was reported, or `None` for a dropout.
    pub body: Option<Body>,
}

/// Every device model.
#[derive(Debug, Clone)]
pub enum Model {
    Environment(Environment),
    Machine(Machine),
    Vehicle(Box<Vehicle>),
}

impl Model {
    /// Advances the model to its next report. `now_ms` is the simulated wall clock (for the
    /// time of day) before the step.
    pub fn step(&mut self, now_ms: u64, rng: &mut StdRng) -> Step {
        match self {
            Model::Environment(m) => m.step(now_ms, rng),
            Model::Machine(m) => m.step(rng),
            Model::Vehicle(m) => m.step(rng),
        }
    }

    /// Faults injected so far (spikes, stuck runs, dropouts).
    /// How often the model reports, for stations and machines; `None` for vehicles, which
    /// report by their own policy (`scenario.report`).
    pub fn interval_ms(&self) -> Option<u64> {
        match self {
            Model::Environment(m) => Some(m.interval_ms),
            Model::Machine(m) => Some(m.interval_ms),
            Model::Vehicle(_) => None,
        }
    }

    /// Sets the reporting interval (a `set_interval` command); `false` for a vehicle.
    pub fn set_interval_ms(&mut self, ms: u64) -> bool {
        match self {
            Model::Environment(m) => m.interval_ms = ms.max(1),
            Model::Machine(m) => m.interval_ms = ms.max(1),
            Model::Vehicle(_) => return false,
        }
        true
    }

    pub fn faults(&self) -> faults::Injected {
        match self {
            Model::Environment(m) => m.faults.injected,
            Model::Machine(m) => m.faults.injected,
            Model::Vehicle(m) => m.dropouts(),
        }
    }
}

/// A normally distributed sample; `sigma <= 0` gives `mean`.
pub(crate) fn normal(rng: &mut StdRng, mean: f64, sigma: f64) -> f64 {
    use rand_distr::Distribution;
    match rand_distr::Normal::new(mean, sigma) {
        Ok(d) if sigma > 0.0 => d.sample(rng),
        _ => mean,
    }
}
