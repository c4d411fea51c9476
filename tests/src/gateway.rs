//! The gateway as a child process with its own config, data directory and ports.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{binary, free_ports, loopback};

/// Topics one gateway writes to.
#[derive(Debug, Clone)]
pub struct Topics {
    pub readings: String,
    pub positions: String,
    pub dead_letter: String,
}

impl Topics {
    pub fn unique(stem: &str) -> Self {
        Self {
            readings: crate::unique_topic(&format!("{stem}.readings")),
            positions: crate::unique_topic(&format!("{stem}.positions")),
            dead_letter: crate::unique_topic(&format!("{stem}.dead")),
        }
    }

    pub fn all(&self) -> [&str; 3] {
        [&self.readings, &self.positions, &self.dead_letter]
    }
}

/// A running gateway; killed on drop if not stopped.
pub struct Gateway {
    child: Option<Child>,
    pub tcp: SocketAddr,
    pub mqtt: SocketAddr,
    /// The embedded broker for subscribers.
    pub broker: SocketAddr,
    /// The admin listener (metrics, health, status).
    pub admin: SocketAddr,
    /// The TLS listeners, for a gateway started with [`Gateway::start_secure`].
    pub tcp_tls: Option<SocketAddr>,
    pub mqtt_tls: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// Extra environment for the gateway process.
    env: Vec<(String, String)>,
}

/// What a stopped gateway left behind.
pub struct Stopped {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Stopped {
    /// A refusal count from the summary the gateway printed on exit (its `refused:` lines,
    /// `  tcp/over_limit   12`); 0 when the label is absent.
    pub fn refused(&self, label: &str) -> u64 {
        self.stdout
            .lines()
            .find_map(|l| {
                let mut words = l.split_whitespace();
                (words.next() == Some(label)).then(|| words.next()?.parse().ok())?
            })
            .unwrap_or(0)
    }
}

impl Gateway {
    /// Starts a gateway forwarding to `brokers` (`None`: the file sink) and waits until its
    /// listeners accept connections.
    pub fn start(brokers: Option<&str>, topics: &Topics) -> Self {
        Self::start_with(brokers, topics, "")
    }

    /// Like [`Gateway::start`], with more TOML appended to the config. The config ends in the
    /// `[kafka]` table, so `extra` may start with `[kafka]` keys, then add tables such as
    /// `[spool]`. `{dir}` in it is replaced by the gateway's temporary directory.
    pub fn start_with(brokers: Option<&str>, topics: &Topics, extra: &str) -> Self {
        Self::start_with_mqtt(brokers, topics, "", extra)
    }

    /// Like [`Gateway::start_with`], with `mqtt` (TOML `key = value` lines) added to the
    /// `[mqtt]` table.
    pub fn start_with_mqtt(
        brokers: Option<&str>,
        topics: &Topics,
        mqtt: &str,
        extra: &str,
    ) -> Self {
        Self::start_with_tables(brokers, topics, ("", mqtt), extra)
    }

    /// Like [`Gateway::start_with`], with `tcp` lines added to the `[tcp]` table.
    pub fn start_with_tcp(brokers: Option<&str>, topics: &Topics, tcp: &str, extra: &str) -> Self {
        Self::start_with_tables(brokers, topics, (tcp, ""), extra)
    }

    /// Like [`Gateway::start_with`], with lines added to the `[tcp]` and `[mqtt]` tables.
    pub fn start_with_tables(
        brokers: Option<&str>,
        topics: &Topics,
        (tcp, mqtt): (&str, &str),
        extra: &str,
    ) -> Self {
        Self::start_in(
            tempfile::tempdir().expect("temp dir"),
            brokers,
            topics,
            false,
            (tcp, mqtt),
            extra,
        )
    }

