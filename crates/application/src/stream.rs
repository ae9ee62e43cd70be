//! Streaming: wait for the first content chunk (failover is still possible until then), then
//! relay the rest under idle and total time limits, ending with an explicit failure event when the
//! upstream errs, is cut or stalls — never with a clean end that hides a truncated answer.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use echelon_domain::chat::{ChatRequest, StreamChunk, Usage};
use echelon_domain::error::{ErrorClass, UpstreamError};
use echelon_domain::plan::{Attempt, AttemptRecord, Outcome, Plan};
use echelon_domain::ports::{ChunkStream, DynChatBackend};
use echelon_domain::random::Random;
use echelon_domain::time::{Clock, DurationText, Instant};
use futures_util::{Stream, StreamExt};
use tracing::Instrument;

use crate::clock::TokioClock;
use crate::gateway::{
    Generation, attempt_span, context_overflow, record_answer, record_outcome, timeout_outcome,
};

/// What the first phase of a streaming attempt produced: the open upstream stream and the chunks
/// read so far (role-only chunks, then the first content chunk).
pub(crate) struct FirstContent {
    pub(crate) stream: Option<ChunkStream>,
    pub(crate) buffered: Vec<StreamChunk>,
}

/// Opens the upstream stream and reads until the first content chunk, within the attempt's
/// time-to-first-token limit. An upstream stream that ends cleanly before any content (an empty
/// answer) counts as content: there is nothing left to fail over for.
pub(crate) async fn first_content(
    backend: &dyn DynChatBackend,
    attempt: &Attempt,
    request: &ChatRequest,
    clock: &TokioClock,
    request_deadline: Instant,
) -> Result<FirstContent, Outcome> {
    let timer = attempt.timeouts.first_token.min(attempt.timeouts.total);
    let read = async {
        let mut stream = backend.stream_boxed(attempt.call(request)).await?;
        let mut buffered = Vec::new();
        loop {
            match stream.next().await {
                Some(Ok(chunk)) => {
                    let content = chunk.has_content();
                    buffered.push(chunk);
                    if content {
                        return Ok(FirstContent {
                            stream: Some(stream),
                            buffered,
                        });
                    }
                }
                Some(Err(error)) => return Err(error),
                None => {
                    return Ok(FirstContent {
                        stream: None,
                        buffered,
                    });
                }
            }
        }
    };
    let span = attempt_span(attempt);
    let result = tokio::time::timeout_at(clock.to_tokio(attempt.started + timer), read)
        .instrument(span.clone())
        .await;
    let latency = clock.now() - attempt.started;
    let result = match result {
        Ok(Ok(first)) => Ok(first),
        Ok(Err(error)) => Err(Outcome::Failure {
            error: context_overflow(error, attempt, request),
            latency,
        }),
        Err(_) => Err(timeout_outcome(
            attempt,
            timer,
            request_deadline,
            latency,
            "no first token",
        )),
    };
    match &result {
        Ok(first) => {
            let model = first.buffered.iter().find_map(|c| c.model.as_deref());
            record_answer(
                &span,
                model.unwrap_or(attempt.upstream_model.as_str()),
                None,
            );
        }
        Err(outcome) => record_outcome(&span, outcome),
    }
    result
}

/// What a stream needs to record its attempt's outcome when it ends, however it ends.
pub(crate) struct StreamSettle {
    pub(crate) plan: Plan,
    pub(crate) attempt: Attempt,
    pub(crate) clock: TokioClock,
    pub(crate) rng: Arc<dyn Random>,
    /// Keeps the generation the request started on alive until the stream ends.
    pub(crate) generation: Arc<Generation>,
    /// The request's span, kept open until the stream ends so that it covers the whole answer
    /// and carries its usage and final status.
    pub(crate) span: tracing::Span,
}

impl StreamSettle {
    pub(crate) fn attempts_so_far(&self) -> Vec<AttemptRecord> {
        self.plan.attempts().to_vec()
    }

    fn record(self, outcome: Outcome, model: &str) {
        let Self {
            mut plan,
            attempt,
            clock,
            rng,
            generation,
            span,
        } = self;
        match &outcome {
            Outcome::Success { usage, .. } => record_answer(&span, model, *usage),
            other => record_outcome(&span, other),
        }
        // Recording the outcome inside the span makes the span's end the stream's end: trace
        // exporters take a span's last exit as its end time.
        span.in_scope(|| plan.record(attempt, outcome, clock.now(), rng.as_ref()));
        drop(generation);
    }
}

/// One item of a served stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A chunk to relay.
    Chunk(StreamChunk),
    /// The stream failed after content was sent; the client must see an explicit error and no
    /// normal end.
    Failed(UpstreamError),
}

