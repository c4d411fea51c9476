//! What the spool holds, for `tributary spool stats`, the status page and the metrics: rows,
//! bytes and the oldest row's age, in total and per topic, and the rows it discarded and why.

use std::collections::BTreeMap;

use rusqlite::Connection;

use super::SpoolError;

/// Row counts and sizes, in total and per topic, and what the spool discarded.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpoolStats {
    pub rows: u64,
    pub bytes: u64,
    pub oldest_received_ms: Option<i64>,
    pub topics: BTreeMap<String, TopicStats>,
    /// `(topic, reason) -> count` of rows the spool deleted unforwarded.
    pub discarded: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TopicStats {
    pub rows: u64,
    pub bytes: u64,
    pub oldest_received_ms: Option<i64>,
}

/// Rows, bytes and the oldest row's age, in total and per topic, and the discard counters.
pub(super) fn stats(conn: &Connection) -> Result<SpoolStats, SpoolError> {
    let mut stats = SpoolStats::default();
    {
        let mut stmt = conn
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
    }
    let mut stmt = conn
        .prepare_cached("SELECT topic, reason, count FROM counters")
        .map_err(SpoolError::sqlite("stats"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(SpoolError::sqlite("stats"))?;
    for row in rows {
        let (topic, reason, n) = row.map_err(SpoolError::sqlite("stats"))?;
        stats
            .discarded
            .entry(topic)
            .or_default()
            .insert(reason, n.max(0) as u64);
    }
    Ok(stats)
}
