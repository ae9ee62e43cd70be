//! The request engine over real sockets: `Gateway` + `ProviderBackends` + the fault-injecting
//! fake upstream on 127.0.0.1, through a two-echelon task group.
//!
//! Real I/O cannot run on paused time, so these tests use small real durations (hundreds of
//! milliseconds at most) and bound every test with a generous timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use echelon_application::backends::{BackendError, BackendFactory};
use echelon_application::gateway::{EngineOptions, FailedRequest, Gateway, ServeError};
use echelon_application::stream::{ResponseStream, StreamEvent};
use echelon_domain::breaker::BreakerState;
use echelon_domain::chat::{ChatRequest, Message, Role};
use echelon_domain::error::{ErrorClass, UpstreamError};
use echelon_domain::events::{BreakerScope, Event, EventSink, MemorySink};
use echelon_domain::name::ModelRef;
use echelon_domain::plan::{AttemptRecord, AttemptResult, Verdict};
use echelon_domain::ports::DynChatBackend;
use echelon_domain::random::SplitMix64;
use echelon_domain::routing::TableOptions;
use echelon_domain::secret::Secret;
use echelon_domain::spec::{
    BreakerPolicy, EchelonSpec, FallbackStrategy, GroupFallback, PoolSpec, ProviderKind,
    ProviderSpec, RotationStrategy, Topology,
};
use echelon_fake_upstream::{FakeUpstream, FakeUpstreamOptions};
use echelon_infrastructure::backend_factory::ProviderBackends;
use echelon_test_support as spec;
use echelon_test_support::snapshot::{self, instance_in as instance};
use futures_util::StreamExt as _;

use crate::support::CANARY;

/// The prompt; the fake echoes it, one word a chunk.
const PROMPT: &str = "one two three four five six seven";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn prompt() -> ChatRequest {
    ChatRequest::new(vec![Message::text(Role::User, PROMPT)])
}

/// Runs a test body under a hard bound: a hang fails the test instead of stalling the suite.
async fn bounded<T>(body: impl Future<Output = T>) -> T {
    bounded_by(Duration::from_secs(20), body).await
}

/// [`bounded`] with a bound of its own, for a test whose real work takes seconds.
async fn bounded_by<T>(limit: Duration, body: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, body)
        .await
        .expect("the test hung")
}

async fn fake() -> FakeUpstream {
    FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        FakeUpstreamOptions {
            max_hang: Duration::from_secs(5),
            shutdown_grace: ms(100),
            ..FakeUpstreamOptions::default()
        },
    )
    .await
    .unwrap()
}

/// A topology under construction: OpenAI-kind providers pointed at the fake upstream, each with
/// canary keys, and task groups with short real timeouts.
#[derive(Debug, Clone)]
struct Tree {
    base_url: String,
    backends: Arc<SharedBackends>,
    topology: Topology,
}

impl Tree {
    /// A provider with `keys` keys, all of them the canary.
    fn provider(mut self, name: &str, keys: usize) -> Self {
        let provider = ProviderSpec {
            kind: ProviderKind::Openai,
            base_url: self.base_url.clone(),
            api_keys: (0..keys).map(|_| Secret::new(CANARY)).collect(),
            request_timeout: Duration::from_secs(5),
            ..spec::provider(name, keys)
        };
        self.topology.providers.insert(name.into(), provider);
        self
    }

    /// `provider/model`, known upstream as `upstream` (which names the fake's faults).
    fn model(mut self, model: &str, upstream: &str, context_window: Option<u32>) -> Self {
        let model = spec::model(model, upstream, context_window);
        self.topology.models.insert(model.model.clone(), model);
        self
    }

    /// A round-robin pool of key 0 of each model, with default policies.
    fn pool(mut self, name: &str, models: &[&str]) -> Self {
        let instances = models
            .iter()
            .map(|m| spec::instance(&self.topology.models[&ModelRef::parse(m).unwrap()], 0, 1))
            .collect();
        let pool = spec::pool(name, RotationStrategy::RoundRobin, instances);
        self.topology.pools.insert(name.into(), pool);
        self
    }

    fn pool_mut(&mut self, name: &str) -> &mut PoolSpec {
        self.topology.pools.get_mut(name).unwrap()
    }

