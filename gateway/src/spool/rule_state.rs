//! The rules' side of a group commit: their state per device (`rule_state`), the derived rows
//! they emit, and both in the writer's transaction ([`crate::rules`] says why that makes them
//! exactly once).
//!
//! States are stored as postcard bytes (compact and quick to write at every commit; JSON took a
//! large share of a group's time with windows open). An unreadable state is treated like one of
//! another version: dropped at start, and logged. The committed states live in memory, mirrored
//! from `rule_state` (like the sequence state).
//! A group works on a [`Pending`] overlay (a rule's committed state is copied in when the group
//! first touches it, then updated in place); the overlay is written in the group's transaction and
//! merged into memory only once that transaction committed, so a failed commit leaves memory as
//! the database is.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{params, Connection, Transaction};

use super::SpoolError;
use crate::record::Record;
use crate::rules::{RuleSet, State};

/// The rules and their committed states, keyed by `(rule name, device id)`.
#[derive(Debug, Default)]
pub struct RuleStates {
    set: RuleSet,
    committed: HashMap<(String, String), State>,
}

/// The states a group works on: its own, first taken from the committed ones.
struct Overlay<'a> {
    pending: &'a mut HashMap<(usize, String), State>,
    committed: &'a HashMap<(String, String), State>,
    set: &'a RuleSet,
}

impl crate::rules::States for Overlay<'_> {
    fn state(&mut self, rule: usize, device: &str) -> &mut State {
        let (committed, set) = (self.committed, self.set);
        self.pending
            .entry((rule, device.to_owned()))
            .or_insert_with(|| {
                set.rules()
                    .get(rule)
                    .and_then(|r| committed.get(&(r.name.clone(), device.to_owned())))
                    .cloned()
                    .unwrap_or_default()
            })
    }
}

/// One group's changes, not yet committed.
#[derive(Debug, Default)]
pub struct Pending {
    states: HashMap<(usize, String), State>,
    /// Per rule name: derived events emitted and late events seen.
    pub counts: BTreeMap<String, (u64, u64)>,
}

impl RuleStates {
    /// Loads the states of `set`'s rules from `rule_state`. Rows of rules no longer configured,
    /// or of another version of a rule (it was changed), are deleted, and that is logged: a
    /// changed rule starts afresh.
    pub fn load(conn: &Connection, set: RuleSet) -> Result<Self, SpoolError> {
        let rows: Vec<(String, String, String, Vec<u8>)> = conn
            .prepare("SELECT rule, device_id, version, state FROM rule_state")
            .and_then(|mut stmt| {
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect()
            })
            .map_err(SpoolError::sqlite("load rule state"))?;
        let mut committed = HashMap::new();
        let mut reset: BTreeMap<String, (String, u64)> = BTreeMap::new();
        for (rule, device, version, text) in rows {
            let current = set.rules().iter().find(|r| r.name == rule);
            let state = postcard::from_bytes::<State>(&text).ok();
            match (current, state) {
                (Some(r), Some(state)) if r.version == version => {
                    committed.insert((rule, device), state);
                }
                _ => reset.entry(rule).or_insert((version, 0)).1 += 1,
            }
        }
        for (rule, (version, devices)) in &reset {
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
            conn.execute("DELETE FROM rule_state WHERE rule = ?1", [rule])
                .map_err(SpoolError::sqlite("reset rule state"))?;
        }
        Ok(Self { set, committed })
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Runs the rules on a record that is being stored; returns the derived records and
    /// whether a rule replaces the raw one.
    pub fn run(&self, pending: &mut Pending, record: &Record) -> (Vec<Record>, bool) {
        let (Some(event), Some(source)) = (&record.event, &record.origin) else {
            return (Vec::new(), false);
        };
        let mut states = Overlay {
            pending: &mut pending.states,
            committed: &self.committed,
            set: &self.set,
        };
        let out = self.set.run(source, event, &record.topic, &mut states);
        let rules = self.set.rules();
        let mut count = |i: usize, emitted: u64, late: u64| {
            if let Some(rule) = rules.get(i) {
                let c = pending.counts.entry(rule.name.clone()).or_default();
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

    /// Writes `pending`'s states in the group's transaction.
    pub fn save(&self, tx: &Transaction<'_>, pending: &Pending) -> Result<(), SpoolError> {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO rule_state (rule, device_id, version, state) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(rule, device_id) DO UPDATE SET version = excluded.version,
                   state = excluded.state",
            )
            .map_err(SpoolError::sqlite("save rule state"))?;
        for ((i, device), state) in &pending.states {
            let Some(rule) = self.set.rules().get(*i) else {
                continue;
            };
            let text = postcard::to_allocvec(state).map_err(|e| SpoolError::BadRow {
                id: 0,
                reason: format!("rule {} state: {e}", rule.name),
            })?;
            stmt.execute(params![rule.name, device, rule.version, text])
                .map_err(SpoolError::sqlite("save rule state"))?;
        }
        Ok(())
    }

    /// Takes in a committed group's states.
    pub fn apply(&mut self, pending: Pending) {
        for ((i, device), state) in pending.states {
            if let Some(rule) = self.set.rules().get(i) {
                self.committed.insert((rule.name.clone(), device), state);
            }
        }
    }
}
