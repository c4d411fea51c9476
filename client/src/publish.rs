//! What a device publishes over MQTT: each event as JSON on `devices/{device_id}/{kind}`, with
//! the device's boot session when it sends one.

use tributary_protocol::json::JsonEvent;
use tributary_protocol::topic::{device_topic, Encoding};
use tributary_protocol::Event;

/// The topic an event is published on.
pub fn topic(event: &Event) -> String {
    device_topic(&event.device_id, event.kind(), Encoding::Json)
}

/// The JSON payload of an event, with the device's boot session if it sends one.
///
/// Writing a `JsonEvent` cannot fail (string keys, derived serializers, non-finite numbers
/// written as `null`); were it ever to, the payload is empty and the gateway refuses it, loudly,
/// rather than the device stopping.
pub fn payload(event: &Event, session: Option<u64>) -> Vec<u8> {
    let mut json = JsonEvent::from(event.clone());
    json.session = session;
    serde_json::to_vec(&json).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use tributary_protocol::{Body, Event, Reading, SensorValue};

    #[test]
    fn a_reading_goes_to_its_device_topic_as_json_the_gateway_decodes_back() {
        let event = Event {
            device_id: "env-1".into(),
            seq: 7,
            time_ms: 1_700_000_000_000,
            body: Body::Reading(Reading {
                values: vec![SensorValue {
                    name: "t".into(),
                    value: 21.5,
                    unit: "Cel".into(),
                }],
            }),
        };
        assert_eq!(super::topic(&event), "devices/env-1/readings");
        let bytes = super::payload(&event, Some(42));
        let decoded =
            tributary_protocol::json::decode("env-1", tributary_protocol::Kind::Reading, &bytes)
                .unwrap();
        assert_eq!(decoded, vec![(event, 42)]);
    }
}
