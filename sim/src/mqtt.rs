//! A device publishing over MQTT (3.1.1) with rumqttc, JSON payloads on
//! `devices/{device_id}/{readings|position}`.

use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use tributary_protocol::json::JsonEvent;
use tributary_protocol::Event;

/// The topic an event is published on.
pub fn topic(event: &Event) -> String {
    format!(
        "devices/{}/{}",
        event.device_id,
        event.kind().mqtt_segment()
    )
}

/// The JSON payload for an event.
pub fn payload(event: &Event) -> Vec<u8> {
    serde_json::to_vec(&JsonEvent::from(event.clone())).unwrap_or_default()
}

/// Publishes `events` as one device with QoS 1 and returns how many PUBACKs arrived
/// (waiting at most `settle` for the last ones).
pub async fn publish_all(
    host: &str,
    port: u16,
    device_id: &str,
    events: &[Event],
    rate_per_s: f64,
    settle: Duration,
) -> Result<u64, rumqttc::ConnectionError> {
    let mut options = MqttOptions::new(device_id, host, port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, events.len().clamp(10, 1000));
    let to_send: Vec<(String, Vec<u8>)> = events.iter().map(|e| (topic(e), payload(e))).collect();
    let interval = (rate_per_s > 0.0).then(|| Duration::from_secs_f64(1.0 / rate_per_s));
    let publisher = tokio::spawn(async move {
        for (topic, payload) in to_send {
            if client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                break;
            }
            if let Some(i) = interval {
                tokio::time::sleep(i).await;
            }
        }
        client
    });
    let total = events.len() as u64;
    let mut acked = 0u64;
    let deadline = tokio::time::Instant::now() + settle;
    while acked < total {
        let polled = tokio::time::timeout_at(deadline, eventloop.poll()).await;
        match polled {
            Err(_) => break,
            Ok(Ok(MqttEvent::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                publisher.abort();
                return Err(e);
            }
        }
    }
    if let Ok(client) = publisher.await {
        let _ = client.disconnect().await;
        // Let the DISCONNECT go out.
        let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
    }
    Ok(acked)
}
