//! The `sessions` table: the sequence state of [`super::seqs`] as stored, one row per lane and
//! boot session (its window included), written in the transaction that stores that session's
//! events.

use rusqlite::{params, Connection, Transaction};

use super::seqs::{Session, Window};
use super::SpoolError;

/// Every `(lane, session)` the spool remembers, with windows `width` wide.
pub fn load_sessions(
    conn: &Connection,
    width: usize,
) -> Result<Vec<(String, Session)>, SpoolError> {
    let mut stmt = conn
        .prepare(
            "SELECT device_id, session, max_seq, max_time_ms, last_seen_ms, regressions, window,
                    unvouched
             FROM sessions ORDER BY device_id, last_seen_ms DESC",
        )
        .map_err(SpoolError::sqlite("load sessions"))?;
    let rows = stmt
        .query_map([], |r| {
            let window: Option<Vec<u8>> = r.get(6)?;
            Ok((
                r.get::<_, String>(0)?,
                Session {
                    id: r.get::<_, i64>(1)? as u64,
                    window: Window::decode(window.as_deref(), r.get::<_, i64>(2)? as u64, width),
                    max_time_ms: r.get(3)?,
                    last_seen_ms: r.get(4)?,
                    regressions: r.get::<_, i64>(5)?.max(0) as u64,
                    unvouched: r.get::<_, i64>(7)?.max(0) as u64,
                },
            ))
        })
        .map_err(SpoolError::sqlite("load sessions"))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(SpoolError::sqlite("load sessions"))
}

pub(super) fn upsert_session(
    tx: &Transaction<'_>,
    device: &str,
    s: &Session,
) -> Result<(), SpoolError> {
    tx.prepare_cached(
        "INSERT INTO sessions (device_id, session, max_seq, max_time_ms, last_seen_ms, regressions,
                               window, unvouched)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(device_id, session) DO UPDATE SET max_seq = excluded.max_seq,
           max_time_ms = excluded.max_time_ms, last_seen_ms = excluded.last_seen_ms,
           regressions = excluded.regressions, window = excluded.window,
           unvouched = excluded.unvouched",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            device,
            s.id as i64,
            s.max_seq() as i64,
            s.max_time_ms,
            s.last_seen_ms,
            s.regressions as i64,
            s.window.encode(),
            s.unvouched as i64
        ])
    })
    .map(drop)
    .map_err(SpoolError::sqlite("update sessions"))
}
