//! The in-process `mock` provider: answers from its configured behaviour, without any network.
//!
//! Latency is a `tokio::time::sleep`, so tests on a paused clock run it instantly. Failures are
//! drawn from a SplitMix64 generator seeded from the provider's name, so a given configuration
//! fails on the same requests every run. The reply is the configured text or an echo of the last
//! user message; usage counts four characters a token, as OpenAI's rule of thumb does, and a
//! `max_tokens` below the reply's size cuts it with finish reason `length`.

use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use echelon_domain::chat::{
    ChatRequest, ChatResponse, ContentPart, FinishReason, Message, Role, StreamChunk, Usage,
};
use echelon_domain::error::{ErrorClass, UpstreamError};
use echelon_domain::name::{InstanceId, ProviderName};
use echelon_domain::ports::{Call, ChunkStream};
use echelon_domain::random::{Random as _, SplitMix64};
use echelon_domain::spec::{MockBehaviour, ProviderSpec};

/// Most content chunks a streamed mock answer is split into.
const MAX_CHUNKS: usize = 8;

/// What the mock says when there is no configured reply and no user text to echo.
const FALLBACK_REPLY: &str = "Hello from the echelon mock provider.";

/// The in-process mock backend.
#[derive(Debug)]
pub struct MockBackend {
    provider: ProviderName,
    behaviour: MockBehaviour,
    rng: SplitMix64,
    next_id: AtomicU64,
}

/// FNV-1a, to turn a provider name into a stable seed.
fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Tokens of a text by the four-characters rule (at least one for any non-empty text).
pub fn estimate_tokens(text: &str) -> u32 {
    let chars = text.chars().count();
    u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX)
}

impl MockBackend {
    /// A mock for the provider, with its behaviour (or the default: instant, never failing, echo).
    pub fn from_spec(spec: &ProviderSpec) -> Self {
        Self::new(spec.name.clone(), spec.mock.clone().unwrap_or_default())
    }

    /// A mock with the given behaviour; the failure sequence is seeded from the name.
    pub fn new(provider: ProviderName, behaviour: MockBehaviour) -> Self {
        let seed = seed_of(provider.as_str());
        Self {
            provider,
            behaviour,
            rng: SplitMix64::new(seed),
            next_id: AtomicU64::new(1),
        }
    }

    /// Waits the configured latency, then draws whether this request fails.
    async fn arrive(&self) -> Result<(), UpstreamError> {
        if !self.behaviour.latency.is_zero() {
            tokio::time::sleep(self.behaviour.latency).await;
        }
        let rate = self.behaviour.error_rate;
        if rate > 0.0 && self.rng.unit() < rate {
            return Err(UpstreamError::new(
                ErrorClass::Server,
                format!("mock provider `{}` injected a failure", self.provider),
            )
            .with_status(500)
            .with_code("mock_failure"));
        }
        Ok(())
    }

