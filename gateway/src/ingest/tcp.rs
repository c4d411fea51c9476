//! TCP ingest: the compact framed protocol ([`tributary_protocol::message`]).
//!
//! One task per connection, accepted by the shared connection layer ([`super::conn`]), plain or
//! TLS. The session is HELLO, within [`HELLO_TIMEOUT`] of the connection (an absolute deadline,
//! whatever arrives meanwhile), then EVENTS batches.
//!
//! - **Before HELLO** a connection costs the gateway a few bytes and nothing more: the first
//!   frame must be a HELLO. Anything else (EVENTS, an answer, a frame that does not decode) gets
//!   one NACK saying why and the connection closes; it is counted
//!   (`tcp/protocol_violation`, `tcp/bad_frame_before_hello`) and never stored, so an
//!   unauthenticated peer can neither fill the spool nor put what it sent (a password in a
//!   HELLO that failed to decode) into the dead-letter topic.
//!
//! - **HELLO** authenticates the device ([`crate::identity`]): its client certificate, or the
//!   password HELLO carries, must prove the device id HELLO names; an anonymous HELLO is accepted
//!   only where the listener allows it. A refusal is a NACK (`unauthorized`) naming the reason,
//!   and the connection closes. HELLO's `session` scopes the device's sequence numbers.
//! - **EVENTS.** Each batch is committed to the spool and only then answered, with exactly one
//!   message: ANSWER (protocol version 3: the batch's highest seq, how many events were stored or
//!   were already stored, and each refused event with its seq, code and reason). An event the
//!   ACL does not allow (an authenticated device publishing for another device) is refused as
//!   `forbidden`; one that fails validation as `invalid_event`. Both are kept as dead letters and
//!   released by the answer, since resending would not help. Version 1 and 2 devices get a NACK
//!   per refused event and then an ACK, as they always did. An empty batch gets a NACK
//!   (`invalid_event`). A frame from an authenticated device that cannot be decoded gets a NACK
//!   (`malformed`) and is kept as a dead letter with at most its first
//!   [`crate::route::DEAD_LETTER_BYTES`] (none of a frame tagged HELLO, which may carry a
//!   password); after a bad length or CRC the connection is closed, since frame boundaries are
//!   lost. A spool failure gets a NACK (`busy`) and no ACK: the device keeps the events and
//!   resends.
//! - **Commands** (protocol 4, with `[commands]` on): COMMAND frames to the device between the
//!   answers, and its COMMAND_RESULTs settle them ([`commands`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tributary_protocol::codec::{BadFrame, MessageCodec};
use tributary_protocol::{
    Ack, Answer, Event, Hello, Message, Nack, NackCode, Refused, OLDEST_VERSION,
};

use self::wire::Wire;
use super::conn::{self, Accepted, Spec};
use super::{Inbound, Ingest};
use crate::identity::live::{self, Watch};
use crate::identity::{Claim, Identity, Peer};
use crate::route::DeadLetter;
use crate::shutdown::Scope;
pub use config::{RawTcp, TcpConfig};
use tributary_spool::Appended;

/// How long a new connection has to send HELLO.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves connections on `listener` until `scope.stop` is cancelled ([`conn::serve`]).
pub async fn serve(
    listener: TcpListener,
    tls: bool,
    config: TcpConfig,
    ingest: Ingest,
    scope: Scope,
) {
    let spec = Spec {
        transport: crate::transport::Transport::Tcp,
        tls,
        max_connections: config.max_connections.get(),
        max_per_address: config.max_connections_per_address.get(),
    };
    let max_frame = config.max_frame_bytes.get();
    let idle = config.idle_timeout;
    let (authority, stats) = (ingest.authority.clone(), ingest.stats.clone());
    let session_stop = scope.stop.clone();
    let session =
        move |a: Accepted| session(a, max_frame, idle, ingest.clone(), session_stop.clone());
    let busy = move |a: Accepted| async move {
        let mut wire = Wire::new(a.stream, MessageCodec::new(max_frame));
        let nack = Message::Nack(Nack {
            code: NackCode::Busy,
            text: "too many connections; retry later".into(),
        });
        let _ = tokio::time::timeout(Duration::from_secs(5), wire.send(&nack)).await;
    };
    conn::serve(listener, spec, authority, stats, scope, session, busy).await;
}

/// Serves one accepted connection until the device leaves, the session ends, or `stop`. Also
/// how sessions are driven in-process, over any byte stream (the fuzz target does).
pub async fn session(
    accepted: Accepted,
    max_frame: usize,
    idle: Duration,
    ingest: Ingest,
    stop: CancellationToken,
) {
    let conn = Connection::new(accepted, max_frame, idle, ingest);
    let peer = conn.peer.addr;
    if let Err(error) = conn.run(stop).await {
        tracing::debug!(message = "TCP connection ended with an error.", %peer, %error);
    }
}

