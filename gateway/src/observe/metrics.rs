//! Metric names and meanings, in one place, rendered in the Prometheus text format.
//!
//! `prometheus-client` with an explicit registry and fixed-bucket histograms, so memory stays
//! bounded on an edge box nobody scrapes. Names follow Prometheus conventions (and Vector's and
//! Fluent Bit's where they fit); counters end in `_total`. No label holds a device id a device
//! chose: topics, transports and reasons are bounded sets, and the one per-device metric,
//! Modbus polls, names the devices the config lists.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `tributary_events_received_total` | counter | transport | events (and undecodable inputs) that reached a device listener's spool call |
//! | `tributary_events_acked_total` | counter | transport | events acknowledged to devices (committed, or recognised as retransmissions) |
//! | `tributary_events_refused_total` | counter | transport, reason | connections and inputs turned away (`auth_*`, `tls_*`, `acl`, `over_limit`, ...) |
//! | `tributary_connections` | gauge | transport | open device connections |
//! | `tributary_records_spooled_total` | counter | topic | records committed to the spool (dead letters on their topic) |
//! | `tributary_records_duplicate_total` | counter | topic | retransmissions acknowledged again, not stored |
//! | `tributary_forwarded_events_total` | counter | topic | records the sink confirmed |
//! | `tributary_events_discarded_total` | counter | topic, reason | rows the spool took out of the queue unforwarded (`drop_oldest`, `expired`, `quarantined`) |
//! | `tributary_spool_rows`, `tributary_spool_bytes`, `tributary_spool_max_bytes` | gauge | | queued rows; their keys plus values; the bound |
//! | `tributary_spool_oldest_event_age_seconds` | gauge | | how long the oldest unforwarded row has waited (0 when empty) |
//! | `tributary_disk_free_bytes` | gauge | | free space on the spool's filesystem |
//! | `tributary_spool_commit_duration_seconds` | histogram | | one group commit's transaction (its WAL frames written, not yet synced) |
//! | `tributary_spool_sync_duration_seconds` | histogram | | one fdatasync of the WAL, which makes the commits before it durable |
//! | `tributary_spool_commit_events` | histogram | | appends and acks per commit |
//! | `tributary_delivery_latency_seconds` | histogram | | spool commit to the sink's confirmation |
//! | `tributary_event_lag_seconds` | histogram | | event time (device clock) to the sink's confirmation |
//! | `tributary_kafka_inflight_messages`, `tributary_kafka_inflight_bytes` | gauge | | records (and their bytes) handed to librdkafka, not yet confirmed |
//! | `tributary_dead_letters_total` | counter | transport | inputs kept on the dead-letter topic (undecodable, invalid, denied) |
//! | `tributary_rule_emitted_total` | counter | rule | derived events the rules emitted |
//! | `tributary_rule_late_total` | counter | rule | events older than what the rule had processed for that device: left out of its output |
//! | `tributary_commands_total` | counter | outcome | commands from Kafka by step: `queued`, `delivered`, `answered`, `expired`, `refused_*` (device, invalid, too_large, queue_full), `skipped` (another gateway's), `duplicate`, `answer_unmatched` |
//! | `tributary_modbus_polls_total` | counter | device, outcome | Modbus polls by configured device: `ok`, or the gap's reason: `timeout`, `exception`, `disconnected` (no connection: waiting to reconnect), `connect_failed`, `protocol`, `spool` |
//! | `tributary_forward_errors_total` | counter | topic, error | failed deliveries; `error` is librdkafka's error code name, or `io`; exactly once adds `RecordRefused`, `Fenced`, `Fatal` (topic `""`) |
//! | `tributary_forwarder_restarts_total` | counter | | times the supervised forwarder failed and was restarted |
//! | `tributary_forwarder_up` | gauge | | 1 while the forwarder runs |
//! | `tributary_timestamps_clamped_total` | counter | | Kafka timestamps clamped: the event time was more than `time.max_future_ms` ahead |
//! | `tributary_build_info` | info | version | |

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::observe::stats::Stats;
use tributary_spool::Gauges;

/// The registry and the gauges set at each scrape.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    spool_rows: Gauge,
    spool_bytes: Gauge,
    spool_max_bytes: Gauge,
    oldest_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    disk_free: Gauge,
}

