//! The `echelon` command line: argument parsing (clap derive) and dispatch to each command.
//!
//! Exit codes: 0 success, 1 failure (an invalid configuration, an unknown name, a failed check,
//! an unreachable gateway), 2 usage error (clap's own).

pub mod admin_client;
pub mod config;
pub mod doctor;
pub mod import;
pub mod mock_upstream;
pub mod route;
pub mod status;
pub mod table;
pub mod view;

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use echelon_config::ValidationMode;

const AFTER_HELP: &str = "\
Examples:
  echelon demo                          fake upstreams + the gateway + traffic, live (start here)
  echelon serve --config configs        run the gateway on http://127.0.0.1:8080
  echelon config check                  validate the configuration tree
  echelon config import litellm config.yaml --out configs
                                        a LiteLLM proxy config as an Echelon tree, with a report
  echelon route explain chat            which upstreams a request for `chat` would try, and why
  echelon status                        a running gateway's pools, breakers and cooldowns
  echelon doctor                        configuration, environment, upstreams and listen address";

/// The `echelon` command line.
#[derive(Debug, Parser)]
#[command(
    name = "echelon",
    version,
    about = "An OpenAI-compatible LLM gateway: pools of keys and servers, tiers of fallback, circuit breakers",
    after_help = AFTER_HELP
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
    /// Watch the gateway at work, offline: three fake upstreams (healthy, flaky, rate limited),
    /// the gateway in front of them, and live traffic.
    #[command(after_help = "\
Examples:
  echelon demo                    20 seconds with a live view
  echelon demo --duration 60      a minute
  echelon demo | cat              plain progress lines instead of the live view")]
    Demo {
        /// Seconds of traffic.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
        duration: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=64))]
        clients: u16,
    },
    /// Check, print or import the configuration tree.
    Config {
        /// What to do with it.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Explain routing decisions.
    Route {
        /// What to explain.
        #[command(subcommand)]
        command: RouteCommand,
    },
    /// Show a running gateway's pools, instances and task groups.
    #[command(after_help = "\
Examples:
  echelon status
  echelon status --url http://10.0.0.5:8080 --admin-key \"$ECHELON_ADMIN_KEY\"")]
    Status {
        /// The gateway's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The admin key (`[auth] admin_key`); not needed on loopback when none is configured.
        #[arg(long, env = "ECHELON_ADMIN_KEY", hide_env_values = true)]
        admin_key: Option<String>,
    },
    /// Check the configuration, the environment, each upstream and the listen address, with a
    /// remedy for every problem.
    #[command(after_help = "\
Examples:
  echelon doctor
  echelon doctor --config configs/examples/three-echelon --probe-timeout 5s")]
    Doctor(doctor::Args),
    /// Run a fault-injecting OpenAI-compatible fake upstream, for tests, demos and benchmarks.
    #[command(name = "mock-upstream", after_help = mock_upstream::AFTER_HELP)]
    MockUpstream(mock_upstream::Args),
}

/// `echelon config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the tree; print every problem with file, line, key and a suggestion.
    #[command(after_help = "\
Examples:
  echelon config check
  echelon config check --config configs/examples/three-echelon --lenient")]
    Check {
        /// The configuration folder (holds gateway.toml and llms/).
        #[arg(long, default_value = "configs")]
        config: PathBuf,
        /// Refuse the tree on any error (overrides the registry's `validation`).
        #[arg(long, conflicts_with = "lenient")]
        strict: bool,
        /// Drop broken entries with warnings and load the rest.
        #[arg(long)]
        lenient: bool,
    },
    /// Convert another gateway's configuration into a commented configs/ tree.
    Import {
        /// Which gateway's configuration.
        #[command(subcommand)]
        from: ImportCommand,
    },
    /// Print what the tree resolves to; secrets print as [redacted].
    #[command(after_help = "\
Examples:
  echelon config show
  echelon config show --resolved > resolved.json")]
    Show {
        /// The configuration folder (holds gateway.toml and llms/).
        #[arg(long, default_value = "configs")]
        config: PathBuf,
        /// Every value after inheritance, variables and defaults, as JSON.
        #[arg(long)]
        resolved: bool,
    },
}

/// `echelon config import ...`.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// A LiteLLM proxy config.yaml: each model_name becomes a wrapper over a task group (one
    /// echelon per `order`, then its fallbacks), each provider and api_base a provider file.
    /// Prints what mapped and what did not, with YAML lines; exit 0 when the tree was written,
    /// 1 when the input is not a LiteLLM config (nothing written).
    #[command(after_help = "\
