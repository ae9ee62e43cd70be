//! The OpenAI-compatible HTTP gateway: routes, client and admin authentication, graceful drain.
//! `server/` is the listener and the connections under the server's limits.
//!
//! - `POST /v1/chat/completions` (JSON and SSE), `GET /v1/models`
//! - `GET /healthz`, `GET /readyz`, `GET /metrics`
//! - admin: `GET /admin/status`, `/admin/pools/{name}`, `/admin/task-groups/{name}`,
//!   `/admin/config`, `POST /admin/config/reload`, `GET /admin/route?model=X`, `/admin/alerts`

pub mod admin;
pub mod chat;
pub mod error;
pub mod server;
pub mod ui;

use echelon_application::shared_state::SharingStatus;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use echelon_application::gateway::Gateway;
use echelon_application::history::EventHistory;
use echelon_infrastructure::metrics::{LiveView, Metrics};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::{Components, ConfigControl, Operations};
use crate::auth::KeyRing;
pub use crate::http::server::ConnectionLimits;

/// What every handler serves from.
#[derive(Debug)]
pub struct AppState {
    /// The request engine.
    pub gateway: Arc<Gateway>,
    /// Client and admin keys.
    pub keys: Arc<ArcSwap<KeyRing>>,
    /// Configuration reloads and status.
    pub control: Arc<ConfigControl>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Recent fallbacks and breaker transitions.
    pub history: Arc<EventHistory>,
    /// Health checker and alert engine, when running.
    pub operations: Arc<Operations>,
    /// The shared state sync's status (`None`: `[state] backend = "memory"`).
    pub sharing: Option<Arc<SharingStatus>>,
    /// Largest accepted request body.
    pub max_body_size: u64,
    /// Set once shutdown begins: readiness fails and new requests are refused.
    pub draining: AtomicBool,
    /// Flips to `true` when the drain grace period is over: streams still running end with an
    /// explicit error event.
    pub stop_streams: watch::Receiver<bool>,
}

/// Server settings that are not part of [`Components`].
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest accepted request body, in bytes.
    pub max_body_size: u64,
    /// How long a drain waits for requests in flight.
    pub shutdown_grace: Duration,
    /// Timeouts, header size and connection count of client connections.
    pub limits: ConnectionLimits,
    /// TLS termination: the certificate and key files; `None` serves plain HTTP.
    pub tls: Option<server::tls::TlsFiles>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_body_size: echelon_domain::defaults::server::MAX_BODY_SIZE,
            shutdown_grace: echelon_domain::defaults::server::SHUTDOWN_GRACE,
            limits: ConnectionLimits::default(),
            tls: None,
        }
    }
}

impl ServerOptions {
    /// The options `[server]` configures.
    pub fn from_settings(server: &echelon_config::ServerSettings) -> Self {
        Self {
            max_body_size: server.max_body_size,
            shutdown_grace: server.shutdown_grace,
            limits: ConnectionLimits::from_settings(server),
            tls: server.tls.clone(),
        }
    }
}

/// Builds the router over shared state.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/models", get(chat::models))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/ui", get(ui::page))
        .nest("/admin", admin::router())
        .fallback(not_found)
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

/// `GET /metrics`: Prometheus text, with gauges read from the live table at scrape time.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let generation = state.gateway.generation();
    let now = echelon_domain::time::Clock::now(state.gateway.clock());
    let snapshot = generation.table.snapshot(now);
    let body = state.metrics.render(Some(LiveView {
        snapshot: &snapshot,
        now,
        generation: generation.number,
    }));
    (
        [(axum::http::header::CONTENT_TYPE, Metrics::CONTENT_TYPE)],
        body,
    )
        .into_response()
}

async fn not_found() -> error::ApiError {
    error::ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "not_found",
        "no such endpoint; the gateway serves POST /v1/chat/completions and GET /v1/models",
    )
}

/// A running server: its address and how to stop it.
#[derive(Debug)]
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The state the handlers share.
    pub state: Arc<AppState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Begins a graceful drain and waits until the server has stopped.
    ///
    /// # Errors
    /// When the server task failed.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(std::io::Error::other(join.to_string())),
        }
    }

    /// Waits until the server stops by itself (after a signal).
    ///
    /// # Errors
    /// When the server task failed.
    pub async fn wait(mut self) -> std::io::Result<()> {
        let _keep_open = self.shutdown.take();
        match (&mut self.task).await {
            Ok(result) => result,
            Err(join) => Err(std::io::Error::other(join.to_string())),
        }
    }
}

/// Starts serving on `listener` (over TLS when `options.tls` is set). The server drains when [`RunningServer::shutdown`] is called or
/// `signal` resolves: readiness fails at once, new connections are refused, requests in flight
/// get `shutdown_grace` to finish, then streams still running end with an error event.
///
/// # Errors
/// When the listener has no local address, or the TLS certificate pair cannot serve
/// (`InvalidInput`, naming the file and the problem).
pub fn start(
    listener: TcpListener,
    components: &Components,
    options: ServerOptions,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<RunningServer> {
    let addr = listener.local_addr()?;
    let tls = match options.tls {
        Some(files) => Some(
            server::tls::Tls::new(files)
                .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?,
        ),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = Arc::new(AppState {
        gateway: Arc::clone(&components.gateway),
        keys: Arc::clone(&components.keys),
        control: Arc::clone(&components.control),
        metrics: Arc::clone(&components.metrics),
        history: Arc::clone(&components.history),
        operations: Arc::clone(&components.operations),
        sharing: components.sharing.as_ref().map(|sync| sync.status()),
        max_body_size: options.max_body_size,
        draining: AtomicBool::new(false),
        stop_streams: stop_rx,
    });
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let drain_state = Arc::clone(&state);
    let drain = async move {
        tokio::select! {
            () = signal => {}
            _ = shutdown_rx => {}
        }
        drain_state.draining.store(true, Ordering::Release);
    };
    let listener_task = server::Listener {
        router: router(Arc::clone(&state)),
        limits: options.limits,
        metrics: Arc::clone(&components.metrics),
        grace: options.shutdown_grace,
        stop_streams: stop_tx,
        tls,
    };
    let task = tokio::spawn(async move {
        listener_task.run(listener, drain).await;
        Ok(())
    });
    Ok(RunningServer {
        addr,
        state,
        shutdown: Some(shutdown_tx),
        task,
    })
}
