//! MQTT ingest: an embedded rumqttd broker, read through its in-process link.
//!
//! The broker runs on its own threads for the life of the process (rumqttd has no shutdown
//! API). The gateway holds a local link subscribed to `devices/+/+` and `devices/+/+/pc`:
//!
//! - `devices/{device_id}/readings` and `devices/{device_id}/position`: a JSON event
//!   ([`tributary_protocol::json`]) or a JSON array of them. `device_id` and `kind` may be left
//!   out of the payload; the topic supplies them, and a payload that contradicts its topic is
//!   refused.
//! - the same topics with `/pc` appended: one postcard-encoded [`Event`].
//!
//! Anything else under `devices/` that cannot be decoded or validated is a dead letter: logged
//! with device and reason, counted, and stored for the dead-letter topic.
//!
//! # What MQTT acknowledges
//! rumqttd sends PUBACK for QoS 1 when its router has the message, before the spool committed
//! it; a crash in that window loses events the device saw acknowledged. QoS 0 is
//! fire-and-forget. Devices that need "acknowledged means stored" use the TCP protocol.
//!
//! Only this module names rumqttd types.

use std::collections::HashMap;
use std::net::SocketAddr;

use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::{
    Broker, Config as BrokerConfig, ConnectionSettings, Notification, RouterConfig, ServerSettings,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tributary_protocol::json::JsonEvent;
use tributary_protocol::{Event, Kind};

use super::Ingest;
use crate::config::MqttConfig;
use crate::route::DeadLetter;

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("cannot listen for MQTT on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot attach to the embedded MQTT broker: {0}")]
    Link(String),
    #[error("cannot start the MQTT broker thread: {0}")]
    Thread(std::io::Error),
}

/// How long the link must be quiet, after stop, before the reader gives up draining it.
const QUIET: std::time::Duration = std::time::Duration::from_millis(500);

/// One publish taken off the link: topic and payload.
struct Publish {
    topic: String,
    payload: bytes::Bytes,
}

/// Starts the broker and returns the link the gateway reads devices' publishes from.
pub fn start_broker(config: &MqttConfig) -> Result<(LinkTx, LinkRx), MqttError> {
    // rumqttd logs a bind failure on its own thread and carries on without a listener; check
    // first so a taken port is a start-up error.
    std::net::TcpListener::bind(config.listen).map_err(|source| MqttError::Bind {
        addr: config.listen,
        source,
    })?;
    let server = ServerSettings {
        name: "devices-v4".into(),
        listen: config.listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: config.max_payload_bytes.get(),
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let broker_config = BrokerConfig {
        id: 0,
        router: RouterConfig {
            max_connections: config.max_connections.get() + 1,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("devices".to_owned(), server)])),
        ..Default::default()
    };
    let mut broker = Broker::new(broker_config);
    let (mut tx, rx) = broker
        .link("tributary-ingest")
        .map_err(|e| MqttError::Link(e.to_string()))?;
    for filter in ["devices/+/+", "devices/+/+/pc"] {
        tx.subscribe(filter)
            .map_err(|e| MqttError::Link(e.to_string()))?;
    }
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(error) = broker.start() {
                tracing::error!(message = "The embedded MQTT broker stopped.", error = %error);
            }
        })
        .map_err(MqttError::Thread)?;
    Ok((tx, rx))
}

/// Reads publishes from the link and submits them in batches until `stop` is cancelled and the
/// link has gone quiet.
pub async fn run(link: (LinkTx, LinkRx), ingest: Ingest, stop: CancellationToken) {
    // The link's tx must live as long as we read, or the router drops the subscription.
    let (_link_tx, mut link_rx) = link;
    let (tx, mut rx) = mpsc::channel::<Publish>(10_000);
    let reader_stop = stop.clone();
    let reader = tokio::spawn(async move {
        loop {
            // After stop, keep draining what rumqttd already accepted (and PUBACKed) until the
            // link has been quiet for QUIET; the caller bounds the whole drain by the grace period.
            let next = if reader_stop.is_cancelled() {
                match tokio::time::timeout(QUIET, link_rx.next()).await {
                    Ok(n) => n,
                    Err(_) => break,
                }
            } else {
                tokio::select! {
                    _ = reader_stop.cancelled() => continue,
                    n = link_rx.next() => n,
                }
            };
            match next {
                Ok(Some(Notification::Forward(forward))) => {
                    let publish = Publish {
                        topic: String::from_utf8_lossy(&forward.publish.topic).into_owned(),
                        payload: forward.publish.payload,
                    };
                    if tx.send(publish).await.is_err() {
                        break;
                    }
                }
                Ok(Some(Notification::Unschedule)) => {
                    // The router paused us because our buffer filled; ask for more.
                    if let Err(error) = link_rx.wake().await {
                        tracing::error!(message = "MQTT link lost.", error = %error);
                        break;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(message = "MQTT link lost.", error = %error);
                    break;
                }
            }
        }
    });

    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 1000).await > 0 {
        let (events, dead) = decode_batch(batch.drain(..));
        if let Err(error) = ingest.submit(events, dead).await {
            // rumqttd already acknowledged these to QoS 1 devices; this is the window the
            // module doc describes.
            tracing::error!(message = "MQTT events could not be stored and are lost.", %error);
        }
    }
    let _ = reader.await;
    tracing::info!(message = "MQTT ingest stopped reading.");
}

