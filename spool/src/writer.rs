//! The writer thread: the only owner of the spool's connection, and its group commit.
//!
//! Requests arrive on a channel. Appends and acks that queued while the previous commit ran (up
//! to `group_commit_max_events` events) share one transaction and its sync: under load, groups
//! grow by themselves; a lone request is committed at once. `group_commit_wait` (default 0) makes
//! the writer linger for more. A commit's replies wait for the WAL's sync ([`super::sync`]): on
//! this thread when nothing else is queued, else on the syncer's while this one builds the next
//! group. Reads of the writer's own state are answered between groups (the forwarder reads
//! through the reader thread). Replies go back on oneshot channels, so async callers never block
//! a runtime worker on SQLite.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::checkpoint::Checkpointer;
use super::commands::{Done, Op};
use super::config::SpoolConfig;
use super::observe::{Anomaly, Discarded, Shared};
use super::sources::SourceState;
use super::sync::{Deliver, Durable, Syncer};
use super::worker::{Reply, Worker};
use super::{Appended, SpoolDb, SpoolError, SpoolStats};
use crate::record::Record;
use tributary_common::clock::now_ms;

pub(super) enum Command {
    Append {
        records: Vec<Record>,
        /// How far the sources of `records` have been read, committed with them.
        sources: Vec<SourceState>,
        reply: Reply<Stored>,
    },
    Ack {
        ids: Vec<i64>,
        reply: Reply<()>,
    },
    /// Changes to the command queue, with the sources' states they commit with.
    Queue {
        ops: Vec<Op>,
        sources: Vec<SourceState>,
        reply: Reply<Vec<Done>>,
    },
    /// Rare: a record the destination refused for good; its own transaction.
    Quarantine {
        id: i64,
        reason: String,
        reply: Reply<Option<String>>,
    },
    Read(Read),
}

/// What a stored batch's caller gets back: an outcome per record, and the records themselves,
/// so that freeing them is the caller's work rather than the writer's. The writer is the one
/// thread every event passes through; dropping a group's records (their strings, values and
/// attached events, allocated on the connections' threads) took a tenth of its time.
pub(super) struct Stored {
    pub(super) outcomes: Vec<Appended>,
    pub(super) records: Vec<Record>,
}

impl Stored {
    /// The outcomes; the records are freed here, on the caller's thread.
    pub(super) fn into_outcomes(self) -> Vec<Appended> {
        drop(self.records);
        self.outcomes
    }
}

/// Requests that only read and need the writer's own state; answered between write groups.
/// (Forwarding's reads go to the reader thread, `reader.rs`.)
pub(super) enum Read {
    Stats {
        reply: Reply<SpoolStats>,
    },
    Gauges {
        reply: Reply<super::Gauges>,
    },
    Sources {
        prefix: String,
        reply: Reply<Vec<SourceState>>,
    },
}

#[derive(Clone)]
pub(super) struct Handle {
    pub(super) worker: Worker<Command>,
    pub(super) appended: Arc<Notify>,
    /// Group commits (transactions) so far.
    pub(super) commits: Arc<std::sync::atomic::AtomicU64>,
    /// Keys plus values of the queued rows after the last commit, and their bound.
    pub(super) queued_bytes: Arc<std::sync::atomic::AtomicU64>,
    pub(super) max_bytes: u64,
    /// How far the spool is synced: what the forwarder may read.
    pub(super) durable: Arc<Durable>,
}

pub(super) fn start(
    mut db: SpoolDb,
    config: &SpoolConfig,
    observer: Shared,
    hook: Box<dyn super::hook::CommitHook>,
    sync: super::sync::SyncFn,
) -> Result<Handle, SpoolError> {
    db.set_hook(hook)?;
    let appended = Arc::new(Notify::new());
    let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (notify, counted) = (appended.clone(), commits.clone());
    let queued_bytes = Arc::new(std::sync::atomic::AtomicU64::new(db.bytes()));
    let queued = queued_bytes.clone();
    let (max_events, wait) = (
        config.group_commit_max_events.get(),
        config.group_commit_wait,
    );
    let (max_age, forget_after) = (config.limits.max_age, config.forget_devices_after);
    let checkpointer = Checkpointer::start(&config.path)?;
    db.hand_checkpoints_over();
    db.hand_syncs_over()?;
    let durable = Arc::new(Durable::new(db.assigned_through()));
    let syncer = Syncer::start(&config.path, durable.clone(), observer.clone(), sync)?;
    let worker = Worker::start("spool-writer", &config.path, move |rx| {
        Writer {
            db,
            checkpointer,
            syncer,
            next: None,
            rx,
            appended: notify,
            commits: counted,
            queued,
            max_events,
            wait,
            max_age,
            forget_after,
            last_expiry: Instant::now(),
            last_forget: Instant::now(),
            observer,
        }
        .run()
    })?;
    Ok(Handle {
        worker,
        appended,
        commits,
        queued_bytes,
        max_bytes: config.limits.max_bytes,
        durable,
    })
}

