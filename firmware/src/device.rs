//! The device loop: sample on a schedule, stamp, buffer, send, resend.
//!
//! Every sample becomes an [`Event`] with the next seq and the clock's time, appended to a
//! bounded buffer of unacknowledged events. [`DeviceLoop::flush`] sends the buffer (oldest
//! first, in batches) over a [`Transport`]; an ACK for seq N releases everything up to N. When
//! the transport fails the events stay, and the next flush reconnects and sends them again: the
//! gateway recognises retransmissions by `(device_id, seq)`, so resending is always safe. When
//! the buffer is full the oldest event is dropped and counted ([`DeviceLoop::dropped`]).
//!
//! Seq numbers must never repeat for a device: [`DeviceLoop::new`] takes the first seq, which a
//! device without persistent storage seeds from its clock (milliseconds since the epoch).

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use tributary_protocol::{Body, Event};

/// How events leave the device.
pub trait Transport {
    type Error: core::fmt::Debug;
    /// Connects (again); called before the first send and after any failure.
    fn connect(&mut self) -> Result<(), Self::Error>;
    /// Sends a batch and returns the highest seq the gateway acknowledged.
    fn send(&mut self, events: &[Event]) -> Result<u64, Self::Error>;
}

/// Something sampled on a schedule.
pub trait Source {
    /// How often to sample, in milliseconds.
    fn interval_ms(&self) -> u64;
    /// Samples every `ms` from now on (a `set_interval` command); `false` if the source
    /// keeps its own pace.
    fn set_interval_ms(&mut self, ms: u64) -> bool {
        let _ = ms;
        false
    }
    /// Takes one sample; `None` when there is nothing to report (no GNSS fix yet, a failed
    /// read). Sources report their own errors (logs, counters).
    fn sample(&mut self) -> Option<Body>;
}

/// Counters a device reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub sampled: u64,
    pub acked: u64,
    pub dropped: u64,
    pub send_failures: u64,
}

pub struct DeviceLoop<T> {
    device_id: String,
    next_seq: u64,
    buffer: VecDeque<Event>,
    capacity: usize,
    batch: usize,
    transport: T,
    connected: bool,
    counters: Counters,
    due: Vec<u64>,
}

