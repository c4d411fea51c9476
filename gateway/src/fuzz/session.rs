//! A whole TCP ingest session driven from bytes in memory.
//!
//! The input is what a device sends. A real session (`ingest::tcp::session`, the code every
//! listener runs) reads it from an in-memory stream, with a real spool behind it on a fresh
//! directory (on `/dev/shm` where there is one, so fsyncs are cheap). Then the input is walked
//! frame by frame beside the answers the gateway wrote, and two promises are checked:
//!
//! - **One answer per frame.** After the HELLO that opens the session, every frame gets exactly
//!   one answer (protocol version 3; versions 1 and 2 get a NACK per refused event and an ACK).
//!   Any other first frame gets one NACK and the connection closes: nothing after it is read.
//! - **Acknowledged means committed.** Every event an ANSWER or ACK settled without refusing it is
//!   in the spool afterwards: a row of its device session with that seq or a higher one (a
//!   retransmission is recognised by the highest seq stored, `spool/seqs.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tributary_protocol::codec::{Inbound, MessageCodec};
use tributary_protocol::{Event, Message, NackCode, OLDEST_VERSION, PROTOCOL_VERSION};

use crate::identity::Peer;
use crate::ingest::conn::Accepted;
use crate::ingest::local::local_ingest;

/// The frame limit of the fuzzed session.
const MAX_FRAME: usize = 8192;

/// Runs one session on `data` and checks its answers against the spool.
pub fn tcp_session(data: &[u8]) {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!(
        "tributary-fuzz-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let result = std::panic::catch_unwind(|| run(&dir, data));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn run(dir: &Path, data: &[u8]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (answers, rows) = runtime.block_on(async {
        let (ingest, spool) = local_ingest(dir);
        let (mut device, gateway) = tokio::io::duplex(64 * 1024);
        let accepted = Accepted {
            stream: Box::new(gateway),
            peer: Peer {
                addr: "127.0.0.1:40000".parse().expect("an address"),
                loopback_listener: true,
                certificate: None,
                chain: None,
            },
        };
        let session = tokio::spawn(crate::ingest::tcp::session(
            accepted,
            MAX_FRAME,
            Duration::from_secs(600),
            ingest,
            CancellationToken::new(),
        ));
        // Write everything and read everything at once: the gateway must not block on a device
        // that is still writing.
        let (mut reader, mut writer) = tokio::io::split(&mut device);
        let write = async {
            let _ = writer.write_all(data).await;
            let _ = writer.shutdown().await;
        };
        let mut answers = Vec::new();
        let read = reader.read_to_end(&mut answers);
        let (_, read) = tokio::join!(write, read);
        read.expect("reading the answers");
        session.await.expect("the session does not panic");
        let rows = spool.fetch(0, usize::MAX).await.expect("the spool reads");
        spool.close().await;
        (answers, rows)
    });
    let mut stored: HashMap<(String, u64), u64> = HashMap::new();
    for row in rows {
        if let Some(o) = row.record.origin {
            let highest = stored.entry((o.device_id, o.session)).or_insert(0);
            *highest = (*highest).max(o.seq);
        }
    }
    check(data, &answers, &stored);
}

