use proptest::prelude::*;
use tributary_protocol::Event;

use super::*;

fn reading(seq: u64, time_ms: u64, values: &[(&str, f64)]) -> Event {
    crate::route::rules::test_reading("d", seq, time_ms, values)
}

/// Runs `logic` over `events` from an empty state; returns the derived events' (seq, values).
fn run(logic: &Logic, events: &[Event]) -> (Vec<Derived>, State, usize) {
    let mut state = State::default();
    let mut out = Vec::new();
    let mut late = 0;
    for e in events {
        let (derived, was_late) = step(logic, &mut state, e);
        out.extend(derived);
        late += usize::from(was_late);
    }
    (out, state, late)
}

fn seqs(derived: &[Derived]) -> Vec<u64> {
    derived.iter().map(|d| d.event.seq).collect()
}

fn value(d: &Derived, name: &str) -> f64 {
    crate::route::rules::test_value(d, name)
}

fn deadband(band: Band, heartbeat_ms: Option<u64>) -> Logic {
    Logic::Deadband {
        field: crate::route::rules::expr::Number::parse("values.t").unwrap(),
        band,
        heartbeat_ms,
    }
}

#[test]
fn filter_keeps_what_holds() {
    let logic = Logic::Filter {
        condition: crate::route::rules::expr::Condition::parse("values.t > 30").unwrap(),
    };
    let events = [
        reading(1, 0, &[("t", 29.0)]),
        reading(2, 10, &[("t", 31.0)]),
        reading(3, 20, &[("h", 50.0)]),
        reading(4, 30, &[("t", 35.0)]),
    ];
    let (out, _, late) = run(&logic, &events);
    assert_eq!(seqs(&out), [2, 4]);
    assert_eq!(late, 0);
}

#[test]
fn deadband_reports_by_exception_against_the_last_reported_value() {
    // 20.0 first; 20.4 and 20.9 are within 1.0 of 20.0; 21.1 is not; 20.5 is within 1.0 of 21.1;
    // 19.9 is 1.2 below 21.1.
    let events: Vec<Event> = [20.0, 20.4, 20.9, 21.1, 20.5, 19.9]
        .iter()
        .enumerate()
        .map(|(i, t)| reading(i as u64 + 1, i as u64 * 1000, &[("t", *t)]))
        .collect();
    let (out, state, _) = run(&deadband(Band::Absolute(1.0), None), &events);
    assert_eq!(seqs(&out), [1, 4, 6]);
    assert_eq!(state.emitted, Some((19.9, 5000)));
    // Relative 5 % of 20.0 is 1.0: the same here; of 21.1, 1.055.
    let (out, _, _) = run(&deadband(Band::Relative(0.05), None), &events);
    assert_eq!(seqs(&out), [1, 4, 6]);
}

#[test]
fn deadband_heartbeat_reports_a_steady_value_anyway() {
    let events: Vec<Event> = (0..10)
        .map(|i| reading(i + 1, i * 1000, &[("t", 20.0)]))
        .collect();
    let (out, _, _) = run(&deadband(Band::Absolute(1.0), Some(4000)), &events);
    // At 0 s (first), 4 s and 8 s of event time.
    assert_eq!(seqs(&out), [1, 5, 9]);
}

#[test]
fn deadband_skips_events_without_its_field() {
    let events = [
        reading(1, 0, &[("h", 1.0)]),
        reading(2, 1, &[("t", 5.0)]),
        reading(3, 2, &[("h", 2.0)]),
    ];
    let (out, _, _) = run(&deadband(Band::Absolute(1.0), Some(1)), &events);
    assert_eq!(seqs(&out), [2]);
}

#[test]
fn downsample_first_emits_at_once_last_and_mean_when_the_interval_closes() {
    // Intervals of 10 s: [0,10) has seqs 1-3, [10,20) has 4-5, [30,40) has 6.
    let events = [
        reading(1, 1_000, &[("t", 10.0), ("h", 50.0)]),
        reading(2, 4_000, &[("t", 20.0)]),
        reading(3, 9_999, &[("t", 30.0), ("h", 70.0)]),
        reading(4, 10_000, &[("t", 1.0)]),
        reading(5, 15_000, &[("t", 3.0)]),
        reading(6, 30_000, &[("t", 7.0)]),
    ];
    let first = Logic::Downsample {
        interval_ms: 10_000,
        mode: Mode::First,
    };
    let (out, _, _) = run(&first, &events);
    assert_eq!(seqs(&out), [1, 4, 6]);

    let last = Logic::Downsample {
        interval_ms: 10_000,
        mode: Mode::Last,
    };
    let (out, state, _) = run(&last, &events);
    assert_eq!(seqs(&out), [3, 5], "the [30,40) interval is still open");
    assert_eq!((out[0].first_seq, out[0].count), (1, 3));
    assert_eq!((out[1].first_seq, out[1].count), (4, 2));
    assert_eq!(state.interval.as_ref().map(|i| i.index), Some(3));

    let mean = Logic::Downsample {
        interval_ms: 10_000,
        mode: Mode::Mean,
    };
    let (out, _, _) = run(&mean, &events);
    assert_eq!(seqs(&out), [3, 5]);
    assert_eq!(value(&out[0], "t"), 20.0);
    assert_eq!(
        value(&out[0], "h"),
        60.0,
        "h's mean over the two events that had it"
    );
    assert_eq!(value(&out[1], "t"), 2.0);
    assert!(value(&out[1], "h").is_nan(), "no h in [10,20)");
}

