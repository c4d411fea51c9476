//! Tributary's gateway: devices in (MQTT, TCP), a durable spool, Kafka out.
//!
//! Data flows one way: [`ingest`] validates and routes events ([`route`]) into records,
//! appends them to the spool (`tributary_spool`) and acknowledges devices after the commit;
//! [`forward`] reads the spool in order, delivers to Kafka (or the file sink) and deletes rows
//! once delivery is confirmed. [`config`] is read and validated once; [`shutdown`] orders the
//! stop; [`observe`] counts what happened and shows it (metrics, the status page, the admin
//! listener). [`run`] wires it together; the `tributary` binary only parses the command line
//! and calls it.
//!
//! The wings, bottom up: the shared vocabulary ([`transport`], [`hash`], [`logline`],
//! [`shutdown`]); [`route`] with its mappings and rules (what events become); [`observe`];
//! [`identity`]; [`ingest`]; [`forward`]; and at the top [`config`] and [`reload`].

pub mod commands;
pub mod config;
pub mod forward;
#[cfg(any(test, feature = "fuzz"))]
#[doc(hidden)]
pub mod fuzz;
pub mod hash;
pub mod identity;
pub mod ingest;
pub mod logline;
pub mod observe;
pub mod reload;
pub mod route;
pub mod shutdown;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::forward::Drain;
use crate::forward::SinkConfig;
use crate::identity::Authority;
use crate::ingest::Ingest;
use crate::observe::stats::{Stats, Summary};
use crate::observe::{admin, metrics};
use crate::route::Router;
use tributary_spool::{Spool, SpoolError};

