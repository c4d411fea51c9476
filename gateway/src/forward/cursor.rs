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

    /// The reads for `room` rows: the live region first, then the backlog. Their limits add up
    /// to `room` at most (none for a room of 0), and the backlog always gets at least one row of
    /// a room, so it drains however small the room is: the live region gets `live_share` of the
    /// room, rounded down.
    pub fn plan(&self, room: usize) -> Vec<Fetch> {
        if room == 0 {
            return Vec::new();
        }
        match self.live {
            None => vec![Fetch {
                after: self.backlog,
                until: i64::MAX,
                limit: room,
                live: false,
            }],
            Some(l) => {
                // share ≤ 0.9, so this is below `room`: the backlog keeps at least one.
                let live_room = (((room as f64) * self.share).floor() as usize).min(room - 1);
                let backlog = Fetch {
                    after: self.backlog,
                    until: l.boundary,
                    limit: room - live_room,
                    live: false,
                };
                if live_room == 0 {
                    return vec![backlog];
                }
                vec![
                    Fetch {
                        after: l.next,
                        until: i64::MAX,
                        limit: live_room,
                        live: true,
                    },
                    backlog,
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
        self.backlog = self.backlog.min(failed.saturating_sub(1));
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

    #[test]
    fn a_small_room_is_never_exceeded_and_still_drains_the_backlog() {
        let mut c = Cursor::new(0.9, 0);
        c.observe_last_id(10);
        assert!(c.plan(0).is_empty());
        let plan = c.plan(1);
        assert_eq!(plan.len(), 1, "{plan:?}");
        assert_eq!((plan[0].live, plan[0].limit), (false, 1));
    }

    /// One step of the model check.
    #[derive(Debug, Clone)]
    enum Step {
        /// Rows arrive in the spool.
        Append(i64),
        /// A refill with this much room.
        Refill(usize),
        /// The delivery of the n-th row sent so far (modulo) failed.
        Fail(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0i64..40).prop_map(Step::Append),
            (0usize..12).prop_map(Step::Refill),
            any::<usize>().prop_map(Step::Fail),
        ]
    }

    /// Reads what `fetch` asks for from a spool holding ids `1..=last`.
    fn read(fetch: &Fetch, last: i64) -> Vec<i64> {
        let until = fetch.until.min(last);
        (fetch.after.saturating_add(1)..=until)
            .take(fetch.limit)
            .collect()
    }

    use proptest::prelude::*;

    proptest! {
        /// Whatever arrives, whatever the room and whichever deliveries fail: a refill never
        /// asks for more rows than its room (so `max_in_flight - in_flight` cannot underflow),
        /// and once everything is read, every row has been sent, none skipped.
        #[test]
        fn refills_stay_within_their_room_and_never_skip_a_row(
            share in 0.0f64..0.95,
            threshold in 0usize..30,
            steps in proptest::collection::vec(step(), 1..120),
        ) {
            let mut c = Cursor::new(share, threshold);
            let mut last = 0i64;
            let mut sent: Vec<i64> = Vec::new();
            let refill = |c: &mut Cursor, room: usize, last: i64, sent: &mut Vec<i64>| {
                if c.watches_for_backlog() {
                    c.observe_last_id(last);
                }
                let mut taken = 0;
                for fetch in c.plan(room) {
                    let got = read(&fetch, last);
                    taken += got.len();
                    c.advance(&fetch, got.last().copied());
                    sent.extend(got);
                }
                taken
            };
            for step in steps {
                match step {
                    Step::Append(n) => last += n,
                    Step::Refill(room) => {
                        let planned: usize = c.plan(room).iter().map(|f| f.limit).sum();
                        prop_assert!(planned <= room, "planned {} for room {}", planned, room);
                        let taken = refill(&mut c, room, last, &mut sent);
                        prop_assert!(taken <= room);
                    }
                    Step::Fail(n) if !sent.is_empty() => c.rewind(sent[n % sent.len()]),
                    Step::Fail(_) => {}
                }
            }
            // Drain: refill until nothing more comes back.
            let mut empty_in_a_row = 0;
            for _ in 0..10_000 {
                if refill(&mut c, 7, last, &mut sent) == 0 {
                    empty_in_a_row += 1;
                    if empty_in_a_row == 3 {
                        break;
                    }
                } else {
                    empty_in_a_row = 0;
                }
            }
            let seen: std::collections::BTreeSet<i64> = sent.into_iter().collect();
            let all: std::collections::BTreeSet<i64> = (1..=last).collect();
            prop_assert_eq!(seen, all);
        }
    }
}
