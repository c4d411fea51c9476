//! A simulated fleet obeys: its reporting interval changes, visibly in Kafka.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_simulated_fleet_of_200_on_mqtt_3_5_and_tcp_changes_its_reporting_interval_on_command_visibly_in_kafka(
) {
    use tributary_sim::scenario::{Group, Link, Scenario};
    let topics = Topics::unique("cmd-fleet");
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    create_topics(&brokers, &topics.all(), 3).await;
    let commands = unique_topic("cmd-fleet.commands");
    let responses = unique_topic("cmd-fleet.responses");
    create_topics(&brokers, &[&commands], 3).await;
    let gateway = Gateway::start_with(
        Some(&brokers),
        &topics,
        &format!("[commands]\ntopic = {commands:?}\nresponses_topic = {responses:?}\n"),
    );
    let site = Site {
        gateway,
        commands,
        responses,
        brokers,
    };
    wait_reading(&site);
    // 200 stations on MQTT 3.1.1, MQTT 5 and the TCP protocol (4), reporting every 10 s of
    // simulated time at 20 times real speed (2 readings a second each).
    let mut s = Scenario::plain(
        site.gateway.tcp,
        site.gateway.mqtt,
        Link::Mqtt { qos: 1 },
        "fleet",
        200,
        0,
    );
    s.speedup = 20.0;
    s.duration = Some(Duration::from_secs(16));
    s.commands = true;
    let base = Group {
        interval: Duration::from_secs(10),
        ..s.groups[0].clone()
    };
    s.groups = vec![
        Group {
            name: "v3".into(),
            count: 70,
            ..base.clone()
        },
        Group {
            name: "v5".into(),
            count: 70,
            link: Link::Mqtt5 { qos: 1 },
            ..base.clone()
        },
        Group {
            name: "tcp".into(),
            count: 60,
            link: Link::Tcp,
            ..base
        },
    ];
    let ids: Vec<String> = s
        .groups
        .iter()
        .flat_map(|g| (0..g.count).map(|i| g.device_id(&s.prefix, i)))
        .collect();
    let run = tokio::spawn(async move { tributary_tests::run(s).await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let set: Vec<_> = ids
        .iter()
        .map(|d| {
            command(
                d,
                json!({"id": format!("slow-{d}"), "name": "set_interval", "args": {"interval_ms": 60_000}}),
            )
        })
        .collect();
    produce(&site.brokers, &site.commands, &set).await;
    let report = run.await.expect("the run");
    let failures: Vec<_> = report.failures().collect();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(report.acked(), report.sent(), "{}", report.table());
    let obeyed: u64 = report.devices.iter().map(|d| d.commands).sum();
    assert!(obeyed >= 200, "devices obeyed {obeyed} commands");
    // In Kafka: each station's readings came every 10 s, then every 60 s.
    let readings = consume(
        &site.brokers,
        &topics.readings,
        report.acked() as usize,
        Duration::from_secs(30),
    );
    let mut times: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for m in &readings {
        times
            .entry(m.key.clone())
            .or_default()
            .push(m.value["time_ms"].as_i64().unwrap_or(0));
    }
    assert_eq!(times.len(), 200, "every station reported");
    for (device, t) in &times {
        let gaps: Vec<i64> = t.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.first() == Some(&10_000), "{device}: {gaps:?}");
        assert_eq!(
            gaps.last(),
            Some(&60_000),
            "{device} did not slow down: {gaps:?}"
        );
        let switched = gaps.iter().position(|g| *g == 60_000).unwrap_or(gaps.len());
        assert!(
            gaps[..switched].iter().all(|g| *g == 10_000)
                && gaps[switched..].iter().all(|g| *g == 60_000),
            "{device}: {gaps:?}"
        );
    }
    let outcomes = outcomes(&site, 400);
    for d in &ids {
        let answered = outcomes
            .get(&format!("slow-{d}"))
            .and_then(|o| o.iter().find(|o| o["outcome"] == "answered"))
            .unwrap_or_else(|| {
                panic!(
                    "no answer from {d}: {:?}",
                    outcomes.get(&format!("slow-{d}"))
                )
            });
        assert_eq!(
            answered["result"],
            json!({"ok": true, "interval_ms": 60_000})
        );
    }
}
