//! The tailer in-process, over real files and a real spool: what it stores, where it resumes,
//! and rotation by rename and by copytruncate.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::*;
use tributary_spool::Spool;

fn source(dir: &Path, format: LineFormat) -> FileSource {
    FileSource {
        name: "logs".into(),
        path: dir.join("*.log"),
        format,
        start_at_end: false,
        max_line_bytes: 64,
        poll: Duration::from_millis(10),
        rotate_wait: Duration::ZERO,
        follow_symlinks: false,
        max_files: 100,
    }
}

fn text() -> LineFormat {
    LineFormat::Text {
        topic: "logs.lines".into(),
        key: None,
    }
}

async fn tailer(ingest: &Ingest, source: FileSource) -> Tailer {
    let saved = ingest
        .spool
        .sources("file:logs:")
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.source, u64::from_be_bytes(s.state.try_into().unwrap())))
        .collect();
    let mut tailer = Tailer::new(Arc::new(source), ingest.clone(), Mappings::default(), saved);
    tailer.first_scan = true;
    tailer
}

/// The values of every stored record of `topic`, as text.
async fn stored(spool: &Spool, topic: &str) -> Vec<String> {
    let rows = spool.fetch(0, 10_000).await.unwrap();
    rows.iter()
        .filter(|r| r.record.topic == topic)
        .map(|r| String::from_utf8_lossy(&r.record.value).into_owned())
        .collect()
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[tokio::test]
async fn lines_are_stored_once_and_a_restart_resumes_after_the_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (ingest, spool) = crate::ingest::local::local_ingest(data.path());
    let log = dir.path().join("app.log");
    append(&log, "one\ntwo\nthr");
    let mut t = tailer(&ingest, source(dir.path(), text())).await;
    t.poll().await;
    assert_eq!(
        stored(&spool, "logs.lines").await,
        ["one", "two"],
        "the partial line waits"
    );
    append(&log, "ee\n");
    t.poll().await;
    t.poll().await;
    assert_eq!(stored(&spool, "logs.lines").await, ["one", "two", "three"]);
    // A new tailer (a restart) reads the saved offset from the spool: nothing again.
    append(&log, "four\n");
    let mut again = tailer(&ingest, source(dir.path(), text())).await;
    again.poll().await;
    assert_eq!(
        stored(&spool, "logs.lines").await,
        ["one", "two", "three", "four"]
    );
}

#[tokio::test]
async fn rotation_by_rename_reads_the_old_file_to_its_end_then_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (ingest, spool) = crate::ingest::local::local_ingest(data.path());
    let log = dir.path().join("app.log");
    append(&log, "a1\na2\n");
    let mut t = tailer(&ingest, source(dir.path(), text())).await;
    t.poll().await;
    // logrotate: rename, the writer still appends to its open file, then a new app.log.
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(&dir.path().join("app.log.1"), "a3\n");
    append(&log, "b1\n");
    t.poll().await;
    t.poll().await;
    let mut got = stored(&spool, "logs.lines").await;
    got.sort();
    assert_eq!(got, ["a1", "a2", "a3", "b1"]);
    assert_eq!(t.followed.len(), 1, "the rotated file was let go once read");
    let saved = spool.sources("file:logs:").await.unwrap();
    assert_eq!(saved.len(), 1, "its offset forgotten: {saved:?}");
}

#[tokio::test]
async fn copytruncate_starts_the_file_again_from_the_beginning() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (ingest, spool) = crate::ingest::local::local_ingest(data.path());
    let log = dir.path().join("app.log");
    append(&log, "header\nx1\nx2\n");
    let mut t = tailer(&ingest, source(dir.path(), text())).await;
    t.poll().await;
    // copytruncate: copied elsewhere, then truncated in place; the same first line follows.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, "header\ny1\n");
    t.poll().await;
    assert_eq!(
        stored(&spool, "logs.lines").await,
        ["header", "x1", "x2", "header", "y1"]
    );
}

#[tokio::test]
async fn csv_rows_become_events_through_the_mapping_and_bad_rows_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (ingest, spool) = crate::ingest::local::local_ingest(data.path());
    let raw: crate::route::mapping::RawMapping = toml::from_str(
        r#"
        device_id = "{payload.meter}"
        kind = "reading"
        time_path = "ts"
        time_format = "epoch_s"
        values = [{ path = "kwh", name = "energy", unit = "kWh" }]
        "#,
    )
    .unwrap();
    let mapping = crate::route::mapping::validate_inline(&raw, "files[0].mapping").unwrap();
    let mut src = source(dir.path(), LineFormat::Csv(Box::new(mapping.clone())));
    src.path = dir.path().join("meters.log");
    append(
        &src.path,
        "ts,meter,kwh\n1700000000,m-1,12.5\n1700000060,m-1,oops\n",
    );
    let mut t = tailer(&ingest, src).await;
    t.mappings = Mappings::new(vec![mapping]);
    t.poll().await;
    let readings = stored(&spool, "telemetry.readings").await;
    assert_eq!(readings.len(), 1, "{readings:?}");
    let v: Value = serde_json::from_str(&readings[0]).unwrap();
    assert_eq!(
        (v["device_id"].as_str(), v["time_ms"].as_u64()),
        (Some("m-1"), Some(1_700_000_000_000))
    );
    assert_eq!(v["values"][0]["value"], 12.5);
    let dead = stored(&spool, "telemetry.dead-letter").await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].contains("path `kwh` is the string \\\"oops\\\""),
        "{}",
        dead[0]
    );
}

#[tokio::test]
async fn a_line_over_the_limit_is_a_dead_letter_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (ingest, spool) = crate::ingest::local::local_ingest(data.path());
    let log = dir.path().join("app.log");
    append(&log, &format!("short\n{}\nafter\n", "y".repeat(100)));
    let mut t = tailer(&ingest, source(dir.path(), text())).await;
    t.poll().await;
    assert_eq!(stored(&spool, "logs.lines").await, ["short", "after"]);
    let dead = stored(&spool, "telemetry.dead-letter").await;
    assert!(
        dead[0].contains("line of 101 bytes, over files.max_line_bytes (64)"),
        "{dead:?}"
    );
}

#[test]
fn a_pattern_that_loses_rotated_files_is_known_and_archives_are_not_lines() {
    use super::{follows_rotation, is_compressed};
    assert!(!follows_rotation(Path::new("/var/log/app/*.log")));
    assert!(!follows_rotation(Path::new("/var/log/app/app.log")));
    assert!(follows_rotation(Path::new("/var/log/app/*.log*")));
    assert!(follows_rotation(Path::new("/var/log/app/app.log*")));
    assert!(is_compressed(Path::new("/var/log/app/app.log.2.gz")));
    assert!(!is_compressed(Path::new("/var/log/app/app.log.1")));
}
