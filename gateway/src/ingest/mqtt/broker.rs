//! The embedded rumqttd broker, for subscribers and local apps.
//!
//! It runs on its own threads for the life of the process (rumqttd has no shutdown API).
//! Devices do not publish to it: they use the gateway's own listener, which passes every
//! committed publish on through a [`Republisher`], so a subscriber to `devices/#` on
//! `mqtt.broker_listen` sees device traffic. That copy is best-effort: if the broker falls
//! behind, copies are dropped (and counted in the log), never the events themselves.

use std::collections::HashMap;
use std::net::SocketAddr;

use rumqttd::{
    Broker, Config as BrokerConfig, ConnectionSettings, Notification, RouterConfig, ServerSettings,
};
use tokio::sync::mpsc;

use super::MqttError;

/// Passes committed publishes on to the embedded broker.
#[derive(Clone)]
pub struct Republisher {
    tx: mpsc::Sender<(String, bytes::Bytes, bool)>,
}

impl Republisher {
    /// Queues a copy for subscribers, with its RETAIN flag (the broker keeps the last retained
    /// one per topic for new subscribers); never waits.
    pub fn publish(&self, topic: String, payload: bytes::Bytes, retain: bool) {
        if self.tx.try_send((topic, payload, retain)).is_err() {
            tracing::debug!(
                message = "Embedded broker is behind; a copy for subscribers was dropped."
            );
        }
    }
}

/// Starts rumqttd on `listen` and returns the handle that feeds it.
pub fn start_broker(listen: SocketAddr, max_connections: usize) -> Result<Republisher, MqttError> {
    // rumqttd logs a bind failure on its own thread and carries on without a listener; check
    // first so a taken port is a start-up error.
    std::net::TcpListener::bind(listen).map_err(|source| MqttError::Bind {
        addr: listen,
        source,
    })?;
    let server = ServerSettings {
        name: "subscribers-v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 1 << 20,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = BrokerConfig {
        id: 0,
        router: RouterConfig {
            max_connections: max_connections + 1,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 4,
            ..Default::default()
        },
        v4: Some(HashMap::from([("subscribers".to_owned(), server)])),
        // rumqttd's console (with its POST /logs) and its Prometheus exporter (a global metrics
        // recorder on 0.0.0.0) stay off: neither is authenticated.
        console: None,
        prometheus: None,
        ..Default::default()
    };
    let mut broker = Broker::new(config);
    let (mut link_tx, mut link_rx) = broker
        .link("tributary-republish")
        .map_err(|e| MqttError::Link(e.to_string()))?;
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(error) = broker.start() {
                tracing::error!(message = "The embedded MQTT broker stopped.", error = %error);
            }
        })
        .map_err(MqttError::Thread)?;
    let (tx, mut rx) = mpsc::channel::<(String, bytes::Bytes, bool)>(10_000);
    tokio::spawn(async move {
        while let Some((topic, payload, retain)) = rx.recv().await {
            let sent = if retain {
                // rumqttd's link has no non-blocking retained publish; the router's queue is
                // bounded (1,000), and retained publishes are rare (a device's status).
                let publish =
                    rumqttd::protocol::Publish::new(bytes::Bytes::from(topic), payload, true);
                link_tx
                    .send(rumqttd::protocol::Packet::Publish(publish, None))
                    .await
                    .map(|_| ())
            } else {
                link_tx.try_publish(topic, payload).map(|_| ())
            };
            if sent.is_err() {
                tracing::debug!(message = "Embedded broker refused a copy for subscribers.");
            }
        }
    });
    // The router may send notifications to our link; read them so it never stalls on us.
    tokio::spawn(async move {
        loop {
            match link_rx.next().await {
                Ok(Some(Notification::Unschedule)) => {
                    if link_rx.wake().await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    Ok(Republisher { tx })
}
