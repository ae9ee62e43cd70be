//! The gateway use case: serve a chat request under a client-facing name by driving the domain's
//! attempt planner against provider backends.
//!
//! Each request loads the live generation (routing table + backends) once, so a reload never
//! changes the ground under a request in flight. The planner decides every step; this module only
//! executes it: it calls the backend within the attempt's timeouts, sleeps for backoff and
//! Retry-After waits on tokio's clock, and records every outcome back into the plan. Dropping the
//! request future (the caller went away) drops the attempt in flight, which cancels the upstream
//! call and releases every permit.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use echelon_domain::chat::{ChatRequest, ChatResponse};
use echelon_domain::error::{ErrorClass, UpstreamError};
use echelon_domain::plan::{
    Attempt, AttemptLabel, AttemptRecord, Explanation, Outcome, Plan, RequestFacts, RouteLabel,
    Step, Verdict,
};
use echelon_domain::ports::DynChatBackend;
use echelon_domain::random::Random;
use echelon_domain::routing::{ResolveError, Route, RoutingTable, TableOptions, TableSnapshot};
use echelon_domain::spec::Topology;
use echelon_domain::time::{Clock, DurationText};
use tracing::Instrument;

use crate::backends::{BackendError, BackendFactory, Backends};
use crate::clock::TokioClock;
use crate::stream::{FirstContent, ResponseStream, StreamSettle};

/// One configuration generation: the routing table and the backends built for it.
#[derive(Debug)]
pub struct Generation {
    /// Increases by one with every successful reload; the first generation is 1.
    pub number: u64,
    /// The live routing table.
    pub table: Arc<RoutingTable>,
    /// The provider backends.
    pub backends: Backends,
}

/// Settings of the request engine that do not come from the routing configuration.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Options the routing table is built with (route defaults, default cooldown, event sink).
    pub table: TableOptions,
    /// Upper bound on any one request, on top of the route's own deadline.
    pub request_timeout: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            table: TableOptions::default(),
            request_timeout: echelon_domain::defaults::server::REQUEST_TIMEOUT,
        }
    }
}

/// A request served: the value and how it was served.
#[derive(Debug)]
pub struct Served<T> {
    /// The answer.
    pub value: T,
    /// `wrapper › group › echelon › instance` of the attempt that answered, as parts (its
    /// `Display` is the human form, [`RouteLabel::to_header`] the header form).
    pub route: RouteLabel,
    /// The configured name the request resolved to (the wrapper, or `group:NAME`, `pool:NAME`,
    /// `provider/model`): a bounded label for metrics, never the client's raw text.
    pub route_name: Arc<str>,
    /// The model that actually answered, as the upstream named it.
    pub model: Arc<str>,
    /// Every attempt made, in order.
    pub attempts: Vec<AttemptRecord>,
}

/// A request that could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The name is not a wrapper, group, pool or model.
    #[error(transparent)]
    UnknownModel(#[from] ResolveError),
    /// The planner's verdict, with the attempts made.
    #[error("request failed: {}", .0.verdict.as_str())]
    Failed(Box<FailedRequest>),
}

/// The details of a failed request.
#[derive(Debug)]
pub struct FailedRequest {
    /// How it ended (never [`Verdict::Served`]).
    pub verdict: Verdict,
    /// The route's label (`wrapper › group:NAME`).
    pub route: String,
    /// The configured name the request resolved to; see [`Served::route_name`].
    pub route_name: Arc<str>,
    /// Every attempt made, in order.
    pub attempts: Vec<AttemptRecord>,
}