struct Writer {
    /// First, so it is dropped first: what it still holds is synced and answered before the
    /// connection closes.
    syncer: Syncer,
    db: SpoolDb,
    checkpointer: Checkpointer,
    /// A request taken off the channel to learn whether one was queued; the next group's first.
    next: Option<Command>,
    rx: mpsc::Receiver<Command>,
    appended: Arc<Notify>,
    commits: Arc<std::sync::atomic::AtomicU64>,
    queued: Arc<std::sync::atomic::AtomicU64>,
    max_events: usize,
    wait: Duration,
    max_age: Option<Duration>,
    forget_after: Duration,
    last_expiry: Instant,
    last_forget: Instant,
    observer: Shared,
}

/// How often the writer forgets idle device sessions.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// How often the writer looks for rows past `max_age`.
const EXPIRY_EVERY: Duration = Duration::from_secs(5);

/// The writes gathered for one transaction, and the reads that arrived meanwhile.
#[derive(Default)]
struct Group {
    appends: Vec<(Vec<Record>, Reply<Stored>)>,
    sources: Vec<SourceState>,
    acks: Vec<(Vec<i64>, Reply<()>)>,
    queues: Vec<(Vec<Op>, Reply<Vec<Done>>)>,
    reads: Vec<Read>,
    quarantines: Vec<(i64, String, Reply<Option<String>>)>,
    events: usize,
}

impl Group {
    fn add(&mut self, command: Command) {
        match command {
            Command::Append {
                records,
                sources,
                reply,
            } => {
                self.events += records.len();
                self.sources.extend(sources);
                self.appends.push((records, reply));
            }
            Command::Ack { ids, reply } => {
                self.events += ids.len();
                self.acks.push((ids, reply));
            }
            Command::Queue {
                ops,
                sources,
                reply,
            } => {
                self.events += ops.len();
                self.sources.extend(sources);
                self.queues.push((ops, reply));
            }
            Command::Read(read) => self.reads.push(read),
            Command::Quarantine { id, reason, reply } => self.quarantines.push((id, reason, reply)),
        }
    }

    fn has_writes(&self) -> bool {
        !self.appends.is_empty() || !self.acks.is_empty() || !self.queues.is_empty()
    }
}

impl Writer {
    fn run(mut self) {
        loop {
            let next = match self.next.take() {
                Some(c) => Ok(c),
                None => self.rx.recv_timeout(EXPIRY_EVERY),
            };
            let first = match next {
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
                let moved = self.db.quarantine(id, &reason);
                let deliver: Deliver = Box::new(move |synced| {
                    let _ = reply.send(synced.and(moved));
                });
                self.syncer
                    .after_commit(self.db.assigned_through(), deliver, true);
            }
        }
        tracing::debug!(message = "Spool writer stopped.");
    }