impl<T: Transport> DeviceLoop<T> {
    pub fn new(
        device_id: String,
        first_seq: u64,
        capacity: usize,
        batch: usize,
        transport: T,
    ) -> Self {
        Self {
            device_id,
            next_seq: first_seq,
            buffer: VecDeque::with_capacity(capacity.min(4096)),
            capacity: capacity.max(1),
            batch: batch.max(1),
            transport,
            connected: false,
            counters: Counters::default(),
            due: Vec::new(),
        }
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Events waiting for an ACK.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    pub fn transport(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Stamps `body` with the next seq and `now_ms` and buffers it; drops the oldest when full.
    pub fn record(&mut self, body: Body, now_ms: u64) {
        if self.buffer.len() >= self.capacity {
            self.buffer.pop_front();
            self.counters.dropped += 1;
        }
        self.buffer.push_back(Event {
            device_id: self.device_id.clone(),
            seq: self.next_seq,
            time_ms: now_ms,
            body,
        });
        self.next_seq += 1;
        self.counters.sampled += 1;
    }

    /// Samples every source that is due at `now_ms`, then flushes.
    pub fn tick(&mut self, sources: &mut [Box<dyn Source>], now_ms: u64) -> Result<(), T::Error> {
        self.sample_due(sources, now_ms);
        self.flush()
    }

    /// Samples every source that is due at `now_ms`, without sending.
    pub fn sample_due(&mut self, sources: &mut [Box<dyn Source>], now_ms: u64) {
        self.due.resize(sources.len(), 0);
        for (i, source) in sources.iter_mut().enumerate() {
            if now_ms >= self.due[i] {
                self.due[i] = now_ms + source.interval_ms().max(1);
                if let Some(body) = source.sample() {
                    self.record(body, now_ms);
                }
            }
        }
    }

    /// Sends everything buffered, oldest first; on failure keeps it for the next flush.
    pub fn flush(&mut self) -> Result<(), T::Error> {
        while !self.buffer.is_empty() {
            if !self.connected {
                self.transport.connect().inspect_err(|_| {
                    self.counters.send_failures += 1;
                })?;
                self.connected = true;
            }
            let n = self.batch.min(self.buffer.len());
            let batch: Vec<Event> = self.buffer.iter().take(n).cloned().collect();
            match self.transport.send(&batch) {
                Ok(up_to) => {
                    let before = self.buffer.len();
                    while self.buffer.front().is_some_and(|e| e.seq <= up_to) {
                        self.buffer.pop_front();
                    }
                    let released = before - self.buffer.len();
                    self.counters.acked += released as u64;
                    if released == 0 {
                        // The gateway answered without covering the batch; try again later.
                        return Ok(());
                    }
                }
                Err(e) => {
                    self.connected = false;
                    self.counters.send_failures += 1;
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use tributary_protocol::{Reading, SensorValue};

    /// A transport that records what arrived, acks it, and can be told to fail.
    #[derive(Default)]
    struct Fake {
        received: Vec<u64>,
        down: bool,
        connects: u32,
    }

    impl Transport for Fake {
        type Error = &'static str;
        fn connect(&mut self) -> Result<(), &'static str> {
            if self.down {
                return Err("gateway unreachable");
            }
            self.connects += 1;
            Ok(())
        }
        fn send(&mut self, events: &[Event]) -> Result<u64, &'static str> {
            if self.down {
                return Err("connection lost");
            }
            self.received.extend(events.iter().map(|e| e.seq));
            Ok(events.last().map(|e| e.seq).unwrap_or(0))
        }
    }

    struct Counter(f64);

    impl Source for Counter {
        fn interval_ms(&self) -> u64 {
            1000
        }
        fn sample(&mut self) -> Option<Body> {
            self.0 += 1.0;
            Some(Body::Reading(Reading {
                values: vec![SensorValue {
                    name: "n".to_string(),
                    value: self.0,
                    unit: "1".to_string(),
                }],
            }))
        }
    }

    fn device(capacity: usize) -> DeviceLoop<Fake> {
        DeviceLoop::new("dev-1".to_string(), 100, capacity, 4, Fake::default())
    }

    #[test]
    fn samples_are_stamped_sent_and_released_by_acks() {
        let mut d = device(100);
        let mut c: [Box<dyn Source>; 1] = [Box::new(Counter(0.0))];
        for t in 0..5 {
            d.tick(&mut c, t * 1000).unwrap();
        }
        assert_eq!(d.transport().received, [100, 101, 102, 103, 104]);
        assert_eq!(d.pending(), 0);
        assert_eq!(d.counters().acked, 5);
    }

    #[test]
    fn a_source_is_sampled_on_its_schedule_only() {
        let mut d = device(100);
        let mut c: [Box<dyn Source>; 1] = [Box::new(Counter(0.0))];
        for t in [0, 10, 500, 999, 1000, 1500] {
            d.tick(&mut c, t).unwrap();
        }
        assert_eq!(d.counters().sampled, 2);
    }

    #[test]
    fn during_an_outage_events_wait_and_are_resent_in_order_after_reconnecting() {
        let mut d = device(100);
        let mut c: [Box<dyn Source>; 1] = [Box::new(Counter(0.0))];
        d.tick(&mut c, 0).unwrap();
        d.transport().down = true;
        for t in 1..=6 {
            assert!(d.tick(&mut c, t * 1000).is_err());
        }
        assert_eq!(d.pending(), 6);
        d.transport().down = false;
        d.tick(&mut c, 7000).unwrap();
        assert_eq!(
            d.transport().received,
            [100, 101, 102, 103, 104, 105, 106, 107]
        );
        assert_eq!(d.transport().connects, 2, "reconnected once");
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_counts_it() {
        let mut d = device(3);
        d.transport().down = true;
        let mut c: [Box<dyn Source>; 1] = [Box::new(Counter(0.0))];
        for t in 0..5 {
            let _ = d.tick(&mut c, t * 1000);
        }
        assert_eq!(d.counters().dropped, 2);
        d.transport().down = false;
        d.flush().unwrap();
        assert_eq!(
            d.transport().received,
            [102, 103, 104],
            "the newest three survive"
        );
    }
}
