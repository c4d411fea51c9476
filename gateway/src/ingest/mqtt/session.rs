//! One device connection on the gateway's MQTT listener (MQTT 3.1.1).
//!
//! CONNECT must come first, within [`CONNECT_TIMEOUT`]. Then, for every read from the socket:
//! all complete packets are parsed; the PUBLISHes among them are decoded and committed to the
//! spool in one call; only after that commit are their PUBACKs (QoS 1) and PUBRECs (QoS 2)
//! written, followed by answers to the other packets (PINGRESP, PUBCOMP, SUBACK, UNSUBACK).
//! Devices cannot subscribe here (SUBACK says failure): subscribers use the embedded broker.
//! A session that is silent for 1.5 times its keep-alive is closed, as the spec says.
//!
//! CONNECT authenticates the device; each publish of an authenticated device passes the ACL
//! before it is decoded (see the [module doc](super) for the answers).

use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{Error as CodecError, Protocol, QoS};
use tokio_util::sync::CancellationToken;

use super::oversize::{Oversize, Start};
use super::Republisher;
use crate::config::OnDeny;
use crate::identity::{Claim, Identity, Peer, Refusal};
use crate::ingest::conn::{self, Accepted, Stream};
use crate::ingest::Ingest;
use crate::route::DeadLetter;

pub use crate::route::DEAD_LETTER_BYTES;

/// How long a new connection has to send CONNECT.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed MQTT packet: {0}")]
    Malformed(String),
    #[error("MQTT protocol level {0} is not supported; this listener speaks 3.1.1 (level 4)")]
    UnsupportedProtocol(u8),
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("no CONNECT within {CONNECT_TIMEOUT:?}")]
    NoConnect,
    #[error("keep-alive expired")]
    KeepAlive,
    #[error("events not stored ({0}); closed without acknowledging so the device resends")]
    NotStored(String),
    #[error("refused at CONNECT: {0}")]
    Refused(Refusal),
    #[error("a publish the ACL denies; closed without acknowledging it (auth.on_deny)")]
    Denied,
}

pub struct Session {
    stream: Box<dyn Stream>,
    peer: Peer,
    /// Who the device is, once CONNECT was accepted.
    identity: Identity,
    /// `mqtt.max_payload_bytes`: a larger payload is refused (acknowledged, dead-lettered).
    max_payload: usize,
    /// Counts the device as connected on the status page while the session lives.
    _connected: Option<crate::activity::Connected>,
    max_packet: usize,
    ingest: Ingest,
    republish: Option<Republisher>,
    read: BytesMut,
    write: BytesMut,
    /// A PUBLISH too large to buffer, being read through.
    oversize: Option<Oversize>,
}

/// One packet as read: parsed, or an oversize PUBLISH read through.
enum Parsed {
    Packet(Packet),
    Oversize(Publish, usize),
}

/// What one read's worth of packets asks for.
#[derive(Default)]
struct Round {
    /// The publishes, with their payloads' real sizes (larger than the payload kept for one
    /// read through, [`Oversize`]).
    publishes: Vec<(Publish, usize)>,
    /// Answers that do not wait for the spool, written after the acks.
    replies: Vec<Packet>,
    disconnect: bool,
}

impl Session {
    pub fn new(
        accepted: Accepted,
        max_payload: usize,
        ingest: Ingest,
        republish: Option<Republisher>,
    ) -> Self {
        Self {
            stream: accepted.stream,
            peer: accepted.peer,
            identity: Identity::Anonymous,
            max_payload,
            _connected: None,
            // Room for the topic and headers around the largest payload.
            max_packet: max_payload + 64 * 1024,
            ingest,
            republish,
            // Small to start: an idle device holds these while it waits (`conn::read_more`).
            read: BytesMut::with_capacity(conn::INITIAL_READ),
            write: BytesMut::with_capacity(256),
            oversize: None,
        }
    }