    /// Whether nothing is waiting behind the commit just made (a request that is becomes the
    /// next group's first).
    fn nothing_queued(&mut self) -> bool {
        if self.next.is_some() {
            return false;
        }
        match self.rx.try_recv() {
            Ok(c) => {
                self.next = Some(c);
                false
            }
            Err(_) => true,
        }
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
                    self.observer.discarded(&topic, Discarded::Expired, n);
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
        let (ops, queue_replies): (Vec<_>, Vec<_>) =
            std::mem::take(&mut group.queues).into_iter().unzip();
        let ids: Vec<i64> = ack_ids.into_iter().flatten().collect();
        let started = Instant::now();
        let sources = std::mem::take(&mut group.sources);
        let committed = self.db.commit_group_with(&batches, &ids, &sources, &ops);
        self.observer
            .committed(started.elapsed().as_secs_f64(), group.events);
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
                for reply in queue_replies {
                    let _ = reply.send(Err(e.clone()));
                }
                return;
            }
        };
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.queued
            .store(self.db.bytes(), std::sync::atomic::Ordering::Relaxed);
        self.checkpointer.after_commit();
        for r in &outcome.regressions {
            // Both are stored; counted per device and reason, logged at most once per reason
            // every 10 s with the number held back.
            let anomaly = if r.unvouched {
                Anomaly::PossibleDuplicate
            } else {
                Anomaly::SeqRegression
            };
            let reason = anomaly.reason();
            self.observer.anomaly(&r.device_id, anomaly);
            if let Some(suppressed) = tributary_common::ratelog::allow(reason) {
                let writer = r.writer.as_deref().unwrap_or("");
                if r.unvouched {
                    tracing::warn!(
                        message = "Seq far below the session's highest: stored, marked possible-duplicate; the window starts again from it.",
                        device_id = %r.device_id, writer, session = r.session, seq = r.seq,
                        max_seq = r.max_seq, suppressed,
                    );
                } else {
                    tracing::warn!(
                        message = "Sequence regression: a seq stored before came with another time (the device reset its seq); stored, marked seq-reused.",
                        device_id = %r.device_id, writer, session = r.session, seq = r.seq,
                        max_seq = r.max_seq, suppressed,
                    );
                }
            }
        }
        for (name, (emitted, late)) in &outcome.hook_counts {
            self.observer.hook_output(name, *emitted, *late);
        }
        for (topic, n) in &outcome.dropped {
            tracing::warn!(message = "Spool full: oldest unforwarded events dropped (policy drop_oldest).", %topic, count = n);
            self.observer.discarded(topic, Discarded::Full, *n);
        }
        match &outcome.appended {
            Ok(_) if !batches.is_empty() => self.observer.full(false),
            Ok(_) => {}
            Err(e) => {
                if matches!(e, SpoolError::Full { .. }) {
                    self.observer.full(true);
                    tracing::warn!(message = "Spool full: events refused.", error = %e, events = group.events);
                } else {
                    tracing::warn!(message = "Events not stored; acknowledgements in the same group committed.", error = %e, events = group.events);
                }
            }
        }
        let deliver = deliver(
            (outcome.appended, outcome.queued),
            (append_replies, batches),
            (ack_replies, queue_replies),
            self.appended.clone(),
        );
        let inline = self.nothing_queued();
        self.syncer
            .after_commit(self.db.assigned_through(), deliver, inline);
    }

    fn read(&mut self, read: Read) {
        match read {
            Read::Stats { reply } => {
                let _ = reply.send(self.db.stats());
            }
            Read::Gauges { reply } => {
                let _ = reply.send(self.db.gauges());
            }
            Read::Sources { prefix, reply } => {
                let _ = reply.send(self.db.sources(&prefix));
            }
        }
    }
}

/// The replies of one commit, sent once it is synced (or with the sync's error). The forwarder
/// is woken only then, for rows it may now read.
/// A commit's appends' outcomes (or why they were refused), and what its queue ops did.
type Committed = (Result<Vec<Vec<Appended>>, SpoolError>, Vec<Vec<Done>>);

fn deliver(
    (appended, queued): Committed,
    (append_replies, batches): (Vec<Reply<Stored>>, Vec<Vec<Record>>),
    (ack_replies, queue_replies): (Vec<Reply<()>>, Vec<Reply<Vec<Done>>>),
    wake: Arc<Notify>,
) -> Deliver {
    Box::new(move |synced| {
        for reply in ack_replies {
            let _ = reply.send(synced.clone());
        }
        let appended = synced.and(appended);
        match appended {
            Ok(outcomes) => {
                // A replaced event stored what its rule derived, if anything: wake the
                // forwarder for it too. So does a command's outcome.
                let stored = outcomes
                    .iter()
                    .flatten()
                    .any(|o| !matches!(o, Appended::Duplicate))
                    || queued
                        .iter()
                        .flatten()
                        .any(|d| matches!(d, Done::Applied | Done::Overflowed));
                for (reply, done) in queue_replies.into_iter().zip(queued) {
                    let _ = reply.send(Ok(done));
                }
                for ((reply, out), records) in append_replies.into_iter().zip(outcomes).zip(batches)
                {
                    let _ = reply.send(Ok(Stored {
                        outcomes: out,
                        records,
                    }));
                }
                if stored {
                    wake.notify_one();
                }
            }
            Err(e) => {
                for reply in append_replies {
                    let _ = reply.send(Err(e.clone()));
                }
                for reply in queue_replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    })
}
