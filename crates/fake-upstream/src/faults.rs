//! The fault grammar of the fake upstream: what to break, chosen by flag or by the model name.
//!
//! A fault set is a list of tokens joined by `+`, e.g. `fail-500`, `latency-200ms+cut-after-3`
//! or `gpt-4o+429-retry-2`. Durations are written like `250ms`, `2s`, `1.5s`, `1m`, `1h`.
//!
//! | token | effect |
//! |---|---|
//! | `ok` | nothing |
//! | `latency-<dur>` | wait before answering (before the headers) |
//! | `hang` | never answer (until the server stops, or `max_hang` passes) |
//! | `reset` | read the request, then reset the TCP connection (RST) before any header |
//! | `fail-<status>` | answer that status with an OpenAI-shaped error (`fail-500`, `fail-401`, `fail-529`) |
//! | `429-retry-<secs>` | 429 with `Retry-After: <secs>` |
//! | `429-retry-ms-<ms>` | 429 with `retry-after-ms: <ms>` |
//! | `429-retry-date-<secs>` | 429 with `Retry-After` as an HTTP-date `<secs>` from now |
//! | `429-reset-<dur>` | 429 with `x-ratelimit-reset-requests: <dur>` and `x-ratelimit-remaining-requests: 0` |
//! | `fail-for-<dur>` | 503 until the server has run for `<dur>`, then normal answers |
//! | `fail-first-<n>` | 500 for the first `n` requests of this model name, then normal answers |
//! | `error-rate-<pct>` | 500 for `pct` % of requests (seeded, so reproducible) |
//! | `quota-<n>-per-<dur>` | a key's quota: `n` requests of this model name per window of `<dur>` (windows counted from server start), then 429 with `Retry-After` until the window ends |
//! | `context-length` | 400 with code `context_length_exceeded` |
//! | `content-filter` | 400 with code `content_filter` |
//! | `leak-key` | 401 whose message quotes the credential received, as careless upstreams do |
//! | `slow-first-token-<dur>` | stream: headers at once, first chunk after `<dur>`; JSON: like latency |
//! | `chunk-delay-<dur>` | stream: wait between chunks |
//! | `chunks-<n>` | split the reply into `n` content chunks (default: one a word) |
//! | `cut-after-<n>` | close the connection abruptly after `n` content chunks (JSON: mid-body) |
//! | `end-after-<n>` | stream: end the body cleanly after `n` content chunks, with no final chunk and no end marker |
//! | `stall-after-<n>` | stop sending after `n` content chunks, keeping the connection open |
//! | `malformed-after-<n>` | send a chunk that is not JSON after `n` content chunks (JSON: an invalid body) |
//! | `error-after-<n>` | send an error event after `n` content chunks, then end the body |
//! | `no-done` | a complete stream without its end marker (`data: [DONE]`, Anthropic's `message_stop`; Gemini has none) |
//! | `refuse-prefill` | 400 when the conversation ends with an assistant message (a prefill) |
//!
//! Failures are checked in this order, the first that applies answers: `hang`, `reset`,
//! `fail-for`, `fail-first`, `error-rate`, `quota`, `fail-<status>`/`429-*`, `context-length`,
//! `content-filter`, `leak-key`, `refuse-prefill`. `latency` is waited before all of them. In a model name, tokens
//! that are not faults are part of the plain model name and ignored; [`Faults::parse`] (for
//! flags) refuses them.

use core::str::FromStr;
use core::time::Duration;

use echelon_infrastructure::provider::retry_hint::parse_go_duration;

/// How a 429 tells the client when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryHint {
    /// `Retry-After: <seconds>`.
    Seconds(u64),
    /// `retry-after-ms: <milliseconds>`.
    Millis(u64),
    /// `Retry-After: <HTTP-date>`, this many seconds from the answer.
    Date(u64),
    /// `x-ratelimit-reset-requests: <duration>` with `x-ratelimit-remaining-requests: 0`.
    Reset(Duration),
}

/// A set of faults; see the module docs for the grammar.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Wait before answering.
    pub latency: Option<Duration>,
    /// Never answer.
    pub hang: bool,
    /// Reset the connection before the headers.
    pub reset: bool,
    /// Answer with this error status.
    pub status: Option<u16>,
    /// The wait a 429 announces.
    pub retry_hint: Option<RetryHint>,
    /// Fail with 503 until the server has run this long.
    pub fail_for: Option<Duration>,
    /// Fail with 500 for the first requests of a model name.
    pub fail_first: Option<u32>,
    /// Fail with 500 for this percentage of requests.
    pub error_rate: Option<u8>,
    /// Answer this many requests per window, then 429 until the window ends.
    pub quota: Option<(u32, Duration)>,
    /// Answer 400 `context_length_exceeded`.
    pub context_length: bool,
    /// Answer 400 `content_filter`.
    pub content_filter: bool,
    /// Answer 401 quoting the credential.
    pub leak_key: bool,
    /// Delay of the first streamed chunk.
    pub first_token_delay: Option<Duration>,
    /// Delay between streamed chunks.
    pub chunk_delay: Option<Duration>,
    /// Number of content chunks.
    pub chunks: Option<u32>,
    /// Cut the connection after this many content chunks.
    pub cut_after: Option<u32>,
    /// End the body cleanly after this many content chunks.
    pub end_after: Option<u32>,
    /// Stall after this many content chunks.
    pub stall_after: Option<u32>,
    /// Send a malformed chunk after this many content chunks.
    pub malformed_after: Option<u32>,
    /// Send an error event after this many content chunks.
    pub error_after: Option<u32>,
    /// Leave out the stream's end marker.
    pub no_done: bool,
    /// Refuse a conversation that ends with an assistant message.
    pub refuse_prefill: bool,
}

