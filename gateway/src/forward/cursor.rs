//! Where a forwarder reads next in the spool.
//!
//! Normally one cursor walks the spool in id order: strict per-device order. With
//! `kafka.live_share` above 0, when the spool holds more than `threshold` rows beyond the cursor
//! (a backlog, after an outage), the rows queued from that moment on form a *live* region read
//! by a second cursor, and each refill gives `live_share` of its room to the live region,
//! ahead of the backlog. Fresh events then reach Kafka within seconds instead of after the
//! whole backlog, at a price: during the drain a device's fresh events can be written before
//! its older ones (consumers reorder by `seq`). When the backlog cursor reaches the live region
//! the two merge and order is strict again. A rewind after a failed delivery also returns to
//! one cursor, at or before the failed row, so no row is ever skipped.

/// One read to make: rows with ids in `(after, until]`, at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetch {
    pub after: i64,
    pub until: i64,
    pub limit: usize,
    pub live: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Live {
    /// The last id of the backlog; everything above is live.
    boundary: i64,
    /// The last live id read.
    next: i64,
}

#[derive(Debug, Clone)]
pub struct Cursor {
    backlog: i64,
    live: Option<Live>,
    share: f64,
    threshold: i64,
}

impl Cursor {
    pub fn new(share: f64, threshold: usize) -> Self {
        Self {
            backlog: 0,
            live: None,
            share: share.clamp(0.0, 0.9),
            threshold: threshold as i64,
        }
    }

    /// Starts a live region if the spool's last id shows a backlog.
    pub fn observe_last_id(&mut self, last_id: i64) {
        if self.share > 0.0 && self.live.is_none() && last_id - self.backlog > self.threshold {
            self.live = Some(Live {
                boundary: last_id,
                next: last_id,
            });
        }
    }

    pub fn is_draining_backlog(&self) -> bool {
        self.live.is_some()
    }

    /// Whether [`Cursor::observe_last_id`] could start a live region now; when not, the spool's
    /// last id need not be asked for.
    pub fn watches_for_backlog(&self) -> bool {
        self.share > 0.0 && self.live.is_none()
    }

    /// The reads for `room` rows: the live region first, then the backlog.
    pub fn plan(&self, room: usize) -> Vec<Fetch> {
        match self.live {
            None => vec![Fetch {
                after: self.backlog,
                until: i64::MAX,
                limit: room,
                live: false,
            }],
            Some(l) => {
                let live_room = ((room as f64) * self.share).ceil() as usize;
                vec![
                    Fetch {
                        after: l.next,
                        until: i64::MAX,
                        limit: live_room.max(1),
                        live: true,
                    },
                    Fetch {
                        after: self.backlog,
                        until: l.boundary,
                        limit: room.saturating_sub(live_room).max(1),
                        live: false,
                    },
                ]
            }
        }
    }

    /// Records what a read returned: the last id taken, or `None` if it came back empty.
    pub fn advance(&mut self, fetch: &Fetch, last_taken: Option<i64>) {
        match (fetch.live, last_taken, &mut self.live) {
            (true, Some(id), Some(l)) => l.next = id,
            (false, Some(id), _) => self.backlog = id,
            // The backlog is drained: merge, skipping the live rows already sent.
            (false, None, Some(l)) => {
                self.backlog = self.backlog.max(l.next);
                self.live = None;
            }
            _ => {}
        }
    }

    /// After a failed delivery of row `failed`: read everything from it again, in order.
    pub fn rewind(&mut self, failed: i64) {
        self.backlog = self.backlog.min(failed - 1);
        self.live = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_live_share_there_is_one_cursor_in_order() {
        let mut c = Cursor::new(0.0, 10);
        assert!(!c.watches_for_backlog());
        c.observe_last_id(1_000);
        assert!(!c.is_draining_backlog());
        let plan = c.plan(100);
        assert_eq!(
            plan,
            [Fetch {
                after: 0,
                until: i64::MAX,
                limit: 100,
                live: false
            }]
        );
        c.advance(&plan[0], Some(100));
        assert_eq!(c.plan(5)[0].after, 100);
    }

    #[test]
    fn a_backlog_splits_the_room_between_live_and_backlog_rows() {
        let mut c = Cursor::new(0.25, 10);
        c.observe_last_id(1_000);
        let plan = c.plan(100);
        assert_eq!(
            plan[0],
            Fetch {
                after: 1_000,
                until: i64::MAX,
                limit: 25,
                live: true
            }
        );
        assert_eq!(
            plan[1],
            Fetch {
                after: 0,
                until: 1_000,
                limit: 75,
                live: false
            }
        );
    }

    #[test]
    fn when_the_backlog_is_drained_the_cursors_merge_past_the_live_rows_sent() {
        let mut c = Cursor::new(0.5, 10);
        c.observe_last_id(100);
        let plan = c.plan(10);
        c.advance(&plan[0], Some(105));
        c.advance(&plan[1], Some(100));
        let plan = c.plan(10);
        c.advance(&plan[0], None);
        c.advance(&plan[1], None);
        assert!(!c.is_draining_backlog());
        assert_eq!(c.plan(10)[0].after, 105, "live rows are not sent twice");
    }

    #[test]
    fn a_rewind_never_skips_backlog_rows() {
        let mut c = Cursor::new(0.5, 10);
        c.observe_last_id(1_000);
        let plan = c.plan(10);
        c.advance(&plan[0], Some(1_005));
        c.advance(&plan[1], Some(5));
        c.rewind(1_003); // a live row failed
        assert!(!c.is_draining_backlog());
        assert_eq!(
            c.plan(10)[0].after,
            5,
            "back to the oldest unsent backlog row"
        );
        c.rewind(3);
        assert_eq!(c.plan(10)[0].after, 2);
    }
}
