//! MQTT ingest: Tributary's own MQTT listener for devices (MQTT 5, 3.1.1 and 3.1), plus an
//! embedded rumqttd broker for subscribers and local apps.
//!
//! # Why Tributary owns device connections
//! rumqttd acknowledges a QoS 1 publish as soon as its router has it, before anything is on
//! disk, so a crash in between loses events the device saw acknowledged. The device listener
//! ([`session`]) speaks MQTT with rumqttc's public codecs (through [`codec`]), and sends PUBACK
//! (QoS 1) or PUBREC (QoS 2) only after the spool committed the publish. Publishes that arrive
//! together share one spool commit. If the spool cannot store them (full, or failing), a 3.1.1
//! connection is closed without acknowledging: the device reconnects and resends with DUP, and
//! de-duplication by `(device_id, seq)` makes that safe. An MQTT 5 device is told so instead
//! ("quota exceeded", "unspecified error") and resends later ([`session`]).
//!
//! After the commit, accepted publishes are passed on to the embedded broker ([`broker`],
//! `mqtt.broker_listen`), so subscribers and local apps see device traffic as they would on any
//! broker. That copy is best-effort, like QoS 0.
//!
//! # Topics and payloads
//! - `devices/{device_id}/readings` and `devices/{device_id}/position`: a JSON event
//!   ([`tributary_protocol::json`]) or a JSON array of them. `device_id` and `kind` may be left
//!   out of the payload; the topic supplies them, and a payload that contradicts its topic is
//!   refused.
//! - the same topics with `/pc` appended: one postcard-encoded [`Event`].
//!
//! Anything else that cannot be decoded or validated is a dead letter: logged with device and
//! reason, counted, stored for the dead-letter topic, and acknowledged (it is stored, and a
//! resend would not help).
//!
//! # Identity
//! CONNECT authenticates the device ([`crate::identity`]): a client certificate on the TLS
//! listener, or username (= the client id = the device id) and password. A refusal is CONNACK
//! "bad user name or password" (unknown device, wrong password) or "not authorized" (no
//! credentials, a client id that is not the authenticated identity, an unusable certificate).
//! Each publish of an authenticated device is checked against the ACL before it is decoded; a
//! denied one is never stored as an event. MQTT 3.1.1 gives a server two answers only, so
//! `auth.on_deny` chooses: `acknowledge` (the default) PUBACKs it, so the device does not resend
//! it forever, and keeps it as a dead letter with the reason; `disconnect` keeps the dead letter
//! and closes the connection without acknowledging it. Either way it is counted (`acl`). MQTT 5
//! devices hear "not authorized" (0x87) in the PUBACK instead, or in a DISCONNECT with
//! `disconnect`.
//!
//! # What each QoS promises
//! - QoS 0: nothing; fire-and-forget, as MQTT defines it.
//! - QoS 1: PUBACK means the event is committed to the spool and the WAL synced after it.
//! - QoS 2: PUBREC means the same; PUBREL/PUBCOMP complete the handshake.
//!
//! Only this module names rumqttd and rumqttc types.

mod broker;
pub(crate) mod codec;
pub mod config;
mod connect;
mod oversize;
mod properties;
mod session;
mod sessions;

use std::net::SocketAddr;

pub(crate) use crate::ingest::sparkplug::Decoded;
use crate::ingest::sparkplug::Sparkplug;
use tokio::net::TcpListener;
use tributary_protocol::topic::{self, Encoding, TopicError};
use tributary_protocol::Event;

pub use broker::{start_broker, Republisher};

use super::Ingest;
use crate::route::mapping::Mappings;
use crate::route::{DeadLetter, Undecodable};
use crate::shutdown::Scope;
pub use config::{MqttConfig, RawMqtt};

/// Why MQTT ingest could not start.
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

/// Binds a device listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MqttError> {
    super::listen::listen(addr).map_err(|source| MqttError::Bind { addr, source })
}

/// What every session on a listener shares: its limits and the sessions kept between
/// connections.
#[derive(Debug)]
pub struct Settings {
    /// `mqtt.max_payload_bytes`: a larger payload is refused (answered, dead-lettered).
    pub max_payload: usize,
    /// `mqtt.receive_maximum`: MQTT 5's Receive Maximum while the spool has room.
    pub receive_maximum: u16,
    /// `mqtt.max_keep_alive_s`: MQTT 5's Server Keep Alive for a device asking more (or none).
    pub max_keep_alive: u16,
    pub user_property_bounds: properties::Bounds,
    pub sessions: sessions::Sessions,
}

