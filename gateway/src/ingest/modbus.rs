//! The Modbus source: the gateway polls Modbus TCP and RTU devices (PLCs, energy meters, VFDs,
//! RS-485 sensor chains) and stores each poll as one reading event of the configured device,
//! through the same routes, rules and topics as every device's events.
//!
//! The protocol is tokio-modbus's ([`tokio_modbus`], client side, TCP and RTU); the serial
//! line is tokio-serial's, without libudev. A `[[modbus]]` link is one connection or serial
//! line, polled by one task: requests on a line go one at a time, as Modbus requires, and each
//! device on it is polled on its own interval, by unit id.
//!
//! # Invariants
//! - **One poll, one event, or one counted gap.** A poll reads the device's register map in the
//!   fewest requests ([`map::plan`]); all of them answered, it becomes one reading event with a
//!   value per configured register ([`map::decode`]). Any request that times out, answers a
//!   Modbus exception, or loses the connection makes the whole poll a gap: no event, never a
//!   made-up value; counted in `tributary_modbus_polls_total{device, outcome}`, listed in the
//!   status page's refusals (and as the device's last refusal once it has a row), logged
//!   rate-limited. While the
//!   link is down every due poll is a counted `disconnected` gap, so the count says how many
//!   readings are missing.
//! - **Durable seq.** The gateway assigns each device's seq: the next one is kept in the spool
//!   (`source_offsets`, `modbus:{device}`) in the same transaction as the event that used the
//!   one before. A restart neither repeats nor skips a seq; a poll the spool refused stores
//!   nothing and moves nothing. Events keep a de-duplication lane of their own (writer
//!   `modbus:{link}`), apart from anything the device id also sends.
//! - **Reconnection with backoff.** A failed connection, a dropped one, or a request that timed
//!   out (its answer may still arrive and be taken for the next one's) closes the link; it is
//!   opened again after a wait that doubles from 100 ms to `backoff_max_ms`.
//! - **Bounded shutdown.** The task stops at `scope.stop`, between requests.

pub mod config;
pub mod map;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_modbus::client::{Context, Reader as _};
use tokio_modbus::slave::{Slave, SlaveContext as _};

pub use self::config::{Line, ModbusDevice, ModbusLink, RawModbus};
use self::map::{Answer, Read, Table};
use super::{Inbound, Ingest};
use crate::observe::stats::ModbusLabel;
use crate::shutdown::Scope;
use crate::transport::Transport;
use tributary_common::backoff::Backoff;
use tributary_protocol::{Body, Event, Reading, SensorValue};
use tributary_spool::SourceState;

/// The first wait before reconnecting; it doubles up to the link's `backoff_max`.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);

/// Why a poll is a gap: the label it is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gap {
    Timeout,
    Exception,
    Disconnected,
    ConnectFailed,
    Protocol,
    Spool,
}

impl Gap {
    fn label(self) -> &'static str {
        match self {
            Gap::Timeout => "timeout",
            Gap::Exception => "exception",
            Gap::Disconnected => "disconnected",
            Gap::ConnectFailed => "connect_failed",
            Gap::Protocol => "protocol",
            Gap::Spool => "spool",
        }
    }

    /// Whether the link must be opened again after it.
    fn closes(self) -> bool {
        matches!(self, Gap::Timeout | Gap::Disconnected | Gap::Protocol)
    }
}

/// A device on the link and where its polling stands.
struct Polled {
    device: ModbusDevice,
    reads: Vec<Read>,
    /// The seq the next stored poll gets.
    next_seq: u64,
    due: Instant,
}

/// The link's connection, and when to try again while it is down.
struct Connection {
    context: Option<Context>,
    retry_at: Instant,
    backoff: Backoff,
}

impl Connection {
    /// Gives the link up after a failure (closing it, best effort, if it was open) and says how
    /// long until it is tried again.
    async fn give_up(&mut self, timeout: Duration) -> Duration {
        if let Some(mut context) = self.context.take() {
            use tokio_modbus::client::Client as _;
            // Best effort: the link is being given up on anyway.
            let _ = tokio::time::timeout(timeout, context.disconnect()).await;
        }
        let wait = self.backoff.next_delay();
        self.retry_at = Instant::now() + wait;
        wait
    }
}