    /// Refuses a connection over `mqtt.max_connections` with "server unavailable".
    pub async fn refuse_busy(mut self) -> Result<(), SessionError> {
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, self.next_packet()).await;
        self.send(&[Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::ServiceUnavailable,
            false,
        ))])
        .await
    }

    /// Serves the connection until it ends. A malformed packet ends it (MQTT framing cannot be
    /// trusted after one); it is counted (`malformed`), logged (rate-limited) and kept as a
    /// dead letter with the bytes that could not be parsed (at most [`DEAD_LETTER_BYTES`]).
    ///
    /// Every other way a device breaks the session is counted too, by reason: `connect_timeout`
    /// (no CONNECT in time), `keepalive_timeout` (silent for 1.5 × its keep-alive),
    /// `unsupported_protocol` and `protocol_violation`, and logged, rate-limited.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), SessionError> {
        let result = self.serve(stop).await;
        let reason = match &result {
            Err(SessionError::Malformed(reason)) => {
                self.malformed(reason.clone()).await;
                None
            }
            Err(SessionError::NoConnect) => Some("connect_timeout"),
            Err(SessionError::KeepAlive) => Some("keepalive_timeout"),
            Err(SessionError::UnsupportedProtocol(_)) => Some("unsupported_protocol"),
            Err(SessionError::Protocol(_)) => Some("protocol_violation"),
            _ => None,
        };
        if let (Some(reason), Err(error)) = (reason, &result) {
            let device = self.identity.device_id().map(str::to_owned);
            self.ingest.stats.record_refusal(
                "mqtt",
                reason,
                device.as_deref(),
                Some(self.peer.addr),
            );
            if let Some(suppressed) = crate::ratelog::allow(reason) {
                tracing::info!(message = "MQTT session closed.", peer = %self.peer.addr, reason, %error, suppressed);
            }
        }
        result
    }

    async fn malformed(&mut self, reason: String) {
        let device = self.identity.device_id().map(str::to_owned);
        self.ingest.stats.record_refusal(
            "mqtt",
            "malformed",
            device.as_deref(),
            Some(self.peer.addr),
        );
        if let Some(suppressed) = crate::ratelog::allow("mqtt_malformed") {
            tracing::warn!(message = "Malformed MQTT packet; connection closed.", peer = %self.peer.addr, %reason, suppressed);
        }
        let raw = &self.read[..self.read.len().min(DEAD_LETTER_BYTES)];
        let letter = DeadLetter::new(
            "mqtt",
            self.peer.addr.to_string(),
            device,
            format!("malformed MQTT packet: {reason}"),
            raw,
        );
        if let Err(error) = self.ingest.submit("mqtt", Vec::new(), vec![letter]).await {
            tracing::warn!(message = "Dead letter not stored.", peer = %self.peer.addr, %error);
        }
    }

    async fn serve(&mut self, stop: CancellationToken) -> Result<(), SessionError> {
        let connect = match tokio::time::timeout(CONNECT_TIMEOUT, self.next_packet()).await {
            Err(_) => return Err(SessionError::NoConnect),
            Ok(Ok(Packet::Connect(c))) => c,
            Ok(Ok(_)) => return Err(SessionError::Protocol("first packet is not CONNECT")),
            Ok(Err(SessionError::UnsupportedProtocol(level))) => {
                let refuse = ConnAck::new(ConnectReturnCode::RefusedProtocolVersion, false);
                self.send(&[Packet::ConnAck(refuse)]).await?;
                return Err(SessionError::UnsupportedProtocol(level));
            }
            Ok(Err(e)) => return Err(e),
        };
        if connect.protocol != Protocol::V4 {
            let refuse = ConnAck::new(ConnectReturnCode::RefusedProtocolVersion, false);
            self.send(&[Packet::ConnAck(refuse)]).await?;
            return Err(SessionError::UnsupportedProtocol(5));
        }
        if connect.client_id.is_empty() && !connect.clean_session {
            self.send(&[Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::BadClientId,
                false,
            ))])
            .await?;
            return Err(SessionError::Protocol(
                "empty client id without clean session",
            ));
        }
        let claim = Claim {
            device_id: &connect.client_id,
            username: connect.login.as_ref().map(|l| l.username.as_str()),
            password: connect.login.as_ref().map(|l| l.password.as_bytes()),
        };
        let authority = self.ingest.authority.clone();
        match authority.authenticate(&self.peer, claim).await {
            Ok(identity) => {
                tracing::Span::current().record("device_id", connect.client_id.as_str());
                self.identity = identity;
                self._connected = Some(
                    self.ingest
                        .stats
                        .activity
                        .connected(&connect.client_id, "mqtt"),
                );
            }
            Err(refusal) => {
                let reason = refusal.reason();
                self.ingest.stats.record_refusal(
                    "mqtt",
                    reason,
                    Some(&connect.client_id),
                    Some(self.peer.addr),
                );
                if let Some(suppressed) = crate::ratelog::allow(reason) {
                    tracing::warn!(message = "Device refused at CONNECT.", client_id = %connect.client_id, peer = %self.peer.addr, reason, %refusal, suppressed);
                }
                let code = match refusal {
                    Refusal::UnknownDevice(_) | Refusal::WrongPassword(_) => {
                        ConnectReturnCode::BadUserNamePassword
                    }
                    _ => ConnectReturnCode::NotAuthorized,
                };
                self.send(&[Packet::ConnAck(ConnAck::new(code, false))])
                    .await?;
                return Err(SessionError::Refused(refusal));
            }
        }
        self.send(&[Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            false,
        ))])
        .await?;
        tracing::debug!(message = "MQTT device connected.", client_id = %connect.client_id, peer = %self.peer.addr, identity = ?self.identity);
        let idle = match connect.keep_alive {
            0 => Duration::from_secs(24 * 3600),
            secs => Duration::from_millis(u64::from(secs) * 1500),
        };

        loop {
            let round = tokio::select! {
                _ = stop.cancelled() => break,
                r = tokio::time::timeout(idle, self.next_round()) => match r {
                    Err(_) => return Err(SessionError::KeepAlive),
                    Ok(Ok(Some(round))) => round,
                    Ok(Ok(None)) => break,
                    Ok(Err(e)) => return Err(e),
                },
            };
            // Boxed: the commit's state lives on the heap only while it runs, so an idle
            // session's task stays small.
            let (mut out, denied) = Box::pin(self.commit(round.publishes)).await?;
            if denied {
                // Acknowledge what came before the denied publish (in order, as MQTT wants),
                // then close without acknowledging it.
                self.send(&out).await?;
                return Err(SessionError::Denied);
            }
            out.extend(round.replies);
            self.send(&out).await?;
            if round.disconnect {
                break;
            }
        }
        Ok(())
    }

    /// Stores the publishes and returns their acknowledgements, and whether one was denied
    /// under `on_deny = "disconnect"` (then the acknowledgements stop before it); an error
    /// means "not stored".
    async fn commit(
        &mut self,
        publishes: Vec<(Publish, usize)>,
    ) -> Result<(Vec<Packet>, bool), SessionError> {
        if publishes.is_empty() {
            return Ok((Vec::new(), false));
        }
        let mut events = Vec::new();
        let mut dead = Vec::new();
        let mut valid = Vec::with_capacity(publishes.len());
        let mut first_denied = None;
        for (i, (p, size)) in publishes.iter().enumerate() {
            if *size > self.max_payload {
                dead.push(self.too_large(&p.topic, &p.payload, *size));
                valid.push(false);
                continue;
            }
            if !self.ingest.authority.may_publish(&self.identity, &p.topic) {
                dead.push(self.denied(&p.topic, &p.payload));
                valid.push(false);
                first_denied.get_or_insert(i);
                continue;
            }
            match super::decode_publish(
                &self.ingest.mappings,
                &p.topic,
                &p.payload,
                self.identity.device_id(),
            ) {
                Ok(e) => {
                    events.extend(
                        e.into_iter()
                            .map(|(event, session)| crate::ingest::Inbound {
                                event,
                                session,
                                mqtt_topic: Some(p.topic.clone()),
                            }),
                    );
                    valid.push(true);
                }
                Err(letter) => {
                    dead.push(*letter);
                    valid.push(false);
                }
            }
        }
        if let Err(error) = self.ingest.submit("mqtt", events, dead).await {
            tracing::warn!(message = "MQTT events not stored; closing the connection unacknowledged.", peer = %self.peer.addr, %error);
            return Err(SessionError::NotStored(error.to_string()));
        }
        let disconnect =
            first_denied.filter(|_| self.ingest.authority.on_deny() == OnDeny::Disconnect);
        let cut = disconnect.unwrap_or(publishes.len());
        let mut acks = Vec::new();
        for ((p, _), ok) in publishes.into_iter().zip(valid).take(cut) {
            match p.qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => acks.push(Packet::PubAck(PubAck::new(p.pkid))),
                QoS::ExactlyOnce => acks.push(Packet::PubRec(PubRec::new(p.pkid))),
            }
            if let (true, Some(r)) = (ok, &self.republish) {
                r.publish(p.topic, p.payload);
            }
        }
        Ok((acks, disconnect.is_some()))
    }

    /// The dead letter for a payload over `mqtt.max_payload_bytes` (its first
    /// [`DEAD_LETTER_BYTES`] kept); counted and logged (rate-limited). It is acknowledged like
    /// any dead letter, so the device does not resend it forever.
    fn too_large(&self, topic: &str, payload: &[u8], size: usize) -> DeadLetter {
        let device = self.identity.device_id();
        self.ingest
            .stats
            .record_refusal("mqtt", "too_large", device, Some(self.peer.addr));
        let reason = format!(
            "payload too large: {size} bytes, limit {} (mqtt.max_payload_bytes)",
            self.max_payload
        );
        if let Some(suppressed) = crate::ratelog::allow("mqtt_too_large") {
            tracing::warn!(message = "MQTT payload over the limit.", %topic, peer = %self.peer.addr, %reason, suppressed);
        }
        DeadLetter::new(
            "mqtt",
            topic.to_owned(),
            device.map(str::to_owned),
            reason,
            &payload[..payload.len().min(DEAD_LETTER_BYTES)],
        )
    }

    /// The dead letter for a publish the ACL denies; counted and logged (rate-limited).
    fn denied(&self, topic: &str, payload: &[u8]) -> DeadLetter {
        let device = self.identity.device_id().unwrap_or("unknown");
        self.ingest
            .stats
            .record_refusal("mqtt", "acl", Some(device), Some(self.peer.addr));
        if let Some(suppressed) = crate::ratelog::allow("acl") {
            tracing::warn!(message = "Publish refused by the ACL.", device_id = %device, %topic, peer = %self.peer.addr, suppressed);
        }
        DeadLetter::new(
            "mqtt",
            topic.to_owned(),
            Some(device.to_owned()),
            format!("acl: device {device:?} may not publish on {topic:?}"),
            payload,
        )
    }

    /// Reads until at least one packet is complete, then takes every complete packet.
    /// `Ok(None)`: the device closed the connection.
    async fn next_round(&mut self) -> Result<Option<Round>, SessionError> {
        let mut round = Round::default();
        loop {
            while let Some(parsed) = self.parse()? {
                let packet = match parsed {
                    Parsed::Oversize(p, size) => {
                        round.publishes.push((p, size));
                        continue;
                    }
                    Parsed::Packet(packet) => packet,
                };
                match packet {
                    Packet::Publish(p) => {
                        let size = p.payload.len();
                        round.publishes.push((p, size));
                    }
                    Packet::PubRel(r) => round.replies.push(Packet::PubComp(PubComp::new(r.pkid))),
                    Packet::PingReq => round.replies.push(Packet::PingResp),
                    Packet::Subscribe(s) => round.replies.push(Packet::SubAck(SubAck::new(
                        s.pkid,
                        vec![SubscribeReasonCode::Failure; s.filters.len()],
                    ))),
                    Packet::Unsubscribe(u) => {
                        round.replies.push(Packet::UnsubAck(UnsubAck::new(u.pkid)))
                    }
                    Packet::Disconnect => {
                        round.disconnect = true;
                        return Ok(Some(round));
                    }
                    Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => {}
                    Packet::Connect(_) => return Err(SessionError::Protocol("second CONNECT")),
                    Packet::ConnAck(_)
                    | Packet::SubAck(_)
                    | Packet::UnsubAck(_)
                    | Packet::PingResp => {
                        return Err(SessionError::Protocol("server-only packet from a client"))
                    }
                }
            }
            if !round.publishes.is_empty() || !round.replies.is_empty() {
                return Ok(Some(round));
            }
            if conn::read_more(&mut self.stream, &mut self.read).await? == 0 {
                return Ok(None);
            }
        }
    }

    async fn next_packet(&mut self) -> Result<Packet, SessionError> {
        loop {
            match self.parse()? {
                Some(Parsed::Packet(p)) => return Ok(p),
                Some(Parsed::Oversize(..)) => {
                    return Err(SessionError::Protocol("PUBLISH before CONNECT"))
                }
                None => {}
            }
            if conn::read_more(&mut self.stream, &mut self.read).await? == 0 {
                return Err(SessionError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// The next packet in the read buffer, if it has all arrived. A PUBLISH too large to
    /// buffer is read through as it arrives ([`Oversize`]) and returned once it has.
    fn parse(&mut self) -> Result<Option<Parsed>, SessionError> {
        if self.oversize.is_none() {
            match Oversize::start(&mut self.read, self.max_packet) {
                Ok(Start::No) => {}
                Ok(Start::Pending) => return Ok(None),
                Ok(Start::Started(o)) => self.oversize = Some(o),
                Err(reason) => return Err(SessionError::Malformed(reason)),
            }
        }
        if let Some(o) = &mut self.oversize {
            if !o.consume(&mut self.read) {
                return Ok(None);
            }
            return Ok(self
                .oversize
                .take()
                .map(|o| o.into_publish())
                .map(|(p, size)| Parsed::Oversize(p, size)));
        }
        match Packet::read(&mut self.read, self.max_packet) {
            Ok(p) => Ok(Some(Parsed::Packet(p))),
            Err(CodecError::InsufficientBytes(_)) => Ok(None),
            Err(CodecError::InvalidProtocolLevel(level)) => {
                Err(SessionError::UnsupportedProtocol(level))
            }
            Err(e) => Err(SessionError::Malformed(format!("{e:?}"))),
        }
    }

    async fn send(&mut self, packets: &[Packet]) -> Result<(), SessionError> {
        if packets.is_empty() {
            return Ok(());
        }
        for p in packets {
            p.write(&mut self.write, self.max_packet)
                .map_err(|e| SessionError::Malformed(format!("{e:?}")))?;
        }
        // A device that stops reading its acknowledgements is closed, not waited for.
        let written = conn::write_answer(&mut self.stream, &self.write).await;
        self.write.clear();
        Ok(written?)
    }
}
