//! The gateway against a production-shaped Apache Kafka: SASL_SSL with SCRAM-SHA-512 and a CA of
//! the test's own, ACLs enforced by `StandardAuthorizer`, and topic auto-creation off.
//!
//! The broker has a second, plain-text listener for the test itself (the super user
//! `User:ANONYMOUS`): it creates topics, grants ACLs and reads back what arrived. The gateway
//! talks only to the SASL_SSL listener, as user `tributary`, with the README's settings.
//!
//! A test binary of its own: each test starts a broker (a JVM), which should not share the two
//! cores with the end-to-end suite's load tests.

use std::time::Duration;

use tributary_tests::broker::{Extra, KafkaCluster};
use tributary_tests::gateway::{Gateway, Topics};
use tributary_tests::kafka::{consume, create_topics};
use tributary_tests::pki::Pki;
use tributary_tests::{binary, http_get};

const USER: &str = "tributary";
const PASSWORD: &str = "s3cret-for-tests";

/// A one-node cluster with a SASL_SSL listener (SCRAM-SHA-512, a certificate from `pki`'s CA),
/// ACLs on, auto-creation off.
fn secure_cluster(pki: &mut Pki) -> KafkaCluster {
    let server = pki.server();
    // Kafka reads a PEM key store as one file: the private key (PKCS#8), then the chain.
    let store = pki.dir.join("broker-keystore.pem");
    let pem = format!(
        "{}{}",
        std::fs::read_to_string(&server.key).expect("key"),
        std::fs::read_to_string(&server.cert).expect("cert")
    );
    std::fs::write(&store, pem).expect("write the key store");
    let set = vec![
        "listeners=PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{sasl_port},CONTROLLER://127.0.0.1:{controller_port}".into(),
        "advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{sasl_port},CONTROLLER://127.0.0.1:{controller_port}".into(),
        "sasl.enabled.mechanisms=SCRAM-SHA-512".into(),
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;".into(),
        "listener.name.sasl_ssl.ssl.keystore.type=PEM".into(),
        format!("listener.name.sasl_ssl.ssl.keystore.location={}", store.display()),
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer".into(),
        // The test's own plain-text listener and the controller's are anonymous.
        "super.users=User:ANONYMOUS".into(),
        "allow.everyone.if.no.acl.found=false".into(),
        "auto.create.topics.enable=false".into(),
    ];
    KafkaCluster::start_with(
        1,
        Extra {
            set,
            scram: vec![(USER.into(), PASSWORD.into())],
            sasl_listener: true,
        },
    )
}

/// The `[kafka.properties]` of the README's "Forwarding to a production Kafka cluster".
fn sasl_properties(password: &str, ca: &std::path::Path) -> String {
    format!(
        "[kafka.properties]\n\
         \"security.protocol\" = \"SASL_SSL\"\n\
         \"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\
         \"sasl.username\" = \"{USER}\"\n\
         \"sasl.password\" = \"{password}\"\n\
         \"ssl.ca.location\" = \"{}\"\n",
        ca.display()
    )
}

/// The ACLs the README lists for a gateway that does not create topics.
fn grant_documented(cluster: &KafkaCluster, topics: &Topics) {
    for t in topics.all() {
        cluster.allow(
            &format!("User:{USER}"),
            &["Describe", "Write"],
            &["--topic", t],
        );
    }
}

async fn send(gateway: &Gateway, device: &str, seqs: std::ops::RangeInclusive<u64>) {
    let mut d = tributary_sim::tcp::TcpDevice::connect(gateway.tcp, device, None, None)
        .await
        .expect("connect");
    let now = tributary_sim::generate::now_ms();
    let batch: Vec<_> = seqs
        .map(|seq| tributary_sim::generate::event(0, device, seq, now, false))
        .collect();
    d.send_batch(&batch).await.expect("acknowledged");
}

fn readyz(gateway: &Gateway) -> String {
    http_get(gateway.admin, "/readyz?verbose").1
}

fn metrics(gateway: &Gateway) -> String {
    http_get(gateway.admin, "/metrics").1
}

/// Polls `/readyz?verbose` until it contains `needle`.
async fn wait_readyz(gateway: &Gateway, needle: &str, within: Duration) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let admin = gateway.admin;
        let body = tokio::task::spawn_blocking(move || http_get(admin, "/readyz?verbose").1)
            .await
            .expect("readyz");
        if body.contains(needle) {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz?verbose never said {needle:?}; last:\n{body}\nlog:\n{}",
            gateway.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn seqs_of(msgs: &[tributary_tests::kafka::Msg]) -> Vec<u64> {
    msgs.iter()
        .filter_map(|m| m.value["seq"].as_u64())
        .collect()
}

/// [`secure_cluster`] started off the async workers, with its CA's directory (kept while the
/// test runs).
async fn start_secure() -> (tempfile::TempDir, KafkaCluster, Pki) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut pki = Pki::new(dir.path());
    let (cluster, pki) = tokio::task::spawn_blocking(move || {
        let cluster = secure_cluster(&mut pki);
        (cluster, pki)
    })
    .await
    .expect("the cluster starts");
    (dir, cluster, pki)
}

