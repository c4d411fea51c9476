//! MQTT 5 (`transport = "mqtt5"`) for [`super::mqtt::MqttTransport`]: the same publishes, and
//! the reason code of each answer read ("stored", "busy" or "refused", with the gateway's
//! reason string).

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Packet, PubAck, PubAckReason};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{Client, Connection, Event as MqttEvent, MqttOptions};
use rumqttc::Outgoing;

use super::link::Credentials;
use super::mqtt::{Answer, Polled, Version};

pub struct V5(Client, Connection);

fn answer(ack: PubAck) -> Answer {
    let why = |ack: PubAck| {
        ack.properties
            .and_then(|p| p.reason_string)
            .unwrap_or_else(|| format!("{:?}", ack.reason))
    };
    match ack.reason {
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Answer::Stored,
        PubAckReason::QuotaExceeded | PubAckReason::UnspecifiedError => Answer::Busy(why(ack)),
        _ => Answer::Refused(why(ack)),
    }
}

impl Version for V5 {
    fn connect(host: String, port: u16, device_id: &str, credentials: &Credentials) -> Self {
        let mut options = MqttOptions::new(device_id, host, port);
        if let Some(tls) = &credentials.tls {
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.config.clone()),
            ));
        }
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_start(true);
        if let Some(password) = &credentials.password {
            options.set_credentials(device_id, password.clone());
        }
        let (client, connection) = Client::new(options, 256);
        Self(client, connection)
    }

    fn publish(&mut self, topic: String, payload: Vec<u8>) -> std::io::Result<()> {
        self.0
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .map_err(std::io::Error::other)
    }

    fn next(&mut self, wait: Duration) -> std::io::Result<Polled> {
        match self.1.recv_timeout(wait) {
            Ok(Ok(MqttEvent::Incoming(Packet::ConnAck(_)))) => Ok(Polled::ConnAck),
            Ok(Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid)))) => Ok(Polled::Published(pkid)),
            Ok(Ok(MqttEvent::Incoming(Packet::PubAck(ack)))) => {
                Ok(Polled::Answered(ack.pkid, answer(ack)))
            }
            Ok(Ok(MqttEvent::Incoming(Packet::Disconnect(d)))) => Ok(Polled::Closed(format!(
                "the gateway disconnected: {:?}",
                d.reason_code
            ))),
            Ok(Ok(_)) => Ok(Polled::Other),
            Ok(Err(e)) => Err(std::io::Error::other(e)),
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
}
