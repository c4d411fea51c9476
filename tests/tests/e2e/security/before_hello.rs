//! An unauthenticated peer on the depot's network against the TCP listener, with the attacker's
//! bytes written here: before a HELLO is accepted, a connection may send only a HELLO, within
//! an absolute deadline; anything else gets one answer and the connection closes. Nothing it
//! sent is stored, it is counted, and a real device is unaffected.

use std::io::Write;
use std::time::Instant;

use tributary_protocol::frame::{seal_in_place_version, FRAME_HEADER_LEN};
use tributary_protocol::{encode_frame_version, Hello, Message};

use super::*;

/// An MQTT 3.1.1 CONNECT written by hand (client libraries refuse what the attacks send):
/// connect `flags`, keep-alive 60, then each of `fields` with its length (under 128 bytes in
/// all).
fn connect_3_1_1(flags: u8, fields: &[&[u8]]) -> Vec<u8> {
    let field = |b: &[u8]| [&(b.len() as u16).to_be_bytes()[..], b].concat();
    let mut body = [&field(b"MQTT")[..], &[4, flags, 0, 60]].concat();
    for f in fields {
        body.extend_from_slice(&field(f));
    }
    [&[0x10, body.len() as u8][..], &body].concat()
}

/// A frame with a valid length and CRC around `payload`, which decodes to nothing.
fn sealed(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; FRAME_HEADER_LEN + 1 + payload.len()];
    out[FRAME_HEADER_LEN + 1..].copy_from_slice(payload);
    seal_in_place_version(&mut out, payload.len(), PROTOCOL_VERSION).expect("sealed");
    out
}

fn sink_text(gateway: &Gateway) -> String {
    let mut all = String::new();
    if let Ok(dir) = std::fs::read_dir(gateway.sink_dir()) {
        for f in dir.flatten() {
            all.push_str(&std::fs::read_to_string(f.path()).unwrap_or_default());
        }
    }
    all
}

#[test]
fn before_hello_garbage_is_answered_once_closed_and_never_stored() {
    let topics = Topics::unique("pre-hello");
    let mut gateway = Gateway::start(None, &topics);

    // 1. Twenty 256 KiB frames with valid CRCs and undecodable bodies, no HELLO. Before, each
    // was committed and fsynced as a dead letter (10.5 MB in 1.9 s from one socket).
    let mut s = std::net::TcpStream::connect(gateway.tcp).expect("connect");
    let junk = sealed(&vec![0xff; 256 * 1024 - 16]);
    for _ in 0..20 {
        if s.write_all(&junk).is_err() {
            break; // closed after the first, as it should be
        }
    }
    let (answer, closed) = read_to_close(&mut s, Duration::from_secs(5));
    assert!(closed, "the connection is closed after the first frame");
    assert!(
        String::from_utf8_lossy(&answer).contains("the first frame must be a HELLO"),
        "one answer says why: {answer:?}"
    );

    // 2. EVENTS before any HELLO.
    let mut s = std::net::TcpStream::connect(gateway.tcp).expect("connect");
    let events = Message::Events(vec![event("nobody", 1)]);
    s.write_all(&encode_frame_version(&events, PROTOCOL_VERSION).expect("frame"))
        .expect("send");
    let (answer, closed) = read_to_close(&mut s, Duration::from_secs(5));
    assert!(closed, "closed after EVENTS before HELLO");
    assert!(String::from_utf8_lossy(&answer).contains("EVENTS before HELLO"));

    // 3. A HELLO that fails to decode, carrying a password: a device id with a space is
    // refused by the decoder. Before, the whole frame, password included, went to Kafka's
    // dead-letter topic.
    let hello = Message::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        device_id: "ok-id".into(),
        password: Some("hunter2-secret-pw".into()),
        session: None,
    });
    let mut frame = encode_frame_version(&hello, PROTOCOL_VERSION).expect("frame");
    let at = frame
        .windows(5)
        .position(|w| w == b"ok-id")
        .expect("the id is in the frame");
    frame[at + 2] = b' ';
    let body_len = frame.len() - FRAME_HEADER_LEN - 1;
    seal_in_place_version(&mut frame, body_len, PROTOCOL_VERSION).expect("resealed");
    let mut s = std::net::TcpStream::connect(gateway.tcp).expect("connect");
    s.write_all(&frame).expect("send");
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(5));
    assert!(closed, "closed after a HELLO that does not decode");

    // 4. A peer dripping one byte every 2 s keeps no slot past the HELLO deadline (10 s from
    // the connection, however much arrives meanwhile).
    let mut s = std::net::TcpStream::connect(gateway.tcp).expect("connect");
    let started = Instant::now();
    let mut closed_at = None;
    for b in [0x40u8, 0, 0, 0, 1, 2, 3] {
        if s.write_all(&[b]).is_err() {
            closed_at = Some(started.elapsed());
            break;
        }
        let (_, closed) = read_to_close(&mut s, Duration::from_secs(2));
        if closed {
            closed_at = Some(started.elapsed());
            break;
        }
    }
    let closed_at = closed_at.expect("the drip was cut off");
    assert!(
        closed_at < Duration::from_secs(13),
        "cut off at the 10 s HELLO deadline, not reset by each byte: {closed_at:?}"
    );

    // A real device is unaffected.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut d = tributary_sim::tcp::TcpDevice::connect(gateway.tcp, "real-1", None, None)
            .await
            .expect("connect");
        d.send_batch(&[event("real-1", 1)]).await.expect("stored");
    });
    gateway.wait_drained(Duration::from_secs(30));

    let stopped = gateway.stop();
    assert!(stopped.status.success());
    // Nothing of the attacker's is stored; all of it is counted.
    assert!(
        gateway.sink_lines(&topics.dead_letter).is_empty(),
        "no dead letters from unauthenticated peers"
    );
    let text = sink_text(&gateway);
    assert!(
        !text.contains("hunter2"),
        "the password never reaches the sink"
    );
    assert!(!text.contains("68756e74657232"), "not even hex-encoded");
    assert_eq!(
        gateway.sink_lines(&topics.readings).len(),
        1,
        "the real device's event"
    );
    assert_eq!(
        stopped.refused("tcp/bad_frame_before_hello"),
        2,
        "{}",
        stopped.stdout
    );
    assert_eq!(
        stopped.refused("tcp/protocol_violation"),
        1,
        "{}",
        stopped.stdout
    );
    assert_eq!(
        stopped.refused("tcp/hello_timeout"),
        1,
        "{}",
        stopped.stdout
    );
    assert!(!stopped.stderr.contains("hunter2"), "nor the log");
}

