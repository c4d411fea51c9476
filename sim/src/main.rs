//! `tributary-sim`: a simulated fleet against a Tributary gateway; `verify` and `bench`.
//!
//! Thin: parses the command line, sets up logging, and calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tributary_sim::device::Live;
use tributary_sim::manifest::Manifest;
use tributary_sim::progress::Progress;
use tributary_sim::scenario::{Raw, ScenarioError, DEFAULT_SCENARIO, MAX_GROUP_DEVICES};
use tributary_sim::verify;

#[derive(Parser)]
#[command(
    name = "tributary-sim",
    version,
    args_conflicts_with_subcommands = true
)]
/// A fleet of simulated sensors and vehicles sending to a Tributary gateway.
///
/// Without a subcommand, runs a scenario (the same as `run`).
///
/// Exit status: 0 when all went well; 1 when events went unacknowledged (run), defects were
/// found (verify) or events were lost (bench); 2 on other errors; 64 for a bad scenario.
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario: devices send until done; prints a summary table.
    Run(RunArgs),
    /// Check topics (Kafka or the file sink) against a run's manifest.
    Verify(VerifyArgs),
    /// Open-loop load with latency percentiles and the gateway's CPU and memory.
    Bench(BenchArgs),
    /// Write the gateway's fuzz seed corpora, made from the simulator's streams.
    FuzzCorpus(CorpusArgs),
}

