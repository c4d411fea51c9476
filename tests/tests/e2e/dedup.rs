//! De-duplication that drops only what it knows it stored (the spool's window, `spool/seqs.rs`),
//! tried as a fleet would: one bad timestamp, a seq far ahead, a counter and clock going back,
//! another identity writing for a device, and true retransmissions, also across a restart.
//! Each over the TCP protocol v1 and v3 and MQTT 3.1.1 and 5 (Debian's `mosquitto_pub`), with
//! and without boot sessions. What was stored is read from the file sink.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tributary_protocol::{encode_frame_version, Event, Hello, Message};
use tributary_tests::gateway::{Gateway, Topics};
use tributary_tests::import_passwords;

/// How an event reaches the gateway.
#[derive(Debug, Clone, Copy)]
enum Via {
    /// The TCP protocol, version 1 (no sessions in its HELLO).
    Tcp1,
    /// The TCP protocol, current version, with or without a boot session.
    Tcp3(Option<u64>),
    /// `mosquitto_pub` over MQTT 3.1.1 or 5, QoS 1, with or without a `session` in the JSON.
    Mqtt { v5: bool, session: Option<u64> },
}

const ALL: [Via; 7] = [
    Via::Tcp1,
    Via::Tcp3(None),
    Via::Tcp3(Some(0x5e55)),
    Via::Mqtt {
        v5: false,
        session: None,
    },
    Via::Mqtt {
        v5: false,
        session: Some(0x77),
    },
    Via::Mqtt {
        v5: true,
        session: None,
    },
    Via::Mqtt {
        v5: true,
        session: Some(0x78),
    },
];

impl Via {
    fn name(self) -> String {
        match self {
            Via::Tcp1 => "t1".into(),
            Via::Tcp3(None) => "t3".into(),
            Via::Tcp3(Some(_)) => "t3s".into(),
            Via::Mqtt { v5, session } => format!(
                "m{}{}",
                if v5 { 5 } else { 3 },
                if session.is_some() { "s" } else { "" }
            ),
        }
    }
}

const NOW: u64 = 1_765_000_000_000;
const DAY: u64 = 24 * 3600 * 1000;

fn reading(device: &str, seq: u64, time_ms: u64) -> Event {
    Event {
        device_id: device.into(),
        seq,
        time_ms,
        body: tributary_protocol::Body::Reading(tributary_protocol::Reading {
            values: vec![tributary_protocol::SensorValue {
                name: "temperature".into(),
                value: 21.5,
                unit: "Cel".into(),
            }],
        }),
    }
}

fn json(device: &str, seq: u64, time_ms: u64, session: Option<u64>) -> String {
    let session = session.map_or(String::new(), |s| format!(",\"session\":{s}"));
    format!(
        "{{\"device_id\":\"{device}\",\"seq\":{seq},\"time_ms\":{time_ms}{session},\
         \"kind\":\"reading\",\"values\":[{{\"name\":\"temperature\",\"value\":21.5,\"unit\":\"Cel\"}}]}}"
    )
}

/// A version 1 HELLO as a version 1 device writes it: `{ protocol_version, device_id, token }`
/// in postcard, which is today's HELLO without its last field (the session), in a version 1
/// frame.
fn v1_hello(device: &str) -> Vec<u8> {
    let hello = Message::Hello(Hello {
        protocol_version: 1,
        device_id: device.into(),
        password: None,
        session: None,
    });
    let v2 = encode_frame_version(&hello, 2).expect("v2 frame");
    let header = tributary_protocol::frame::FRAME_HEADER_LEN;
    // Body: the version byte, then the postcard payload; drop `session: None` (one 0 byte).
    let payload = &v2[header + 1..v2.len() - 1];
    let mut out = vec![0u8; header + 1 + payload.len()];
    out[header + 1..].copy_from_slice(payload);
    tributary_protocol::frame::seal_in_place_version(&mut out, payload.len(), 1).expect("sealed");
    out
}

