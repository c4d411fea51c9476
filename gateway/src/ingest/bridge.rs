//! The MQTT bridge: Tributary as a subscriber of brokers a site already runs.
//!
//! Each `[[bridges]]` entry connects to one upstream broker with a persistent session (clean
//! session off, a fixed client id), subscribes to its topic filters, and decodes what arrives
//! the way the MQTT listener does: `devices/...` as Tributary's own format, other topics through
//! the mappings ([`crate::route::mapping`]). The upstream is trusted as the operator configured it: no
//! per-device identity applies to what it delivers.
//!
//! # Invariants
//! - **Acknowledged upstream only once committed.** Acknowledgements are manual: a QoS 1
//!   PUBACK (QoS 2 PUBREC) goes to the upstream broker only after the spool committed the
//!   message, so a gateway crash before the commit makes the broker deliver it again. A spool
//!   that refuses keeps the messages unacknowledged and the commit is retried.
//! - **Not stored twice.** A crash between the commit and the PUBACK makes the broker deliver
//!   the message again, with DUP set and its packet id. With each QoS 1 and 2 message the spool
//!   commits `bridge:{name}:{packet id}` = a hash of topic and payload; a DUP delivery whose
//!   packet id holds its own hash is acknowledged and not stored again.
//! - Connection loss is logged once per outage, with how long it lasted when it ends; the
//!   client reconnects with backoff (1 s doubling to 60 s), and the broker then delivers what
//!   queued for the session meanwhile. `tributary_connections{transport="bridge"}` counts the
//!   connected bridges, and the received and acknowledged counters their messages.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};

pub mod config;

pub use config::{options, BridgeConfig, BridgeError, RawBridge};

use super::{Inbound, Ingest};
use crate::route::DeadLetter;
use crate::shutdown::Scope;
use tributary_spool::SourceState;

/// Messages committed together, at most.
const MAX_BATCH: usize = 500;

/// Runs the bridge until `scope.stop`.
pub async fn serve(config: BridgeConfig, options: MqttOptions, ingest: Ingest, scope: Scope) {
    let (client, eventloop) = AsyncClient::new(options, 2 * MAX_BATCH);
    let mut bridge = Bridge {
        config,
        ingest,
        client,
        eventloop,
        down_since: None,
        backoff: Duration::from_secs(1),
        connection: None,
        connected_before: false,
    };
    tokio::select! {
        _ = scope.stop.cancelled() => {}
        _ = bridge.run() => {}
    }
    let _ = bridge.client.try_disconnect();
}

struct Bridge {
    config: BridgeConfig,
    ingest: Ingest,
    client: AsyncClient,
    eventloop: EventLoop,
    down_since: Option<Instant>,
    backoff: Duration,
    /// Counts the upstream connection in `tributary_connections{transport="bridge"}`.
    connection: Option<crate::observe::stats::ConnectionGuard>,
    /// Whether the bridge was connected before in this run: a reconnect should find its
    /// session on the broker.
    connected_before: bool,
}

