//! One simulated device in a run: its stream, its outbox, its pacing and its reconnects.
//!
//! A device behaves like real firmware. Every event it produces goes into its outbox and
//! stays there until the gateway acknowledged it (a TCP ACK covering its seq, an MQTT PUBACK
//! for its packet). When the connection fails, the device waits with exponential backoff and
//! equal jitter, reconnects, and sends everything still in its outbox again, oldest first;
//! those sends are counted as resent. MQTT QoS 0 has no acknowledgements: an event leaves the
//! outbox once it is written to the connection, and is never resent.
//!
//! - [`tcp`]: the TCP protocol, one batch in flight.
//! - [`mqtt`]: MQTT through rumqttc, a window of publishes in flight; 3.1.1 there, and MQTT 5
//!   in [`mqtt5`], whose reason codes can also say "busy" or "refused for good".

pub mod mqtt;
pub mod mqtt5;
pub mod tcp;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tributary_protocol::{Event, Kind};

use crate::model::faults::Injected;
use crate::scenario::{Backoff, Link, ModelKind};
use crate::stream::DeviceStream;

/// Counters every device adds to, read by the progress bar.
#[derive(Debug, Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub resent: AtomicU64,
    pub connected: AtomicU64,
    /// The most connections up at once.
    pub peak_connected: AtomicU64,
    pub reconnects: AtomicU64,
}

impl Live {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What one device did in a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub id: String,
    pub model: ModelKind,
    pub kind: Kind,
    pub link: Link,
    /// The seq of its first event.
    pub first_seq: u64,
    /// Distinct events sent at least once.
    pub sent: u64,
    /// The highest seq sent, if any.
    pub last_sent_seq: Option<u64>,
    /// Events acknowledged.
    pub acked: u64,
    /// Every seq up to this one is acknowledged (QoS 0: never set).
    pub acked_up_to: Option<u64>,
    /// Sends of an event that had been sent before.
    pub resent: u64,
    pub reconnects: u64,
    /// Events the gateway refused for good (MQTT 5 reason codes other than "busy"): dropped
    /// from the outbox and logged, as a device dead-letters them locally.
    pub refused: u64,
    /// Commands from the gateway obeyed (or answered as not understood), repeats included.
    pub commands: u64,
    pub faults: Injected,
    /// Why the device stopped early, if it did.
    pub error: Option<String>,
}

/// When to stop and how fast to go.
#[derive(Debug, Clone)]
pub struct Pace {
    /// Events to produce; `u64::MAX` for no limit.
    pub events: u64,
    pub speedup: f64,
    pub wall_start: Instant,
    pub sim_start_ms: u64,
    /// When to stop producing; the outbox is still delivered after it.
    pub deadline: Option<Instant>,
    pub cancel: CancellationToken,
    /// Wait before the first connection.
    pub delay: Duration,
    pub batch: usize,
    pub ack_timeout: Duration,
    pub give_up: Duration,
    pub backoff: Backoff,
    /// TLS, password and whether to send a boot session.
    pub credentials: crate::security::Credentials,
    /// Subscribe to the device's commands and obey them (`--commands`).
    pub commands: bool,
}

/// A device's state between connections.
pub struct Device {
    pub stream: DeviceStream,
    pub pace: Pace,
    pub live: Arc<Live>,
    /// Unacknowledged events, in seq order.
    pub outbox: VecDeque<Event>,
    /// The next event, produced but not due yet.
    next: Option<Event>,
    produced: u64,
    pub outcome: Outcome,
    /// Consecutive failed attempts, for the backoff.
    attempts: u32,
    /// When something was last delivered (or the run started), for `give_up`.
    pub last_progress: Instant,
    /// Whether a connection is up, for the live count.
    connected: bool,
    /// This run's boot session, when the run sends sessions.
    pub session: Option<u64>,
}

/// The run was cancelled (Ctrl-C) while a device waited.
#[derive(Debug, PartialEq, Eq)]
pub struct Cancelled;

impl Device {
    pub fn new(stream: DeviceStream, link: Link, pace: Pace, live: Arc<Live>) -> Self {
        let session = pace
            .credentials
            .sessions
            .then(|| rand::random::<u64>().max(1));
        let kind = match stream.model_kind {
            ModelKind::Truck | ModelKind::Car => Kind::Position,
            _ => Kind::Reading,
        };
        let outcome = Outcome {
            id: stream.id.clone(),
            model: stream.model_kind,
            kind,
            link,
            first_seq: stream.next_seq,
            sent: 0,
            last_sent_seq: None,
            acked: 0,
            acked_up_to: None,
            resent: 0,
            reconnects: 0,
            refused: 0,
            commands: 0,
            faults: Injected::default(),
            error: None,
        };
        Self {
            stream,
            pace,
            live,
            outbox: VecDeque::new(),
            next: None,
            produced: 0,
            outcome,
            attempts: 0,
            last_progress: Instant::now(),
            connected: false,
            session,
        }
    }

