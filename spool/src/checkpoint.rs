//! Checkpoints off the commit path: the checkpointer thread copies the WAL back into the
//! database file while the writer goes on committing.
//!
//! SQLite's own auto-checkpoint runs inside the commit that pushed the WAL past 1,000 pages, so
//! one commit in a few hundred paid for copying megabytes and an fsync of the database file, and
//! every acknowledgement waiting on that group waited with it. Here the writer's connection
//! reports the WAL's size after each commit ([`install`], a WAL hook in place of the
//! auto-checkpoint), and the writer nudges this thread when the WAL holds [`NUDGE_PAGES`]. The
//! thread runs a PASSIVE checkpoint on its own connection, which never blocks the writer nor a
//! reader (WAL allows one checkpointer beside them).
//!
//! Invariants:
//! - A checkpoint only copies committed frames; durability is the WAL's sync after commit
//!   ([`super::sync`]; a checkpoint syncs the WAL before it copies, and the database after), so
//!   where and when checkpoints run changes no promise.
//! - The WAL still restarts from its beginning: only the writer can restart it, and only when a
//!   checkpoint has copied every frame before its next write. Under steady load the thread's
//!   checkpoints trail the commits, so past [`BACKSTOP_PAGES`] the writer's own commit
//!   checkpoints (which then copies only what the thread has not) and the WAL restarts, as
//!   SQLite's auto-checkpoint would. `journal_size_limit` then trims the file.

use std::cell::Cell;
use std::ffi::c_int;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::hooks::{CheckpointMode, Wal};
use rusqlite::Connection;

use super::SpoolError;

/// WAL pages (of 4 KiB) at which the writer nudges the checkpointer: SQLite's default
/// auto-checkpoint size.
pub const NUDGE_PAGES: i32 = 1000;

/// WAL pages past which the writer checkpoints in its own commit, so the WAL restarts.
pub const BACKSTOP_PAGES: i32 = 4000;

thread_local! {
    /// Pages in the WAL after this thread's last commit (the writer's connection lives on one
    /// thread, so this is that spool's).
    static WAL_PAGES: Cell<i32> = const { Cell::new(0) };
}

/// Replaces `conn`'s auto-checkpoint with the hook that records the WAL's size after each
/// commit and checkpoints past [`BACKSTOP_PAGES`].
pub fn install(conn: &Connection) {
    conn.wal_hook(Some(after_commit));
}

fn after_commit(wal: &Wal, pages: c_int) -> rusqlite::Result<()> {
    WAL_PAGES.with(|p| p.set(pages));
    if pages >= BACKSTOP_PAGES {
        // A busy checkpoint (a reader on an old snapshot) is retried at the next commit.
        let _ = wal.checkpoint_v2(CheckpointMode::PASSIVE);
        WAL_PAGES.with(|p| p.set(0));
    }
    Ok(())
}

/// Pages in the WAL after the calling thread's last commit.
pub fn wal_pages() -> i32 {
    WAL_PAGES.with(Cell::get)
}

/// The checkpointer thread; it stops when this is dropped, after the checkpoint it is running.
pub struct Checkpointer {
    nudge: Option<mpsc::SyncSender<()>>,
    /// The WAL's size at the last nudge: the next comes [`NUDGE_PAGES`] later.
    nudged_at: i32,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a connection of its own to the spool at `path` and starts the thread.
    pub fn start(path: &Path) -> Result<Self, SpoolError> {
        let conn = Connection::open(path).map_err(SpoolError::sqlite("open for checkpoints"))?;
        conn.execute_batch(super::schema::PRAGMAS)
            .map_err(SpoolError::sqlite("set pragmas"))?;
        let (nudge, nudged) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("spool-checkpoint".into())
            .spawn(move || {
                while nudged.recv().is_ok() {
                    if let Err(error) =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(message = "Spool checkpoint failed; the writer's own checkpoint takes over.", %error);
                    }
                }
            })
            .map_err(|e| SpoolError::Dir {
                path: path.to_owned(),
                source: e.into(),
            })?;
        Ok(Self {
            nudge: Some(nudge),
            nudged_at: 0,
            thread: Some(thread),
        })
    }

    /// Asks for a checkpoint each time the WAL has grown by [`NUDGE_PAGES`]; never blocks (a
    /// nudge while one is pending is the same nudge). Called by the writer after each commit.
    pub fn after_commit(&mut self) {
        let pages = wal_pages();
        if pages < self.nudged_at {
            // The WAL restarted.
            self.nudged_at = 0;
        }
        if pages >= self.nudged_at + NUDGE_PAGES {
            self.nudged_at = pages;
            if let Some(nudge) = &self.nudge {
                let _ = nudge.try_send(());
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.nudge = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
