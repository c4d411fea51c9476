//! Teltonika trackers prove nothing but their IMEI (printed on the label): the gateway does not
//! let that pass for more. An IMEI may not map to a device that logs in with a password, the
//! listener beyond loopback needs the operator's word that the network is theirs, and taking
//! unknown IMEIs is bounded in number and rate, every refusal counted.

use std::io::{Read, Write};

use super::*;

#[test]
fn an_imei_cannot_pass_for_a_device_with_a_password_nor_listen_openly_unsaid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let passwd = dir.path().join("devices.passwd");
    import_passwords(&passwd, "env-1 pw-one\n");
    // Before: valid, and a connection knowing only the IMEI wrote readings stored as env-1.
    let (code, stderr) = check_config(
        dir.path(),
        &format!(
            "[auth]\ncredentials = {passwd:?}\nanonymous = \"never\"\n\
             [teltonika]\nlisten = \"127.0.0.1:5027\"\nnames = {{ \"356307042441013\" = \"env-1\" }}\n"
        ),
    );
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("teltonika.names") && stderr.contains("356307042441013"),
        "{stderr}"
    );

    // Beyond loopback: the operator must say the network is theirs.
    let open =
        "[teltonika]\nlisten = \"0.0.0.0:5027\"\nnames = { \"356307042441013\" = \"truck-12\" }\n";
    let (code, stderr) = check_config(dir.path(), open);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("teltonika.trust_imei"), "{stderr}");
    let (code, stderr) = check_config(dir.path(), &format!("{open}trust_imei = true\n"));
    assert_eq!(code, Some(0), "{stderr}");

    // Any IMEI from the network is anonymous access, opted into as such. Before: valid.
    let any = "[teltonika]\nlisten = \"0.0.0.0:5027\"\naccept_unknown = true\ntrust_imei = true\n";
    let (code, stderr) = check_config(dir.path(), any);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("teltonika.accept_unknown") && stderr.contains("auth.anonymous"),
        "{stderr}"
    );
    let (code, stderr) = check_config(
        dir.path(),
        &format!("[auth]\nanonymous = \"network\"\n{any}"),
    );
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn unknown_imeis_are_taken_only_up_to_the_bound_and_the_listed_tracker_still_gets_in() {
    let topics = Topics::unique("teltonika-bound");
    let port = tributary_tests::free_port();
    let gateway = Gateway::start_with(
        None,
        &topics,
        &format!(
            "[teltonika]\nlisten = \"127.0.0.1:{port}\"\naccept_unknown = true\n\
             accept_unknown_max = 3\nnames = {{ \"356307042441013\" = \"truck-12\" }}\n"
        ),
    );
    let handshake = |imei: &str| -> u8 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut hello = (imei.len() as u16).to_be_bytes().to_vec();
        hello.extend_from_slice(imei.as_bytes());
        s.write_all(&hello).expect("IMEI");
        let mut answer = [9u8; 1];
        s.read_exact(&mut answer).expect("answer");
        answer[0]
    };
    // A stranger cycling through made-up IMEIs.
    let answers: Vec<u8> = (0..6)
        .map(|i| handshake(&format!("99000000000000{i}")))
        .collect();
    assert_eq!(
        answers,
        [1, 1, 1, 0, 0, 0],
        "three new IMEIs taken, then none"
    );
    assert_eq!(
        handshake("990000000000001"),
        1,
        "one taken before is taken again"
    );
    assert_eq!(
        handshake("356307042441013"),
        1,
        "the listed tracker gets in"
    );
    let mut gateway = gateway;
    let stopped = gateway.stop();
    assert!(stopped.status.success());
    assert_eq!(
        stopped.refused("teltonika/unknown_imei_limit"),
        3,
        "{}",
        stopped.stdout
    );
}
