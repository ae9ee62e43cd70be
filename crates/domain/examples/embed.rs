//! Embeds only `echelon-domain`: a hand-built topology, a toy transport and the attempt planner,
//! failing over from a broken upstream to a working one. No async runtime, no I/O.

use core::future::{Future, ready};
use core::pin::pin;
use core::task::{Context, Poll, Waker};
use core::time::Duration;
use std::collections::BTreeMap;
use std::sync::Arc;

use echelon_domain::chat::{ChatRequest, ChatResponse, Message, Role, Usage};
use echelon_domain::error::{ErrorClass, UpstreamError};
use echelon_domain::events::{Event, EventSink};
use echelon_domain::name::{InstanceId, ModelRef};
use echelon_domain::plan::{Outcome, RequestFacts, Step, Verdict};
use echelon_domain::ports::{Call, ChatBackend, ChunkStream};
use echelon_domain::random::SplitMix64;
use echelon_domain::routing::{RoutingTable, TableOptions};
use echelon_domain::secret::Secret;
use echelon_domain::spec::{
    BreakerPolicy, Cost, EchelonSpec, EchelonTarget, FallbackStrategy, GroupFallback, Limits,
    ModelSpec, ProviderKind, ProviderSpec, RequestDefaults, TaskGroupSpec, Topology, WrapperSpec,
    WrapperTarget,
};
use echelon_domain::time::{Clock, Instant};

/// The toy transport: the `flaky` provider always answers 503, `steady` answers politely.
struct ToyTransport;

impl ChatBackend for ToyTransport {
    fn complete(
        &self,
        call: Call<'_>,
    ) -> impl Future<Output = Result<ChatResponse, UpstreamError>> + Send {
        let answer = if call.instance.model.provider.as_str() == "flaky" {
            Err(UpstreamError::new(ErrorClass::Server, "service unavailable").with_status(503))
        } else {
            let mut response = ChatResponse::new(
                call.upstream_model.into(),
                Message::text(Role::Assistant, "hello from the steady upstream"),
            );
            response.usage = Some(Usage::new(call.request.estimated_input_tokens(), 6));
            Ok(response)
        };
        ready(answer)
    }

    fn stream(
        &self,
        _call: Call<'_>,
    ) -> impl Future<Output = Result<ChunkStream, UpstreamError>> + Send {
        ready(Err(UpstreamError::new(
            ErrorClass::InvalidRequest,
            "the toy transport does not stream",
        )))
    }

    fn probe(
        &self,
        _instance: &InstanceId,
    ) -> impl Future<Output = Result<(), UpstreamError>> + Send {
        ready(Ok(()))
    }
}

/// Runs a future that completes without waiting on anything (the toy transport's do).
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
    }
}

/// The process clock, as the domain's clock port.
struct SystemClock(std::time::Instant);

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::from_elapsed(self.0.elapsed())
    }
}

/// Prints breaker transitions and fallbacks as they happen.
struct PrintSink;

impl EventSink for PrintSink {
    fn record(&self, event: &Event) {
        if let Event::Fallback { to, .. } = event {
            println!("  event: falling back to {to}");
        }
    }
}

fn provider(name: &str) -> ProviderSpec {
    ProviderSpec {
        name: name.into(),
        kind: ProviderKind::Mock,
        base_url: format!("toy://{name}"),
        api_keys: vec![Secret::new("not-a-real-key")],
        headers: Vec::new(),
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(10),
        mock: None,
    }
}

fn model(provider: &str) -> ModelSpec {
    ModelSpec {
        model: ModelRef::new(provider, "chat"),
        upstream_name: format!("{provider}-chat-v1"),
        context_window: Some(32_000),
        limits: Limits::default(),
        cost: Cost::default(),
    }
}

fn echelon(name: &str, priority: u32, provider: &str) -> EchelonSpec {
    EchelonSpec {
        name: name.into(),
        priority,
        targets: vec![EchelonTarget::Model(ModelRef::new(provider, "chat"))],
        breaker: None,
        concurrency_limit: Some(8),
        rpm_limit: None,
        timeout: Duration::from_secs(10),
        first_token_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        max_retries: 0,
        retry_after_max_wait: Duration::from_secs(2),
        defaults: RequestDefaults::default(),
    }
}

fn topology() -> Topology {
    let mut t = Topology::default();
    for name in ["flaky", "steady"] {
        t.providers.insert(name.into(), provider(name));
        let m = model(name);
        t.models.insert(m.model.clone(), m);
    }
    t.task_groups.insert(
        "assist".into(),
        TaskGroupSpec {
            name: "assist".into(),
            fallback_strategy: FallbackStrategy::EchelonDown,
            breaker: BreakerPolicy::default(),
            fallback: GroupFallback {
                fallback_groups: Vec::new(),
                max_attempts: 3,
                retry_delay: Duration::from_millis(50),
                deadline: Duration::from_secs(30),
                content_filter_fallback: false,
            },
            echelons: vec![
                echelon("echelon1", 1, "flaky"),
                echelon("echelon2", 2, "steady"),
            ],
        },
    );
    t.wrappers = BTreeMap::from([(
        "assistant".into(),
        WrapperSpec {
            name: "assistant".into(),
            target: WrapperTarget::TaskGroup("assist".into()),
            description: Some("flaky first, steady as the fallback".into()),
        },
    )]);
    t
}

fn main() {
    let clock = SystemClock(std::time::Instant::now());
    let rng = SplitMix64::new(7);
    let options = TableOptions {
        sink: Arc::new(PrintSink),
        ..TableOptions::default()
    };
    let table = RoutingTable::build(Arc::new(topology()), None, options, clock.now());
    let transport = ToyTransport;

    let request = ChatRequest::new(vec![Message::text(Role::User, "Say hello.")]);
    let route = table
        .resolve("assistant")
        .expect("the wrapper is configured");
    let facts = RequestFacts {
        estimated_tokens: request.estimated_input_tokens(),
        now: clock.now(),
        deadline: None,
    };
    let mut plan = table.plan(&route, facts);
    println!("route {}", route.label());
    let mut answer = None;
    let verdict = loop {
        match plan.next(clock.now(), &rng) {
            Step::Attempt(attempt) => {
                let started = clock.now();
                let result = block_on(transport.complete(attempt.call(&request)));
                let latency = clock.now() - started;
                let outcome = match result {
                    Ok(response) => {
                        let usage = response.usage;
                        answer = Some(response);
                        Outcome::Success {
                            latency,
                            ttft: None,
                            usage,
                        }
                    }
                    Err(error) => Outcome::Failure { error, latency },
                };
                println!(
                    "  attempt {} -> {}",
                    attempt.label,
                    match &outcome {
                        Outcome::Success { .. } => "ok".to_owned(),
                        Outcome::Failure { error, .. } => error.to_string(),
                        Outcome::Cancelled => "cancelled".to_owned(),
                    }
                );
                plan.record(attempt, outcome, clock.now(), &rng);
            }
            Step::Wait { until, .. } => std::thread::sleep(until - clock.now()),
            Step::Done(verdict) => break verdict,
        }
    };
    match (&verdict, answer) {
        (Verdict::Served, Some(response)) => {
            println!(
                "served by {} after {} attempts: {}",
                response.model,
                plan.attempts().len(),
                response.message.joined_text()
            );
        }
        _ => {
            eprintln!("request failed: {verdict:?}");
            std::process::exit(1);
        }
    }
}
