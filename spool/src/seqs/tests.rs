use super::*;

fn judge(seqs: &mut Seqs, device: &str, session: u64, seq: u64, time: i64) -> Verdict {
    judge_as(seqs, device, None, session, seq, time)
}

fn judge_as(
    seqs: &mut Seqs,
    device: &str,
    writer: Option<&str>,
    session: u64,
    seq: u64,
    time: i64,
) -> Verdict {
    let mut changes = Changes::default();
    let v = seqs.judge(&mut changes, device, writer, session, seq, time, 1000);
    seqs.apply(changes);
    v
}

#[test]
fn a_retransmission_is_a_duplicate_and_a_reused_seq_with_another_time_is_stored() {
    let mut s = Seqs::default();
    assert_eq!(judge(&mut s, "d", 0, 10, 100), Verdict::New);
    assert_eq!(judge(&mut s, "d", 0, 11, 110), Verdict::New);
    assert_eq!(judge(&mut s, "d", 0, 10, 100), Verdict::Duplicate);
    // A counter reset: seq 10 again, another event.
    assert_eq!(
        judge(&mut s, "d", 0, 10, 200),
        Verdict::Regression { max_seq: 11 }
    );
    // Below the highest but never stored: new, whatever its time.
    assert_eq!(judge(&mut s, "d", 0, 1, 5), Verdict::New);
    assert_eq!(s.get("d", 0).map(|x| x.regressions), Some(1));
}

#[test]
fn one_event_far_in_the_future_silences_nothing() {
    // Seq 50 stamped in the year 9999, then the clock is right again.
    let mut s = Seqs::default();
    assert_eq!(judge(&mut s, "d", 0, 49, 1_000), Verdict::New);
    assert_eq!(judge(&mut s, "d", 0, 50, 253_402_300_799_000), Verdict::New);
    for seq in 51..=53 {
        assert_eq!(judge(&mut s, "d", 0, seq, 1_000 + seq as i64), Verdict::New);
    }
    let session = s
        .get("d", 0)
        .cloned()
        .unwrap_or_else(|| Session::new(0, 1, 0));
    assert!(
        session.max_time_ms <= 1000 + FUTURE_BOUND_MS,
        "the latest time is capped: {}",
        session.max_time_ms
    );
}

#[test]
fn a_forged_highest_seq_costs_one_flagged_event_never_the_later_ones() {
    let mut s = Seqs::default();
    for seq in 1..=100 {
        assert_eq!(judge(&mut s, "d", 0, seq, seq as i64), Verdict::New);
    }
    assert_eq!(judge(&mut s, "d", 0, u64::MAX, 9_999), Verdict::New);
    assert_eq!(
        judge(&mut s, "d", 0, 101, 101),
        Verdict::Unvouched { max_seq: u64::MAX }
    );
    for seq in 102..=200 {
        assert_eq!(judge(&mut s, "d", 0, seq, seq as i64), Verdict::New);
    }
    // A true retransmission in the new window is still recognised.
    assert_eq!(judge(&mut s, "d", 0, 150, 150), Verdict::Duplicate);
}

#[test]
fn a_clock_and_counter_going_back_stores_everything() {
    let mut s = Seqs::default();
    for seq in 1000..1100 {
        assert_eq!(
            judge(&mut s, "d", 0, seq, 10_000 + seq as i64),
            Verdict::New
        );
    }
    for seq in 500..600 {
        assert_ne!(
            judge(&mut s, "d", 0, seq, seq as i64),
            Verdict::Duplicate,
            "seq {seq} was never stored"
        );
    }
}

#[test]
fn another_identity_writing_for_a_device_keeps_a_lane_of_its_own() {
    let mut s = Seqs::default();
    assert_eq!(judge(&mut s, "car-9", 0, 5, 5), Verdict::New);
    // A tracker the ACL lets publish for car-9 forges its highest seq.
    assert_eq!(
        judge_as(
            &mut s,
            "car-9",
            Some("tracker-1"),
            0,
            u64::MAX,
            4_102_444_800_000
        ),
        Verdict::New
    );
    for seq in 6..=12 {
        assert_eq!(judge(&mut s, "car-9", 0, seq, seq as i64), Verdict::New);
    }
    assert_eq!(
        judge_as(
            &mut s,
            "car-9",
            Some("tracker-1"),
            0,
            u64::MAX,
            4_102_444_800_000
        ),
        Verdict::Duplicate
    );
    assert!(s.get("car-9\0tracker-1", 0).is_some());
    s.reset("car-9");
    assert!(s.get("car-9\0tracker-1", 0).is_none());
}

#[test]
fn sessions_are_independent() {
    let mut s = Seqs::default();
    assert_eq!(judge(&mut s, "d", 7, u64::MAX, i64::MAX), Verdict::New);
    assert_eq!(judge(&mut s, "d", 8, 1, 5), Verdict::New);
    assert_eq!(judge(&mut s, "d", 8, 2, 6), Verdict::New);
    assert_eq!(judge(&mut s, "d", 8, 1, 5), Verdict::Duplicate);
}

