use std::sync::Arc;

use tributary_protocol::{Body, Event, Position};

use super::*;
use crate::model::geo::Origin;
use crate::model::vehicle::SIGMA_PER_HDOP_M;
use crate::model::FaultRates;
use crate::scenario::Raw;

const START_MS: u64 = 1_767_225_600_000; // 2026-01-01T00:00Z

fn scenario(seed: u64) -> Scenario {
    let mut s = Raw::default_scenario()
        .unwrap()
        .validate("built-in")
        .unwrap();
    s.seed = seed;
    s
}

fn streams(s: &Scenario, n: usize) -> Vec<Vec<Event>> {
    let roads = Arc::new(roads(s).unwrap());
    fleet(s, &roads, START_MS, 1)
        .into_iter()
        .map(|(_, mut d)| (0..n).map(|_| d.next_event()).collect())
        .collect()
}

#[test]
fn the_same_seed_gives_the_same_streams_value_for_value() {
    let a = streams(&scenario(42), 300);
    let b = streams(&scenario(42), 300);
    assert_eq!(a, b);
    let c = streams(&scenario(43), 300);
    assert_ne!(a, c, "another seed, other streams");
    // A device's stream does not depend on how many others there are.
    let mut bigger = scenario(42);
    bigger.scale_to(40);
    let big = streams(&bigger, 300);
    let first_env = |all: &[Vec<Event>]| {
        all.iter()
            .find(|s| s[0].device_id == "sim-env-0")
            .cloned()
            .unwrap()
    };
    assert_eq!(first_env(&a), first_env(&big));
}

#[test]
fn seqs_are_consecutive_and_time_moves_forward() {
    for stream in streams(&scenario(1), 500) {
        for pair in stream.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq + 1);
            assert!(pair[1].time_ms > pair[0].time_ms);
        }
        for e in &stream {
            assert_eq!(e.validate(), Ok(()), "{e:?}");
        }
    }
}

fn values(e: &Event) -> Vec<(String, f64)> {
    match &e.body {
        Body::Reading(r) => r.values.iter().map(|v| (v.name.clone(), v.value)).collect(),
        Body::Position(_) => Vec::new(),
    }
}

fn value(e: &Event, name: &str) -> f64 {
    values(e)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or(f64::NAN)
}

/// Two days of one environment station sampled every 10 minutes.
fn station(faults: FaultRates, seed: u64) -> Vec<Event> {
    let mut s = scenario(seed);
    s.faults = faults;
    s.groups.truncate(1);
    s.groups[0].interval = std::time::Duration::from_secs(600);
    s.groups[0].count = 1;
    streams(&s, 288).remove(0)
}

fn solar_hour(e: &Event) -> f64 {
    (e.time_ms as f64 / 3.6e6 + 13.405 / 15.0).rem_euclid(24.0)
}