impl Settings {
    pub fn new(config: &MqttConfig) -> Self {
        Self {
            max_payload: config.max_payload_bytes.get(),
            receive_maximum: config.receive_maximum,
            max_keep_alive: config.max_keep_alive_s,
            user_property_bounds: properties::Bounds {
                count: config.max_user_properties,
                bytes: config.max_user_property_bytes,
            },
            sessions: sessions::Sessions::default(),
        }
    }

    /// The largest packet a session reads whole: the largest payload with room for its topic
    /// and properties. A larger PUBLISH is read through ([`oversize`]).
    pub fn max_packet(&self) -> usize {
        self.max_payload + 64 * 1024
    }
}

/// Serves device connections on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    tls: bool,
    config: MqttConfig,
    ingest: Ingest,
    republish: Option<Republisher>,
    scope: Scope,
) {
    let spec = super::conn::Spec {
        transport: crate::transport::Transport::Mqtt,
        tls,
        max_connections: config.max_connections.get(),
        max_per_address: config.max_connections_per_address.get(),
    };
    let settings = std::sync::Arc::new(Settings::new(&config));
    let busy_settings = settings.clone();
    let (authority, stats) = (ingest.authority.clone(), ingest.stats.clone());
    let session_stop = scope.stop.clone();
    let (busy_ingest, busy_republish) = (ingest.clone(), republish.clone());
    let session = move |a: super::conn::Accepted| {
        let peer = a.peer.addr;
        let session = session::Session::new(a, settings.clone(), ingest.clone(), republish.clone());
        let stop = session_stop.clone();
        async move {
            if let Err(error) = session.run(stop).await {
                tracing::debug!(message = "MQTT connection ended with an error.", %peer, %error);
            }
        }
    };
    let busy = move |a: super::conn::Accepted| {
        let session = session::Session::new(
            a,
            busy_settings.clone(),
            busy_ingest.clone(),
            busy_republish.clone(),
        );
        async move {
            let _ = session.refuse_busy().await;
        }
    };
    super::conn::serve(listener, spec, authority, stats, scope, session, busy).await;
}

/// Decodes one publish into events with their boot session (0: none) and headers, or a dead
/// letter saying why not: `devices/...` always as Tributary's own format (a broad mapping
/// filter such as `+/+/+` never takes it over), `spBv1.0/...` as Sparkplug B where it is on
/// ([`crate::ingest::sparkplug`]), other topics through a mapping that names them.
/// `connection` is the authenticated device id of the publishing connection.
pub(crate) fn decode_publish(
    mappings: &Mappings,
    sparkplug: Option<&Sparkplug>,
    topic: &str,
    payload: &[u8],
    connection: Option<&str>,
) -> Result<Vec<Decoded>, Box<DeadLetter>> {
    let plain = |list: Vec<(Event, u64)>| {
        list.into_iter()
            .map(|(event, session)| Decoded {
                event,
                session,
                headers: Vec::new(),
            })
            .collect()
    };
    let now = tributary_common::clock::now_ms();
    let decoded = match sparkplug {
        Some(sp) if Sparkplug::covers(topic) => sp.decode(topic, payload, now),
        _ if !topic::in_namespace(topic) && mappings.covers(topic) => {
            mappings.decode(topic, payload, connection, now).map(plain)
        }
        _ => decode(topic, payload).map(plain),
    };
    decoded.map_err(|refused| {
        Box::new(DeadLetter::new(
            "mqtt",
            topic.to_owned(),
            refused.device_id,
            refused.reason,
            payload,
        ))
    })
}

/// Whether a topic is one the gateway decodes: `devices/{device_id}/{readings|position}`
/// (optionally `/pc`), or one a mapping names. A publish elsewhere is refused for its topic;
/// one here that does not decode, for its payload.
pub(crate) fn topic_is_known(mappings: &Mappings, sparkplug: bool, topic: &str) -> bool {
    if sparkplug && Sparkplug::covers(topic) {
        return true;
    }
    if !topic::in_namespace(topic) {
        return mappings.covers(topic);
    }
    topic::parse(topic).is_ok()
}

