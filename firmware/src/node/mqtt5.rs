//! The MQTT 5 transport (`transport = "mqtt5"`): the publishes of [`super::mqtt`], with the
//! gateway's reason codes acted on.
//!
//! - "success": stored.
//! - "quota exceeded" or "unspecified error": the gateway is busy. The batch fails with
//!   [`std::io::ErrorKind::WouldBlock`], its events stay in the device loop's buffer, and the
//!   node's retry backoff applies before they go again (on a new connection, so the gateway
//!   sees them in order).
//! - anything else: refused for good (say, a reading the gateway finds invalid). Resending it
//!   would never help, so it counts as answered: it is logged with the gateway's reason, counted
//!   ([`Mqtt5Transport::refused`]), and the node moves on.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{Client, Connection, Event as MqttEvent, MqttOptions};
use rumqttc::Outgoing;
use tributary_protocol::json::JsonEvent;
use tributary_protocol::Event;

use super::link::Credentials;
use crate::device::Transport;

const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Mqtt5Transport {
    addr: SocketAddr,
    device_id: String,
    credentials: Credentials,
    session: Option<(Client, Connection)>,
    /// Events the gateway refused for good since start.
    pub refused: u64,
}

impl Mqtt5Transport {
    pub fn new(addr: SocketAddr, device_id: String, credentials: Credentials) -> Self {
        Self {
            addr,
            device_id,
            credentials,
            session: None,
            refused: 0,
        }
    }

    fn exchange(&mut self, events: &[Event]) -> std::io::Result<u64> {
        let (client, connection) = self
            .session
            .as_mut()
            .ok_or(std::io::ErrorKind::NotConnected)?;
        let mut sent: VecDeque<u64> = VecDeque::new();
        for e in events {
            let topic = format!("devices/{}/{}", e.device_id, e.kind().mqtt_segment());
            let mut json = JsonEvent::from(e.clone());
            json.session = self.credentials.boot;
            let payload = serde_json::to_vec(&json).map_err(std::io::Error::other)?;
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .map_err(std::io::Error::other)?;
            sent.push_back(e.seq);
        }
        let mut by_pkid: HashMap<u16, u64> = HashMap::new();
        let (mut answered, mut busy) = (0, None);
        let deadline = Instant::now() + TIMEOUT;
        while answered < events.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match connection.recv_timeout(left) {
                Ok(Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid)))) => {
                    if let Some(seq) = sent.pop_front() {
                        by_pkid.insert(pkid, seq);
                    }
                }
                Ok(Ok(MqttEvent::Incoming(Packet::PubAck(ack)))) => {
                    let Some(seq) = by_pkid.remove(&ack.pkid) else {
                        continue;
                    };
                    answered += 1;
                    let why = || {
                        ack.properties
                            .as_ref()
                            .and_then(|p| p.reason_string.clone())
                            .unwrap_or_else(|| format!("{:?}", ack.reason))
                    };
                    match ack.reason {
                        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => {}
                        PubAckReason::QuotaExceeded | PubAckReason::UnspecifiedError => {
                            busy.get_or_insert_with(why);
                        }
                        _ => {
                            self.refused += 1;
                            tracing::warn!(message = "The gateway refused an event; dropped.", device_id = %self.device_id, seq, reason = %why());
                        }
                    }
                }
                Ok(Ok(MqttEvent::Incoming(Packet::Disconnect(d)))) => {
                    return Err(std::io::Error::other(format!(
                        "the gateway disconnected: {:?}",
                        d.reason_code
                    )))
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(std::io::Error::other(e)),
                Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
            }
        }
        if let Some(reason) = busy {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!("the gateway is busy: {reason}"),
            ));
        }
        Ok(events.last().map(|e| e.seq).unwrap_or(0))
    }
}

impl Transport for Mqtt5Transport {
    type Error = std::io::Error;

    fn connect(&mut self) -> std::io::Result<()> {
        let host = match &self.credentials.tls {
            Some(tls) => tls.server_name.to_str().into_owned(),
            None => self.addr.ip().to_string(),
        };
        let mut options = MqttOptions::new(self.device_id.clone(), host, self.addr.port());
        if let Some(tls) = &self.credentials.tls {
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.config.clone()),
            ));
        }
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_start(true);
        if let Some(password) = &self.credentials.password {
            options.set_credentials(self.device_id.clone(), password.clone());
        }
        let (client, mut connection) = Client::new(options, 256);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match connection.recv_timeout(left) {
                Ok(Ok(MqttEvent::Incoming(Packet::ConnAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(std::io::Error::other(e)),
                Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
            }
        }
        self.session = Some((client, connection));
        Ok(())
    }

    fn send(&mut self, events: &[Event]) -> std::io::Result<u64> {
        let result = self.exchange(events);
        if result.is_err() {
            // A new connection for the resend: the gateway then sees the device's events in
            // order, whatever this one was told.
            self.session = None;
        }
        result
    }
}