#[test]
fn stations_follow_the_sun_and_stay_physical() {
    for seed in 0..10 {
        let days = station(FaultRates::NONE, seed);
        let mean_at = |from: f64, to: f64, name: &str| {
            let v: Vec<f64> = days
                .iter()
                .filter(|e| (from..to).contains(&solar_hour(e)))
                .map(|e| value(e, name))
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        let (afternoon, night) = (
            mean_at(13.0, 17.0, "temperature"),
            mean_at(1.0, 5.0, "temperature"),
        );
        assert!(afternoon > night, "seed {seed}: {afternoon} vs {night}");
        assert!(
            mean_at(13.0, 17.0, "humidity") < mean_at(1.0, 5.0, "humidity"),
            "seed {seed}: relative humidity falls as it warms"
        );
        for e in &days {
            let (t, rh, p, co2) = (
                value(e, "temperature"),
                value(e, "humidity"),
                value(e, "pressure"),
                value(e, "co2"),
            );
            assert!((-30.0..45.0).contains(&t), "{t}");
            assert!((0.0..=100.0).contains(&rh), "{rh}");
            assert!((900.0..1060.0).contains(&p), "{p}");
            assert!((350.0..2000.0).contains(&co2), "{co2}");
        }
    }
}

#[test]
fn injected_faults_show_as_spikes_stuck_runs_and_gaps() {
    let faults = FaultRates {
        spike: 0.03,
        stuck: 0.02,
        dropout: 0.02,
        stuck_samples: 10.0,
        dropout_samples: 4.0,
    };
    let mut spikes = 0;
    let mut stuck_runs = 0;
    let mut gaps = 0;
    for seed in 0..5 {
        let days = station(faults, seed);
        let temps: Vec<f64> = days.iter().map(|e| value(e, "temperature")).collect();
        for w in temps.windows(3) {
            if (w[1] - w[0]).abs() > 8.0 && (w[1] - w[2]).abs() > 8.0 {
                spikes += 1;
            }
        }
        stuck_runs += temps
            .windows(4)
            .filter(|w| w.iter().all(|v| *v == w[0]))
            .count();
        gaps += days
            .windows(2)
            .filter(|p| p[1].time_ms - p[0].time_ms > 600_000)
            .count();
    }
    assert!(
        spikes > 0 && stuck_runs > 0 && gaps > 0,
        "{spikes} {stuck_runs} {gaps}"
    );
    // Without faults, none of them.
    let clean = station(FaultRates::NONE, 0);
    let temps: Vec<f64> = clean.iter().map(|e| value(e, "temperature")).collect();
    assert!(temps.windows(3).all(|w| (w[1] - w[0]).abs() < 8.0));
    assert!(clean
        .windows(2)
        .all(|p| p[1].time_ms - p[0].time_ms == 600_000));
}

#[test]
fn machines_run_in_duty_cycles() {
    let mut s = scenario(3);
    s.faults = FaultRates::NONE;
    s.groups = vec![crate::scenario::Group {
        count: 5,
        interval: std::time::Duration::from_secs(60),
        ..s.groups[1].clone()
    }];
    for days in streams(&s, 2880) {
        let currents: Vec<f64> = days.iter().map(|e| value(e, "current")).collect();
        let running = currents.iter().filter(|&&a| a > 3.0).count();
        let idle = currents.iter().filter(|&&a| a < 0.5).count();
        assert!(running > 100 && idle > 10, "{running} running, {idle} idle");
        for e in &days {
            let v = value(e, "vibration");
            assert!((0.0..20.0).contains(&v), "{v}");
        }
    }
}

fn position(e: &Event) -> &Position {
    match &e.body {
        Body::Position(p) => p,
        Body::Reading(_) => panic!("a vehicle reports positions"),
    }
}

/// Checks a vehicle's fixes: speeds within the limits, positions within the area, and no jump
/// between fixes beyond what the top speed and the GPS noise model allow.
fn check_route(events: &[Event], max_limit: f64, origin: Origin, bounds: (f64, f64, f64, f64)) {
    let (x0, y0, x1, y1) = bounds;
    for e in events {
        let p = position(e);
        let sigma = (f64::from(p.hdop.unwrap()) + 0.05) * SIGMA_PER_HDOP_M;
        let (x, y) = origin.to_local(p.lat, p.lon);
        let margin = 6.0 * sigma;
        assert!(
            x >= x0 - margin && x <= x1 + margin && y >= y0 - margin && y <= y1 + margin,
            "{e:?} outside the area"
        );
        let speed = f64::from(p.speed_mps.unwrap());
        assert!(
            speed <= max_limit * 1.03 + 0.3,
            "{speed} m/s over every limit: {e:?}"
        );
    }
    for pair in events.windows(2) {
        let (a, b) = (position(&pair[0]), position(&pair[1]));
        let dt = (pair[1].time_ms - pair[0].time_ms) as f64 / 1000.0;
        let sigma = |p: &Position| (f64::from(p.hdop.unwrap()) + 0.05) * SIGMA_PER_HDOP_M;
        let bound = max_limit * 1.03 * dt + 6.0 * (sigma(a) + sigma(b));
        let d = origin.distance((a.lat, a.lon), (b.lat, b.lon));
        assert!(
            d <= bound,
            "a jump of {d:.0} m in {dt} s (bound {bound:.0} m)"
        );
    }
}

#[test]
fn vehicle_routes_are_plausible_on_the_generated_grid() {
    let mut s = scenario(5);
    s.groups = vec![
        crate::scenario::Group {
            count: 6,
            ..s.groups[2].clone()
        },
        crate::scenario::Group {
            count: 6,
            ..s.groups[3].clone()
        },
    ];
    let net = Arc::new(roads(&s).unwrap());
    let mut stopped = 0;
    let mut fast = 0;
    let mut dropouts = 0;
    for (_, mut d) in fleet(&s, &net, START_MS, 1) {
        let mut events = Vec::new();
        for _ in 0..600 {
            events.push(d.next_event());
            let truth = d.vehicle().unwrap().truth();
            assert!(
                truth.speed_mps <= truth.limit_mps * 1.03 + 1e-9,
                "{} drives {} on a road limited to {}",
                d.id,
                truth.speed_mps,
                truth.limit_mps
            );
        }
        check_route(&events, net.max_limit_mps(), net.origin, net.bounds());
        for pair in events.windows(2) {
            let dt = (pair[1].time_ms - pair[0].time_ms) / 1000;
            let v = position(&pair[1]).speed_mps.unwrap();
            if v < 0.3 {
                stopped += 1;
            } else {
                assert!(dt >= 5, "a moving vehicle reports at most every 5 s: {dt}");
            }
            if v > 10.0 {
                fast += 1;
            }
        }
        dropouts += d.faults().dropouts;
    }
    assert!(stopped > 0, "vehicles stop (lights, deliveries, parking)");
    assert!(fast > 0, "and drive at speed on arterials and the ring");
    assert!(dropouts > 0, "tunnels and canyons lose fixes");
}

#[test]
fn vehicle_routes_are_plausible_on_the_berlin_waypoints() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sim-berlin.toml");
    let s = Raw::load(&path).unwrap().validate("berlin").unwrap();
    let net = Arc::new(roads(&s).unwrap());
    assert!(net.edges.iter().any(|e| e.tunnel), "the Tiergartentunnel");
    for (_, mut d) in fleet(&s, &net, START_MS, 1).into_iter().take(10) {
        let events: Vec<Event> = (0..300).map(|_| d.next_event()).collect();
        check_route(&events, net.max_limit_mps(), net.origin, net.bounds());
    }
}

