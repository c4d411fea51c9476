//! `bench`: open-loop load against a gateway, with latency percentiles and the gateway's cost.
//!
//! **Open loop.** Each device sends a batch of `batch` events every `batch / rate` seconds
//! (its share of the rate), on schedule, without waiting for earlier ACKs: a writer sends, a
//! reader takes the ACKs. Latency is measured from when a batch was *due*, not from when it was
//! written, so a gateway that falls behind shows it in the percentiles instead of slowing the
//! load down (no coordinated omission). With `rate = 0` the load is closed-loop instead: each
//! device keeps `window` batches in flight, as fast as ACKs allow.
//!
//! **Measured.** Acknowledgement latency (due → ACK) p50, p99, p99.9 and max, from HDR
//! histograms with three significant digits. End-to-end latency (due → a consumer sees it in
//! Kafka), p50 and p99, when a broker is given: an event's timestamp is its batch's due time
//! in wall clock ms, and a consumer reading from the end of the topic compares it with its own clock.
//! The gateway's CPU (user + system, as % of one core) and resident memory (peak of samples
//! every 200 ms, and at the end), from `/proc/<pid>`. With a folder on the gateway's disk, the
//! disk's own fdatasync latency, timed just before the load ([`disk`]), and the ratio of the
//! acknowledgement p99 to it.
//!
//! Speed and memory targets live here and in `cargo bench`, never in timed tests.

pub mod disk;
#[cfg(feature = "kafka")]
pub mod e2e;
mod load;
mod mqtt_load;
pub mod proc;
mod schedule;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

pub use load::run_load;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    pub tcp: SocketAddr,
    /// Devices publish over MQTT (QoS 1, one event a publish) to this address instead of TCP.
    pub mqtt: Option<SocketAddr>,
    pub devices: usize,
    /// Events per second over all devices; 0: closed loop, as fast as ACKs allow.
    pub rate: f64,
    pub duration: Duration,
    pub batch: usize,
    /// Batches in flight per device in closed-loop mode.
    pub window: usize,
    pub prefix: String,
    pub seed: u64,
    /// A folder on the gateway's spool disk, to time its fdatasync beside the load.
    pub fsync_dir: Option<std::path::PathBuf>,
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    /// From a histogram of microseconds.
    pub fn from_micros(h: &Histogram<u64>) -> Self {
        let ms = |v: u64| v as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// The gateway's cost during the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GatewayCost {
    pub pid: u32,
    /// User + system CPU time over the run, as % of one core.
    pub cpu_percent: f64,
    pub rss_peak_mib: f64,
    pub rss_end_mib: f64,
}

/// One bench run's results; serialised as one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    pub transport: &'static str,
    pub devices: usize,
    pub batch: usize,
    /// The target in events/s; 0 for closed loop.
    pub target_rate: f64,
    pub duration_s: f64,
    pub sent: u64,
    pub acked: u64,
    /// Acknowledged events per second of the run.
    pub achieved_rate: f64,
    pub errors: u64,
    /// From each batch's due time to its acknowledgement (open loop: a device held back by
    /// the gateway counts from when it should have sent).
    pub ack_latency_ms: Latency,
    /// From sending to the acknowledgement: the same, less the simulator's own timer lateness
    /// (see `LoadResult::ack_from_send`).
    pub ack_from_send_ms: Latency,
    pub e2e_latency_ms: Option<Latency>,
    pub gateway: Option<GatewayCost>,
    /// The disk's own append-and-fdatasync latency, measured before the load (`--fsync-dir`).
    pub disk_fdatasync_ms: Option<Latency>,
    /// CPU time one of those rounds cost the probe, in microseconds: about what one spool sync
    /// costs in CPU on this machine.
    pub disk_fdatasync_cpu_us: Option<f64>,
    /// Acknowledgement p99 over the disk's fdatasync p99: the cost of durability beyond the
    /// disk's own.
    pub ack_p99_over_fdatasync_p99: Option<f64>,
    /// The same for the latency from sending.
    pub ack_from_send_p99_over_fdatasync_p99: Option<f64>,
}

impl BenchReport {
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let target = if self.target_rate > 0.0 {
            format!("{:.0} events/s (open loop)", self.target_rate)
        } else {
            "as fast as ACKs allow (closed loop)".to_owned()
        };
        let _ = writeln!(out, "target          {target}");
        let _ = writeln!(
            out,
            "load            {} devices over {}, batches of {}, {:.1} s",
            self.devices, self.transport, self.batch, self.duration_s
        );
        let _ = writeln!(
            out,
            "achieved        {:.0} events/s ({} sent, {} acknowledged, {} errors)",
            self.achieved_rate, self.sent, self.acked, self.errors
        );
        for (name, l) in [
            ("ack latency", &self.ack_latency_ms),
            ("  from send", &self.ack_from_send_ms),
        ] {
            let _ = writeln!(
                out,
                "{name:<16}p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
                l.p50, l.p99, l.p999, l.max
            );
        }
        match &self.e2e_latency_ms {
            Some(e) => {
                let _ = writeln!(
                    out,
                    "end to end      p50 {:.0} ms  p99 {:.0} ms  ({} events seen in Kafka)",
                    e.p50, e.p99, e.count
                );
            }
            None => {
                let _ = writeln!(out, "end to end      not measured (no --kafka)");
            }
        }
        if let (Some(d), Some(ratio), Some(sent)) = (
            &self.disk_fdatasync_ms,
            self.ack_p99_over_fdatasync_p99,
            self.ack_from_send_p99_over_fdatasync_p99,
        ) {
            let _ = writeln!(
                out,
                "disk            fdatasync p50 {:.2} ms  p99 {:.2} ms  (ack p99 = {:.1} × fdatasync p99, {:.1} × from send)",
                d.p50, d.p99, ratio, sent
            );
            if let Some(cpu) = self.disk_fdatasync_cpu_us {
                let _ = writeln!(
                    out,
                    "                {cpu:.0} µs of CPU per append and fdatasync"
                );
            }
        }
        match &self.gateway {
            Some(g) => {
                let _ = writeln!(
                    out,
                    "gateway         pid {}: CPU {:.0} % of a core, RSS peak {:.1} MiB, at end {:.1} MiB",
                    g.pid, g.cpu_percent, g.rss_peak_mib, g.rss_end_mib
                );
            }
            None => {
                let _ = writeln!(out, "gateway         CPU and memory not measured (no pid)");
            }
        }
        out
    }
}

