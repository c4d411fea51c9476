//! Devices that speak their own formats: payload mappings and presets, from a real MQTT client
//! through the gateway into Kafka, read back by a consumer.

use std::collections::BTreeSet;
use std::time::Duration;

use tributary_tests::gateway::{Gateway, Topics};
use tributary_tests::kafka::{consume, create_topics};
use tributary_tests::{env, mosquitto_pub};

const IDLE: Duration = Duration::from_secs(30);

/// From Tasmota's documentation: a BME280's telemetry.
const TASMOTA: &str = r#"{"Time":"2019-11-03T19:34:28","BME280":{"Temperature":21.3,"Humidity":44.0,"DewPoint":8.5,"Pressure":1013.2},"PressureUnit":"hPa","TempUnit":"C"}"#;
/// From the OwnTracks booklet: a location.
const OWNTRACKS: &str = r#"{"_type":"location","tid":"JJ","acc":10,"alt":100,"batt":85,"conn":"w","lat":52.5163,"lon":13.3777,"tst":1700000000,"vel":36,"cog":270}"#;

#[tokio::test(flavor = "multi_thread")]
async fn tasmota_and_owntracks_payloads_arrive_in_kafka_as_events() {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("presets");
    create_topics(&brokers, &topics.all(), 1).await;
    let gateway = Gateway::start_with(
        Some(&brokers),
        &topics,
        "[[mappings]]\npreset = \"tasmota\"\n[[mappings]]\npreset = \"owntracks\"\n",
    );
    let port = gateway.mqtt.port();
    // The plug publishes the same telemetry twice (as after a lost PUBACK): with no seq of its
    // own, both are stored, each with its own event-id.
    assert!(mosquitto_pub(
        port,
        1,
        "tele/tasmota_1A2B3C/SENSOR",
        TASMOTA
    ));
    assert!(mosquitto_pub(
        port,
        1,
        "tele/tasmota_1A2B3C/SENSOR",
        TASMOTA
    ));
    assert!(mosquitto_pub(port, 1, "owntracks/jane/phone", OWNTRACKS));
    // Another OwnTracks message type: acknowledged, kept as a dead letter that says why.
    assert!(mosquitto_pub(
        port,
        1,
        "owntracks/jane/phone",
        r#"{"_type":"lwt","tst":1700000001}"#
    ));

    let readings = consume(&brokers, &topics.readings, 3, IDLE);
    assert_eq!(readings.len(), 3, "{readings:?}");
    let plug: Vec<_> = readings
        .iter()
        .filter(|m| m.key == "tasmota_1A2B3C")
        .collect();
    assert_eq!(plug.len(), 2, "{readings:?}");
    let values = plug[0].value["values"]
        .as_array()
        .expect("a reading's values");
    assert!(
        values
            .iter()
            .any(|v| v["name"] == "BME280.Temperature" && v["value"] == 21.3 && v["unit"] == "Cel"),
        "{values:?}"
    );
    let ids: BTreeSet<&str> = plug
        .iter()
        .map(|m| m.headers["event-id"].as_str())
        .collect();
    assert_eq!(
        ids.len(),
        2,
        "a resend without a seq is a second event: {ids:?}"
    );
    let battery = readings
        .iter()
        .find(|m| m.key == "jane-phone")
        .expect("battery reading");
    assert_eq!(battery.value["values"][0]["name"], "battery");
    assert_eq!(
        battery.timestamp_ms,
        Some(1_700_000_000_000),
        "OwnTracks' tst"
    );

    let positions = consume(&brokers, &topics.positions, 1, IDLE);
    assert_eq!(positions.len(), 1, "{positions:?}");
    let p = &positions[0];
    assert_eq!(p.key, "jane-phone");
    assert_eq!(
        (p.value["lat"].as_f64(), p.value["lon"].as_f64()),
        (Some(52.5163), Some(13.3777))
    );
    assert!(
        (p.value["speed_mps"].as_f64().unwrap_or(0.0) - 10.0).abs() < 0.01,
        "{:?}",
        p.value
    );
    assert_eq!(p.timestamp_ms, Some(1_700_000_000_000));

    let dead = consume(&brokers, &topics.dead_letter, 1, IDLE);
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = &dead[0].headers["reason"];
    assert!(reason.contains("`_type` is the string \"lwt\""), "{reason}");
}

