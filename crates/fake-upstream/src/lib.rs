//! A fault-injecting OpenAI-compatible fake upstream, for tests, the demo and `echelon mock-upstream`.
//!
//! It serves `POST /v1/chat/completions` (JSON and SSE) and `GET /v1/models` on a real TCP
//! socket, and speaks two more dialects with the same faults: Anthropic's `POST /v1/messages`
//! and Gemini's `POST /v1beta/models/{model}:generateContent` / `:streamGenerateContent` (the
//! model and the faults come from the path, where `__` stands for the `+` a Gemini model name
//! cannot hold: `gemini__cut-after-2`). Error statuses are OpenAI-shaped in every dialect.
//! A conversation that ends with an assistant message is a prefill: the answer continues it
//! (the echoed text minus that prefix), unless `refuse-prefill` says no. It misbehaves on request: by server-wide [`FakeUpstreamOptions::faults`], or per
//! request through the model name (`"model": "fail-500"`, `"gpt-4o+cut-after-3"`); the grammar is
//! in [`faults`]. Faults of the model name override the server-wide ones.
//!
//! It counts every chat request it receives, per model name, so a test can assert the exact
//! number of upstream attempts. It answers with the requested model name as `model`, and echoes
//! the last user message unless a fixed reply is configured.
//!
//! Everything is bounded: connections ([`FakeUpstreamOptions::max_connections`], extra ones are
//! closed at once), request bodies, hangs and stalls ([`FakeUpstreamOptions::max_hang`]), the
//! number of model names tracked, and shutdown ([`FakeUpstream::stop`] waits at most
//! [`FakeUpstreamOptions::shutdown_grace`], then drops what is left). Connections are served by
//! hyper over tokio sockets with `TCP_NODELAY`; a `reset` fault sets `SO_LINGER` to zero and drops
//! the socket, which sends a TCP RST.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use echelon_fake_upstream::{FakeUpstream, FakeUpstreamOptions};
//! let upstream = FakeUpstream::start("127.0.0.1:0".parse().unwrap(), FakeUpstreamOptions::default()).await?;
//! // Point an `openai` provider at `upstream.base_url()` and request model "fail-500" ...
//! assert_eq!(upstream.requests("fail-500"), 0);
//! upstream.stop().await;
//! # Ok(()) }
//! ```

pub mod faults;
mod respond;

use core::convert::Infallible;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::task::{Context, Poll};
use core::time::Duration;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use echelon_domain::random::SplitMix64;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

pub use self::faults::{FaultParseError, Faults, RetryHint};

/// Most distinct model names counted one by one; further names are counted under
/// [`OTHER_MODELS`].
pub const MAX_TRACKED_MODELS: usize = 1024;

/// The counter key for model names beyond [`MAX_TRACKED_MODELS`].
pub const OTHER_MODELS: &str = "<other>";

/// The counter key for chat requests whose body was not a chat request.
pub const INVALID_REQUESTS: &str = "<invalid>";

/// How the fake upstream behaves.
#[derive(Debug, Clone)]
pub struct FakeUpstreamOptions {
    /// Faults applied to every request (model-name faults override them).
    pub faults: Faults,
    /// A fixed reply; when `None` the last user message is echoed.
    pub reply: Option<String>,
    /// Seed of the generator behind `error-rate`.
    pub seed: u64,
    /// Most connections served at once; further connections are closed on accept.
    pub max_connections: usize,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// How long `hang` and `stall-after` last before the server gives up on them.
    pub max_hang: Duration,
    /// How long [`FakeUpstream::stop`] waits for open connections before dropping them.
    pub shutdown_grace: Duration,
}

impl Default for FakeUpstreamOptions {
    fn default() -> Self {
        Self {
            faults: Faults::default(),
            reply: None,
            seed: 0x5eed,
            max_connections: 256,
            max_body_bytes: 4 * 1024 * 1024,
            max_hang: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(1),
        }
    }
}

/// A running fake upstream. Dropping it stops it abruptly; [`FakeUpstream::stop`] stops it
/// gracefully.
#[derive(Debug)]
pub struct FakeUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct State {
    options: FakeUpstreamOptions,
    started: tokio::time::Instant,
    rng: SplitMix64,
    counts: Mutex<HashMap<String, u64>>,
    /// Per model name: the quota window it is in and the requests it used there.
    quotas: Mutex<HashMap<String, (u64, u32)>>,
    total: AtomicU64,
    model_lists: AtomicU64,
    last_request: Mutex<Option<Bytes>>,
    next_id: AtomicU64,
}

