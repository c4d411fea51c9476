//! The commit hook: what writes in the same transaction as the events it sees.
//!
//! The spool's writer commits a group of events in one transaction. Whoever must change state
//! of its own in exactly that transaction (the rules' windows and the records they derive today;
//! command queues and transaction markers next) implements [`CommitHook`], and the spool calls it
//! at each step of the group. The spool knows nothing of what the hook keeps or how it encodes
//! it: the hook reads and writes opaque bytes per device through a [`Store`], the spool's view
//! of the hook's table (created by the spool's schema, so one migration path; SQLite stays the
//! spool's business, and no other crate names it).
//!
//! # Invariants
//! - **One transaction.** [`CommitHook::stored`] runs for each record as it is inserted, and
//!   [`CommitHook::save`] writes the hook's changes in the same transaction before it commits:
//!   either the events and the hook's state are both durable, or neither.
//! - **Memory follows the database.** After [`CommitHook::committed`] the hook takes its changes
//!   in; after [`CommitHook::rolled_back`] it drops them, and [`CommitHook::prepare`] (called
//!   before each group that appends) brings what a failed group took back from the database
//!   before the hook runs again.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::SpoolError;
use crate::record::Record;

/// A row of schema 5's `rule_state`: one name's (a rule's) state of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V5Row {
    pub name: String,
    pub device_id: String,
    pub version: String,
    pub bytes: Vec<u8>,
}

/// The hook's state in the spool: one blob per device id, in `device_rule_state` (the table keeps
/// the name it had when the rules were its only user). Reads and writes run on the connection
/// the spool hands the hook: inside the group's transaction in [`CommitHook::save`].
pub struct Store<'c> {
    conn: &'c Connection,
}

impl<'c> Store<'c> {
    pub(crate) fn new(conn: &'c Connection) -> Self {
        Self { conn }
    }

    /// Every device's blob.
    pub fn all(&self) -> Result<Vec<(String, Vec<u8>)>, SpoolError> {
        self.conn
            .prepare("SELECT device_id, states FROM device_rule_state")
            .and_then(|mut stmt| {
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(SpoolError::sqlite("read hook state"))
    }

    /// One device's blob, if it has one.
    pub fn get(&self, device: &str) -> Result<Option<Vec<u8>>, SpoolError> {
        self.conn
            .prepare_cached("SELECT states FROM device_rule_state WHERE device_id = ?1")
            .and_then(|mut stmt| stmt.query_row([device], |r| r.get(0)).optional())
            .map_err(SpoolError::sqlite("read hook state"))
    }

    /// Sets one device's blob.
    pub fn put(&self, device: &str, bytes: &[u8]) -> Result<(), SpoolError> {
        self.conn
            .prepare_cached(
                "INSERT INTO device_rule_state (device_id, states) VALUES (?1, ?2)
                 ON CONFLICT(device_id) DO UPDATE SET states = excluded.states",
            )
            .and_then(|mut stmt| stmt.execute(params![device, bytes]))
            .map_err(SpoolError::sqlite("save hook state"))?;
        Ok(())
    }

    /// Deletes one device's blob.
    pub fn delete(&self, device: &str) -> Result<(), SpoolError> {
        self.conn
            .prepare_cached("DELETE FROM device_rule_state WHERE device_id = ?1")
            .and_then(|mut stmt| stmt.execute([device]))
            .map_err(SpoolError::sqlite("save hook state"))?;
        Ok(())
    }

    /// Schema 5's rows, one per name and device. The hook moves them into its per-device blobs
    /// when it loads, then calls [`Store::clear_v5`].
    pub fn v5_rows(&self) -> Result<Vec<V5Row>, SpoolError> {
        self.conn
            .prepare("SELECT rule, device_id, version, state FROM rule_state")
            .and_then(|mut stmt| {
                stmt.query_map([], |r| {
                    Ok(V5Row {
                        name: r.get(0)?,
                        device_id: r.get(1)?,
                        version: r.get(2)?,
                        bytes: r.get(3)?,
                    })
                })?
                .collect()
            })
            .map_err(SpoolError::sqlite("read hook state"))
    }

    /// Empties schema 5's table, once its rows moved.
    pub fn clear_v5(&self) -> Result<(), SpoolError> {
        self.conn
            .execute("DELETE FROM rule_state", [])
            .map_err(SpoolError::sqlite("move hook state"))?;
        Ok(())
    }
}

/// Per name (a rule's): records emitted and events seen too late, in one committed group.
pub type Counts = BTreeMap<String, (u64, u64)>;

/// Called by the spool's writer at each step of a group commit. See the module's invariants.
pub trait CommitHook: Send + 'static {
    /// Reads the hook's committed state, once, when the spool opens (on the writer's
    /// connection, after the schema is up to date).
    fn load(&mut self, store: &Store) -> Result<(), SpoolError>;

    /// Whether there is anything to run: when not, the writer skips the hook per record.
    fn is_active(&self) -> bool;

    /// Before a group that appends: memory made as the database is, after a failed group.
    fn prepare(&mut self, store: &Store) -> Result<(), SpoolError>;

    /// A record this group stores: the records it derives (inserted right after it), and
    /// whether one of them replaces it (then it is not stored itself).
    fn stored(&mut self, record: &Record) -> (Vec<Record>, bool);

    /// Writes the group's changes, inside the group's transaction (`tx`).
    fn save(&mut self, tx: &Store) -> Result<(), SpoolError>;

    /// The group committed: its changes are the committed state now. Returns its counts.
    fn committed(&mut self) -> Counts;

    /// The group rolled back: its changes are stale and dropped.
    fn rolled_back(&mut self, store: &Store);
}

/// No hook: nothing runs, nothing is written.
#[derive(Debug, Default)]
pub struct Inert;

impl CommitHook for Inert {
    fn load(&mut self, _store: &Store) -> Result<(), SpoolError> {
        Ok(())
    }

    fn is_active(&self) -> bool {
        false
    }

    fn prepare(&mut self, _store: &Store) -> Result<(), SpoolError> {
        Ok(())
    }

    fn stored(&mut self, _record: &Record) -> (Vec<Record>, bool) {
        (Vec::new(), false)
    }

    fn save(&mut self, _tx: &Store) -> Result<(), SpoolError> {
        Ok(())
    }

    fn committed(&mut self) -> Counts {
        Counts::new()
    }

    fn rolled_back(&mut self, _store: &Store) {}
}
