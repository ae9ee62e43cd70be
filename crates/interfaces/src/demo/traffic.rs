//! The demo's clients: a few concurrent loops that send chat requests (JSON and streaming)
//! through the gateway's HTTP API, and the record of what each client saw.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Largest response body a demo client reads; the fake upstreams answer with a few words.
const MAX_BODY: usize = 1 << 20;

/// What one request looked like from the client's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// When it finished, since the start of the demo.
    pub at: Duration,
    /// From sending to the last byte.
    pub latency: Duration,
    /// The HTTP status (0 when no answer arrived).
    pub status: u16,
    /// A complete answer: 200 with a message, or a stream that ended with `[DONE]` and no error.
    pub ok: bool,
    /// Whether it was a streaming request.
    pub streamed: bool,
    /// Upstream attempts the gateway made (`x-echelon-attempts`).
    pub attempts: u32,
    /// The echelon that answered (from `x-echelon-route`).
    pub echelon: Option<String>,
}

/// Every outcome so far and the requests in flight.
#[derive(Debug)]
pub struct Recorder {
    started: Instant,
    outcomes: Mutex<Vec<Outcome>>,
    in_flight: AtomicU64,
}

/// Counts over a set of outcomes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests finished.
    pub requests: u64,
    /// Complete answers.
    pub served: u64,
    /// Anything else: what a client of the gateway would have seen as an error.
    pub errors: u64,
    /// Requests that needed more than one upstream attempt.
    pub fallbacks: u64,
    /// Streaming requests.
    pub streamed: u64,
    /// Served requests by the echelon that answered.
    pub by_echelon: BTreeMap<String, u64>,
    /// Failed requests by HTTP status (0: no answer).
    pub errors_by_status: BTreeMap<u16, u64>,
    /// Latencies of served requests, sorted.
    pub latencies: Vec<Duration>,
}

impl Tally {
    /// The latency at `pct` percent (nearest rank), if any request was served.
    pub fn percentile(&self, pct: usize) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let rank = (self.latencies.len() * pct).div_ceil(100).max(1);
        self.latencies.get(rank - 1).copied()
    }
}

impl Recorder {
    /// An empty record starting now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            outcomes: Mutex::new(Vec::new()),
            in_flight: AtomicU64::new(0),
        }
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Requests sent and not yet finished.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn push(&self, outcome: Outcome) {
        self.outcomes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(outcome);
    }

    /// Counts over every outcome, or over those of the last `window`.
    pub fn tally(&self, window: Option<Duration>) -> Tally {
        let now = self.elapsed();
        let outcomes = self
            .outcomes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut tally = Tally::default();
        let recent = outcomes
            .iter()
            .filter(|o| window.is_none_or(|w| now.saturating_sub(o.at) <= w));
        for outcome in recent {
            tally.requests += 1;
            tally.streamed += u64::from(outcome.streamed);
            if outcome.attempts > 1 {
                tally.fallbacks += 1;
            }
            if outcome.ok {
                tally.served += 1;
                tally.latencies.push(outcome.latency);
                let echelon = outcome.echelon.clone().unwrap_or_else(|| "?".into());
                *tally.by_echelon.entry(echelon).or_default() += 1;
            } else {
                tally.errors += 1;
                *tally.errors_by_status.entry(outcome.status).or_default() += 1;
            }
        }
        tally.latencies.sort_unstable();
        tally
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// One client: sends requests one after another until `stop` turns true. Every third request
/// (offset by the client's number) streams.
pub async fn client(
    number: usize,
    http: reqwest::Client,
    url: String,
    model: &'static str,
    recorder: Arc<Recorder>,
    stop: watch::Receiver<bool>,
) {
    let mut sent = 0usize;
    while !*stop.borrow() {
        let streamed = (number + sent).is_multiple_of(3);
        let body = serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": format!("demo request {number}.{sent}: say hello")}],
            "max_tokens": 32,
            "stream": streamed,
        })
        .to_string();
        recorder.in_flight.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let outcome = send(&http, &url, body, streamed).await;
        recorder.in_flight.fetch_sub(1, Ordering::Relaxed);
        recorder.push(Outcome {
            at: recorder.elapsed(),
            latency: started.elapsed(),
            streamed,
            ..outcome
        });
        sent += 1;
    }
}

