//! The connection layer every device listener shares: accept, cap, TLS, hand over.
//!
//! [`serve`] runs one accept loop for one bound listener, whatever the protocol behind it:
//! - **Cap.** At most `max_connections` sessions per listener hold a slot, and on a listener
//!   not bound to loopback at most `max_connections_per_address` of them come from one address
//!   (a loopback listener only hears this machine). A connection over either cap is handed to
//!   the protocol's `busy` answer (CONNACK "server unavailable", NACK busy), with at most
//!   [`MAX_REFUSING`] such answers under way; beyond that it is closed at once. Either way it
//!   is counted (`over_limit`, `over_address_limit`).
//! - **TLS.** On a TLS listener the handshake runs in the connection's own task, bounded by
//!   [`HANDSHAKE_TIMEOUT`], with the acceptor current at accept time (so a SIGHUP reload of the
//!   certificates applies to new connections only). A failed handshake is counted by reason
//!   (`tls_cert_expired`, `tls_cert_revoked`, `tls_handshake`, ...) and logged, rate-limited.
//! - **Hand-over.** The protocol session gets a boxed byte stream and a [`Peer`]: the address,
//!   whether the listener is on loopback, and the device id a client certificate proves.
//!
//! - **Shutdown.** `scope.stop` ends the accept loop, and sessions finish what they are handling;
//!   `scope.abort` (the shutdown deadline) drops every connection task where it stands, so a peer
//!   that stopped reading cannot hold the gateway past `shutdown_grace_ms`.
//!
//! Listeners take already-bound sockets, so sessions can be tested in-process on port 0.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::identity::{Authority, Peer};
use crate::observe::stats::Stats;
use crate::shutdown::Scope;

/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an answer to a device may take to write: a peer that stops reading is closed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most over-limit connections being answered "busy" at once, per listener.
pub const MAX_REFUSING: usize = 64;
/// A session's read buffer's first size: an idle device holds it for as long as it waits.
pub const INITIAL_READ: usize = 512;

/// A byte stream to a device: plain TCP or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Reads what has arrived into `buf`, which starts at [`INITIAL_READ`] and doubles whenever a
/// read filled it: an idle device costs little, a stream of large frames few reads, and nothing
/// is reserved for what a header only announces. Both protocols read this way.
pub async fn read_more(stream: &mut Box<dyn Stream>, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.len() == buf.capacity() {
        buf.reserve(buf.capacity().max(INITIAL_READ));
    }
    stream.read_buf(buf).await
}

/// How long a closing connection is drained: time for the peer to read the last answer.
pub const CLOSE_DRAIN: Duration = Duration::from_secs(1);

/// Closes the way that lets the peer read what was sent last: shut the write side (FIN), then
/// read and discard what the peer still sends until it closes too, for at most [`CLOSE_DRAIN`]
/// and 64 KiB. Closing with unread bytes in the receive buffer would send a reset, and a
/// client still writing would lose the unread DISCONNECT that says why.
pub async fn close_gracefully(stream: &mut Box<dyn Stream>) {
    let drained = async {
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < 64 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_DRAIN, drained).await;
}

/// Writes an answer to a device and flushes it, within [`WRITE_TIMEOUT`]: a device that stops
/// reading its answers gets `TimedOut`, and its session ends.
pub async fn write_answer(stream: &mut Box<dyn Stream>, bytes: &[u8]) -> std::io::Result<()> {
    let written = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, written).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the device stopped reading its answers",
        )),
    }
}

/// An accepted connection, ready for its protocol.
pub struct Accepted {
    pub stream: Box<dyn Stream>,
    pub peer: Peer,
}

/// What a listener is.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// `tcp` or `mqtt`: the label refusals are counted under.
    pub transport: crate::transport::Transport,
    pub tls: bool,
    pub max_connections: usize,
    /// Connections one address may hold (not applied on a loopback listener).
    pub max_per_address: usize,
}

