//! The listener: accepts client connections up to `max_connections`, serves each one
//! (`connection.rs`) under the server's limits, and drains on shutdown.
//!
//! Every connection is one task holding one of `max_connections` permits; a connection that
//! finds none left is answered 503 at once (closed, under TLS) so the task count never exceeds
//! the limit. With `tls.rs`, each connection first completes a TLS handshake within
//! `header_read_timeout`. The server speaks HTTP/1.1 only: docs/configuration.md (HTTP server limits) says
//! why not HTTP/2.

mod body;
mod connection;
pub mod tls;

use core::time::Duration;
use std::sync::Arc;

use axum::Router;
use echelon_domain::defaults::server as default;
use echelon_infrastructure::metrics::{ConnectionTimeout, Metrics};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

pub use self::body::{BodyReadTimeout, is_body_read_timeout};
use self::connection::{Shared, Slot};
use self::tls::Tls;

/// The limits every client connection is served under (`[server]` in gateway.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A request head not complete this long after its first byte closes the connection.
    pub header_read_timeout: Duration,
    /// A connection with nothing in flight and nothing received is closed after this long.
    pub idle_timeout: Duration,
    /// The whole request body must arrive within this long after its head.
    pub body_read_timeout: Duration,
    /// Largest request head, in bytes; a larger one is answered 431.
    pub max_header_size: usize,
    /// Connections served at once; one more is answered 503 and closed.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: default::HEADER_READ_TIMEOUT,
            idle_timeout: default::IDLE_TIMEOUT,
            body_read_timeout: default::BODY_READ_TIMEOUT,
            max_header_size: usize::try_from(default::MAX_HEADER_SIZE).unwrap_or(usize::MAX),
            max_connections: default::MAX_CONNECTIONS as usize,
        }
    }
}

impl ConnectionLimits {
    /// The limits `[server]` configures.
    pub fn from_settings(server: &echelon_config::ServerSettings) -> Self {
        Self {
            header_read_timeout: server.header_read_timeout,
            idle_timeout: server.idle_timeout,
            body_read_timeout: server.body_read_timeout,
            max_header_size: usize::try_from(server.max_header_size).unwrap_or(usize::MAX),
            max_connections: server.max_connections as usize,
        }
    }
}

/// What a running listener needs besides its socket.
pub(super) struct Listener {
    pub router: Router,
    pub limits: ConnectionLimits,
    pub metrics: Arc<Metrics>,
    /// How long a drain waits for connections to finish their requests.
    pub grace: Duration,
    /// Set to `true` when the grace is over: streams still running end with an error event.
    pub stop_streams: watch::Sender<bool>,
    /// TLS termination, when configured.
    pub tls: Option<Tls>,
}

/// How long to wait for the last events of streams ended at the end of the grace.
const STREAM_END_WAIT: Duration = Duration::from_secs(2);

/// Pause after an accept error that is not the client's (out of descriptors, say), so the
/// loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(500);

impl Listener {
    /// Accepts connections until `drain` resolves, then stops accepting (new connections are
    /// refused by the kernel), lets every connection finish what is in flight within the grace,
    /// ends streams still running, and returns.
    pub(super) async fn run(mut self, socket: TcpListener, drain: impl Future<Output = ()>) {
        let mut reload = tokio::time::interval(tls::RELOAD_CHECK);
        reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shared = Arc::new(Shared::new(
            self.router,
            self.limits,
            Arc::clone(&self.metrics),
        ));
        let permits = Arc::new(Semaphore::new(self.limits.max_connections));
        let (drain_tx, drain_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        let mut drain = std::pin::pin!(drain);
        loop {
            tokio::select! {
                biased;
                () = &mut drain => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                _ = reload.tick(), if self.tls.is_some() => {
                    if let Some(tls) = &mut self.tls {
                        tls.reload_if_changed();
                    }
                }
                accepted = socket.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                            refuse(&tcp, &self.metrics, self.tls.is_none());
                            continue;
                        };
                        // Nagle's algorithm would hold small SSE events back by up to 40 ms.
                        if let Err(error) = tcp.set_nodelay(true) {
                            tracing::debug!(%error, "could not set TCP_NODELAY");
                        }
                        let slot = Slot::new(Arc::clone(&self.metrics), permit);
                        let shared = Arc::clone(&shared);
                        let drain = drain_rx.clone();
                        let acceptor = self.tls.as_ref().map(|tls| tls.acceptor().clone());
                        connections.spawn(async move {
                            let _slot = slot;
                            let Some(acceptor) = acceptor else {
                                connection::serve(tcp, peer, shared, drain).await;
                                return;
                            };
                            let handshake = acceptor.accept(tcp);
                            match tokio::time::timeout(shared.limits.header_read_timeout, handshake).await {
                                Ok(Ok(tls)) => connection::serve(tls, peer, shared, drain).await,
                                Ok(Err(error)) => {
                                    tracing::debug!(%error, %peer, "TLS handshake failed");
                                }
                                Err(_) => shared
                                    .metrics
                                    .connections()
                                    .timed_out(ConnectionTimeout::Handshake),
                            }
                        });
                    }
                    Err(error) if is_client_error(&error) => {}
                    Err(error) => {
                        tracing::warn!(%error, "cannot accept connections; retrying");
                        tokio::select! {
                            () = &mut drain => break,
                            () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                        }
                    }
                },
            }
        }
        drop(socket);
        tracing::info!("draining: readiness fails, new connections are refused");
        let _ = drain_tx.send(true);
        let finished = tokio::time::timeout(self.grace, join_all(&mut connections)).await;
        if finished.is_err() {
            tracing::warn!("grace period over: ending streams still running with an error event");
            let _ = self.stop_streams.send(true);
            // Streams end at once now; give their last events a moment to be written.
            let _ = tokio::time::timeout(STREAM_END_WAIT, join_all(&mut connections)).await;
            connections.abort_all();
        }
    }
}

async fn join_all(connections: &mut JoinSet<()>) {
    while connections.join_next().await.is_some() {}
}

/// Errors of one client's connection attempt, not of the listener.
fn is_client_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Turns a connection away past `max_connections`: over plain HTTP, a 503 in OpenAI's error
/// shape if the socket takes it without waiting (it always does on a fresh connection), then
/// close. Under TLS there is no answer to give before a handshake, which costs as much as the
/// connection would, so it is only closed.
fn refuse(tcp: &TcpStream, metrics: &Metrics, plain: bool) {
    metrics.connections().refused();
    if plain {
        let _ = tcp.try_write(REFUSAL.as_bytes());
    }
}

const REFUSAL: &str = concat!(
    "HTTP/1.1 503 Service Unavailable\r\n",
    "content-type: application/json\r\n",
    "retry-after: 1\r\n",
    "connection: close\r\n",
    "content-length: 184\r\n",
    "\r\n",
    r#"{"error":{"message":"the gateway is serving as many connections as it allows (server.max_connections); retry shortly","type":"server_error","param":null,"code":"too_many_connections"}}"#,
);

#[cfg(test)]
mod tests {
    use super::REFUSAL;

    #[test]
    fn the_refusal_states_its_body_length() {
        let (head, body) = REFUSAL.split_once("\r\n\r\n").unwrap();
        let length = format!("content-length: {}", body.len());
        assert!(head.split("\r\n").any(|line| line == length), "{length}");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "too_many_connections");
    }
}
