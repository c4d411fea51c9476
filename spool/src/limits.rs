//! How big the spool may grow, and what happens when it is full.
//!
//! Two bounds, checked as every group commit begins: `max_bytes` (keys plus values of the queued
//! rows) and `min_free_bytes` (space left on the spool's filesystem, counting pages SQLite
//! already holds free inside the file, which new rows reuse before the file grows). When an
//! append would break either:
//! - [`FullPolicy::Block`]: the append is refused with [`SpoolError::Full`]; ingest tells devices
//!   "busy, retry later" and acknowledges nothing. Deletes of forwarded rows still commit, so the
//!   spool drains and appends succeed again by themselves.
//! - [`FullPolicy::DropOldest`]: the oldest unforwarded rows are deleted until the append fits,
//!   counted per topic (`counters` table, reason `dropped_full`) and logged.
//!
//! A real ENOSPC from SQLite (`SQLITE_FULL`) is reported as [`SpoolError::Full`] too; nothing
//! exits or crash-loops on it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, Transaction};

use super::SpoolError;

/// What to do when an append does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    Block,
    DropOldest,
}

impl std::str::FromStr for FullPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "block" => Ok(Self::Block),
            "drop_oldest" => Ok(Self::DropOldest),
            other => Err(format!("{other:?} is not \"block\" or \"drop_oldest\"")),
        }
    }
}

/// The spool's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes (keys plus values) queued.
    pub max_bytes: u64,
    /// Least free space to leave on the filesystem.
    pub min_free_bytes: u64,
    pub policy: FullPolicy,
    /// Unforwarded rows older than this are expired; `None` keeps them until forwarded.
    pub max_age: Option<Duration>,
    /// Seqs per device session the de-duplication window vouches for
    /// (`spool.dedup_window`, [`super::seqs`]).
    pub dedup_window: usize,
}

impl Limits {
    /// No bounds: for offline tools and tests.
    pub const fn unlimited() -> Self {
        Self {
            max_bytes: u64::MAX,
            min_free_bytes: 0,
            policy: FullPolicy::Block,
            max_age: None,
            dedup_window: super::seqs::DEFAULT_WINDOW,
        }
    }
}

/// How far over the bounds an append of `incoming` bytes would be: `Ok(())` if it fits, or the
/// bytes to free and why.
pub fn check(
    limits: &Limits,
    queued: u64,
    incoming: u64,
    free_on_disk: u64,
) -> Result<(), (u64, SpoolError)> {
    let over = queued
        .saturating_add(incoming)
        .saturating_sub(limits.max_bytes);
    if over > 0 {
        return Err((
            over,
            SpoolError::Full {
                reason: format!(
                    "spool holds {queued} bytes, {incoming} more would exceed max_bytes {}",
                    limits.max_bytes
                ),
            },
        ));
    }
    let short = limits
        .min_free_bytes
        .saturating_add(incoming)
        .saturating_sub(free_on_disk);
    if short > 0 {
        return Err((
            short,
            SpoolError::Full {
                reason: format!(
                    "{free_on_disk} bytes free on the spool's filesystem, min_free_bytes is {}",
                    limits.min_free_bytes
                ),
            },
        ));
    }
    Ok(())
}

/// Free bytes on the filesystem holding `path` (its directory if it does not exist yet).
pub fn free_on_disk(path: &Path) -> u64 {
    // Asked before every group that appends, so the file itself first (it exists once the spool
    // is open) rather than a stat to see whether it does.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // If the filesystem cannot be asked, do not block on it; SQLITE_FULL still guards.
    fs4::available_space(path)
        .or_else(|_| fs4::available_space(dir))
        .unwrap_or(u64::MAX)
}

/// Bytes in pages SQLite holds free inside the file; new rows reuse them before it grows.
/// `page_size` is the file's, read once at open ([`page_size`]): it never changes for a file
/// with content.
pub(super) fn free_pages(conn: &Connection, page_size: u64) -> Result<u64, SpoolError> {
    // Asked before every group that appends: a plain pragma statement, prepared once. (Preparing
    // it each time cost a sixth of the writer's time; the `pragma_freelist_count` table form
    // prepares its pragma again on every query.)
    let free: i64 = conn
        .prepare_cached("PRAGMA freelist_count")
        .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
        .map_err(SpoolError::sqlite("read free pages"))?;
    Ok((free.max(0) as u64).saturating_mul(page_size))
}

/// The file's page size in bytes.
pub(super) fn page_size(conn: &Connection) -> Result<u64, SpoolError> {
    conn.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))
        .map(|size| size.max(0) as u64)
        .map_err(SpoolError::sqlite("read page size"))
}

/// Deletes the oldest rows until `need` bytes are freed or the spool is empty.
pub(super) fn drop_oldest(
    tx: &Transaction<'_>,
    need: u64,
    dropped: &mut BTreeMap<String, u64>,
) -> Result<u64, SpoolError> {
    let mut freed = 0;
    let mut stmt = tx
        .prepare_cached(
            "DELETE FROM records WHERE id = (SELECT min(id) FROM records)
             RETURNING topic, length(key) + length(value)",
        )
        .map_err(SpoolError::sqlite("drop oldest"))?;
    while freed < need {
        if super::rows::count_deleted(&mut stmt, [], dropped, &mut freed)? == 0 {
            break;
        }
    }
    Ok(freed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_bytes: u64, min_free_bytes: u64) -> Limits {
        Limits {
            max_bytes,
            min_free_bytes,
            ..Limits::unlimited()
        }
    }

    #[test]
    fn an_append_that_fits_passes() {
        assert!(check(&limits(100, 10), 50, 50, 1000).is_ok());
    }

    #[test]
    fn max_bytes_says_how_much_to_free_and_why() {
        let (need, err) = check(&limits(100, 0), 90, 30, u64::MAX).unwrap_err();
        assert_eq!(need, 20);
        assert!(err.to_string().contains("max_bytes 100"), "{err}");
    }

    #[test]
    fn min_free_bytes_counts_the_incoming_bytes() {
        let (need, err) = check(&limits(u64::MAX, 100), 0, 30, 120).unwrap_err();
        assert_eq!(need, 10);
        assert!(err.to_string().contains("min_free_bytes is 100"), "{err}");
    }

    #[test]
    fn policies_parse_from_their_config_names() {
        assert_eq!("block".parse(), Ok(FullPolicy::Block));
        assert_eq!("drop_oldest".parse(), Ok(FullPolicy::DropOldest));
        assert!("drop".parse::<FullPolicy>().is_err());
    }
}
