//! Older spools: schema migrations, the narrowed records table, salvage of a corrupt file.

use super::*;

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
    // The event still queued is known to be stored: its retransmission (same seq, same time)
    // is a duplicate after the migration too.
    let again = Record {
        timestamp_ms: 1_700_000_000_003,
        ..record("v1-dev", 3)
    };
    assert_eq!(db.append(vec![again]).unwrap()[0], Appended::Duplicate);
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
    // The leaf page of a table (type 0x0d) nearest the middle of the file: rows of `records`,
    // full of cells (not a page of the schema's empty tables, nor the sessions' last one).
    let pages = bytes.len() / page;
    let leaf = (1..pages)
        .filter(|p| bytes[p * page] == 0x0d)
        .min_by_key(|p| p.abs_diff(pages / 2))
        .expect("a table leaf page");
    let target = leaf * page;
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
