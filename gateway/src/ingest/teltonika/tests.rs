//! Tracker sessions in-process: a listener on port 0, a real spool, and a client that speaks
//! Codec 8 as a tracker does.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::codec::tests::{codec8, CODEC8_EXAMPLE};
use super::{serve, TeltonikaConfig};
use crate::shutdown::Scope;
use tributary_spool::Spool;

const IMEI: &str = "356307042441013";

async fn listening(
    accept_unknown: bool,
) -> (std::net::SocketAddr, Spool, Scope, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ingest, spool) = crate::ingest::local::local_ingest(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let config = TeltonikaConfig {
        listen: addr,
        max_connections: 8.try_into().expect("non-zero"),
        max_connections_per_address: 8.try_into().expect("non-zero"),
        idle_timeout: Duration::from_secs(60),
        names: BTreeMap::from([(IMEI.to_owned(), "truck-12".to_owned())]),
        accept_unknown,
        accept_unknown_max: 1000,
        accept_unknown_per_minute: 60,
    };
    let scope = Scope::default();
    tokio::spawn(serve(listener, config, ingest, scope.clone()));
    (addr, spool, scope, dir)
}

fn handshake(imei: &str) -> Vec<u8> {
    let mut out = (imei.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(imei.as_bytes());
    out
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Every stored record as JSON (topic, key, headers, value).
async fn stored(spool: &Spool) -> Vec<serde_json::Value> {
    let rows = spool.fetch(0, 1000).await.expect("fetch");
    rows.iter().map(|r| r.record.to_json()).collect()
}

#[tokio::test]
async fn records_are_answered_with_their_count_only_once_stored() {
    let (addr, spool, scope, _dir) = listening(false).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&handshake(IMEI)).await.expect("IMEI");
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).await.expect("accept byte");
    assert_eq!(answer, [1]);
    let packet = codec8(&[
        (1_700_000_000_000, 52.5163, 13.3777, 9, 54, vec![(239, 1)]),
        (1_700_000_010_000, 52.5170, 13.3790, 0, 0, vec![(66, 120)]),
    ]);
    // In two pieces, as TCP may deliver it.
    s.write_all(&packet[..10]).await.expect("first half");
    s.write_all(&packet[10..]).await.expect("second half");
    let mut count = [0u8; 4];
    s.read_exact(&mut count).await.expect("record count");
    assert_eq!(u32::from_be_bytes(count), 2);
    let rows = stored(&spool).await;
    // Record 1: a position and a reading (ignition); record 2: no fix, a reading only.
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert!(
        rows.iter().all(|r| r["key"] == "truck-12"),
        "the IMEI's name is the key"
    );
    let position = rows
        .iter()
        .find(|r| r["value"]["kind"] == "position")
        .expect("a position");
    assert_eq!(position["value"]["lat"], 52.5163);
    assert_eq!(position["value"]["speed_mps"], 15.0, "54 km/h");
    assert_eq!(position["timestamp_ms"], 1_700_000_000_000i64);
    let names: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["value"]["values"][0]["name"].as_str())
        .collect();
    assert_eq!(names, ["ignition", "external_voltage"]);
    // The documented example, with no fix: its IO values.
    s.write_all(&hex(CODEC8_EXAMPLE)).await.expect("example");
    s.read_exact(&mut count).await.expect("record count");
    assert_eq!(u32::from_be_bytes(count), 1);
    scope.stop.cancel();
}

#[tokio::test]
async fn an_unknown_imei_is_refused_at_the_handshake() {
    let (addr, spool, scope, _dir) = listening(false).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&handshake("111111111111111"))
        .await
        .expect("IMEI");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got).await;
    assert_eq!(got, [0], "refused, then closed");
    assert!(stored(&spool).await.is_empty());
    scope.stop.cancel();
}

#[tokio::test]
async fn with_accept_unknown_the_imei_is_the_device_id() {
    let (addr, spool, scope, _dir) = listening(true).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&handshake("111111111111111"))
        .await
        .expect("IMEI");
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.expect("accept");
    s.write_all(&codec8(&[(1_700_000_000_000, 1.0, 2.0, 5, 0, vec![])]))
        .await
        .expect("packet");
    let mut count = [0u8; 4];
    s.read_exact(&mut count).await.expect("count");
    assert_eq!(stored(&spool).await[0]["key"], "111111111111111");
    scope.stop.cancel();
}

#[tokio::test]
async fn a_damaged_packet_is_a_dead_letter_and_the_connection_closes_unanswered() {
    let (addr, spool, scope, _dir) = listening(false).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&handshake(IMEI)).await.expect("IMEI");
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.expect("accept");
    let mut packet = hex(CODEC8_EXAMPLE);
    packet[20] ^= 0xFF;
    s.write_all(&packet).await.expect("packet");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got).await;
    assert!(
        got.is_empty(),
        "no record count for a packet not stored: {got:?}"
    );
    let rows = stored(&spool).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let reason = rows[0]["headers"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("CRC mismatch"), "{reason}");
    scope.stop.cancel();
}
