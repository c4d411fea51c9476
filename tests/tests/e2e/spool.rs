//! The spool seen from outside: corruption at start, offline tools beside a running gateway,
//! and what MQTT subscribers and QoS 2 publishers get.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tributary_sim::scenario::Scenario;
use tributary_sim::tcp::TcpDevice;
use tributary_tests::free_port;
use tributary_tests::gateway::{Gateway, Topics};

fn unreachable_kafka() -> String {
    format!("127.0.0.1:{}", free_port())
}

fn tcp_spec(gateway: &Gateway, prefix: &str, devices: usize, events: u64) -> Scenario {
    tributary_tests::spec(gateway.tcp, prefix, devices, events)
}

fn rows(gateway: &Gateway) -> u64 {
    let (code, out) = gateway.spool_tool(&["stats", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("stats --json");
    v["rows"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_spool_is_moved_aside_salvaged_and_the_gateway_starts_and_says_so() {
    let topics = Topics::unique("corrupt");
    let mut gateway = Gateway::start(Some(&unreachable_kafka()), &topics);
    let report = tributary_tests::run(tcp_spec(&gateway, "corrupt", 4, 500)).await;
    assert_eq!(report.acked(), 2000);
    assert!(gateway.stop().status.success());

    let path = gateway.spool_path();
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = (bytes.len() / 4096 / 2) * 4096;
    for b in &mut bytes[middle + 64..middle + 1024] {
        *b = !*b;
    }
    std::fs::write(&path, &bytes).unwrap();
    let (code, out) = gateway.spool_tool(&["verify"]);
    assert_eq!(code, Some(65), "verify reports the corruption: {out}");
    assert!(out.contains("CORRUPT"), "{out}");

    gateway.restart();
    let log = gateway.log();
    assert!(
        log.contains("The spool was corrupt: moved aside and salvaged."),
        "{log}"
    );
    let moved: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("spool.db.corrupt-")
        })
        .collect();
    assert!(
        !moved.is_empty(),
        "the corrupt file is kept beside the new spool"
    );
    let salvaged = rows(&gateway);
    assert!(
        salvaged > 0 && salvaged < 2000,
        "salvaged {salvaged} of 2000"
    );
    assert_eq!(gateway.spool_tool(&["verify"]).0, Some(0));

    let mut device = TcpDevice::connect(gateway.tcp, "after-salvage", None, None)
        .await
        .unwrap();
    let events: Vec<_> = (1..=10)
        .map(|s| tributary_sim::generate::event(0, "after-salvage", s, 1_700_000_000_000, false))
        .collect();
    assert_eq!(device.send_batch(&events).await.unwrap(), 10);
    assert_eq!(rows(&gateway), salvaged + 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn spool_stats_and_inspect_work_beside_a_running_gateway_without_blocking_it() {
    let topics = Topics::unique("tools");
    let gateway = Gateway::start(Some(&unreachable_kafka()), &topics);
    let load = tokio::spawn(tributary_tests::run(tcp_spec(&gateway, "tools", 5, 400)));
    let mut looked = 0;
    while !load.is_finished() {
        let (code, out) = gateway.spool_tool(&["stats"]);
        assert_eq!(code, Some(0), "{out}");
        let (code, out) = gateway.spool_tool(&["inspect", "--device", "tools-3", "--limit", "5"]);
        assert_eq!(code, Some(0), "{out}");
        assert!(
            out.lines().all(|l| l.contains("\"key\":\"tools-3\"")),
            "{out}"
        );
        looked += 1;
    }
    let report = load.await.unwrap();
    assert_eq!(report.acked(), 2000, "the load was not held up: {report:?}");
    assert!(looked > 0);
    assert_eq!(rows(&gateway), 2000);
    let (_, out) = gateway.spool_tool(&["inspect", "--device", "tools-3", "--limit", "1000"]);
    assert_eq!(out.lines().filter(|l| l.starts_with('{')).count(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribers_on_the_embedded_broker_see_device_publishes_and_qos2_is_stored() {
    let topics = Topics::unique("subs");
    let mut gateway = Gateway::start(None, &topics);
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &gateway.broker.port().to_string()])
        .args(["-t", "devices/#", "-C", "1", "-v"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    let payload =
        r#"{"seq":1,"time_ms":1700000000000,"values":[{"name":"t","value":3.5,"unit":"Cel"}]}"#;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sub = sub;
    let mut seq = 1;
    while matches!(sub.try_wait(), Ok(None)) {
        assert!(Instant::now() < deadline, "the subscriber saw nothing");
        // QoS 2: mosquitto_pub exits 0 only after PUBREC, PUBREL and PUBCOMP.
        let message = payload.replace("\"seq\":1", &format!("\"seq\":{seq}"));
        assert!(
            tributary_tests::mosquitto_pub(
                gateway.mqtt.port(),
                2,
                "devices/sub-1/readings",
                &message
            ),
            "QoS 2 handshake completed"
        );
        seq += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = sub.wait_with_output().unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.starts_with("devices/sub-1/readings {\"seq\":"),
        "{line}"
    );
    let stopped = gateway.stop();
    let sink = gateway
        .dir
        .path()
        .join(format!("data/sink/{}.jsonl", topics.readings));
    let lines = std::fs::read_to_string(sink).unwrap_or_default();
    assert_eq!(lines.lines().count() as u64, seq - 1, "{}", stopped.stdout);
}

/// Builds `tests/shim/fsync_counter.c` into `dir` (with the machine's C compiler) and returns
/// the shared library's path.
fn fsync_counter(dir: &std::path::Path) -> std::path::PathBuf {
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/shim/fsync_counter.c");
    let library = dir.join("libfsync_counter.so");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&library)
        .arg(source)
        .arg("-ldl")
        .status()
        .expect("a C compiler (cc)");
    assert!(built.success(), "building the fsync counter");
    library
}

/// A SIGKILL leaves the page cache intact, so the crash test cannot tell a commit that reached
/// the disk from one that did not. This one can: every fsync and fdatasync of the gateway is
/// counted (an LD_PRELOAD shim), and each batch a device sends waits for its answer before the
/// next, so no two can share a commit. Each answer must then have been preceded by at least one
/// sync of its own. With `synchronous=NORMAL` or `OFF` (no sync per commit in WAL mode), or an
/// answer sent before the commit, the count falls short.
///
/// The syncs must be fdatasync, not fsync: fsync also writes the inode's times, a second disk
/// write per commit (SQLite uses fdatasync only when built with `HAVE_FDATASYNC`, which
/// `.cargo/config.toml` sets for the bundled build).
#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledgement_waits_for_a_synced_commit() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let library = fsync_counter(scratch.path());
    let count_file = scratch.path().join("fsyncs");
    // (all syncs, fsyncs among them)
    let read_counts = || -> (u64, u64) {
        let text = std::fs::read_to_string(&count_file).unwrap_or_default();
        let mut n = text.split_whitespace().map(|n| n.parse().unwrap_or(0));
        (n.next().unwrap_or(0), n.next().unwrap_or(0))
    };
    let topics = Topics::unique("durable");
    // Kafka unreachable: nothing is forwarded, so only ingest commits sync.
    let mut gateway = Gateway::start_with_env(
        Some(&unreachable_kafka()),
        &topics,
        "",
        &[
            ("LD_PRELOAD", &library.display().to_string()),
            (
                "TRIBUTARY_FSYNC_COUNT_FILE",
                &count_file.display().to_string(),
            ),
        ],
    );
    let mut device = TcpDevice::connect(gateway.tcp, "durable-1", None, Some(9))
        .await
        .expect("connect");
    let (mut before, fsyncs_before) = read_counts();
    for seq in 1..=20u64 {
        let event =
            tributary_sim::generate::event(0, "durable-1", seq, 1_767_225_600_000 + seq, false);
        assert_eq!(device.send_batch(&[event]).await.expect("stored"), seq);
        let (after, _) = read_counts();
        assert!(
            after > before,
            "batch {seq} was acknowledged without a sync since the previous answer ({before} -> {after})"
        );
        before = after;
    }
    let (_, fsyncs_after) = read_counts();
    assert_eq!(
        fsyncs_after, fsyncs_before,
        "the spool's commits synced with fsync, which writes the inode too, not fdatasync"
    );
    drop(device);
    assert!(gateway.stop().status.success());
}
