//! The command queue: commands from Kafka waiting for their device (`commands`, schema 11).
//!
//! Commands flow the other way from events, through the same spool: the gateway's command
//! consumer queues them ([`Op::Enqueue`], committed with the consumer's offsets in
//! `source_offsets`, so a crash neither loses nor queues one twice), a device's session reads
//! its queue ([`pending`], in queue order) and says what became of each ([`Op::Delivered`],
//! [`Op::Settle`]). Every such change commits in the writer's group transaction together with
//! the record that tells Kafka of it (the outcome, built by the gateway: the spool knows nothing
//! of its format or topic), so an outcome is stored exactly when its change is.
//!
//! Invariants:
//! - One row per `(device, command_id)`: a command queued again while its first copy is queued
//!   is a [`Done::Duplicate`], and nothing is stored for it.
//! - A device holds at most the op's `limit` commands: past it, the command is not queued and
//!   its `overflow` outcome ("refused") is stored instead ([`Done::Overflowed`]), never dropped
//!   in silence.
//! - An outcome is stored only if its change happened: a second answer to a command already
//!   settled changes nothing and stores nothing ([`Done::Gone`]).
//! - Row ids only grow and are never used again (`AUTOINCREMENT`), so a device's queue order
//!   is the order its commands were queued, and "rows after N" never misses a newer one.

use rusqlite::{params, Connection, Transaction};

use super::SpoolError;
use crate::record::Record;

/// A command for one device, as queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCommand {
    pub device: String,
    /// The command's id, from its author: a device drops a repeat by it.
    pub command_id: String,
    pub name: String,
    /// What the device gets (the gateway's wire form of the command).
    pub body: Vec<u8>,
    /// When the gateway read it from Kafka, and when it expires (ms since the Unix epoch).
    pub received_ms: i64,
    pub expires_ms: i64,
}

/// A queued command, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Its place in the queue: later commands have higher rows.
    pub row: i64,
    pub device: String,
    pub command_id: String,
    pub name: String,
    pub body: Vec<u8>,
    pub received_ms: i64,
    pub expires_ms: i64,
    /// When a device first acknowledged receiving it; `None` while undelivered.
    pub delivered_ms: Option<i64>,
}

/// A change to the queue, with the outcome record that tells of it.
#[derive(Debug, Clone)]
pub enum Op {
    /// Queue `command`, unless its device already holds `limit`: then store `overflow`.
    Enqueue {
        command: NewCommand,
        limit: usize,
        overflow: Record,
    },
    /// A record that needs no queue change (a command refused or expired on arrival): stored
    /// with the consumer's offsets.
    Outcome(Record),
    /// The device acknowledged receiving the command: note when, and store `outcome` the first
    /// time only.
    Delivered {
        device: String,
        command_id: String,
        at_ms: i64,
        outcome: Record,
    },
    /// The command is done (answered, expired, refused): remove it and store `outcome`, if it
    /// was still queued.
    Settle {
        device: String,
        command_id: String,
        outcome: Record,
    },
}

impl Op {
    /// The most bytes the op can add to the spool (its outcome record, or the command's body),
    /// for the bounds' check before the transaction.
    pub fn size(&self) -> u64 {
        match self {
            Op::Enqueue {
                command, overflow, ..
            } => (command.body.len() as u64).max(super::payload_size(overflow)),
            Op::Outcome(r) => super::payload_size(r),
            Op::Delivered { outcome, .. } | Op::Settle { outcome, .. } => {
                super::payload_size(outcome)
            }
        }
    }
}

/// What an [`Op`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    Queued,
    Duplicate,
    /// Over the device's limit: its "refused" outcome was stored instead.
    Overflowed,
    /// The change was made and its outcome stored.
    Applied,
    /// Nothing to change (already delivered, settled, or never queued): nothing stored.
    Gone,
}

