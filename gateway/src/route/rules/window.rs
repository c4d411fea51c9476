//! `window`: tumbling and hopping windows per device on event time, with count, min, max, mean,
//! sum, last and percentiles (within 1 %, [`super::sketch`]) per field, and an allowed lateness.
//!
//! A window `[start, start + size)` starts every `hop` (= `size` for tumbling windows) at
//! multiples of `hop` since the Unix epoch. Each device has its own watermark: its highest event
//! time minus `lateness_ms`. A window is emitted once the device's watermark passes its end, so
//! a device flushing hours of backlog closes its own windows as its events arrive and never
//! holds up another device's. An event whose windows have all been emitted is late: counted,
//! left out. The emitted event is a reading at the window's start whose values are
//! `{field}.{aggregate}` (`temperature.mean`, `speed_mps.max`, `temperature.count`), with the
//! window in the `window-start-ms` and `window-end-ms` headers.

use serde::{Deserialize, Serialize};
use tributary_protocol::{Body, Event, Reading, SensorValue};

use super::derived::Derived;
use super::expr::Number;
use super::sketch::{Bin, Sketch};

/// An aggregate a window computes per field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Count,
    Min,
    Max,
    Mean,
    Sum,
    Last,
    /// A percentile, in hundredths of a percent (`p99.9` is 9990), from the field's
    /// [`Sketch`]: within 1 % of the exact value.
    Percentile(u16),
}

impl Aggregate {
    /// The aggregates a window computes when its rule names none (percentiles are asked for).
    pub const DEFAULT: [Aggregate; 6] = [
        Aggregate::Count,
        Aggregate::Min,
        Aggregate::Max,
        Aggregate::Mean,
        Aggregate::Sum,
        Aggregate::Last,
    ];

    /// Its name, and the suffix of its output value (`temperature.p95`).
    pub fn name(self) -> String {
        match self {
            Aggregate::Count => "count".into(),
            Aggregate::Min => "min".into(),
            Aggregate::Max => "max".into(),
            Aggregate::Mean => "mean".into(),
            Aggregate::Sum => "sum".into(),
            Aggregate::Last => "last".into(),
            Aggregate::Percentile(h) => match (h / 100, h % 100) {
                (whole, 0) => format!("p{whole}"),
                (whole, part) if part % 10 == 0 => format!("p{whole}.{}", part / 10),
                (whole, part) => format!("p{whole}.{part:02}"),
            },
        }
    }

    /// `count`, `min`, `max`, `mean`, `sum`, `last`, or `p` and a percentile above 0 and at
    /// most 100 with up to two decimals (`p50`, `p95`, `p99.9`).
    pub fn parse(name: &str) -> Option<Self> {
        if let Some(a) = Self::DEFAULT.into_iter().find(|a| a.name() == name) {
            return Some(a);
        }
        let digits = name.strip_prefix('p')?;
        let (whole, part) = digits.split_once('.').unwrap_or((digits, ""));
        let plain =
            |d: &str| !d.is_empty() && d.len() <= 3 && d.bytes().all(|b| b.is_ascii_digit());
        if !plain(whole) || !(part.is_empty() || plain(part) && part.len() <= 2) {
            return None;
        }
        let whole: u16 = whole.parse().ok()?;
        let part: u16 = format!("{part:0<2}").parse().ok()?;
        let h = whole.checked_mul(100)?.checked_add(part)?;
        (1..=10_000)
            .contains(&h)
            .then_some(Aggregate::Percentile(h))
    }
}

/// A window rule's definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub size_ms: u64,
    pub hop_ms: u64,
    pub lateness_ms: u64,
    /// `(output name, expression, unit)` per field; an empty unit is taken from the events (a
    /// reading value's own).
    pub fields: Vec<(String, Number, String)>,
    pub aggregates: Vec<Aggregate>,
}

/// A device's open windows and its watermark.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Windows {
    /// The highest event time seen.
    pub max_time_ms: u64,
    /// Windows emitted up to (exclusive) this end: anything ending at or before it is closed.
    pub closed_until_ms: u64,
    pub open: Vec<Open>,
}

/// One open window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Open {
    pub start_ms: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub events: u64,
    /// Per field, in the spec's order: count, min, max, sum, last.
    pub fields: Vec<Acc>,
}

/// One field's accumulator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Acc {
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub last: f64,
    /// A reading value's unit, as its events carry it.
    #[serde(default)]
    pub unit: String,
    /// The values, binned for percentiles: only when the rule asks for one (boxed: most
    /// windows have none).
    pub sketch: Option<Box<Sketch>>,
}

