//! Schema set-up and upgrades, versioned with `PRAGMA user_version`, in one transaction.
//!
//! - v1: `records` (the queue) and `devices` (highest stored seq per device).
//! - v2: `counters(topic, reason, count)`: events the spool itself discarded (`dropped_full`
//!   under the `drop_oldest` policy, `expired` past `max_age`), kept across restarts so
//!   `tributary spool stats` can say what was lost and why.
//! - v3: sequence state per boot session. `sessions(device_id, session, max_seq, max_time_ms,
//!   last_seen_ms, regressions)` replaces `devices` (whose rows become session 0, with the
//!   migration time as their latest event time), and `records` gains `session` (0: none).
//! - v4: `quarantine`: records Kafka refused for good (too large, invalid timestamp, topic not
//!   authorised), moved out of the queue with the reason, for the operator to requeue or drop.
//! - v5: `rule_state(rule, device_id, version, state)`: each rule's state per device (postcard),
//!   written in the transaction that stores the events it saw (the gateway's rules).
//! - v6: `source_offsets(source, state)`: how far a source (a tailed file) has been read,
//!   written in the transaction that stores what was read up to there.
//! - v7: `device_rule_state(device_id, states)`: every rule's state of a device in one row
//!   (`rule_state`'s rows are moved into it when the spool opens with rules).
//! - v8: `records.headers` may hold the compact binary list ([`super::headers`]) instead of
//!   JSON text, and the writer assigns row ids itself ([`super::rows`]). The `AUTOINCREMENT`
//!   of schema 1 goes when it can: at any open that finds `records` holding at most
//!   [`NARROW_MAX_ROWS`] rows, the table is rebuilt without it ([`narrow_records`]). A longer
//!   queue (a box whose Kafka has been away) is left as it is, since copying it would need
//!   its size again in free disk; the code works with either table.
//! - v9: `sessions` gains `window` (the de-duplication window, [`super::seqs::Window`]) and
//!   `unvouched` (events stored below the window). The migration fills each session's window,
//!   at the default width, from its events still queued (known to be stored); what was
//!   forwarded before is not known, so its retransmission is stored again. A lane written by
//!   another identity is the row `device\0writer`.
//! - v10: `spool_meta(key, value)`: `instance`, a random number naming this spool file (a
//!   forwarder's progress marker in Kafka says which spool it counts in), and `id_floor`, the
//!   highest row id ever committed, written in every transaction that appends, so row ids
//!   never repeat over the spool's life, not just while the gateway runs (a marker "forwarded
//!   through id N" stays true across restarts that found the queue empty).
//!
//! A database with a newer version than this code is refused, never rewritten.

use rusqlite::Connection;

use super::SpoolError;

/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = 11;

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

const V2_TO_V3: &str = "
CREATE TABLE sessions (
    device_id    TEXT    NOT NULL,
    session      INTEGER NOT NULL,
    max_seq      INTEGER NOT NULL,
    max_time_ms  INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    regressions  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, session)
) WITHOUT ROWID;
INSERT INTO sessions (device_id, session, max_seq, max_time_ms, last_seen_ms)
    SELECT device_id, 0, max_seq, CAST(unixepoch('subsec') * 1000 AS INTEGER),
           CAST(unixepoch('subsec') * 1000 AS INTEGER)
    FROM devices;
DROP TABLE devices;
ALTER TABLE records ADD COLUMN session INTEGER NOT NULL DEFAULT 0;
";

const V3_TO_V4: &str = "
CREATE TABLE quarantine (
    id             INTEGER PRIMARY KEY,
    topic          TEXT    NOT NULL,
    key            BLOB    NOT NULL,
    value          BLOB    NOT NULL,
    timestamp_ms   INTEGER NOT NULL,
    headers        TEXT    NOT NULL,
    device_id      TEXT,
    seq            INTEGER,
    session        INTEGER NOT NULL DEFAULT 0,
    received_ms    INTEGER NOT NULL,
    reason         TEXT    NOT NULL,
    quarantined_ms INTEGER NOT NULL
);
";

