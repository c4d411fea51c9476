//! What a device publishes over MQTT: JSON payloads on `devices/{device_id}/{readings|position}`
//! (`device::mqtt` is the client).

use tributary_protocol::json::JsonEvent;
use tributary_protocol::Event;

/// The topic an event is published on.
pub fn topic(event: &Event) -> String {
    tributary_protocol::topic::device_topic(
        &event.device_id,
        event.kind(),
        tributary_protocol::topic::Encoding::Json,
    )
}

/// The JSON payload for an event, with the device's boot session if it sends one.
pub fn payload(event: &Event, session: Option<u64>) -> Vec<u8> {
    let mut json = JsonEvent::from(event.clone());
    json.session = session;
    serde_json::to_vec(&json).unwrap_or_default()
}
