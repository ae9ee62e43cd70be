//! Alert delivery to webhooks: a JSON `POST` per notice and URL, from a bounded queue, with
//! bounded retries and exponential backoff, never blocking the alert engine (let alone a
//! request).
//!
//! [`WebhookNotifier::notify`] only tries to enqueue: when the queue is full the notice is
//! dropped and counted. One background task delivers notices in order, to each URL in turn; a
//! delivery that fails with a connection error, a timeout, a 429 or a 5xx is retried up to
//! [`WebhookOptions::max_attempts`] times with doubling waits; any other answer is final. URLs
//! may hold tokens, so they are secrets: logs name a webhook by its position in the list.
//! [`WebhookNotifier::set_urls`] replaces the list (a configuration reload): notices queued
//! before go to the list that is current when they are delivered, and with no URL nothing is
//! queued.
//!
//! The body is the notice as JSON:
//!
//! ```json
//! {"source": "echelon", "rule": "pool-unhealthy", "level": "critical", "status": "firing",
//!  "target": "pool:fast", "value": 0.25, "summary": "pool_healthy_ratio of pool:fast over 60s is 0.25 (< 0.5)",
//!  "description": "less than half of a pool's instances are healthy",
//!  "firing_for_seconds": 0.0, "timestamp": 1764210000}
//! ```

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use echelon_application::alerts::{AlertNotice, AlertNotifier};
use echelon_application::task::BackgroundTask;
use echelon_domain::secret::Secret;
use tokio::sync::mpsc;

use crate::http_client::{HttpClientError, HttpClientSettings, build_http_client};

/// Settings of webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookOptions {
    /// Notices waiting for delivery at most; further ones are dropped.
    pub queue: usize,
    /// Tries per notice and URL, the first one included.
    pub max_attempts: u32,
    /// Wait before the first retry; it doubles with each further retry.
    pub initial_backoff: Duration,
    /// Longest wait between two tries.
    pub max_backoff: Duration,
    /// Timeout of one `POST`, connection included.
    pub timeout: Duration,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            queue: 256,
            max_attempts: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Counters of webhook delivery, shown in the metrics.
#[derive(Debug, Default)]
pub struct WebhookStats {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
}

impl WebhookStats {
    /// Deliveries a webhook accepted (2xx).
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Deliveries given up after their last try or a final refusal.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Notices dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Retries made.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

/// Starting webhook delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] HttpClientError),
}

/// An [`AlertNotifier`] that posts notices to webhooks. See the module docs.
#[derive(Debug, Clone)]
pub struct WebhookNotifier {
    queue: mpsc::Sender<AlertNotice>,
    stats: Arc<WebhookStats>,
    urls: Arc<RwLock<Arc<[Secret]>>>,
}

impl WebhookNotifier {
    /// Starts delivery to `urls` on the current tokio runtime. The returned task delivers until
    /// it is shut down or dropped; notices still queued then are not delivered.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn start(
        urls: Vec<Secret>,
        options: WebhookOptions,
    ) -> Result<(Self, BackgroundTask), WebhookError> {
        let client = build_http_client(&HttpClientSettings {
            connect_timeout: options.timeout,
            request_timeout: options.timeout,
            pool_idle_timeout: Duration::from_secs(30),
            pool_max_idle_per_host: 2,
        })?;
        let (queue, mut pending) = mpsc::channel(options.queue.max(1));
        let stats = Arc::new(WebhookStats::default());
        let worker_stats = Arc::clone(&stats);
        let urls: Arc<RwLock<Arc<[Secret]>>> = Arc::new(RwLock::new(Arc::from(urls)));
        let current = Arc::clone(&urls);
        let task = BackgroundTask::spawn("alert webhooks", move |mut stop| async move {
            loop {
                let notice = tokio::select! {
                    notice = pending.recv() => match notice {
                        Some(notice) => notice,
                        None => break,
                    },
                    _ = stop.changed() => break,
                };
                let body = body(&notice);
                let urls = Arc::clone(&current.read().unwrap_or_else(PoisonError::into_inner));
                for (index, url) in urls.iter().enumerate() {
                    let delivery = deliver(&client, url, index, &body, options, &worker_stats);
                    tokio::select! {
                        () = delivery => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        });
        Ok((Self { queue, stats, urls }, task))
    }

    /// Replaces the URLs notices are posted to, from the next delivery on.
    pub fn set_urls(&self, urls: Vec<Secret>) {
        *self.urls.write().unwrap_or_else(PoisonError::into_inner) = Arc::from(urls);
    }

    /// The delivery counters.
    pub fn stats(&self) -> Arc<WebhookStats> {
        Arc::clone(&self.stats)
    }
}

impl AlertNotifier for WebhookNotifier {
    fn notify(&self, notice: &AlertNotice) {
        if self
            .urls
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
        {
            return;
        }
        if self.queue.try_send(notice.clone()).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(alert = %notice.rule, "alert webhook queue full; notice dropped");
        }
    }
}

/// The JSON body of a notice.
pub fn body(notice: &AlertNotice) -> Vec<u8> {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let value = serde_json::json!({
        "source": "echelon",
        "rule": notice.rule,
        "level": notice.level.as_str(),
        "status": notice.status.as_str(),
        "target": notice.target,
        "value": notice.value,
        "summary": notice.summary,
        "description": notice.description,
        "firing_for_seconds": (notice.at - notice.since).as_secs_f64(),
        "timestamp": timestamp,
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

async fn deliver(
    client: &reqwest::Client,
    url: &Secret,
    index: usize,
    body: &[u8],
    options: WebhookOptions,
    stats: &WebhookStats,
) {
    let mut backoff = options.initial_backoff;
    let attempts = options.max_attempts.max(1);
    for attempt in 1..=attempts {
        let sent = client
            .post(url.expose())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await;
        let retryable = match sent {
            Ok(response) if response.status().is_success() => {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(response) => {
                let status = response.status();
                let retry = status.is_server_error() || status.as_u16() == 429;
                tracing::warn!(
                    webhook = index,
                    status = status.as_u16(),
                    attempt,
                    "alert webhook refused the notice"
                );
                retry
            }
            Err(error) => {
                // The error's URL may hold a token: log only what kind of failure it was.
                let kind = if error.is_timeout() {
                    "timeout"
                } else if error.is_connect() {
                    "connect"
                } else {
                    "request"
                };
                tracing::warn!(
                    webhook = index,
                    error = kind,
                    attempt,
                    "alert webhook unreachable"
                );
                true
            }
        };
        if !retryable || attempt == attempts {
            break;
        }
        stats.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(options.max_backoff);
    }
    stats.failed.fetch_add(1, Ordering::Relaxed);
}
