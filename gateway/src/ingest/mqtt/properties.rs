//! MQTT 5 publish properties: checked against the payload, and carried into Kafka headers.
//!
//! - **Payload Format Indicator** 1 says the payload is UTF-8: one that is not is refused
//!   ("payload format invalid").
//! - **Content Type**, when given, must be one the topic's decoder reads: a JSON type
//!   (`application/json`, or any `+json` type) on a JSON topic (`devices/{id}/{kind}` and mapped
//!   topics), `application/x-postcard` or `application/octet-stream` on a `/pc` topic.
//! - **User Properties** become Kafka headers named [`HEADER_PREFIX`] + the property's name, in
//!   the order sent (a name may repeat, as Kafka headers may). At most
//!   `mqtt.max_user_properties` of them, and at most `mqtt.max_user_property_bytes` of names and
//!   values together: a publish over either bound is refused whole, not cut, so no header is
//!   dropped silently.
//! - **Message Expiry Interval** needs nothing: the gateway stores a publish as it arrives, so
//!   nothing expires here. Subscribers of the embedded broker get the copy without it.
//!
//! A refusal here is a dead letter like any other, with the reason.

use super::codec::{AckCode, Properties};

/// Prefix of the Kafka header a user property becomes: `site=depot-3` is `mqtt.site`.
pub const HEADER_PREFIX: &str = "mqtt.";

/// The bounds on user properties (`mqtt.max_user_properties`, `mqtt.max_user_property_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub count: usize,
    pub bytes: usize,
}

/// Checks a publish's properties against its topic and payload, and returns the Kafka headers
/// its user properties become; or the answer and reason that refuse it.
pub fn headers(
    properties: &Properties,
    topic: &str,
    payload: &[u8],
    bounds: Bounds,
) -> Result<Vec<(String, String)>, (AckCode, String)> {
    if properties.utf8 {
        if let Err(e) = std::str::from_utf8(payload) {
            return Err((
                AckCode::PayloadFormatInvalid,
                format!(
                    "payload format indicator says UTF-8, but the payload is not: byte {} is invalid",
                    e.valid_up_to()
                ),
            ));
        }
    }
    if let Some(content_type) = &properties.content_type {
        let postcard = tributary_protocol::topic::parse(topic)
            .is_ok_and(|t| t.encoding == tributary_protocol::topic::Encoding::Postcard);
        if !reads(content_type, postcard) {
            let wanted = if postcard {
                "application/x-postcard or application/octet-stream"
            } else {
                "a JSON content type (application/json)"
            };
            return Err((
                AckCode::PayloadFormatInvalid,
                format!("content type {content_type:?}: topic {topic:?} takes {wanted}"),
            ));
        }
    }
    let user = &properties.user;
    let bytes: usize = user.iter().map(|(k, v)| k.len() + v.len()).sum();
    if user.len() > bounds.count || bytes > bounds.bytes {
        return Err((
            AckCode::ImplementationSpecific,
            format!(
                "{} user properties of {bytes} bytes; at most {} of {} bytes become Kafka headers \
                 (mqtt.max_user_properties, mqtt.max_user_property_bytes)",
                user.len(),
                bounds.count,
                bounds.bytes
            ),
        ));
    }
    Ok(user
        .iter()
        .map(|(k, v)| (format!("{HEADER_PREFIX}{k}"), v.clone()))
        .collect())
}

/// Whether a content type (its parameters aside) is one the topic's decoder reads.
fn reads(content_type: &str, postcard: bool) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if postcard {
        matches!(
            essence.as_str(),
            "application/x-postcard" | "application/octet-stream"
        )
    } else {
        essence == "application/json" || essence.ends_with("+json") || essence == "text/json"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        count: 2,
        bytes: 20,
    };

    fn props(utf8: bool, content_type: Option<&str>, user: &[(&str, &str)]) -> Properties {
        Properties {
            utf8,
            content_type: content_type.map(str::to_owned),
            user: user
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn user_properties_become_prefixed_headers_in_order() {
        let p = props(
            true,
            Some("application/json; charset=utf-8"),
            &[("site", "a"), ("site", "b")],
        );
        assert_eq!(
            headers(&p, "devices/x/readings", b"{}", BOUNDS).unwrap(),
            [
                ("mqtt.site".to_owned(), "a".to_owned()),
                ("mqtt.site".to_owned(), "b".to_owned())
            ]
        );
    }

    #[test]
    fn each_mismatch_is_refused_with_its_reason() {
        let cases = [
            (
                props(true, None, &[]),
                "devices/x/readings",
                &b"\xff"[..],
                AckCode::PayloadFormatInvalid,
                "not: byte 0",
            ),
            (
                props(false, Some("text/plain"), &[]),
                "devices/x/readings",
                b"{}",
                AckCode::PayloadFormatInvalid,
                "application/json",
            ),
            (
                props(false, Some("application/json"), &[]),
                "devices/x/readings/pc",
                b"\x01",
                AckCode::PayloadFormatInvalid,
                "postcard",
            ),
            (
                props(false, None, &[("a", "1"), ("b", "2"), ("c", "3")]),
                "devices/x/readings",
                b"{}",
                AckCode::ImplementationSpecific,
                "3 user properties",
            ),
            (
                props(false, None, &[("a", "0123456789012345678901")]),
                "devices/x/readings",
                b"{}",
                AckCode::ImplementationSpecific,
                "of 23 bytes",
            ),
        ];
        for (p, topic, payload, code, reason) in cases {
            let (got, why) = headers(&p, topic, payload, BOUNDS).unwrap_err();
            assert_eq!(got, code, "{why}");
            assert!(why.contains(reason), "{why}");
        }
        let pc = props(false, Some("application/x-postcard"), &[]);
        assert!(headers(&pc, "devices/x/readings/pc", b"\x01", BOUNDS).is_ok());
    }
}
