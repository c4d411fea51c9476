//! MQTT 5 (`transport = "mqtt5"`) for [`super::mqtt::MqttTransport`]: the same publishes, and
//! the reason code of each answer read ("stored", "busy" or "refused", with the gateway's
//! reason string; `tributary_client::answer` says which code is which).

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{Client, Connection};
use tributary_client::answer::{self, Polled};
use tributary_client::options::{self, Auth};

use super::mqtt::Version;

pub struct V5(Client, Connection);

impl Version for V5 {
    fn connect(host: String, port: u16, device_id: &str, auth: &Auth) -> Self {
        let (client, connection) = Client::new(options::v5(device_id, host, port, auth), 256);
        Self(client, connection)
    }

    fn publish(&mut self, topic: String, payload: Vec<u8>) -> std::io::Result<()> {
        self.0
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .map_err(std::io::Error::other)
    }

    fn subscribe(&mut self, filter: String) -> std::io::Result<()> {
        self.0
            .subscribe(filter, QoS::AtLeastOnce)
            .map_err(std::io::Error::other)
    }

    fn next(&mut self, wait: Duration) -> std::io::Result<Polled> {
        match self.1.recv_timeout(wait) {
            Ok(Ok(event)) => Ok(answer::v5(event)),
            Ok(Err(e)) => Err(std::io::Error::other(e)),
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
}
