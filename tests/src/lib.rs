//! Helpers for the end-to-end tests: the real `tributary` binary as a child process, Apache
//! Kafka itself (one node started by `tests/run`, and clusters of a test's own, [`broker`]), and
//! consumers that read back what the gateway wrote.
//!
//! Environment, set by `tests/run`:
//! - `TRIBUTARY_TEST_KAFKA`: `host:port` of the broker. Tests that need it fail without it.
//! - `TRIBUTARY_TEST_PYTHON`: a Python with kafka-python installed.
//! - `TRIBUTARY_TEST_KAFKA_LIBS`: Apache Kafka's jars, for tests that start brokers of their own.
//! - `TRIBUTARY_TEST_NODE`: Node.js, for the MQTT.js devices in `tests/clients`.

pub mod broker;
pub mod clients;
pub mod gateway;
pub mod kafka;
pub mod pki;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

/// Held by the end-to-end tests that load the machine to its limits (10,000 connections at once,
/// 2,000 argon2id logins at once, 1,800 idle connections measured for memory), so no two of them
/// share the two cores: each asserts what a fleet would notice (everyone connected at the same
/// time, everyone let in), which a second such load beside it would take away. Sync tests take
/// it with `blocking_lock`, async ones with `lock().await`.
pub static LOAD_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free loopback ports: all held open until every one is chosen, so the OS cannot
/// hand out the same port twice (as separate [`free_port`] calls may).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("the OS hands out an ephemeral port"))
        .collect();
    std::array::from_fn(|i| {
        held[i]
            .local_addr()
            .expect("a bound listener has an address")
            .port()
    })
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A required environment variable; a test that needs it fails (never skips) without it.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the end-to-end tests with tests/run, which starts the broker"
        )
    })
}

/// A binary of this workspace, built by `cargo build --workspace --bins` (tests/run does it).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace --bins` first (tests/run does)",
        path.display()
    );
    path
}

/// A simulator run: `devices` environment sensors named `{prefix}-{i}` sending `events`
/// readings each over TCP from seq 1, in batches of 10, as fast as acknowledgements allow,
/// without injected faults. Adjust fields for other runs.
pub fn spec(
    tcp: SocketAddr,
    prefix: &str,
    devices: usize,
    events: u64,
) -> tributary_sim::scenario::Scenario {
    tributary_sim::scenario::Scenario::plain(
        tcp,
        tcp,
        tributary_sim::scenario::Link::Tcp,
        prefix,
        devices,
        events,
    )
}

/// Runs a scenario to its end.
pub async fn run(scenario: tributary_sim::scenario::Scenario) -> tributary_sim::run::RunReport {
    tributary_sim::run::run_to_end(&scenario)
        .await
        .expect("the scenario's roads load")
}

/// Publishes `message` on `topic` with Debian's `mosquitto_pub` at `qos`; true if it exited 0
/// (for QoS 1 and 2, only after the broker's acknowledgement).
pub fn mosquitto_pub(port: u16, qos: u8, topic: &str, message: &str) -> bool {
    mosquitto_pub_with(port, qos, topic, message, &[])
}

/// [`mosquitto_pub`] with more options (`--cafile`, `--cert`, `-u`, `-P`, `-i`, ...).
pub fn mosquitto_pub_with(port: u16, qos: u8, topic: &str, message: &str, extra: &[&str]) -> bool {
    let args = [&["-t", topic, "-m", message][..], extra].concat();
    mosquitto_pub_args(port, qos, &args)
}

/// `mosquitto_pub` to the gateway on `port` at `qos` with `args` (`-t`, `-m` or `-f`, ...):
/// whether it succeeded (for QoS 1, whether the publish was acknowledged).
pub fn mosquitto_pub_args(port: u16, qos: u8, args: &[&str]) -> bool {
    std::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            &qos.to_string(),
        ])
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("mosquitto_pub (mosquitto-clients) is installed")
        .success()
}

/// A topic name no other test uses.
pub fn unique_topic(stem: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{stem}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A small tmpfs mounted for one test (needs root, as `tests/run` on CI has); unmounted on drop.
pub struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    pub fn mount(bytes: u64) -> Self {
        let dir = tempfile::tempdir().expect("mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a {bytes}-byte tmpfs failed: the full-disk tests need root"
        );
        Self { dir }
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Free bytes on it.
    pub fn free(&self) -> u64 {
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(self.path())
            .output()
            .expect("run df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df prints the free bytes")
    }

    /// Fills it until `leave` bytes are free; returns the filler's path.
    pub fn fill_leaving(&self, leave: u64) -> std::path::PathBuf {
        let path = self.path().join("filler");
        let size = self.free().saturating_sub(leave);
        let file = std::fs::File::create(&path).expect("filler");
        use std::io::Write;
        let mut w = std::io::BufWriter::new(file);
        let chunk = vec![0u8; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            w.write_all(&chunk[..n]).expect("write filler");
            left -= n as u64;
        }
        w.flush().expect("flush filler");
        path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Adds devices with passwords through the real CLI: `tributary devices import --file FILE`,
/// with `lines` (`device_id password` per line) on its standard input.
pub fn import_passwords(file: &std::path::Path, lines: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new(binary("tributary"))
        .args(["devices", "import", "--file"])
        .arg(file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("tributary devices import");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(lines.as_bytes())
        .expect("write passwords");
    assert!(child.wait().expect("wait").success());
}

/// `GET path` over plain HTTP/1.1 to `addr`: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the admin listener");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_owned())
}

/// A bare protocol connection to a TCP listener, with no HELLO sent: for tests that send what a
/// well-behaved device would not.
pub async fn raw_tcp(
    addr: SocketAddr,
) -> tokio_util::codec::Framed<tokio::net::TcpStream, tributary_protocol::codec::MessageCodec> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio_util::codec::Framed::new(
        stream,
        tributary_protocol::codec::MessageCodec::new(1 << 16),
    )
}