struct Connection {
    wire: Wire,
    peer: Peer,
    /// Set by a successful HELLO: the device id, its identity and its boot session.
    device: Option<(String, Identity, u64)>,
    /// Counts the device as connected on the status page while the session lives.
    _connected: Option<crate::observe::activity::Connected>,
    /// Fires when a reload revokes the device's credential or its certificate expires.
    watch: Option<Arc<Watch>>,
    /// `tcp.idle_timeout_ms`: silence after HELLO that closes the session.
    idle: Duration,
    /// When HELLO must have arrived by: [`HELLO_TIMEOUT`] after the connection was accepted.
    hello_by: tokio::time::Instant,
    ingest: Ingest,
    /// A protocol 4 device's commands ([`commands`]), once HELLO said so and `[commands]` is on.
    inbox: Option<crate::commands::outbox::Outbox>,
}

impl Connection {
    fn new(accepted: Accepted, max_frame: usize, idle: Duration, ingest: Ingest) -> Self {
        Self {
            wire: Wire::new(accepted.stream, MessageCodec::new(max_frame)),
            peer: accepted.peer,
            device: None,
            _connected: None,
            watch: None,
            idle,
            hello_by: tokio::time::Instant::now() + HELLO_TIMEOUT,
            ingest,
            inbox: None,
        }
    }

    async fn run(mut self, stop: CancellationToken) -> std::io::Result<()> {
        loop {
            let watch = self.watch.clone();
            let wake = self.inbox.as_ref().map(|i| i.wake.clone());
            let inbound = tokio::select! {
                _ = stop.cancelled() => break,
                _ = async { match &wake { Some(w) => w.notified().await, None => std::future::pending().await } } => {
                    self.send_commands().await?;
                    continue;
                }
                reason = live::ended(watch.as_deref()) => {
                    self.revoked(reason).await;
                    break;
                }
                next = self.next() => next,
            };
            let inbound = match inbound {
                Ok(Some(inbound)) => inbound,
                Ok(None) => break,
                Err(()) => {
                    // Before HELLO: no HELLO in time; after: idle for tcp.idle_timeout_ms.
                    let (reason, device) = match &self.device {
                        None => ("hello_timeout", None),
                        Some((id, _, _)) => ("idle_timeout", Some(id.clone())),
                    };
                    self.ingest.stats.record_refusal(
                        crate::transport::Transport::Tcp,
                        reason,
                        device.as_deref(),
                        Some(self.peer.addr),
                    );
                    tracing::debug!(message = "TCP session closed for silence.", reason);
                    break;
                }
            };
            let inbound = inbound?;
            if self.device.is_none() && !matches!(inbound, Ok(Message::Hello(_))) {
                self.before_hello(inbound).await?;
                break;
            }
            match inbound {
                // Boxed: what handling a message needs lives on the heap only while it runs,
                // so an idle connection's task stays small.
                Ok(Message::Hello(hello)) => {
                    if !Box::pin(self.hello(hello)).await? {
                        break;
                    }
                }
                Ok(Message::Events(events)) => Box::pin(self.events(events)).await?,
                Ok(Message::CommandResult(result)) if self.inbox.is_some() => {
                    Box::pin(self.command_result(result)).await;
                }
                Ok(
                    Message::Ack(_)
                    | Message::Nack(_)
                    | Message::Answer(_)
                    | Message::Command(_)
                    | Message::CommandResult(_),
                ) => {
                    self.nack(
                        NackCode::ProtocolViolation,
                        "devices send HELLO and EVENTS (and, from protocol 4 where the gateway takes commands, COMMAND_RESULT) only".into(),
                    )
                    .await?;
                }
                Err(bad) => {
                    let fatal = bad.fatal;
                    self.bad_frame(bad).await?;
                    if fatal {
                        break;
                    }
                }
            }
        }
        self.wire.close().await;
        Ok(())
    }

    /// The next frame: before HELLO by the connection's HELLO deadline, after it within the
    /// idle timeout (`Err(())` when it ran out).
    async fn next(
        &mut self,
    ) -> Result<Option<std::io::Result<tributary_protocol::codec::Inbound>>, ()> {
        let until = if self.device.is_some() {
            tokio::time::Instant::now() + self.idle
        } else {
            self.hello_by
        };
        tokio::time::timeout_at(until, self.wire.next())
            .await
            .map_err(|_| ())
    }

