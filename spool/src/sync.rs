//! Durability off the commit path: a commit's replies wait for an fdatasync of the WAL, which
//! runs on the writer's thread when nothing else is queued and on the syncer thread when
//! something is, so the writer builds the next group while the disk syncs the last one.
//!
//! # Design
//! The writer's connection runs `synchronous=NORMAL`: its commits write their WAL frames but do
//! not sync them (checkpoints still sync the WAL before copying it and the database after). What
//! `synchronous=FULL` did at each commit, an fdatasync of the WAL, happens here instead, and
//! nothing waits for a commit except through [`Syncer::after_commit`]:
//! - **Inline.** Nothing queued behind the commit: the writer syncs at once and replies, as a
//!   `FULL` commit would have. At low load this is every commit, with no thread hop added.
//! - **Handed over.** Requests are waiting: the writer passes the commit's replies to the syncer
//!   thread and starts the next group. The thread syncs once for every commit handed over
//!   meanwhile: the disk's sync and the writer's SQLite work overlap.
//!
//! # Invariants
//! - A reply (an acknowledgement to a device) is delivered only after an fdatasync that began
//!   after its commit's frames were written. A sync covers every frame written before it began,
//!   whichever fd or thread calls it (the page cache is the file's).
//! - [`Durable::through`] is the highest row id whose commit is synced; the forwarder reads no
//!   further, so Kafka never holds an event a power cut could take back from the spool.
//! - The WAL keeps its prefix property: recovery replays commits up to the first frame that is
//!   missing, so what a power cut loses is a suffix of unsynced, unacknowledged commits. Once a
//!   sync has failed, that no longer holds (Linux may drop the failed pages and report later
//!   syncs clean, leaving a hole that would hide later commits), so the first failure is final:
//!   every reply from then on is an error until the gateway restarts and SQLite recovers the WAL.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use super::observe::Shared;
use super::SpoolError;

/// What a commit's replies become once it is synced: called exactly once, with the sync's
/// outcome.
pub(super) type Deliver = Box<dyn FnOnce(Result<(), SpoolError>) + Send>;

/// How far the spool is durable; shared by the writer, the syncer and the forwarder's reads.
#[derive(Debug)]
pub(crate) struct Durable {
    through: AtomicI64,
    syncs: AtomicU64,
    /// The first failed sync's error, once there was one.
    failed: std::sync::OnceLock<Arc<std::io::Error>>,
}

impl Durable {
    /// Every row up to `through` is on disk (the spool's rows at open, which the open synced).
    pub(super) fn new(through: i64) -> Self {
        Self {
            through: AtomicI64::new(through),
            syncs: AtomicU64::new(0),
            failed: std::sync::OnceLock::new(),
        }
    }

    /// The highest row id whose commit is synced.
    pub(crate) fn through(&self) -> i64 {
        self.through.load(Ordering::Acquire)
    }

    /// Syncs of the WAL made for commits so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Why a sync failed, once one did: from then on nothing is acknowledged.
    pub(crate) fn failed(&self) -> Option<&Arc<std::io::Error>> {
        self.failed.get()
    }

    /// The error every reply gets once a sync failed.
    fn failure(&self) -> Option<SpoolError> {
        self.failed.get().map(|source| SpoolError::Sync {
            source: source.clone(),
        })
    }
}

/// The fdatasync of the WAL, replaceable in tests.
pub(super) type SyncFn = fn(&File) -> std::io::Result<()>;

/// What a sync needs; shared by the writer (inline syncs) and the syncer thread.
struct Target {
    wal: File,
    sync: SyncFn,
    durable: Arc<Durable>,
    observer: Shared,
}

impl Target {
    /// Syncs the WAL (unless a sync already failed), marks `through` durable, and delivers.
    fn sync_and_deliver(&self, through: i64, delivers: Vec<Deliver>) {
        let durable = &self.durable;
        let outcome = if let Some(failure) = durable.failure() {
            Err(failure)
        } else {
            let started = Instant::now();
            match (self.sync)(&self.wal) {
                Ok(()) => {
                    self.observer.synced(started.elapsed().as_secs_f64());
                    durable.syncs.fetch_add(1, Ordering::Relaxed);
                    durable.through.fetch_max(through, Ordering::AcqRel);
                    Ok(())
                }
                Err(error) => {
                    tracing::error!(
                        message = "Syncing the spool's WAL failed: nothing more is acknowledged; restart the gateway once the disk is sound.",
                        %error
                    );
                    let source = durable.failed.get_or_init(|| Arc::new(error)).clone();
                    Err(SpoolError::Sync { source })
                }
            }
        };
        for deliver in delivers {
            deliver(outcome.clone());
        }
    }
}

