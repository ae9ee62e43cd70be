//! The `echelon` command line: argument parsing (clap derive) and dispatch to each command.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error (clap's own).

pub mod mock_upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Echelon: one reliable OpenAI-compatible service over many LLM keys, providers and servers.
#[derive(Debug, Parser)]
#[command(
    name = "echelon",
    version,
    about,
    after_help = "Examples:\n  echelon serve --config configs\n  echelon mock-upstream --listen 127.0.0.1:9000 --faults latency-20ms"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    #[command(after_help = "Example:\n  echelon serve --config configs --listen 127.0.0.1:8080")]
    Serve {
        /// The configuration folder (holds gateway.toml and llms/).
        #[arg(long, default_value = "configs")]
        config: PathBuf,
        /// Overrides [server] listen.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run a fault-injecting OpenAI-compatible fake upstream, for tests, demos and benchmarks.
    #[command(name = "mock-upstream", after_help = mock_upstream::AFTER_HELP)]
    MockUpstream(mock_upstream::Args),
}

/// Runs the parsed command line on a fresh runtime.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve { config, listen } => runtime().and_then(|rt| {
            rt.block_on(crate::app::serve(crate::app::ServeOptions {
                config_dir: config,
                listen,
            }))
        }),
        Command::MockUpstream(args) => {
            runtime().and_then(|rt| rt.block_on(mock_upstream::run(args)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