    /// A first frame that is not a HELLO: one NACK saying why, counted, nothing stored. The
    /// caller closes the connection.
    async fn before_hello(
        &mut self,
        inbound: tributary_protocol::codec::Inbound,
    ) -> std::io::Result<()> {
        let (reason, code, text) = match inbound {
            Err(bad) => (
                "bad_frame_before_hello",
                NackCode::Malformed,
                format!("{}; the first frame must be a HELLO", bad.error),
            ),
            Ok(m) => (
                "protocol_violation",
                NackCode::ProtocolViolation,
                format!(
                    "{} before HELLO: the first frame must be a HELLO",
                    match m {
                        Message::Events(_) => "EVENTS",
                        _ => "an answer",
                    }
                ),
            ),
        };
        self.ingest.stats.record_refusal(
            crate::transport::Transport::Tcp,
            reason,
            None,
            Some(self.peer.addr),
        );
        if let Some(suppressed) = tributary_common::ratelog::allow("tcp_before_hello") {
            tracing::warn!(message = "Connection closed before HELLO; nothing stored.", peer = %self.peer.addr, reason, suppressed);
        }
        self.nack(code, text).await
    }

    /// Returns whether the session may go on.
    async fn hello(&mut self, hello: Hello) -> std::io::Result<bool> {
        if self.device.is_some() {
            self.nack(NackCode::ProtocolViolation, "HELLO sent twice".into())
                .await?;
            return Ok(true);
        }
        let supported = OLDEST_VERSION..=tributary_protocol::PROTOCOL_VERSION;
        if !supported.contains(&hello.protocol_version) {
            let text = format!(
                "protocol version {} is not supported; this gateway speaks {} to {}",
                hello.protocol_version,
                supported.start(),
                supported.end()
            );
            self.nack(NackCode::Malformed, text).await?;
            return Ok(false);
        }
        let claim = Claim {
            device_id: &hello.device_id,
            username: None,
            password: hello.password.as_deref().map(str::as_bytes),
        };
        let authority = self.ingest.authority.clone();
        match authority.authenticate(&self.peer, claim).await {
            Ok(identity) => {
                tracing::Span::current().record("device_id", hello.device_id.as_str());
                tracing::debug!(message = "Device connected over TCP.", device_id = %hello.device_id, peer = %self.peer.addr, ?identity);
                let session = hello.session.unwrap_or(0);
                self._connected = Some(self.ingest.stats.activity.connected(
                    &hello.device_id,
                    crate::transport::Transport::Tcp,
                    tributary_common::clock::now_ms(),
                ));
                self.watch = authority.watch(&identity, &self.peer).map(Arc::new);
                if hello.protocol_version >= 4 {
                    self.inbox = self
                        .ingest
                        .commands
                        .clone()
                        .map(|c| commands::inbox(c, &hello.device_id));
                }
                self.device = Some((hello.device_id, identity, session));
                Ok(true)
            }
            Err(refusal) => {
                let reason = refusal.reason();
                self.ingest.stats.record_refusal(
                    crate::transport::Transport::Tcp,
                    reason,
                    Some(&hello.device_id),
                    Some(self.peer.addr),
                );
                refusal.log("HELLO", &hello.device_id, self.peer.addr);
                let code = match refusal {
                    crate::identity::Refusal::Busy => NackCode::Busy,
                    _ => NackCode::Unauthorized,
                };
                self.nack(code, refusal.to_device()).await?;
                Ok(false)
            }
        }
    }

    /// Ends a session whose credential no longer lets it in: counted, logged, and the device
    /// told why before the connection closes.
    async fn revoked(&mut self, reason: &'static str) {
        let device = self.device.as_ref().map(|d| d.0.clone());
        self.ingest.stats.record_refusal(
            crate::transport::Transport::Tcp,
            reason,
            device.as_deref(),
            Some(self.peer.addr),
        );
        tracing::warn!(message = "Session closed: its credential no longer lets it in.", device_id = ?device, peer = %self.peer.addr, reason);
        let text = format!("session ended: {}", live::describe(reason));
        let _ = self.nack(NackCode::Unauthorized, text).await;
    }

