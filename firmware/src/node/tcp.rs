//! The TCP transport: blocking, one connection, HELLO then EVENTS batches, ACK-driven.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tributary_client::command::Command;
use tributary_client::tcp::{hello_v, reply, Reply};
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
    /// Commands the gateway sent (protocol 4), for the node to obey and answer.
    pub commands: Vec<Command>,
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
            commands: Vec::new(),
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
        let hello = hello_v(
            &self.device_id,
            self.credentials.password.clone(),
            self.credentials.boot,
            self.credentials.commands,
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
                Reply::Command(c) => self.commands.push(c),
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

impl TcpTransport {
    /// Answers command `id` (protocol 4; the gateway does not reply).
    pub fn answer(&mut self, id: &str, result: &[u8]) -> std::io::Result<()> {
        if self.stream.is_none() {
            return Err(std::io::ErrorKind::NotConnected.into());
        }
        self.write(&tributary_client::tcp::command_result(id, result))
    }
}

impl AnyTransport {
    /// The commands that came with the last exchanges.
    pub fn take_commands(&mut self) -> Vec<Command> {
        match self {
            AnyTransport::Tcp(t) => std::mem::take(&mut t.commands),
            AnyTransport::Mqtt(t) => std::mem::take(&mut t.commands),
            AnyTransport::Mqtt5(t) => std::mem::take(&mut t.commands),
        }
    }

    /// Answers command `id`: over TCP at once, over MQTT with the next batch. An answer that
    /// cannot go is logged; the gateway sends the command again on the next connection.
    pub fn answer(&mut self, id: &str, result: &[u8]) {
        match self {
            AnyTransport::Tcp(t) => {
                if let Err(error) = t.answer(id, result) {
                    tracing::warn!(message = "A command's answer could not be sent; the gateway sends the command again.", command_id = %id, %error);
                }
            }
            AnyTransport::Mqtt(t) => t.answer(id, result),
            AnyTransport::Mqtt5(t) => t.answer(id, result),
        }
    }
}
