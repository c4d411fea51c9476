//! MQTT by the letter: what the 3.1.1 and 5 specifications require of an endpoint that takes
//! CONNECT, PUBLISH at QoS 0/1/2, sessions, Wills and DISCONNECT. Each test names the rules it
//! checks; the packets are written byte by byte from the specification where a client library
//! would refuse to send them, and with rumqttc's encoder otherwise.

use std::io::{Read, Write};

use super::*;

/// An MQTT 3.1.1 CONNECT written by hand: `client_id`, CleanSession `clean`, keep-alive 60,
/// and a QoS 1 Will on `will` (`(topic, message)`).
fn connect311(client_id: &str, clean: bool, will: Option<(&str, &str)>) -> Vec<u8> {
    let field = |b: &[u8]| [&(b.len() as u16).to_be_bytes()[..], b].concat();
    let mut flags = if clean { 0x02 } else { 0x00 };
    if will.is_some() {
        flags |= 0x04 | 0x08; // Will Flag, Will QoS 1
    }
    let mut body = [&field(b"MQTT")[..], &[4, flags, 0, 60]].concat();
    body.extend_from_slice(&field(client_id.as_bytes()));
    if let Some((topic, message)) = will {
        body.extend_from_slice(&field(topic.as_bytes()));
        body.extend_from_slice(&field(message.as_bytes()));
    }
    remaining(0x10, &body)
}

/// A fixed header `first` with `body`'s remaining length, then `body`.
fn remaining(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A 3.1.1 PUBLISH written by hand: first byte `first` (type, DUP, QoS, RETAIN), `topic`, a
/// packet id when QoS > 0.
fn publish311(first: u8, topic: &[u8], pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = [&(topic.len() as u16).to_be_bytes()[..], topic].concat();
    if first & 0x06 != 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    remaining(first, &body)
}

/// Connects over 3.1.1 with `connect` and returns the socket and the CONNACK's 4 bytes.
fn open311(gateway: &Gateway, connect: &[u8]) -> (std::net::TcpStream, [u8; 4]) {
    let mut s = std::net::TcpStream::connect(gateway.mqtt).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(connect).expect("CONNECT");
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).expect("CONNACK");
    (s, connack)
}

