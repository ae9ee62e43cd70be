//! The `echelon` binary: parses the command line and hands over to the composition root.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser;
use echelon_interfaces::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` installs logging itself, as gateway.toml's [telemetry] says. The demo draws its own
    // live view on stdout, so the gateway inside it only speaks up for errors; the other commands
    // print their results and log only warnings. RUST_LOG overrides these defaults.
    let default_filter = match cli.command {
        Command::Serve { .. } => None,
        Command::Demo { .. } => Some("error"),
        _ => Some("warn"),
    };
    if let Some(default_filter) = default_filter {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| default_filter.into()),
            )
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    echelon_interfaces::cli::run(cli)
}
