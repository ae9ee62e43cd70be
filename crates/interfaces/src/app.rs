//! The composition root: configuration in, a running gateway out.
//!
//! This is the only place that knows every crate: it loads the configuration tree, builds the
//! provider backends and the request engine, keeps the configuration current (file watcher and
//! `POST /admin/config/reload`), and hands the HTTP server its state.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use echelon_application::alerts::{
    AlertEngine, AlertEngineOptions, AlertNotifier, LogNotifier, Notifiers, ReadingSource,
    SnapshotReadings,
};
use echelon_application::backends::BackendFactory;
use echelon_application::clock::TokioClock;
use echelon_application::gateway::{EngineOptions, Gateway};
use echelon_application::health_check::{HealthCheckOptions, HealthChecker};
use echelon_application::history::{DEFAULT_HISTORY, EventHistory};
use echelon_application::shared_state::{SharedStateOptions, SharedStateSync};
use echelon_application::task::BackgroundTask;
use echelon_config::{
    ConfigReport, GatewaySettings, LoadedConfig, ProcessEnv, RedisSettings, Reload, StateBackend,
};
use echelon_domain::events::{EventSink, FanOut};
use echelon_domain::random::SplitMix64;
use echelon_domain::routing::TableOptions;
use echelon_infrastructure::backend_factory::ProviderBackends;
use echelon_infrastructure::metrics::{Metrics, MetricsOptions};
use echelon_infrastructure::state::{RedisOptions, RedisState};
use echelon_infrastructure::telemetry::{
    self, ExportOptions, LogFormat, SpanEvents, Telemetry, TelemetryError, TelemetryOptions,
};
use echelon_infrastructure::webhook::{WebhookNotifier, WebhookOptions};
use serde::Serialize;

use crate::auth::KeyRing;

/// The outcome of one reload attempt, as `GET /admin/config` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReloadRecord {
    /// Seconds since the Unix epoch.
    pub at_unix: u64,
    /// What started it: `watch`, `admin` or `startup`.
    pub trigger: &'static str,
    /// Whether the new tree is serving.
    pub applied: bool,
    /// The generation serving after this attempt.
    pub generation: u64,
    /// Problems that refused the tree (file, line, key, reason), never secret values.
    pub errors: Vec<String>,
    /// Warnings, including entries dropped in lenient mode.
    pub warnings: Vec<String>,
    /// Settings that changed but are bound at start (`server.listen`, …): the running gateway
    /// keeps its old values until it is restarted.
    pub restart_needed: Vec<&'static str>,
}

/// Reload counters and the last result.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Reloads applied since start.
    pub applied: u64,
    /// Reloads refused since start.
    pub rejected: u64,
    /// The most recent attempt.
    pub last: Option<ReloadRecord>,
}

/// Keeps the running gateway in step with the configuration folder: a valid tree swaps in the
/// routing table and backends, client and admin keys, the request timeout, alert rules and
/// webhook URLs; settings bound at start are reported as needing a restart.
pub struct ConfigControl {
    dir: PathBuf,
    gateway: Arc<Gateway>,
    metrics: Arc<Metrics>,
    keys: Arc<ArcSwap<KeyRing>>,
    operations: Arc<Operations>,
    current: ArcSwap<LoadedConfig>,
    /// The configuration the running gateway was started with.
    started: Arc<LoadedConfig>,
    status: Mutex<ReloadStatus>,
}

