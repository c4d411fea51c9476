//! The front door refuses what it cannot take with an answer, a count and a dead letter:
//! a payload over `mqtt.max_payload_bytes`, a malformed MQTT packet, an empty TCP batch, events
//! that can never be stored (one answer per batch, naming them).

use std::io::{Read, Write};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tributary_protocol::codec::MessageCodec;
use tributary_protocol::{
    encode_frame_version, Body, Event, Hello, Message, NackCode, Reading, SensorValue,
    PROTOCOL_VERSION,
};
use tributary_tests::gateway::{Gateway, Topics};
use tributary_tests::mosquitto_pub;

/// A JSON reading of exactly `len` bytes (padded with spaces, which JSON allows).
fn reading_of_len(seq: u64, len: usize) -> String {
    let json = format!(
        r#"{{"seq":{seq},"time_ms":1700000000000,"values":[{{"name":"t","value":1.5,"unit":"Cel"}}]}}"#
    );
    assert!(json.len() <= len);
    format!("{json}{}", " ".repeat(len - json.len()))
}

/// HELLO of an anonymous device on the protocol's current version.
fn hello_frame(device: &str) -> Message {
    Message::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        device_id: device.into(),
        password: None,
        session: None,
    })
}

#[test]
fn mqtt_max_payload_bytes_means_what_it_says() {
    let topics = Topics::unique("payload");
    let mut gateway = Gateway::start_with_mqtt(None, &topics, "max_payload_bytes = 1000\n", "");
    let port = gateway.mqtt.port();
    assert!(mosquitto_pub(
        port,
        1,
        "devices/big-1/readings",
        &reading_of_len(1, 1000)
    ));
    // One byte over: acknowledged (so the device does not resend it forever), not stored as an
    // event, kept as a dead letter that says why.
    assert!(mosquitto_pub(
        port,
        1,
        "devices/big-1/readings",
        &reading_of_len(2, 1001)
    ));
    let stopped = gateway.stop();
    assert!(
        stopped.stdout.contains("mqtt/too_large"),
        "{}",
        stopped.stdout
    );
    let readings = gateway.sink_lines(&topics.readings);
    assert_eq!(readings.len(), 1, "{readings:?}");
    assert_eq!(readings[0]["value"]["seq"], 1);
    let dead = gateway.sink_lines(&topics.dead_letter);
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead[0]["headers"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("1001 bytes") && reason.contains("limit 1000"),
        "{reason}"
    );
}

