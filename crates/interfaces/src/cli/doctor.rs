//! `echelon doctor`: checks what a gateway needs before it can serve — the configuration, the
//! environment variables it references, each provider's upstream (one cheap probe), the shared
//! state (Redis answers PING) and the listen address — and prints each problem with a remedy.

use echelon_domain::time::DurationText;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use echelon_application::backends::BackendFactory;
use echelon_config::{DiagnosticKind, Env, LoadedConfig, ProcessEnv, StateBackend, ValidationMode};
use echelon_domain::error::{ErrorClass, UpstreamError};
use echelon_domain::name::InstanceId;
use echelon_domain::shared::SharedState as _;
use echelon_domain::spec::{ProviderKind, ProviderSpec, Topology};
use echelon_infrastructure::backend_factory::ProviderBackends;
use echelon_infrastructure::provider::endpoint::{Endpoint, endpoint_urls};
use echelon_infrastructure::state::{RedisOptions, RedisState, redacted_url};

use super::config::{counts, display_url, kind_name, load, plural};

/// Arguments of `doctor`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The configuration folder (holds gateway.toml and llms/).
    #[arg(long, default_value = "configs")]
    pub config: PathBuf,
    /// Check this listen address instead of `[server] listen`.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// How long each upstream probe may take, e.g. `3s` or `500ms`.
    #[arg(long, default_value = "3s", value_parser = super::parse_duration)]
    pub probe_timeout: Duration,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fine.
    Ok,
    /// Works, but probably not as intended.
    Warn,
    /// Must be fixed.
    Fail,
}

/// One finding, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How it came out.
    pub verdict: Verdict,
    /// What was found.
    pub text: String,
    /// What to do, for warnings and failures.
    pub remedy: Option<String>,
}

impl Finding {
    fn ok(text: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Ok,
            text: text.into(),
            remedy: None,
        }
    }

    fn warn(text: impl Into<String>, remedy: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Warn,
            text: text.into(),
            remedy: Some(remedy.into()),
        }
    }

    fn fail(text: impl Into<String>, remedy: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Fail,
            text: text.into(),
            remedy: Some(remedy.into()),
        }
    }
}

/// The findings of every section, in order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// `(section title, findings)`.
    pub sections: Vec<(&'static str, Vec<Finding>)>,
}

impl Report {
    /// Failures found.
    pub fn failures(&self) -> usize {
        self.count(Verdict::Fail)
    }

    fn count(&self, verdict: Verdict) -> usize {
        self.sections
            .iter()
            .flat_map(|(_, f)| f)
            .filter(|f| f.verdict == verdict)
            .count()
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (title, findings) in &self.sections {
            let _ = writeln!(out, "\n{title}");
            for finding in findings {
                let tag = match finding.verdict {
                    Verdict::Ok => "ok",
                    Verdict::Warn => "warn",
                    Verdict::Fail => "FAIL",
                };
                let text = finding.text.replace('\n', "\n        ");
                let _ = writeln!(out, "  {tag:<4}  {text}");
                if let Some(remedy) = &finding.remedy {
                    let _ = writeln!(out, "        fix: {remedy}");
                }
            }
        }
        let (fails, warns) = (self.failures(), self.count(Verdict::Warn));
        let _ = if fails == 0 && warns == 0 {
            writeln!(out, "\nno problems found")
        } else {
            writeln!(
                out,
                "\n{} to fix, {}",
                plural(fails, "problem"),
                plural(warns, "warning")
            )
        };
        out
    }
}

