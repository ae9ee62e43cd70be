//! Placing deployments: the provider (by kind, base URL, headers) and key each one uses, and
//! the provider's models.

use super::*;
use crate::import::providers;

pub(super) fn place(deployments: Vec<Deployment>, tree: &mut Tree) -> Vec<Placed> {
    let mut placed = Vec::new();
    for deployment in deployments {
        let label = deployment.label();
        if let Some(mode) = deployment.mode.as_deref().filter(|m| *m != "chat") {
            tree.findings.push(finding(
                deployment.line,
                &label,
                FindingKind::NotMapped,
                format!(
                    "`{}` (mode: {mode}): Echelon serves chat completions only",
                    deployment.model_name
                ),
            ));
            continue;
        }
        match providers::resolve(&deployment) {
            Ok(endpoint) => {
                if endpoint.upstream.contains("embedding") || endpoint.upstream.contains("embed-") {
                    tree.findings.push(finding(
                        deployment.line,
                        &label,
                        FindingKind::Warning,
                        format!(
                            "`{}` looks like an embedding model; Echelon routes it as a chat model",
                            deployment.model_name
                        ),
                    ));
                }
                if providers::bare_openai_host(&endpoint) {
                    tree.findings.push(finding(
                        deployment.line,
                        &label,
                        FindingKind::Warning,
                        format!(
                            "`{}`: its api_base has no path; LiteLLM calls api_base + /chat/completions, Echelon api_base + /v1/chat/completions (its root for a bare host): write the path the server answers under if it is not /v1",
                            deployment.model_name
                        ),
                    ));
                }
                let (provider, key) = provider_slot(&deployment, &endpoint, tree);
                placed.push(Placed {
                    deployment,
                    endpoint,
                    provider,
                    key,
                });
            }
            Err(reason) => tree.findings.push(finding(
                deployment.line,
                &label,
                FindingKind::NotMapped,
                format!("`{}`: {reason}", deployment.model_name),
            )),
        }
    }
    // Key indexes are only written when a provider has several keys.
    for p in &mut placed {
        if tree.providers[p.provider].keys.len() < 2 {
            p.key = None;
        }
    }
    placed
}

/// The provider (and key index) a deployment uses, creating them as needed.
fn provider_slot(d: &Deployment, e: &Endpoint, tree: &mut Tree) -> (usize, Option<usize>) {
    let headers: Vec<(String, String)> = d
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), v.template()))
        .collect();
    let found = tree.providers.iter().position(|p| {
        p.kind == e.kind
            && p.base_url == e.base_url
            && p.headers == headers
            && p.keys.is_empty() == e.key.is_none()
    });
    let index = found.unwrap_or_else(|| {
        let stem = match e.provider.as_str() {
            "azure" => format!("azure-{}", e.upstream),
            other => other.to_owned(),
        };
        let name = unique(&entry_name(&stem), |n| {
            tree.providers.iter().any(|p| p.name == n)
        });
        tree.providers.push(ProviderOut {
            name,
            litellm: e.provider.clone(),
            kind: e.kind,
            base_url: e.base_url.clone(),
            keys: Vec::new(),
            headers,
            models: Vec::new(),
            note: e.note,
        });
        tree.providers.len() - 1
    });
    let provider = &mut tree.providers[index];
    let key = e.key.as_ref().map(|key| {
        let template = key.template();
        let slot = provider.keys.iter().position(|k| k.template == template);
        let slot = slot.unwrap_or_else(|| {
            provider.keys.push(KeyOut {
                template,
                literal: key.is_literal(),
                by_default: e.key_by_default,
                lines: Vec::new(),
            });
            provider.keys.len() - 1
        });
        provider.keys[slot].lines.push(d.line);
        slot
    });
    let cost = match (d.input_cost, d.output_cost) {
        (None, None) => None,
        (i, o) => Some((per_million(i), per_million(o))),
    };
    match provider.models.iter_mut().find(|m| m.id == e.upstream) {
        Some(model) => {
            model.lines.push(d.line);
            model.context_window = model.context_window.or(d.context_window);
            model.cost = model.cost.or(cost);
        }
        None => provider.models.push(ModelOut {
            id: e.upstream.clone(),
            context_window: d.context_window,
            cost,
            lines: vec![d.line],
        }),
    }
    if let Some(key) = &d.api_key
        && key.value.is_literal()
    {
        let file = format!("llms/providers/{}.toml", tree.providers[index].name);
        tree.findings.push(finding(
            key.line,
            &key.key,
            FindingKind::Warning,
            format!(
                "a key written in the YAML; it was copied into {file} (not shown here): move it to an environment variable"
            ),
        ));
    }
    (index, key)
}

fn per_million(per_token: Option<f64>) -> f64 {
    // Rounded to a millionth of a unit: 0.00000015 per token is 0.15, not 0.15000000000000002.
    per_token.map_or(0.0, |c| (c * 1e12).round() / 1e6)
}