impl std::fmt::Debug for ConfigControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigControl")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ConfigControl {
    /// The configuration folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration serving now.
    pub fn current(&self) -> Arc<LoadedConfig> {
        self.current.load_full()
    }

    /// Settings of the serving configuration that differ from those the gateway started with
    /// and only take effect on a restart.
    pub fn restart_needed(&self) -> Vec<&'static str> {
        self.current.load().restart_needed(&self.started)
    }

    /// Reload counters and the last result.
    pub fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Loads the folder again and applies it if valid.
    pub fn reload_from_disk(&self, trigger: &'static str) -> ReloadRecord {
        let result = echelon_config::load(&self.dir, &ProcessEnv);
        self.apply(result, trigger)
    }

    /// Applies a loaded (or refused) tree. An invalid tree, or one whose backends cannot be
    /// built, leaves the serving generation untouched.
    pub fn apply(&self, result: Reload, trigger: &'static str) -> ReloadRecord {
        let record = match result {
            Ok(config) => {
                let warnings = config.warnings.iter().map(ToString::to_string).collect();
                match self.gateway.reload(config.topology.clone()) {
                    Ok(generation) => {
                        self.apply_gateway_settings(&config.gateway);
                        let restart_needed = config.restart_needed(&self.started);
                        self.current.store(Arc::new(config));
                        if restart_needed.is_empty() {
                            tracing::info!(generation, trigger, "configuration reloaded");
                        } else {
                            tracing::warn!(
                                generation,
                                trigger,
                                restart_needed = %restart_needed.join(", "),
                                "configuration reloaded; these settings take effect on the next restart"
                            );
                        }
                        let mut record = record(trigger, true, generation, Vec::new(), warnings);
                        record.restart_needed = restart_needed;
                        record
                    }
                    Err(error) => {
                        tracing::error!(%error, trigger, "configuration rejected: a backend could not be built");
                        record(
                            trigger,
                            false,
                            self.gateway.generation().number,
                            vec![error.to_string()],
                            warnings,
                        )
                    }
                }
            }
            Err(report) => {
                tracing::error!(
                    errors = report.errors.len(),
                    trigger,
                    "configuration rejected; the previous configuration keeps serving:\n{report}"
                );
                record(
                    trigger,
                    false,
                    self.gateway.generation().number,
                    report.errors.iter().map(ToString::to_string).collect(),
                    report.warnings.iter().map(ToString::to_string).collect(),
                )
            }
        };
        self.metrics.record_reload(record.applied);
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if record.applied {
            status.applied += 1;
        } else {
            status.rejected += 1;
        }
        status.last = Some(record.clone());
        record
    }
}

impl ConfigControl {
    /// Applies what a running gateway can take from `gateway.toml` without a restart.
    fn apply_gateway_settings(&self, settings: &GatewaySettings) {
        self.keys.store(Arc::new(key_ring(settings)));
        self.gateway
            .set_request_timeout(settings.server.request_timeout);
        if let Some(engine) = self.operations.alerts.get() {
            engine.set_evaluation_interval(settings.alerts.evaluation_interval);
            if engine.rules() != settings.alerts.rules {
                let now = echelon_domain::time::Clock::now(self.gateway.clock());
                engine.set_rules(&settings.alerts.rules, now);
            }
        }
        if let Some(webhooks) = self.operations.webhooks.get() {
            webhooks.set_urls(settings.alerts.webhooks.clone());
        }
    }
}

fn record(
    trigger: &'static str,
    applied: bool,
    generation: u64,
    errors: Vec<String>,
    warnings: Vec<String>,
) -> ReloadRecord {
    ReloadRecord {
        at_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        trigger,
        applied,
        generation,
        errors,
        warnings,
        restart_needed: Vec::new(),
    }
}

/// The client and admin keys of a configuration.
pub fn key_ring(settings: &GatewaySettings) -> KeyRing {
    KeyRing::new(
        settings.auth.api_keys.clone(),
        settings.auth.admin_key.clone(),
    )
}

/// Everything the HTTP server serves from.
#[derive(Debug, Clone)]
pub struct Components {
    /// The request engine.
    pub gateway: Arc<Gateway>,
    /// Client and admin keys, swapped on reload.
    pub keys: Arc<ArcSwap<KeyRing>>,
    /// Reloading.
    pub control: Arc<ConfigControl>,
    /// Prometheus metrics; also the engine's event sink.
    pub metrics: Arc<Metrics>,
    /// Recent fallbacks and breaker transitions, for `/admin/status`.
    pub history: Arc<EventHistory>,
    /// The health checker and alert engine, once [`start_background`] has run.
    pub operations: Arc<Operations>,
    /// The sync with the fleet's shared state (`[state] backend = "redis"`), started by
    /// [`start_background`].
    pub sharing: Option<Arc<SharedStateSync>>,
}

