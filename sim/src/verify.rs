//! `verify`: checks what reached the topics against what a run sent.
//!
//! Kafka's promises, as Tributary makes them end to end, each checked record by record:
//!
//! - **Nothing acknowledged is lost**: every seq a device saw acknowledged
//!   ([`Manifest`]: `first_seq ..= acked_up_to`) is in some topic. Otherwise: [`Defect::Missing`].
//! - **Duplicates are recognisable, and there are none**: no event id (the `event-id` header,
//!   `{device}:{seq}`) appears twice. Otherwise: [`Defect::Duplicate`]. With
//!   `allow_duplicates` (after a crash between a Kafka acknowledgement and the spool's delete,
//!   at-least-once delivery may repeat an event), duplicates are counted, not defects.
//! - **Same key, same order**: within a topic partition, a device's new events come in
//!   increasing seq. Otherwise: [`Defect::OutOfOrder`]. A repeat of an event already seen is a
//!   duplicate, not an order defect.
//! - **Same key, same partition**: a keyed record is in the partition Kafka's default
//!   partitioner picks for its key (murmur2). Otherwise: [`Defect::WrongPartition`]. The file
//!   sink has no partitions; this check is skipped there.
//! - Events of a run's device outside what it sent are [`Defect::Unexpected`]; records without
//!   a readable event id are [`Defect::Unreadable`]. Devices not in the manifest (another run's)
//!   are counted and otherwise ignored.
//!
//! Readers: [`kafka`] (rdkafka, up to each partition's high watermark) and [`file`] (the
//! gateway's file sink).

pub mod file;
#[cfg(feature = "kafka")]
pub mod kafka;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::manifest::Manifest;
use crate::murmur2::partition_for;

/// One record as a consumer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub topic: String,
    /// `-1` where there are no partitions (the file sink).
    pub partition: i32,
    /// The Kafka offset, or the file sink's line number.
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// The `event-id` header.
    pub event_id: Option<String>,
}

/// Where a record is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.partition < 0 {
            write!(f, "{} line {}", self.topic, self.offset)
        } else {
            write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
        }
    }
}

/// One broken promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Defect {
    /// Acknowledged seqs of `device` found in no topic, as inclusive ranges.
    Missing {
        device: String,
        seqs: Vec<(u64, u64)>,
    },
    Duplicate {
        event_id: String,
        first: Loc,
        again: Loc,
    },
    OutOfOrder {
        device: String,
        seq: u64,
        at: Loc,
        after_seq: u64,
        after: Loc,
    },
    WrongPartition {
        event_id: String,
        key: String,
        at: Loc,
        expected: i32,
        partitions: i32,
    },
    Unexpected {
        event_id: String,
        at: Loc,
        why: String,
    },
    Unreadable {
        at: Loc,
        why: String,
    },
}

impl Defect {
    /// The defect class, as the report names it.
    pub fn class(&self) -> &'static str {
        match self {
            Defect::Missing { .. } => "missing",
            Defect::Duplicate { .. } => "duplicate",
            Defect::OutOfOrder { .. } => "out-of-order",
            Defect::WrongPartition { .. } => "wrong-partition",
            Defect::Unexpected { .. } => "unexpected",
            Defect::Unreadable { .. } => "unreadable",
        }
    }
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.class())?;
        match self {
            Defect::Missing { device, seqs } => {
                let n: u64 = seqs.iter().map(|(a, b)| b - a + 1).sum();
                let shown: Vec<String> = seqs
                    .iter()
                    .take(10)
                    .map(|(a, b)| if a == b { a.to_string() } else { format!("{a}..={b}") })
                    .collect();
                let more = if seqs.len() > 10 { ", ..." } else { "" };
                write!(
                    f,
                    "{device}: {n} acknowledged event(s) in no topic: seq {}{more}",
                    shown.join(", ")
                )
            }
            Defect::Duplicate {
                event_id,
                first,
                again,
            } => write!(f, "{event_id} at {first} and again at {again}"),
            Defect::OutOfOrder {
                device,
                seq,
                at,
                after_seq,
                after,
            } => write!(
                f,
                "{device}: seq {seq} at {at} comes after seq {after_seq} at {after}"
            ),
            Defect::WrongPartition {
                event_id,
                key,
                at,
                expected,
                partitions,
            } => write!(
                f,
                "{event_id} at {at}: key {key:?} belongs in partition {expected} of {partitions} (murmur2)"
            ),
            Defect::Unexpected { event_id, at, why } => write!(f, "{event_id} at {at}: {why}"),
            Defect::Unreadable { at, why } => write!(f, "record at {at}: {why}"),
        }
    }
}

/// How strict to be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    pub allow_duplicates: bool,
}

/// The outcome of a check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    pub records: u64,
    /// Distinct events of the run's devices found.
    pub found: u64,
    /// Events the manifest says were acknowledged.
    pub acknowledged: u64,
    /// Sent, never acknowledged, and not found (not a defect).
    pub unacknowledged_absent: u64,
    /// Repeats seen when duplicates are allowed.
    pub duplicates_allowed: u64,
    /// Records of devices that are not in the manifest.
    pub foreign: u64,
    pub defects: Vec<Defect>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.defects.is_empty()
    }

    /// Whether acknowledged events are missing: the one defect that reading again, later, can
    /// clear (the gateway may still be forwarding).
    pub fn missing(&self) -> bool {
        self.defects
            .iter()
            .any(|d| matches!(d, Defect::Missing { .. }))
    }

    /// Defects per class.
    pub fn by_class(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for d in &self.defects {
            *m.entry(d.class()).or_insert(0) += 1;
        }
        m
    }

    /// The report, for people: one line per defect, then the totals.
    pub fn report(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for d in &self.defects {
            let _ = writeln!(out, "DEFECT {d}");
        }
        let _ = writeln!(
            out,
            "{} records read; {} of the run's events found, {} acknowledged; {} sent but \
             unacknowledged and absent; {} allowed duplicates; {} records of other devices",
            self.records,
            self.found,
            self.acknowledged,
            self.unacknowledged_absent,
            self.duplicates_allowed,
            self.foreign
        );
        if self.ok() {
            let _ = writeln!(out, "OK: no defects");
        } else {
            let classes: Vec<String> = self
                .by_class()
                .iter()
                .map(|(c, n)| format!("{n} {c}"))
                .collect();
            let _ = writeln!(
                out,
                "FAILED: {} defect(s): {}",
                self.defects.len(),
                classes.join(", ")
            );
        }
        out
    }
}

