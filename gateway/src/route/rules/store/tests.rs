//! Rule state in the spool: saved with the group that changed it, reset when a rule changes.

use super::*;
use tributary_spool::testing::Tmpfs;
use tributary_spool::{payload_size, GroupOutcome, Limits, SpoolDb};

fn open(dir: &tempfile::TempDir) -> SpoolDb {
    SpoolDb::open(&dir.path().join("spool.db")).unwrap()
}

fn rule_set(toml_text: &str) -> crate::route::rules::RuleSet {
    crate::config::Config::parse(toml_text, std::path::Path::new("t.toml"))
        .unwrap()
        .rules
}

/// Rules run in a spool as its commit hook, as the gateway runs them.
trait WithRules {
    fn set_rules(&mut self, set: crate::route::rules::RuleSet) -> Result<(), SpoolError>;
}

impl WithRules for SpoolDb {
    fn set_rules(&mut self, set: crate::route::rules::RuleSet) -> Result<(), SpoolError> {
        self.set_hook(Box::new(crate::route::rules::store::RuleStates::new(set)))
    }
}

/// A routed reading with its event attached, as ingest hands it to a spool with rules.
fn reading(device: &str, seq: u64, value: f64) -> Record {
    let event = tributary_protocol::Event {
        device_id: device.into(),
        seq,
        time_ms: 1_700_000_000_000 + seq * 1000,
        body: tributary_protocol::Body::Reading(tributary_protocol::Reading {
            values: vec![tributary_protocol::SensorValue {
                name: "t".into(),
                value,
                unit: "Cel".into(),
            }],
        }),
    };
    let routes = crate::config::Config::parse("", std::path::Path::new("t.toml"))
        .unwrap()
        .routes;
    crate::route::Router::new(routes)
        .unwrap()
        .keeping_events(true)
        .event(event, 0, None)
        .unwrap()
}

const DEADBAND: &str = "[[rules]]\nname = \"db\"\ntype = \"deadband\"\nfield = \"values.t\"\nabsolute = 1.0\ntopic = \"out\"\n";

#[test]
fn rule_states_survive_a_reopen_in_one_row_per_device_and_reset_when_the_rule_changes() {
    let dir = tempfile::tempdir().unwrap();
    let derived = |db: &SpoolDb| {
        db.fetch(0, 100)
            .unwrap()
            .iter()
            .filter(|r| r.record.topic == "out")
            .count()
    };
    let mut db = open(&dir);
    db.set_rules(rule_set(DEADBAND)).unwrap();
    db.append(vec![reading("a", 1, 20.0), reading("b", 1, 20.0)])
        .unwrap();
    assert_eq!(
        derived(&db),
        2,
        "each device's first value passes the deadband"
    );
    drop(db);
    let rows: i64 = rusqlite::Connection::open(dir.path().join("spool.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM device_rule_state", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 2, "one row per device");
    // Reopened with the same rule: 20.5 is inside the band of the remembered 20.
    let mut db = open(&dir);
    db.set_rules(rule_set(DEADBAND)).unwrap();
    db.append(vec![reading("a", 2, 20.5)]).unwrap();
    assert_eq!(derived(&db), 2);
    drop(db);
    // The rule changed (a narrower band): its state starts afresh, so 20.6 passes.
    let mut db = open(&dir);
    db.set_rules(rule_set(&DEADBAND.replace("1.0", "0.2")))
        .unwrap();
    db.append(vec![reading("a", 3, 20.6)]).unwrap();
    assert_eq!(derived(&db), 3);
}

#[test]
fn schema_v5_rule_state_rows_move_into_device_rows() {
    let dir = tempfile::tempdir().unwrap();
    let set = rule_set(DEADBAND);
    let version = set.rules()[0].version.clone();
    let mut db = open(&dir);
    db.set_rules(set.clone()).unwrap();
    db.append(vec![reading("a", 1, 20.0)]).unwrap();
    drop(db);
    // Write a's state as schema v5 kept it, and take the v7 row away.
    let conn = rusqlite::Connection::open(dir.path().join("spool.db")).unwrap();
    let bytes: Vec<u8> = conn
        .query_row(
            "SELECT states FROM device_rule_state WHERE device_id = 'a'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // A format 2 row: its two-byte lead, then the entries. A deadband's state has the same
    // bytes in format 1, which schema v5 wrote.
    let entries: Vec<(String, String, crate::route::rules::State)> =
        postcard::from_bytes(&bytes[2..]).unwrap();
    let state = postcard::to_allocvec(&entries[0].2).unwrap();
    conn.execute(
        "INSERT INTO rule_state (rule, device_id, version, state) VALUES ('db', 'a', ?1, ?2)",
        rusqlite::params![version, state],
    )
    .unwrap();
    conn.execute("DELETE FROM device_rule_state", []).unwrap();
    drop(conn);
    let mut db = open(&dir);
    db.set_rules(set).unwrap();
    // The moved state still knows 20: 20.5 is inside the band.
    db.append(vec![reading("a", 2, 20.5)]).unwrap();
    let out = db
        .fetch(0, 100)
        .unwrap()
        .iter()
        .filter(|r| r.record.topic == "out")
        .count();
    assert_eq!(out, 1);
    drop(db);
    let conn = rusqlite::Connection::open(dir.path().join("spool.db")).unwrap();
    let old: i64 = conn
        .query_row("SELECT count(*) FROM rule_state", [], |r| r.get(0))
        .unwrap();
    assert_eq!(old, 0, "moved, not kept twice");
}

#[test]
fn a_commit_that_fails_after_the_rules_ran_leaves_their_states_as_committed() {
    let fs = Tmpfs::mount(4 << 20);
    let path = fs.0.path().join("spool.db");
    let mut db = SpoolDb::open_with(&path, Limits::unlimited()).unwrap();
    db.set_rules(rule_set(DEADBAND)).unwrap();
    db.append(vec![reading("a", 1, 20.0)]).unwrap();
    // Every reading of this batch is a change the deadband passes: the rules run and emit,
    // then SQLite runs into a real ENOSPC and the transaction rolls back.
    let batch: Vec<Record> = (2..=400)
        .map(|s| {
            let mut r = reading("a", s, 30.0 + (s % 2) as f64 * 10.0);
            r.value.resize(1024, b' ');
            r
        })
        .collect();
    let payload: u64 = batch.iter().map(payload_size).sum();
    let filler = fs.0.path().join("filler");
    std::fs::write(&filler, vec![0u8; (fs.free() - payload - 4096) as usize]).unwrap();
    let outcome = db.commit_group(std::slice::from_ref(&batch), &[], &[]);
    assert!(
        matches!(
            outcome,
            Ok(GroupOutcome {
                appended: Err(SpoolError::Full { .. }),
                ..
            })
        ),
        "the batch is refused for lack of room"
    );
    std::fs::remove_file(&filler).unwrap();
    // The deadband still remembers 20 (not the refused batch's 30 or 40, and not nothing):
    // 20.5 is inside its band.
    db.append(vec![reading("a", 2, 20.5)]).unwrap();
    let rows = db.fetch(0, 1000).unwrap();
    let derived = rows.iter().filter(|r| r.record.topic == "out").count();
    assert_eq!(rows.len(), 3, "readings 1 and 2, and what 1 derived");
    assert_eq!(derived, 1, "only the first reading passed the deadband");
}
