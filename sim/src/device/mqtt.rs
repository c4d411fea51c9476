//! A device on MQTT 3.1.1 through rumqttc: JSON payloads on `devices/{id}/{readings|position}`,
//! a window of `batch` publishes in flight.
//!
//! Every connection is a fresh rumqttc event loop with a clean session, so rumqttc's own replay
//! of unacknowledged publishes never mixes with the device's: after a failure the device drops
//! the event loop and resends from its outbox. rumqttc reports each publish it writes as
//! `Outgoing::Publish(pkid)`, in the order they were requested; that order maps packet ids to
//! seqs, and a PUBACK's packet id to the event it acknowledges.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Outgoing, Packet, QoS};
use tokio::time::Instant;

use super::Device;
use crate::mqtt::{payload, topic};

/// One connection's bookkeeping.
struct Conn {
    client: AsyncClient,
    eventloop: rumqttc::EventLoop,
    connected: bool,
    /// Seqs requested from rumqttc and not yet written.
    requested: VecDeque<u64>,
    /// Written QoS 1 publishes awaiting their PUBACK.
    awaiting: HashMap<u16, u64>,
    /// The highest seq handed to this connection.
    last_seq: Option<u64>,
    /// When the oldest outstanding publish was written, for the ack timeout.
    oldest: Option<Instant>,
}

pub async fn run(device: &mut Device, addr: SocketAddr, qos: u8) -> Result<(), String> {
    let window = device.pace.batch.clamp(1, u16::MAX as usize / 2);
    let qos = if qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let mut conn: Option<Conn> = None;
    loop {
        if device.interrupted() {
            if let Some(c) = conn.take() {
                disconnect(c).await;
            }
            return Ok(());
        }
        device.fill(window * 4);
        let nothing_left = device.finished();
        if nothing_left {
            if let Some(c) = conn.take() {
                disconnect(c).await;
            }
            return Ok(());
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => conn.insert(connect(device, addr, window)),
        };
        // Hand rumqttc what fits the window.
        while c.connected && c.requested.len() + c.awaiting.len() < window {
            let Some(e) = device
                .outbox
                .iter()
                .find(|e| c.last_seq.is_none_or(|last| e.seq > last))
            else {
                break;
            };
            let (seq, t, p) = (e.seq, topic(e), payload(e, device.session));
            if c.client.try_publish(t, qos, false, p).is_err() {
                break;
            }
            c.requested.push_back(seq);
            c.last_seq = Some(seq);
            device.on_send(seq);
        }
        // Wake for the next event only when connected with nothing in flight: dropping a
        // `poll` future in the middle of connecting would start the connection over.
        let idle = c.connected && c.requested.is_empty() && c.awaiting.is_empty();
        let wake = if idle {
            device
                .next_due()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
        } else {
            *c.oldest.get_or_insert_with(Instant::now) + device.pace.ack_timeout
        };
        let polled = tokio::select! {
            p = c.eventloop.poll() => Some(p),
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
            None => None,
            Some(Ok(MqttEvent::Incoming(Packet::ConnAck(_)))) => {
                c.connected = true;
                c.oldest = None;
                device.on_connect();
                None
            }
            Some(Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid)))) => {
                if let Some(seq) = c.requested.pop_front() {
                    if qos == QoS::AtMostOnce {
                        device.forget(seq);
                    } else {
                        c.awaiting.insert(pkid, seq);
                        c.oldest.get_or_insert_with(Instant::now);
                    }
                }
                None
            }
            Some(Ok(MqttEvent::Incoming(Packet::PubAck(ack)))) => {
                if let Some(seq) = c.awaiting.remove(&ack.pkid) {
                    device.ack_one(seq);
                    c.oldest = (!c.awaiting.is_empty()).then(Instant::now);
                }
                None
            }
            Some(Ok(_)) => None,
            Some(Err(e)) => Some(e.to_string()),
        };
        if let Some(error) = failure {
            conn = None;
            device.after_failure(&error).await?;
        }
    }
}

fn connect(device: &Device, addr: SocketAddr, window: usize) -> Conn {
    let mut options = MqttOptions::new(&device.outcome.id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(true);
    options.set_inflight(window as u16);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let id = &device.outcome.id;
    if let Some(password) = device.pace.credentials.password_for(id) {
        options.set_credentials(id.clone(), password);
    }
    if let Some(tls) = &device.pace.credentials.tls {
        options.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.clone()),
        ));
    }
    let (client, eventloop) = AsyncClient::new(options, window + 4);
    Conn {
        client,
        eventloop,
        connected: false,
        requested: VecDeque::new(),
        awaiting: HashMap::new(),
        last_seq: None,
        oldest: None,
    }
}

/// Sends DISCONNECT and lets it go out.
async fn disconnect(mut c: Conn) {
    if c.client.try_disconnect().is_err() {
        return;
    }
    // rumqttc reports DISCONNECT when it queues it, and flushes on its next turn: poll on
    // until the connection closes, so the last publishes (QoS 0 ones above all) go out.
    let deadline = Instant::now() + Duration::from_secs(2);
    while let Ok(Ok(_)) = tokio::time::timeout_at(deadline, c.eventloop.poll()).await {}
}
