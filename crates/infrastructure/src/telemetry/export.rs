//! A span processor that never makes a request wait for the trace collector: ended spans go into
//! a bounded queue with a non-blocking send, and one tokio task exports them in batches, each
//! export under a timeout. A full queue or a failed export drops spans and counts them.

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::sync::Arc;

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, oneshot};

/// Settings of the export queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// Ended spans waiting for export at most; further spans are dropped.
    pub queue: usize,
    /// Most spans per export call.
    pub batch: usize,
    /// Longest time a span waits for its batch to fill.
    pub interval: Duration,
    /// Timeout of one export call; a batch that does not make it is dropped.
    pub timeout: Duration,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            queue: 4096,
            batch: 512,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Counters of the export queue, shown in the metrics.
#[derive(Debug, Default)]
pub struct ExportStats {
    exported: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_export_failed: AtomicU64,
}

impl ExportStats {
    /// Spans the collector accepted.
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    /// Spans dropped because the queue was full (the collector is slow or down).
    pub fn dropped_queue_full(&self) -> u64 {
        self.dropped_queue_full.load(Ordering::Relaxed)
    }

    /// Spans dropped because their export failed or timed out.
    pub fn dropped_export_failed(&self) -> u64 {
        self.dropped_export_failed.load(Ordering::Relaxed)
    }

    /// Every span dropped, for whatever reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full() + self.dropped_export_failed()
    }
}

enum Message {
    Span(Box<SpanData>),
    Flush(oneshot::Sender<()>),
}

/// The processor. See the module docs.
#[derive(Debug)]
pub struct QueueSpanProcessor {
    queue: mpsc::Sender<Message>,
    stats: Arc<ExportStats>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Span(_) => f.write_str("Span"),
            Self::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl QueueSpanProcessor {
    /// Starts the export task on the current tokio runtime; it runs until the processor is
    /// dropped (with the tracer provider), exporting what is left first.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start<E: SpanExporter + 'static>(exporter: E, options: ExportOptions) -> Self {
        let (queue, pending) = mpsc::channel(options.queue.max(1));
        let stats = Arc::new(ExportStats::default());
        tokio::spawn(run(exporter, pending, options, Arc::clone(&stats)));
        Self { queue, stats }
    }

    /// The queue's counters.
    pub fn stats(&self) -> Arc<ExportStats> {
        Arc::clone(&self.stats)
    }

    /// A handle that flushes the queue from async code.
    pub fn flusher(&self) -> Flusher {
        Flusher {
            queue: self.queue.clone(),
        }
    }
}

/// Flushes a [`QueueSpanProcessor`] from async code (its `force_flush` cannot wait without
/// blocking a runtime thread).
#[derive(Debug, Clone)]
pub struct Flusher {
    queue: mpsc::Sender<Message>,
}

impl Flusher {
    /// Exports every span queued so far; waits at most `timeout`. False when it did not finish.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let (done, finished) = oneshot::channel();
        let sent = tokio::time::timeout(timeout, async {
            self.queue.send(Message::Flush(done)).await.is_ok() && finished.await.is_ok()
        });
        sent.await.unwrap_or(false)
    }
}

impl SpanProcessor for QueueSpanProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.queue.try_send(Message::Span(Box::new(span))).is_err() {
            self.stats
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        // Never wait here: this may run on a runtime thread. Ask for a flush and return.
        let (done, _) = oneshot::channel();
        self.queue
            .try_send(Message::Flush(done))
            .map_err(|_| OTelSdkError::InternalFailure("span export queue full".into()))
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        // The export task ends, after a last export, when the processor is dropped.
        Ok(())
    }
}

async fn run<E: SpanExporter>(
    exporter: E,
    mut pending: mpsc::Receiver<Message>,
    options: ExportOptions,
    stats: Arc<ExportStats>,
) {
    let batch_size = options.batch.max(1);
    let mut batch: Vec<SpanData> = Vec::with_capacity(batch_size);
    let mut ticks = tokio::time::interval(options.interval.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = pending.recv() => match message {
                Some(Message::Span(span)) => {
                    batch.push(*span);
                    if batch.len() >= batch_size {
                        export(&exporter, &mut batch, options.timeout, &stats).await;
                    }
                }
                Some(Message::Flush(done)) => {
                    export(&exporter, &mut batch, options.timeout, &stats).await;
                    let _ = done.send(());
                }
                None => break,
            },
            _ = ticks.tick() => export(&exporter, &mut batch, options.timeout, &stats).await,
        }
    }
    export(&exporter, &mut batch, options.timeout, &stats).await;
    let _ = exporter.shutdown_with_timeout(options.timeout);
}

async fn export<E: SpanExporter>(
    exporter: &E,
    batch: &mut Vec<SpanData>,
    timeout: Duration,
    stats: &ExportStats,
) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::take(batch);
    let n = spans.len() as u64;
    match tokio::time::timeout(timeout, exporter.export(spans)).await {
        Ok(Ok(())) => {
            stats.exported.fetch_add(n, Ordering::Relaxed);
        }
        Ok(Err(error)) => {
            stats.dropped_export_failed.fetch_add(n, Ordering::Relaxed);
            tracing::debug!(target: "echelon::telemetry", %error, spans = n, "span export failed");
        }
        Err(_) => {
            stats.dropped_export_failed.fetch_add(n, Ordering::Relaxed);
            tracing::debug!(target: "echelon::telemetry", spans = n, "span export timed out");
        }
    }
}
