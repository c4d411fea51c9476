//! A full disk, for real: the spool on a small tmpfs that is filled during load, under both
//! policies. The gateway never exits, says what is wrong, and recovers by itself.

use tributary_protocol::Event;
use tributary_sim::tcp::{ClientError, TcpDevice};
use tributary_tests::gateway::{Gateway, Topics};
use tributary_tests::{free_port, SmallFs};

const MIB: u64 = 1024 * 1024;

fn batch(device: &str, first_seq: u64, n: u64) -> Vec<Event> {
    (first_seq..first_seq + n)
        .map(|s| tributary_sim::generate::event(0, device, s, 1_700_000_000_000 + s, false))
        .collect()
}

/// A gateway whose spool lives on `fs` and that cannot forward (Kafka unreachable), so
/// everything accepted stays in the spool.
fn gateway_on(fs: &SmallFs, topics: &Topics, policy: &str) -> Gateway {
    gateway_leaving(fs, topics, policy, 2 * MIB)
}

/// [`gateway_on`] with `spool.min_free_bytes = min_free`.
fn gateway_leaving(fs: &SmallFs, topics: &Topics, policy: &str, min_free: u64) -> Gateway {
    let unreachable = format!("127.0.0.1:{}", free_port());
    let extra = format!(
        "[spool]\npath = \"{}/spool.db\"\nmin_free_bytes = {min_free}\nwhen_full = \"{policy}\"\n",
        fs.path().display(),
    );
    Gateway::start_with(Some(&unreachable), topics, &extra)
}

fn spool_stats(gateway: &Gateway, spool: &std::path::Path) -> serde_json::Value {
    let (code, out) =
        gateway.spool_tool(&["stats", "--json", "--path", &spool.display().to_string()]);
    assert_eq!(code, Some(0), "{out}");
    serde_json::from_str(&out).expect("stats --json")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_with_the_block_policy_refuses_with_busy_and_recovers_when_space_frees() {
    let fs = SmallFs::mount(8 * MIB);
    let topics = Topics::unique("full-block");
    let mut gateway = gateway_on(&fs, &topics, "block");
    let mut device = TcpDevice::connect(gateway.tcp, "full-1", None, None)
        .await
        .unwrap();
    let mut seq = 1;
    for _ in 0..10 {
        assert_eq!(
            device.send_batch(&batch("full-1", seq, 50)).await.unwrap(),
            seq + 49
        );
        seq += 50;
    }

    let filler = fs.fill_leaving(MIB);
    let refused = device.send_batch(&batch("full-1", seq, 50)).await;
    match refused {
        Err(ClientError::Refused { code, text }) => {
            assert_eq!(code, "busy");
            assert!(text.contains("min_free_bytes"), "{text}");
        }
        other => panic!("expected NACK busy, got {other:?}"),
    }
    assert!(
        gateway.is_running(),
        "the gateway never exits on a full disk"
    );

    std::fs::remove_file(filler).unwrap();
    assert_eq!(
        device.send_batch(&batch("full-1", seq, 50)).await.unwrap(),
        seq + 49,
        "accepted again once space was freed"
    );
    let stats = spool_stats(&gateway, &fs.path().join("spool.db"));
    assert_eq!(
        stats["rows"], 550,
        "every acknowledged event is in the spool: {stats}"
    );
    assert!(gateway.log().contains("Spool full"), "the log says why");
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_enospc_with_min_free_bytes_0_refuses_with_busy_and_recovers_by_itself() {
    let fs = SmallFs::mount(8 * MIB);
    let topics = Topics::unique("enospc");
    let mut gateway = gateway_leaving(&fs, &topics, "block", 0);
    let mut device = TcpDevice::connect(gateway.tcp, "enospc-1", None, None)
        .await
        .unwrap();
    assert_eq!(
        device.send_batch(&batch("enospc-1", 1, 500)).await.unwrap(),
        500
    );
    // Room for the next batch's payload and little more: nothing stops it before SQLite
    // writes, and SQLite then meets the real ENOSPC.
    let next = batch("enospc-1", 501, 500);
    // (The payload is key plus JSON value; the rows also hold topics, headers and index
    // entries, and the WAL frames them in pages.)
    let payload: usize = next
        .iter()
        .map(|e| {
            let json = tributary_protocol::json::JsonEvent::from(e.clone());
            e.device_id.len() + serde_json::to_vec(&json).map_or(0, |v| v.len())
        })
        .sum();
    let filler = fs.fill_leaving(payload as u64 * 11 / 10);
    match device.send_batch(&next).await {
        Err(ClientError::Refused { code, text }) => {
            assert_eq!(code, "busy");
            assert!(text.contains("disk full during"), "a real ENOSPC: {text}");
        }
        other => panic!("expected NACK busy, got {other:?}"),
    }
    assert!(gateway.is_running(), "the gateway never exits on ENOSPC");
    std::fs::remove_file(filler).unwrap();
    assert_eq!(
        device.send_batch(&next).await.unwrap(),
        1000,
        "accepted again once space was freed, with nothing else done"
    );
    let stats = spool_stats(&gateway, &fs.path().join("spool.db"));
    assert_eq!(
        stats["rows"], 1000,
        "every acknowledged event is kept: {stats}"
    );
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_with_drop_oldest_keeps_accepting_and_counts_what_it_dropped() {
    let fs = SmallFs::mount(8 * MIB);
    let topics = Topics::unique("full-drop");
    let mut gateway = gateway_on(&fs, &topics, "drop_oldest");
    let mut device = TcpDevice::connect(gateway.tcp, "full-2", None, None)
        .await
        .unwrap();
    let mut seq = 1;
    for _ in 0..10 {
        device.send_batch(&batch("full-2", seq, 50)).await.unwrap();
        seq += 50;
    }
    fs.fill_leaving(2 * MIB + 256 * 1024);
    // Far more than the space left: every batch is still accepted.
    for _ in 0..80 {
        assert_eq!(
            device.send_batch(&batch("full-2", seq, 50)).await.unwrap(),
            seq + 49
        );
        seq += 50;
    }
    assert!(gateway.is_running());
    let stats = spool_stats(&gateway, &fs.path().join("spool.db"));
    let dropped = stats["discarded"][&topics.readings]["dropped_full"]
        .as_u64()
        .unwrap_or(0);
    let rows = stats["rows"].as_u64().unwrap_or(0);
    assert!(dropped > 0, "the oldest were dropped: {stats}");
    assert_eq!(
        rows + dropped,
        seq - 1,
        "every event is either kept or counted: {stats}"
    );
    let (_, newest) = gateway.spool_tool(&[
        "inspect",
        "--path",
        &fs.path().join("spool.db").display().to_string(),
        "--limit",
        "100000",
    ]);
    let last = newest
        .lines()
        .rfind(|l| l.starts_with('{'))
        .unwrap_or_default();
    assert!(
        last.contains(&format!("full-2:{}", seq - 1)),
        "the newest are kept: {last}"
    );
    assert!(
        gateway.log().contains("dropped"),
        "the log says what was dropped"
    );
    let stopped = gateway.stop();
    assert!(stopped.status.success());
    assert!(stopped.stdout.contains(&topics.readings));
}
