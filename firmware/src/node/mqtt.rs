//! The MQTT transport: one QoS 1 publish per event on `devices/{device_id}/{kind}` (JSON). A
//! batch counts as acknowledged only when every publish in it has its PUBACK, which Tributary's
//! MQTT listener sends after the spool committed the event; anything unacknowledged stays in
//! the device loop's buffer and is sent again after a reconnect.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rumqttc::{Client, Connection, Event as MqttEvent, MqttOptions, Outgoing, Packet, QoS};
use tributary_protocol::json::JsonEvent;
use tributary_protocol::Event;

use super::link::Credentials;
use crate::device::Transport;

const TIMEOUT: Duration = Duration::from_secs(10);

pub struct MqttTransport {
    addr: SocketAddr,
    device_id: String,
    /// Password (username = device id), boot session and TLS.
    credentials: Credentials,
    session: Option<(Client, Connection)>,
}

impl MqttTransport {
    pub fn new(addr: SocketAddr, device_id: String, credentials: Credentials) -> Self {
        Self {
            addr,
            device_id,
            credentials,
            session: None,
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
        let mut acked = 0;
        let deadline = Instant::now() + TIMEOUT;
        while acked < events.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match connection.recv_timeout(left) {
                Ok(Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid)))) => {
                    if let Some(seq) = sent.pop_front() {
                        by_pkid.insert(pkid, seq);
                    }
                }
                Ok(Ok(MqttEvent::Incoming(Packet::PubAck(ack)))) => {
                    if by_pkid.remove(&ack.pkid).is_some() {
                        acked += 1;
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(std::io::Error::other(e)),
                Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
            }
        }
        Ok(events.last().map(|e| e.seq).unwrap_or(0))
    }
}

impl Transport for MqttTransport {
    type Error = std::io::Error;

    fn connect(&mut self) -> std::io::Result<()> {
        // rumqttc checks the certificate for the host it connects to: the configured name.
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
        options.set_clean_session(true);
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
            self.session = None;
        }
        result
    }
}
