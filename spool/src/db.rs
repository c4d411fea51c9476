//! [`SpoolDb`]: the SQL behind the spool, synchronous, on one connection.
//!
//! Used by the writer thread, and directly by offline tools and tests. Pragmas and schema live
//! in [`super::schema`]; bounds in [`super::limits`]; corruption handling in [`super::recover`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};

use super::commands::{self, Done};
use super::hook::{self, CommitHook, Counts, Inert};
use super::limits::{self, FullPolicy, Limits};
use super::report::{stats, SpoolStats};
use super::rows::{
    count_deleted, delete_in, fetch_range, payload_size, stored_size, take_id, Inserter,
};
use super::seqs::{Changes, Regression, Seqs, Session, Verdict, Window};
use super::sessions::{load_sessions, upsert_session};
use super::sources::{save_sources, SourceState};
use super::{schema, Appended, SpoolError, Spooled};
use crate::record::Record;
use tributary_common::clock::now_ms;

/// Counter reasons, as stored in `counters.reason`.
pub const DROPPED_FULL: &str = "dropped_full";
pub const EXPIRED: &str = "expired";
pub const QUARANTINED: &str = "quarantined";

/// What a committed transaction did: the appends' outcomes, the rows dropped for room (per
/// topic), and the spool's bytes after it.
struct Transacted {
    appended: Result<Vec<Vec<Appended>>, SpoolError>,
    queued: Vec<Vec<Done>>,
    dropped: BTreeMap<String, u64>,
    bytes: u64,
}

/// What one group commit did.
#[derive(Debug)]
pub struct GroupOutcome {
    /// One outcome list per appended group, or why the appends were refused.
    pub appended: Result<Vec<Vec<Appended>>, SpoolError>,
    /// What each list of command-queue ops did (empty when the appends were refused: the ops
    /// share their fate).
    pub queued: Vec<Vec<Done>>,
    /// Rows deleted unforwarded to make room, per topic.
    pub dropped: BTreeMap<String, u64>,
    /// Sequence regressions among the stored events (see [`super::seqs`]).
    pub regressions: Vec<Regression>,
    /// What the commit hook counted (per name: records derived, late events seen).
    pub hook_counts: Counts,
}

/// Begins a group's transaction and, when the group `appends` `incoming` bytes, measures the
/// space it may use: free bytes on the filesystem plus pages SQLite holds free inside the file.
/// The free-page count is read inside the transaction, under the locks its writes take anyway;
/// read before it, it took and released WAL locks of its own on every commit (most of what
/// measuring cost). When the space is short of the bounds, the transaction is ended, the WAL
/// (which grows until a checkpoint) checkpointed and truncated, and space measured again.
fn begin<'c>(
    conn: &'c Connection,
    path: &Path,
    bounds: &Limits,
    page_size: u64,
    appends: bool,
    incoming: u64,
) -> Result<(Transaction<'c>, u64), SpoolError> {
    let start = || {
        Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
            .map_err(SpoolError::sqlite("begin"))
    };
    let measure = |tx: &Transaction<'_>| -> Result<u64, SpoolError> {
        Ok(limits::free_on_disk(path).saturating_add(limits::free_pages(tx, page_size)?))
    };
    let tx = start()?;
    if !appends {
        return Ok((tx, u64::MAX));
    }
    let free = measure(&tx)?;
    if limits::check(bounds, 0, incoming, free).is_ok() {
        return Ok((tx, free));
    }
    drop(tx);
    // A reader (an offline tool) can keep the checkpoint from finishing; that is fine.
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    let tx = start()?;
    let free = measure(&tx)?;
    Ok((tx, free))
}

/// The spool database.
pub struct SpoolDb {
    conn: Connection,
    path: PathBuf,
    limits: Limits,
    /// Sequence state per device and session, mirrored from `sessions`.
    seqs: Seqs,
    /// Keys plus values of the queued rows.
    bytes: u64,
    /// What runs on stored events in their transaction (the rules, in the gateway).
    hook: Box<dyn CommitHook>,
    /// The id the next inserted row gets ([`super::rows`]: ids never repeat).
    next_id: i64,
    /// The file's page size, for the free-space check.
    page_size: u64,
}

