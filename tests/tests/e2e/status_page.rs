//! The status page in a real headless browser (Debian's chromium): it loads with no script
//! errors, shows the simulator's devices, vehicles and a refusal, and keeps updating.

use std::process::Command;

use futures::SinkExt;
use tributary_sim::scenario::{Group, Link, ModelKind, Scenario};
use tributary_tests::env;
use tributary_tests::gateway::{Gateway, Topics};

/// Runs headless chromium on `url` with `args`; returns its stdout.
fn chromium(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new(env("TRIBUTARY_TEST_CHROMIUM"))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=7000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of `data-{name}` on `<body>` in a dumped DOM.
fn body_data(dom: &str, name: &str) -> Option<u64> {
    body_attr(dom, name)?.parse().ok()
}

/// The text of `data-{name}` on `<body>` in a dumped DOM.
fn body_attr(dom: &str, name: &str) -> Option<String> {
    let body = &dom[dom.find("<body")?..];
    attr(&body[..body.find('>')?], name)
}

/// The text of `data-{name}` in one tag.
fn attr(tag: &str, name: &str) -> Option<String> {
    let at = tag.find(&format!("data-{name}=\""))? + name.len() + 7;
    tag[at..].split('"').next().map(str::to_owned)
}

/// Each device row's opening tag, by device id.
fn device_rows(dom: &str) -> std::collections::BTreeMap<String, String> {
    dom.match_indices("<tr data-device=\"")
        .filter_map(|(at, _)| {
            let tag = &dom[at..at + dom[at..].find('>')?];
            Some((attr(tag, "device")?, tag.to_owned()))
        })
        .collect()
}

/// A device sending a steady 5 events a second through more than a whole minute of the clock:
/// the chart's right end reads 5/s, the device's events/min is the count of the last whole
/// minute (300, give or take one at each edge), and a connection that published under no
/// client id of its own leaves no row of its own (none "last seen" at time zero).
#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_shows_a_known_load_as_it_is() {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let topics = Topics::unique("page-load");
    let mut gateway = Gateway::start(None, &topics);
    let port = gateway.mqtt.port();
    // One publish from mosquitto_pub without a client id: the gateway assigns one.
    assert!(tributary_tests::mosquitto_pub(
        port,
        1,
        "devices/once-1/readings",
        r#"{"seq":1,"time_ms":1700000000000,"values":[{"name":"t","value":1,"unit":"Cel"}]}"#,
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let sent: Arc<Mutex<Vec<u64>>> = Arc::default();
    let sender = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut child = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
                .args(["-i", "steady-1", "-t", "devices/steady-1/readings", "-l"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .expect("mosquitto_pub");
            let mut stdin = child.stdin.take().expect("stdin");
            let start = std::time::Instant::now();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let at = tributary_sim::generate::now_ms();
                writeln!(
                    stdin,
                    r#"{{"seq":{seq},"time_ms":{at},"values":[{{"name":"t","value":1,"unit":"Cel"}}]}}"#
                )
                .expect("publish");
                stdin.flush().expect("flush");
                sent.lock().expect("lock").push(at);
                // Every 200 ms from the start, not 200 ms after the last: a steady 5/s.
                let next = start + std::time::Duration::from_millis(200 * seq);
                std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
            }
            drop(stdin);
            child.wait().expect("mosquitto_pub exits").success()
        })
    };
    // Until a whole minute of the clock has passed with the device sending all through it.
    let first = tributary_sim::generate::now_ms();
    let minute = (first / 60_000 + 1) * 60_000;
    while tributary_sim::generate::now_ms() < minute + 61_500 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let url = format!("http://{}/", gateway.admin);
    let dom = tokio::task::spawn_blocking(move || chromium(&url, &["--dump-dom"]))
        .await
        .expect("chromium task");
    stop.store(true, Ordering::Relaxed);
    assert!(sender.join().expect("sender"), "mosquitto_pub failed");

    assert_eq!(body_data(&dom, "errors"), None, "script errors:\n{dom}");
    let in_minute = sent
        .lock()
        .expect("lock")
        .iter()
        .filter(|t| (minute..minute + 60_000).contains(*t))
        .count() as i64;
    let rows = device_rows(&dom);
    let steady = rows.get("steady-1").expect("steady-1 listed");
    let per_min: i64 = attr(steady, "per-min")
        .and_then(|v| v.parse().ok())
        .expect("events/min");
    assert!(
        (per_min - in_minute).abs() <= 2,
        "events/min {per_min}: the device sent {in_minute} in the last whole minute"
    );
    let rate: f64 = body_attr(&dom, "received-per-s")
        .and_then(|v| v.parse().ok())
        .expect("the chart's received rate");
    assert!(
        (4.0..=6.0).contains(&rate),
        "the chart shows {rate}/s for a steady 5/s"
    );
    assert!(rows.contains_key("once-1"), "{rows:?}");
    for (id, tag) in &rows {
        let seen: u64 = attr(tag, "last-seen-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(
            seen >= first - 5_000,
            "{id} last seen at {seen}: a phantom row\n{rows:?}"
        );
        assert!(
            !id.starts_with("tributary-"),
            "a row for an assigned client id: {id}"
        );
    }
    gateway.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_shows_devices_vehicles_and_refusals_and_updates_without_errors() {
    let topics = Topics::unique("page");
    let mut gateway = Gateway::start(None, &topics);
    let mut s = Scenario::plain(gateway.tcp, gateway.mqtt, Link::Tcp, "page", 3, 30);
    s.groups.push(Group {
        name: "truck".into(),
        model: ModelKind::Truck,
        count: 3,
        ..s.groups[0].clone()
    });
    s.groups.push(Group {
        name: "car".into(),
        model: ModelKind::Car,
        count: 2,
        link: Link::Mqtt { qos: 1 },
        ..s.groups[0].clone()
    });
    let report = tributary_tests::run(s).await;
    assert!(report.failures().next().is_none());
    // A protocol violation, for the refusals table: EVENTS before HELLO.
    let mut framed = tributary_tests::raw_tcp(gateway.tcp).await;
    framed
        .send(&tributary_protocol::Message::Events(Vec::new()))
        .await
        .expect("send");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let url = format!("http://{}/", gateway.admin);
    let dom = tokio::task::spawn_blocking(move || chromium(&url, &["--dump-dom"]))
        .await
        .expect("chromium task");
    assert_eq!(
        body_data(&dom, "errors"),
        None,
        "script errors on the page:\n{dom}"
    );
    assert!(
        body_data(&dom, "polls").unwrap_or(0) >= 2,
        "the page polled /api/status and updated more than once:\n{dom}"
    );
    assert_eq!(
        body_data(&dom, "vehicles"),
        Some(5),
        "every truck and car on the map:\n{dom}"
    );
    for device in ["page-0", "page-truck-2", "page-car-1"] {
        assert!(
            dom.contains(&format!("data-device=\"{device}\"")),
            "{device} listed:\n{dom}"
        );
    }
    assert!(
        dom.contains("protocol_violation"),
        "the refusal is listed:\n{dom}"
    );
    assert!(dom.contains(">ready<"), "the header says ready:\n{dom}");

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let url = format!("http://{}/", gateway.admin);
    let arg = format!("--screenshot={}", shot.display());
    tokio::task::spawn_blocking(move || chromium(&url, &["--window-size=1280,1500", &arg]))
        .await
        .expect("chromium task");
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "a real picture"
    );
    gateway.stop();
}
