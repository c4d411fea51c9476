//! Teltonika vehicle trackers: Codec 8 and Codec 8 Extended over TCP, Codec 12 commands
//! ([`codec`]).
//!
//! One task per connection, through the shared connection layer ([`super::conn`]). The session:
//! 1. The IMEI handshake, within [`IMEI_TIMEOUT`]. The device id is the IMEI's name in
//!    `teltonika.names`, or the IMEI itself where `teltonika.accept_unknown` is on, within its
//!    bounds ([`newcomers`]); any other IMEI is answered `0x00` and the connection closes
//!    (counted as `unknown_imei`). Trackers cannot log in, so the names table is the list of
//!    trackers this gateway takes: the IMEI is a claim anyone who read the label can make.
//!    Hence beyond loopback the listener needs `teltonika.trust_imei`, and a name may never be
//!    a device id that logs in with a password ([`crate::identity::Authority::load`] refuses it).
//! 2. AVL data packets. Each packet's records become events: a position where the record has a
//!    fix (satellites above 0), and a reading of its IO elements (named where Teltonika's
//!    common ids are known: `ignition`, `external_voltage`, ...; `io_<id>` otherwise). A record
//!    with neither, or an event that fails validation, is kept as a dead letter saying why.
//! 3. Only after the spool committed the packet does the gateway answer the record count, as
//!    the protocol asks. A packet that cannot be decoded (CRC, length, truncation) is kept as a
//!    dead letter and the connection closes unanswered: framing is lost, and the device resends
//!    it on its next connection. A spool failure closes it unanswered too.
//!
//! 4. Commands ([`crate::commands`]), when on: one Codec 12 command at a time, written between
//!    packets ([`Gprs`]); the tracker's Codec 12 response answers it. No response within
//!    [`RESPONSE_TIMEOUT`]: the next goes, and the unanswered one comes again on the next
//!    connection.
//!
//! Records carry no sequence number, so their events get gateway-assigned seqs
//! ([`crate::route::mapping::AssignedSeqs`]): a packet resent after a lost answer is stored again.
//! Duplicates are recognisable by device and timestamp (the Kafka timestamp is the record's).

pub mod codec;
pub mod config;
mod newcomers;

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tributary_protocol::{Body, Event, FixQuality, Position, Reading, SensorValue};

use super::conn::{self, Accepted, Spec};
use super::{Inbound, Ingest};
use crate::route::DeadLetter;
use crate::shutdown::Scope;
pub use config::{RawTeltonika, TeltonikaConfig};

/// How long a new connection has to send its IMEI.
pub const IMEI_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest packet data taken: a tracker's buffer flush is well under this.
pub const MAX_PACKET_BYTES: usize = 64 * 1024;

/// Serves trackers on `listener` until `scope.stop`.
pub async fn serve(listener: TcpListener, config: TeltonikaConfig, ingest: Ingest, scope: Scope) {
    let spec = Spec {
        transport: crate::transport::Transport::Teltonika,
        tls: false,
        max_connections: config.max_connections.get(),
        max_per_address: config.max_connections_per_address.get(),
    };
    let (authority, stats) = (ingest.authority.clone(), ingest.stats.clone());
    let stop = scope.stop.clone();
    let newcomers = std::sync::Arc::new(newcomers::Newcomers::new(
        config.accept_unknown_max,
        config.accept_unknown_per_minute,
    ));
    let config = std::sync::Arc::new(config);
    let session = move |a: Accepted| {
        session(
            a,
            config.clone(),
            newcomers.clone(),
            ingest.clone(),
            stop.clone(),
        )
    };
    // Over the cap: refuse at the handshake, the one refusal the protocol has.
    let busy = move |mut a: Accepted| async move {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            conn::write_answer(&mut a.stream, &[0]),
        )
        .await;
    };
    conn::serve(listener, spec, authority, stats, scope, session, busy).await;
}

