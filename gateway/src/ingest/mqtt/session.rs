//! One device connection on the gateway's MQTT listener (MQTT 3.1, 3.1.1 and 5).
//!
//! CONNECT must come first, within [`CONNECT_TIMEOUT`]; its protocol level picks the version
//! ([`super::codec`]), and [`super::connect`] authenticates it and answers it. Then, for every
//! read from the socket: all complete packets are parsed; the PUBLISHes among them are decoded
//! and committed to the spool in one call; only after that commit are their PUBACKs (QoS 1) and
//! PUBRECs (QoS 2) written, followed by answers to the other packets (PINGRESP, PUBCOMP, SUBACK,
//! UNSUBACK). Devices cannot subscribe here (SUBACK says failure): subscribers use the embedded
//! broker. A session that is silent for 1.5 times its keep-alive is closed, as the spec says.
//!
//! Each publish of an authenticated device passes the ACL before it is decoded (see the
//! [module doc](super) for the answers). What differs by version is how a refusal is said:
//! - **3.1.1** has one answer: a publish that was kept as a dead letter is acknowledged like a
//!   stored one, and one that could not be stored closes the connection unacknowledged.
//! - **5** answers each publish with its reason code ([`AckCode`]). When the spool is full the
//!   session holds the answers for up to [`BUSY_HOLD`], retrying, so a device with every publish
//!   its Receive Maximum allows in flight is slowed down, not disconnected; then it answers
//!   "quota exceeded" and the device resends later. A session that ends for a reason the
//!   device should hear sends DISCONNECT with it first.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::QoS;
use tokio_util::sync::CancellationToken;

use super::codec::{
    Closing, Codec, ConnectCode, Incoming, Publish, ReadError, Reply, Version, Will,
};
use super::oversize::{Oversize, Start};
use super::{Republisher, Settings};
use crate::identity::{Identity, Peer, Refusal};
use crate::ingest::conn::{self, Accepted, Stream};
use crate::ingest::Ingest;
use crate::route::DeadLetter;

pub use crate::route::DEAD_LETTER_BYTES;

mod commit;
mod inbox;
mod will;

/// How long a new connection has to send CONNECT.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// MQTT 5: how long a session holds its answers while the spool is full before it answers
/// "quota exceeded".
pub const BUSY_HOLD: Duration = Duration::from_secs(5);

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed MQTT packet: {0}")]
    Malformed(String),
    #[error("MQTT protocol level {0} is not supported; this listener speaks 3.1, 3.1.1 and 5")]
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
    #[error("more than the {0} unacknowledged QoS 1 and 2 publishes the CONNACK granted")]
    ReceiveMaximum(u16),
    #[error("topic alias {0} was never set or is over the maximum")]
    TopicAlias(u16),
    #[error("a packet of {0} bytes, over the Maximum Packet Size the CONNACK gave")]
    PacketTooLarge(usize),
    #[error("session ended: {}", crate::identity::live::describe(.0))]
    Revoked(&'static str),
    #[error("{0}")]
    TopicName(String),
}

impl SessionError {
    /// The DISCONNECT an MQTT 5 device hears for it; `None`: the connection just closes.
    fn closing(&self) -> Option<Closing> {
        Some(match self {
            SessionError::Malformed(_) => Closing::Malformed,
            SessionError::Protocol(_) => Closing::ProtocolError,
            SessionError::KeepAlive => Closing::KeepAliveTimeout,
            SessionError::Denied | SessionError::Revoked(_) => Closing::NotAuthorized,
            SessionError::ReceiveMaximum(_) => Closing::ReceiveMaximumExceeded,
            SessionError::TopicAlias(_) => Closing::TopicAliasInvalid,
            SessionError::TopicName(_) => Closing::TopicNameInvalid,
            SessionError::PacketTooLarge(_) => Closing::PacketTooLarge,
            SessionError::NotStored(_) => Closing::Unspecified,
            _ => return None,
        })
    }
}