/// Polls `link`'s devices until `scope.stop`.
pub async fn serve(link: ModbusLink, ingest: Ingest, scope: Scope) {
    let saved: HashMap<String, u64> = match ingest.spool.sources("modbus:").await {
        Ok(states) => states
            .into_iter()
            .filter_map(|s| {
                let device = s.source.strip_prefix("modbus:")?.to_owned();
                Some((device, u64::from_be_bytes(s.state.try_into().ok()?)))
            })
            .collect(),
        Err(error) => {
            tracing::error!(message = "Cannot read the saved Modbus seqs; the link does not start.", link = %link.name, %error);
            return;
        }
    };
    let start = Instant::now();
    let mut devices: Vec<Polled> = link
        .devices
        .iter()
        .map(|d| Polled {
            reads: map::plan(&d.registers),
            next_seq: saved.get(&d.device_id).copied().unwrap_or(1),
            due: start,
            device: d.clone(),
        })
        .collect();
    let mut connection = Connection {
        context: None,
        retry_at: start,
        backoff: Backoff::new(BACKOFF_FIRST, link.backoff_max),
    };
    loop {
        let Some(next) = devices.iter_mut().min_by_key(|d| d.due) else {
            return;
        };
        tokio::select! {
            _ = scope.stop.cancelled() => break,
            _ = tokio::time::sleep_until(next.due.into()) => {}
        }
        let polled_at = Instant::now();
        let outcome = poll(&link, next, &mut connection, &ingest).await;
        // Fixed rate; a device that fell behind skips to the next interval from now rather
        // than polling in a burst.
        next.due += next.device.poll;
        if next.due < polled_at {
            next.due = polled_at + next.device.poll;
        }
        count(&next.device, outcome, &ingest);
    }
    if let Some(mut context) = connection.context.take() {
        use tokio_modbus::client::Client as _;
        let _ = tokio::time::timeout(link.timeout, context.disconnect()).await;
    }
}

/// One poll of `device`: its event stored, or why it is a gap.
async fn poll(
    link: &ModbusLink,
    device: &mut Polled,
    connection: &mut Connection,
    ingest: &Ingest,
) -> Result<(), Gap> {
    let context = match connection.context.as_mut() {
        Some(c) => c,
        None if Instant::now() < connection.retry_at => return Err(Gap::Disconnected),
        None => match open(link).await {
            Ok(c) => {
                tracing::info!(message = "Modbus link open.", link = %link.name);
                connection.backoff.reset();
                connection.context.insert(c)
            }
            Err(error) => {
                let wait = connection.give_up(link.timeout).await;
                if let Some(suppressed) = tributary_common::ratelog::allow("modbus_connect") {
                    tracing::warn!(message = "Cannot open a Modbus link; polls are gaps until it opens.", link = %link.name, %error, retry_in_ms = wait.as_millis() as u64, suppressed);
                }
                return Err(Gap::ConnectFailed);
            }
        },
    };
    context.set_slave(Slave(device.device.unit));
    let time_ms = u64::try_from(tributary_common::clock::now_ms()).unwrap_or(0);
    let mut answers = Vec::with_capacity(device.reads.len());
    for read in &device.reads {
        let answer = request(context, read, link.timeout).await;
        match answer {
            Ok(a) => answers.push(a),
            Err((gap, detail)) => {
                log_gap(link, &device.device, gap, read, &detail);
                if gap.closes() {
                    connection.give_up(link.timeout).await;
                }
                return Err(gap);
            }
        }
    }
    let values = match map::decode(&device.device.registers, &device.reads, &answers) {
        Ok(v) => v,
        Err(error) => {
            log_gap(
                link,
                &device.device,
                Gap::Protocol,
                &device.reads[0],
                &error.to_string(),
            );
            connection.give_up(link.timeout).await;
            return Err(Gap::Protocol);
        }
    };
    let event = Event {
        device_id: device.device.device_id.clone(),
        seq: device.next_seq,
        time_ms,
        body: Body::Reading(Reading {
            values: device
                .device
                .registers
                .iter()
                .zip(values)
                .map(|(r, value)| SensorValue {
                    name: r.name.clone(),
                    value,
                    unit: r.unit.clone(),
                })
                .collect(),
        }),
    };
    let state = SourceState {
        source: format!("modbus:{}", device.device.device_id),
        state: (device.next_seq + 1).to_be_bytes().to_vec(),
    };
    let inbound = Inbound {
        event,
        // The seq is the gateway's and never restarts: one session for ever.
        session: 0,
        mqtt_topic: None,
        headers: vec![("modbus-link".to_owned(), link.name.clone())],
        writer: Some(format!("modbus:{}", link.name)),
    };
    match ingest
        .submit_from(
            Transport::Modbus,
            vec![inbound],
            Vec::new(),
            Vec::new(),
            vec![state],
        )
        .await
    {
        Ok(_) => {
            device.next_seq += 1;
            Ok(())
        }
        Err(error) => {
            if let Some(suppressed) = tributary_common::ratelog::allow("modbus_spool") {
                tracing::warn!(message = "A Modbus poll was not stored; it is a gap.", link = %link.name, device_id = %device.device.device_id, %error, suppressed);
            }
            Err(Gap::Spool)
        }
    }
}