/// Walks the device's frames and the gateway's answers side by side.
fn check(sent: &[u8], answers: &[u8], stored: &HashMap<(String, u64), u64>) {
    let frames = decode_all(sent, MAX_FRAME);
    let mut answers = decode_all(answers, usize::MAX).into_iter().map(|(m, _)| {
        m.unwrap_or_else(|bad| panic!("the gateway wrote a bad frame: {:?}", bad.error))
    });
    let mut next = |what: &str| {
        answers
            .next()
            .unwrap_or_else(|| panic!("no answer to {what}"))
    };
    let mut session: Option<(String, u64)> = None;
    for (frame, version) in frames {
        // Before HELLO, anything else gets one NACK and the connection closes
        // (`tcp/bad_frame_before_hello`, `tcp/protocol_violation`).
        if session.is_none() && !matches!(&frame, Ok(Message::Hello(_))) {
            let answer = next("a frame before HELLO");
            assert!(
                matches!(&answer, Message::Nack(_)),
                "a frame before HELLO gets a NACK, not {answer:?}"
            );
            break;
        }
        let message = match frame {
            Err(bad) => {
                let answer = next("a bad frame");
                assert!(
                    matches!(&answer, Message::Nack(n) if n.code == NackCode::Malformed),
                    "a bad frame gets NACK malformed, not {answer:?}"
                );
                if bad.fatal {
                    break;
                }
                continue;
            }
            Ok(m) => m,
        };
        match (message, &session) {
            (Message::Hello(hello), None) => {
                let speaks = (OLDEST_VERSION..=PROTOCOL_VERSION).contains(&hello.protocol_version);
                if !speaks {
                    let answer = next("HELLO of an unknown version");
                    assert!(matches!(answer, Message::Nack(n) if n.code == NackCode::Malformed));
                    break;
                }
                session = Some((hello.device_id, hello.session.unwrap_or(0)));
            }
            (Message::Events(events), Some(s)) if !events.is_empty() => {
                let settled = if version >= 3 {
                    match next("EVENTS") {
                        Message::Answer(a) => {
                            let counted =
                                a.stored as usize + a.duplicates as usize + a.refused.len();
                            assert_eq!(counted, events.len(), "the answer covers the batch");
                            let refused: Vec<u64> = a.refused.iter().map(|r| r.seq).collect();
                            Some(refused)
                        }
                        Message::Nack(n) if n.code == NackCode::Busy => None,
                        other => panic!("EVENTS answered with {other:?}"),
                    }
                } else {
                    legacy_answers(&mut next, events.len())
                };
                if let Some(refused) = settled {
                    assert_committed(&events, &refused, s, stored);
                }
            }
            // An empty batch, a second HELLO, a device's ACK or NACK.
            (m, _) => {
                let answer = next("a frame the session refuses");
                assert!(
                    matches!(answer, Message::Nack(_)),
                    "{m:?} answered with {answer:?}"
                );
            }
        }
    }
    assert!(
        answers.next().is_none(),
        "the gateway answered more frames than it received"
    );
}

/// A version 1 or 2 batch: NACKs for refused events, then ACK. Returns the refused seqs, or
/// `None` when the batch was not stored (NACK busy).
fn legacy_answers(next: &mut impl FnMut(&str) -> Message, batch: usize) -> Option<Vec<u64>> {
    let mut refused = Vec::new();
    loop {
        match next("a version 1-2 batch") {
            Message::Ack(_) => return Some(refused),
            Message::Nack(n) if n.code == NackCode::Busy => return None,
            Message::Nack(n) => {
                let seq = n
                    .text
                    .strip_prefix("event seq ")
                    .and_then(|t| t.split(':').next())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("a refusal names its seq: {n:?}"));
                refused.push(seq);
                assert!(refused.len() <= batch, "more refusals than events");
            }
            other => panic!("a version 1-2 batch answered with {other:?}"),
        }
    }
}

/// Every event of the batch the answer did not refuse is in the spool.
fn assert_committed(
    events: &[Event],
    refused: &[u64],
    (device, session): &(String, u64),
    stored: &HashMap<(String, u64), u64>,
) {
    for event in events.iter().filter(|e| !refused.contains(&e.seq)) {
        assert_eq!(
            &event.device_id, device,
            "only the session's device is accepted"
        );
        let highest = stored.get(&(device.clone(), *session)).copied();
        assert!(
            highest.is_some_and(|h| h >= event.seq),
            "event {}:{} was acknowledged but is not in the spool",
            device,
            event.seq
        );
    }
}

/// Every frame in `bytes` with the version it was written in, up to a fatal one.
fn decode_all(bytes: &[u8], limit: usize) -> Vec<(Inbound, u8)> {
    let mut codec = MessageCodec::new(limit);
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Ok(Some(item)) = codec.decode(&mut buf) {
        let fatal = matches!(&item, Err(bad) if bad.fatal);
        out.push((item, codec.peer_version()));
        if fatal {
            break;
        }
    }
    out
}
