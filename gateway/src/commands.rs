//! Commands: from a Kafka topic, through the spool, to the device, and each outcome back into
//! Kafka.
//!
//! The return path keeps the promise of the way in:
//! 1. [`consume`] reads the commands topic (every partition, assigned, not balanced: each
//!    gateway of a fleet reads the whole topic and takes its own devices' commands) and queues
//!    each command in the spool's command queue together with the topic's next offsets, in one
//!    commit (`tributary_spool::commands`). It resumes from those saved offsets, so a crash
//!    neither loses a command nor queues one twice; the offsets are also committed to Kafka
//!    afterwards, for lag monitoring only.
//! 2. A device's session (MQTT today) asks the spool for its queue when it subscribes and
//!    whenever [`Commands::wake`] says a command was queued for it, and sends each in queue
//!    order, carrying its id. The device's acknowledgement (PUBACK) marks it delivered; its
//!    answer settles it.
//! 3. Every change of a command's state commits with an outcome record on the responses topic
//!    ([`outcome`]): delivered, answered, expired, refused. The forwarder sends those as it
//!    sends events, so outcomes have the same durability and delivery (at least once, or exactly
//!    once) as events.
//! 4. [`expire`] settles commands past their expiry as "expired", delivered or not.
//!
//! Invariants: a command is acknowledged to Kafka (its offset saved) only in the transaction
//! that queues it or stores its refusal; a device receives commands only for its own id (its
//! subscription is checked against its identity); a command leaves the queue only with an
//! outcome record in the same transaction.

pub mod config;
pub mod consume;
pub mod expire;
pub mod outbox;
pub mod outcome;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

pub use config::{CommandsConfig, RawCommands};
use tributary_spool::commands::{Done, Op, Queued};
use tributary_spool::{Spool, SpoolError};

use crate::observe::stats::Stats;

/// What sessions share to deliver commands: the queue's handle, the config, and a waker per
/// device with an open session.
pub struct Commands {
    pub config: CommandsConfig,
    spool: Spool,
    stats: Stats,
    authority: Arc<crate::identity::Authority>,
    waiting: Mutex<HashMap<String, Vec<Weak<Notify>>>>,
}

/// How many commands a session asks for at a time.
pub const BATCH: usize = 32;

impl Commands {
    pub fn new(
        config: CommandsConfig,
        spool: Spool,
        stats: Stats,
        authority: Arc<crate::identity::Authority>,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            spool,
            stats,
            authority,
            waiting: Mutex::new(HashMap::new()),
        })
    }

    /// A waker for `device`, notified whenever a command is queued for it; the session keeps it
    /// while it is subscribed.
    pub fn watch(&self, device: &str) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let list = waiting.entry(device.to_owned()).or_default();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&notify));
        notify
    }

    /// Wakes every session of `device`.
    pub fn wake(&self, device: &str) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = waiting.get_mut(device) {
            list.retain(|w| match w.upgrade() {
                Some(n) => {
                    n.notify_one();
                    true
                }
                None => false,
            });
            if list.is_empty() {
                waiting.remove(device);
            }
        }
    }

    /// Whether the gateway can name `device`: the credentials file or `teltonika.names` does,
    /// or it sent events here. A spool that cannot say counts as known (the command waits).
    pub async fn knows(&self, device: &str) -> bool {
        self.authority.names(device) || self.spool.device_seen(device).await.unwrap_or(true)
    }

    /// `device` acknowledged receiving `command`: stores "delivered" (once).
    pub async fn delivered(&self, command: &Queued) -> Result<(), SpoolError> {
        let at_ms = tributary_common::clock::now_ms();
        let record = outcome::Outcome::of(command, outcome::Kind::Delivered, at_ms)
            .delivered_at(at_ms)
            .record(&self.config.responses_topic);
        let done = self
            .spool
            .queue(
                vec![Op::Delivered {
                    device: command.device.clone(),
                    command_id: command.command_id.clone(),
                    at_ms,
                    outcome: record,
                }],
                Vec::new(),
            )
            .await?;
        if done.first() == Some(&Done::Applied) {
            self.stats.count_command("delivered");
        }
        Ok(())
    }

    /// `device` answered command `id` with `result`: settles it as "answered". An answer to no
    /// command queued (answered before, expired, or never sent) stores nothing and is counted
    /// (`answer_unmatched`).
    pub async fn answered(&self, device: &str, id: &str, result: &[u8]) -> Result<(), SpoolError> {
        let at_ms = tributary_common::clock::now_ms();
        // What the queue knows of it, for the outcome's times; an answer to a command no
        // longer queued changes nothing.
        let queued = self
            .spool
            .commands(device, 0, false, self.config.max_queued_per_device)
            .await?;
        let Some(command) = queued.into_iter().find(|c| c.command_id == id) else {
            self.stats.count_command("answer_unmatched");
            return Ok(());
        };
        let mut ops = Vec::with_capacity(2);
        let mut answered = outcome::Outcome::of(&command, outcome::Kind::Answered, at_ms);
        if command.delivered_ms.is_none() {
            // An answer is proof of delivery, and may overtake the acknowledgement (a client
            // that answers from its message callback acknowledges after it returns).
            answered.delivered_ms = Some(at_ms);
            ops.push(Op::Delivered {
                device: device.to_owned(),
                command_id: id.to_owned(),
                at_ms,
                outcome: outcome::Outcome::of(&command, outcome::Kind::Delivered, at_ms)
                    .delivered_at(at_ms)
                    .record(&self.config.responses_topic),
            });
        }
        ops.push(Op::Settle {
            device: device.to_owned(),
            command_id: id.to_owned(),
            outcome: answered.result(result).record(&self.config.responses_topic),
        });
        let done = self.spool.queue(ops, Vec::new()).await?;
        if done.len() == 2 && done[0] == Done::Applied {
            self.stats.count_command("delivered");
        }
        if done.last() == Some(&Done::Applied) {
            self.stats.count_command("answered");
        }
        Ok(())
    }
}
