//! Shared fixtures of the engine tests: a topology builder, a scripted in-process chat backend
//! that counts calls and live upstream calls, and a gateway harness.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use echelon_application::backends::{BackendError, BackendFactory};
use echelon_application::gateway::{EngineOptions, FailedRequest, Gateway, ServeError, Served};
use echelon_application::stream::{ResponseStream, StreamEvent};
use echelon_domain::chat::{
    ChatRequest, ChatResponse, FinishReason, Message, Role, StreamChunk, Usage,
};
use echelon_domain::error::{ErrorClass, UpstreamError};
use echelon_domain::events::MemorySink;
use echelon_domain::name::{InstanceId, ModelRef};
use echelon_domain::plan::AttemptResult;
use echelon_domain::ports::{Call, ChatBackend, ChunkStream, DynChatBackend};
use echelon_domain::random::SplitMix64;
use echelon_domain::routing::{InstanceSnapshot, TableOptions, TableSnapshot};
use echelon_domain::spec::{
    EchelonSpec, FallbackStrategy, PoolSpec, ProviderSpec, RotationStrategy, TaskGroupSpec,
    Topology,
};
use echelon_test_support::{self as spec, snapshot};
use futures_util::StreamExt as _;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn request() -> ChatRequest {
    ChatRequest::new(vec![Message::text(Role::User, "hello")])
}

/// A topology under construction. Models are `provider/model`; their upstream name is
/// `model-up` unless given.
#[derive(Debug, Default, Clone)]
pub struct Builder {
    pub topology: Topology,
}

impl Builder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Providers `a` (with `keys_a` keys) and `b` (one key), and their models `a/m` and `b/m`.
    pub fn two_models(keys_a: usize) -> Self {
        Self::new()
            .provider("a", keys_a)
            .provider("b", 1)
            .model("a/m", None)
            .model("b/m", None)
    }

    /// [`Self::two_models`] in group `g`: `echelon1` = `a/m`, `echelon2` = `b/m`.
    pub fn two_echelons(keys_a: usize) -> Self {
        Self::two_models(keys_a).group("g", &[&["a/m"], &["b/m"]])
    }

    /// A provider with `keys` keys.
    pub fn provider(mut self, name: &str, keys: usize) -> Self {
        self.topology
            .providers
            .insert(name.into(), spec::provider(name, keys));
        self
    }

    /// A model with the given context window.
    pub fn model(mut self, model: &str, context_window: Option<u32>) -> Self {
        let upstream = format!("{}-up", ModelRef::parse(model).unwrap().model);
        let spec = spec::model(model, &upstream, context_window);
        self.topology.models.insert(spec.model.clone(), spec);
        self
    }

    /// A pool of `(model, key)` members with weight one, round robin, default policies.
    pub fn pool(mut self, name: &str, members: &[(&str, u16)]) -> Self {
        let instances = members
            .iter()
            .map(|(model, key)| {
                let model = &self.topology.models[&ModelRef::parse(model).unwrap()];
                spec::instance(model, *key, 1)
            })
            .collect();
        let pool = spec::pool(name, RotationStrategy::RoundRobin, instances);
        self.topology.pools.insert(name.into(), pool);
        self
    }

    pub fn pool_mut(&mut self, name: &str) -> &mut PoolSpec {
        self.topology.pools.get_mut(name).unwrap()
    }

    /// A task group `name` whose echelons (`echelon1`, `echelon2`, …) list these targets.
    pub fn group(mut self, name: &str, echelons: &[&[&str]]) -> Self {
        let group = spec::group(name, FallbackStrategy::EchelonDown, spec::ladder(echelons));
        self.topology.task_groups.insert(name.into(), group);
        self
    }

    pub fn group_mut(&mut self, name: &str) -> &mut TaskGroupSpec {
        self.topology.task_groups.get_mut(name).unwrap()
    }

    /// Changes every echelon of every group.
    pub fn echelons(mut self, mut change: impl FnMut(&mut EchelonSpec)) -> Self {
        for group in self.topology.task_groups.values_mut() {
            group.echelons.iter_mut().for_each(&mut change);
        }
        self
    }

    pub fn build(self) -> Topology {
        self.topology
    }
}

