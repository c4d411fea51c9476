//! Binding device listeners with a backlog sized for fleets.
//!
//! A fleet comes back all at once: after a gateway restart or a network outage thousands of
//! devices reconnect within seconds. `TcpListener::bind` asks for a backlog of 1024; when the
//! accept queue overflows, Linux drops the handshake's last ACK, the device believes it is
//! connected, and its first frame meets a reset (seen with `config/sim-10k.toml`: 9 of 10,000
//! devices). A backlog of 4096 (the kernel caps it at `net.core.somaxconn`) absorbs such storms.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Connections the kernel may queue before `accept`.
pub const BACKLOG: u32 = 4096;

/// Binds `addr` with [`BACKLOG`] and `SO_REUSEADDR` (a restart does not wait out TIME_WAIT).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}
