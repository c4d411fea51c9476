//! Why records in flight are not confirmed.
//!
//! Some cluster states stop deliveries without any error reaching the forwarder: librdkafka
//! retries them itself, and with `message.timeout.ms=0` it retries for ever. The commonest is a
//! partition with fewer in-sync replicas than `min.insync.replicas` (brokers down), where every
//! `acks=all` write is refused with `NOT_ENOUGH_REPLICAS` and retried; another is a partition
//! with no leader. When records have been in flight for [`STALL_AFTER`] with no delivery report,
//! the forwarder asks the cluster's metadata (and the topics' `min.insync.replicas`) about the
//! topics of the records in flight, and says what it found: in the log, in `/readyz?verbose` and
//! on the status page (through [`crate::observe::stats::Stats::forward_failed`]), and in
//! `tributary_forward_errors_total{error="NotEnoughReplicas"|"NoLeader"|"Stalled"}`.
//!
//! The records stay where they are: this only explains, it never changes what is sent.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

/// How long records may be in flight without a delivery report before the cluster is asked why.
pub const STALL_AFTER: Duration = Duration::from_secs(10);

/// What the metadata says about one topic's partitions.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TopicHealth {
    /// Partitions with no leader.
    pub leaderless: Vec<i32>,
    /// Partitions with fewer in-sync replicas than `min.insync.replicas`: (partition, in sync,
    /// replicas).
    pub below_min_isr: Vec<(i32, usize, usize)>,
}

/// Reads the metadata of `topics`; `None` when no broker answered in time.
pub async fn diagnose(
    admin: Arc<AdminClient<DefaultClientContext>>,
    topics: BTreeSet<String>,
) -> Option<Vec<(String, TopicHealth)>> {
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
    let specifiers: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    // A principal without DescribeConfigs gets no answer here: then 1 is assumed, and only
    // leaderless partitions are named.
    let min_isr: Vec<usize> = match admin.describe_configs(&specifiers, &options).await {
        Ok(results) => results
            .into_iter()
            .map(|r| {
                r.ok()
                    .and_then(|c| c.get("min.insync.replicas")?.value.clone())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1)
            })
            .collect(),
        Err(_) => vec![1; topics.len()],
    };
    let metadata = tokio::task::spawn_blocking(move || {
        topics
            .iter()
            .zip(min_isr)
            .map(|(topic, min_isr)| {
                let md = admin
                    .inner()
                    .fetch_metadata(Some(topic), Duration::from_secs(5))
                    .ok()?;
                let mut health = TopicHealth::default();
                for t in md.topics().iter().filter(|t| t.name() == topic) {
                    for p in t.partitions() {
                        if p.leader() < 0 {
                            health.leaderless.push(p.id());
                        } else if p.isr().len() < min_isr {
                            health
                                .below_min_isr
                                .push((p.id(), p.isr().len(), p.replicas().len()));
                        }
                    }
                }
                Some((topic.clone(), health))
            })
            .collect::<Option<Vec<_>>>()
    })
    .await
    .ok()??;
    Some(metadata)
}

/// The operator's sentence for a stall, and the metric's kind.
pub fn describe(
    found: Option<&[(String, TopicHealth)]>,
    in_flight: usize,
    for_s: u64,
) -> (String, &'static str) {
    let head = format!("{in_flight} records in flight, none confirmed for {for_s} s");
    let Some(found) = found else {
        return (
            format!("{head}: no broker answered a metadata request"),
            "Stalled",
        );
    };
    let mut parts = Vec::new();
    let mut kind = "Stalled";
    for (topic, h) in found {
        if !h.below_min_isr.is_empty() {
            kind = "NotEnoughReplicas";
            let list: Vec<String> = h
                .below_min_isr
                .iter()
                .map(|(p, isr, n)| format!("{p} ({isr} of {n} replicas in sync)"))
                .collect();
            parts.push(format!(
                "topic {topic:?} partitions {} are below min.insync.replicas, so Kafka refuses \
                 acks=all writes until brokers return",
                list.join(", ")
            ));
        }
        if !h.leaderless.is_empty() {
            if kind == "Stalled" {
                kind = "NoLeader";
            }
            parts.push(format!(
                "topic {topic:?} partitions {:?} have no leader",
                h.leaderless
            ));
        }
    }
    if parts.is_empty() {
        return (
            format!("{head}: every partition has a leader and enough replicas in sync"),
            "Stalled",
        );
    }
    (
        format!(
            "{head}: {}; records wait in the spool meanwhile",
            parts.join("; ")
        ),
        kind,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_below_min_isr_is_named_with_its_replicas() {
        let found = vec![(
            "readings".to_owned(),
            TopicHealth {
                leaderless: vec![],
                below_min_isr: vec![(0, 1, 3), (2, 1, 3)],
            },
        )];
        let (text, kind) = describe(Some(&found), 40, 12);
        assert_eq!(kind, "NotEnoughReplicas");
        assert!(
            text.contains("40 records in flight, none confirmed for 12 s"),
            "{text}"
        );
        assert!(
            text.contains("\"readings\" partitions 0 (1 of 3 replicas in sync), 2 (1 of 3"),
            "{text}"
        );
        assert!(text.contains("min.insync.replicas"), "{text}");
    }

    #[test]
    fn leaderless_partitions_and_silent_clusters_are_said() {
        let found = vec![(
            "t".to_owned(),
            TopicHealth {
                leaderless: vec![1],
                below_min_isr: vec![],
            },
        )];
        assert_eq!(describe(Some(&found), 1, 10).1, "NoLeader");
        let (text, kind) = describe(None, 1, 10);
        assert_eq!(kind, "Stalled");
        assert!(text.contains("no broker answered"), "{text}");
    }
}
