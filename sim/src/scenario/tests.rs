use super::*;

fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    Raw::parse(text, "test.toml")?.validate("test.toml")
}

fn invalid_key(text: &str) -> String {
    match parse(text) {
        Err(ScenarioError::Invalid { key, what, .. }) => format!("{key}: {what}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_built_in_scenario_is_valid_and_mixes_every_model() {
    let s = Raw::default_scenario()
        .unwrap()
        .validate("built-in")
        .unwrap();
    let models: Vec<ModelKind> = s.groups.iter().map(|g| g.model).collect();
    assert_eq!(
        models,
        [
            ModelKind::Environment,
            ModelKind::Machine,
            ModelKind::Truck,
            ModelKind::Car
        ]
    );
    assert_eq!(s.device_count(), 10);
    assert_eq!(s.tcp, "127.0.0.1:7878".parse().unwrap());
}

#[test]
fn a_file_changes_only_what_it_names() {
    let s = parse("seed = 9\n[backoff]\nmax_ms = 500\n").unwrap();
    assert_eq!(s.seed, 9);
    assert_eq!(s.backoff.max, Duration::from_millis(500));
    assert_eq!(
        s.backoff.initial,
        Duration::from_millis(100),
        "default kept"
    );
    assert_eq!(s.groups.len(), 4, "groups kept");
    let s = parse(
        "[[group]]\nname = \"a\"\nmodel = \"car\"\ncount = 3\ntransport = \"mqtt\"\nqos = 0\n",
    )
    .unwrap();
    assert_eq!(s.groups.len(), 1, "a group list replaces the default one");
    assert_eq!(s.groups[0].link, Link::Mqtt { qos: 0 });
}

#[test]
fn the_shipped_scenarios_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    for name in ["sim.toml", "sim-berlin.toml", "sim-10k.toml"] {
        let path = dir.join(name);
        let s = Raw::load(&path)
            .and_then(|r| r.validate(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Area::Waypoints(w) = &s.area {
            assert!(w.exists(), "{name}: {}", w.display());
        }
    }
    let tenk = Raw::load(&dir.join("sim-10k.toml"))
        .unwrap()
        .validate("10k")
        .unwrap();
    assert_eq!(tenk.device_count(), 10_000);
}

#[test]
fn bad_values_are_refused_naming_the_key() {
    let group = |extra: &str| {
        format!(
            "[[group]]\nname = \"g\"\nmodel = \"car\"\ncount = 1\ntransport = \"mqtt\"\n{extra}"
        )
    };
    assert!(invalid_key(&group("qos = 2\n")).starts_with("group[0].qos: 2"));
    let udp = group("").replace("\"mqtt\"", "\"udp\"");
    assert!(invalid_key(&udp).starts_with("group[0].transport"));
    assert!(invalid_key("batch = 0\n").starts_with("batch"));
    let huge = group("").replace("count = 1", "count = 2000000");
    assert!(invalid_key(&huge).starts_with("group[0].count: 2000000 is more than 1000000"));
    assert!(invalid_key("[faults]\nspike = 1.5\n").starts_with("faults.spike: 1.5"));
    assert!(invalid_key("[gateway]\ntcp = \"localhost\"\n").starts_with("gateway.tcp"));
    assert!(invalid_key("speedup = -1\n").starts_with("speedup"));
    assert!(invalid_key("events = 0\n").starts_with("events"));
    assert!(invalid_key("prefix = \"a b\"\n").starts_with("prefix"));
    assert!(invalid_key("[area]\ncentre = [95.0, 0.0]\n").starts_with("area.centre"));
    match Raw::parse("sed = 1\n", "test.toml") {
        Err(ScenarioError::Parse { source, .. }) => assert!(source.to_string().contains("sed")),
        other => panic!("unknown keys are refused: {other:?}"),
    }
}

#[test]
fn scaling_shares_devices_in_proportion_and_keeps_every_group() {
    let mut s = Raw::default_scenario()
        .unwrap()
        .validate("built-in")
        .unwrap();
    s.scale_to(100);
    let counts: Vec<usize> = s.groups.iter().map(|g| g.count).collect();
    assert_eq!(counts, [40, 20, 20, 20]);
    s.scale_to(4);
    let counts: Vec<usize> = s.groups.iter().map(|g| g.count).collect();
    assert_eq!(counts.iter().sum::<usize>(), 4);
    assert!(counts.iter().all(|&c| c == 1), "{counts:?}");
    s.scale_to(10_001);
    assert_eq!(s.device_count(), 10_001);
}
