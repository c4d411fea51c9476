//! The gateway killed with SIGKILL at random moments under load: every event a device saw
//! acknowledged is afterwards in the spool or already forwarded, and never twice in the spool.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Outgoing, Packet, QoS};
use tributary_protocol::Event;
use tributary_sim::tcp::TcpDevice;
use tributary_tests::gateway::{Gateway, Topics};

const KILLS: usize = 20;
const DEVICES: usize = 6;

/// A simulated device that keeps what was not acknowledged and resends it, as firmware does.
#[derive(Clone)]
struct Device {
    id: String,
    index: usize,
    next_seq: u64,
    pending: VecDeque<Event>,
    acked: BTreeSet<u64>,
}

impl Device {
    fn new(prefix: &str, index: usize) -> Self {
        Self {
            id: format!("{prefix}-{index}"),
            index,
            next_seq: 1,
            pending: VecDeque::new(),
            acked: BTreeSet::new(),
        }
    }

    fn new_event(&mut self) -> Event {
        let e = tributary_sim::generate::event(
            self.index,
            &self.id,
            self.next_seq,
            1_700_000_000_000 + self.next_seq,
            false,
        );
        self.next_seq += 1;
        self.pending.push_back(e.clone());
        e
    }

    fn ack_up_to(&mut self, up_to: u64) {
        while self.pending.front().is_some_and(|e| e.seq <= up_to) {
            if let Some(e) = self.pending.pop_front() {
                self.acked.insert(e.seq);
            }
        }
    }

    fn ack_one(&mut self, seq: u64) {
        self.pending.retain(|e| e.seq != seq);
        self.acked.insert(seq);
    }
}

async fn tcp_device(gateway: std::net::SocketAddr, mut d: Device) -> Device {
    let Ok(mut conn) = TcpDevice::connect(gateway, &d.id, None, None).await else {
        return d;
    };
    loop {
        while d.pending.len() < 20 {
            d.new_event();
        }
        let batch: Vec<Event> = d.pending.iter().cloned().collect();
        match conn.send_batch(&batch).await {
            Ok(up_to) => d.ack_up_to(up_to),
            Err(_) => return d,
        }
    }
}

async fn mqtt_device(port: u16, mut d: Device) -> Device {
    let mut options = MqttOptions::new(d.id.clone(), "127.0.0.1", port);
    options.set_clean_session(true);
    options.set_inflight(20);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let mut resend: VecDeque<Event> = d.pending.clone();
    let mut sent: VecDeque<u64> = VecDeque::new();
    let mut by_pkid: HashMap<u16, u64> = HashMap::new();
    loop {
        while sent.len() + by_pkid.len() < 20 {
            let e = resend.pop_front().unwrap_or_else(|| d.new_event());
            let topic = tributary_client::publish::topic(&e);
            if client
                .try_publish(
                    topic,
                    QoS::AtLeastOnce,
                    false,
                    tributary_client::publish::payload(&e, None),
                )
                .is_err()
            {
                break;
            }
            sent.push_back(e.seq);
        }
        match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
            Ok(Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid)))) => {
                if let Some(seq) = sent.pop_front() {
                    by_pkid.insert(pkid, seq);
                }
            }
            Ok(Ok(MqttEvent::Incoming(Packet::PubAck(ack)))) => {
                if let Some(seq) = by_pkid.remove(&ack.pkid) {
                    d.ack_one(seq);
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return d,
        }
    }
}

/// The same device over MQTT 5 (rumqttc's v5 client, which keeps to the gateway's Receive
/// Maximum): only a PUBACK with reason "success" acknowledges an event.
async fn mqtt5_device(port: u16, mut d: Device) -> Device {
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, PubAckReason};
    use rumqttc::v5::{AsyncClient as Client5, Event as Event5, MqttOptions as Options5};
    let mut options = Options5::new(d.id.clone(), "127.0.0.1", port);
    options.set_clean_start(true);
    let (client, mut eventloop) = Client5::new(options, 64);
    let mut resend: VecDeque<Event> = d.pending.clone();
    let mut sent: VecDeque<u64> = VecDeque::new();
    let mut by_pkid: HashMap<u16, u64> = HashMap::new();
    loop {
        while sent.len() + by_pkid.len() < 20 {
            let e = resend.pop_front().unwrap_or_else(|| d.new_event());
            let topic = tributary_client::publish::topic(&e);
            let payload = tributary_client::publish::payload(&e, None);
            if client
                .try_publish(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .is_err()
            {
                break;
            }
            sent.push_back(e.seq);
        }
        match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
            Ok(Ok(Event5::Outgoing(Outgoing::Publish(pkid)))) => {
                if let Some(seq) = sent.pop_front() {
                    by_pkid.insert(pkid, seq);
                }
            }
            Ok(Ok(Event5::Incoming(P5::PubAck(ack)))) => {
                if let Some(seq) = by_pkid.remove(&ack.pkid) {
                    if ack.reason == PubAckReason::Success {
                        d.ack_one(seq);
                    }
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return d,
        }
    }
}

/// How the crash test's devices connect.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Link {
    Tcp,
    Mqtt,
    Mqtt5,
}

