//! The connection layer under the load an adversary or a broken fleet makes: connections held
//! open without a word, connections over the cap, a payload far larger than a reading.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tributary_tests::gateway::{Gateway, Topics};

/// The gateway's resident memory, in KiB.
fn rss_kib(gateway: &Gateway) -> u64 {
    let pid = gateway.pid().expect("running");
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("/proc status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Waits until every socket has been closed by the gateway (EOF or reset); returns how many
/// were still open at `deadline`.
fn wait_closed(sockets: &mut [TcpStream], deadline: Instant) -> usize {
    for s in sockets.iter() {
        s.set_nonblocking(true).expect("nonblocking");
    }
    let mut open: Vec<usize> = (0..sockets.len()).collect();
    let mut buf = [0u8; 64];
    while !open.is_empty() && Instant::now() < deadline {
        open.retain(|&i| match sockets[i].read(&mut buf) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Err(_) => false,
        });
        std::thread::sleep(Duration::from_millis(100));
    }
    open.len()
}

#[test]
fn connections_held_open_without_a_word_cost_little_memory_and_are_closed_on_time() {
    let _turn = tributary_tests::LOAD_TURN.blocking_lock();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let topics = Topics::unique("held");
    let mut gateway = Gateway::start_with_tcp(None, &topics, "idle_timeout_ms = 3000\n", "");
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(&gateway);
    const N: usize = 600;
    // A frame header announcing 256 KiB (the default limit), then nothing: once before HELLO,
    // once after it.
    let header = {
        let mut h = (256u32 * 1024).to_le_bytes().to_vec();
        h.extend_from_slice(&[0; 4]);
        h
    };
    let hello = tributary_protocol::encode_frame(&tributary_protocol::Message::Hello(
        tributary_protocol::Hello {
            protocol_version: tributary_protocol::PROTOCOL_VERSION,
            device_id: "held-1".into(),
            password: None,
            session: None,
        },
    ))
    .expect("HELLO");
    let mut sockets = Vec::with_capacity(3 * N);
    for i in 0..N {
        let mut s = TcpStream::connect(gateway.tcp).expect("connect");
        s.write_all(&header).expect("header");
        sockets.push(s);
        let mut s = TcpStream::connect(gateway.tcp).expect("connect");
        s.write_all(&hello).expect("HELLO");
        s.write_all(&header).expect("header");
        sockets.push(s);
        // And MQTT sockets that never send CONNECT.
        sockets.push(TcpStream::connect(gateway.mqtt).expect("connect"));
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let held = rss_kib(&gateway);
    let per_connection = (held.saturating_sub(before)) * 1024 / (3 * N as u64);
    eprintln!("RSS {before} KiB -> {held} KiB: {per_connection} bytes per held connection");
    // Reserving the announced frame would cost 256 KiB each; a connection's buffers and task
    // are a few KiB.
    assert!(
        per_connection < 48 * 1024,
        "{per_connection} bytes per held connection (RSS {before} KiB -> {held} KiB)"
    );
    // Closed by the HELLO and CONNECT timeouts (10 s) and the idle timeout (3 s).
    let still_open = wait_closed(&mut sockets, Instant::now() + Duration::from_secs(25));
    assert_eq!(still_open, 0, "every silent connection is closed on time");
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    for (label, at_least) in [
        ("tcp/hello_timeout", N),
        ("tcp/idle_timeout", N),
        ("mqtt/connect_timeout", N),
    ] {
        assert!(
            stopped.refused(label) >= at_least as u64,
            "{label} counted: {}",
            stopped.stdout
        );
    }
}

#[test]
fn connections_over_the_cap_are_refused_with_an_answer_counted_and_cost_nothing_later() {
    let topics = Topics::unique("cap");
    let cap = "max_connections = 3\n";
    let mut gateway = Gateway::start_with_tables(None, &topics, (cap, cap), "");
    let connect = |client: &[u8]| -> Vec<u8> {
        let mut p = vec![0x10, (12 + client.len()) as u8, 0x00, 0x04];
        p.extend_from_slice(b"MQTT");
        p.extend_from_slice(&[0x04, 0x02, 0x00, 0x3C, 0x00, client.len() as u8]);
        p.extend_from_slice(client);
        p
    };
    let mut held = Vec::new();
    for i in 0..3 {
        let mut s = TcpStream::connect(gateway.mqtt).expect("connect");
        s.write_all(&connect(format!("cap-{i}").as_bytes()))
            .expect("CONNECT");
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).expect("CONNACK");
        assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "accepted within the cap");
        held.push(s);
        held.push(TcpStream::connect(gateway.tcp).expect("connect"));
    }
    // Over the cap: MQTT gets CONNACK 3 "server unavailable", TCP a NACK busy; both closed.
    let mut s = TcpStream::connect(gateway.mqtt).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(&connect(b"cap-9")).expect("CONNECT");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert_eq!(
        answer,
        [0x20, 0x02, 0x00, 0x03],
        "CONNACK server unavailable"
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        use futures::StreamExt;
        let mut framed = tributary_tests::raw_tcp(gateway.tcp).await;
        match tokio::time::timeout(Duration::from_secs(10), framed.next()).await {
            Ok(Some(Ok(Ok(tributary_protocol::Message::Nack(n))))) => {
                assert_eq!(n.code, tributary_protocol::NackCode::Busy);
                assert!(n.text.contains("too many connections"), "{n:?}");
            }
            other => panic!("expected NACK busy, got {other:?}"),
        }
    });
    // A storm over the cap: each is refused or closed at once, and counted.
    let storm: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(gateway.tcp).ok())
        .collect();
    let mut storm = storm;
    assert_eq!(
        wait_closed(&mut storm, Instant::now() + Duration::from_secs(20)),
        0,
        "connections over the cap are closed"
    );
    // Slots come back when held connections go.
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let mut s = TcpStream::connect(gateway.mqtt).expect("connect");
    s.write_all(&connect(b"cap-10")).expect("CONNECT");
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "a freed slot is taken");
    drop(s);
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(
        stopped.refused("mqtt/over_limit") >= 1,
        "{}",
        stopped.stdout
    );
    assert!(
        stopped.refused("tcp/over_limit") >= 301,
        "{}",
        stopped.stdout
    );
}