/// A refused CONNECT whose client id carries a line break wrote a forged `ERROR` line into the
/// text log (the journal). It stays inside its own line now.
#[test]
fn a_client_id_with_a_line_break_cannot_forge_a_log_line() {
    let topics = Topics::unique("logforge");
    let dir = tempfile::tempdir().expect("temp dir");
    import_passwords(&dir.path().join("devices.passwd"), "env-1 pw-one\n");
    let mut gateway = Gateway::start_in_dir(
        dir,
        None,
        &topics,
        "",
        "[auth]\ncredentials = \"{dir}/devices.passwd\"\nanonymous = \"never\"\n",
    );
    // MQTT 3.1.1 CONNECT, written by hand (client libraries refuse such an id): clean session,
    // user name and password flags, keep-alive 60, then the client id, user and password.
    let connect = connect_3_1_1(
        0b1100_0010,
        &[b"x\nERROR forged-by-attacker", b"nobody", b"x"],
    );
    let mut s = std::net::TcpStream::connect(gateway.mqtt).expect("connect");
    s.write_all(&connect).expect("CONNECT");
    let (connack, _) = read_to_close(&mut s, Duration::from_secs(5));
    assert_eq!(connack.first(), Some(&0x20), "a CONNACK: {connack:?}");
    assert_ne!(connack.get(3), Some(&0), "refused: {connack:?}");
    let stopped = gateway.stop();
    let log = stopped.stderr;
    assert!(
        log.contains("Device refused.") && log.contains("CONNECT"),
        "{log}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("ERROR forged")),
        "no forged line:\n{log}"
    );
    assert!(
        log.contains("\\nERROR forged-by-attacker"),
        "escaped in place:\n{log}"
    );
}

/// Before: 200 unfinished CONNECTs of 300 KiB held 61 MiB until their deadline, and a CONNECT
/// that failed to parse was kept, bytes and password included, as a dead letter. Now a CONNECT
/// announcing more than 64 KiB is refused on its first bytes, and nothing an unauthenticated
/// MQTT peer sends is stored.
#[test]
fn an_unauthenticated_mqtt_peer_holds_no_memory_and_stores_nothing() {
    let topics = Topics::unique("mqtt-pre-connect");
    let mut gateway = Gateway::start(None, &topics);
    // A CONNECT whose remaining length says 300 KiB (varint 0x80 0xe0 0x12), then a trickle.
    let mut s = std::net::TcpStream::connect(gateway.mqtt).expect("connect");
    s.write_all(&[0x10, 0x80, 0xe0, 0x12, 0x00, 0x04, b'M', b'Q'])
        .expect("the start of a CONNECT");
    let started = Instant::now();
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(5));
    assert!(
        closed,
        "closed on the first bytes, not at the 10 s deadline"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // A CONNECT that does not parse (a will QoS of 3), carrying a password.
    let connect = connect_3_1_1(
        0b1101_1110,
        &[
            b"env-1",
            b"will/topic",
            b"will",
            b"env-1",
            b"hunter2-secret-pw",
        ],
    );
    let mut s = std::net::TcpStream::connect(gateway.mqtt).expect("connect");
    s.write_all(&connect).expect("CONNECT");
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(5));
    assert!(closed, "closed after a CONNECT that does not parse");

    // A real device is unaffected.
    assert!(mosquitto_pub_with(
        gateway.mqtt.port(),
        1,
        "devices/real-2/readings",
        &reading("real-2", 1),
        &["-i", "real-2"],
    ));
    gateway.wait_drained(Duration::from_secs(30));
    let stopped = gateway.stop();
    assert!(stopped.status.success());
    assert!(
        gateway.sink_lines(&topics.dead_letter).is_empty(),
        "nothing of the unauthenticated peers is stored"
    );
    let text = sink_text(&gateway);
    assert!(!text.contains("hunter2") && !text.contains("68756e74657232"));
    assert_eq!(gateway.sink_lines(&topics.readings).len(), 1);
    assert_eq!(stopped.refused("mqtt/malformed"), 2, "{}", stopped.stdout);
}