/// Applies `ops` in `tx`; each outcome record to store is handed to `store`, in order.
pub(super) fn apply(
    tx: &Transaction<'_>,
    ops: &[Op],
    mut store: impl FnMut(&Record) -> Result<(), SpoolError>,
) -> Result<Vec<Done>, SpoolError> {
    let mut done = Vec::with_capacity(ops.len());
    for op in ops {
        done.push(match op {
            Op::Enqueue {
                command: c,
                limit,
                overflow,
            } => {
                let queued: i64 = tx
                    .prepare_cached("SELECT count(*) FROM commands WHERE device = ?1")
                    .and_then(|mut s| s.query_row([&c.device], |r| r.get(0)))
                    .map_err(err())?;
                let exists: bool = tx
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM commands WHERE device = ?1 AND command_id = ?2)",
                    )
                    .and_then(|mut s| s.query_row([&c.device, &c.command_id], |r| r.get(0)))
                    .map_err(err())?;
                if exists {
                    Done::Duplicate
                } else if queued as u64 >= *limit as u64 {
                    store(overflow)?;
                    Done::Overflowed
                } else {
                    tx.prepare_cached(
                        "INSERT INTO commands
                           (device, command_id, name, body, received_ms, expires_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            c.device,
                            c.command_id,
                            c.name,
                            c.body,
                            c.received_ms,
                            c.expires_ms
                        ])
                    })
                    .map_err(err())?;
                    Done::Queued
                }
            }
            Op::Outcome(record) => {
                store(record)?;
                Done::Applied
            }
            Op::Delivered {
                device,
                command_id,
                at_ms,
                outcome,
            } => {
                let changed = tx
                    .prepare_cached(
                        "UPDATE commands SET delivered_ms = ?3
                         WHERE device = ?1 AND command_id = ?2 AND delivered_ms IS NULL",
                    )
                    .and_then(|mut s| s.execute(params![device, command_id, at_ms]))
                    .map_err(err())?;
                if changed == 1 {
                    store(outcome)?;
                    Done::Applied
                } else {
                    Done::Gone
                }
            }
            Op::Settle {
                device,
                command_id,
                outcome,
            } => {
                let changed = tx
                    .prepare_cached("DELETE FROM commands WHERE device = ?1 AND command_id = ?2")
                    .and_then(|mut s| s.execute(params![device, command_id]))
                    .map_err(err())?;
                if changed == 1 {
                    store(outcome)?;
                    Done::Applied
                } else {
                    Done::Gone
                }
            }
        });
    }
    Ok(done)
}

fn err() -> impl FnOnce(rusqlite::Error) -> SpoolError {
    SpoolError::sqlite("update the command queue")
}

/// Up to `limit` commands queued for `device` after queue row `after`, in queue order; with
/// `undelivered_only`, only those no device acknowledged.
pub(super) fn pending(
    conn: &Connection,
    device: &str,
    after: i64,
    undelivered_only: bool,
    limit: usize,
) -> Result<Vec<Queued>, SpoolError> {
    let sql = if undelivered_only {
        "SELECT id, device, command_id, name, body, received_ms, expires_ms, delivered_ms
         FROM commands WHERE device = ?1 AND id > ?2 AND delivered_ms IS NULL
         ORDER BY id LIMIT ?3"
    } else {
        "SELECT id, device, command_id, name, body, received_ms, expires_ms, delivered_ms
         FROM commands WHERE device = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
    };
    query(conn, sql, params![device, after, limit as i64])
}

/// Whether the spool keeps sequence state for `device` (its own lane or one written for it):
/// the device sent events here and was not forgotten since.
pub(super) fn seen(conn: &Connection, device: &str) -> Result<bool, SpoolError> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM sessions
           WHERE device_id = ?1 OR substr(device_id, 1, length(?1) + 1) = ?1 || char(0))",
    )
    .and_then(|mut s| s.query_row([device], |r| r.get(0)))
    .map_err(SpoolError::sqlite("look a device up"))
}

/// Up to `limit` queued commands, of `device` or of every device, in queue order.
pub(super) fn list(
    conn: &Connection,
    device: Option<&str>,
    limit: usize,
) -> Result<Vec<Queued>, SpoolError> {
    query(
        conn,
        "SELECT id, device, command_id, name, body, received_ms, expires_ms, delivered_ms
         FROM commands WHERE ?1 IS NULL OR device = ?1 ORDER BY id LIMIT ?2",
        params![device, limit as i64],
    )
}

/// Up to `limit` commands whose expiry is at or before `now_ms`, oldest expiry first.
pub(super) fn due(conn: &Connection, now_ms: i64, limit: usize) -> Result<Vec<Queued>, SpoolError> {
    query(
        conn,
        "SELECT id, device, command_id, name, body, received_ms, expires_ms, delivered_ms
         FROM commands WHERE expires_ms <= ?1 ORDER BY expires_ms LIMIT ?2",
        params![now_ms, limit as i64],
    )
}

/// Per device: commands queued, and how many of them were delivered.
pub(super) fn counts(conn: &Connection) -> Result<Vec<(String, u64, u64)>, SpoolError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT device, count(*), count(delivered_ms) FROM commands GROUP BY device ORDER BY device",
        )
        .map_err(SpoolError::sqlite("count queued commands"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
            ))
        })
        .map_err(SpoolError::sqlite("count queued commands"))?;
    rows.collect::<Result<_, _>>()
        .map_err(SpoolError::sqlite("count queued commands"))
}

fn query(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Queued>, SpoolError> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(SpoolError::sqlite("read the command queue"))?;
    let rows = stmt
        .query_map(params, |r| {
            Ok(Queued {
                row: r.get(0)?,
                device: r.get(1)?,
                command_id: r.get(2)?,
                name: r.get(3)?,
                body: r.get(4)?,
                received_ms: r.get(5)?,
                expires_ms: r.get(6)?,
                delivered_ms: r.get(7)?,
            })
        })
        .map_err(SpoolError::sqlite("read the command queue"))?;
    rows.collect::<Result<_, _>>()
        .map_err(SpoolError::sqlite("read the command queue"))
}
