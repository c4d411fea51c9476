//! The TCP transport: blocking, one connection, HELLO then EVENTS batches, ACK-driven.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tributary_client::tcp::{hello, reply, Reply};
use tributary_protocol::{
    decode_frame_versioned, encode_frame, Event, FrameHeader, Message, DEFAULT_MAX_FRAME_BYTES,
    FRAME_HEADER_LEN,
};

use super::link::Credentials;
use crate::device::Transport;

const TIMEOUT: Duration = Duration::from_secs(10);

pub struct TcpTransport {
    addr: SocketAddr,
    device_id: String,
    credentials: Credentials,
    stream: Option<Box<dyn ReadWrite>>,
}

/// A blocking byte stream to the gateway: plain TCP or TLS.
trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

impl TcpTransport {
    pub fn new(addr: SocketAddr, device_id: String, credentials: Credentials) -> Self {
        Self {
            addr,
            device_id,
            credentials,
            stream: None,
        }
    }

    fn write(&mut self, message: &Message) -> std::io::Result<()> {
        let bytes = encode_frame(message).map_err(std::io::Error::other)?;
        let stream = self
            .stream
            .as_mut()
            .ok_or(std::io::ErrorKind::NotConnected)?;
        stream.write_all(&bytes)
    }

    /// The next message, with the protocol version of its frame.
    fn read(&mut self) -> std::io::Result<(Message, u8)> {
        let stream = self
            .stream
            .as_mut()
            .ok_or(std::io::ErrorKind::NotConnected)?;
        let mut frame = vec![0u8; FRAME_HEADER_LEN];
        stream.read_exact(&mut frame)?;
        let header = FrameHeader::parse(&frame, DEFAULT_MAX_FRAME_BYTES)
            .map_err(std::io::Error::other)?
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        frame.resize(header.frame_len(), 0);
        stream.read_exact(&mut frame[FRAME_HEADER_LEN..])?;
        decode_frame_versioned(&frame, DEFAULT_MAX_FRAME_BYTES)
            .map(|(m, _, version)| (m, version))
            .map_err(std::io::Error::other)
    }
}

impl Transport for TcpTransport {
    type Error = std::io::Error;

    fn connect(&mut self) -> std::io::Result<()> {
        let stream = TcpStream::connect_timeout(&self.addr, TIMEOUT)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        stream.set_nodelay(true)?;
        self.stream = Some(match &self.credentials.tls {
            None => Box::new(stream),
            Some(tls) => {
                let conn =
                    rustls::ClientConnection::new(tls.config.clone(), tls.server_name.clone())
                        .map_err(std::io::Error::other)?;
                Box::new(rustls::StreamOwned::new(conn, stream))
            }
        });
        let hello = hello(
            &self.device_id,
            self.credentials.password.clone(),
            self.credentials.boot,
        );
        self.write(&hello).inspect_err(|_| self.stream = None)
    }

    fn send(&mut self, events: &[Event]) -> std::io::Result<u64> {
        let result = self.exchange(events);
        if result.is_err() {
            self.stream = None;
        }
        result
    }
}

impl TcpTransport {
    fn exchange(&mut self, events: &[Event]) -> std::io::Result<u64> {
        self.write(&Message::Events(events.to_vec()))?;
        loop {
            let (message, version) = self.read()?;
            match reply(message, version) {
                Reply::Settled { up_to_seq, refused } => {
                    for r in &refused {
                        tracing::warn!(message = "The gateway refused an event.", seq = r.seq, code = %r.code, text = %r.text);
                    }
                    return Ok(up_to_seq);
                }
                Reply::Refusal(nack) => {
                    tracing::warn!(message = "The gateway refused an event.", code = %nack.code, text = %nack.text);
                }
                Reply::NotStored(nack) => {
                    return Err(std::io::Error::other(format!(
                        "the gateway stored nothing of the batch: {}: {}",
                        nack.code, nack.text
                    )))
                }
                // The node takes no commands yet; its HELLO still says protocol 4.
                Reply::Command(c) => {
                    tracing::warn!(message = "A command arrived, but the node agent takes none yet; not answered.", command_id = %c.id, name = %c.name);
                }
                Reply::Unexpected(what) => return Err(std::io::Error::other(what)),
            }
        }
    }
}

/// The transport `config/node.toml` chose.
pub enum AnyTransport {
    Tcp(TcpTransport),
    Mqtt(Box<super::mqtt::MqttTransport<super::mqtt::V311>>),
    Mqtt5(Box<super::mqtt::MqttTransport<super::mqtt5::V5>>),
}

impl Transport for AnyTransport {
    type Error = std::io::Error;

    fn connect(&mut self) -> std::io::Result<()> {
        match self {
            AnyTransport::Tcp(t) => t.connect(),
            AnyTransport::Mqtt(t) => t.connect(),
            AnyTransport::Mqtt5(t) => t.connect(),
        }
    }

    fn send(&mut self, events: &[Event]) -> std::io::Result<u64> {
        match self {
            AnyTransport::Tcp(t) => t.send(events),
            AnyTransport::Mqtt(t) => t.send(events),
            AnyTransport::Mqtt5(t) => t.send(events),
        }
    }
}
