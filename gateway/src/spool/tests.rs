use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::record::EventId;

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
) -> crate::config::SpoolConfig {
    crate::config::SpoolConfig {
        path: dir.path().join("spool.db"),
        group_commit_max_events: std::num::NonZeroUsize::new(max_events).unwrap(),
        group_commit_wait: wait,
        limits: Limits::unlimited(),
        forget_devices_after: std::time::Duration::from_secs(30 * 24 * 3600),
        rules: Default::default(),
    }
}

#[tokio::test]
async fn the_writer_thread_commits_concurrent_appends_and_answers_each() {
    let dir = tempfile::tempdir().unwrap();
    let config = spool_config(&dir, 100, std::time::Duration::from_millis(2));
    let (spool, recovery) = Spool::open(&config, crate::stats::Stats::default()).unwrap();
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
    let (spool, _) = Spool::open(&config, crate::stats::Stats::default()).unwrap();
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

#[test]
fn when_full_the_block_policy_refuses_appends_but_still_commits_acks() {
    let dir = tempfile::tempdir().unwrap();
    let size = payload_size(&record("a", 1));
    let mut db = limited(&dir, 3 * size, FullPolicy::Block);
    db.append(vec![record("a", 1), record("a", 2), record("a", 3)])
        .unwrap();
    let err = db.append(vec![record("a", 4)]).unwrap_err();
    assert!(matches!(err, SpoolError::Full { .. }), "{err}");
    assert!(err.to_string().contains("max_bytes"), "{err}");
    let first = db.fetch(0, 1).unwrap()[0].id;
    let outcome = db
        .commit_group(&[vec![record("a", 4)]], &[first], &[])
        .unwrap();
    assert!(
        outcome.appended.is_ok(),
        "the ack in the same group made room"
    );
    assert_eq!(db.fetch(0, 10).unwrap().len(), 3);
    assert_eq!(db.max_seq("a", 0), Some(4));
}

/// A tmpfs of `bytes` mounted on a temporary directory, unmounted on drop. Needs root, as the
/// end-to-end full-disk tests do (`tests/run` runs as root on CI).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(bytes: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(mounted, "mounting a tmpfs failed: this test needs root");
        Self(dir)
    }

    /// Free bytes, as statvfs says.
    fn free(&self) -> u64 {
        limits::free_on_disk(&self.0.path().join("spool.db"))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

/// A record with a 1 KiB value.
fn big_record(device: &str, seq: u64) -> Record {
    Record {
        value: vec![b'x'; 1024],
        ..record(device, seq)
    }
}

#[test]
fn on_a_real_enospc_the_acks_still_commit_only_the_new_events_are_refused_and_it_recovers() {
    let fs = Tmpfs::mount(4 << 20);
    let path = fs.0.path().join("spool.db");
    // min_free_bytes = 0: nothing but the disk itself stops the append.
    let mut db = SpoolDb::open_with(&path, Limits::unlimited()).unwrap();
    db.append((1..=200).map(|s| big_record("a", s)).collect())
        .unwrap();
    let first_100: Vec<i64> = db.fetch(0, 100).unwrap().iter().map(|r| r.id).collect();
    // Leave a little more than the next batch's payload: the pre-check lets it through, and
    // SQLite's pages, index entries and WAL frames then run into a real ENOSPC.
    let batch: Vec<Record> = (201..=400).map(|s| big_record("a", s)).collect();
    let payload: u64 = batch.iter().map(payload_size).sum();
    let filler = fs.0.path().join("filler");
    let left = fs.free();
    std::fs::write(&filler, vec![0u8; (left - payload - 4096) as usize]).unwrap();

    let outcome = db
        .commit_group(std::slice::from_ref(&batch), &first_100, &[])
        .expect("the group's acks commit");
    match &outcome.appended {
        Err(SpoolError::Full { reason }) => {
            assert!(reason.contains("disk"), "{reason}")
        }
        other => panic!("expected the new events refused as full, got {other:?}"),
    }
    drop(db);
    let mut db = SpoolDb::open_with(&path, Limits::unlimited()).unwrap();
    let rows = db.fetch(0, 1000).unwrap();
    assert_eq!(
        rows.len(),
        100,
        "the acknowledged rows are gone, the rest kept"
    );
    assert_eq!(rows[0].record.origin.as_ref().map(|o| o.seq), Some(101));
    assert_eq!(
        db.max_seq("a", 0),
        Some(200),
        "nothing of the refused batch"
    );

    // Space comes back: the same batch is taken without anything else done.
    std::fs::remove_file(&filler).unwrap();
    let out = db.append(batch).unwrap();
    assert!(out.iter().all(|o| matches!(o, Appended::Stored { .. })));
    assert_eq!(db.fetch(0, 1000).unwrap().len(), 300);
}

#[test]
fn when_full_drop_oldest_deletes_the_oldest_rows_and_counts_them_per_topic() {
    let dir = tempfile::tempdir().unwrap();
    let size = payload_size(&record("a", 1));
    let mut db = limited(&dir, 3 * size, FullPolicy::DropOldest);
    db.append(vec![record("a", 1), record("a", 2), record("a", 3)])
        .unwrap();
    let outcome = db
        .commit_group(&[vec![record("a", 4), record("a", 5)]], &[], &[])
        .unwrap();
    assert!(outcome.appended.is_ok());
    assert_eq!(outcome.dropped.values().sum::<u64>(), 2);
    let seqs: Vec<u64> = db
        .fetch(0, 10)
        .unwrap()
        .iter()
        .map(|r| r.record.origin.as_ref().unwrap().seq)
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    let stats = db.stats().unwrap();
    let discarded: u64 = stats.discarded.values().map(|m| m[DROPPED_FULL]).sum();
    assert_eq!(discarded, 2);
    assert!(db.bytes() <= 3 * size);
}

#[test]
fn rows_older_than_the_cutoff_expire_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    db.append(vec![record("a", 1), record("a", 2)]).unwrap();
    assert!(
        db.expire(0).unwrap().is_empty(),
        "nothing is older than the epoch"
    );
    let expired = db.expire(crate::record::now_ms() + 1).unwrap();
    assert_eq!(expired.values().sum::<u64>(), 2);
    assert!(db.fetch(0, 10).unwrap().is_empty());
    assert_eq!(db.bytes(), 0);
    assert_eq!(
        db.stats()
            .unwrap()
            .discarded
            .values()
            .map(|m| m[EXPIRED])
            .sum::<u64>(),
        2
    );
}