/// The gateway: routes and executes chat requests; swaps configuration atomically.
pub struct Gateway {
    live: ArcSwap<Generation>,
    factory: Arc<dyn BackendFactory>,
    clock: TokioClock,
    rng: Arc<dyn Random>,
    options: EngineOptions,
    /// `options.request_timeout` until a reload sets another, in nanoseconds.
    request_timeout: AtomicU64,
    /// Makes reloads one at a time, so that each builds on the generation before it.
    reload_lock: Mutex<()>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("generation", &self.live.load().number)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds the first generation from a validated topology.
    ///
    /// # Errors
    /// When a provider's backend cannot be built.
    pub fn new(
        topology: Topology,
        factory: Arc<dyn BackendFactory>,
        rng: Arc<dyn Random>,
        options: EngineOptions,
    ) -> Result<Self, BackendError> {
        let clock = TokioClock::new();
        let topology = Arc::new(topology);
        let backends = Backends::build(&topology, factory.as_ref(), None)?;
        let table = RoutingTable::build(topology, None, options.table.clone(), clock.now());
        Ok(Self {
            live: ArcSwap::from_pointee(Generation {
                number: 1,
                table: Arc::new(table),
                backends,
            }),
            factory,
            clock,
            rng,
            request_timeout: AtomicU64::new(nanos(options.request_timeout)),
            options,
            reload_lock: Mutex::new(()),
        })
    }

    /// Swaps in a new validated topology. Live state (health, breakers, limiters, latency,
    /// statistics) carries over for instances and echelons that did not change; backends carry
    /// over for providers that did not change. Requests in flight finish on the old generation.
    ///
    /// # Errors
    /// When a backend cannot be built; the old generation keeps serving.
    pub fn reload(&self, topology: Topology) -> Result<u64, BackendError> {
        let _one_at_a_time = self
            .reload_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.live.load_full();
        let topology = Arc::new(topology);
        let backends = Backends::build(&topology, self.factory.as_ref(), Some(&old.backends))?;
        let table = RoutingTable::build(
            topology,
            Some(&old.table),
            self.options.table.clone(),
            self.clock.now(),
        );
        let number = old.number + 1;
        self.live.store(Arc::new(Generation {
            number,
            table: Arc::new(table),
            backends,
        }));
        Ok(number)
    }

    /// Sets the upper bound on every request that starts from now on (`[server]
    /// request_timeout` after a reload); requests in flight keep the deadline they started with.
    pub fn set_request_timeout(&self, timeout: Duration) {
        self.request_timeout
            .store(nanos(timeout), Ordering::Relaxed);
    }

