//! Schema set-up and upgrades, versioned with `PRAGMA user_version`, in one transaction.
//!
//! - v1: `records` (the queue) and `devices` (highest stored seq per device).
//! - v2: `counters(topic, reason, count)`: events the spool itself discarded (`dropped_full`
//!   under the `drop_oldest` policy, `expired` past `max_age`), kept across restarts so
//!   `tributary spool stats` can say what was lost and why.
//!
//! A database with a newer version than this code is refused, never rewritten.

use rusqlite::Connection;

use super::SpoolError;

/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = 2;

/// The first schema, frozen: migrations start from it.
pub const SCHEMA_V1: &str = "
CREATE TABLE records (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    topic        TEXT    NOT NULL,
    key          BLOB    NOT NULL,
    value        BLOB    NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    headers      TEXT    NOT NULL,
    device_id    TEXT,
    seq          INTEGER,
    received_ms  INTEGER NOT NULL
);
CREATE TABLE devices (
    device_id TEXT PRIMARY KEY,
    max_seq   INTEGER NOT NULL
) WITHOUT ROWID;
";

const V1_TO_V2: &str = "
CREATE TABLE counters (
    topic  TEXT    NOT NULL,
    reason TEXT    NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (topic, reason)
) WITHOUT ROWID;
";

/// The pragmas every connection that writes uses.
pub const PRAGMAS: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
PRAGMA busy_timeout = 5000;
PRAGMA journal_size_limit = 16777216;
";

/// Reads the schema version.
pub fn version(conn: &Connection) -> Result<i64, SpoolError> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(SpoolError::sqlite("read schema version"))
}

/// Brings the schema up to [`SCHEMA_VERSION`] in one transaction.
pub fn migrate(conn: &mut Connection) -> Result<(), SpoolError> {
    let tx = conn
        .transaction()
        .map_err(SpoolError::sqlite("begin migration"))?;
    let found = version(&tx)?;
    if found > SCHEMA_VERSION {
        return Err(SpoolError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < 1 {
        tx.execute_batch(SCHEMA_V1)
            .map_err(SpoolError::sqlite("create schema v1"))?;
    }
    if found < 2 {
        tx.execute_batch(V1_TO_V2)
            .map_err(SpoolError::sqlite("migrate to schema v2"))?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(SpoolError::sqlite("write schema version"))?;
    tx.commit().map_err(SpoolError::sqlite("commit migration"))
}