/// Syncs the WAL for the writer's commits; see the module doc. Owned by the writer thread.
pub(super) struct Syncer {
    target: Arc<Target>,
    handed: Option<mpsc::Sender<(i64, Deliver)>>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Opens the WAL of the spool at `path` (the writer's connection, already in WAL mode, has
    /// created it) and starts the syncer thread.
    pub(super) fn start(
        path: &Path,
        durable: Arc<Durable>,
        observer: Shared,
        sync: SyncFn,
    ) -> Result<Self, SpoolError> {
        let mut wal_path = path.as_os_str().to_owned();
        wal_path.push("-wal");
        let wal_path = std::path::PathBuf::from(wal_path);
        let dir_error = |e: std::io::Error| SpoolError::Dir {
            path: wal_path.clone(),
            source: e.into(),
        };
        // Read-only is enough for fdatasync; SQLite keeps the file (it deletes it only when
        // its last connection closes, and the writer's lives as long as this).
        let wal = File::open(&wal_path).map_err(dir_error)?;
        sync(&wal).map_err(dir_error)?;
        let target = Arc::new(Target {
            wal,
            sync,
            durable,
            observer,
        });
        let (handed, queue) = mpsc::channel();
        let thread = {
            let target = target.clone();
            std::thread::Builder::new()
                .name("spool-sync".into())
                .spawn(move || serve(&target, &queue))
                .map_err(dir_error)?
        };
        Ok(Self {
            target,
            handed: Some(handed),
            thread: Some(thread),
        })
    }

    /// Called by the writer after each commit whose rows have ids up to `through`: syncs and
    /// delivers now when `inline`, else hands the delivery to the syncer thread.
    pub(super) fn after_commit(&self, through: i64, deliver: Deliver, inline: bool) {
        let deliver = match (&self.handed, inline) {
            (Some(handed), false) => match handed.send((through, deliver)) {
                Ok(()) => return,
                // The thread is gone (it cannot be while this lives): sync here instead.
                Err(mpsc::SendError((_, deliver))) => deliver,
            },
            _ => deliver,
        };
        self.target.sync_and_deliver(through, vec![deliver]);
    }
}

impl Drop for Syncer {
    /// Delivers everything handed over (after its sync) before the writer goes.
    fn drop(&mut self) {
        self.handed = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The syncer thread: one sync for whatever was handed over while the previous one ran.
fn serve(target: &Target, queue: &mpsc::Receiver<(i64, Deliver)>) {
    while let Ok((mut through, first)) = queue.recv() {
        let mut delivers = vec![first];
        while let Ok((t, d)) = queue.try_recv() {
            through = through.max(t);
            delivers.push(d);
        }
        target.sync_and_deliver(through, delivers);
    }
}

/// The real sync: `fdatasync(2)`.
pub(super) fn fdatasync(file: &File) -> std::io::Result<()> {
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicBool;
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;

    use super::super::tests::{record, spool_config};
    use super::super::{Appended, Spool, SpoolDb, SpoolError};
    use super::*;

    static FAIL: AtomicBool = AtomicBool::new(false);

    fn failing_when_told(file: &File) -> std::io::Result<()> {
        if FAIL.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(5)); // EIO
        }
        file.sync_data()
    }

