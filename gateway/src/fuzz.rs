//! Entry points for the fuzz targets in `fuzz/`, and for replaying what they found.
//!
//! Each function takes arbitrary bytes, as a device, a disk or an operator could supply them.
//! It must never panic on them; it panics only when an invariant of the code under test breaks
//! (a decoded message that does not re-encode to itself, an acknowledgement without a commit).
//! The fuzz targets call these and nothing else, so a finding is replayed by plain `cargo test`:
//! `fuzz_regressions` runs every file under `fuzz/regressions/<target>/` (crashes once found,
//! kept forever) and `fuzz/seeds/<target>/` through the same function.
//!
//! Not part of the gateway's API: compiled only for tests and with the `fuzz` feature (which the
//! targets in `fuzz/` turn on and production builds do not), hidden from its docs, and free to
//! change with the targets.

mod rule_state;
pub(crate) mod session;

use std::path::Path;

use bytes::BytesMut;
use tokio_util::codec::Decoder;
use tributary_protocol::codec::MessageCodec;
use tributary_protocol::json::{JsonEvent, JsonOf};
use tributary_protocol::{decode_frame_versioned, encode_frame_version, Kind};

pub use rule_state::rule_state;
pub use session::tcp_session;

/// A fuzz target: arbitrary bytes in, a panic only when an invariant breaks.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/<name>.rs` and the corpus folders call them.
pub const TARGETS: &[(&str, Target)] = &[
    ("tcp_frames", tcp_frames),
    ("mqtt_publish", mqtt_publish),
    ("json_event", json_event),
    ("config", config),
    ("acl", acl),
    ("credentials", credentials),
    ("tcp_session", tcp_session),
    ("rule_expr", rule_expr),
    ("teltonika", teltonika),
    ("mqtt_packets", mqtt_packets),
    ("rule_state", rule_state),
    ("spool_headers", spool_headers),
];

/// A row's `headers` blob as the spool reads it from disk ([`tributary_spool::headers`]); the
/// first byte picks the row's event id (none, or one with or without a session). Whatever
/// decodes re-encodes to bytes that decode to the same headers; nothing panics.
pub fn spool_headers(data: &[u8]) {
    use tributary_spool::headers::{decode, encode};
    use tributary_spool::record::EventId;
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let origin = (pick % 3 != 0).then(|| EventId {
        device_id: "dev-1".to_owned(),
        session: if pick % 3 == 2 { 0xbeef } else { 0 },
        seq: u64::from(pick),
        writer: None,
    });
    match decode(bytes, origin.as_ref()) {
        Ok(headers) => {
            let again = encode(&headers, origin.as_ref());
            assert_eq!(decode(&again, origin.as_ref()), Ok(headers), "round trip");
            assert!(
                again.len() <= bytes.len() + 64,
                "re-encoding never grows much"
            );
        }
        Err(e) => assert!(!e.is_empty()),
    }
}

/// TCP frames as they arrive on a socket: the first byte picks the read size (1 to 64 bytes),
/// the rest is the stream. Whatever the codec decodes re-encodes, in the peer's version, to a
/// frame that decodes to the same bytes; its buffer never grows past the frame limit.
pub fn tcp_frames(data: &[u8]) {
    const LIMIT: usize = 4096;
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let mut codec = MessageCodec::new(LIMIT);
    let mut buf = BytesMut::new();
    for piece in stream.chunks(usize::from(chunk % 64) + 1) {
        buf.extend_from_slice(piece);
        while let Ok(Some(item)) = codec.decode(&mut buf) {
            let Ok(message) = item else { continue };
            let Ok(bytes) = encode_frame_version(&message, codec.peer_version()) else {
                // Only a version 1 HELLO or a version 2 ANSWER cannot be written back.
                continue;
            };
            let (back, used, version) =
                decode_frame_versioned(&bytes, usize::MAX).expect("a re-encoded frame decodes");
            assert_eq!(used, bytes.len());
            assert_eq!(version, codec.peer_version());
            let again = encode_frame_version(&back, version).expect("and encodes again");
            assert_eq!(again, bytes, "a message survives a round trip unchanged");
        }
        assert!(
            buf.capacity() <= LIMIT + 64 * 1024,
            "the buffer grows only as bytes arrive"
        );
    }
}