/// Adds `event` to the device's windows; returns the windows it closed and whether it was late.
pub fn step(spec: &Spec, windows: &mut Windows, event: &Event) -> (Vec<Derived>, bool) {
    let t = event.time_ms;
    let (size, hop) = (spec.size_ms.max(1), spec.hop_ms.max(1));
    // The windows [k·hop, k·hop + size) that hold t and are not closed yet: opened if new.
    let first_k = t.saturating_add(1).saturating_sub(size).div_ceil(hop);
    let (lowest, highest) = (first_k.saturating_mul(hop), t / hop * hop);
    let closed = windows.closed_until_ms;
    let holds = |w: &&mut Open| {
        (lowest..=highest).contains(&w.start_ms) && w.start_ms.saturating_add(size) > closed
    };
    let mut late = true;
    let percentiles = spec
        .aggregates
        .iter()
        .any(|a| matches!(a, Aggregate::Percentile(_)));
    for start in (first_k..=t / hop).map(|k| k.saturating_mul(hop)) {
        if start.saturating_add(size) <= closed {
            continue;
        }
        late = false;
        if !windows.open.iter().any(|w| w.start_ms == start) {
            windows.open.push(Open {
                start_ms: start,
                first_seq: event.seq,
                last_seq: event.seq,
                events: 0,
                fields: vec![
                    Acc {
                        sketch: percentiles.then(Box::default),
                        ..Acc::default()
                    };
                    spec.fields.len()
                ],
            });
        }
    }
    for w in windows.open.iter_mut().filter(holds) {
        w.events = w.events.saturating_add(1);
        w.first_seq = w.first_seq.min(event.seq);
        w.last_seq = w.last_seq.max(event.seq);
    }
    // Each field's value (and its sketch bin) once, into every window that holds the event.
    for (f, (name, expr, unit)) in spec.fields.iter().enumerate() {
        let Some(v) = expr.value(event) else { continue };
        let bin = if percentiles { Bin::of(v) } else { None };
        let units = || match &event.body {
            Body::Reading(r) => r
                .values
                .iter()
                .find(|sv| &sv.name == name)
                .map(|sv| &sv.unit),
            Body::Position(_) => None,
        };
        for w in windows.open.iter_mut().filter(holds) {
            let Some(acc) = w.fields.get_mut(f) else {
                continue;
            };
            if unit.is_empty() && acc.unit.is_empty() {
                if let Some(u) = units() {
                    acc.unit.clone_from(u);
                }
            }
            if acc.count == 0 {
                (acc.min, acc.max) = (v, v);
            }
            acc.count = acc.count.saturating_add(1);
            acc.min = acc.min.min(v);
            acc.max = acc.max.max(v);
            acc.sum += v;
            acc.last = v;
            if let (Some(sketch), Some(bin)) = (&mut acc.sketch, bin) {
                sketch.count_in(bin);
            }
        }
    }
    windows.max_time_ms = windows.max_time_ms.max(t);
    let watermark = windows.max_time_ms.saturating_sub(spec.lateness_ms);
    let mut out = Vec::new();
    windows.open.sort_by_key(|w| w.start_ms);
    while windows
        .open
        .first()
        .is_some_and(|w| w.start_ms.saturating_add(size) <= watermark)
    {
        let w = windows.open.remove(0);
        windows.closed_until_ms = windows.closed_until_ms.max(w.start_ms.saturating_add(size));
        out.push(emit(spec, &w, &event.device_id, size));
    }
    (out, late)
}