/// An event's identity.
type Id = (String, u64);

/// `(device, seq)` of every event in the spool (with how often) and in the file sink.
fn stored(gateway: &Gateway, topics: &Topics) -> (BTreeMap<Id, usize>, BTreeSet<Id>) {
    let (code, out) = gateway.spool_tool(&["export"]);
    assert_eq!(code, Some(0), "spool export: {out}");
    let mut spool = BTreeMap::new();
    for line in out.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).expect("export line is JSON");
        *spool.entry(event_id(&v)).or_default() += 1;
    }
    let sink_file = gateway
        .dir
        .path()
        .join(format!("data/sink/{}.jsonl", topics.readings));
    let sink = std::fs::read_to_string(sink_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| event_id(&v))
        .collect();
    (spool, sink)
}

fn event_id(line: &serde_json::Value) -> Id {
    let value = &line["value"];
    (
        value["device_id"].as_str().unwrap_or_default().to_owned(),
        value["seq"].as_u64().unwrap_or(u64::MAX),
    )
}

async fn killed_repeatedly_loses_nothing_acknowledged(link: Link) {
    let seed: u64 = rand::rng().random();
    eprintln!("crash test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (stem, prefix) = match link {
        Link::Tcp => ("crash-tcp", "ct"),
        Link::Mqtt => ("crash-mqtt", "cm"),
        Link::Mqtt5 => ("crash-mqtt5", "c5"),
    };
    let topics = Topics::unique(stem);
    let mut gateway = Gateway::start(None, &topics);
    let mut fleet: Vec<Device> = (0..DEVICES).map(|i| Device::new(prefix, i)).collect();
    for round in 0..KILLS {
        if round > 0 {
            gateway.restart();
        }
        let tasks: Vec<_> = fleet
            .drain(..)
            .map(|d| {
                let (tcp, port) = (gateway.tcp, gateway.mqtt.port());
                tokio::spawn(async move {
                    match link {
                        Link::Tcp => tcp_device(tcp, d).await,
                        Link::Mqtt => mqtt_device(port, d).await,
                        Link::Mqtt5 => mqtt5_device(port, d).await,
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..700))).await;
        gateway.kill();
        for t in tasks {
            fleet.push(t.await.expect("device task"));
        }
        let (spool, sink) = stored(&gateway, &topics);
        for ((device, seq), n) in &spool {
            assert_eq!(
                *n, 1,
                "round {round}: {device}:{seq} is {n} times in the spool (seed {seed})"
            );
        }
        for d in &fleet {
            for seq in &d.acked {
                let id = (d.id.clone(), *seq);
                assert!(
                    spool.contains_key(&id) || sink.contains(&id),
                    "round {round}: {}:{seq} was acknowledged but is neither in the spool nor forwarded (seed {seed})",
                    d.id
                );
            }
        }
    }
    let acked: usize = fleet.iter().map(|d| d.acked.len()).sum();
    assert!(
        acked > KILLS * DEVICES,
        "the load was real: {acked} events acknowledged"
    );
    // After the last kill, a clean run drains the spool into the sink: every line a reader
    // finds there is whole (a line torn by a kill is cut, not appended to), and every
    // acknowledged event is in it.
    gateway.restart();
    gateway.wait_drained(Duration::from_secs(60));
    assert!(gateway.stop().status.success());
    let path = gateway
        .dir
        .path()
        .join(format!("data/sink/{}.jsonl", topics.readings));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut found = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "sink line {} does not parse ({e}): {line:.200} (seed {seed})",
                i + 1
            )
        });
        found.insert(event_id(&v));
    }
    for d in &fleet {
        for seq in &d.acked {
            assert!(
                found.contains(&(d.id.clone(), *seq)),
                "{}:{seq} acknowledged, not in the sink after draining (seed {seed})",
                d.id
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_tcp_load_loses_no_acknowledged_event() {
    killed_repeatedly_loses_nothing_acknowledged(Link::Tcp).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_mqtt_qos1_load_loses_no_acknowledged_event() {
    killed_repeatedly_loses_nothing_acknowledged(Link::Mqtt).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_mqtt_5_load_loses_no_acknowledged_event() {
    killed_repeatedly_loses_nothing_acknowledged(Link::Mqtt5).await;
}
