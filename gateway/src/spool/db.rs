//! [`SpoolDb`]: the SQL behind the spool, synchronous, on one connection.
//!
//! Used by the writer thread, and directly by offline tools and tests. Pragmas and schema
//! set-up live here and nowhere else.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rusqlite::{params, Connection, Transaction};

use super::{Appended, SpoolError, Spooled};
use crate::record::{now_ms, EventId, Record};

/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA_V1: &str = "
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

/// Row counts and sizes, in total and per topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub rows: u64,
    pub bytes: u64,
    pub oldest_received_ms: Option<i64>,
    pub topics: BTreeMap<String, TopicStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicStats {
    pub rows: u64,
    pub bytes: u64,
    pub oldest_received_ms: Option<i64>,
}

/// The spool database.
pub struct SpoolDb {
    conn: Connection,
    /// Highest stored seq per device, mirrored from `devices`.
    max_seq: HashMap<String, u64>,
}

impl SpoolDb {
    /// Opens or creates the database at `path`, sets the pragmas, and brings the schema up to
    /// [`SCHEMA_VERSION`] in one transaction.
    pub fn open(path: &Path) -> Result<Self, SpoolError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| SpoolError::Dir {
                path: dir.to_owned(),
                source: e.into(),
            })?;
        }
        let mut conn = Connection::open(path).map_err(SpoolError::sqlite("open"))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(SpoolError::sqlite("set pragmas"))?;
        migrate(&mut conn)?;
        let max_seq = {
            let mut stmt = conn
                .prepare("SELECT device_id, max_seq FROM devices")
                .map_err(SpoolError::sqlite("load devices"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })
                .map_err(SpoolError::sqlite("load devices"))?;
            rows.collect::<Result<HashMap<_, _>, _>>()
                .map_err(SpoolError::sqlite("load devices"))?
        };
        Ok(Self { conn, max_seq })
    }

    /// Appends one group of records in its own transaction.
    pub fn append(&mut self, records: Vec<Record>) -> Result<Vec<Appended>, SpoolError> {
        let mut out = self.commit_group(&[records], &[])?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Deletes acknowledged rows in one transaction.
    pub fn ack(&mut self, ids: &[i64]) -> Result<(), SpoolError> {
        self.commit_group(&[], ids).map(drop)
    }

    /// Appends and deletes in one transaction: the writer's group commit.
    pub fn commit_group(
        &mut self,
        groups: &[Vec<Record>],
        acks: &[i64],
    ) -> Result<Vec<Vec<Appended>>, SpoolError> {
        let mut seen: HashMap<String, u64> = HashMap::new();
        let tx = self
            .conn
            .transaction()
            .map_err(SpoolError::sqlite("begin"))?;
        let outcomes = append_in(&tx, groups, &self.max_seq, &mut seen)?;
        delete_in(&tx, acks)?;
        tx.commit().map_err(SpoolError::sqlite("commit"))?;
        self.max_seq.extend(seen);
        Ok(outcomes)
    }

    /// Up to `limit` rows with ids above `after`, in id order.
    pub fn fetch(&self, after: i64, limit: usize) -> Result<Vec<Spooled>, SpoolError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, topic, key, value, timestamp_ms, headers, device_id, seq
                 FROM records WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(SpoolError::sqlite("fetch"))?;
        let rows = stmt
            .query_map(params![after, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                ))
            })
            .map_err(SpoolError::sqlite("fetch"))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, topic, key, value, timestamp_ms, headers, device_id, seq) =
                row.map_err(SpoolError::sqlite("fetch"))?;
            let headers: Vec<(String, String)> =
                serde_json::from_str(&headers).map_err(|e| SpoolError::BadRow {
                    id,
                    reason: format!("headers are not a JSON list of pairs: {e}"),
                })?;
            let origin = match (device_id, seq) {
                (Some(device_id), Some(seq)) => Some(EventId {
                    device_id,
                    seq: seq as u64,
                }),
                _ => None,
            };
            out.push(Spooled {
                id,
                record: Record {
                    topic,
                    key,
                    value,
                    timestamp_ms,
                    headers,
                    origin,
                },
            });
        }
        Ok(out)
    }

    /// Rows, bytes and the oldest row's age, in total and per topic.
    pub fn stats(&self) -> Result<SpoolStats, SpoolError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT topic, count(*), coalesce(sum(length(key) + length(value)), 0),
                        min(received_ms)
                 FROM records GROUP BY topic",
            )
            .map_err(SpoolError::sqlite("stats"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    TopicStats {
                        rows: r.get::<_, i64>(1)? as u64,
                        bytes: r.get::<_, i64>(2)? as u64,
                        oldest_received_ms: r.get(3)?,
                    },
                ))
            })
            .map_err(SpoolError::sqlite("stats"))?;
        let mut stats = SpoolStats::default();
        for row in rows {
            let (topic, t) = row.map_err(SpoolError::sqlite("stats"))?;
            stats.rows += t.rows;
            stats.bytes += t.bytes;
            stats.oldest_received_ms = match (stats.oldest_received_ms, t.oldest_received_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            stats.topics.insert(topic, t);
        }
        Ok(stats)
    }

    /// The highest seq stored for `device_id`, if any.
    pub fn max_seq(&self, device_id: &str) -> Option<u64> {
        self.max_seq.get(device_id).copied()
    }
}

