//! The `echelon` binary: parses the command line and hands over to the composition root.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    echelon_interfaces::cli::run(echelon_interfaces::cli::Cli::parse())
}
