//! Bodies the connection wraps around each exchange: the request body under
//! `body_read_timeout`, and the response body holding the guard that marks the request done.

use core::pin::Pin;
use core::task::{Context, Poll};
use std::sync::Arc;

use bytes::Bytes;
use echelon_infrastructure::metrics::{ConnectionTimeout, Metrics};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::connection::RequestGuard;

/// The error a request body ends with when it did not arrive within `body_read_timeout`;
/// handlers answer it with 408 (see [`is_body_read_timeout`]).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within server.body_read_timeout")]
pub struct BodyReadTimeout;

/// Whether `error`, or anything it wraps, is a [`BodyReadTimeout`].
pub fn is_body_read_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<BodyReadTimeout>() {
            return true;
        }
        next = error.source();
    }
    false
}

/// A request body that fails with [`BodyReadTimeout`] once its deadline passes. The timer is
/// only created when the body is not already buffered, so small requests pay nothing for it.
#[derive(Debug)]
pub(super) struct TimedBody<B> {
    inner: B,
    deadline: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    metrics: Arc<Metrics>,
    expired: bool,
}

impl<B> TimedBody<B> {
    pub(super) fn new(inner: B, deadline: Instant, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            deadline,
            sleep: None,
            metrics,
            expired: false,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, <Self as Body>::Error>>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_ready() {
            this.expired = true;
            this.metrics
                .connections()
                .timed_out(ConnectionTimeout::Body);
            return Poll::Ready(Some(Err(Box::new(BodyReadTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request counted as in flight until hyper has written it
/// whole (or the connection is gone) and drops it.
#[derive(Debug)]
pub(super) struct GuardedBody<B> {
    inner: B,
    _guard: RequestGuard,
}

impl<B> GuardedBody<B> {
    pub(super) fn new(inner: B, guard: RequestGuard) -> Self {
        Self {
            inner,
            _guard: guard,
        }
    }
}

impl<B: Body + Unpin> Body for GuardedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, <Self as Body>::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