/// Why the gateway could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("cannot listen for TCP on {addr}: {source}")]
    TcpBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Mqtt(#[from] ingest::mqtt::MqttError),
    #[error(transparent)]
    Format(#[from] route::FormatError),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error("cannot listen for the admin endpoints on {addr} (admin.listen): {source}")]
    AdminBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Runs the gateway until `stop` is cancelled, then shuts down in order and returns the
/// counters. Start-up errors (certificates, credentials, spool, ports) are returned before
/// anything is accepted.
pub async fn run(config: Config, stop: CancellationToken) -> Result<Summary, GatewayError> {
    let authority = Arc::new(Authority::load(config.identity())?);
    run_with(config, authority, stop).await
}

/// [`run`] with an [`Authority`] the caller keeps, to reload it (SIGHUP) while the gateway runs.
pub async fn run_with(
    config: Config,
    authority: Arc<Authority>,
    stop: CancellationToken,
) -> Result<Summary, GatewayError> {
    warn_about_anonymous_network(&config);
    warn_about_cleartext_passwords(&config);
    warn_about_descriptor_limit(&config);
    let stats = Stats::default();
    let spool_config = config.spool.clone();
    let spool_stats = stats.clone();
    let rules = Box::new(crate::route::rules::store::RuleStates::new(
        config.rules.clone(),
    ));
    let (spool, recovery) =
        tokio::task::spawn_blocking(move || Spool::open_with(&spool_config, spool_stats, rules))
            .await
            .map_err(|_| SpoolError::Closed)??;
    if let Some(r) = recovery {
        tracing::error!(
            message = "The spool was corrupt: moved aside and salvaged.",
            problem = %r.problem,
            moved_to = %r.moved_to.display(),
            salvaged_rows = r.salvaged_rows,
            unreadable_id_ranges = ?r.unreadable,
        );
    }
    tracing::info!(message = "Spool open.", path = %config.spool.path.display());
    let commands = match (&config.commands, &config.sink) {
        (Some(c), SinkConfig::Kafka(_)) => Some(commands::Commands::new(
            c.clone(),
            spool.clone(),
            stats.clone(),
            authority.clone(),
        )),
        _ => None,
    };
    let ingest = Ingest::new(
        spool.clone(),
        Router::new(config.routes.clone())?.keeping_events(!config.rules.is_empty()),
        stats.clone(),
        authority,
    )
    .with_mappings(config.mappings.clone())
    .with_sparkplug(config.sparkplug.clone())
    .with_commands(commands.clone());

    let admin_stop = CancellationToken::new();
    let admin = Arc::new(admin::Admin {
        stats: stats.clone(),
        spool: spool.clone(),
        metrics: metrics::Metrics::new(&stats),
        started: std::time::Instant::now(),
        listening: std::sync::atomic::AtomicBool::new(false),
        sink: match config.sink {
            SinkConfig::Kafka(_) => "kafka",
            SinkConfig::File { .. } => "file_sink",
        },
    });
    // The status page's rates: totals sampled once a second.
    let sampler = {
        let (stats, stop) = (stats.clone(), admin_stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => stats.activity.tick(stats.totals()),
                    _ = stop.cancelled() => break,
                }
            }
        })
    };
    let admin_task = match config.admin.clone() {
        Some(admin_config) => {
            let addr = admin_config.listen;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| GatewayError::AdminBind { addr, source })?;
            // The bound address, not the configured one: port 0 takes an ephemeral port.
            let bound = listener.local_addr().unwrap_or(addr);
            tracing::info!(message = "Admin endpoints listening (/metrics, /livez, /readyz, /api/status).", addr = %bound, token = admin_config.token.is_some());
            if !addr.ip().is_loopback() {
                match admin_config.token {
                    Some(_) => {
                        tracing::warn!(message = "The admin listener is reachable from the network over plain HTTP: its token crosses the network in clear text. Prefer loopback behind a TLS proxy.", %addr)
                    }
                    None => {
                        tracing::warn!(message = "The admin listener is reachable from the network without a token (auth.anonymous = \"network\"): anyone who can reach it reads devices' positions and peers' addresses.", %addr)
                    }
                }
            }
            Some(tokio::spawn(admin::serve(
                listener,
                admin.clone(),
                admin_config,
                admin_stop.clone(),
            )))
        }
        None => None,
    };

    let scope = shutdown::Scope {
        stop: stop.child_token(),
        ..Default::default()
    };
    let deadline = shutdown::Deadline::new(config.shutdown_grace);
    if let Some(tcp) = &config.tcp {
        for (addr, tls) in [(tcp.listen, false), (tcp.tls_listen, true)] {
            let Some(addr) = addr else { continue };
            let listener = ingest::listen::listen(addr)
                .map_err(|source| GatewayError::TcpBind { addr, source })?;
            let bound = listener.local_addr().unwrap_or(addr);
            tracing::info!(message = "TCP ingest listening.", addr = %bound, tls);
            scope.tasks.spawn(ingest::tcp::serve(
                listener,
                tls,
                tcp.clone(),
                ingest.clone(),
                scope.clone(),
            ));
        }
    }
    if let Some(mqtt) = &config.mqtt {
        let republish = match mqtt.broker_listen {
            Some(addr) => {
                let r = ingest::mqtt::start_broker(addr, mqtt.max_connections.get())?;
                tracing::info!(message = "Embedded MQTT broker for subscribers listening.", addr = %addr);
                Some(r)
            }
            None => None,
        };
        for (addr, tls) in [(mqtt.listen, false), (mqtt.tls_listen, true)] {
            let Some(addr) = addr else { continue };
            let listener = ingest::mqtt::bind(addr).await?;
            let bound = listener.local_addr().unwrap_or(addr);
            tracing::info!(message = "MQTT ingest listening.", addr = %bound, tls);
            scope.tasks.spawn(ingest::mqtt::serve(
                listener,
                tls,
                mqtt.clone(),
                ingest.clone(),
                republish.clone(),
                scope.clone(),
            ));
        }
    }

    if let Some(t) = &config.teltonika {
        let listener =
            ingest::listen::listen(t.listen).map_err(|source| GatewayError::TcpBind {
                addr: t.listen,
                source,
            })?;
        let bound = listener.local_addr().unwrap_or(t.listen);
        tracing::info!(message = "Teltonika tracker ingest listening.", addr = %bound, known = t.names.len(), accept_unknown = t.accept_unknown);
        if !t.listen.ip().is_loopback() {
            tracing::warn!(message = "Teltonika trackers prove nothing but their IMEI (teltonika.trust_imei = true): anyone on this network who reads a tracker's label can write as it.", addr = %t.listen, accept_unknown = t.accept_unknown);
        }
        scope.tasks.spawn(ingest::teltonika::serve(
            listener,
            t.clone(),
            ingest.clone(),
            scope.clone(),
        ));
    }

    for bridge in &config.bridges {
        match ingest::bridge::options(bridge) {
            Ok(options) => {
                tracing::info!(message = "Bridging an upstream MQTT broker.", bridge = %bridge.name, host = %bridge.host, port = bridge.port, client_id = %bridge.client_id);
                scope.tasks.spawn(ingest::bridge::serve(
                    bridge.clone(),
                    options,
                    ingest.clone(),
                    scope.clone(),
                ));
            }
            Err(error) => tracing::error!(message = "Bridge not started.", %error),
        }
    }
    for source in &config.files {
        tracing::info!(message = "Following files.", source = %source.name, path = %source.path.display());
        scope.tasks.spawn(ingest::files::serve(
            source.clone(),
            ingest.clone(),
            scope.clone(),
        ));
    }
    for link in &config.modbus {
        tracing::info!(message = "Polling Modbus devices.", link = %link.name, devices = link.devices.len());
        scope.tasks.spawn(ingest::modbus::serve(
            link.clone(),
            ingest.clone(),
            scope.clone(),
        ));
    }

    // Commands: read from Kafka into the spool, and expired there, until ingest stops.
    let mut command_tasks = Vec::new();
    if let (Some(hub), SinkConfig::Kafka(kafka)) = (&commands, &config.sink) {
        tracing::info!(message = "Taking commands for devices from Kafka.", topic = %hub.config.topic, responses_topic = %hub.config.responses_topic);
        command_tasks.push(tokio::spawn(commands::consume::run(
            hub.clone(),
            kafka.clone(),
            spool.clone(),
            stats.clone(),
            scope.stop.clone(),
        )));
        command_tasks.push(tokio::spawn(commands::expire::run(
            hub.clone(),
            scope.stop.clone(),
        )));
    }

    // The forwarder drains after ingest has stopped, so it gets its own token.
    let forward_stop = CancellationToken::new();
    let drain = Drain {
        stop: forward_stop.clone(),
        deadline: deadline.clone(),
    };
    match &config.sink {
        SinkConfig::Kafka(kafka) => {
            tracing::info!(message = "Forwarding to Kafka.", brokers = %kafka.brokers)
        }
        SinkConfig::File { dir } => {
            tracing::info!(message = "Forwarding to the file sink.", dir = %dir.display())
        }
    }
    let forwarder = tokio::spawn(forward::supervise(
        config.time,
        config.sink.clone(),
        spool.clone(),
        stats.clone(),
        drain,
    ));
    admin
        .listening
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(message = "Gateway ready.");

    // Shutdown: one deadline for everything (see `shutdown`).
    stop.cancelled().await;
    let until = deadline.at();
    scope.stop.cancel();
    scope.tasks.close();
    if tokio::time::timeout_at(until, scope.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            message = "Sessions still busy at the end of the grace period were dropped; their devices resend what was not answered.",
            sessions = scope.tasks.len()
        );
        scope.abort.cancel();
        scope.tasks.wait().await;
    }
    for task in command_tasks {
        let _ = task.await;
    }
    drop(ingest);
    drop(commands);
    forward_stop.cancel();
    if let Err(e) = forwarder.await {
        tracing::error!(message = "The forwarder's supervisor failed.", error = %e);
    }
    admin_stop.cancel();
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    let _ = sampler.await;
    drop(admin);
    spool.close().await;
    let summary = stats.snapshot();
    tracing::info!(message = "Gateway stopped.");
    Ok(summary)
}