    /// The reply text and why it ends.
    fn reply(&self, request: &ChatRequest) -> (String, FinishReason) {
        let text = match &self.behaviour.reply {
            Some(reply) => reply.clone(),
            None => request
                .messages
                .iter()
                .rev()
                .find(|m| m.role == Role::User)
                .map(Message::joined_text)
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| FALLBACK_REPLY.to_owned()),
        };
        match request.params.max_tokens {
            Some(max) if estimate_tokens(&text) > max => {
                let cut = text
                    .char_indices()
                    .nth(max as usize * 4)
                    .map_or(text.len(), |(i, _)| i);
                (text[..cut].to_owned(), FinishReason::Length)
            }
            _ => (text, FinishReason::Stop),
        }
    }

    fn id(&self) -> String {
        format!("mock-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// See [`ChatBackend::complete`](echelon_domain::ports::ChatBackend::complete).
    ///
    /// # Errors
    ///
    /// An injected [`ErrorClass::Server`] failure, at the configured rate.
    pub async fn complete(&self, call: Call<'_>) -> Result<ChatResponse, UpstreamError> {
        self.arrive().await?;
        let (text, finish) = self.reply(call.request);
        let usage = Usage::new(
            call.request.estimated_input_tokens(),
            estimate_tokens(&text),
        );
        let mut response = ChatResponse::new(
            Arc::from(call.upstream_model),
            Message {
                role: Role::Assistant,
                content: vec![ContentPart::Text(text)],
                tool_calls: Vec::new(),
                tool_call_id: None,
                name: None,
            },
        );
        response.id = Some(self.id());
        response.finish_reason = Some(finish);
        response.usage = Some(usage);
        Ok(response)
    }

    /// See [`ChatBackend::stream`](echelon_domain::ports::ChatBackend::stream): a role chunk, the
    /// reply in up to eight word-aligned pieces, and a final chunk with finish reason and usage.
    ///
    /// # Errors
    ///
    /// An injected [`ErrorClass::Server`] failure, at the configured rate, before any chunk.
    pub async fn stream(&self, call: Call<'_>) -> Result<ChunkStream, UpstreamError> {
        self.arrive().await?;
        let (text, finish) = self.reply(call.request);
        let id = self.id();
        let model: Arc<str> = Arc::from(call.upstream_model);
        let usage = Usage::new(
            call.request.estimated_input_tokens(),
            estimate_tokens(&text),
        );
        let base = StreamChunk {
            id: Some(id),
            model: Some(model),
            ..StreamChunk::default()
        };
        let mut chunks = Vec::with_capacity(MAX_CHUNKS + 2);
        chunks.push(StreamChunk {
            role: Some(Role::Assistant),
            ..base.clone()
        });
        chunks.extend(split_words(&text, MAX_CHUNKS).map(|piece| StreamChunk {
            content: Some(piece.to_owned()),
            ..base.clone()
        }));
        chunks.push(StreamChunk {
            finish_reason: Some(finish),
            usage: Some(usage),
            ..base
        });
        Ok(Box::pin(futures_util::stream::iter(
            chunks.into_iter().map(Ok),
        )))
    }

    /// A probe meets the same latency and failure rate as a request: a mock configured to fail
    /// must not look healthy to the health checker.
    ///
    /// # Errors
    ///
    /// An injected [`ErrorClass::Server`] failure, at the configured rate.
    pub async fn probe(&self, _instance: &InstanceId) -> Result<(), UpstreamError> {
        self.arrive().await
    }
}

/// Splits a text into at most `pieces` parts at word boundaries (each part keeps its trailing
/// whitespace, so the parts concatenate to the text).
pub fn split_words(text: &str, pieces: usize) -> impl Iterator<Item = &str> {
    let words = text.split_inclusive(char::is_whitespace).count().max(1);
    let per_piece = words.div_ceil(pieces.max(1));
    let mut rest = text;
    core::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .split_inclusive(char::is_whitespace)
            .take(per_piece)
            .map(str::len)
            .sum::<usize>();
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_and_rejoin() {
        let text = "one two  three four five six seven eight nine ten";
        let pieces: Vec<_> = split_words(text, 4).collect();
        assert!(pieces.len() <= 4 && pieces.len() >= 3);
        assert_eq!(pieces.concat(), text);
        assert_eq!(split_words("", 4).count(), 0);
        assert_eq!(split_words("solo", 4).collect::<Vec<_>>(), ["solo"]);
    }

    #[test]
    fn tokens_by_four_characters() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abc"), 1);
        assert_eq!(estimate_tokens("abcdefgh"), 2);
        assert_eq!(estimate_tokens("abcdefghi"), 3);
    }

    #[test]
    fn seeds_differ_by_name() {
        assert_ne!(seed_of("a"), seed_of("b"));
        assert_eq!(seed_of("mock"), seed_of("mock"));
    }
}
