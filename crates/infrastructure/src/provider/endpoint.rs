//! Where requests go: the endpoints of each provider API, appended to the provider's API root.
//!
//! `ProviderSpec::base_url` is the API root, version segment included (`https://api.openai.com/v1`,
//! `https://api.anthropic.com/v1`, `https://generativelanguage.googleapis.com/v1beta`);
//! echelon-config normalizes every form users write to it. The adapters only append a path:
//!
//! | kind | endpoint | path after the root |
//! |---|---|---|
//! | `openai` | chat completions, responses, embeddings, models | `/chat/completions`, `/responses`, `/embeddings`, `/models` |
//! | `anthropic` | messages, models | `/messages`, `/models` |
//! | `gemini` | generateContent, streamGenerateContent, batchEmbedContents, models | `/models/{model}:generateContent`, `/models/{model}:streamGenerateContent?alt=sse`, `/models/{model}:batchEmbedContents`, `/models` |

use echelon_domain::spec::{ProviderKind, ProviderSpec};
use reqwest::Url;

/// One endpoint of a provider API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// OpenAI `POST /chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /responses`.
    Responses,
    /// OpenAI `POST /embeddings`.
    Embeddings,
    /// Anthropic `POST /messages`.
    Messages,
    /// `GET /models`, the listing every kind has (the health probe).
    Models,
    /// Gemini `POST /models/{model}:generateContent`.
    GenerateContent,
    /// Gemini `POST /models/{model}:streamGenerateContent?alt=sse`.
    StreamGenerateContent,
    /// Gemini `POST /models/{model}:batchEmbedContents`.
    BatchEmbedContents,
}

impl Endpoint {
    /// The endpoints of a kind's API, the chat endpoint first (none for the mock).
    pub const fn of(kind: ProviderKind) -> &'static [Self] {
        match kind {
            ProviderKind::Openai => &[
                Self::ChatCompletions,
                Self::Responses,
                Self::Embeddings,
                Self::Models,
            ],
            ProviderKind::Anthropic => &[Self::Messages, Self::Models],
            ProviderKind::Gemini => &[
                Self::GenerateContent,
                Self::StreamGenerateContent,
                Self::BatchEmbedContents,
                Self::Models,
            ],
            ProviderKind::Mock => &[],
        }
    }

    /// The endpoint's name in `config show --resolved` (`chat_completions`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat_completions",
            Self::Responses => "responses",
            Self::Embeddings => "embeddings",
            Self::Messages => "messages",
            Self::Models => "models",
            Self::GenerateContent => "generate_content",
            Self::StreamGenerateContent => "stream_generate_content",
            Self::BatchEmbedContents => "batch_embed_contents",
        }
    }

    /// The path after the API root. `model` is Gemini's model resource (`models/gemini-2.5-flash`,
    /// `tunedModels/x`); the other endpoints ignore it.
    fn path(self, model: &str) -> String {
        match self {
            Self::ChatCompletions => "/chat/completions".into(),
            Self::Responses => "/responses".into(),
            Self::Embeddings => "/embeddings".into(),
            Self::Messages => "/messages".into(),
            Self::Models => "/models".into(),
            Self::GenerateContent => format!("/{model}:generateContent"),
            Self::StreamGenerateContent => format!("/{model}:streamGenerateContent?alt=sse"),
            Self::BatchEmbedContents => format!("/{model}:batchEmbedContents"),
        }
    }
}

/// Gemini's resource name of an upstream model: `models/{model}`, or the name itself when it
/// already has a collection (`tunedModels/x`). `None` when the name has characters that do not
/// belong in a path (only ASCII letters, digits, `.`, `_`, `-` and `/` are accepted).
pub fn gemini_model(upstream_model: &str) -> Option<String> {
    let model = upstream_model
        .strip_prefix("models/")
        .unwrap_or(upstream_model);
    let valid = !model.is_empty()
        && !model.starts_with('/')
        && !model.contains("..")
        && model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
    if !valid {
        return None;
    }
    Some(if model.contains('/') {
        model.to_owned()
    } else {
        format!("models/{model}")
    })
}

