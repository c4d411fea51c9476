//! Sequence state: what the spool remembers per device to recognise retransmissions.
//!
//! An event's identity is `(device_id, session, seq)`. `session` names a boot of the device
//! (TCP `Hello::session`, the JSON event's `session`; 0 for devices that send none), so sequence
//! numbers are compared only within one boot: a device that reboots and counts from 1 again
//! starts a new session instead of looking like a retransmission.
//!
//! # The rule: drop only what is known to be stored
//! Per lane (below) the spool keeps a [`Window`]: the highest seq stored and which of the
//! `spool.dedup_window` seqs up to it are stored, each with its event time's fingerprint. An
//! incoming event is:
//! - **new** if its seq is above the highest, or inside the window and not stored (a gap, or
//!   out of order): stored;
//! - a **duplicate** only if its seq is inside the window, stored, with the same event time: a
//!   retransmission of a stored event. Acknowledged again, not stored;
//! - a **regression** if its seq is inside the window and stored with another event time: the
//!   device reused a seq (a counter reset). Stored, with a `seq-reused` header, counted and
//!   logged with both numbers;
//! - **unvouched** if its seq is more than the window's width below the highest: the window
//!   cannot tell a retransmission from a reset, so it is stored, with a `possible-duplicate`
//!   header (consumers that de-duplicate by `event-id` still can), counted and logged, and the
//!   window starts again from it. So one forged or glitched seq far ahead costs a device one
//!   flagged event, never its later ones.
//!
//! An event's time never moves the state: it is compared, never trusted as "latest". The
//! latest event time kept for display is capped at [`FUTURE_BOUND_MS`] past the receive time.
//!
//! # Lanes
//! Events written for a device by another identity (an ACL rule letting a tracker publish for
//! its trailers, a mapping with `identity = "mapped"`, the bridge, a tailed file) keep a lane of
//! their own: the key `"{device}\0{writer}"`. They can never make the device's own events look
//! old, nor the device theirs.
//!
//! # Bounds
//! A session not heard from for `spool.forget_devices_after_ms` is forgotten, and a lane keeps
//! at most [`MAX_SESSIONS_PER_DEVICE`] sessions (the most recently seen). An event of a
//! forgotten session is stored as new: a retransmission that arrives after that time is a
//! duplicate in Kafka, recognisable by its `event-id`.

mod window;

pub use window::{fingerprint, valid_width, Seen, Window};

/// Keyed by device id, looked up several times per event on the writer: foldhash (seeded per
/// map) instead of SipHash, which took most of the writer's time spent judging.
type HashMap<K, V> = foldhash::HashMap<K, V>;
use foldhash::HashMapExt as _;

/// Sessions kept per lane; older ones are forgotten.
pub const MAX_SESSIONS_PER_DEVICE: usize = 16;

/// The window's width when the config does not say (`spool.dedup_window`).
pub const DEFAULT_WINDOW: usize = 256;

/// How far past its receive time an event's time may count as the session's latest (display
/// only: times decide nothing).
pub const FUTURE_BOUND_MS: i64 = 55 * 60 * 1000;

/// The header on an event the window could not vouch for (its seq was far below the
/// session's highest), valued `below-window`: it may repeat an event stored before.
pub const POSSIBLE_DUPLICATE: &str = "possible-duplicate";

/// The header on an event whose seq was stored before with another event time (a counter
/// reset), valued with the session's highest seq then: its `event-id` also names an earlier,
/// different event.
pub const SEQ_REUSED: &str = "seq-reused";

/// The key of a lane: the device alone for its own events, `device\0writer` for events another
/// identity wrote for it.
pub fn lane<'a>(device: &'a str, writer: Option<&str>) -> std::borrow::Cow<'a, str> {
    match writer {
        None => std::borrow::Cow::Borrowed(device),
        Some(w) => std::borrow::Cow::Owned(format!("{device}\0{w}")),
    }
}

/// The device and the writer of a lane's key.
pub fn split_lane(key: &str) -> (&str, Option<&str>) {
    match key.split_once('\0') {
        Some((device, writer)) => (device, Some(writer)),
        None => (key, None),
    }
}

/// The state of one `(lane, session)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: u64,
    pub window: Window,
    /// The latest event time stored, capped at [`FUTURE_BOUND_MS`] past its receive time.
    pub max_time_ms: i64,
    pub last_seen_ms: i64,
    /// Seqs reused with another event time in this session so far.
    pub regressions: u64,
    /// Events stored below the window (marked `possible-duplicate`) so far.
    pub unvouched: u64,
}

impl Session {
    pub fn new(id: u64, width: usize, now_ms: i64) -> Self {
        Self {
            id,
            window: Window::new(width),
            max_time_ms: i64::MIN,
            last_seen_ms: now_ms,
            regressions: 0,
            unvouched: 0,
        }
    }

    pub fn max_seq(&self) -> u64 {
        self.window.highest()
    }

