//! Devices on real MQTT client libraries, from `tests/clients`: paho-mqtt (PyPI,
//! `paho_device.py`) and MQTT.js (npm, `mqttjs_device.mjs`). Each prints what the gateway
//! answered as JSON lines; these run them and parse the lines.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::env;

pub fn clients() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// Writes a plan (a JSON list of publishes, as the client scripts take it) into `dir`.
pub fn plan(dir: &Path, name: &str, entries: &Value) -> PathBuf {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, entries.to_string()).expect("write plan");
    path
}

/// The JSON lines a client printed. Panics with its stderr if it printed none.
fn lines(out: std::process::Output, what: &str) -> Vec<Value> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let parsed: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        !parsed.is_empty(),
        "{what} printed nothing (exit {:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    parsed
}

/// The paho-mqtt device, spawned: `args` as `paho_device.py` takes them.
pub fn paho_spawn(args: &[&str]) -> Child {
    Command::new(env("TRIBUTARY_TEST_PYTHON"))
        .arg(clients().join("paho_device.py"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run paho_device.py")
}

/// The paho-mqtt device, run to its end.
pub fn paho(args: &[&str]) -> Vec<Value> {
    let out = paho_spawn(args).wait_with_output().expect("paho_device.py");
    lines(out, "paho_device.py")
}

/// What a spawned paho device printed once it ended.
pub fn paho_output(child: Child) -> Vec<Value> {
    lines(
        child.wait_with_output().expect("paho_device.py"),
        "paho_device.py",
    )
}

/// The MQTT.js device: protocol `version` (5, 4 or 3), `client_id`, the plan file.
pub fn mqttjs(port: u16, version: u8, client_id: &str, plan: &Path) -> Vec<Value> {
    let out = Command::new(env("TRIBUTARY_TEST_NODE"))
        .arg(clients().join("mqttjs_device.mjs"))
        .args([&port.to_string(), &version.to_string(), client_id])
        .arg(plan)
        .output()
        .expect("run mqttjs_device.mjs");
    lines(out, "mqttjs_device.mjs")
}

/// The answers (`{"i", "rc", ...}` lines) in plan order.
pub fn answers(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l.get("i").is_some()).collect()
}
