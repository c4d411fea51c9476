//! `teltonika.accept_unknown`, bounded: IMEIs not in `teltonika.names` are taken as their own
//! device ids only up to a total (`accept_unknown_max`) and a rate of new ones
//! (`accept_unknown_per_minute`). An IMEI once taken is taken again without counting, so a
//! fleet that reconnects costs nothing; a stranger cycling through made-up IMEIs runs into the
//! bounds, and what it was refused is counted (`unknown_imei_limit`, `unknown_imei_rate`).
//! In memory: a restart forgets which IMEIs were taken and takes them again, within the bounds.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The IMEIs taken so far, and the current minute's count of new ones.
pub struct Newcomers {
    max: usize,
    per_minute: u32,
    state: Mutex<State>,
}

struct State {
    taken: HashSet<String>,
    minute_started: Instant,
    this_minute: u32,
}

impl Newcomers {
    pub fn new(max: usize, per_minute: u32) -> Self {
        Self {
            max,
            per_minute,
            state: Mutex::new(State {
                taken: HashSet::new(),
                minute_started: Instant::now(),
                this_minute: 0,
            }),
        }
    }

    /// `Ok` if `imei` may be taken now; else the counter label of the bound it ran into.
    pub fn admit(&self, imei: &str) -> Result<(), &'static str> {
        self.admit_at(imei, Instant::now())
    }

    fn admit_at(&self, imei: &str, now: Instant) -> Result<(), &'static str> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.taken.contains(imei) {
            return Ok(());
        }
        if s.taken.len() >= self.max {
            return Err("unknown_imei_limit");
        }
        if now.duration_since(s.minute_started) >= Duration::from_secs(60) {
            s.minute_started = now;
            s.this_minute = 0;
        }
        if s.this_minute >= self.per_minute {
            return Err("unknown_imei_rate");
        }
        s.this_minute += 1;
        s.taken.insert(imei.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_imeis_are_taken_within_the_rate_and_the_total_and_known_ones_always() {
        let n = Newcomers::new(3, 2);
        let t0 = Instant::now();
        assert_eq!(n.admit_at("1", t0), Ok(()));
        assert_eq!(n.admit_at("2", t0), Ok(()));
        assert_eq!(n.admit_at("3", t0), Err("unknown_imei_rate"));
        assert_eq!(n.admit_at("1", t0), Ok(()), "taken before: free");
        let t1 = t0 + Duration::from_secs(61);
        assert_eq!(n.admit_at("3", t1), Ok(()));
        assert_eq!(n.admit_at("4", t1), Err("unknown_imei_limit"));
        assert_eq!(n.admit_at("2", t1), Ok(()));
    }
}