/// A fault token that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown or malformed fault `{token}` (see the fault grammar: e.g. `fail-500`, `latency-200ms`, `cut-after-3`)"
)]
pub struct FaultParseError {
    /// The offending token.
    pub token: String,
}

impl Faults {
    /// Parses a fault list strictly: every token must be a fault.
    ///
    /// # Errors
    ///
    /// The first token that is not a fault.
    pub fn parse(text: &str) -> Result<Self, FaultParseError> {
        let mut faults = Self::default();
        for token in text.split('+').map(str::trim).filter(|t| !t.is_empty()) {
            if !faults.apply(token) {
                return Err(FaultParseError {
                    token: token.to_owned(),
                });
            }
        }
        Ok(faults)
    }

    /// Reads the faults named in a model name; other tokens are the plain name and ignored.
    pub fn from_model(model: &str) -> Self {
        let mut faults = Self::default();
        for token in model.split('+') {
            faults.apply(token.trim());
        }
        faults
    }

    /// These faults with every fault set in `over` taking precedence.
    #[must_use]
    pub fn overridden_by(&self, over: &Self) -> Self {
        Self {
            latency: over.latency.or(self.latency),
            hang: over.hang || self.hang,
            reset: over.reset || self.reset,
            status: over.status.or(self.status),
            retry_hint: over.retry_hint.or(self.retry_hint),
            fail_for: over.fail_for.or(self.fail_for),
            fail_first: over.fail_first.or(self.fail_first),
            error_rate: over.error_rate.or(self.error_rate),
            quota: over.quota.or(self.quota),
            context_length: over.context_length || self.context_length,
            content_filter: over.content_filter || self.content_filter,
            leak_key: over.leak_key || self.leak_key,
            first_token_delay: over.first_token_delay.or(self.first_token_delay),
            chunk_delay: over.chunk_delay.or(self.chunk_delay),
            chunks: over.chunks.or(self.chunks),
            cut_after: over.cut_after.or(self.cut_after),
            end_after: over.end_after.or(self.end_after),
            stall_after: over.stall_after.or(self.stall_after),
            malformed_after: over.malformed_after.or(self.malformed_after),
            error_after: over.error_after.or(self.error_after),
            no_done: over.no_done || self.no_done,
            refuse_prefill: over.refuse_prefill || self.refuse_prefill,
        }
    }

    /// Applies one token; `false` when it is not a fault.
    fn apply(&mut self, token: &str) -> bool {
        fn dur(text: &str) -> Option<Duration> {
            parse_go_duration(text)
        }
        fn count(text: &str) -> Option<u32> {
            text.parse().ok()
        }
        match token {
            "ok" => return true,
            "hang" => self.hang = true,
            "reset" => self.reset = true,
            "context-length" => self.context_length = true,
            "content-filter" => self.content_filter = true,
            "leak-key" => self.leak_key = true,
            "no-done" => self.no_done = true,
            "refuse-prefill" => self.refuse_prefill = true,
            _ => {
                // Longer prefixes first: `fail-for-` and `fail-first-` before `fail-`.
                let parsed = if let Some(v) = token.strip_prefix("latency-") {
                    dur(v).map(|d| self.latency = Some(d))
                } else if let Some(v) = token.strip_prefix("429-retry-ms-") {
                    v.parse()
                        .ok()
                        .map(|ms| self.rate_limit(RetryHint::Millis(ms)))
                } else if let Some(v) = token.strip_prefix("429-retry-date-") {
                    v.parse().ok().map(|s| self.rate_limit(RetryHint::Date(s)))
                } else if let Some(v) = token.strip_prefix("429-retry-") {
                    v.parse()
                        .ok()
                        .map(|s| self.rate_limit(RetryHint::Seconds(s)))
                } else if let Some(v) = token.strip_prefix("429-reset-") {
                    dur(v).map(|d| self.rate_limit(RetryHint::Reset(d)))
                } else if let Some(v) = token.strip_prefix("fail-for-") {
                    dur(v).map(|d| self.fail_for = Some(d))
                } else if let Some(v) = token.strip_prefix("fail-first-") {
                    count(v).map(|n| self.fail_first = Some(n))
                } else if let Some(v) = token.strip_prefix("fail-") {
                    v.parse::<u16>()
                        .ok()
                        .filter(|s| (400..=599).contains(s))
                        .map(|s| self.status = Some(s))
                } else if let Some(v) = token.strip_prefix("error-rate-") {
                    v.parse::<u8>()
                        .ok()
                        .filter(|p| *p <= 100)
                        .map(|p| self.error_rate = Some(p))
                } else if let Some(v) = token.strip_prefix("quota-") {
                    v.split_once("-per-")
                        .and_then(|(n, window)| Some((count(n)?, dur(window)?)))
                        .filter(|(_, window)| !window.is_zero())
                        .map(|q| self.quota = Some(q))
                } else if let Some(v) = token.strip_prefix("slow-first-token-") {
                    dur(v).map(|d| self.first_token_delay = Some(d))
                } else if let Some(v) = token.strip_prefix("chunk-delay-") {
                    dur(v).map(|d| self.chunk_delay = Some(d))
                } else if let Some(v) = token.strip_prefix("chunks-") {
                    count(v).filter(|n| *n > 0).map(|n| self.chunks = Some(n))
                } else if let Some(v) = token.strip_prefix("cut-after-") {
                    count(v).map(|n| self.cut_after = Some(n))
                } else if let Some(v) = token.strip_prefix("end-after-") {
                    count(v).map(|n| self.end_after = Some(n))
                } else if let Some(v) = token.strip_prefix("stall-after-") {
                    count(v).map(|n| self.stall_after = Some(n))
                } else if let Some(v) = token.strip_prefix("malformed-after-") {
                    count(v).map(|n| self.malformed_after = Some(n))
                } else if let Some(v) = token.strip_prefix("error-after-") {
                    count(v).map(|n| self.error_after = Some(n))
                } else {
                    None
                };
                return parsed.is_some();
            }
        }
        true
    }

