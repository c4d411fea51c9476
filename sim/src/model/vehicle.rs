//! A truck or car driving a [`RoadNetwork`], reporting GNSS fixes the way trackers do.
//!
//! **Driving** is integrated in one-second ticks. A vehicle picks a destination at random and
//! follows the fastest route to it ([`RoadNetwork::route`]); there it stops (a delivery for a
//! truck, 2 to 15 minutes; parking for a car, 1 to 10) and sets off to the next. It accelerates
//! towards its desired speed (the road's limit times the driver's factor, at most 3 % over,
//! and at most the class's top speed) and brakes in time for the end of each road: to walking
//! pace for a turn, to the next road's speed, or to a standstill for a red light (crossings on
//! arterials, three in ten) or the destination.
//!
//! **Reporting** depends on speed, like commercial trackers: a fix every 200 m of travel,
//! bounded to every 5 to 30 s while moving, and every 60 s when stopped.
//!
//! **GNSS**: the reported position is the true one plus Gaussian noise with a per-axis sigma of
//! `HDOP × 2 m` ([`SIGMA_PER_HDOP_M`]). HDOP wanders around 0.9 in the open and around 3.5 in
//! urban canyons, where one fix in ten is lost; in tunnels there is no fix at all. A lost fix
//! is a dropout: nothing is sent.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tributary_protocol::{Body, FixQuality, Position};

use super::environment::{ar1, round};
use super::faults::Injected;
use super::normal;
use super::roads::RoadNetwork;
use super::Step;

/// Per-axis position noise, in metres, per unit of HDOP.
pub const SIGMA_PER_HDOP_M: f64 = 2.0;

/// What kind of vehicle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VehicleClass {
    Truck,
    Car,
}

impl VehicleClass {
    /// Top speed, acceleration and braking, in m/s and m/s².
    fn dynamics(self) -> (f64, f64, f64) {
        match self {
            VehicleClass::Truck => (25.0, 0.7, 2.0),
            VehicleClass::Car => (38.0, 2.5, 3.5),
        }
    }
}

/// When a tracker reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportPolicy {
    /// A fix every this many metres travelled...
    pub distance_m: f64,
    /// ...but not more often than this, in seconds...
    pub min_interval_s: f64,
    /// ...nor less often than this while moving.
    pub max_interval_s: f64,
    /// While stopped.
    pub stopped_interval_s: f64,
}

impl Default for ReportPolicy {
    fn default() -> Self {
        Self {
            distance_m: 200.0,
            min_interval_s: 5.0,
            max_interval_s: 30.0,
            stopped_interval_s: 60.0,
        }
    }
}

impl ReportPolicy {
    /// Seconds between fixes at speed `v` (m/s).
    pub fn interval_s(&self, v: f64) -> f64 {
        if v < 0.5 {
            self.stopped_interval_s
        } else {
            (self.distance_m / v).clamp(self.min_interval_s, self.max_interval_s)
        }
    }
}

/// The true state, for tests and statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Truth {
    /// Metres east and north of the network's origin.
    pub x: f64,
    pub y: f64,
    pub speed_mps: f64,
    pub limit_mps: f64,
}

#[derive(Debug, Clone)]
pub struct Vehicle {
    net: Arc<RoadNetwork>,
    class: VehicleClass,
    policy: ReportPolicy,
    /// Current edge, direction (true: from `a` to `b`) and metres along it in that direction.
    edge: usize,
    forward: bool,
    along_m: f64,
    /// The edge after this one, and how long to stop at the node in between (s).
    next: (usize, bool),
    stop_s: f64,
    speed: f64,
    driver: f64,
    stopped_left_s: f64,
    since_report_s: f64,
    hdop: f64,
    heading: f64,
    lost_fixes: u64,
    /// The rest of the route to the current destination.
    route: std::collections::VecDeque<(usize, bool)>,
    /// Destinations chosen so far.
    trips: u64,
}