impl Metrics {
    pub fn new(stats: &Stats) -> Self {
        let mut r = Registry::with_prefix("tributary");
        let i = &stats.instruments;
        r.register(
            "events_received",
            "Events that reached a device listener",
            i.received.clone(),
        );
        r.register(
            "events_acked",
            "Events acknowledged to devices",
            i.acked.clone(),
        );
        r.register(
            "connections",
            "Open device connections",
            i.connections.clone(),
        );
        r.register(
            "spool_commit_duration_seconds",
            "One group commit's transaction, before its sync",
            i.commit_seconds.clone(),
        );
        r.register(
            "spool_sync_duration_seconds",
            "One fdatasync of the spool's WAL, making the commits before it durable",
            i.sync_seconds.clone(),
        );
        r.register(
            "spool_commit_events",
            "Appends and acks per group commit",
            i.commit_events.clone(),
        );
        r.register(
            "delivery_latency_seconds",
            "Spool commit to the sink's confirmation",
            i.delivery_seconds.clone(),
        );
        r.register(
            "event_lag_seconds",
            "Event time (device clock) to the sink's confirmation",
            i.event_lag_seconds.clone(),
        );
        r.register(
            "kafka_inflight_messages",
            "Records handed to librdkafka and not yet confirmed",
            i.kafka_inflight.clone(),
        );
        r.register(
            "kafka_inflight_bytes",
            "Keys, values and headers handed to librdkafka and not yet confirmed",
            i.kafka_inflight_bytes.clone(),
        );
        r.register(
            "dead_letters",
            "Inputs refused as undecodable or invalid and kept on the dead-letter topic",
            i.dead_letters.clone(),
        );
        r.register(
            "forward_errors",
            "Failed deliveries, by topic and error",
            i.forward_errors.clone(),
        );
        r.register(
            "commands",
            "Commands from Kafka by what became of them",
            i.commands.clone(),
        );
        r.register(
            "modbus_polls",
            "Modbus polls by configured device and outcome",
            i.modbus_polls.clone(),
        );
        r.register(
            "rule_emitted",
            "Derived events the rules emitted, by rule",
            i.rule_emitted.clone(),
        );
        r.register(
            "rule_late",
            "Events a rule found older than what it had processed for that device, by rule",
            i.rule_late.clone(),
        );
        r.register(
            "forwarder_restarts",
            "Times the forwarder failed and was restarted",
            i.forwarder_restarts.clone(),
        );
        r.register(
            "timestamps_clamped",
            "Records whose Kafka timestamp was clamped to the receive time plus time.max_future_ms",
            i.timestamps_clamped.clone(),
        );
        r.register(
            "build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let m = Self {
            spool_rows: Gauge::default(),
            spool_bytes: Gauge::default(),
            spool_max_bytes: Gauge::default(),
            oldest_age: Gauge::default(),
            disk_free: Gauge::default(),
            registry: Registry::default(),
        };
        r.register(
            "spool_rows",
            "Rows queued in the spool",
            m.spool_rows.clone(),
        );
        r.register(
            "spool_bytes",
            "Keys plus values of the queued rows",
            m.spool_bytes.clone(),
        );
        r.register(
            "spool_max_bytes",
            "The spool's bound (spool.max_bytes)",
            m.spool_max_bytes.clone(),
        );
        r.register(
            "spool_oldest_event_age_seconds",
            "How long the oldest unforwarded row has waited",
            m.oldest_age.clone(),
        );
        r.register(
            "disk_free_bytes",
            "Free space on the spool's filesystem",
            m.disk_free.clone(),
        );
        r.register_collector(Box::new(Counts(stats.clone())));
        Self { registry: r, ..m }
    }

    /// The text exposition, with the spool's gauges as of `spool` (read by the caller).
    pub fn render(&self, spool: Option<Gauges>, now_ms: i64) -> String {
        if let Some(g) = spool {
            self.spool_rows.set(clamp(g.rows));
            self.spool_bytes.set(clamp(g.bytes));
            self.spool_max_bytes.set(clamp(g.max_bytes));
            self.disk_free.set(clamp(g.disk_free_bytes));
            let age = g
                .oldest_received_ms
                .map_or(0.0, |t| now_ms.saturating_sub(t).max(0) as f64 / 1000.0);
            self.oldest_age.set(age);
        }
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a metric.
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(message = "Encoding metrics failed.", %error);
        }
        out
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Counters kept in [`Stats`] as plain numbers, encoded at each scrape.
#[derive(Debug)]
struct Counts(Stats);

impl Collector for Counts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let summary = self.0.snapshot();
        let per_topic = |encoder: &mut DescriptorEncoder,
                         name: &str,
                         help: &str,
                         value: &dyn Fn(&crate::observe::stats::TopicCounters) -> u64|
         -> Result<(), std::fmt::Error> {
            let counter = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            for (topic, c) in &summary.topics {
                let labels = [("topic", topic.as_str())];
                ConstCounter::new(value(c)).encode(family.encode_family(&labels)?)?;
            }
            Ok(())
        };
        per_topic(
            &mut encoder,
            "records_spooled",
            "Records committed to the spool, per topic (dead letters on their topic)",
            &|c| c.spooled,
        )?;
        per_topic(
            &mut encoder,
            "records_duplicate",
            "Retransmissions acknowledged again and not stored, per topic",
            &|c| c.duplicates,
        )?;
        per_topic(
            &mut encoder,
            "forwarded_events",
            "Records the sink confirmed, per topic",
            &|c| c.forwarded,
        )?;
        {
            let counter = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(
                "events_discarded",
                "Rows the spool deleted unforwarded, by topic and reason",
                None,
                counter.metric_type(),
            )?;
            for (topic, c) in &summary.topics {
                for (reason, n) in [
                    ("drop_oldest", c.dropped),
                    ("expired", c.expired),
                    ("quarantined", c.quarantined),
                ] {
                    let labels = [("topic", topic.as_str()), ("reason", reason)];
                    ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let counter = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(
                "events_refused",
                "Connections and inputs turned away, by transport and reason",
                None,
                counter.metric_type(),
            )?;
            for (transport, reason, n) in self.0.refusal_counts() {
                let labels = [("transport", transport), ("reason", reason)];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        let up = ConstGauge::new(i64::from(self.0.forward_state().running));
        up.encode(encoder.encode_descriptor(
            "forwarder_up",
            "1 while the forwarder runs",
            None,
            up.metric_type(),
        )?)?;
        Ok(())
    }
}
