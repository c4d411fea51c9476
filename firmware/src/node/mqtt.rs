//! The MQTT transports: one QoS 1 publish per event on `devices/{device_id}/{kind}` (JSON). A
//! batch counts as acknowledged only when every publish in it has its answer, which Tributary's
//! MQTT listener sends after the spool committed the event; anything unacknowledged stays in
//! the device loop's buffer and is sent again after a reconnect.
//!
//! One transport for both protocol versions; [`Version`] is what differs ([`V311`] here,
//! [`super::mqtt5::V5`]). MQTT 3.1.1 has one answer, "stored". MQTT 5's reason codes add two:
//! - "busy" (quota exceeded, unspecified error): the batch fails with
//!   [`std::io::ErrorKind::WouldBlock`], its events stay buffered, and the node's retry backoff
//!   applies before they go again, on a new connection (so the gateway sees them in order);
//! - "refused" (any other failure, say a reading the gateway finds invalid): resending would
//!   never help, so it counts as answered: logged with the gateway's reason, counted
//!   ([`MqttTransport::refused`]), and the node moves on.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rumqttc::{Client, Connection, Event as MqttEvent, MqttOptions, Outgoing, Packet, QoS};
use tributary_protocol::json::JsonEvent;
use tributary_protocol::Event;

use super::link::Credentials;
use crate::device::Transport;

const TIMEOUT: Duration = Duration::from_secs(10);

/// What the gateway said to one publish.
pub enum Answer {
    Stored,
    Busy(String),
    Refused(String),
}

/// What one turn of a connection brought.
pub enum Polled {
    ConnAck,
    /// A publish went out with this packet id.
    Published(u16),
    Answered(u16, Answer),
    /// The gateway closed the session, saying why.
    Closed(String),
    Other,
}

/// What a protocol version's client does for the transport.
pub trait Version: Sized {
    /// A connecting client (`host`: the name TLS checks), with clean session.
    fn connect(host: String, port: u16, device_id: &str, credentials: &Credentials) -> Self;
    /// Queues a QoS 1 publish.
    fn publish(&mut self, topic: String, payload: Vec<u8>) -> std::io::Result<()>;
    /// The next event within `wait`; `Err(TimedOut)` when none came.
    fn next(&mut self, wait: Duration) -> std::io::Result<Polled>;
}

pub struct MqttTransport<V> {
    addr: SocketAddr,
    device_id: String,
    /// Password (username = device id), boot session and TLS.
    credentials: Credentials,
    session: Option<V>,
    /// Events the gateway refused for good since start (MQTT 5).
    pub refused: u64,
}

impl<V: Version> MqttTransport<V> {
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
        let client = self
            .session
            .as_mut()
            .ok_or(std::io::ErrorKind::NotConnected)?;
        let mut sent: VecDeque<u64> = VecDeque::new();
        for e in events {
            let topic = tributary_protocol::topic::device_topic(
                &e.device_id,
                e.kind(),
                tributary_protocol::topic::Encoding::Json,
            );
            let mut json = JsonEvent::from(e.clone());
            json.session = self.credentials.boot;
            let payload = serde_json::to_vec(&json).map_err(std::io::Error::other)?;
            client.publish(topic, payload)?;
            sent.push_back(e.seq);
        }
        let mut by_pkid: HashMap<u16, u64> = HashMap::new();
        let (mut answered, mut busy) = (0, None);
        let deadline = Instant::now() + TIMEOUT;
        while answered < events.len() {
            match client.next(deadline.saturating_duration_since(Instant::now()))? {
                Polled::Published(pkid) => {
                    if let Some(seq) = sent.pop_front() {
                        by_pkid.insert(pkid, seq);
                    }
                }
                Polled::Answered(pkid, answer) => {
                    let Some(seq) = by_pkid.remove(&pkid) else {
                        continue;
                    };
                    answered += 1;
                    match answer {
                        Answer::Stored => {}
                        Answer::Busy(why) => {
                            busy.get_or_insert(why);
                        }
                        Answer::Refused(why) => {
                            self.refused += 1;
                            tracing::warn!(message = "The gateway refused an event; dropped.", device_id = %self.device_id, seq, reason = %why);
                        }
                    }
                }
                Polled::Closed(why) => return Err(std::io::Error::other(why)),
                Polled::ConnAck | Polled::Other => {}
            }
        }
        if let Some(why) = busy {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!("the gateway is busy: {why}"),
            ));
        }
        Ok(events.last().map(|e| e.seq).unwrap_or(0))
    }
}

impl<V: Version> Transport for MqttTransport<V> {
    type Error = std::io::Error;

    fn connect(&mut self) -> std::io::Result<()> {
        // rumqttc checks the certificate for the host it connects to: the configured name.
        let host = match &self.credentials.tls {
            Some(tls) => tls.server_name.to_str().into_owned(),
            None => self.addr.ip().to_string(),
        };
        let mut client = V::connect(host, self.addr.port(), &self.device_id, &self.credentials);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match client.next(deadline.saturating_duration_since(Instant::now()))? {
                Polled::ConnAck => break,
                Polled::Closed(why) => return Err(std::io::Error::other(why)),
                _ => {}
            }
        }
        self.session = Some(client);
        Ok(())
    }

    fn send(&mut self, events: &[Event]) -> std::io::Result<u64> {
        let result = self.exchange(events);
        if result.is_err() {
            self.session = None;
        }
        result
    }
}

/// MQTT 3.1.1: every PUBACK means stored.
pub struct V311(Client, Connection);

impl Version for V311 {
    fn connect(host: String, port: u16, device_id: &str, credentials: &Credentials) -> Self {
        let mut options = MqttOptions::new(device_id, host, port);
        if let Some(tls) = &credentials.tls {
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.config.clone()),
            ));
        }
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(true);
        if let Some(password) = &credentials.password {
            options.set_credentials(device_id, password.clone());
        }
        let (client, connection) = Client::new(options, 256);
        Self(client, connection)
    }

    fn publish(&mut self, topic: String, payload: Vec<u8>) -> std::io::Result<()> {
        self.0
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .map_err(std::io::Error::other)
    }

    fn next(&mut self, wait: Duration) -> std::io::Result<Polled> {
        match self.1.recv_timeout(wait) {
            Ok(Ok(MqttEvent::Incoming(Packet::ConnAck(_)))) => Ok(Polled::ConnAck),
            Ok(Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid)))) => Ok(Polled::Published(pkid)),
            Ok(Ok(MqttEvent::Incoming(Packet::PubAck(ack)))) => {
                Ok(Polled::Answered(ack.pkid, Answer::Stored))
            }
            Ok(Ok(_)) => Ok(Polled::Other),
            Ok(Err(e)) => Err(std::io::Error::other(e)),
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
}