/// The background parts of a running gateway, readable by the admin API.
#[derive(Default)]
pub struct Operations {
    /// Active health probes.
    pub checker: std::sync::OnceLock<Arc<HealthChecker>>,
    /// Alert rules and their state.
    pub alerts: std::sync::OnceLock<Arc<AlertEngine>>,
    /// Alert delivery to webhooks, whose URLs follow reloads.
    pub webhooks: std::sync::OnceLock<WebhookNotifier>,
}

impl std::fmt::Debug for Operations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operations")
            .field("checker", &self.checker.get().is_some())
            .field("alerts", &self.alerts.get().is_some())
            .field("webhooks", &self.webhooks.get().is_some())
            .finish()
    }
}

/// Options for building the engine that do not come from the configuration tree.
#[derive(Clone)]
pub struct BuildOptions {
    /// Builds provider backends; the real adapters unless a test swaps them.
    pub factory: Arc<dyn BackendFactory>,
    /// Options of the routing table (event sink, defaults).
    pub table: TableOptions,
}

impl std::fmt::Debug for BuildOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildOptions")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            factory: Arc::new(ProviderBackends),
            table: TableOptions::default(),
        }
    }
}

/// Builds the engine for a loaded configuration.
///
/// # Errors
/// When a provider's backend cannot be built.
pub fn build(
    dir: &Path,
    config: LoadedConfig,
    options: BuildOptions,
) -> anyhow::Result<Components> {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0x5EED, |d| d.as_nanos() as u64);
    let metrics = Arc::new(Metrics::new(MetricsOptions::default()));
    // Every domain event goes to the metrics, to the current trace span and to any sink the
    // caller added; the history keeps the last fallbacks and breaker transitions on top.
    let sinks: Vec<Arc<dyn EventSink>> = vec![
        Arc::clone(&metrics) as Arc<dyn EventSink>,
        Arc::new(SpanEvents),
        Arc::clone(&options.table.sink),
    ];
    let history = Arc::new(EventHistory::new(
        Arc::new(FanOut::new(sinks)),
        Arc::new(TokioClock::new()),
        DEFAULT_HISTORY,
    ));
    let mut table = options.table;
    table.sink = Arc::clone(&history) as Arc<dyn EventSink>;
    let redis = match &config.gateway.state {
        StateBackend::Redis(settings) => Some(settings.clone()),
        StateBackend::Memory => None,
    };
    table.shared_budgets = redis.is_some();
    let engine = EngineOptions {
        table,
        request_timeout: config.gateway.server.request_timeout,
    };
    let gateway = Arc::new(Gateway::new(
        config.topology.clone(),
        options.factory,
        Arc::new(SplitMix64::new(seed)),
        engine,
    )?);
    let sharing = redis
        .map(|settings| shared_state_sync(&gateway, &settings, seed))
        .transpose()?;
    if let Some(sync) = &sharing {
        metrics.observe_sharing(sync.status());
    }
    let keys = Arc::new(ArcSwap::from_pointee(key_ring(&config.gateway)));
    let operations = Arc::new(Operations::default());
    let control = Arc::new(ConfigControl {
        dir: dir.to_path_buf(),
        gateway: Arc::clone(&gateway),
        metrics: Arc::clone(&metrics),
        keys: Arc::clone(&keys),
        operations: Arc::clone(&operations),
        started: Arc::new(config.clone()),
        current: ArcSwap::from_pointee(config),
        status: Mutex::new(ReloadStatus::default()),
    });
    Ok(Components {
        gateway,
        keys,
        control,
        metrics,
        history,
        operations,
        sharing,
    })
}

