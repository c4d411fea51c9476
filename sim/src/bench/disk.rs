//! The disk's own cost of durability, measured beside the load: the yardstick for the
//! gateway's acknowledgement latency.
//!
//! A spool commit in WAL mode appends the group's pages to the WAL and fdatasyncs it. The probe
//! does the same on the gateway's disk: it appends 2,300-byte blocks (a few pages with their
//! frame headers) to a file in `dir` and fdatasyncs after each, `count` times, and reports the
//! latency percentiles. An acknowledgement can never be cheaper than this; the bench reports how
//! many times this the gateway's p99 is.
//!
//! It also reports the CPU time one round costs the probing thread (write, fdatasync and the
//! kernel's work for both, from `/proc/thread-self/schedstat`): a gateway that syncs its spool
//! `n` times a second spends about `n` times this on durability alone, whatever it does besides.
//! About, not at least: the probe appends, so each of its syncs also writes the file's size,
//! while the spool's WAL is mostly overwritten in place once it has wrapped.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use super::{histogram, Latency};

/// Bytes per probe write.
const BLOCK: usize = 2300;

/// What the probe measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    pub latency: Latency,
    /// CPU time per round in microseconds; `None` where the kernel does not report a thread's
    /// run time.
    pub cpu_us: Option<f64>,
}

/// Times `count` append-and-fdatasync rounds in a temporary file in `dir`.
pub fn fdatasync_latency(dir: &Path, count: usize) -> std::io::Result<Probe> {
    let path = dir.join(format!(".tributary-sim-fsync-probe-{}", std::process::id()));
    let result = probe(&path, count);
    let _ = std::fs::remove_file(&path);
    result
}

fn probe(path: &Path, count: usize) -> std::io::Result<Probe> {
    let mut file = std::fs::File::create(path)?;
    let block = [0x5au8; BLOCK];
    let mut h = histogram();
    let cpu0 = super::proc::thread_cpu_ns();
    for _ in 0..count {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        let us = started.elapsed().as_micros().max(1) as u64;
        let _ = h.record(us);
    }
    let cpu_us = match (cpu0, super::proc::thread_cpu_ns()) {
        (Some(a), Some(b)) if count > 0 => Some(b.saturating_sub(a) as f64 / 1000.0 / count as f64),
        _ => None,
    };
    Ok(Probe {
        latency: Latency::from_micros(&h),
        cpu_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_times_every_round_counts_its_cpu_and_leaves_no_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let probe = fdatasync_latency(dir.path(), 20).expect("probe");
        assert_eq!(probe.latency.count, 20);
        assert!(probe.latency.p50 > 0.0 && probe.latency.p50 <= probe.latency.max);
        // Linux reports a thread's run time; each round is at least a write and a syscall.
        let cpu = probe.cpu_us.expect("thread CPU time on Linux");
        assert!(cpu > 0.0, "{cpu} µs per round");
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read dir").collect();
        assert!(left.is_empty(), "probe file left behind: {left:?}");
    }
}
