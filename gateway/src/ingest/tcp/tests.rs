//! Sessions in-process: a listener bound to port 0, real sockets, and paused time, so the
//! timeouts are tested in virtual seconds.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tributary_protocol::codec::MessageCodec;
use tributary_protocol::{Hello, Message, PROTOCOL_VERSION};

use super::TcpConfig;
use super::{serve, HELLO_TIMEOUT};
use crate::shutdown::Scope;

/// Serves TCP on a fresh loopback port; returns its address and what stops it.
async fn listening(idle: Duration) -> (std::net::SocketAddr, Scope, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ingest, _spool) = crate::ingest::local::local_ingest(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let config = TcpConfig {
        listen: Some(addr),
        tls_listen: None,
        max_frame_bytes: 4096.try_into().expect("non-zero"),
        max_connections: 8.try_into().expect("non-zero"),
        max_connections_per_address: 8.try_into().expect("non-zero"),
        idle_timeout: idle,
    };
    let scope = Scope::default();
    tokio::spawn(serve(listener, false, config, ingest, scope.clone()));
    (addr, scope, dir)
}

/// Reads until the gateway closes the connection; returns when, and what it sent.
async fn until_closed(stream: &mut TcpStream) -> (Instant, Vec<u8>) {
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got).await;
    (Instant::now(), got)
}

#[tokio::test(start_paused = true)]
async fn a_connection_without_hello_is_closed_at_the_hello_timeout_not_before() {
    let (addr, scope, _dir) = listening(Duration::from_secs(600)).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let opened = Instant::now();
    let (closed, got) = until_closed(&mut s).await;
    assert!(got.is_empty(), "closed without an answer: {got:?}");
    assert!(closed - opened >= HELLO_TIMEOUT, "{:?}", closed - opened);
    assert!(closed - opened < HELLO_TIMEOUT + Duration::from_secs(1));
    scope.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_session_silent_after_hello_is_closed_at_the_idle_timeout() {
    let idle = Duration::from_secs(42);
    let (addr, scope, _dir) = listening(idle).await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut framed = Framed::new(stream, MessageCodec::new(4096));
    let hello = Message::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        device_id: "quiet-1".into(),
        password: None,
        session: None,
    });
    framed.send(&hello).await.expect("HELLO");
    let said = Instant::now();
    assert!(framed.next().await.is_none(), "closed without an answer");
    let silent = Instant::now() - said;
    assert!(
        silent >= idle && silent < idle + Duration::from_secs(1),
        "{silent:?}"
    );
    scope.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_device_that_stops_reading_its_answers_is_closed_after_the_write_timeout() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let (ingest, _spool) = crate::ingest::local::local_ingest(dir.path());
    // A pipe with room for a few answers only, and a device that never reads them.
    let (mut device, gateway) = tokio::io::duplex(256);
    let accepted = crate::ingest::conn::Accepted {
        stream: Box::new(gateway),
        peer: crate::identity::Peer {
            addr: "127.0.0.1:40001".parse().expect("address"),
            loopback_listener: true,
            certificate: None,
            chain: None,
        },
    };
    let session = tokio::spawn(super::session(
        accepted,
        4096,
        Duration::from_secs(600),
        ingest,
        tokio_util::sync::CancellationToken::new(),
    ));
    let hello = Message::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        device_id: "deaf-1".into(),
        password: None,
        session: None,
    });
    let mut frames = tributary_protocol::encode_frame(&hello).expect("HELLO");
    let empty = tributary_protocol::encode_frame(&Message::Events(Vec::new())).expect("EVENTS");
    for _ in 0..50 {
        frames.extend_from_slice(&empty);
    }
    let started = Instant::now();
    // The writes stall too once the gateway stops reading; the device stays open throughout.
    let writer = tokio::spawn(async move {
        let _ = device.write_all(&frames).await;
        device
    });
    session.await.expect("the session ends");
    drop(writer);
    let took = Instant::now() - started;
    assert!(
        took >= crate::ingest::conn::WRITE_TIMEOUT && took < crate::ingest::conn::WRITE_TIMEOUT * 2,
        "closed after {took:?}"
    );
}
