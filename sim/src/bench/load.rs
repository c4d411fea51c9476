//! The load: one pipelined TCP connection per device (or an MQTT one, [`super::mqtt_load`]), a writer on a schedule and a reader of
//! ACKs, each device with its own histogram (merged at the end, so devices never contend).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tributary_protocol::codec::MessageCodec;
use tributary_protocol::{Ack, Answer, Event, Message};

use super::schedule::{DeviceResult, Start};
use super::{device_histogram, histogram, BenchSpec};
use crate::generate::now_ms;
use crate::scenario::{Link, ModelKind, Scenario};
use crate::stream::DeviceStream;
use crate::tcp::TcpDevice;

/// What the load did.
#[derive(Debug)]
pub struct LoadResult {
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Microseconds from due to ACK.
    pub ack_latency: Histogram<u64>,
    /// Microseconds from sending to ACK: from due when the device was still busy sending
    /// earlier batches at that time (so a gateway that holds the device back is still counted),
    /// else from the moment its timer woke it. The difference from `ack_latency` is then only
    /// the timer's lateness (tokio's timers tick in milliseconds), which is the simulator's, not
    /// the gateway's. Over MQTT: from when rumqttc wrote the publish.
    pub ack_from_send: Histogram<u64>,
}

/// Runs the load of `spec` and returns what it measured.
pub async fn run_load(spec: &BenchSpec) -> LoadResult {
    // Environment stations: realistic readings, the same for a seed.
    let mut scenario = Scenario::plain(
        spec.tcp,
        spec.tcp,
        Link::Tcp,
        &spec.prefix,
        spec.devices,
        u64::MAX,
    );
    scenario.seed = spec.seed;
    scenario.groups[0].model = ModelKind::Environment;
    // Stations need no roads, but a stream is built with a network: a small grid (infallible,
    // unlike a waypoints file).
    let roads = Arc::new(crate::model::roads::RoadNetwork::grid(
        crate::model::geo::Origin {
            lat: 52.52,
            lon: 13.405,
        },
        1000.0,
        &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(spec.seed),
    ));
    let seq_start = now_ms();
    let per_device = spec.rate / spec.devices.max(1) as f64;
    let connected = Arc::new(Semaphore::new(0));
    let (go, go_rx) = watch::channel(None);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..spec.devices {
        let stream = DeviceStream::new(
            &scenario,
            &roads,
            &scenario.groups[0],
            i,
            seq_start,
            seq_start,
        );
        let spec = spec.clone();
        // Devices start spread over one batch interval, so their batches do not align.
        let offset = if per_device > 0.0 {
            Duration::from_secs_f64(
                i as f64 / spec.devices as f64 * spec.batch.max(1) as f64 / per_device,
            )
        } else {
            Duration::ZERO
        };
        // The device's clock starts with its offset: an event's time is its batch's due time.
        let clock = Start {
            connected: Arc::clone(&connected),
            go: go_rx.clone(),
            offset,
            per_device,
        };
        if spec.mqtt.is_some() {
            tasks.spawn(super::mqtt_load::device(spec, stream, clock));
        } else {
            tasks.spawn(device(spec, stream, clock));
        }
    }
    // Every device connected (or gave up): the load starts.
    let devices = u32::try_from(spec.devices).unwrap_or(u32::MAX);
    if let Ok(all) = connected.acquire_many(devices).await {
        all.forget();
    }
    let start = Instant::now() + Duration::from_millis(200);
    let _ = go.send(Some((start, now_ms() + 200)));
    let mut total = LoadResult {
        sent: 0,
        acked: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        ack_latency: histogram(),
        ack_from_send: histogram(),
    };
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(r) => {
                total.sent += r.sent;
                total.acked += r.acked;
                if let Some(e) = r.error {
                    total.errors += 1;
                    tracing::warn!(error = %e, "A bench device failed.");
                }
                let _ = total.ack_latency.add(&r.latency);
                let _ = total.ack_from_send.add(&r.from_send);
            }
            Err(e) => {
                total.errors += 1;
                tracing::warn!(error = %e, "A bench device task failed.");
            }
        }
    }
    total.elapsed = start.elapsed();
    total
}

