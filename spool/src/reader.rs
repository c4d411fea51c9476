//! The reader thread: forwarding's reads, on a read-only connection of their own.
//!
//! In WAL mode a reader sees every transaction committed before its read began and never waits
//! for the writer, nor the writer for it. So the forwarder's fetches do not queue behind group
//! commits (and their syncs) on the writer thread, and commits do not wait behind fetches.
//! A row is visible here once the commit that holds it returned, which can be before the WAL
//! is synced; [`super::Spool::fetch_range`] therefore asks for no row above
//! [`super::sync::Durable::through`], and the forwarder is woken ([`super::Spool::appended`])
//! only after the sync. A deleted row is gone once its ack returned.

use std::path::Path;
use std::sync::mpsc;

use rusqlite::Connection;

use super::worker::{Reply, Worker};
use super::{SpoolDb, SpoolError, Spooled};

pub(super) enum Query {
    Fetch {
        after: i64,
        until: i64,
        limit: usize,
        reply: Reply<Vec<Spooled>>,
    },
    LastId {
        reply: Reply<i64>,
    },
    /// A device's queued commands ([`super::commands::pending`]).
    Commands {
        device: String,
        after: i64,
        undelivered_only: bool,
        limit: usize,
        reply: Reply<Vec<super::commands::Queued>>,
    },
    /// Commands past their expiry.
    DueCommands {
        now_ms: i64,
        limit: usize,
        reply: Reply<Vec<super::commands::Queued>>,
    },
    /// Whether the spool has sequence state for a device.
    Seen {
        device: String,
        reply: Reply<bool>,
    },
    /// Queued and delivered commands per device.
    CommandCounts {
        reply: Reply<Vec<(String, u64, u64)>>,
    },
}

/// Opens the read-only connection to the spool at `path` (which the writer has created) and
/// starts the thread.
pub(super) fn start(path: &Path) -> Result<Worker<Query>, SpoolError> {
    let conn = SpoolDb::open_read_only(path)?;
    Worker::start("spool-reader", path, move |rx| serve(&conn, &rx))
}

fn serve(conn: &Connection, rx: &mpsc::Receiver<Query>) {
    while let Ok(query) = rx.recv() {
        match query {
            Query::Fetch {
                after,
                until,
                limit,
                reply,
            } => {
                let _ = reply.send(super::rows::fetch_range(conn, after, until, limit));
            }
            Query::LastId { reply } => {
                let _ = reply.send(super::rows::last_id(conn));
            }
            Query::Commands {
                device,
                after,
                undelivered_only,
                limit,
                reply,
            } => {
                let _ = reply.send(super::commands::pending(
                    conn,
                    &device,
                    after,
                    undelivered_only,
                    limit,
                ));
            }
            Query::DueCommands {
                now_ms,
                limit,
                reply,
            } => {
                let _ = reply.send(super::commands::due(conn, now_ms, limit));
            }
            Query::Seen { device, reply } => {
                let _ = reply.send(super::commands::seen(conn, &device));
            }
            Query::CommandCounts { reply } => {
                let _ = reply.send(super::commands::counts(conn));
            }
        }
    }
    tracing::debug!(message = "Spool reader stopped.");
}
