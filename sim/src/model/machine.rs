//! A machine monitor: vibration and motor current of a motor that runs in duty cycles.
//!
//! The motor alternates between running (mean 2 h) and idle (mean 30 min), as a two-state
//! Markov chain. Running, the current follows the load (a slow walk between 55 % and 100 % of
//! the rated current) and vibration (RMS velocity, ISO 10816 style, mm/s) grows with bearing
//! wear, which accumulates with running time: the slow drift predictive maintenance looks for.
//! Idle, both sit at the noise floor.

use rand::rngs::StdRng;
use rand::Rng;

use super::environment::{ar1, reading, round};
use super::faults::{FaultRates, Faults};
use super::{normal, Step};

#[derive(Debug, Clone)]
pub struct Machine {
    pub(crate) interval_ms: u64,
    rated_a: f64,
    base_vibration: f64,
    wear_per_hour: f64,
    running: bool,
    run_hours: f64,
    load: f64,
    pub faults: Faults,
}

impl Machine {
    pub fn new(rng: &mut StdRng, interval_ms: u64, faults: FaultRates) -> Self {
        Self {
            interval_ms: interval_ms.max(1),
            rated_a: rng.random_range(8.0..40.0),
            base_vibration: rng.random_range(1.0..2.8),
            wear_per_hour: rng.random_range(0.0005..0.004),
            running: rng.random_bool(0.7),
            run_hours: rng.random_range(0.0..500.0),
            load: 0.0,
            faults: Faults::new(faults, 2),
        }
    }

    pub fn step(&mut self, rng: &mut StdRng) -> Step {
        let dt = self.interval_ms as f64;
        let mean_ms = if self.running {
            2.0 * 3.6e6
        } else {
            0.5 * 3.6e6
        };
        if rng.random_bool((dt / mean_ms).min(1.0)) {
            self.running = !self.running;
        }
        self.load = ar1(rng, self.load, dt, 20.0 * 60_000.0, 0.12);
        let (vibration, current) = if self.running {
            self.run_hours += dt / 3.6e6;
            let wear = 1.0 + self.wear_per_hour * self.run_hours;
            let load = (0.8 + self.load).clamp(0.55, 1.0);
            (
                normal(rng, self.base_vibration * wear, 0.15),
                normal(rng, self.rated_a * load, 0.2),
            )
        } else {
            (normal(rng, 0.05, 0.02), normal(rng, 0.1, 0.05))
        };
        if self.faults.dropout(rng) {
            return Step {
                after_ms: self.interval_ms,
                body: None,
            };
        }
        let vibration = round(vibration.max(0.0), 3);
        let current = round(current.max(0.0), 2);
        let values = [
            (
                "vibration",
                self.faults.apply(rng, 0, vibration, 1.0),
                "mm/s",
            ),
            ("current", self.faults.apply(rng, 1, current, 5.0), "A"),
        ];
        Step {
            after_ms: self.interval_ms,
            body: Some(reading(&values)),
        }
    }
}
