//! A device on MQTT through rumqttc: JSON payloads on `devices/{id}/{readings|position}`, a
//! window of `batch` publishes in flight. One loop for both protocol versions; [`Client`] is
//! what differs ([`V311`] here, [`super::mqtt5::V5`]).
//!
//! Every connection is a fresh rumqttc event loop with a clean session, so rumqttc's own replay
//! of unacknowledged publishes never mixes with the device's: after a failure the device drops
//! the event loop and resends from its outbox. rumqttc reports each publish it writes as
//! `Outgoing::Publish(pkid)`, in the order they were requested; that order maps packet ids to
//! seqs, and a PUBACK's packet id to the event it acknowledges.
//!
//! An answer is [`Answer::Stored`] (3.1.1's only one), [`Answer::Busy`] or [`Answer::Refused`]
//! (MQTT 5's reason codes). Told busy, the device stops handing out publishes until everything
//! in flight is answered, waits its backoff, then resends from the lowest busy seq, in order.
//! Told refused, it drops the event, logs the reason and counts it, and moves on.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use tokio::time::Instant;
use tributary_client::answer::{self, Answer, Polled};
use tributary_client::command::{command_filter, result_topic};
use tributary_client::inflight::Inflight;
use tributary_client::options::{self, Auth};
use tributary_client::publish::{payload, topic};

use super::Device;

/// One connection of one protocol version.
pub trait Client: Sized {
    /// Connects (lazily, on the first poll) as `device`, with `window` publishes in flight.
    fn connect(device: &Device, addr: SocketAddr, window: usize) -> Self;
    /// Queues a publish without waiting; `false` if the client's queue is full.
    fn publish(&self, topic: String, qos1: bool, payload: Vec<u8>) -> bool;
    /// Queues a SUBSCRIBE (QoS 1) without waiting; `false` if the client's queue is full.
    fn subscribe(&self, filter: String) -> bool;
    fn poll(&mut self) -> impl Future<Output = Result<Polled, String>> + Send;
    /// Sends DISCONNECT and lets it, and what was queued before it, go out.
    fn disconnect(self) -> impl Future<Output = ()> + Send;
}

/// One connection's bookkeeping.
struct Conn<C> {
    client: C,
    connected: bool,
    /// Publishes requested from rumqttc, written or not, and not yet answered.
    inflight: Inflight,
    /// The highest seq handed to this connection.
    last_seq: Option<u64>,
    /// When the oldest outstanding publish was written, for the ack timeout.
    oldest: Option<Instant>,
    /// The lowest seq answered "busy": nothing new goes out until it is resent.
    busy: Option<u64>,
}