    /// Like [`Gateway::start_with_mqtt`], in `dir`: for files the config names (`{dir}`) that
    /// must be there before the gateway starts.
    pub fn start_in_dir(
        dir: tempfile::TempDir,
        brokers: Option<&str>,
        topics: &Topics,
        mqtt: &str,
        extra: &str,
    ) -> Self {
        Self::start_in(dir, brokers, topics, false, ("", mqtt), extra)
    }

    /// Like [`Gateway::start_with`], with `env` set for the gateway process (`LD_PRELOAD`, ...).
    pub fn start_with_env(
        brokers: Option<&str>,
        topics: &Topics,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let mut gateway = Self::configured(brokers, topics, extra);
        gateway.env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        gateway.spawn();
        gateway
    }

    /// Like [`Gateway::start`], with `shutdown_grace_ms` set to `grace_ms` (5000 otherwise).
    pub fn start_with_grace(brokers: Option<&str>, topics: &Topics, grace_ms: u64) -> Self {
        Self::start_edited(brokers, topics, "", |_, text| {
            text.replace(
                "shutdown_grace_ms = 5000\n",
                &format!("shutdown_grace_ms = {grace_ms}\n"),
            )
        })
    }

    /// Like [`Gateway::start_with`], with `admin` (TOML `key = value` lines, `{dir}` for the
    /// gateway's directory) added to the `[admin]` table.
    pub fn start_with_admin(
        brokers: Option<&str>,
        topics: &Topics,
        admin: &str,
        extra: &str,
    ) -> Self {
        Self::start_edited(brokers, topics, extra, |gateway, text| {
            let listen = format!("[admin]\nlisten = \"{}\"\n", gateway.admin);
            let lines = admin.replace("{dir}", &gateway.dir.path().display().to_string());
            text.replacen(&listen, &format!("{listen}{lines}"), 1)
        })
    }

    /// Like [`Gateway::start_with`], with the config text passed through `edit` first.
    pub fn start_edited(
        brokers: Option<&str>,
        topics: &Topics,
        extra: &str,
        edit: impl FnOnce(&Self, String) -> String,
    ) -> Self {
        let mut gateway = Self::configured(brokers, topics, extra);
        let text = std::fs::read_to_string(&gateway.config).expect("config");
        let text = edit(&gateway, text);
        std::fs::write(&gateway.config, text).expect("write config");
        gateway.spawn();
        gateway
    }

    /// A plain gateway's config with `extra` appended, written to a new directory; not started.
    fn configured(brokers: Option<&str>, topics: &Topics, extra: &str) -> Self {
        Self::configure(
            tempfile::tempdir().expect("temp dir"),
            brokers,
            topics,
            false,
            ("", ""),
            extra,
        )
    }

    /// A gateway with TLS listeners beside the plain ones (`tcp_tls`, `mqtt_tls`). `sections`
    /// (with `{dir}` for `dir`) must hold `[tls]`, and usually `[auth]`; it may name files
    /// already placed in `dir`.
    pub fn start_secure(
        dir: tempfile::TempDir,
        brokers: Option<&str>,
        topics: &Topics,
        sections: &str,
    ) -> Self {
        Self::start_in(dir, brokers, topics, true, ("", ""), sections)
    }

    fn start_in(
        dir: tempfile::TempDir,
        brokers: Option<&str>,
        topics: &Topics,
        tls: bool,
        lines: (&str, &str),
        extra: &str,
    ) -> Self {
        let mut gateway = Self::configure(dir, brokers, topics, tls, lines, extra);
        gateway.spawn();
        gateway
    }

