//! Offline tools on a spool file: `tributary spool stats|inspect|export|verify|salvage`.
//!
//! `stats`, `inspect` and `export` open the file read-only and work beside a running gateway
//! without blocking it (WAL readers never block the writer). `verify` runs SQLite's full
//! `integrity_check`. `salvage` is for a stopped gateway: it does what start-up does with a
//! corrupt file ([`super::recover`]).

use std::io::Write;
use std::path::Path;

use rusqlite::params;

use super::report::stats as read_stats;
use super::rows::{record_columns, row_to_spooled};
use super::seqs::Session;
use super::sessions::load_sessions;
use super::{recover, schema, Recovery, SpoolDb, SpoolError, SpoolStats, Spooled};

/// Which rows `inspect` shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub device_id: Option<String>,
    pub topic: Option<String>,
    /// Event time (Kafka timestamp) from, in ms since the epoch, inclusive.
    pub since_ms: Option<i64>,
    /// Event time until, exclusive.
    pub until_ms: Option<i64>,
    pub limit: usize,
}

/// Counts and sizes, read-only.
pub fn stats(path: &Path) -> Result<SpoolStats, SpoolError> {
    read_stats(&SpoolDb::open_read_only(path)?)
}

/// Rows matching `filter`, in queue order, read-only.
pub fn inspect(path: &Path, filter: &Filter) -> Result<Vec<Spooled>, SpoolError> {
    let conn = SpoolDb::open_read_only(path)?;
    let mut stmt = conn
        .prepare(concat!(
            "SELECT ",
            record_columns!(),
            " FROM records
             WHERE (?1 IS NULL OR device_id = ?1) AND (?2 IS NULL OR topic = ?2)
               AND (?3 IS NULL OR timestamp_ms >= ?3) AND (?4 IS NULL OR timestamp_ms < ?4)
             ORDER BY id LIMIT ?5"
        ))
        .map_err(SpoolError::sqlite("inspect"))?;
    let rows = stmt
        .query_map(
            params![
                filter.device_id,
                filter.topic,
                filter.since_ms,
                filter.until_ms,
                filter.limit as i64
            ],
            row_to_spooled,
        )
        .map_err(SpoolError::sqlite("inspect"))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(SpoolError::sqlite("inspect"))??);
    }
    Ok(out)
}

/// Writes every row as a JSON line (`id` plus the file sink's fields); returns the count.
pub fn export(path: &Path, out: &mut dyn Write) -> Result<u64, SpoolError> {
    let conn = SpoolDb::open_read_only(path)?;
    let mut after = 0;
    let mut n = 0;
    loop {
        let rows = super::rows::fetch_range(&conn, after, i64::MAX, 1000)?;
        let Some(last) = rows.last().map(|r| r.id) else {
            return Ok(n);
        };
        for row in rows {
            let line = json_line(&row);
            writeln!(out, "{line}").map_err(|e| SpoolError::Dir {
                path: path.to_owned(),
                source: e.into(),
            })?;
            n += 1;
        }
        after = last;
    }
}

/// One row as printed by `inspect` and `export`.
pub fn json_line(row: &Spooled) -> serde_json::Value {
    let mut v = row.record.to_json();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("id".into(), row.id.into());
    }
    v
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    pub schema_version: Option<i64>,
    /// `None`: healthy.
    pub problem: Option<String>,
}

/// Runs SQLite's full `integrity_check`.
pub fn verify(path: &Path) -> Result<Verdict, SpoolError> {
    if !path.exists() {
        return Err(SpoolError::Dir {
            path: path.to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound).into(),
        });
    }
    let conn = match SpoolDb::open_read_only(path) {
        Ok(c) => c,
        Err(SpoolError::Sqlite { source, .. }) if super::db::is_corrupt(&source) => {
            return Ok(Verdict {
                schema_version: None,
                problem: Some(source.to_string()),
            })
        }
        Err(e) => return Err(e),
    };
    let version = schema::version(&conn).ok();
    let result: Result<Vec<String>, rusqlite::Error> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect());
    let problem = match result {
        Ok(lines) if lines == ["ok"] => None,
        Ok(lines) => Some(lines.join("; ")),
        Err(e) if super::db::is_corrupt(&e) => Some(e.to_string()),
        Err(e) => return Err(SpoolError::sqlite("integrity_check")(e)),
    };
    Ok(Verdict {
        schema_version: version,
        problem,
    })
}

