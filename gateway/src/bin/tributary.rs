//! `tributary`: the gateway binary. Parses the command line, sets up logging, calls the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tributary_gateway::config::{Config, DEFAULT_CONFIG_TOML};

/// Log filter when RUST_LOG is unset. rumqttd logs every client disconnect at ERROR level, so its
/// own logs are off unless asked for (`RUST_LOG=info,rumqttd=info`).
const DEFAULT_LOG: &str = "info,rumqttd=off";

/// Exit code for a bad config or command line (sysexits.h EX_USAGE).
const EX_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "tributary",
    version,
    about = "Edge telemetry gateway: MQTT and TCP devices into Kafka, through a durable spool."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway until SIGINT or SIGTERM; print a summary on exit.
    Run {
        #[arg(long, short, default_value = "config/gateway.toml")]
        config: PathBuf,
    },
    /// Validate a config file and exit (0 if valid, 64 if not).
    CheckConfig {
        #[arg(long, short, default_value = "config/gateway.toml")]
        config: PathBuf,
    },
    /// Print the documented default config.
    PrintConfig,
    /// Offline tools on the spool file (stats and inspect also work beside a running gateway).
    Spool {
        #[command(subcommand)]
        command: SpoolCommand,
        /// The gateway config whose spool to use.
        #[arg(long, short, default_value = "config/gateway.toml", global = true)]
        config: PathBuf,
        /// The spool file, instead of the one the config names.
        #[arg(long, global = true)]
        path: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SpoolCommand {
    /// Rows, bytes and oldest event age, per topic, and what the spool discarded.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print queued events as JSON lines, filtered.
    Inspect {
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        topic: Option<String>,
        /// Event time from (ms since the Unix epoch), inclusive.
        #[arg(long)]
        since_ms: Option<i64>,
        /// Event time until (ms since the Unix epoch), exclusive.
        #[arg(long)]
        until_ms: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Print every queued event as a JSON line.
    Export,
    /// Run SQLite's integrity check; exit 0 if healthy, 65 if corrupt.
    Verify,
    /// Move a corrupt spool aside and salvage its readable rows (gateway stopped).
    Salvage,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::PrintConfig => {
            print!("{DEFAULT_CONFIG_TOML}");
            ExitCode::SUCCESS
        }
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: valid", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EX_USAGE)
            }
        },
        Command::Spool {
            command,
            config,
            path,
        } => {
            let path = match path {
                Some(p) => p,
                None => match Config::load(&config) {
                    Ok(c) => c.spool.path,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(EX_USAGE);
                    }
                },
            };
            match spool_tool(&command, &path) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {}: {e:#}", path.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            // Every device connection is a socket: take the hard limit, as servers do (the
            // systemd unit sets LimitNOFILE; a shell's soft limit is often 1024).
            match rlimit::increase_nofile_limit(u64::MAX) {
                Ok(n) => tracing::debug!(limit = n, "Open file limit raised."),
                Err(error) => tracing::warn!(%error, "Could not raise the open file limit."),
            }
            match run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Exit code for a corrupt spool (sysexits.h EX_DATAERR).
const EX_DATAERR: u8 = 65;

fn spool_tool(command: &SpoolCommand, path: &Path) -> anyhow::Result<ExitCode> {
    use tributary_gateway::spool::tools;
    match command {
        SpoolCommand::Stats { json } => {
            let stats = tools::stats(path)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print_stats(path, &stats);
            }
        }
        SpoolCommand::Inspect {
            device,
            topic,
            since_ms,
            until_ms,
            limit,
        } => {
            let filter = tools::Filter {
                device_id: device.clone(),
                topic: topic.clone(),
                since_ms: *since_ms,
                until_ms: *until_ms,
                limit: *limit,
            };
            for row in tools::inspect(path, &filter)? {
                println!("{}", tools::json_line(&row));
            }
        }
        SpoolCommand::Export => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let n = tools::export(path, &mut out)?;
            out.flush()?;
            eprintln!("exported {n} rows");
        }
        SpoolCommand::Verify => {
            let verdict = tools::verify(path)?;
            match verdict.problem {
                None => println!(
                    "{}: ok (schema version {})",
                    path.display(),
                    verdict.schema_version.unwrap_or(0)
                ),
                Some(problem) => {
                    println!("{}: CORRUPT: {problem}", path.display());
                    println!("Stop the gateway and run `tributary spool salvage`, or just restart it: it salvages at start.");
                    return Ok(ExitCode::from(EX_DATAERR));
                }
            }
        }
        SpoolCommand::Salvage => match tools::salvage(path)? {
            None => println!("{}: healthy; nothing to salvage", path.display()),
            Some(r) => {
                println!("{}: was corrupt: {}", path.display(), r.problem);
                println!("moved to {}", r.moved_to.display());
                println!("salvaged {} rows into a fresh spool", r.salvaged_rows);
                for (from, to) in &r.unreadable {
                    println!("unreadable ids {from}..={to}");
                }
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn print_stats(path: &Path, stats: &tributary_gateway::spool::SpoolStats) {
    let now = tributary_gateway::record::now_ms();
    let age = |ms: Option<i64>| {
        ms.map(|t| format!("{:.1}", (now - t).max(0) as f64 / 1000.0))
            .unwrap_or_else(|| "-".into())
    };
    println!("spool {}", path.display());
    println!(
        "{:<32} {:>10} {:>12} {:>14} {:>10} {:>10}",
        "topic", "rows", "bytes", "oldest age s", "dropped", "expired"
    );
    let mut topics: std::collections::BTreeSet<&String> = stats.topics.keys().collect();
    topics.extend(stats.discarded.keys());
    for topic in topics {
        let t = stats.topics.get(topic).cloned().unwrap_or_default();
        let d = stats.discarded.get(topic);
        let count = |reason: &str| d.and_then(|m| m.get(reason)).copied().unwrap_or(0);
        println!(
            "{:<32} {:>10} {:>12} {:>14} {:>10} {:>10}",
            topic,
            t.rows,
            t.bytes,
            age(t.oldest_received_ms),
            count(tributary_gateway::spool::DROPPED_FULL),
            count(tributary_gateway::spool::EXPIRED),
        );
    }
    println!(
        "{:<32} {:>10} {:>12} {:>14}",
        "total",
        stats.rows,
        stats.bytes,
        age(stats.oldest_received_ms)
    );
}

fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let stop = CancellationToken::new();
        tributary_gateway::shutdown::cancel_on_signal(stop.clone());
        let summary = tributary_gateway::run(config, stop).await?;
        println!("{summary}");
        anyhow::Ok(())
    })?;
    // rumqttd's threads have no shutdown API; leaving the runtime ends the process.
    Ok(())
}
