//! The admin listener against a web page doing DNS rebinding, a peer without the token, slow
//! clients holding descriptors, and an operator binding it to the network: the request refused
//! with a reason, the refusal counted, devices unaffected.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine;

use super::*;

/// Sends `request` as written (the attacker's bytes) and reads the answer to its end: the status
/// code and the whole text.
fn raw_http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the admin listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, response)
}

fn get(addr: SocketAddr, path: &str, host: &str, auth: Option<&str>) -> (u16, String) {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    raw_http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"),
    )
}

const TOKEN: &str = "s3cret-admin-token-0123456789";

#[test]
fn the_admin_listener_answers_only_its_own_names_and_only_with_the_token() {
    let topics = Topics::unique("admin-guard");
    let secrets = tempfile::tempdir().expect("temp dir");
    let token_file = secrets.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
    let mut gateway = Gateway::start_with_admin(
        None,
        &topics,
        &format!("token_file = {token_file:?}\nhosts = [\"gw1.depot.lan\"]\n"),
        "",
    );
    let admin = gateway.admin;
    let bearer = format!("Bearer {TOKEN}");

    // DNS rebinding: a page on evil.example re-pointed at this address. Before: 200 with the
    // vehicles' positions and the peers' addresses.
    let (code, text) = get(admin, "/api/status", "evil.example", Some(&bearer));
    assert_eq!(code, 421, "{text}");
    assert!(
        text.contains("evil.example") && text.contains("admin.hosts"),
        "{text}"
    );
    assert!(
        !text.contains("\"devices\""),
        "nothing of the status leaks: {text}"
    );
    let (code, _) = get(admin, "/", "evil.example:9880", None);
    assert_eq!(code, 421, "the page itself is refused too");

    // No token, a wrong one, a token one character short.
    for auth in [
        None,
        Some("Bearer wrong"),
        Some(&bearer[..bearer.len() - 1]),
    ] {
        let (code, text) = get(admin, "/api/status", &admin.to_string(), auth);
        assert_eq!(code, 401, "{auth:?}: {text}");
        assert!(
            text.to_lowercase().contains("www-authenticate: basic"),
            "{text}"
        );
        assert!(!text.contains("\"devices\""));
    }
    let (code, _) = get(admin, "/metrics", "localhost", None);
    assert_eq!(code, 401, "metrics need the token");
    let (code, _) = get(admin, "/readyz?verbose", "localhost", None);
    assert_eq!(code, 401, "the verbose readiness detail needs the token");

    // What an operator does: the gateway's own address, localhost or a configured name, with
    // the token as a bearer (Prometheus) or a Basic password (a browser's prompt).
    let (code, text) = get(admin, "/api/status", &admin.to_string(), Some(&bearer));
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("\"devices\""), "{text}");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("ops:{TOKEN}"))
    );
    let (code, _) = get(admin, "/api/status", "GW1.depot.lan:9880", Some(&basic));
    assert_eq!(code, 200);
    // Probes need nothing.
    assert_eq!(get(admin, "/livez", "localhost", None).0, 200);
    assert_eq!(get(admin, "/readyz", "127.0.0.1", None).0, 200);

    let stopped = gateway.stop();
    assert!(stopped.status.success());
    assert_eq!(stopped.refused("admin/host"), 2, "{}", stopped.stdout);
    assert_eq!(
        stopped.refused("admin/unauthorized"),
        5,
        "{}",
        stopped.stdout
    );
    assert!(!stopped.stderr.contains(TOKEN), "the token is never logged");
}

#[test]
fn slow_admin_clients_cannot_hold_the_descriptors_devices_need() {
    let topics = Topics::unique("admin-slow");
    let mut gateway = Gateway::start_with_admin(
        None,
        &topics,
        "max_connections = 8\nheader_timeout_ms = 5000\n",
        "",
    );
    // 300 requests sent half-way, never finished. Before: all 300 stayed open, and with the
    // process's file limit at 256 they locked devices out ("Too many open files").
    let started = Instant::now();
    let mut held: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(gateway.admin).expect("connect");
            s.write_all(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .expect("half a request");
            s
        })
        .collect();
    // One more while they hang: answered 503, saying why.
    let (code, text) = get(gateway.admin, "/api/status", "127.0.0.1", None);
    assert!(
        code == 503 && text.contains("admin.max_connections"),
        "{code}: {text}"
    );
    // A device is unaffected.
    assert!(
        mosquitto_pub_with(
            gateway.mqtt.port(),
            1,
            "devices/slow-1/readings",
            &reading("slow-1", 1),
            &["-i", "slow-1"],
        ),
        "a device publishes while the admin listener is besieged"
    );
    // Every half-sent request is closed by the gateway: beyond the cap at once, the others
    // when their headers' time runs out.
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!(
                    "a half-sent request still open after {:?}: {e}",
                    started.elapsed()
                ),
            }
        }
    }
    held.clear();
    // And the listener serves again.
    let (code, text) = get(gateway.admin, "/api/status", "127.0.0.1", None);
    assert_eq!(code, 200, "{text}");
    gateway.wait_drained(Duration::from_secs(30));

    let stopped = gateway.stop();
    assert!(stopped.status.success());
    assert!(stopped.refused("admin/busy") >= 290, "{}", stopped.stdout);
    assert_eq!(gateway.sink_lines(&topics.readings).len(), 1);
}

#[test]
fn an_admin_listener_on_the_network_needs_a_token_or_the_explicit_opt_in() {
    let dir = tempfile::tempdir().expect("temp dir");
    let check = |text: &str| check_config(dir.path(), text);
    let (code, stderr) = check("[admin]\nlisten = \"0.0.0.0:9880\"\n");
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("admin.listen") && stderr.contains("admin.token_file"),
        "{stderr}"
    );
    // A short token is no credential; its text is not printed.
    let short = dir.path().join("short.token");
    std::fs::write(&short, "guessable\n").expect("write");
    let (code, stderr) = check(&format!(
        "[admin]\nlisten = \"0.0.0.0:9880\"\ntoken_file = {short:?}\n"
    ));
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("admin.token_file") && !stderr.contains("guessable"),
        "{stderr}"
    );
    let good = dir.path().join("good.token");
    std::fs::write(&good, format!("{TOKEN}\n")).expect("write");
    let (code, stderr) = check(&format!(
        "[admin]\nlisten = \"0.0.0.0:9880\"\ntoken_file = {good:?}\n"
    ));
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) =
        check("[admin]\nlisten = \"0.0.0.0:9880\"\n[auth]\nanonymous = \"network\"\n");
    assert_eq!(code, Some(0), "{stderr}");
}
