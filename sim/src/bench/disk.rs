//! The disk's own cost of durability, measured beside the load: the yardstick for the
//! gateway's acknowledgement latency.
//!
//! A spool commit in WAL mode appends the group's pages to the WAL and fdatasyncs it. The probe
//! does the same on the gateway's disk: it appends 2,300-byte blocks (a few pages with their
//! frame headers) to a file in `dir` and fdatasyncs after each, `count` times, and reports the
//! latency percentiles. An acknowledgement can never be cheaper than this; the bench reports how
//! many times this the gateway's p99 is.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use super::{histogram, Latency};

/// Bytes per probe write.
const BLOCK: usize = 2300;

/// Times `count` append-and-fdatasync rounds in a temporary file in `dir`.
pub fn fdatasync_latency(dir: &Path, count: usize) -> std::io::Result<Latency> {
    let path = dir.join(format!(".tributary-sim-fsync-probe-{}", std::process::id()));
    let result = probe(&path, count);
    let _ = std::fs::remove_file(&path);
    result
}

fn probe(path: &Path, count: usize) -> std::io::Result<Latency> {
    let mut file = std::fs::File::create(path)?;
    let block = [0x5au8; BLOCK];
    let mut h = histogram();
    for _ in 0..count {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        let us = started.elapsed().as_micros().max(1) as u64;
        let _ = h.record(us);
    }
    Ok(Latency::from_micros(&h))
}