/// Runs `script` with the tests' Python (paho-mqtt installed) and checks what it printed.
fn assert_prints(script: &str, expected: &str) {
    let out = std::process::Command::new(env("TRIBUTARY_TEST_PYTHON"))
        .args(["-c", script])
        .output()
        .expect("python");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        printed.trim(),
        expected,
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Everything the gateway sends until it closes the connection; `Err` if it reset it.
fn rest_of(s: &mut std::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let mut all = Vec::new();
    s.read_to_end(&mut all).map(|_| all)
}

/// [MQTT-3.1.2-4], [MQTT-3.2.2-1], [MQTT-3.2.2-2]: a 3.1.1 session with CleanSession 0 outlives
/// its connection, and the next CONNACK says so; CleanSession 1 ends it.
#[test]
fn mqtt_3_2_2_2_a_3_1_1_clean_session_0_reconnect_hears_session_present() {
    let topics = Topics::unique("letter-session");
    let mut gateway = Gateway::start(None, &topics);
    let (mut s, ack) = open311(&gateway, &connect311("sp-1", false, None));
    assert_eq!(ack, [0x20, 0x02, 0x00, 0x00], "no session the first time");
    s.write_all(&[0xE0, 0x00]).expect("DISCONNECT");
    let _ = rest_of(&mut s);
    let (mut s, ack) = open311(&gateway, &connect311("sp-1", false, None));
    assert_eq!(
        ack,
        [0x20, 0x02, 0x01, 0x00],
        "Session Present 1 [MQTT-3.2.2-2]"
    );
    s.write_all(&[0xE0, 0x00]).expect("DISCONNECT");
    let _ = rest_of(&mut s);
    let (mut s, ack) = open311(&gateway, &connect311("sp-1", true, None));
    assert_eq!(
        ack,
        [0x20, 0x02, 0x00, 0x00],
        "CleanSession 1: 0 [MQTT-3.2.2-1]"
    );
    s.write_all(&[0xE0, 0x00]).expect("DISCONNECT");
    let _ = rest_of(&mut s);
    let (_s, ack) = open311(&gateway, &connect311("sp-1", false, None));
    assert_eq!(
        ack,
        [0x20, 0x02, 0x00, 0x00],
        "the clean session discarded it"
    );
    // paho-mqtt, a device library, hears the same.
    let script = format!(
        r#"
import paho.mqtt.client as mqtt, time
flags = []
def on_connect(c, u, f, rc, props=None):
    flags.append(int(f.session_present))
for i in range(2):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sp-paho", clean_session=False)
    c.on_connect = on_connect
    c.connect("127.0.0.1", {port})
    c.loop_start()
    for _ in range(100):
        if len(flags) > i: break
        time.sleep(0.05)
    c.disconnect(); c.loop_stop()
print(flags)
"#,
        port = gateway.mqtt.port()
    );
    assert_prints(&script, "[0, 1]");
    gateway.stop();
}

impl Raw5 {
    /// Connects with `connect` as given (properties, Will, Clean Start).
    async fn connect_as(
        addr: std::net::SocketAddr,
        connect: v5::Connect,
        will: Option<v5::LastWill>,
    ) -> (Self, v5::ConnAck) {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut raw = Self {
            stream,
            read: bytes::BytesMut::new(),
        };
        raw.send(&[v5::Packet::Connect(connect, will, None)]).await;
        match raw.next().await {
            Some(v5::Packet::ConnAck(ack)) => (raw, ack),
            other => panic!("CONNACK expected: {other:?}"),
        }
    }
}

fn connect5(id: &str, clean_start: bool, session_expiry: Option<u32>) -> v5::Connect {
    v5::Connect {
        keep_alive: 30,
        client_id: id.into(),
        clean_start,
        properties: session_expiry.map(|s| v5::ConnectProperties {
            session_expiry_interval: Some(s),
            ..v5::ConnectProperties::new()
        }),
    }
}

fn disconnect5(reason: v5::DisconnectReasonCode, session_expiry: Option<u32>) -> v5::Packet {
    v5::Packet::Disconnect(v5::Disconnect {
        reason_code: reason,
        properties: session_expiry.map(|s| v5::DisconnectProperties {
            session_expiry_interval: Some(s),
            reason_string: None,
            user_properties: Vec::new(),
            server_reference: None,
        }),
    })
}

/// §3.14.2.2.2: a DISCONNECT's Session Expiry Interval replaces the CONNECT's; [MQTT-3.14.2-2]:
/// not when the CONNECT's was 0 (a protocol error).
#[tokio::test(flavor = "multi_thread")]
async fn mqtt_3_14_2_2_2_the_disconnect_s_session_expiry_replaces_the_connect_s() {
    let topics = Topics::unique("letter-expiry");
    let mut gateway = Gateway::start(None, &topics);
    let (mut raw, _) = Raw5::connect_as(gateway.mqtt, connect5("ex-1", true, Some(1)), None).await;
    raw.send(&[disconnect5(
        v5::DisconnectReasonCode::NormalDisconnection,
        Some(5),
    )])
    .await;
    assert!(raw.next().await.is_none(), "closed after DISCONNECT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_raw, ack) = Raw5::connect_as(gateway.mqtt, connect5("ex-1", false, Some(5)), None).await;
    assert!(
        ack.session_present,
        "3 s later: the DISCONNECT's 5 s held, not the CONNECT's 1 s"
    );
    let (mut raw, _) = Raw5::connect_as(gateway.mqtt, connect5("ex-2", true, None), None).await;
    raw.send(&[disconnect5(
        v5::DisconnectReasonCode::NormalDisconnection,
        Some(5),
    )])
    .await;
    match raw.next().await {
        Some(v5::Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, v5::DisconnectReasonCode::ProtocolError)
        }
        other => panic!("DISCONNECT 0x82 expected [MQTT-3.14.2-2]: {other:?}"),
    }
    gateway.stop();
}

/// [MQTT-3.1.2-8], [MQTT-3.1.2-10], [MQTT-3.1.3-9]: a Will is published (here: stored as the
/// device's event) when the connection ends without DISCONNECT, not after a normal
/// DISCONNECT, and not when the client connects again within the Will Delay Interval.
#[tokio::test(flavor = "multi_thread")]
async fn mqtt_3_1_2_8_a_will_is_stored_when_a_device_drops_off_and_only_then() {
    let topics = Topics::unique("letter-will");
    let mut gateway = Gateway::start(None, &topics);
    let will_of = |device: &str, seq: u64| {
        (
            format!("devices/{device}/readings"),
            reading(seq).replacen('{', &format!(r#"{{"device_id":"{device}","#), 1),
        )
    };
    // 3.1.1, dropped without DISCONNECT: stored.
    let (topic, message) = will_of("will-1", 1);
    let (s, _) = open311(
        &gateway,
        &connect311("will-1", true, Some((&topic, &message))),
    );
    drop(s);
    // 3.1.1, a normal DISCONNECT: discarded [MQTT-3.1.2-10].
    let (topic, message) = will_of("will-2", 1);
    let (mut s, _) = open311(
        &gateway,
        &connect311("will-2", true, Some((&topic, &message))),
    );
    s.write_all(&[0xE0, 0x00]).expect("DISCONNECT");
    let _ = rest_of(&mut s);
    // MQTT 5, a Will Delay of 3 s, and the device back within it: not stored [MQTT-3.1.3-9].
    let will5 = |device: &str, delay: u32| {
        let (topic, message) = will_of(device, 1);
        let mut will = v5::LastWill::new(topic, message, QoS5::AtLeastOnce, false, None);
        will.properties = Some(v5::LastWillProperties {
            delay_interval: Some(delay),
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
        });
        will
    };
    let (raw, _) = Raw5::connect_as(
        gateway.mqtt,
        connect5("will-3", false, Some(60)),
        Some(will5("will-3", 3)),
    )
    .await;
    drop(raw);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_back, _) =
        Raw5::connect_as(gateway.mqtt, connect5("will-3", false, Some(60)), None).await;
    // MQTT 5, a Will Delay of 1 s, not back: stored after it.
    let (raw, _) = Raw5::connect_as(
        gateway.mqtt,
        connect5("will-4", false, Some(60)),
        Some(will5("will-4", 1)),
    )
    .await;
    drop(raw);
    tokio::time::sleep(Duration::from_secs(5)).await;
    gateway.wait_drained(Duration::from_secs(30));
    let stopped = gateway.stop();
    assert!(stopped.status.success());
    let devices: BTreeSet<String> = gateway
        .sink_lines(&topics.readings)
        .iter()
        .filter_map(|l| l["key"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        devices,
        BTreeSet::from(["will-1".to_owned(), "will-4".to_owned()]),
        "the Wills of the devices that dropped off, and only theirs"
    );
}

/// [MQTT-3.3.2-2] (no wildcard in a topic name), [MQTT-1.5.3-2] (no U+0000), [MQTT-3.3.1-2]
/// (no DUP on QoS 0): such a PUBLISH is not acknowledged; the connection closes (MQTT 5:
/// DISCONNECT 0x90 Topic Name invalid).
#[tokio::test(flavor = "multi_thread")]
async fn mqtt_3_3_2_2_a_publish_with_a_wildcard_nul_or_qos_0_dup_closes_the_connection() {
    let topics = Topics::unique("letter-topic");
    let mut gateway = Gateway::start(None, &topics);
    let payload = reading(1);
    for (what, packet) in [
        (
            "wildcard +",
            publish311(0x32, b"devices/+/readings", 1, payload.as_bytes()),
        ),
        (
            "wildcard #",
            publish311(0x32, b"devices/t-1/#", 2, payload.as_bytes()),
        ),
        (
            "U+0000",
            publish311(0x32, b"devices/t-1\0/readings", 3, payload.as_bytes()),
        ),
        (
            "QoS 0 with DUP",
            publish311(0x38, b"devices/t-1/readings", 0, payload.as_bytes()),
        ),
    ] {
        let (mut s, ack) = open311(&gateway, &connect311("t-1", true, None));
        assert_eq!(ack[3], 0, "{what}: connected");
        s.write_all(&packet).expect("PUBLISH");
        let rest = rest_of(&mut s).unwrap_or_default();
        assert!(!rest.contains(&0x40), "{what}: no PUBACK: {rest:?}");
    }
    let (mut raw, _) = Raw5::connect(gateway.mqtt, "t-2").await;
    raw.send(&[publish5(
        "devices/+/readings",
        None,
        QoS5::AtLeastOnce,
        1,
        reading(1),
    )])
    .await;
    match raw.next().await {
        Some(v5::Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, v5::DisconnectReasonCode::TopicNameInvalid)
        }
        other => panic!("DISCONNECT 0x90 expected: {other:?}"),
    }
    let stopped = gateway.stop();
    assert_eq!(
        stopped.refused("mqtt/topic_name_invalid"),
        4,
        "{}",
        stopped.stdout
    );
    assert_eq!(stopped.refused("mqtt/malformed"), 1, "{}", stopped.stdout);
    assert!(gateway.sink_lines(&topics.readings).is_empty());
}

/// §4.13 and the DISCONNECT reason codes: a device still writing when the gateway closes its
/// connection with a reason reads that DISCONNECT, not a reset (the gateway shuts its side and
/// drains before it closes).
#[tokio::test(flavor = "multi_thread")]
async fn a_device_still_writing_reads_the_disconnect_that_says_why() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let topics = Topics::unique("letter-close");
    let mut gateway = Gateway::start_with_mqtt(None, &topics, "receive_maximum = 2\n", "");
    let (mut raw, _) = Raw5::connect(gateway.mqtt, "close-1").await;
    // 300 QoS 1 publishes at once, far over the Receive Maximum of 2.
    let mut out = bytes::BytesMut::new();
    for pkid in 1..=300u16 {
        publish5(
            "devices/close-1/readings",
            None,
            QoS5::AtLeastOnce,
            pkid,
            reading(pkid.into()),
        )
        .write(&mut out, None)
        .expect("encode");
    }
    raw.stream.write_all(&out).await.expect("write");
    let mut got = bytes::BytesMut::new();
    let outcome = loop {
        match tokio::time::timeout(Duration::from_secs(10), raw.stream.read_buf(&mut got)).await {
            Ok(Ok(0)) => break Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => break Err(e),
            Err(_) => panic!("the gateway never closed"),
        }
    };
    let mut reasons = Vec::new();
    while let Ok(p) = v5::Packet::read(&mut got, None) {
        if let v5::Packet::Disconnect(d) = p {
            reasons.push(d.reason_code);
        }
    }
    assert_eq!(
        reasons,
        [v5::DisconnectReasonCode::ReceiveMaximumExceeded],
        "the DISCONNECT was read ({outcome:?})"
    );
    gateway.stop();
}

/// MQTT 5 §3.2.2.3.5: the CONNACK leaves Retain Available out, which means retained messages
/// are supported; so the RETAIN flag is kept on the copy for the embedded broker, whose
/// subscribers connecting later receive the device's last retained publish.
#[tokio::test(flavor = "multi_thread")]
async fn a_retained_publish_is_retained_for_the_embedded_broker_s_subscribers() {
    let topics = Topics::unique("letter-retain");
    let mut gateway = Gateway::start(None, &topics);
    let (mut raw, ack) = Raw5::connect(gateway.mqtt, "ret-1").await;
    assert!(
        ack.properties
            .as_ref()
            .is_none_or(|p| p.retain_available != Some(0)),
        "Retain Available is not 0"
    );
    let mut publish = v5::Publish::new(
        "devices/ret-1/readings",
        QoS5::AtLeastOnce,
        reading(7),
        None,
    );
    publish.pkid = 1;
    publish.retain = true;
    raw.send(&[v5::Packet::Publish(publish)]).await;
    assert!(matches!(raw.next().await, Some(v5::Packet::PubAck(a)) if a.pkid == 1));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = std::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &gateway.broker.port().to_string(),
            "-t",
            "devices/ret-1/readings",
            "-C",
            "1",
            "-W",
            "5",
        ])
        .output()
        .expect("mosquitto_sub");
    let got = String::from_utf8_lossy(&out.stdout);
    assert!(got.contains(r#""seq":7"#), "the retained publish: {got:?}");
    gateway.stop();
}

/// The README's paho-mqtt snippet (issue 39: it exited before paho sent anything, and its
/// comment named the wrong answer), taken from the README as written and run: it prints
/// "1 Success" and the event is stored with its user property as a header.
#[test]
fn the_readme_s_paho_snippet_stores_its_event() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let start = readme
        .find("# paho-mqtt 2.x, MQTT 5")
        .expect("the snippet is in the README");
    let end = start + readme[start..].find("```").expect("the block ends");
    let topics = Topics::unique("readme-paho");
    let mut gateway = Gateway::start(None, &topics);
    let script = readme[start..end].replace("1883)", &format!("{})", gateway.mqtt.port()));
    assert_prints(&script, "1 Success");
    gateway.wait_drained(Duration::from_secs(30));
    gateway.stop();
    let stored = gateway.sink_lines(&topics.readings);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["headers"]["mqtt.site"], "depot-3", "{stored:?}");
}
