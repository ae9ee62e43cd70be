//! A provider's `base_url` normalized once, here, to its *API root*: the URL the adapters append
//! endpoint paths to (`/chat/completions`, `/messages`, `/models/{model}:generateContent`), version
//! segment included. One rule per kind, documented in docs/configuration.md:
//!
//! | kind | written | API root |
//! |---|---|---|
//! | `openai` | a bare host (`http://127.0.0.1:8000`) | the host + `/v1` |
//! | `openai` | any path (`/v1`, `/openai/v1`, `/openai/deployments/NAME`) | as written |
//! | `anthropic` | with or without a final `/v1` | ends in `/v1` |
//! | `gemini` | with or without a final `/v1beta` (or `/v1`, `/v1alpha`) | ends in that version, `/v1beta` when none |
//!
//! Trailing and repeated slashes are dropped; a query string (Azure's `?api-version=…`) is kept.
//! A URL that already ends in an endpoint path is refused, with the root it should have been.

use echelon_domain::spec::ProviderKind;

/// The default API root of a kind.
pub(crate) fn default_base_url(kind: ProviderKind, name: &str) -> String {
    match kind {
        ProviderKind::Openai => "https://api.openai.com/v1".to_owned(),
        ProviderKind::Anthropic => "https://api.anthropic.com/v1".to_owned(),
        ProviderKind::Gemini => "https://generativelanguage.googleapis.com/v1beta".to_owned(),
        ProviderKind::Mock => format!("mock://{name}"),
    }
}

/// A base URL that names an endpoint instead of the API root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndpointPath {
    /// The endpoint path found at the end (`/chat/completions`).
    pub path: &'static str,
    /// The API root without it, normalized.
    pub root: String,
}

/// Endpoint paths that do not belong in a base URL, longest first.
fn endpoint_paths(kind: ProviderKind) -> &'static [&'static str] {
    match kind {
        ProviderKind::Openai => &[
            "/chat/completions",
            "/completions",
            "/responses",
            "/embeddings",
            "/models",
        ],
        ProviderKind::Anthropic => &["/messages", "/models"],
        ProviderKind::Gemini => &["/models"],
        ProviderKind::Mock => &[],
    }
}

/// The version segments an API root of `kind` may end in; the first is appended when none is.
fn versions(kind: ProviderKind) -> &'static [&'static str] {
    match kind {
        ProviderKind::Anthropic => &["v1"],
        ProviderKind::Gemini => &["v1beta", "v1", "v1alpha"],
        ProviderKind::Openai | ProviderKind::Mock => &[],
    }
}

/// The API root of an `http(s)://` base URL written for `kind` (see the module table).
///
/// # Errors
///
/// When the URL ends in an endpoint path; the error carries the root it should have been.
pub(crate) fn api_root(kind: ProviderKind, url: &str) -> Result<String, EndpointPath> {
    if kind == ProviderKind::Mock {
        return Ok(url.to_owned());
    }
    let url = url.trim();
    let url = url.split_once('#').map_or(url, |(before, _)| before);
    let (url, query) = match url.split_once('?') {
        Some((before, query)) if !query.is_empty() => (before, Some(query)),
        Some((before, _)) => (before, None),
        None => (url, None),
    };
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let compose = |segments: &[&str]| {
        let mut root = format!("{scheme}://{authority}");
        for segment in segments {
            root.push('/');
            root.push_str(segment);
        }
        if let Some(query) = query {
            root.push('?');
            root.push_str(query);
        }
        root
    };
    let joined = format!("/{}", segments.join("/"));
    let gemini_method = kind == ProviderKind::Gemini
        && segments
            .last()
            .is_some_and(|last| last.contains(":generateContent") || last.contains(":stream"));
    if let Some(path) = endpoint_paths(kind)
        .iter()
        .find(|path| joined.ends_with(*path))
        .copied()
        .or(gemini_method.then_some("/models/{model}:generateContent"))
    {
        let keep = if gemini_method {
            // `…/v1beta/models/gemini-2.5-flash:generateContent`: drop the model and `models`.
            segments.len().saturating_sub(2)
        } else {
            segments.len() - path.matches('/').count()
        };
        segments.truncate(keep);
        return Err(EndpointPath {
            path,
            root: with_version(kind, segments, compose),
        });
    }
    Ok(with_version(kind, segments, compose))
}

