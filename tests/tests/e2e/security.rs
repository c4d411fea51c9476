//! Device identity end to end: TLS with real certificates (rcgen), real clients (mosquitto_pub
//! with --cafile/--cert/--key and -u/-P, rumqttc over TLS, the protocol's own TCP client over
//! TLS), and what reached Kafka.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_util::codec::Framed;
use tributary_protocol::codec::MessageCodec;
use tributary_protocol::{Event, Hello, Message, NackCode, PROTOCOL_VERSION};
use tributary_tests::gateway::{Gateway, Topics};
use tributary_tests::kafka::{consume, create_topics};
use tributary_tests::pki::{Pair, Pki};
use tributary_tests::{binary, env, import_passwords, mosquitto_pub_with};

mod admin;
mod before_hello;
mod exhaustion;
mod files;
mod password_flood;
mod revocation;
mod seq;
mod tcp;
mod teltonika;

const IDLE: Duration = Duration::from_secs(20);

fn reading(device: &str, seq: u64) -> String {
    format!(
        r#"{{"device_id":"{device}","seq":{seq},"time_ms":{},"values":[{{"name":"t","value":20.5,"unit":"Cel"}}]}}"#,
        1_700_000_000_000 + seq % 1_000_000
    )
}

/// A TLS gateway forwarding to Kafka, with passwords for `env-1` and `env-2`, client
/// certificates from the test CA, and a CRL.
struct Site {
    pki: Pki,
    /// A device certificate the CRL lists.
    revoked: Pair,
    gateway: Gateway,
    topics: Topics,
    brokers: String,
}

fn site(stem: &str, extra_auth: &str) -> Site {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut pki = Pki::new(dir.path());
    let server = pki.server();
    let revoked = pki.revoked_device("revoked-1");
    let crl = pki.write_crl();
    let passwd = dir.path().join("devices.passwd");
    import_passwords(&passwd, "env-1 pw-one\nenv-2 pw-two\n");
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique(stem);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(create_topics(&brokers, &topics.all(), 3));
    let sections = format!(
        "[tls]\ncert = {cert:?}\nkey = {key:?}\nclient_ca = {ca:?}\ncrl = [{crl:?}]\n\
         [auth]\ncredentials = {passwd:?}\nanonymous = \"never\"\n{extra_auth}",
        cert = server.cert,
        key = server.key,
        ca = pki.ca_file(),
    );
    let gateway = Gateway::start_secure(dir, Some(&brokers), &topics, &sections);
    Site {
        pki,
        revoked,
        gateway,
        topics,
        brokers,
    }
}

