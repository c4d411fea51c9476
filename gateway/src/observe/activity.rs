//! What the status page shows that metrics must not carry: per-device activity (metrics have
//! no device labels), rates over the last minutes, and the last refusals.
//!
//! All in memory and bounded: at most [`MAX_DEVICES`] devices (the least recently seen are
//! forgotten first), [`MAX_REFUSALS`] refusals, [`RATE_SECONDS`] seconds of rates, and a trail
//! of [`TRAIL`] positions per vehicle. Updated once per committed batch, not per event.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tributary_protocol::{Body, Event};

use crate::transport::Transport;

pub const MAX_DEVICES: usize = 10_000;
pub const MAX_REFUSALS: usize = 100;
pub const RATE_SECONDS: usize = 300;
pub const TRAIL: usize = 30;

/// One device as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    pub id: String,
    pub transport: Transport,
    /// Open connections of this device.
    pub connected: u32,
    pub last_seen_ms: i64,
    /// Events in the last whole minute; in a device's first minute, those so far. Steady for a
    /// steady device (a count of the minute so far would start again from nothing every
    /// minute).
    pub per_min: u32,
    /// Receive time minus event time of its latest event (positive: the device is behind).
    pub skew_ms: Option<i64>,
    pub last_refusal: Option<String>,
    pub position: Option<Fix>,
    /// Earlier positions, oldest first, as `[lat, lon]`.
    pub trail: VecDeque<[f64; 2]>,
    #[serde(skip)]
    minute: (i64, u32),
    /// The count of the minute just before `minute.0` (0: none came in it).
    #[serde(skip)]
    minute_before: u32,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Fix {
    pub lat: f64,
    pub lon: f64,
    /// The fix's event time, as the device stamped it.
    pub time_ms: i64,
    /// When the gateway committed it: what the map's freshness follows (a device's clock, or
    /// a simulator replaying the past, may stamp hours behind).
    pub received_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub time_ms: i64,
    pub transport: Transport,
    pub reason: &'static str,
    pub device: Option<String>,
    pub peer: Option<String>,
}

/// Per-second counts for the last [`RATE_SECONDS`] seconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rates {
    pub received: VecDeque<u64>,
    pub acked: VecDeque<u64>,
    pub forwarded: VecDeque<u64>,
    pub refused: VecDeque<u64>,
    #[serde(skip)]
    last: Option<[u64; 4]>,
}

#[derive(Debug, Default)]
struct Inner {
    devices: HashMap<String, Device>,
    refusals: VecDeque<Refusal>,
    rates: Rates,
}

/// Shared; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Activity {
    inner: Arc<Mutex<Inner>>,
}

