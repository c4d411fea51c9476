//! Modbus against an independent implementation: pymodbus's server (`tests/clients/
//! modbus_server.py`), over TCP and over RTU through a pseudo-terminal pair (socat), with
//! registers that change while the gateway polls them. Every type, byte and word order and
//! scale must land in Kafka as the value the device held; a register the server lacks is a
//! Modbus exception, counted, never a value; the server stopped mid-test makes counted gaps and
//! no values; polling resumes when it is back; a gateway SIGKILLed and started
//! again neither repeats nor skips a seq.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tributary_tests::clients::clients;
use tributary_tests::gateway::{Gateway, Topics};
use tributary_tests::kafka::{consume, create_topics};
use tributary_tests::{env, free_port};

use super::admin::scrape;

/// pymodbus's server, killed on drop.
struct Server {
    child: Child,
    /// socat's pseudo-terminal pair, for RTU.
    socat: Option<Child>,
}

impl Server {
    fn start(args: &[String], socat: Option<Child>) -> Self {
        let mut child = Command::new(env("TRIBUTARY_TEST_PYTHON"))
            .arg(clients().join("modbus_server.py"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run modbus_server.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("modbus_server.py's first line");
        assert_eq!(line.trim(), "ready", "modbus_server.py did not start");
        Self { child, socat }
    }

    fn tcp(port: u16) -> Self {
        Self::start(&["--tcp".into(), port.to_string()], None)
    }

    /// The server on one end of a new pseudo-terminal pair; the gateway opens `dir/gateway`.
    fn rtu(dir: &Path, unit: u8) -> Self {
        let (gateway_end, device_end) = (dir.join("gateway"), dir.join("device"));
        let _ = std::fs::remove_file(&gateway_end);
        let _ = std::fs::remove_file(&device_end);
        let socat = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", gateway_end.display()))
            .arg(format!("pty,raw,echo=0,link={}", device_end.display()))
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (tests/run installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(gateway_end.exists() && device_end.exists()) {
            assert!(Instant::now() < deadline, "socat made no pty pair");
            std::thread::sleep(Duration::from_millis(20));
        }
        let args = [
            "--serial".into(),
            device_end.display().to_string(),
            "--unit".into(),
            unit.to_string(),
        ];
        Self::start(&args, Some(socat))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(socat) = self.socat.as_mut() {
            let _ = socat.kill();
            let _ = socat.wait();
        }
    }
}

/// The server script's own value table as `[[modbus.devices.registers]]`: the config is made
/// from the table the server fills its registers from, so the two cannot drift apart.
fn registers() -> String {
    let out = Command::new(env("TRIBUTARY_TEST_PYTHON"))
        .arg(clients().join("modbus_server.py"))
        .arg("--table")
        .output()
        .expect("modbus_server.py --table");
    let table: BTreeMap<String, Vec<Value>> =
        serde_json::from_slice(&out.stdout).expect("the value table");
    let mut toml = String::new();
    for (name, row) in table {
        toml += &format!(
            "[[modbus.devices.registers]]\nname = \"{name}\"\ntable = {}\naddress = {}\ntype = {}\nbyte_order = {}\nword_order = {}\nscale = {:?}\noffset = {:?}\n",
            row[0], row[1], row[2], row[3], row[4],
            row[5].as_f64().expect("scale"), row[6].as_f64().expect("offset"),
        );
        if name == "temp" {
            toml += "unit = \"Cel\"\n";
        }
    }
    toml
}

/// `ok` polls and gaps (every other outcome) the gateway counted for `device` so far.
fn polls(gateway: &Gateway, device: &str) -> (f64, f64) {
    let metrics = scrape(gateway);
    let mut ok = 0.0;
    let mut gaps = 0.0;
    for (key, v) in &metrics {
        if key.starts_with("tributary_modbus_polls_total{")
            && key.contains(&format!("device=\"{device}\""))
        {
            if key.contains("outcome=\"ok\"") {
                ok += v;
            } else {
                gaps += v;
            }
        }
    }
    (ok, gaps)
}

/// Waits until the gateway counted `n` more `ok` polls of `device` than `from`.
fn wait_polls(gateway: &Gateway, device: &str, from: f64, n: f64) -> (f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = polls(gateway, device);
        if now.0 >= from + n {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{device}: {now:?} polls, waiting for {n} more ok than {from}\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The run both tests make: polled, the server killed for two seconds and started again, the
/// gateway SIGKILLed and started again; then what Kafka holds is checked.
async fn polled_through_an_outage_and_a_crash(
    stem: &str,
    device: &str,
    line: &str,
    missing: Option<&str>,
    start_server: impl Fn() -> Server,
) {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique(stem);
    create_topics(&brokers, &topics.all(), 1).await;
    let mut server = start_server();
    let config = format!(
        "[[modbus]]\nname = \"{stem}\"\n{line}timeout_ms = 300\nbackoff_max_ms = 400\n[[modbus.devices]]\ndevice_id = \"{device}\"\npoll_ms = 150\n{}",
        registers()
    );
    // A second device on the link asks for a register the server does not have: the server
    // answers each poll with a Modbus exception.
    let config = match missing {
        Some(missing) => format!(
            "{config}[[modbus.devices]]\ndevice_id = \"{missing}\"\npoll_ms = 150\n\
             [[modbus.devices.registers]]\nname = \"nowhere\"\naddress = 500\n"
        ),
        None => config,
    };
    let mut gateway = Gateway::start_with(Some(&brokers), &topics, &config);
    let (ok, _) = wait_polls(&gateway, device, 0.0, 10.0);
    if let Some(missing) = missing {
        let metrics = scrape(&gateway);
        let exceptions = metrics
            .get(&format!(
                "tributary_modbus_polls_total{{device=\"{missing}\",outcome=\"exception\"}}"
            ))
            .copied()
            .unwrap_or(0.0);
        assert!(
            exceptions >= 3.0,
            "Modbus exceptions are counted gaps: {metrics:#?}"
        );
        assert_eq!(
            polls(&gateway, missing).0,
            0.0,
            "no poll of {missing} succeeded"
        );
    }

    // The device goes away for two seconds: gaps, counted, and no event made up meanwhile.
    drop(server);
    let gone_ms = tributary_sim::generate::now_ms();
    std::thread::sleep(Duration::from_secs(2));
    let back_ms = tributary_sim::generate::now_ms();
    let (_, gaps) = polls(&gateway, device);
    assert!(
        gaps >= 3.0,
        "polls while the device was away are counted gaps: {gaps}"
    );
    server = start_server();
    wait_polls(&gateway, device, ok, 10.0);

    // The gateway SIGKILLed and started again: its seqs go on where they were.
    gateway.kill();
    gateway.restart();
    wait_polls(&gateway, device, 0.0, 5.0);
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    drop(server);

    let mut events = consume(
        &brokers,
        &topics.readings,
        usize::MAX,
        Duration::from_secs(5),
    );
    // Forwarding is at least once: the SIGKILL may leave an event in Kafka twice, the same
    // event (its event-id) both times. A seq used for two different polls would not be.
    events.dedup_by(|b, a| {
        let same = a.headers.get("event-id") == b.headers.get("event-id");
        if same {
            assert_eq!(a.value, b.value, "a repeated event-id, the same event");
        }
        same
    });
    assert!(events.len() >= 25, "{} events", events.len());
    assert!(
        events.iter().all(|m| m.key == device),
        "every event keyed by the device"
    );
    let seqs: Vec<u64> = events
        .iter()
        .map(|m| m.value["seq"].as_u64().expect("seq"))
        .collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(
        seqs, expected,
        "one seq per stored poll, none repeated or skipped, in order"
    );
    let during: Vec<u64> = events
        .iter()
        .filter_map(|m| m.value["time_ms"].as_u64())
        .filter(|t| (gone_ms..back_ms).contains(t))
        .collect();
    assert!(
        during.is_empty(),
        "events timed while the device was away: {during:?}"
    );
    assert!(
        events
            .iter()
            .any(|m| m.value["time_ms"].as_u64() > Some(back_ms)),
        "polling resumed"
    );
    let temp = &events[0].value["values"]
        .as_array()
        .expect("values")
        .iter()
        .find(|v| v["name"] == "temp")
        .expect("temp")["unit"];
    assert_eq!(temp, "Cel", "the configured unit");

    // Every value against what the device held, checked by the server script's own table.
    let mut check = Command::new(env("TRIBUTARY_TEST_PYTHON"))
        .arg(clients().join("modbus_server.py"))
        .arg("--check")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("modbus_server.py --check");
    {
        let mut stdin = check.stdin.take().expect("stdin");
        for m in &events {
            writeln!(stdin, "{}", m.value).expect("write an event");
        }
    }
    let out = check.wait_with_output().expect("the check");
    let verdict: Value = serde_json::from_slice(&out.stdout).expect("the check's verdict");
    assert_eq!(verdict["checked"], events.len(), "{verdict}");
    assert_eq!(
        verdict["bad"],
        serde_json::json!([]),
        "values not as the device held them"
    );
    // The registers changed during the test: events saw several generations.
    let generations: std::collections::BTreeSet<i64> = events
        .iter()
        .filter_map(|m| {
            m.value["values"]
                .as_array()?
                .iter()
                .find(|v| v["name"] == "gen")?["value"]
                .as_f64()
                .map(|g| g as i64)
        })
        .collect();
    assert!(generations.len() >= 5, "{generations:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn modbus_tcp_every_type_and_order_arrives_as_held_and_an_outage_is_a_counted_gap() {
    let port = free_port();
    polled_through_an_outage_and_a_crash(
        "modbus-tcp",
        "plc-1",
        &format!("tcp = \"127.0.0.1:{port}\"\n"),
        Some("plc-1-missing"),
        || Server::tcp(port),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn modbus_rtu_over_a_serial_line_the_same() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_owned();
    polled_through_an_outage_and_a_crash(
        "modbus-rtu",
        "meter-7",
        &format!(
            // No parity: a pseudo-terminal refuses it (EINVAL), as the server script says.
            "serial = \"{}\"\nbaud = 19200\nparity = \"none\"\n",
            dir.path().join("gateway").display()
        ),
        None,
        move || Server::rtu(&path, 1),
    )
    .await;
}
