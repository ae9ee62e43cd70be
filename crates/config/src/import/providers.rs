//! LiteLLM's providers as Echelon sees them: which speak a protocol Echelon has an adapter for,
//! at which base URL, with which key when the deployment names none; and why the others do not
//! map.

use echelon_domain::spec::ProviderKind;

use super::source::{Deployment, Text};

/// Where an OpenAI-compatible provider lives.
#[derive(Debug, Clone, Copy)]
enum Base {
    /// The kind's own default (Echelon's adapter knows it); the URL is used for `${VAR:url}`.
    KindDefault(&'static str),
    /// A fixed, well-known base URL.
    Url(&'static str),
    /// No default: LiteLLM reads this variable, and so does the tree.
    Env(&'static str),
}

/// A LiteLLM provider Echelon can serve.
#[derive(Debug, Clone, Copy)]
struct Row {
    name: &'static str,
    kind: ProviderKind,
    base: Base,
    /// Appended to a deployment's own `api_base` (Ollama's OpenAI API is under `/v1`).
    suffix: &'static str,
    /// The variable LiteLLM reads when a deployment gives no key.
    key_env: Option<&'static str>,
    /// Whether that variable applies with a custom `api_base` too (hosted APIs that always need
    /// a key), or only at the provider's own address.
    key_always: bool,
    note: Option<&'static str>,
}

const fn row(name: &'static str, base: Base, key_env: Option<&'static str>) -> Row {
    Row {
        name,
        kind: ProviderKind::Openai,
        base,
        suffix: "",
        key_env,
        key_always: false,
        note: None,
    }
}

/// LiteLLM providers Echelon serves, with the base URLs and key variables LiteLLM uses.
const ROWS: &[Row] = &[
    row(
        "openai",
        Base::KindDefault("https://api.openai.com/v1"),
        Some("OPENAI_API_KEY"),
    ),
    Row {
        kind: ProviderKind::Anthropic,
        key_always: true,
        ..row(
            "anthropic",
            Base::KindDefault("https://api.anthropic.com"),
            Some("ANTHROPIC_API_KEY"),
        )
    },
    Row {
        kind: ProviderKind::Gemini,
        key_always: true,
        ..row(
            "gemini",
            Base::KindDefault("https://generativelanguage.googleapis.com"),
            Some("GEMINI_API_KEY"),
        )
    },
    Row {
        key_always: true,
        ..row(
            "azure_ai",
            Base::Env("AZURE_AI_API_BASE"),
            Some("AZURE_AI_API_KEY"),
        )
    },
    row(
        "groq",
        Base::Url("https://api.groq.com/openai/v1"),
        Some("GROQ_API_KEY"),
    ),
    row(
        "openrouter",
        Base::Url("https://openrouter.ai/api/v1"),
        Some("OPENROUTER_API_KEY"),
    ),
    row(
        "together_ai",
        Base::Url("https://api.together.xyz/v1"),
        Some("TOGETHERAI_API_KEY"),
    ),
    row(
        "deepseek",
        Base::Url("https://api.deepseek.com/v1"),
        Some("DEEPSEEK_API_KEY"),
    ),
    row(
        "mistral",
        Base::Url("https://api.mistral.ai/v1"),
        Some("MISTRAL_API_KEY"),
    ),
    row(
        "fireworks_ai",
        Base::Url("https://api.fireworks.ai/inference/v1"),
        Some("FIREWORKS_AI_API_KEY"),
    ),
    row(
        "perplexity",
        Base::Url("https://api.perplexity.ai"),
        Some("PERPLEXITYAI_API_KEY"),
    ),
    row("xai", Base::Url("https://api.x.ai/v1"), Some("XAI_API_KEY")),
    row(
        "deepinfra",
        Base::Url("https://api.deepinfra.com/v1/openai"),
        Some("DEEPINFRA_API_KEY"),
    ),
    row(
        "cerebras",
        Base::Url("https://api.cerebras.ai/v1"),
        Some("CEREBRAS_API_KEY"),
    ),
    row(
        "nvidia_nim",
        Base::Url("https://integrate.api.nvidia.com/v1"),
        Some("NVIDIA_NIM_API_KEY"),
    ),
    row(
        "sambanova",
        Base::Url("https://api.sambanova.ai/v1"),
        Some("SAMBANOVA_API_KEY"),
    ),
    row("hosted_vllm", Base::Env("HOSTED_VLLM_API_BASE"), None),
    row("lm_studio", Base::Url("http://localhost:1234/v1"), None),
    row("litellm_proxy", Base::Env("LITELLM_PROXY_API_BASE"), None),
    Row {
        suffix: "/v1",
        note: Some("through Ollama's OpenAI-compatible API under /v1"),
        ..row("ollama", Base::Url("http://localhost:11434/v1"), None)
    },
    Row {
        suffix: "/v1",
        note: Some("through Ollama's OpenAI-compatible API under /v1"),
        ..row("ollama_chat", Base::Url("http://localhost:11434/v1"), None)
    },
    Row {
        suffix: "/v1",
        note: Some("through Hugging Face's OpenAI-compatible router"),
        ..row(
            "huggingface",
            Base::Url("https://router.huggingface.co/v1"),
            Some("HF_TOKEN"),
        )
    },
];

/// LiteLLM providers Echelon has no adapter for, with the reason.
const UNSERVED: &[(&str, &str)] = &[
    (
        "bedrock",
        "Amazon Bedrock signs requests with AWS credentials (SigV4); Echelon has no Bedrock adapter",
    ),
    (
        "sagemaker",
        "Amazon SageMaker signs requests with AWS credentials; Echelon has no SageMaker adapter",
    ),
    (
        "sagemaker_chat",
        "Amazon SageMaker signs requests with AWS credentials; Echelon has no SageMaker adapter",
    ),
    (
        "vertex_ai",
        "Vertex AI authenticates with Google Cloud credentials; Echelon's gemini adapter speaks the Gemini API with a key (write gemini/MODEL for it)",
    ),
    (
        "vertex_ai_beta",
        "Vertex AI authenticates with Google Cloud credentials; Echelon's gemini adapter speaks the Gemini API with a key (write gemini/MODEL for it)",
    ),
    ("cohere", "Echelon has no Cohere adapter"),
    ("cohere_chat", "Echelon has no Cohere adapter"),
    ("replicate", "Echelon has no Replicate adapter"),
    ("watsonx", "Echelon has no watsonx adapter"),
    ("databricks", "Echelon has no Databricks adapter"),
    ("cloudflare", "Echelon has no Cloudflare Workers AI adapter"),
    (
        "vllm",
        "LiteLLM runs vLLM in its own process; point a hosted_vllm/ or openai/ deployment at a vLLM server instead",
    ),
    (
        "text-completion-openai",
        "the legacy completions API is not served by Echelon",
    ),
    (
        "text-completion-codestral",
        "the legacy completions API is not served by Echelon",
    ),
    (
        "anthropic_text",
        "Anthropic's legacy text completions API is not served by Echelon",
    ),
    (
        "azure_text",
        "Azure's legacy completions API is not served by Echelon",
    ),
    (
        "voyage",
        "an embeddings-only provider; Echelon serves chat completions",
    ),
    (
        "jina_ai",
        "an embeddings and rerank provider; Echelon serves chat completions",
    ),
    ("ai21", "Echelon has no AI21 adapter"),
    ("nlp_cloud", "Echelon has no NLP Cloud adapter"),
    ("aleph_alpha", "Echelon has no Aleph Alpha adapter"),
    (
        "palm",
        "PaLM is retired; write gemini/MODEL for the Gemini API",
    ),
    ("predibase", "Echelon has no Predibase adapter"),
    ("oci", "Echelon has no Oracle Cloud adapter"),
];

/// What a deployment calls, in Echelon's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// LiteLLM's provider name (`openai`, `groq`, `azure`, …).
    pub provider: String,
    pub kind: ProviderKind,
    /// The base URL template; `None` for the kind's default.
    pub base_url: Option<String>,
    /// The model name the API knows.
    pub upstream: String,
    /// The key: the deployment's own, or the variable LiteLLM falls back to.
    pub key: Option<Text>,
    /// Whether `key` is LiteLLM's fallback variable rather than the deployment's `api_key`.
    pub key_by_default: bool,
    /// How it is reached, when that differs from LiteLLM.
    pub note: Option<&'static str>,
}

/// The Azure OpenAI API version LiteLLM uses when neither `api_version` nor
/// `AZURE_API_VERSION` is set (`litellm.AZURE_DEFAULT_API_VERSION` in litellm 1.110).
pub(crate) const AZURE_DEFAULT_API_VERSION: &str = "2025-02-01-preview";

/// Resolves a deployment to an endpoint, or says why it cannot be served.
pub(crate) fn resolve(d: &Deployment) -> Result<Endpoint, String> {
    let (provider, model) = split(d)?;
    if model.contains('*') {
        return Err(format!(
            "`{}` is a wildcard route: LiteLLM forwards any matching model name; Echelon serves declared models only, so add a deployment for each model clients use",
            d.model
        ));
    }
    if model.is_empty() || model.chars().any(char::is_whitespace) {
        return Err(format!("`{}` is not a model name Echelon can use", d.model));
    }
    if provider == "azure" {
        return azure(d, &model);
    }
    if let Some((_, reason)) = UNSERVED.iter().find(|(name, _)| *name == provider) {
        return Err(format!("{} ({provider}/{model})", reason));
    }
    let Some(row) = ROWS.iter().find(|r| r.name == provider) else {
        return Err(format!(
            "Echelon has no adapter for LiteLLM provider `{provider}` ({}); only OpenAI-compatible APIs, Anthropic and Gemini map",
            d.model
        ));
    };
    if let Some(Text::Literal(url)) = &d.api_base
        && !is_http_url(url)
    {
        return Err(NOT_A_URL.to_owned());
    }
    let base_url = match (&d.api_base, row.base) {
        (Some(Text::Literal(url)), _) => Some(custom_base(row, url)),
        (Some(env), Base::KindDefault(url) | Base::Url(url)) => {
            let root = url.strip_suffix(row.suffix).unwrap_or(url);
            Some(format!("{}{}", env.template_or(root), row.suffix))
        }
        (Some(env), Base::Env(_)) => Some(format!("{}{}", env.template(), row.suffix)),
        (None, Base::KindDefault(_)) => None,
        (None, Base::Url(url)) => Some(url.to_owned()),
        (None, Base::Env(name)) => Some(format!("${{{name}}}{}", row.suffix)),
    };
    let own_address = d.api_base.is_none();
    let (key, key_by_default) = match &d.api_key {
        Some(key) => (Some(key.value.clone()), false),
        None => match row.key_env {
            Some(name) if own_address || row.key_always => (Some(Text::Env(name.to_owned())), true),
            _ => (None, false),
        },
    };
    Ok(Endpoint {
        provider: provider.clone(),
        kind: row.kind,
        base_url,
        upstream: model,
        key,
        key_by_default,
        note: match (row.name, &d.api_base) {
            ("huggingface", Some(_)) => {
                Some("through the OpenAI-compatible API of the TGI server at api_base (/v1)")
            }
            _ => row.note,
        },
    })
}

/// A deployment's own `api_base`, as the adapter of its kind wants it.
fn custom_base(row: &Row, url: &str) -> String {
    let mut url = url.trim().trim_end_matches('/').to_owned();
    if row.kind == ProviderKind::Anthropic {
        // LiteLLM appends /v1/messages unless the base already ends with it; so does Echelon.
        url = url
            .trim_end_matches("/v1/messages")
            .trim_end_matches('/')
            .to_owned();
    }
    if !row.suffix.is_empty() && !url.ends_with(row.suffix) {
        url.push_str(row.suffix);
    }
    Text::Literal(url).template()
}

/// Whether an OpenAI-compatible `api_base` is a bare host, which Echelon roots at `/v1` where
/// LiteLLM (through the OpenAI SDK) appends `/chat/completions` to it as it is.
pub(crate) fn bare_openai_host(endpoint: &Endpoint) -> bool {
    endpoint.kind == ProviderKind::Openai
        && endpoint.base_url.as_deref().is_some_and(|url| {
            let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
            let rest = rest.split(['?', '#']).next().unwrap_or_default();
            !url.starts_with("${")
                && rest
                    .split_once('/')
                    .is_none_or(|(_, path)| path.trim_matches('/').is_empty())
        })
}

/// Why a literal `api_base` is refused; the value is not shown, as it may hold credentials.
const NOT_A_URL: &str =
    "its api_base is not an http:// or https:// URL (not shown: it may hold credentials)";

fn is_http_url(url: &str) -> bool {
    let url = url.trim();
    ["http://", "https://"]
        .iter()
        .filter_map(|scheme| url.strip_prefix(scheme))
        .any(|rest| {
            rest.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '[')
        })
}

/// Azure OpenAI: the deployment is part of the URL, so each deployment is its own provider.
fn azure(d: &Deployment, deployment: &str) -> Result<Endpoint, String> {
    if let Some(Text::Literal(url)) = &d.api_base
        && !is_http_url(url)
    {
        return Err(NOT_A_URL.to_owned());
    }
    let base = match &d.api_base {
        Some(text @ Text::Env(_)) => text.template(),
        Some(Text::Literal(url)) => {
            Text::Literal(url.trim().trim_end_matches('/').to_owned()).template()
        }
        None => "${AZURE_API_BASE}".to_owned(),
    };
    let version = d.api_version.as_ref().map_or_else(
        || format!("${{AZURE_API_VERSION:{AZURE_DEFAULT_API_VERSION}}}"),
        Text::template,
    );
    let (key, key_by_default) = match &d.api_key {
        Some(key) => (Some(key.value.clone()), false),
        None => (Some(Text::Env("AZURE_API_KEY".to_owned())), true),
    };
    Ok(Endpoint {
        provider: "azure".to_owned(),
        kind: ProviderKind::Openai,
        base_url: Some(format!(
            "{base}/openai/deployments/{deployment}?api-version={version}"
        )),
        upstream: deployment.to_owned(),
        key,
        key_by_default,
        note: None,
    })
}

/// LiteLLM's provider and the model name after it.
fn split(d: &Deployment) -> Result<(String, String), String> {
    let model = d.model.as_str();
    if let Some(provider) = &d.custom_provider {
        let rest = model.strip_prefix(&format!("{provider}/")).unwrap_or(model);
        return Ok((provider.clone(), rest.to_owned()));
    }
    if let Some((first, rest)) = model.split_once('/') {
        let known = ROWS.iter().any(|r| r.name == first)
            || UNSERVED.iter().any(|(n, _)| *n == first)
            || first == "azure";
        if known {
            return Ok((first.to_owned(), rest.to_owned()));
        }
        return Err(format!(
            "`{model}`: `{first}` is not a LiteLLM provider Echelon has an adapter for, and the name has no other provider prefix; write it as provider/{model} (e.g. openrouter/{model})"
        ));
    }
    let inferred = if model == "*"
        || [
            "gpt-",
            "gpt4",
            "o1",
            "o3",
            "o4",
            "chatgpt-",
            "ft:gpt",
            "text-embedding-",
            "davinci",
            "babbage",
        ]
        .iter()
        .any(|p| model.starts_with(p))
    {
        "openai"
    } else if model.starts_with("claude") {
        "anthropic"
    } else if model.starts_with("gemini") {
        return Err(format!(
            "LiteLLM sends a bare `{model}` to Vertex AI (Google Cloud credentials), which Echelon has no adapter for; write gemini/{model} for the Gemini API"
        ));
    } else if model.starts_with("command") {
        "cohere"
    } else {
        return Err(format!(
            "`{model}` has no provider prefix and is not a name Echelon can place; write it as provider/{model} (e.g. openai/{model})"
        ));
    };
    Ok((inferred.to_owned(), model.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(model: &str) -> Deployment {
        Deployment {
            model: model.to_owned(),
            ..Deployment::default()
        }
    }

    #[test]
    fn bare_names_are_placed_as_litellm_places_them() {
        assert_eq!(resolve(&deployment("gpt-4o")).unwrap().provider, "openai");
        assert_eq!(
            resolve(&deployment("claude-3-opus-20240229"))
                .unwrap()
                .provider,
            "anthropic"
        );
        assert!(
            resolve(&deployment("gemini-pro"))
                .unwrap_err()
                .contains("Vertex AI")
        );
        assert!(resolve(&deployment("mistralai/mistral-7b-instruct")).is_err());
        assert!(
            resolve(&deployment("openai/*"))
                .unwrap_err()
                .contains("wildcard")
        );
        assert!(
            resolve(&deployment("bedrock/anthropic.claude-v2"))
                .unwrap_err()
                .contains("AWS")
        );
    }

    #[test]
    fn keys_default_to_litellm_variables_only_at_the_provider_address() {
        let hosted = resolve(&deployment("openai/gpt-4o")).unwrap();
        assert_eq!(hosted.key, Some(Text::Env("OPENAI_API_KEY".into())));
        assert_eq!(hosted.base_url, None);
        let local = resolve(&Deployment {
            api_base: Some(Text::Literal("http://localhost:8000/v1/".into())),
            ..deployment("openai/llama")
        })
        .unwrap();
        assert_eq!(local.key, None);
        assert_eq!(local.base_url.as_deref(), Some("http://localhost:8000/v1"));
    }

    #[test]
    fn variable_bases_fall_back_to_the_default_as_litellm_does() {
        let d = Deployment {
            api_base: Some(Text::Env("OLLAMA_BASE".into())),
            ..deployment("ollama/llama3")
        };
        assert_eq!(
            resolve(&d).unwrap().base_url.as_deref(),
            Some("${OLLAMA_BASE:http://localhost:11434}/v1")
        );
    }

    #[test]
    fn azure_deployments_carry_their_deployment_and_version_in_the_url() {
        let d = Deployment {
            api_base: Some(Text::Literal("https://x.openai.azure.com/".into())),
            api_version: Some(Text::Literal("2023-05-15".into())),
            ..deployment("azure/chatgpt-v-2")
        };
        let e = resolve(&d).unwrap();
        assert_eq!(
            e.base_url.as_deref(),
            Some(
                "https://x.openai.azure.com/openai/deployments/chatgpt-v-2?api-version=2023-05-15"
            )
        );
        assert_eq!(e.key, Some(Text::Env("AZURE_API_KEY".into())));
    }
}
