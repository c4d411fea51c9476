//! `tributary-node`: reads the sensors in `config/node.toml` and sends them to a gateway.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use tributary_firmware::device::DeviceLoop;
use tributary_firmware::node::config::{NodeConfig, TransportKind};
use tributary_firmware::node::mqtt::MqttTransport;
use tributary_firmware::node::tcp::{AnyTransport, TcpTransport};
use tributary_firmware::node::{sources, NodeError};

const EX_USAGE: u8 = 64;

/// Read sensors on I2C and serial, and send their readings to a Tributary gateway over TCP.
#[derive(Parser)]
#[command(name = "tributary-node", version)]
struct Cli {
    #[arg(long, short, default_value = "config/node.toml")]
    config: PathBuf,
    /// Stop after this long (milliseconds), flushing what is buffered; default: run until killed.
    #[arg(long)]
    run_for_ms: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match NodeConfig::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let mut sources = match sources::open(&config.sensors) {
        Ok(s) => s,
        Err(e @ NodeError::Config { .. }) => {
            eprintln!("error: {e}");
            return ExitCode::from(EX_USAGE);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let first_seq = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1);
    let tls = match &config.tls_ca {
        None => None,
        Some(ca) => {
            let name = config
                .tls_server_name
                .clone()
                .unwrap_or_else(|| config.gateway.ip().to_string());
            match tributary_firmware::node::link::tls(ca, &name) {
                Ok(t) => Some(t),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EX_USAGE);
                }
            }
        }
    };
    let credentials = tributary_firmware::node::link::Credentials {
        password: config.password.clone(),
        boot: boot_session(),
        tls,
        commands: config.commands,
    };
    let transport = match config.transport {
        TransportKind::Tcp => AnyTransport::Tcp(TcpTransport::new(
            config.gateway,
            config.device_id.clone(),
            credentials,
        )),
        TransportKind::Mqtt => AnyTransport::Mqtt(Box::new(MqttTransport::new(
            config.gateway,
            config.device_id.clone(),
            credentials,
        ))),
        TransportKind::Mqtt5 => AnyTransport::Mqtt5(Box::new(MqttTransport::new(
            config.gateway,
            config.device_id.clone(),
            credentials,
        ))),
    };
    let mut device = DeviceLoop::new(
        config.device_id.clone(),
        first_seq,
        config.buffer_events,
        config.batch,
        transport,
    );
    tracing::info!(message = "Node started.", device_id = %config.device_id, gateway = %config.gateway, sensors = sources.len());
    let started = Instant::now();
    let mut backoff = Duration::from_millis(200);
    let mut retry_at = Instant::now();
    loop {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // Sampling goes on during an outage; the buffer keeps the events for resending.
        device.sample_due(&mut sources, now_ms);
        if Instant::now() >= retry_at {
            let flushed = device.flush();
            let pending = device.pending();
            for command in device.transport().take_commands() {
                let answer =
                    tributary_firmware::node::commands::obey(&command, &mut sources, pending);
                device.transport().answer(&command.id, &answer);
            }
            match flushed {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(error) => {
                    tracing::warn!(message = "Gateway unreachable; events kept for resending.", %error, pending = device.pending());
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        if cli
            .run_for_ms
            .is_some_and(|ms| started.elapsed() >= Duration::from_millis(ms))
        {
            let _ = device.flush();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let c = device.counters();
    let refused = match device.transport() {
        AnyTransport::Mqtt5(t) => t.refused,
        _ => 0,
    };
    println!(
        "sampled {} acknowledged {} dropped {} pending {} refused {refused}",
        c.sampled,
        c.acked,
        c.dropped,
        device.pending()
    );
    ExitCode::SUCCESS
}

/// This boot's session id for the gateway: a hash of the kernel's boot id, which changes at
/// every boot, so a node whose seq restarts (its clock-seeded first seq went backwards) is a new
/// stream to the gateway, not a retransmission. `None` where there is no boot id.
fn boot_session() -> Option<u64> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    // FNV-1a: stable across releases, unlike std's hasher.
    let hash = id.trim().bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    Some(hash.max(1))
}
