//! Sequence state: what the spool remembers per device to recognise retransmissions.
//!
//! An event's identity is `(device_id, session, seq)`. `session` names a boot of the device
//! (TCP `Hello::session`, the JSON event's `session`; 0 for devices that send none), so sequence
//! numbers are compared only within one boot: a device that reboots and counts from 1 again
//! starts a new session instead of looking like a retransmission, and a forged seq in one session
//! cannot silence another.
//!
//! Per `(device, session)` the spool keeps the highest seq stored and the latest event time among
//! the stored events (`sessions` table, mirrored in memory). An incoming event is:
//! - **new** if its seq is above the highest: stored;
//! - a **duplicate** if its seq is at or below the highest and its time is not after the latest
//!   stored time: a retransmission carries its original time, so this is what one looks like.
//!   Acknowledged again, not stored;
//! - a **regression** if its seq is at or below the highest but its time is after every stored
//!   event's: no retransmission can look like that, so the device reset its counter (a reboot
//!   without a session id, wiped storage). It is stored, the session's state restarts from it,
//!   and it is counted and logged with both numbers. A device that resets its seq *and* its
//!   clock (a Pi without a real-time clock) cannot be told from a retransmission this way; that
//!   is what sessions are for.
//!
//! # Bounds
//! A session not heard from for `spool.forget_devices_after_ms` is forgotten, and a device
//! keeps at most [`MAX_SESSIONS_PER_DEVICE`] sessions (the most recently seen). An event of a
//! forgotten session is stored as new: a retransmission that arrives after that time is a
//! duplicate in Kafka, recognisable by its `event-id`.

/// Keyed by device id, looked up several times per event on the writer: foldhash (seeded per
/// map) instead of SipHash, which took most of the writer's time spent judging.
type HashMap<K, V> = foldhash::HashMap<K, V>;
use foldhash::HashMapExt as _;

/// Sessions kept per device; older ones are forgotten.
pub const MAX_SESSIONS_PER_DEVICE: usize = 16;

/// The state of one `(device, session)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub id: u64,
    pub max_seq: u64,
    pub max_time_ms: i64,
    pub last_seen_ms: i64,
    /// Regressions seen in this session so far.
    pub regressions: u64,
}

/// What an incoming event is, to the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    New,
    Duplicate,
    /// Stored; the session's highest seq was `max_seq`.
    Regression {
        max_seq: u64,
    },
}

/// A regression, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regression {
    pub device_id: String,
    pub session: u64,
    pub seq: u64,
    pub max_seq: u64,
}

/// The committed state, per device.
#[derive(Debug, Default)]
pub struct Seqs {
    devices: HashMap<String, Vec<Session>>,
}

/// Changes made by one transaction, applied to [`Seqs`] only once it committed.
#[derive(Debug, Default)]
pub struct Changes {
    /// Per device, the sessions this transaction changed (keyed by device alone, so an event of
    /// a device already seen in the transaction is judged without allocating its id).
    pub sessions: HashMap<String, Vec<Session>>,
    pub regressions: Vec<Regression>,
}

impl Seqs {
    pub fn from_rows(rows: impl IntoIterator<Item = (String, Session)>) -> Self {
        let mut devices: HashMap<String, Vec<Session>> = HashMap::new();
        for (device, session) in rows {
            devices.entry(device).or_default().push(session);
        }
        Self { devices }
    }

    pub fn get(&self, device: &str, session: u64) -> Option<&Session> {
        self.devices.get(device)?.iter().find(|s| s.id == session)
    }

    /// Judges one event against the committed state plus `changes`, and records the outcome in
    /// `changes`.
    pub fn judge(
        &self,
        changes: &mut Changes,
        device: &str,
        session: u64,
        seq: u64,
        time_ms: i64,
        now_ms: i64,
    ) -> Verdict {
        let current = changes
            .sessions
            .get(device)
            .and_then(|changed| changed.iter().find(|s| s.id == session))
            .or_else(|| self.get(device, session))
            .copied();
        let (next, verdict) = match current {
            None => (
                Session {
                    id: session,
                    max_seq: seq,
                    max_time_ms: time_ms,
                    last_seen_ms: now_ms,
                    regressions: 0,
                },
                Verdict::New,
            ),
            Some(s) if seq > s.max_seq => (
                Session {
                    max_seq: seq,
                    max_time_ms: s.max_time_ms.max(time_ms),
                    last_seen_ms: now_ms,
                    ..s
                },
                Verdict::New,
            ),
            Some(s) if time_ms <= s.max_time_ms => return Verdict::Duplicate,
            Some(s) => {
                changes.regressions.push(Regression {
                    device_id: device.to_owned(),
                    session,
                    seq,
                    max_seq: s.max_seq,
                });
                (
                    Session {
                        max_seq: seq,
                        max_time_ms: time_ms,
                        last_seen_ms: now_ms,
                        regressions: s.regressions + 1,
                        ..s
                    },
                    Verdict::Regression { max_seq: s.max_seq },
                )
            }
        };
        match changes.sessions.get_mut(device) {
            Some(changed) => match changed.iter_mut().find(|s| s.id == session) {
                Some(s) => *s = next,
                None => changed.push(next),
            },
            None => {
                changes.sessions.insert(device.to_owned(), vec![next]);
            }
        }
        verdict
    }

