//! Seed corpora for the gateway's fuzz targets, made from the simulator's own streams.
//!
//! `tributary-sim fuzz-corpus --out fuzz/seeds` writes one folder per target (the names of
//! `tributary_gateway::fuzz::TARGETS`) with inputs in the shape each target reads: real device
//! streams (environment stations, machines, trucks) as TCP frames in every protocol version,
//! whole TCP sessions, MQTT publishes (single JSON events, arrays, postcard), JSON events; and
//! the documented config, ACL filters and a credentials file. A fuzzer starts from these and
//! mutates towards what they almost are. The output is a function of the built-in scenario, so
//! running it again changes nothing.

use std::path::Path;
use std::sync::Arc;

use tributary_protocol::{encode_frame_version, Event, Hello, Message};

use crate::scenario::Raw;

/// The gateway's documented config, as an operator starts from it.
const GATEWAY_TOML: &str = include_str!("../../config/gateway.toml");

/// Writes the seeds under `dir`; returns how many files.
pub fn write_seeds(dir: &Path) -> std::io::Result<usize> {
    let scenario = Raw::default_scenario()
        .and_then(|raw| raw.validate("built-in scenario"))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let roads = Arc::new(crate::stream::roads(&scenario).map_err(std::io::Error::other)?);
    // Two devices of every group, 12 events each.
    let mut streams: Vec<Vec<Event>> = Vec::new();
    let mut taken = std::collections::HashMap::new();
    for (group, mut device) in crate::stream::fleet(&scenario, &roads, 1_767_225_600_000, 1) {
        let n = taken.entry(group).or_insert(0);
        if *n < 2 {
            *n += 1;
            streams.push((0..12).map(|_| device.next_event()).collect());
        }
    }
    let mut seeds = Seeds { dir, written: 0 };
    for (i, events) in streams.iter().enumerate() {
        let device = events[0].device_id.clone();
        let hello = |version: u8| {
            Message::Hello(Hello {
                protocol_version: version,
                device_id: device.clone(),
                password: None,
                session: (version >= 2).then_some(0x5eed_0000 + i as u64),
            })
        };
        for version in [1u8, 2, 3] {
            // A session: HELLO (version 2 for a version 1 stream: version 1 HELLOs are read,
            // not written), then the events in batches of 1, 4 and 7.
            let mut session = frame(&hello(version.max(2)), version.max(2));
            for batch in [&events[..1], &events[1..5], &events[5..]] {
                session.extend(frame(&Message::Events(batch.to_vec()), version));
            }
            seeds.write("tcp_session", &format!("{device}-v{version}"), &session)?;
            // The same bytes read in 7-byte pieces.
            seeds.write(
                "tcp_frames",
                &format!("{device}-v{version}"),
                &[&[6u8][..], &session].concat(),
            )?;
        }
        for (n, event) in events.iter().take(3).enumerate() {
            let topic = tributary_client::publish::topic(event);
            let payload = tributary_client::publish::payload(event, Some(7));
            seeds.write(
                "mqtt_publish",
                &format!("{device}-{n}"),
                &publish(&topic, &payload),
            )?;
            seeds.write("json_event", &format!("{device}-{n}"), &payload)?;
            let postcard = postcard::to_allocvec(event).map_err(std::io::Error::other)?;
            seeds.write(
                "mqtt_publish",
                &format!("{device}-{n}-pc"),
                &publish(&format!("{topic}/pc"), &postcard),
            )?;
        }
        let array: Vec<serde_json::Value> = events
            .iter()
            .filter_map(|e| {
                serde_json::from_slice(&tributary_client::publish::payload(e, None)).ok()
            })
            .collect();
        let array = serde_json::to_vec(&array).map_err(std::io::Error::other)?;
        seeds.write(
            "mqtt_publish",
            &format!("{device}-array"),
            &publish(&tributary_client::publish::topic(&events[0]), &array),
        )?;
    }
    // Sessions that go wrong in the ways devices do.
    let events = &streams[0];
    let hello = frame(
        &Message::Hello(Hello {
            protocol_version: 3,
            device_id: events[0].device_id.clone(),
            password: None,
            session: Some(1),
        }),
        3,
    );
    let batch = frame(&Message::Events(events[..3].to_vec()), 3);
    let empty = frame(&Message::Events(Vec::new()), 3);
    let mut other = events[3].clone();
    other.device_id = "someone-else".into();
    let foreign = frame(&Message::Events(vec![events[3].clone(), other]), 3);
    let mut bad_crc = batch.clone();
    if let Some(last) = bad_crc.last_mut() {
        *last ^= 0xff;
    }
    let cases: [(&str, Vec<u8>); 5] = [
        (
            "events-before-hello",
            [batch.clone(), hello.clone()].concat(),
        ),
        (
            "empty-batch",
            [hello.clone(), empty, batch.clone()].concat(),
        ),
        ("foreign-event", [hello.clone(), foreign].concat()),
        (
            "retransmission",
            [hello.clone(), batch.clone(), batch.clone()].concat(),
        ),
        ("bad-crc", [hello, bad_crc, batch].concat()),
    ];
    for (name, bytes) in cases {
        seeds.write("tcp_session", name, &bytes)?;
    }
    seeds.write("config", "gateway.toml", GATEWAY_TOML.as_bytes())?;
    seeds.write(
        "config",
        "acl-and-tls.toml",
        b"[tcp]\ntls_listen = \"0.0.0.0:7879\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
          client_ca = \"ca.pem\"\n[auth]\ncredentials = \"devices.passwd\"\n\
          [[auth.acl]]\ndevices = \"gw-*\"\nallow = [\"devices/+/readings\"]\n\
          deny = [\"devices/{device}/position\"]\n",
    )?;
    for (name, text) in [
        ("own", "devices/{device}/#\ndevices/env-1/readings\nenv-1"),
        ("one-level", "devices/+/readings\ndevices/a/readings\ngw-1"),
        ("literal", "plant/line-1/temp\nplant/line-1/temp\nm-1"),
    ] {
        seeds.write("acl", name, text.as_bytes())?;
    }
    for (name, text) in [
        ("filter", "values.t > 30 and abs(values.vibration) >= 2.5"),
        ("position", "speed_mps * 3.6 > 90 or not (hdop < 2)"),
        (
            "functions",
            "max(1, 2e1, -3) == 20 and (values.t > 1) == true",
        ),
        ("number", "values.t"),
        ("error", "values.t >> 3"),
    ] {
        seeds.write("rule_expr", name, text.as_bytes())?;
    }
    // The payloads of the shipped mapping presets, as each project documents them.
    for (name, topic, payload) in [
        (
            "tasmota",
            "tele/tasmota_1A2B3C/SENSOR",
            r#"{"Time":"2019-11-03T19:34:28","BME280":{"Temperature":21.3,"Humidity":44.0,"DewPoint":8.5,"Pressure":1013.2},"PressureUnit":"hPa","TempUnit":"C"}"#,
        ),
        (
            "zigbee2mqtt",
            "zigbee2mqtt/0x00158d0001a2b3c4",
            r#"{"battery":100,"humidity":58.28,"linkquality":65,"pressure":1008,"temperature":21.35,"voltage":3005,"occupancy":true}"#,
        ),
        (
            "shelly-status",
            "shellyplus1pm-441793a4b0a8/status/switch:0",
            r#"{"id":0,"source":"init","output":false,"apower":0.0,"voltage":236.9,"aenergy":{"total":0.0,"by_minute":[0.0],"minute_ts":1654511662},"temperature":{"tC":43.6,"tF":110.5}}"#,
        ),
        (
            "shelly-notify",
            "shellyplus1pm-441793a4b0a8/events/rpc",
            r#"{"src":"shellyplus1pm-441793a4b0a8","method":"NotifyStatus","params":{"ts":1654511668.42,"switch:0":{"id":0,"apower":12.3}}}"#,
        ),
        (
            "owntracks",
            "owntracks/jane/phone",
            r#"{"_type":"location","tid":"JJ","acc":10,"alt":100,"batt":85,"lat":52.5163,"lon":13.3777,"tst":1700000000,"vel":36,"cog":270}"#,
        ),
    ] {
        seeds.write("mqtt_publish", name, &publish(topic, payload.as_bytes()))?;
    }
    // Teltonika's documented Codec 8 and Codec 8 Extended packets, back to back.
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
            .collect()
    };
    let codec8 = hex("000000000000003608010000016B40D8EA30010000000000000000000000000000000105021503010101425E0F01F10000601A014E0000000000000000010000C7CF");
    let codec8e = hex("000000000000004A8E010000016B412CEE000100000000000000000000000000000000010005000100010100010011001D00010010015E2C880002000B000000003544C87A000E000000001DD7E06A00000100002994");
    seeds.write("teltonika", "codec8", &codec8)?;
    seeds.write("teltonika", "codec8e", &codec8e)?;
    seeds.write("teltonika", "both", &[codec8, codec8e].concat())?;
    for (name, bytes) in mqtt_sessions(&streams[0]) {
        seeds.write("mqtt_packets", name, &bytes)?;
    }
    seeds.write(
        "credentials",
        "two-devices",
        concat!(
            "# Tributary device credentials: device_id:argon2id-hash.\n",
            "env-1:$argon2id$v=19$m=19456,t=2,p=1$F0dzYIEGMY7+7ZmFZkCSdA$",
            "a+t5tDfgOlCG57iPzSMLvcgttc/YJ9VTBNt0+NJSDTQ\n",
            "machine-2:$argon2id$v=19$m=19456,t=2,p=1$I/xrvgvr1d5DRMfsacF3NA$",
            "rNJwsabHm2ZyUWW9W4kCk6GBb83FO2AT8JDXNvtfg6w\n",
        )
        .as_bytes(),
    )?;
    Ok(seeds.written)
}

