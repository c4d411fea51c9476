//! The progress bar: events acknowledged against the total, with live rates.
//!
//! indicatif draws on stderr only when it is a terminal, so logs and CI output stay clean.

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::device::Live;

/// A running progress bar; [`Progress::finish`] clears it.
pub struct Progress {
    bar: ProgressBar,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Shows progress towards `total` events (a spinner when unknown), or nothing if `enabled`
    /// is false.
    pub fn start(live: Arc<Live>, total: Option<u64>, enabled: bool) -> Self {
        let bar = match (enabled, total) {
            (false, _) => ProgressBar::hidden(),
            (true, Some(n)) => ProgressBar::new(n),
            (true, None) => ProgressBar::new_spinner(),
        };
        let template = if total.is_some() {
            "{elapsed_precise} [{bar:30}] {pos}/{len} acked  {msg}"
        } else {
            "{elapsed_precise} {spinner} {pos} acked  {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(tick(bar.clone(), live, stop.clone()));
        Self { bar, stop, task }
    }

    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
        self.bar.finish_and_clear();
    }
}

async fn tick(bar: ProgressBar, live: Arc<Live>, stop: CancellationToken) {
    let period = Duration::from_millis(250);
    let (mut sent0, mut acked0) = (0, 0);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let sent = Live::get(&live.sent);
        let acked = Live::get(&live.acked);
        let per_s = |now: u64, before: u64| (now - before.min(now)) as f64 / period.as_secs_f64();
        bar.set_position(acked);
        bar.set_message(format!(
            "{:.0} sent/s  {:.0} acked/s  {} connected  {} resent  {} reconnects",
            per_s(sent, sent0),
            per_s(acked, acked0),
            Live::get(&live.connected),
            Live::get(&live.resent),
            Live::get(&live.reconnects),
        ));
        (sent0, acked0) = (sent, acked);
    }
}
