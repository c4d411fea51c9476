//! Connections as a resource: one address cannot take a listener's every slot, and a gateway
//! whose caps exceed the process's open-file limit says so at start.

use std::io::Write;

use super::*;

#[test]
fn one_address_holds_at_most_its_share_of_a_network_listener() {
    let topics = Topics::unique("per-address");
    // The TCP listener on every interface (reached here over loopback), anonymous devices
    // accepted from the network as the operator opted in, five connections per address.
    let mut gateway = Gateway::start_edited(
        None,
        &topics,
        "[auth]\nanonymous = \"network\"\n",
        |g, text| {
            let port = g.tcp.port();
            text.replacen(
                &format!("[tcp]\nlisten = \"127.0.0.1:{port}\"\n"),
                &format!("[tcp]\nlisten = \"0.0.0.0:{port}\"\nmax_connections_per_address = 5\n"),
                1,
            )
        },
    );
    // Before: 50 idle sockets with tcp.max_connections = 50 kept every device out.
    let held: Vec<std::net::TcpStream> = (0..5)
        .map(|_| std::net::TcpStream::connect(gateway.tcp).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut sixth = std::net::TcpStream::connect(gateway.tcp).expect("connect");
    let _ = sixth.write_all(b"");
    let (answer, closed) = read_to_close(&mut sixth, Duration::from_secs(5));
    assert!(closed, "the sixth connection from one address is closed");
    assert!(
        String::from_utf8_lossy(&answer).contains("too many connections"),
        "with a busy answer: {answer:?}"
    );
    drop(held);
    let stopped = gateway.stop();
    assert!(stopped.status.success());
    assert_eq!(
        stopped.refused("tcp/over_address_limit"),
        1,
        "{}",
        stopped.stdout
    );
}

#[test]
fn caps_beyond_the_open_file_limit_are_said_at_start() {
    let topics = Topics::unique("fd-limit");
    let mut gateway = Gateway::start_with_tcp(None, &topics, "max_connections = 100000000\n", "");
    let stopped = gateway.stop();
    assert!(stopped.status.success());
    assert!(
        stopped.stderr.contains("exceed the open-file limit")
            && stopped.stderr.contains("descriptors_needed"),
        "{}",
        stopped.stderr
    );
}
