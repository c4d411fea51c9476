//! The writer thread: the only owner of the spool's connection, and its group commit.
//!
//! Requests arrive on a channel. Appends and acks that arrive together (up to
//! `group_commit_max_events` events, waiting at most `group_commit_wait` for more) share one
//! transaction and one fsync; reads are answered between groups. Replies go back on oneshot
//! channels, so async callers never block a runtime worker on SQLite.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};

use super::{Appended, SpoolDb, SpoolError, SpoolStats, Spooled};
use crate::config::SpoolConfig;
use crate::record::{now_ms, Record};
use crate::stats::Stats;

type Reply<T> = oneshot::Sender<Result<T, SpoolError>>;

pub(super) enum Command {
    Append {
        records: Vec<Record>,
        reply: Reply<Vec<Appended>>,
    },
    Ack {
        ids: Vec<i64>,
        reply: Reply<()>,
    },
    /// Rare: a record the destination refused for good; its own transaction.
    Quarantine {
        id: i64,
        reason: String,
        reply: Reply<Option<String>>,
    },
    Read(Read),
}

/// Requests that only read; answered between write groups.
pub(super) enum Read {
    Fetch {
        after: i64,
        until: i64,
        limit: usize,
        reply: Reply<Vec<Spooled>>,
    },
    LastId {
        reply: Reply<i64>,
    },
    Stats {
        reply: Reply<SpoolStats>,
    },
    Gauges {
        reply: Reply<super::Gauges>,
    },
}