/// The sync of `gateway` with Redis. Building it never waits for Redis: the client connects on
/// the first sync, and until then (or while Redis is unreachable) the replica falls back.
fn shared_state_sync(
    gateway: &Arc<Gateway>,
    settings: &RedisSettings,
    seed: u64,
) -> anyhow::Result<Arc<SharedStateSync>> {
    let store = RedisState::new(&RedisOptions {
        url: settings.url.clone(),
        key_prefix: settings.key_prefix.clone(),
        timeout: settings.timeout,
    })?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let replica = format!(
        "{}-{}-{:x}",
        host.trim(),
        std::process::id(),
        seed & 0xffff_ffff
    );
    Ok(Arc::new(SharedStateSync::new(
        Arc::clone(gateway),
        Arc::new(store),
        SharedStateOptions {
            replica: replica.into_boxed_str(),
            sync_interval: settings.sync_interval,
            retry_interval: settings.retry_interval,
            timeout: settings.timeout,
            replicas: settings.replicas,
            fail_mode: settings.fail_mode,
        },
    )))
}

/// The background tasks of a running gateway; they stop when this is shut down or dropped.
#[derive(Debug)]
pub struct Background {
    tasks: Vec<BackgroundTask>,
}

impl Background {
    /// Stops every task and waits for them.
    pub async fn shutdown(self) {
        for task in self.tasks {
            task.shutdown().await;
        }
    }
}

/// Starts the active health checker, the alert engine and webhook delivery on the current
/// runtime, and makes them visible to the admin API.
///
/// # Errors
/// When the webhook client cannot be built.
pub fn start_background(
    components: &Components,
    settings: &GatewaySettings,
) -> anyhow::Result<Background> {
    let mut tasks = Vec::new();
    if let Some(sync) = &components.sharing {
        tasks.push(Arc::clone(sync).spawn());
    }
    let mut checker = HealthChecker::new(
        Arc::clone(&components.gateway),
        Arc::clone(&components.metrics) as _,
        HealthCheckOptions::default(),
    );
    if let Some(sync) = &components.sharing {
        checker = checker.with_fleet(Arc::clone(sync));
    }
    let checker = Arc::new(checker);
    tasks.push(Arc::clone(&checker).spawn());
    let _ = components.operations.checker.set(checker);

    let mut notifiers: Vec<Arc<dyn AlertNotifier>> = vec![
        Arc::new(LogNotifier),
        Arc::clone(&components.metrics) as Arc<dyn AlertNotifier>,
    ];
    // Started even without URLs, so that a reload can add some; with none it queues nothing.
    let (webhook, task) =
        WebhookNotifier::start(settings.alerts.webhooks.clone(), WebhookOptions::default())?;
    components.metrics.observe_webhooks(webhook.stats());
    notifiers.push(Arc::new(webhook.clone()));
    tasks.push(task);
    let _ = components.operations.webhooks.set(webhook);
    let engine = Arc::new(AlertEngine::new(
        &settings.alerts.rules,
        Arc::new(Notifiers(notifiers)),
        AlertEngineOptions::default(),
    ));
    let sources: Vec<Arc<dyn ReadingSource>> = vec![
        Arc::new(SnapshotReadings::new(Arc::clone(&components.gateway))),
        Arc::clone(&components.metrics) as Arc<dyn ReadingSource>,
    ];
    engine.set_evaluation_interval(settings.alerts.evaluation_interval);
    tasks.push(Arc::clone(&engine).spawn(sources, Arc::new(*components.gateway.clock())));
    let _ = components.operations.alerts.set(engine);
    Ok(Background { tasks })
}

/// Loads the configuration folder, printing nothing: the caller decides how to show a report.
///
/// # Errors
/// The full report of every problem.
pub fn load(dir: &Path) -> Result<LoadedConfig, ConfigReport> {
    echelon_config::load(dir, &ProcessEnv)
}