impl Activity {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A committed batch of `events` from `transport`, received at `now_ms`.
    pub fn events<'a>(
        &self,
        transport: Transport,
        events: impl IntoIterator<Item = &'a Event>,
        now_ms: i64,
    ) {
        self.with(|inner| {
            for event in events {
                let d = device(&mut inner.devices, &event.device_id, transport);
                d.last_seen_ms = now_ms;
                let minute = now_ms.div_euclid(60_000);
                d.minute = match d.minute {
                    (m, n) if m == minute => (m, n + 1),
                    (m, n) => {
                        d.minute_before = if m == minute - 1 { n } else { 0 };
                        (minute, 1)
                    }
                };
                let time_ms = i64::try_from(event.time_ms).unwrap_or(i64::MAX);
                d.skew_ms = Some(now_ms.saturating_sub(time_ms));
                if let Body::Position(p) = &event.body {
                    if d.position.as_ref().is_none_or(|f| time_ms >= f.time_ms) {
                        if let Some(old) = d.position {
                            d.trail.push_back([old.lat, old.lon]);
                            if d.trail.len() > TRAIL {
                                d.trail.pop_front();
                            }
                        }
                        d.position = Some(Fix {
                            lat: p.lat,
                            lon: p.lon,
                            time_ms,
                            received_ms: now_ms,
                        });
                    }
                }
            }
        })
    }

    /// A device's connection opened at `now_ms`; it counts as connected until the guard is
    /// dropped. A device not heard from before is seen from now.
    pub fn connected(&self, device_id: &str, transport: Transport, now_ms: i64) -> Connected {
        self.with(|inner| {
            let d = device(&mut inner.devices, device_id, transport);
            d.connected += 1;
            d.last_seen_ms = d.last_seen_ms.max(now_ms);
        });
        Connected {
            activity: self.clone(),
            device: device_id.to_owned(),
        }
    }

    /// A refusal, with the device and peer where known.
    pub fn refused(
        &self,
        transport: Transport,
        reason: &'static str,
        device: Option<&str>,
        peer: Option<SocketAddr>,
        now_ms: i64,
    ) {
        self.with(|inner| {
            if let Some(id) = device {
                if let Some(d) = inner.devices.get_mut(id) {
                    d.last_refusal = Some(reason.to_owned());
                }
            }
            inner.refusals.push_back(Refusal {
                time_ms: now_ms,
                transport,
                reason,
                device: device.map(|d| crate::logline::clip(d).into_owned()),
                peer: peer.map(|p| p.to_string()),
            });
            if inner.refusals.len() > MAX_REFUSALS {
                inner.refusals.pop_front();
            }
        })
    }

    /// Once a second: the running totals of received, acknowledged, forwarded and refused.
    pub fn tick(&self, totals: [u64; 4]) {
        self.with(|inner| {
            let r = &mut inner.rates;
            if let Some(last) = r.last {
                let d = |i: usize| totals[i].saturating_sub(last[i]);
                for (series, i) in [
                    (&mut r.received, 0),
                    (&mut r.acked, 1),
                    (&mut r.forwarded, 2),
                    (&mut r.refused, 3),
                ] {
                    series.push_back(d(i));
                    if series.len() > RATE_SECONDS {
                        series.pop_front();
                    }
                }
            }
            r.last = Some(totals);
        })
    }

    /// Devices (most recently seen first, at most `limit`), rates and the last refusals.
    pub fn snapshot(&self, limit: usize, now_ms: i64) -> (Vec<Device>, Rates, Vec<Refusal>) {
        let minute = now_ms.div_euclid(60_000);
        self.with(|inner| {
            let mut devices: Vec<Device> = inner
                .devices
                .values()
                .map(|d| Device {
                    per_min: per_minute(d, minute),
                    ..d.clone()
                })
                .collect();
            devices.sort_by(|a, b| b.last_seen_ms.cmp(&a.last_seen_ms).then(a.id.cmp(&b.id)));
            devices.truncate(limit);
            (
                devices,
                inner.rates.clone(),
                inner.refusals.iter().cloned().collect(),
            )
        })
    }
}

/// The entry for `id`, made if new; when the table is full, the least recently seen device
/// that is not connected makes room.
fn device<'a>(
    devices: &'a mut HashMap<String, Device>,
    id: &str,
    transport: Transport,
) -> &'a mut Device {
    if !devices.contains_key(id) && devices.len() >= MAX_DEVICES {
        let oldest = devices
            .values()
            .filter(|d| d.connected == 0)
            .min_by_key(|d| d.last_seen_ms)
            .map(|d| d.id.clone());
        if let Some(oldest) = oldest {
            devices.remove(&oldest);
        }
    }
    let d = devices.entry(id.to_owned()).or_insert_with(|| Device {
        id: id.to_owned(),
        transport,
        connected: 0,
        last_seen_ms: 0,
        per_min: 0,
        skew_ms: None,
        last_refusal: None,
        position: None,
        trail: VecDeque::new(),
        minute: (0, 0),
        minute_before: 0,
    });
    d.transport = transport;
    d
}

/// `d`'s events per minute as of `minute`: the last whole minute's count where it sent in it;
/// else, in its first minute or back after a quiet one, the count so far; 0 when it has been
/// quiet since before the last whole minute.
fn per_minute(d: &Device, minute: i64) -> u32 {
    match d.minute {
        (m, n) if m == minute - 1 => n,
        (m, _) if m == minute && d.minute_before > 0 => d.minute_before,
        (m, n) if m == minute => n,
        _ => 0,
    }
}