    /// Writes the config; does not start the gateway.
    fn configure(
        dir: tempfile::TempDir,
        brokers: Option<&str>,
        topics: &Topics,
        tls: bool,
        (tcp_lines, mqtt_lines): (&str, &str),
        extra: &str,
    ) -> Self {
        // One call for all of them: separately chosen ports can repeat.
        let [tcp, mqtt, broker, admin, tcp_tls, mqtt_tls] = free_ports::<6>().map(loopback);
        let (tcp_tls, mqtt_tls) = if tls {
            (Some(tcp_tls), Some(mqtt_tls))
        } else {
            (None, None)
        };
        let tls_line = |a: Option<SocketAddr>| {
            a.map(|a| format!("tls_listen = \"{a}\"\n"))
                .unwrap_or_default()
        };
        let config = dir.path().join("gateway.toml");
        // [kafka] comes last, so `extra` may begin with more [kafka] keys before its own tables.
        let text = format!(
            "[gateway]\ndata_dir = {data:?}\nshutdown_grace_ms = 5000\n[admin]\nlisten = \"{admin}\"\n\
             [tcp]\nlisten = \"{tcp}\"\n{tcp_tls}{tcp_lines}[mqtt]\nlisten = \"{mqtt}\"\n{mqtt_tls}broker_listen = \"{broker}\"\n{mqtt_lines}\
             [routes]\nreadings = \"{r}\"\npositions = \"{p}\"\ndead_letter = \"{d}\"\n\
             [kafka]\nbrokers = \"{brokers}\"\n",
            data = dir.path().join("data"),
            brokers = brokers.unwrap_or(""),
            r = topics.readings,
            p = topics.positions,
            d = topics.dead_letter,
            tcp_tls = tls_line(tcp_tls),
            mqtt_tls = tls_line(mqtt_tls),
        ) + &extra.replace("{dir}", &dir.path().display().to_string());
        std::fs::write(&config, text).expect("write config");
        Gateway {
            child: None,
            tcp,
            mqtt,
            broker,
            admin,
            tcp_tls,
            mqtt_tls,
            dir,
            config,
            env: Vec::new(),
        }
    }

    /// Starts the gateway again on the same config and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the gateway first");
        self.spawn();
    }

    /// Kills the gateway with SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The file sink's directory (when started without brokers).
    pub fn sink_dir(&self) -> PathBuf {
        self.dir.path().join("data/sink")
    }

    /// The messages the file sink wrote to `topic`, one JSON object each (none if it wrote none).
    pub fn sink_lines(&self, topic: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.sink_dir().join(format!("{topic}.jsonl")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The spool file.
    pub fn spool_path(&self) -> PathBuf {
        self.dir.path().join("data/spool.db")
    }

    /// Runs `tributary spool <args>` on this gateway's config and returns (exit code, stdout).
    pub fn spool_tool(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = Command::new(binary("tributary"))
            .arg("spool")
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run tributary spool");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    fn spawn(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))
            .expect("log file");
        let child = Command::new(binary("tributary"))
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info,rumqttd=off")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start tributary");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let tls = [self.tcp_tls, self.mqtt_tls].into_iter().flatten();
        for addr in [self.tcp, self.mqtt, self.broker, self.admin]
            .into_iter()
            .chain(tls)
        {
            while std::net::TcpStream::connect(addr).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "gateway did not listen on {addr}; its log:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Sends SIGHUP: reload credentials, ACL and certificates.
    pub fn hangup(&self) {
        let pid = self.pid().expect("gateway is running");
        let _ = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status();
    }

    /// The gateway's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Waits until the spool is empty (everything forwarded), as `/metrics` says; panics after
    /// `timeout`. Stopping is bounded by `shutdown_grace_ms`, so a test that reads the sink after
    /// a large run waits for the drain first.
    pub fn wait_drained(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, metrics) = crate::http_get(self.admin, "/metrics");
            let rows = metrics
                .lines()
                .find_map(|l| l.strip_prefix("tributary_spool_rows "))
                .and_then(|v| v.trim().parse::<f64>().ok());
            if rows == Some(0.0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the spool did not drain within {timeout:?} ({rows:?} rows left)"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends SIGTERM and waits for a graceful exit (at most 60 s).
    pub fn stop(&mut self) -> Stopped {
        let mut child = self.child.take().expect("gateway is running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for gateway") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "gateway did not stop within 60 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stdout = String::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        Stopped {
            status,
            stdout,
            stderr: self.log(),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
