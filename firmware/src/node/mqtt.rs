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

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rumqttc::{Client, Connection};
use tributary_client::answer::{self, Answer, Polled};
use tributary_client::command::{command_filter, result_topic, Command};
use tributary_client::inflight::Inflight;
use tributary_client::options::{self, Auth};
use tributary_client::publish;
use tributary_protocol::Event;

use super::link::Credentials;
use crate::device::Transport;

const TIMEOUT: Duration = Duration::from_secs(10);

/// What a protocol version's client does for the transport.
pub trait Version: Sized {
    /// A connecting client (`host`: the name TLS checks), with clean session.
    fn connect(host: String, port: u16, device_id: &str, auth: &Auth) -> Self;
    /// Queues a QoS 1 publish.
    fn publish(&mut self, topic: String, payload: Vec<u8>) -> std::io::Result<()>;
    /// Queues a QoS 1 SUBSCRIBE.
    fn subscribe(&mut self, filter: String) -> std::io::Result<()>;
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
    /// Commands the gateway sent, for the node to obey and answer.
    pub commands: Vec<Command>,
    /// Answers to send with the next batch: (topic, payload).
    answers: Vec<(String, Vec<u8>)>,
}

impl<V: Version> MqttTransport<V> {
    pub fn new(addr: SocketAddr, device_id: String, credentials: Credentials) -> Self {
        Self {
            addr,
            device_id,
            credentials,
            session: None,
            refused: 0,
            commands: Vec::new(),
            answers: Vec::new(),
        }
    }

    fn exchange(&mut self, events: &[Event]) -> std::io::Result<u64> {
        let client = self
            .session
            .as_mut()
            .ok_or(std::io::ErrorKind::NotConnected)?;
        let mut inflight = Inflight::default();
        // Answers to commands go first; their acknowledgements stand for no event.
        for (topic, payload) in std::mem::take(&mut self.answers) {
            client.publish(topic, payload)?;
            inflight.requested_other();
        }
        for e in events {
            client.publish(
                publish::topic(e),
                publish::payload(e, self.credentials.boot),
            )?;
            inflight.requested(e.seq);
        }
        let (mut answered, mut busy) = (0, None);
        let deadline = Instant::now() + TIMEOUT;
        while answered < events.len() {
            match client.next(deadline.saturating_duration_since(Instant::now()))? {
                Polled::Published(pkid) => {
                    inflight.published(pkid, true);
                }
                Polled::Answered(pkid, answer) => {
                    let Some(seq) = inflight.answered(pkid) else {
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
                Polled::Command(c) => self.commands.push(c),
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
        let auth = Auth {
            password: self.credentials.password.clone(),
            tls: self.credentials.tls.as_ref().map(|t| t.config.clone()),
        };
        let mut client = V::connect(host, self.addr.port(), &self.device_id, &auth);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match client.next(deadline.saturating_duration_since(Instant::now()))? {
                Polled::ConnAck => {
                    if self.credentials.commands {
                        client.subscribe(command_filter(&self.device_id))?;
                    }
                    break;
                }
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

impl<V: Version> MqttTransport<V> {
    /// Answers command `id` with the next batch (on `devices/{id}/results/{command}`).
    pub fn answer(&mut self, id: &str, result: &[u8]) {
        self.answers
            .push((result_topic(&self.device_id, id), result.to_vec()));
    }
}

/// MQTT 3.1.1: every PUBACK means stored.
pub struct V311(Client, Connection);

impl Version for V311 {
    fn connect(host: String, port: u16, device_id: &str, auth: &Auth) -> Self {
        let (client, connection) = Client::new(options::v311(device_id, host, port, auth), 256);
        Self(client, connection)
    }

    fn publish(&mut self, topic: String, payload: Vec<u8>) -> std::io::Result<()> {
        self.0
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .map_err(std::io::Error::other)
    }

    fn subscribe(&mut self, filter: String) -> std::io::Result<()> {
        self.0
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .map_err(std::io::Error::other)
    }

    fn next(&mut self, wait: Duration) -> std::io::Result<Polled> {
        match self.1.recv_timeout(wait) {
            Ok(Ok(event)) => Ok(answer::v311(&event)),
            Ok(Err(e)) => Err(std::io::Error::other(e)),
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
}
