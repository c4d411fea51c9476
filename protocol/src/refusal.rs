//! What each answer the gateway gives means to the device that hears it, defined once for both
//! sides: the gateway picks its answers from these types, and the device-side client
//! (`tributary-client`) reads them back through [`Meaning`].
//!
//! Every answer means one of four things to a device:
//! - [`Meaning::Stored`]: committed to the spool; forget it.
//! - [`Meaning::Retry`]: not stored, and the same event may succeed later unchanged (the spool
//!   is full or failed, the gateway is stopping): send it again after a backoff, in order.
//! - [`Meaning::Never`]: refused for good (invalid, forbidden, over a limit); the gateway kept it
//!   as a dead letter and counted it. Sending it again would never help: count it, log the
//!   reason, move on.
//! - [`Meaning::Session`]: the session itself is wrong (credentials, protocol, framing): nothing
//!   on it is stored; fix the cause, then reconnect.
//!
//! The TCP protocol says it with a [`NackCode`]; MQTT 5 with a PUBACK reason code
//! ([`PublishCode`], numbered as the MQTT 5 specification, section 3.4.2.1); MQTT 3.1.1 has
//! only "stored", and says "not stored" by closing the connection.

use crate::message::NackCode;

/// What an answer means to the device. See the module's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    Stored,
    Retry,
    Never,
    Session,
}

/// The PUBACK (and PUBREC) reason codes Tributary sends an MQTT 5 device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishCode {
    /// 0x00: stored (committed to the spool).
    Success,
    /// 0x99: refused, kept as a dead letter: the payload could not be decoded or validated,
    /// or contradicts its content type or format indicator.
    PayloadFormatInvalid,
    /// 0x90: refused, kept as a dead letter: no topic Tributary decodes, no mapping names it.
    TopicNameInvalid,
    /// 0x87: refused, kept as a dead letter: the ACL denies this device the topic.
    NotAuthorized,
    /// 0x83: refused, kept as a dead letter: over a limit (`mqtt.max_payload_bytes`, user
    /// properties).
    ImplementationSpecific,
    /// 0x97: not stored: the spool is full. Resend later.
    QuotaExceeded,
    /// 0x80: not stored: the spool failed. Resend later.
    Unspecified,
}

impl PublishCode {
    pub const ALL: [PublishCode; 7] = [
        PublishCode::Success,
        PublishCode::PayloadFormatInvalid,
        PublishCode::TopicNameInvalid,
        PublishCode::NotAuthorized,
        PublishCode::ImplementationSpecific,
        PublishCode::QuotaExceeded,
        PublishCode::Unspecified,
    ];

    /// The reason code on the wire.
    pub fn code(self) -> u8 {
        match self {
            PublishCode::Success => 0x00,
            PublishCode::Unspecified => 0x80,
            PublishCode::ImplementationSpecific => 0x83,
            PublishCode::NotAuthorized => 0x87,
            PublishCode::TopicNameInvalid => 0x90,
            PublishCode::QuotaExceeded => 0x97,
            PublishCode::PayloadFormatInvalid => 0x99,
        }
    }

    pub fn meaning(self) -> Meaning {
        match self {
            PublishCode::Success => Meaning::Stored,
            PublishCode::QuotaExceeded | PublishCode::Unspecified => Meaning::Retry,
            PublishCode::PayloadFormatInvalid
            | PublishCode::TopicNameInvalid
            | PublishCode::NotAuthorized
            | PublishCode::ImplementationSpecific => Meaning::Never,
        }
    }
}

/// What a PUBACK reason code means, for any code a server may send: Tributary's own as
/// [`PublishCode::meaning`] says; any other below 0x80 is a success (0x10, "no matching
/// subscribers", from a broker that stored it), any other from 0x80 up a failure for good
/// (MQTT 5, 2.4: codes of 0x80 and above are failures).
pub fn publish_meaning(code: u8) -> Meaning {
    match PublishCode::ALL.into_iter().find(|c| c.code() == code) {
        Some(known) => known.meaning(),
        None if code < 0x80 => Meaning::Stored,
        None => Meaning::Never,
    }
}

impl NackCode {
    /// What this NACK means to the device.
    pub fn meaning(self) -> Meaning {
        match self {
            NackCode::Busy => Meaning::Retry,
            NackCode::InvalidEvent | NackCode::Forbidden => Meaning::Never,
            NackCode::Malformed | NackCode::Unauthorized | NackCode::ProtocolViolation => {
                Meaning::Session
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{publish_meaning, Meaning, PublishCode};
    use crate::message::NackCode;

    #[test]
    fn only_busy_answers_ask_for_a_resend_and_unknown_codes_read_by_the_specification() {
        let retry: alloc::vec::Vec<PublishCode> = PublishCode::ALL
            .into_iter()
            .filter(|c| c.meaning() == Meaning::Retry)
            .collect();
        assert_eq!(
            retry,
            [PublishCode::QuotaExceeded, PublishCode::Unspecified]
        );
        for c in PublishCode::ALL {
            assert_eq!(publish_meaning(c.code()), c.meaning());
        }
        assert_eq!(publish_meaning(0x10), Meaning::Stored);
        assert_eq!(publish_meaning(0x91), Meaning::Never);
        assert_eq!(NackCode::Busy.meaning(), Meaning::Retry);
        assert_eq!(NackCode::Forbidden.meaning(), Meaning::Never);
        assert_eq!(NackCode::Unauthorized.meaning(), Meaning::Session);
    }
}