    /// Task group `name` with echelons `echelon1`, `echelon2`, … listing these targets: 400 ms a
    /// JSON attempt, 300 ms to the first token and between chunks, one retry of server errors,
    /// Retry-After waited up to one second, five seconds a request.
    fn group(mut self, name: &str, echelons: &[&[&str]]) -> Self {
        let echelons = spec::ladder(echelons)
            .into_iter()
            .map(|echelon| EchelonSpec {
                timeout: ms(400),
                first_token_timeout: ms(300),
                idle_timeout: ms(300),
                max_retries: 1,
                retry_after_max_wait: Duration::from_secs(1),
                ..echelon
            })
            .collect();
        let mut group = spec::group(name, FallbackStrategy::EchelonDown, echelons);
        group.fallback = GroupFallback {
            max_attempts: 6,
            retry_delay: ms(10),
            deadline: Duration::from_secs(5),
            ..group.fallback
        };
        self.topology.task_groups.insert(name.into(), group);
        self
    }

    /// The standard ladder: `alpha/primary` (upstream `primary`) above `beta/fallback`
    /// (upstream `fallback`), in group `duo`.
    fn duo(self, primary: &str, fallback: &str) -> Self {
        self.provider("alpha", 1)
            .provider("beta", 1)
            .model("alpha/primary", primary, None)
            .model("beta/fallback", fallback, None)
            .group("duo", &[&["alpha/primary"], &["beta/fallback"]])
    }

    fn gateway(self) -> Gateway {
        self.gateway_with_sink(Arc::new(MemorySink::new()))
    }

    fn gateway_with_sink(self, sink: Arc<dyn EventSink>) -> Gateway {
        let factory: Arc<dyn BackendFactory> = self.backends;
        gateway(self.topology, factory, sink)
    }
}

/// One test's world: the fake upstream and the provider clients its gateways share.
#[derive(Debug)]
struct Env {
    upstream: FakeUpstream,
    backends: Arc<SharedBackends>,
}

impl Env {
    async fn start() -> Self {
        Self {
            upstream: fake().await,
            backends: Arc::default(),
        }
    }

    /// An empty tree whose providers point at this test's fake upstream.
    fn tree(&self) -> Tree {
        Tree {
            base_url: self.upstream.base_url(),
            backends: Arc::clone(&self.backends),
            topology: Topology::default(),
        }
    }

    /// The standard two-echelon ladder of [`Tree::duo`].
    fn duo(&self, primary: &str, fallback: &str) -> Tree {
        self.tree().duo(primary, fallback)
    }

    async fn stop(self) {
        self.upstream.stop().await;
    }
}

/// [`ProviderBackends`], building each distinct provider spec once per test, so the many
/// gateways of one test share their clients and connection pools (as reloads do).
///
/// Building a client is synchronous and costs tens of milliseconds in a debug build (the
/// platform's trust store is read); built while other requests run, it would stall their
/// timers. The cache lives no longer than its test, because pooled connections belong to the
/// test's runtime.
#[derive(Default)]
struct SharedBackends {
    built: std::sync::Mutex<Vec<(ProviderSpec, Arc<dyn DynChatBackend>)>>,
}

impl std::fmt::Debug for SharedBackends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBackends").finish_non_exhaustive()
    }
}

impl BackendFactory for SharedBackends {
    fn build(&self, provider: &ProviderSpec) -> Result<Arc<dyn DynChatBackend>, BackendError> {
        let mut built = self.built.lock().unwrap();
        if let Some((_, backend)) = built.iter().find(|(spec, _)| spec == provider) {
            return Ok(Arc::clone(backend));
        }
        let backend = ProviderBackends.build(provider)?;
        built.push((provider.clone(), Arc::clone(&backend)));
        Ok(backend)
    }
}

fn gateway(
    topology: Topology,
    factory: Arc<dyn BackendFactory>,
    sink: Arc<dyn EventSink>,
) -> Gateway {
    Gateway::new(
        topology,
        factory,
        Arc::new(SplitMix64::new(11)),
        EngineOptions {
            table: TableOptions {
                sink,
                ..TableOptions::default()
            },
            request_timeout: Duration::from_secs(10),
        },
    )
    .unwrap()
}

/// Asserts that no instance or echelon holds a permit.
fn assert_idle(gateway: &Gateway, context: &str) {
    snapshot::assert_idle(&gateway.snapshot(), context);
}

fn failure<T: std::fmt::Debug>(result: Result<T, ServeError>) -> FailedRequest {
    match result {
        Err(ServeError::Failed(f)) => *f,
        other => panic!("expected a failed request, got {other:?}"),
    }
}

/// A drained stream: its text, its failure events, whether it ended normally.
#[derive(Debug)]
struct Drained {
    text: String,
    failures: Vec<UpstreamError>,
    finished: bool,
    failure_last: bool,
}

async fn drain(mut stream: ResponseStream) -> Drained {
    let mut out = Drained {
        text: String::new(),
        failures: Vec::new(),
        finished: false,
        failure_last: false,
    };
    while let Some(event) = stream.next().await {
        out.failure_last = matches!(event, StreamEvent::Failed(_));
        match event {
            StreamEvent::Chunk(c) => {
                out.text.push_str(c.content.as_deref().unwrap_or(""));
                out.finished |= c.finish_reason.is_some();
            }
            StreamEvent::Failed(e) => out.failures.push(e),
        }
    }
    out
}