impl SpoolDb {
    /// Opens or creates the database with no bounds.
    pub fn open(path: &Path) -> Result<Self, SpoolError> {
        Self::open_with(path, Limits::unlimited())
    }

    /// Opens or creates the database at `path`, sets the pragmas, and brings the schema up to
    /// date in one transaction.
    pub fn open_with(path: &Path, limits: Limits) -> Result<Self, SpoolError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| SpoolError::Dir {
                path: dir.to_owned(),
                source: e.into(),
            })?;
        }
        let mut conn = Connection::open(path).map_err(SpoolError::sqlite("open"))?;
        conn.execute_batch(schema::PRAGMAS)
            .map_err(SpoolError::sqlite("set pragmas"))?;
        schema::configure(&conn)?;
        schema::migrate(&mut conn)?;
        let seqs = Seqs::from_rows(
            load_sessions(&conn, limits.dedup_window)?,
            limits.dedup_window,
        );
        let bytes = conn
            .query_row(
                "SELECT coalesce(sum(length(key) + length(value)), 0) FROM records",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(SpoolError::sqlite("measure"))? as u64;
        let next_id = super::rows::next_id(&conn)?;
        let page_size = limits::page_size(&conn)?;
        Ok(Self {
            conn,
            path: path.to_owned(),
            limits,
            seqs,
            bytes,
            hook: Box::new(Inert),
            next_id,
            page_size,
        })
    }

    /// This spool file's instance number (`spool_meta.instance`).
    pub fn instance(&self) -> Result<i64, SpoolError> {
        schema::instance(&self.conn)
    }

    /// Runs `hook` in the transaction of every group stored from now on ([`super::hook`]),
    /// after it loaded its committed state.
    pub fn set_hook(&mut self, mut hook: Box<dyn CommitHook>) -> Result<(), SpoolError> {
        hook.load(&hook::Store::new(&self.conn))?;
        self.hook = hook;
        Ok(())
    }

    /// Leaves checkpoints to a [`super::checkpoint::Checkpointer`] (the writer's connection).
    pub(super) fn hand_checkpoints_over(&self) {
        super::checkpoint::install(&self.conn);
    }

    /// Leaves the WAL's sync at commit to a [`super::sync::Syncer`] (the writer's connection):
    /// commits write their frames without syncing them (`synchronous=NORMAL`, which still
    /// syncs around checkpoints). Until the syncer has synced a commit, it is not durable.
    pub(super) fn hand_syncs_over(&self) -> Result<(), SpoolError> {
        self.conn
            .execute_batch("PRAGMA synchronous = NORMAL")
            .map_err(SpoolError::sqlite("set synchronous"))
    }

    /// The highest row id assigned so far (0 when none was): every committed row is at or
    /// below it.
    pub(super) fn assigned_through(&self) -> i64 {
        self.next_id.saturating_sub(1)
    }

    /// Opens an existing spool for reading only, without changing it; safe beside a running
    /// gateway (WAL readers never block the writer).
    pub fn open_read_only(path: &Path) -> Result<Connection, SpoolError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(SpoolError::sqlite("open read-only"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(SpoolError::sqlite("set busy timeout"))?;
        schema::configure(&conn)?;
        let found = schema::version(&conn)?;
        if found > schema::SCHEMA_VERSION {
            return Err(SpoolError::TooNew {
                found,
                supported: schema::SCHEMA_VERSION,
            });
        }
        Ok(conn)
    }

    /// Appends one group of records in its own transaction.
    pub fn append(&mut self, records: Vec<Record>) -> Result<Vec<Appended>, SpoolError> {
        let mut out = self.commit_group(&[records], &[], &[])?.appended?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Deletes acknowledged rows in one transaction.
    pub fn ack(&mut self, ids: &[i64]) -> Result<(), SpoolError> {
        self.commit_group(&[], ids, &[]).map(drop)
    }

    /// Deletes `acks` and appends `groups` in one transaction: the writer's group commit.
    ///
    /// Acks commit even when the appends are refused for lack of room: by the bounds' pre-check
    /// inside the transaction, or, when SQLite itself fails (a real ENOSPC, an I/O error) with
    /// appends in the group, by committing the acks again on their own. The appends are then
    /// refused with that error (a full disk as [`SpoolError::Full`]), and nothing of them is
    /// stored: the devices were not answered and resend.
    pub fn commit_group(
        &mut self,
        groups: &[Vec<Record>],
        acks: &[i64],
        sources: &[SourceState],
    ) -> Result<GroupOutcome, SpoolError> {
        self.commit_group_with(groups, acks, sources, &[])
    }

    /// [`Self::commit_group`] with changes to the command queue ([`commands`]), which commit
    /// with the appends (their outcome records count as appended rows) or not at all.
    pub fn commit_group_with(
        &mut self,
        groups: &[Vec<Record>],
        acks: &[i64],
        sources: &[SourceState],
        ops: &[Vec<commands::Op>],
    ) -> Result<GroupOutcome, SpoolError> {
        let groups_or_ops = !groups.is_empty() || !ops.is_empty();
        match self.commit_once(groups, acks, sources, ops) {
            Err(error) if groups_or_ops => {
                let mut outcome = self.commit_once(&[], acks, &[], &[])?;
                outcome.appended = Err(error);
                Ok(outcome)
            }
            done => done,
        }
    }

    fn commit_once(
        &mut self,
        groups: &[Vec<Record>],
        acks: &[i64],
        sources: &[SourceState],
        ops: &[Vec<commands::Op>],
    ) -> Result<GroupOutcome, SpoolError> {
        let incoming: u64 = groups.iter().flatten().map(payload_size).sum::<u64>()
            + ops.iter().flatten().map(commands::Op::size).sum::<u64>();
        if !groups.is_empty() {
            self.hook.prepare(&hook::Store::new(&self.conn))?;
        }
        let mut changes = Changes::default();
        let done = self.transact(groups, acks, (sources, ops), incoming, &mut changes);
        let Transacted {
            appended,
            queued,
            dropped,
            bytes,
        } = match done {
            Ok(done) => done,
            Err(error) => {
                // Rolled back: what the hook took for this group is stale.
                self.hook.rolled_back(&hook::Store::new(&self.conn));
                return Err(error);
            }
        };
        self.bytes = bytes;
        let regressions = std::mem::take(&mut changes.regressions);
        self.seqs.apply(changes);
        let hook_counts = self.hook.committed();
        Ok(GroupOutcome {
            appended,
            queued,
            dropped,
            regressions,
            hook_counts,
        })
    }

    /// [`Self::commit_once`]'s transaction.
    fn transact(
        &mut self,
        groups: &[Vec<Record>],
        acks: &[i64],
        (sources, ops): (&[SourceState], &[Vec<commands::Op>]),
        incoming: u64,
        changes: &mut Changes,
    ) -> Result<Transacted, SpoolError> {
        let appends = !groups.is_empty() || !ops.is_empty();
        let (tx, free) = begin(
            &self.conn,
            &self.path,
            &self.limits,
            self.page_size,
            appends,
            incoming,
        )?;
        let mut bytes = self.bytes.saturating_sub(delete_in(&tx, acks)?);
        let mut dropped = BTreeMap::new();
        let mut queued = Vec::new();
        let appended = if !appends {
            Ok(Vec::new())
        } else {
            let room = match limits::check(&self.limits, bytes, incoming, free) {
                Ok(()) => Ok(()),
                Err((need, full)) if self.limits.policy == FullPolicy::DropOldest => {
                    let freed = limits::drop_oldest(&tx, need, &mut dropped)?;
                    bytes = bytes.saturating_sub(freed);
                    if freed >= need {
                        Ok(())
                    } else {
                        Err(full)
                    }
                }
                Err((_, full)) => Err(full),
            };
            match room {
                Ok(()) => {
                    let (out, derived) = append_in(
                        &tx,
                        groups,
                        (&self.seqs, &mut self.next_id),
                        changes,
                        &mut *self.hook,
                    )?;
                    self.hook.save(&hook::Store::new(&tx))?;
                    save_sources(&tx, sources)?;
                    let received_ms = now_ms();
                    let mut insert = Inserter::new(&tx)?;
                    for list in ops {
                        let next_id = &mut self.next_id;
                        queued.push(commands::apply(&tx, list, |record| {
                            insert.insert(take_id(next_id), record, received_ms)?;
                            bytes += payload_size(record);
                            Ok(())
                        })?);
                    }
                    drop(insert);
                    super::rows::raise_floor(&tx, self.next_id.saturating_sub(1))?;
                    bytes += stored_size(groups, &out) + derived;
                    Ok(out)
                }
                Err(full) => Err(full),
            }
        };
        add_counters(&tx, &dropped, DROPPED_FULL)?;
        tx.commit().map_err(SpoolError::sqlite("commit"))?;
        Ok(Transacted {
            appended,
            queued,
            dropped,
            bytes,
        })
    }

    /// Moves row `id` out of the queue into `quarantine` with `reason`, in one transaction;
    /// returns its topic, or `None` if the row is not queued (any more).
    pub fn quarantine(&mut self, id: i64, reason: &str) -> Result<Option<String>, SpoolError> {
        let tx = self
            .conn
            .transaction()
            .map_err(SpoolError::sqlite("begin"))?;
        let moved = tx
            .execute(
                "INSERT INTO quarantine (id, topic, key, value, timestamp_ms, headers, device_id,
                                         seq, session, received_ms, reason, quarantined_ms)
                 SELECT id, topic, key, value, timestamp_ms, headers, device_id, seq, session,
                        received_ms, ?2, ?3
                 FROM records WHERE id = ?1",
                params![id, reason, now_ms()],
            )
            .map_err(SpoolError::sqlite("quarantine"))?;
        if moved == 0 {
            return Ok(None);
        }
        let (topic, size): (String, i64) = tx
            .query_row(
                "DELETE FROM records WHERE id = ?1 RETURNING topic, length(key) + length(value)",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(SpoolError::sqlite("quarantine"))?;
        add_counters(&tx, &BTreeMap::from([(topic.clone(), 1)]), QUARANTINED)?;
        tx.commit().map_err(SpoolError::sqlite("commit"))?;
        self.bytes = self.bytes.saturating_sub(size.max(0) as u64);
        Ok(Some(topic))
    }

    /// Deletes unforwarded rows received before `cutoff_ms`; returns the count per topic.
    pub fn expire(&mut self, cutoff_ms: i64) -> Result<BTreeMap<String, u64>, SpoolError> {
        let tx = self
            .conn
            .transaction()
            .map_err(SpoolError::sqlite("begin"))?;
        let mut expired = BTreeMap::new();
        let mut freed = 0;
        loop {
            // Rows are received in id order, so the oldest are first: no index needed.
            let mut stmt = tx
                .prepare_cached(
                    "DELETE FROM records WHERE id IN
                       (SELECT id FROM records ORDER BY id LIMIT 1000) AND received_ms < ?1
                     RETURNING topic, length(key) + length(value)",
                )
                .map_err(SpoolError::sqlite("expire"))?;
            let n = count_deleted(&mut stmt, params![cutoff_ms], &mut expired, &mut freed)?;
            if n < 1000 {
                break;
            }
        }
        add_counters(&tx, &expired, EXPIRED)?;
        tx.commit().map_err(SpoolError::sqlite("commit"))?;
        self.bytes = self.bytes.saturating_sub(freed);
        Ok(expired)
    }

    /// Up to `limit` rows with ids above `after`, in id order.
    pub fn fetch(&self, after: i64, limit: usize) -> Result<Vec<Spooled>, SpoolError> {
        fetch_range(&self.conn, after, i64::MAX, limit)
    }

    /// Rows, bytes and the oldest row's age, in total and per topic.
    pub fn stats(&self) -> Result<SpoolStats, SpoolError> {
        stats(&self.conn)
    }

    /// The highest seq stored for `device_id` in `session`, if any.
    pub fn max_seq(&self, device_id: &str, session: u64) -> Option<u64> {
        self.seqs.get(device_id, session).map(|s| s.max_seq())
    }

    /// Forgets sequence state idle since before `cutoff_ms`, and each device's sessions beyond
    /// the most recent few; returns how many sessions were forgotten.
    pub fn forget_sessions(&mut self, cutoff_ms: i64) -> Result<usize, SpoolError> {
        let gone = self.seqs.forget(cutoff_ms);
        if gone.is_empty() {
            return Ok(0);
        }
        let tx = self
            .conn
            .transaction()
            .map_err(SpoolError::sqlite("begin"))?;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM sessions WHERE device_id = ?1 AND session = ?2")
                .map_err(SpoolError::sqlite("forget sessions"))?;
            for (device, session) in &gone {
                delete
                    .execute(params![device, *session as i64])
                    .map_err(SpoolError::sqlite("forget sessions"))?;
            }
        }
        tx.commit().map_err(SpoolError::sqlite("commit"))?;
        Ok(gone.len())
    }

    /// Rows, bytes, the bound, the oldest row's commit time and free disk. Counting rows walks
    /// the table's b-tree (milliseconds per million rows); the rest are lookups.
    pub fn gauges(&self) -> Result<super::Gauges, SpoolError> {
        let (rows, oldest): (i64, Option<i64>) = self
            .conn
            .query_row(
                "SELECT count(*),
                        (SELECT received_ms FROM records WHERE id = (SELECT min(id) FROM records))
                 FROM records",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(SpoolError::sqlite("gauges"))?;
        Ok(super::Gauges {
            rows: rows.max(0) as u64,
            bytes: self.bytes,
            max_bytes: self.limits.max_bytes,
            oldest_received_ms: oldest,
            disk_free_bytes: limits::free_on_disk(&self.path),
            min_free_bytes: self.limits.min_free_bytes,
        })
    }

    /// Keys plus values of the queued rows.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Inserts salvaged rows as they were (no de-duplication) and restores the sequence state,
    /// raised to at least the salvaged rows' seqs, in one transaction.
    pub fn restore(
        &mut self,
        rows: &mut dyn Iterator<Item = Record>,
        sessions: &[(String, Session)],
    ) -> Result<(), SpoolError> {
        let tx = self
            .conn
            .transaction()
            .map_err(SpoolError::sqlite("begin"))?;
        let now = now_ms();
        let width = self.seqs.width();
        // Windows of another width vouch for nothing here; the salvaged rows are marked in.
        let mut highest: HashMap<(String, u64), Session> = sessions
            .iter()
            .map(|(d, s)| {
                let window = Window::decode(Some(&s.window.encode()), s.max_seq(), width);
                (
                    (d.clone(), s.id),
                    Session {
                        window,
                        ..s.clone()
                    },
                )
            })
            .collect();
        let mut bytes = 0;
        {
            let mut insert = Inserter::new(&tx)?;
            for record in rows {
                insert.insert(take_id(&mut self.next_id), &record, now)?;
                bytes += payload_size(&record);
                if let Some(o) = &record.origin {
                    highest
                        .entry((o.device_id.clone(), o.session))
                        .or_insert_with(|| Session::new(o.session, width, now))
                        .store(o.seq, record.timestamp_ms, now);
                }
            }
        }
        for ((device, _), session) in &highest {
            upsert_session(&tx, device, session)?;
        }
        tx.commit().map_err(SpoolError::sqlite("commit"))?;
        let width = self.seqs.width();
        self.seqs = Seqs::from_rows(load_sessions(&self.conn, width)?, width);
        self.bytes += bytes;
        Ok(())
    }
}

fn add_counters(
    tx: &Transaction<'_>,
    counts: &BTreeMap<String, u64>,
    reason: &str,
) -> Result<(), SpoolError> {
    for (topic, n) in counts {
        tx.execute(
            "INSERT INTO counters (topic, reason, count) VALUES (?1, ?2, ?3)
             ON CONFLICT(topic, reason) DO UPDATE SET count = count + excluded.count",
            params![topic, reason, *n as i64],
        )
        .map_err(SpoolError::sqlite("count discarded rows"))?;
    }
    Ok(())
}

/// Appends `groups` in `tx`: de-duplicates by seq, runs the commit hook on each stored event
/// and inserts what it derives after it. Returns the outcomes and the bytes of the derived rows.
fn append_in(
    tx: &Transaction<'_>,
    groups: &[Vec<Record>],
    (committed, next_id): (&Seqs, &mut i64),
    changes: &mut Changes,
    hook: &mut dyn CommitHook,
) -> Result<(Vec<Vec<Appended>>, u64), SpoolError> {
    let mut derived_bytes = 0;
    let received_ms = now_ms();
    let hooked = hook.is_active();
    let mut insert = Inserter::new(tx)?;
    let mut outcomes = Vec::with_capacity(groups.len());
    for group in groups {
        let mut out = Vec::with_capacity(group.len());
        for record in group {
            let flagged;
            let mut record = record;
            if let Some(o) = &record.origin {
                let verdict = committed.judge(
                    changes,
                    &o.device_id,
                    o.writer.as_deref(),
                    o.session,
                    o.seq,
                    record.timestamp_ms,
                    received_ms,
                );
                // Stored, and said so to consumers: they may still drop it by `event-id`.
                let flag = match verdict {
                    Verdict::Duplicate => {
                        out.push(Appended::Duplicate);
                        continue;
                    }
                    Verdict::New => None,
                    Verdict::Unvouched { .. } => {
                        Some((super::seqs::POSSIBLE_DUPLICATE, "below-window".to_owned()))
                    }
                    Verdict::Regression { max_seq } => {
                        Some((super::seqs::SEQ_REUSED, max_seq.to_string()))
                    }
                };
                if let Some((name, value)) = flag {
                    let mut copy = record.clone();
                    copy.headers.push((name.to_owned(), value));
                    flagged = copy;
                    record = &flagged;
                }
            }
            let (derived, replaced) = if hooked {
                hook.stored(record)
            } else {
                (Vec::new(), false)
            };
            if replaced {
                out.push(Appended::Replaced);
            } else {
                let id = take_id(next_id);
                insert.insert(id, record, received_ms)?;
                out.push(Appended::Stored { id });
            }
            for d in &derived {
                insert.insert(take_id(next_id), d, received_ms)?;
                derived_bytes += payload_size(d);
            }
        }
        outcomes.push(out);
    }
    // One upsert per device session per group, in the same transaction as its rows.
    for (device, sessions) in &changes.sessions {
        for session in sessions {
            upsert_session(tx, device, session)?;
        }
    }
    Ok((outcomes, derived_bytes))
}

/// Whether an SQLite error means the disk or database is full.
pub fn is_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::DiskFull)
}

/// Whether an SQLite error means the file is corrupt or not a database.
pub fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase))
}

impl SpoolDb {
    /// Every saved source offset whose name starts with `prefix`.
    pub fn sources(&self, prefix: &str) -> Result<Vec<SourceState>, SpoolError> {
        super::sources::read(&self.conn, prefix)
    }
}

impl SpoolDb {
    /// Up to `limit` commands queued for `device` after row `after`, in queue order
    /// ([`commands::pending`]).
    pub fn commands(
        &self,
        device: &str,
        after: i64,
        undelivered_only: bool,
        limit: usize,
    ) -> Result<Vec<commands::Queued>, SpoolError> {
        commands::pending(&self.conn, device, after, undelivered_only, limit)
    }

    /// Up to `limit` commands whose expiry is at or before `now_ms`.
    pub fn due_commands(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<commands::Queued>, SpoolError> {
        commands::due(&self.conn, now_ms, limit)
    }

    /// Per device with queued commands: how many, and how many were delivered.
    pub fn command_counts(&self) -> Result<Vec<(String, u64, u64)>, SpoolError> {
        commands::counts(&self.conn)
    }
}
