//! What each kind of rule does with one event, given its state for that device: the derived
//! events it emits, updating its state in place. Functions of (definition, state, event) only, so the
//! writer can run them inside its transaction and `tributary rules test` offline, with the same
//! results.
//!
//! All kinds run on event time, per device: an event older than what the rule already
//! processed for that device is *late*; it is counted and left out of the derived stream (the
//! raw stream still carries it).

use serde::{Deserialize, Serialize};
use tributary_protocol::{Body, Event, Reading, SensorValue};

use super::derived::Derived;
use super::expr::{Condition, Number};
use super::{geofence, threshold, window};

/// A rule's body, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Logic {
    /// Keep the events for which `condition` holds.
    Filter { condition: Condition },
    /// Report by exception: emit when `field` moved by more than the band since the value last
    /// emitted, and at least every `heartbeat_ms` of event time.
    Deadband {
        field: Number,
        band: Band,
        heartbeat_ms: Option<u64>,
    },
    /// At most one event per device per `interval_ms` of event time (intervals aligned to the
    /// Unix epoch).
    Downsample { interval_ms: u64, mode: Mode },
    /// Tumbling or hopping windows with aggregates ([`window`]).
    Window(window::Spec),
    /// Alerts with hysteresis ([`threshold`]).
    Threshold(threshold::Spec),
    /// Enter, exit and dwell against polygons ([`geofence`]).
    Geofence(geofence::Spec),
}

/// A deadband's width.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Band {
    /// Emit when `|value - last| > band`.
    Absolute(f64),
    /// Emit when `|value - last| > band × |last|`.
    Relative(f64),
}

/// Which event of an interval a downsample keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The interval's first event, emitted as it arrives.
    First,
    /// The interval's last event, emitted once an event of a later interval arrives.
    Last,
    /// A reading of the interval's mean per value name, over the events that had it (positions:
    /// the last), emitted once an event of a later interval arrives.
    Mean,
}

/// A rule's state for one device, kept in the spool (`device_rule_state`) as postcard bytes.
///
/// Each rule uses one of the kinds' parts; the larger ones are boxed so that the state of a
/// rule that does not use them stays small in memory (a device's states are kept for every
/// rule). A box is encoded as what it holds: the bytes are the same either way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The latest event time processed, for lateness.
    pub time_ms: u64,
    /// Deadband: the value last emitted and when.
    #[serde(default)]
    pub emitted: Option<(f64, u64)>,
    /// Downsample: the open interval.
    #[serde(default)]
    pub interval: Option<Box<Interval>>,
    /// Window: the open windows and the watermark.
    #[serde(default)]
    pub windows: Option<Box<window::Windows>>,
    /// Threshold: raised or not, and since when the change has been building.
    #[serde(default)]
    pub alert: Option<Box<threshold::Alert>>,
    /// Geofence: the zones the device is in.
    #[serde(default)]
    pub inside: Option<Box<geofence::Inside>>,
}

/// An open downsample interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Its index: event time ÷ interval.
    pub index: u64,
    pub first_seq: u64,
    pub count: u64,
    /// `last`/`mean`: the latest event (for mean, its values are replaced by the means).
    #[serde(default)]
    pub last: Option<Event>,
    /// `mean`: per value name (in the order first seen), its unit, the sum and the count.
    #[serde(default)]
    pub sums: Vec<(String, String, f64, u64)>,
}

fn one(event: &Event) -> Derived {
    Derived {
        event: event.clone(),
        first_seq: event.seq,
        count: 1,
        headers: Vec::new(),
        tag: None,
    }
}

impl Logic {
    /// Whether the rule keeps state per device (a filter does not).
    pub fn has_state(&self) -> bool {
        !matches!(self, Logic::Filter { .. })
    }
}

