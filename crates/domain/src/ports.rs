//! Ports: what the domain needs from the outside world, as native async traits over domain types.
//!
//! Adapters implement them in `echelon-infrastructure`; tests implement them with small in-process
//! fakes. The clock and randomness ports live in [`crate::time`] and [`crate::random`], the
//! shared state port (state shared by the replicas of a fleet) in [`crate::shared`].

use core::future::Future;
use core::pin::Pin;

use futures_core::Stream;

use crate::chat::{ChatRequest, ChatResponse, StreamChunk};
use crate::error::UpstreamError;
use crate::name::InstanceId;

/// A boxed, sendable future, for the object-safe form of the ports.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The chunks of a streamed answer. The stream ends after the chunk with a finish reason; an item
/// that is `Err` ends it with a failure (cut, malformed chunk, upstream error event).
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<StreamChunk, UpstreamError>> + Send>>;

/// One upstream call: which instance, under which upstream model name, with what request.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The instance (provider key × model) to call.
    pub instance: &'a InstanceId,
    /// The model name the upstream knows (`[models.X] upstream`), not the configured id.
    pub upstream_model: &'a str,
    /// The request, with echelon defaults already applied.
    pub request: &'a ChatRequest,
}

/// The chat backend port: sends a request to one instance.
///
/// Implementations do no retries of their own: every attempt is planned and counted by the
/// caller. Timeouts are also the caller's, so a slow upstream is cut by the same clock that
/// plans the fallback.
pub trait ChatBackend: Send + Sync {
    /// Sends a non-streaming request and waits for the whole answer.
    fn complete(
        &self,
        call: Call<'_>,
    ) -> impl Future<Output = Result<ChatResponse, UpstreamError>> + Send;

    /// Sends a streaming request; resolves once the upstream has accepted it (headers received).
    fn stream(
        &self,
        call: Call<'_>,
    ) -> impl Future<Output = Result<ChunkStream, UpstreamError>> + Send;

    /// A cheap liveness probe of the instance (by default the provider's model listing), never
    /// counted as user traffic.
    fn probe(
        &self,
        instance: &InstanceId,
    ) -> impl Future<Output = Result<(), UpstreamError>> + Send;
}

/// The object-safe form of [`ChatBackend`], implemented for every `ChatBackend`, so a composition
/// root can hold `Arc<dyn DynChatBackend>`.
pub trait DynChatBackend: Send + Sync {
    /// See [`ChatBackend::complete`].
    fn complete_boxed<'a>(
        &'a self,
        call: Call<'a>,
    ) -> BoxFuture<'a, Result<ChatResponse, UpstreamError>>;
    /// See [`ChatBackend::stream`].
    fn stream_boxed<'a>(
        &'a self,
        call: Call<'a>,
    ) -> BoxFuture<'a, Result<ChunkStream, UpstreamError>>;
    /// See [`ChatBackend::probe`].
    fn probe_boxed<'a>(
        &'a self,
        instance: &'a InstanceId,
    ) -> BoxFuture<'a, Result<(), UpstreamError>>;
}

impl<T: ChatBackend> DynChatBackend for T {
    fn complete_boxed<'a>(
        &'a self,
        call: Call<'a>,
    ) -> BoxFuture<'a, Result<ChatResponse, UpstreamError>> {
        Box::pin(self.complete(call))
    }

    fn stream_boxed<'a>(
        &'a self,
        call: Call<'a>,
    ) -> BoxFuture<'a, Result<ChunkStream, UpstreamError>> {
        Box::pin(self.stream(call))
    }

    fn probe_boxed<'a>(
        &'a self,
        instance: &'a InstanceId,
    ) -> BoxFuture<'a, Result<(), UpstreamError>> {
        Box::pin(self.probe(instance))
    }
}