pub async fn run<C: Client>(device: &mut Device, addr: SocketAddr, qos: u8) -> Result<(), String> {
    let window = device.pace.batch.clamp(1, u16::MAX as usize / 2);
    let qos1 = qos != 0;
    let mut conn: Option<Conn<C>> = None;
    loop {
        if device.interrupted() {
            if let Some(c) = conn.take() {
                c.client.disconnect().await;
            }
            return Ok(());
        }
        device.fill(window * 4);
        if device.finished() {
            if let Some(c) = conn.take() {
                c.client.disconnect().await;
            }
            return Ok(());
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => conn.insert(Conn {
                client: C::connect(device, addr, window),
                connected: false,
                inflight: Inflight::default(),
                last_seq: None,
                oldest: None,
                busy: None,
            }),
        };
        // Told busy and everything answered: back off, then resend from the lowest busy seq.
        if let Some(lowest) = c.busy {
            if c.inflight.is_empty() {
                if device
                    .sleep(super::backoff(device.pace.backoff, 1))
                    .await
                    .is_err()
                {
                    continue;
                }
                c.last_seq = lowest.checked_sub(1);
                c.busy = None;
            }
        }
        // Hand rumqttc what fits the window.
        while c.connected && c.busy.is_none() && c.inflight.len() < window {
            let Some(e) = device
                .outbox
                .iter()
                .find(|e| c.last_seq.is_none_or(|last| e.seq > last))
            else {
                break;
            };
            let (seq, t, p) = (e.seq, topic(e), payload(e, device.session));
            if !c.client.publish(t, qos1, p) {
                break;
            }
            c.inflight.requested(seq);
            c.last_seq = Some(seq);
            device.on_send(seq);
        }
        // Wake for the next event only when connected with nothing in flight: dropping a
        // `poll` future in the middle of connecting would start the connection over.
        let idle = c.connected && c.inflight.is_empty();
        let wake = if idle {
            device
                .next_due()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
        } else {
            *c.oldest.get_or_insert_with(Instant::now) + device.pace.ack_timeout
        };
        let polled = tokio::select! {
            p = c.client.poll() => Some(p),
            _ = tokio::time::sleep_until(wake) => None,
            _ = device.pace.cancel.cancelled() => continue,
        };
        let failure = match polled {
            None if !idle
                && c.oldest
                    .is_some_and(|o| o.elapsed() >= device.pace.ack_timeout) =>
            {
                Some(if c.connected {
                    format!("no PUBACK within {:?}", device.pace.ack_timeout)
                } else {
                    format!("no CONNACK within {:?}", device.pace.ack_timeout)
                })
            }
            None | Some(Ok(Polled::Other)) => None,
            Some(Ok(Polled::ConnAck)) => {
                c.connected = true;
                c.oldest = None;
                device.on_connect();
                if device.pace.commands {
                    c.client.subscribe(command_filter(&device.outcome.id));
                }
                None
            }
            Some(Ok(Polled::Command(command))) => {
                let answer = device.obey(&command);
                let topic = result_topic(&device.outcome.id, &command.id);
                if c.client.publish(topic, true, answer) {
                    c.inflight.requested_other();
                }
                None
            }
            Some(Ok(Polled::Published(pkid))) => {
                if let Some(seq) = c.inflight.published(pkid, qos1) {
                    if qos1 {
                        c.oldest.get_or_insert_with(Instant::now);
                    } else {
                        device.forget(seq);
                    }
                }
                None
            }
            Some(Ok(Polled::Answered(pkid, answer))) => {
                if let Some(seq) = c.inflight.answered(pkid) {
                    match answer {
                        Answer::Stored => device.ack_one(seq),
                        Answer::Busy(_) => c.busy = Some(c.busy.map_or(seq, |b| b.min(seq))),
                        Answer::Refused(why) => device.refused(seq, &why),
                    }
                    c.oldest = (c.inflight.awaiting() > 0).then(Instant::now);
                }
                None
            }
            Some(Ok(Polled::Closed(why))) => Some(why),
            Some(Err(e)) => Some(e),
        };
        if let Some(error) = failure {
            conn = None;
            device.after_failure(&error).await?;
        }
    }
}

/// How a simulated device connects: as itself, with its password and TLS where the run has
/// them.
pub(super) fn auth(device: &Device) -> Auth {
    Auth {
        password: device.pace.credentials.password_for(&device.outcome.id),
        tls: device.pace.credentials.tls.clone(),
    }
}

/// MQTT 3.1.1: every PUBACK means stored.
pub struct V311 {
    client: AsyncClient,
    eventloop: rumqttc::EventLoop,
}

impl Client for V311 {
    fn connect(device: &Device, addr: SocketAddr, window: usize) -> Self {
        let host = addr.ip().to_string();
        let mut options = options::v311(&device.outcome.id, host, addr.port(), &auth(device));
        options.set_inflight(window as u16);
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, eventloop) = AsyncClient::new(options, window + 4);
        Self { client, eventloop }
    }

    fn publish(&self, topic: String, qos1: bool, payload: Vec<u8>) -> bool {
        let qos = if qos1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        self.client.try_publish(topic, qos, false, payload).is_ok()
    }

    fn subscribe(&self, filter: String) -> bool {
        self.client.try_subscribe(filter, QoS::AtLeastOnce).is_ok()
    }

    async fn poll(&mut self) -> Result<Polled, String> {
        let event = self.eventloop.poll().await.map_err(|e| e.to_string())?;
        Ok(answer::v311(&event))
    }

    async fn disconnect(mut self) {
        if self.client.try_disconnect().is_err() {
            return;
        }
        // rumqttc reports DISCONNECT when it queues it, and flushes on its next turn: poll on
        // until the connection closes, so the last publishes (QoS 0 ones above all) go out.
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(Ok(_)) = tokio::time::timeout_at(deadline, self.eventloop.poll()).await {}
    }
}
