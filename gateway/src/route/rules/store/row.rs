//! The bytes of a `device_rule_state` row, and of schema v5's `rule_state` rows, in every format
//! a gateway has written.
//!
//! Postcard is not self-describing: a field added to a rule's state makes older bytes decode
//! wrongly or not at all, which would reset every rule of every device on an upgrade. So a row
//! says its format:
//! - **Format 2** (percentiles, whose sketches sit in the window accumulators): the bytes `0x00
//!   0x02`, then postcard of the `(rule, version, state)` entries.
//! - **Format 1** (before): postcard of the entries, without a lead. Its first byte is the
//!   number of entries, never 0, because a device with no entries has no row; that is how the
//!   two are told apart. It is decoded through the frozen copies below and converted.
//!
//! The frozen copies are the state types as format 1 wrote them. The types both formats share
//! unchanged (a downsample's `Interval`, a threshold's `Alert`, a geofence's `Inside`) are
//! used as they are; changing one of those, or any state type, needs a format 3 with frozen
//! copies of format 2's types.

use serde::Deserialize;

use crate::route::rules::kinds::{Interval, State};
use crate::route::rules::{geofence, threshold, window};

/// The lead of a format 2 row.
const FORMAT_2: [u8; 2] = [0x00, 0x02];

/// One rule's state for a device, with the rule's name and version.
pub(crate) type Entry = (String, String, State);

/// A device row's bytes, format 2.
/// A device row's bytes, format 2, into `buf` (cleared first; reused across rows so that
/// encoding a group's rows does not grow a new buffer each time).
pub(crate) fn encode(
    entries: &[(&str, &str, &State)],
    buf: &mut Vec<u8>,
) -> Result<(), postcard::Error> {
    buf.clear();
    buf.extend_from_slice(&FORMAT_2);
    *buf = postcard::to_extend(entries, std::mem::take(buf))?;
    Ok(())
}

/// A device row's entries, from any format.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<Entry>, postcard::Error> {
    match bytes.strip_prefix(&FORMAT_2) {
        Some(rest) => postcard::from_bytes(rest),
        None if bytes.first() == Some(&0) => Err(postcard::Error::DeserializeBadEncoding),
        None => {
            let old: Vec<(String, String, StateV1)> = postcard::from_bytes(bytes)?;
            Ok(old
                .into_iter()
                .map(|(rule, version, state)| (rule, version, state.into()))
                .collect())
        }
    }
}

/// A schema v5 row's state (one rule, one device), which format 1 wrote.
pub(super) fn decode_v5(bytes: &[u8]) -> Result<State, postcard::Error> {
    postcard::from_bytes::<StateV1>(bytes).map(State::from)
}

/// [`State`] as format 1 wrote it.
#[derive(Deserialize)]
struct StateV1 {
    time_ms: u64,
    emitted: Option<(f64, u64)>,
    interval: Option<Interval>,
    windows: Option<WindowsV1>,
    alert: Option<threshold::Alert>,
    inside: Option<geofence::Inside>,
}

/// [`window::Windows`] as format 1 wrote it.
#[derive(Deserialize)]
struct WindowsV1 {
    max_time_ms: u64,
    closed_until_ms: u64,
    open: Vec<OpenV1>,
}

/// [`window::Open`] as format 1 wrote it.
#[derive(Deserialize)]
struct OpenV1 {
    start_ms: u64,
    first_seq: u64,
    last_seq: u64,
    events: u64,
    fields: Vec<AccV1>,
}

/// [`window::Acc`] as format 1 wrote it: without a sketch.
#[derive(Deserialize)]
struct AccV1 {
    count: u64,
    min: f64,
    max: f64,
    sum: f64,
    last: f64,
    unit: String,
}