/// Runs every check and prints the report; exit 1 when a check failed.
pub async fn run(args: Args) -> ExitCode {
    let report = diagnose(&args).await;
    println!("echelon doctor: {}", args.config.display());
    print!("{}", report.render());
    if report.failures() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs every check.
pub async fn diagnose(args: &Args) -> Report {
    let mut report = Report::default();
    let (config_findings, env_findings, config) = check_config(&args.config);
    report.sections.push(("configuration", config_findings));
    let mut environment = env_findings;
    environment.extend(check_overrides(&ProcessEnv));
    if let Some(config) = &config {
        environment.extend(check_exposure(config, args.listen));
    }
    report.sections.push(("environment", environment));
    let upstreams = match &config {
        Some(config) => check_upstreams(&config.topology, args.probe_timeout).await,
        None => vec![Finding::warn(
            "skipped: no part of the configuration loads",
            "fix the configuration problems above, then run `echelon doctor` again",
        )],
    };
    report.sections.push(("upstreams", upstreams));
    if let Some(config) = &config {
        report.sections.push((
            "shared state",
            check_shared_state(&config.gateway.state).await,
        ));
    }
    let listen = args
        .listen
        .or_else(|| config.as_ref().map(|c| c.gateway.server.listen));
    let listen_findings = match listen {
        Some(addr) => vec![check_listen(addr)],
        None => vec![Finding::warn(
            "skipped: the listen address comes from gateway.toml, which does not load",
            "fix gateway.toml, or pass --listen ADDR to check an address",
        )],
    };
    report.sections.push(("listen address", listen_findings));
    report
}

/// Whether Redis answers, when `[state] backend = "redis"`: PING within the configured timeout.
/// The URL is shown without its password.
async fn check_shared_state(state: &StateBackend) -> Vec<Finding> {
    let StateBackend::Redis(settings) = state else {
        return vec![Finding::ok(
            "backend = \"memory\": limits, cooldowns and breakers apply per replica",
        )];
    };
    let shown = redacted_url(settings.url.expose());
    let store = match RedisState::new(&RedisOptions {
        url: settings.url.clone(),
        key_prefix: settings.key_prefix.clone(),
        timeout: settings.timeout,
    }) {
        Ok(store) => store,
        Err(error) => {
            return vec![Finding::fail(
                format!("Redis {shown}: {error}"),
                "fix [state] redis_url in gateway.toml",
            )];
        }
    };
    // A first connection may take a little longer than a call on an open one.
    match tokio::time::timeout(settings.timeout * 4, store.ping()).await {
        Ok(Ok(())) => vec![Finding::ok(format!(
            "Redis {shown} answers (key prefix {:?}, fail mode {})",
            settings.key_prefix,
            settings.fail_mode.as_str()
        ))],
        Ok(Err(error)) => vec![Finding::fail(
            format!("Redis {shown}: {}", error.message),
            "start Redis (redis-server) or fix [state] redis_url; while Redis is unreachable each replica falls back to local state",
        )],
        Err(_) => vec![Finding::fail(
            format!("Redis {shown} did not answer PING in time"),
            "check that Redis runs and is reachable, or raise [state] timeout",
        )],
    }
}

/// Loads the tree strictly; when that fails, loads what it can leniently so that the other
/// checks still run. Unset variables are reported in the environment section.
fn check_config(dir: &Path) -> (Vec<Finding>, Vec<Finding>, Option<LoadedConfig>) {
    let mut findings = Vec::new();
    let mut environment = Vec::new();
    match load(dir, None) {
        Ok(config) => {
            findings.push(Finding::ok(format!(
                "loads: {}; {}",
                counts(&config.topology),
                plural(config.warnings.len(), "warning")
            )));
            for warning in &config.warnings {
                findings.push(Finding::warn(
                    warning.to_string(),
                    "see the help line above; `echelon config check` lists the same",
                ));
            }
            environment.push(Finding::ok(
                "every ${VAR} the configuration references is set",
            ));
            (findings, environment, Some(config))
        }
        Err(report) => {
            for error in &report.errors {
                if error.kind == DiagnosticKind::UnsetVariable {
                    let variable = error.variable.as_deref().unwrap_or("?");
                    let place = error
                        .location
                        .as_ref()
                        .map(|l| format!(" at {l}"))
                        .unwrap_or_default();
                    environment.push(Finding::fail(
                        format!("`{variable}` is not set (referenced{place}, key {})", error.key),
                        format!(
                            "export {variable}=… before starting echelon, or give it a default in the file: ${{{variable}:default}}"
                        ),
                    ));
                } else {
                    findings.push(Finding::fail(
                        error.to_string(),
                        "edit the file at the location shown (`echelon config check` prints the same report)",
                    ));
                }
            }
            if findings.is_empty() {
                findings.push(Finding::fail(
                    "the configuration is refused because of unset environment variables",
                    "see the environment section",
                ));
            }
            let lenient = load(dir, Some(ValidationMode::Lenient)).ok();
            if let Some(config) = &lenient {
                findings.push(Finding::warn(
                    format!(
                        "in lenient mode what remains loads: {}",
                        counts(&config.topology)
                    ),
                    "the checks below use that part; the gateway refuses the tree in strict mode",
                ));
            }
            (findings, environment, lenient)
        }
    }
}

/// `ECHELON_<SECTION>__<KEY>` variables that override gateway.toml: names only, never values.
fn check_overrides(env: &dyn Env) -> Vec<Finding> {
    env.vars_with_prefix("ECHELON_")
        .into_iter()
        .filter(|(name, _)| name.contains("__"))
        .map(|(name, _)| Finding::ok(format!("{name} overrides a gateway.toml setting")))
        .collect()
}

/// A gateway reachable from other machines without client keys spends quota for anyone.
fn check_exposure(config: &LoadedConfig, listen: Option<SocketAddr>) -> Vec<Finding> {
    let addr = listen.unwrap_or(config.gateway.server.listen);
    let mut findings = Vec::new();
    if !addr.ip().is_loopback() && config.gateway.auth.api_keys.is_empty() {
        findings.push(Finding::warn(
            format!("the gateway listens on {addr} with no client API keys"),
            "set [auth] api_keys = [\"${ECHELON_CLIENT_KEY}\"] in gateway.toml, or listen on 127.0.0.1",
        ));
    }
    if !addr.ip().is_loopback() && config.gateway.auth.admin_key.is_none() {
        findings.push(Finding::warn(
            format!("no admin key: the admin API on {addr} answers loopback clients only"),
            "set [auth] admin_key = \"${ECHELON_ADMIN_KEY}\" in gateway.toml to use `echelon status` from elsewhere",
        ));
    }
    findings
}

/// Probes one instance of every provider, all at once, each within `timeout`.
async fn check_upstreams(topology: &Topology, timeout: Duration) -> Vec<Finding> {
    let probes = topology.providers.values().map(|provider| {
        let model = topology
            .models
            .keys()
            .find(|m| m.provider == provider.name)
            .cloned();
        async move {
            match model {
                Some(model) => probe(provider, InstanceId::new(model, 0), timeout).await,
                None => Finding::warn(
                    format!("{}: no models, nothing to probe", provider.name),
                    "add a [models.<id>] table to the provider's file, or remove the provider",
                ),
            }
        }
    });
    let mut findings = futures_util::future::join_all(probes).await;
    if findings.is_empty() {
        findings.push(Finding::warn(
            "no providers configured",
            "add a file under llms/providers/ (docs/configuration.md#providers)",
        ));
    }
    findings
}

async fn probe(provider: &ProviderSpec, instance: InstanceId, timeout: Duration) -> Finding {
    let name = format!(
        "{} ({}, {})",
        provider.name,
        kind_name(provider.kind),
        display_url(&provider.base_url)
    );
    let file = format!(
        "the `{}` provider file under llms/providers/",
        provider.name
    );
    let backend = match ProviderBackends.build(provider) {
        Ok(backend) => backend,
        Err(error) => {
            return Finding::fail(
                format!("{name}: no client can be built: {}", error.reason),
                format!("check base_url and headers in {file}"),
            );
        }
    };
    let probed = endpoint_urls(provider)
        .unwrap_or_default()
        .into_iter()
        .find(|(endpoint, _)| *endpoint == Endpoint::Models)
        .map_or_else(
            || "the in-process mock".to_owned(),
            |(_, url)| format!("GET {url}"),
        );
    let started = Instant::now();
    let outcome = tokio::time::timeout(timeout, backend.probe_boxed(&instance)).await;
    let took = DurationText::approx(started.elapsed()).to_string();
    match outcome {
        Ok(Ok(())) if provider.kind == ProviderKind::Mock => {
            Finding::ok(format!("{name}: in-process mock, answered in {took}"))
        }
        Ok(Ok(())) => Finding::ok(format!(
            "{name}: reachable, {probed} (probe of {instance}) answered in {took}"
        )),
        Err(_) => Finding::fail(
            format!(
                "{name}: {probed}: no answer within {}",
                DurationText(timeout)
            ),
            format!(
                "is the server up and reachable from here? check base_url in {file}; a slow upstream needs a larger --probe-timeout"
            ),
        ),
        Ok(Err(error)) => probe_failure(&name, &file, &probed, provider, &instance, &error),
    }
}

fn probe_failure(
    name: &str,
    file: &str,
    probed: &str,
    provider: &ProviderSpec,
    instance: &InstanceId,
    error: &UpstreamError,
) -> Finding {
    let status = error.status.map(|s| format!(" ({s})")).unwrap_or_default();
    let what = format!(
        "{name}: {probed} (probe of {instance}) failed{status}: {}",
        error.message
    );
    if error.status == Some(404) {
        return Finding::fail(what, not_found_remedy(provider, file));
    }
    match error.class {
        ErrorClass::RateLimited => Finding::warn(
            format!("{name}: reachable, but rate limited{status}"),
            "the key is over its quota now; the gateway cools it down and uses other instances",
        ),
        ErrorClass::Auth => Finding::fail(
            what,
            format!(
                "the upstream refused the key: check api_key/api_keys in {file} and the variables they use"
            ),
        ),
        ErrorClass::Connect => Finding::fail(
            what,
            format!(
                "nothing answers at base_url: start the server, or fix base_url in {file} (and check proxies and firewalls)"
            ),
        ),
        ErrorClass::Timeout => Finding::fail(
            what,
            format!("the upstream is too slow or unreachable: check base_url in {file}"),
        ),
        ErrorClass::InvalidRequest | ErrorClass::ContentFilter | ErrorClass::ContextLength => {
            Finding::fail(
                what,
                format!(
                    "the upstream does not accept the probe (GET /models): check base_url and kind in {file}"
                ),
            )
        }
        ErrorClass::Overloaded | ErrorClass::Server | ErrorClass::ClientGone => Finding::fail(
            what,
            "the upstream answers with server errors; check its status page or logs, the gateway will fail over meanwhile",
        ),
    }
}

/// What to change when the models listing is not where the base URL says: the server's API is
/// mounted elsewhere (docs/configuration.md#base-url, one rule per kind).
fn not_found_remedy(provider: &ProviderSpec, file: &str) -> String {
    let root = display_url(&provider.base_url);
    match provider.kind {
        ProviderKind::Openai => {
            let versioned = root.rsplit('/').next().is_some_and(|last| {
                last.len() > 1
                    && last.starts_with('v')
                    && last[1..].bytes().all(|b| b.is_ascii_digit())
            });
            if versioned {
                format!(
                    "no models listing at this base_url: it must be the API root that /chat/completions and /models are appended to, as the server documents it (\"https://api.openai.com/v1\", Azure \"https://NAME.openai.azure.com/openai/v1\"); fix base_url in {file}"
                )
            } else {
                format!(
                    "OpenAI-compatible servers usually serve their API under /v1: try base_url = \"{root}/v1\" in {file}"
                )
            }
        }
        ProviderKind::Anthropic => format!(
            "no Anthropic API at this base_url: write the server's root or its /v1 root (\"https://api.anthropic.com\" or \"https://api.anthropic.com/v1\"; messages then go to {root}/messages); fix base_url in {file}"
        ),
        ProviderKind::Gemini => format!(
            "no Gemini API at this base_url: write the server's root or its version root (\"https://generativelanguage.googleapis.com\" or \".../v1beta\"; requests then go to {root}/models/MODEL:generateContent); fix base_url in {file}"
        ),
        ProviderKind::Mock => format!("the mock has no URL; check kind in {file}"),
    }
}

/// Whether the gateway could bind `addr` now.
fn check_listen(addr: SocketAddr) -> Finding {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Finding::ok(format!("{addr} is free")),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => Finding::fail(
            format!("{addr} is already in use (another echelon, or another server)"),
            format!(
                "stop the process listening there (`ss -ltnp 'sport = :{}'` shows it), or choose another address: [server] listen in gateway.toml, or `echelon serve --listen ADDR`",
                addr.port()
            ),
        ),
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => Finding::fail(
            format!("{addr} cannot be bound: permission denied"),
            "ports below 1024 need privileges; use a higher port such as 8080",
        ),
        Err(error) => Finding::fail(
            format!("{addr} cannot be bound: {error}"),
            "listen on an address of this machine, e.g. 127.0.0.1:8080 or 0.0.0.0:8080",
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_taken_address_fails_with_a_remedy_and_a_free_one_passes() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let finding = check_listen(addr);
        assert_eq!(finding.verdict, Verdict::Fail);
        assert!(finding.remedy.unwrap().contains("--listen"));
        drop(taken);
        assert_eq!(
            check_listen("127.0.0.1:0".parse().unwrap()).verdict,
            Verdict::Ok
        );
    }

    #[test]
    fn overrides_are_named_without_their_values() {
        let env: BTreeMap<String, String> = [
            ("ECHELON_SERVER__LISTEN".to_owned(), "0.0.0.0:1".to_owned()),
            ("ECHELON_ADMIN_KEY".to_owned(), "sk-canary".to_owned()),
        ]
        .into();
        let findings = check_overrides(&env);
        assert_eq!(findings.len(), 1);
        assert_eq!(
            findings[0].text,
            "ECHELON_SERVER__LISTEN overrides a gateway.toml setting"
        );
    }

    #[test]
    fn the_summary_counts_failures_and_warnings() {
        let report = Report {
            sections: vec![(
                "s",
                vec![
                    Finding::ok("fine"),
                    Finding::warn("meh", "do this"),
                    Finding::fail("bad\nsecond line", "do that"),
                ],
            )],
        };
        assert_eq!(
            report.render(),
            "\ns\n  ok    fine\n  warn  meh\n        fix: do this\n  FAIL  bad\n        second line\n        fix: do that\n\n1 problem to fix, 1 warning\n"
        );
    }
}
