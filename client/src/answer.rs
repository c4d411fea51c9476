//! What the gateway said, read from rumqttc's events.
//!
//! Tributary's MQTT listener sends a publish's PUBACK only after the spool committed its event.
//! MQTT 3.1.1 has one answer, [`Answer::Stored`]. MQTT 5's reason codes add two:
//! - 0x97 "quota exceeded" and 0x80 "unspecified error": [`Answer::Busy`]. Not stored; send it
//!   again later, in order (the gateway keeps a device's later events waiting for the ones it
//!   said "busy" to).
//! - any other failure (payload format invalid, not authorized, topic name invalid, ...):
//!   [`Answer::Refused`], for good, with the gateway's reason string. Sending it again would
//!   never help: a device counts it, logs the reason and moves on.
//!
//! 0x00 "success" and 0x10 "no matching subscribers" are both stored. Which code means what is
//! the protocol crate's (`tributary_protocol::refusal`), the table the gateway answers from.

use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, PubAck, PubAckReason};
use rumqttc::{Event, Outgoing, Packet};
use tributary_protocol::refusal::{self, Meaning};

/// What the gateway said to one publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Stored,
    /// Not stored; send again later. The gateway's reason.
    Busy(String),
    /// Never stored; the gateway's reason.
    Refused(String),
}

/// What one turn of a client's event loop brought.
#[derive(Debug, Clone, PartialEq)]
pub enum Polled {
    ConnAck,
    /// A publish went out with this packet id (rumqttc reports them in the order requested).
    Published(u16),
    /// The answer to the publish with this packet id.
    Answered(u16, Answer),
    /// The gateway closed the session, saying why (MQTT 5's DISCONNECT).
    Closed(String),
    /// A command from the gateway ([`crate::command`]).
    Command(crate::command::Command),
    Other,
}

/// An MQTT 3.1.1 event: every PUBACK means stored.
pub fn v311(event: &Event) -> Polled {
    match event {
        Event::Incoming(Packet::ConnAck(_)) => Polled::ConnAck,
        Event::Outgoing(Outgoing::Publish(pkid)) => Polled::Published(*pkid),
        Event::Incoming(Packet::PubAck(ack)) => Polled::Answered(ack.pkid, Answer::Stored),
        Event::Incoming(Packet::Publish(p)) => command(&p.payload),
        _ => Polled::Other,
    }
}

/// An MQTT 5 event: a PUBACK's reason code read ([`answer`]).
pub fn v5(event: rumqttc::v5::Event) -> Polled {
    use rumqttc::v5::Event as Event5;
    match event {
        Event5::Incoming(Packet5::ConnAck(_)) => Polled::ConnAck,
        Event5::Outgoing(Outgoing::Publish(pkid)) => Polled::Published(pkid),
        Event5::Incoming(Packet5::PubAck(ack)) => Polled::Answered(ack.pkid, answer(ack)),
        Event5::Incoming(Packet5::Disconnect(d)) => {
            Polled::Closed(format!("the gateway disconnected: {:?}", d.reason_code))
        }
        Event5::Incoming(Packet5::Publish(p)) => command(&p.payload),
        _ => Polled::Other,
    }
}

/// A publish from the gateway: a command, or nothing this contract knows.
fn command(payload: &[u8]) -> Polled {
    crate::command::Command::parse(payload).map_or(Polled::Other, Polled::Command)
}

/// What an MQTT 5 PUBACK says, with the gateway's reason string (else the code's name). The
/// code's meaning is the protocol crate's ([`refusal::publish_meaning`]).
pub fn answer(ack: PubAck) -> Answer {
    let why = |ack: PubAck| {
        ack.properties
            .and_then(|p| p.reason_string)
            .unwrap_or_else(|| format!("{:?}", ack.reason))
    };
    match refusal::publish_meaning(code(ack.reason)) {
        Meaning::Stored => Answer::Stored,
        Meaning::Retry => Answer::Busy(why(ack)),
        Meaning::Never | Meaning::Session => Answer::Refused(why(ack)),
    }
}

/// rumqttc's reason as the number on the wire (MQTT 5, 3.4.2.1).
fn code(reason: PubAckReason) -> u8 {
    match reason {
        PubAckReason::Success => 0x00,
        PubAckReason::NoMatchingSubscribers => 0x10,
        PubAckReason::UnspecifiedError => 0x80,
        PubAckReason::ImplementationSpecificError => 0x83,
        PubAckReason::NotAuthorized => 0x87,
        PubAckReason::TopicNameInvalid => 0x90,
        PubAckReason::PacketIdentifierInUse => 0x91,
        PubAckReason::QuotaExceeded => 0x97,
        PubAckReason::PayloadFormatInvalid => 0x99,
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::v5::mqttbytes::v5::{PubAck, PubAckProperties, PubAckReason};

    use super::{answer, Answer};

    fn ack(reason: PubAckReason, why: Option<&str>) -> PubAck {
        PubAck {
            pkid: 1,
            reason,
            properties: why.map(|w| PubAckProperties {
                reason_string: Some(w.into()),
                user_properties: Vec::new(),
            }),
        }
    }

    #[test]
    fn reason_codes_read_as_stored_busy_or_refused_with_the_gateways_reason() {
        assert_eq!(answer(ack(PubAckReason::Success, None)), Answer::Stored);
        assert_eq!(
            answer(ack(PubAckReason::NoMatchingSubscribers, None)),
            Answer::Stored
        );
        assert_eq!(
            answer(ack(PubAckReason::QuotaExceeded, Some("spool full"))),
            Answer::Busy("spool full".into())
        );
        assert_eq!(
            answer(ack(PubAckReason::UnspecifiedError, None)),
            Answer::Busy("UnspecifiedError".into())
        );
        assert_eq!(
            answer(ack(PubAckReason::PayloadFormatInvalid, Some("seq missing"))),
            Answer::Refused("seq missing".into())
        );
        assert_eq!(
            answer(ack(PubAckReason::NotAuthorized, None)),
            Answer::Refused("NotAuthorized".into())
        );
    }
}
