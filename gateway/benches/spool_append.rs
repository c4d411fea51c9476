//! Durable append throughput: Tributary's spool (writer thread, group commit, WAL, every reply
//! after an fdatasync of the WAL) beside a plain rusqlite batched insert with
//! `synchronous=FULL`, on the same disk, in rounds that alternate the two.
//!
//! `cargo bench -p tributary-gateway --bench spool_append`
//!
//! The spool is driven the way the gateway drives it: many connections, each appending a small
//! batch and waiting for its reply. The baseline inserts the same number of rows in
//! transactions of as many rows as the spool made durable per fdatasync, so both sync the disk
//! about as often, and the ratio shows what the spool costs beyond SQLite itself
//! (de-duplication, headers, the thread hops, replies) and what it gains by syncing one commit
//! while building the next (the spool's `sync` module).
//!
//! A third run inserts rows of the spool's own shape (its table, its columns, headers as the
//! spool stores them) the plain way: SQLite's own cost for what the spool must keep, so the
//! table shows how much of the gap is the row and how much the spool's code.

mod common;

use std::num::NonZeroUsize;
use std::path::Path;
use std::time::{Duration, Instant};

use tributary_gateway::observe::stats::Stats;
use tributary_spool::record::{EventId, Record};
use tributary_spool::SpoolConfig;
use tributary_spool::{Limits, Spool};

const CONNECTIONS: usize = 64;
const PER_CALL: usize = 10;

fn record(device: usize, seq: u64, size: usize) -> Record {
    Record {
        topic: "bench".into(),
        key: format!("dev-{device}").into_bytes(),
        value: vec![b'x'; size],
        timestamp_ms: 1_700_000_000_000,
        headers: vec![("event-id".into(), format!("dev-{device}:{seq}"))],
        origin: Some(EventId {
            device_id: format!("dev-{device}"),
            session: 0,
            seq,
            writer: None,
        }),
        event: None,
        mqtt_topic: None,
    }
}

struct Run {
    events: u64,
    elapsed: Duration,
    commits: u64,
    /// fdatasyncs of the WAL (the plain runs sync at each commit).
    syncs: u64,
}

fn spool_run(dir: &Path, size: usize, total: usize) -> Run {
    let config = SpoolConfig {
        path: dir.join("spool.db"),
        group_commit_max_events: NonZeroUsize::new(1000).unwrap_or(NonZeroUsize::MIN),
        group_commit_wait: Duration::ZERO,
        limits: Limits::unlimited(),
        forget_devices_after: std::time::Duration::from_secs(30 * 24 * 3600),
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (spool, _) = Spool::open(&config, Stats::default()).expect("open spool");
        let per_conn = total / CONNECTIONS;
        let elapsed = common::drive(&spool, CONNECTIONS, PER_CALL, per_conn, move |c, seq| {
            Some(record(c, seq, size))
        })
        .await;
        let (commits, syncs) = (spool.commits(), spool.syncs());
        spool.close().await;
        Run {
            events: (per_conn * CONNECTIONS) as u64,
            elapsed,
            commits,
            syncs,
        }
    })
}

/// The plain batched insert: three columns, `per_tx` rows a transaction.
fn plain_run(dir: &Path, size: usize, total: usize, per_tx: usize) -> Run {
    let conn = rusqlite::Connection::open(dir.join("plain.db")).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, key BLOB, value BLOB, ts INTEGER);",
    )
    .expect("schema");
    let value = vec![b'x'; size];
    batched(
        conn,
        total,
        per_tx,
        "INSERT INTO t (key, value, ts) VALUES (?1, ?2, ?3)",
        |stmt, _| {
            stmt.execute(rusqlite::params![
                b"dev-1".as_slice(),
                value,
                1_700_000_000_000i64
            ])
        },
    )
}

/// The same batched insert of rows shaped as the spool's: its schema, its columns, its ids, the
/// headers as it stores them for [`record`].
fn row_run(dir: &Path, size: usize, total: usize, per_tx: usize) -> Run {
    let mut conn = rusqlite::Connection::open(dir.join("row.db")).expect("open");
    conn.execute_batch(tributary_spool::schema::PRAGMAS)
        .expect("pragmas");
    tributary_spool::schema::migrate(&mut conn).expect("schema");
    batched(
        conn,
        total,
        per_tx,
        "INSERT INTO records
           (id, topic, key, value, timestamp_ms, headers, device_id, seq, received_ms, session)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        |stmt, n| {
            let r = record(n % CONNECTIONS, n as u64, size);
            let headers = tributary_spool::headers::encode(&r.headers, r.origin.as_ref());
            let device = r.origin.as_ref().map(|o| o.device_id.as_str());
            stmt.execute(rusqlite::params![
                n as i64 + 1,
                r.topic,
                r.key,
                r.value,
                r.timestamp_ms,
                headers,
                device,
                n as i64,
                1_700_000_000_000i64,
                0
            ])
        },
    )
}

