//! Injected sensor faults, as field data shows them.
//!
//! - A **spike**: one sample far off the signal (an ADC glitch, EMI), then back to normal.
//! - A **stuck** value: the sensor repeats its last value for a while (a hung I2C read
//!   returning the cached register).
//! - A **dropout**: the device reports nothing for a while (sensor not answering).
//!
//! Rates are probabilities per sample. A stuck run or dropout lasts a geometric number of
//! samples with the configured mean. Each value channel has its own stuck state; dropouts are
//! per device.

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Fault probabilities per sample, and how long stuck runs and dropouts last on average.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultRates {
    /// Probability that a value spikes.
    pub spike: f64,
    /// Probability that a value gets stuck.
    pub stuck: f64,
    /// Probability that the device drops out.
    pub dropout: f64,
    /// Mean samples a stuck run lasts.
    pub stuck_samples: f64,
    /// Mean samples a dropout lasts.
    pub dropout_samples: f64,
}

impl Default for FaultRates {
    fn default() -> Self {
        Self {
            spike: 0.001,
            stuck: 0.0005,
            dropout: 0.001,
            stuck_samples: 20.0,
            dropout_samples: 5.0,
        }
    }
}

impl FaultRates {
    /// No faults at all.
    pub const NONE: Self = Self {
        spike: 0.0,
        stuck: 0.0,
        dropout: 0.0,
        stuck_samples: 1.0,
        dropout_samples: 1.0,
    };
}

/// How many faults were injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injected {
    pub spikes: u64,
    pub stuck: u64,
    pub dropouts: u64,
}

/// The fault state of one device with `channels` values.
#[derive(Debug, Clone)]
pub struct Faults {
    rates: FaultRates,
    /// Per channel: the held value and samples left.
    stuck: Vec<Option<(f64, u32)>>,
    dropout_left: u32,
    pub injected: Injected,
}

impl Faults {
    pub fn new(rates: FaultRates, channels: usize) -> Self {
        Self {
            rates,
            stuck: vec![None; channels],
            dropout_left: 0,
            injected: Injected::default(),
        }
    }

    /// True if this sample is lost to a dropout.
    pub fn dropout(&mut self, rng: &mut StdRng) -> bool {
        if self.dropout_left > 0 {
            self.dropout_left -= 1;
            return true;
        }
        if chance(rng, self.rates.dropout) {
            self.injected.dropouts += 1;
            self.dropout_left = run_length(rng, self.rates.dropout_samples).saturating_sub(1);
            return true;
        }
        false
    }

    /// The value channel `channel` reports for the true `value`; `scale` is the size of a
    /// spike (a spike lands 5 to 20 scales away).
    pub fn apply(&mut self, rng: &mut StdRng, channel: usize, value: f64, scale: f64) -> f64 {
        if let Some(slot) = self.stuck.get_mut(channel) {
            if let Some((held, left)) = slot {
                let held = *held;
                *left -= 1;
                if *left == 0 {
                    *slot = None;
                }
                return held;
            }
            if chance(rng, self.rates.stuck) {
                self.injected.stuck += 1;
                let n = run_length(rng, self.rates.stuck_samples);
                if n > 1 {
                    *slot = Some((value, n - 1));
                }
                return value;
            }
        }
        if chance(rng, self.rates.spike) {
            self.injected.spikes += 1;
            let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            return value + sign * scale * rng.random_range(5.0..20.0);
        }
        value
    }
}

fn chance(rng: &mut StdRng, p: f64) -> bool {
    p > 0.0 && rng.random_bool(p.min(1.0))
}

/// A geometric run length with mean `mean` (at least 1).
fn run_length(rng: &mut StdRng, mean: f64) -> u32 {
    if mean <= 1.0 {
        return 1;
    }
    let p = 1.0 / mean;
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    (u.ln() / (1.0 - p).ln()).ceil().clamp(1.0, 1e6) as u32
}