impl From<ReadError> for SessionError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Malformed(reason) => SessionError::Malformed(reason),
            ReadError::UnsupportedProtocol(level) => SessionError::UnsupportedProtocol(level),
            ReadError::TopicAlias(alias) => SessionError::TopicAlias(alias),
            ReadError::TopicName(problem) => SessionError::TopicName(problem),
        }
    }
}

pub struct Session {
    pub(super) stream: Box<dyn Stream>,
    pub(super) peer: Peer,
    /// Who the device is, once CONNECT was accepted.
    pub(super) identity: Identity,
    pub(super) settings: Arc<Settings>,
    /// Counts the device as connected on the status page while the session lives.
    pub(super) connected: Option<crate::observe::activity::Connected>,
    pub(super) ingest: Ingest,
    republish: Option<Republisher>,
    read: BytesMut,
    write: BytesMut,
    /// A PUBLISH too large to buffer, being read through.
    oversize: Option<Oversize>,
    pub(super) codec: Codec,
    /// The client id, and the Session Expiry Interval its CONNECT asked for (MQTT 5).
    pub(super) client_id: String,
    pub(super) session_expiry: u32,
    /// MQTT 5: the Receive Maximum the CONNACK granted (`u16::MAX` for 3.1.1, which has none).
    pub(super) grant: u16,
    /// QoS 2 publishes answered with PUBREC whose PUBREL has not come yet: they count against
    /// the grant until then.
    pub(super) awaiting_rel: usize,
    /// MQTT 5: packet ids of the last QoS 2 publishes a PUBREC refused (at most
    /// [`REFUSED_REL`]): a PUBREL for one is answered "packet identifier not found", so a
    /// client that ignores PUBREC's reason code still does not hear "complete".
    refused_rel: std::collections::VecDeque<u16>,
    /// MQTT 5: per device, the seqs this connection answered "not stored" and has not stored
    /// since ([`commit`]). Empty unless the spool refused.
    held: std::collections::HashMap<String, std::collections::BTreeSet<u64>>,
    /// The accepted CONNECT's Will, until a normal DISCONNECT discards it.
    pub(super) will: Option<Box<Will>>,
    /// Which connection of this client id this is ([`super::sessions::Sessions::connected`]):
    /// a delayed Will is not stored once a newer one exists.
    pub(super) generation: u64,
    /// The device's command subscription on this connection ([`inbox`]); `None` without one.
    inbox: Option<Box<inbox::Inbox>>,
    /// The subscription filters of the session this connection resumed (Session Present).
    pub(super) resumed: Vec<(String, QoS)>,
}

/// How many refused QoS 2 packet ids a session remembers.
const REFUSED_REL: usize = 64;

/// One packet as read: parsed, or an oversize PUBLISH read through.
enum Parsed {
    Packet(Incoming),
    Oversize(Publish),
}

/// What one read's worth of packets asks for.
#[derive(Default)]
struct Round {
    publishes: Vec<Publish>,
    /// How many of `publishes` are QoS 1 or 2 (they count against the Receive Maximum).
    unanswered: usize,
    /// Answers that do not wait for the spool, written after the acks.
    replies: Vec<Reply>,
    /// Packet ids of commands the device acknowledged.
    acked: Vec<u16>,
    disconnect: bool,
}

/// How a session's main loop ended without an error.
enum Ended {
    /// The device disconnected or closed the connection.
    Device,
    /// The gateway is shutting down.
    Stopped,
}

impl Session {
    pub fn new(
        accepted: Accepted,
        settings: Arc<Settings>,
        ingest: Ingest,
        republish: Option<Republisher>,
    ) -> Self {
        Self {
            stream: accepted.stream,
            peer: accepted.peer,
            identity: Identity::Anonymous,
            connected: None,
            codec: Codec::new(settings.max_packet()),
            settings,
            ingest,
            republish,
            // Small to start: an idle device holds these while it waits (`conn::read_more`).
            read: BytesMut::with_capacity(conn::INITIAL_READ),
            write: BytesMut::with_capacity(256),
            oversize: None,
            client_id: String::new(),
            session_expiry: 0,
            grant: u16::MAX,
            awaiting_rel: 0,
            refused_rel: std::collections::VecDeque::new(),
            held: std::collections::HashMap::new(),
            will: None,
            generation: 0,
            inbox: None,
            resumed: Vec::new(),
        }
    }

