//! Counters, named in one place, and the end-of-run summary.
//!
//! Per topic: `received` (records that reached the spool's door), `spooled` (committed),
//! `duplicates` (retransmissions recognised and acknowledged again), `forwarded` (confirmed by
//! the sink). Dead letters are records on the dead-letter topic like any other.
//!
//! Refusals are counted per `(transport, reason)`: connections and publishes the gateway turned
//! away (authentication, ACL, TLS handshakes, over-limit connections, sequence regressions it
//! stored anyway). Reasons are short fixed labels (`auth_wrong_password`, `acl`, ...), never
//! device ids, so the set stays bounded.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::transport::Transport;
pub use tributary_spool::Discarded;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TopicCounters {
    pub received: u64,
    pub spooled: u64,
    pub duplicates: u64,
    pub forwarded: u64,
    /// Deleted unforwarded because the spool was full (policy `drop_oldest`).
    pub dropped: u64,
    /// Deleted unforwarded because they were older than `spool.max_age_ms`.
    pub expired: u64,
    /// Moved to quarantine: the destination refused them for good.
    pub quarantined: u64,
}

/// A transport label: `tcp` or `mqtt`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    pub transport: &'static str,
}

/// Live instruments for `/metrics` (see [`crate::observe::metrics`] for names and meanings). Clones
/// share the same values.
#[derive(Debug, Clone)]
pub struct Instruments {
    pub received: Family<TransportLabel, Counter>,
    pub acked: Family<TransportLabel, Counter>,
    pub connections: Family<TransportLabel, Gauge>,
    pub commit_seconds: Histogram,
    pub sync_seconds: Histogram,
    pub commit_events: Histogram,
    pub delivery_seconds: Histogram,
    pub event_lag_seconds: Histogram,
    pub kafka_inflight: Gauge,
    pub kafka_inflight_bytes: Gauge,
    pub forwarder_restarts: Counter,
    pub timestamps_clamped: Counter,
    pub dead_letters: Family<TransportLabel, Counter>,
    pub forward_errors: Family<ForwardErrorLabel, Counter>,
    pub rule_emitted: Family<RuleLabel, Counter>,
    pub rule_late: Family<RuleLabel, Counter>,
    pub commands: Family<CommandLabel, Counter>,
    pub modbus_polls: Family<ModbusLabel, Counter>,
}

/// A Modbus poll's outcome, by the configured device it polled (a bounded set: the config's).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModbusLabel {
    pub device: String,
    pub outcome: &'static str,
}

/// What became of a command from Kafka (a fixed set of outcomes).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabel {
    pub outcome: &'static str,
}

/// A configured rule, by name (a bounded set: the config's).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub rule: String,
}

/// A delivery failure: the topic and the kind of error (librdkafka's error code name, or `io`
/// for the file sink), both bounded sets.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwardErrorLabel {
    pub topic: String,
    pub error: String,
}

impl Default for Instruments {
    fn default() -> Self {
        Self {
            received: Family::default(),
            acked: Family::default(),
            connections: Family::default(),
            // 0.1 ms to 6.6 s: a commit's SQLite work takes tens of microseconds, a sync of the
            // WAL a fraction of a millisecond on an SSD and milliseconds on an SD card.
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 17)),
            sync_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 17)),
            commit_events: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            // 5 ms to about 12 days: deliveries after long outages land in a bucket too.
            delivery_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 28)),
            event_lag_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 28)),
            kafka_inflight: Gauge::default(),
            kafka_inflight_bytes: Gauge::default(),
            forwarder_restarts: Counter::default(),
            timestamps_clamped: Counter::default(),
            dead_letters: Family::default(),
            forward_errors: Family::default(),
            rule_emitted: Family::default(),
            rule_late: Family::default(),
            commands: Family::default(),
            modbus_polls: Family::default(),
        }
    }
}

/// The forwarder's state, for `/readyz?verbose` and `/api/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ForwardState {
    /// When the last delivery was confirmed (ms since the Unix epoch).
    pub last_delivery_ms: Option<i64>,
    /// The last delivery or forwarder failure, and since when failures have been going on
    /// without a delivery in between.
    pub last_error: Option<String>,
    pub failing_since_ms: Option<i64>,
    /// The forwarder task is running (false between a failure and its restart).
    pub running: bool,
}

/// Shared counters; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    topics: Arc<Mutex<BTreeMap<String, TopicCounters>>>,
    refusals: Arc<Mutex<BTreeMap<(&'static str, &'static str), u64>>>,
    pub instruments: Instruments,
    /// Per-device activity, rates and the last refusals, for the status page.
    pub activity: crate::observe::activity::Activity,
    forward: Arc<Mutex<ForwardState>>,
    /// The last append was refused for lack of room (cleared by the next stored one).
    spool_full: Arc<AtomicBool>,
}