/// Sends `events` (seq, time) as `device` over `via`, each acknowledged, or panics.
async fn send(gateway: &Gateway, via: Via, device: &str, events: &[(u64, u64)]) {
    match via {
        Via::Tcp3(session) => {
            let mut d = tributary_sim::tcp::TcpDevice::connect(gateway.tcp, device, None, session)
                .await
                .expect("connect");
            for chunk in events.chunks(10) {
                let batch: Vec<Event> = chunk.iter().map(|&(s, t)| reading(device, s, t)).collect();
                d.send_batch(&batch).await.expect("acknowledged");
            }
        }
        Via::Tcp1 => {
            let mut framed = tributary_tests::raw_tcp(gateway.tcp).await;
            let v1 = |m: &Message| encode_frame_version(m, 1).expect("v1 frame");
            framed
                .get_mut()
                .write_all(&v1_hello(device))
                .await
                .expect("HELLO");
            for &(seq, time) in events {
                let batch = Message::Events(vec![reading(device, seq, time)]);
                framed
                    .get_mut()
                    .write_all(&v1(&batch))
                    .await
                    .expect("EVENTS");
                loop {
                    match tokio::time::timeout(Duration::from_secs(10), framed.next()).await {
                        Ok(Some(Ok(Ok(Message::Ack(a))))) if a.up_to_seq == seq => break,
                        Ok(Some(Ok(Ok(Message::Ack(_))))) => {}
                        other => panic!("{device} seq {seq}: expected the ACK, got {other:?}"),
                    }
                }
            }
        }
        Via::Mqtt { v5, session } => {
            let lines: String = events
                .iter()
                .map(|&(s, t)| json(device, s, t, session) + "\n")
                .collect();
            let port = gateway.mqtt.port().to_string();
            let topic = format!("devices/{device}/readings");
            let version = if v5 { "mqttv5" } else { "mqttv311" };
            let lines = lines.clone();
            let ok = tokio::task::spawn_blocking(move || {
                let mut child = std::process::Command::new("mosquitto_pub")
                    .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-V", version])
                    .args(["-t", &topic, "-l"])
                    .stdin(std::process::Stdio::piped())
                    .spawn()
                    .expect("mosquitto_pub");
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(lines.as_bytes())
                    .expect("write");
                child.wait().expect("wait").success()
            })
            .await
            .expect("mosquitto_pub ran");
            assert!(ok, "{device} over {via:?}: every publish acknowledged");
        }
    }
}

/// What the file sink holds of `device`: seq to how often it was stored and the headers of
/// its first copy.
fn stored(
    gateway: &Gateway,
    topics: &Topics,
    device: &str,
) -> BTreeMap<u64, (usize, serde_json::Value)> {
    let mut out: BTreeMap<u64, (usize, serde_json::Value)> = BTreeMap::new();
    for line in gateway.sink_lines(&topics.readings) {
        if line["key"] != device {
            continue;
        }
        let Some(seq) = line["value"]["seq"].as_u64() else {
            continue;
        };
        out.entry(seq)
            .or_insert_with(|| (0, line["headers"].clone()))
            .0 += 1;
    }
    out
}

