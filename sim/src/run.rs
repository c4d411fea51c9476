//! A run: N devices, M events each, over TCP or MQTT, and what came back.

use std::net::SocketAddr;
use std::time::Duration;

use tributary_protocol::Event;

use crate::generate;
use crate::tcp::{Outbox, TcpDevice};

/// How devices reach the gateway.
#[derive(Debug, Clone)]
pub enum Transport {
    Tcp(SocketAddr),
    Mqtt { host: String, port: u16 },
}

/// What to send.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub transport: Transport,
    pub devices: usize,
    pub events_per_device: u64,
    /// Device ids are `{prefix}-{index}`.
    pub prefix: String,
    /// The first seq of every device; later runs must start higher (the gateway drops
    /// retransmissions by seq). The CLI's default is the current time in ms.
    pub seq_start: u64,
    /// Events per TCP batch.
    pub batch: usize,
    /// Events per second per device; 0 sends as fast as acknowledgements allow.
    pub rate_per_device: f64,
    /// Every n-th device reports positions, the others readings (0: readings only).
    pub position_every: usize,
}

/// What happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    pub sent: u64,
    pub acked: u64,
    pub resent: u64,
    pub readings: u64,
    pub positions: u64,
    pub failed_devices: Vec<String>,
}

impl RunSpec {
    pub fn device_id(&self, index: usize) -> String {
        format!("{}-{index}", self.prefix)
    }

    /// The events device `index` sends, in order.
    pub fn events_for(&self, index: usize) -> Vec<Event> {
        let id = self.device_id(index);
        let positions = self.position_every > 0 && index.is_multiple_of(self.position_every);
        let t0 = generate::now_ms();
        (0..self.events_per_device)
            .map(|n| generate::event(index, &id, self.seq_start + n, t0 + n * 1000, positions))
            .collect()
    }
}

/// Runs every device concurrently and adds up their reports.
pub async fn run(spec: RunSpec) -> RunReport {
    let mut tasks = Vec::with_capacity(spec.devices);
    for index in 0..spec.devices {
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move { device(&spec, index).await }));
    }
    let mut total = RunReport::default();
    for task in tasks {
        match task.await {
            Ok(r) => {
                total.sent += r.sent;
                total.acked += r.acked;
                total.resent += r.resent;
                total.readings += r.readings;
                total.positions += r.positions;
                total.failed_devices.extend(r.failed_devices);
            }
            Err(e) => total.failed_devices.push(format!("task: {e}")),
        }
    }
    total
}

async fn device(spec: &RunSpec, index: usize) -> RunReport {
    let events = spec.events_for(index);
    let mut report = RunReport {
        sent: events.len() as u64,
        ..Default::default()
    };
    for e in &events {
        match e.kind() {
            tributary_protocol::Kind::Reading => report.readings += 1,
            tributary_protocol::Kind::Position => report.positions += 1,
        }
    }
    let id = spec.device_id(index);
    let result = match &spec.transport {
        Transport::Tcp(addr) => tcp_device(spec, *addr, &id, events, &mut report).await,
        Transport::Mqtt { host, port } => crate::mqtt::publish_all(
            host,
            *port,
            &id,
            &events,
            spec.rate_per_device,
            Duration::from_secs(60),
        )
        .await
        .map(|acked| report.acked = acked)
        .map_err(|e| e.to_string()),
    };
    if let Err(e) = result {
        report.failed_devices.push(format!("{id}: {e}"));
    }
    report
}

async fn tcp_device(
    spec: &RunSpec,
    addr: SocketAddr,
    id: &str,
    events: Vec<Event>,
    report: &mut RunReport,
) -> Result<(), String> {
    let mut outbox = Outbox::default();
    let mut conn: Option<TcpDevice> = None;
    let interval = (spec.rate_per_device > 0.0)
        .then(|| Duration::from_secs_f64(spec.batch as f64 / spec.rate_per_device));
    let mut failures = 0u32;
    for chunk in events.chunks(spec.batch.max(1)) {
        outbox.pending.extend(chunk.iter().cloned());
        loop {
            let device = match conn.as_mut() {
                Some(d) => d,
                None => match TcpDevice::connect(addr, id, None).await {
                    Ok(d) => {
                        // Everything still pending beyond this chunk goes again.
                        outbox.resent += (outbox.pending.len() - chunk.len()) as u64;
                        conn.insert(d)
                    }
                    Err(e) => {
                        failures += 1;
                        if failures > 50 {
                            return Err(e.to_string());
                        }
                        tokio::time::sleep(Duration::from_millis(
                            100 * u64::from(failures.min(20)),
                        ))
                        .await;
                        continue;
                    }
                },
            };
            let batch: Vec<Event> = outbox.pending.iter().cloned().collect();
            match device.send_batch(&batch).await {
                Ok(up_to) => {
                    report.acked += outbox.ack(up_to) as u64;
                    failures = 0;
                    break;
                }
                Err(e) => {
                    failures += 1;
                    conn = None;
                    if failures > 50 {
                        return Err(e.to_string());
                    }
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(20))))
                        .await;
                }
            }
        }
        if let Some(i) = interval {
            tokio::time::sleep(i).await;
        }
    }
    report.resent = outbox.resent;
    Ok(())
}