impl Stats {
    fn with(&self, topic: &str, f: impl FnOnce(&mut TopicCounters)) {
        // A poisoned lock only means another thread panicked mid-update; counters stay usable.
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        update(&mut topics, topic, f);
    }

    /// Counts the spool's verdict on records bound for `topics` (same order): `true` for a
    /// record stored, `false` for a duplicate the spool already held.
    pub fn record_appended<'a>(
        &self,
        topics: impl IntoIterator<Item = &'a str>,
        stored: impl IntoIterator<Item = bool>,
    ) {
        // One lock for the whole batch, not one per record.
        let mut all = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, stored) in topics.into_iter().zip(stored) {
            update(&mut all, topic, |c| {
                c.received += 1;
                if stored {
                    c.spooled += 1;
                } else {
                    c.duplicates += 1;
                }
            });
        }
    }

    /// Counts records that reached the spool but were not stored (the spool failed).
    pub fn record_refused(&self, topic: &str, n: u64) {
        self.with(topic, |c| c.received += n);
    }

    pub fn record_forwarded(&self, topic: &str, n: u64) {
        self.with(topic, |c| c.forwarded += n);
    }

    /// Counts rows the spool deleted unforwarded, by why.
    pub fn record_discarded(&self, topic: &str, why: Discarded, n: u64) {
        self.with(topic, |c| match why {
            Discarded::Expired => c.expired += n,
            Discarded::Quarantined => c.quarantined += n,
            Discarded::Full => c.dropped += n,
        });
    }

    /// Events that arrived on `transport`, and how many of them were acknowledged.
    pub fn record_transport(&self, transport: Transport, received: u64, acked: u64) {
        let label = TransportLabel {
            transport: transport.as_str(),
        };
        self.instruments
            .received
            .get_or_create(&label)
            .inc_by(received);
        self.instruments.acked.get_or_create(&label).inc_by(acked);
    }

    /// A connection opened on `transport`; it counts until the guard is dropped.
    pub fn connection(&self, transport: Transport) -> ConnectionGuard {
        let gauge = self
            .instruments
            .connections
            .get_or_create(&TransportLabel {
                transport: transport.as_str(),
            })
            .clone();
        gauge.inc();
        ConnectionGuard(gauge)
    }

    /// Whether the spool refused its last append for lack of room.
    pub fn spool_full(&self) -> bool {
        self.spool_full.load(Ordering::Relaxed)
    }

    pub fn set_spool_full(&self, full: bool) {
        self.spool_full.store(full, Ordering::Relaxed);
    }

    /// A confirmed delivery: clears a failure streak.
    pub fn delivered(&self, now_ms: i64) {
        let mut f = self.forward.lock().unwrap_or_else(|e| e.into_inner());
        f.last_delivery_ms = Some(now_ms);
        f.failing_since_ms = None;
    }

    /// A failed delivery or forwarder failure.
    pub fn forward_failed(&self, error: String, now_ms: i64) {
        let mut f = self.forward.lock().unwrap_or_else(|e| e.into_inner());
        f.last_error = Some(error);
        f.failing_since_ms.get_or_insert(now_ms);
    }

    /// A failure that says less than one already being shown (every broker unreachable right
    /// after the credentials were refused; a stall nobody explained): kept only when no failure
    /// is being shown, so the operator keeps reading the cause.
    pub fn forward_failed_vaguely(&self, error: String, now_ms: i64) {
        let mut f = self.forward.lock().unwrap_or_else(|e| e.into_inner());
        if f.failing_since_ms.is_none() {
            f.last_error = Some(error);
        }
        f.failing_since_ms.get_or_insert(now_ms);
    }

    pub fn set_forwarder_running(&self, running: bool) {
        self.forward
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .running = running;
    }

    pub fn forward_state(&self) -> ForwardState {
        self.forward
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Refusals by `(transport, reason)`.
    pub fn refusal_counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        let refusals = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        refusals.iter().map(|(&(t, r), &n)| (t, r, n)).collect()
    }

    /// Counts one refusal on `transport` (`tcp`, `mqtt`, ...) for `reason`, and keeps it among
    /// the last refusals with the device and the peer, where known.
    /// Counts a command's step (`queued`, `delivered`, `answered`, `expired`, `refused_*`,
    /// `skipped`, `duplicate`, `answer_unmatched`).
    pub fn count_command(&self, outcome: &'static str) {
        self.instruments
            .commands
            .get_or_create(&CommandLabel { outcome })
            .inc();
    }

    pub fn record_refusal(
        &self,
        transport: Transport,
        reason: &'static str,
        device: Option<&str>,
        peer: Option<std::net::SocketAddr>,
    ) {
        {
            let mut refusals = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
            *refusals.entry((transport.as_str(), reason)).or_default() += 1;
        }
        self.activity.refused(
            transport,
            reason,
            device,
            peer,
            tributary_common::clock::now_ms(),
        );
    }

    /// Running totals of received, acknowledged, forwarded and refused, for the rates.
    /// Every transport devices' events arrive on counts (a tracker's or a tailed file's too),
    /// and no label series is made for a transport that never carried one.
    pub fn totals(&self) -> [u64; 4] {
        let per_transport =
            |family: &prometheus_client::metrics::family::Family<TransportLabel, Counter>| {
                Transport::DEVICES
                    .into_iter()
                    .filter_map(|t| {
                        let label = TransportLabel {
                            transport: t.as_str(),
                        };
                        family.get(&label).map(|c| c.get())
                    })
                    .sum::<u64>()
            };
        let forwarded = self
            .topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|c| c.forwarded)
            .sum();
        let refused = self
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum();
        [
            per_transport(&self.instruments.received),
            per_transport(&self.instruments.acked),
            forwarded,
            refused,
        ]
    }

    pub fn snapshot(&self) -> Summary {
        Summary {
            refusals: self
                .refusals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(&(t, r), &n)| (format!("{t}/{r}"), n))
                .collect(),
            topics: self
                .topics
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// Counters at one moment, printable as a table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub topics: BTreeMap<String, TopicCounters>,
    /// `transport/reason` to count.
    pub refusals: BTreeMap<String, u64>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .topics
            .keys()
            .map(String::len)
            .chain(["topic".len(), "total".len()])
            .max()
            .unwrap_or(5);
        writeln!(
            f,
            "{:<width$}  {:>10}  {:>10}  {:>10}  {:>10}  {:>8}  {:>8}  {:>11}",
            "topic",
            "received",
            "spooled",
            "duplicates",
            "forwarded",
            "dropped",
            "expired",
            "quarantined"
        )?;
        let mut total = TopicCounters::default();
        for (topic, c) in &self.topics {
            writeln!(
                f,
                "{:<width$}  {:>10}  {:>10}  {:>10}  {:>10}  {:>8}  {:>8}  {:>11}",
                topic,
                c.received,
                c.spooled,
                c.duplicates,
                c.forwarded,
                c.dropped,
                c.expired,
                c.quarantined
            )?;
            total.quarantined += c.quarantined;
            total.dropped += c.dropped;
            total.expired += c.expired;
            total.received += c.received;
            total.spooled += c.spooled;
            total.duplicates += c.duplicates;
            total.forwarded += c.forwarded;
        }
        write!(
            f,
            "{:<width$}  {:>10}  {:>10}  {:>10}  {:>10}  {:>8}  {:>8}  {:>11}",
            "total",
            total.received,
            total.spooled,
            total.duplicates,
            total.forwarded,
            total.dropped,
            total.expired,
            total.quarantined
        )?;
        if !self.refusals.is_empty() {
            write!(f, "\nrefused:")?;
            for (what, n) in &self.refusals {
                write!(f, "\n  {what:<40} {n:>10}")?;
            }
        }
        Ok(())
    }
}