/// Counts a device as connected while it lives.
#[derive(Debug)]
pub struct Connected {
    activity: Activity,
    device: String,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.activity.with(|inner| {
            if let Some(d) = inner.devices.get_mut(&self.device) {
                d.connected = d.connected.saturating_sub(1);
                // A row that only ever was a connection (a client id that published for other
                // devices, or nothing) goes with it: `skew_ms` is set by every event.
                if d.connected == 0 && d.skew_ms.is_none() {
                    inner.devices.remove(&self.device);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(device: &str, seq: u64, lat: f64) -> Event {
        Event {
            device_id: device.into(),
            seq,
            time_ms: seq * 1000,
            body: Body::Position(tributary_protocol::Position {
                lat,
                lon: 13.4,
                alt_m: None,
                speed_mps: None,
                heading_deg: None,
                hdop: None,
                satellites: None,
                fix: tributary_protocol::FixQuality::Gps,
            }),
        }
    }

    #[test]
    fn positions_build_a_bounded_trail_and_connections_are_counted() {
        let a = Activity::default();
        let events: Vec<Event> = (1..=40)
            .map(|s| position("car-1", s, 52.0 + s as f64 * 1e-4))
            .collect();
        a.events(Transport::Tcp, &events, 50_000);
        let guard = a.connected("car-1", Transport::Tcp, 45_000);
        let (devices, _, _) = a.snapshot(10, 50_000);
        assert_eq!(devices[0].per_min, 40);
        assert_eq!(devices[0].trail.len(), TRAIL);
        assert_eq!(devices[0].position.unwrap().time_ms, 40_000);
        assert_eq!(devices[0].connected, 1);
        assert_eq!(devices[0].skew_ms, Some(10_000));
        drop(guard);
        assert_eq!(a.snapshot(10, 50_000).0[0].connected, 0);
        assert_eq!(a.snapshot(10, 500_000).0[0].per_min, 0, "quiet for minutes");
    }

    #[test]
    fn rates_are_per_second_differences_and_refusals_are_bounded() {
        let a = Activity::default();
        a.tick([0, 0, 0, 0]);
        a.tick([10, 9, 5, 1]);
        a.tick([30, 29, 25, 1]);
        let (_, rates, _) = a.snapshot(1, 0);
        assert_eq!(rates.received, [10, 20]);
        assert_eq!(rates.refused, [1, 0]);
        for _ in 0..(MAX_REFUSALS + 5) {
            a.refused(Transport::Mqtt, "acl", Some("x"), None, 1);
        }
        assert_eq!(a.snapshot(1, 0).2.len(), MAX_REFUSALS);
    }

    /// A connection that carries no event of its own (a client id that publishes for other
    /// devices) is listed while it is open, seen since it connected, and goes when it closes:
    /// never a row "last seen" at time zero.
    #[test]
    fn a_connection_without_events_is_no_phantom_device() {
        let a = Activity::default();
        let guard = a.connected("mosq-x1", Transport::Mqtt, 70_000);
        a.events(Transport::Mqtt, &[position("env-1", 1, 52.0)], 71_000);
        let (devices, _, _) = a.snapshot(10, 72_000);
        let ids: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["env-1", "mosq-x1"]);
        assert_eq!(devices[1].last_seen_ms, 70_000, "seen since it connected");
        drop(guard);
        let (devices, _, _) = a.snapshot(10, 73_000);
        let ids: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["env-1"], "gone with its connection");
        // A device that sent events stays after it disconnects.
        drop(a.connected("env-1", Transport::Mqtt, 74_000));
        assert_eq!(a.snapshot(10, 75_000).0.len(), 1);
    }

    /// A steady device shows a steady rate: the last whole minute's count, not the current
    /// minute's so far, which starts from nothing every minute.
    #[test]
    fn events_per_minute_are_steady_for_a_steady_device() {
        let a = Activity::default();
        // 6 events a second from second 0 to second 150.
        for s in 0..150i64 {
            let events: Vec<Event> = (0..6)
                .map(|k| position("car-1", (s * 6 + k) as u64, 52.0))
                .collect();
            a.events(Transport::Tcp, &events, s * 1000);
            if s >= 61 {
                let (devices, _, _) = a.snapshot(10, s * 1000);
                assert_eq!(devices[0].per_min, 360, "at second {s}");
            }
        }
        // First seen in a later minute: the count so far, not 0.
        a.events(Transport::Tcp, &[position("car-2", 1, 52.0)], 150_500);
        let devices = a.snapshot(10, 151_000).0;
        let car2 = devices.iter().find(|d| d.id == "car-2").unwrap();
        assert_eq!(car2.per_min, 1);
        // A position's freshness is its receive time, its event time kept apart.
        let car1 = devices.iter().find(|d| d.id == "car-1").unwrap();
        let fix = car1.position.unwrap();
        assert_eq!(fix.received_ms, 149_000);
    }
}