/// Decodes one publish into events and sessions, or says why not (with the device id, where
/// known).
fn decode(topic: &str, payload: &[u8]) -> Result<Vec<(Event, u64)>, Undecodable> {
    let parsed = topic::parse(topic).map_err(|e| match e {
        TopicError::Shape => {
            Undecodable::unnamed(format!("topic {topic:?} {e}, and no mapping names it"))
        }
        TopicError::DeviceId(_) => Undecodable::unnamed(format!("topic {topic:?}: {e}")),
        TopicError::Kind(_) => Undecodable {
            device_id: topic::device_of(topic).map(str::to_owned),
            reason: format!("topic {topic:?}: {e}"),
        },
    })?;
    let (device_id, kind) = (parsed.device_id, parsed.kind);
    let fail = |reason: String| Undecodable::of(device_id, reason);
    let events = if parsed.encoding == Encoding::Postcard {
        let event: Event = postcard::from_bytes(payload)
            .map_err(|e| fail(format!("payload is not a postcard event: {e}")))?;
        if event.device_id != device_id || event.kind() != kind {
            return Err(fail(format!(
                "postcard event for {}/{} on topic {topic:?}",
                event.device_id,
                event.kind()
            )));
        }
        vec![(event, 0)]
    } else {
        tributary_protocol::json::decode(device_id, kind, payload).map_err(fail)?
    };
    for (event, _) in &events {
        event
            .validate()
            .map_err(|e| fail(format!("event seq {}: {e}", event.seq)))?;
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use tributary_protocol::Kind;

    use super::*;

    #[test]
    fn a_minimal_json_reading_takes_device_and_kind_from_the_topic() {
        let events = decode(
            "devices/env-1/readings",
            br#"{"seq":1,"time_ms":5,"values":[{"name":"t","value":1.5,"unit":"Cel"}]}"#,
        )
        .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0.device_id, "env-1");
        assert_eq!(events[0].0.kind(), Kind::Reading);
        assert_eq!(events[0].1, 0, "no session");
    }

    #[test]
    fn an_array_payload_is_a_batch() {
        let events = decode(
            "devices/car-1/position",
            br#"[{"seq":1,"time_ms":5,"lat":1,"lon":2},{"seq":2,"time_ms":6,"lat":1,"lon":2}]"#,
        )
        .unwrap();
        assert_eq!(events.iter().map(|e| e.0.seq).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn a_postcard_payload_on_pc_topics_decodes() {
        let (event, _) = tributary_protocol::json::decode_line(
            br#"{"device_id":"car-1","seq":3,"time_ms":5,"kind":"position","lat":1,"lon":2}"#,
        )
        .unwrap();
        let bytes = postcard::to_allocvec(&event).unwrap();
        assert_eq!(
            decode("devices/car-1/position/pc", &bytes).unwrap(),
            vec![(event, 0)]
        );
    }

    #[test]
    fn a_json_event_may_name_its_boot_session() {
        let events = decode(
            "devices/env-1/readings",
            br#"{"seq":1,"time_ms":5,"session":77,"values":[{"name":"t","value":1,"unit":"C"}]}"#,
        )
        .unwrap();
        assert_eq!(events[0].1, 77);
    }

    #[test]
    fn devices_topics_stay_native_whatever_a_mapping_filter_covers() {
        let raw: crate::route::mapping::RawMapping = toml::from_str(
            "topic = \"+/+/+\"\ndevice_id = \"{topic.1}\"\nkind = \"reading\"\nnumeric = true\n",
        )
        .unwrap();
        let mappings = Mappings::new(crate::route::mapping::validate(&[raw]).unwrap());
        let payload = br#"{"seq":4,"time_ms":5,"values":[{"name":"t","value":1.5,"unit":"Cel"}]}"#;
        let events =
            decode_publish(&mappings, None, "devices/env-1/readings", payload, None).unwrap();
        assert_eq!(
            events[0].event.seq, 4,
            "the device's own seq: decoded natively"
        );
        assert!(mappings.covers("plant/env-1/temp"));
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
            let Undecodable { reason, .. } = decode(topic, payload).unwrap_err();
            assert!(reason.contains(expected), "{topic}: {reason}");
        }
    }
}
