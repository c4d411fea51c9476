//! A Teltonika tracker takes Codec 12 commands.

use super::*;

/// The tracker's side of Codec 12, from Teltonika's protocol description: the next command the
/// server sent (its text), read from `stream`.
fn read_codec12_command(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).expect("a Codec 12 header");
    assert_eq!(&header[..4], &[0, 0, 0, 0], "preamble");
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let mut rest = vec![0u8; len + 4];
    stream.read_exact(&mut rest).expect("a Codec 12 packet");
    let (data, crc) = rest.split_at(len);
    assert_eq!(
        u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]),
        u32::from(crate::e2e::connectors::crc16(data)),
        "CRC-16/IBM over codec id to quantity 2"
    );
    assert_eq!(
        (data[0], data[1], data[2]),
        (0x0C, 1, 0x05),
        "codec 12, one command"
    );
    let size = u32::from_be_bytes([data[3], data[4], data[5], data[6]]) as usize;
    assert_eq!(data[7 + size], 1, "quantity 2");
    String::from_utf8(data[7..7 + size].to_vec()).expect("ASCII")
}

/// A Codec 12 response carrying `text`, as a tracker sends it.
fn codec12_response(text: &str) -> Vec<u8> {
    let mut d = vec![0x0C, 1, 0x06];
    d.extend_from_slice(&(text.len() as u32).to_be_bytes());
    d.extend_from_slice(text.as_bytes());
    d.push(1);
    let mut out = vec![0, 0, 0, 0];
    out.extend_from_slice(&(d.len() as u32).to_be_bytes());
    out.extend_from_slice(&d);
    out.extend_from_slice(&u32::from(crate::e2e::connectors::crc16(&d)).to_be_bytes());
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_teltonika_tracker_takes_codec_12_commands_between_its_records_and_its_responses_reach_kafka(
) {
    use std::io::{Read, Write};
    let port = tributary_tests::free_port();
    let site = site(
        "cmds-teltonika",
        &format!(
            "[teltonika]\nlisten = \"127.0.0.1:{port}\"\nnames = {{ \"356307042441013\" = \"truck-12\" }}\n"
        ),
    )
    .await;
    wait_reading(&site);
    produce(
        &site.brokers,
        &site.commands,
        &[
            command(
                "truck-12",
                json!({"id": "t1", "name": "setdigout", "args": {"text": "setdigout 1"}}),
            ),
            command("truck-12", json!({"id": "t2", "name": "getinfo"})),
        ],
    )
    .await;
    let mut tracker = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tracker
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let imei = b"356307042441013";
    let mut hello = (imei.len() as u16).to_be_bytes().to_vec();
    hello.extend_from_slice(imei);
    tracker.write_all(&hello).expect("IMEI");
    let mut accepted = [0u8; 1];
    tracker.read_exact(&mut accepted).expect("handshake answer");
    assert_eq!(accepted, [1]);
    assert_eq!(read_codec12_command(&mut tracker), "setdigout 1");
    // A record arrives before the response: answered with its count, as always.
    tracker
        .write_all(&crate::e2e::connectors::codec8(&[(
            1_700_000_000_000,
            52.5,
            13.4,
            40,
        )]))
        .expect("AVL packet");
    let mut count = [0u8; 4];
    tracker.read_exact(&mut count).expect("record count");
    assert_eq!(count, 1u32.to_be_bytes());
    tracker
        .write_all(&codec12_response("DOUT1:1 DOUT2:0 Timeout:0"))
        .expect("response");
    assert_eq!(read_codec12_command(&mut tracker), "getinfo");
    tracker
        .write_all(&codec12_response(
            "RTC:2026/12/7 20:10 Init:2026/12/7 20:00 UpTime:600s",
        ))
        .expect("response");
    let outcomes = outcomes(&site, 4);
    assert_eq!(
        kinds(&outcomes, "t1"),
        ["delivered", "answered"],
        "{outcomes:?}"
    );
    assert_eq!(
        kinds(&outcomes, "t2"),
        ["delivered", "answered"],
        "{outcomes:?}"
    );
    assert_eq!(outcomes["t1"][1]["result"], "DOUT1:1 DOUT2:0 Timeout:0");
    assert_eq!(outcomes["t1"][1]["device_id"], "truck-12");
    assert!(outcomes["t2"][1]["result"]
        .as_str()
        .unwrap_or("")
        .starts_with("RTC:"));
}
