//! `tributary`: the gateway binary. Parses the command line, sets up logging, calls the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tributary_gateway::config::{Config, DEFAULT_CONFIG_TOML};
use tributary_gateway::identity::Authority;

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
    /// Log lines as text, or as one JSON object per line (for journald, Loki, Vector...).
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "TRIBUTARY_LOG_FORMAT",
        global = true
    )]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
    /// Manage device passwords in the credentials file (auth.credentials). The gateway reads
    /// the file at start and on SIGHUP.
    Devices {
        #[command(subcommand)]
        command: DevicesCommand,
        /// The gateway config whose auth.credentials to use.
        #[arg(long, short, default_value = "config/gateway.toml", global = true)]
        config: PathBuf,
        /// The credentials file, instead of the one the config names (created if missing).
        #[arg(long, global = true)]
        file: Option<PathBuf>,
    },
    /// Develop `[[rules]]` offline.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
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
enum DevicesCommand {
    /// Add a device, or set a new password for it. The password is read from the terminal
    /// (twice), or from the first line of standard input with --password-stdin; never from
    /// the command line.
    Add {
        device_id: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a device: it can no longer log in (after SIGHUP, for a running gateway).
    Remove { device_id: String },
    /// List the devices that have a password.
    List,
    /// Add or update many devices: standard input has one `device_id password` per line.
    Import,
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Run the config's rules over a file of events (JSON lines, as devices publish them) and
    /// print the derived records as JSON lines; a summary goes to stderr. Exit 65 if some
    /// lines were not events.
    Test {
        #[arg(long, short, default_value = "config/gateway.toml")]
        config: PathBuf,
        /// The events; `-` for standard input.
        #[arg(long)]
        input: PathBuf,
    },
}

#[derive(Subcommand)]
enum SpoolCommand {
    /// The sequence state per device session: highest seq, the de-duplication window (seqs it
    /// vouches for, of its width), last seen, events stored below the window (marked
    /// possible-duplicate) and seqs reused with another time. Lanes written for a device by
    /// another identity show it in brackets. With
    /// --reset DEVICE (gateway stopped), forget a device's state so its next events are stored
    /// whatever their seq.
    Devices {
        #[arg(long)]
        reset: Option<String>,
    },
    /// Records Kafka refused for good (too large, invalid timestamp, topic not authorised),
    /// moved aside with the reason. With --requeue ID or --drop ID (gateway stopped), put one
    /// back at the end of the queue, or delete it.
    Quarantine {
        #[arg(long, conflicts_with = "drop")]
        requeue: Option<i64>,
        #[arg(long)]
        drop: Option<i64>,
    },
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
    /// Commands from Kafka waiting for their device (or its answer), as JSON lines in queue
    /// order: device, command id, name, when queued, delivered and due to expire, and the
    /// command as the device gets it. Safe while the gateway runs.
    Commands {
        #[arg(long)]
        device: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Run SQLite's integrity check; exit 0 if healthy, 65 if corrupt.
    Verify,
    /// Move a corrupt spool aside and salvage its readable rows (gateway stopped).
    Salvage,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt().with_env_filter(
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
    );
    match cli.log_format {
        // One event, one line, whatever a device put in a field.
        LogFormat::Text => logs
            .with_writer(|| tributary_gateway::logline::OneLine(std::io::stderr()))
            .init(),
        LogFormat::Json => logs
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .init(),
    }
    match cli.command {
        Command::PrintConfig => {
            print!("{DEFAULT_CONFIG_TOML}");
            ExitCode::SUCCESS
        }
        Command::CheckConfig { config } => match Config::load(&config).and_then(|c| {
            // The files the config names (certificates, credentials) must load too.
            Authority::load(c.identity())
                .map_err(|e| tributary_gateway::config::ConfigError::Files(e.to_string()))
        }) {
            Ok(_) => {
                println!("{}: valid", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EX_USAGE)
            }
        },
        Command::Devices {
            command,
            config,
            file,
        } => {
            let file = match file {
                Some(f) => f,
                None => match Config::load(&config).map(|c| c.auth.credentials) {
                    Ok(Some(f)) => f,
                    Ok(None) => {
                        eprintln!(
                            "error: {} sets no auth.credentials; name the file with --file",
                            config.display()
                        );
                        return ExitCode::from(EX_USAGE);
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(EX_USAGE);
                    }
                },
            };
            match devices_tool(&command, &file) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {}: {e:#}", file.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Rules {
            command: RulesCommand::Test { config, input },
        } => rules_test(&config, &input),
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
            let config_path = config;
            let config = match Config::load(&config_path) {
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
            let authority = match Authority::load(config.identity()) {
                Ok(a) => std::sync::Arc::new(a),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            match run(config, config_path, authority) {
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

fn devices_tool(command: &DevicesCommand, file: &Path) -> anyhow::Result<ExitCode> {
    use tributary_gateway::identity::Credentials;
    let load = || -> anyhow::Result<Credentials> {
        if file.exists() {
            Ok(Credentials::load(file)?)
        } else {
            Ok(Credentials::default())
        }
    };
    match command {
        DevicesCommand::Add {
            device_id,
            password_stdin,
        } => {
            let password = if *password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                line.trim_end_matches(['\n', '\r']).to_owned()
            } else {
                let first = rpassword::prompt_password(format!("Password for {device_id}: "))?;
                let again = rpassword::prompt_password("Again: ")?;
                if first != again {
                    anyhow::bail!("the passwords differ; nothing changed");
                }
                first
            };
            let mut creds = load()?;
            creds.set(device_id, &password)?;
            creds.save(file)?;
            println!("{device_id}: password set in {}", file.display());
        }
        DevicesCommand::Remove { device_id } => {
            let mut creds = load()?;
            if !creds.remove(device_id) {
                eprintln!("{device_id}: not in {}", file.display());
                return Ok(ExitCode::FAILURE);
            }
            creds.save(file)?;
            println!("{device_id}: removed from {}", file.display());
        }
        DevicesCommand::List => {
            for id in load()?.devices() {
                println!("{id}");
            }
        }
        DevicesCommand::Import => {
            let mut creds = load()?;
            let mut pairs = Vec::new();
            for (i, line) in std::io::stdin().lines().enumerate() {
                let line = line?;
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((id, password)) = line.split_once(char::is_whitespace) else {
                    anyhow::bail!("line {}: not `device_id password`; nothing changed", i + 1);
                };
                pairs.push((id.to_owned(), password.trim().to_owned()));
            }
            creds.set_many(&pairs)?;
            creds.save(file)?;
            println!("{} devices set in {}", pairs.len(), file.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn spool_tool(command: &SpoolCommand, path: &Path) -> anyhow::Result<ExitCode> {
    use tributary_spool::tools;
    match command {
        SpoolCommand::Quarantine { requeue, drop } => {
            let release = requeue.map(|id| (id, true)).or(drop.map(|id| (id, false)));
            let Some((id, back)) = release else {
                for q in tools::quarantined(path)? {
                    let mut line = tools::json_line(&q.row);
                    if let Some(obj) = line.as_object_mut() {
                        obj.insert("reason".into(), q.reason.into());
                        obj.insert("quarantined_ms".into(), q.quarantined_ms.into());
                    }
                    println!("{line}");
                }
                return Ok(ExitCode::SUCCESS);
            };
            if !tools::release(path, id, back)? {
                eprintln!("no quarantined record {id}");
                return Ok(ExitCode::FAILURE);
            }
            let done = if back {
                "requeued at the end of the queue"
            } else {
                "dropped"
            };
            println!("{id}: {done}");
        }
        SpoolCommand::Devices {
            reset: Some(device),
        } => {
            let n = tools::reset_device(path, device)?;
            println!("{device}: {n} sessions forgotten");
        }
        SpoolCommand::Devices { reset: None } => {
            let now = tributary_common::clock::now_ms();
            println!(
                "{:<32} {:>16} {:>20} {:>11} {:>14} {:>9} {:>7}",
                "device", "session", "max seq", "window", "last seen s", "unvouched", "reused"
            );
            for (lane, s) in tools::devices(path)? {
                let device = match tributary_spool::seqs::split_lane(&lane) {
                    (device, None) => device.to_owned(),
                    (device, Some(writer)) => format!("{device} [{writer}]"),
                };
                println!(
                    "{:<32} {:>16x} {:>20} {:>11} {:>14.1} {:>9} {:>7}",
                    device,
                    s.id,
                    s.max_seq(),
                    format!("{}/{}", s.window.marked(), s.window.width()),
                    (now - s.last_seen_ms).max(0) as f64 / 1000.0,
                    s.unvouched,
                    s.regressions
                );
            }
        }
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
        SpoolCommand::Commands { device, limit } => {
            for c in tools::commands(path, device.as_deref(), *limit)? {
                let command = serde_json::from_slice::<serde_json::Value>(&c.body)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&c.body).into_owned().into());
                let line = serde_json::json!({
                    "device_id": c.device,
                    "command_id": c.command_id,
                    "name": c.name,
                    "queued_ms": c.received_ms,
                    "delivered_ms": c.delivered_ms,
                    "expires_ms": c.expires_ms,
                    "command": command,
                });
                println!("{line}");
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

fn print_stats(path: &Path, stats: &tributary_spool::SpoolStats) {
    let now = tributary_common::clock::now_ms();
    let age = |ms: Option<i64>| {
        ms.map(|t| format!("{:.1}", (now - t).max(0) as f64 / 1000.0))
            .unwrap_or_else(|| "-".into())
    };
    println!("spool {}", path.display());
    println!(
        "{:<32} {:>10} {:>12} {:>14} {:>10} {:>10} {:>11}",
        "topic", "rows", "bytes", "oldest age s", "dropped", "expired", "quarantined"
    );
    let mut topics: std::collections::BTreeSet<&String> = stats.topics.keys().collect();
    topics.extend(stats.discarded.keys());
    for topic in topics {
        let t = stats.topics.get(topic).cloned().unwrap_or_default();
        let d = stats.discarded.get(topic);
        let count = |reason: &str| d.and_then(|m| m.get(reason)).copied().unwrap_or(0);
        println!(
            "{:<32} {:>10} {:>12} {:>14} {:>10} {:>10} {:>11}",
            topic,
            t.rows,
            t.bytes,
            age(t.oldest_received_ms),
            count(tributary_spool::DROPPED_FULL),
            count(tributary_spool::EXPIRED),
            count(tributary_spool::QUARANTINED),
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

fn run(
    config: Config,
    config_path: PathBuf,
    authority: std::sync::Arc<Authority>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let stop = CancellationToken::new();
        tributary_gateway::shutdown::cancel_on_signal(stop.clone());
        tributary_gateway::reload::reload_on_hangup(config_path, authority.clone());
        let summary = tributary_gateway::run_with(config, authority, stop).await?;
        println!("{summary}");
        anyhow::Ok(())
    })?;
    // rumqttd's threads have no shutdown API; leaving the runtime ends the process.
    Ok(())
}

/// `tributary rules test`.
fn rules_test(config: &std::path::Path, input: &std::path::Path) -> ExitCode {
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let reader: Box<dyn std::io::BufRead> = if input == std::path::Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(input) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => {
                eprintln!("error: {}: {e}", input.display());
                return ExitCode::from(66);
            }
        }
    };
    let stdout = std::io::stdout().lock();
    match tributary_gateway::route::rules::offline::run(
        &config.rules,
        config.routes,
        reader,
        stdout,
    ) {
        Ok(summary) => {
            for (line, why) in &summary.bad_lines {
                eprintln!("{}:{line}: not an event: {why}", input.display());
            }
            eprintln!(
                "{} events, {} derived, {} duplicates skipped, {} late, {} lines not events",
                summary.events,
                summary.derived,
                summary.duplicates,
                summary.late,
                summary.bad_lines.len()
            );
            if summary.bad_lines.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(65)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
