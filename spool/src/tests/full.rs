//! Bounds and a full disk: the block and drop-oldest policies, a real ENOSPC, expiry.

use super::*;

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
    let expired = db.expire(tributary_common::clock::now_ms() + 1).unwrap();
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
