//! Admission to password checks: how many may wait, and how many one address may run at once.
//!
//! An argon2id check costs about 27 ms of a core on a small machine, so a flood of logins must
//! not queue without bound nor let one address take every checking thread:
//! - at most [`MAX_PENDING`] checks wait or run at a time; one more is refused `auth_busy` at
//!   once (the device retries later, as after any busy answer);
//! - one address runs at most half the checking threads' worth of checks at a time (at least
//!   one); its further attempts wait their turn, so other addresses always get threads;
//! - the caller bounds the whole wait ([`AUTH_BUDGET`]): an attempt not checked by then is
//!   refused `auth_busy` and its place in the queue is given up.
//!
//! A password the verifier remembers as verified is not admitted here at all: it costs no check.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Checks that may wait or run at a time.
pub const MAX_PENDING: usize = 8192;
/// The longest an authentication may take, throttle and queue included. Long enough for a cold
/// reconnect storm on a small core to go through (each device waits its turn once, rather than
/// being sent away to pay for another TLS handshake), short enough that nothing waits forever.
pub const AUTH_BUDGET: Duration = Duration::from_secs(60);

pub struct Admission {
    pending: Arc<AtomicUsize>,
    per_address: usize,
    addresses: Arc<Mutex<HashMap<IpAddr, Arc<Semaphore>>>>,
}

/// A place among the pending checks; given up when dropped.
pub struct Ticket {
    pending: Arc<AtomicUsize>,
    ip: IpAddr,
    turn: Arc<Semaphore>,
    addresses: Arc<Mutex<HashMap<IpAddr, Arc<Semaphore>>>>,
}

impl Admission {
    /// `threads`: the checking threads there are.
    pub fn new(threads: usize) -> Self {
        Self {
            pending: Arc::default(),
            per_address: (threads / 2).max(1),
            addresses: Arc::default(),
        }
    }

    /// A place in the queue for an attempt from `ip`; `None` when [`MAX_PENDING`] are waiting.
    pub fn enter(&self, ip: IpAddr) -> Option<Ticket> {
        let taken = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_PENDING).then_some(n + 1)
            });
        taken.ok()?;
        let turn = self
            .addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(ip)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_address)))
            .clone();
        Some(Ticket {
            pending: self.pending.clone(),
            ip,
            turn,
            addresses: self.addresses.clone(),
        })
    }
}

impl Ticket {
    /// Waits until this address may run one more check.
    pub async fn turn(&self) -> Option<OwnedSemaphorePermit> {
        self.turn.clone().acquire_owned().await.ok()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
        let mut addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        // The table holds one reference and this ticket another: nobody else waits here.
        if Arc::strong_count(&self.turn) <= 2 {
            addresses.remove(&self.ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_queue_is_bounded_and_one_address_runs_only_its_share() {
        let a = Admission::new(4);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t1 = a.enter(ip).unwrap();
        let t2 = a.enter(ip).unwrap();
        let t3 = a.enter(ip).unwrap();
        let _p1 = t1.turn().await.unwrap();
        let _p2 = t2.turn().await.unwrap();
        let third = tokio::time::timeout(Duration::from_millis(20), t3.turn()).await;
        assert!(
            third.is_err(),
            "a third check from one address waits (4 threads: 2 each)"
        );
        let t4 = a.enter(other).unwrap();
        assert!(t4.turn().await.is_some(), "another address is not held up");
        drop((t3, t4));
        let mut held = Vec::new();
        while let Some(t) = a.enter(other) {
            held.push(t);
        }
        assert_eq!(held.len() + 2, MAX_PENDING, "bounded");
        drop(held);
        assert!(a.enter(other).is_some());
        drop((t1, t2));
        assert!(a.addresses.lock().unwrap().len() <= 1);
    }
}