#[test]
fn a_mapping_that_does_not_validate_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "[[mappings]]\npreset = \"tasmota\"\nidentity = \"anyone\"\n",
    )
    .expect("write config");
    let out = std::process::Command::new(tributary_tests::binary("tributary"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .expect("run tributary");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mappings[0].identity"), "{stderr}");
}

#[test]
fn every_example_config_is_accepted_by_check_config() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let examples = std::fs::read_dir(root.join("config/examples")).expect("config/examples");
    let mut checked = 0;
    for entry in examples {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let out = std::process::Command::new(tributary_tests::binary("tributary"))
            .current_dir(&root)
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .expect("run tributary");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", path.display());
        checked += 1;
    }
    assert!(checked >= 4, "one example per preset at least: {checked}");
}

/// Codec 8 Extended, the example in Teltonika's protocol documentation (one record, no fix,
/// five IO values).
const CODEC8E_EXAMPLE: &str = "000000000000004A8E010000016B412CEE000100000000000000000000000000000000010005000100010100010011001D00010010015E2C880002000B000000003544C87A000E000000001DD7E06A00000100002994";

/// A small tracker: CRC-16/ARC as Teltonika's documentation gives it, written here again so the
/// test does not lean on the gateway's own.
pub(crate) fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |mut crc, b| {
        crc ^= u16::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
        crc
    })
}

/// A Codec 8 packet with one record per `(timestamp ms, lat, lon, km/h)`: 7 satellites and
/// IO 239 (ignition) = 1.
pub(crate) fn codec8(records: &[(u64, f64, f64, u16)]) -> Vec<u8> {
    let mut d = vec![0x08, records.len() as u8];
    for (ts, lat, lon, kmh) in records {
        d.extend_from_slice(&ts.to_be_bytes());
        d.push(1);
        d.extend_from_slice(&((lon * 1e7).round() as i32).to_be_bytes());
        d.extend_from_slice(&((lat * 1e7).round() as i32).to_be_bytes());
        d.extend_from_slice(&[0, 35, 0, 180, 7]);
        d.extend_from_slice(&kmh.to_be_bytes());
        d.extend_from_slice(&[239, 1, 1, 239, 1, 0, 0, 0]);
    }
    d.push(records.len() as u8);
    let mut out = vec![0, 0, 0, 0];
    out.extend_from_slice(&(d.len() as u32).to_be_bytes());
    out.extend_from_slice(&d);
    out.extend_from_slice(&u32::from(crc16(&d)).to_be_bytes());
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_teltonika_tracker_is_answered_after_the_commit_and_its_records_reach_kafka() {
    use std::io::{Read, Write};
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("teltonika");
    create_topics(&brokers, &topics.all(), 1).await;
    let port = tributary_tests::free_port();
    let gateway = Gateway::start_with(
        Some(&brokers),
        &topics,
        &format!(
            "[teltonika]\nlisten = \"127.0.0.1:{port}\"\nnames = {{ \"356307042441013\" = \"truck-12\" }}\n"
        ),
    );
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(b"\x00\x0f356307042441013").expect("IMEI");
    let mut accepted = [0u8; 1];
    s.read_exact(&mut accepted).expect("handshake answer");
    assert_eq!(accepted, [1], "a listed IMEI is accepted");
    let example: Vec<u8> = (0..CODEC8E_EXAMPLE.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&CODEC8E_EXAMPLE[i..i + 2], 16).expect("hex"))
        .collect();
    let mut count = [0u8; 4];
    s.write_all(&example).expect("example packet");
    s.read_exact(&mut count).expect("record count");
    assert_eq!(count, [0, 0, 0, 1]);
    s.write_all(&codec8(&[
        (1_700_000_000_000, 52.5163, 13.3777, 36),
        (1_700_000_005_000, 52.5170, 13.3790, 72),
    ]))
    .expect("GPS packet");
    s.read_exact(&mut count).expect("record count");
    assert_eq!(count, [0, 0, 0, 2]);

    let positions = consume(&brokers, &topics.positions, 2, IDLE);
    assert_eq!(positions.len(), 2, "{positions:?}");
    assert!(positions.iter().all(|m| m.key == "truck-12"));
    assert_eq!(positions[0].value["lat"].as_f64(), Some(52.5163));
    assert_eq!(
        positions[1].value["speed_mps"].as_f64(),
        Some(20.0),
        "72 km/h"
    );
    assert_eq!(positions[0].timestamp_ms, Some(1_700_000_000_000));
    let readings = consume(&brokers, &topics.readings, 3, IDLE);
    assert_eq!(readings.len(), 3, "{readings:?}");
    let example = &readings[0];
    assert_eq!(
        example.timestamp_ms,
        Some(0x0000_016B_412C_EE00),
        "the record's timestamp"
    );
    let names: Vec<&str> = example.value["values"]
        .as_array()
        .expect("values")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(names, ["din1", "io_17", "total_odometer", "io_11", "io_14"]);
    drop(gateway);
}

