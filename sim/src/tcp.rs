//! A device speaking the TCP protocol: HELLO, EVENTS batches, ACK-driven release.
//!
//! One connection, one batch at a time. Keeping unacknowledged events and resending them after
//! a reconnect is the caller's job (`device::tcp` does it for simulated devices); the gateway
//! recognises the retransmissions.

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tributary_client::command::Command;
use tributary_client::tcp::{command_result, hello_v, reply, Reply};
use tributary_protocol::codec::MessageCodec;
use tributary_protocol::{Event, Message, Nack, DEFAULT_MAX_FRAME_BYTES};

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the gateway closed the connection")]
    Closed,
    #[error("the gateway sent a frame this client cannot read: {0}")]
    BadFrame(String),
    #[error("the gateway refused: {code}: {text}")]
    Refused { code: String, text: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A byte stream to the gateway: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connected device.
pub struct TcpDevice {
    framed: Framed<Box<dyn Io>, MessageCodec>,
    /// Events the gateway refused (from ANSWERs, or NACKs from an older gateway), kept for the
    /// caller to inspect.
    pub nacks: Vec<Nack>,
    /// Commands the gateway sent (protocol 4), for the caller to obey and answer.
    pub commands: Vec<Command>,
}

impl TcpDevice {
    /// Connects and sends HELLO, with the device's password and boot session where given.
    pub async fn connect(
        addr: SocketAddr,
        device_id: &str,
        password: Option<String>,
        session: Option<u64>,
    ) -> Result<Self, ClientError> {
        Self::connect_tls(addr, None, device_id, password, session, false).await
    }

    /// [`TcpDevice::connect`], over TLS when `tls` is given (the gateway's certificate is
    /// checked for `addr`'s IP).
    pub async fn connect_tls(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        device_id: &str,
        password: Option<String>,
        session: Option<u64>,
        commands: bool,
    ) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        stream.set_nodelay(true)?;
        let stream: Box<dyn Io> = match tls {
            None => Box::new(stream),
            Some(config) => {
                let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, stream)
                    .await
                    .map_err(|source| ClientError::Tls { addr, source })?;
                Box::new(tls)
            }
        };
        let mut framed = Framed::new(stream, MessageCodec::new(DEFAULT_MAX_FRAME_BYTES));
        framed
            .send(&hello_v(device_id, password, session, commands))
            .await?;
        Ok(Self {
            framed,
            nacks: Vec::new(),
            commands: Vec::new(),
        })
    }

    /// Sends one batch and waits for the ACK that covers it; NACKs on the way are collected.
    /// A `busy` NACK is returned as an error: the batch was not stored.
    pub async fn send_batch(&mut self, events: &[Event]) -> Result<u64, ClientError> {
        self.framed.send(&Message::Events(events.to_vec())).await?;
        let wait = Duration::from_secs(30);
        loop {
            let next = tokio::time::timeout(wait, self.framed.next())
                .await
                .map_err(|_| ClientError::Timeout(wait))?;
            let message = match next {
                None => return Err(ClientError::Closed),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Err(bad))) => return Err(ClientError::BadFrame(bad.error.to_string())),
                Some(Ok(Ok(message))) => message,
            };
            match reply(message, self.framed.codec().peer_version()) {
                Reply::Settled { up_to_seq, refused } => {
                    self.nacks.extend(refused.into_iter().map(|r| Nack {
                        code: r.code,
                        text: r.text,
                    }));
                    return Ok(up_to_seq);
                }
                // An older gateway: a NACK per refused event, then the ACK.
                Reply::Refusal(nack) => self.nacks.push(nack),
                Reply::NotStored(nack) => {
                    return Err(ClientError::Refused {
                        code: nack.code.to_string(),
                        text: nack.text,
                    })
                }
                Reply::Command(c) => self.commands.push(c),
                Reply::Unexpected(what) => return Err(ClientError::BadFrame(what)),
            }
        }
    }

    /// Answers command `id` with `result` (protocol 4; the gateway does not reply).
    pub async fn answer(&mut self, id: &str, result: &[u8]) -> Result<(), ClientError> {
        self.framed.send(&command_result(id, result)).await?;
        Ok(())
    }

    /// The framed connection, for a caller that pipelines batches itself (the bench).
    pub fn into_framed(self) -> Framed<Box<dyn Io>, MessageCodec> {
        self.framed
    }

    /// Sends raw bytes (for tests of malformed input) and returns the next message.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<Option<Message>, ClientError> {
        use tokio::io::AsyncWriteExt;
        self.framed.get_mut().write_all(bytes).await?;
        match tokio::time::timeout(Duration::from_secs(10), self.framed.next()).await {
            Err(_) => Err(ClientError::Timeout(Duration::from_secs(10))),
            Ok(None) => Ok(None),
            Ok(Some(Err(e))) => Err(e.into()),
            Ok(Some(Ok(Err(bad)))) => Err(ClientError::BadFrame(bad.error.to_string())),
            Ok(Some(Ok(Ok(m)))) => Ok(Some(m)),
        }
    }
}
