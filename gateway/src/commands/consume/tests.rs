use super::*;

fn config() -> CommandsConfig {
    let raw = super::super::RawCommands {
        topic: Some("cmds".into()),
        max_queued_per_device: Some(3),
        ..Default::default()
    };
    super::super::config::validate(raw, Some("gw-1"))
        .unwrap()
        .unwrap()
}

fn outcome_of(d: Decision) -> (serde_json::Value, &'static str) {
    match d {
        Decision::Answer(Op::Outcome(r), label) => {
            (serde_json::from_slice(&r.value).unwrap(), label)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_command_is_queued_with_its_expiry_and_the_body_the_device_reads() {
    let c = config();
    let value = br#"{"id":"c1","name":"set_interval","args":{"interval_ms":500},"ttl_ms":1000}"#;
    let Decision::Queue(Op::Enqueue {
        command,
        limit,
        overflow,
    }) = decide(&c, Some(b"dev-1"), Some(value), None, (0, 7), 10_000)
    else {
        panic!("not queued");
    };
    assert_eq!(limit, 3);
    assert_eq!(command.device, "dev-1");
    assert_eq!(command.expires_ms, 11_000);
    let body = Command::parse(&command.body).unwrap();
    assert_eq!(body.id, "c1");
    assert_eq!(body.args["interval_ms"], 500);
    assert_eq!(body.expires_ms, Some(11_000));
    let o: serde_json::Value = serde_json::from_slice(&overflow.value).unwrap();
    assert_eq!(o["outcome"], "refused");
}

#[test]
fn what_is_not_a_command_is_refused_with_the_reason_and_an_expired_one_answered() {
    let c = config();
    let (v, label) = outcome_of(decide(
        &c,
        Some(b"dev-1"),
        Some(b"reboot!"),
        None,
        (2, 9),
        1,
    ));
    assert_eq!(label, "refused_invalid");
    assert_eq!(v["command_id"], "cmds:2:9");
    assert!(v["reason"].as_str().unwrap().contains("not a command"));
    let (v, label) = outcome_of(decide(
        &c,
        None,
        Some(br#"{"id":"c","name":"x"}"#),
        None,
        (0, 1),
        1,
    ));
    assert_eq!(label, "refused_device");
    assert_eq!(v["command_id"], "c");
    let big = format!(r#"{{"id":"c","name":"x","args":"{}"}}"#, "a".repeat(5000));
    let (v, label) = outcome_of(decide(
        &c,
        Some(b"d"),
        Some(big.as_bytes()),
        None,
        (0, 1),
        1,
    ));
    assert_eq!(label, "refused_too_large");
    assert!(v["reason"].as_str().unwrap().contains("commands.max_bytes"));
    let (v, label) = outcome_of(decide(
        &c,
        Some(b"d"),
        Some(br#"{"id":"c","name":"x","expires_ms":5}"#),
        None,
        (0, 1),
        6,
    ));
    assert_eq!(label, "expired");
    assert_eq!(v["outcome"], "expired");
}

#[test]
fn a_command_for_another_gateway_is_skipped() {
    let c = config();
    let v = br#"{"id":"c1","name":"x"}"#;
    assert!(matches!(
        decide(&c, Some(b"d"), Some(v), Some(b"gw-2"), (0, 1), 1),
        Decision::Skip
    ));
    assert!(matches!(
        decide(&c, Some(b"d"), Some(v), Some(b"gw-1"), (0, 1), 1),
        Decision::Queue(_)
    ));
}
