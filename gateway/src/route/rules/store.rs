//! The rules' side of a group commit: their state per device (`device_rule_state`), the
//! derived rows they emit, and both in the spool writer's transaction ([`crate::route::rules`] says why
//! that makes them exactly once). [`RuleStates`] is the spool's commit hook
//! ([`tributary_spool::hook`]): the spool calls it at each step of a group and knows nothing of
//! what it keeps.
//!
//! A device's states for every rule are one row: postcard bytes of `(rule, version, state)`
//! entries, in a format the row names ([`row`]: older rows still decode). One row per device rather than per rule and device makes a group's state writes as
//! many as the devices it touched (a fifth of the rows with five rules), the largest share of
//! what rules cost a commit. An entry of another version of its rule (the rule was changed), of
//! a rule no longer configured, or a row that does not decode, is dropped when the spool opens,
//! and that is logged. Rows of schema v5's `rule_state` (one per rule and device) are read the
//! same way and moved into `device_rule_state` then.
//!
//! The committed states live in memory, mirrored from the table (like the sequence state). A
//! group works on a [`Pending`] overlay: a device's committed states are moved into it when the
//! group first touches it (not copied: copying every touched device's windows per group, and
//! dropping the old ones after, cost the writer more than the rules' own steps), then updated in
//! place. The overlay is written in the group's transaction and moved back once that
//! transaction committed ([`CommitHook::committed`]). When it did not commit
//! ([`CommitHook::rolled_back`]), the states it took are stale and dropped; the devices are
//! marked lost, and their rows, which the rollback left as they were, are read again (at once,
//! and by [`CommitHook::prepare`] until that succeeds) before any rule runs on them, so memory
//! is as the database is.

use std::collections::{BTreeMap, HashMap};

use crate::route::rules::{RuleSet, State};
use tributary_spool::hook::{CommitHook, Counts, Store};
use tributary_spool::{Record, SpoolError};

pub(crate) mod row;

#[cfg(test)]
mod tests;

/// A device's states, by rule index (`None`: the rule has none for it yet).
type DeviceStates = Vec<Option<State>>;

/// The rules and their committed states, by device.
#[derive(Debug, Default)]
pub struct RuleStates {
    set: RuleSet,
    committed: HashMap<String, DeviceStates>,
    /// Devices whose states a failed group took: to be read from the table again.
    lost: Vec<String>,
    /// The group being committed.
    pending: Pending,
}

/// The states a group works on: its own, first taken from the committed ones.
struct Overlay<'a> {
    pending: &'a mut Pending,
    committed: &'a mut HashMap<String, DeviceStates>,
    /// The device last asked for: an event's rules all ask for the same one.
    last: Option<usize>,
}

impl crate::route::rules::States for Overlay<'_> {
    fn state(&mut self, rule: usize, device: &str) -> &mut State {
        let p = &mut *self.pending;
        let cached = self
            .last
            .filter(|i| p.devices.get(*i).is_some_and(|(d, _)| d == device));
        let i = match cached.or_else(|| p.index.get(device).copied()) {
            Some(i) => i,
            None => {
                let taken = self.committed.remove(device).unwrap_or_default();
                p.devices.push((device.to_owned(), taken));
                p.index.insert(device.to_owned(), p.devices.len() - 1);
                p.devices.len() - 1
            }
        };
        self.last = Some(i);
        // `i` came from `index` (or was checked), which only holds positions of `devices`.
        let states = &mut p.devices[i].1;
        if states.len() <= rule {
            states.resize_with(rule + 1, || None);
        }
        states[rule].get_or_insert_with(State::default)
    }
}

/// One group's changes, not yet committed.
#[derive(Debug, Default)]
struct Pending {
    index: HashMap<String, usize>,
    devices: Vec<(String, DeviceStates)>,
    /// Per rule name: derived events emitted and late events seen.
    counts: Counts,
}

/// Why entries were dropped at load, per rule name: (the version they had, devices).
type Resets = BTreeMap<String, (String, u64)>;