    /// After one failed fdatasync, Linux may have dropped the pages it could not write and
    /// report later syncs clean; the WAL would have a hole. So no reply is a success again, even
    /// once syncs work, and the forwarder never reads past the last synced row.
    #[tokio::test]
    async fn after_a_failed_sync_nothing_is_acknowledged_or_forwarded() {
        let dir = tempfile::tempdir().unwrap();
        let config = spool_config(&dir, 100, Duration::ZERO);
        let (spool, _) = Spool::open_syncing(
            &config,
            (),
            Box::new(super::super::hook::Inert),
            failing_when_told,
        )
        .unwrap();
        let first = spool.append(vec![record("d", 1)]).await.unwrap();
        assert!(matches!(first[..], [Appended::Stored { .. }]));
        FAIL.store(true, Ordering::SeqCst);
        let failed = spool.append(vec![record("d", 2)]).await;
        assert!(matches!(failed, Err(SpoolError::Sync { .. })), "{failed:?}");
        FAIL.store(false, Ordering::SeqCst);
        let after = spool.append(vec![record("d", 3)]).await;
        assert!(matches!(after, Err(SpoolError::Sync { .. })), "{after:?}");
        let error = after.unwrap_err().to_string();
        assert!(error.contains("until the gateway restarts"), "{error}");
        // Readiness says so too.
        assert!(spool.sync_failed().is_some());
        // The unsynced rows are committed, but the forwarder does not see them.
        let forwarded = spool.fetch(0, 10).await.unwrap();
        assert_eq!(forwarded.len(), 1);
        assert_eq!(spool.last_id().await.unwrap(), forwarded[0].id);
        spool.close().await;
        // A restart syncs what SQLite recovered, and it is read again.
        let (spool, _) = Spool::open(&config, ()).unwrap();
        assert_eq!(spool.fetch(0, 10).await.unwrap().len(), 3);
        spool.close().await;
    }

    /// A sync that waits while the test holds it closed.
    struct Gate {
        open: Mutex<bool>,
        moved: Condvar,
        /// Syncs begun.
        calls: AtomicU64,
    }

    impl Gate {
        const fn new() -> Self {
            Self {
                open: Mutex::new(true),
                moved: Condvar::new(),
                calls: AtomicU64::new(0),
            }
        }

        fn sync(&self, file: &File) -> std::io::Result<()> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            while !*open {
                open = self.moved.wait(open).unwrap_or_else(|e| e.into_inner());
            }
            file.sync_data()
        }

        fn set(&self, open: bool) {
            *self.open.lock().unwrap_or_else(|e| e.into_inner()) = open;
            self.moved.notify_all();
        }
    }

    // One gate per test: tests run in parallel.
    static SPOOL_GATE: Gate = Gate::new();
    static SYNCER_GATE: Gate = Gate::new();

    fn gated(file: &File) -> std::io::Result<()> {
        SPOOL_GATE.sync(file)
    }

    fn syncer_gated(file: &File) -> std::io::Result<()> {
        SYNCER_GATE.sync(file)
    }

    fn set_gate(open: bool) {
        SPOOL_GATE.set(open);
    }

