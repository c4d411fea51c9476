use proptest::prelude::*;

use super::*;
use crate::record::EventId;
use crate::testing::Tmpfs;

mod commands;
mod full;
mod migrate;

pub(super) fn record(device: &str, seq: u64) -> Record {
    Record {
        topic: format!("t.{}", seq % 3),
        key: device.as_bytes().to_vec(),
        value: format!("{{\"seq\":{seq}}}").into_bytes(),
        timestamp_ms: seq as i64,
        headers: vec![("event-id".into(), format!("{device}:{seq}"))],
        origin: Some(EventId {
            device_id: device.into(),
            session: 0,
            seq,
            writer: None,
        }),
        event: None,
        mqtt_topic: None,
    }
}

fn open(dir: &tempfile::TempDir) -> SpoolDb {
    SpoolDb::open(&dir.path().join("spool.db")).unwrap()
}

#[test]
fn appended_records_read_back_in_order_with_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    let records = vec![record("a", 1), record("b", 1), record("a", 2)];
    let out = db.append(records.clone()).unwrap();
    assert!(out.iter().all(|o| matches!(o, Appended::Stored { .. })));
    let rows = db.fetch(0, 10).unwrap();
    assert_eq!(
        rows.into_iter().map(|r| r.record).collect::<Vec<_>>(),
        records
    );
}

#[test]
fn a_retransmission_is_recognised_even_after_it_was_forwarded_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    db.append(vec![record("a", 1), record("a", 2)]).unwrap();
    let ids: Vec<i64> = db.fetch(0, 10).unwrap().iter().map(|r| r.id).collect();
    db.ack(&ids).unwrap();
    drop(db);
    let mut db = open(&dir);
    let out = db.append(vec![record("a", 2), record("a", 3)]).unwrap();
    assert_eq!(out[0], Appended::Duplicate);
    assert!(matches!(out[1], Appended::Stored { .. }));
    assert_eq!(db.fetch(0, 10).unwrap().len(), 1);
}

#[test]
fn a_duplicate_within_one_batch_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    let out = db.append(vec![record("a", 5), record("a", 5)]).unwrap();
    assert_eq!(out[1], Appended::Duplicate);
}

#[test]
fn dead_letters_have_no_identity_and_are_never_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    let mut dead = record("a", 1);
    dead.origin = None;
    db.append(vec![dead.clone(), dead]).unwrap();
    assert_eq!(db.fetch(0, 10).unwrap().len(), 2);
}

#[test]
fn stats_count_rows_and_bytes_per_topic() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    db.append((1..=6).map(|s| record("a", s)).collect())
        .unwrap();
    let stats = db.stats().unwrap();
    assert_eq!(stats.rows, 6);
    assert_eq!(stats.topics.len(), 3);
    assert_eq!(stats.topics["t.0"].rows, 2);
    assert!(stats.bytes > 0 && stats.oldest_received_ms.is_some());
}

#[test]
fn a_spool_from_a_newer_gateway_is_refused_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    assert!(matches!(
        SpoolDb::open(&path),
        Err(SpoolError::TooNew { found: 99, .. })
    ));
}

pub(super) fn spool_config(
    dir: &tempfile::TempDir,
    max_events: usize,
    wait: std::time::Duration,
) -> crate::SpoolConfig {
    crate::SpoolConfig {
        path: dir.path().join("spool.db"),
        group_commit_max_events: std::num::NonZeroUsize::new(max_events).unwrap(),
        group_commit_wait: wait,
        limits: Limits::unlimited(),
        forget_devices_after: std::time::Duration::from_secs(30 * 24 * 3600),
    }
}

#[tokio::test]
async fn the_writer_thread_commits_concurrent_appends_and_answers_each() {
    let dir = tempfile::tempdir().unwrap();
    let config = spool_config(&dir, 100, std::time::Duration::from_millis(2));
    let (spool, recovery) = Spool::open(&config, ()).unwrap();
    assert!(recovery.is_none());
    let mut tasks = Vec::new();
    for d in 0..20 {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            spool
                .append(vec![
                    record(&format!("d{d}"), 1),
                    record(&format!("d{d}"), 2),
                ])
                .await
        }));
    }
    for t in tasks {
        let out = t.await.unwrap().unwrap();
        assert_eq!(out.len(), 2);
    }
    assert_eq!(spool.stats().await.unwrap().rows, 40);
    let rows = spool.fetch(0, 100).await.unwrap();
    spool
        .ack(rows.iter().map(|r| r.id).collect())
        .await
        .unwrap();
    assert_eq!(spool.stats().await.unwrap().rows, 0);
    spool.close().await;
}

