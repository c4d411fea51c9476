//! A device's commands on one connection: what every link (MQTT, TCP, Teltonika) sends from.
//!
//! The outbox reads the device's queue after a cursor (queue rows never repeat), so each
//! command goes out at most once per connection, in queue order; a new connection starts from
//! the beginning again, which is how an unanswered command is sent again. Expired commands,
//! and those the link does not want (an MQTT subscription for other names), are passed over.
//! `wake` is notified whenever a command is queued for the device.

use std::sync::Arc;

use tokio::sync::Notify;
use tributary_spool::commands::Queued;
use tributary_spool::SpoolError;

use super::{config::Redeliver, Commands, BATCH};

pub struct Outbox {
    commands: Arc<Commands>,
    device: String,
    pub wake: Arc<Notify>,
    /// The last queue row passed on this connection.
    cursor: i64,
    /// Whether commands already acknowledged come again: with `redeliver = "until-answered"`,
    /// and always on links where only an answer settles a command (TCP, Codec 12).
    again: bool,
}

impl Outbox {
    /// The outbox of `device`; `answer_settles`: the link has no acknowledgement of its own.
    pub fn new(commands: Arc<Commands>, device: &str, answer_settles: bool) -> Self {
        Self {
            wake: commands.watch(device),
            again: answer_settles || commands.config.redeliver == Redeliver::UntilAnswered,
            commands,
            device: device.to_owned(),
            cursor: 0,
        }
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    pub fn commands(&self) -> &Arc<Commands> {
        &self.commands
    }

    /// Up to `limit` commands not yet sent on this connection, in queue order, that `wanted`
    /// takes; the expired and the unwanted are passed over for good.
    pub async fn next(
        &mut self,
        limit: usize,
        wanted: impl Fn(&Queued) -> bool,
    ) -> Result<Vec<Queued>, SpoolError> {
        let now = tributary_common::clock::now_ms();
        let mut out = Vec::new();
        while out.len() < limit {
            let queued = self
                .commands
                .spool
                .commands(&self.device, self.cursor, !self.again, BATCH)
                .await?;
            let more = queued.len() == BATCH;
            for command in queued {
                if out.len() >= limit {
                    return Ok(out);
                }
                self.cursor = command.row;
                if command.expires_ms > now && wanted(&command) {
                    out.push(command);
                }
            }
            if !more {
                break;
            }
        }
        Ok(out)
    }
}