fn migrate(conn: &mut Connection) -> Result<(), SpoolError> {
    let tx = conn
        .transaction()
        .map_err(SpoolError::sqlite("begin migration"))?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(SpoolError::sqlite("read schema version"))?;
    if version > SCHEMA_VERSION {
        return Err(SpoolError::TooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        tx.execute_batch(SCHEMA_V1)
            .map_err(SpoolError::sqlite("create schema"))?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(SpoolError::sqlite("write schema version"))?;
    tx.commit().map_err(SpoolError::sqlite("commit migration"))
}

fn append_in(
    tx: &Transaction<'_>,
    groups: &[Vec<Record>],
    committed: &HashMap<String, u64>,
    seen: &mut HashMap<String, u64>,
) -> Result<Vec<Vec<Appended>>, SpoolError> {
    let received_ms = now_ms();
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO records
               (topic, key, value, timestamp_ms, headers, device_id, seq, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(SpoolError::sqlite("append"))?;
    let mut upsert = tx
        .prepare_cached(
            "INSERT INTO devices (device_id, max_seq) VALUES (?1, ?2)
             ON CONFLICT(device_id) DO UPDATE SET max_seq = excluded.max_seq",
        )
        .map_err(SpoolError::sqlite("append"))?;
    let mut outcomes = Vec::with_capacity(groups.len());
    for group in groups {
        let mut out = Vec::with_capacity(group.len());
        for record in group {
            if let Some(origin) = &record.origin {
                let max = seen
                    .get(&origin.device_id)
                    .or_else(|| committed.get(&origin.device_id));
                if max.is_some_and(|&max| origin.seq <= max) {
                    out.push(Appended::Duplicate);
                    continue;
                }
                upsert
                    .execute(params![origin.device_id, origin.seq as i64])
                    .map_err(SpoolError::sqlite("append"))?;
                seen.insert(origin.device_id.clone(), origin.seq);
            }
            let headers = serde_json::to_string(&record.headers).unwrap_or_else(|_| "[]".into());
            insert
                .execute(params![
                    record.topic,
                    record.key,
                    record.value,
                    record.timestamp_ms,
                    headers,
                    record.origin.as_ref().map(|o| o.device_id.as_str()),
                    record.origin.as_ref().map(|o| o.seq as i64),
                    received_ms,
                ])
                .map_err(SpoolError::sqlite("append"))?;
            out.push(Appended::Stored {
                id: tx.last_insert_rowid(),
            });
        }
        outcomes.push(out);
    }
    Ok(outcomes)
}

fn delete_in(tx: &Transaction<'_>, ids: &[i64]) -> Result<(), SpoolError> {
    let mut delete = tx
        .prepare_cached("DELETE FROM records WHERE id = ?1")
        .map_err(SpoolError::sqlite("delete"))?;
    for id in ids {
        delete.execute([id]).map_err(SpoolError::sqlite("delete"))?;
    }
    Ok(())
}
