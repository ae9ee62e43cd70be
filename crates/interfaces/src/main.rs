//! The `echelon` binary: parses the command line and hands over to the composition root.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let config_dir = std::env::args_os()
        .nth(2)
        .map_or_else(|| PathBuf::from("configs"), PathBuf::from);
    runtime.block_on(echelon_interfaces::app::serve(
        echelon_interfaces::app::ServeOptions {
            config_dir,
            listen: None,
        },
    ))
}
