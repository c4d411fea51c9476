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
    let body = &dom[dom.find("<body")?..];
    let tag = &body[..body.find('>')?];
    let at = tag.find(&format!("data-{name}=\""))? + name.len() + 7;
    tag[at..].split('"').next()?.parse().ok()
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