fn assert_all_stored_once(
    gateway: &Gateway,
    topics: &Topics,
    device: &str,
    seqs: impl IntoIterator<Item = u64>,
) -> BTreeMap<u64, (usize, serde_json::Value)> {
    let got = stored(gateway, topics, device);
    let missing: Vec<u64> = seqs.into_iter().filter(|s| !got.contains_key(s)).collect();
    assert!(
        missing.is_empty(),
        "{device}: acknowledged and not stored: {missing:?}\n{}",
        gateway.log()
    );
    let twice: Vec<(&u64, &usize)> = got
        .iter()
        .map(|(s, (n, _))| (s, n))
        .filter(|(_, n)| **n > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "{device}: stored more than once: {twice:?}"
    );
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn one_event_stamped_in_the_year_9999_silences_no_device() {
    let topics = Topics::unique("dd-9999");
    let gateway = Gateway::start(None, &topics);
    for via in ALL {
        let device = format!("y9999-{}", via.name());
        send(
            &gateway,
            via,
            &device,
            &[(49, NOW), (50, 253_402_300_799_000)],
        )
        .await;
        send(
            &gateway,
            via,
            &device,
            &[(51, NOW + 1), (52, NOW + 2), (53, NOW + 3)],
        )
        .await;
    }
    gateway.wait_drained(Duration::from_secs(30));
    for via in ALL {
        assert_all_stored_once(&gateway, &topics, &format!("y9999-{}", via.name()), 49..=53);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_seq_far_ahead_costs_one_flagged_event_and_silences_nothing_across_a_restart() {
    let topics = Topics::unique("dd-max");
    let mut gateway = Gateway::start(None, &topics);
    for via in ALL {
        let device = format!("max-{}", via.name());
        let first: Vec<(u64, u64)> = (1..=100).map(|s| (s, NOW + s)).collect();
        send(&gateway, via, &device, &first).await;
        send(&gateway, via, &device, &[(u64::MAX, NOW + 8 * DAY)]).await;
        let then: Vec<(u64, u64)> = (101..=200).map(|s| (s, NOW + s)).collect();
        send(&gateway, via, &device, &then).await;
    }
    gateway.wait_drained(Duration::from_secs(30));
    let stopped = gateway.stop();
    assert!(stopped.status.success());
    // One per device, counted and logged.
    assert_eq!(
        stopped.refused("spool/possible_duplicate"),
        ALL.len() as u64,
        "counted: {}",
        stopped.stdout
    );
    assert!(
        stopped.stderr.contains("marked possible-duplicate"),
        "logged"
    );
    gateway.restart();
    for via in ALL {
        let device = format!("max-{}", via.name());
        let after: Vec<(u64, u64)> = (201..=210).map(|s| (s, NOW + s)).collect();
        send(&gateway, via, &device, &after).await;
    }
    gateway.wait_drained(Duration::from_secs(30));
    for via in ALL {
        let device = format!("max-{}", via.name());
        let got = assert_all_stored_once(&gateway, &topics, &device, (1..=210).chain([u64::MAX]));
        // The one event the window could not vouch for says so; the rest do not.
        assert_eq!(
            got[&101].1["possible-duplicate"], "below-window",
            "{device}: {:?}",
            got[&101]
        );
        assert!(got[&102].1.get("possible-duplicate").is_none(), "{device}");
    }
    let (code, listing) = gateway.spool_tool(&["devices"]);
    assert_eq!(code, Some(0), "{listing}");
    assert!(listing.contains("window"), "{listing}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_counter_and_clock_going_back_lose_nothing() {
    let topics = Topics::unique("dd-back");
    let gateway = Gateway::start(None, &topics);
    for via in ALL {
        let device = format!("back-{}", via.name());
        let before: Vec<(u64, u64)> = (1000..1100).map(|s| (s, NOW + s * 1000)).collect();
        send(&gateway, via, &device, &before).await;
        // A Pi without a real-time clock reboots: counter and clock both start lower.
        let after: Vec<(u64, u64)> = (500..600).map(|s| (s, NOW - DAY + s)).collect();
        send(&gateway, via, &device, &after).await;
    }
    gateway.wait_drained(Duration::from_secs(30));
    for via in ALL {
        let device = format!("back-{}", via.name());
        assert_all_stored_once(&gateway, &topics, &device, (500..600).chain(1000..1100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn true_retransmissions_are_stored_once_also_after_a_restart() {
    let topics = Topics::unique("dd-resend");
    let mut gateway = Gateway::start(None, &topics);
    for via in ALL {
        let device = format!("re-{}", via.name());
        let all: Vec<(u64, u64)> = (1..=20).map(|s| (s, NOW + s)).collect();
        send(&gateway, via, &device, &all).await;
        // The device missed the acknowledgements of the last ten and sends them again.
        send(&gateway, via, &device, &all[10..]).await;
    }
    gateway.wait_drained(Duration::from_secs(30));
    assert!(gateway.stop().status.success());
    gateway.restart();
    for via in ALL {
        let device = format!("re-{}", via.name());
        let tail: Vec<(u64, u64)> = (15..=20).map(|s| (s, NOW + s)).collect();
        send(&gateway, via, &device, &tail).await;
    }
    gateway.wait_drained(Duration::from_secs(30));
    for via in ALL {
        assert_all_stored_once(&gateway, &topics, &format!("re-{}", via.name()), 1..=20);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_the_acl_lets_write_for_another_cannot_silence_it() {
    let topics = Topics::unique("dd-acl");
    let dir = tempfile::tempdir().expect("temp dir");
    import_passwords(
        &dir.path().join("devices.passwd"),
        "tracker-1 pw-tracker\ncar-9 pw-car\n",
    );
    let gateway = Gateway::start_in_dir(
        dir,
        None,
        &topics,
        "",
        "[auth]\ncredentials = \"{dir}/devices.passwd\"\n\
         [[auth.acl]]\ndevices = \"tracker-*\"\nallow = [\"devices/+/readings\"]\n",
    );
    let port = gateway.mqtt.port().to_string();
    let publish = |user: &str, pw: &str, version: &str, line: String| {
        let status = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-V", version])
            .args(["-u", user, "-P", pw, "-i", user])
            .args(["-t", "devices/car-9/readings", "-m", &line])
            .status()
            .expect("mosquitto_pub");
        assert!(status.success(), "{user}: acknowledged");
    };
    for version in ["mqttv311", "mqttv5"] {
        // The tracker forges car-9's highest seq, far in the future.
        publish(
            "tracker-1",
            "pw-tracker",
            version,
            json("car-9", u64::MAX, 4_102_444_800_000, None),
        );
    }
    for seq in 1..=7 {
        let version = if seq % 2 == 0 { "mqttv5" } else { "mqttv311" };
        publish(
            "car-9",
            "pw-car",
            version,
            json("car-9", seq, NOW + seq, None),
        );
    }
    gateway.wait_drained(Duration::from_secs(30));
    let got = assert_all_stored_once(&gateway, &topics, "car-9", (1..=7).chain([u64::MAX]));
    assert!(
        got[&1].1.get("possible-duplicate").is_none(),
        "{:?}",
        got[&1]
    );
    let (_, listing) = gateway.spool_tool(&["devices"]);
    assert!(
        listing.contains("car-9 [tracker-1]"),
        "the tracker's writes keep a lane of their own: {listing}"
    );
}