/// An MQTT publish: the first byte is the topic's length, then the topic, then the payload.
/// What decodes is valid and belongs to the topic's device; what does not becomes a dead letter.
pub fn mqtt_publish(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (topic, payload) = rest.split_at(usize::from(n).min(rest.len()));
    let topic = String::from_utf8_lossy(topic);
    // Every shipped preset too, so mapped topics (tele/+/SENSOR, owntracks/+/+, ...) are
    // reached; the seeds include their documented payloads.
    static PRESETS: std::sync::OnceLock<crate::route::mapping::Mappings> =
        std::sync::OnceLock::new();
    let mappings = PRESETS
        .get_or_init(|| crate::route::mapping::Mappings::new(crate::route::mapping::presets()));
    // Sparkplug B too, with births remembered across inputs as a gateway remembers them.
    static SPARKPLUG: std::sync::OnceLock<crate::ingest::sparkplug::Sparkplug> =
        std::sync::OnceLock::new();
    let sparkplug = SPARKPLUG.get_or_init(|| {
        crate::ingest::sparkplug::Sparkplug::new(
            crate::ingest::sparkplug::SparkplugConfig::default(),
            crate::observe::stats::Stats::default(),
        )
    });
    match crate::ingest::mqtt::decode_publish(mappings, Some(sparkplug), &topic, payload, None) {
        Ok(events) => {
            let native = topic.starts_with("devices/");
            let device = topic.split('/').nth(1).unwrap_or_default();
            for crate::ingest::mqtt::Decoded { event, .. } in events {
                if native {
                    assert_eq!(event.device_id, device, "an event is its topic's device's");
                }
                assert!(event.validate().is_ok(), "decoded means valid");
            }
        }
        Err(dead) => assert!(!dead.reason.is_empty(), "a dead letter says why"),
    }
}

/// The JSON event form, through the one decoder MQTT payloads take (`protocol::json::decode`), on
/// either kind's topic. Every event that decodes and validates survives a round trip through the
/// JSON the gateway writes to Kafka unchanged.
pub fn json_event(data: &[u8]) {
    for kind in [Kind::Reading, Kind::Position] {
        let Ok(events) = tributary_protocol::json::decode("fuzz-1", kind, data) else {
            continue;
        };
        for (event, _session) in events {
            if event.validate().is_err() {
                continue;
            }
            let text = serde_json::to_vec(&JsonOf(&event)).expect("an event serialises");
            assert_eq!(
                text,
                serde_json::to_vec(&JsonEvent::from(event.clone())).expect("an event serialises"),
                "written in place, an event is the JSON its JsonEvent would be"
            );
            let back = tributary_protocol::json::decode("fuzz-1", kind, &text)
                .expect("what the gateway writes, it reads");
            let bytes =
                |e: &tributary_protocol::Event| postcard::to_allocvec(e).unwrap_or_default();
            assert_eq!(back.len(), 1);
            assert_eq!(
                bytes(&back[0].0),
                bytes(&event),
                "unchanged by a round trip"
            );
        }
    }
}

/// The config file: any text parses to a config or to an error naming a key; never a panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = crate::config::Config::parse(text, Path::new("fuzz.toml")) {
        assert!(!error.to_string().is_empty());
    }
}

