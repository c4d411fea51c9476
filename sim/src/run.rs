//! A run: every device of a scenario, concurrently, until done, out of time or cancelled.
//!
//! [`run`] builds the fleet from the scenario (streams seeded per device), spreads the first
//! connections over `ramp`, drives each device on its own task, and gathers each one's
//! [`Outcome`] into a [`RunReport`]: the summary table and the [`Manifest`] that `verify`
//! checks the topics against. Live counters feed the progress bar while it runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tributary_protocol::Kind;

use crate::device::{Device, Live, Outcome, Pace};
use crate::manifest::Manifest;
use crate::scenario::{Link, Scenario};
use crate::stream;

/// Everything that happened in a run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub devices: Vec<Outcome>,
    pub elapsed: Duration,
    pub seed: u64,
    /// The most devices connected at once.
    pub peak_connected: u64,
}

/// One line of the summary: the devices of one kind over one link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Row {
    pub devices: u64,
    pub sent: u64,
    pub acked: u64,
    pub resent: u64,
    pub reconnects: u64,
    pub faults: u64,
    pub failed: u64,
}

impl Row {
    fn add(&mut self, o: &Outcome) {
        self.devices += 1;
        self.sent += o.sent;
        self.acked += o.acked;
        self.resent += o.resent;
        self.reconnects += o.reconnects;
        self.faults += o.faults.spikes + o.faults.stuck + o.faults.dropouts;
        self.failed += u64::from(o.error.is_some());
    }
}

impl RunReport {
    pub fn total(&self) -> Row {
        let mut row = Row::default();
        for o in &self.devices {
            row.add(o);
        }
        row
    }

    pub fn sent(&self) -> u64 {
        self.total().sent
    }

    pub fn acked(&self) -> u64 {
        self.total().acked
    }

    /// Rows by event kind and link, in a stable order.
    pub fn rows(&self) -> BTreeMap<(Kind, Link), Row> {
        let mut rows: BTreeMap<(Kind, Link), Row> = BTreeMap::new();
        for o in &self.devices {
            rows.entry((o.kind, o.link)).or_default().add(o);
        }
        rows
    }

    /// Events that should have been acknowledged and were not: QoS 0 devices expect none.
    pub fn unacknowledged(&self) -> u64 {
        self.devices
            .iter()
            .filter(|o| !o.link.fire_and_forget())
            .map(|o| o.sent - o.acked.min(o.sent))
            .sum()
    }

    pub fn failures(&self) -> impl Iterator<Item = (&str, &str)> {
        self.devices
            .iter()
            .filter_map(|o| o.error.as_deref().map(|e| (o.id.as_str(), e)))
    }

    pub fn manifest(&self) -> Manifest {
        Manifest::from_outcomes(self.seed, &self.devices)
    }

    /// The summary table, for people.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<10} {:<10} {:>8} {:>12} {:>12} {:>10} {:>10} {:>8} {:>7}",
            "kind",
            "transport",
            "devices",
            "sent",
            "acked",
            "resent",
            "reconnects",
            "faults",
            "failed"
        );
        let line = |out: &mut String, kind: &str, link: &str, r: &Row, qos0: bool| {
            let acked = if qos0 {
                "-".to_owned()
            } else {
                r.acked.to_string()
            };
            let _ = writeln!(
                out,
                "{:<10} {:<10} {:>8} {:>12} {:>12} {:>10} {:>10} {:>8} {:>7}",
                kind, link, r.devices, r.sent, acked, r.resent, r.reconnects, r.faults, r.failed
            );
        };
        for ((kind, link), row) in self.rows() {
            line(
                &mut out,
                kind.as_str(),
                &link.to_string(),
                &row,
                link.fire_and_forget(),
            );
        }
        let t = self.total();
        line(&mut out, "total", "", &t, false);
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let _ = writeln!(
            out,
            "elapsed {:.2} s, {:.0} events/s sent, {:.0} acknowledged/s, peak {} connections \
             (seed {})",
            secs,
            t.sent as f64 / secs,
            t.acked as f64 / secs,
            self.peak_connected,
            self.seed
        );
        out
    }
}