    /// Runs the device over its link until done, interrupted or given up.
    pub async fn run(mut self, tcp: std::net::SocketAddr, mqtt: std::net::SocketAddr) -> Outcome {
        if !self.pace.delay.is_zero() && self.sleep(self.pace.delay).await.is_err() {
            return self.finish();
        }
        let result = match self.outcome.link {
            Link::Tcp => tcp::run(&mut self, tcp).await,
            Link::Mqtt { qos } => mqtt::run::<mqtt::V311>(&mut self, mqtt, qos).await,
            Link::Mqtt5 { qos } => mqtt::run::<mqtt5::V5>(&mut self, mqtt, qos).await,
        };
        if let Err(error) = result {
            self.outcome.error = Some(error);
        }
        self.finish()
    }

    fn finish(mut self) -> Outcome {
        self.set_connected(false);
        self.outcome.faults = self.stream.faults();
        self.outcome
    }

    /// When the next event is due on the wall clock, producing it if needed; `None` when the
    /// device has produced all it will: its `events`, or everything due before the deadline.
    /// After the deadline a device still delivers its outbox; it only stops producing.
    pub fn next_due(&mut self) -> Option<Instant> {
        if self.next.is_none() && self.produced < self.pace.events {
            self.next = Some(self.stream.next_event());
            self.produced += 1;
        }
        let e = self.next.as_ref()?;
        let due = if self.pace.speedup <= 0.0 {
            self.pace.wall_start
        } else {
            let sim = e.time_ms.saturating_sub(self.pace.sim_start_ms) as f64 / 1000.0;
            self.pace.wall_start + Duration::from_secs_f64(sim / self.pace.speedup)
        };
        if let Some(deadline) = self.pace.deadline {
            if due.max(Instant::now()) >= deadline {
                // Produced, never sent: the run ends before it.
                self.next = None;
                self.produced = self.pace.events;
                return None;
            }
        }
        Some(due)
    }

    /// Moves due events into the outbox until it holds `limit`; returns how many moved.
    pub fn fill(&mut self, limit: usize) -> usize {
        let mut moved = 0;
        let now = Instant::now();
        while self.outbox.len() < limit {
            match self.next_due() {
                Some(due) if due <= now => {
                    if let Some(e) = self.next.take() {
                        self.outbox.push_back(e);
                        moved += 1;
                    }
                }
                _ => break,
            }
        }
        moved
    }

    /// True when everything produced has left the outbox and nothing more will come.
    pub fn finished(&mut self) -> bool {
        self.outbox.is_empty() && self.next_due().is_none()
    }

    /// Does what a command asks, and returns the answer to send: `set_interval` changes the
    /// stream's reporting interval from the next event on (visible in the events' times);
    /// `get_state` tells the interval, the next seq and the model.
    pub fn obey(&mut self, command: &tributary_client::command::Command) -> Vec<u8> {
        use tributary_client::command::{answer, Request};
        self.outcome.commands += 1;
        let result = command.request().and_then(|request| match request {
            Request::SetInterval(ms) => {
                if self.stream.set_interval_ms(ms) {
                    Ok(serde_json::json!({ "interval_ms": ms }))
                } else {
                    Err("a vehicle reports by distance and heading, not by interval".into())
                }
            }
            Request::GetState => Ok(serde_json::json!({
                "interval_ms": self.stream.interval_ms(),
                "next_seq": self.stream.next_seq,
                "model": format!("{:?}", self.stream.model_kind),
                "outbox": self.outbox.len(),
            })),
        });
        answer(result)
    }

    /// True when the run was cancelled (Ctrl-C): stop at once.
    pub fn interrupted(&self) -> bool {
        self.pace.cancel.is_cancelled()
    }