    /// Applies a committed transaction's changes.
    pub fn apply(&mut self, changes: Changes) {
        for (device, changed) in changes.sessions {
            let sessions = self.devices.entry(device).or_default();
            for session in changed {
                match sessions.iter_mut().find(|s| s.id == session.id) {
                    Some(s) => *s = session,
                    None => sessions.push(session),
                }
            }
        }
    }

    /// Sessions to forget: idle since before `cutoff_ms`, or beyond the most recent
    /// [`MAX_SESSIONS_PER_DEVICE`] of their device. Removes them from memory.
    pub fn forget(&mut self, cutoff_ms: i64) -> Vec<(String, u64)> {
        let mut gone = Vec::new();
        self.devices.retain(|device, sessions| {
            sessions.sort_by_key(|s| std::cmp::Reverse(s.last_seen_ms));
            let mut kept = 0;
            sessions.retain(|s| {
                let keep = s.last_seen_ms >= cutoff_ms && kept < MAX_SESSIONS_PER_DEVICE;
                if keep {
                    kept += 1;
                } else {
                    gone.push((device.clone(), s.id));
                }
                keep
            });
            !sessions.is_empty()
        });
        gone
    }

    /// Forgets every session of `device`.
    pub fn reset(&mut self, device: &str) {
        self.devices.remove(device);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(seqs: &mut Seqs, device: &str, session: u64, seq: u64, time: i64) -> Verdict {
        let mut changes = Changes::default();
        let v = seqs.judge(&mut changes, device, session, seq, time, 1000);
        seqs.apply(changes);
        v
    }

    #[test]
    fn a_retransmission_is_a_duplicate_and_a_reset_counter_with_a_later_time_is_not() {
        let mut s = Seqs::default();
        assert_eq!(judge(&mut s, "d", 0, 10, 100), Verdict::New);
        assert_eq!(judge(&mut s, "d", 0, 11, 110), Verdict::New);
        assert_eq!(judge(&mut s, "d", 0, 10, 100), Verdict::Duplicate);
        assert_eq!(
            judge(&mut s, "d", 0, 1, 200),
            Verdict::Regression { max_seq: 11 }
        );
        assert_eq!(judge(&mut s, "d", 0, 2, 210), Verdict::New);
        assert_eq!(s.get("d", 0).unwrap().regressions, 1);
    }

    #[test]
    fn sessions_are_independent_so_a_forged_seq_cannot_silence_another_boot() {
        let mut s = Seqs::default();
        assert_eq!(judge(&mut s, "d", 7, u64::MAX, i64::MAX), Verdict::New);
        assert_eq!(judge(&mut s, "d", 8, 1, 5), Verdict::New);
        assert_eq!(judge(&mut s, "d", 8, 2, 6), Verdict::New);
        assert_eq!(judge(&mut s, "d", 7, 3, 7), Verdict::Duplicate);
    }

    #[test]
    fn changes_within_one_transaction_see_each_other() {
        let s = Seqs::default();
        let mut changes = Changes::default();
        assert_eq!(s.judge(&mut changes, "d", 0, 1, 1, 0), Verdict::New);
        assert_eq!(s.judge(&mut changes, "d", 0, 1, 1, 0), Verdict::Duplicate);
        assert!(s.get("d", 0).is_none(), "nothing applied before commit");
    }

    #[test]
    fn idle_and_surplus_sessions_are_forgotten() {
        let mut s = Seqs::default();
        for id in 0..(MAX_SESSIONS_PER_DEVICE as u64 + 3) {
            let mut changes = Changes::default();
            s.judge(&mut changes, "many", id, 1, 1, 100 + id as i64);
            s.apply(changes);
        }
        let mut changes = Changes::default();
        s.judge(&mut changes, "idle", 0, 1, 1, 5);
        s.apply(changes);
        let gone = s.forget(50);
        assert_eq!(gone.len(), 4, "{gone:?}");
        assert!(gone.contains(&("idle".to_owned(), 0)));
        assert!(gone.contains(&("many".to_owned(), 0)));
        assert!(s.get("many", 18).is_some());
        assert!(s.get("idle", 0).is_none());
    }
}