const V4_TO_V5: &str = "
CREATE TABLE rule_state (
    rule      TEXT NOT NULL,
    device_id TEXT NOT NULL,
    version   TEXT NOT NULL,
    state     BLOB NOT NULL,
    PRIMARY KEY (rule, device_id)
) WITHOUT ROWID;
";

const V5_TO_V6: &str = "
CREATE TABLE source_offsets (
    source TEXT PRIMARY KEY,
    state  BLOB NOT NULL
) WITHOUT ROWID;
";

const V6_TO_V7: &str = "
CREATE TABLE device_rule_state (
    device_id TEXT PRIMARY KEY,
    states    BLOB NOT NULL
) WITHOUT ROWID;
";

/// `records` without `AUTOINCREMENT`, the columns in schema 7's order.
const NARROW_RECORDS: &str = "
CREATE TABLE records_narrow (
    id           INTEGER PRIMARY KEY,
    topic        TEXT    NOT NULL,
    key          BLOB    NOT NULL,
    value        BLOB    NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    headers      BLOB    NOT NULL,
    device_id    TEXT,
    seq          INTEGER,
    received_ms  INTEGER NOT NULL,
    session      INTEGER NOT NULL DEFAULT 0
);
INSERT INTO records_narrow
       (id, topic, key, value, timestamp_ms, headers, device_id, seq, received_ms, session)
SELECT id, topic, key, value, timestamp_ms, headers, device_id, seq, received_ms, session
FROM records;
DROP TABLE records;
ALTER TABLE records_narrow RENAME TO records;
";

/// The longest queue [`narrow_records`] copies.
pub const NARROW_MAX_ROWS: i64 = 10_000;

/// The pragmas every connection that writes uses.
pub const PRAGMAS: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
PRAGMA busy_timeout = 5000;
PRAGMA journal_size_limit = 16777216;
";

/// Settings for the connections that run the spool's statements (the writer's and every
/// read-only one) beside the pragmas: the query planner's stability guarantee (QPSG). Without
/// it SQLite plans a cached statement again whenever a bound value it planned with changes,
/// `LIMIT ?` among them, so the forwarder's fetch (whose limit is the room left in flight,
/// different nearly every time) was parsed and planned anew on most calls (a sixth of the
/// reader thread's CPU under load). Our statements have one good plan each.
const V8_TO_V9: &str = "
ALTER TABLE sessions ADD COLUMN window BLOB;
ALTER TABLE sessions ADD COLUMN unvouched INTEGER NOT NULL DEFAULT 0;
";

const V9_TO_V10: &str = "
CREATE TABLE spool_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO spool_meta (key, value) VALUES
    ('instance', (random() & 0x7fffffffffffffff) | 1),
    ('id_floor', 0);
";

/// v11: the command queue ([`crate::commands`]). `AUTOINCREMENT`: a row id is never used
/// again, even after the newest row was settled, so "rows after N" is a cursor a session
/// can keep.
const V10_TO_V11: &str = "
CREATE TABLE commands (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    device       TEXT NOT NULL,
    command_id   TEXT NOT NULL,
    name         TEXT NOT NULL,
    body         BLOB NOT NULL,
    received_ms  INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    delivered_ms INTEGER
);
CREATE UNIQUE INDEX commands_by_device ON commands (device, command_id);
CREATE INDEX commands_queue ON commands (device, id);
CREATE INDEX commands_expiry ON commands (expires_ms);
";

pub fn configure(conn: &Connection) -> Result<(), SpoolError> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map(drop)
    .map_err(SpoolError::sqlite("set query planner stability"))
}

/// Reads the schema version.
pub fn version(conn: &Connection) -> Result<i64, SpoolError> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(SpoolError::sqlite("read schema version"))
}

