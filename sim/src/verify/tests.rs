use super::*;
use crate::manifest::DeviceEntry;

const TOPIC: &str = "telemetry.readings";
const PARTITIONS: i32 = 3;

fn manifest() -> Manifest {
    let device = |id: &str| DeviceEntry {
        id: id.into(),
        kind: "reading".into(),
        transport: "tcp".into(),
        first_seq: 1,
        last_sent_seq: Some(12),
        acked_up_to: Some(10),
    };
    Manifest {
        seed: 1,
        devices: vec![device("env-1"), device("env-2"), device("truck-7")],
    }
}

/// What a correct gateway writes: every acknowledged event once, in order, each device on the
/// partition murmur2 gives its key, offsets consecutive per partition.
fn clean() -> Vec<Observed> {
    let mut next_offset = [0i64; PARTITIONS as usize];
    let mut out = Vec::new();
    for seq in 1..=10u64 {
        for device in ["env-1", "env-2", "truck-7"] {
            let partition = partition_for(device.as_bytes(), PARTITIONS);
            let offset = &mut next_offset[partition as usize];
            out.push(Observed {
                topic: TOPIC.into(),
                partition,
                offset: *offset,
                key: Some(device.as_bytes().to_vec()),
                event_id: Some(format!("{device}:{seq}")),
            });
            *offset += 1;
        }
    }
    out
}

fn verdict(records: Vec<Observed>, options: Options) -> Verdict {
    check(
        &manifest(),
        records,
        &|t| (t == TOPIC).then_some(PARTITIONS),
        options,
    )
}

fn position(records: &[Observed], id: &str) -> usize {
    records
        .iter()
        .position(|r| r.event_id.as_deref() == Some(id))
        .unwrap()
}

#[test]
fn a_clean_stream_passes() {
    let v = verdict(clean(), Options::default());
    assert!(v.ok(), "{}", v.report());
    assert_eq!((v.found, v.acknowledged), (30, 30));
    assert_eq!(
        v.unacknowledged_absent, 6,
        "seqs 11 and 12 of three devices"
    );
    assert!(v.report().contains("OK: no defects"));
}

#[test]
fn a_missing_event_is_named_by_device_and_seq() {
    let mut records = clean();
    records.remove(position(&records, "env-2:4"));
    let v = verdict(records, Options::default());
    assert_eq!(
        v.defects,
        [Defect::Missing {
            device: "env-2".into(),
            seqs: vec![(4, 4)]
        }]
    );
    assert!(v
        .report()
        .contains("DEFECT missing: env-2: 1 acknowledged event(s) in no topic: seq 4"));
}

#[test]
fn a_duplicate_is_named_with_both_places() {
    let mut records = clean();
    let mut again = records[position(&records, "env-1:3")].clone();
    again.offset = 1000;
    records.push(again);
    let v = verdict(records.clone(), Options::default());
    assert_eq!(v.defects.len(), 1, "{}", v.report());
    let Defect::Duplicate {
        event_id, again, ..
    } = &v.defects[0]
    else {
        panic!("{:?}", v.defects)
    };
    assert_eq!(event_id, "env-1:3");
    assert_eq!(again.offset, 1000);
    // Recognisable duplicates may be allowed (after a crash): counted, not a defect.
    let v = verdict(
        records,
        Options {
            allow_duplicates: true,
        },
    );
    assert!(v.ok());
    assert_eq!(v.duplicates_allowed, 1);
}

#[test]
fn a_swap_is_an_order_defect_for_that_device() {
    let mut records = clean();
    let (a, b) = (
        position(&records, "truck-7:5"),
        position(&records, "truck-7:6"),
    );
    let (oa, ob) = (records[a].offset, records[b].offset);
    records[a].offset = ob;
    records[b].offset = oa;
    let v = verdict(records, Options::default());
    assert_eq!(v.defects.len(), 1, "{}", v.report());
    let Defect::OutOfOrder {
        device,
        seq,
        after_seq,
        ..
    } = &v.defects[0]
    else {
        panic!("{:?}", v.defects)
    };
    assert_eq!((device.as_str(), *seq, *after_seq), ("truck-7", 5, 6));
}

#[test]
fn a_record_on_the_wrong_partition_is_named_with_the_right_one() {
    let mut records = clean();
    let i = position(&records, "env-1:7");
    let right = records[i].partition;
    records[i].partition = (right + 1) % PARTITIONS;
    records[i].offset = 500;
    let v = verdict(records, Options::default());
    assert_eq!(v.defects.len(), 1, "{}", v.report());
    assert_eq!(
        v.defects[0],
        Defect::WrongPartition {
            event_id: "env-1:7".into(),
            key: "env-1".into(),
            at: Loc {
                topic: TOPIC.into(),
                partition: (right + 1) % PARTITIONS,
                offset: 500
            },
            expected: right,
            partitions: PARTITIONS,
        }
    );
}

#[test]
fn one_of_each_defect_gives_one_line_of_each_class() {
    let mut records = clean();
    records.remove(position(&records, "env-2:9"));
    let mut dup = records[position(&records, "env-1:1")].clone();
    dup.offset = 900;
    records.push(dup);
    let (a, b) = (position(&records, "env-1:5"), position(&records, "env-1:6"));
    let (oa, ob) = (records[a].offset, records[b].offset);
    records[a].offset = ob;
    records[b].offset = oa;
    let w = position(&records, "truck-7:2");
    records[w].partition = (records[w].partition + 1) % PARTITIONS;
    records[w].offset = 800;
    let v = verdict(records, Options::default());
    let classes: Vec<&str> = v.by_class().keys().copied().collect();
    assert_eq!(
        classes,
        ["duplicate", "missing", "out-of-order", "wrong-partition"],
        "{}",
        v.report()
    );
    assert!(v.by_class().values().all(|&n| n == 1), "{}", v.report());
    assert!(v.report().contains("FAILED: 4 defect(s)"));
}

#[test]
fn other_runs_are_ignored_and_strangers_from_this_run_are_flagged() {
    let mut records = clean();
    records.push(Observed {
        event_id: Some("someone-else:1".into()),
        key: Some(b"someone-else".to_vec()),
        ..records[0].clone()
    });
    records.push(Observed {
        event_id: Some("env-1:99".into()),
        offset: 700,
        ..records[0].clone()
    });
    records.push(Observed {
        event_id: None,
        offset: 701,
        ..records[0].clone()
    });
    let v = verdict(records, Options::default());
    assert_eq!(v.foreign, 1);
    let classes: Vec<&str> = v.defects.iter().map(Defect::class).collect();
    assert_eq!(classes, ["unexpected", "unreadable"], "{}", v.report());
}

#[test]
fn the_file_sink_is_read_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.jsonl"),
        "{\"topic\":\"t\",\"key\":\"env-1\",\"timestamp_ms\":1,\"headers\":{\"event-id\":\"env-1:1\"},\"value\":{}}\n\
         not json\n",
    )
    .unwrap();
    let records = file::read(dir.path(), "t").unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].event_id.as_deref(), Some("env-1:1"));
    assert_eq!(records[0].key.as_deref(), Some(&b"env-1"[..]));
    assert_eq!(records[1].event_id, None);
    assert!(file::read(dir.path(), "absent").unwrap().is_empty());
}