/// The rest of a streamed answer after its first content chunk.
///
/// It ends after the upstream's clean end (the attempt is recorded as a success), or with one
/// [`StreamEvent::Failed`] on an upstream error, an idle gap longer than the echelon's
/// `idle_timeout`, or the attempt's total time running out (recorded as failures, except when
/// that time was cut short by the request's own deadline: then it is nobody's fault and recorded
/// as a cancellation, though the client still sees the failure event). Dropping it early — the
/// client went away — cancels the upstream call, releases every permit and records a
/// cancellation.
pub struct ResponseStream {
    inner: Option<ChunkStream>,
    pending: VecDeque<StreamChunk>,
    timer: Pin<Box<tokio::time::Sleep>>,
    idle: Duration,
    total_deadline: tokio::time::Instant,
    /// Whether `total_deadline` is the request's overall deadline rather than the attempt's
    /// own limit.
    request_bound: bool,
    settle: Option<StreamSettle>,
    ttft: Duration,
    usage: Option<Usage>,
    model: Arc<str>,
}

impl std::fmt::Debug for ResponseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStream")
            .field("model", &self.model)
            .field("pending", &self.pending.len())
            .field("open", &self.inner.is_some())
            .finish_non_exhaustive()
    }
}

impl ResponseStream {
    pub(crate) fn new(
        inner: Option<ChunkStream>,
        buffered: Vec<StreamChunk>,
        settle: StreamSettle,
        model: Arc<str>,
    ) -> Self {
        let timeouts = settle.attempt.timeouts;
        let started = settle.attempt.started;
        let clock = settle.clock;
        let now = clock.now();
        let total_deadline = clock.to_tokio(started + timeouts.total);
        let request_bound = started + timeouts.total >= settle.plan.deadline();
        let idle_deadline = (tokio::time::Instant::now() + timeouts.idle).min(total_deadline);
        let usage = buffered.iter().rev().find_map(|c| c.usage);
        let mut stream = Self {
            inner,
            pending: buffered.into(),
            timer: Box::pin(tokio::time::sleep_until(idle_deadline)),
            idle: timeouts.idle,
            total_deadline,
            request_bound,
            settle: Some(settle),
            ttft: now - started,
            usage,
            model,
        };
        if stream.inner.is_none() {
            // The upstream already ended cleanly while we waited for content.
            stream.finish_success();
        }
        stream
    }

    /// The model that is answering.
    pub fn model(&self) -> &Arc<str> {
        &self.model
    }

    fn finish_success(&mut self) {
        if let Some(settle) = self.settle.take() {
            let latency = settle.clock.now() - settle.attempt.started;
            settle.record(
                Outcome::Success {
                    latency,
                    ttft: Some(self.ttft),
                    usage: self.usage,
                },
                &self.model,
            );
        }
    }

    fn finish_failure(&mut self, error: UpstreamError) -> StreamEvent {
        self.inner = None;
        self.pending.clear();
        if let Some(settle) = self.settle.take() {
            let latency = settle.clock.now() - settle.attempt.started;
            settle.record(
                Outcome::Failure {
                    error: error.clone(),
                    latency,
                },
                &self.model,
            );
        }
        StreamEvent::Failed(error)
    }

    /// The total time ran out: the upstream's failure when it was the attempt's own limit, a
    /// cancellation when the request's deadline cut it (as for a non-streaming attempt). The
    /// client sees a failure event either way.
    fn finish_out_of_time(&mut self) -> StreamEvent {
        if !self.request_bound {
            return self.finish_failure(UpstreamError::new(
                ErrorClass::Timeout,
                "stream did not finish within the attempt's total time",
            ));
        }
        self.inner = None;
        self.pending.clear();
        if let Some(settle) = self.settle.take() {
            settle.record(Outcome::Cancelled, &self.model);
        }
        StreamEvent::Failed(UpstreamError::new(
            ErrorClass::Timeout,
            "stream did not finish before the request's deadline",
        ))
    }
}

impl Stream for ResponseStream {
    type Item = StreamEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StreamEvent>> {
        let this = &mut *self;
        if let Some(chunk) = this.pending.pop_front() {
            return Poll::Ready(Some(StreamEvent::Chunk(chunk)));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if tokio::time::Instant::now() >= this.total_deadline {
                    return Poll::Ready(Some(this.finish_out_of_time()));
                }
                if chunk.usage.is_some() {
                    this.usage = chunk.usage;
                }
                let next_idle = (tokio::time::Instant::now() + this.idle).min(this.total_deadline);
                this.timer.as_mut().reset(next_idle);
                Poll::Ready(Some(StreamEvent::Chunk(chunk)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(this.finish_failure(error))),
            Poll::Ready(None) => {
                this.inner = None;
                this.finish_success();
                Poll::Ready(None)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    if tokio::time::Instant::now() >= this.total_deadline {
                        return Poll::Ready(Some(this.finish_out_of_time()));
                    }
                    let message =
                        format!("stream stalled: no chunk for {}", DurationText(this.idle));
                    let error = UpstreamError::new(ErrorClass::Timeout, message);
                    Poll::Ready(Some(this.finish_failure(error)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl Drop for ResponseStream {
    fn drop(&mut self) {
        // Dropped before its end: the client went away. Close the upstream first so the
        // connection is released, then record a cancellation, which counts against nobody.
        self.inner = None;
        if let Some(settle) = self.settle.take() {
            settle.record(Outcome::Cancelled, &self.model);
        }
    }
}
