//! Expiry: commands past their `expires_ms` leave the queue with an "expired" outcome, whether
//! they were delivered (and never answered) or not. Checked every [`EVERY`]; a command is
//! never delivered after its expiry (the session checks it too, [`super::Commands`]).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use tributary_common::clock::now_ms;
use tributary_spool::commands::{Done, Op};

use super::outcome::{Kind, Outcome};
use super::Commands;

/// How often the queue is looked through for expired commands.
pub const EVERY: Duration = Duration::from_secs(1);

/// Settles expired commands until `stop`.
pub async fn run(commands: Arc<Commands>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(error) = commands.expire_due().await {
            if let Some(suppressed) = tributary_common::ratelog::allow("commands_expiry") {
                tracing::warn!(message = "Expiring commands failed; trying again.", %error, suppressed);
            }
        }
    }
}

impl Commands {
    /// Settles every command past its expiry now as "expired"; returns how many.
    pub async fn expire_due(&self) -> Result<usize, tributary_spool::SpoolError> {
        let now = now_ms();
        let mut settled = 0;
        loop {
            let due = self.spool.due_commands(now, 500).await?;
            if due.is_empty() {
                return Ok(settled);
            }
            let n = due.len();
            let ops: Vec<Op> = due
                .iter()
                .map(|c| {
                    let why = match c.delivered_ms {
                        Some(_) => "delivered, but not answered before its expiry",
                        None => "not delivered before its expiry: the device was not connected and subscribed",
                    };
                    Op::Settle {
                        device: c.device.clone(),
                        command_id: c.command_id.clone(),
                        outcome: Outcome::of(c, Kind::Expired, now)
                            .reason(why)
                            .record(&self.config.responses_topic),
                    }
                })
                .collect();
            let done = self.spool.queue(ops, Vec::new()).await?;
            let applied = done.iter().filter(|d| **d == Done::Applied).count();
            for _ in 0..applied {
                self.stats.count_command("expired");
            }
            settled += applied;
            if n < 500 {
                return Ok(settled);
            }
        }
    }
}
