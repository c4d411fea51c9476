//! The TCP protocol's frames on one connection, without tokio-util's `Framed`.
//!
//! `Framed` gives every connection two 8 KiB buffers up front, whatever it is told, and an idle
//! device holds them for as long as it stays connected: at 10,000 devices that is most of the
//! gateway's memory. Here the read buffer starts at [`INITIAL`] bytes and doubles only when a
//! read filled it, and an answer is encoded into a buffer that lives only while it is written.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};
use tributary_protocol::codec::{Inbound, MessageCodec};
use tributary_protocol::Message;

use crate::ingest::conn::Stream;

/// The read buffer's first size.
const INITIAL: usize = 512;

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
            read: BytesMut::with_capacity(INITIAL),
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
            if self.read.len() == self.read.capacity() {
                self.read.reserve(self.read.capacity().max(INITIAL));
            }
            match self.stream.read_buf(&mut self.read).await {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Writes one message, in the version the device last spoke.
    pub(super) async fn send(&mut self, message: &Message) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        self.codec.encode(message, &mut out)?;
        self.stream.write_all(&out).await?;
        self.stream.flush().await
    }

    /// The protocol version of the device's last frame.
    pub(super) fn peer_version(&self) -> u8 {
        self.codec.peer_version()
    }

    pub(super) async fn close(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}
