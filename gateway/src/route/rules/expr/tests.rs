use super::*;
use tributary_protocol::Position;

fn reading(values: &[(&str, f64)]) -> Event {
    crate::route::rules::test_reading("d", 7, 1_000, values)
}

fn holds(text: &str, event: &Event) -> bool {
    Condition::parse(text).unwrap().holds(event)
}

#[test]
fn arithmetic_comparison_and_logic_follow_precedence() {
    let e = reading(&[("t", 31.0), ("h", 40.0)]);
    assert!(holds("values.t > 30 and values.h < 50", &e));
    assert!(holds("values.t - 1 * 2 == 29", &e));
    assert!(holds("(values.t - 1) * 2 == 60", &e));
    assert!(holds("not values.t < 30 or false", &e));
    assert!(holds(
        "abs(-values.t) == 31 and min(values.t, values.h, 35) == 31",
        &e
    ));
    assert!(holds(
        "max(1, 2e1, -3) == 20 and seq == 7 and time_ms >= 1000",
        &e
    ));
    assert!(!holds("values.t > 30 and values.h > 50", &e));
    assert!(holds("(values.t > 30) == true", &e));
}

#[test]
fn a_missing_field_makes_a_condition_not_hold_unless_logic_decides_it() {
    let e = reading(&[("t", 31.0)]);
    assert!(!holds("values.humidity > 0", &e));
    assert!(!holds("not values.humidity > 0", &e));
    assert!(!holds("speed_mps > 1", &e), "a reading has no speed");
    assert!(holds("values.humidity > 0 or values.t > 30", &e));
    assert!(!holds("values.humidity > 0 and values.t > 30", &e));
    assert!(!holds("values.t > 100 and values.humidity > 0", &e));
    assert_eq!(
        Number::parse("values.humidity + 1").unwrap().value(&e),
        None
    );
}

#[test]
fn position_fields_resolve() {
    let e = Event {
        device_id: "truck".into(),
        seq: 1,
        time_ms: 0,
        body: Body::Position(Position {
            lat: 52.5,
            lon: 13.4,
            alt_m: None,
            speed_mps: Some(25.0),
            heading_deg: None,
            hdop: Some(0.9),
            satellites: Some(9),
            fix: tributary_protocol::FixQuality::Gps,
        }),
    };
    assert!(holds(
        "speed_mps * 3.6 > 89 and hdop < 2 and satellites >= 4",
        &e
    ));
    assert!(holds("lat > 52 and lon < 14", &e));
    assert!(!holds("alt_m > -1000", &e));
    assert_eq!(
        Number::parse("speed_mps * 2").unwrap().value(&e),
        Some(50.0)
    );
}

#[test]
fn mistakes_are_refused_with_where_and_why() {
    for (text, at, says) in [
        ("values.t >", 10, "ends too soon"),
        ("values.t > 3 3", 13, "unexpected number 3"),
        ("temperature > 3", 0, "unknown field \"temperature\""),
        ("values.t > 1 < 2", 13, "do not chain"),
        ("sqrt(values.t) > 1", 0, "unknown function \"sqrt\""),
        ("values.t >> 3", 10, "unexpected \">\""),
        ("values.t $ 2", 9, "unexpected '$'"),
        ("(values.t > 1", 13, "\")\" expected"),
    ] {
        let e = Condition::parse(text).unwrap_err();
        assert!(e.message.contains(says), "{text}: {e}");
        assert_eq!(e.at, at, "{text}: {e}");
    }
    for (text, says) in [
        ("values.t + 1", "a number; a condition"),
        ("values.t and true", "a number is used where a condition"),
        ("true > false", "only numbers are ordered"),
        (
            "abs(values.t > 1) > 0",
            "a condition is used where a number",
        ),
    ] {
        let e = Condition::parse(text).unwrap_err();
        assert!(e.message.contains(says), "{text}: {e}");
    }
    assert!(Number::parse("values.t > 1").is_err());
    let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
    assert!(Number::parse(&deep)
        .unwrap_err()
        .message
        .contains("nested too deeply"));
}

#[test]
fn a_chain_too_long_for_the_stack_is_refused_and_the_longest_accepted_runs_on_a_small_stack() {
    let chain = |n: usize| {
        (0..n)
            .map(|i| format!("values.t > {i}"))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    for n in [3_000, 10_000] {
        let e = Condition::parse(&chain(n)).unwrap_err();
        assert!(e.message.contains("too long"), "{n} terms: {e}");
    }
    // The deepest trees the bound lets through: 127 comparisons joined by `or` (507 tokens),
    // and 256 ones added up (511 tokens, a tree 255 deep).
    let longest = chain(127);
    let sum = vec!["1"; 256].join(" + ");
    assert!(Condition::parse(&longest).is_ok());
    assert!(Number::parse(&sum).is_ok());
    // Parsed, type-checked, evaluated and dropped on a thread with 512 KiB of stack, a quarter
    // of the spool writer's (Rust's default 2 MiB), in a debug build (larger frames).
    let e = reading(&[("t", -1.0)]);
    let (held, total) = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || {
            let c = Condition::parse(&longest).expect("parses");
            let n = Number::parse(&sum).expect("parses");
            (c.holds(&e), n.value(&e))
        })
        .expect("thread")
        .join()
        .expect("no stack overflow");
    assert!(!held);
    assert_eq!(total, Some(256.0));
}

#[test]
fn nan_and_infinity_never_panic_and_nan_compares_false() {
    let e = reading(&[("z", 0.0)]);
    assert!(holds("1 / values.z > 1000", &e));
    assert!(!holds("values.z / values.z > 0", &e));
    assert!(!holds("values.z / values.z <= 0", &e));
}
