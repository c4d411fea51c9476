//! The `[spool]` section: where the spool lives, how the writer groups commits, and its size,
//! free-disk, age and de-duplication bounds.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::limits::{FullPolicy, Limits};
use tributary_common::validate::{invalid, non_zero, timeout_ms, ConfigError, MAX_DURATION_MS};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpool {
    pub path: Option<PathBuf>,
    pub group_commit_max_events: Option<usize>,
    pub group_commit_wait_ms: Option<u64>,
    pub max_bytes: Option<u64>,
    pub min_free_bytes: Option<u64>,
    pub when_full: Option<String>,
    pub max_age_ms: Option<u64>,
    pub forget_devices_after_ms: Option<u64>,
    pub dedup_window: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub path: PathBuf,
    /// Most events one transaction commits.
    pub group_commit_max_events: NonZeroUsize,
    /// How long the writer waits for more events before it commits a partial group.
    pub group_commit_wait: Duration,
    /// Size, free-disk and age bounds, and the policy when full.
    pub limits: Limits,
    /// A device session (its sequence state) not heard from for this long is forgotten.
    pub forget_devices_after: Duration,
}

/// Validates `[spool]`; the spool file defaults to `spool.db` in `data_dir`.
pub fn validate(raw: RawSpool, data_dir: &Path) -> Result<SpoolConfig, ConfigError> {
    let spool = SpoolConfig {
        path: raw.path.unwrap_or_else(|| data_dir.join("spool.db")),
        group_commit_max_events: non_zero(
            "spool.group_commit_max_events",
            raw.group_commit_max_events,
            1000,
        )?,
        group_commit_wait: Duration::from_millis(raw.group_commit_wait_ms.unwrap_or(0)),
        limits: Limits {
            max_bytes: raw.max_bytes.unwrap_or(1 << 30),
            min_free_bytes: raw.min_free_bytes.unwrap_or(100 << 20),
            policy: match raw.when_full.as_deref() {
                None => FullPolicy::Block,
                Some(p) => p.parse().map_err(|e| invalid("spool.when_full", e))?,
            },
            max_age: match raw.max_age_ms {
                None | Some(0) => None,
                Some(ms) if ms > MAX_DURATION_MS => {
                    return Err(invalid(
                        "spool.max_age_ms",
                        format!("must be at most {MAX_DURATION_MS} (100 years)"),
                    ))
                }
                Some(ms) => Some(Duration::from_millis(ms)),
            },
            dedup_window: match raw.dedup_window {
                None => super::seqs::DEFAULT_WINDOW,
                Some(w) if super::seqs::valid_width(w) => w,
                Some(w) => {
                    return Err(invalid(
                        "spool.dedup_window",
                        format!("{w} is not a multiple of 64 from 64 to 65536"),
                    ))
                }
            },
        },
        forget_devices_after: timeout_ms(
            "spool.forget_devices_after_ms",
            raw.forget_devices_after_ms,
            Duration::from_millis(30 * 24 * 3600 * 1000),
        )?,
    };
    if spool.limits.max_bytes == 0 {
        return Err(invalid("spool.max_bytes", "must be at least 1"));
    }
    if spool.group_commit_wait > Duration::from_secs(1) {
        return Err(invalid(
            "spool.group_commit_wait_ms",
            "must be at most 1000: every acknowledgement waits this long at worst",
        ));
    }
    Ok(spool)
}
