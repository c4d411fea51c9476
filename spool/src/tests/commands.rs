//! The command queue: ops commit with their outcome records, and only when they change it.

use super::*;
use crate::commands::{Done, NewCommand, Op};

fn outcome(device: &str, id: &str, what: &str) -> Record {
    Record {
        topic: "responses".into(),
        key: device.as_bytes().to_vec(),
        value: format!("{{\"command_id\":\"{id}\",\"outcome\":\"{what}\"}}").into_bytes(),
        timestamp_ms: 1,
        headers: Vec::new(),
        origin: None,
        event: None,
        mqtt_topic: None,
    }
}

fn enqueue(device: &str, id: &str, limit: usize) -> Op {
    Op::Enqueue {
        command: NewCommand {
            device: device.into(),
            command_id: id.into(),
            name: "set_interval".into(),
            body: format!("{{\"id\":\"{id}\"}}").into_bytes(),
            received_ms: 10,
            expires_ms: 1_000,
        },
        limit,
        overflow: outcome(device, id, "refused"),
    }
}

fn queue(db: &mut SpoolDb, ops: Vec<Op>) -> Vec<Done> {
    let mut out = db.commit_group_with(&[], &[], &[], &[ops]).unwrap();
    out.appended.unwrap();
    out.queued.pop().unwrap()
}

fn outcomes(db: &SpoolDb) -> Vec<String> {
    db.fetch(0, 100)
        .unwrap()
        .into_iter()
        .map(|r| String::from_utf8(r.record.value).unwrap())
        .collect()
}

#[test]
fn a_device_queue_keeps_order_refuses_overflow_and_ignores_a_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    let done = queue(
        &mut db,
        vec![
            enqueue("a", "1", 2),
            enqueue("b", "9", 2),
            enqueue("a", "2", 2),
            enqueue("a", "1", 2),
            enqueue("a", "3", 2),
        ],
    );
    assert_eq!(
        done,
        [
            Done::Queued,
            Done::Queued,
            Done::Queued,
            Done::Duplicate,
            Done::Overflowed
        ]
    );
    let ids: Vec<_> = db
        .commands("a", 0, false, 10)
        .unwrap()
        .into_iter()
        .map(|c| c.command_id)
        .collect();
    assert_eq!(ids, ["1", "2"]);
    // Only the overflow told Kafka anything.
    assert_eq!(outcomes(&db), [r#"{"command_id":"3","outcome":"refused"}"#]);
}

#[test]
fn delivered_and_settled_store_their_outcome_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    queue(&mut db, vec![enqueue("a", "1", 10), enqueue("a", "2", 10)]);
    let delivered = |id: &str| Op::Delivered {
        device: "a".into(),
        command_id: id.into(),
        at_ms: 20,
        outcome: outcome("a", id, "delivered"),
    };
    let settle = |id: &str| Op::Settle {
        device: "a".into(),
        command_id: id.into(),
        outcome: outcome("a", id, "answered"),
    };
    let done = queue(
        &mut db,
        vec![delivered("1"), delivered("1"), settle("1"), settle("1")],
    );
    assert_eq!(done, [Done::Applied, Done::Gone, Done::Applied, Done::Gone]);
    assert_eq!(
        outcomes(&db),
        [
            r#"{"command_id":"1","outcome":"delivered"}"#,
            r#"{"command_id":"1","outcome":"answered"}"#
        ]
    );
    let left = db.commands("a", 0, true, 10).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].command_id, "2");
    assert!(db.commands("a", left[0].row, false, 10).unwrap().is_empty());
    assert_eq!(db.command_counts().unwrap(), [("a".to_owned(), 1, 0)]);
    assert_eq!(db.due_commands(999, 10).unwrap().len(), 0);
    assert_eq!(db.due_commands(1_000, 10).unwrap().len(), 1);
}

#[test]
fn a_refused_group_queues_nothing_and_saves_no_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = SpoolDb::open_with(
        &dir.path().join("spool.db"),
        Limits {
            max_bytes: 1,
            ..Limits::unlimited()
        },
    )
    .unwrap();
    let offset = SourceState {
        source: "commands:t:0".into(),
        state: b"5".to_vec(),
    };
    let out = db
        .commit_group_with(&[], &[], &[offset], &[vec![enqueue("a", "1", 10)]])
        .unwrap();
    assert!(matches!(out.appended, Err(SpoolError::Full { .. })));
    assert!(out.queued.is_empty());
    assert!(db.commands("a", 0, false, 10).unwrap().is_empty());
    assert!(db.sources("commands:").unwrap().is_empty());
}

#[test]
fn a_row_is_never_used_again_so_a_cursor_misses_no_newer_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    queue(&mut db, vec![enqueue("a", "1", 10), enqueue("a", "2", 10)]);
    let newest = db.commands("a", 0, false, 10).unwrap()[1].row;
    queue(
        &mut db,
        vec![Op::Settle {
            device: "a".into(),
            command_id: "2".into(),
            outcome: outcome("a", "2", "answered"),
        }],
    );
    queue(&mut db, vec![enqueue("a", "3", 10)]);
    let after = db.commands("a", newest, false, 10).unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].command_id, "3");
}
