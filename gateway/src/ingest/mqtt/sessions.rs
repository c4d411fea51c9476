//! MQTT 5 session expiry: which client ids have a session to resume.
//!
//! A device listener session holds little state a device could lose: a publish is acknowledged
//! only once stored, QoS 2's PUBREL is answered from nothing (the publish was stored at PUBREC),
//! and a device's commands wait in the spool, not here. What a session is, here, is the promise
//! the CONNACK's Session Present flag makes, and the one subscription a device may hold (its
//! commands' filters): a client that connects with Clean Start 0 within its Session Expiry
//! Interval of its last connection hears "session present", as the MQTT 5 specification
//! requires, keeps its in-flight publishes to resend, and gets its commands without
//! subscribing again.
//!
//! The registry lives in memory: after a gateway restart no session is present, and a client
//! resends what it had in flight only if its library does so regardless (the events it saw
//! acknowledged are in the spool either way). It is bounded: past [`MAX_SESSIONS`] entries,
//! expired ones are dropped, and if none has expired a new session is not kept (its next
//! CONNECT hears "no session", which is always safe).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most sessions kept between connections.
pub const MAX_SESSIONS: usize = 100_000;

/// A session kept between connections: when it expires (`None`: never, for an interval of
/// `u32::MAX`), and the subscription filters it held (a device's commands).
#[derive(Debug, Clone)]
struct Kept {
    expires: Option<Instant>,
    filters: Vec<(String, rumqttc::mqttbytes::QoS)>,
}

/// Client ids with a session that outlives its connection.
#[derive(Debug, Default)]
pub struct Sessions {
    kept: Mutex<HashMap<String, Kept>>,
    /// Each client id's latest connection, numbered: a delayed Will checks it has none newer.
    latest: Mutex<HashMap<String, u64>>,
    next: std::sync::atomic::AtomicU64,
}

impl Sessions {
    /// A CONNECT accepted for `client_id`: this connection's number.
    pub fn connected(&self, client_id: &str) -> u64 {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        if latest.len() >= MAX_SESSIONS && !latest.contains_key(client_id) {
            // Forgetting makes a delayed Will think no newer connection came: it is stored,
            // which errs towards telling.
            latest.clear();
        }
        latest.insert(client_id.to_owned(), n);
        n
    }

    /// Whether `client_id` connected again after its connection number `n`.
    pub fn superseded(&self, client_id: &str, n: u64) -> bool {
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest.get(client_id).is_some_and(|&m| m != n)
    }

    /// A CONNECT: the session kept for `client_id` (its subscription filters), if one is
    /// present. Clean Start discards it.
    pub fn resume(
        &self,
        client_id: &str,
        clean_start: bool,
    ) -> Option<Vec<(String, rumqttc::mqttbytes::QoS)>> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let k = kept.remove(client_id)?;
        (!clean_start && k.expires.is_none_or(|at| at > Instant::now())).then_some(k.filters)
    }

    /// A connection ended: keep its session, with its subscription `filters`, for `expiry_s`
    /// seconds (0: not at all).
    pub fn end(
        &self,
        client_id: &str,
        expiry_s: u32,
        filters: Vec<(String, rumqttc::mqttbytes::QoS)>,
    ) {
        if expiry_s == 0 || client_id.is_empty() {
            return;
        }
        let now = Instant::now();
        let expires = match expiry_s {
            u32::MAX => None,
            s => now.checked_add(Duration::from_secs(u64::from(s))),
        };
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= MAX_SESSIONS {
            kept.retain(|_, k| k.expires.is_none_or(|at| at > now));
            if kept.len() >= MAX_SESSIONS {
                return;
            }
        }
        kept.insert(client_id.to_owned(), Kept { expires, filters });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_present_within_its_expiry_unless_clean_start_discards_it() {
        let sessions = Sessions::default();
        assert!(sessions.resume("a", false).is_none(), "never connected");
        sessions.end("a", 60, Vec::new());
        assert!(sessions.resume("a", false).is_some());
        sessions.end("a", 60, Vec::new());
        assert!(sessions.resume("a", true).is_none(), "clean start");
        assert!(sessions.resume("a", false).is_none(), "and it is gone");
        sessions.end("b", 0, Vec::new());
        assert!(
            sessions.resume("b", false).is_none(),
            "expiry 0: ends with the connection"
        );
        let filters = vec![(
            "devices/c/commands/#".to_owned(),
            rumqttc::mqttbytes::QoS::AtLeastOnce,
        )];
        sessions.end("c", u32::MAX, filters.clone());
        assert_eq!(sessions.resume("c", false), Some(filters), "never expires");
    }
}
