//! MQTT 5 through rumqttc's v5 client, for the loop in [`super::mqtt`]: the same publishes,
//! with each answer's reason code read.
//!
//! - 0x00 "success" (and 0x10): stored.
//! - 0x97 "quota exceeded" and 0x80 "unspecified error": busy, resend later (the gateway keeps a
//!   device's later events waiting for the ones it said "busy" to, so resending in order is
//!   what it expects).
//! - any other failure: refused for good (invalid payload, not authorized, ...), with the
//!   gateway's reason string.
//!
//! rumqttc keeps to the gateway's Receive Maximum by itself; the window is the device's own
//! limit besides.

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Packet, PubAck, PubAckReason};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event as MqttEvent, EventLoop, MqttOptions};
use rumqttc::Outgoing;
use tokio::time::Instant;

use super::mqtt::{Answer, Client, Polled};
use super::Device;

pub struct V5 {
    client: AsyncClient,
    eventloop: EventLoop,
}

fn answer(ack: PubAck) -> Answer {
    match ack.reason {
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Answer::Stored,
        PubAckReason::QuotaExceeded | PubAckReason::UnspecifiedError => Answer::Busy,
        reason => Answer::Refused(
            ack.properties
                .and_then(|p| p.reason_string)
                .unwrap_or_else(|| format!("{reason:?}")),
        ),
    }
}

impl Client for V5 {
    fn connect(device: &Device, addr: SocketAddr, window: usize) -> Self {
        let mut options = MqttOptions::new(&device.outcome.id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_start(true);
        options.set_max_packet_size(Some(1 << 20));
        let id = &device.outcome.id;
        if let Some(password) = device.pace.credentials.password_for(id) {
            options.set_credentials(id.clone(), password);
        }
        if let Some(tls) = &device.pace.credentials.tls {
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.clone()),
            ));
        }
        let (client, eventloop) = AsyncClient::new(options, window + 4);
        Self { client, eventloop }
    }

    fn publish(&self, topic: String, qos1: bool, payload: Vec<u8>) -> bool {
        let qos = if qos1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        self.client.try_publish(topic, qos, false, payload).is_ok()
    }

    async fn poll(&mut self) -> Result<Polled, String> {
        Ok(
            match self.eventloop.poll().await.map_err(|e| e.to_string())? {
                MqttEvent::Incoming(Packet::ConnAck(_)) => Polled::ConnAck,
                MqttEvent::Outgoing(Outgoing::Publish(pkid)) => Polled::Published(pkid),
                MqttEvent::Incoming(Packet::PubAck(ack)) => Polled::Answered(ack.pkid, answer(ack)),
                MqttEvent::Incoming(Packet::Disconnect(d)) => {
                    Polled::Closed(format!("the gateway disconnected: {:?}", d.reason_code))
                }
                _ => Polled::Other,
            },
        )
    }

    async fn disconnect(mut self) {
        if self.client.try_disconnect().is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(Ok(_)) = tokio::time::timeout_at(deadline, self.eventloop.poll()).await {}
    }
}