/// Reads `topic` from the test's listener and asserts it holds seqs 1 to `n`, in order.
fn delivered(
    cluster: &KafkaCluster,
    topic: &str,
    n: u64,
    within_s: u64,
    gateway: &Gateway,
) -> Vec<tributary_tests::kafka::Msg> {
    let got = consume(
        &cluster.brokers(),
        topic,
        n as usize,
        Duration::from_secs(within_s),
    );
    assert_eq!(
        seqs_of(&got),
        (1..=n).collect::<Vec<_>>(),
        "{}",
        gateway.log()
    );
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn sasl_ssl_with_scram_and_only_the_documented_acls_delivers_every_event() {
    let (_dir, cluster, pki) = start_secure().await;
    let topics = Topics::unique("sasl");
    create_topics(&cluster.brokers(), &topics.all(), 3).await;
    grant_documented(&cluster, &topics);
    let gateway = Gateway::start_with(
        Some(&cluster.sasl_brokers()),
        &topics,
        &sasl_properties(PASSWORD, &pki.ca_file()),
    );
    send(&gateway, "sasl-1", 1..=50).await;
    let got = delivered(&cluster, &topics.readings, 50, 60, &gateway);
    assert!(got.iter().all(|m| m.key == "sasl-1"));
    gateway.wait_drained(Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_write_acls_stall_without_quarantine_and_flow_in_order_once_granted() {
    let (_dir, cluster, pki) = start_secure().await;
    let topics = Topics::unique("acl");
    create_topics(&cluster.brokers(), &topics.all(), 1).await;
    let principal = format!("User:{USER}");
    // Describe only: the gateway may see its topics but write to none of them. Kafka then
    // refuses its idempotent producer an id (cluster authorization), a fatal error for
    // librdkafka's producer.
    for t in topics.all() {
        cluster.allow(&principal, &["Describe"], &["--topic", t]);
    }
    let gateway = Gateway::start_with(
        Some(&cluster.sasl_brokers()),
        &topics,
        &sasl_properties(PASSWORD, &pki.ca_file()),
    );
    send(&gateway, "acl-1", 1..=20).await;
    let body = wait_readyz(
        &gateway,
        "ClusterAuthorizationFailed",
        Duration::from_secs(60),
    )
    .await;
    assert!(body.contains("needs Write on at least one topic"), "{body}");
    assert!(
        body.lines().all(|l| !l.starts_with("[-]")),
        "still ready: {body}"
    );

    // Write on the other topics, not on readings: the producer gets its id, and the readings
    // are refused by topic. They wait in the spool, in order, and none is quarantined.
    cluster.allow(&principal, &["Write"], &["--topic", &topics.positions]);
    cluster.allow(&principal, &["Write"], &["--topic", &topics.dead_letter]);
    let body = wait_readyz(
        &gateway,
        "TopicAuthorizationFailed",
        Duration::from_secs(120),
    )
    .await;
    assert!(
        body.contains(&topics.readings) && body.contains("grant it Describe and Write"),
        "names the topic and the missing permission: {body}"
    );
    // Well past three failures of the same rows.
    tokio::time::sleep(Duration::from_secs(5)).await;
    send(&gateway, "acl-1", 21..=30).await;
    let m = metrics(&gateway);
    assert!(
        m.lines()
            .any(|l| l.starts_with("tributary_forward_errors_total")
                && l.contains("error=\"TopicAuthorizationFailed\"")
                && l.contains(&topics.readings)),
        "{m}"
    );
    assert!(
        !m.lines()
            .any(|l| l.contains("reason=\"quarantined\"") && !l.ends_with(" 0")),
        "nothing quarantined:\n{m}"
    );
    let (_, listing) = gateway.spool_tool(&["quarantine"]);
    assert!(listing.trim().is_empty(), "quarantine is empty: {listing}");
    assert!(
        gateway.log().contains("grant it Describe and Write"),
        "the error log says what to grant"
    );

    // The operator grants Write while the gateway runs: everything flows, in order.
    cluster.allow(&principal, &["Write"], &["--topic", &topics.readings]);
    delivered(&cluster, &topics.readings, 30, 90, &gateway);
    gateway.wait_drained(Duration::from_secs(60));
    assert!(
        readyz(&gateway).contains("delivering"),
        "{}",
        readyz(&gateway)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_an_unknown_ca_and_a_missing_topic_are_each_said_and_lose_nothing() {
    let (_dir, cluster, pki) = start_secure().await;

    // A wrong SASL password.
    let topics = Topics::unique("badpw");
    create_topics(&cluster.brokers(), &topics.all(), 1).await;
    grant_documented(&cluster, &topics);
    let gateway = Gateway::start_with(
        Some(&cluster.sasl_brokers()),
        &topics,
        &sasl_properties("not-the-password", &pki.ca_file()),
    );
    send(&gateway, "pw-1", 1..=5).await;
    let body = wait_readyz(
        &gateway,
        "refused the gateway's credentials",
        Duration::from_secs(60),
    )
    .await;
    assert!(body.contains("sasl.password"), "{body}");
    assert!(
        metrics(&gateway).contains("error=\"SaslAuthenticationFailed\"")
            || metrics(&gateway).contains("error=\"Authentication\"")
    );
    drop(gateway);

    // A CA that did not sign the broker's certificate.
    let other = tempfile::tempdir().unwrap();
    let stranger = Pki::new(other.path());
    let gateway = Gateway::start_with(
        Some(&cluster.sasl_brokers()),
        &topics,
        &sasl_properties(PASSWORD, &stranger.ca_file()),
    );
    send(&gateway, "ca-1", 1..=5).await;
    let body = wait_readyz(&gateway, "TLS to Kafka failed", Duration::from_secs(60)).await;
    assert!(body.contains("ssl.ca.location"), "{body}");
    drop(gateway);

    // A topic that does not exist, with auto-creation off on the cluster: the gateway says
    // what to create; once it exists, what waited is delivered.
    let missing = Topics::unique("missing");
    for t in missing.all() {
        cluster.allow(
            &format!("User:{USER}"),
            &["Describe", "Write"],
            &["--topic", t],
        );
    }
    let gateway = Gateway::start_with(
        Some(&cluster.sasl_brokers()),
        &missing,
        &sasl_properties(PASSWORD, &pki.ca_file()),
    );
    send(&gateway, "mt-1", 1..=10).await;
    let body = wait_readyz(&gateway, "does not exist", Duration::from_secs(90)).await;
    assert!(
        body.contains(&missing.readings) && body.contains("create it"),
        "{body}"
    );
    create_topics(&cluster.brokers(), &missing.all(), 1).await;
    delivered(&cluster, &missing.readings, 10, 90, &gateway);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_auto_create_the_gateway_creates_its_topics_as_configured_or_says_what_to_create() {
    let (_dir, cluster, pki) = start_secure().await;
    let principal = format!("User:{USER}");
    let config = format!(
        "auto_create = true\ntopic_partitions = 2\ntopic_replication = 1\n{}",
        sasl_properties(PASSWORD, &pki.ca_file())
    );

    // Write and Describe, but no Create: the gateway says it may not, and what to run.
    let topics = Topics::unique("nocreate");
    for t in topics.all() {
        cluster.allow(&principal, &["Describe", "Write"], &["--topic", t]);
    }
    let gateway = Gateway::start_with(Some(&cluster.sasl_brokers()), &topics, &config);
    let body = wait_readyz(&gateway, "cannot create topic", Duration::from_secs(60)).await;
    assert!(
        body.contains("grant the gateway's principal Create")
            && body.contains("--partitions 2 --replication-factor 1"),
        "{body}"
    );
    drop(gateway);

    // With Create on the gateway's topics (a prefixed ACL, as the README shows), it creates
    // them with the configured partitions, and delivers.
    let topics = Topics::unique("autocreate");
    let prefix = topics.readings.split('.').next().expect("a stem");
    cluster.allow(
        &principal,
        &["Create", "Describe", "Write"],
        &["--topic", prefix, "--resource-pattern-type", "prefixed"],
    );
    let gateway = Gateway::start_with(Some(&cluster.sasl_brokers()), &topics, &config);
    send(&gateway, "ac-1", 1..=10).await;
    delivered(&cluster, &topics.readings, 10, 90, &gateway);
    let described = cluster.tool(
        "org.apache.kafka.tools.TopicCommand",
        &["--describe", "--topic", &topics.readings],
    );
    assert!(described.contains("PartitionCount: 2"), "{described}");
}

#[test]
fn check_config_exits_64_on_properties_librdkafka_refuses_together() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "[kafka]\nbrokers = \"127.0.0.1:9\"\n[kafka.properties]\nacks = \"0\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(binary("tributary"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("kafka.properties") && stderr.contains("acks"),
        "names the conflict: {stderr}"
    );
}