#[test]
fn late_events_are_counted_and_left_out() {
    let events = [
        reading(1, 20_000, &[("t", 1.0)]),
        reading(2, 5_000, &[("t", 100.0)]),
        reading(3, 25_000, &[("t", 100.0)]),
    ];
    let (out, _, late) = run(&deadband(Band::Absolute(1.0), None), &events);
    assert_eq!(seqs(&out), [1, 3]);
    assert_eq!(late, 1);
}

#[test]
fn state_survives_its_postcard_round_trip() {
    let events = [
        reading(1, 1_000, &[("t", 10.0)]),
        reading(2, 2_000, &[("t", 20.0)]),
    ];
    let mean = Logic::Downsample {
        interval_ms: 10_000,
        mode: Mode::Mean,
    };
    let (_, state, _) = run(&mean, &events);
    let bytes = postcard::to_allocvec(&state).unwrap();
    let back: State = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, state);
}

/// A deadband written the obvious way, to check `step` against.
fn reference_deadband(values: &[(u64, f64)], band: f64, heartbeat: u64) -> Vec<usize> {
    let mut out = Vec::new();
    let mut last: Option<(f64, u64)> = None;
    let mut latest = 0;
    for (i, (t, v)) in values.iter().enumerate() {
        if *t < latest {
            continue;
        }
        latest = *t;
        let emit = match last {
            None => true,
            Some((lv, lt)) => (v - lv).abs() > band || t - lt >= heartbeat,
        };
        if emit {
            last = Some((*v, *t));
            out.push(i);
        }
    }
    out
}

proptest! {
    #[test]
    fn deadband_matches_the_reference(
        points in proptest::collection::vec((0u64..100_000, -50.0f64..50.0), 0..60),
        band in 0.0f64..10.0,
        heartbeat in 1u64..50_000,
    ) {
        let events: Vec<Event> = points
            .iter()
            .enumerate()
            .map(|(i, (t, v))| reading(i as u64, *t, &[("t", *v)]))
            .collect();
        let (out, _, _) = run(&deadband(Band::Absolute(band), Some(heartbeat)), &events);
        let expected: Vec<u64> = reference_deadband(&points, band, heartbeat)
            .into_iter()
            .map(|i| i as u64)
            .collect();
        prop_assert_eq!(seqs(&out), expected);
    }

    #[test]
    fn downsample_last_emits_each_closed_interval_once_with_its_last_event(
        mut times in proptest::collection::vec(0u64..100_000, 1..60),
        interval in 1u64..20_000,
    ) {
        times.sort_unstable();
        let events: Vec<Event> = times
            .iter()
            .enumerate()
            .map(|(i, t)| reading(i as u64, *t, &[("t", 1.0)]))
            .collect();
        let logic = Logic::Downsample { interval_ms: interval, mode: Mode::Last };
        let (out, _, _) = run(&logic, &events);
        // Reference: group sorted events by interval; every group but the last is emitted
        // with its last event's seq and its size.
        let mut groups: Vec<(u64, u64, u64)> = Vec::new(); // (index, first seq, count)
        let mut last_seq = Vec::new();
        for (i, t) in times.iter().enumerate() {
            let index = t / interval;
            match groups.last_mut() {
                Some(g) if g.0 == index => { g.2 += 1; *last_seq.last_mut().unwrap() = i as u64; }
                _ => { groups.push((index, i as u64, 1)); last_seq.push(i as u64); }
            }
        }
        let closed = groups.len() - 1;
        prop_assert_eq!(seqs(&out), last_seq[..closed].to_vec());
        let shape: Vec<(u64, u64)> = out.iter().map(|d| (d.first_seq, d.count)).collect();
        let expected: Vec<(u64, u64)> = groups[..closed].iter().map(|g| (g.1, g.2)).collect();
        prop_assert_eq!(shape, expected);
    }
}