/// A copy of the schema 1 spool under `tests/fixtures`, in a directory of its own.
fn v1_fixture() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/spool-v1.db"),
        &path,
    )
    .unwrap();
    (dir, path)
}

#[test]
fn a_spool_of_the_first_schema_migrates_and_keeps_its_rows_and_devices() {
    let (_dir, path) = v1_fixture();
    let mut db = SpoolDb::open(&path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(schema::version(&conn).unwrap(), schema::SCHEMA_VERSION);
    let rows = db.fetch(0, 10).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2].record.headers[0].1, "v1-dev:3");
    assert_eq!(
        db.append(vec![record("v1-dev", 3)]).unwrap()[0],
        Appended::Duplicate
    );
    assert!(
        db.stats().unwrap().discarded.is_empty(),
        "the v2 table exists"
    );
    assert!(
        !has_autoincrement(&conn),
        "a short queue is rebuilt at once"
    );
    let Appended::Stored { id } = db.append(vec![record("v1-dev", 4)]).unwrap()[0] else {
        panic!("stored");
    };
    assert!(id > rows[2].id, "new ids follow the old ones: {id}");
    let again = db.fetch(rows[2].id, 10).unwrap();
    assert_eq!(again[0].record.headers, record("v1-dev", 4).headers);
}

fn has_autoincrement(conn: &rusqlite::Connection) -> bool {
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'records'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    sql.contains("AUTOINCREMENT")
}