/// Checkpoints run beside the writer, and the WAL still restarts: under a steady stream of
/// appends and acks it stays near its backstop instead of growing with everything written, and
/// the rows reach the database file while the gateway runs, not only when it closes.
#[tokio::test]
async fn checkpoints_keep_the_wal_bounded_while_the_writer_commits() {
    let dir = tempfile::tempdir().unwrap();
    let config = spool_config(&dir, 1000, std::time::Duration::ZERO);
    let (spool, _) = Spool::open(&config, ()).unwrap();
    let wal = dir.path().join("spool.db-wal");
    let mut largest_wal = 0;
    // 60 MiB written in all, in 600 groups; about half of it acknowledged as it goes.
    for round in 0..600u64 {
        let records = (0..100)
            .map(|i| big_record("d", round * 100 + i + 1))
            .collect();
        spool.append(records).await.unwrap();
        if round % 2 == 1 {
            let rows = spool.fetch(0, 100).await.unwrap();
            spool
                .ack(rows.iter().map(|r| r.id).collect())
                .await
                .unwrap();
        }
        largest_wal = largest_wal.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    let db_size = std::fs::metadata(dir.path().join("spool.db"))
        .unwrap()
        .len();
    let backstop = super::checkpoint::BACKSTOP_PAGES as u64 * 4096;
    assert!(
        largest_wal < backstop + (4 << 20),
        "WAL grew to {largest_wal} bytes (backstop {backstop})"
    );
    assert!(
        db_size > 20 << 20,
        "only {db_size} bytes reached the database file while the writer ran"
    );
    assert_eq!(spool.stats().await.unwrap().rows, 30_000);
    spool.close().await;
}

fn limited(dir: &tempfile::TempDir, max_bytes: u64, policy: FullPolicy) -> SpoolDb {
    let limits = Limits {
        max_bytes,
        policy,
        ..Limits::unlimited()
    };
    SpoolDb::open_with(&dir.path().join("spool.db"), limits).unwrap()
}

/// A record with a 1 KiB value.
fn big_record(device: &str, seq: u64) -> Record {
    Record {
        value: vec![b'x'; 1024],
        ..record(device, seq)
    }
}

/// Operations of the model check.
#[derive(Debug, Clone)]
enum Op {
    Append(Vec<(u8, u64)>),
    /// Read the first n rows after the read cursor.
    Read(usize),
    /// Acknowledge the oldest n rows read and not yet acknowledged.
    Ack(usize),
    /// Close and reopen the database (a clean restart; the read cursor starts over).
    Reopen,
    /// Abandon the connection without closing it, as a killed process does, and open anew.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::vec((0u8..4, 0u64..20), 1..6).prop_map(Op::Append),
        3 => (1usize..8).prop_map(Op::Read),
        3 => (1usize..8).prop_map(Op::Ack),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The spool against a simple in-memory model: a queue of (device, seq) plus every
    /// (device, seq) ever stored (the record's time is its seq, and seqs stay inside the
    /// de-duplication window). Stored rows come back in order, an event is refused as a
    /// duplicate exactly when an identical one was stored, acknowledged
    /// rows never come back, and nothing unacknowledged is lost across a clean reopen or a
    /// crash. Failing cases are saved by proptest under `gateway/proptest-regressions/` and
    /// replayed first on every run; commit that file when it appears.
    #[test]
    fn the_spool_behaves_like_its_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut db = open(&dir);
        let mut queue: Vec<(i64, String, u64)> = Vec::new();
        let mut stored: std::collections::BTreeSet<(String, u64)> = Default::default();
        let mut cursor = 0i64;
        let mut read: Vec<i64> = Vec::new();
        for op in ops {
            match op {
                Op::Append(items) => {
                    let records: Vec<Record> = items.iter().map(|(d, s)| record(&format!("d{d}"), *s)).collect();
                    let out = db.append(records.clone()).unwrap();
                    for (r, o) in records.iter().zip(out) {
                        let id = r.origin.as_ref().unwrap();
                        let dup = stored.contains(&(id.device_id.clone(), id.seq));
                        match o {
                            Appended::Duplicate => prop_assert!(dup, "{id} wrongly a duplicate"),
                            Appended::Stored { id: row } => {
                                prop_assert!(!dup, "{id} stored twice");
                                stored.insert((id.device_id.clone(), id.seq));
                                queue.push((row, id.device_id.clone(), id.seq));
                            }
                            Appended::Replaced => prop_assert!(false, "no rules here"),
                        }
                    }
                }
                Op::Read(n) => {
                    let rows = db.fetch(cursor, n).unwrap();
                    let expected: Vec<_> = queue.iter().filter(|q| q.0 > cursor).take(n).collect();
                    prop_assert_eq!(rows.len(), expected.len());
                    for (row, exp) in rows.iter().zip(expected) {
                        let origin = row.record.origin.as_ref().unwrap();
                        prop_assert_eq!((row.id, &origin.device_id, origin.seq), (exp.0, &exp.1, exp.2));
                        read.push(row.id);
                        cursor = row.id;
                    }
                }
                Op::Ack(n) => {
                    let n = n.min(read.len());
                    let ids: Vec<i64> = read.drain(..n).collect();
                    db.ack(&ids).unwrap();
                    queue.retain(|q| !ids.contains(&q.0));
                }
                Op::Reopen => {
                    drop(db);
                    db = open(&dir);
                    cursor = 0;
                    read.clear();
                }
                Op::Crash => {
                    // No close, no checkpoint: the next open must replay the WAL.
                    std::mem::forget(db);
                    db = open(&dir);
                    cursor = 0;
                    read.clear();
                }
            }
        }
        let left: Vec<i64> = db.fetch(0, 10_000).unwrap().iter().map(|r| r.id).collect();
        prop_assert_eq!(left, queue.iter().map(|q| q.0).collect::<Vec<_>>());
    }
}