/// Updates `topic`'s counters, creating them at first use (the topic is copied only then).
fn update(
    topics: &mut BTreeMap<String, TopicCounters>,
    topic: &str,
    f: impl FnOnce(&mut TopicCounters),
) {
    match topics.get_mut(topic) {
        Some(c) => f(c),
        None => f(topics.entry(topic.to_owned()).or_default()),
    }
}

/// Keeps a connection counted while it lives.
#[derive(Debug)]
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The spool tells the gateway's counters what it did ([`tributary_spool::observe`]).
impl tributary_spool::Observer for Stats {
    fn committed(&self, seconds: f64, events: usize) {
        self.instruments.commit_seconds.observe(seconds);
        self.instruments.commit_events.observe(events as f64);
    }

    fn synced(&self, seconds: f64) {
        self.instruments.sync_seconds.observe(seconds);
    }

    fn discarded(&self, topic: &str, why: Discarded, n: u64) {
        self.record_discarded(topic, why, n);
    }

    fn anomaly(&self, device_id: &str, anomaly: tributary_spool::Anomaly) {
        self.record_refusal(Transport::Spool, anomaly.reason(), Some(device_id), None);
    }

    fn hook_output(&self, rule: &str, emitted: u64, late: u64) {
        let label = RuleLabel {
            rule: rule.to_owned(),
        };
        self.instruments
            .rule_emitted
            .get_or_create(&label)
            .inc_by(emitted);
        self.instruments
            .rule_late
            .get_or_create(&label)
            .inc_by(late);
    }

    fn full(&self, full: bool) {
        self.set_spool_full(full);
    }
}