    async fn events(&mut self, events: Vec<Event>) -> std::io::Result<()> {
        // `run` hands EVENTS here only after a HELLO: before one, [`Self::before_hello`]
        // answers and closes.
        let Some((device, identity, session)) = self.device.clone() else {
            return Ok(());
        };
        let Some(up_to_seq) = events.iter().map(|e| e.seq).max() else {
            // Every batch gets an answer, an empty one too, so a device waiting for one does
            // not hang.
            self.ingest.stats.record_refusal(
                crate::transport::Transport::Tcp,
                "empty_batch",
                Some(&device),
                Some(self.peer.addr),
            );
            return self
                .nack(
                    NackCode::InvalidEvent,
                    "empty EVENTS batch: send at least one event".into(),
                )
                .await;
        };
        let mut valid = Vec::with_capacity(events.len());
        let mut dead = Vec::new();
        let mut refused = Vec::new();
        for event in events {
            let problem = self.check(&event, &device, &identity);
            match problem {
                None => valid.push(Inbound {
                    writer: Inbound::writer_of(&event.device_id, Some(&device)),
                    event,
                    session,
                    mqtt_topic: None,
                    headers: Vec::new(),
                }),
                Some((code, reason)) => {
                    let seq = event.seq;
                    let text = format!("event seq {seq}: {reason}");
                    let payload =
                        serde_json::to_vec(&tributary_protocol::json::JsonEvent::from(event))
                            .unwrap_or_default();
                    dead.push(DeadLetter::new(
                        "tcp",
                        self.peer.addr.to_string(),
                        Some(device.clone()),
                        text.clone(),
                        &payload,
                    ));
                    refused.push(Refused { seq, code, text });
                }
            }
        }
        match self
            .ingest
            .submit(crate::transport::Transport::Tcp, valid, dead)
            .await
        {
            Ok(outcomes) => {
                let dups = outcomes
                    .iter()
                    .filter(|o| matches!(o, Appended::Duplicate))
                    .count();
                if dups > 0 {
                    tracing::debug!(message = "Retransmitted events acknowledged again.", device_id = %device, count = dups);
                }
                if self.wire.peer_version() >= 3 {
                    let answer = Answer {
                        up_to_seq,
                        stored: saturating_u32(outcomes.len() - dups),
                        duplicates: saturating_u32(dups),
                        refused,
                    };
                    return self.wire.send(&Message::Answer(answer)).await;
                }
                for Refused { code, text, .. } in refused {
                    self.nack(code, text).await?;
                }
                self.wire.send(&Message::Ack(Ack { up_to_seq })).await
            }
            Err(error) => {
                tracing::warn!(message = "Events not stored; device told to retry.", device_id = %device, %error);
                self.nack(NackCode::Busy, format!("not stored, retry later: {error}"))
                    .await
            }
        }
    }

    /// Why `event` may not be stored on this session, if it may not.
    fn check(
        &self,
        event: &Event,
        device: &str,
        identity: &Identity,
    ) -> Option<(NackCode, String)> {
        if let Identity::Device { id, .. } = identity {
            let topic = tributary_protocol::topic::device_topic(
                &event.device_id,
                event.kind(),
                tributary_protocol::topic::Encoding::Json,
            );
            if !self.ingest.authority.may_publish(identity, &topic) {
                self.ingest.stats.record_refusal(
                    crate::transport::Transport::Tcp,
                    "acl",
                    Some(id),
                    Some(self.peer.addr),
                );
                if let Some(suppressed) = tributary_common::ratelog::allow("acl") {
                    tracing::warn!(message = "Event refused by the ACL.", device_id = %id, event_device_id = %event.device_id, seq = event.seq, peer = %self.peer.addr, suppressed);
                }
                return Some((
                    NackCode::Forbidden,
                    format!(
                        "device {id:?} may not publish for device {:?} ({topic})",
                        event.device_id
                    ),
                ));
            }
        } else if event.device_id != device {
            return Some((
                NackCode::InvalidEvent,
                format!(
                    "event for device {:?} on a session of {device:?}",
                    event.device_id
                ),
            ));
        }
        event
            .validate()
            .err()
            .map(|e| (NackCode::InvalidEvent, e.to_string()))
    }

    /// A frame an authenticated device sent that does not decode: kept as a dead letter with a
    /// bounded prefix of its bytes, and none of a frame tagged HELLO (it may carry a password).
    async fn bad_frame(&mut self, bad: BadFrame) -> std::io::Result<()> {
        let reason = bad.error.to_string();
        let tag = bad.raw.get(tributary_protocol::frame::FRAME_HEADER_LEN + 1);
        let kept: &[u8] = if tag == Some(&0) {
            &[]
        } else {
            &bad.raw[..bad.raw.len().min(crate::route::DEAD_LETTER_BYTES)]
        };
        let letter = DeadLetter::new(
            "tcp",
            self.peer.addr.to_string(),
            self.device.as_ref().map(|d| d.0.clone()),
            reason.clone(),
            kept,
        );
        if let Err(error) = self
            .ingest
            .submit(crate::transport::Transport::Tcp, Vec::new(), vec![letter])
            .await
        {
            tracing::warn!(message = "Dead letter not stored.", peer = %self.peer.addr, %error);
        }
        self.nack(NackCode::Malformed, reason).await
    }

    async fn nack(&mut self, code: NackCode, text: String) -> std::io::Result<()> {
        self.wire.send(&Message::Nack(Nack { code, text })).await
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

mod commands;
pub mod config;
mod wire;

#[cfg(test)]
mod tests;