/// An empty latency histogram: 1 µs to 1 hour, three significant digits.
pub fn histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

/// A device's own latency histogram, merged into a [`histogram`] at the end: 1 % resolution,
/// sized by the largest value it saw. A [`histogram`] is 360 KiB, fixed; two per device made
/// 10,000 devices cost the simulator 7 GiB, and merging them kept its runtime busy for seconds,
/// which showed as acknowledgements seconds late. One of these is a few KiB.
pub fn device_histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    Histogram::new(2).expect("2 significant figures are valid")
}

/// Where to watch the events arrive in Kafka.
#[derive(Debug, Clone)]
pub struct KafkaWatch {
    pub brokers: String,
    pub topic: String,
}

/// Runs the bench: the load, with the gateway `pid` sampled and `kafka` watched if given.
pub async fn run(
    spec: &BenchSpec,
    pid: Option<u32>,
    kafka: Option<&KafkaWatch>,
) -> Result<BenchReport, String> {
    #[cfg(feature = "kafka")]
    let watch = match kafka {
        Some(k) => Some(e2e::E2e::start(&k.brokers, &k.topic, &spec.prefix)?),
        None => None,
    };
    #[cfg(not(feature = "kafka"))]
    if kafka.is_some() {
        return Err("this build has no Kafka support (feature `kafka`)".into());
    }
    let disk = match &spec.fsync_dir {
        Some(dir) => Some(
            disk::fdatasync_latency(dir, 500)
                .map_err(|e| format!("timing fdatasync in {}: {e}", dir.display()))?,
        ),
        None => None,
    };
    let cpu0 = pid.and_then(proc::cpu_seconds);
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = pid.map(|pid| {
        let sampling = std::sync::Arc::clone(&sampling);
        std::thread::spawn(move || {
            let mut peak: f64 = 0.0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(proc::rss_mib(pid).unwrap_or(0.0));
                std::thread::sleep(Duration::from_millis(200));
            }
            peak
        })
    });
    let wall = std::time::Instant::now();
    let load = run_load(spec).await;
    let wall = wall.elapsed().as_secs_f64().max(1e-9);
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let gateway = match (pid, cpu0, sampler) {
        (Some(pid), Some(c0), Some(s)) => {
            let peak = s.join().unwrap_or(0.0);
            let end = proc::rss_mib(pid).unwrap_or(0.0);
            proc::cpu_seconds(pid).map(|c1| GatewayCost {
                pid,
                cpu_percent: (c1 - c0) / wall * 100.0,
                rss_peak_mib: peak.max(end),
                rss_end_mib: end,
            })
        }
        _ => None,
    };
    #[cfg(feature = "kafka")]
    let e2e_latency_ms = watch.map(|w| {
        let h = w.finish(load.acked, Duration::from_secs(30));
        Latency::from_micros(&h)
    });
    #[cfg(not(feature = "kafka"))]
    let e2e_latency_ms = None;
    let secs = load.elapsed.as_secs_f64().max(1e-9);
    let ack_latency_ms = Latency::from_micros(&load.ack_latency);
    let ack_from_send_ms = Latency::from_micros(&load.ack_from_send);
    Ok(BenchReport {
        transport: if spec.mqtt.is_some() { "mqtt" } else { "tcp" },
        devices: spec.devices,
        batch: spec.batch,
        target_rate: spec.rate,
        duration_s: secs,
        sent: load.sent,
        acked: load.acked,
        achieved_rate: load.acked as f64 / secs,
        errors: load.errors,
        ack_p99_over_fdatasync_p99: disk.map(|d| ack_latency_ms.p99 / d.latency.p99.max(1e-3)),
        ack_from_send_p99_over_fdatasync_p99: disk
            .map(|d| ack_from_send_ms.p99 / d.latency.p99.max(1e-3)),
        disk_fdatasync_ms: disk.map(|d| d.latency),
        disk_fdatasync_cpu_us: disk.and_then(|d| d.cpu_us),
        ack_latency_ms,
        ack_from_send_ms,
        e2e_latency_ms,
        gateway,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_latencies_merge_into_the_total_within_one_percent() {
        let values = [350u64, 1_600, 11_990, 50_000, 2_000_000];
        let mut device = device_histogram();
        for v in values {
            device.record(v).expect("recorded");
        }
        let mut total = histogram();
        total.add(&device).expect("merged");
        assert_eq!(total.len(), values.len() as u64);
        let within = |got: u64, want: u64| got.abs_diff(want) * 100 <= want;
        assert!(within(total.max(), 2_000_000), "max {}", total.max());
        assert!(within(total.value_at_quantile(0.5), 11_990));
        assert!(within(total.min(), 350), "min {}", total.min());
    }
}
