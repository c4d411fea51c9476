//! TCP ingest: the compact framed protocol ([`tributary_protocol::message`]).
//!
//! One task per connection. The session is HELLO, then EVENTS batches; each batch is committed
//! to the spool and only then answered with ACK (the batch's highest seq). Within a batch,
//! events that fail validation are kept as dead letters and reported with a NACK
//! (`invalid_event`) naming their seq; the batch's ACK then also releases them, since they are
//! stored where a person can inspect them and resending would not help. A frame that cannot be
//! decoded gets a NACK (`malformed`) and is kept as a dead letter; after a bad length or CRC the
//! connection is closed, since frame boundaries are lost. A spool failure gets a NACK (`busy`)
//! and no ACK: the device keeps the events and resends.

use std::net::SocketAddr;

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tributary_protocol::codec::{BadFrame, MessageCodec};
use tributary_protocol::{Ack, Event, Hello, Message, Nack, NackCode, PROTOCOL_VERSION};

use super::Ingest;
use crate::config::TcpConfig;
use crate::route::DeadLetter;
use crate::spool::Appended;

/// Serves connections on `listener` until `stop` is cancelled; connection tasks are tracked.
pub async fn serve(
    listener: TcpListener,
    config: TcpConfig,
    ingest: Ingest,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let conn = Connection {
                    framed: Framed::new(stream, MessageCodec::new(config.max_frame_bytes.get())),
                    peer,
                    device: None,
                    token: config.token.clone(),
                    ingest: ingest.clone(),
                };
                let stop = stop.clone();
                tasks.spawn(async move {
                    if let Err(error) = conn.run(stop).await {
                        tracing::debug!(message = "TCP connection ended with an error.", %peer, %error);
                    }
                });
            }
            Err(error) => {
                // Typically EMFILE: back off briefly rather than spin.
                tracing::warn!(message = "Accepting a TCP connection failed.", %error);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    tracing::info!(message = "TCP ingest stopped accepting.");
}

struct Connection {
    framed: Framed<TcpStream, MessageCodec>,
    peer: SocketAddr,
    device: Option<String>,
    token: Option<String>,
    ingest: Ingest,
}

impl Connection {
    async fn run(mut self, stop: CancellationToken) -> std::io::Result<()> {
        loop {
            let inbound = tokio::select! {
                _ = stop.cancelled() => break,
                next = self.framed.next() => next,
            };
            let Some(inbound) = inbound else { break };
            match inbound? {
                Ok(Message::Hello(hello)) => {
                    if !self.hello(hello).await? {
                        break;
                    }
                }
                Ok(Message::Events(events)) => self.events(events).await?,
                Ok(Message::Ack(_) | Message::Nack(_)) => {
                    self.nack(
                        NackCode::ProtocolViolation,
                        "devices send HELLO and EVENTS only".into(),
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
        let _ = SinkExt::<&Message>::close(&mut self.framed).await;
        Ok(())
    }

    /// Returns whether the session may go on.
    async fn hello(&mut self, hello: Hello) -> std::io::Result<bool> {
        if self.device.is_some() {
            self.nack(NackCode::ProtocolViolation, "HELLO sent twice".into())
                .await?;
            return Ok(true);
        }
        if hello.protocol_version != PROTOCOL_VERSION {
            let text = format!(
                "protocol version {} is not supported; this gateway speaks {PROTOCOL_VERSION}",
                hello.protocol_version
            );
            self.nack(NackCode::Malformed, text).await?;
            return Ok(false);
        }
        if let Some(expected) = &self.token {
            if hello.token.as_deref() != Some(expected.as_str()) {
                tracing::warn!(message = "Device refused: wrong or missing token.", device_id = %hello.device_id, peer = %self.peer);
                self.nack(NackCode::Unauthorized, "wrong or missing token".into())
                    .await?;
                return Ok(false);
            }
        }
        tracing::debug!(message = "Device connected over TCP.", device_id = %hello.device_id, peer = %self.peer);
        self.device = Some(hello.device_id);
        Ok(true)
    }

    async fn events(&mut self, events: Vec<Event>) -> std::io::Result<()> {
        let Some(device) = self.device.clone() else {
            return self
                .nack(NackCode::ProtocolViolation, "EVENTS before HELLO".into())
                .await;
        };
        let Some(up_to_seq) = events.iter().map(|e| e.seq).max() else {
            return Ok(());
        };
        let mut valid = Vec::with_capacity(events.len());
        let mut dead = Vec::new();
        let mut refusals = Vec::new();
        for event in events {
            let problem = if event.device_id != device {
                Some(format!(
                    "event for device {:?} on a session of {device:?}",
                    event.device_id
                ))
            } else {
                event.validate().err().map(|e| e.to_string())
            };
            match problem {
                None => valid.push(event.into()),
                Some(reason) => {
                    let text = format!("event seq {}: {reason}", event.seq);
                    let payload =
                        serde_json::to_vec(&tributary_protocol::json::JsonEvent::from(event))
                            .unwrap_or_default();
                    dead.push(DeadLetter::new(
                        "tcp",
                        self.peer.to_string(),
                        Some(device.clone()),
                        text.clone(),
                        &payload,
                    ));
                    refusals.push(text);
                }
            }
        }
        match self.ingest.submit(valid, dead).await {
            Ok(outcomes) => {
                let dups = outcomes
                    .iter()
                    .filter(|o| matches!(o, Appended::Duplicate))
                    .count();
                if dups > 0 {
                    tracing::debug!(message = "Retransmitted events acknowledged again.", device_id = %device, count = dups);
                }
                for text in refusals {
                    self.nack(NackCode::InvalidEvent, text).await?;
                }
                self.framed.send(&Message::Ack(Ack { up_to_seq })).await
            }
            Err(error) => {
                tracing::warn!(message = "Events not stored; device told to retry.", device_id = %device, %error);
                self.nack(NackCode::Busy, format!("not stored, retry later: {error}"))
                    .await
            }
        }
    }

    async fn bad_frame(&mut self, bad: BadFrame) -> std::io::Result<()> {
        let reason = bad.error.to_string();
        let letter = DeadLetter::new(
            "tcp",
            self.peer.to_string(),
            self.device.clone(),
            reason.clone(),
            &bad.raw,
        );
        if let Err(error) = self.ingest.submit(Vec::new(), vec![letter]).await {
            tracing::warn!(message = "Dead letter not stored.", peer = %self.peer, %error);
        }
        self.nack(NackCode::Malformed, reason).await
    }

    async fn nack(&mut self, code: NackCode, text: String) -> std::io::Result<()> {
        self.framed.send(&Message::Nack(Nack { code, text })).await
    }
}