/// Moves a corrupt spool aside and salvages it; `Ok(None)` if it was healthy.
pub fn salvage(path: &Path) -> Result<Option<Recovery>, SpoolError> {
    match recover::check(path)? {
        None => Ok(None),
        Some(problem) => recover::salvage(path, problem).map(Some),
    }
}

/// Up to `limit` queued commands (of `device`, or all), in queue order, read-only: safe while
/// the gateway runs.
pub fn commands(
    path: &Path,
    device: Option<&str>,
    limit: usize,
) -> Result<Vec<super::commands::Queued>, SpoolError> {
    super::commands::list(&SpoolDb::open_read_only(path)?, device, limit)
}

/// Every device session the spool remembers (device, session state), read-only.
pub fn devices(path: &Path) -> Result<Vec<(String, Session)>, SpoolError> {
    load_sessions(&SpoolDb::open_read_only(path)?, 0)
}

/// Forgets a device's sequence state, so its next events are stored whatever their seq.
/// Refused while a gateway has the spool open. Returns the sessions forgotten.
pub fn reset_device(path: &Path, device_id: &str) -> Result<usize, SpoolError> {
    let _lock = super::lock(path)?;
    let conn = rusqlite::Connection::open(path).map_err(SpoolError::sqlite("open"))?;
    // The device's own lane and the lanes others wrote for it (`device\0writer`).
    conn.execute(
        "DELETE FROM sessions WHERE device_id = ?1 OR substr(device_id, 1, length(?1) + 1) = ?1 || char(0)",
        [device_id],
    )
        .map_err(SpoolError::sqlite("reset device"))
}

/// A quarantined record, its reason and when it was moved (ms since the Unix epoch).
#[derive(Debug, Clone, PartialEq)]
pub struct Quarantined {
    pub row: Spooled,
    pub reason: String,
    pub quarantined_ms: i64,
}

/// Every quarantined record, oldest first, read-only.
pub fn quarantined(path: &Path) -> Result<Vec<Quarantined>, SpoolError> {
    let conn = SpoolDb::open_read_only(path)?;
    let mut stmt = conn
        .prepare(concat!(
            "SELECT ",
            record_columns!(),
            ", reason, quarantined_ms FROM quarantine ORDER BY id"
        ))
        .map_err(SpoolError::sqlite("quarantine"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                row_to_spooled(r)?,
                r.get::<_, String>(10)?,
                r.get::<_, i64>(11)?,
            ))
        })
        .map_err(SpoolError::sqlite("quarantine"))?;
    let mut out = Vec::new();
    for row in rows {
        let (row, reason, quarantined_ms) = row.map_err(SpoolError::sqlite("quarantine"))?;
        out.push(Quarantined {
            row: row?,
            reason,
            quarantined_ms,
        });
    }
    Ok(out)
}

/// Puts quarantined record `id` back at the end of the queue (after the operator fixed what
/// made Kafka refuse it), or drops it for good (`requeue = false`). Refused while a gateway has
/// the spool open. Returns whether the record was there.
pub fn release(path: &Path, id: i64, requeue: bool) -> Result<bool, SpoolError> {
    let _lock = super::lock(path)?;
    let mut conn = rusqlite::Connection::open(path).map_err(SpoolError::sqlite("open"))?;
    let tx = conn.transaction().map_err(SpoolError::sqlite("begin"))?;
    if requeue {
        let new_id = super::rows::next_id(&tx)?;
        tx.execute(
            "INSERT INTO records (id, topic, key, value, timestamp_ms, headers, device_id, seq,
                                  session, received_ms)
             SELECT ?2, topic, key, value, timestamp_ms, headers, device_id, seq, session,
                    received_ms
             FROM quarantine WHERE id = ?1",
            [id, new_id],
        )
        .map_err(SpoolError::sqlite("requeue"))?;
    }
    let n = tx
        .execute("DELETE FROM quarantine WHERE id = ?1", [id])
        .map_err(SpoolError::sqlite("release"))?;
    tx.commit().map_err(SpoolError::sqlite("commit"))?;
    Ok(n == 1)
}