#[test]
fn a_long_old_queue_keeps_its_table_until_it_is_short_and_ids_never_meet_old_ones() {
    let (_dir, path) = v1_fixture();
    {
        // A schema 1 queue longer than a start rebuilds, whose AUTOINCREMENT once reached
        // 1,000,000.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {})
             INSERT INTO records (topic, key, value, timestamp_ms, headers, received_ms)
             SELECT 'old', X'6b', X'76', i, '[[\"n\",\"v\"]]', i FROM n;
             INSERT INTO records (id, topic, key, value, timestamp_ms, headers, received_ms)
             VALUES (1000000, 'old', X'6b', X'76', 0, '[]', 0);
             DELETE FROM records WHERE id = 1000000;",
            schema::NARROW_MAX_ROWS
        ))
        .unwrap();
    }
    let mut db = SpoolDb::open(&path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert!(has_autoincrement(&conn), "too long to copy at this start");
    assert_eq!(schema::version(&conn).unwrap(), schema::SCHEMA_VERSION);
    let Appended::Stored { id } = db.append(vec![record("new", 1)]).unwrap()[0] else {
        panic!("stored");
    };
    assert!(
        id > 1_000_000,
        "above every id AUTOINCREMENT handed out: {id}"
    );
    let queued = db.fetch(0, 20_000).unwrap();
    assert_eq!(queued[3].record.headers, vec![("n".into(), "v".into())]);
    assert_eq!(queued.last().unwrap().record, record("new", 1));

    // Quarantine the new row, forward the rest: the next start finds a short queue.
    db.quarantine(id, "test").unwrap();
    db.ack(&queued.iter().map(|r| r.id).collect::<Vec<_>>())
        .unwrap();
    drop(db);
    let mut db = SpoolDb::open(&path).unwrap();
    assert!(!has_autoincrement(&conn), "rebuilt once the queue is short");
    let Appended::Stored { id: next } = db.append(vec![record("new", 2)]).unwrap()[0] else {
        panic!("stored");
    };
    assert!(
        next > id,
        "above the quarantined row's id: {next} after {id}"
    );
    assert_eq!(db.quarantine(next, "test").unwrap(), Some("t.2".into()));
    assert_eq!(tools::quarantined(&path).unwrap().len(), 2);
}

