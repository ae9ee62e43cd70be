//! The active health checker: cheap probes of every instance of every pool with health checks
//! enabled, each pool on its own interval, feeding the domain's health state machine.
//!
//! A probe is the backend's model listing ([`ProbeKind::Models`], free on every provider) or,
//! only when a pool asks for it, a one-token completion ([`ProbeKind::Completion`]). Every probe
//! has its own timeout. Probes never go through the attempt planner, so they are never counted
//! as user traffic and never touch breakers or limiters; their results go to
//! [`RoutingTable::record_probe`](echelon_domain::routing::RoutingTable::record_probe) (which
//! moves health and revives dead keys) and to a [`ProbeObserver`] (metrics).
//!
//! How a probe's answer counts:
//!
//! | answer | health |
//! |---|---|
//! | success | success |
//! | 400, 404, 422, content filter (the server answered, it just does not like the probe: a reasoning model refusing `max_tokens = 1`, a self-hosted server without `/models`) | success |
//! | 5xx, 529, connection refused or reset, timeout | failure |
//! | 401/403 | failure (the key stays dead until a probe succeeds) |
//! | 429 | nothing: a rate-limited key is alive, and its cooldown is user traffic's business |
//!
//! Rounds never overlap: the checker waits for every probe of a round (each bounded by its
//! timeout) before it schedules the next one for those instances. An instance is due again one
//! interval after its previous probe started, or at once if that probe took longer than the
//! interval. The checker follows reloads: each round reads the live generation's probe targets.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use echelon_domain::chat::{ChatRequest, Message, Role};
use echelon_domain::error::ErrorClass;
use echelon_domain::name::InstanceId;
use echelon_domain::ports::{Call, DynChatBackend};
use echelon_domain::spec::{HealthCheckSpec, ProbeKind};
use echelon_domain::time::{Clock, Instant};
use futures_util::StreamExt as _;
use serde::Serialize;

use crate::gateway::Gateway;
use crate::shared_state::SharedStateSync;
use crate::task::BackgroundTask;

/// What one probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "class", rename_all = "snake_case")]
pub enum ProbeResult {
    /// The upstream answered the probe.
    Ok,
    /// The upstream answered with a client-side error (it is up, but did not like the probe).
    Refused(ErrorClass),
    /// The upstream failed (server error, connection, key refused).
    Failed(ErrorClass),
    /// No answer within the probe's timeout.
    TimedOut,
    /// Rate limited: alive, but not a health verdict.
    RateLimited,
}

impl ProbeResult {
    /// The stable snake_case name for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused(_) => "refused",
            Self::Failed(_) => "failed",
            Self::TimedOut => "timeout",
            Self::RateLimited => "rate_limited",
        }
    }

    /// Every name [`ProbeResult::as_str`] returns.
    pub const NAMES: [&'static str; 5] = ["ok", "refused", "failed", "timeout", "rate_limited"];

    /// The health verdict: `Some(true)` alive, `Some(false)` failing, `None` no verdict.
    pub const fn verdict(self) -> Option<bool> {
        match self {
            Self::Ok | Self::Refused(_) => Some(true),
            Self::Failed(_) | Self::TimedOut => Some(false),
            Self::RateLimited => None,
        }
    }

    fn from_error(class: ErrorClass) -> Self {
        match class {
            ErrorClass::RateLimited => Self::RateLimited,
            ErrorClass::InvalidRequest | ErrorClass::ContextLength | ErrorClass::ContentFilter => {
                Self::Refused(class)
            }
            ErrorClass::Timeout => Self::TimedOut,
            // A probe is never cancelled by a client; a `client_gone` here is the upstream's
            // connection going away, a failure like any other.
            ErrorClass::Overloaded
            | ErrorClass::Server
            | ErrorClass::Connect
            | ErrorClass::Auth
            | ErrorClass::ClientGone => Self::Failed(class),
        }
    }
}

/// Where probe results go besides the routing table (metrics). Called once per probe; must be
/// cheap and never block.
pub trait ProbeObserver: Send + Sync {
    /// A probe of `instance` ended with `result` after `latency`.
    fn probe_finished(&self, instance: &InstanceId, result: ProbeResult, latency: Duration);
}