/// Opens the link's connection or serial line.
async fn open(link: &ModbusLink) -> Result<Context, String> {
    match &link.line {
        Line::Tcp(addr) => {
            match tokio::time::timeout(link.timeout, tokio_modbus::client::tcp::connect(*addr))
                .await
            {
                Ok(Ok(context)) => Ok(context),
                Ok(Err(error)) => Err(format!("{addr}: {error}")),
                Err(_) => Err(format!("{addr}: no connection within {:?}", link.timeout)),
            }
        }
        Line::Serial(s) => {
            let builder = tokio_serial::new(s.path.to_string_lossy(), s.baud)
                .data_bits(s.data_bits)
                .parity(s.parity)
                .stop_bits(s.stop_bits);
            let port = tokio_serial::SerialStream::open(&builder)
                .map_err(|e| format!("{}: {e}", s.path.display()))?;
            Ok(tokio_modbus::client::rtu::attach(port))
        }
    }
}

/// One read request and its answer, or the gap it makes and what the device or the line said.
async fn request(
    context: &mut Context,
    read: &Read,
    timeout: Duration,
) -> Result<Answer, (Gap, String)> {
    let (address, count) = (read.address, read.count);
    let asked = async {
        match read.table {
            Table::Coil => context
                .read_coils(address, count)
                .await
                .map(|r| r.map(Answer::Bits)),
            Table::Discrete => context
                .read_discrete_inputs(address, count)
                .await
                .map(|r| r.map(Answer::Bits)),
            Table::Holding => context
                .read_holding_registers(address, count)
                .await
                .map(|r| r.map(Answer::Words)),
            Table::Input => context
                .read_input_registers(address, count)
                .await
                .map(|r| r.map(Answer::Words)),
        }
    };
    match tokio::time::timeout(timeout, asked).await {
        Ok(Ok(Ok(answer))) => Ok(answer),
        Ok(Ok(Err(exception))) => Err((Gap::Exception, format!("exception {exception}"))),
        Ok(Err(tokio_modbus::Error::Transport(error))) => {
            Err((Gap::Disconnected, error.to_string()))
        }
        Ok(Err(error)) => Err((Gap::Protocol, error.to_string())),
        Err(_) => Err((Gap::Timeout, format!("no answer within {timeout:?}"))),
    }
}

fn log_gap(link: &ModbusLink, device: &ModbusDevice, gap: Gap, read: &Read, detail: &str) {
    let key = match gap {
        Gap::Timeout => "modbus_timeout",
        Gap::Exception => "modbus_exception",
        _ => "modbus_failed",
    };
    if let Some(suppressed) = tributary_common::ratelog::allow(key) {
        tracing::warn!(
            message = "A Modbus poll failed; it is a gap, no value is made up.",
            link = %link.name,
            device_id = %device.device_id,
            unit = device.unit,
            reason = gap.label(),
            table = %read.table,
            address = read.address,
            count = read.count,
            detail,
            suppressed,
        );
    }
}

/// Counts a poll's outcome, and a gap as the device's refusal on the status page.
fn count(device: &ModbusDevice, outcome: Result<(), Gap>, ingest: &Ingest) {
    let label = match outcome {
        Ok(()) => "ok",
        Err(gap) => gap.label(),
    };
    ingest
        .stats
        .instruments
        .modbus_polls
        .get_or_create(&ModbusLabel {
            device: device.device_id.clone(),
            outcome: label,
        })
        .inc();
    if let Err(gap) = outcome {
        ingest.stats.record_refusal(
            Transport::Modbus,
            gap.label(),
            Some(&device.device_id),
            None,
        );
    }
}