impl Bridge {
    async fn run(&mut self) {
        loop {
            match self.eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => self.connected(ack.session_present),
                Ok(Event::Incoming(Packet::Publish(first))) => {
                    let mut batch = vec![first];
                    // Whatever else has arrived already joins the same commit.
                    while batch.len() < MAX_BATCH {
                        match tokio::time::timeout(Duration::from_millis(1), self.eventloop.poll())
                            .await
                        {
                            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => batch.push(p),
                            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                                self.connected(ack.session_present)
                            }
                            Ok(Ok(_)) => {}
                            Ok(Err(error)) => {
                                self.lost(&error.to_string());
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit(batch).await;
                }
                Ok(_) => {}
                Err(error) => {
                    self.lost(&error.to_string());
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    fn connected(&mut self, session_present: bool) {
        let down_for = self.down_since.take().map(|t| t.elapsed());
        tracing::info!(
            message = "Bridge connected to its upstream broker.",
            bridge = %self.config.name,
            host = %self.config.host,
            session_present,
            down_for_ms = down_for.map(|d| d.as_millis() as u64),
        );
        if self.connected_before && !session_present {
            // The broker kept no session for the bridge (restarted without persistence, or it
            // expired): what was published meanwhile for it is gone, and the gateway cannot
            // know how much. Only the site broker's configuration prevents it.
            tracing::warn!(
                message = "The upstream broker did not resume the bridge's session: messages published while the bridge was away may be lost. Give the broker persistence and a max_queued_messages that holds an outage's messages (README, \"What the site broker must keep\").",
                bridge = %self.config.name,
                host = %self.config.host,
                down_for_ms = down_for.map(|d| d.as_millis() as u64),
            );
        }
        self.connected_before = true;
        self.backoff = Duration::from_secs(1);
        self.connection = Some(
            self.ingest
                .stats
                .connection(crate::transport::Transport::Bridge),
        );
        let topics = self
            .config
            .topics
            .iter()
            .map(|(filter, qos)| rumqttc::SubscribeFilter::new(filter.clone(), qos_of(*qos)));
        if let Err(error) = self.client.try_subscribe_many(topics) {
            tracing::warn!(message = "Bridge could not subscribe.", bridge = %self.config.name, %error);
        }
    }

    fn lost(&mut self, error: &str) {
        self.connection = None;
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            tracing::warn!(
                message = "Bridge lost its upstream broker; reconnecting with backoff.",
                bridge = %self.config.name,
                host = %self.config.host,
                port = self.config.port,
                %error,
            );
        }
    }

    /// Stores a batch, retrying while the spool refuses, then acknowledges it upstream.
    async fn commit(&mut self, batch: Vec<Publish>) {
        let mut wait = Duration::from_millis(100);
        let duplicates = loop {
            // Decoded for each attempt: a refused attempt stored nothing, and the batch stays
            // the one copy of the messages (no clones on the way that succeeds).
            let (events, dead, sources, duplicates) =
                decode(&self.config, &self.ingest, &batch).await;
            let attempt = self
                .ingest
                .submit_from(
                    crate::transport::Transport::Bridge,
                    events,
                    Vec::new(),
                    dead,
                    sources,
                )
                .await;
            match attempt {
                Ok(_) => break duplicates,
                Err(error) => {
                    if let Some(suppressed) = tributary_common::ratelog::allow("bridge_not_stored")
                    {
                        tracing::warn!(message = "Bridged messages not stored; retrying before acknowledging them upstream.", bridge = %self.config.name, %error, suppressed);
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        };
        if duplicates > 0 {
            tracing::info!(message = "Redelivered messages already stored; acknowledged again.", bridge = %self.config.name, duplicates);
        }
        for p in &batch {
            if let Err(error) = self.client.try_ack(p) {
                tracing::debug!(message = "Bridge acknowledgement not queued; the broker will redeliver.", bridge = %self.config.name, %error);
            }
        }
    }
}

/// The batch's events, dead letters and packet-id records, and how many were redeliveries of
/// messages already stored.
async fn decode(
    config: &BridgeConfig,
    ingest: &Ingest,
    batch: &[Publish],
) -> (Vec<Inbound>, Vec<DeadLetter>, Vec<SourceState>, usize) {
    let (mut events, mut dead, mut sources, mut duplicates) =
        (Vec::new(), Vec::new(), Vec::new(), 0);
    for p in batch {
        let hash = fingerprint(&p.topic, &p.payload);
        let key = format!("bridge:{}:{}:", config.name, p.pkid);
        if p.dup && p.qos != QoS::AtMostOnce && stored(ingest, &key, hash).await {
            duplicates += 1;
            continue;
        }
        if p.qos != QoS::AtMostOnce {
            sources.push(SourceState {
                source: key,
                state: hash.to_be_bytes().to_vec(),
            });
        }
        if p.payload.len() > config.max_payload_bytes {
            dead.push(DeadLetter::new(
                "bridge",
                p.topic.clone(),
                None,
                format!(
                    "payload too large: {} bytes, limit {} (bridges.max_payload_bytes)",
                    p.payload.len(),
                    config.max_payload_bytes
                ),
                &p.payload[..p.payload.len().min(crate::route::DEAD_LETTER_BYTES)],
            ));
            continue;
        }
        let sparkplug = ingest.sparkplug.as_deref();
        match super::mqtt::decode_publish(&ingest.mappings, sparkplug, &p.topic, &p.payload, None) {
            Ok(list) => events.extend(list.into_iter().map(|d| Inbound {
                event: d.event,
                session: d.session,
                mqtt_topic: Some(p.topic.clone()),
                headers: d.headers,
                // What a site broker relays keeps de-duplication state apart from what the
                // device sends the gateway itself.
                writer: Some(format!("bridge:{}", config.name)),
            })),
            Err(letter) => dead.push(*letter),
        }
    }
    (events, dead, sources, duplicates)
}

/// Whether the spool holds the message with this packet-id key and hash.
async fn stored(ingest: &Ingest, key: &str, hash: u64) -> bool {
    match ingest.spool.sources(key).await {
        Ok(states) => states
            .iter()
            .any(|s| s.source == key && s.state == hash.to_be_bytes()),
        Err(_) => false,
    }
}

fn qos_of(qos: u8) -> QoS {
    match qos {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

/// FNV-1a over topic and payload.
fn fingerprint(topic: &str, payload: &[u8]) -> u64 {
    crate::hash::fnv1a(topic.as_bytes().iter().chain(&[0u8]).chain(payload))
}