Examples:
  echelon config import litellm config.yaml --out configs
  echelon config import litellm litellm/config.yaml --out /etc/echelon --force
  echelon config check --config configs            then validate it (with its variables set)")]
    Litellm(import::LitellmArgs),
}

/// `echelon route ...`.
#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// The attempt plan for a name: stages in order, each candidate and why it is in or out.
    #[command(after_help = "\
Examples:
  echelon route explain chat                                  from configs/, offline
  echelon route explain pool:fast --config configs
  echelon route explain chat --url http://127.0.0.1:8080      live state of a running gateway")]
    Explain {
        /// A wrapper, `group:NAME`, `group:NAME.echelonN`, `pool:NAME` or `provider/model`.
        model: String,
        /// The configuration folder, for the offline plan.
        #[arg(long, default_value = "configs", conflicts_with = "url")]
        config: PathBuf,
        /// Ask a running gateway instead (its live health, breakers and cooldowns).
        #[arg(long)]
        url: Option<String>,
        /// The admin key, with --url.
        #[arg(long, env = "ECHELON_ADMIN_KEY", hide_env_values = true)]
        admin_key: Option<String>,
    },
}

/// Parses a duration as configuration files write it (`3s`, `500ms`, `1.5s`, `2m`), or a plain
/// number of seconds, as command lines often do.
///
/// # Errors
/// A message for clap when the text is not a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let seconds = !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || c == '.');
    let written = if seconds {
        format!("{text}s")
    } else {
        text.to_owned()
    };
    echelon_config::parse_duration(&written).map_err(|help| format!("`{text}`: {help}"))
}

/// Runs the parsed command line on a fresh runtime.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve { config, listen } => runtime().and_then(|rt| {
            rt.block_on(crate::app::serve(crate::app::ServeOptions {
                config_dir: config,
                listen,
            }))
            .map(|()| ExitCode::SUCCESS)
        }),
        Command::Demo { duration, clients } => run_demo(duration, clients),
        Command::Config {
            command:
                ConfigCommand::Check {
                    config,
                    strict,
                    lenient,
                },
        } => {
            let mode = match (strict, lenient) {
                (true, _) => Some(ValidationMode::Strict),
                (_, true) => Some(ValidationMode::Lenient),
                _ => None,
            };
            Ok(config::check(&config, mode))
        }
        Command::Config {
            command: ConfigCommand::Show { config, resolved },
        } => Ok(config::show(&config, resolved)),
        Command::Config {
            command:
                ConfigCommand::Import {
                    from: ImportCommand::Litellm(args),
                },
        } => import::litellm(&args),
        Command::Route {
            command:
                RouteCommand::Explain {
                    model,
                    config,
                    url,
                    admin_key,
                },
        } => runtime().and_then(|rt| match url {
            Some(url) => rt.block_on(route::explain_remote(&model, &url, admin_key)),
            // Building the engine needs a runtime context (its clock and clients), not a server.
            None => rt.block_on(async { route::explain_offline(&model, &config) }),
        }),
        Command::Status { url, admin_key } => {
            runtime().and_then(|rt| rt.block_on(status::run(&url, admin_key)))
        }
        Command::Doctor(args) => runtime().map(|rt| rt.block_on(doctor::run(args))),
        Command::MockUpstream(args) => runtime().and_then(|rt| {
            rt.block_on(mock_upstream::run(args))
                .map(|()| ExitCode::SUCCESS)
        }),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_demo(duration: u64, clients: u16) -> anyhow::Result<ExitCode> {
    let options = crate::demo::DemoOptions {
        duration: Duration::from_secs(duration),
        clients: usize::from(clients),
        live: std::io::stdout().is_terminal(),
    };
    if !options.live {
        println!(
            "echelon demo: {} clients for {duration}s against three fake upstreams (healthy: {}; flaky: {}; rate limited: {})",
            options.clients,
            crate::demo::HEALTHY_FAULTS,
            crate::demo::FLAKY_FAULTS,
            crate::demo::LIMITED_FAULTS
        );
    }
    let rt = runtime()?;
    let summary = rt.block_on(crate::demo::run(options, crate::app::shutdown_signal()))?;
    print!("{}", summary.render());
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("4"), Ok(Duration::from_secs(4)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("3 hours").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