/// An observer that ignores every probe.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProbeObserver;

impl ProbeObserver for NoProbeObserver {
    fn probe_finished(&self, _: &InstanceId, _: ProbeResult, _: Duration) {}
}

/// The last probe of one instance, for `GET /admin/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeStatus {
    /// The instance.
    pub instance: InstanceId,
    /// What the last probe found.
    pub result: ProbeResult,
    /// When it started, on the engine's clock.
    pub at: Instant,
    /// How long it took.
    pub latency: Duration,
    /// Probes in a row without a healthy verdict (failures and timeouts).
    pub consecutive_failures: u32,
    /// Probes sent to this instance since the checker started.
    pub probes: u64,
}

/// Settings of the checker that do not come from the pools' `[health_check]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheckOptions {
    /// Most probes in flight at once, across all pools.
    pub max_concurrent_probes: usize,
    /// Longest sleep between two looks at the configuration, so a reload's new instances are
    /// probed without waiting for the longest interval.
    pub max_idle: Duration,
}

impl Default for HealthCheckOptions {
    fn default() -> Self {
        Self {
            max_concurrent_probes: 16,
            max_idle: Duration::from_secs(1),
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// The instances probed, with what each probe found.
    pub probed: Vec<(InstanceId, ProbeResult)>,
    /// When the next instance is due, on the engine's clock; `None` when nothing is probed.
    pub next_due: Option<Instant>,
}

/// The active health checker. See the module docs.
pub struct HealthChecker {
    gateway: Arc<Gateway>,
    observer: Arc<dyn ProbeObserver>,
    options: HealthCheckOptions,
    /// When each instance is due next (engine clock).
    schedule: Mutex<HashMap<InstanceId, Instant>>,
    statuses: Mutex<BTreeMap<InstanceId, ProbeStatus>>,
    /// Serialises rounds, so two callers (the task and an operator's `probe_now`) never overlap.
    round: tokio::sync::Mutex<()>,
    /// The fleet's shared state: one replica probes each instance per interval.
    fleet: Option<Arc<SharedStateSync>>,
}

impl std::fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthChecker")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The request of a completion probe: one word in, at most one token out.
fn completion_probe() -> ChatRequest {
    let mut request = ChatRequest::new(vec![Message::text(Role::User, "ping")]);
    request.params.max_tokens = Some(1);
    request
}

impl HealthChecker {
    /// A checker of `gateway`'s pools, reporting to `observer`.
    pub fn new(
        gateway: Arc<Gateway>,
        observer: Arc<dyn ProbeObserver>,
        options: HealthCheckOptions,
    ) -> Self {
        Self {
            gateway,
            observer,
            options: HealthCheckOptions {
                max_concurrent_probes: options.max_concurrent_probes.max(1),
                max_idle: options.max_idle.max(Duration::from_millis(1)),
            },
            fleet: None,
            schedule: Mutex::new(HashMap::new()),
            statuses: Mutex::new(BTreeMap::new()),
            round: tokio::sync::Mutex::new(()),
        }
    }

    /// The last probe of every instance probed so far, by instance id.
    pub fn statuses(&self) -> Vec<ProbeStatus> {
        self.statuses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Probes every instance that is due now and waits for all of them; the unit of work of the
    /// background task, public for tests and `echelon doctor`.
    /// Shares the probes with the other replicas of a fleet: an instance is probed here only
    /// when this replica holds its probe lease for the interval, and every verdict reaches the
    /// other replicas through the shared state (which applies theirs here).
    #[must_use]
    pub fn with_fleet(mut self, fleet: Arc<SharedStateSync>) -> Self {
        self.fleet = Some(fleet);
        self
    }

    /// Runs the probes that are due now.
    pub async fn run_due(&self) -> RoundReport {
        self.round(false).await
    }

    /// Probes every probed instance now, whatever its schedule.
    pub async fn probe_now(&self) -> RoundReport {
        self.round(true).await
    }

    async fn round(&self, everything: bool) -> RoundReport {
        let _one_round = self.round.lock().await;
        let generation = self.gateway.generation();
        let clock = *self.gateway.clock();
        let now = clock.now();
        let targets = generation.table.probe_targets();
        let due: Vec<_> = {
            let mut schedule = self.schedule.lock().unwrap_or_else(PoisonError::into_inner);
            schedule.retain(|id, _| targets.iter().any(|(state, _)| state.id() == id));
            targets
                .into_iter()
                .filter(|(state, _)| {
                    let at = *schedule.entry(state.id().clone()).or_insert(now);
                    everything || at <= now
                })
                .collect()
        };
        let probes = due.into_iter().map(|(state, spec)| {
            let backend = generation.backends.get(&state.id().model.provider).cloned();
            let upstream_model = state.spec().upstream_name.clone();
            let id = state.id().clone();
            let fleet = self.fleet.clone();
            async move {
                let started = clock.now();
                if let Some(fleet) = fleet
                    && !fleet.probe_turn(&id, spec.interval).await
                {
                    // Another replica probes it this interval; its verdict comes by the sync.
                    return (id, spec, started, Duration::ZERO, None);
                }
                let result = match backend {
                    Some(backend) => probe(backend.as_ref(), &id, &upstream_model, spec).await,
                    None => ProbeResult::Failed(ErrorClass::Connect),
                };
                (id, spec, started, clock.now() - started, Some(result))
            }
        });
        let finished: Vec<_> = futures_util::stream::iter(probes)
            .buffer_unordered(self.options.max_concurrent_probes)
            .collect()
            .await;

        let end = clock.now();
        let mut report = RoundReport::default();
        {
            let mut schedule = self.schedule.lock().unwrap_or_else(PoisonError::into_inner);
            let mut statuses = self.statuses.lock().unwrap_or_else(PoisonError::into_inner);
            for (id, spec, started, latency, result) in finished {
                let Some(result) = result else {
                    schedule.insert(id.clone(), (started + spec.interval).max(end));
                    continue;
                };
                if let Some(ok) = result.verdict() {
                    generation.table.record_probe(&id, end, ok);
                    if let Some(fleet) = &self.fleet {
                        fleet.report_probe(&id, ok);
                    }
                }
                self.observer.probe_finished(&id, result, latency);
                tracing::debug!(instance = %id, result = result.as_str(), ?latency, "probe");
                schedule.insert(id.clone(), (started + spec.interval).max(end));
                let status = statuses.entry(id.clone()).or_insert(ProbeStatus {
                    instance: id.clone(),
                    result,
                    at: started,
                    latency,
                    consecutive_failures: 0,
                    probes: 0,
                });
                status.result = result;
                status.at = started;
                status.latency = latency;
                status.probes += 1;
                status.consecutive_failures = match result.verdict() {
                    Some(false) => status.consecutive_failures.saturating_add(1),
                    Some(true) => 0,
                    None => status.consecutive_failures,
                };
                report.probed.push((id, result));
            }
            report.next_due = schedule.values().min().copied();
        }
        report.probed.sort_by(|a, b| a.0.cmp(&b.0));
        report
    }

    /// Runs the checker as a tokio task until the returned handle is shut down or dropped.
    pub fn spawn(self: Arc<Self>) -> BackgroundTask {
        BackgroundTask::spawn("health checker", move |mut stop| async move {
            loop {
                // A stop request cancels a round in flight: its probes are dropped mid-way.
                let report = tokio::select! {
                    report = self.run_due() => report,
                    _ = stop.changed() => break,
                };
                let clock = *self.gateway.clock();
                let now = clock.now();
                let idle_until = now + self.options.max_idle;
                let wake = report
                    .next_due
                    .map_or(idle_until, |due| due.min(idle_until));
                tokio::select! {
                    () = tokio::time::sleep_until(clock.to_tokio(wake.max(now))) => {}
                    _ = stop.changed() => break,
                }
            }
        })
    }
}

async fn probe(
    backend: &dyn DynChatBackend,
    instance: &InstanceId,
    upstream_model: &str,
    spec: HealthCheckSpec,
) -> ProbeResult {
    let call = async {
        match spec.probe {
            ProbeKind::Models => backend.probe_boxed(instance).await,
            ProbeKind::Completion => {
                let request = completion_probe();
                backend
                    .complete_boxed(Call {
                        instance,
                        upstream_model,
                        request: &request,
                    })
                    .await
                    .map(drop)
            }
        }
    };
    match tokio::time::timeout(spec.timeout, call).await {
        Ok(Ok(())) => ProbeResult::Ok,
        Ok(Err(error)) => ProbeResult::from_error(error.class),
        Err(_) => ProbeResult::TimedOut,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    use echelon_domain::chat::ChatResponse;
    use echelon_domain::error::UpstreamError;
    use echelon_domain::health::HealthState;
    use echelon_domain::name::{ModelRef, PoolName, ProviderName};
    use echelon_domain::ports::{BoxFuture, ChunkStream};
    use echelon_domain::random::SplitMix64;
    use echelon_domain::secret::Secret;
    use echelon_domain::spec::{
        BreakerPolicy, HealthPolicy, InstanceSpec, Limits, ModelSpec, PoolFallback,
        PoolFallbackStrategy, PoolSpec, ProviderKind, ProviderSpec, RateAlgorithm,
        RotationStrategy, Topology,
    };

    use super::*;
    use crate::backends::{BackendError, BackendFactory};
    use crate::gateway::EngineOptions;

    /// How the fake answers probes, switchable during a test.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Mode {
        Ok,
        Fail,
        Hang,
        Slow(Duration),
        RateLimited,
        BadRequest,
    }

    #[derive(Debug)]
    pub(crate) struct FakeBackend {
        mode: Mutex<Mode>,
        probes: AtomicU64,
        completions: AtomicU64,
        in_flight: AtomicU32,
        most_in_flight: AtomicU32,
    }

    impl FakeBackend {
        fn new(mode: Mode) -> Arc<Self> {
            Arc::new(Self {
                mode: Mutex::new(mode),
                probes: AtomicU64::new(0),
                completions: AtomicU64::new(0),
                in_flight: AtomicU32::new(0),
                most_in_flight: AtomicU32::new(0),
            })
        }

        fn set(&self, mode: Mode) {
            *self.mode.lock().unwrap() = mode;
        }

        async fn answer(&self) -> Result<(), UpstreamError> {
            let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(n, Ordering::SeqCst);
            let mode = *self.mode.lock().unwrap();
            let result = match mode {
                Mode::Ok => Ok(()),
                Mode::Fail => Err(UpstreamError::new(ErrorClass::Server, "down").with_status(503)),
                Mode::Hang => {
                    std::future::pending::<()>().await;
                    Ok(())
                }
                Mode::Slow(d) => {
                    tokio::time::sleep(d).await;
                    Ok(())
                }
                Mode::RateLimited => Err(UpstreamError::new(ErrorClass::RateLimited, "slow down")),
                Mode::BadRequest => Err(UpstreamError::new(
                    ErrorClass::InvalidRequest,
                    "max_tokens too small",
                )),
            };
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            result
        }
    }

    impl DynChatBackend for FakeBackend {
        fn complete_boxed<'a>(
            &'a self,
            _call: Call<'a>,
        ) -> BoxFuture<'a, Result<ChatResponse, UpstreamError>> {
            self.completions.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                self.answer().await?;
                Err(UpstreamError::new(
                    ErrorClass::InvalidRequest,
                    "the fake only answers probes",
                ))
            })
        }