#[test]
fn a_waypoints_file_with_a_bad_road_names_it() {
    let err = RoadNetwork::from_toml(
        "[[road]]\nspeed_limit_kmh = 50\npoints = [[52.5, 13.4], [52.6, 13.4]]\n\
         [[road]]\nspeed_limit_kmh = 50\npoints = [[52.5, 13.4]]\n",
        "roads.toml",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "roads.toml: road 1: needs at least two points"
    );
    let err = RoadNetwork::from_toml(
        "[[road]]\nspeed_limit_kmh = 50\npoints = [[52.5, 13.4], [52.6, 13.4]]\ntunnel = [[1, 5]]\n",
        "roads.toml",
    )
    .unwrap_err();
    assert!(err.to_string().contains("road 0: tunnel [1, 5]"), "{err}");
    let err = RoadNetwork::from_toml("", "roads.toml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "roads.toml: no roads (a road needs two distinct points)"
    );
    let err = RoadNetwork::from_toml(
        "[[road]]\nspeed_limit_kmh = 50\npoints = [[52.5, 13.4], [52.5, 13.4]]\n",
        "roads.toml",
    )
    .unwrap_err();
    assert!(err.to_string().contains("no roads"), "{err}");
}

#[test]
fn routes_are_connected_paths_to_their_destination_and_prefer_fast_roads() {
    let s = scenario(2);
    let net = roads(&s).unwrap();
    let corners = (0, net.nodes.len() - 1);
    let route = net.route(corners.0, corners.1).unwrap();
    let mut at = corners.0;
    let mut metres = 0.0;
    for &(edge, forward) in &route {
        let e = &net.edges[edge];
        let (from, to) = if forward { (e.a, e.b) } else { (e.b, e.a) };
        assert_eq!(from, at, "each step starts where the last ended");
        at = to;
        metres += e.length_m;
    }
    assert_eq!(at, corners.1);
    let (x0, y0) = net.nodes[corners.0];
    let (x1, y1) = net.nodes[corners.1];
    assert!(
        metres >= (x1 - x0).abs() + (y1 - y0).abs() - 1.0,
        "no shortcut through blocks"
    );
    // Corner to corner, the 80 km/h ring road beats the 30 km/h grid.
    assert!(
        route
            .iter()
            .all(|&(e, _)| net.edges[e].limit_mps > 79.0 / 3.6),
        "{route:?}"
    );
    assert_eq!(net.route(3, 3), Some(Vec::new()));
    assert_eq!(net.route(0, net.nodes.len()), None);
}

#[test]
fn by_default_the_simulated_clock_ends_before_now_so_no_event_is_from_the_future() {
    for speedup in [0.0, 60.0] {
        let mut s = scenario(7);
        s.speedup = speedup;
        let now = START_MS + 1_000_000_000;
        let start = crate::run::default_start_ms(&s, now);
        assert!(start < now, "speedup {speedup}: the run starts in the past");
        let roads = Arc::new(roads(&s).unwrap());
        for (_, mut d) in fleet(&s, &roads, start, 1) {
            for _ in 0..s.events {
                let e = d.next_event();
                assert!(
                    e.time_ms <= now,
                    "speedup {speedup}: {} after now",
                    e.device_id
                );
            }
        }
    }
    let mut real_time = scenario(7);
    real_time.speedup = 1.0;
    assert_eq!(crate::run::default_start_ms(&real_time, START_MS), START_MS);
}