    /// The upper bound on a request starting now.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_nanos(self.request_timeout.load(Ordering::Relaxed))
    }

    /// The live generation.
    pub fn generation(&self) -> Arc<Generation> {
        self.live.load_full()
    }

    /// The engine's clock.
    pub fn clock(&self) -> &TokioClock {
        &self.clock
    }

    /// Every name a client may send as `model`.
    pub fn model_names(&self) -> Vec<String> {
        self.live.load().table.names()
    }

    /// A dry run: the attempt plan for `model` now and why each candidate is in or out.
    ///
    /// # Errors
    /// When the name does not resolve.
    pub fn explain(&self, model: &str) -> Result<Explanation, ResolveError> {
        let live = self.live.load();
        let route = live.table.resolve(model)?;
        Ok(live.table.explain(&route, self.clock.now()))
    }

    /// The live state of every instance, pool and group.
    pub fn snapshot(&self) -> TableSnapshot {
        self.live.load().table.snapshot(self.clock.now())
    }

    /// Serves a non-streaming request.
    ///
    /// # Errors
    /// [`ServeError::UnknownModel`] when `model` does not resolve; [`ServeError::Failed`] with the
    /// planner's verdict and the attempt log otherwise.
    pub async fn complete(
        &self,
        model: &str,
        request: ChatRequest,
    ) -> Result<Served<ChatResponse>, ServeError> {
        let live = self.live.load_full();
        let route = live.table.resolve(model)?;
        let span = request_span(&route, false);
        let mut plan = self.plan(&live.table, &route, &request);
        async {
            loop {
                match plan.next(self.clock.now(), self.rng.as_ref()) {
                    Step::Attempt(attempt) => {
                        let Some(backend) = backend_for(&live, &attempt) else {
                            self.record_missing_backend(&mut plan, attempt);
                            continue;
                        };
                        let label = attempt.label.clone();
                        let deadline = plan.deadline();
                        // If this future is dropped while the call runs (the caller went away),
                        // dropping `attempt` releases its permits and counts a cancellation.
                        let outcome = self
                            .run_complete(backend.as_ref(), &attempt, &request, deadline)
                            .await;
                        match outcome {
                            Ok(response) => {
                                let latency = self.clock.now() - attempt.started;
                                let usage = response.usage;
                                self.record(
                                    &mut plan,
                                    attempt,
                                    Outcome::Success {
                                        latency,
                                        ttft: None,
                                        usage,
                                    },
                                );
                                let span = tracing::Span::current();
                                record_answer(&span, &response.model, usage);
                                span.record("echelon.attempts", plan.attempts_made());
                                return Ok(Served {
                                    model: Arc::clone(&response.model),
                                    value: response,
                                    route: served_label(&route, &label),
                                    route_name: route_name(&route),
                                    attempts: plan.into_attempts(),
                                });
                            }
                            Err(outcome) => self.record(&mut plan, attempt, outcome),
                        }
                    }
                    Step::Wait { until, reason, .. } => {
                        tracing::debug!(?reason, "waiting before the next attempt");
                        tokio::time::sleep_until(self.clock.to_tokio(until)).await;
                    }
                    Step::Done(verdict) => return Err(failed(&route, plan, verdict)),
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Serves a streaming request. Failover happens until the first content chunk arrives; the
    /// returned stream then carries the rest, ending with an explicit failure event if the
    /// upstream errs, is cut or stalls.
    ///
    /// # Errors
    /// As for [`Gateway::complete`], for failures before the first content chunk.
    pub async fn stream(
        &self,
        model: &str,
        request: ChatRequest,
    ) -> Result<Served<ResponseStream>, ServeError> {
        let live = self.live.load_full();
        let route = live.table.resolve(model)?;
        let span = request_span(&route, true);
        let mut plan = self.plan(&live.table, &route, &request);
        let request = Arc::new(request);
        async {
            loop {
                match plan.next(self.clock.now(), self.rng.as_ref()) {
                    Step::Attempt(attempt) => {
                        let Some(backend) = backend_for(&live, &attempt).cloned() else {
                            self.record_missing_backend(&mut plan, attempt);
                            continue;
                        };
                        let deadline = plan.deadline();
                        let request = with_defaults(&request, &attempt);
                        match crate::stream::first_content(
                            backend.as_ref(),
                            &attempt,
                            &request,
                            &self.clock,
                            deadline,
                        )
                        .await
                        {
                            Ok(FirstContent { stream, buffered }) => {
                                let label = served_label(&route, &attempt.label);
                                let model = buffered
                                    .iter()
                                    .find_map(|c| c.model.clone())
                                    .unwrap_or_else(|| Arc::from(attempt.upstream_model.as_str()));
                                let settle = StreamSettle {
                                    plan,
                                    attempt,
                                    clock: self.clock,
                                    rng: Arc::clone(&self.rng),
                                    generation: Arc::clone(&live),
                                    span: tracing::Span::current(),
                                };
                                let attempts = settle.attempts_so_far();
                                let span = tracing::Span::current();
                                record_answer(&span, &model, None);
                                span.record("echelon.attempts", attempts.len());
                                let stream =
                                    ResponseStream::new(stream, buffered, settle, model.clone());
                                return Ok(Served {
                                    value: stream,
                                    route: label,
                                    route_name: route_name(&route),
                                    model,
                                    attempts,
                                });
                            }
                            Err(outcome) => self.record(&mut plan, attempt, outcome),
                        }
                    }
                    Step::Wait { until, reason, .. } => {
                        tracing::debug!(?reason, "waiting before the next attempt");
                        tokio::time::sleep_until(self.clock.to_tokio(until)).await;
                    }
                    Step::Done(verdict) => return Err(failed(&route, plan, verdict)),
                }
            }
        }
        .instrument(span)
        .await
    }

    fn plan(&self, table: &RoutingTable, route: &Route, request: &ChatRequest) -> Plan {
        let now = self.clock.now();
        let estimated_tokens = request
            .estimated_input_tokens()
            .saturating_add(request.params.max_tokens.unwrap_or(0));
        table.plan(
            route,
            RequestFacts {
                estimated_tokens,
                now,
                deadline: Some(now + self.request_timeout()),
            },
        )
    }

    /// A provider without a backend cannot happen with a validated topology; treat it as a
    /// connection failure of that instance rather than a panic.
    fn record_missing_backend(&self, plan: &mut Plan, attempt: Attempt) {
        let error = UpstreamError::new(
            ErrorClass::Connect,
            "no backend is configured for this provider",
        );
        let outcome = Outcome::Failure {
            error,
            latency: Duration::ZERO,
        };
        self.record(plan, attempt, outcome);
    }

    /// Records how an attempt ended, now.
    fn record(&self, plan: &mut Plan, attempt: Attempt, outcome: Outcome) {
        plan.record(attempt, outcome, self.clock.now(), self.rng.as_ref());
    }

    async fn run_complete(
        &self,
        backend: &dyn DynChatBackend,
        attempt: &Attempt,
        request: &ChatRequest,
        request_deadline: echelon_domain::time::Instant,
    ) -> Result<ChatResponse, Outcome> {
        let request = with_defaults(request, attempt);
        let span = attempt_span(attempt);
        let deadline = attempt.started + attempt.timeouts.total;
        let call = backend.complete_boxed(attempt.call(&request));
        let result = tokio::time::timeout_at(self.clock.to_tokio(deadline), call)
            .instrument(span.clone())
            .await;
        let latency = self.clock.now() - attempt.started;
        let result = match result {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(Outcome::Failure {
                error: context_overflow(error, attempt, &request),
                latency,
            }),
            Err(_) => Err(timeout_outcome(
                attempt,
                attempt.timeouts.total,
                request_deadline,
                latency,
                "no answer",
            )),
        };
        match &result {
            Ok(response) => record_answer(&span, &response.model, response.usage),
            Err(outcome) => record_outcome(&span, outcome),
        }
        result
    }
}

/// A plain 400 for a request that does not fit the instance's configured context window is a
/// context-length failure, even when the provider says so only in prose (Anthropic's "prompt is
/// too long", Gemini's token-count message carry no error code, and nothing here reads error
/// text). The facts are the request's size and the window from the configuration, so a larger
/// target can still serve it.
pub(crate) fn context_overflow(
    error: UpstreamError,
    attempt: &Attempt,
    request: &ChatRequest,
) -> UpstreamError {
    let overflows = attempt
        .context_window
        .is_some_and(|window| request.estimated_input_tokens() > window);
    if error.class == ErrorClass::InvalidRequest && error.status == Some(400) && overflows {
        UpstreamError {
            class: ErrorClass::ContextLength,
            ..error
        }
    } else {
        error
    }
}

/// The outcome of an attempt cut by a timer: the upstream's fault when the attempt's own timeout
/// fired, nobody's when it was the request's overall deadline that ran out.
pub(crate) fn timeout_outcome(
    attempt: &Attempt,
    timer: Duration,
    request_deadline: echelon_domain::time::Instant,
    latency: Duration,
    what: &str,
) -> Outcome {
    if attempt.started + timer >= request_deadline {
        // The request's own deadline clipped this attempt: not the upstream's fault.
        return Outcome::Cancelled;
    }
    Outcome::Failure {
        error: UpstreamError::new(
            ErrorClass::Timeout,
            format!("{what} within {}", DurationText(timer)),
        ),
        latency,
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn backend_for<'a>(live: &'a Generation, attempt: &Attempt) -> Option<&'a Arc<dyn DynChatBackend>> {
    live.backends.get(&attempt.instance.model.provider)
}

/// The request with the echelon's defaults filled in where the client left them unset; borrowed
/// when nothing changes.
pub(crate) fn with_defaults<'a>(
    request: &'a ChatRequest,
    attempt: &Attempt,
) -> Cow<'a, ChatRequest> {
    let defaults = attempt.defaults;
    let temperature = request.params.temperature.is_none() && defaults.temperature.is_some();
    let max_tokens = request.params.max_tokens.is_none() && defaults.max_tokens.is_some();
    if !temperature && !max_tokens {
        return Cow::Borrowed(request);
    }
    let mut owned = request.clone();
    if temperature {
        owned.params.temperature = defaults.temperature;
    }
    if max_tokens {
        owned.params.max_tokens = defaults.max_tokens;
    }
    Cow::Owned(owned)
}

/// How the request was served: the route's wrapper and the attempt that answered.
fn served_label(route: &Route, attempt: &AttemptLabel) -> RouteLabel {
    RouteLabel {
        wrapper: route.wrapper.clone(),
        attempt: attempt.clone(),
    }
}

fn failed(route: &Route, plan: Plan, verdict: Verdict) -> ServeError {
    // Called inside the request's span.
    let span = tracing::Span::current();
    span.record("otel.status_code", "ERROR");
    span.record("error.type", verdict.as_str());
    span.record("echelon.attempts", plan.attempts_made());
    tracing::info!(
        verdict = verdict.as_str(),
        attempts = plan.attempts_made(),
        "request failed"
    );
    ServeError::Failed(Box::new(FailedRequest {
        verdict,
        route: route.label(),
        route_name: route_name(route),
        attempts: plan.into_attempts(),
    }))
}

/// The configured name a route was reached by: the wrapper, or the target itself.
fn route_name(route: &Route) -> Arc<str> {
    match &route.wrapper {
        Some(wrapper) => wrapper.shared(),
        None => Arc::from(route.target.to_string()),
    }
}

/// The span of one request. Its OpenTelemetry attributes follow the GenAI semantic conventions;
/// the fields left empty are recorded when the request ends ([`record_answer`],
/// [`record_failure`]).
fn request_span(route: &Route, stream: bool) -> tracing::Span {
    tracing::info_span!(
        "chat",
        otel.name = "chat",
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        echelon.route = %route.label(),
        echelon.attempts = tracing::field::Empty,
        gen_ai.operation.name = "chat",
        gen_ai.request.model = %route.target,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        error.type = tracing::field::Empty,
        stream,
    )
}

/// The span of one upstream attempt, a child of the request's span.
pub(crate) fn attempt_span(attempt: &Attempt) -> tracing::Span {
    tracing::info_span!(
        "attempt",
        otel.name = "chat attempt",
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        echelon.attempt = attempt.number,
        echelon.instance = %attempt.instance,
        gen_ai.operation.name = "chat",
        gen_ai.system = %attempt.instance.model.provider,
        gen_ai.request.model = %attempt.upstream_model,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// Records an answer on a request or attempt span: the model that answered and its usage.
pub(crate) fn record_answer(
    span: &tracing::Span,
    model: &str,
    usage: Option<echelon_domain::chat::Usage>,
) {
    span.record("otel.status_code", "OK");
    span.record("gen_ai.response.model", model);
    if let Some(usage) = usage {
        span.record("gen_ai.usage.input_tokens", usage.input_tokens);
        span.record("gen_ai.usage.output_tokens", usage.output_tokens);
    }
}

/// Records a failed attempt's outcome on its span: the error class, and the upstream's HTTP
/// status when it answered.
pub(crate) fn record_outcome(span: &tracing::Span, outcome: &Outcome) {
    match outcome {
        Outcome::Failure { error, .. } => {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", error.class.as_str());
            if let Some(status) = error.status {
                span.record("http.response.status_code", status);
            }
        }
        Outcome::Cancelled => {
            span.record("error.type", "cancelled");
        }
        Outcome::Success { .. } => {
            span.record("otel.status_code", "OK");
        }
    }
}