/// Appends the kind's version segment when the path does not end in one (for `openai`: when the
/// path is empty).
fn with_version(
    kind: ProviderKind,
    mut segments: Vec<&str>,
    compose: impl Fn(&[&str]) -> String,
) -> String {
    let allowed = versions(kind);
    match allowed.first() {
        Some(first) if !segments.last().is_some_and(|last| allowed.contains(last)) => {
            segments.push(first);
        }
        None if kind == ProviderKind::Openai && segments.is_empty() => segments.push("v1"),
        _ => {}
    }
    compose(&segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(kind: ProviderKind, url: &str) -> String {
        api_root(kind, url).unwrap_or_else(|e| panic!("{url}: {e:?}"))
    }

    #[test]
    fn every_written_form_of_a_kind_reaches_one_root() {
        let cases: &[(ProviderKind, &[&str], &str)] = &[
            (
                ProviderKind::Openai,
                &[
                    "https://api.openai.com",
                    "https://api.openai.com/",
                    "https://api.openai.com/v1",
                    "https://api.openai.com/v1/",
                    "https://api.openai.com//v1//",
                ],
                "https://api.openai.com/v1",
            ),
            (
                ProviderKind::Anthropic,
                &[
                    "https://api.anthropic.com",
                    "https://api.anthropic.com/",
                    "https://api.anthropic.com/v1",
                    "https://api.anthropic.com/v1/",
                ],
                "https://api.anthropic.com/v1",
            ),
            (
                ProviderKind::Gemini,
                &[
                    "https://generativelanguage.googleapis.com",
                    "https://generativelanguage.googleapis.com/",
                    "https://generativelanguage.googleapis.com/v1beta",
                    "https://generativelanguage.googleapis.com/v1beta/",
                ],
                "https://generativelanguage.googleapis.com/v1beta",
            ),
        ];
        for (kind, forms, expected) in cases {
            for form in *forms {
                assert_eq!(root(*kind, form), *expected, "{kind:?} {form}");
            }
            assert_eq!(root(*kind, &default_base_url(*kind, "p")), *expected);
        }
    }

    #[test]
    fn paths_and_queries_of_compatible_servers_are_kept() {
        assert_eq!(
            root(
                ProviderKind::Openai,
                "https://r.openai.azure.com/openai/deployments/d/?api-version=2024-10-21"
            ),
            "https://r.openai.azure.com/openai/deployments/d?api-version=2024-10-21"
        );
        assert_eq!(
            root(ProviderKind::Openai, "https://api.groq.com/openai/v1/"),
            "https://api.groq.com/openai/v1"
        );
        assert_eq!(
            root(ProviderKind::Openai, "http://127.0.0.1:8000"),
            "http://127.0.0.1:8000/v1"
        );
        assert_eq!(
            root(
                ProviderKind::Anthropic,
                "https://api.deepseek.com/anthropic"
            ),
            "https://api.deepseek.com/anthropic/v1"
        );
        assert_eq!(
            root(
                ProviderKind::Gemini,
                "https://generativelanguage.googleapis.com/v1"
            ),
            "https://generativelanguage.googleapis.com/v1"
        );
        assert_eq!(
            root(ProviderKind::Mock, "mock://x/"),
            "mock://x/",
            "a mock's base URL is only a label"
        );
    }

    #[test]
    fn an_endpoint_path_is_refused_with_the_root_it_should_be() {
        let refused = |kind, url: &str| api_root(kind, url).unwrap_err();
        assert_eq!(
            refused(
                ProviderKind::Openai,
                "https://api.openai.com/v1/chat/completions"
            ),
            EndpointPath {
                path: "/chat/completions",
                root: "https://api.openai.com/v1".into()
            }
        );
        assert_eq!(
            refused(
                ProviderKind::Anthropic,
                "https://api.anthropic.com/v1/messages/"
            )
            .root,
            "https://api.anthropic.com/v1"
        );
        assert_eq!(
            refused(
                ProviderKind::Gemini,
                "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
            )
            .root,
            "https://generativelanguage.googleapis.com/v1beta"
        );
        assert_eq!(
            refused(
                ProviderKind::Gemini,
                "https://generativelanguage.googleapis.com/models"
            )
            .root,
            "https://generativelanguage.googleapis.com/v1beta"
        );
    }
}