/// What the caller must see for a fault of the primary.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// The complete answer, from the fallback.
    Fallback,
    /// The complete answer, from the primary (the fault does not apply to this mode).
    Primary,
    /// The upstream's own rejection, as it is (HTTP 400-ish), with no fallback.
    Rejected(ErrorClass),
    /// Streams only: part of the answer, then exactly one failure event and no normal end.
    Broken(ErrorClass),
}

/// One row: the primary's faults, how many requests the primary gets, what the caller sees.
type Row = (&'static str, u64, Expect);

/// The upstream model names of a row: they carry the row number and mode, so that the fake's
/// counts are per row.
fn row_names(row: usize, faults: &str, stream: bool) -> (String, String) {
    let mode = if stream { "stream" } else { "json" };
    (
        format!("r{row}-{mode}+{faults}"),
        format!("fallback-{row}-{mode}"),
    )
}

/// The gateways of a table of rows, one each. They are built before any row runs: building the
/// HTTP clients is synchronous and slow enough (the platform's trust store is read) to stall the
/// other rows' timers if done while they run.
fn row_gateways(env: &Env, rows: &[Row], stream: bool) -> Vec<Gateway> {
    rows.iter()
        .enumerate()
        .map(|(i, (faults, _, _))| {
            let (primary, fallback) = row_names(i, faults, stream);
            env.duo(&primary, &fallback).gateway()
        })
        .collect()
}

/// What the caller of a served request got.
#[derive(Debug)]
struct Answer {
    /// The model the engine says answered.
    model: String,
    attempts: Vec<AttemptRecord>,
    drained: Drained,
}

/// Serves one request, as JSON or as a stream, and collects what the caller got.
async fn ask(gateway: &Gateway, stream: bool) -> Result<Answer, ServeError> {
    if stream {
        let served = gateway.stream("group:duo", prompt()).await?;
        Ok(Answer {
            model: served.model.to_string(),
            attempts: served.attempts,
            drained: drain(served.value).await,
        })
    } else {
        let served = gateway.complete("group:duo", prompt()).await?;
        assert_eq!(
            served.model, served.value.model,
            "the served model is the answer's"
        );
        Ok(Answer {
            model: served.model.to_string(),
            attempts: served.attempts,
            drained: Drained {
                text: served.value.message.joined_text(),
                failures: Vec::new(),
                finished: served.value.finish_reason.is_some(),
                failure_last: false,
            },
        })
    }
}

/// Runs one row on its own gateway and checks what the caller saw and what the upstream got.
async fn run_row(
    upstream: &FakeUpstream,
    gateway: &Gateway,
    row: usize,
    (faults, primary_calls, expect): Row,
    stream: bool,
) {
    let (primary, fallback) = row_names(row, faults, stream);
    let started = tokio::time::Instant::now();
    let outcome = ask(gateway, stream).await;
    let elapsed = started.elapsed();
    let mode = if stream { "stream" } else { "json" };
    let context = format!("{faults} ({mode}) {outcome:?}");
    // Bounded well within the request deadline: no fault makes the caller wait for long.
    assert!(
        elapsed < Duration::from_secs(3),
        "{context}: took {elapsed:?}"
    );
    let fallback_calls = u64::from(expect == Expect::Fallback);
    assert_eq!(
        (upstream.requests(&primary), upstream.requests(&fallback)),
        (primary_calls, fallback_calls),
        "{context}: upstream requests of the primary and the fallback"
    );
    match expect {
        Expect::Fallback | Expect::Primary => {
            let answered = if expect == Expect::Fallback {
                &fallback
            } else {
                &primary
            };
            let answer = outcome.unwrap_or_else(|e| panic!("{context}: {e}"));
            let drained = &answer.drained;
            assert_eq!(drained.text, PROMPT, "{context}: the complete answer");
            assert!(drained.failures.is_empty(), "{context}");
            assert!(drained.finished, "{context}: a normal end");
            assert_eq!(
                &answer.model, answered,
                "{context}: the model that answered"
            );
            assert_eq!(
                answer.attempts.len() as u64,
                primary_calls + fallback_calls,
                "{context}"
            );
        }
        Expect::Rejected(class) => {
            let f = failure(outcome);
            match &f.verdict {
                Verdict::Rejected(e) => assert_eq!(e.class, class, "{context}"),
                other => panic!("{context}: {other:?}"),
            }
            assert_eq!(f.attempts.len(), 1, "{context}");
        }
        Expect::Broken(class) => {
            let drained = outcome.unwrap_or_else(|e| panic!("{context}: {e}")).drained;
            assert!(
                PROMPT.starts_with(&drained.text) && drained.text.len() < PROMPT.len(),
                "{context}: a strict prefix of the answer"
            );
            assert!(!drained.text.is_empty(), "{context}: content came first");
            assert_eq!(drained.failures.len(), 1, "{context}");
            assert_eq!(drained.failures[0].class, class, "{context}");
            assert!(
                drained.failure_last,
                "{context}: the failure ends the stream"
            );
            assert!(!drained.finished, "{context}: never a normal end");
        }
    }
    assert_idle(gateway, &context);
}

/// Faults that a JSON and a streamed request meet alike: the same requests of the primary, the
/// same outcome.
const EITHER_MODE: [Row; 13] = [
    ("ok", 1, Expect::Primary),
    // Server errors: one attempt and one retry (max_retries = 1), then the fallback.
    ("fail-500", 2, Expect::Fallback),
    ("fail-503", 2, Expect::Fallback),
    ("fail-529", 2, Expect::Fallback),
    // Timeouts and resets are never retried in place.
    ("hang", 1, Expect::Fallback),
    ("slow-first-token-2s", 1, Expect::Fallback),
    ("reset", 1, Expect::Fallback),
    ("fail-401", 1, Expect::Fallback),
    // A Retry-After longer than retry_after_max_wait: move on at once.
    ("429-retry-30", 1, Expect::Fallback),
    ("fail-400", 1, Expect::Rejected(ErrorClass::InvalidRequest)),
    ("fail-422", 1, Expect::Rejected(ErrorClass::InvalidRequest)),
    (
        "content-filter",
        1,
        Expect::Rejected(ErrorClass::ContentFilter),
    ),
    // No larger context window anywhere: returned as it is.
    (
        "context-length",
        1,
        Expect::Rejected(ErrorClass::ContextLength),
    ),
];

/// Runs the rows of [`EITHER_MODE`] and `rows` at once, each through its own two-echelon
/// gateway, as JSON or streamed requests.
async fn every_fault(rows: &[Row], stream: bool) {
    crate::support::init_tracing();
    let rows = [&EITHER_MODE[..], rows].concat();
    bounded(async {
        let env = Env::start().await;
        let gateways = row_gateways(&env, &rows, stream);
        let runs = rows
            .iter()
            .zip(&gateways)
            .enumerate()
            .map(|(i, (row, gateway))| run_row(&env.upstream, gateway, i, *row, stream));
        // A few rows at a time: all of them at once on a loaded machine (the whole suite runs
        // in parallel on two cores) starve the healthy rows past their 400 ms attempt time.
        futures_util::StreamExt::collect::<Vec<()>>(futures_util::StreamExt::buffer_unordered(
            futures_util::stream::iter(runs),
            4,
        ))
        .await;
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fault_of_the_primary_through_two_echelons_json() {
    let json_only: [Row; 8] = [
        ("fail-502", 2, Expect::Fallback),
        ("fail-504", 1, Expect::Fallback),
        ("latency-2s", 1, Expect::Fallback),
        // Cuts and garbage are never retried in place either.
        ("cut-after-2", 1, Expect::Fallback),
        ("stall-after-2", 1, Expect::Fallback),
        ("malformed-after-1", 1, Expect::Fallback),
        ("fail-403", 1, Expect::Fallback),
        // Stream-only faults do not touch a JSON answer.
        ("no-done+error-after-1", 1, Expect::Primary),
    ];
    every_fault(&json_only, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fault_of_the_primary_through_two_echelons_streaming() {
    let stream_only: [Row; 11] = [
        ("chunk-delay-20ms", 1, Expect::Primary),
        // Failures before the first content token still fail over.
        ("cut-after-0", 1, Expect::Fallback),
        ("stall-after-0", 1, Expect::Fallback),
        ("malformed-after-0", 1, Expect::Fallback),
        // A server error event before any content is retried like a 5xx.
        ("error-after-0", 2, Expect::Fallback),
        // After the first content token: one failure event, no normal end, no fallback.
        ("cut-after-3", 1, Expect::Broken(ErrorClass::Connect)),
        ("stall-after-2", 1, Expect::Broken(ErrorClass::Timeout)),
        ("malformed-after-1", 1, Expect::Broken(ErrorClass::Connect)),
        ("error-after-2", 1, Expect::Broken(ErrorClass::Server)),
        ("chunk-delay-1s", 1, Expect::Broken(ErrorClass::Timeout)),
        // Every word and the finish reason arrived, then a clean close without the end
        // marker: a complete answer.
        ("no-done", 1, Expect::Primary),
    ];
    every_fault(&stream_only, true).await;
}

#[tokio::test]
async fn a_content_policy_refusal_moves_on_only_where_the_group_asks_for_it() {
    crate::support::init_tracing();
    bounded(async {
        let env = Env::start().await;
        let upstream = &env.upstream;
        // By default the refusal is the answer, returned as it is.
        let gateway = env.duo("content-filter", "fallback-a").gateway();
        let refused = failure(gateway.complete("group:duo", prompt()).await);
        assert!(
            matches!(&refused.verdict, Verdict::Rejected(e) if e.class == ErrorClass::ContentFilter),
            "{:?}",
            refused.verdict
        );
        assert_eq!(upstream.requests("fallback-a"), 0);
        // With content_filter_fallback, the next echelon answers instead.
        let mut tree = env.duo("content-filter", "fallback-a");
        tree.topology
            .task_groups
            .get_mut("duo")
            .unwrap()
            .fallback
            .content_filter_fallback = true;
        let served = tree.gateway().complete("group:duo", prompt()).await.unwrap();
        assert_eq!(&*served.model, "fallback-a");
        assert_eq!(served.value.message.joined_text(), PROMPT);
        assert_eq!(upstream.requests("content-filter"), 2, "one per gateway");
        assert_eq!(upstream.requests("fallback-a"), 1);
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_retry_after_is_waited_out_and_a_long_one_is_not() {
    crate::support::init_tracing();
    bounded(async {
        let env = Env::start().await;
        let upstream = &env.upstream;
        // 250 ms is within retry_after_max_wait (1 s), and nothing else in echelon1 can serve:
        // wait, retry once, then fall down when it is still rate limited.
        let gateway = env.duo("short+429-retry-ms-250", "fallback-a").gateway();
        let started = tokio::time::Instant::now();
        let served = gateway.complete("group:duo", prompt()).await.unwrap();
        let elapsed = started.elapsed();
        assert!(
            elapsed >= ms(250),
            "the Retry-After was honoured: {elapsed:?}"
        );
        assert!(elapsed < ms(1_500), "{elapsed:?}");
        assert_eq!(upstream.requests("short+429-retry-ms-250"), 2);
        assert_eq!(upstream.requests("fallback-a"), 1);
        assert_eq!(&*served.model, "fallback-a");
        let a = instance(&gateway.snapshot(), "alpha/primary#0");
        assert_eq!(a.stats.rate_limited, 2);
        assert_eq!(
            a.health,
            echelon_domain::health::HealthState::Healthy,
            "429s are not failures"
        );

        // The same through the Retry-After header in seconds, and the reset header.
        for faults in ["secs+429-retry-1", "hdr+429-reset-300ms"] {
            let fallback = format!("fallback-{}", faults.len());
            let gateway = env.duo(faults, &fallback).gateway();
            let started = tokio::time::Instant::now();
            gateway.complete("group:duo", prompt()).await.unwrap();
            let wait = if faults.starts_with("secs") {
                ms(1_000)
            } else {
                ms(300)
            };
            assert!(
                started.elapsed() >= wait,
                "{faults}: {:?}",
                started.elapsed()
            );
            assert_eq!(upstream.requests(faults), 2, "{faults}");
            assert_eq!(upstream.requests(&fallback), 1, "{faults}");
        }

        // Everything rate limited for long: 429 at once, with the earliest Retry-After.
        let gateway = env.duo("long+429-retry-30", "also+429-retry-20").gateway();
        let started = tokio::time::Instant::now();
        let f = failure(gateway.complete("group:duo", prompt()).await);
        assert!(started.elapsed() < ms(500));
        let Verdict::RateLimited { retry_after } = f.verdict else {
            panic!("{:?}", f.verdict);
        };
        assert!(
            retry_after > Duration::from_secs(19) && retry_after <= Duration::from_secs(20),
            "{retry_after:?}"
        );
        assert_eq!(upstream.requests("long+429-retry-30"), 1);
        assert_eq!(upstream.requests("also+429-retry-20"), 1);
        // While both cool down, the next request costs no upstream call.
        let f = failure(gateway.complete("group:duo", prompt()).await);
        assert!(matches!(f.verdict, Verdict::RateLimited { .. }));
        assert!(f.attempts.is_empty());
        assert_eq!(upstream.total_requests(), 3 + 6 + 2);
        assert_idle(&gateway, "rate limits");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_length_moves_only_to_a_larger_context_target() {
    crate::support::init_tracing();
    bounded(async {
        let env = Env::start().await;
        let upstream = &env.upstream;
        let tree = env
            .tree()
            .provider("alpha", 1)
            .provider("beta", 1)
            .model("alpha/small", "small+context-length", Some(8_192))
            .model("beta/same", "same+context-length", Some(8_192))
            .model("beta/large", "large-128k", Some(128_000))
            .group("long", &[&["alpha/small"], &["beta/same", "beta/large"]]);
        let gateway = tree.gateway();
        for _ in 0..2 {
            let served = gateway.complete("group:long", prompt()).await.unwrap();
            assert_eq!(&*served.model, "large-128k");
            assert_eq!(
                served
                    .attempts
                    .iter()
                    .map(|a| (a.instance.to_string(), a.result.clone()))
                    .collect::<Vec<_>>(),
                [
                    (
                        "alpha/small#0".to_owned(),
                        AttemptResult::Failed {
                            class: ErrorClass::ContextLength,
                            status: Some(400)
                        }
                    ),
                    ("beta/large#0".to_owned(), AttemptResult::Success),
                ]
            );
        }
        assert_eq!(upstream.requests("small+context-length"), 2);
        assert_eq!(upstream.requests("same+context-length"), 0);
        assert_eq!(upstream.requests("large-128k"), 2);
        assert_idle(&gateway, "context length");
        env.stop().await;
    })
    .await;
}

/// The instance breaker transitions of `id` in an event log.
fn breaker_moves(events: &[Event], id: &str) -> Vec<(BreakerState, BreakerState)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Breaker {
                scope: BreakerScope::Instance(i),
                from,
                to,
                ..
            } if i.to_string() == id => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_primary_opens_its_breaker_and_half_open_probes_close_it() {
    crate::support::init_tracing();
    bounded(async {
        // The primary answers 503 for its first two seconds of life, then recovers.
        let env = Env::start().await;
        let upstream = &env.upstream;
        let down_until = tokio::time::Instant::now() + Duration::from_secs(2);
        let primary = "primary+fail-for-2s";
        let mut tree = env
            .tree()
            .provider("alpha", 1)
            .provider("beta", 1)
            .model("alpha/primary", primary, None)
            .model("beta/fallback", "fallback", None)
            .pool("primaries", &["alpha/primary"])
            .group("duo", &[&["pool:primaries"], &["beta/fallback"]]);
        tree.topology.task_groups.get_mut("duo").unwrap().echelons[0].max_retries = 0;
        let pool = tree.pool_mut("primaries");
        pool.breaker = BreakerPolicy {
            failure_threshold: 2,
            recovery_time: ms(400),
            max_recovery_time: ms(400),
            half_open_requests: 1,
            failure_rate: None,
        };
        // Health stays out of the way: this test is about the breaker.
        pool.health.failure_threshold = 1_000;
        let sink = Arc::new(MemorySink::new());
        let gateway = tree.gateway_with_sink(sink.clone());
        let id = "alpha/primary#0";
        let served_by = |model: &Arc<str>| model.to_string();

        // Two failures open the breaker; the fallback answers both requests.
        for _ in 0..2 {
            let served = gateway.complete("group:duo", prompt()).await.unwrap();
            assert_eq!(served_by(&served.model), "fallback");
        }
        assert_eq!(upstream.requests(primary), 2);
        let open = instance(&gateway.snapshot(), id);
        assert_eq!(open.breaker, BreakerState::Open);
        // While open, the primary gets no traffic at all.
        let served = gateway.complete("group:duo", prompt()).await.unwrap();
        assert_eq!(served_by(&served.model), "fallback");
        assert_eq!(
            upstream.requests(primary),
            2,
            "an open breaker sends nothing"
        );

        // After the open time, one trial; the primary is still down, so it re-opens.
        let until = gateway.clock().to_tokio(open.open_until.unwrap());
        tokio::time::sleep_until(until + ms(10)).await;
        assert!(
            tokio::time::Instant::now() < down_until,
            "the trial must hit the outage"
        );
        let served = gateway.complete("group:duo", prompt()).await.unwrap();
        assert_eq!(served_by(&served.model), "fallback");
        assert_eq!(upstream.requests(primary), 3, "exactly one trial");
        let reopened = instance(&gateway.snapshot(), id);
        assert_eq!(reopened.breaker, BreakerState::Open);

        // Once the primary is back and the breaker admits a trial, the trial closes it.
        let until = gateway.clock().to_tokio(reopened.open_until.unwrap());
        tokio::time::sleep_until(until.max(down_until) + ms(50)).await;
        for _ in 0..2 {
            let served = gateway.complete("group:duo", prompt()).await.unwrap();
            assert_eq!(served_by(&served.model), primary);
        }
        assert_eq!(
            instance(&gateway.snapshot(), id).breaker,
            BreakerState::Closed
        );
        assert_eq!(upstream.requests(primary), 5);
        assert_eq!(upstream.requests("fallback"), 4);
        use BreakerState::{Closed, HalfOpen, Open};
        assert_eq!(
            breaker_moves(&sink.take(), id),
            [
                (Closed, Open),
                (Open, HalfOpen),
                (HalfOpen, Open),
                (Open, HalfOpen),
                (HalfOpen, Closed)
            ]
        );
        assert_idle(&gateway, "breaker");
        env.stop().await;
    })
    .await;
}

// One thread (the runtime's, which also serves the fake upstream), and no log formatting on it:
// formatting 10,000 requests for the binary-wide TRACE subscriber doubles the run time, and logs
// are not what this test is about (the canary test checks them). The scoped subscriber only
// silences this thread; every other test keeps logging to the global one. It takes a few seconds
// on an idle machine and four times that on a loaded one, so its hang bound is a minute.
#[tokio::test]
async fn one_flaky_instance_of_three_costs_no_client_an_error_over_10_000_requests() {
    crate::support::init_tracing();
    let _quiet = tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
    bounded_by(Duration::from_secs(60), async {
        let env = Env::start().await;
        let upstream = &env.upstream;
        let flaky = "flaky+error-rate-50";
        let mut tree = env
            .tree()
            .provider("alpha", 1)
            .model("alpha/one", "one", None)
            .model("alpha/two", "two", None)
            .model("alpha/flaky", flaky, None)
            .pool("trio", &["alpha/one", "alpha/two", "alpha/flaky"])
            .group("chat", &[&["pool:trio"]]);
        let group = tree.topology.task_groups.get_mut("chat").unwrap();
        group.echelons[0].max_retries = 0;
        // Time is not what this test is about: on a loaded machine 50 concurrent requests on one
        // thread can wait longer than the ladder's 400 ms attempt timeout for their turn, and a
        // timeout is a failure. Generous bounds keep the count about the flaky instance.
        group.echelons[0].timeout = Duration::from_secs(10);
        group.echelons[0].first_token_timeout = Duration::from_secs(10);
        group.fallback.deadline = Duration::from_secs(30);
        // Short rests, so the flaky instance keeps coming back into rotation.
        let pool = tree.pool_mut("trio");
        pool.health.recovery_time = ms(20);
        pool.breaker.recovery_time = ms(20);
        pool.breaker.max_recovery_time = ms(50);
        let gateway = Arc::new(tree.gateway());

        const REQUESTS: usize = 10_000;
        const CONCURRENCY: usize = 50;
        let started = std::time::Instant::now();
        let mut errors = Vec::new();
        for _ in 0..REQUESTS / CONCURRENCY {
            let batch = (0..CONCURRENCY).map(|_| {
                let gateway = Arc::clone(&gateway);
                tokio::spawn(async move {
                    gateway
                        .complete("group:chat", prompt())
                        .await
                        .map(|served| served.value.message.joined_text())
                })
            });
            for result in futures_util::future::join_all(batch).await {
                match result.unwrap() {
                    Ok(text) => assert_eq!(text, PROMPT),
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
        let elapsed = started.elapsed();
        let snapshot = gateway.snapshot();
        let stats = |id: &str| instance(&snapshot, id).stats;
        let (one, two, bad) = (
            stats("alpha/one#0"),
            stats("alpha/two#0"),
            stats("alpha/flaky#0"),
        );
        println!(
            "{REQUESTS} requests at concurrency {CONCURRENCY} in {elapsed:?}: {} client errors; \
             flaky instance: {} attempts, {} failures; upstream requests: {}",
            errors.len(),
            bad.attempts,
            bad.failures,
            upstream.total_requests()
        );
        assert!(
            errors.is_empty(),
            "{} client-visible errors: {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        );
        assert_eq!(
            one.successes + two.successes + bad.successes,
            REQUESTS as u64
        );
        assert!(
            bad.failures > 0 && bad.attempts >= 500,
            "the flaky instance stayed in rotation: {bad:?}"
        );
        // Exact accounting: every upstream request is an attempt the engine planned.
        assert_eq!(upstream.requests(flaky), bad.attempts);
        assert_eq!(upstream.requests("one"), one.attempts);
        assert_eq!(upstream.requests("two"), two.attempts);
        assert_eq!(
            upstream.total_requests(),
            REQUESTS as u64 + bad.failures + one.failures + two.failures
        );
        assert_idle(&gateway, "10k");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_requests_and_streams_leave_every_permit_free() {
    crate::support::init_tracing();
    // Boxed: the body holds several gateways and request futures at once.
    bounded(Box::pin(async {
        let env = Env::start().await;
        let upstream = &env.upstream;
        // A hanging primary; the caller gives up before its 400 ms timeout.
        let gateway = env.duo("c1+hang", "fallback-c1").gateway();
        let gone = tokio::time::timeout(ms(100), gateway.complete("group:duo", prompt())).await;
        assert!(gone.is_err());
        assert_idle(&gateway, "complete dropped mid-attempt");
        let a = instance(&gateway.snapshot(), "alpha/primary#0");
        assert_eq!((a.stats.failures, a.stats.cancelled), (0, 1));
        assert_eq!(upstream.requests("fallback-c1"), 0);

        // A stream dropped before its first token, and one dropped mid-way.
        let gateway = env
            .duo("c2+slow-first-token-200ms", "fallback-c2")
            .gateway();
        let gone = tokio::time::timeout(ms(100), gateway.stream("group:duo", prompt())).await;
        assert!(gone.is_err());
        assert_idle(&gateway, "stream dropped before its first token");

        let gateway = env.duo("c3+chunk-delay-50ms", "fallback-c3").gateway();
        let served = gateway.stream("group:duo", prompt()).await.unwrap();
        let mut stream = served.value;
        let mut text = String::new();
        while text != "one two " {
            match stream.next().await.unwrap() {
                StreamEvent::Chunk(c) => text.push_str(c.content.as_deref().unwrap_or("")),
                StreamEvent::Failed(e) => panic!("{e}"),
            }
        }
        assert_eq!(
            instance(&gateway.snapshot(), "alpha/primary#0").in_flight,
            1
        );
        drop(stream);
        assert_idle(&gateway, "stream dropped mid-way");
        let a = instance(&gateway.snapshot(), "alpha/primary#0");
        assert_eq!((a.stats.failures, a.stats.cancelled), (0, 1));

        // Faults of every kind at once, each request abandoned at a different point.
        let gateway = env
            .duo(
                "c4+chunk-delay-10ms+latency-20ms",
                "fallback-c4+slow-first-token-30ms",
            )
            .gateway();
        let gateway = Arc::new(gateway);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..40u64 {
            let gateway = Arc::clone(&gateway);
            tasks.spawn(async move {
                let give_up = ms(i * 4);
                if i % 2 == 0 {
                    let _ = tokio::time::timeout(give_up, gateway.complete("group:duo", prompt()))
                        .await;
                } else {
                    let _ = tokio::time::timeout(give_up, async {
                        if let Ok(served) = gateway.stream("group:duo", prompt()).await {
                            drain(served.value).await;
                        }
                    })
                    .await;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        assert_idle(&gateway, "abandoned at random points");
        env.stop().await;
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_key_never_leaks_through_the_engine() {
    crate::support::init_tracing();
    // Boxed: the whole run is one large future (clippy::large_futures).
    Box::pin(bounded(async {
        let env = Env::start().await;
        let mut texts = Vec::new();
        for (i, faults) in [
            "leak-key",
            "fail-401",
            "fail-500",
            "reset",
            "hang",
            "context-length",
            "content-filter",
            "429-retry-30",
        ]
        .into_iter()
        .enumerate()
        {
            // Both echelons fail the same way, so the error reaches the caller.
            let gateway = env
                .duo(&format!("k{i}a+{faults}"), &format!("k{i}b+{faults}"))
                .gateway();
            let e = gateway.complete("group:duo", prompt()).await.unwrap_err();
            texts.push(e.to_string());
            texts.push(format!("{e:?}"));
            if let ServeError::Failed(f) = &e
                && let Verdict::Rejected(u)
                | Verdict::Exhausted {
                    last_error: Some(u),
                } = &f.verdict
            {
                texts.push(u.to_string());
            }
            let e = gateway.stream("group:duo", prompt()).await.unwrap_err();
            texts.push(format!("{e:?}"));
            texts.push(format!("{:?}", gateway.snapshot()));
        }
        for faults in ["cut-after-2", "malformed-after-1", "error-after-1"] {
            let gateway = env.duo(faults, "unused").gateway();
            let served = gateway.stream("group:duo", prompt()).await.unwrap();
            texts.push(format!("{:?}", served.attempts));
            let drained = drain(served.value).await;
            assert_eq!(drained.failures.len(), 1);
            texts.push(format!("{drained:?}"));
            texts.push(drained.failures[0].to_string());
        }
        assert!(
            texts.iter().any(|t| t.contains("[redacted]")),
            "the leak-key upstream's quote was redacted"
        );
        for text in &texts {
            assert!(!text.contains(CANARY), "canary in: {text}");
        }
        let logs = crate::support::logs().contents();
        assert!(logs.contains("request failed"), "engine logs were captured");
        assert!(!logs.contains(CANARY), "canary in the logs");
        env.stop().await;
    }))
    .await;
}