fn tls_pub(site: &Site, args: &[&str], topic: &str, message: &str) -> bool {
    let port = site.gateway.mqtt_tls.expect("TLS listener").port();
    let ca = site.pki.ca_file();
    let mut all = vec!["--cafile", ca.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    mosquitto_pub_with(port, 1, topic, message, &all)
}

fn cert_args(pair: &Pair) -> [&str; 4] {
    [
        "--cert",
        pair.cert.to_str().expect("utf-8"),
        "--key",
        pair.key.to_str().expect("utf-8"),
    ]
}

#[test]
fn devices_write_only_as_themselves_over_mqtt_tls_and_every_refusal_is_counted() {
    let mut site = site("sec-mqtt", "");
    let cert_1 = site.pki.device("cert-1");
    let expired = site.pki.expired_device("old-1");
    let pw = |id: &'static str, pass: &'static str| ["-i", id, "-u", id, "-P", pass];

    // Accepted: a password over TLS, and a client certificate (no password).
    assert!(tls_pub(
        &site,
        &pw("env-1", "pw-one"),
        "devices/env-1/readings",
        &reading("env-1", 1)
    ));
    let mut with_cert = vec!["-i", "cert-1"];
    with_cert.extend(cert_args(&cert_1));
    assert!(tls_pub(
        &site,
        &with_cert,
        "devices/cert-1/readings",
        &reading("cert-1", 1)
    ));

    // Refused at CONNECT: wrong password, unknown device, client id that is not the user,
    // no credentials at all; refused in the handshake: expired and revoked certificates.
    assert!(!tls_pub(
        &site,
        &pw("env-1", "wrong"),
        "devices/env-1/readings",
        &reading("env-1", 2)
    ));
    assert!(!tls_pub(
        &site,
        &pw("env-9", "pw-one"),
        "devices/env-9/readings",
        &reading("env-9", 1)
    ));
    assert!(!tls_pub(
        &site,
        &["-i", "env-2", "-u", "env-1", "-P", "pw-one"],
        "devices/env-2/readings",
        &reading("env-2", 1)
    ));
    assert!(!tls_pub(
        &site,
        &["-i", "anon-1"],
        "devices/anon-1/readings",
        &reading("anon-1", 1)
    ));
    let mut old = vec!["-i", "old-1"];
    old.extend(cert_args(&expired));
    assert!(!tls_pub(
        &site,
        &old,
        "devices/old-1/readings",
        &reading("old-1", 1)
    ));
    let mut gone = vec!["-i", "revoked-1"];
    gone.extend(cert_args(&site.revoked));
    assert!(!tls_pub(
        &site,
        &gone,
        "devices/revoked-1/readings",
        &reading("revoked-1", 1)
    ));
    // The plain listener is on loopback, but anonymous = "never": refused there too.
    assert!(!mosquitto_pub_with(
        site.gateway.mqtt.port(),
        1,
        "devices/anon-2/readings",
        &reading("anon-2", 1),
        &["-i", "anon-2"]
    ));

    // Impersonation: env-1's credentials publishing as env-2, on the topic and in the payload.
    // Acknowledged (auth.on_deny = "acknowledge") so the device does not resend forever, but
    // only kept as a dead letter.
    assert!(tls_pub(
        &site,
        &pw("env-1", "pw-one"),
        "devices/env-2/readings",
        &reading("env-2", 5)
    ));
    assert!(tls_pub(
        &site,
        &pw("env-1", "pw-one"),
        "devices/env-1/readings",
        &reading("env-2", 6)
    ));

    let stopped = site.gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let readings = consume(&site.brokers, &site.topics.readings, 2, IDLE);
    let keys: BTreeSet<&str> = readings.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys, BTreeSet::from(["cert-1", "env-1"]), "{readings:?}");
    assert_eq!(readings.len(), 2, "{readings:?}");
    let dead = consume(&site.brokers, &site.topics.dead_letter, 2, IDLE);
    let reasons: Vec<&str> = dead
        .iter()
        .filter_map(|m| m.headers.get("reason").map(String::as_str))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("acl") && r.contains("devices/env-2/readings")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("differs from the topic")),
        "{reasons:?}"
    );
    for counter in [
        "mqtt/auth_wrong_password",
        "mqtt/auth_unknown_device",
        "mqtt/auth_id_mismatch",
        "mqtt/auth_missing",
        "mqtt/tls_cert_expired",
        "mqtt/tls_cert_revoked",
        "mqtt/acl",
    ] {
        assert!(
            stopped
                .stdout
                .lines()
                .any(|l| l.trim_start().starts_with(counter)),
            "{counter} not counted in the summary:\n{}",
            stopped.stdout
        );
    }
}

/// A TCP protocol client over TLS.
async fn tcp_tls(
    site: &Site,
    identity: Option<&Pair>,
) -> Framed<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, MessageCodec> {
    let addr = site.gateway.tcp_tls.expect("TLS listener");
    let connector = tokio_rustls::TlsConnector::from(site.pki.client_config(identity));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    Framed::new(tls, MessageCodec::new(1 << 20))
}

