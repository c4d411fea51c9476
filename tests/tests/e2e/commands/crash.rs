//! The gateway SIGKILLed while commands flow.

use super::*;

/// A device on rumqttc (MQTT 3.1.1) that subscribes to its commands at every CONNACK, records
/// each command id it receives, in order, and answers each (again, if it comes again).
async fn obedient(port: u16, device: String, seen: Arc<Mutex<BTreeMap<String, Vec<String>>>>) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut options = MqttOptions::new(device.clone(), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(options, 64);
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ = client
                    .subscribe(format!("devices/{device}/commands/#"), QoS::AtLeastOnce)
                    .await;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let Some(c) = tributary_client::command::Command::parse(&p.payload) else {
                    continue;
                };
                seen.lock()
                    .expect("seen")
                    .entry(device.clone())
                    .or_default()
                    .push(c.id.clone());
                let topic = tributary_client::command::result_topic(&device, &c.id);
                // Not awaited here: this task polls the event loop that drains the requests.
                let client = client.clone();
                tokio::spawn(async move {
                    let answer = format!("{{\"done\":\"{}\"}}", c.id);
                    let _ = client.publish(topic, QoS::AtLeastOnce, false, answer).await;
                });
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn five_sigkills_while_a_thousand_commands_flow_lose_none_and_keep_each_device_in_order() {
    const DEVICES: usize = 10;
    const PER_DEVICE: usize = 100;
    let mut site = site("cmds-kill", "").await;
    wait_reading(&site);
    let port = site.gateway.mqtt.port();
    let seen: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
    let devices: Vec<_> = (0..DEVICES)
        .map(|d| tokio::spawn(obedient(port, format!("kd-{d}"), seen.clone())))
        .collect();
    // 1,000 commands in 20 batches over about 8 seconds, while the gateway is killed 5 times.
    let (brokers, topic) = (site.brokers.clone(), site.commands.clone());
    let producer = tokio::spawn(async move {
        for batch in 0..20 {
            let records: Vec<_> = (0..PER_DEVICE / 20)
                .flat_map(|i| {
                    let n = batch * (PER_DEVICE / 20) + i;
                    (0..DEVICES).map(move |d| {
                        command(
                            &format!("kd-{d}"),
                            json!({"id": format!("k{d}-{n:03}"), "name": "set_interval", "args": {"interval_ms": n}}),
                        )
                    })
                })
                .collect();
            produce(&brokers, &topic, &records).await;
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    });
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        site.gateway.kill();
        site.gateway.restart();
    }
    producer.await.expect("producer");
    wait_reading(&site);
    // Every command answered: wait for the devices to have seen them all.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let complete = {
            let seen = seen.lock().expect("seen");
            (0..DEVICES).all(|d| {
                seen.get(&format!("kd-{d}")).is_some_and(|ids| {
                    ids.iter().collect::<std::collections::BTreeSet<_>>().len() == PER_DEVICE
                })
            })
        };
        if complete {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every command arrived: {:?}\n{}",
            seen.lock().map(|s| s
                .iter()
                .map(|(d, ids)| (d.clone(), ids.len()))
                .collect::<Vec<_>>()),
            site.gateway
                .log()
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ommand") || l.contains("ERROR"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for d in &devices {
        d.abort();
    }
    let seen = seen.lock().expect("seen").clone();
    for d in 0..DEVICES {
        let ids = &seen[&format!("kd-{d}")];
        // In queue order: each command first arrives after every earlier one first arrived.
        let mut first: Vec<&String> = Vec::new();
        for id in ids {
            if !first.contains(&id) {
                first.push(id);
            }
        }
        let expected: Vec<String> = (0..PER_DEVICE).map(|n| format!("k{d}-{n:03}")).collect();
        assert_eq!(
            first,
            expected.iter().collect::<Vec<_>>(),
            "kd-{d} out of order"
        );
    }
    let outcomes = outcomes(&site, DEVICES * PER_DEVICE * 2);
    let mut unanswered = Vec::new();
    for d in 0..DEVICES {
        for n in 0..PER_DEVICE {
            let id = format!("k{d}-{n:03}");
            let k = kinds(&outcomes, &id);
            if !k.iter().any(|k| k == "answered") || !k.iter().any(|k| k == "delivered") {
                unanswered.push((id, k));
            }
        }
    }
    assert!(unanswered.is_empty(), "outcomes missing: {unanswered:?}");
    assert!(
        outcomes
            .values()
            .flatten()
            .all(|o| matches!(o["outcome"].as_str(), Some("delivered" | "answered"))),
        "only delivered and answered outcomes"
    );
    let redelivered: usize =
        seen.values().map(|ids| ids.len()).sum::<usize>() - DEVICES * PER_DEVICE;
    eprintln!("commands received again after a kill: {redelivered}");
}