impl Vehicle {
    /// A vehicle somewhere on `net`, its start and driver drawn from `rng`.
    pub fn new(
        net: Arc<RoadNetwork>,
        class: VehicleClass,
        policy: ReportPolicy,
        rng: &mut StdRng,
    ) -> Self {
        let edge = rng.random_range(0..net.edges.len().max(1));
        let forward = rng.random_bool(0.5);
        let along_m = rng.random_range(0.0..net.edges.get(edge).map_or(1.0, |e| e.length_m));
        let mut v = Self {
            net,
            class,
            policy,
            edge,
            forward,
            along_m,
            next: (edge, !forward),
            stop_s: 0.0,
            speed: 0.0,
            driver: rng.random_range(0.85..1.03),
            stopped_left_s: 0.0,
            since_report_s: rng.random_range(0.0..policy.min_interval_s.max(1.0)),
            hdop: 0.9,
            heading: 0.0,
            lost_fixes: 0,
            route: std::collections::VecDeque::new(),
            trips: 0,
        };
        v.plan_next(rng);
        v
    }

    /// Drives until the next report is due and returns it.
    pub fn step(&mut self, rng: &mut StdRng) -> Step {
        let mut ticks = 0u64;
        loop {
            self.tick(rng);
            ticks += 1;
            self.since_report_s += 1.0;
            if self.since_report_s >= self.policy.interval_s(self.speed) {
                self.since_report_s = 0.0;
                return Step {
                    after_ms: ticks * 1000,
                    body: self.fix(rng).map(Body::Position),
                };
            }
        }
    }

    pub fn truth(&self) -> Truth {
        let (x, y) = self.location();
        Truth {
            x,
            y,
            speed_mps: self.speed,
            limit_mps: self.net.edges[self.edge].limit_mps,
        }
    }

    pub fn network(&self) -> &RoadNetwork {
        &self.net
    }

    pub fn dropouts(&self) -> Injected {
        Injected {
            dropouts: self.lost_fixes,
            ..Injected::default()
        }
    }

    fn desired(&self, edge: usize) -> f64 {
        let (top, _, _) = self.class.dynamics();
        (self.net.edges[edge].limit_mps * self.driver).min(top)
    }

    /// Direction of travel on an edge, as a unit vector.
    fn direction(&self, edge: usize, forward: bool) -> (f64, f64) {
        let e = &self.net.edges[edge];
        let (from, to) = if forward { (e.a, e.b) } else { (e.b, e.a) };
        let (fx, fy) = self.net.nodes[from];
        let (tx, ty) = self.net.nodes[to];
        let len = (tx - fx).hypot(ty - fy).max(1e-9);
        ((tx - fx) / len, (ty - fy) / len)
    }

    fn location(&self) -> (f64, f64) {
        let e = &self.net.edges[self.edge];
        let from = if self.forward { e.a } else { e.b };
        let (fx, fy) = self.net.nodes[from];
        let (dx, dy) = self.direction(self.edge, self.forward);
        let along = self.along_m.min(e.length_m);
        (fx + dx * along, fy + dy * along)
    }

    /// Chooses the road after this one and whether to stop before it. A vehicle follows a
    /// route to a destination; on arrival it stops (a delivery for a truck, parking for a car)
    /// and routes to a new destination.
    fn plan_next(&mut self, rng: &mut StdRng) {
        let e = &self.net.edges[self.edge];
        let node = if self.forward { e.b } else { e.a };
        let arrived = self.route.is_empty();
        if arrived {
            let destination = rng.random_range(0..self.net.nodes.len());
            self.route = self.net.route(node, destination).unwrap_or_default().into();
        }
        let (next, next_forward) = match self.route.pop_front() {
            Some(step) => step,
            None => {
                // Unreachable or already there: any road out (back only at a dead end).
                let options: Vec<usize> = self.net.adjacent[node]
                    .iter()
                    .copied()
                    .filter(|&id| id != self.edge)
                    .collect();
                let next = options
                    .get(rng.random_range(0..options.len().max(1)))
                    .copied()
                    .unwrap_or(self.edge);
                (next, self.net.edges[next].a == node)
            }
        };
        self.next = (next, next_forward);
        let crossing = self.net.adjacent[node].len() > 2;
        let arterial = |id: usize| self.net.edges[id].limit_mps >= 49.0 / 3.6;
        self.stop_s = if crossing && (arterial(self.edge) || arterial(next)) && rng.random_bool(0.3)
        {
            rng.random_range(10.0..60.0) // a red light
        } else {
            0.0
        };
        if arrived && self.trips > 0 {
            self.stop_s = match self.class {
                VehicleClass::Truck => rng.random_range(120.0..900.0),
                VehicleClass::Car => rng.random_range(60.0..600.0),
            };
        }
        if arrived {
            self.trips += 1;
        }
    }