/// With `auth.cleartext_passwords`, says at every start which listeners take passwords in
/// clear text from beyond this machine.
fn warn_about_cleartext_passwords(config: &Config) {
    for (key, addr) in crate::identity::cleartext_listeners(&config.listeners(), &config.auth) {
        tracing::warn!(
            message = "Device passwords cross the network in clear text on this listener (auth.cleartext_passwords = true): anyone on the network can read them. Prefer the TLS listener.",
            key,
            %addr
        );
    }
}

/// Descriptors the gateway needs besides connections: the spool and its WAL, Kafka's sockets,
/// followed files, the runtime's own.
const DESCRIPTOR_MARGIN: u64 = 256;

/// The most descriptors the configured listeners may hold at once, plus [`DESCRIPTOR_MARGIN`].
fn descriptors_needed(config: &Config) -> u64 {
    let mut n = DESCRIPTOR_MARGIN;
    let count = |addr: Option<std::net::SocketAddr>, cap: usize| {
        addr.map_or(0, |_| u64::try_from(cap).unwrap_or(u64::MAX))
    };
    if let Some(t) = &config.tcp {
        n = n.saturating_add(count(t.listen, t.max_connections.get()));
        n = n.saturating_add(count(t.tls_listen, t.max_connections.get()));
    }
    if let Some(m) = &config.mqtt {
        for addr in [m.listen, m.tls_listen, m.broker_listen] {
            n = n.saturating_add(count(addr, m.max_connections.get()));
        }
    }
    if let Some(t) = &config.teltonika {
        n = n.saturating_add(count(Some(t.listen), t.max_connections.get()));
    }
    if let Some(a) = &config.admin {
        n = n.saturating_add(count(Some(a.listen), a.max_connections));
    }
    n.saturating_add(u64::try_from(config.files.len() * 100).unwrap_or(u64::MAX))
}

/// Says at start when the listeners' caps together exceed the open-file limit: past it, a new
/// connection fails with EMFILE whatever the caps say, and so does opening a spool file.
fn warn_about_descriptor_limit(config: &Config) {
    let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return;
    };
    let needed = descriptors_needed(config);
    if needed > soft {
        tracing::warn!(
            message = "The listeners' connection caps exceed the open-file limit: once descriptors run out, new devices are refused (\"Too many open files\"). Raise LimitNOFILE in the systemd unit, or lower tcp.max_connections, mqtt.max_connections, teltonika.max_connections and admin.max_connections.",
            open_file_limit = soft,
            descriptors_needed = needed,
        );
    }
}

/// With `auth.anonymous = "network"`, says at every start which listeners accept anyone.
fn warn_about_anonymous_network(config: &Config) {
    if config.auth.anonymous != crate::identity::Anonymous::Network {
        return;
    }
    for (_, addr, _) in config.listeners() {
        if !addr.ip().is_loopback() {
            tracing::warn!(
                message = "Anonymous devices from the network are accepted (auth.anonymous = \"network\"): anyone who can reach this listener can write as any device.",
                %addr
            );
        }
    }
}
