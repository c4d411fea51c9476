//! The TCP protocol's frames on one connection, without tokio-util's `Framed`.
//!
//! `Framed` gives every connection two 8 KiB buffers up front, whatever it is told, and an idle
//! device holds them for as long as it stays connected: at 10,000 devices that is most of the
//! gateway's memory. Here the read buffer grows as the connection layer's [`conn::read_more`]
//! grows it, and an answer is encoded into a buffer that lives only while it is written
//! ([`conn::write_answer`], within the write timeout).

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Decoder, Encoder};
use tributary_protocol::codec::{Inbound, MessageCodec};
use tributary_protocol::Message;

use crate::ingest::conn::{self, Stream};

pub(super) struct Wire {
    stream: Box<dyn Stream>,
    codec: MessageCodec,
    read: BytesMut,
}

impl Wire {
    pub(super) fn new(stream: Box<dyn Stream>, codec: MessageCodec) -> Self {
        Self {
            stream,
            codec,
            read: BytesMut::with_capacity(conn::INITIAL_READ),
        }
    }

    /// The next frame, or `None` once the device closed the connection (a partial frame left
    /// at the end is dropped with it).
    pub(super) async fn next(&mut self) -> Option<std::io::Result<Inbound>> {
        loop {
            match self.codec.decode(&mut self.read) {
                Ok(Some(item)) => return Some(Ok(item)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            match conn::read_more(&mut self.stream, &mut self.read).await {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Writes one message, in the version the device last spoke, within the write timeout.
    pub(super) async fn send(&mut self, message: &Message) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        self.codec.encode(message, &mut out)?;
        conn::write_answer(&mut self.stream, &out).await
    }

    /// The protocol version of the device's last frame.
    pub(super) fn peer_version(&self) -> u8 {
        self.codec.peer_version()
    }

    pub(super) async fn close(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}