    /// Waits `d` (a backoff), or returns `Err` when cancelled first.
    pub async fn sleep(&self, d: Duration) -> Result<(), Cancelled> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.pace.cancel.cancelled() => Err(Cancelled),
        }
    }

    /// Waits for an event due at `until`, waking at the deadline if that comes first (the
    /// device then stops producing); `Err` when cancelled.
    pub async fn sleep_until(&self, until: Instant) -> Result<(), Cancelled> {
        let until = self.pace.deadline.map_or(until, |d| until.min(d));
        tokio::select! {
            _ = tokio::time::sleep_until(until) => Ok(()),
            _ = self.pace.cancel.cancelled() => Err(Cancelled),
        }
    }

    /// Records that `e` is being written to a connection.
    pub fn on_send(&mut self, seq: u64) {
        if self.outcome.last_sent_seq.is_some_and(|last| seq <= last) {
            self.outcome.resent += 1;
            Live::add(&self.live.resent, 1);
        } else {
            self.outcome.sent += 1;
            self.outcome.last_sent_seq = Some(seq);
            Live::add(&self.live.sent, 1);
        }
    }

    /// Drops acknowledged events from the outbox: every seq up to `up_to`.
    pub fn ack_up_to(&mut self, up_to: u64) -> usize {
        let mut n = 0;
        while self.outbox.front().is_some_and(|e| e.seq <= up_to) {
            self.outbox.pop_front();
            n += 1;
        }
        self.acked(n);
        n
    }

    /// Drops the one acknowledged event `seq`.
    pub fn ack_one(&mut self, seq: u64) {
        if let Some(i) = self.outbox.iter().position(|e| e.seq == seq) {
            self.outbox.remove(i);
            self.acked(1);
        }
    }

    fn acked(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.outcome.acked += n as u64;
        Live::add(&self.live.acked, n as u64);
        self.outcome.acked_up_to = match self.outbox.front() {
            Some(e) => e.seq.checked_sub(1),
            None => self.outcome.last_sent_seq,
        };
        self.attempts = 0;
        self.last_progress = Instant::now();
    }

    /// Drops an event the gateway refused for good (it will never be stored): logged, counted,
    /// and the device moves on.
    pub fn refused(&mut self, seq: u64, reason: &str) {
        if let Some(i) = self.outbox.iter().position(|e| e.seq == seq) {
            self.outbox.remove(i);
            self.outcome.refused += 1;
            tracing::warn!(device = %self.outcome.id, seq, %reason, "The gateway refused an event; dropped.");
        }
        self.last_progress = Instant::now();
    }

    /// Drops an event that was written with QoS 0: no acknowledgement will come.
    pub fn forget(&mut self, seq: u64) {
        if let Some(i) = self.outbox.iter().position(|e| e.seq == seq) {
            self.outbox.remove(i);
        }
        self.attempts = 0;
        self.last_progress = Instant::now();
    }

    pub fn on_connect(&mut self) {
        self.set_connected(true);
    }

    fn set_connected(&mut self, up: bool) {
        if up != self.connected {
            self.connected = up;
            if up {
                let now = self.live.connected.fetch_add(1, Ordering::Relaxed) + 1;
                self.live.peak_connected.fetch_max(now, Ordering::Relaxed);
            } else {
                self.live.connected.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// After a failed connection: counts it, waits the backoff, and says whether to go on.
    pub async fn after_failure(&mut self, error: &str) -> Result<(), String> {
        self.set_connected(false);
        self.outcome.reconnects += 1;
        Live::add(&self.live.reconnects, 1);
        if !self.pace.give_up.is_zero() && self.last_progress.elapsed() > self.pace.give_up {
            return Err(format!(
                "nothing delivered for {:?}, giving up; last error: {error}",
                self.pace.give_up
            ));
        }
        tracing::debug!(device = %self.outcome.id, %error, "Connection failed; backing off.");
        let wait = backoff(self.pace.backoff, self.attempts);
        self.attempts = self.attempts.saturating_add(1);
        match self.sleep(wait).await {
            Ok(()) => Ok(()),
            Err(_) => Ok(()), // interrupted: the caller's loop sees it
        }
    }
}

/// Equal jitter: a random wait between half and all of `initial × 2^attempt`, at most `max`.
pub fn backoff(b: Backoff, attempt: u32) -> Duration {
    let cap = b.initial.saturating_mul(1u32 << attempt.min(20)).min(b.max);
    let ms = cap.as_millis().max(1) as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for _ in 0..200 {
            let first = backoff(b, 0);
            assert!((50..=100).contains(&first.as_millis()), "{first:?}");
            let third = backoff(b, 2);
            assert!((200..=400).contains(&third.as_millis()), "{third:?}");
            let late = backoff(b, 30);
            assert!((1000..=2000).contains(&late.as_millis()), "{late:?}");
        }
        let spread: std::collections::BTreeSet<u128> =
            (0..50).map(|_| backoff(b, 3).as_millis()).collect();
        assert!(spread.len() > 5, "jittered: {spread:?}");
    }
}
