//! Apache Kafka brokers of a test's own: one node, or a three-node KRaft cluster, started from
//! the jars `tests/kafka/fetch` brought (`TRIBUTARY_TEST_KAFKA_LIBS`) by `tests/kafka/node`, the
//! one place the brokers' settings live. Nodes can be killed (SIGKILL), stopped (SIGTERM, a
//! controlled shutdown) and started again on the same ports and data, so a test sees the same
//! cluster come back. Everything is killed when the cluster is dropped.
//!
//! A node counts as started once its log says `Kafka Server started`; a cluster once every node
//! that should be up has said so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::env;

/// How long a node may take from `java` to `Kafka Server started` (about 10 s on 2 idle cores;
/// a loaded machine running other tests is slower).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// One KRaft node of a [`KafkaCluster`].
pub struct Node {
    pub id: u32,
    pub port: u16,
    pub controller_port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Lines of the log already read when this start began: readiness is looked for after them.
    log_from: usize,
}

impl Node {
    fn log_path(&self) -> PathBuf {
        self.dir.join("kafka.log")
    }
}

/// What a cluster adds to the nodes' settings (listeners with TLS and SASL, ACLs, users).
#[derive(Clone, Default)]
pub struct Extra {
    /// `key=value` properties; `{id}`, `{port}`, `{controller_port}` and `{sasl_port}` are
    /// replaced per node.
    pub set: Vec<String>,
    /// SCRAM-SHA-512 users created when the storage is formatted: `(name, password)`.
    pub scram: Vec<(String, String)>,
    /// A second listener's port per node, for `{sasl_port}` (none unless asked).
    pub sasl_listener: bool,
}

/// A KRaft cluster of one or three nodes on loopback.
pub struct KafkaCluster {
    pub nodes: Vec<Node>,
    /// Second listener ports (SASL_SSL), where [`Extra::sasl_listener`] asked for them.
    pub sasl_ports: Vec<u16>,
    cluster_id: String,
    voters: String,
    extra: Extra,
    _tmp: tempfile::TempDir,
}

impl KafkaCluster {
    /// `n` nodes on fresh ports, started and ready.
    pub fn start(n: usize) -> Self {
        Self::start_with(n, Extra::default())
    }

    /// One node whose client listener is `port` (chosen before, e.g. a gateway was already told
    /// of it), started and ready.
    pub fn start_on(port: u16) -> Self {
        Self::build(vec![port], Extra::default())
    }

    /// `n` nodes with `extra` settings, started and ready.
    pub fn start_with(n: usize, extra: Extra) -> Self {
        let ports: Vec<u16> = (0..n).map(|_| crate::free_port()).collect();
        Self::build(ports, extra)
    }

