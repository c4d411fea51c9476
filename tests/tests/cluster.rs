//! Fault tests against brokers of the tests' own, while simulated devices stream into the
//! gateway:
//! - one node stopped and started again under load (10 devices over TCP);
//! - a three-node Apache Kafka cluster (KRaft, replication factor 3, `min.insync.replicas=2`)
//!   with 200 devices, 100 over the TCP protocol and 100 over MQTT 3.1.1 at QoS 1: the leader
//!   SIGKILLed five times, a rolling restart, two of three nodes down for a minute.
//!
//! The gateway produces with its defaults: `acks=all` and idempotence.
//!
//! The cluster tests then read the topics with kafka-python (`tests/clients/check_kafka.py`),
//! an independent client, and check: every event the gateway acknowledged to a device is in
//! Kafka, each device's events sit in one partition in seq order, and any duplicate is an
//! identical copy with the same event id. The counts are printed (`cargo test -- --nocapture`).
//!
//! The tests take turns (one set of brokers at a time), in a test binary of their own: three
//! JVMs, a gateway and 200 devices are what a 2-core machine can run at once.

use std::time::Duration;

use tributary_sim::scenario::{Group, Link, ModelKind, Scenario};
use tributary_tests::broker::KafkaCluster;
use tributary_tests::gateway::{Gateway, Topics};
use tributary_tests::kafka::{
    check_with_kafka_python, create_replicated_topics, create_topics, verify, PythonCheck,
};
use tributary_tests::{http_get, run};

/// Held by the test whose cluster is running (an async lock: each test has its own runtime).
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// 100 environment sensors over TCP and 100 trucks over MQTT QoS 1, each sending an event every
/// 200 ms in real time (1,000 events/s in all) for `duration`.
fn fleet(gateway: &Gateway, prefix: &str, duration: Duration) -> Scenario {
    let mut s = Scenario::plain(gateway.tcp, gateway.mqtt, Link::Tcp, prefix, 100, 0);
    s.speedup = 1.0;
    s.duration = Some(duration);
    s.batch = 5;
    // A device whose acknowledgement is late reconnects and resends, as firmware does.
    s.ack_timeout = Duration::from_secs(10);
    s.give_up = Duration::from_secs(600);
    s.groups = vec![
        Group {
            name: "env".into(),
            model: ModelKind::Environment,
            count: 100,
            link: Link::Tcp,
            interval: Duration::from_millis(200),
        },
        Group {
            name: "truck".into(),
            model: ModelKind::Truck,
            count: 100,
            link: Link::Mqtt { qos: 1 },
            interval: Duration::from_millis(200),
        },
    ];
    s
}

/// A cluster, its topics (3 partitions, 3 replicas) and a gateway forwarding into it.
async fn setup(stem: &str) -> (KafkaCluster, Topics, Gateway) {
    let cluster = tokio::task::spawn_blocking(|| {
        KafkaCluster::start_with(
            3,
            tributary_tests::broker::Extra {
                // Preferred leaders come back soon after a node returns, so leadership moves
                // more than once per fault.
                set: vec!["leader.imbalance.check.interval.seconds=10".into()],
                ..Default::default()
            },
        )
    })
    .await
    .expect("the cluster starts");
    let brokers = cluster.brokers();
    let topics = Topics::unique(stem);
    create_replicated_topics(&brokers, &topics.all(), 3, 3).await;
    let gateway = Gateway::start(Some(&brokers), &topics);
    (cluster, topics, gateway)
}

