//! The TCP protocol, the device's side: its HELLO, and what each reply to an EVENTS batch means.
//!
//! A device sends one batch and reads replies until one settles it ([`reply`]):
//! - an ANSWER (protocol 3) settles the whole batch: everything up to `up_to_seq` is stored or
//!   refused for good, and the refused ones are listed with why;
//! - an ACK (older gateways) settles up to its seq; an older gateway (peer version below 3)
//!   sends a NACK per refused event before it, and the device reads on;
//! - a `busy` NACK, or from protocol 3 on any NACK in the ANSWER's place, settles nothing: the
//!   batch was not stored, and the device sends it again after a backoff on a new connection.
//!
//! Anything else is a protocol error: the device drops the connection.

use tributary_protocol::refusal::Meaning;
use tributary_protocol::{Hello, Message, Nack, Refused, PROTOCOL_VERSION};

/// The first frame of a session, for a device that takes no commands (protocol 3: the gateway
/// sends it none).
pub fn hello(device_id: &str, password: Option<String>, session: Option<u64>) -> Message {
    hello_v(device_id, password, session, false)
}

/// The first frame of a session; `commands`: the device takes commands (protocol 4), and must
/// then read [`Reply::Command`] between its replies and answer each with [`command_result`].
pub fn hello_v(
    device_id: &str,
    password: Option<String>,
    session: Option<u64>,
    commands: bool,
) -> Message {
    Message::Hello(Hello {
        protocol_version: if commands {
            PROTOCOL_VERSION
        } else {
            PROTOCOL_VERSION - 1
        },
        device_id: device_id.to_owned(),
        password,
        session,
    })
}

/// What one reply to an EVENTS batch means.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Everything up to `up_to_seq` is settled: stored, or refused for good (`refused`).
    Settled {
        up_to_seq: u64,
        refused: Vec<Refused>,
    },
    /// One event refused for good by an older gateway; its ACK follows. Read on.
    Refusal(Nack),
    /// Nothing of the batch is settled: `busy` (send it again later) or refused as a whole.
    NotStored(Nack),
    /// Protocol 4: a command from the gateway, which may come between any two replies; the
    /// device reads on for the batch's reply.
    Command(crate::command::Command),
    /// A frame that has no place here.
    Unexpected(String),
}

/// What `message`, read after an EVENTS batch from a gateway whose frames carry
/// `peer_version`, means for the batch.
pub fn reply(message: Message, peer_version: u8) -> Reply {
    match message {
        Message::Answer(answer) => Reply::Settled {
            up_to_seq: answer.up_to_seq,
            refused: answer.refused,
        },
        Message::Ack(ack) => Reply::Settled {
            up_to_seq: ack.up_to_seq,
            refused: Vec::new(),
        },
        Message::Nack(nack) if nack.code.meaning() == Meaning::Never && peer_version < 3 => {
            Reply::Refusal(nack)
        }
        Message::Nack(nack) => Reply::NotStored(nack),
        Message::Command(c) => Reply::Command(command(c)),
        other => Reply::Unexpected(format!("unexpected {other:?}")),
    }
}

/// A COMMAND frame as the JSON form every device reads ([`crate::command::Command`]).
pub fn command(frame: tributary_protocol::CommandFrame) -> crate::command::Command {
    crate::command::Command {
        id: frame.id,
        name: frame.name,
        args: serde_json::from_str(&frame.args).unwrap_or(serde_json::Value::Null),
        expires_ms: Some(frame.expires_ms),
    }
}

/// The COMMAND_RESULT answering command `id` with `result` (JSON or text).
pub fn command_result(id: &str, result: &[u8]) -> Message {
    Message::CommandResult(tributary_protocol::CommandResult {
        id: id.to_owned(),
        result: String::from_utf8_lossy(result).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use tributary_protocol::{Ack, Answer, Message, Nack, NackCode, Refused};

    use super::{reply, Reply};

    fn nack(code: NackCode) -> Message {
        Message::Nack(Nack {
            code,
            text: "why".into(),
        })
    }

    #[test]
    fn each_reply_settles_the_batch_or_not_as_the_protocol_version_says() {
        let refused = Refused {
            seq: 4,
            code: NackCode::InvalidEvent,
            text: "bad".into(),
        };
        let answer = Message::Answer(Answer {
            up_to_seq: 9,
            stored: 4,
            duplicates: 0,
            refused: vec![refused.clone()],
        });
        assert_eq!(
            reply(answer, 3),
            Reply::Settled {
                up_to_seq: 9,
                refused: vec![refused]
            }
        );
        assert_eq!(
            reply(Message::Ack(Ack { up_to_seq: 9 }), 2),
            Reply::Settled {
                up_to_seq: 9,
                refused: Vec::new()
            }
        );
        // Protocol 2: a NACK per refused event, then the ACK.
        assert!(matches!(
            reply(nack(NackCode::InvalidEvent), 2),
            Reply::Refusal(_)
        ));
        // Protocol 3: a NACK is the batch's one answer, and nothing of it is stored.
        assert!(matches!(
            reply(nack(NackCode::InvalidEvent), 3),
            Reply::NotStored(_)
        ));
        // Busy never settles anything, whatever the version.
        assert!(matches!(
            reply(nack(NackCode::Busy), 2),
            Reply::NotStored(_)
        ));
        assert!(matches!(
            reply(super::hello("a", None, None), 3),
            Reply::Unexpected(_)
        ));
    }
}