#[test]
fn a_corrupt_spool_is_moved_aside_and_its_readable_rows_salvaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    {
        let mut db = SpoolDb::open(&path).unwrap();
        for chunk in 0..20u64 {
            db.append((1..=50).map(|s| record("a", chunk * 50 + s)).collect())
                .unwrap();
        }
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
    }
    // Damage a page in the middle of the file.
    let mut bytes = std::fs::read(&path).unwrap();
    let page = 4096;
    let target = (bytes.len() / page / 2) * page;
    for b in &mut bytes[target + 100..target + 400] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();

    assert!(
        recover::check(&path).unwrap().is_some(),
        "quick_check sees it"
    );
    let (mut db, recovery) = recover::open_checked(&path, Limits::unlimited()).unwrap();
    let recovery = recovery.expect("a recovery happened");
    assert!(recovery.moved_to.exists(), "the corrupt file is kept");
    assert!(
        recovery.salvaged_rows > 0 && recovery.salvaged_rows < 1000,
        "{recovery:?}"
    );
    assert_eq!(
        db.fetch(0, 2000).unwrap().len() as u64,
        recovery.salvaged_rows
    );
    assert!(
        recover::check(&path).unwrap().is_none(),
        "the new spool is healthy"
    );
    // De-duplication survived: the highest seq is still known.
    assert_eq!(
        db.append(vec![record("a", 1000)]).unwrap()[0],
        Appended::Duplicate
    );
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

    /// The spool against a simple in-memory model: a queue of (device, seq) plus the highest
    /// seq per device. Stored rows come back in order, duplicates never enter, acknowledged
    /// rows never come back, and nothing unacknowledged is lost across a clean reopen or a
    /// crash. Failing cases are saved by proptest under `gateway/proptest-regressions/` and
    /// replayed first on every run; commit that file when it appears.
    #[test]
    fn the_spool_behaves_like_its_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut db = open(&dir);
        let mut queue: Vec<(i64, String, u64)> = Vec::new();
        let mut max_seq: BTreeMap<String, u64> = BTreeMap::new();
        let mut cursor = 0i64;
        let mut read: Vec<i64> = Vec::new();
        for op in ops {
            match op {
                Op::Append(items) => {
                    let records: Vec<Record> = items.iter().map(|(d, s)| record(&format!("d{d}"), *s)).collect();
                    let out = db.append(records.clone()).unwrap();
                    for (r, o) in records.iter().zip(out) {
                        let id = r.origin.as_ref().unwrap();
                        let dup = max_seq.get(&id.device_id).is_some_and(|&m| id.seq <= m);
                        match o {
                            Appended::Duplicate => prop_assert!(dup, "{id} wrongly a duplicate"),
                            Appended::Stored { id: row } => {
                                prop_assert!(!dup, "{id} stored twice");
                                max_seq.insert(id.device_id.clone(), id.seq);
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

fn rule_set(toml_text: &str) -> crate::rules::RuleSet {
    crate::config::Config::parse(toml_text, std::path::Path::new("t.toml"))
        .unwrap()
        .spool
        .rules
}

/// A routed reading with its event attached, as ingest hands it to a spool with rules.
fn reading(device: &str, seq: u64, value: f64) -> Record {
    let event = tributary_protocol::Event {
        device_id: device.into(),
        seq,
        time_ms: 1_700_000_000_000 + seq * 1000,
        body: tributary_protocol::Body::Reading(tributary_protocol::Reading {
            values: vec![tributary_protocol::SensorValue {
                name: "t".into(),
                value,
                unit: "Cel".into(),
            }],
        }),
    };
    let routes = crate::config::Config::parse("", std::path::Path::new("t.toml"))
        .unwrap()
        .routes;
    crate::route::Router::new(routes)
        .unwrap()
        .keeping_events(true)
        .event(event, 0, None)
        .unwrap()
}

const DEADBAND: &str = "[[rules]]\nname = \"db\"\ntype = \"deadband\"\nfield = \"values.t\"\nabsolute = 1.0\ntopic = \"out\"\n";

#[test]
fn rule_states_survive_a_reopen_in_one_row_per_device_and_reset_when_the_rule_changes() {
    let dir = tempfile::tempdir().unwrap();
    let derived = |db: &SpoolDb| {
        db.fetch(0, 100)
            .unwrap()
            .iter()
            .filter(|r| r.record.topic == "out")
            .count()
    };
    let mut db = open(&dir);
    db.set_rules(rule_set(DEADBAND)).unwrap();
    db.append(vec![reading("a", 1, 20.0), reading("b", 1, 20.0)])
        .unwrap();
    assert_eq!(
        derived(&db),
        2,
        "each device's first value passes the deadband"
    );
    drop(db);
    let rows: i64 = rusqlite::Connection::open(dir.path().join("spool.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM device_rule_state", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 2, "one row per device");
    // Reopened with the same rule: 20.5 is inside the band of the remembered 20.
    let mut db = open(&dir);
    db.set_rules(rule_set(DEADBAND)).unwrap();
    db.append(vec![reading("a", 2, 20.5)]).unwrap();
    assert_eq!(derived(&db), 2);
    drop(db);
    // The rule changed (a narrower band): its state starts afresh, so 20.6 passes.
    let mut db = open(&dir);
    db.set_rules(rule_set(&DEADBAND.replace("1.0", "0.2")))
        .unwrap();
    db.append(vec![reading("a", 3, 20.6)]).unwrap();
    assert_eq!(derived(&db), 3);
}

#[test]
fn schema_v5_rule_state_rows_move_into_device_rows() {
    let dir = tempfile::tempdir().unwrap();
    let set = rule_set(DEADBAND);
    let version = set.rules()[0].version.clone();
    let mut db = open(&dir);
    db.set_rules(set.clone()).unwrap();
    db.append(vec![reading("a", 1, 20.0)]).unwrap();
    drop(db);
    // Write a's state as schema v5 kept it, and take the v7 row away.
    let conn = rusqlite::Connection::open(dir.path().join("spool.db")).unwrap();
    let bytes: Vec<u8> = conn
        .query_row(
            "SELECT states FROM device_rule_state WHERE device_id = 'a'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // A format 2 row: its two-byte lead, then the entries. A deadband's state has the same
    // bytes in format 1, which schema v5 wrote.
    let entries: Vec<(String, String, crate::rules::State)> =
        postcard::from_bytes(&bytes[2..]).unwrap();
    let state = postcard::to_allocvec(&entries[0].2).unwrap();
    conn.execute(
        "INSERT INTO rule_state (rule, device_id, version, state) VALUES ('db', 'a', ?1, ?2)",
        rusqlite::params![version, state],
    )
    .unwrap();
    conn.execute("DELETE FROM device_rule_state", []).unwrap();
    drop(conn);
    let mut db = open(&dir);
    db.set_rules(set).unwrap();
    // The moved state still knows 20: 20.5 is inside the band.
    db.append(vec![reading("a", 2, 20.5)]).unwrap();
    let out = db
        .fetch(0, 100)
        .unwrap()
        .iter()
        .filter(|r| r.record.topic == "out")
        .count();
    assert_eq!(out, 1);
    drop(db);
    let conn = rusqlite::Connection::open(dir.path().join("spool.db")).unwrap();
    let old: i64 = conn
        .query_row("SELECT count(*) FROM rule_state", [], |r| r.get(0))
        .unwrap();
    assert_eq!(old, 0, "moved, not kept twice");
}

#[test]
fn a_commit_that_fails_after_the_rules_ran_leaves_their_states_as_committed() {
    let fs = Tmpfs::mount(4 << 20);
    let path = fs.0.path().join("spool.db");
    let mut db = SpoolDb::open_with(&path, Limits::unlimited()).unwrap();
    db.set_rules(rule_set(DEADBAND)).unwrap();
    db.append(vec![reading("a", 1, 20.0)]).unwrap();
    // Every reading of this batch is a change the deadband passes: the rules run and emit,
    // then SQLite runs into a real ENOSPC and the transaction rolls back.
    let batch: Vec<Record> = (2..=400)
        .map(|s| {
            let mut r = reading("a", s, 30.0 + (s % 2) as f64 * 10.0);
            r.value.resize(1024, b' ');
            r
        })
        .collect();
    let payload: u64 = batch.iter().map(payload_size).sum();
    let filler = fs.0.path().join("filler");
    std::fs::write(&filler, vec![0u8; (fs.free() - payload - 4096) as usize]).unwrap();
    let outcome = db.commit_group(std::slice::from_ref(&batch), &[], &[]);
    assert!(
        matches!(
            outcome,
            Ok(GroupOutcome {
                appended: Err(SpoolError::Full { .. }),
                ..
            })
        ),
        "the batch is refused for lack of room"
    );
    std::fs::remove_file(&filler).unwrap();
    // The deadband still remembers 20 (not the refused batch's 30 or 40, and not nothing):
    // 20.5 is inside its band.
    db.append(vec![reading("a", 2, 20.5)]).unwrap();
    let rows = db.fetch(0, 1000).unwrap();
    let derived = rows.iter().filter(|r| r.record.topic == "out").count();
    assert_eq!(rows.len(), 3, "readings 1 and 2, and what 1 derived");
    assert_eq!(derived, 1, "only the first reading passed the deadband");
}