/// Inserts `total` rows with `insert`, `per_tx` a transaction.
fn batched(
    mut conn: rusqlite::Connection,
    total: usize,
    per_tx: usize,
    sql: &str,
    mut insert: impl FnMut(&mut rusqlite::CachedStatement<'_>, usize) -> rusqlite::Result<usize>,
) -> Run {
    let start = Instant::now();
    let mut commits = 0;
    let mut n = 0;
    while n < total {
        let tx = conn.transaction().expect("begin");
        {
            let mut stmt = tx.prepare_cached(sql).expect("prepare");
            for _ in 0..per_tx.min(total - n) {
                insert(&mut stmt, n).expect("insert");
                n += 1;
            }
        }
        tx.commit().expect("commit");
        commits += 1;
    }
    Run {
        events: n as u64,
        elapsed: start.elapsed(),
        commits,
        syncs: commits,
    }
}

/// Rounds per event size; the table's last line per size is their median.
const ROUNDS: usize = 3;

fn main() {
    let base = std::env::var("BENCH_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").into());
    println!("disk: {base}");
    println!(
        "{:>6} {:>7} {:>9} {:>12} {:>12} {:>7} {:>12} {:>10} {:>11} {:>12}",
        "size",
        "round",
        "events",
        "spool ev/s",
        "plain ev/s",
        "ratio",
        "row ev/s",
        "row ratio",
        "fsyncs/s",
        "ev/fsync"
    );
    let rate = |r: &Run| r.events as f64 / r.elapsed.as_secs_f64();
    for (size, total) in [(100usize, 256_000usize), (1024, 64_000)] {
        // Rounds alternate the three runs, so a slow spell of the disk or the VM falls on all
        // of them; each round's ratios compare runs made seconds apart.
        let mut ratios = Vec::new();
        let mut row_ratios = Vec::new();
        for round in 1..=ROUNDS {
            let dir = tempfile::tempdir_in(&base).expect("bench dir");
            let spool = spool_run(dir.path(), size, total);
            let per_tx = (spool.events / spool.syncs.max(1)).max(1) as usize;
            let plain = plain_run(dir.path(), size, total, per_tx);
            let row = row_run(dir.path(), size, total, per_tx);
            ratios.push(rate(&spool) / rate(&plain));
            row_ratios.push(rate(&row) / rate(&plain));
            println!(
                "{:>6} {:>7} {:>9} {:>12.0} {:>12.0} {:>7.2} {:>12.0} {:>10.2} {:>11.0} {:>12.1}",
                size,
                round,
                spool.events,
                rate(&spool),
                rate(&plain),
                rate(&spool) / rate(&plain),
                rate(&row),
                rate(&row) / rate(&plain),
                spool.syncs as f64 / spool.elapsed.as_secs_f64(),
                spool.events as f64 / spool.syncs.max(1) as f64,
            );
            println!(
                "{{\"bench\":\"spool_append\",\"size\":{size},\"round\":{round},\"events\":{},\"spool_eps\":{:.0},\"plain_eps\":{:.0},\"row_eps\":{:.0},\"fsyncs\":{},\"commits\":{},\"plain_per_tx\":{per_tx}}}",
                spool.events,
                rate(&spool),
                rate(&plain),
                rate(&row),
                spool.syncs,
                spool.commits
            );
        }
        let median = |xs| common::median_by(xs, |x: &f64| *x);
        let (ratio, row_ratio) = (median(ratios), median(row_ratios));
        println!(
            "{:>6} {:>7} {:>9} {:>12} {:>12} {:>7.2} {:>12} {:>10.2}",
            size, "median", "", "", "", ratio, "", row_ratio
        );
        println!(
            "{{\"bench\":\"spool_append\",\"size\":{size},\"median_ratio\":{ratio:.3},\"median_row_ratio\":{row_ratio:.3}}}"
        );
    }
}
