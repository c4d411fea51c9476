//! How far a source (a tailed file) has been read, committed in the transaction that stores
//! what was read up to there (`source_offsets`).

use rusqlite::Connection;

use super::SpoolError;

/// How far a source (a tailed file) has been read: committed with what was read up to there.
/// An empty `state` forgets the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceState {
    pub source: String,
    pub state: Vec<u8>,
}

pub(super) fn save_sources(
    tx: &rusqlite::Transaction,
    sources: &[SourceState],
) -> Result<(), SpoolError> {
    for s in sources {
        if s.state.is_empty() {
            tx.execute("DELETE FROM source_offsets WHERE source = ?1", [&s.source])
                .map_err(SpoolError::sqlite("forget a source offset"))?;
        } else {
            tx.execute(
                "INSERT OR REPLACE INTO source_offsets (source, state) VALUES (?1, ?2)",
                rusqlite::params![s.source, s.state],
            )
            .map_err(SpoolError::sqlite("save a source offset"))?;
        }
    }
    Ok(())
}

/// Every saved source offset whose name starts with `prefix`.
pub(super) fn read(conn: &Connection, prefix: &str) -> Result<Vec<SourceState>, SpoolError> {
    let mut stmt = conn
        .prepare(
            "SELECT source, state FROM source_offsets WHERE substr(source, 1, length(?1)) = ?1",
        )
        .map_err(SpoolError::sqlite("read source offsets"))?;
    let rows = stmt
        .query_map([prefix], |r| {
            Ok(SourceState {
                source: r.get(0)?,
                state: r.get(1)?,
            })
        })
        .map_err(SpoolError::sqlite("read source offsets"))?;
    rows.collect::<Result<_, _>>()
        .map_err(SpoolError::sqlite("read source offsets"))
}
