//! The file-tail source against a user who can write the watched directory: a symbolic link to
//! a file only the gateway may read, a FIFO that would block a reader, and a flood of files
//! matching the glob. None of it is read, each is counted once, and the real log still flows.

use super::*;

#[test]
fn the_file_source_reads_no_link_no_fifo_and_at_most_max_files() {
    let topics = Topics::unique("files-guard");
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("mkdir");
    // What the gateway may read and the attacker may not.
    let secret = dir.path().join("secret.key");
    std::fs::write(&secret, "PRIVATE-KEY-MATERIAL\n").expect("secret");
    // The attacker's link, named like a log; a FIFO; more logs than the glob may follow.
    std::os::unix::fs::symlink(&secret, logs.join("a-link.log")).expect("symlink");
    let fifo = logs.join("b-fifo.log");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    for name in ["c.log", "d.log", "e.log", "f.log"] {
        std::fs::write(logs.join(name), format!("{name} line 1\n")).expect("log");
    }
    let lines = format!("{}.lines", topics.readings);
    let extra = format!(
        "[[files]]\nname = \"app\"\npath = \"{{dir}}/logs/*.log\"\nformat = \"text\"\n\
         topic = \"{lines}\"\npoll_ms = 20\nmax_files = 2\n\
         [[files]]\nname = \"one\"\npath = \"{{dir}}/logs/a-link.log\"\nformat = \"text\"\n\
         topic = \"{lines}\"\npoll_ms = 20\n\
         [[files]]\nname = \"pipe\"\npath = \"{{dir}}/logs/b-fifo.log\"\nformat = \"text\"\n\
         topic = \"{lines}\"\npoll_ms = 20\n"
    );
    let mut gateway = Gateway::start_in_dir(dir, None, &topics, "", &extra);
    // A moment of polls (20 ms each), then stop.
    std::thread::sleep(Duration::from_secs(2));
    gateway.wait_drained(Duration::from_secs(30));
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let stored: Vec<String> = gateway
        .sink_lines(&lines)
        .iter()
        .map(|l| l.to_string())
        .collect();
    assert!(
        !stored.iter().any(|l| l.contains("PRIVATE-KEY")),
        "the link's target was read: {stored:?}"
    );
    // The glob lists a-link, b-fifo, c, d, e and f: the link and the FIFO are refused, c and d
    // followed, e and f over max_files. Before: the named FIFO blocked a runtime thread in
    // open(2), and the link's target was read.
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored[0].contains("c.log line 1"), "{stored:?}");
    assert!(stored[1].contains("d.log line 1"), "{stored:?}");
    // Each refusal is counted once per source, however many polls saw it.
    assert_eq!(stopped.refused("files/symlink"), 2, "{}", stopped.stdout);
    assert_eq!(
        stopped.refused("files/not_a_regular_file"),
        2,
        "{}",
        stopped.stdout
    );
    assert_eq!(
        stopped.refused("files/too_many_files"),
        2,
        "{}",
        stopped.stdout
    );
    // `*.log` loses a rotated app.log.1 on a crash (issue 39): said at start.
    assert!(
        stopped.stderr.contains("does not match a rotated file"),
        "{}",
        stopped.stderr
    );
}
