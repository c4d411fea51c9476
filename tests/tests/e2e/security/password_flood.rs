//! A password guesser on the depot's network floods the TCP listener with HELLOs: its checks
//! run one address's share at a time, so a real device from another address is checked at
//! once, and every guess is answered and counted.

use std::time::Instant;

use super::*;

/// A HELLO for `device` with `password` from source address `from`; the gateway's one answer.
async fn hello_from(
    from: std::net::IpAddr,
    to: std::net::SocketAddr,
    device: &'static str,
    password: String,
) -> Option<Message> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::new(from, 0))
        .expect("bind the source address");
    let stream = socket.connect(to).await.expect("connect");
    let mut framed = Framed::new(stream, MessageCodec::new(1 << 16));
    framed
        .send(&Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            device_id: device.into(),
            password: Some(password.clone()),
            session: Some(1),
        }))
        .await
        .ok()?;
    if device == "env-1" && password == "pw-one" {
        framed
            .send(&Message::Events(vec![event("env-1", 1)]))
            .await
            .ok()?;
    }
    match tokio::time::timeout(Duration::from_secs(40), framed.next()).await {
        Ok(Some(Ok(Ok(m)))) => Some(m),
        _ => None,
    }
}

#[test]
fn a_password_flood_from_one_address_does_not_hold_up_a_device_from_another() {
    const GUESSES: usize = 400;
    let topics = Topics::unique("pw-flood");
    let dir = tempfile::tempdir().expect("temp dir");
    let passwd = dir.path().join("devices.passwd");
    import_passwords(&passwd, "env-1 pw-one\nenv-2 pw-two\n");
    let mut gateway = Gateway::start_with(
        None,
        &topics,
        &format!("[auth]\ncredentials = {passwd:?}\n"),
    );
    let tcp = gateway.tcp;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (answers, real, real_took) = rt.block_on(async {
        // 127.0.0.2 is loopback too: the attacker's own address.
        let attacker: std::net::IpAddr = "127.0.0.2".parse().expect("ip");
        let guesses: Vec<_> = (0..GUESSES)
            .map(|i| tokio::spawn(hello_from(attacker, tcp, "env-2", format!("guess-{i}"))))
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The real device, from 127.0.0.1, while the guesses are queued. Before, its check
        // waited behind every guess (400 argon2id checks).
        let started = Instant::now();
        let real = hello_from(
            "127.0.0.1".parse().expect("ip"),
            tcp,
            "env-1",
            "pw-one".into(),
        )
        .await;
        let real_took = started.elapsed();
        let mut answers = Vec::new();
        for g in guesses {
            answers.push(g.await.expect("task"));
        }
        (answers, real, real_took)
    });
    eprintln!("the real device was answered in {real_took:?} during a flood of {GUESSES} guesses");
    match real {
        Some(Message::Answer(a)) => assert_eq!(a.stored, 1, "{a:?}"),
        other => panic!("the real device: {other:?}"),
    }
    // Not behind the guesses: 400 argon2id checks take about 10 s on a 2-core machine; the
    // real device's check waits for at most the one guess running (51 ms measured).
    assert!(
        real_took < Duration::from_secs(5),
        "the real device waited behind the guesser: {real_took:?}"
    );
    // Every guess got an answer: refused (or busy, had its address's wait run past the budget).
    let mut refused = 0;
    let mut busy = 0;
    for answer in &answers {
        match answer {
            Some(Message::Nack(n)) if n.code == NackCode::Unauthorized => refused += 1,
            Some(Message::Nack(n)) if n.code == NackCode::Busy => busy += 1,
            other => panic!("a guess answered {other:?}"),
        }
    }
    assert_eq!(refused + busy, GUESSES);
    let stopped = gateway.stop();
    assert_eq!(
        stopped.refused("tcp/auth_busy") as usize,
        busy,
        "{}",
        stopped.stdout
    );
    assert_eq!(
        stopped.refused("tcp/auth_wrong_password") as usize,
        refused,
        "{}",
        stopped.stdout
    );
}
