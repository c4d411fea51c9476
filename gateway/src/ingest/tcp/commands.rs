//! Commands on a protocol 4 TCP connection ([`crate::commands`]).
//!
//! A device whose HELLO says protocol 4 takes commands: the session sends it COMMAND frames
//! for its queued commands, in queue order, once per connection (a cursor over queue rows),
//! as soon as HELLO is accepted and whenever one is queued. The device answers each with a
//! COMMAND_RESULT, which settles the command ("delivered" and "answered" in one commit) and is
//! not answered itself. TCP has no acknowledgement of a single frame, so a command counts as
//! delivered when it is answered; one not answered when the connection ends comes again on the
//! next (whatever `commands.redeliver` says).

use std::sync::Arc;

use tokio::sync::Notify;
use tributary_protocol::{CommandFrame, CommandResult, Message};

use super::Connection;
use crate::commands::Commands;

/// A protocol 4 device's commands on this connection.
pub(super) struct Inbox {
    commands: Arc<Commands>,
    pub(super) wake: Arc<Notify>,
    device: String,
    /// The last queue row sent on this connection.
    cursor: i64,
}

impl Inbox {
    pub(super) fn new(commands: Arc<Commands>, device: &str) -> Self {
        let wake = commands.watch(device);
        // Whatever waits goes out right after HELLO.
        wake.notify_one();
        Self {
            commands,
            wake,
            device: device.to_owned(),
            cursor: 0,
        }
    }
}

impl Connection {
    /// Sends the device's queued commands after the cursor, in order.
    pub(super) async fn send_commands(&mut self) -> std::io::Result<()> {
        loop {
            let Some(inbox) = self.inbox.as_mut() else {
                return Ok(());
            };
            // Every command still waiting, delivered or not: over TCP only an answer settles.
            let queued = match inbox
                .commands
                .to_send_all(&inbox.device, inbox.cursor)
                .await
            {
                Ok(q) => q,
                Err(error) => {
                    tracing::warn!(message = "Reading the device's commands failed; trying at its next wake.", device_id = %inbox.device, %error);
                    return Ok(());
                }
            };
            if queued.is_empty() {
                return Ok(());
            }
            let now = tributary_common::clock::now_ms();
            let mut frames = Vec::with_capacity(queued.len());
            for command in queued {
                inbox.cursor = command.row;
                if command.expires_ms <= now {
                    continue;
                }
                let Some(c) = tributary_client::command::Command::parse(&command.body) else {
                    continue;
                };
                frames.push(Message::Command(CommandFrame {
                    id: c.id,
                    name: c.name,
                    args: c.args.to_string(),
                    expires_ms: command.expires_ms,
                }));
            }
            for frame in &frames {
                self.wire.send(frame).await?;
            }
        }
    }

    /// A COMMAND_RESULT: settles its command. A result for no command queued is counted
    /// (`answer_unmatched`) and dropped: the command was answered before, or expired.
    pub(super) async fn command_result(&mut self, result: CommandResult) {
        let Some(inbox) = self.inbox.as_ref() else {
            return;
        };
        if let Err(error) = inbox
            .commands
            .answered(&inbox.device, &result.id, result.result.as_bytes())
            .await
        {
            // Not stored: the command stays queued and comes again on the next connection.
            tracing::warn!(message = "A command's result was not stored; the command comes again on the device's next connection.", device_id = %inbox.device, command_id = %result.id, %error);
        }
    }
}