/// Runs `logic` over `event`, updating the device's `state` in place; returns the derived events
/// and whether the event was late.
pub fn step(logic: &Logic, state: &mut State, event: &Event) -> (Vec<Derived>, bool) {
    match logic {
        // Filters need no order; windows have their own lateness.
        Logic::Filter { .. } | Logic::Window(_) => {}
        _ if event.time_ms < state.time_ms => return (Vec::new(), true),
        _ => state.time_ms = event.time_ms,
    }
    let derived = match logic {
        Logic::Filter { condition } => {
            if condition.holds(event) {
                vec![one(event)]
            } else {
                Vec::new()
            }
        }
        Logic::Deadband {
            field,
            band,
            heartbeat_ms,
        } => match field.value(event) {
            None => Vec::new(),
            Some(value) => {
                let emit = match state.emitted {
                    None => true,
                    Some((last, at)) => {
                        let moved = (value - last).abs();
                        let outside = match band {
                            Band::Absolute(b) => moved > *b,
                            Band::Relative(r) => moved > r * last.abs(),
                        };
                        // NaN never equals itself: a NaN after a number (or the reverse) is a
                        // change worth reporting.
                        outside
                            || value.is_nan() != last.is_nan()
                            || heartbeat_ms.is_some_and(|h| event.time_ms.saturating_sub(at) >= h)
                    }
                };
                if emit {
                    state.emitted = Some((value, event.time_ms));
                    vec![one(event)]
                } else {
                    Vec::new()
                }
            }
        },
        Logic::Downsample { interval_ms, mode } => {
            let index = event.time_ms / (*interval_ms).max(1);
            let mut out = Vec::new();
            let same = state.interval.as_ref().is_some_and(|i| i.index == index);
            if !same {
                if let Some(closed) = state.interval.take() {
                    out.extend(close(*closed, *mode));
                }
                if *mode == Mode::First {
                    out.push(one(event));
                }
                state.interval = Some(Box::new(Interval {
                    index,
                    first_seq: event.seq,
                    count: 0,
                    last: None,
                    sums: Vec::new(),
                }));
            }
            if let Some(open) = state.interval.as_mut() {
                open.count = open.count.saturating_add(1);
                match (&mut open.last, mode) {
                    (_, Mode::First) => {}
                    // A mean reading's values are the means: of the latest reading only its
                    // device, seq and time are kept (not its values, which would only make the
                    // stored state larger), without copying the whole event each time.
                    (Some(last), Mode::Mean)
                        if matches!(
                            (&last.body, &event.body),
                            (Body::Reading(_), Body::Reading(_))
                        ) =>
                    {
                        last.seq = event.seq;
                        last.time_ms = event.time_ms;
                    }
                    (_, Mode::Mean) if matches!(event.body, Body::Reading(_)) => {
                        open.last = Some(Event {
                            device_id: event.device_id.clone(),
                            seq: event.seq,
                            time_ms: event.time_ms,
                            body: Body::Reading(Reading { values: Vec::new() }),
                        });
                    }
                    _ => open.last = Some(event.clone()),
                }
                if let (Mode::Mean, Body::Reading(r)) = (mode, &event.body) {
                    for v in &r.values {
                        match open.sums.iter_mut().find(|(n, ..)| n == &v.name) {
                            Some((_, _, sum, n)) => {
                                *sum += v.value;
                                *n = n.saturating_add(1);
                            }
                            None => {
                                open.sums.push((v.name.clone(), v.unit.clone(), v.value, 1));
                            }
                        }
                    }
                }
            }
            out
        }
        Logic::Window(spec) => {
            return window::step(spec, state.windows.get_or_insert_default(), event);
        }
        Logic::Threshold(spec) => threshold::step(spec, state.alert.get_or_insert_default(), event)
            .into_iter()
            .collect(),
        Logic::Geofence(spec) => geofence::step(spec, state.inside.get_or_insert_default(), event),
    };
    (derived, false)
}

/// What a closed `last` or `mean` interval emits.
fn close(interval: Interval, mode: Mode) -> Option<Derived> {
    let mut event = interval.last?;
    if mode == Mode::Mean && matches!(event.body, Body::Reading(_)) {
        let values = interval
            .sums
            .into_iter()
            .map(|(name, unit, sum, n)| SensorValue {
                name,
                value: sum / n.max(1) as f64,
                unit,
            })
            .collect();
        event.body = Body::Reading(Reading { values });
    }
    Some(Derived {
        first_seq: interval.first_seq,
        count: interval.count,
        event,
        headers: Vec::new(),
        tag: None,
    })
}

#[cfg(test)]
mod tests;
