//! `threshold`: an alert when a condition has held for a duration, and a clear when the clear
//! condition has held for a duration: hysteresis, so a value hovering at the limit does not flap.
//!
//! On event time, per device. Raising: `when` must hold on every event from the first one it
//! held on until one at least `for_ms` later (an event where it does not hold starts over).
//! Clearing: the same with `clear` (by default `not when`) and `clear_for_ms`. The emitted event
//! is the one that completed the duration, with headers `alert` (`raised` or `cleared`) and
//! `alert-since-ms` (when the condition began to hold).

use serde::{Deserialize, Serialize};
use tributary_protocol::Event;

use super::derived::Derived;
use super::expr::Condition;

/// A threshold rule's definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub when: Condition,
    pub for_ms: u64,
    /// `None`: `not when`.
    pub clear: Option<Condition>,
    pub clear_for_ms: u64,
}

/// A device's alert state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub raised: bool,
    /// When the condition that would change `raised` began to hold, the first seq since, and
    /// how many events it has held on.
    #[serde(default)]
    pub since: Option<(u64, u64, u64)>,
}

/// Runs one event; returns the alert or clear it completes, if any.
pub fn step(spec: &Spec, alert: &mut Alert, event: &Event) -> Option<Derived> {
    let (holds, duration) = if alert.raised {
        let holds = match &spec.clear {
            Some(c) => c.holds(event),
            // An event without the fields `when` needs says nothing: it does not clear.
            None => spec.when.is_false(event),
        };
        (holds, spec.clear_for_ms)
    } else {
        (spec.when.holds(event), spec.for_ms)
    };
    if !holds {
        alert.since = None;
        return None;
    }
    let held = alert.since.get_or_insert((event.time_ms, event.seq, 0));
    held.2 = held.2.saturating_add(1);
    let (since, first_seq, count) = *held;
    if event.time_ms.saturating_sub(since) < duration {
        return None;
    }
    alert.raised = !alert.raised;
    alert.since = None;
    Some(Derived {
        event: event.clone(),
        first_seq,
        count,
        headers: vec![
            (
                "alert".to_owned(),
                if alert.raised { "raised" } else { "cleared" }.to_owned(),
            ),
            ("alert-since-ms".to_owned(), since.to_string()),
        ],
        tag: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::rules::test_reading;

    fn run(spec: &Spec, events: &[(u64, Option<f64>)]) -> Vec<(u64, String)> {
        let mut alert = Alert::default();
        let mut out = Vec::new();
        for (i, (t, v)) in events.iter().enumerate() {
            let values: Vec<(&str, f64)> = v.iter().map(|v| ("t", *v)).collect();
            let e = test_reading("d", i as u64 + 1, *t, &values);
            if let Some(d) = step(spec, &mut alert, &e) {
                out.push((d.event.seq, d.headers[0].1.clone()));
            }
        }
        out
    }

    fn spec(for_ms: u64, clear: Option<&str>, clear_for_ms: u64) -> Spec {
        Spec {
            when: Condition::parse("values.t > 80").unwrap(),
            for_ms,
            clear: clear.map(|c| Condition::parse(c).unwrap()),
            clear_for_ms,
        }
    }

    #[test]
    fn an_alert_needs_its_condition_for_the_whole_duration_and_a_clear_likewise() {
        let s = spec(10_000, Some("values.t < 75"), 5_000);
        let out = run(
            &s,
            &[
                (0, Some(85.0)),      // 1: starts holding
                (5_000, Some(79.0)),  // 2: breaks it
                (6_000, Some(90.0)),  // 3: starts again
                (16_000, Some(91.0)), // 4: 10 s later: raised
                (17_000, Some(78.0)), // 5: not above 80, not below 75: hysteresis, still raised
                (18_000, Some(70.0)), // 6: clear starts
                (23_000, Some(72.0)), // 7: 5 s later: cleared
            ],
        );
        assert_eq!(out, [(4, "raised".to_owned()), (7, "cleared".to_owned())]);
    }

    #[test]
    fn without_a_clear_condition_only_a_definite_not_when_clears() {
        let out = run(
            &spec(0, None, 0),
            &[(0, Some(81.0)), (1_000, None), (2_000, Some(80.0))],
        );
        assert_eq!(
            out,
            [(1, "raised".to_owned()), (3, "cleared".to_owned())],
            "an event without t neither raises nor clears"
        );
    }
}