        fn stream_boxed<'a>(
            &'a self,
            _call: Call<'a>,
        ) -> BoxFuture<'a, Result<ChunkStream, UpstreamError>> {
            Box::pin(async {
                Err(UpstreamError::new(
                    ErrorClass::InvalidRequest,
                    "the fake only answers probes",
                ))
            })
        }

        fn probe_boxed<'a>(
            &'a self,
            _instance: &'a InstanceId,
        ) -> BoxFuture<'a, Result<(), UpstreamError>> {
            self.probes.fetch_add(1, Ordering::SeqCst);
            Box::pin(self.answer())
        }
    }

    struct Factory(Arc<FakeBackend>);

    impl BackendFactory for Factory {
        fn build(&self, _provider: &ProviderSpec) -> Result<Arc<dyn DynChatBackend>, BackendError> {
            Ok(self.0.clone())
        }
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(InstanceId, ProbeResult)>>);

    impl ProbeObserver for Recorder {
        fn probe_finished(&self, instance: &InstanceId, result: ProbeResult, _: Duration) {
            self.0.lock().unwrap().push((instance.clone(), result));
        }
    }

    pub(crate) fn topology(check: HealthCheckSpec, keys: usize) -> Topology {
        let mut t = Topology::default();
        let provider = ProviderName::new("acme");
        t.providers.insert(
            provider.clone(),
            ProviderSpec {
                name: provider,
                kind: ProviderKind::Openai,
                base_url: "http://127.0.0.1:9/v1".into(),
                api_keys: (0..keys).map(|k| Secret::new(format!("key-{k}"))).collect(),
                headers: Vec::new(),
                connect_timeout: Duration::from_secs(1),
                request_timeout: Duration::from_secs(10),
                mock: None,
            },
        );
        let model = ModelRef::new("acme", "fast");
        t.models.insert(
            model.clone(),
            ModelSpec {
                model: model.clone(),
                upstream_name: "fast-1".into(),
                context_window: None,
                limits: Limits::default(),
                cost: Default::default(),
            },
        );
        let instances = (0..keys)
            .map(|k| InstanceSpec {
                id: InstanceId::new(model.clone(), u16::try_from(k).unwrap()),
                upstream_name: "fast-1".into(),
                weight: 1,
                limits: Limits::default(),
                context_window: None,
            })
            .collect();
        t.pools.insert(
            PoolName::new("main"),
            PoolSpec {
                name: PoolName::new("main"),
                rotation: RotationStrategy::RoundRobin,
                instances,
                health: HealthPolicy {
                    failure_threshold: 2,
                    success_threshold: 2,
                    recovery_time: Duration::from_secs(10),
                },
                health_check: check,
                breaker: BreakerPolicy::default(),
                max_ejection_percent: echelon_domain::defaults::pool::MAX_EJECTION_PERCENT,
                fallback: PoolFallback {
                    strategy: PoolFallbackStrategy::InstanceRotation,
                    max_instance_attempts: 2,
                    fallback_pools: Vec::new(),
                },
                limits: Limits::default(),
                rate_algorithm: RateAlgorithm::TokenBucket,
            },
        );
        t
    }

    fn check(interval: u64, timeout: u64, probe: ProbeKind) -> HealthCheckSpec {
        HealthCheckSpec {
            enabled: true,
            interval: Duration::from_secs(interval),
            timeout: Duration::from_secs(timeout),
            probe,
        }
    }

    fn setup(
        check: HealthCheckSpec,
        mode: Mode,
    ) -> (
        Arc<HealthChecker>,
        Arc<FakeBackend>,
        Arc<Recorder>,
        Arc<Gateway>,
    ) {
        let backend = FakeBackend::new(mode);
        let gateway = Arc::new(
            Gateway::new(
                topology(check, 1),
                Arc::new(Factory(backend.clone())),
                Arc::new(SplitMix64::new(7)),
                EngineOptions::default(),
            )
            .unwrap(),
        );
        let recorder = Arc::new(Recorder::default());
        let checker = Arc::new(HealthChecker::new(
            gateway.clone(),
            recorder.clone(),
            HealthCheckOptions::default(),
        ));
        (checker, backend, recorder, gateway)
    }

    fn health(gateway: &Gateway) -> HealthState {
        gateway.snapshot().pools[0].members[0].instance.health
    }

    #[tokio::test(start_paused = true)]
    async fn probes_mark_unhealthy_then_healthy_again_without_counting_traffic() {
        let (checker, backend, recorder, gateway) =
            setup(check(5, 2, ProbeKind::Models), Mode::Fail);
        let task = checker.clone().spawn();

        // Rounds at 0 s and 5 s fail: failure_threshold 2 makes the instance unhealthy.
        tokio::time::sleep(Duration::from_millis(5_500)).await;
        assert_eq!(backend.probes.load(Ordering::SeqCst), 2);
        assert_eq!(health(&gateway), HealthState::Unhealthy);

        // The upstream recovers; after the 10 s rest, two successes make it healthy.
        backend.set(Mode::Ok);
        tokio::time::sleep(Duration::from_secs(5)).await; // round at 10 s: still resting
        assert_eq!(health(&gateway), HealthState::Unhealthy);
        tokio::time::sleep(Duration::from_secs(5)).await; // round at 15 s: the rest is over
        assert_eq!(health(&gateway), HealthState::Recovering);
        tokio::time::sleep(Duration::from_secs(10)).await; // rounds at 20 s and 25 s
        assert_eq!(health(&gateway), HealthState::Healthy);
        assert_eq!(backend.probes.load(Ordering::SeqCst), 6);

        // Probes are not user traffic: no attempt was counted anywhere.
        let snapshot = gateway.snapshot();
        assert_eq!(snapshot.pools[0].stats.attempts, 0);
        assert_eq!(snapshot.pools[0].members[0].instance.stats.attempts, 0);

        let seen = recorder.0.lock().unwrap().clone();
        let results: Vec<_> = seen.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(results, ["failed", "failed", "ok", "ok", "ok", "ok"]);
        let status = &checker.statuses()[0];
        assert_eq!((status.result, status.probes), (ProbeResult::Ok, 6));
        assert_eq!(status.consecutive_failures, 0);
        task.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_probe_is_cut_by_its_own_timeout() {
        let (checker, backend, recorder, gateway) =
            setup(check(30, 2, ProbeKind::Models), Mode::Hang);
        let started = tokio::time::Instant::now();
        let report = checker.run_due().await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(report.probed[0].1, ProbeResult::TimedOut);
        assert_eq!(recorder.0.lock().unwrap()[0].1, ProbeResult::TimedOut);
        assert_eq!(health(&gateway), HealthState::Degraded);
        assert_eq!(
            backend.in_flight.load(Ordering::SeqCst),
            1,
            "the hung call was dropped mid-way"
        );
        // The next probe is due one interval after this one started.
        assert_eq!(
            report.next_due,
            Some(Instant::from_elapsed(Duration::from_secs(30)))
        );
        assert_eq!(checker.statuses()[0].consecutive_failures, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn rounds_never_overlap_when_probes_outlast_the_interval() {
        let (checker, backend, _, _) = setup(
            check(1, 10, ProbeKind::Models),
            Mode::Slow(Duration::from_secs(3)),
        );
        let task = checker.clone().spawn();
        tokio::time::sleep(Duration::from_secs(10)).await;
        task.shutdown().await;
        assert_eq!(backend.most_in_flight.load(Ordering::SeqCst), 1);
        // Probes at 0, 3, 6 and 9 s: back to back, never two at once.
        assert_eq!(backend.probes.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limits_give_no_verdict_and_refusals_count_as_alive() {
        let (checker, backend, _, gateway) =
            setup(check(5, 2, ProbeKind::Completion), Mode::RateLimited);
        for _ in 0..3 {
            let report = checker.probe_now().await;
            assert_eq!(report.probed[0].1, ProbeResult::RateLimited);
        }
        assert_eq!(health(&gateway), HealthState::Healthy);
        backend.set(Mode::Fail);
        checker.probe_now().await;
        assert_eq!(health(&gateway), HealthState::Degraded);
        // A reasoning model refusing `max_tokens = 1` is up: the failure streak ends.
        backend.set(Mode::BadRequest);
        let report = checker.probe_now().await;
        assert_eq!(
            report.probed[0].1,
            ProbeResult::Refused(ErrorClass::InvalidRequest)
        );
        assert_eq!(health(&gateway), HealthState::Healthy);
        // Completion probes went through `complete`, never through the model listing.
        assert_eq!(backend.completions.load(Ordering::SeqCst), 5);
        assert_eq!(backend.probes.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_checks_probe_nothing_and_the_task_stops_on_drop() {
        let mut spec = check(1, 1, ProbeKind::Models);
        spec.enabled = false;
        let (checker, backend, _, _) = setup(spec, Mode::Ok);
        let task = checker.clone().spawn();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(backend.probes.load(Ordering::SeqCst), 0);
        drop(task);
        tokio::task::yield_now().await;
        // Only the test holds the checker once the aborted task is gone.
        assert_eq!(Arc::strong_count(&checker), 1);
    }
}
