//! An environmental station: temperature, humidity, pressure and CO2.
//!
//! - **Temperature** follows the sun: a daily cosine peaking at 15:00 local solar time (from
//!   the station's longitude), plus a slow weather anomaly (an AR(1) process with a time
//!   constant of hours), sensor drift (a fixed rate per day) and white noise.
//! - **Humidity** comes from a dew point that follows the weather, not the daily cycle, so
//!   relative humidity falls in the afternoon and rises at night, as it does outdoors.
//! - **Pressure** is sea level pressure reduced for altitude, with a mean-reverting synoptic
//!   walk (a few hPa per day).
//! - **CO2** starts at the outdoor 420 ppm; indoor stations rise towards an occupancy target on
//!   working hours and decay overnight.

use std::f64::consts::TAU;

use rand::rngs::StdRng;
use rand::Rng;
use tributary_protocol::{Body, Reading, SensorValue};

use super::faults::{FaultRates, Faults};
use super::{normal, Step};

const DAY_MS: f64 = 86_400_000.0;

#[derive(Debug, Clone)]
pub struct Environment {
    pub(crate) interval_ms: u64,
    longitude: f64,
    indoor: bool,
    mean_c: f64,
    amplitude_c: f64,
    dew_spread_c: f64,
    altitude_m: f64,
    drift_c_per_day: f64,
    weather_c: f64,
    synoptic_hpa: f64,
    co2_ppm: f64,
    elapsed_ms: f64,
    pub faults: Faults,
}

impl Environment {
    /// A station at `longitude` reporting every `interval_ms`, its climate drawn from `rng`.
    pub fn new(rng: &mut StdRng, interval_ms: u64, longitude: f64, faults: FaultRates) -> Self {
        let indoor = rng.random_bool(0.4);
        Self {
            interval_ms: interval_ms.max(1),
            longitude,
            indoor,
            mean_c: if indoor {
                rng.random_range(19.0..23.0)
            } else {
                rng.random_range(6.0..20.0)
            },
            amplitude_c: if indoor {
                rng.random_range(0.5..1.5)
            } else {
                rng.random_range(3.0..7.0)
            },
            dew_spread_c: rng.random_range(4.0..10.0),
            altitude_m: rng.random_range(0.0..400.0),
            drift_c_per_day: normal(rng, 0.0, 0.02),
            weather_c: normal(rng, 0.0, 1.5),
            synoptic_hpa: normal(rng, 0.0, 6.0),
            co2_ppm: 420.0,
            elapsed_ms: 0.0,
            faults: Faults::new(faults, 4),
        }
    }

    pub fn step(&mut self, now_ms: u64, rng: &mut StdRng) -> Step {
        let dt = self.interval_ms as f64;
        self.elapsed_ms += dt;
        let t_ms = now_ms as f64 + dt;
        // Weather: AR(1) with a 6 h time constant, stationary sigma 2 C; pressure: 2 days, 8 hPa.
        self.weather_c = ar1(rng, self.weather_c, dt, 6.0 * 3.6e6, 2.0);
        self.synoptic_hpa = ar1(rng, self.synoptic_hpa, dt, 48.0 * 3.6e6, 8.0);

        let solar_hour = (t_ms / 3.6e6 + self.longitude / 15.0).rem_euclid(24.0);
        let daily = (TAU * (solar_hour - 15.0) / 24.0).cos();
        let true_c = self.mean_c + self.amplitude_c * daily + self.weather_c;
        let dew_c = self.mean_c - self.dew_spread_c + self.weather_c;
        let rh = (100.0 * saturation(dew_c) / saturation(true_c)).clamp(5.0, 100.0);
        let hpa = 1013.25 + self.synoptic_hpa - self.altitude_m * 0.12;
        let occupied = self.indoor && (8.0..18.0).contains(&solar_hour);
        let target = if occupied { 1100.0 } else { 420.0 };
        self.co2_ppm += (target - self.co2_ppm) * (1.0 - (-dt / (40.0 * 60_000.0)).exp());

        if self.faults.dropout(rng) {
            return Step {
                after_ms: self.interval_ms,
                body: None,
            };
        }
        let drift = self.drift_c_per_day * self.elapsed_ms / DAY_MS;
        let temperature = round(normal(rng, true_c + drift, 0.1), 2);
        let humidity = round(normal(rng, rh, 0.8).clamp(0.0, 100.0), 1);
        let pressure = round(normal(rng, hpa, 0.05), 2);
        let co2 = round(normal(rng, self.co2_ppm, 8.0).max(350.0), 0);
        let values = [
            (
                "temperature",
                self.faults.apply(rng, 0, temperature, 2.0),
                "Cel",
            ),
            ("humidity", self.faults.apply(rng, 1, humidity, 5.0), "%"),
            ("pressure", self.faults.apply(rng, 2, pressure, 3.0), "hPa"),
            ("co2", self.faults.apply(rng, 3, co2, 50.0), "ppm"),
        ];
        Step {
            after_ms: self.interval_ms,
            body: Some(reading(&values)),
        }
    }
}

/// An AR(1) step of `dt_ms` towards 0 with time constant `tau_ms` and stationary `sigma`.
pub(crate) fn ar1(rng: &mut StdRng, x: f64, dt_ms: f64, tau_ms: f64, sigma: f64) -> f64 {
    let a = (-dt_ms / tau_ms).exp();
    a * x + normal(rng, 0.0, sigma * (1.0 - a * a).sqrt())
}

/// Saturation vapour pressure (Magnus formula), in hPa.
fn saturation(celsius: f64) -> f64 {
    6.1094 * (17.625 * celsius / (celsius + 243.04)).exp()
}

pub(crate) fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

pub(crate) fn reading(values: &[(&str, f64, &str)]) -> Body {
    Body::Reading(Reading {
        values: values
            .iter()
            .map(|(name, value, unit)| SensorValue {
                name: (*name).to_owned(),
                value: *value,
                unit: (*unit).to_owned(),
            })
            .collect(),
    })
}