#[test]
fn changes_within_one_transaction_see_each_other() {
    let s = Seqs::default();
    let mut changes = Changes::default();
    assert_eq!(s.judge(&mut changes, "d", None, 0, 1, 1, 0), Verdict::New);
    assert_eq!(
        s.judge(&mut changes, "d", None, 0, 1, 1, 0),
        Verdict::Duplicate
    );
    assert!(s.get("d", 0).is_none(), "nothing applied before commit");
}

#[test]
fn idle_and_surplus_sessions_are_forgotten() {
    let mut s = Seqs::default();
    for id in 0..(MAX_SESSIONS_PER_DEVICE as u64 + 3) {
        let mut changes = Changes::default();
        s.judge(&mut changes, "many", None, id, 1, 1, 100 + id as i64);
        s.apply(changes);
    }
    let mut changes = Changes::default();
    s.judge(&mut changes, "idle", None, 0, 1, 1, 5);
    s.apply(changes);
    let gone = s.forget(50);
    assert_eq!(gone.len(), 4, "{gone:?}");
    assert!(gone.contains(&("idle".to_owned(), 0)));
    assert!(gone.contains(&("many".to_owned(), 0)));
    assert!(s.get("many", 18).is_some());
    assert!(s.get("idle", 0).is_none());
}

mod model {
    //! The promise, checked against a model: for any interleaving of sends, resends, counter
    //! resets, clock jumps and restarts, every acknowledged event is stored, and an event is
    //! dropped only when an identical one (same session, seq and time) is stored.

    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::super::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// The next event: seq and time move on.
        Send,
        /// A retransmission of the event acknowledged `back` events ago.
        Resend { back: usize },
        /// The counter starts again from `to` (a reboot without a session id, wiped storage).
        ResetSeq { to: u64 },
        /// The clock jumps by `by` ms (backwards when negative).
        Clock { by: i64 },
        /// A seq far ahead (a glitch, or a forgery), once.
        Jump { to: u64 },
        /// The gateway restarts: the state goes through its stored form.
        Restart,
        /// A new boot session.
        Reboot,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => Just(Op::Send),
            3 => (0usize..400).prop_map(|back| Op::Resend { back }),
            1 => (0u64..300).prop_map(|to| Op::ResetSeq { to }),
            1 => (-100_000i64..100_000).prop_map(|by| Op::Clock { by }),
            1 => prop_oneof![Just(u64::MAX), 1_000u64..1_000_000].prop_map(|to| Op::Jump { to }),
            1 => Just(Op::Restart),
            1 => Just(Op::Reboot),
        ]
    }

    fn restart(seqs: &Seqs) -> Seqs {
        let rows: Vec<(String, Session)> = seqs
            .devices
            .iter()
            .flat_map(|(d, ss)| ss.iter().map(move |s| (d.clone(), s.clone())))
            .map(|(d, s)| {
                let bytes = s.window.encode();
                let window = Window::decode(Some(&bytes), s.max_seq(), seqs.width());
                (d, Session { window, ..s })
            })
            .collect();
        Seqs::from_rows(rows, seqs.width())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn every_acknowledged_event_is_stored_and_only_identical_ones_are_dropped(
            ops in proptest::collection::vec(op(), 1..300),
            width in prop_oneof![Just(64usize), Just(128), Just(256)],
        ) {
            let mut seqs = Seqs::from_rows(Vec::new(), width);
            let mut stored: BTreeSet<(u64, u64, i64)> = BTreeSet::new();
            let mut acked: Vec<(u64, u64, i64)> = Vec::new();
            let (mut session, mut seq, mut time) = (0u64, 1u64, 1_700_000_000_000i64);
            for op in ops {
                let event = match op {
                    Op::Send => {
                        seq = seq.saturating_add(1);
                        time += 1000;
                        (session, seq, time)
                    }
                    Op::Resend { back } if !acked.is_empty() => {
                        acked[acked.len() - 1 - back.min(acked.len() - 1)]
                    }
                    Op::Resend { .. } => continue,
                    Op::ResetSeq { to } => {
                        seq = to;
                        continue;
                    }
                    Op::Clock { by } => {
                        time += by;
                        continue;
                    }
                    Op::Jump { to } => (session, to, time),
                    Op::Restart => {
                        seqs = restart(&seqs);
                        continue;
                    }
                    Op::Reboot => {
                        session += 1;
                        continue;
                    }
                };
                let mut changes = Changes::default();
                let verdict = seqs.judge(&mut changes, "d", None, event.0, event.1, event.2, 0);
                seqs.apply(changes);
                if verdict == Verdict::Duplicate {
                    prop_assert!(
                        stored.contains(&event),
                        "{event:?} dropped as a duplicate but never stored"
                    );
                } else {
                    stored.insert(event);
                }
                acked.push(event);
                for a in &acked {
                    prop_assert!(stored.contains(a), "{a:?} acknowledged and not stored");
                }
            }
        }
    }
}