    /// Commits handed to the syncer thread are answered only after a sync that began after
    /// them, all of them by one sync when they queued behind it, and `through` covers the
    /// highest.
    #[test]
    fn handed_over_commits_are_answered_after_one_sync_that_covers_them_all() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("spool.db-wal"), b"").unwrap();
        let durable = Arc::new(Durable::new(4));
        let syncer = Syncer::start(
            &dir.path().join("spool.db"),
            durable.clone(),
            Arc::new(()),
            syncer_gated,
        )
        .unwrap();
        let initial_syncs = durable.syncs();
        SYNCER_GATE.set(false);
        let (tx, answers) = mpsc::channel();
        let answer = |n: i64| -> Deliver {
            let tx = tx.clone();
            Box::new(move |synced| {
                let _ = tx.send((n, synced.is_ok()));
            })
        };
        // The first is picked up at once and waits in its sync; the next two queue behind it.
        let calls = SYNCER_GATE.calls.load(Ordering::SeqCst);
        syncer.after_commit(5, answer(5), false);
        for _ in 0..500 {
            if SYNCER_GATE.calls.load(Ordering::SeqCst) > calls {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        syncer.after_commit(7, answer(7), false);
        syncer.after_commit(9, answer(9), false);
        std::thread::sleep(Duration::from_millis(100));
        assert!(answers.try_recv().is_err(), "answered before any sync");
        assert_eq!(durable.through(), 4);
        SYNCER_GATE.set(true);
        let mut got: Vec<_> = (0..3)
            .map(|_| answers.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, vec![(5, true), (7, true), (9, true)]);
        drop(syncer);
        assert_eq!(durable.through(), 9);
        assert_eq!(durable.syncs() - initial_syncs, 2, "7 and 9 share one sync");
    }

    /// A committed row is neither acknowledged nor handed to the forwarder before the WAL's
    /// sync: the reply waits for it, and reads stop below the row, although it is in the file.
    #[tokio::test]
    async fn a_commit_is_acknowledged_and_forwarded_only_after_its_sync() {
        let dir = tempfile::tempdir().unwrap();
        let config = spool_config(&dir, 100, Duration::ZERO);
        let (spool, _) =
            Spool::open_syncing(&config, (), Box::new(super::super::hook::Inert), gated).unwrap();
        spool.append(vec![record("d", 1)]).await.unwrap();
        set_gate(false);
        let appending = tokio::spawn({
            let spool = spool.clone();
            async move { spool.append(vec![record("d", 2)]).await }
        });
        // The writer commits, then waits in the sync: the row is in the WAL, unacknowledged.
        let path = dir.path().join("spool.db");
        let mut committed = 0;
        for _ in 0..500 {
            let conn = SpoolDb::open_read_only(&path).unwrap();
            committed = conn
                .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
                .unwrap();
            if committed == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(committed, 2, "the second append was never committed");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!appending.is_finished(), "acknowledged before its sync");
        assert_eq!(spool.fetch(0, 10).await.unwrap().len(), 1);
        set_gate(true);
        let stored = appending.await.unwrap().unwrap();
        assert!(matches!(stored[..], [Appended::Stored { .. }]));
        assert_eq!(spool.fetch(0, 10).await.unwrap().len(), 2);
        spool.close().await;
    }
    /// The whole pipeline under load: sixteen devices appending concurrently (so commits queue
    /// and syncs are handed over) while a forwarder reads and acknowledges. Every append is
    /// answered, every stored event is read exactly once, each device's in seq order, and the
    /// queue ends empty.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_and_acks_read_every_stored_event_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let config = spool_config(&dir, 1000, Duration::ZERO);
        let (spool, _) = Spool::open(&config, ()).unwrap();
        let devices = 16u64;
        let mut appenders = Vec::new();
        for d in 0..devices {
            let spool = spool.clone();
            appenders.push(tokio::spawn(async move {
                let device = format!("d{d}");
                let mut seq = 0;
                let mut stored = 0usize;
                for round in 0..150u64 {
                    let batch = 1 + (round + d) % 5;
                    let records = (0..batch)
                        .map(|_| {
                            seq += 1;
                            record(&device, seq)
                        })
                        .collect();
                    let out = spool.append(records).await.unwrap();
                    assert!(out.iter().all(|o| matches!(o, Appended::Stored { .. })));
                    stored += out.len();
                }
                stored
            }));
        }
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let forwarder = tokio::spawn({
            let (spool, done) = (spool.clone(), done.clone());
            async move {
                let mut cursor = 0;
                let mut last_seq: BTreeMap<String, u64> = BTreeMap::new();
                let mut read = 0usize;
                loop {
                    // Every append returned after its sync: once all have, a read sees them all.
                    let finished = done.load(Ordering::SeqCst);
                    let rows = spool.fetch(cursor, 64).await.unwrap();
                    if rows.is_empty() {
                        if finished {
                            return (read, last_seq);
                        }
                        tokio::select! {
                            () = spool.appended() => {}
                            () = tokio::time::sleep(Duration::from_millis(20)) => {}
                        }
                        continue;
                    }
                    for row in &rows {
                        assert!(row.id > cursor, "id {} after {cursor}", row.id);
                        cursor = row.id;
                        let origin = row.record.origin.as_ref().unwrap();
                        let last = last_seq.entry(origin.device_id.clone()).or_insert(0);
                        assert_eq!(origin.seq, *last + 1, "{}: out of order", origin.device_id);
                        *last = origin.seq;
                    }
                    read += rows.len();
                    spool
                        .ack(rows.iter().map(|r| r.id).collect())
                        .await
                        .unwrap();
                }
            }
        });
        let mut stored = 0;
        for a in appenders {
            stored += a.await.unwrap();
        }
        done.store(true, Ordering::SeqCst);
        let (read, last_seq) = forwarder.await.unwrap();
        assert_eq!(read, stored);
        assert_eq!(last_seq.len() as u64, devices);
        assert_eq!(spool.stats().await.unwrap().rows, 0);
        assert!(spool.syncs() <= spool.commits());
        spool.close().await;
    }
}