/// Each step: the version it brings a spool to, its SQL, and what a failure says. (v8 changed
/// what rows hold, not the tables: it has no step.)
const STEPS: [(i64, &str, &str); 10] = [
    (1, SCHEMA_V1, "create schema v1"),
    (2, V1_TO_V2, "migrate to schema v2"),
    (3, V2_TO_V3, "migrate to schema v3"),
    (4, V3_TO_V4, "migrate to schema v4"),
    (5, V4_TO_V5, "migrate to schema v5"),
    (6, V5_TO_V6, "migrate to schema v6"),
    (7, V6_TO_V7, "migrate to schema v7"),
    (9, V8_TO_V9, "migrate to schema v9"),
    (10, V9_TO_V10, "migrate to schema v10"),
    (11, V10_TO_V11, "migrate to schema v11"),
];

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
    for (version, sql, what) in STEPS {
        if found < version {
            tx.execute_batch(sql).map_err(SpoolError::sqlite(what))?;
            if version == 9 {
                fill_windows(&tx).map_err(SpoolError::sqlite("migrate to schema v9: windows"))?;
            }
        }
    }
    narrow_records(&tx)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(SpoolError::sqlite("write schema version"))?;
    tx.commit().map_err(SpoolError::sqlite("commit migration"))
}

/// This spool file's instance number (`spool_meta.instance`).
pub fn instance(conn: &Connection) -> Result<i64, SpoolError> {
    meta(conn, "instance")
}

/// A `spool_meta` value.
pub(crate) fn meta(conn: &Connection, key: &str) -> Result<i64, SpoolError> {
    conn.query_row("SELECT value FROM spool_meta WHERE key = ?1", [key], |r| {
        r.get(0)
    })
    .map_err(SpoolError::sqlite("read spool_meta"))
}

/// v9: each session's window from its events still in `records`, at the default width.
fn fill_windows(conn: &Connection) -> Result<(), rusqlite::Error> {
    use super::seqs::{fingerprint, Seen, Window, DEFAULT_WINDOW};
    let mut windows: std::collections::HashMap<(String, i64), Window> = Default::default();
    let mut stmt = conn.prepare("SELECT device_id, session, max_seq FROM sessions")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (device, session, max_seq) = row?;
        let window = Window::decode(None, max_seq as u64, DEFAULT_WINDOW);
        windows.insert((device, session), window);
    }
    let mut stmt = conn.prepare(
        "SELECT device_id, session, seq, timestamp_ms FROM records
         WHERE device_id IS NOT NULL AND seq IS NOT NULL",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)? as u64,
            r.get::<_, i64>(3)?,
        ))
    })?;
    for row in rows {
        let (device, session, seq, time_ms) = row?;
        if let Some(w) = windows.get_mut(&(device, session)) {
            // Only inside the window: marking a seq below it would start the window again.
            if matches!(w.seen(seq), Seen::Unmarked | Seen::Marked(_)) {
                w.mark(seq, fingerprint(time_ms));
            }
        }
    }
    let mut update =
        conn.prepare("UPDATE sessions SET window = ?1 WHERE device_id = ?2 AND session = ?3")?;
    for ((device, session), w) in windows {
        if w.marked() > 0 {
            update.execute(rusqlite::params![w.encode(), device, session])?;
        }
    }
    Ok(())
}

/// Rebuilds `records` without `AUTOINCREMENT` (an update of `sqlite_sequence` per inserted
/// row) when it still has it and holds at most [`NARROW_MAX_ROWS`] rows; returns whether it did.
pub fn narrow_records(conn: &Connection) -> Result<bool, SpoolError> {
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'records'",
            [],
            |r| r.get(0),
        )
        .map_err(SpoolError::sqlite("read the records table's schema"))?;
    if !sql.to_ascii_uppercase().contains("AUTOINCREMENT") {
        return Ok(false);
    }
    let rows: i64 = conn
        .query_row(
            "SELECT count(*) FROM (SELECT 1 FROM records LIMIT ?1)",
            [NARROW_MAX_ROWS + 1],
            |r| r.get(0),
        )
        .map_err(SpoolError::sqlite("count queued rows"))?;
    if rows > NARROW_MAX_ROWS {
        tracing::info!(
            message = "The spool's queue is too long to rebuild its table now; it stays as it is until a start with a shorter queue.",
            rows_at_least = rows,
            max_rows = NARROW_MAX_ROWS,
        );
        return Ok(false);
    }
    conn.execute_batch(NARROW_RECORDS)
        .map_err(SpoolError::sqlite("rebuild records without AUTOINCREMENT"))?;
    Ok(true)
}