async fn send(http: &reqwest::Client, url: &str, body: String, streamed: bool) -> Outcome {
    let failed = |status: u16| Outcome {
        at: Duration::ZERO,
        latency: Duration::ZERO,
        status,
        ok: false,
        streamed,
        attempts: 0,
        echelon: None,
    };
    let Ok(response) = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
    else {
        return failed(0);
    };
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let attempts = header("x-echelon-attempts")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let echelon = header("x-echelon-route").and_then(|route| echelon_of(&route));
    let Ok(bytes) = response.bytes().await else {
        return Outcome {
            attempts,
            ..failed(status)
        };
    };
    let ok = status == 200
        && bytes.len() <= MAX_BODY
        && if streamed {
            complete_stream(&bytes)
        } else {
            complete_json(&bytes)
        };
    Outcome {
        at: Duration::ZERO,
        latency: Duration::ZERO,
        status,
        ok,
        streamed,
        attempts,
        echelon,
    }
}

/// `demo > demo > echelon2 > flaky/gpt-demo#1` → `echelon2`.
pub fn echelon_of(route: &str) -> Option<String> {
    let parts: Vec<&str> = route.split(" > ").collect();
    (parts.len() >= 4).then(|| parts[2].to_owned())
}

/// A chat completion with a message.
fn complete_json(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/choices/0/message/content")
                .map(serde_json::Value::is_string)
        })
        .unwrap_or(false)
}

/// A stream that ended with `data: [DONE]` and carried no error event.
fn complete_stream(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    let mut done = false;
    for line in text.lines() {
        let line = line.trim_end();
        if line == "event: error" || line.starts_with("data: {\"error\"") {
            return false;
        }
        if line == "data: [DONE]" {
            done = true;
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_complete_only_with_done_and_without_an_error_event() {
        assert!(complete_stream(
            b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n"
        ));
        assert!(!complete_stream(b"data: {\"choices\":[]}\n\n"));
        assert!(!complete_stream(
            b"data: {\"choices\":[]}\n\nevent: error\ndata: {\"error\":{}}\n\n"
        ));
        assert!(complete_json(
            br#"{"choices":[{"message":{"role":"assistant","content":"hi"}}]}"#
        ));
        assert!(!complete_json(br#"{"error":{"message":"x"}}"#));
    }

    #[test]
    fn the_echelon_comes_from_the_route_header() {
        assert_eq!(
            echelon_of("demo > demo > echelon2 > flaky/gpt-demo#1").as_deref(),
            Some("echelon2")
        );
        assert_eq!(echelon_of("pool:x > flaky/gpt-demo#1"), None);
    }

    #[test]
    fn tallies_count_fallbacks_errors_and_percentiles() {
        let recorder = Recorder::new();
        for (i, (ok, attempts)) in [(true, 1), (true, 3), (false, 2), (true, 1)]
            .into_iter()
            .enumerate()
        {
            recorder.push(Outcome {
                at: Duration::ZERO,
                latency: Duration::from_millis(10 * (i as u64 + 1)),
                status: if ok { 200 } else { 502 },
                ok,
                streamed: i == 0,
                attempts,
                echelon: ok.then(|| format!("echelon{attempts}")),
            });
        }
        let tally = recorder.tally(None);
        assert_eq!((tally.requests, tally.served, tally.errors), (4, 3, 1));
        assert_eq!(tally.fallbacks, 2);
        assert_eq!(tally.streamed, 1);
        assert_eq!(tally.by_echelon.get("echelon1"), Some(&2));
        assert_eq!(tally.errors_by_status.get(&502), Some(&1));
        assert_eq!(tally.percentile(50), Some(Duration::from_millis(20)));
        assert_eq!(tally.percentile(95), Some(Duration::from_millis(40)));
    }
}