impl RuleStates {
    /// The hook that runs `set` (its states read by [`CommitHook::load`] when the spool opens).
    pub fn new(set: RuleSet) -> Self {
        Self {
            set,
            ..Self::default()
        }
    }

    /// Loads the states of `set`'s rules. Entries of rules no longer configured, or of another
    /// version of a rule (it was changed), are dropped, and that is logged: a changed rule
    /// starts afresh. Schema v5's per-rule rows are moved into per-device rows.
    fn read(store: &Store, set: RuleSet) -> Result<Self, SpoolError> {
        let mut committed: HashMap<String, DeviceStates> = HashMap::new();
        let mut reset = Resets::new();
        let mut rewrite: Vec<String> = Vec::new();
        let mut keep = |device: &str,
                        rule: &str,
                        version: &str,
                        state: Option<State>,
                        committed: &mut HashMap<String, DeviceStates>|
         -> bool {
            match (slot(&set, rule, version), state) {
                (Some(i), Some(state)) => {
                    place(committed.entry(device.to_owned()).or_default(), i, state);
                    true
                }
                _ => {
                    reset
                        .entry(rule.to_owned())
                        .or_insert((version.to_owned(), 0))
                        .1 += 1;
                    false
                }
            }
        };
        for (device, bytes) in store.all()? {
            let entries = match row::decode(&bytes) {
                Ok(e) => e,
                Err(error) => {
                    tracing::warn!(message = "A device's rule state does not decode; it starts afresh.", device_id = %device, %error);
                    rewrite.push(device);
                    continue;
                }
            };
            let mut dropped = false;
            for (rule, version, state) in entries {
                dropped |= !keep(&device, &rule, &version, Some(state), &mut committed);
            }
            if dropped {
                rewrite.push(device);
            }
        }
        // Schema v5's rows, one per rule and device: moved into per-device rows.
        for old in store.v5_rows()? {
            keep(
                &old.device_id,
                &old.name,
                &old.version,
                row::decode_v5(&old.bytes).ok(),
                &mut committed,
            );
            rewrite.push(old.device_id);
        }
        log_resets(&set, &reset);
        let states = Self {
            set,
            committed,
            lost: Vec::new(),
            pending: Pending::default(),
        };
        rewrite.sort();
        rewrite.dedup();
        for device in &rewrite {
            let empty = Vec::new();
            let row = states.committed.get(device).unwrap_or(&empty);
            write_row(store, &states.set, device, row, &mut Vec::new())?;
        }
        store.clear_v5()?;
        Ok(states)
    }

    /// Runs the rules on a record that is being stored; returns the derived records and
    /// whether a rule replaces the raw one.
    fn run(&mut self, record: &Record) -> (Vec<Record>, bool) {
        let (Some(event), Some(source)) = (&record.event, &record.origin) else {
            return (Vec::new(), false);
        };
        let pending = &mut self.pending;
        let mut states = Overlay {
            pending,
            committed: &mut self.committed,
            last: None,
        };
        let topics = (record.topic.as_str(), record.mqtt_topic.as_deref());
        let out = self.set.run(source, event, topics, &mut states);
        let rules = self.set.rules();
        let counts = &mut self.pending.counts;
        let mut count = |i: usize, emitted: u64, late: u64| {
            if let Some(rule) = rules.get(i) {
                let c = counts.entry(rule.name.clone()).or_default();
                c.0 += emitted;
                c.1 += late;
            }
        };
        for (i, _) in &out.records {
            count(*i, 1, 0);
        }
        for i in &out.late {
            count(*i, 0, 1);
        }
        let records = out.records.into_iter().map(|(_, r)| r).collect();
        (records, out.replace_raw)
    }