fn decode_batch(publishes: impl Iterator<Item = Publish>) -> (Vec<Event>, Vec<DeadLetter>) {
    let mut events = Vec::new();
    let mut dead = Vec::new();
    for p in publishes {
        match decode(&p.topic, &p.payload) {
            Ok(mut decoded) => events.append(&mut decoded),
            Err((device_id, reason)) => dead.push(DeadLetter::new(
                "mqtt", p.topic, device_id, reason, &p.payload,
            )),
        }
    }
    (events, dead)
}

/// Decodes one publish into events, or says why not (with the device id, where known).
fn decode(topic: &str, payload: &[u8]) -> Result<Vec<Event>, (Option<String>, String)> {
    let parts: Vec<&str> = topic.split('/').collect();
    let (device_id, segment, postcard) = match parts.as_slice() {
        ["devices", id, seg] => (*id, *seg, false),
        ["devices", id, seg, "pc"] => (*id, *seg, true),
        _ => {
            return Err((
                None,
                format!("topic {topic:?} is not devices/{{device_id}}/{{kind}}"),
            ))
        }
    };
    if let Err(e) = tributary_protocol::validate_device_id(device_id) {
        return Err((None, format!("topic {topic:?}: {e}")));
    }
    let fail = |reason: String| (Some(device_id.to_owned()), reason);
    let kind = Kind::from_mqtt_segment(segment).ok_or_else(|| {
        fail(format!(
            "topic {topic:?}: kind {segment:?} is not \"readings\" or \"position\""
        ))
    })?;
    let events = if postcard {
        let event: Event = postcard::from_bytes(payload)
            .map_err(|e| fail(format!("payload is not a postcard event: {e}")))?;
        if event.device_id != device_id || event.kind() != kind {
            return Err(fail(format!(
                "postcard event for {}/{} on topic {topic:?}",
                event.device_id,
                event.kind()
            )));
        }
        vec![event]
    } else {
        let value: serde_json::Value = serde_json::from_slice(payload)
            .map_err(|e| fail(format!("payload is not JSON: {e}")))?;
        let items = match value {
            serde_json::Value::Array(items) => items,
            other => vec![other],
        };
        let mut events = Vec::with_capacity(items.len());
        for (index, mut item) in items.into_iter().enumerate() {
            if let Some(obj) = item.as_object_mut() {
                obj.entry("kind").or_insert_with(|| kind.as_str().into());
            }
            let json: JsonEvent = serde_json::from_value(item)
                .map_err(|e| fail(format!("event {index}: not a {kind} event: {e}")))?;
            let event = json
                .into_event(device_id, kind)
                .map_err(|e| fail(format!("event {index}: {e}")))?;
            events.push(event);
        }
        events
    };
    for event in &events {
        event
            .validate()
            .map_err(|e| fail(format!("event seq {}: {e}", event.seq)))?;
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_json_reading_takes_device_and_kind_from_the_topic() {
        let events = decode(
            "devices/env-1/readings",
            br#"{"seq":1,"time_ms":5,"values":[{"name":"t","value":1.5,"unit":"Cel"}]}"#,
        )
        .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].device_id, "env-1");
        assert_eq!(events[0].kind(), Kind::Reading);
    }

    #[test]
    fn an_array_payload_is_a_batch() {
        let events = decode(
            "devices/car-1/position",
            br#"[{"seq":1,"time_ms":5,"lat":1,"lon":2},{"seq":2,"time_ms":6,"lat":1,"lon":2}]"#,
        )
        .unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn a_postcard_payload_on_pc_topics_decodes() {
        let event: Event = serde_json::from_str::<JsonEvent>(
            r#"{"device_id":"car-1","seq":3,"time_ms":5,"kind":"position","lat":1,"lon":2}"#,
        )
        .unwrap()
        .into_event("car-1", Kind::Position)
        .unwrap();
        let bytes = postcard::to_allocvec(&event).unwrap();
        assert_eq!(
            decode("devices/car-1/position/pc", &bytes).unwrap(),
            vec![event]
        );
    }

    #[test]
    fn each_bad_input_says_what_was_wrong() {
        let cases: [(&str, &[u8], &str); 5] = [
            ("devices/env-1/readings", b"{not json", "not JSON"),
            ("devices/env-1/weather", b"{}", "kind \"weather\""),
            ("devices/bad id/readings", b"{}", "device id"),
            (
                "devices/env-1/readings",
                br#"{"seq":1,"time_ms":5,"values":[]}"#,
                "no values",
            ),
            (
                "devices/env-1/readings",
                br#"{"device_id":"other","seq":1,"time_ms":5,"values":[{"name":"t","value":1,"unit":"C"}]}"#,
                "differs from the topic",
            ),
        ];
        for (topic, payload, expected) in cases {
            let (_, reason) = decode(topic, payload).unwrap_err();
            assert!(reason.contains(expected), "{topic}: {reason}");
        }
    }
}
