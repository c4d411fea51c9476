//! Start-up integrity: recognising a corrupt spool, moving it aside, salvaging what is readable.
//!
//! `PRAGMA quick_check` runs at every start. A file that fails it, or that SQLite calls corrupt
//! or "not a database", is **moved aside, never deleted**: `spool.db` becomes
//! `spool.db.corrupt-<unix ms>` (its `-wal` and `-shm` move with it, so the WAL's committed
//! transactions stay readable). A fresh spool is created in its place; every `records` row that
//! can still be read is copied into it in id order, streamed a batch at a time (memory does not
//! grow with the file), and the sequence state (`sessions`, or a
//! version 1-2 file's `devices`) is restored, or rebuilt from the salvaged rows, so
//! de-duplication keeps working. The gateway then starts and logs what it
//! did. An I/O or permission error is not corruption: it is returned, and nothing is moved.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags};

use super::db::{is_corrupt, SpoolDb};
use super::limits::Limits;
use super::rows::{record_columns, row_to_spooled};
use super::seqs::Session;
use super::sessions::load_sessions;
use super::SpoolError;
use crate::record::Record;
use tributary_common::clock::now_ms;

/// What a recovery did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recovery {
    /// What was wrong with the file.
    pub problem: String,
    /// Where the corrupt file now is.
    pub moved_to: PathBuf,
    /// Rows copied into the fresh spool.
    pub salvaged_rows: u64,
    /// Ranges of ids that could not be read (first, last), as far as they are known.
    pub unreadable: Vec<(i64, i64)>,
}

/// Checks the spool at `path`: `Ok(None)` if healthy or absent, `Ok(Some(problem))` if corrupt.
pub fn check(path: &Path) -> Result<Option<String>, SpoolError> {
    if !path.exists() {
        return Ok(None);
    }
    let conn = match Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE) {
        Ok(c) => c,
        Err(e) if is_corrupt(&e) => return Ok(Some(e.to_string())),
        Err(e) => return Err(SpoolError::sqlite("open for check")(e)),
    };
    let result: Result<Vec<String>, rusqlite::Error> = conn
        .prepare("PRAGMA quick_check")
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect());
    match result {
        Ok(lines) if lines.len() == 1 && lines[0] == "ok" => Ok(None),
        Ok(lines) => Ok(Some(lines.join("; "))),
        Err(e) if is_corrupt(&e) => Ok(Some(e.to_string())),
        Err(e) => Err(SpoolError::sqlite("quick_check")(e)),
    }
}

/// Opens the spool, recovering it first if it is corrupt.
pub fn open_checked(
    path: &Path,
    limits: Limits,
) -> Result<(SpoolDb, Option<Recovery>), SpoolError> {
    let recovery = match check(path)? {
        None => None,
        Some(problem) => Some(salvage(path, problem)?),
    };
    let db = SpoolDb::open_with(path, limits)?;
    Ok((db, recovery))
}

/// Moves the spool at `path` aside and salvages its readable rows into a fresh one.
pub fn salvage(path: &Path, problem: String) -> Result<Recovery, SpoolError> {
    let moved_to = PathBuf::from(format!("{}.corrupt-{}", path.display(), now_ms()));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        let to = PathBuf::from(format!("{}{suffix}", moved_to.display()));
        if from.exists() {
            std::fs::rename(&from, &to).map_err(|e| SpoolError::Dir {
                path: from.clone(),
                source: e.into(),
            })?;
        }
    }
    let mut salvager = Salvager::open(&moved_to);
    let sessions = salvager.sessions();
    let mut fresh = SpoolDb::open(path)?;
    fresh.restore(&mut salvager, &sessions)?;
    Ok(Recovery {
        problem,
        moved_to,
        salvaged_rows: salvager.salvaged,
        unreadable: salvager.unreadable,
    })
}

/// Rows read from a damaged spool in id order, one batch of [`BATCH`] at a time, skipping ahead
/// past unreadable ranges: memory stays bounded whatever the file's size.
struct Salvager {
    conn: Option<Connection>,
    /// A file from before schema 3 has `devices` instead of `sessions`, and no `session` column.
    legacy: bool,
    max_id: i64,
    /// The last id read or skipped.
    after: i64,
    /// How far the next skip jumps; doubles while reads fail.
    step: i64,
    batch: std::vec::IntoIter<Record>,
    salvaged: u64,
    /// Ranges of ids that could not be read (first, last).
    unreadable: Vec<(i64, i64)>,
}

