//! How a [`Record`] is a row of `records`: the columns, inserting, reading back, deleting by
//! id runs, and the bytes a row counts against `max_bytes`.
//!
//! Ids are assigned by the writer ([`next_id`] at open, then counting up), not by SQLite, so
//! they never repeat, even after the queue empties: an acknowledgement of an old id can never
//! delete a new row. They start above every id `records` and `quarantine` hold, so a row moved
//! to quarantine never meets an id already there, and above every id ever committed
//! (`spool_meta.id_floor`, raised in each transaction that appends, [`raise_floor`]), so they
//! never repeat across restarts either: a forwarder's marker "delivered through id N" in Kafka
//! stays true for this spool. (Schema 1 to 7 got the same from
//! `AUTOINCREMENT`, at the cost of a `sqlite_sequence` update per row; [`super::schema`] drops
//! it when it can.)
//!
//! Headers are stored in [`super::headers`]' compact form; rows from before schema 8 hold JSON
//! text, still read.

use std::collections::BTreeMap;

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

/// Records that ids through `highest` were committed (`spool_meta.id_floor`), in the
/// transaction that appends them.
pub(super) fn raise_floor(tx: &Transaction<'_>, highest: i64) -> Result<(), SpoolError> {
    tx.prepare_cached("UPDATE spool_meta SET value = max(value, ?1) WHERE key = 'id_floor'")
        .and_then(|mut stmt| stmt.execute([highest]))
        .map(drop)
        .map_err(SpoolError::sqlite("raise id floor"))
}

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

/// The statement that inserts rows, and a buffer for their headers, reused for every row of a
/// transaction.
pub(super) struct Inserter<'t> {
    stmt: rusqlite::CachedStatement<'t>,
    headers: Vec<u8>,
}

impl<'t> Inserter<'t> {
    pub(super) fn new(tx: &'t Transaction<'_>) -> Result<Self, SpoolError> {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO records
                   (id, topic, key, value, timestamp_ms, headers, device_id, seq, received_ms,
                    session)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .map_err(SpoolError::sqlite("append"))?;
        Ok(Self {
            stmt,
            headers: Vec::with_capacity(64),
        })
    }

    /// Inserts `record` as row `id` (from the writer's count, see the module doc).
    pub(super) fn insert(
        &mut self,
        id: i64,
        record: &Record,
        received_ms: i64,
    ) -> Result<(), SpoolError> {
        let origin = record.origin.as_ref();
        super::headers::encode_into(&mut self.headers, &record.headers, origin);
        // Bound one by one with their own types: no `dyn ToSql` per value, and no count of the
        // statement's parameters per row (the statement above has exactly these ten).
        let s = &mut self.stmt;
        let bound = (|| {
            s.raw_bind_parameter(1, id)?;
            s.raw_bind_parameter(2, record.topic.as_str())?;
            s.raw_bind_parameter(3, record.key.as_slice())?;
            s.raw_bind_parameter(4, record.value.as_slice())?;
            s.raw_bind_parameter(5, record.timestamp_ms)?;
            s.raw_bind_parameter(6, self.headers.as_slice())?;
            s.raw_bind_parameter(7, origin.map(|o| o.device_id.as_str()))?;
            s.raw_bind_parameter(8, origin.map(|o| o.seq as i64))?;
            s.raw_bind_parameter(9, received_ms)?;
            s.raw_bind_parameter(10, origin.map_or(0, |o| o.session as i64))?;
            s.raw_execute()
        })();
        bound.map_err(SpoolError::sqlite("append"))?;
        Ok(())
    }
}

/// The first id to assign: above every id `records` and `quarantine` hold, every id ever
/// committed (`spool_meta.id_floor`, schema 10) and every id `AUTOINCREMENT` handed out (schema
/// 1 to 7), so none repeats.
pub(crate) fn next_id(conn: &Connection) -> Result<i64, SpoolError> {
    // Every spool starts as schema 1, whose `records` had `AUTOINCREMENT`, so
    // `sqlite_sequence` exists; it outlives the rebuild that drops it (only the row goes).
    let highest: i64 = conn
        .query_row(
            "SELECT max(
                 coalesce((SELECT max(seq) FROM sqlite_sequence WHERE name = 'records'), 0),
                 coalesce((SELECT max(id) FROM records), 0),
                 coalesce((SELECT max(id) FROM quarantine), 0),
                 coalesce((SELECT value FROM spool_meta WHERE key = 'id_floor'), 0))",
            [],
            |r| r.get(0),
        )
        .map_err(SpoolError::sqlite("next id"))?;
    Ok(highest.saturating_add(1))
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

/// [`fetch_range`]'s query.
pub(super) const FETCH_RANGE: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM records WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3"
);

/// Up to `limit` rows with ids in `(after, until]`, in id order.
pub(super) fn fetch_range(
    conn: &Connection,
    after: i64,
    until: i64,
    limit: usize,
) -> Result<Vec<Spooled>, SpoolError> {
    let mut stmt = conn
        .prepare_cached(FETCH_RANGE)
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
                writer: None,
            }),
            _ => None,
        },
        event: None,
        mqtt_topic: None,
    };
    let headers = match r.get_ref(5)? {
        rusqlite::types::ValueRef::Blob(b) => super::headers::decode(b, record.origin.as_ref()),
        // Schema 1 to 7: a JSON array of `[name, value]` pairs.
        rusqlite::types::ValueRef::Text(t) => serde_json::from_slice(t)
            .map_err(|e| format!("headers are not a JSON list of pairs: {e}")),
        other => Err(format!(
            "headers are neither a blob nor text but {}",
            other.data_type()
        )),
    };
    Ok(match headers {
        Ok(headers) => Ok(Spooled {
            id,
            received_ms,
            record: Record { headers, ..record },
        }),
        Err(reason) => Err(SpoolError::BadRow { id, reason }),
    })
}

/// The next row id, counting on. An id taken by a transaction that rolls back is skipped, not
/// reused.
pub(super) fn take_id(next: &mut i64) -> i64 {
    let id = *next;
    *next = next.saturating_add(1);
    id
}

/// Runs a `DELETE ... RETURNING topic, size` statement: counts the deleted rows per topic and
/// adds their bytes to `freed`; returns how many.
pub(super) fn count_deleted(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
    per_topic: &mut BTreeMap<String, u64>,
    freed: &mut u64,
) -> Result<usize, SpoolError> {
    let rows = stmt
        .query_map(params, |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(SpoolError::sqlite("delete"))?;
    let mut n = 0;
    for row in rows {
        let (topic, size) = row.map_err(SpoolError::sqlite("delete"))?;
        *per_topic.entry(topic).or_default() += 1;
        *freed += size.max(0) as u64;
        n += 1;
    }
    Ok(n)
}