/// Serves one tracker connection; also how it is driven in-process.
pub async fn session(
    mut a: Accepted,
    config: std::sync::Arc<TeltonikaConfig>,
    newcomers: std::sync::Arc<newcomers::Newcomers>,
    ingest: Ingest,
    stop: CancellationToken,
) {
    let peer = a.peer.addr;
    let mut buf = BytesMut::with_capacity(conn::INITIAL_READ);
    let refuse = |reason: &'static str, device: Option<&str>| {
        ingest.stats.record_refusal(
            crate::transport::Transport::Teltonika,
            reason,
            device,
            Some(peer),
        );
    };
    // 1. The IMEI.
    let imei = loop {
        match codec::imei(&buf) {
            Ok(Some((imei, used))) => {
                buf.advance(used);
                break imei;
            }
            Ok(None) => {}
            Err(error) => {
                refuse("malformed", None);
                tracing::info!(message = "Teltonika handshake refused.", %peer, %error);
                let _ = conn::write_answer(&mut a.stream, &[0]).await;
                return;
            }
        }
        match read(&mut a, &mut buf, IMEI_TIMEOUT, &stop).await {
            Some(n) if n > 0 => {}
            Some(_) => return,
            None => return refuse("hello_timeout", None),
        }
    };
    let admitted = match config.names.get(&imei) {
        Some(name) => Ok(name.clone()),
        None if config.accept_unknown => newcomers.admit(&imei).map(|()| imei.clone()),
        None => Err("unknown_imei"),
    };
    let device_id = match admitted {
        Ok(id) => id,
        Err(reason @ ("unknown_imei_limit" | "unknown_imei_rate")) => {
            refuse(reason, None);
            if let Some(suppressed) = tributary_common::ratelog::allow(reason) {
                tracing::warn!(message = "Teltonika tracker with a new IMEI refused: teltonika.accept_unknown_max or accept_unknown_per_minute reached.", %imei, %peer, reason, suppressed);
            }
            let _ = conn::write_answer(&mut a.stream, &[0]).await;
            return;
        }
        Err(_) => {
            refuse("unknown_imei", None);
            if let Some(suppressed) = tributary_common::ratelog::allow("teltonika_unknown_imei") {
                tracing::warn!(message = "Teltonika tracker with an IMEI not in teltonika.names refused.", %imei, %peer, suppressed);
            }
            let _ = conn::write_answer(&mut a.stream, &[0]).await;
            return;
        }
    };
    if conn::write_answer(&mut a.stream, &[1]).await.is_err() {
        return;
    }
    tracing::debug!(message = "Teltonika tracker connected.", %imei, %device_id, %peer);
    // Commands for the tracker, one at a time (Codec 12), when [commands] is on.
    let mut gprs = ingest
        .commands
        .clone()
        .map(|commands| Gprs::new(commands, &device_id));
    // 2. Packets.
    loop {
        match codec::packet(&buf, MAX_PACKET_BYTES) {
            Ok(Some((packet, used))) if packet.response.is_some() => {
                buf.advance(used);
                let text = packet.response.unwrap_or_default();
                match gprs.as_mut() {
                    Some(g) => g.responded(&device_id, &text).await,
                    None => {
                        tracing::info!(message = "A Codec 12 response with no command outstanding; ignored.", %device_id, response = %text)
                    }
                }
                continue;
            }
            Ok(Some((packet, used))) => {
                let raw = buf.split_to(used);
                let count = packet.records.len();
                let (events, dead) = events(&device_id, &packet, &raw);
                if let Err(error) = ingest
                    .submit(crate::transport::Transport::Teltonika, events, dead)
                    .await
                {
                    tracing::warn!(message = "Teltonika records not stored; closing unanswered so the tracker resends.", %device_id, %error);
                    return;
                }
                if conn::write_answer(&mut a.stream, &codec::accepted(count))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Ok(None) => {}
            Err(error) => {
                refuse("malformed", Some(&device_id));
                let kept = &buf[..buf.len().min(crate::route::DEAD_LETTER_BYTES)];
                let letter = DeadLetter::new(
                    "teltonika",
                    peer.to_string(),
                    Some(device_id.clone()),
                    format!("undecodable Codec 8 packet: {error}"),
                    kept,
                );
                let _ = ingest
                    .submit(
                        crate::transport::Transport::Teltonika,
                        Vec::new(),
                        vec![letter],
                    )
                    .await;
                return;
            }
        }
        let wake = match gprs.as_mut() {
            Some(g) => {
                if g.send_next(&mut a, &device_id).await.is_err() {
                    return;
                }
                g.waiting().then(|| g.outbox.wake.clone())
            }
            None => None,
        };
        let woken = async {
            match &wake {
                Some(w) => w.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = woken => continue,
            r = read(&mut a, &mut buf, config.idle_timeout, &stop) => match r {
                Some(n) if n > 0 => {}
                Some(_) => return,
                None => return refuse("idle_timeout", Some(&device_id)),
            },
        }
    }
}

/// How long a tracker has to respond to a Codec 12 command before the next is sent (the
/// unanswered one comes again on its next connection).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// A tracker's commands on one connection: Codec 12 allows one outstanding command, whose
/// response (text) answers it.
struct Gprs {
    outbox: crate::commands::outbox::Outbox,
    outstanding: Option<(tributary_spool::commands::Queued, tokio::time::Instant)>,
}

impl Gprs {
    fn new(commands: std::sync::Arc<crate::commands::Commands>, device_id: &str) -> Self {
        Self {
            outbox: crate::commands::outbox::Outbox::new(commands, device_id, true),
            outstanding: None,
        }
    }

    /// Whether a new command may go out (none is outstanding).
    fn waiting(&self) -> bool {
        self.outstanding.is_none()
    }

    /// Sends the next queued command as Codec 12 text when none is outstanding: the command's
    /// `args.text`, else its name. `Err`: the connection failed.
    async fn send_next(&mut self, a: &mut Accepted, device_id: &str) -> Result<(), ()> {
        if let Some((command, sent)) = &self.outstanding {
            if sent.elapsed() < RESPONSE_TIMEOUT {
                return Ok(());
            }
            tracing::warn!(message = "A Teltonika tracker did not respond to a command in time; it is sent again on its next connection.", %device_id, command_id = %command.command_id);
            self.outstanding = None;
        }
        let queued = match self.outbox.next(1, |_| true).await {
            Ok(q) => q,
            Err(error) => {
                tracing::warn!(message = "Reading the tracker's commands failed.", %device_id, %error);
                return Ok(());
            }
        };
        if let Some(command) = queued.into_iter().next() {
            let text = tributary_client::command::Command::parse(&command.body)
                .and_then(|c| {
                    c.args
                        .get("text")
                        .and_then(|t| t.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| command.name.clone());
            if conn::write_answer(&mut a.stream, &codec::command(&text))
                .await
                .is_err()
            {
                return Err(());
            }
            tracing::debug!(message = "Codec 12 command sent.", %device_id, command_id = %command.command_id, %text);
            self.outstanding = Some((command, tokio::time::Instant::now()));
        }
        Ok(())
    }

    /// The tracker's response: it answers the outstanding command.
    async fn responded(&mut self, device_id: &str, text: &str) {
        let Some((command, _)) = self.outstanding.take() else {
            tracing::info!(message = "A Codec 12 response with no command outstanding; ignored.", %device_id, response = %text);
            return;
        };
        let answer = serde_json::Value::String(text.to_owned()).to_string();
        if let Err(error) = self
            .outbox
            .commands()
            .answered(device_id, &command.command_id, answer.as_bytes())
            .await
        {
            tracing::warn!(message = "A tracker's response was not stored; the command comes again on its next connection.", %device_id, command_id = %command.command_id, %error);
        }
    }
}

/// Reads more; `Some(0)` at the end of the stream, an error or `stop`; `None` after `limit` of
/// silence.
async fn read(
    a: &mut Accepted,
    buf: &mut BytesMut,
    limit: Duration,
    stop: &CancellationToken,
) -> Option<usize> {
    tokio::select! {
        _ = stop.cancelled() => Some(0),
        r = tokio::time::timeout(limit, conn::read_more(&mut a.stream, buf)) => match r {
            Ok(Ok(n)) => Some(n),
            Ok(Err(_)) => Some(0),
            Err(_) => None,
        },
    }
}

/// Names for Teltonika's common IO ids (FMB series), with units.
const IO_NAMES: &[(u16, &str, &str)] = &[
    (1, "din1", ""),
    (9, "ain1", "mV"),
    (16, "total_odometer", "m"),
    (21, "gsm_signal", ""),
    (24, "speed", "km/h"),
    (66, "external_voltage", "mV"),
    (67, "battery_voltage", "mV"),
    (68, "battery_current", "mA"),
    (69, "gnss_status", ""),
    (181, "pdop", ""),
    (182, "hdop", ""),
    (199, "trip_odometer", "m"),
    (200, "sleep_mode", ""),
    (239, "ignition", ""),
    (240, "movement", ""),
    (241, "gsm_operator", ""),
];

/// The events of a packet's records, and dead letters for records that make none.
fn events(device_id: &str, packet: &codec::Packet, raw: &[u8]) -> (Vec<Inbound>, Vec<DeadLetter>) {
    let (mut events, mut dead) = (Vec::new(), Vec::new());
    let origin = format!("teltonika/{device_id}");
    let raw = &raw[..raw.len().min(crate::route::DEAD_LETTER_BYTES)];
    for (index, record) in packet.records.iter().enumerate() {
        let mut bodies = Vec::new();
        let hdop = record
            .io
            .iter()
            .find(|(id, _)| *id == 182)
            .map(|(_, v)| *v as f32 / 10.0);
        if record.gps.satellites > 0 {
            bodies.push(Body::Position(Position {
                lat: record.gps.lat,
                lon: record.gps.lon,
                alt_m: Some(f32::from(record.gps.altitude_m)),
                speed_mps: Some(f32::from(record.gps.speed_kmh) / 3.6),
                heading_deg: Some(f32::from(record.gps.angle_deg)),
                hdop,
                satellites: Some(record.gps.satellites),
                fix: FixQuality::Gps,
            }));
        }
        let values: Vec<SensorValue> = record
            .io
            .iter()
            .map(|(id, value)| {
                let (name, unit) = IO_NAMES
                    .iter()
                    .find(|(known, _, _)| known == id)
                    .map_or((format!("io_{id}"), ""), |(_, n, u)| ((*n).to_owned(), *u));
                SensorValue {
                    name,
                    value: *value as f64,
                    unit: unit.to_owned(),
                }
            })
            .collect();
        if !values.is_empty() {
            bodies.push(Body::Reading(Reading { values }));
        }
        if bodies.is_empty() {
            dead.push(DeadLetter::new(
                "teltonika",
                origin.clone(),
                Some(device_id.to_owned()),
                format!("record {index}: no GPS fix (0 satellites) and no IO values"),
                raw,
            ));
        }
        for body in bodies {
            let (seq, session) = crate::route::mapping::AssignedSeqs::global().next();
            let event = Event {
                device_id: device_id.to_owned(),
                seq,
                time_ms: record.timestamp_ms,
                body,
            };
            match event.validate() {
                Ok(()) => events.push(Inbound {
                    event,
                    session,
                    mqtt_topic: None,
                    headers: Vec::new(),
                    writer: None,
                }),
                Err(e) => dead.push(DeadLetter::new(
                    "teltonika",
                    origin.clone(),
                    Some(device_id.to_owned()),
                    format!("record {index}: {e}"),
                    raw,
                )),
            }
        }
    }
    (events, dead)
}

#[cfg(test)]
mod tests;