#[test]
fn acks_delete_exactly_the_acknowledged_rows_in_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    db.append((1..=10).map(|s| record("a", s)).collect())
        .unwrap();
    let ids: Vec<i64> = db.fetch(0, 10).unwrap().iter().map(|r| r.id).collect();
    // Out of order, with a gap and a repeat.
    db.ack(&[ids[4], ids[0], ids[1], ids[2], ids[7], ids[1]])
        .unwrap();
    let left: Vec<i64> = db.fetch(0, 10).unwrap().iter().map(|r| r.id).collect();
    assert_eq!(left, [ids[3], ids[5], ids[6], ids[8], ids[9]]);
    let total: u64 = (1..=10).map(|s| payload_size(&record("a", s))).sum();
    let kept: u64 = [4, 6, 7, 9, 10]
        .iter()
        .map(|&s| payload_size(&record("a", s)))
        .sum();
    assert!(total > kept);
    assert_eq!(db.bytes(), kept, "the bytes freed are counted");
}

#[test]
fn the_forwarders_fetch_is_planned_once_whatever_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    db.append((1..=10).map(|s| record("a", s)).collect())
        .unwrap();
    let reader = SpoolDb::open_read_only(&dir.path().join("spool.db")).unwrap();
    for limit in 1..=6 {
        let rows = rows::fetch_range(&reader, 0, 10, limit).unwrap();
        assert_eq!(rows.len(), limit);
    }
    let fetch = reader.prepare_cached(rows::FETCH_RANGE).unwrap();
    assert_eq!(
        fetch.get_status(rusqlite::StatementStatus::RePrepare),
        0,
        "a new LIMIT made SQLite parse and plan the cached fetch again"
    );
}

#[test]
fn a_source_offset_commits_with_its_records_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let size = payload_size(&record("a", 1));
    let mut db = limited(&dir, 2 * size, FullPolicy::Block);
    let state = |n: u8| SourceState {
        source: "file:logs:1".into(),
        state: vec![n],
    };
    let outcome = db
        .commit_group(&[vec![record("a", 1)]], &[], &[state(1)])
        .unwrap();
    assert!(outcome.appended.is_ok());
    assert_eq!(db.sources("file:logs:").unwrap(), [state(1)]);
    // Full: the records are refused, and the offset stays where the stored lines end.
    let outcome = db
        .commit_group(&[vec![record("a", 2), record("a", 3)]], &[], &[state(2)])
        .unwrap();
    assert!(matches!(outcome.appended, Err(SpoolError::Full { .. })));
    assert_eq!(db.sources("file:").unwrap(), [state(1)]);
    assert!(db.sources("file:other:").unwrap().is_empty());
    // An empty state forgets the source.
    let forget = SourceState {
        source: "file:logs:1".into(),
        state: Vec::new(),
    };
    db.commit_group(&[vec![]], &[], &[forget]).unwrap();
    assert!(db.sources("file:").unwrap().is_empty());
}

#[test]
fn a_row_is_stamped_with_the_clock_at_commit_and_ages_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    let t0 = 1_800_000_000_000;
    let _frozen = tributary_common::clock::freeze(t0);
    db.append(vec![record("a", 1)]).unwrap();
    tributary_common::clock::advance(90_000);
    db.append(vec![record("a", 2)]).unwrap();
    let rows = db.fetch(0, 10).unwrap();
    let received: Vec<i64> = rows.iter().map(|r| r.received_ms).collect();
    assert_eq!(received, vec![t0, t0 + 90_000]);
    assert_eq!(db.stats().unwrap().oldest_received_ms, Some(t0));
    // Older than a minute at the frozen now: only the first row goes.
    let expired = db.expire(t0 + 90_000 - 60_000).unwrap();
    assert_eq!(expired.values().sum::<u64>(), 1);
    assert_eq!(db.fetch(0, 10).unwrap().len(), 1);
}

#[test]
fn row_ids_never_repeat_across_reopens_even_when_the_queue_emptied() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    let instance = db.instance().unwrap();
    assert!(instance > 0);
    db.append(vec![record("a", 1), record("a", 2)]).unwrap();
    let ids: Vec<i64> = db.fetch(0, 10).unwrap().iter().map(|r| r.id).collect();
    db.ack(&ids).unwrap();
    drop(db);
    let mut db = open(&dir);
    assert_eq!(
        db.instance().unwrap(),
        instance,
        "the same file, the same instance"
    );
    db.append(vec![record("a", 3)]).unwrap();
    let next = db.fetch(0, 10).unwrap()[0].id;
    assert!(
        next > *ids.iter().max().unwrap(),
        "id {next} after {ids:?} were forwarded and the spool reopened"
    );
    let other = tempfile::tempdir().unwrap();
    assert_ne!(open(&other).instance().unwrap(), instance);
}
