//! One client connection: HTTP/1.1 over hyper, under the server's header, idle and body
//! timeouts.
//!
//! The connection is always in one of three phases, and the phase alone says which deadline
//! applies:
//!
//! | phase | entered when | deadline |
//! |---|---|---|
//! | idle | accepted, or the last response was written | `idle_timeout` after entering |
//! | head | the first byte arrives while idle | `header_read_timeout` after that byte |
//! | busy | hyper has parsed a head and calls the router | none here: the body has `body_read_timeout`, the request `request_timeout` |
//!
//! hyper's own `header_read_timeout` is not used: it restarts as soon as a connection goes idle,
//! so it cannot tell a slow head from a quiet keep-alive connection.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::Response;
use echelon_infrastructure::metrics::{ConnectionTimeout, Metrics};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};
use tokio::time::Instant;

use super::ConnectionLimits;
use super::body::{GuardedBody, TimedBody};

/// What every connection of one server shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub router: Router,
    pub limits: ConnectionLimits,
    pub metrics: Arc<Metrics>,
    pub http: http1::Builder,
}

impl Shared {
    pub(super) fn new(router: Router, limits: ConnectionLimits, metrics: Arc<Metrics>) -> Self {
        let mut http = http1::Builder::new();
        http.keep_alive(true)
            // The phases below time heads out; see the module docs.
            .header_read_timeout(None)
            .max_header_size(limits.max_header_size)
            // A head that never completes grows the read buffer only up to the header limit
            // (hyper's floor is 8 KiB), then is answered 431.
            .max_buf_size(limits.max_header_size.max(8 * 1024));
        Self {
            router,
            limits,
            metrics,
            http,
        }
    }
}

/// Where a connection is; see the module docs.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Idle(Instant),
    Head(Instant),
    Busy(u32),
}

/// The phase of one connection, updated by its I/O and its requests, watched by its driver.
#[derive(Debug)]
pub(super) struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            phase: Mutex::new(Phase::Idle(Instant::now())),
            changed: Notify::new(),
        }
    }

    fn update(&self, f: impl FnOnce(Phase) -> Option<Phase>) {
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(next) = f(*phase) {
            *phase = next;
            drop(phase);
            // `notify_one` keeps a permit when the driver is not waiting, so no change is lost.
            self.changed.notify_one();
        }
    }

    fn bytes_read(&self) {
        self.update(|phase| match phase {
            Phase::Idle(_) => Some(Phase::Head(Instant::now())),
            Phase::Head(_) | Phase::Busy(_) => None,
        });
    }

    fn request_started(&self) {
        self.update(|phase| match phase {
            Phase::Busy(n) => Some(Phase::Busy(n + 1)),
            Phase::Idle(_) | Phase::Head(_) => Some(Phase::Busy(1)),
        });
    }

    fn request_finished(&self) {
        self.update(|phase| match phase {
            Phase::Busy(n) if n > 1 => Some(Phase::Busy(n - 1)),
            _ => Some(Phase::Idle(Instant::now())),
        });
    }

    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, ConnectionTimeout)> {
        match *self.phase.lock().unwrap_or_else(PoisonError::into_inner) {
            Phase::Idle(since) => Some((since + limits.idle_timeout, ConnectionTimeout::Idle)),
            Phase::Head(since) => Some((
                since + limits.header_read_timeout,
                ConnectionTimeout::Header,
            )),
            Phase::Busy(_) => None,
        }
    }
}

/// Marks its request done when dropped: with the response body once written, or with the
/// handler's future when the connection goes away first.
#[derive(Debug)]
pub(super) struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// Client I/O that reports arriving bytes to the connection's [`Activity`].
#[derive(Debug)]
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_read();
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The per-connection service: hands each request to the router with the peer's address, its
/// body under `body_read_timeout`, and its response body holding the request's guard.
#[derive(Debug, Clone)]
struct Exchange {
    shared: Arc<Shared>,
    activity: Arc<Activity>,
    peer: SocketAddr,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Exchange {
    type Response = Response<GuardedBody<axum::body::Body>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        self.activity.request_started();
        let guard = RequestGuard(Arc::clone(&self.activity));
        let deadline = Instant::now() + self.shared.limits.body_read_timeout;
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(ConnectInfo(self.peer));
        let body = TimedBody::new(body, deadline, Arc::clone(&self.shared.metrics));
        let request = hyper::Request::from_parts(parts, body);
        let mut router = self.shared.router.clone();
        Box::pin(async move {
            let response = tower_service::Service::call(&mut router, request).await?;
            Ok(response.map(|body| GuardedBody::new(body, guard)))
        })
    }
}

/// Keeps a connection counted as open, and its slot of `max_connections` taken, until dropped.
#[derive(Debug)]
pub(super) struct Slot {
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    pub(super) fn new(metrics: Arc<Metrics>, permit: OwnedSemaphorePermit) -> Self {
        metrics.connections().opened();
        Self {
            metrics,
            _permit: permit,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.connections().closed();
    }
}

/// Serves one connection until the client closes it, a timeout closes it, or a drain (`drain`
/// turning `true`) has let its last response finish.
pub(super) async fn serve<I>(
    io: I,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut drain: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: io,
        activity: Arc::clone(&activity),
    });
    let exchange = Exchange {
        shared: Arc::clone(&shared),
        activity: Arc::clone(&activity),
        peer,
    };
    let connection = shared.http.serve_connection(io, exchange);
    let mut connection = std::pin::pin!(connection);
    let mut draining = *drain.borrow_and_update();
    if draining {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        let deadline = activity.deadline(&shared.limits);
        tokio::select! {
            biased;
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, %peer, "client connection ended with an error");
                }
                return;
            }
            () = activity.changed.notified() => {}
            () = sleep_until(deadline.map(|(at, _)| at)) => {
                // The phase may have moved on since the deadline was read; check again.
                if let Some((at, kind)) = activity.deadline(&shared.limits)
                    && at <= Instant::now()
                {
                    shared.metrics.connections().timed_out(kind);
                    tracing::debug!(%peer, phase = kind.label(), "closing a client connection: timed out");
                    return;
                }
            }
            _ = drain.changed(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
