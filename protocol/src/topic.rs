//! The device contract's MQTT topics, in one place: an event of device `D` and kind `K` is
//! published on `devices/D/K` as JSON ([`crate::json`]), or on `devices/D/K/pc` as postcard,
//! where `K` is the kind's segment (`readings`, `position`).
//!
//! The simulator and the node agent build topics with [`device_topic`]; the gateway reads them
//! with [`parse`], refuses a mapping that would take the namespace over ([`in_namespace`]), and
//! checks a TCP event against the ACL as the topic it would have had.

use alloc::format;
use alloc::string::String;
use core::fmt;

use crate::device_id::{validate_device_id, DeviceIdError};
use crate::event::Kind;

/// The first level of every device topic.
pub const NAMESPACE: &str = "devices";

/// How a device topic's payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `devices/D/K`: one JSON event or an array of them.
    Json,
    /// `devices/D/K/pc`: one postcard event.
    Postcard,
}

/// A device topic, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceTopic<'a> {
    pub device_id: &'a str,
    pub kind: Kind,
    pub encoding: Encoding,
}

/// Why a topic is not a device topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicError {
    /// Not `devices/D/K` or `devices/D/K/pc`.
    Shape,
    /// The device id level is not a device id.
    DeviceId(DeviceIdError),
    /// The kind level is not `readings` or `position`; the device id is known.
    Kind(String),
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::Shape => write!(f, "is not devices/{{device_id}}/{{kind}}"),
            TopicError::DeviceId(e) => write!(f, "{e}"),
            TopicError::Kind(segment) => {
                write!(f, "kind {segment:?} is not \"readings\" or \"position\"")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for TopicError {}

/// The topic an event of `device_id` and `kind` is published on.
pub fn device_topic(device_id: &str, kind: Kind, encoding: Encoding) -> String {
    let suffix = match encoding {
        Encoding::Json => "",
        Encoding::Postcard => "/pc",
    };
    format!("{NAMESPACE}/{device_id}/{}{suffix}", kind.mqtt_segment())
}

/// Whether `topic` (or a filter) lies in the device namespace, which carries Tributary's own
/// format only: a mapping may not take it over.
pub fn in_namespace(topic: &str) -> bool {
    topic.split('/').next() == Some(NAMESPACE)
}

/// The device a topic in the namespace names (`devices/{id}/...` with a valid id), whatever
/// follows: what a refused publish on it is filed under.
pub fn device_of(topic: &str) -> Option<&str> {
    let mut levels = topic.split('/');
    match (levels.next(), levels.next()) {
        (Some(NAMESPACE), Some(id)) if validate_device_id(id).is_ok() => Some(id),
        _ => None,
    }
}

/// The device, kind and encoding of a device topic, or why it is not one. A topic with a valid
/// device id but an unknown kind says which device it named ([`TopicError::Kind`]), so what
/// it carried can be filed under that device.
pub fn parse(topic: &str) -> Result<DeviceTopic<'_>, TopicError> {
    let mut levels = topic.split('/');
    let (Some(NAMESPACE), Some(device_id), Some(segment)) =
        (levels.next(), levels.next(), levels.next())
    else {
        return Err(TopicError::Shape);
    };
    let encoding = match (levels.next(), levels.next()) {
        (None, _) => Encoding::Json,
        (Some("pc"), None) => Encoding::Postcard,
        _ => return Err(TopicError::Shape),
    };
    validate_device_id(device_id).map_err(TopicError::DeviceId)?;
    let kind = Kind::from_mqtt_segment(segment).ok_or_else(|| TopicError::Kind(segment.into()))?;
    Ok(DeviceTopic {
        device_id,
        kind,
        encoding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_built_parse_back() {
        for kind in [Kind::Reading, Kind::Position] {
            for encoding in [Encoding::Json, Encoding::Postcard] {
                let topic = device_topic("env-1", kind, encoding);
                assert_eq!(
                    parse(&topic),
                    Ok(DeviceTopic {
                        device_id: "env-1",
                        kind,
                        encoding
                    })
                );
            }
        }
        assert_eq!(
            device_topic("env-1", Kind::Reading, Encoding::Json),
            "devices/env-1/readings"
        );
        assert_eq!(
            device_topic("t-1", Kind::Position, Encoding::Postcard),
            "devices/t-1/position/pc"
        );
    }

    #[test]
    fn what_is_not_a_device_topic_says_why() {
        assert_eq!(parse("tele/x/SENSOR"), Err(TopicError::Shape));
        assert_eq!(parse("devices/env-1"), Err(TopicError::Shape));
        assert_eq!(parse("devices/env-1/readings/pc/x"), Err(TopicError::Shape));
        assert_eq!(parse("devices/env-1/readings/json"), Err(TopicError::Shape));
        assert!(matches!(
            parse("devices/bad id/readings"),
            Err(TopicError::DeviceId(_))
        ));
        assert_eq!(
            parse("devices/env-1/weather"),
            Err(TopicError::Kind("weather".into()))
        );
        assert!(in_namespace("devices/+/readings") && !in_namespace("devicesx/a"));
        assert_eq!(device_of("devices/env-1/weather"), Some("env-1"));
        assert_eq!(device_of("devices/bad id/readings"), None);
        assert_eq!(device_of("tele/env-1/SENSOR"), None);
    }
}