#[derive(Clone)]
pub(super) struct Handle {
    tx: mpsc::Sender<Command>,
    pub(super) appended: Arc<Notify>,
    /// Group commits (transactions, so fsyncs of the WAL) so far.
    pub(super) commits: Arc<std::sync::atomic::AtomicU64>,
    thread: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl Handle {
    pub(super) async fn request<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| SpoolError::Closed)?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    pub(super) async fn close(self) {
        let Handle { tx, thread, .. } = self;
        drop(tx);
        let handle = thread.lock().ok().and_then(|mut t| t.take());
        if let Some(handle) = handle {
            // Other clones of the sender may still exist (a straggling task); the thread ends
            // when the last one goes. Joining happens off the async workers either way.
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

pub(super) fn start(db: SpoolDb, config: &SpoolConfig, stats: Stats) -> Result<Handle, SpoolError> {
    let (tx, rx) = mpsc::channel();
    let appended = Arc::new(Notify::new());
    let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = Writer {
        db,
        rx,
        appended: appended.clone(),
        commits: commits.clone(),
        max_events: config.group_commit_max_events.get(),
        wait: config.group_commit_wait,
        max_age: config.limits.max_age,
        forget_after: config.forget_devices_after,
        last_expiry: Instant::now(),
        last_forget: Instant::now(),
        stats,
    };
    let thread = std::thread::Builder::new()
        .name("spool-writer".into())
        .spawn(move || writer.run())
        .map_err(|e| SpoolError::Dir {
            path: config.path.clone(),
            source: e.into(),
        })?;
    Ok(Handle {
        tx,
        appended,
        commits,
        thread: Arc::new(std::sync::Mutex::new(Some(thread))),
    })
}

struct Writer {
    db: SpoolDb,
    rx: mpsc::Receiver<Command>,
    appended: Arc<Notify>,
    commits: Arc<std::sync::atomic::AtomicU64>,
    max_events: usize,
    wait: Duration,
    max_age: Option<Duration>,
    forget_after: Duration,
    last_expiry: Instant,
    last_forget: Instant,
    stats: Stats,
}

/// How often the writer forgets idle device sessions.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// How often the writer looks for rows past `max_age`.
const EXPIRY_EVERY: Duration = Duration::from_secs(5);

/// The writes gathered for one transaction, and the reads that arrived meanwhile.
#[derive(Default)]
struct Group {
    appends: Vec<(Vec<Record>, Reply<Vec<Appended>>)>,
    acks: Vec<(Vec<i64>, Reply<()>)>,
    reads: Vec<Read>,
    quarantines: Vec<(i64, String, Reply<Option<String>>)>,
    events: usize,
}

impl Group {
    fn add(&mut self, command: Command) {
        match command {
            Command::Append { records, reply } => {
                self.events += records.len();
                self.appends.push((records, reply));
            }
            Command::Ack { ids, reply } => {
                self.events += ids.len();
                self.acks.push((ids, reply));
            }
            Command::Read(read) => self.reads.push(read),
            Command::Quarantine { id, reason, reply } => self.quarantines.push((id, reason, reply)),
        }
    }

    fn has_writes(&self) -> bool {
        !self.appends.is_empty() || !self.acks.is_empty()
    }
}

impl Writer {
    fn run(mut self) {
        loop {
            let first = match self.rx.recv_timeout(EXPIRY_EVERY) {
                Ok(c) => c,
                Err(RecvTimeoutError::Timeout) => {
                    self.housekeeping();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            self.housekeeping();
            let mut group = Group::default();
            group.add(first);
            if group.has_writes() {
                self.gather(&mut group);
                self.commit(&mut group);
            }
            for read in group.reads.drain(..) {
                self.read(read);
            }
            for (id, reason, reply) in group.quarantines.drain(..) {
                let _ = reply.send(self.db.quarantine(id, &reason));
            }
        }
        tracing::debug!(message = "Spool writer stopped.");
    }

    /// Expires rows past `max_age`, at most every [`EXPIRY_EVERY`], and forgets idle device
    /// sessions, at most every [`FORGET_EVERY`].
    fn housekeeping(&mut self) {
        if self.last_forget.elapsed() >= FORGET_EVERY {
            self.last_forget = Instant::now();
            let cutoff = now_ms().saturating_sub(self.forget_after.as_millis() as i64);
            match self.db.forget_sessions(cutoff) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    message = "Idle device sessions forgotten (spool.forget_devices_after_ms).",
                    sessions = n
                ),
                Err(error) => {
                    tracing::warn!(message = "Forgetting idle device sessions failed.", %error)
                }
            }
        }
        let Some(max_age) = self.max_age else { return };
        if self.last_expiry.elapsed() < EXPIRY_EVERY {
            return;
        }
        self.last_expiry = Instant::now();
        let cutoff = now_ms().saturating_sub(max_age.as_millis() as i64);
        match self.db.expire(cutoff) {
            Ok(expired) => {
                for (topic, n) in expired {
                    tracing::warn!(message = "Unforwarded events expired (spool.max_age_ms).", %topic, count = n);
                    self.stats.record_discarded(&topic, super::EXPIRED, n);
                }
            }
            Err(error) => tracing::warn!(message = "Expiring old spool rows failed.", %error),
        }
    }

    /// Takes what is already queued, then waits up to `wait` for more, until the group is full.
    fn gather(&mut self, group: &mut Group) {
        let deadline = Instant::now() + self.wait;
        while group.events < self.max_events {
            let next = match self.rx.try_recv() {
                Ok(c) => Ok(c),
                Err(_) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    self.rx.recv_timeout(left)
                }
            };
            match next {
                Ok(c) => group.add(c),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    fn commit(&mut self, group: &mut Group) {
        let appends = std::mem::take(&mut group.appends);
        let acks = std::mem::take(&mut group.acks);
        let (batches, append_replies): (Vec<_>, Vec<_>) = appends.into_iter().unzip();
        let (ack_ids, ack_replies): (Vec<_>, Vec<_>) = acks.into_iter().unzip();
        let ids: Vec<i64> = ack_ids.into_iter().flatten().collect();
        let started = Instant::now();
        let committed = self.db.commit_group(&batches, &ids);
        self.stats
            .instruments
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        self.stats
            .instruments
            .commit_events
            .observe(group.events as f64);
        let outcome = match committed {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(message = "Spool commit failed.", error = %e, events = group.events);
                for reply in append_replies {
                    let _ = reply.send(Err(e.clone()));
                }
                for reply in ack_replies {
                    let _ = reply.send(Err(e.clone()));
                }
                return;
            }
        };
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for reply in ack_replies {
            let _ = reply.send(Ok(()));
        }
        for r in &outcome.regressions {
            self.stats
                .record_refusal("spool", "seq_regression", Some(&r.device_id), None);
            tracing::warn!(
                message = "Sequence regression: the device reset its seq; stored as new.",
                device_id = %r.device_id,
                session = r.session,
                seq = r.seq,
                max_seq = r.max_seq,
            );
        }
        for (topic, n) in &outcome.dropped {
            tracing::warn!(message = "Spool full: oldest unforwarded events dropped (policy drop_oldest).", %topic, count = n);
            self.stats.record_discarded(topic, super::DROPPED_FULL, *n);
        }
        match outcome.appended {
            Ok(outcomes) => {
                let stored = outcomes
                    .iter()
                    .flatten()
                    .any(|o| matches!(o, Appended::Stored { .. }));
                if !batches.is_empty() {
                    self.stats.set_spool_full(false);
                }
                for (reply, out) in append_replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(out));
                }
                if stored {
                    self.appended.notify_one();
                }
            }
            Err(e) => {
                if matches!(e, SpoolError::Full { .. }) {
                    self.stats.set_spool_full(true);
                    tracing::warn!(message = "Spool full: events refused.", error = %e, events = group.events);
                } else {
                    tracing::warn!(message = "Events not stored; acknowledgements in the same group committed.", error = %e, events = group.events);
                }
                for reply in append_replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    fn read(&mut self, read: Read) {
        match read {
            Read::Fetch {
                after,
                until,
                limit,
                reply,
            } => {
                let _ = reply.send(self.db.fetch_range(after, until, limit));
            }
            Read::LastId { reply } => {
                let _ = reply.send(self.db.last_id());
            }
            Read::Stats { reply } => {
                let _ = reply.send(self.db.stats());
            }
            Read::Gauges { reply } => {
                let _ = reply.send(self.db.gauges());
            }
        }
    }
}