    /// Records `seq` at `time_ms` as stored.
    pub fn store(&mut self, seq: u64, time_ms: i64, now_ms: i64) {
        self.window.mark(seq, fingerprint(time_ms));
        self.max_time_ms = self
            .max_time_ms
            .max(time_ms.min(now_ms.saturating_add(FUTURE_BOUND_MS)));
        self.last_seen_ms = now_ms;
    }
}

/// What an incoming event is, to the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    New,
    Duplicate,
    /// Stored: the seq was stored before with another event time; the highest was `max_seq`.
    Regression {
        max_seq: u64,
    },
    /// Stored: the seq is below the window, whose highest was `max_seq`.
    Unvouched {
        max_seq: u64,
    },
}

/// A stored event the window could not simply call new, for the log and the counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regression {
    pub device_id: String,
    pub writer: Option<String>,
    pub session: u64,
    pub seq: u64,
    pub max_seq: u64,
    /// True: below the window (`possible-duplicate`); false: a seq reused with another time.
    pub unvouched: bool,
}

/// The committed state, per lane.
#[derive(Debug)]
pub struct Seqs {
    devices: HashMap<String, Vec<Session>>,
    width: usize,
}

impl Default for Seqs {
    fn default() -> Self {
        Self {
            devices: HashMap::new(),
            width: DEFAULT_WINDOW,
        }
    }
}

/// Changes made by one transaction, applied to [`Seqs`] only once it committed.
#[derive(Debug, Default)]
pub struct Changes {
    /// Per lane, the sessions this transaction changed (keyed by lane alone, so an event of a
    /// lane already seen in the transaction is judged without allocating its key).
    pub sessions: HashMap<String, Vec<Session>>,
    pub regressions: Vec<Regression>,
}

impl Seqs {
    /// The state as stored, with windows `width` wide.
    pub fn from_rows(rows: impl IntoIterator<Item = (String, Session)>, width: usize) -> Self {
        let mut devices: HashMap<String, Vec<Session>> = HashMap::new();
        for (device, session) in rows {
            devices.entry(device).or_default().push(session);
        }
        Self { devices, width }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// The session `session` of `lane` (a device id, or [`lane`]'s key).
    pub fn get(&self, lane: &str, session: u64) -> Option<&Session> {
        self.devices.get(lane)?.iter().find(|s| s.id == session)
    }

    /// Judges one event against the committed state plus `changes`, and records the outcome in
    /// `changes`. `writer` is the identity that wrote it when that is not the device itself.
    #[allow(clippy::too_many_arguments)]
    pub fn judge(
        &self,
        changes: &mut Changes,
        device: &str,
        writer: Option<&str>,
        session: u64,
        seq: u64,
        time_ms: i64,
        now_ms: i64,
    ) -> Verdict {
        let key = lane(device, writer);
        if !changes.sessions.contains_key(key.as_ref()) {
            changes
                .sessions
                .insert(key.clone().into_owned(), Vec::new());
        }
        let Some(sessions) = changes.sessions.get_mut(key.as_ref()) else {
            // Inserted just above; stored rather than dropped all the same.
            return Verdict::New;
        };
        let s = match sessions.iter().position(|s| s.id == session) {
            Some(i) => &mut sessions[i],
            None => {
                let fresh = self
                    .get(&key, session)
                    .cloned()
                    .unwrap_or_else(|| Session::new(session, self.width, now_ms));
                sessions.push(fresh);
                let last = sessions.len() - 1;
                &mut sessions[last]
            }
        };
        let max_seq = s.max_seq();
        let verdict = match s.window.seen(seq) {
            Seen::Above | Seen::Unmarked => Verdict::New,
            // A window that vouches for nothing (a session from before windows were kept) has
            // nothing to be below of.
            Seen::Below if s.window.marked() == 0 => Verdict::New,
            Seen::Marked(print) if print == fingerprint(time_ms) => {
                s.last_seen_ms = now_ms;
                return Verdict::Duplicate;
            }
            Seen::Marked(_) => {
                s.regressions += 1;
                Verdict::Regression { max_seq }
            }
            Seen::Below => {
                s.unvouched += 1;
                Verdict::Unvouched { max_seq }
            }
        };
        s.store(seq, time_ms, now_ms);
        if let Verdict::Regression { .. } | Verdict::Unvouched { .. } = verdict {
            changes.regressions.push(Regression {
                device_id: device.to_owned(),
                writer: writer.map(str::to_owned),
                session,
                seq,
                max_seq,
                unvouched: matches!(verdict, Verdict::Unvouched { .. }),
            });
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
    /// [`MAX_SESSIONS_PER_DEVICE`] of their lane. Removes them from memory.
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

    /// Forgets every session of `device`, its lanes written by others included.
    pub fn reset(&mut self, device: &str) {
        self.devices.retain(|key, _| split_lane(key).0 != device);
    }
}

#[cfg(test)]
mod tests;