fn event(device: &str, seq: u64) -> Event {
    let text = reading(device, seq).replacen('{', r#"{"kind":"reading","#, 1);
    tributary_protocol::json::decode(device, tributary_protocol::Kind::Reading, text.as_bytes())
        .expect("event json")
        .remove(0)
        .0
}

#[test]
fn sighup_reloads_credentials_closing_a_removed_devices_session_and_refusing_a_broken_file() {
    let site = site("sec-reload", "");
    let passwd = site.gateway.dir.path().join("devices.passwd");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // env-2 connects with rumqttc over TLS and stays connected.
    let port = site.gateway.mqtt_tls.expect("TLS").port();
    let mut options = rumqttc::MqttOptions::new("env-2", "localhost", port);
    options.set_credentials("env-2", "pw-two");
    options.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(site.pki.client_config(None)),
    ));
    let (client, mut events) = rumqttc::AsyncClient::new(options, 16);
    let acks = rt.block_on(async {
        let publish = |seq: u64| {
            let client = client.clone();
            async move {
                client
                    .publish(
                        "devices/env-2/readings",
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        reading("env-2", seq),
                    )
                    .await
                    .expect("publish");
            }
        };
        let mut acks = 0;
        publish(1).await;
        acks += next_puback(&mut events).await;
        // env-2 is removed from the file and the gateway reloads.
        let removed = Command::new(binary("tributary"))
            .args(["devices", "remove", "env-2", "--file"])
            .arg(&passwd)
            .output()
            .expect("devices remove");
        assert!(removed.status.success());
        site.gateway.hangup();
        wait_for_log(&site.gateway, "Reloaded credentials", 1).await;
        // Its open session is closed: revocation reaches it (before, it streamed on and every
        // later event was stored).
        publish(2).await;
        assert!(
            closed(&mut events, Duration::from_secs(20)).await,
            "the removed device's session was closed, its publish unanswered"
        );
        acks
    });
    assert_eq!(acks, 1);
    // A new connection of env-2 is refused now; env-1 still gets in.
    assert!(!tls_pub(
        &site,
        &["-i", "env-2", "-u", "env-2", "-P", "pw-two"],
        "devices/env-2/readings",
        &reading("env-2", 3)
    ));
    assert!(tls_pub(
        &site,
        &["-i", "env-1", "-u", "env-1", "-P", "pw-one"],
        "devices/env-1/readings",
        &reading("env-1", 1)
    ));
    // A broken file is refused and the old one stays in force.
    std::fs::write(&passwd, "env-1 this is not a hash\n").expect("write");
    site.gateway.hangup();
    rt.block_on(wait_for_log(&site.gateway, "Reload refused", 1));
    assert!(tls_pub(
        &site,
        &["-i", "env-1", "-u", "env-1", "-P", "pw-one"],
        "devices/env-1/readings",
        &reading("env-1", 2)
    ));
}

/// Reads until the gateway closes the connection (or `within` passes); returns what it sent
/// and whether it closed.
fn read_to_close(stream: &mut std::net::TcpStream, within: Duration) -> (Vec<u8>, bool) {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => {}
        }
    }
    (got, false)
}