/// Rows read per query while salvaging.
const BATCH: usize = 500;

impl Salvager {
    fn open(path: &Path) -> Self {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE).ok();
        let legacy = conn
            .as_ref()
            .is_some_and(|c| super::schema::version(c).is_ok_and(|v| v < 3));
        let max_id = conn.as_ref().map_or(i64::MAX, |conn| {
            conn.query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'records'",
                [],
                |r| r.get(0),
            )
            .or_else(|_| {
                conn.query_row("SELECT coalesce(max(id), 0) FROM records", [], |r| r.get(0))
            })
            .unwrap_or(i64::MAX)
        });
        let unreadable = if conn.is_none() {
            vec![(1, i64::MAX)]
        } else {
            Vec::new()
        };
        Self {
            conn,
            legacy,
            max_id,
            after: 0,
            step: 1,
            batch: Vec::new().into_iter(),
            salvaged: 0,
            unreadable,
        }
    }

    /// The sequence state the file holds, as far as it is readable.
    fn sessions(&self) -> Vec<(String, Session)> {
        match &self.conn {
            None => Vec::new(),
            Some(conn) if self.legacy => legacy_devices(conn),
            Some(conn) => load_sessions(conn, 0).unwrap_or_default(),
        }
    }

    /// Reads the next batch; `false` when there is nothing more.
    fn refill(&mut self) -> bool {
        let Some(conn) = &self.conn else { return false };
        while self.after < self.max_id {
            match read_batch(conn, self.after, self.legacy) {
                Ok(batch) if batch.is_empty() => return false,
                Ok(batch) => {
                    self.step = 1;
                    self.after = batch.last().map_or(self.max_id, |(id, _)| *id);
                    let rows: Vec<Record> = batch.into_iter().map(|(_, r)| r).collect();
                    self.batch = rows.into_iter();
                    return true;
                }
                Err(()) => {
                    // Probe forward in growing steps until rows read again.
                    let skip_to = self.after.saturating_add(self.step).min(self.max_id);
                    match self.unreadable.last_mut() {
                        Some((_, last)) if *last == self.after => *last = skip_to,
                        _ => self.unreadable.push((self.after + 1, skip_to)),
                    }
                    self.after = skip_to;
                    self.step = self.step.saturating_mul(2);
                }
            }
        }
        false
    }
}

impl Iterator for Salvager {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        loop {
            if let Some(record) = self.batch.next() {
                self.salvaged += 1;
                return Some(record);
            }
            if !self.refill() {
                return None;
            }
        }
    }
}

/// A schema 1-2 `devices` table as sessions without a session id.
fn legacy_devices(conn: &Connection) -> Vec<(String, Session)> {
    let now = now_ms();
    let Ok(mut stmt) = conn.prepare("SELECT device_id, max_seq FROM devices") else {
        return Vec::new();
    };
    let Ok(rows) = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            Session {
                window: super::seqs::Window::decode(None, r.get::<_, i64>(1)? as u64, 0),
                max_time_ms: now,
                ..Session::new(0, super::seqs::DEFAULT_WINDOW, now)
            },
        ))
    }) else {
        return Vec::new();
    };
    rows.filter_map(Result::ok).collect()
}

fn read_batch(conn: &Connection, after: i64, legacy: bool) -> Result<Vec<(i64, Record)>, ()> {
    let sql = if legacy {
        "SELECT id, topic, key, value, timestamp_ms, headers, device_id, seq, 0, received_ms
         FROM records WHERE id > ?1 ORDER BY id LIMIT ?2"
    } else {
        concat!(
            "SELECT ",
            record_columns!(),
            " FROM records WHERE id > ?1 ORDER BY id LIMIT ?2"
        )
    };
    let mut stmt = conn.prepare(sql).map_err(drop)?;
    let rows = stmt
        .query_map(params![after, BATCH as i64], row_to_spooled)
        .map_err(drop)?;
    let mut out = Vec::new();
    for row in rows {
        match row {
            Ok(Ok(s)) => out.push((s.id, s.record)),
            // A row whose headers cannot be decoded is left out.
            Ok(Err(_)) => {}
            Err(_) if !out.is_empty() => break,
            Err(_) => return Err(()),
        }
    }
    Ok(out)
}