impl State {
    /// Takes one request from `model`'s quota of `limit` per `window`; when it is spent, how
    /// long until the window ends.
    fn take_quota(&self, model: &str, limit: u32, window: Duration) -> Result<(), Duration> {
        let elapsed = self.started.elapsed();
        let index =
            u64::try_from(elapsed.as_nanos() / window.as_nanos().max(1)).unwrap_or(u64::MAX);
        let mut quotas = self.quotas.lock().unwrap_or_else(|p| p.into_inner());
        let key = if quotas.contains_key(model) || quotas.len() < MAX_TRACKED_MODELS {
            model
        } else {
            OTHER_MODELS
        };
        let entry = quotas.entry(key.to_owned()).or_insert((index, 0));
        if entry.0 != index {
            *entry = (index, 0);
        }
        if entry.1 < limit {
            entry.1 += 1;
            return Ok(());
        }
        let window_end = window.saturating_mul(u32::try_from(index + 1).unwrap_or(u32::MAX));
        Err(window_end.saturating_sub(elapsed))
    }

    /// Counts a chat request; returns how many this model name has had, this one included.
    fn count(&self, model: &str) -> u64 {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let key = if counts.contains_key(model) || counts.len() < MAX_TRACKED_MODELS {
            model
        } else {
            OTHER_MODELS
        };
        let n = counts.entry(key.to_owned()).or_insert(0);
        *n += 1;
        *n
    }
}

impl FakeUpstream {
    /// Binds `addr` (use port 0 for any free port) and starts serving.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn start(addr: SocketAddr, options: FakeUpstreamOptions) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            rng: SplitMix64::new(options.seed),
            options,
            started: tokio::time::Instant::now(),
            counts: Mutex::new(HashMap::new()),
            quotas: Mutex::new(HashMap::new()),
            total: AtomicU64::new(0),
            model_lists: AtomicU64::new(0),
            last_request: Mutex::new(None),
            next_id: AtomicU64::new(1),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&state), stopped));
        tracing::debug!(%addr, "fake upstream listening");
        Ok(Self {
            addr,
            state,
            stop,
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL of an `openai` provider pointed at it: `http://<addr>/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Chat requests received for a model name (the full name, faults included).
    pub fn requests(&self, model: &str) -> u64 {
        let counts = self.state.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(model).copied().unwrap_or(0)
    }

    /// Every chat request received.
    pub fn total_requests(&self) -> u64 {
        self.state.total.load(Ordering::Relaxed)
    }

    /// `GET /v1/models` requests received.
    pub fn model_list_requests(&self) -> u64 {
        self.state.model_lists.load(Ordering::Relaxed)
    }

    /// The body of the last chat request received.
    pub fn last_request(&self) -> Option<Bytes> {
        self.state
            .last_request
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops accepting, lets open connections finish for at most the shutdown grace, then drops
    /// the rest (hung and stalled answers included).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, mut stopped: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(state.options.max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::debug!(error = %e, "fake upstream accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&state);
                let stopped = stopped.clone();
                connections.spawn(async move {
                    serve_connection(stream, state, stopped).await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    let grace = state.options.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// Lets a request handler ask for its connection to be reset.
#[derive(Debug, Default)]
pub(crate) struct ResetSignal {
    requested: AtomicBool,
    notify: Notify,
}

impl ResetSignal {
    pub(crate) fn trigger(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }
}

/// A TCP stream that, when dropped after a reset request, sets `SO_LINGER` to zero first so the
/// close sends RST instead of FIN.
struct ResettableStream {
    inner: TcpStream,
    reset: Arc<ResetSignal>,
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.reset.requested.load(Ordering::SeqCst) {
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

async fn serve_connection(
    stream: TcpStream,
    state: Arc<State>,
    mut stopped: watch::Receiver<bool>,
) {
    let reset = Arc::new(ResetSignal::default());
    let io = TokioIo::new(ResettableStream {
        inner: stream,
        reset: Arc::clone(&reset),
    });
    let service = {
        let reset = Arc::clone(&reset);
        service_fn(move |request: hyper::Request<Incoming>| {
            let state = Arc::clone(&state);
            let reset = Arc::clone(&reset);
            async move { Ok::<_, Infallible>(respond::handle(&state, &reset, request).await) }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        // Dropping the connection drops the socket, which the reset flag turns into an RST.
        () = reset.notify.notified() => {}
        _ = stopped.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