/// What a scripted upstream does with one call.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A clean answer: JSON, or a stream of a role chunk, two words and a finish chunk.
    Answer,
    /// Fails before answering (before the stream's headers for a stream).
    Fail(UpstreamError),
    /// Never answers.
    Hang,
    /// Waits, then does the rest.
    After(Duration, Box<Reply>),
    /// A stream that is accepted and then delivers these pieces (a complete call gets the text).
    Stream(Vec<Piece>),
}

/// One step of a scripted stream.
#[derive(Debug, Clone)]
pub enum Piece {
    /// A role-only chunk (no content).
    Role,
    /// A content chunk.
    Text(&'static str),
    /// A pause.
    Sleep(Duration),
    /// An error item (a cut, a malformed chunk, an error event).
    Fail(UpstreamError),
    /// Silence forever.
    Hang,
    /// The finish chunk with usage.
    Finish,
}

pub fn fail(class: ErrorClass, status: Option<u16>) -> UpstreamError {
    let e = UpstreamError::new(class, "scripted failure");
    match status {
        Some(s) => e.with_status(s),
        None => e,
    }
}

pub fn server_error() -> Reply {
    Reply::Fail(fail(ErrorClass::Server, Some(500)))
}

pub fn rate_limited(retry_after: Duration) -> Reply {
    Reply::Fail(fail(ErrorClass::RateLimited, Some(429)).with_retry_after(retry_after))
}

pub fn answer_stream() -> Vec<Piece> {
    vec![
        Piece::Role,
        Piece::Text("hello "),
        Piece::Text("world"),
        Piece::Finish,
    ]
}

/// Decrements the live-call counter when the upstream call (or its stream) is dropped.
struct Live(Arc<AtomicUsize>);

impl Live {
    fn start(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(count))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An in-process upstream for every provider: replies follow per-model (or per-instance)
/// scripts, every call is counted, and calls still running are tracked so a test can see that
/// a cancelled request really dropped its upstream call.
#[derive(Debug, Default)]
pub struct ScriptBackend {
    scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
    calls: Mutex<Vec<(InstanceId, bool)>>,
    requests: Mutex<Vec<ChatRequest>>,
    live: Arc<AtomicUsize>,
}

impl ScriptBackend {
    /// Replies for every key of `model` (`provider/model`), in order; the last one repeats.
    pub fn on(&self, model: &str, replies: impl IntoIterator<Item = Reply>) {
        let queue: VecDeque<_> = replies.into_iter().collect();
        assert!(!queue.is_empty(), "a script needs at least one reply");
        self.scripts.lock().unwrap().insert(model.to_owned(), queue);
    }

    /// Replies for one instance (`provider/model#key`); takes precedence over [`Self::on`].
    pub fn on_key(&self, instance: &str, replies: impl IntoIterator<Item = Reply>) {
        self.on(instance, replies);
    }

    fn next_reply(&self, call: Call<'_>, stream: bool) -> Reply {
        let instance = call.instance;
        self.calls.lock().unwrap().push((instance.clone(), stream));
        self.requests.lock().unwrap().push(call.request.clone());
        let mut scripts = self.scripts.lock().unwrap();
        let key = instance.to_string();
        let key = if scripts.contains_key(&key) {
            key
        } else {
            instance.model.to_string()
        };
        match scripts.get_mut(&key) {
            None => Reply::Answer,
            Some(q) if q.len() > 1 => q.pop_front().unwrap(),
            Some(q) => q.front().cloned().unwrap(),
        }
    }

    /// Calls received by `provider/model#key`, or by every key of `provider/model`.
    pub fn calls(&self, target: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(id, _)| id.to_string() == target || id.model.to_string() == target)
            .count()
    }

