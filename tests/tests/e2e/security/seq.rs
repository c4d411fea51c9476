//! Sequence state nobody can poison: a forged event with the highest seq there is cannot silence
//! a device that sends with a boot session; a device without sessions still has retransmissions
//! recognised and a reset counter stored; a reboot with a lower seq and a stale clock loses
//! nothing.

use super::*;

/// Event ids in the file sink's readings file.
fn sink_event_ids(gateway: &Gateway, topics: &Topics) -> Vec<String> {
    let path = gateway
        .sink_dir()
        .join(format!("{}.jsonl", topics.readings));
    std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["headers"]["event-id"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_forged_seq_cannot_silence_a_device_and_a_reboot_with_a_lower_seq_loses_nothing() {
    use tributary_sim::tcp::TcpDevice;
    let topics = Topics::unique("sec-seq");
    let mut gateway = Gateway::start(None, &topics);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let at = |device: &str, seq: u64, time_offset: u64| {
        let mut e = event(device, seq);
        e.time_ms = 1_700_000_000_000 + time_offset;
        e
    };
    rt.block_on(async {
        let send = |device: &'static str, session: Option<u64>, events: Vec<Event>| {
            let addr = gateway.tcp;
            async move {
                let mut d = TcpDevice::connect(addr, device, None, session)
                    .await
                    .expect("connect");
                d.send_batch(&events).await.expect("acknowledged");
            }
        };
        // The forged event: the highest seq there is, far in the future, no session.
        send("victim", None, vec![at("victim", u64::MAX, 10_000_000)]).await;
        // The real device sends with its boot session: nothing of it is mistaken for a
        // retransmission.
        send(
            "victim",
            Some(0x63),
            (1..=3).map(|s| at("victim", s, s)).collect(),
        )
        .await;
        // A device without sessions: a retransmission is recognised; a reset counter is
        // stored, not dropped: seqs never stored are new, and a seq stored before with another
        // time is a regression (stored, marked seq-reused).
        send(
            "legacy-1",
            None,
            (10..=12).map(|s| at("legacy-1", s, s)).collect(),
        )
        .await;
        send("legacy-1", None, vec![at("legacy-1", 11, 11)]).await;
        send(
            "legacy-1",
            None,
            (1..=2).map(|s| at("legacy-1", s, 100 + s)).collect(),
        )
        .await;
        send("legacy-1", None, vec![at("legacy-1", 12, 112)]).await;
        // A device that reboots with a stale clock and a lower seq: its new session keeps it.
        send(
            "node-2",
            Some(0xa),
            (50..=52).map(|s| at("node-2", s, 1_000 + s)).collect(),
        )
        .await;
        send(
            "node-2",
            Some(0xb),
            (1..=2).map(|s| at("node-2", s, s)).collect(),
        )
        .await;
    });
    let (code, listing) = gateway.spool_tool(&["devices"]);
    assert_eq!(code, Some(0), "{listing}");
    let legacy = listing
        .lines()
        .find(|l| l.starts_with("legacy-1"))
        .expect("legacy-1 listed");
    assert!(
        legacy.trim_end().ends_with(" 1"),
        "one regression: {legacy}"
    );
    let (code, refused) = gateway.spool_tool(&["devices", "--reset", "legacy-1"]);
    assert_ne!(
        code,
        Some(0),
        "reset must wait for the gateway to stop: {refused}"
    );
    assert!(refused.contains("in use"), "{refused}");

    let stopped = gateway.stop();
    assert!(
        stopped.stdout.contains("spool/seq_regression"),
        "{}",
        stopped.stdout
    );
    assert!(
        stopped.stderr.contains("Sequence regression"),
        "{}",
        stopped.stderr
    );
    let mut ids = sink_event_ids(&gateway, &topics);
    ids.sort();
    let mut expected: Vec<String> = [
        format!("victim:{}", u64::MAX),
        "victim:63:1".into(),
        "victim:63:2".into(),
        "victim:63:3".into(),
        "legacy-1:10".into(),
        "legacy-1:11".into(),
        "legacy-1:12".into(),
        "legacy-1:12".into(),
        "legacy-1:1".into(),
        "legacy-1:2".into(),
        "node-2:a:50".into(),
        "node-2:a:51".into(),
        "node-2:a:52".into(),
        "node-2:b:1".into(),
        "node-2:b:2".into(),
    ]
    .into();
    expected.sort();
    assert_eq!(ids, expected);

    // Stopped, the operator can reset a device's state.
    let (code, out) = gateway.spool_tool(&["devices", "--reset", "legacy-1"]);
    assert_eq!(code, Some(0), "{out}");
    let (_, listing) = gateway.spool_tool(&["devices"]);
    assert!(!listing.contains("legacy-1"), "{listing}");
}
