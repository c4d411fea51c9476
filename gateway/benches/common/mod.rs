//! What the spool benches share: the gateway's way of driving a spool, and how a bench picks
//! the run that stands for several.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary_spool::record::Record;
use tributary_spool::Spool;

/// Appends from `connections` tasks at once, each `per_conn` records in calls of `per_call`
/// (made by `make(connection, seq)`), each call waiting for its commit, as connections do.
/// Returns how long it took.
pub async fn drive(
    spool: &Spool,
    connections: usize,
    per_call: usize,
    per_conn: usize,
    make: impl Fn(usize, u64) -> Option<Record> + Send + Sync + 'static,
) -> Duration {
    let make = Arc::new(make);
    let start = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let (spool, make) = (spool.clone(), make.clone());
            tokio::spawn(async move {
                let mut seq = 1;
                while (seq as usize) <= per_conn {
                    let batch = (0..per_call)
                        .filter_map(|i| make(c, seq + i as u64))
                        .collect();
                    spool.append(batch).await.expect("append");
                    seq += per_call as u64;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    start.elapsed()
}

/// The middle one of `items` by `key` (the upper middle of an even count): the run, or ratio,
/// that stands for several noisy ones.
pub fn median_by<T>(mut items: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    items.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let mid = items.len() / 2;
    items.swap_remove(mid)
}