#[derive(Args)]
struct CorpusArgs {
    /// The folder to write one subfolder per fuzz target into.
    #[arg(long, default_value = "fuzz/seeds")]
    out: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Proto {
    Tcp,
    Mqtt,
    Mqtt5,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Scenario file (TOML); default: the built-in one (see --print-scenario).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Print the built-in default scenario, with every key documented, and exit.
    #[arg(long)]
    print_scenario: bool,
    /// Seed of every random choice: the same seed gives the same streams.
    #[arg(long)]
    seed: Option<u64>,
    /// Total devices, shared among the scenario's groups in proportion.
    #[arg(long)]
    devices: Option<usize>,
    /// Events per device (0: until --duration).
    #[arg(long)]
    events: Option<u64>,
    /// Wall-clock limit in seconds (0: none).
    #[arg(long)]
    duration: Option<f64>,
    /// Simulated seconds per second (0: as fast as acknowledgements allow).
    #[arg(long)]
    speedup: Option<f64>,
    /// Send every group over this transport.
    #[arg(long, value_enum)]
    transport: Option<Proto>,
    /// MQTT QoS (0 or 1) for every MQTT group.
    #[arg(long)]
    qos: Option<u8>,
    /// The gateway's TCP protocol address.
    #[arg(long)]
    tcp: Option<String>,
    /// The gateway's MQTT address.
    #[arg(long)]
    mqtt: Option<String>,
    /// Events per TCP batch, and the MQTT in-flight window per device.
    #[arg(long)]
    batch: Option<usize>,
    /// Device id prefix.
    #[arg(long)]
    prefix: Option<String>,
    /// First seq of every device (default: now in ms).
    #[arg(long)]
    seq_start: Option<u64>,
    /// Spread first connections over this many seconds.
    #[arg(long)]
    ramp: Option<f64>,
    /// Write what was sent and acknowledged here (JSON), for `verify`.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Connect over TLS, trusting the CA certificates in this PEM file (the gateway's
    /// certificate must name the address's IP). Point --tcp and --mqtt at its TLS listeners.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Log in with a password per device: this template with {device} replaced by the id.
    #[arg(long)]
    password: Option<String>,
    /// Send a random boot session per device (event ids become device:session:seq).
    #[arg(long)]
    sessions: bool,
    /// Devices subscribe to their commands (devices/{id}/commands/#, MQTT links) and obey
    /// them: set_interval changes their reporting interval, get_state answers with it.
    #[arg(long)]
    commands: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct VerifyArgs {
    /// The run's manifest.
    #[arg(long)]
    manifest: PathBuf,
    /// Kafka bootstrap servers to read from.
    #[arg(long, conflicts_with = "file_sink")]
    kafka: Option<String>,
    /// The gateway's file sink directory to read from.
    #[arg(long)]
    file_sink: Option<PathBuf>,
    /// Topics to read (repeat); default: the gateway's default topics.
    #[arg(long = "topic", default_values_t = ["telemetry.readings".to_owned(), "telemetry.positions".to_owned()])]
    topics: Vec<String>,
    /// Keep reading for up to this many seconds while acknowledged events are missing (the
    /// gateway may still be forwarding).
    #[arg(long, default_value_t = 30.0)]
    wait: f64,
    /// Count repeated event ids instead of failing on them (after a crash, at-least-once
    /// delivery may repeat events; they stay recognisable by their event id).
    #[arg(long)]
    allow_duplicates: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// The gateway's TCP protocol address.
    #[arg(long, default_value = "127.0.0.1:7878")]
    tcp: SocketAddr,
    /// The gateway's MQTT address: devices publish there (QoS 1, one event a publish, `batch`
    /// publishes at a time) instead of using the TCP protocol.
    #[arg(long)]
    mqtt: Option<SocketAddr>,
    /// Devices, each on its own connection.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Target events per second over all devices; 0: as fast as acknowledgements allow.
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Events per frame.
    #[arg(long, default_value_t = 20)]
    batch: usize,
    /// Batches in flight per device when --rate is 0.
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Device id prefix; the end-to-end consumer counts keys that start with it.
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// Seed of the stations' readings.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The gateway's pid, for its CPU and memory; default: the one process named `tributary`.
    #[arg(long)]
    pid: Option<u32>,
    /// Kafka bootstrap servers, to measure end-to-end latency.
    #[arg(long)]
    kafka: Option<String>,
    /// The topic the bench's events land in.
    #[arg(long, default_value = "telemetry.readings")]
    topic: String,
    /// Print only the JSON line.
    #[arg(long)]
    json: bool,
    /// A folder on the gateway's spool disk (its data_dir): the bench times that disk's
    /// fdatasync before the load and reports the acknowledgement p99 against it.
    #[arg(long)]
    fsync_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Ten thousand devices need ten thousand sockets.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "Could not raise the open file limit.");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            None => run(cli.run).await,
            Some(Command::Run(args)) => run(args).await,
            Some(Command::Verify(args)) => verify_cmd(args).await,
            Some(Command::Bench(args)) => bench(args).await,
            Some(Command::FuzzCorpus(args)) => {
                let n = tributary_sim::corpus::write_seeds(&args.out)
                    .with_context(|| format!("writing seeds under {}", args.out.display()))?;
                println!("{n} seed files under {}", args.out.display());
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            // A bad scenario or roads file is a usage error (EX_USAGE); anything else (a broker
            // that cannot be read, a file that cannot be written) is 2, apart from 1, which
            // means "unacknowledged events" or "defects found".
            let usage = e
                .downcast_ref::<tributary_sim::scenario::ScenarioError>()
                .is_some()
                || e.downcast_ref::<tributary_sim::model::roads::RoadsError>()
                    .is_some();
            ExitCode::from(if usage { 64 } else { 2 })
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if args.print_scenario {
        print!("{DEFAULT_SCENARIO}");
        return Ok(ExitCode::SUCCESS);
    }
    let (mut raw, path) = match &args.scenario {
        Some(p) => (Raw::load(p)?, p.display().to_string()),
        None => (Raw::default_scenario()?, "built-in scenario".to_owned()),
    };
    if let Some(v) = args.seed {
        raw.seed = v;
    }
    if let Some(v) = args.events {
        raw.events = v;
    }
    if let Some(v) = args.duration {
        raw.duration_s = v;
    }
    if let Some(v) = args.speedup {
        raw.speedup = v;
    }
    if let Some(v) = &args.tcp {
        raw.gateway.tcp = v.clone();
    }
    if let Some(v) = &args.mqtt {
        raw.gateway.mqtt = v.clone();
    }
    if let Some(v) = args.batch {
        raw.batch = v;
    }
    if let Some(v) = &args.prefix {
        raw.prefix = v.clone();
    }
    if let Some(v) = args.seq_start {
        raw.seq_start = Some(v);
    }
    if let Some(v) = args.ramp {
        raw.ramp_s = v;
    }
    if let Some(q) = args.qos {
        for g in &mut raw.group {
            g.qos = q;
        }
    }
    if let Some(t) = args.transport {
        for g in &mut raw.group {
            g.transport = match t {
                Proto::Tcp => "tcp".into(),
                Proto::Mqtt => "mqtt".into(),
                Proto::Mqtt5 => "mqtt5".into(),
            };
        }
    }
    let mut scenario = raw.validate(&path)?;
    if let Some(n) = args.devices {
        if n == 0 || n > MAX_GROUP_DEVICES {
            return Err(ScenarioError::Invalid {
                path: "command line".into(),
                key: "--devices".into(),
                what: format!("{n} is not from 1 to {MAX_GROUP_DEVICES}"),
            }
            .into());
        }
        scenario.scale_to(n);
    }
    scenario.commands = args.commands;
    scenario.credentials = tributary_sim::security::Credentials {
        tls: match &args.tls_ca {
            Some(ca) => Some(tributary_sim::security::tls_client(ca).map_err(|what| {
                ScenarioError::Invalid {
                    path: "command line".into(),
                    key: "--tls-ca".into(),
                    what,
                }
            })?),
            None => None,
        },
        password: args.password.clone(),
        sessions: args.sessions,
    };
    let live = Arc::new(Live::default());
    let total = (scenario.events > 0).then(|| scenario.events * scenario.device_count() as u64);
    let progress = Progress::start(Arc::clone(&live), total, !args.quiet);
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    let report = tributary_sim::run::run(&scenario, live, cancel).await?;
    progress.finish().await;
    print!("{}", report.table());
    if let Some(path) = &args.manifest {
        report
            .manifest()
            .write(path)
            .with_context(|| "writing the manifest")?;
        println!("manifest: {}", path.display());
    }
    for (id, error) in report.failures().take(20) {
        eprintln!("device {id} failed: {error}");
    }
    let unacked = report.unacknowledged();
    if unacked > 0 {
        eprintln!("{unacked} events sent were not acknowledged");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify_cmd(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let manifest = Manifest::read(&args.manifest)?;
    let options = verify::Options {
        allow_duplicates: args.allow_duplicates,
    };
    let wait = Duration::from_secs_f64(args.wait.max(0.0));
    let verdict = match (&args.kafka, &args.file_sink) {
        (Some(brokers), _) => {
            let brokers = brokers.clone();
            let topics = args.topics.clone();
            tokio::task::spawn_blocking(move || {
                verify_kafka(&manifest, &brokers, &topics, options, wait)
            })
            .await??
        }
        (None, Some(dir)) => {
            let (dir, topics) = (dir.clone(), args.topics.clone());
            tokio::task::spawn_blocking(move || {
                verify::file::verify(&manifest, &dir, &topics, options, wait)
            })
            .await??
        }
        (None, None) => anyhow::bail!("say where to read: --kafka BROKERS or --file-sink DIR"),
    };
    print!("{}", verdict.report());
    Ok(if verdict.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(feature = "kafka")]
fn verify_kafka(
    manifest: &Manifest,
    brokers: &str,
    topics: &[String],
    options: verify::Options,
    wait: Duration,
) -> anyhow::Result<verify::Verdict> {
    Ok(verify::kafka::verify(
        manifest, brokers, topics, options, wait,
    )?)
}

#[cfg(not(feature = "kafka"))]
fn verify_kafka(
    _: &Manifest,
    _: &str,
    _: &[String],
    _: verify::Options,
    _: Duration,
) -> anyhow::Result<verify::Verdict> {
    anyhow::bail!("this build has no Kafka support (feature `kafka`); use --file-sink")
}

async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.devices > 0, "--devices must be at least 1");
    anyhow::ensure!(
        args.rate.is_finite() && args.rate >= 0.0,
        "--rate must be 0 or more"
    );
    anyhow::ensure!(
        args.duration.is_finite() && args.duration > 0.0,
        "--duration must be more than 0"
    );
    let spec = tributary_sim::bench::BenchSpec {
        tcp: args.tcp,
        mqtt: args.mqtt,
        devices: args.devices,
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration),
        batch: args.batch.max(1),
        window: args.window.max(1),
        prefix: args.prefix,
        seed: args.seed,
        fsync_dir: args.fsync_dir.clone(),
    };
    let pid = args
        .pid
        .or_else(|| tributary_sim::bench::proc::find("tributary"));
    let kafka = args.kafka.map(|brokers| tributary_sim::bench::KafkaWatch {
        brokers,
        topic: args.topic,
    });
    let report = tributary_sim::bench::run(&spec, pid, kafka.as_ref())
        .await
        .map_err(anyhow::Error::msg)?;
    println!("{}", report.json());
    if !args.json {
        print!("{}", report.table());
    }
    Ok(if report.errors == 0 && report.acked == report.sent {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
