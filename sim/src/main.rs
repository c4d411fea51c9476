//! `tributary-sim`: simulated devices sending to a Tributary gateway.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};
use tributary_sim::run::{run, RunSpec, Transport};

#[derive(Clone, Copy, ValueEnum)]
enum Proto {
    Tcp,
    Mqtt,
}

/// Send readings and positions from N simulated devices to a gateway.
#[derive(Parser)]
#[command(name = "tributary-sim", version)]
struct Cli {
    /// Transport to use.
    #[arg(long, value_enum, default_value = "tcp")]
    transport: Proto,
    /// Gateway address: the TCP port for tcp, the MQTT port for mqtt.
    #[arg(long, default_value = "127.0.0.1:7878")]
    gateway: SocketAddr,
    /// Number of devices.
    #[arg(long, default_value_t = 10)]
    devices: usize,
    /// Events per device.
    #[arg(long, default_value_t = 100)]
    events: u64,
    /// Events per second per device (0: as fast as acknowledgements allow).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Events per TCP batch.
    #[arg(long, default_value_t = 20)]
    batch: usize,
    /// Device id prefix.
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// First seq of every device. Default: now in ms, so a later run never reuses a seq.
    #[arg(long)]
    seq_start: Option<u64>,
    /// Every n-th device reports positions (0: none).
    #[arg(long, default_value_t = 2)]
    position_every: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let transport = match cli.transport {
        Proto::Tcp => Transport::Tcp(cli.gateway),
        Proto::Mqtt => Transport::Mqtt {
            host: cli.gateway.ip().to_string(),
            port: cli.gateway.port(),
        },
    };
    let spec = RunSpec {
        transport,
        devices: cli.devices,
        events_per_device: cli.events,
        prefix: cli.prefix,
        seq_start: cli
            .seq_start
            .unwrap_or_else(tributary_sim::generate::now_ms),
        batch: cli.batch,
        rate_per_device: cli.rate,
        position_every: cli.position_every,
    };
    let started = std::time::Instant::now();
    let report = run(spec).await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sent          {:>10}  ({} readings, {} positions)",
        report.sent, report.readings, report.positions
    );
    println!("acknowledged  {:>10}", report.acked);
    println!("resent        {:>10}", report.resent);
    println!(
        "elapsed       {:>10.2} s  ({:.0} events/s)",
        secs,
        report.sent as f64 / secs.max(1e-9)
    );
    for failed in &report.failed_devices {
        eprintln!("device failed: {failed}");
    }
    if report.acked < report.sent {
        anyhow::bail!(
            "{} of {} events were not acknowledged",
            report.sent - report.acked,
            report.sent
        );
    }
    Ok(())
}