    fn rate_limit(&mut self, hint: RetryHint) {
        self.status = Some(429);
        self.retry_hint = Some(hint);
    }
}

impl FromStr for Faults {
    type Err = FaultParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        let f = Faults::parse("latency-200ms+cut-after-3+429-retry-2").unwrap();
        assert_eq!(f.latency, Some(Duration::from_millis(200)));
        assert_eq!(f.cut_after, Some(3));
        assert_eq!(f.status, Some(429));
        assert_eq!(f.retry_hint, Some(RetryHint::Seconds(2)));
        let f = Faults::parse("fail-for-10s").unwrap();
        assert_eq!(f.fail_for, Some(Duration::from_secs(10)));
        assert_eq!(f.status, None);
        assert_eq!(Faults::parse("fail-first-2").unwrap().fail_first, Some(2));
        assert_eq!(
            Faults::parse("quota-3-per-2s").unwrap().quota,
            Some((3, Duration::from_secs(2)))
        );
        assert!(Faults::parse("quota-3-per-0s").is_err());
        assert!(Faults::parse("quota-3").is_err());
        assert_eq!(Faults::parse("fail-529").unwrap().status, Some(529));
        assert_eq!(
            Faults::parse("429-retry-ms-1500").unwrap().retry_hint,
            Some(RetryHint::Millis(1500))
        );
        assert_eq!(
            Faults::parse("429-retry-date-30").unwrap().retry_hint,
            Some(RetryHint::Date(30))
        );
        assert_eq!(
            Faults::parse("429-reset-6m0s").unwrap().retry_hint,
            Some(RetryHint::Reset(Duration::from_secs(360)))
        );
        assert_eq!(
            Faults::parse("slow-first-token-2s")
                .unwrap()
                .first_token_delay,
            Some(Duration::from_secs(2))
        );
        assert_eq!(Faults::parse("error-rate-50").unwrap().error_rate, Some(50));
        assert_eq!(Faults::parse("end-after-4").unwrap().end_after, Some(4));
        assert!(Faults::parse("refuse-prefill").unwrap().refuse_prefill);
        assert_eq!(Faults::parse("").unwrap(), Faults::default());
        assert_eq!(Faults::parse("ok").unwrap(), Faults::default());
        for bad in [
            "fail-200",
            "fail-x",
            "error-rate-101",
            "gpt-4o",
            "latency-5",
            "chunks-0",
        ] {
            assert_eq!(
                Faults::parse(bad).unwrap_err().token,
                bad,
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn model_names_keep_plain_parts() {
        let f = Faults::from_model("gpt-4o+stall-after-2");
        assert_eq!(f.stall_after, Some(2));
        assert_eq!(Faults::from_model("gpt-4o-mini"), Faults::default());
        assert!(Faults::from_model("hang").hang);
    }

    #[test]
    fn request_faults_override_server_faults() {
        let server = Faults::parse("latency-1s+fail-500").unwrap();
        let request = Faults::parse("latency-10ms").unwrap();
        let merged = server.overridden_by(&request);
        assert_eq!(merged.latency, Some(Duration::from_millis(10)));
        assert_eq!(merged.status, Some(500));
    }
}
