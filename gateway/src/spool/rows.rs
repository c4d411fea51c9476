//! How a [`Record`] is a row of `records`: the columns, inserting, reading back, deleting by
//! id runs, and the bytes a row counts against `max_bytes`.
//!
//! Ids come from `AUTOINCREMENT`, so they never repeat, even after the queue empties: an
//! acknowledgement of an old id can never delete a new row.

use rusqlite::{params, Connection, Transaction};

use super::{Appended, SpoolError, Spooled};
use crate::record::{EventId, Record};

/// The columns every reader of `records` selects, in the order [`row_to_spooled`] reads them.
macro_rules! record_columns {
    () => {
        "id, topic, key, value, timestamp_ms, headers, device_id, seq, session, received_ms"
    };
}
pub(super) use record_columns;

/// Keys plus values: what `max_bytes` counts.
pub fn payload_size(record: &Record) -> u64 {
    (record.key.len() + record.value.len()) as u64
}

pub(super) fn stored_size(groups: &[Vec<Record>], outcomes: &[Vec<Appended>]) -> u64 {
    groups
        .iter()
        .flatten()
        .zip(outcomes.iter().flatten())
        .filter(|(_, o)| matches!(o, Appended::Stored { .. }))
        .map(|(r, _)| payload_size(r))
        .sum()
}

/// The statement [`insert_one`] runs, prepared once per transaction.
pub(super) fn insert_statement<'t>(
    tx: &'t Transaction<'_>,
) -> Result<rusqlite::CachedStatement<'t>, SpoolError> {
    tx.prepare_cached(
        "INSERT INTO records
           (topic, key, value, timestamp_ms, headers, device_id, seq, received_ms, session)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .map_err(SpoolError::sqlite("append"))
}

pub(super) fn insert_one(
    stmt: &mut rusqlite::CachedStatement<'_>,
    tx: &Transaction<'_>,
    record: &Record,
    received_ms: i64,
) -> Result<i64, SpoolError> {
    let headers = serde_json::to_string(&record.headers).unwrap_or_else(|_| "[]".into());
    stmt.execute(params![
        record.topic,
        record.key,
        record.value,
        record.timestamp_ms,
        headers,
        record.origin.as_ref().map(|o| o.device_id.as_str()),
        record.origin.as_ref().map(|o| o.seq as i64),
        received_ms,
        record.origin.as_ref().map_or(0, |o| o.session as i64),
    ])
    .map_err(SpoolError::sqlite("append"))?;
    Ok(tx.last_insert_rowid())
}

/// Deletes rows by id; returns the bytes freed.
pub(super) fn delete_in(tx: &Transaction<'_>, ids: &[i64]) -> Result<u64, SpoolError> {
    let mut delete = tx
        .prepare_cached(
            "DELETE FROM records WHERE id BETWEEN ?1 AND ?2 RETURNING length(key) + length(value)",
        )
        .map_err(SpoolError::sqlite("delete"))?;
    let mut freed = 0u64;
    for (first, last) in id_runs(ids) {
        let mut rows = delete
            .query([first, last])
            .map_err(SpoolError::sqlite("delete"))?;
        while let Some(row) = rows.next().map_err(SpoolError::sqlite("delete"))? {
            freed += row
                .get::<_, i64>(0)
                .map_err(SpoolError::sqlite("delete"))?
                .max(0) as u64;
        }
    }
    Ok(freed)
}

/// `ids` as runs of consecutive ids, `(first, last)`: one delete statement per run instead of
/// one per id (a forwarder acknowledges mostly consecutive rows).
pub(super) fn id_runs(ids: &[i64]) -> Vec<(i64, i64)> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for id in sorted {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == id => *last = id,
            _ => runs.push((id, id)),
        }
    }
    runs
}

/// The highest id queued, or 0 when there is none.
pub(super) fn last_id(conn: &Connection) -> Result<i64, SpoolError> {
    conn.query_row("SELECT coalesce(max(id), 0) FROM records", [], |r| r.get(0))
        .map_err(SpoolError::sqlite("last id"))
}

/// Up to `limit` rows with ids in `(after, until]`, in id order.
pub(super) fn fetch_range(
    conn: &Connection,
    after: i64,
    until: i64,
    limit: usize,
) -> Result<Vec<Spooled>, SpoolError> {
    let mut stmt = conn
        .prepare_cached(concat!(
            "SELECT ",
            record_columns!(),
            " FROM records WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3"
        ))
        .map_err(SpoolError::sqlite("fetch"))?;
    let rows = stmt
        .query_map(params![after, until, limit as i64], row_to_spooled)
        .map_err(SpoolError::sqlite("fetch"))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(SpoolError::sqlite("fetch"))??);
    }
    Ok(out)
}

/// Decodes a `records` row selected as [`record_columns`].
pub(super) fn row_to_spooled(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<Result<Spooled, SpoolError>> {
    let id: i64 = r.get(0)?;
    let headers: String = r.get(5)?;
    let device_id: Option<String> = r.get(6)?;
    let seq: Option<i64> = r.get(7)?;
    let session: i64 = r.get(8)?;
    let received_ms: i64 = r.get(9)?;
    let record = Record {
        topic: r.get(1)?,
        key: r.get(2)?,
        value: r.get(3)?,
        timestamp_ms: r.get(4)?,
        headers: Vec::new(),
        origin: match (device_id, seq) {
            (Some(device_id), Some(seq)) => Some(EventId {
                device_id,
                session: session as u64,
                seq: seq as u64,
            }),
            _ => None,
        },
        event: None,
        mqtt_topic: None,
    };
    Ok(match serde_json::from_str(&headers) {
        Ok(headers) => Ok(Spooled {
            id,
            received_ms,
            record: Record { headers, ..record },
        }),
        Err(e) => Err(SpoolError::BadRow {
            id,
            reason: format!("headers are not a JSON list of pairs: {e}"),
        }),
    })
}