/// Reads the topics with kafka-python (committed records only, with `read_committed`), prints
/// the counts, and asserts what a consumer relies on.
fn check(
    name: &str,
    cluster: &KafkaCluster,
    topics: &Topics,
    report: &tributary_sim::run::RunReport,
    read_committed: bool,
) -> PythonCheck {
    let found = check_with_kafka_python(
        &cluster.brokers(),
        &[&topics.readings, &topics.positions],
        &report.manifest(),
        read_committed,
    );
    eprintln!(
        "{name}: acknowledged {}, found {}, missing {}, duplicates {}, out of order {}, \
         records {}",
        found.acknowledged,
        found.found,
        found.missing,
        found.duplicates,
        found.out_of_order,
        found.records
    );
    assert!(found.holds(), "{name}: {found:?}\n{}", report.table());
    // The load ran through the faults: most of what was sent was acknowledged.
    assert!(
        found.acknowledged > 20_000,
        "{name}: the fleet streamed through the faults: {found:?}\n{}",
        report.table()
    );
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn the_leader_sigkilled_five_times_under_load_loses_nothing_and_keeps_order() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (cluster, topics, gateway) = setup("leaderkill").await;
    let load = tokio::spawn(run(fleet(&gateway, "lk", Duration::from_secs(90))));
    let readings = topics.readings.clone();
    let (cluster, killed) = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        let mut killed = Vec::new();
        for _ in 0..5 {
            std::thread::sleep(Duration::from_secs(3));
            // The node leading the partition being written now: what the gateway's producer
            // talks to for it.
            let leader = cluster
                .leader_of(&readings, 0)
                .expect("the partition has a leader before each kill");
            cluster.kill_node(leader);
            killed.push(leader);
            std::thread::sleep(Duration::from_secs(2));
            cluster.start_node(leader);
        }
        (cluster, killed)
    })
    .await
    .expect("the faults ran");
    let report = load.await.expect("the load ran");
    eprintln!("leaders killed, in turn: {killed:?}");
    check("leader SIGKILL x5", &cluster, &topics, &report, false);
    assert_eq!(report.unacknowledged(), 0, "{}", report.table());
    drop(gateway);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_of_all_three_brokers_under_load_loses_nothing_and_keeps_order() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (cluster, topics, gateway) = setup("rolling").await;
    let load = tokio::spawn(run(fleet(&gateway, "rr", Duration::from_secs(75))));
    let names: Vec<String> = topics.all().iter().map(|t| (*t).to_owned()).collect();
    let cluster = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        for id in 1..=3 {
            std::thread::sleep(Duration::from_secs(3));
            // As an operator rolls a cluster: one node at a time, a controlled shutdown, and
            // the next only once every replica is back in sync.
            cluster.stop_node(id);
            cluster.start_node(id);
            cluster.wait_in_sync(&names, Duration::from_secs(120));
        }
        cluster
    })
    .await
    .expect("the rolling restart ran");
    let report = load.await.expect("the load ran");
    check("rolling restart", &cluster, &topics, &report, false);
    assert_eq!(report.unacknowledged(), 0, "{}", report.table());
    drop(gateway);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_of_three_brokers_down_for_a_minute_the_gateway_keeps_accepting_says_why_and_drains() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (cluster, topics, gateway) = setup("minisr").await;
    let load = tokio::spawn(run(fleet(&gateway, "mi", Duration::from_secs(90))));
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Two nodes shut down (controlled, as in maintenance): every partition is left with one
    // replica in sync, below min.insync.replicas = 2, and Kafka refuses acks=all writes.
    let mut cluster = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        cluster.stop_node(2);
        cluster.stop_node(3);
        cluster
    })
    .await
    .expect("two nodes stopped");
    let down_at = std::time::Instant::now();
    let admin = gateway.admin;

    // While they are down: devices are still acknowledged into the spool, readiness holds,
    // and the operator is told why nothing reaches Kafka.
    let mut said_why = None;
    let mut spooled_while_down = 0u64;
    while down_at.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (code, body) = tokio::task::spawn_blocking(move || http_get(admin, "/readyz?verbose"))
            .await
            .expect("readyz");
        assert_eq!(
            code, 200,
            "the gateway stays ready while Kafka refuses: {body}"
        );
        if body.contains("min.insync.replicas") && said_why.is_none() {
            said_why = Some(body);
        }
        let (_, metrics) = tokio::task::spawn_blocking(move || http_get(admin, "/metrics"))
            .await
            .expect("metrics");
        spooled_while_down = spooled_while_down.max(gauge(&metrics, "tributary_spool_rows"));
    }
    let said_why =
        said_why.expect("/readyz?verbose said that partitions are below min.insync.replicas");
    eprintln!("/readyz?verbose while two brokers were down:\n{said_why}");
    assert!(said_why.contains("[+]"), "{said_why}");
    let (_, status) = tokio::task::spawn_blocking(move || http_get(admin, "/api/status"))
        .await
        .expect("status");
    assert!(
        status.contains("min.insync.replicas"),
        "the status page's data says why: {status}"
    );
    let (_, metrics) = tokio::task::spawn_blocking(move || http_get(admin, "/metrics"))
        .await
        .expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tributary_forward_errors_total")
                && l.contains("error=\"NotEnoughReplicas\"")),
        "a metric counts the refusal:\n{metrics}"
    );
    assert!(
        spooled_while_down > 5_000,
        "events kept being acknowledged into the spool: {spooled_while_down} rows at the most"
    );

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start_node(2);
        cluster.start_node(3);
        cluster
    })
    .await
    .expect("the nodes return");
    let report = load.await.expect("the load ran");
    // The backlog drains by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let (_, metrics) = tokio::task::spawn_blocking(move || http_get(admin, "/metrics"))
            .await
            .expect("metrics");
        if gauge(&metrics, "tributary_spool_rows") == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the backlog did not drain: {} rows left",
            gauge(&metrics, "tributary_spool_rows")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    check("two of three down 60 s", &cluster, &topics, &report, false);
    assert_eq!(report.unacknowledged(), 0, "{}", report.table());
    drop(gateway);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_restart_under_load_loses_nothing_and_keeps_each_device_in_order() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    // A broker of the test's own, so that stopping it touches no other test.
    let kafka = tokio::task::spawn_blocking(|| KafkaCluster::start(1))
        .await
        .expect("the broker starts");
    let brokers = kafka.brokers();
    let topics = Topics::unique("restart");
    create_topics(&brokers, &topics.all(), 3).await;
    let mut gateway = Gateway::start(Some(&brokers), &topics);
    let mut load = tributary_tests::spec(gateway.tcp, "restart", 10, 300);
    // 100 events per second per device, in real time.
    load.speedup = 1.0;
    load.groups[0].interval = Duration::from_millis(10);
    let load = tokio::spawn(run(load));

    // The broker goes away under load (a controlled shutdown, as in maintenance), stays away
    // for a while, and comes back on the same data. The gateway keeps accepting into its spool
    // throughout, and its producer carries on against the restarted broker.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut kafka = tokio::task::spawn_blocking(move || {
        let mut kafka = kafka;
        kafka.stop_node(1);
        std::thread::sleep(Duration::from_secs(2));
        kafka.start_node(1);
        kafka
    })
    .await
    .expect("the broker restarts");
    let report = load.await.unwrap();
    assert_eq!(
        report.acked(),
        3000,
        "every event was acknowledged: {report:?}"
    );

    // tributary-sim's verifier: every acknowledged event, in order per device, on its key's
    // partition. Duplicates are possible after the restart and recognisable by event id.
    let verdict = verify(&brokers, &[&topics.readings], &report.manifest(), true);
    eprintln!(
        "duplicates after the broker restart: {}",
        verdict.duplicates_allowed
    );
    assert!(verdict.ok(), "{}", verdict.report());
    assert_eq!(verdict.found, 3000, "{}", verdict.report());
    assert!(gateway.stop().status.success());
    kafka.kill_node(1);
}