    /// Refuses a connection over `mqtt.max_connections`: "server unavailable" (3.1.1) or
    /// "server busy" (5).
    pub async fn refuse_busy(mut self) -> Result<(), SessionError> {
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, self.next_packet()).await;
        self.send(&[Reply::ConnAck {
            code: ConnectCode::Busy,
            session_present: false,
            grant: None,
            reason: Some("the gateway is at mqtt.max_connections; try again later".into()),
        }])
        .await
    }

    /// Serves the connection until it ends. A malformed packet ends it (MQTT framing cannot be
    /// trusted after one); it is counted (`malformed`), logged (rate-limited) and, once the
    /// device is authenticated, kept as a dead letter with the bytes that could not be parsed
    /// (at most [`DEAD_LETTER_BYTES`]). Before CONNECT is accepted nothing is stored.
    ///
    /// Every other way a device breaks the session is counted too, by reason: `connect_timeout`
    /// (no CONNECT in time), `keepalive_timeout` (silent for 1.5 × its keep-alive),
    /// `unsupported_protocol`, `protocol_violation`, `receive_maximum` and `topic_alias`, and
    /// logged, rate-limited. An MQTT 5 device hears why in a DISCONNECT.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), SessionError> {
        let result = self.serve(stop.clone()).await;
        let reason = match &result {
            Err(SessionError::Malformed(reason)) => {
                self.malformed(reason.clone()).await;
                None
            }
            Err(SessionError::NoConnect) => Some("connect_timeout"),
            Err(SessionError::KeepAlive) => Some("keepalive_timeout"),
            Err(SessionError::UnsupportedProtocol(_)) => Some("unsupported_protocol"),
            Err(SessionError::Protocol(_)) => Some("protocol_violation"),
            Err(SessionError::ReceiveMaximum(_)) => Some("receive_maximum"),
            Err(SessionError::TopicAlias(_)) => Some("topic_alias"),
            Err(SessionError::Revoked(reason)) => Some(*reason),
            Err(SessionError::TopicName(_)) => Some("topic_name_invalid"),
            _ => None,
        };
        if let (Some(reason), Err(error)) = (reason, &result) {
            let device = self.identity.device_id().map(str::to_owned);
            self.ingest.stats.record_refusal(
                crate::transport::Transport::Mqtt,
                reason,
                device.as_deref(),
                Some(self.peer.addr),
            );
            if let Some(suppressed) = tributary_common::ratelog::allow(reason) {
                tracing::info!(message = "MQTT session closed.", peer = %self.peer.addr, reason, %error, suppressed);
            }
        }
        if self.connected.is_some() && self.codec.version() == Some(Version::V5) {
            let closing = match &result {
                Ok(Ended::Stopped) => Some((Closing::ShuttingDown, None)),
                Ok(Ended::Device) => None,
                Err(e) => e.closing().map(|c| (c, Some(e.to_string()))),
            };
            if let Some((reason, detail)) = closing {
                let _ = self.send(&[Reply::Disconnect { reason, detail }]).await;
            }
        }
        // The gateway closed it: let the device read why before the socket goes, rather than
        // lose the answer to a reset (its unread bytes would cause one).
        if !matches!(result, Ok(Ended::Device)) {
            conn::close_gracefully(&mut self.stream).await;
        }
        if self.connected.is_some() {
            let filters = self.inbox.as_ref().map(|i| i.filters()).unwrap_or_default();
            self.settings
                .sessions
                .end(&self.client_id, self.session_expiry, filters);
        }
        // A Will is the device's last word when it dropped off: not when it said goodbye (no
        // Will left), not when the gateway stops or revoked it.
        let dropped_off = !matches!(result, Ok(Ended::Stopped) | Err(SessionError::Revoked(_)));
        if dropped_off && self.connected.is_some() {
            if let Some(will) = self.will.take() {
                self.store_will(*will, &stop).await;
            }
        }
        result.map(|_| ())
    }

    async fn malformed(&mut self, reason: String) {
        let device = self.identity.device_id().map(str::to_owned);
        self.ingest.stats.record_refusal(
            crate::transport::Transport::Mqtt,
            "malformed",
            device.as_deref(),
            Some(self.peer.addr),
        );
        if let Some(suppressed) = tributary_common::ratelog::allow("mqtt_malformed") {
            tracing::warn!(message = "Malformed MQTT packet; connection closed.", peer = %self.peer.addr, %reason, suppressed);
        }
        if self.connected.is_none() {
            // Nobody is authenticated: counted and logged, never stored (its bytes may hold a
            // password, and storing them would let anyone fill the spool).
            return;
        }
        let raw = &self.read[..self.read.len().min(DEAD_LETTER_BYTES)];
        let letter = DeadLetter::new(
            "mqtt",
            self.peer.addr.to_string(),
            device,
            format!("malformed MQTT packet: {reason}"),
            raw,
        );
        if let Err(error) = self
            .ingest
            .submit(crate::transport::Transport::Mqtt, Vec::new(), vec![letter])
            .await
        {
            tracing::warn!(message = "Dead letter not stored.", peer = %self.peer.addr, %error);
        }
    }

    async fn serve(&mut self, stop: CancellationToken) -> Result<Ended, SessionError> {
        let connect = match tokio::time::timeout(CONNECT_TIMEOUT, self.next_packet()).await {
            Err(_) => return Err(SessionError::NoConnect),
            Ok(Ok(Incoming::Connect(c))) => c,
            Ok(Ok(_)) => return Err(SessionError::Protocol("first packet is not CONNECT")),
            Ok(Err(SessionError::UnsupportedProtocol(level))) => {
                self.send(&[Reply::ConnAck {
                    code: ConnectCode::UnsupportedVersion,
                    session_present: false,
                    grant: None,
                    reason: None,
                }])
                .await?;
                return Err(SessionError::UnsupportedProtocol(level));
            }
            Ok(Err(e)) => return Err(e),
        };
        let idle = self.connect(*connect).await?;
        // A resumed session's subscription holds without a new SUBSCRIBE.
        let resumed = std::mem::take(&mut self.resumed);
        if !resumed.is_empty() {
            self.subscribe(&resumed);
        }
        let watch = self.ingest.authority.watch(&self.identity, &self.peer);
        loop {
            let wake = self.inbox.as_ref().map(|i| i.outbox.wake.clone());
            let round = tokio::select! {
                _ = stop.cancelled() => return Ok(Ended::Stopped),
                _ = async { match &wake { Some(w) => w.notified().await, None => std::future::pending().await } } => {
                    self.deliver().await?;
                    continue;
                }
                reason = crate::identity::live::ended(watch.as_ref()) => {
                    return Err(SessionError::Revoked(reason))
                }
                r = tokio::time::timeout(idle, self.next_round()) => match r {
                    Err(_) => return Err(SessionError::KeepAlive),
                    Ok(Ok(Some(round))) => round,
                    Ok(Ok(None)) => return Ok(Ended::Device),
                    Ok(Err(e)) => return Err(e),
                },
            };
            let Round {
                mut publishes,
                replies,
                acked,
                disconnect,
                ..
            } = round;
            // Acknowledged deliveries first: a device's PUBACK of a command and its answer often
            // share a read, and the answer settles the command.
            if !acked.is_empty() {
                self.acknowledged(acked).await;
            }
            let answered = self.answers(&mut publishes).await?;
            // Boxed: the commit's state lives on the heap only while it runs, so an idle
            // session's task stays small.
            let (out, cut) = Box::pin(self.commit(publishes, &stop)).await?;
            let mut out = [answered, out].concat();
            if let Some(error) = cut {
                // Answer what came before the publish that ends the session (in order, as
                // MQTT wants), then close without answering it.
                self.send(&out).await?;
                return Err(error);
            }
            out.extend(replies);
            self.send(&out).await?;
            if disconnect {
                return Ok(Ended::Device);
            }
        }
    }

    /// Reads until at least one packet is complete, then takes every complete packet.
    /// `Ok(None)`: the device closed the connection.
    async fn next_round(&mut self) -> Result<Option<Round>, SessionError> {
        let mut round = Round::default();
        loop {
            while let Some(parsed) = self.parse()? {
                let packet = match parsed {
                    Parsed::Oversize(p) => {
                        self.in_flight(&mut round, p)?;
                        continue;
                    }
                    Parsed::Packet(packet) => packet,
                };
                match packet {
                    Incoming::Publish(p) => self.in_flight(&mut round, p)?,
                    Incoming::PubRel(pkid) => {
                        let refused = self.refused_rel.iter().position(|r| *r == pkid);
                        if let Some(i) = refused {
                            self.refused_rel.remove(i);
                        } else {
                            self.awaiting_rel = self.awaiting_rel.saturating_sub(1);
                        }
                        let found = refused.is_none();
                        round.replies.push(Reply::PubComp { pkid, found });
                    }
                    Incoming::PingReq => round.replies.push(Reply::PingResp),
                    Incoming::Subscribe { pkid, filters } => {
                        let granted = self.subscribe(&filters);
                        round.replies.push(Reply::SubAck { pkid, granted })
                    }
                    Incoming::Unsubscribe { pkid, filters } => {
                        let existed = self.unsubscribe(&filters);
                        round.replies.push(Reply::UnsubAck { pkid, existed })
                    }
                    Incoming::PubAck(pkid) => round.acked.push(pkid),
                    Incoming::Disconnect {
                        session_expiry,
                        with_will,
                    } => {
                        self.disconnecting(session_expiry, with_will)?;
                        round.disconnect = true;
                        return Ok(Some(round));
                    }
                    Incoming::Ignored => {}
                    Incoming::Connect(_) => return Err(SessionError::Protocol("second CONNECT")),
                    Incoming::Unexpected(what) => return Err(SessionError::Protocol(what)),
                }
            }
            if !round.publishes.is_empty() || !round.replies.is_empty() || !round.acked.is_empty() {
                return Ok(Some(round));
            }
            if conn::read_more(&mut self.stream, &mut self.read).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Adds a publish to the round, checking that a QoS 1 or 2 one stays within the Receive
    /// Maximum granted (with the QoS 2 publishes still awaiting their PUBREL).
    fn in_flight(&self, round: &mut Round, p: Publish) -> Result<(), SessionError> {
        if p.qos != QoS::AtMostOnce {
            if round.unanswered + self.awaiting_rel >= usize::from(self.grant) {
                return Err(SessionError::ReceiveMaximum(self.grant));
            }
            round.unanswered += 1;
        }
        round.publishes.push(p);
        Ok(())
    }

    async fn next_packet(&mut self) -> Result<Incoming, SessionError> {
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
            let v5 = self.codec.version() == Some(Version::V5);
            match Oversize::start(&mut self.read, self.settings.max_packet(), v5) {
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
                .map(|o| Parsed::Oversize(o.into_publish())));
        }
        Ok(self.codec.read(&mut self.read)?.map(Parsed::Packet))
    }

    pub(super) async fn send(&mut self, replies: &[Reply]) -> Result<(), SessionError> {
        if replies.is_empty() {
            return Ok(());
        }
        for r in replies {
            if let Err(reason) = self.codec.write(r, &mut self.write) {
                tracing::debug!(message = "An answer cannot be written; closing.", peer = %self.peer.addr, %reason);
                return Err(SessionError::Protocol(
                    "an answer the client cannot take (its Maximum Packet Size)",
                ));
            }
        }
        // A device that stops reading its acknowledgements is closed, not waited for.
        let written = conn::write_answer(&mut self.stream, &self.write).await;
        self.write.clear();
        Ok(written?)
    }
}
