//! `echelon mock-upstream`: the fault-injecting fake upstream as a standalone server.

use std::net::SocketAddr;
use std::time::Duration;

use echelon_fake_upstream::{FakeUpstream, FakeUpstreamOptions, Faults};

/// Extra help: the fault grammar in short.
pub const AFTER_HELP: &str = "\
Faults apply to every request with --faults, or per request through the model name
(`\"model\": \"gpt-4o+cut-after-3\"`); tokens join with `+`:
  latency-<dur>  hang  reset  fail-<status>  fail-for-<dur>  fail-first-<n>  error-rate-<pct>
  quota-<n>-per-<dur>
  429-retry-<s>  429-retry-ms-<ms>  429-retry-date-<s>  429-reset-<dur>
  context-length  content-filter  slow-first-token-<dur>  chunk-delay-<dur>  chunks-<n>
  cut-after-<n>  end-after-<n>  stall-after-<n>  malformed-after-<n>  error-after-<n>  no-done
  refuse-prefill
It also speaks Anthropic (POST /v1/messages) and Gemini (POST /v1beta/models/{model}:
streamGenerateContent, where `__` joins the tokens: `gemini__cut-after-3`).

Example:
  echelon mock-upstream --listen 127.0.0.1:9000 --faults latency-50ms+error-rate-10";

/// Arguments of `mock-upstream`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Faults applied to every request, e.g. `latency-20ms+error-rate-5`.
    #[arg(long, default_value = "ok")]
    pub faults: Faults,
    /// A fixed reply instead of echoing the last user message.
    #[arg(long)]
    pub reply: Option<String>,
    /// Most connections served at once.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Seed of the error-rate generator.
    #[arg(long, default_value_t = 0x5eed)]
    pub seed: u64,
}

/// Serves until Ctrl-C or SIGTERM.
///
/// # Errors
/// When the address cannot be bound.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let options = FakeUpstreamOptions {
        faults: args.faults,
        reply: args.reply,
        seed: args.seed,
        max_connections: args.max_connections,
        shutdown_grace: Duration::from_secs(1),
        ..FakeUpstreamOptions::default()
    };
    let upstream = FakeUpstream::start(args.listen, options)
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot listen on {}: {e}; pass --listen ADDR", args.listen)
        })?;
    println!("mock upstream listening on {}", upstream.base_url());
    crate::app::shutdown_signal().await;
    upstream.stop().await;
    Ok(())
}