/// A gauge's value from the Prometheus text; 0 when absent.
fn gauge(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// How the gateway delivers in [`killed_ten_times_with_three_leader_kills`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Delivery {
    AtLeastOnce,
    ExactlyOnce,
}

/// 200 devices stream for 80 s into a gateway forwarding to the three-node cluster. The
/// gateway is SIGKILLed ten times (restarted a second later each time, with the backlog of
/// the second it was down), and between those the leader of the readings' partition 0 is
/// SIGKILLed three times. Then the backlog drains and kafka-python reads the topics, read
/// committed.
async fn killed_ten_times_with_three_leader_kills(delivery: Delivery) -> PythonCheck {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let stem = match delivery {
        Delivery::AtLeastOnce => "alo",
        Delivery::ExactlyOnce => "eos",
    };
    let cluster = tokio::task::spawn_blocking(|| {
        KafkaCluster::start_with(3, tributary_tests::broker::Extra::default())
    })
    .await
    .expect("the cluster starts");
    let brokers = cluster.brokers();
    let topics = Topics::unique(stem);
    create_replicated_topics(&brokers, &topics.all(), 3, 3).await;
    let kafka = match delivery {
        Delivery::AtLeastOnce => String::new(),
        Delivery::ExactlyOnce => format!(
            "delivery = \"exactly-once\"\ngateway_id = \"{}\"\ntopic_replication = 3\n",
            topics.readings
        ),
    };
    let gateway = Gateway::start_with(Some(&brokers), &topics, &kafka);
    let load = tokio::spawn(run(fleet(&gateway, stem, Duration::from_secs(80))));
    let readings = topics.readings.clone();
    let (cluster, mut gateway) = tokio::task::spawn_blocking(move || {
        let (mut cluster, mut gateway) = (cluster, gateway);
        for round in 0..10 {
            std::thread::sleep(Duration::from_secs(5));
            gateway.kill();
            std::thread::sleep(Duration::from_secs(1));
            gateway.restart();
            if round % 3 == 1 {
                std::thread::sleep(Duration::from_secs(2));
                let leader = cluster
                    .leader_of(&readings, 0)
                    .expect("the partition has a leader before each kill");
                cluster.kill_node(leader);
                std::thread::sleep(Duration::from_secs(2));
                cluster.start_node(leader);
                eprintln!("{delivery:?}: leader {leader} SIGKILLed after gateway kill {round}");
            }
        }
        (cluster, gateway)
    })
    .await
    .expect("the faults ran");
    let report = load.await.expect("the load ran");
    assert_eq!(report.unacknowledged(), 0, "{}", report.table());
    gateway.wait_drained(Duration::from_secs(180));
    let name = format!("{delivery:?}, 10 gateway and 3 leader SIGKILLs");
    let found = check(&name, &cluster, &topics, &report, true);
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_every_acknowledged_event_is_read_committed_once_through_gateway_and_leader_kills(
) {
    let found = killed_ten_times_with_three_leader_kills(Delivery::ExactlyOnce).await;
    assert_eq!(found.duplicates, 0, "{found:?}");
    assert_eq!(found.records, found.acknowledged, "{found:?}");
}

/// The same run at least once: nothing acknowledged is lost and each device's order holds
/// (asserted in `check`). The kills usually leave duplicates, which a consumer must drop, but
/// not always: a gateway killed between a produce and its acknowledgement leaves one, a gateway
/// killed elsewhere none (0 were seen in one run of three), so their count is printed, not
/// asserted; the test above is the one that rules them out.
#[tokio::test(flavor = "multi_thread")]
async fn at_least_once_the_same_kills_lose_nothing_and_keep_order() {
    let found = killed_ten_times_with_three_leader_kills(Delivery::AtLeastOnce).await;
    eprintln!(
        "at least once: {} duplicates a consumer must drop",
        found.duplicates
    );
}