/// Runs `scenario`; `live` is updated as it goes (the progress bar reads it), `cancel` stops
/// every device early (Ctrl-C).
pub async fn run(
    scenario: &Scenario,
    live: Arc<Live>,
    cancel: CancellationToken,
) -> Result<RunReport, crate::model::roads::RoadsError> {
    let roads = Arc::new(stream::roads(scenario)?);
    let start_ms = scenario
        .start_ms
        .unwrap_or_else(|| default_start_ms(scenario, crate::generate::now_ms()));
    let seq_start = scenario.seq_start.unwrap_or_else(crate::generate::now_ms);
    let fleet = stream::fleet(scenario, &roads, start_ms, seq_start);
    let n = fleet.len().max(1);
    let wall_start = Instant::now();
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (group, stream)) in fleet.into_iter().enumerate() {
        let pace = Pace {
            events: if scenario.events == 0 {
                u64::MAX
            } else {
                scenario.events
            },
            speedup: scenario.speedup,
            wall_start,
            sim_start_ms: start_ms,
            deadline: scenario.duration.map(|d| wall_start + d),
            cancel: cancel.clone(),
            delay: scenario.ramp.mul_f64(i as f64 / n as f64),
            batch: scenario.batch,
            ack_timeout: scenario.ack_timeout,
            give_up: scenario.give_up,
            backoff: scenario.backoff,
            credentials: scenario.credentials.clone(),
            commands: scenario.commands,
        };
        let link = scenario.groups[group].link;
        let device = Device::new(stream, link, pace, Arc::clone(&live));
        let (tcp, mqtt) = (scenario.tcp, scenario.mqtt);
        tasks.spawn(async move { (i, device.run(tcp, mqtt).await) });
    }
    let mut devices: Vec<(usize, Outcome)> = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(done) => devices.push(done),
            Err(e) => tracing::error!(error = %e, "A device task failed."),
        }
    }
    devices.sort_by_key(|(i, _)| *i);
    Ok(RunReport {
        devices: devices.into_iter().map(|(_, o)| o).collect(),
        elapsed: started.elapsed(),
        seed: scenario.seed,
        peak_connected: Live::get(&live.peak_connected),
    })
}

/// Where the simulated clock starts when the scenario does not say: early enough that no event
/// is stamped after the wall clock when it is sent. (A consumer would see events from the
/// future, and Kafka 4 refuses records more than an hour ahead by default.)
/// - At real time or slower (`speedup` from 0 exclusive to 1): now.
/// - Faster, with an event count: now minus the longest span a device's events can cover,
///   `events` times its longest interval, doubled for the gaps vehicles leave (no fix in a
///   tunnel), so the run ends at or before now.
/// - Faster, bounded by `duration_s` only: now minus the simulated time that duration covers.
/// - As fast as possible with neither bound: now, and simulated time may run ahead; give
///   `start_ms` to place such a run.
pub fn default_start_ms(scenario: &Scenario, now_ms: u64) -> u64 {
    let fast = scenario.speedup <= 0.0 || scenario.speedup > 1.0;
    if !fast {
        return now_ms;
    }
    let r = &scenario.report;
    let longest = scenario
        .groups
        .iter()
        .map(|g| match g.model {
            crate::scenario::ModelKind::Truck | crate::scenario::ModelKind::Car => {
                r.max_interval_s.max(r.stopped_interval_s)
            }
            _ => g.interval.as_secs_f64(),
        })
        .fold(0.0_f64, f64::max);
    let span_s = if scenario.events > 0 {
        scenario.events as f64 * longest * 2.0
    } else {
        match scenario.duration {
            Some(d) if scenario.speedup > 0.0 => d.as_secs_f64() * scenario.speedup,
            _ => 0.0,
        }
    };
    now_ms.saturating_sub((span_s * 1000.0) as u64)
}

/// Runs `scenario` to its end without a progress bar or cancellation.
pub async fn run_to_end(scenario: &Scenario) -> Result<RunReport, crate::model::roads::RoadsError> {
    run(scenario, Arc::default(), CancellationToken::new()).await
}