    fn tick(&mut self, rng: &mut StdRng) {
        if self.stopped_left_s > 0.0 {
            self.stopped_left_s -= 1.0;
            self.speed = 0.0;
            return;
        }
        let (_, accel, brake) = self.class.dynamics();
        let length = self.net.edges[self.edge].length_m;
        let left = (length - self.along_m).max(0.0);
        let (next, next_forward) = self.next;
        let (dx, dy) = self.direction(self.edge, self.forward);
        let (nx, ny) = self.direction(next, next_forward);
        let straight = dx * nx + dy * ny > 0.94; // within about 20 degrees
        let end_speed = if self.stop_s > 0.0 {
            0.0
        } else if straight {
            self.desired(next)
        } else {
            self.desired(next).min(5.0)
        };
        let can_stop_from = (end_speed * end_speed + 2.0 * brake * left).sqrt();
        let target = self.desired(self.edge).min(can_stop_from).max(1.0);
        self.speed = if self.speed < target {
            (self.speed + accel).min(target)
        } else {
            (self.speed - 1.5 * brake).max(target)
        };
        self.along_m += self.speed;
        if self.along_m >= length {
            let carry = self.along_m - length;
            self.edge = next;
            self.forward = next_forward;
            self.speed = self.speed.min(self.desired(next));
            if self.stop_s > 0.0 {
                self.stopped_left_s = self.stop_s;
                self.speed = 0.0;
                self.along_m = 0.0;
            } else {
                self.along_m = carry.min(self.net.edges[next].length_m);
            }
            self.plan_next(rng);
        }
        if self.speed > 0.3 {
            let (dx, dy) = self.direction(self.edge, self.forward);
            self.heading = dx.atan2(dy).to_degrees().rem_euclid(360.0);
        }
    }

    fn fix(&mut self, rng: &mut StdRng) -> Option<Position> {
        let edge = &self.net.edges[self.edge];
        let (open, canyon) = (0.9, 3.5);
        let mean = if edge.canyon { canyon } else { open };
        // HDOP wanders around its environment's mean with a 2-minute time constant.
        self.hdop = (mean + ar1(rng, self.hdop - mean, 10_000.0, 120_000.0, 0.25)).clamp(0.5, 8.0);
        if edge.tunnel || (edge.canyon && rng.random_bool(0.1)) {
            self.lost_fixes += 1;
            return None;
        }
        let sigma = self.hdop * SIGMA_PER_HDOP_M;
        let (x, y) = self.location();
        let (lat, lon) = self
            .net
            .origin
            .to_geo(normal(rng, x, sigma), normal(rng, y, sigma));
        let speed = normal(rng, self.speed, 0.05 * self.hdop).max(0.0);
        Some(Position {
            lat: round(lat, 7),
            lon: round(lon, 7),
            alt_m: Some(round(normal(rng, 40.0, 1.5 * sigma), 1) as f32),
            speed_mps: Some(round(speed, 2) as f32),
            heading_deg: Some(round(normal(rng, self.heading, 1.0).rem_euclid(360.0), 1) as f32),
            hdop: Some(round(self.hdop, 1) as f32),
            satellites: Some((14.0 - 2.0 * self.hdop).round().clamp(4.0, 14.0) as u8),
            fix: if self.hdop < 1.0 {
                FixQuality::Dgps
            } else {
                FixQuality::Gps
            },
        })
    }
}