    /// The requests received, in order, as the upstream saw them.
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Every call received.
    pub fn total_calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// Upstream calls (and open streams) not dropped yet.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
}

fn chunk(model: &str) -> StreamChunk {
    StreamChunk {
        id: Some("chatcmpl-scripted".into()),
        model: Some(Arc::from(model)),
        ..StreamChunk::default()
    }
}

fn stream_of(pieces: Vec<Piece>, model: String, live: Live) -> ChunkStream {
    let state = (pieces.into_iter(), model, live);
    Box::pin(futures_util::stream::unfold(
        state,
        |(mut pieces, model, live)| async move {
            loop {
                let item = match pieces.next()? {
                    Piece::Sleep(d) => {
                        tokio::time::sleep(d).await;
                        continue;
                    }
                    Piece::Hang => {
                        std::future::pending::<()>().await;
                        continue;
                    }
                    Piece::Role => Ok(StreamChunk {
                        role: Some(Role::Assistant),
                        content: Some(String::new()),
                        ..chunk(&model)
                    }),
                    Piece::Text(text) => Ok(StreamChunk {
                        content: Some(text.to_owned()),
                        ..chunk(&model)
                    }),
                    Piece::Finish => Ok(StreamChunk {
                        finish_reason: Some(FinishReason::Stop),
                        usage: Some(Usage::new(3, 2)),
                        ..chunk(&model)
                    }),
                    Piece::Fail(e) => Err(e),
                };
                return Some((item, (pieces, model, live)));
            }
        },
    ))
}

fn text_of(pieces: &[Piece]) -> String {
    pieces
        .iter()
        .filter_map(|p| match p {
            Piece::Text(t) => Some(*t),
            _ => None,
        })
        .collect()
}

fn response(model: &str, text: String) -> ChatResponse {
    let mut response = ChatResponse::new(Arc::from(model), Message::text(Role::Assistant, text));
    response.id = Some("chatcmpl-scripted".into());
    response.finish_reason = Some(FinishReason::Stop);
    response.usage = Some(Usage::new(3, 2));
    response
}

/// Plays a reply up to its answer: waits out its delays, never ends on a hang, and gives the
/// pieces of a stream (`None` for the plain answer) or the failure.
async fn settle(mut reply: Reply) -> Result<Option<Vec<Piece>>, UpstreamError> {
    loop {
        match reply {
            Reply::Answer => return Ok(None),
            Reply::Stream(pieces) => return Ok(Some(pieces)),
            Reply::Fail(e) => return Err(e),
            Reply::Hang => std::future::pending::<()>().await,
            Reply::After(d, rest) => {
                tokio::time::sleep(d).await;
                reply = *rest;
            }
        }
    }
}

impl ChatBackend for ScriptBackend {
    async fn complete(&self, call: Call<'_>) -> Result<ChatResponse, UpstreamError> {
        let _live = Live::start(&self.live);
        let text = match settle(self.next_reply(call, false)).await? {
            None => "hello world".into(),
            Some(pieces) => text_of(&pieces),
        };
        Ok(response(call.upstream_model, text))
    }

    async fn stream(&self, call: Call<'_>) -> Result<ChunkStream, UpstreamError> {
        let live = Live::start(&self.live);
        let pieces = settle(self.next_reply(call, true)).await?;
        let model = call.upstream_model.to_owned();
        Ok(stream_of(pieces.unwrap_or_else(answer_stream), model, live))
    }

    async fn probe(&self, _instance: &InstanceId) -> Result<(), UpstreamError> {
        Ok(())
    }
}

/// Hands the same scripted backend to every provider and counts how often it was asked.
#[derive(Debug)]
pub struct Factory {
    pub backend: Arc<ScriptBackend>,
    pub builds: AtomicUsize,
}

impl BackendFactory for Factory {
    fn build(&self, _provider: &ProviderSpec) -> Result<Arc<dyn DynChatBackend>, BackendError> {
        self.builds.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::clone(&self.backend) as Arc<dyn DynChatBackend>)
    }
}

/// A gateway over scripted backends, with its event log.
#[derive(Debug)]
pub struct Harness {
    pub gateway: Arc<Gateway>,
    pub backend: Arc<ScriptBackend>,
    pub factory: Arc<Factory>,
    pub sink: Arc<MemorySink>,
}

impl Harness {
    pub fn new(topology: Topology) -> Self {
        Self::with_timeout(topology, secs(300))
    }

