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
    // Before: 50 idle sockets with tcp.max_connections = 50 kept every device out. Six from
    // one address: at least one is turned away at once (more if the start-up probe's
    // connection was still being counted), and never more than five are held.
    let mut sockets: Vec<std::net::TcpStream> = (0..6)
        .map(|_| std::net::TcpStream::connect(gateway.tcp).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let mut turned_away = 0;
    for s in &mut sockets {
        let _ = s.write_all(b"");
        let (answer, closed) = read_to_close(s, Duration::from_millis(400));
        if closed {
            assert!(
                String::from_utf8_lossy(&answer).contains("too many connections"),
                "a busy answer: {answer:?}"
            );
            turned_away += 1;
        }
    }
    assert!(
        (1..=2).contains(&turned_away),
        "{turned_away} of 6 turned away; at most 5 held"
    );
    drop(sockets);
    let stopped = gateway.stop();
    assert!(stopped.status.success());
    assert_eq!(
        stopped.refused("tcp/over_address_limit"),
        turned_away,
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