/// Starts the file watcher when the registry asks for hot reload.
///
/// # Errors
/// When the platform watcher cannot start.
pub fn watch(control: &Arc<ConfigControl>) -> anyhow::Result<Option<echelon_config::WatchHandle>> {
    let registry = control.current().registry.clone();
    if !registry.hot_reload {
        return Ok(None);
    }
    let target = Arc::clone(control);
    let handle = echelon_config::watch(
        control.dir(),
        debounce_or_default(registry.debounce),
        Arc::new(ProcessEnv),
        echelon_config::LoadOptions::default(),
        move |result| {
            target.apply(result, "watch");
        },
    )?;
    Ok(Some(handle))
}

fn debounce_or_default(debounce: Duration) -> Duration {
    if debounce.is_zero() {
        Duration::from_millis(500)
    } else {
        debounce
    }
}

/// Options of [`serve`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The configuration folder.
    pub config_dir: PathBuf,
    /// Overrides `[server] listen`.
    pub listen: Option<std::net::SocketAddr>,
}

/// Loads the configuration and serves until SIGINT or SIGTERM, then drains.
///
/// # Errors
/// An invalid configuration (the full report), an address that cannot be bound, or a server
/// failure.
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let config = load(&options.config_dir).map_err(|report| anyhow::anyhow!("{report}"))?;
    let telemetry = start_telemetry(&config.gateway)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let server = config.gateway.server.clone();
    let settings = config.gateway.clone();
    let listen = options.listen.unwrap_or(server.listen);
    let open = config.gateway.auth.api_keys.is_empty();
    let components = build(&options.config_dir, config, BuildOptions::default())?;
    if let Some(telemetry) = &telemetry {
        components
            .metrics
            .observe_span_export(telemetry.export_stats());
    }
    let _watcher = watch(&components.control)?;
    let background = start_background(&components, &settings)?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {listen}: {e}; is another process using it? pass --listen ADDR"
        )
    })?;
    let addr = listener.local_addr()?;
    if server.tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "listening on a non-loopback address without TLS: keys and prompts cross the network in clear text; set [server] tls_cert and tls_key, or terminate TLS in front"
        );
    }
    if open && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "listening on a non-loopback address with no client API keys: anyone who can reach it can spend your upstream quota; set [auth] api_keys in gateway.toml"
        );
    }
    tracing::info!(
        %addr,
        tls = server.tls.is_some(),
        models = components.gateway.model_names().len(),
        "echelon gateway listening"
    );
    let running = crate::http::start(
        listener,
        &components,
        crate::http::ServerOptions::from_settings(&server),
        shutdown_signal(),
    )?;
    running.wait().await?;
    background.shutdown().await;
    tracing::info!("echelon gateway stopped");
    if let Some(telemetry) = telemetry {
        telemetry.shutdown(Duration::from_secs(5)).await;
    }
    Ok(())
}

/// Installs logging and tracing as `[telemetry]` says. When the process already has a
/// subscriber (an embedding program's, or a test's), that one is kept and spans are not exported.
fn start_telemetry(settings: &GatewaySettings) -> anyhow::Result<Option<Telemetry>> {
    let telemetry = &settings.telemetry;
    let options = TelemetryOptions {
        log_format: match telemetry.log_format {
            echelon_config::LogFormat::Text => LogFormat::Text,
            echelon_config::LogFormat::Json => LogFormat::Json,
        },
        log_filter: telemetry.log_level.clone(),
        otlp_endpoint: telemetry.otlp_endpoint.clone(),
        service_name: telemetry.service_name.clone(),
        export: ExportOptions::default(),
    };
    match telemetry::init(&options) {
        Ok(telemetry) => Ok(Some(telemetry)),
        Err(TelemetryError::AlreadyInstalled) => {
            tracing::warn!(
                "a log subscriber is already installed; [telemetry] settings are not applied"
            );
            Ok(None)
        }
        Err(error) => Err(anyhow::anyhow!("gateway.toml [telemetry]: {error}")),
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
