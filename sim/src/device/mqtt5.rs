//! MQTT 5 through rumqttc's v5 client, for the loop in [`super::mqtt`]: the same publishes,
//! with each answer's reason code read.
//!
//! Which reason code means stored, busy or refused is `tributary_client::answer`'s to say: the
//! node agent reads them the same way.
//!
//! rumqttc keeps to the gateway's Receive Maximum by itself; the window is the device's own
//! limit besides.

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, EventLoop};
use tokio::time::Instant;
use tributary_client::answer::{self, Polled};
use tributary_client::options;

use super::mqtt::{auth, Client};
use super::Device;

pub struct V5 {
    client: AsyncClient,
    eventloop: EventLoop,
}

impl Client for V5 {
    fn connect(device: &Device, addr: SocketAddr, window: usize) -> Self {
        let host = addr.ip().to_string();
        let mut options = options::v5(&device.outcome.id, host, addr.port(), &auth(device));
        options.set_max_packet_size(Some(1 << 20));
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

    fn subscribe(&self, filter: String) -> bool {
        self.client.try_subscribe(filter, QoS::AtLeastOnce).is_ok()
    }

    async fn poll(&mut self) -> Result<Polled, String> {
        let event = self.eventloop.poll().await.map_err(|e| e.to_string())?;
        Ok(answer::v5(event))
    }

    async fn disconnect(mut self) {
        if self.client.try_disconnect().is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(Ok(_)) = tokio::time::timeout_at(deadline, self.eventloop.poll()).await {}
    }
}