async fn device(spec: BenchSpec, mut stream: DeviceStream, clock: Start) -> DeviceResult {
    let mut result = DeviceResult::default();
    let connected = connect(&spec, &stream.id).await;
    let clock = clock.connected().await;
    let (start, start_ms, per_device) = (clock.start, clock.start_ms, clock.per_device);
    let framed = match connected {
        Ok(f) => f,
        Err(e) => {
            result.error = Some(e);
            return result;
        }
    };
    let (mut sink, mut source) = StreamExt::split::<Message>(framed);
    // The writer tells the reader, per batch, its events' seqs, due times and send times.
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<(u64, Instant, Instant)>>();
    let window = Arc::new(Semaphore::new(spec.window.max(1)));
    let end = start + spec.duration;
    let writer_window = Arc::clone(&window);
    let writer = async move {
        let mut sent = 0u64;
        let per_batch = spec.batch.max(1);
        let batch_every =
            (per_device > 0.0).then(|| Duration::from_secs_f64(per_batch as f64 / per_device));
        tokio::time::sleep_until(start).await;
        for k in 0u32.. {
            // When the previous batch was out: if that is after this one's due time, the
            // device was held back, and its latency counts from due.
            let ready = Instant::now();
            // Open loop: batch k is due at start + k × batch / rate, whatever came back.
            // Closed loop: a batch is due when the window lets it go.
            let (due, permit) = match batch_every {
                Some(every) => {
                    let due = start + every * k;
                    if due >= end {
                        break;
                    }
                    tokio::time::sleep_until(due).await;
                    (due, None)
                }
                None => match Arc::clone(&writer_window).acquire_owned().await {
                    Ok(p) if Instant::now() < end => (Instant::now(), Some(p)),
                    _ => break,
                },
            };
            let time_ms = start_ms + due.saturating_duration_since(start).as_millis() as u64;
            let events: Vec<Event> = (0..per_batch)
                .map(|_| {
                    let mut e = stream.next_event();
                    e.time_ms = time_ms;
                    e
                })
                .collect();
            if let Some(p) = permit {
                p.forget();
            }
            let sent_at = if ready >= due { due } else { Instant::now() };
            if tx
                .send(events.iter().map(|e| (e.seq, due, sent_at)).collect())
                .is_err()
            {
                break;
            }
            if let Err(e) = SinkExt::<Message>::send(&mut sink, Message::Events(events)).await {
                return Err((sent, format!("sending: {e}")));
            }
            sent += per_batch as u64;
        }
        Ok(sent)
    };
    let reader = async move {
        let mut latency = device_histogram();
        let mut from_send = device_histogram();
        let mut pending: VecDeque<(u64, Instant, Instant)> = VecDeque::new();
        let mut acked = 0u64;
        let mut writer_done = false;
        loop {
            if writer_done && pending.is_empty() {
                return (acked, (latency, from_send), None);
            }
            let next = tokio::select! {
                batch = rx.recv(), if !writer_done => {
                    match batch {
                        Some(b) => pending.extend(b),
                        None => writer_done = true,
                    }
                    continue;
                }
                // Nothing outstanding (a slow device between batches): no deadline for an ACK.
                next = tokio::time::timeout(
                    if pending.is_empty() { Duration::from_secs(24 * 3600) } else { Duration::from_secs(30) },
                    source.next(),
                ) => next,
            };
            let error = match next {
                Err(_) => "no ACK within 30 s".to_owned(),
                Ok(None) => "the gateway closed the connection".to_owned(),
                Ok(Some(Ok(Ok(
                    Message::Ack(Ack { up_to_seq }) | Message::Answer(Answer { up_to_seq, .. }),
                )))) => {
                    let now = Instant::now();
                    while let Ok(b) = rx.try_recv() {
                        pending.extend(b);
                    }
                    while pending.front().is_some_and(|(s, ..)| *s <= up_to_seq) {
                        if let Some((_, due, sent)) = pending.pop_front() {
                            let us = |from: Instant| {
                                (now.saturating_duration_since(from).as_micros() as u64).max(1)
                            };
                            let _ = latency.record(us(due));
                            let _ = from_send.record(us(sent));
                            acked += 1;
                        }
                    }
                    window.add_permits(1);
                    continue;
                }
                Ok(Some(Ok(Ok(Message::Nack(n))))) => format!("NACK {}: {}", n.code, n.text),
                Ok(Some(Ok(Ok(other)))) => format!("unexpected {other:?}"),
                Ok(Some(Ok(Err(bad)))) => bad.error.to_string(),
                Ok(Some(Err(e))) => e.to_string(),
            };
            return (acked, (latency, from_send), Some(error));
        }
    };
    let (written, (acked, latency, read_error)) = tokio::join!(writer, reader);
    result.acked = acked;
    (result.latency, result.from_send) = latency;
    match written {
        Ok(n) => result.sent = n,
        Err((n, e)) => {
            result.sent = n;
            result.error = Some(e);
        }
    }
    if result.error.is_none() {
        result.error = read_error;
    }
    result
}

async fn connect(
    spec: &BenchSpec,
    id: &str,
) -> Result<Framed<Box<dyn crate::tcp::Io>, MessageCodec>, String> {
    let mut last = String::new();
    for attempt in 0..20u32 {
        match TcpDevice::connect(spec.tcp, id, None, None).await {
            Ok(device) => return Ok(device.into_framed()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt + 1))).await;
    }
    Err(last)
}
