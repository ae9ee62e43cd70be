//! How a request ends, and the facts a plan gathers to say so when nothing served it.

use core::time::Duration;

use crate::error::{ErrorClass, UpstreamError};
use crate::instance::Unavailable;
use crate::limit::tighter;
use crate::time::Instant;

/// Shortest Retry-After a 429 verdict announces.
pub(crate) const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How a request ends. Its HTTP status is the edge's to decide (echelon-interfaces maps it).
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// An attempt succeeded.
    Served,
    /// Everything is rate limited or saturated: 429, come back after `retry_after`.
    RateLimited {
        /// When capacity returns (at least one second).
        retry_after: Duration,
    },
    /// Everything is open, unhealthy or dead: 503.
    Unavailable {
        /// When something is expected back, if known.
        retry_after: Option<Duration>,
    },
    /// The upstream rejected the request itself (invalid request, content filter, or a context
    /// length no larger target can take): returned to the client as it is.
    Rejected(UpstreamError),
    /// Every attempt failed: 502 with the last error.
    Exhausted {
        /// The last failure, if any attempt had an outcome.
        last_error: Option<UpstreamError>,
    },
    /// An attempt failed and the fleet-wide retry budget refused the next one (too many of the
    /// recent requests were retries already): 503 with the last error, saying so.
    RetryBudgetSpent {
        /// The last failure, if any attempt had an outcome.
        last_error: Option<UpstreamError>,
    },
    /// The request's deadline passed: 504.
    DeadlineExceeded,
    /// The caller went away.
    ClientGone,
}

impl Verdict {
    /// The Retry-After to announce, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => Some(*retry_after),
            Self::Unavailable { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// The stable snake_case name for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Served => "served",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable { .. } => "unavailable",
            Self::Rejected(_) => "rejected",
            Self::Exhausted { .. } => "exhausted",
            Self::RetryBudgetSpent { .. } => "retry_budget_spent",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::ClientGone => "client_gone",
        }
    }
}

/// What a plan (or a dry run) learned about why candidates could not serve: the ground of the
/// verdict when no attempt succeeds.
#[derive(Debug, Clone)]
pub(crate) struct VerdictFacts {
    /// The last attempt's failure.
    pub(crate) last_error: Option<UpstreamError>,
    /// Whether every failure so far was a 429.
    pub(crate) only_rate_limited: bool,
    /// The earliest time a rate-limited or saturated candidate has capacity again.
    pub(crate) rate_limited_until: Option<Instant>,
    /// Whether a rate-limited candidate did not say when it comes back.
    pub(crate) rate_limited_unknown: bool,
    /// The earliest time an open, unhealthy or dead candidate is expected back.
    pub(crate) other_until: Option<Instant>,
}

impl Default for VerdictFacts {
    fn default() -> Self {
        Self {
            last_error: None,
            only_rate_limited: true,
            rate_limited_until: None,
            rate_limited_unknown: false,
            other_until: None,
        }
    }
}

impl VerdictFacts {
    /// Notes a candidate that cannot serve at `now`, and why.
    pub(crate) fn note(&mut self, u: &Unavailable, now: Instant) {
        if u.is_rate_limit() {
            match u.back_at(now) {
                Some(t) => self.rate_limited_until = tighter(self.rate_limited_until, Some(t)),
                None => self.rate_limited_unknown = true,
            }
        } else {
            self.other_until = tighter(self.other_until, u.back_at(now));
        }
    }

    /// Notes a failed attempt; `cooldown_until` is the end of the cooldown it started, if any.
    pub(crate) fn failed(&mut self, error: UpstreamError, cooldown_until: Option<Instant>) {
        if error.class != ErrorClass::RateLimited {
            self.only_rate_limited = false;
        }
        self.rate_limited_until = tighter(self.rate_limited_until, cooldown_until);
        self.last_error = Some(error);
    }

    /// The verdict at `now` of a request that made `attempts` attempts and none served.
    pub(crate) fn verdict(&self, attempts: u32, now: Instant) -> Verdict {
        let rate_limited = || {
            let after = self
                .rate_limited_until
                .map_or(MIN_RETRY_AFTER, |t| (t - now).max(MIN_RETRY_AFTER));
            Verdict::RateLimited { retry_after: after }
        };
        if let Some(error) = &self.last_error {
            // The last word was the request's own problem (too long for every window, or refused
            // by every content filter it was offered to): the client gets it as it is.
            if matches!(
                error.class,
                ErrorClass::ContextLength | ErrorClass::ContentFilter
            ) {
                return Verdict::Rejected(error.clone());
            }
            if self.only_rate_limited {
                return rate_limited();
            }
            return Verdict::Exhausted {
                last_error: Some(error.clone()),
            };
        }
        if attempts > 0 {
            return Verdict::Exhausted { last_error: None };
        }
        if self.rate_limited_until.is_some() || self.rate_limited_unknown {
            return rate_limited();
        }
        Verdict::Unavailable {
            retry_after: self.other_until.map(|t| t - now),
        }
    }
}