impl From<StateV1> for State {
    fn from(s: StateV1) -> Self {
        State {
            time_ms: s.time_ms,
            emitted: s.emitted,
            interval: s.interval.map(Box::new),
            windows: s.windows.map(|w| {
                Box::new(window::Windows {
                    max_time_ms: w.max_time_ms,
                    closed_until_ms: w.closed_until_ms,
                    open: w
                        .open
                        .into_iter()
                        .map(|o| window::Open {
                            start_ms: o.start_ms,
                            first_seq: o.first_seq,
                            last_seq: o.last_seq,
                            events: o.events,
                            fields: o
                                .fields
                                .into_iter()
                                .map(|a| window::Acc {
                                    count: a.count,
                                    min: a.min,
                                    max: a.max,
                                    sum: a.sum,
                                    last: a.last,
                                    unit: a.unit,
                                    // Format 1 had no percentiles, so no rule of its version asks
                                    // for one.
                                    sketch: None,
                                })
                                .collect(),
                        })
                        .collect(),
                })
            }),
            alert: s.alert.map(Box::new),
            inside: s.inside.map(Box::new),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device row as the gateway wrote it before percentiles (commit 9ae7479, printed with
    /// `postcard::to_allocvec` of its `Vec<(String, String, State)>`): rule `w`, version
    /// `0123456789abcdef`, with a deadband's value, a downsample's interval, a window, a
    /// raised alert and a geofence zone.
    const FORMAT_1_ROW: &str = "0101771030313233343536373839616263646566e0d403010000000000803440\
        e8070101010201016402e0d4030001017400000000000034400343656c0101740343656c00000000000044\
        400201e0d4030001000103030103000000000000334000000000000035400000000000004e400000000000\
        0034400343656c0101010102030101056465706f740500";

    fn format_1_row() -> Vec<u8> {
        (0..FORMAT_1_ROW.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&FORMAT_1_ROW[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn a_format_1_row_decodes_into_todays_state() {
        let bytes = format_1_row();
        assert_ne!(bytes[0], 0, "format 1 leads with its entry count");
        let entries = decode(&bytes).unwrap();
        assert_eq!(entries.len(), 1);
        let (rule, version, state) = &entries[0];
        assert_eq!((rule.as_str(), version.as_str()), ("w", "0123456789abcdef"));
        assert_eq!(state.time_ms, 60_000);
        assert_eq!(state.emitted, Some((20.5, 1_000)));
        let interval = state.interval.as_ref().unwrap();
        assert_eq!((interval.index, interval.count), (1, 2));
        assert_eq!(interval.last.as_ref().map(|e| e.seq), Some(2));
        assert_eq!(interval.sums, vec![("t".into(), "Cel".into(), 40.0, 2)]);
        let windows = state.windows.as_ref().unwrap();
        assert_eq!((windows.max_time_ms, windows.open.len()), (60_000, 1));
        let open = &windows.open[0];
        assert_eq!((open.first_seq, open.last_seq, open.events), (1, 3, 3));
        let acc = &open.fields[0];
        assert_eq!(
            (acc.count, acc.min, acc.max, acc.sum, acc.last),
            (3, 19.0, 21.0, 60.0, 20.0)
        );
        assert_eq!((acc.unit.as_str(), acc.sketch.is_none()), ("Cel", true));
        let alert = state.alert.as_ref().unwrap();
        assert_eq!((alert.raised, alert.since), (true, Some((1, 2, 3))));
        assert_eq!(
            state.inside.as_ref().unwrap().zones,
            vec![("depot".to_owned(), 5, false)]
        );
    }

    #[test]
    fn format_2_round_trips_and_a_stray_lead_is_an_error() {
        let state = State {
            emitted: Some((1.0, 2)),
            ..State::default()
        };
        let mut bytes = vec![9; 3];
        encode(&[("r", "v", &state)], &mut bytes).unwrap();
        assert_eq!(bytes[..2], FORMAT_2);
        assert_eq!(
            decode(&bytes).unwrap(),
            vec![("r".to_owned(), "v".to_owned(), state)]
        );
        assert!(decode(&[0x00, 0x07, 1]).is_err());
    }
}
