//! Counters of the client connections the HTTP server holds: accepted, open, refused past
//! `max_connections`, and closed by one of the server's timeouts.

use core::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Which of the server's limits closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionTimeout {
    /// The TLS handshake did not finish within `header_read_timeout`.
    Handshake,
    /// A request head was not complete within `header_read_timeout` of its first byte.
    Header,
    /// Nothing in flight and nothing received for `idle_timeout`.
    Idle,
    /// A request body did not arrive within `body_read_timeout` of its head.
    Body,
}

impl ConnectionTimeout {
    /// Every kind, in the order of their counters.
    pub const ALL: [Self; 4] = [Self::Handshake, Self::Header, Self::Idle, Self::Body];

    /// The label value in `echelon_http_connections_timed_out_total{phase}`.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Handshake => "tls_handshake",
            Self::Header => "header",
            Self::Idle => "idle",
            Self::Body => "body",
        }
    }

    const fn slot(self) -> usize {
        match self {
            Self::Handshake => 0,
            Self::Header => 1,
            Self::Idle => 2,
            Self::Body => 3,
        }
    }
}

/// The HTTP server's connection counters; the server updates them, `/metrics` shows them.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    accepted: AtomicU64,
    open: AtomicI64,
    refused: AtomicU64,
    timed_out: [AtomicU64; 4],
}

impl ConnectionStats {
    /// A connection was accepted and is now served; pair with [`ConnectionStats::closed`].
    pub fn opened(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A served connection ended.
    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection was turned away because `max_connections` were open.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was closed by one of the server's timeouts.
    pub fn timed_out(&self, kind: ConnectionTimeout) {
        self.timed_out[kind.slot()].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections accepted and served since start.
    pub fn accepted_total(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open_now(&self) -> i64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections refused since start.
    pub fn refused_total(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections closed by `kind` since start.
    pub fn timed_out_total(&self, kind: ConnectionTimeout) -> u64 {
        self.timed_out[kind.slot()].load(Ordering::Relaxed)
    }
}