/// `mosquitto_pub -f FILE` at QoS 1: whether the broker acknowledged it.
fn publish_file(port: u16, topic: &str, payload: &[u8]) -> bool {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), payload).expect("write payload");
    let path = file.path().display().to_string();
    tributary_tests::mosquitto_pub_args(port, 1, &["-t", topic, "-f", &path])
}

#[test]
fn a_json_array_of_10000_events_is_stored_whole_or_refused_whole_never_reset() {
    let topics = Topics::unique("array");
    let mut gateway = Gateway::start_with_mqtt(None, &topics, "max_payload_bytes = 2097152\n", "");
    let array = |n: u64| -> Vec<u8> {
        let events: Vec<String> = (1..=n)
            .map(|seq| {
                format!(
                    r#"{{"seq":{seq},"time_ms":{},"values":[{{"name":"temperature","value":21.5,"unit":"Cel"}},{{"name":"humidity","value":40.25,"unit":"%RH"}}]}}"#,
                    1_767_225_600_000 + seq
                )
            })
            .collect();
        format!("[{}]", events.join(",")).into_bytes()
    };
    let ten_thousand = array(10_000);
    assert!(
        ten_thousand.len() > 1_000_000,
        "{} bytes",
        ten_thousand.len()
    );
    assert!(publish_file(
        gateway.mqtt.port(),
        "devices/arr-1/readings",
        &ten_thousand
    ));
    // Over the limit: acknowledged, so the device stops resending, and kept as a dead letter.
    let too_big = array(20_000);
    assert!(too_big.len() > 2_097_152);
    assert!(publish_file(
        gateway.mqtt.port(),
        "devices/arr-1/readings",
        &too_big
    ));
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let seqs: Vec<u64> = gateway
        .sink_lines(&topics.readings)
        .iter()
        .filter_map(|l| l["value"]["seq"].as_u64())
        .collect();
    assert_eq!(
        seqs,
        (1..=10_000).collect::<Vec<_>>(),
        "all of them, in order"
    );
    let dead = gateway.sink_lines(&topics.dead_letter);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]["headers"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("limit 2097152"),
        "{:?}",
        dead[0]["headers"]
    );
    assert_eq!(stopped.refused("mqtt/too_large"), 1, "{}", stopped.stdout);
}

#[test]
fn a_silent_mqtt_session_is_closed_after_one_and_a_half_keep_alives_and_counted() {
    let topics = Topics::unique("keepalive");
    let mut gateway = Gateway::start(None, &topics);
    let mut s = TcpStream::connect(gateway.mqtt).expect("connect");
    // CONNECT, MQTT 3.1.1, clean session, keep-alive 1 s, client id "ka-1".
    s.write_all(&[
        0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x01, 0x00, 0x04, b'k',
        b'a', b'-', b'1',
    ])
    .expect("CONNECT");
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    let asked = Instant::now();
    assert_eq!(
        wait_closed(&mut [s], asked + Duration::from_secs(10)),
        0,
        "closed for silence"
    );
    assert!(
        asked.elapsed() >= Duration::from_millis(1400),
        "not before 1.5 × keep-alive: {:?}",
        asked.elapsed()
    );
    let stopped = gateway.stop();
    assert_eq!(
        stopped.refused("mqtt/keepalive_timeout"),
        1,
        "{}",
        stopped.stdout
    );
}