    /// A request on group `g` that must be answered.
    pub async fn answered(&self) -> Served<ChatResponse> {
        self.gateway.complete("group:g", request()).await.unwrap()
    }

    /// A request on group `g` that must fail.
    pub async fn failure(&self) -> FailedRequest {
        failure(self.gateway.complete("group:g", request()).await)
    }

    /// A streamed request on group `g` whose stream must start.
    pub async fn streamed(&self) -> Served<ResponseStream> {
        self.gateway.stream("group:g", request()).await.unwrap()
    }

    /// A gateway whose engine-wide request timeout is `request_timeout`.
    pub fn with_timeout(topology: Topology, request_timeout: Duration) -> Self {
        let backend = Arc::new(ScriptBackend::default());
        let factory = Arc::new(Factory {
            backend: Arc::clone(&backend),
            builds: AtomicUsize::new(0),
        });
        let sink = Arc::new(MemorySink::new());
        let options = EngineOptions {
            table: TableOptions {
                sink: sink.clone(),
                ..TableOptions::default()
            },
            request_timeout,
        };
        let gateway = Gateway::new(
            topology,
            factory.clone(),
            Arc::new(SplitMix64::new(7)),
            options,
        )
        .unwrap();
        Self {
            gateway: Arc::new(gateway),
            backend,
            factory,
            sink,
        }
    }

    /// One instance's state now.
    pub fn instance(&self, id: &str) -> InstanceSnapshot {
        snapshot::instance_in(&self.gateway.snapshot(), id)
    }

    /// Asserts that nothing holds a permit: no instance or echelon has a request in flight and
    /// no upstream call is still running.
    pub fn assert_idle(&self) {
        assert_idle(&self.gateway.snapshot());
        assert_eq!(self.backend.live(), 0, "upstream calls still running");
    }
}

/// Asserts that no instance or echelon of a snapshot has a request in flight.
pub fn assert_idle(snapshot: &TableSnapshot) {
    snapshot::assert_idle(snapshot, "after the request");
}

/// Asserts that `served` was answered through `part` of its route: an echelon, a pool or an
/// instance.
#[track_caller]
pub fn assert_route<T>(served: &Served<T>, part: &str) {
    let route = served.route.to_string();
    assert!(
        route.contains(part),
        "served by {route}, not through {part}"
    );
}

/// Asserts that a failed request's verdict matches a pattern, and shows the verdict when not.
macro_rules! assert_verdict {
    ($failed:expr, $pattern:pat) => {
        assert!(matches!($failed.verdict, $pattern), "{:?}", $failed.verdict)
    };
}
pub(crate) use assert_verdict;

/// The failure of a request that was expected to fail.
pub fn failure<T: std::fmt::Debug>(result: Result<T, ServeError>) -> FailedRequest {
    match result {
        Err(ServeError::Failed(f)) => *f,
        other => panic!("expected a failed request, got {other:?}"),
    }
}

/// `(instance, result)` of every attempt, for compact assertions.
pub fn results(attempts: &[echelon_domain::plan::AttemptRecord]) -> Vec<(String, AttemptResult)> {
    attempts
        .iter()
        .map(|a| (a.instance.to_string(), a.result.clone()))
        .collect()
}

pub fn failed(class: ErrorClass, status: Option<u16>) -> AttemptResult {
    AttemptResult::Failed { class, status }
}

/// Everything a served stream yields, to its end.
pub async fn drain(mut stream: ResponseStream) -> Vec<StreamEvent> {
    let mut out = Vec::new();
    while let Some(event) = stream.next().await {
        out.push(event);
    }
    out
}

/// The text of the content chunks of a drained stream.
pub fn text(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Chunk(c) => c.content.as_deref(),
            StreamEvent::Failed(_) => None,
        })
        .collect()
}

/// The failure events of a drained stream.
pub fn failures(events: &[StreamEvent]) -> Vec<&UpstreamError> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Failed(error) => Some(error),
            StreamEvent::Chunk(_) => None,
        })
        .collect()
}

/// Whether a drained stream carried a finish chunk (a normal end).
pub fn finished_normally(events: &[StreamEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, StreamEvent::Chunk(c) if c.finish_reason.is_some()))
}