/// Accepts connections until `scope.stop` is cancelled. `session` serves a connection that has
/// a slot; `busy` answers one over the cap. Both run as tasks tracked by `scope.tasks`, and are
/// dropped where they stand when `scope.abort` is cancelled (the shutdown deadline).
pub async fn serve<S, SF, B, BF>(
    listener: TcpListener,
    spec: Spec,
    authority: Arc<Authority>,
    stats: Stats,
    scope: Scope,
    session: S,
    busy: B,
) where
    S: Fn(Accepted) -> SF + Send + Sync + 'static,
    SF: Future<Output = ()> + Send + 'static,
    B: Fn(Accepted) -> BF + Send + Sync + 'static,
    BF: Future<Output = ()> + Send + 'static,
{
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    let slots = Arc::new(Semaphore::new(spec.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let session = Arc::new(session);
    let busy = Arc::new(busy);
    loop {
        let accepted = tokio::select! {
            _ = scope.stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(error) => {
                // Typically EMFILE: back off briefly rather than spin.
                tracing::warn!(message = "Accepting a connection failed.", transport = spec.transport.as_str(), %error);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let held = if loopback {
            None
        } else {
            per_address.enter(addr.ip(), spec.max_per_address)
        };
        let over_address = !loopback && held.is_none();
        let slot = if over_address {
            None
        } else {
            slots.clone().try_acquire_owned().ok()
        };
        let refusal = match slot {
            Some(_) => None,
            None => {
                let reason = if over_address {
                    "over_address_limit"
                } else {
                    "over_limit"
                };
                stats.record_refusal(spec.transport, reason, None, Some(addr));
                match refusing.clone().try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    // Too many refusals under way already: close at once.
                    Err(_) => continue,
                }
            }
        };
        let acceptor = if spec.tls {
            match authority.tls_acceptor() {
                Some(a) => Some(a),
                None => continue,
            }
        } else {
            None
        };
        let (authority, stats, session, busy) = (
            authority.clone(),
            stats.clone(),
            session.clone(),
            busy.clone(),
        );
        // Every log line of the connection carries its transport and peer, and the device id
        // once authenticated (the sessions record it).
        let span = tracing::info_span!(
            "conn",
            transport = spec.transport.as_str(),
            peer = %addr,
            device_id = tracing::field::Empty
        );
        let abort = scope.abort.clone();
        let connection = async move {
            let _counted = stats.connection(spec.transport);
            let _held = held;
            let Some(accepted) =
                // Boxed: a TLS handshake's state is large, and needed only until it is done.
                Box::pin(handshake(stream, addr, loopback, acceptor, &authority, &stats, spec))
                    .await
            else {
                return;
            };
            match (slot, refusal) {
                (Some(_slot), _) => session(accepted).await,
                (None, _permit) => busy(accepted).await,
            }
        };
        scope.tasks.spawn(
            async move {
                tokio::select! {
                    _ = abort.cancelled() => {
                        tracing::debug!(message = "Connection dropped at the shutdown deadline.");
                    }
                    _ = connection => {}
                }
            }
            .instrument(span),
        );
    }
    tracing::info!(
        message = "Listener stopped accepting.",
        transport = spec.transport.as_str(),
        tls = spec.tls
    );
}

/// How many connections each address holds on one listener.
#[derive(Default)]
struct PerAddress(Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

/// One connection counted against its address; uncounted when dropped.
struct Held {
    table: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl PerAddress {
    /// Counts a connection from `ip`, unless it holds `max` already.
    fn enter(&self, ip: std::net::IpAddr, max: usize) -> Option<Held> {
        let mut table = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = table.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Held {
            table: self.0.clone(),
            ip,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = table.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                table.remove(&self.ip);
            }
        }
    }
}

async fn handshake(
    stream: TcpStream,
    addr: std::net::SocketAddr,
    loopback_listener: bool,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    authority: &Authority,
    stats: &Stats,
    spec: Spec,
) -> Option<Accepted> {
    let Some(acceptor) = acceptor else {
        return Some(Accepted {
            stream: Box::new(stream),
            peer: Peer {
                addr,
                loopback_listener,
                certificate: None,
                chain: None,
            },
        });
    };
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            let reason = handshake_reason(&error);
            stats.record_refusal(spec.transport, reason, None, Some(addr));
            if let Some(suppressed) = tributary_common::ratelog::allow(reason) {
                tracing::warn!(message = "TLS handshake failed.", transport = spec.transport.as_str(), peer = %addr, reason, %error, suppressed);
            }
            return None;
        }
        Err(_) => {
            stats.record_refusal(spec.transport, "tls_timeout", None, Some(addr));
            if let Some(suppressed) = tributary_common::ratelog::allow("tls_timeout") {
                tracing::warn!(message = "TLS handshake timed out.", transport = spec.transport.as_str(), peer = %addr, timeout = ?HANDSHAKE_TIMEOUT, suppressed);
            }
            return None;
        }
    };
    let chain = tls.get_ref().1.peer_certificates();
    let certificate = chain
        .and_then(|chain| chain.first())
        .map(|leaf| crate::identity::tls::identity_of(leaf, authority.identity_from()));
    let chain = chain.map(|c| c.iter().map(|c| c.clone().into_owned()).collect());
    Some(Accepted {
        stream: Box::new(tls),
        peer: Peer {
            addr,
            loopback_listener,
            certificate,
            chain,
        },
    })
}

/// The counter label for a failed handshake.
fn handshake_reason(error: &std::io::Error) -> &'static str {
    use rustls::CertificateError as C;
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            C::Expired | C::ExpiredContext { .. } => "tls_cert_expired",
            C::Revoked => "tls_cert_revoked",
            C::UnknownIssuer => "tls_cert_unknown_issuer",
            C::NotValidYet | C::NotValidYetContext { .. } => "tls_cert_not_yet_valid",
            _ => "tls_cert_invalid",
        },
        Some(rustls::Error::NoCertificatesPresented) => "tls_cert_missing",
        _ => "tls_handshake",
    }
}