/// A rule expression (`where`, `when`, a deadband's `field`) as an operator writes it: it parses
/// or is refused at a position inside the text; what parses evaluates on a reading and a
/// position without panicking, and a condition never both holds and is false.
pub fn rule_expr(data: &[u8]) {
    use crate::route::rules::expr::{Condition, Number};
    let text = String::from_utf8_lossy(data);
    let reading = tributary_protocol::Event {
        device_id: "d".into(),
        seq: 3,
        time_ms: 1_700_000_000_000,
        body: tributary_protocol::Body::Reading(tributary_protocol::Reading {
            values: vec![tributary_protocol::SensorValue {
                name: "t".into(),
                value: 21.5,
                unit: "Cel".into(),
            }],
        }),
    };
    let position = tributary_protocol::Event {
        body: tributary_protocol::Body::Position(tributary_protocol::Position {
            lat: 52.5,
            lon: 13.4,
            alt_m: Some(30.0),
            speed_mps: Some(12.0),
            heading_deg: None,
            hdop: Some(0.8),
            satellites: Some(9),
            fix: tributary_protocol::FixQuality::Gps,
        }),
        ..reading.clone()
    };
    match Condition::parse(&text) {
        Ok(c) => {
            for e in [&reading, &position] {
                assert!(!(c.holds(e) && c.is_false(e)), "{text:?}");
            }
        }
        Err(e) => assert!(e.at <= text.len(), "{text:?}: {e}"),
    }
    match Number::parse(&text) {
        Ok(n) => {
            let _ = (n.value(&reading), n.value(&position));
        }
        Err(e) => assert!(e.at <= text.len(), "{text:?}: {e}"),
    }
}

/// An ACL filter, a topic and a device id, one per line. A filter that compiles matches without
/// panicking; the built-in rule lets a device publish under its own `devices/{id}/`.
pub fn acl(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(3, '\n');
    let (filter, topic, device) = (
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
    );
    if let Ok(f) = crate::identity::acl::Filter::parse(filter) {
        let _ = f.matches(topic, device);
        if !filter.contains(['+', '#', '{']) {
            assert!(f.matches(filter, device), "a literal filter matches itself");
        }
    }
    let acl = crate::identity::acl::Acl::default();
    let _ = acl.may_publish(device, topic);
    if tributary_protocol::validate_device_id(device).is_ok() {
        assert!(acl.may_publish(device, &format!("devices/{device}/readings")));
        assert!(!acl.may_publish(device, &format!("devices/{device}x/readings")));
    }
}

/// The credentials file. What parses writes back to text that parses to the same entries.
pub fn credentials(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.passwd");
    if let Ok(parsed) = crate::identity::credentials::Credentials::parse(text, path) {
        let again = crate::identity::credentials::Credentials::parse(&parsed.to_text(), path)
            .expect("written text parses");
        assert_eq!(again, parsed);
    }
}

/// A Teltonika tracker's stream after its handshake: packets back to back, as the session reads
/// them. Each decoded packet took bytes it had, within the limit, and says how many records it
/// holds; anything else is an error that names what was wrong.
pub fn teltonika(data: &[u8]) {
    use crate::ingest::teltonika::codec;
    const LIMIT: usize = 4096;
    let _ = codec::imei(data);
    let mut rest = data;
    loop {
        match codec::packet(rest, LIMIT) {
            Ok(Some((packet, used))) => {
                assert!(
                    used <= rest.len() && used <= 8 + LIMIT + 4,
                    "took {used} bytes"
                );
                assert!(packet.records.len() <= 255);
                rest = &rest[used..];
            }
            Ok(None) => break,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                break;
            }
        }
    }
}

