//! The MQTT load: one rumqttc connection per device, each event one QoS 1 publish of the JSON a
//! device sends, `batch` publishes at each due time, open loop as on TCP.
//!
//! rumqttc reports each publish it writes as `Outgoing::Publish(pkid)`, in the order they were
//! requested, so the due times queued at request map to packet ids, and a PUBACK's packet id to
//! its latency (due → PUBACK, and written → PUBACK).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Outgoing, Packet, QoS};
use tokio::time::Instant;

use super::schedule::{DeviceResult, Start};
use super::BenchSpec;
use crate::stream::DeviceStream;
use tributary_client::publish::{payload, topic};

/// Publishes that may be written and not yet acknowledged: far more than an open-loop device
/// has, so the load never waits on rumqttc's window.
const INFLIGHT: u16 = 1000;

/// How long the device waits for its last PUBACKs after the load.
const DRAIN: Duration = Duration::from_secs(30);

pub(super) async fn device(
    spec: BenchSpec,
    mut stream: DeviceStream,
    clock: Start,
) -> DeviceResult {
    let mut result = DeviceResult::default();
    let Some(addr) = spec.mqtt else {
        result.error = Some("no MQTT address".into());
        clock.connected().await;
        return result;
    };
    let mut options = MqttOptions::new(&stream.id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(60));
    options.set_clean_session(true);
    options.set_inflight(INFLIGHT);
    let (client, mut eventloop) = AsyncClient::new(options, usize::from(INFLIGHT));
    // Connect before the load starts (rumqttc connects on its first poll).
    let connected = loop {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => break Ok(()),
            Ok(_) => {}
            Err(e) => break Err(format!("connecting: {e}")),
        }
    };
    let clock = clock.connected().await;
    let (start, start_ms, per_device) = (clock.start, clock.start_ms, clock.per_device);
    if let Err(e) = connected {
        result.error = Some(e);
        return result;
    }
    let per_batch = spec.batch.max(1);
    let every = Duration::from_secs_f64(per_batch as f64 / per_device.max(1e-9));
    let end = start + spec.duration;
    // Due times of publishes requested and not yet written; of written ones by packet id.
    let mut requested: VecDeque<Instant> = VecDeque::new();
    let mut awaiting: HashMap<u16, (Instant, Instant)> = HashMap::new();
    let mut next_due = start;
    let mut k = 0u32;
    loop {
        let sending = next_due < end;
        if !sending && requested.is_empty() && awaiting.is_empty() {
            break;
        }
        let wake = if sending { next_due } else { end + DRAIN };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                if !sending {
                    result.error = Some(format!("{} PUBACKs missing after {DRAIN:?}", requested.len() + awaiting.len()));
                    break;
                }
                let time_ms = start_ms + next_due.saturating_duration_since(start).as_millis() as u64;
                for _ in 0..per_batch {
                    let mut event = stream.next_event();
                    event.time_ms = time_ms;
                    if let Err(e) = client.try_publish(topic(&event), QoS::AtLeastOnce, false, payload(&event, None)) {
                        result.error = Some(format!("publishing: {e}"));
                        return result;
                    }
                    requested.push_back(next_due);
                    result.sent += 1;
                }
                k += 1;
                next_due = start + every * k;
            }
            polled = eventloop.poll() => match polled {
                Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => {
                    if let Some(due) = requested.pop_front() {
                        awaiting.insert(pkid, (due, Instant::now()));
                    }
                }
                Ok(MqttEvent::Incoming(Packet::PubAck(ack))) => {
                    if let Some((due, written)) = awaiting.remove(&ack.pkid) {
                        let now = Instant::now();
                        let us = |from: Instant| {
                            (now.saturating_duration_since(from).as_micros() as u64).max(1)
                        };
                        let _ = result.latency.record(us(due));
                        let _ = result.from_send.record(us(written));
                        result.acked += 1;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    result.error = Some(e.to_string());
                    break;
                }
            },
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
    result
}
