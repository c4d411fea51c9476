//! What the TCP and MQTT loads share per device: when it starts (every device connects first,
//! then all start together, each at its offset) and what it measured.

use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use super::device_histogram;
use crate::generate::now_ms;

pub(super) struct DeviceResult {
    pub(super) sent: u64,
    pub(super) acked: u64,
    pub(super) error: Option<String>,
    pub(super) latency: Histogram<u64>,
    pub(super) from_send: Histogram<u64>,
}

/// A device's schedule: when its first batch is due, that instant in wall-clock ms (the event
/// time its batches carry), and its share of the rate in events/s.
#[derive(Clone, Copy)]
pub(super) struct Clock {
    pub(super) start: Instant,
    pub(super) start_ms: u64,
    pub(super) per_device: f64,
}

/// How a device learns its [`Clock`]: the load starts once every device has connected (or
/// failed to), so no batch is due while its device, or the gateway, is still busy connecting.
/// Measured latency is then the steady state's, not the connection storm's.
pub(super) struct Start {
    /// One permit per device that has connected or given up.
    pub(super) connected: Arc<Semaphore>,
    /// The load's start instant and its wall-clock ms, once every device is connected.
    pub(super) go: watch::Receiver<Option<(Instant, u64)>>,
    /// This device's offset from the start, and its share of the rate.
    pub(super) offset: Duration,
    pub(super) per_device: f64,
}

impl Start {
    /// Reports this device connected (or failed) and waits for the load's start.
    pub(super) async fn connected(mut self) -> Clock {
        self.connected.add_permits(1);
        let (start, start_ms) = match self.go.wait_for(Option::is_some).await {
            Ok(go) => go.unwrap_or((Instant::now(), now_ms())),
            // The load was dropped: start at once, the device finds out soon enough.
            Err(_) => (Instant::now(), now_ms()),
        };
        Clock {
            start: start + self.offset,
            start_ms: start_ms + self.offset.as_millis() as u64,
            per_device: self.per_device,
        }
    }
}

impl Default for DeviceResult {
    fn default() -> Self {
        Self {
            sent: 0,
            acked: 0,
            error: None,
            latency: device_histogram(),
            from_send: device_histogram(),
        }
    }
}
