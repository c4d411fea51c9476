//! What the node does with a command (`commands = true` in `config/node.toml`): the requests
//! every Tributary device knows (`tributary_client::command`), applied to its sensors.
//!
//! - `set_interval {"interval_ms": N}`: every sensor samples every N ms from now on.
//! - `get_state`: each sensor's interval, and the events waiting to be sent.
//!
//! Anything else is answered `{"ok": false, "error": ...}`. A command seen again (a redelivery)
//! is done again: both requests are idempotent.

use tributary_client::command::{answer, json, Command, Request};

use crate::device::Source;

/// Does what `command` asks of `sources`; returns the answer to send.
pub fn obey(command: &Command, sources: &mut [Box<dyn Source>], pending: usize) -> Vec<u8> {
    let result = command.request().and_then(|request| match request {
        Request::SetInterval(ms) => {
            let changed = sources
                .iter_mut()
                .map(|s| s.set_interval_ms(ms))
                .filter(|c| *c)
                .count();
            if changed == 0 {
                Err("no sensor here samples on an interval".into())
            } else {
                Ok(json!({ "interval_ms": ms, "sensors": changed }))
            }
        }
        Request::GetState => Ok(json!({
            "intervals_ms": sources.iter().map(|s| s.interval_ms()).collect::<Vec<_>>(),
            "pending": pending,
        })),
    });
    tracing::info!(message = "Command done.", command_id = %command.id, name = %command.name, ok = result.is_ok());
    answer(result)
}