/// Kafka Connect's FileStreamSource demo, done safely: lines appended to a file arrive in a
/// topic, through a SIGKILL of the gateway and a logrotate-style rename, each line present and
/// any line seen twice a delivery repeat with the same `event-id`.
#[tokio::test(flavor = "multi_thread")]
async fn lines_appended_to_a_file_arrive_once_through_a_crash_and_a_rotation() {
    use std::io::Write;
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("files");
    let lines_topic = tributary_tests::unique_topic("files.lines");
    create_topics(&brokers, &[&lines_topic], 1).await;
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("app.log");
    let mut gateway = Gateway::start_with(
        Some(&brokers),
        &topics,
        &format!(
            "[[files]]\nname = \"app\"\npath = {:?}\nformat = \"text\"\ntopic = \"{lines_topic}\"\npoll_ms = 20\n",
            log.display().to_string()
        ),
    );
    let write = |path: &std::path::Path, from: usize, to: usize| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the log");
        for n in from..to {
            writeln!(f, "line {n:05} of the application log").expect("append");
            if n % 50 == 0 {
                f.flush().expect("flush");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    };
    write(&log, 0, 1500);
    gateway.kill();
    write(&log, 1500, 2000);
    gateway.restart();
    write(&log, 2000, 2500);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::rename(&log, logs.path().join("app.log.1")).expect("rotate");
    write(&logs.path().join("app.log.1"), 2500, 2600);
    write(&log, 2600, 3000);

    let got = consume(&brokers, &lines_topic, 3000, IDLE);
    let mut by_line: std::collections::BTreeMap<&str, BTreeSet<&str>> = Default::default();
    for m in &got {
        by_line
            .entry(m.text.as_str())
            .or_default()
            .insert(m.headers["event-id"].as_str());
    }
    let missing: Vec<usize> = (0..3000)
        .filter(|n| !by_line.contains_key(format!("line {n:05} of the application log").as_str()))
        .collect();
    assert!(missing.is_empty(), "lines lost: {missing:?}");
    assert_eq!(by_line.len(), 3000, "nothing but the lines written");
    assert!(
        by_line.values().all(|ids| ids.len() == 1),
        "a line seen twice is a delivery repeat, with one event-id"
    );
    drop(gateway);
}

/// Debian's `mosquitto` on a free loopback port, as a site's existing broker; killed on drop.
pub(crate) struct SiteBroker {
    child: std::process::Child,
    pub(crate) port: u16,
    _dir: tempfile::TempDir,
}

impl SiteBroker {
    pub(crate) fn start() -> Self {
        Self::start_with(
            tempfile::tempdir().expect("temp dir"),
            "allow_anonymous true\n",
        )
    }

    /// A broker with `extra` in its config (TLS files, a password file), in `dir`.
    fn start_with(dir: tempfile::TempDir, extra: &str) -> Self {
        Self::start_on(tributary_tests::free_port(), dir, extra)
    }

    /// [`SiteBroker::start_with`] on `port` (a broker restarted where it was).
    fn start_on(port: u16, dir: tempfile::TempDir, extra: &str) -> Self {
        let conf = dir.path().join("mosquitto.conf");
        // `user root`: started as root, mosquitto would otherwise drop to its own user, which
        // cannot read the test's files; as anyone else the line is ignored.
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\npersistence false\nuser root\n\
                 max_queued_messages 0\nmax_inflight_messages 20\n{extra}"
            ),
        )
        .expect("mosquitto.conf");
        let child = std::process::Command::new(env("TRIBUTARY_TEST_MOSQUITTO"))
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto (Debian's package) is installed");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for SiteBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the gateway's log says `what`.
pub(crate) fn wait_for_log(gateway: &Gateway, what: &str, after: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while gateway.log().matches(what).count() <= after {
        assert!(
            std::time::Instant::now() < deadline,
            "no {what:?} in the log:\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Messages on an existing broker, bridged through a SIGKILL of the gateway: every message the
/// broker delivered arrives, and none is stored twice (a repeat in Kafka is a delivery repeat,
/// with one event-id), although Tasmota's payloads carry no seq to de-duplicate by.
#[tokio::test(flavor = "multi_thread")]
async fn a_bridged_broker_s_messages_arrive_once_through_a_gateway_crash() {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("bridge");
    create_topics(&brokers, &topics.all(), 1).await;
    let site = SiteBroker::start();
    let mut gateway = Gateway::start_with(
        Some(&brokers),
        &topics,
        &format!(
            "[[mappings]]\npreset = \"tasmota\"\n\
             [[bridges]]\nname = \"site\"\nhost = \"127.0.0.1\"\nport = {}\n\
             client_id = \"depot-7\"\ntopics = [\"tele/+/SENSOR\"]\n",
            site.port
        ),
    );
    wait_for_log(&gateway, "Bridge connected", 0);
    std::thread::sleep(Duration::from_millis(500));
    const N: usize = 2000;
    let lines: String = (0..N)
        .map(|n| format!("{{\"SI7021\":{{\"Temperature\":{n}}}}}\n"))
        .collect();
    let port = site.port;
    let publisher = std::thread::spawn(move || {
        use std::io::Write;
        let mut child = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
            .args(["-t", "tele/plug-1/SENSOR", "-l"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("mosquitto_pub");
        let mut stdin = child.stdin.take().expect("stdin");
        for chunk in lines.as_bytes().chunks(4096) {
            stdin.write_all(chunk).expect("publish");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(stdin);
        child.wait().expect("mosquitto_pub exits").success()
    });
    std::thread::sleep(Duration::from_millis(150));
    gateway.kill();
    std::thread::sleep(Duration::from_millis(300));
    gateway.restart();
    assert!(publisher.join().expect("publisher"), "mosquitto_pub failed");

    let got = consume(&brokers, &topics.readings, N, IDLE);
    let mut ids_by_value: std::collections::BTreeMap<i64, BTreeSet<&str>> = Default::default();
    for m in &got {
        let value = m.value["values"][0]["value"]
            .as_f64()
            .expect("a temperature") as i64;
        ids_by_value
            .entry(value)
            .or_default()
            .insert(m.headers["event-id"].as_str());
    }
    let missing: Vec<usize> = (0..N)
        .filter(|n| !ids_by_value.contains_key(&(*n as i64)))
        .collect();
    assert!(missing.is_empty(), "{} lost: {missing:?}", missing.len());
    let twice: Vec<_> = ids_by_value
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "{} stored twice, the first: {:?}",
        twice.len(),
        &twice[..twice.len().min(3)]
    );
    // The site broker goes away: the outage is in the log, once.
    let before = gateway
        .log()
        .matches("Bridge lost its upstream broker")
        .count();
    drop(site);
    wait_for_log(&gateway, "Bridge lost its upstream broker", before);
    drop(gateway);
}

/// A site broker restarted without persistence has forgotten the bridge's session: what was
/// published for it meanwhile is gone, and the gateway says so when it reconnects (not at its
/// first connection, where no session is expected).
#[test]
fn a_bridge_whose_session_the_site_broker_forgot_warns_on_reconnect() {
    let site = SiteBroker::start();
    let port = site.port;
    let topics = Topics::unique("bridge-session");
    let gateway = Gateway::start_with(
        None,
        &topics,
        &format!(
            "[[mappings]]\npreset = \"tasmota\"\n\
             [[bridges]]\nname = \"site\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             client_id = \"depot-8\"\ntopics = [\"tele/+/SENSOR\"]\n"
        ),
    );
    wait_for_log(&gateway, "Bridge connected", 0);
    let warning = "did not resume the bridge's session";
    assert!(
        !gateway.log().contains(warning),
        "no warning at the first connection:\n{}",
        gateway.log()
    );
    drop(site);
    wait_for_log(&gateway, "Bridge lost its upstream broker", 0);
    let _site = SiteBroker::start_on(
        port,
        tempfile::tempdir().expect("temp dir"),
        "allow_anonymous true\n",
    );
    wait_for_log(&gateway, "Bridge connected", 1);
    wait_for_log(&gateway, warning, 0);
    drop(gateway);
}

/// A site broker that takes only TLS and a username and password: the bridge verifies the
/// broker's certificate against `ca_file`, logs in, and the messages arrive; with the wrong
/// password it stays out and says so.
#[test]
fn a_bridge_connects_over_tls_with_credentials() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut pki = tributary_tests::pki::Pki::new(dir.path());
    let server = pki.server();
    let passwords = dir.path().join("passwords");
    let made = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwords)
        .args(["tributary", "s3cret"])
        .status()
        .expect("mosquitto_passwd (Debian's mosquitto) is installed");
    assert!(made.success());
    let extra = format!(
        "allow_anonymous false\npassword_file {}\ncafile {}\ncertfile {}\nkeyfile {}\n",
        passwords.display(),
        pki.ca_file().display(),
        server.cert.display(),
        server.key.display()
    );
    let ca = pki.ca_file();
    let site = SiteBroker::start_with(dir, &extra);
    let topics = Topics::unique("bridge-tls");
    let bridge = |password: &str| {
        format!(
            "[[mappings]]\npreset = \"tasmota\"\n\
             [[bridges]]\nname = \"site\"\nhost = \"localhost\"\nport = {}\nca_file = {:?}\n\
             username = \"tributary\"\npassword = \"{password}\"\ntopics = [\"tele/+/SENSOR\"]\n",
            site.port,
            ca.display().to_string()
        )
    };
    let refused = Gateway::start_with(None, &topics, &bridge("wrong"));
    wait_for_log(&refused, "Bridge lost its upstream broker", 0);
    assert!(
        !refused.log().contains("Bridge connected"),
        "{}",
        refused.log()
    );
    drop(refused);

    let mut gateway = Gateway::start_with(None, &topics, &bridge("s3cret"));
    wait_for_log(&gateway, "Bridge connected", 0);
    std::thread::sleep(Duration::from_millis(500));
    let published = std::process::Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &site.port.to_string(), "-q", "1"])
        .arg("--cafile")
        .arg(&ca)
        .args(["-u", "tributary", "-P", "s3cret"])
        .args([
            "-t",
            "tele/plug-9/SENSOR",
            "-m",
            r#"{"SI7021":{"Temperature":20.1}}"#,
        ])
        .status()
        .expect("mosquitto_pub");
    assert!(published.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while gateway.sink_lines(&topics.readings).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing arrived:\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    gateway.stop();
    let readings = gateway.sink_lines(&topics.readings);
    assert_eq!(readings.len(), 1, "{readings:?}");
    assert_eq!(readings[0]["key"], "plug-9");
    assert_eq!(readings[0]["value"]["values"][0]["value"], 20.1);
}