    /// Reads the committed states of the devices a failed group took, if any. The writer calls
    /// it before running rules; until it succeeds no rule runs, so none runs on a device whose
    /// state is missing from memory.
    fn recover(&mut self, store: &Store) -> Result<(), SpoolError> {
        if self.lost.is_empty() {
            return Ok(());
        }
        for device in &self.lost {
            let bytes = store.get(device)?;
            let entries = match bytes.map(|b| row::decode(&b)) {
                None => Vec::new(),
                Some(Ok(entries)) => entries,
                Some(Err(error)) => {
                    tracing::warn!(message = "A device's rule state does not decode; it starts afresh.", device_id = %device, %error);
                    Vec::new()
                }
            };
            let mut states = DeviceStates::new();
            for (rule, version, state) in entries {
                if let Some(i) = slot(&self.set, &rule, &version) {
                    place(&mut states, i, state);
                }
            }
            if !states.is_empty() {
                self.committed.insert(device.clone(), states);
            }
        }
        self.lost.clear();
        Ok(())
    }
}

impl CommitHook for RuleStates {
    fn load(&mut self, store: &Store) -> Result<(), SpoolError> {
        *self = Self::read(store, std::mem::take(&mut self.set))?;
        Ok(())
    }

    fn is_active(&self) -> bool {
        !self.set.is_empty()
    }

    fn prepare(&mut self, store: &Store) -> Result<(), SpoolError> {
        self.recover(store)
    }

    fn stored(&mut self, record: &Record) -> (Vec<Record>, bool) {
        self.run(record)
    }

    /// A row per device the group touched.
    fn save(&mut self, tx: &Store) -> Result<(), SpoolError> {
        let mut buf = Vec::with_capacity(1024);
        for (device, states) in &self.pending.devices {
            write_row(tx, &self.set, device, states, &mut buf)?;
        }
        Ok(())
    }

    fn committed(&mut self) -> Counts {
        let pending = std::mem::take(&mut self.pending);
        self.committed.extend(pending.devices);
        pending.counts
    }

    /// The states the group took are dropped; their devices' committed states are read again
    /// now, or by [`CommitHook::prepare`] before the rules run next.
    fn rolled_back(&mut self, store: &Store) {
        let pending = std::mem::take(&mut self.pending);
        self.lost
            .extend(pending.devices.into_iter().map(|(device, _)| device));
        if let Err(again) = self.recover(store) {
            tracing::warn!(message = "Reading rule states after a failed commit failed; retried before the next rules run.", error = %again);
        }
    }
}

/// Where the state of `rule` at `version` goes: that rule's index, if it is configured at that
/// version (a changed rule's old state has none).
fn slot(set: &RuleSet, rule: &str, version: &str) -> Option<usize> {
    set.rules()
        .iter()
        .position(|r| r.name == rule && r.version == version)
}

/// Puts rule `i`'s state into a device's states.
fn place(states: &mut DeviceStates, i: usize, state: State) {
    if states.len() <= i {
        states.resize_with(i + 1, || None);
    }
    states[i] = Some(state);
}

/// Writes (or, with no states, deletes) one device's row.
fn write_row(
    store: &Store,
    set: &RuleSet,
    device: &str,
    states: &[Option<State>],
    buf: &mut Vec<u8>,
) -> Result<(), SpoolError> {
    let entries: Vec<(&str, &str, &State)> = set
        .rules()
        .iter()
        .zip(states)
        .filter_map(|(rule, s)| Some((rule.name.as_str(), rule.version.as_str(), s.as_ref()?)))
        .collect();
    if entries.is_empty() {
        return store.delete(device);
    }
    row::encode(&entries, buf).map_err(|e| SpoolError::BadRow {
        id: 0,
        reason: format!("rule state of {device}: {e}"),
    })?;
    store.put(device, buf)
}

fn log_resets(set: &RuleSet, reset: &Resets) {
    for (rule, (version, devices)) in reset {
        match set.rules().iter().find(|r| &r.name == rule) {
            Some(r) => tracing::warn!(
                message = "Rule changed: its state starts afresh.",
                rule = %rule,
                from_version = %version,
                to_version = %r.version,
                devices
            ),
            None => tracing::info!(
                message = "Rule no longer configured: its state is dropped.",
                rule = %rule,
                devices
            ),
        }
    }
}