struct Seeds<'a> {
    dir: &'a Path,
    written: usize,
}

impl Seeds<'_> {
    fn write(&mut self, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let folder = self.dir.join(target);
        std::fs::create_dir_all(&folder)?;
        std::fs::write(folder.join(name), bytes)?;
        self.written += 1;
        Ok(())
    }
}

/// Whole MQTT sessions of one device, as the `mqtt_packets` target reads them (first byte: read
/// size 7): MQTT 5 with properties and a topic alias, 3.1.1, and 3.1's `MQIsdp` CONNECT.
fn mqtt_sessions(events: &[Event]) -> Vec<(&'static str, Vec<u8>)> {
    use bytes::{Bytes, BytesMut};
    use rumqttc::mqttbytes::v4;
    use rumqttc::v5::mqttbytes::{v5, QoS as QoS5};
    let device = events[0].device_id.clone();
    let topic = format!("devices/{device}/readings");
    let payload = |e: &Event| Bytes::from(tributary_client::publish::payload(e, None));
    let mut v5s = BytesMut::new();
    let mut connect = v5::Connect {
        keep_alive: 30,
        client_id: device.clone(),
        clean_start: false,
        properties: Some(v5::ConnectProperties::new()),
    };
    if let Some(p) = connect.properties.as_mut() {
        p.session_expiry_interval = Some(3600);
        p.receive_maximum = Some(16);
    }
    let login = v5::Login::new(device.clone(), "secret");
    let mut packets = vec![v5::Packet::Connect(connect, None, Some(login))];
    for (i, e) in events.iter().take(4).enumerate() {
        // The first publish sets alias 1; the rest use it with an empty topic.
        let mut p = v5::Publish::new(
            if i == 0 { topic.as_str() } else { "" },
            if i % 2 == 0 {
                QoS5::AtLeastOnce
            } else {
                QoS5::ExactlyOnce
            },
            payload(e),
            None,
        );
        p.pkid = i as u16 + 1;
        let mut props = v5::PublishProperties {
            topic_alias: Some(1),
            content_type: Some("application/json".into()),
            payload_format_indicator: Some(1),
            ..Default::default()
        };
        props
            .user_properties
            .push(("site".into(), "depot-3".into()));
        p.properties = Some(props);
        packets.push(v5::Packet::Publish(p));
    }
    packets.push(v5::Packet::PubRel(v5::PubRel::new(2, None)));
    packets.push(v5::Packet::PingReq(v5::PingReq));
    packets.push(v5::Packet::Disconnect(v5::Disconnect::new(
        v5::DisconnectReasonCode::NormalDisconnection,
    )));
    for p in &packets {
        let _ = p.write(&mut v5s, None);
    }
    let mut v4s = BytesMut::new();
    let mut connect = v4::Connect::new(device.clone());
    connect.keep_alive = 30;
    let mut packets = vec![v4::Packet::Connect(connect)];
    for (i, e) in events.iter().take(4).enumerate() {
        let mut p = v4::Publish::from_bytes(&topic, rumqttc::QoS::AtLeastOnce, payload(e));
        p.pkid = i as u16 + 1;
        packets.push(v4::Packet::Publish(p));
    }
    packets.push(v4::Packet::PingReq);
    packets.push(v4::Packet::Disconnect);
    for p in &packets {
        let _ = p.write(&mut v4s, usize::MAX);
    }
    // MQTT 3.1: the 3.1.1 session with the CONNECT's protocol name and level of 3.1.
    let mut v31 = v4s.to_vec();
    if v31.len() > 9 && &v31[2..8] == b"\x00\x04MQTT" {
        let mut head = vec![v31[0], v31[1] + 2, 0, 6];
        head.extend_from_slice(b"MQIsdp");
        head.push(3);
        head.extend_from_slice(&v31[9..]);
        v31 = head;
    }
    let read_by_7 = |b: &[u8]| [&[6u8][..], b].concat();
    vec![
        ("v5-session", read_by_7(&v5s)),
        ("v311-session", read_by_7(&v4s)),
        ("v31-session", read_by_7(&v31)),
    ]
}

/// `message` as a frame of protocol `version` (empty if it cannot be written in it).
fn frame(message: &Message, version: u8) -> Vec<u8> {
    encode_frame_version(message, version).unwrap_or_default()
}

/// The `mqtt_publish` target's input: topic length, topic, payload.
fn publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    let topic = &topic.as_bytes()[..topic.len().min(255)];
    [&[topic.len() as u8][..], topic, payload].concat()
}
