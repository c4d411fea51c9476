//! Helpers for the end-to-end tests: the real `tributary` binary as a child process, a real
//! Kafka-compatible broker (tansu, started by `tests/run`), and consumers that read back what
//! the gateway wrote.
//!
//! Environment, set by `tests/run`:
//! - `TRIBUTARY_TEST_KAFKA`: `host:port` of the broker. Tests that need it fail without it.
//! - `TRIBUTARY_TEST_PYTHON`: a Python with kafka-python installed.
//! - `TRIBUTARY_TEST_TANSU`: the tansu binary, for tests that start a broker of their own.

pub mod gateway;
pub mod kafka;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the OS hands out an ephemeral port")
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