/// An MQTT device's byte stream as the listener's codec reads it: the first byte picks the read
/// size (1 to 64 bytes), the rest is the stream, whose CONNECT picks 3.1, 3.1.1 or 5. Every
/// packet read is answered as a session would (each reason code in turn), and every answer must
/// parse back, in the connection's version, as the packet written: a device can always read
/// what the gateway says. Topic aliases resolve to a topic that was sent.
pub fn mqtt_packets(data: &[u8]) {
    use crate::ingest::mqtt::codec::{
        AckCode, Closing, Codec, ConnectCode, Grant, Incoming, Reply, Version,
    };
    const LIMIT: usize = 4096;
    const CODES: [AckCode; 7] = [
        AckCode::Success,
        AckCode::PayloadFormatInvalid,
        AckCode::TopicNameInvalid,
        AckCode::NotAuthorized,
        AckCode::ImplementationSpecific,
        AckCode::QuotaExceeded,
        AckCode::Unspecified,
    ];
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let mut codec = Codec::new(LIMIT);
    let mut buf = BytesMut::new();
    let mut n = 0usize;
    for piece in stream.chunks(usize::from(chunk % 64) + 1) {
        buf.extend_from_slice(piece);
        loop {
            let packet = match codec.read(&mut buf) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    assert!(!e.to_string().is_empty(), "an error says what was wrong");
                    return;
                }
            };
            n += 1;
            let code = CODES[n % CODES.len()];
            let reply = match packet {
                Incoming::Connect(c) => {
                    assert_eq!(Some(c.version), codec.version());
                    Reply::ConnAck {
                        code: ConnectCode::Accepted,
                        session_present: n.is_multiple_of(2),
                        grant: Some(Box::new(Grant {
                            receive_max: 1 + (n % 40) as u16,
                            max_packet: LIMIT as u32,
                            topic_alias_max: 32,
                            session_expiry: None,
                            server_keep_alive: Some(60),
                            assigned_client_id: c.client_id.is_empty().then(|| "assigned".into()),
                        })),
                        reason: None,
                    }
                }
                Incoming::Publish(p) => {
                    assert!(!p.topic.is_empty(), "an alias resolves to a topic");
                    let reason = Some(format!("reason {n}"));
                    match p.qos {
                        rumqttc::mqttbytes::QoS::ExactlyOnce => Reply::PubRec {
                            pkid: p.pkid,
                            code,
                            reason,
                        },
                        _ => Reply::PubAck {
                            pkid: p.pkid,
                            code,
                            reason,
                        },
                    }
                }
                Incoming::PubRel(pkid) => Reply::PubComp {
                    pkid,
                    found: n.is_multiple_of(2),
                },
                Incoming::Subscribe { pkid, filters } => Reply::SubAck {
                    pkid,
                    granted: filters.iter().map(|(_, q)| Some(*q)).collect(),
                },
                Incoming::Unsubscribe { pkid, filters } => Reply::UnsubAck {
                    pkid,
                    existed: vec![false; filters.len()],
                },
                Incoming::PingReq => Reply::PingResp,
                Incoming::Disconnect { .. }
                | Incoming::Ignored
                | Incoming::PubAck(_)
                | Incoming::Unexpected(_) => Reply::Disconnect {
                    reason: Closing::ProtocolError,
                    detail: Some("bye".into()),
                },
            };
            let mut out = BytesMut::new();
            if let Err(e) = codec.write(&reply, &mut out) {
                // Only a client that asked for tiny packets cannot be answered.
                assert!(e.contains("Maximum Packet Size"), "{reply:?}: {e}");
                continue;
            }
            match codec.version() {
                Some(Version::V5) => {
                    let back = rumqttc::v5::mqttbytes::v5::Packet::read(&mut out, None);
                    assert!(back.is_ok(), "{reply:?} parses back: {back:?}");
                }
                _ if matches!(reply, Reply::Disconnect { .. }) => assert!(out.is_empty()),
                _ => {
                    let back = rumqttc::mqttbytes::v4::Packet::read(&mut out, usize::MAX);
                    assert!(back.is_ok(), "{reply:?} parses back: {back:?}");
                }
            }
            assert!(out.is_empty(), "one packet written");
        }
        assert!(
            buf.len() <= LIMIT + 64 + stream.len().min(64),
            "the codec does not hold more than a packet and a read"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays every committed regression file and seed through its target.
    #[test]
    fn fuzz_regressions() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut replayed = 0;
        for (name, target) in TARGETS {
            for folder in ["regressions", "seeds"] {
                let Ok(entries) = std::fs::read_dir(root.join(folder).join(name)) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let bytes = std::fs::read(entry.path()).expect("read corpus file");
                    target(&bytes);
                    replayed += 1;
                }
            }
        }
        assert!(replayed > 0, "the corpus is committed under fuzz/");
    }

    #[test]
    fn every_target_survives_empty_and_tiny_input() {
        for (_, target) in TARGETS {
            target(&[]);
            target(&[0]);
            target(&[0xff; 9]);
        }
    }
}
