//! `tributary`: the gateway binary. Parses the command line, sets up logging, calls the library.

use std::path::PathBuf;
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
        Command::Run { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EX_USAGE);
                }
            };
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