/// Splits an event id, `{device}:{seq}` or, from a device that sends boot sessions,
/// `{device}:{session in hex}:{seq}`, into the device and the seq.
pub fn parse_event_id(id: &str) -> Option<(&str, u64)> {
    let (head, seq) = id.rsplit_once(':')?;
    let device = head.split_once(':').map_or(head, |(device, _)| device);
    Some((device, seq.parse().ok()?))
}

/// Checks `records` against `manifest`. `partitions(topic)` is the topic's partition count
/// (`None` skips the partition check for it).
pub fn check(
    manifest: &Manifest,
    mut records: Vec<Observed>,
    partitions: &dyn Fn(&str) -> Option<i32>,
    options: Options,
) -> Verdict {
    records
        .sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
    let devices: HashMap<&str, &crate::manifest::DeviceEntry> = manifest
        .devices
        .iter()
        .map(|d| (d.id.as_str(), d))
        .collect();
    let mut verdict = Verdict {
        records: records.len() as u64,
        acknowledged: manifest.acknowledged(),
        ..Verdict::default()
    };
    let mut first_seen: HashMap<String, Loc> = HashMap::new();
    let mut seen: HashMap<&str, HashSet<u64>> = HashMap::new();
    // (topic, partition, device) -> the highest seq so far and where it was.
    let mut last: HashMap<(String, i32, String), (u64, Loc)> = HashMap::new();
    for r in &records {
        let at = Loc {
            topic: r.topic.clone(),
            partition: r.partition,
            offset: r.offset,
        };
        let Some(event_id) = r.event_id.as_deref() else {
            verdict.defects.push(Defect::Unreadable {
                at,
                why: "no event-id header".into(),
            });
            continue;
        };
        let Some((device, seq)) = parse_event_id(event_id) else {
            verdict.defects.push(Defect::Unreadable {
                at,
                why: format!("event-id {event_id:?} is not device:seq"),
            });
            continue;
        };
        let Some((&id, entry)) = devices.get_key_value(device) else {
            verdict.foreign += 1;
            continue;
        };
        if let (Some(n), Some(key)) = (partitions(&r.topic), r.key.as_deref()) {
            let expected = partition_for(key, n);
            if r.partition >= 0 && expected != r.partition {
                verdict.defects.push(Defect::WrongPartition {
                    event_id: event_id.to_owned(),
                    key: String::from_utf8_lossy(key).into_owned(),
                    at: at.clone(),
                    expected,
                    partitions: n,
                });
            }
        }
        let in_run = seq >= entry.first_seq && entry.last_sent_seq.is_some_and(|l| seq <= l);
        if !in_run {
            verdict.defects.push(Defect::Unexpected {
                event_id: event_id.to_owned(),
                at,
                why: format!(
                    "the run sent seqs {} to {} of this device",
                    entry.first_seq,
                    entry
                        .last_sent_seq
                        .map_or_else(|| "none".to_owned(), |l| l.to_string())
                ),
            });
            continue;
        }
        if let Some(first) = first_seen.get(event_id) {
            if options.allow_duplicates {
                verdict.duplicates_allowed += 1;
            } else {
                verdict.defects.push(Defect::Duplicate {
                    event_id: event_id.to_owned(),
                    first: first.clone(),
                    again: at,
                });
            }
            continue;
        }
        first_seen.insert(event_id.to_owned(), at.clone());
        seen.entry(id).or_default().insert(seq);
        verdict.found += 1;
        let slot = (r.topic.clone(), r.partition, device.to_owned());
        match last.get(&slot) {
            Some((after_seq, after)) if *after_seq > seq => {
                verdict.defects.push(Defect::OutOfOrder {
                    device: device.to_owned(),
                    seq,
                    at,
                    after_seq: *after_seq,
                    after: after.clone(),
                });
            }
            _ => {
                last.insert(slot, (seq, at));
            }
        }
    }
    let empty = HashSet::new();
    for d in &manifest.devices {
        let got = seen.get(d.id.as_str()).unwrap_or(&empty);
        if let Some(acked) = d.acked_up_to {
            let mut ranges: Vec<(u64, u64)> = Vec::new();
            for s in d.first_seq..=acked {
                if !got.contains(&s) {
                    match ranges.last_mut() {
                        Some((_, end)) if *end + 1 == s => *end = s,
                        _ => ranges.push((s, s)),
                    }
                }
            }
            if !ranges.is_empty() {
                verdict.defects.push(Defect::Missing {
                    device: d.id.clone(),
                    seqs: ranges,
                });
            }
        }
        if let Some(sent) = d.last_sent_seq {
            let from = d.acked_up_to.map_or(d.first_seq, |a| a + 1);
            verdict.unacknowledged_absent +=
                (from..=sent).filter(|s| !got.contains(s)).count() as u64;
        }
    }
    verdict
}

#[cfg(test)]
mod tests;