#[test]
fn a_malformed_mqtt_packet_is_counted_and_dead_lettered_not_dropped_silently() {
    let topics = Topics::unique("malformed");
    let mut gateway = Gateway::start(None, &topics);
    let mut s = std::net::TcpStream::connect(gateway.mqtt).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // CONNECT (MQTT 3.1.1, clean session, keep-alive 60, client id "raw-1").
    let connect = [
        0x10, 0x11, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x05, b'r',
        b'a', b'w', b'-', b'1',
    ];
    s.write_all(&connect).expect("CONNECT");
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    // Packet type 15 does not exist in MQTT 3.1.1.
    s.write_all(&[0xF0, 0x00, 0xDE, 0xAD]).expect("garbage");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed without an answer: {rest:?}");
    let stopped = gateway.stop();
    assert!(
        stopped.stdout.contains("mqtt/malformed"),
        "{}",
        stopped.stdout
    );
    assert!(
        stopped.stderr.contains("Malformed MQTT packet"),
        "{}",
        stopped.stderr
    );
    let dead = gateway.sink_lines(&topics.dead_letter);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0]["headers"]["reason"]
        .as_str()
        .unwrap_or("")
        .starts_with("malformed MQTT packet"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_tcp_batch_gets_an_answer() {
    let topics = Topics::unique("empty");
    let mut gateway = Gateway::start(None, &topics);
    let mut framed = tributary_tests::raw_tcp(gateway.tcp).await;
    framed.send(&hello_frame("empty-1")).await.expect("HELLO");
    framed
        .send(&Message::Events(Vec::new()))
        .await
        .expect("EVENTS");
    let answer = tokio::time::timeout(Duration::from_secs(10), framed.next())
        .await
        .expect("an answer in time");
    match answer {
        Some(Ok(Ok(Message::Nack(n)))) => {
            assert_eq!(n.code, NackCode::InvalidEvent);
            assert!(n.text.contains("empty"), "{n:?}");
        }
        other => panic!("expected a NACK, got {other:?}"),
    }
    let stopped = gateway.stop();
    assert!(
        stopped.stdout.contains("tcp/empty_batch"),
        "{}",
        stopped.stdout
    );
}

/// A reading with one value of `unit`, as a TCP device sends it.
fn tcp_reading(device: &str, seq: u64, unit: &str) -> Event {
    Event {
        device_id: device.into(),
        seq,
        time_ms: 1_700_000_000_000 + seq,
        body: Body::Reading(Reading {
            values: vec![SensorValue {
                name: "t".into(),
                value: 20.0,
                unit: unit.into(),
            }],
        }),
    }
}

async fn next_answer(framed: &mut Framed<TcpStream, MessageCodec>) -> Option<Message> {
    match tokio::time::timeout(Duration::from_secs(10), framed.next()).await {
        Ok(Some(Ok(Ok(m)))) => Some(m),
        Ok(other) => panic!("expected an answer, got {other:?}"),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_tcp_batch_gets_exactly_one_answer_naming_what_was_refused() {
    let topics = Topics::unique("answer");
    let mut gateway = Gateway::start(None, &topics);
    let mut framed = tributary_tests::raw_tcp(gateway.tcp).await;
    framed.send(&hello_frame("ans-1")).await.expect("HELLO");
    // Two batches back to back, the first with two events that can never be stored: a unit
    // that would break the CSV format's values column, and an event for another device.
    let first = vec![
        tcp_reading("ans-1", 1, "Cel"),
        tcp_reading("ans-1", 2, "a,b|c:d\"e"),
        tcp_reading("ans-2", 3, "Cel"),
        tcp_reading("ans-1", 4, "Cel"),
    ];
    framed.send(&Message::Events(first)).await.expect("EVENTS");
    framed
        .send(&Message::Events(vec![
            tcp_reading("ans-1", 4, "Cel"),
            tcp_reading("ans-1", 5, "Cel"),
        ]))
        .await
        .expect("EVENTS");
    match next_answer(&mut framed).await {
        Some(Message::Answer(a)) => {
            assert_eq!((a.up_to_seq, a.stored, a.duplicates), (4, 2, 0), "{a:?}");
            let refused: Vec<_> = a.refused.iter().map(|r| (r.seq, r.code)).collect();
            assert_eq!(
                refused,
                [(2, NackCode::InvalidEvent), (3, NackCode::InvalidEvent)],
                "{a:?}"
            );
            assert!(a.refused[0].text.contains("bad unit"), "{a:?}");
            assert!(a.refused[1].text.contains("ans-2"), "{a:?}");
        }
        other => panic!("expected one ANSWER for the first batch, got {other:?}"),
    }
    // The second batch's answer comes next, not a leftover of the first: seq 4 again is a
    // recognised retransmission.
    match next_answer(&mut framed).await {
        Some(Message::Answer(a)) => {
            assert_eq!((a.up_to_seq, a.stored, a.duplicates), (5, 1, 1), "{a:?}");
            assert!(a.refused.is_empty(), "{a:?}");
        }
        other => panic!("expected one ANSWER for the second batch, got {other:?}"),
    }
    drop(framed);
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let seqs: Vec<_> = gateway
        .sink_lines(&topics.readings)
        .iter()
        .map(|l| l["value"]["seq"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(seqs, [1, 4, 5]);
    let dead = gateway.sink_lines(&topics.dead_letter);
    assert_eq!(dead.len(), 2, "each refused event is kept: {dead:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_2_device_still_gets_a_nack_per_refused_event_then_the_ack() {
    let topics = Topics::unique("legacy");
    let mut gateway = Gateway::start(None, &topics);
    let mut framed = tributary_tests::raw_tcp(gateway.tcp).await;
    let v2 = |m: &Message| encode_frame_version(m, 2).expect("v2 frame");
    let hello = Message::Hello(Hello {
        protocol_version: 2,
        device_id: "old-2".into(),
        password: None,
        session: None,
    });
    let events = Message::Events(vec![
        tcp_reading("old-2", 1, "Cel"),
        tcp_reading("old-2", 2, "a|b"),
    ]);
    let raw = framed.get_mut();
    raw.write_all(&v2(&hello)).await.expect("HELLO");
    raw.write_all(&v2(&events)).await.expect("EVENTS");
    match next_answer(&mut framed).await {
        Some(Message::Nack(n)) => {
            assert_eq!(n.code, NackCode::InvalidEvent);
            assert!(n.text.contains("seq 2"), "{n:?}");
        }
        other => panic!("expected a NACK, got {other:?}"),
    }
    assert_eq!(framed.codec().peer_version(), 2, "answered in version 2");
    match next_answer(&mut framed).await {
        Some(Message::Ack(a)) => assert_eq!(a.up_to_seq, 2),
        other => panic!("expected the ACK, got {other:?}"),
    }
    drop(framed);
    assert!(gateway.stop().status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_tcp_session_is_closed_after_the_idle_timeout_and_counted() {
    let topics = Topics::unique("idle");
    let mut gateway = Gateway::start_with_tcp(None, &topics, "idle_timeout_ms = 500\n", "");
    let mut framed = tributary_tests::raw_tcp(gateway.tcp).await;
    framed.send(&hello_frame("quiet-1")).await.expect("HELLO");
    // Nothing more: the gateway closes the connection after half a second of silence.
    let end = tokio::time::timeout(Duration::from_secs(10), framed.next())
        .await
        .expect("closed well before 10 s");
    assert!(end.is_none(), "closed without a message: {end:?}");
    let stopped = gateway.stop();
    assert!(
        stopped.stdout.contains("tcp/idle_timeout"),
        "{}",
        stopped.stdout
    );
}

/// A blocking connection whose receive buffer is as small as the kernel allows, so a peer that
/// does not read fills it quickly.
fn small_window_connect(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("connect");
        let std = stream.into_std().expect("std stream");
        std.set_nonblocking(false).expect("blocking");
        std
    })
}

#[test]
fn shutdown_is_bounded_by_the_grace_period_whatever_the_peers_do() {
    let topics = Topics::unique("grace");
    let grace = Duration::from_millis(2000);
    let mut gateway = Gateway::start_with_grace(None, &topics, 2000);
    // A stored event, so the forwarder has something to do as well.
    assert!(mosquitto_pub(
        gateway.mqtt.port(),
        1,
        "devices/grace-0/readings",
        &reading_of_len(1, 200)
    ));
    // A TCP device that said HELLO and then half of a frame: the header announces 1000 bytes,
    // ten arrive.
    let mut tcp = std::net::TcpStream::connect(gateway.tcp).expect("connect");
    let hello = tributary_protocol::encode_frame(&hello_frame("grace-1")).expect("HELLO");
    tcp.write_all(&hello).expect("HELLO");
    let mut half = 1001u32.to_le_bytes().to_vec();
    half.extend_from_slice(&[0; 14]);
    tcp.write_all(&half).expect("half a frame");
    // An MQTT device that connected and then sent half of a PUBLISH (100 bytes announced).
    let mut mqtt = std::net::TcpStream::connect(gateway.mqtt).expect("connect");
    mqtt.write_all(&[
        0x10, 0x13, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x07, b'g',
        b'r', b'a', b'c', b'e', b'-', b'2',
    ])
    .expect("CONNECT");
    let mut connack = [0u8; 4];
    mqtt.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    mqtt.read_exact(&mut connack).expect("CONNACK");
    mqtt.write_all(&[0x32, 100, 0x00, 0x19])
        .expect("half a PUBLISH");
    // A socket that never says anything at all.
    let _silent = std::net::TcpStream::connect(gateway.tcp).expect("connect");
    // A TCP device that sends and never reads its answers: empty batches, each answered with
    // a NACK, until the gateway is stuck writing to it and so stops reading, and the device's
    // own writes stall.
    let mut greedy = small_window_connect(gateway.tcp);
    let hello = tributary_protocol::encode_frame(&hello_frame("grace-3")).expect("HELLO");
    greedy.write_all(&hello).expect("HELLO");
    let empty = tributary_protocol::encode_frame(&Message::Events(Vec::new())).expect("EVENTS");
    let chunk: Vec<u8> = empty
        .iter()
        .copied()
        .cycle()
        .take(empty.len() * 4096)
        .collect();
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = written.clone();
    let flooding = std::thread::spawn(move || {
        while greedy.write_all(&chunk).is_ok() {
            counter.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
        }
    });
    let mut last = usize::MAX;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = written.load(std::sync::atomic::Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let asked = std::time::Instant::now();
    let stopped = gateway.stop();
    let took = asked.elapsed();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    // The grace period, plus what a process needs to start exiting; a fixed margin, far below
    // the 2 × grace (ingest, then the forwarder) or the peers' timeouts it took before.
    assert!(
        took < grace + Duration::from_millis(1500),
        "stopped after {took:?} with shutdown_grace_ms = 2000:\n{}",
        stopped.stderr
    );
    let readings = gateway.sink_lines(&topics.readings);
    assert_eq!(
        readings.len(),
        1,
        "the stored event was forwarded: {readings:?}"
    );
    assert!(flooding.join().is_ok());
}
