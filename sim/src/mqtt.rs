//! What a device publishes over MQTT: JSON payloads on `devices/{device_id}/{readings|position}`
//! (`device::mqtt` is the client).

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
