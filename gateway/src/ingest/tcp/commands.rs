//! Commands on a protocol 4 TCP connection ([`crate::commands`]).
//!
//! A device whose HELLO says protocol 4 takes commands: the session sends it COMMAND frames
//! for its queued commands, in queue order, once per connection (a cursor over queue rows),
//! as soon as HELLO is accepted and whenever one is queued. The device answers each with a
//! COMMAND_RESULT, which settles the command ("delivered" and "answered" in one commit) and is
//! not answered itself. TCP has no acknowledgement of a single frame, so a command counts as
//! delivered when it is answered; one not answered when the connection ends comes again on the
//! next (whatever `commands.redeliver` says).

use tributary_protocol::{CommandFrame, CommandResult, Message};

use super::Connection;
use crate::commands::outbox::Outbox;

/// A protocol 4 device's commands on this connection; whatever waits goes out right after
/// HELLO.
pub(super) fn inbox(commands: std::sync::Arc<crate::commands::Commands>, device: &str) -> Outbox {
    let outbox = Outbox::new(commands, device, true);
    outbox.wake.notify_one();
    outbox
}

impl Connection {
    /// Sends the device's queued commands not yet sent on this connection, in order.
    pub(super) async fn send_commands(&mut self) -> std::io::Result<()> {
        loop {
            let Some(outbox) = self.inbox.as_mut() else {
                return Ok(());
            };
            let queued = match outbox.next(crate::commands::BATCH, |_| true).await {
                Ok(q) => q,
                Err(error) => {
                    tracing::warn!(message = "Reading the device's commands failed; trying at its next wake.", device_id = %outbox.device(), %error);
                    return Ok(());
                }
            };
            if queued.is_empty() {
                return Ok(());
            }
            for command in queued {
                let Some(c) = tributary_client::command::Command::parse(&command.body) else {
                    continue;
                };
                let frame = Message::Command(CommandFrame {
                    id: c.id,
                    name: c.name,
                    args: c.args.to_string(),
                    expires_ms: command.expires_ms,
                });
                self.wire.send(&frame).await?;
            }
        }
    }

    /// A COMMAND_RESULT: settles its command. A result for no command queued is counted
    /// (`answer_unmatched`) and dropped: the command was answered before, or expired.
    pub(super) async fn command_result(&mut self, result: CommandResult) {
        let Some(outbox) = self.inbox.as_ref() else {
            return;
        };
        if let Err(error) = outbox
            .commands()
            .answered(outbox.device(), &result.id, result.result.as_bytes())
            .await
        {
            // Not stored: the command stays queued and comes again on the next connection.
            tracing::warn!(message = "A command's result was not stored; the command comes again on the device's next connection.", device_id = %outbox.device(), command_id = %result.id, %error);
        }
    }
}