    fn build(ports: Vec<u16>, extra: Extra) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("kafka-")
            .tempdir()
            .expect("a temporary directory for the brokers");
        // Every port the cluster needs, chosen together so none is handed out twice.
        let more = crate::free_ports::<6>();
        let controller_ports: Vec<u16> = more[..ports.len()].to_vec();
        let sasl_ports: Vec<u16> = if extra.sasl_listener {
            more[3..3 + ports.len()].to_vec()
        } else {
            Vec::new()
        };
        let voters = controller_ports
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{}@127.0.0.1:{c}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = ports
            .iter()
            .zip(&controller_ports)
            .enumerate()
            .map(|(i, (&port, &controller_port))| Node {
                id: i as u32 + 1,
                port,
                controller_port,
                dir: tmp.path().join(format!("node-{}", i + 1)),
                child: None,
                log_from: 0,
            })
            .collect();
        let mut cluster = Self {
            nodes,
            sasl_ports,
            cluster_id: random_cluster_id(),
            voters,
            extra,
            _tmp: tmp,
        };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i);
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_started(i);
        }
        cluster
    }

    /// The bootstrap list of the plain-text listeners.
    pub fn brokers(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The bootstrap list of the nodes that are running now.
    fn up_brokers(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The bootstrap list of the SASL_SSL listeners.
    pub fn sasl_brokers(&self) -> String {
        self.sasl_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka/node");
        let libs = env("TRIBUTARY_TEST_KAFKA_LIBS");
        let sasl_port = self.sasl_ports.get(i).copied();
        let node = &mut self.nodes[i];
        std::fs::create_dir_all(&node.dir).expect("node directory");
        let log_path = node.log_path();
        node.log_from = std::fs::read_to_string(&log_path)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("node log");
        let mut cmd = Command::new(script);
        cmd.arg("--libs")
            .arg(&libs)
            .arg("--dir")
            .arg(&node.dir)
            .args(["--id", &node.id.to_string()])
            .args(["--port", &node.port.to_string()])
            .args(["--controller-port", &node.controller_port.to_string()])
            .args(["--voters", &self.voters, "--cluster-id", &self.cluster_id]);
        for s in &self.extra.set {
            let s = s
                .replace("{id}", &node.id.to_string())
                .replace("{port}", &node.port.to_string())
                .replace("{controller_port}", &node.controller_port.to_string())
                .replace(
                    "{sasl_port}",
                    &sasl_port.map(|p| p.to_string()).unwrap_or_default(),
                );
            cmd.args(["--set", &s]);
        }
        for (user, password) in &self.extra.scram {
            cmd.args(["--scram", &format!("{user}={password}")]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("node log"))
            .stderr(log)
            .spawn()
            .expect("start tests/kafka/node");
        node.child = Some(child);
    }

    fn wait_started(&mut self, i: usize) {
        let deadline = Instant::now() + START_TIMEOUT;
        let node = &mut self.nodes[i];
        loop {
            let log = std::fs::read_to_string(node.log_path()).unwrap_or_default();
            if log
                .lines()
                .skip(node.log_from)
                .any(|l| l.contains("Kafka Server started"))
            {
                return;
            }
            if let Some(child) = node.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "Kafka node {} exited ({status}) before it started:\n{}",
                        node.id,
                        tail(&log, 40)
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "Kafka node {} did not start in {START_TIMEOUT:?}:\n{}",
                node.id,
                tail(&log, 40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts node `id` (1-based) again on its ports and data, and waits until it is ready.
    pub fn start_node(&mut self, id: u32) {
        let i = self.index(id);
        assert!(
            self.nodes[i].child.is_none(),
            "Kafka node {id} is already running"
        );
        self.spawn(i);
        self.wait_started(i);
    }

    /// SIGKILL: node `id` dies at once, as in a power cut or an OOM kill.
    pub fn kill_node(&mut self, id: u32) {
        let i = self.index(id);
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: a controlled shutdown, which hands its leaderships over first.
    pub fn stop_node(&mut self, id: u32) {
        let i = self.index(id);
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether node `id` is running.
    pub fn is_up(&self, id: u32) -> bool {
        self.nodes[self.index(id)].child.is_some()
    }

    /// The node that leads `topic`'s `partition` now, as the cluster's metadata says (asked of
    /// the nodes that are up); `None` while the partition has no leader.
    pub fn leader_of(&self, topic: &str, partition: i32) -> Option<u32> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.up_brokers())
            .create()
            .ok()?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .ok()?;
        let t = metadata.topics().iter().find(|t| t.name() == topic)?;
        let p = t.partitions().iter().find(|p| p.id() == partition)?;
        u32::try_from(p.leader()).ok().filter(|&l| l > 0)
    }

    /// Waits until every partition of `topics` has a leader and all its replicas in sync (after
    /// a node came back), as the metadata of the nodes that are up says.
    pub fn wait_in_sync(&self, topics: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let lagging = self.out_of_sync(topics);
            if lagging.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replicas not in sync after {within:?}: {lagging:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Partitions of `topics` without a leader or with a replica out of sync.
    pub fn out_of_sync(&self, topics: &[&str]) -> Vec<String> {
        let Ok(consumer) = ClientConfig::new()
            .set("bootstrap.servers", self.up_brokers())
            .create::<BaseConsumer>()
        else {
            return vec!["no client".into()];
        };
        let mut lagging = Vec::new();
        for topic in topics {
            match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
                Ok(md) => {
                    for t in md.topics() {
                        for p in t.partitions() {
                            if p.leader() < 0 || p.isr().len() < p.replicas().len() {
                                lagging.push(format!(
                                    "{topic}/{}: leader {}, isr {:?} of {:?}",
                                    p.id(),
                                    p.leader(),
                                    p.isr(),
                                    p.replicas()
                                ));
                            }
                        }
                        if t.partitions().is_empty() {
                            lagging.push(format!("{topic}: no partitions"));
                        }
                    }
                }
                Err(e) => lagging.push(format!("{topic}: {e}")),
            }
        }
        lagging
    }

    /// Runs one of Kafka's command-line tools (`class`, e.g. `org.apache.kafka.tools.AclCommand`)
    /// with `args`, against the plain-text listeners (`--bootstrap-server` is added); panics
    /// with its output when it fails. Returns what it printed.
    pub fn tool(&self, class: &str, args: &[&str]) -> String {
        let libs = env("TRIBUTARY_TEST_KAFKA_LIBS");
        let log4j = concat!(env!("CARGO_MANIFEST_DIR"), "/kafka/log4j2.properties");
        let out = Command::new("java")
            .args(["-Xmx256m", &format!("-Dlog4j2.configurationFile={log4j}")])
            .args(["-Dlog4j2.level=WARN", "-cp", &format!("{libs}/*"), class])
            .args(["--bootstrap-server", &self.brokers()])
            .args(args)
            .output()
            .expect("run java");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{class} {args:?} failed:\n{text}");
        text
    }

    /// Grants `operations` on `resource` (`["--topic", "name"]`, `["--cluster"]`,
    /// `["--topic", "x.", "--resource-pattern-type", "prefixed"]`) to `principal`
    /// (`User:name`) with Kafka's own `kafka-acls` tool.
    pub fn allow(&self, principal: &str, operations: &[&str], resource: &[&str]) {
        let mut args = vec!["--add", "--allow-principal", principal];
        for op in operations {
            args.extend(["--operation", op]);
        }
        args.extend(resource);
        self.tool("org.apache.kafka.tools.AclCommand", &args);
    }

    /// The broker log of node `id`, for a failing test's message.
    pub fn log(&self, id: u32) -> String {
        std::fs::read_to_string(self.nodes[self.index(id)].log_path()).unwrap_or_default()
    }

    fn index(&self, id: u32) -> usize {
        let i = id as usize - 1;
        assert!(i < self.nodes.len(), "no Kafka node {id}");
        i
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A KRaft cluster id: 16 random bytes in URL-safe base64 without padding, as
/// `kafka-storage random-uuid` prints; like Kafka's `Uuid.randomUuid`, never one that starts
/// with `-`, which `kafka-storage format -t` would read as an option (1 start in 64 failed so:
/// "argument --cluster-id/-t: expected one argument").
fn random_cluster_id() -> String {
    loop {
        let id = random_base64_id();
        if !id.starts_with('-') {
            return id;
        }
    }
}

fn random_base64_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes: [u8; 16] = rand::random();
    let mut bits: u32 = 0;
    let mut n = 0;
    let mut out = String::new();
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        n += 8;
        while n >= 6 {
            n -= 6;
            out.push(ALPHABET[((bits >> n) & 63) as usize] as char);
        }
    }
    if n > 0 {
        out.push(ALPHABET[((bits << (6 - n)) & 63) as usize] as char);
    }
    out
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
