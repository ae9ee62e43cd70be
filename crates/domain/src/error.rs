//! Error classes and the decision table that says what happens after each kind of failure.
//!
//! Adapters classify a failure once, from status codes, provider error codes and headers, into an
//! [`ErrorClass`]. Everything downstream reads the class's [`Decision`] as data; nothing ever
//! searches an error message's text.

use core::fmt;
use core::time::Duration;

/// What kind of failure an attempt ended with (DESIGN.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum ErrorClass {
    /// 429 or a provider quota: the key is cooling down.
    RateLimited,
    /// 529 or a provider's "overloaded" error.
    Overloaded,
    /// 500, 502, 503 and other server-side failures.
    Server,
    /// No answer within the attempt timeout, time to first token or stream idle limit.
    Timeout,
    /// The connection could not be established, or was reset, or the stream was cut.
    Connect,
    /// 401 or 403 from the upstream: the key is dead.
    Auth,
    /// 400 `context_length_exceeded`: only a target with a larger context window may help.
    ContextLength,
    /// Any other 400 or 422: the request itself is wrong.
    InvalidRequest,
    /// The upstream's content policy refused the request.
    ContentFilter,
    /// The caller went away; nothing is the upstream's fault.
    ClientGone,
}

/// Which instances a failure lets the planner try next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextTarget {
    /// Any other candidate.
    Any,
    /// Only candidates whose context window is larger than the failed one's.
    LargerContext,
    /// None: the failure goes back to the client as it is.
    None,
}

/// How a failure affects the failing instance's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthEffect {
    /// Counts as a failure for health and breakers.
    Failure,
    /// Starts or extends a cooldown, nothing more.
    Cooldown,
    /// Marks the key dead until a probe or reload revives it.
    KeyDead,
    /// Does not touch the instance at all.
    Neutral,
}

/// When the same instance may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrySame {
    /// Never.
    Never,
    /// Up to the echelon's `max_retries`, with backoff and jitter.
    WithBackoff,
    /// Only when no other instance of the same echelon can serve and the upstream's Retry-After is
    /// at most `retry_after_max_wait`.
    AfterRetryAfter,
}

/// The row of the decision table for one error class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether and when to retry the same instance.
    pub retry_same: RetrySame,
    /// Where else the request may go.
    pub next: NextTarget,
    /// What the failure does to the instance's health and breaker.
    pub health: HealthEffect,
    /// Whether the request should stop altogether (the caller is gone).
    pub stop: bool,
}

impl ErrorClass {
    /// Every class, in table order.
    pub const ALL: [Self; 10] = [
        Self::RateLimited,
        Self::Overloaded,
        Self::Server,
        Self::Timeout,
        Self::Connect,
        Self::Auth,
        Self::ContextLength,
        Self::InvalidRequest,
        Self::ContentFilter,
        Self::ClientGone,
    ];

    /// The decision table of DESIGN.md §2.
    pub const fn decision(self) -> Decision {
        use HealthEffect as H;
        use NextTarget as N;
        use RetrySame as R;
        let (retry_same, next, health, stop) = match self {
            Self::RateLimited => (R::AfterRetryAfter, N::Any, H::Cooldown, false),
            Self::Overloaded | Self::Server => (R::WithBackoff, N::Any, H::Failure, false),
            Self::Timeout | Self::Connect => (R::Never, N::Any, H::Failure, false),
            Self::Auth => (R::Never, N::Any, H::KeyDead, false),
            Self::ContextLength => (R::Never, N::LargerContext, H::Neutral, false),
            Self::InvalidRequest | Self::ContentFilter => (R::Never, N::None, H::Neutral, false),
            Self::ClientGone => (R::Never, N::None, H::Neutral, true),
        };
        Decision {
            retry_same,
            next,
            health,
            stop,
        }
    }

    /// Whether the failure is the upstream's fault, so it may count against breakers and health.
    pub const fn counts_against_upstream(self) -> bool {
        matches!(self.decision().health, HealthEffect::Failure)
    }

    /// The stable snake_case name used in metrics, logs and the HTTP error `code`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::Server => "server",
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Auth => "auth",
            Self::ContextLength => "context_length",
            Self::InvalidRequest => "invalid_request",
            Self::ContentFilter => "content_filter",
            Self::ClientGone => "client_gone",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed upstream attempt, as a provider adapter reports it.
///
/// It carries the facts routing needs as data. The message is for people; it never contains a
/// key, and nothing routes on it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{class} from upstream{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
pub struct UpstreamError {
    /// The failure's class, which decides what happens next.
    pub class: ErrorClass,
    /// The HTTP status the upstream answered with, if it answered.
    pub status: Option<u16>,
    /// The provider's own error code (`context_length_exceeded`, `overloaded_error`, …).
    pub code: Option<Box<str>>,
    /// A short human-readable description, free of secrets.
    pub message: Box<str>,
    /// How long the upstream asked us to wait (`Retry-After`, `retry-after-ms`, reset headers).
    pub retry_after: Option<Duration>,
}

impl UpstreamError {
    /// A failure of the given class with a message and nothing else.
    pub fn new(class: ErrorClass, message: impl Into<Box<str>>) -> Self {
        Self {
            class,
            status: None,
            code: None,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds the HTTP status.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Adds the provider's error code.
    #[must_use]
    pub fn with_code(mut self, code: impl Into<Box<str>>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Adds the upstream's requested wait.
    #[must_use]
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// The decision table row for this failure.
    pub fn decision(&self) -> Decision {
        self.class.decision()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_upstream_faults_count_against_health() {
        let counting: Vec<_> = ErrorClass::ALL
            .into_iter()
            .filter(|c| c.counts_against_upstream())
            .collect();
        assert_eq!(
            counting,
            [
                ErrorClass::Overloaded,
                ErrorClass::Server,
                ErrorClass::Timeout,
                ErrorClass::Connect
            ]
        );
    }

    #[test]
    fn client_errors_are_returned_as_they_are() {
        for class in [ErrorClass::InvalidRequest, ErrorClass::ContentFilter] {
            let d = class.decision();
            assert_eq!(d.next, NextTarget::None);
            assert_eq!(d.retry_same, RetrySame::Never);
            assert_eq!(d.health, HealthEffect::Neutral);
        }
        assert!(ErrorClass::ClientGone.decision().stop);
        assert_eq!(
            ErrorClass::ContextLength.decision().next,
            NextTarget::LargerContext
        );
        assert_eq!(ErrorClass::Auth.decision().health, HealthEffect::KeyDead);
        assert_eq!(
            ErrorClass::RateLimited.decision().health,
            HealthEffect::Cooldown
        );
    }

    #[test]
    fn display_names_status_and_never_needs_text_matching() {
        let e = UpstreamError::new(ErrorClass::Server, "bad gateway").with_status(502);
        assert_eq!(
            e.to_string(),
            "server from upstream (HTTP 502): bad gateway"
        );
    }
}