fn emit(spec: &Spec, w: &Open, device: &str, size: u64) -> Derived {
    let mut values = Vec::new();
    for ((name, _, unit), acc) in spec.fields.iter().zip(&w.fields) {
        for a in &spec.aggregates {
            let value = match (a, acc.count) {
                (Aggregate::Count, n) => n as f64,
                (_, 0) => continue,
                (Aggregate::Min, _) => acc.min,
                (Aggregate::Max, _) => acc.max,
                (Aggregate::Sum, _) => acc.sum,
                (Aggregate::Mean, n) => acc.sum / n as f64,
                (Aggregate::Last, _) => acc.last,
                (Aggregate::Percentile(h), _) => {
                    match acc
                        .sketch
                        .as_ref()
                        .and_then(|s| s.quantile(f64::from(*h) / 10_000.0))
                    {
                        Some(v) => v,
                        // Every value was NaN or infinite.
                        None => continue,
                    }
                }
            };
            values.push(SensorValue {
                name: format!("{name}.{}", a.name()),
                value,
                unit: match (a, unit.is_empty()) {
                    (Aggregate::Count, _) => "1".to_owned(),
                    (_, true) => acc.unit.clone(),
                    (_, false) => unit.clone(),
                },
            });
        }
    }
    Derived {
        event: Event {
            device_id: device.to_owned(),
            seq: w.last_seq,
            time_ms: w.start_ms,
            body: Body::Reading(Reading { values }),
        },
        first_seq: w.first_seq,
        count: w.events,
        headers: vec![
            ("window-start-ms".to_owned(), w.start_ms.to_string()),
            (
                "window-end-ms".to_owned(),
                (w.start_ms.saturating_add(size)).to_string(),
            ),
        ],
        // Overlapping (hopping) windows can end with the same event: the start tells them apart.
        tag: Some(w.start_ms.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::rules::test_reading;

    fn spec(size_ms: u64, hop_ms: u64, lateness_ms: u64) -> Spec {
        Spec {
            size_ms,
            hop_ms,
            lateness_ms,
            fields: vec![(
                "t".to_owned(),
                Number::parse("values.t").unwrap(),
                "Cel".to_owned(),
            )],
            aggregates: Aggregate::DEFAULT.to_vec(),
        }
    }

    fn run(spec: &Spec, events: &[(u64, f64)]) -> (Vec<Derived>, usize) {
        let mut w = Windows::default();
        let mut out = Vec::new();
        let mut late = 0;
        for (i, (t, v)) in events.iter().enumerate() {
            let (d, l) = step(
                spec,
                &mut w,
                &test_reading("d", i as u64 + 1, *t, &[("t", *v)]),
            );
            out.extend(d);
            late += usize::from(l);
        }
        (out, late)
    }

    fn agg(d: &Derived, name: &str) -> f64 {
        crate::route::rules::test_value(d, name)
    }

    #[test]
    fn tumbling_windows_aggregate_and_close_when_the_device_moves_past_them() {
        // [0,10 s): 1, 3, 2; [10,20 s): 10; then 25 s closes [10,20).
        let (out, late) = run(
            &spec(10_000, 10_000, 0),
            &[
                (0, 1.0),
                (4_000, 3.0),
                (9_999, 2.0),
                (10_000, 10.0),
                (25_000, 0.0),
            ],
        );
        assert_eq!(late, 0);
        assert_eq!(out.len(), 2);
        let w = &out[0];
        assert_eq!(w.event.time_ms, 0);
        assert_eq!((w.first_seq, w.count, w.event.seq), (1, 3, 3));
        assert_eq!(agg(w, "t.count"), 3.0);
        assert_eq!(agg(w, "t.min"), 1.0);
        assert_eq!(agg(w, "t.max"), 3.0);
        assert_eq!(agg(w, "t.sum"), 6.0);
        assert_eq!(agg(w, "t.mean"), 2.0);
        assert_eq!(agg(w, "t.last"), 2.0);
        assert_eq!(out[1].event.time_ms, 10_000);
        assert_eq!(agg(&out[1], "t.count"), 1.0);
        assert_eq!(
            out[1].headers,
            [
                ("window-start-ms".to_owned(), "10000".to_owned()),
                ("window-end-ms".to_owned(), "20000".to_owned())
            ]
        );
    }

    #[test]
    fn percentiles_are_read_from_the_window_values_within_one_percent() {
        let mut spec = spec(100_000, 100_000, 0);
        spec.aggregates = ["p50", "p95", "p99.9", "max"]
            .iter()
            .map(|a| Aggregate::parse(a).unwrap())
            .collect();
        // 1..=100 in a scrambled order (37 is prime to 100), then an event that closes the window.
        let mut events: Vec<(u64, f64)> = (0..100u64)
            .map(|i| (i * 1_000, ((i * 37) % 100 + 1) as f64))
            .collect();
        events.push((200_000, 0.0));
        let (out, _) = run(&spec, &events);
        let w = &out[0];
        // Ranks ⌊q·99⌋: 49, 94, 98 (from 0), so 50, 95 and 99.
        for (name, exact) in [("t.p50", 50.0), ("t.p95", 95.0), ("t.p99.9", 99.0)] {
            let got = agg(w, name);
            assert!((got - exact).abs() <= 0.01 * exact, "{name}: {got}");
        }
        assert_eq!(agg(w, "t.max"), 100.0);
        let Body::Reading(r) = &w.event.body else {
            panic!("a window emits a reading")
        };
        assert_eq!(
            r.values[0].unit, "Cel",
            "a percentile keeps the field's unit"
        );
    }

    #[test]
    fn aggregate_names_parse_and_print_back() {
        for name in [
            "count", "last", "p50", "p95", "p99.9", "p99.99", "p0.5", "p100",
        ] {
            let a = Aggregate::parse(name);
            assert_eq!(a.map(Aggregate::name).as_deref(), Some(name));
        }
        assert_eq!(Aggregate::parse("p99.90"), Aggregate::parse("p99.9"));
        for bad in [
            "p0", "p101", "p", "p9.999", "p-5", "p 50", "p1e2", "median", "p.5",
        ] {
            assert_eq!(Aggregate::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn hopping_windows_count_an_event_in_each_window_that_holds_it() {
        // Size 10 s every 5 s: the event at 7 s is in [0,10) and [5,15).
        let (out, _) = run(&spec(10_000, 5_000, 0), &[(7_000, 1.0), (30_000, 0.0)]);
        let starts: Vec<u64> = out.iter().map(|d| d.event.time_ms).collect();
        assert_eq!(starts, [0, 5_000]);
        assert!(out.iter().all(|d| agg(d, "t.count") == 1.0));
        assert_ne!(out[0].tag, out[1].tag, "their event-ids differ");
    }

    #[test]
    fn allowed_lateness_takes_stragglers_and_counts_what_comes_later() {
        // Lateness 5 s: at 12 s the watermark is 7 s, so [0,10) is still open for the event at
        // 3 s; at 16 s the watermark passes 10 s and [0,10) closes; an event at 4 s is then late.
        let (out, late) = run(
            &spec(10_000, 10_000, 5_000),
            &[
                (1_000, 1.0),
                (12_000, 5.0),
                (3_000, 3.0),
                (16_000, 0.0),
                (4_000, 9.0),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(agg(&out[0], "t.count"), 2.0);
        assert_eq!(agg(&out[0], "t.sum"), 4.0);
        assert_eq!(late, 1);
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::route::rules::test_reading;

    /// Windows computed the obvious way: every event into every window that holds it, unless
    /// it arrives after the device's watermark passed all of them; a window is emitted once the
    /// watermark passes its end.
    fn reference(
        size: u64,
        hop: u64,
        lateness: u64,
        events: &[(u64, f64)],
    ) -> (Vec<(u64, u64, f64, f64)>, usize) {
        let mut max_time = 0;
        let mut closed_until = 0;
        let mut open: std::collections::BTreeMap<u64, Vec<f64>> = Default::default();
        let mut out = Vec::new();
        let mut late = 0;
        for &(t, v) in events {
            let starts: Vec<u64> = (0..=t / hop)
                .map(|k| k * hop)
                .filter(|s| s + size > t && s + size > closed_until)
                .collect();
            if starts.is_empty() {
                late += 1;
            }
            for s in starts {
                open.entry(s).or_default().push(v);
            }
            max_time = max_time.max(t);
            let watermark = max_time.saturating_sub(lateness);
            while let Some((&s, _)) = open.iter().next() {
                if s + size > watermark {
                    break;
                }
                let mut values = open.remove(&s).unwrap_or_default();
                closed_until = closed_until.max(s + size);
                values.sort_by(f64::total_cmp);
                // The 90th percentile: the value at rank ⌊0.9·(n − 1)⌋.
                let p90 = values[(0.9 * (values.len() - 1) as f64).floor() as usize];
                out.push((s, values.len() as u64, values.iter().sum(), p90));
            }
        }
        (out, late)
    }

    proptest! {
        #[test]
        fn windows_match_the_reference(
            events in proptest::collection::vec((0u64..200_000, -10.0f64..10.0), 0..80),
            size in 1u64..60_000,
            hops in 1u64..5,
            lateness in 0u64..30_000,
        ) {
            let hop = (size / hops).max(1);
            let spec = Spec {
                size_ms: size,
                hop_ms: hop,
                lateness_ms: lateness,
                fields: vec![("t".to_owned(), Number::parse("values.t").unwrap(), String::new())],
                aggregates: vec![Aggregate::Count, Aggregate::Sum, Aggregate::Percentile(9000)],
            };
            let mut windows = Windows::default();
            let mut got = Vec::new();
            let mut late = 0;
            for (i, (t, v)) in events.iter().enumerate() {
                let (d, l) = step(&spec, &mut windows, &test_reading("d", i as u64, *t, &[("t", *v)]));
                late += usize::from(l);
                for w in d {
                    got.push((
                        w.event.time_ms,
                        crate::route::rules::test_value(&w, "t.count") as u64,
                        crate::route::rules::test_value(&w, "t.sum"),
                        crate::route::rules::test_value(&w, "t.p90"),
                    ));
                }
            }
            let (want, want_late) = reference(size, hop, lateness, &events);
            prop_assert_eq!(late, want_late);
            prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                prop_assert_eq!((g.0, g.1), (w.0, w.1));
                prop_assert!((g.2 - w.2).abs() < 1e-9, "{:?} vs {:?}", g, w);
                // Within the sketch's 1 % of the exact percentile.
                prop_assert!((g.3 - w.3).abs() <= 0.01 * w.3.abs() + 1e-9, "{:?} vs {:?}", g, w);
            }
        }
    }
}
