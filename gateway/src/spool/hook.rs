//! The commit hook: what writes in the same transaction as the events it sees.
//!
//! The spool's writer commits a group of events in one transaction. Whoever must change state
//! of its own in exactly that transaction (the rules' windows and the records they derive today;
//! command queues and transaction markers next) implements [`CommitHook`], and the spool calls it
//! at each step of the group. The spool knows nothing of what the hook keeps or how it encodes
//! it: the hook owns its tables (created by the spool's schema, so one migration path) and their
//! rows.
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

use rusqlite::Connection;

use super::SpoolError;
use crate::record::Record;

/// Per name (a rule's): records emitted and events seen too late, in one committed group.
pub type Counts = BTreeMap<String, (u64, u64)>;

/// Called by the spool's writer at each step of a group commit. See the module's invariants.
pub trait CommitHook: Send + 'static {
    /// Reads the hook's committed state, once, when the spool opens (on the writer's
    /// connection, after the schema is up to date).
    fn load(&mut self, conn: &Connection) -> Result<(), SpoolError>;

    /// Whether there is anything to run: when not, the writer skips the hook per record.
    fn is_active(&self) -> bool;

    /// Before a group that appends: memory made as the database is, after a failed group.
    fn prepare(&mut self, conn: &Connection) -> Result<(), SpoolError>;

    /// A record this group stores: the records it derives (inserted right after it), and
    /// whether one of them replaces it (then it is not stored itself).
    fn stored(&mut self, record: &Record) -> (Vec<Record>, bool);

    /// Writes the group's changes, inside the group's transaction (`tx`).
    fn save(&mut self, tx: &Connection) -> Result<(), SpoolError>;

    /// The group committed: its changes are the committed state now. Returns its counts.
    fn committed(&mut self) -> Counts;

    /// The group rolled back: its changes are stale and dropped.
    fn rolled_back(&mut self, conn: &Connection);
}

/// No hook: nothing runs, nothing is written.
#[derive(Debug, Default)]
pub struct Inert;

impl CommitHook for Inert {
    fn load(&mut self, _conn: &Connection) -> Result<(), SpoolError> {
        Ok(())
    }

    fn is_active(&self) -> bool {
        false
    }

    fn prepare(&mut self, _conn: &Connection) -> Result<(), SpoolError> {
        Ok(())
    }

    fn stored(&mut self, _record: &Record) -> (Vec<Record>, bool) {
        (Vec::new(), false)
    }

    fn save(&mut self, _tx: &Connection) -> Result<(), SpoolError> {
        Ok(())
    }

    fn committed(&mut self) -> Counts {
        Counts::new()
    }

    fn rolled_back(&mut self, _conn: &Connection) {}
}
