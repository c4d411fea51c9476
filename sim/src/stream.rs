//! A device's stream: its model, its seeded generator, its clock and its seq counter.
//!
//! Each device's generator is seeded from the scenario seed and the device id (FNV-1a), so a
//! device's events do not depend on how many other devices there are, on the transport, or on
//! timing: the same seed (with the same `start_ms` and `seq_start`) gives the same stream, value
//! for value. Seqs count events actually
//! produced (a dropout consumes simulated time, not a seq), as firmware numbers what it sends.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tributary_protocol::Event;

use crate::model::roads::RoadNetwork;
use crate::model::{Environment, Machine, Model, Vehicle, VehicleClass};
use crate::scenario::{Group, ModelKind, Scenario};

/// Gives up looking for the next event after this many consecutive dropouts (only a fault rate
/// near 1 gets here).
const MAX_DROPOUT_RUN: u32 = 1_000_000;

#[derive(Debug, Clone)]
pub struct DeviceStream {
    pub id: String,
    pub model_kind: ModelKind,
    /// The seq the next event gets.
    pub next_seq: u64,
    /// Simulated time of the last step, in ms since the Unix epoch.
    pub clock_ms: u64,
    model: Model,
    rng: StdRng,
}

impl DeviceStream {
    /// The stream of `group`'s `index`-th device.
    pub fn new(
        scenario: &Scenario,
        roads: &Arc<RoadNetwork>,
        group: &Group,
        index: usize,
        start_ms: u64,
        seq_start: u64,
    ) -> Self {
        let id = group.device_id(&scenario.prefix, index);
        let mut rng = StdRng::seed_from_u64(scenario.seed ^ fnv1a(id.as_bytes()));
        let interval_ms = group.interval.as_millis().max(1) as u64;
        let vehicle = |class, rng: &mut StdRng| {
            Model::Vehicle(Box::new(Vehicle::new(
                Arc::clone(roads),
                class,
                scenario.report,
                rng,
            )))
        };
        let model = match group.model {
            ModelKind::Environment => Model::Environment(Environment::new(
                &mut rng,
                interval_ms,
                roads.origin.lon,
                scenario.faults,
            )),
            ModelKind::Machine => {
                Model::Machine(Machine::new(&mut rng, interval_ms, scenario.faults))
            }
            ModelKind::Truck => vehicle(VehicleClass::Truck, &mut rng),
            ModelKind::Car => vehicle(VehicleClass::Car, &mut rng),
        };
        Self {
            id,
            model_kind: group.model,
            next_seq: seq_start,
            clock_ms: start_ms,
            model,
            rng,
        }
    }

    /// The next event, after any dropouts.
    pub fn next_event(&mut self) -> Event {
        let mut lost = 0;
        loop {
            let step = self.model.step(self.clock_ms, &mut self.rng);
            self.clock_ms += step.after_ms;
            match step.body {
                Some(body) => return self.emit(body),
                None if lost < MAX_DROPOUT_RUN => lost += 1,
                // A device that never answers still sends a heartbeat reading with no fault.
                None => {
                    return self.emit(crate::model::environment::reading(&[("status", 0.0, "")]))
                }
            }
        }
    }

    fn emit(&mut self, body: tributary_protocol::Body) -> Event {
        let seq = self.next_seq;
        self.next_seq += 1;
        Event {
            device_id: self.id.clone(),
            seq,
            time_ms: self.clock_ms,
            body,
        }
    }

    /// The reporting interval, where the model has one (stations, machines).
    pub fn interval_ms(&self) -> Option<u64> {
        self.model.interval_ms()
    }

    /// Changes the reporting interval from the next event on; `false` for a vehicle. The
    /// stream is then no longer a function of the seed alone but of the commands too.
    pub fn set_interval_ms(&mut self, ms: u64) -> bool {
        self.model.set_interval_ms(ms)
    }

    pub fn faults(&self) -> crate::model::faults::Injected {
        self.model.faults()
    }

    /// The vehicle behind this stream, for tests.
    pub fn vehicle(&self) -> Option<&Vehicle> {
        match &self.model {
            Model::Vehicle(v) => Some(v),
            _ => None,
        }
    }
}

/// The road network of a scenario: its waypoints file, or a grid drawn from its seed.
pub fn roads(scenario: &Scenario) -> Result<RoadNetwork, crate::model::roads::RoadsError> {
    match &scenario.area {
        crate::scenario::Area::Waypoints(path) => RoadNetwork::from_file(path),
        crate::scenario::Area::Grid {
            centre,
            half_size_m,
        } => {
            let mut rng = StdRng::seed_from_u64(scenario.seed);
            Ok(RoadNetwork::grid(
                crate::model::geo::Origin {
                    lat: centre.0,
                    lon: centre.1,
                },
                *half_size_m,
                &mut rng,
            ))
        }
    }
}

/// Every device stream of a scenario, group by group.
pub fn fleet(
    scenario: &Scenario,
    roads: &Arc<RoadNetwork>,
    start_ms: u64,
    seq_start: u64,
) -> Vec<(usize, DeviceStream)> {
    let mut out = Vec::with_capacity(scenario.device_count());
    for (g, group) in scenario.groups.iter().enumerate() {
        for i in 0..group.count {
            out.push((
                g,
                DeviceStream::new(scenario, roads, group, i, start_ms, seq_start),
            ));
        }
    }
    out
}

/// FNV-1a, 64 bit: a stable hash (std's is not stable across releases).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests;