/// `tributary check-config` on `text` (written into `dir`): its exit code and its stderr.
fn check_config(dir: &std::path::Path, text: &str) -> (Option<i32>, String) {
    let config = dir.join("check.toml");
    std::fs::write(&config, text).expect("write");
    let out = Command::new(binary("tributary"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .expect("tributary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls until the gateway closes the session (`true`) or a PUBACK arrives (`false`).
async fn closed(events: &mut rumqttc::EventLoop, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        loop {
            match events.poll().await {
                Err(_) => return true,
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => return false,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// Polls a rumqttc event loop until the next PUBACK; returns 1.
async fn next_puback(events: &mut rumqttc::EventLoop) -> u32 {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(20), events.poll())
            .await
            .expect("in time")
            .expect("connection");
        if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = event {
            return 1;
        }
    }
}

/// Waits until `text` appears `times` times in the gateway's log.
async fn wait_for_log(gateway: &Gateway, text: &str, times: usize) {
    for _ in 0..200 {
        if gateway.log().matches(text).count() >= times {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {text:?} in the log:\n{}", gateway.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_thousand_devices_reconnecting_at_once_with_passwords_all_get_in() {
    let _turn = tributary_tests::LOAD_TURN.lock().await;
    use tributary_sim::scenario::{Group, Link, Scenario};
    const DEVICES: usize = 2000;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut pki = Pki::new(dir.path());
    let server = pki.server();
    let passwd = dir.path().join("devices.passwd");
    let lines: String = (0..DEVICES / 2)
        .flat_map(|i| [format!("storm-tcp-{i}"), format!("storm-mqtt-{i}")])
        .map(|id| format!("{id} pw-{id}\n"))
        .collect();
    import_passwords(&passwd, &lines);
    let topics = Topics::unique("sec-storm");
    let sections = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n[auth]\ncredentials = {passwd:?}\nanonymous = \"never\"\n",
        server.cert, server.key
    );
    let gateway = Gateway::start_secure(dir, None, &topics, &sections);
    let pid = gateway.pid().expect("running");

    let mut s = Scenario::plain(
        gateway.tcp_tls.expect("TLS"),
        gateway.mqtt_tls.expect("TLS"),
        Link::Tcp,
        "storm",
        DEVICES,
        2,
    );
    let tcp = Group {
        name: "tcp".into(),
        count: DEVICES / 2,
        ..s.groups[0].clone()
    };
    let mqtt = Group {
        name: "mqtt".into(),
        count: DEVICES / 2,
        link: Link::Mqtt { qos: 1 },
        ..s.groups[0].clone()
    };
    s.groups = vec![tcp, mqtt];
    s.ack_timeout = Duration::from_secs(60);
    s.give_up = Duration::from_secs(300);
    s.credentials = tributary_sim::security::Credentials {
        tls: Some(tributary_sim::security::tls_client(&pki.ca_file()).expect("CA")),
        password: Some("pw-{device}".into()),
        sessions: true,
    };

    let cpu = || tributary_sim::bench::proc::cpu_seconds(pid).unwrap_or(0.0);
    // Cold: nothing cached, every device costs one argon2id check. Then the same fleet
    // reconnects: the verified-password cache answers.
    for round in ["cold", "warm"] {
        let (cpu_before, started) = (cpu(), std::time::Instant::now());
        let report = tributary_tests::run(s.clone()).await;
        let failures: Vec<_> = report.failures().collect();
        assert!(
            failures.is_empty(),
            "{round}: {} failed: {:?}",
            failures.len(),
            failures.first()
        );
        assert_eq!(report.devices.len(), DEVICES);
        assert!(
            report.devices.iter().all(|d| d.acked == 2),
            "{round}: every device acknowledged"
        );
        println!(
            "{round}: {DEVICES} devices (TLS, passwords; half TCP, half MQTT) connected and \
             acknowledged in {:.1} s; gateway CPU {:.1} s; peak connections {}",
            started.elapsed().as_secs_f64(),
            cpu() - cpu_before,
            report.peak_connected
        );
    }
    let log = gateway.log();
    assert!(!log.contains("Device refused"), "no device refused:\n{log}");
}

#[test]
fn with_on_deny_disconnect_a_denied_publish_closes_the_connection_unacknowledged() {
    let mut site = site("sec-deny", "on_deny = \"disconnect\"\n");
    let pw = ["-i", "env-1", "-u", "env-1", "-P", "pw-one"];
    assert!(!tls_pub(
        &site,
        &pw,
        "devices/env-2/readings",
        &reading("env-2", 1)
    ));
    assert!(tls_pub(
        &site,
        &pw,
        "devices/env-1/readings",
        &reading("env-1", 1)
    ));
    let stopped = site.gateway.stop();
    assert!(stopped.stdout.contains("mqtt/acl"), "{}", stopped.stdout);
    let dead = consume(&site.brokers, &site.topics.dead_letter, 1, IDLE);
    assert!(
        dead.iter()
            .any(|m| m.headers.get("reason").is_some_and(|r| r.contains("acl"))),
        "kept as a dead letter: {dead:?}"
    );
    let readings = consume(&site.brokers, &site.topics.readings, 1, IDLE);
    assert_eq!(readings.len(), 1, "{readings:?}");
    assert_eq!(readings[0].key, "env-1");
}