/// A provider's API root, split into the part paths are appended to and the query string kept
/// on every request (Azure's `?api-version=…`).
#[derive(Debug, Clone)]
pub struct ApiRoot {
    prefix: String,
    query: Option<String>,
}

impl ApiRoot {
    /// Parses an `http(s)` API root; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let url = Url::parse(text.trim()).ok()?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return None;
        }
        let mut prefix = format!("{}://{}", url.scheme(), url.host_str()?);
        if let Some(port) = url.port() {
            prefix.push_str(&format!(":{port}"));
        }
        prefix.push_str(url.path().trim_end_matches('/'));
        Some(Self {
            prefix,
            query: url.query().map(str::to_owned),
        })
    }

    /// The request URL of an endpoint, with the root's query string; `model` as in
    /// [`gemini_model`] for Gemini's per-model endpoints.
    pub fn url(&self, endpoint: Endpoint, model: &str) -> Option<Url> {
        let path = endpoint.path(model);
        let mut text = format!("{}{path}", self.prefix);
        if let Some(query) = &self.query {
            text.push(if path.contains('?') { '&' } else { '?' });
            text.push_str(query);
        }
        Url::parse(&text).ok()
    }

    /// The URL of an endpoint as it may be shown: without the root's query string, which may
    /// carry credentials; `model` is written as given (`models/{model}` in listings).
    pub fn shown(&self, endpoint: Endpoint, model: &str) -> String {
        format!("{}{}", self.prefix, endpoint.path(model))
    }

    /// Whether the host is Azure OpenAI's, which takes the key in `api-key`.
    pub(crate) fn is_azure(&self) -> bool {
        Url::parse(&self.prefix)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            .is_some_and(|host| {
                [
                    ".openai.azure.com",
                    ".cognitiveservices.azure.com",
                    ".services.ai.azure.com",
                ]
                .iter()
                .any(|suffix| host.ends_with(suffix))
            })
    }
}

/// Every endpoint of a provider as it may be shown (no query string), Gemini's per-model ones
/// with a `{model}` placeholder; empty for the mock, `None` when the base URL is not an http(s)
/// URL.
pub fn endpoint_urls(spec: &ProviderSpec) -> Option<Vec<(Endpoint, String)>> {
    if spec.kind == ProviderKind::Mock {
        return Some(Vec::new());
    }
    let root = ApiRoot::parse(&spec.base_url)?;
    Some(
        Endpoint::of(spec.kind)
            .iter()
            .map(|&endpoint| (endpoint, root.shown(endpoint, "models/{model}")))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_query_rides_on_every_url_and_is_never_shown() {
        let root = ApiRoot::parse(
            "https://r.openai.azure.com/openai/deployments/d/?api-version=2024-10-21",
        )
        .unwrap();
        let url = root.url(Endpoint::ChatCompletions, "").unwrap();
        assert_eq!(
            url.as_str(),
            "https://r.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            root.shown(Endpoint::ChatCompletions, ""),
            "https://r.openai.azure.com/openai/deployments/d/chat/completions"
        );
        let with_query = ApiRoot::parse("http://127.0.0.1:8080/v1beta?k=v").unwrap();
        assert_eq!(
            with_query
                .url(Endpoint::StreamGenerateContent, "models/m")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8080/v1beta/models/m:streamGenerateContent?alt=sse&k=v"
        );
        assert!(ApiRoot::parse("ftp://example.com").is_none());
        assert!(ApiRoot::parse("not a url").is_none());
    }

    #[test]
    fn gemini_model_resources() {
        assert_eq!(
            gemini_model("gemini-2.5-flash").as_deref(),
            Some("models/gemini-2.5-flash")
        );
        assert_eq!(
            gemini_model("models/gemini-2.5-flash").as_deref(),
            Some("models/gemini-2.5-flash")
        );
        assert_eq!(
            gemini_model("tunedModels/my-model").as_deref(),
            Some("tunedModels/my-model")
        );
        for bad in ["", "a?key=x", "../x", "/abs", "a b", "a#b", "a%2f"] {
            assert_eq!(gemini_model(bad), None, "{bad}");
        }
    }
}
