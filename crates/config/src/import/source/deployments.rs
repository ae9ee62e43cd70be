//! Reading one `model_list` entry: its model, key, base URL, limits, weight, order, timeouts
//! and model info, with a finding for every parameter that has no Echelon equivalent.

use super::*;

pub(super) fn read_deployment(
    index: usize,
    item: &Yaml,
    source: &mut Source,
) -> Option<Deployment> {
    let label = format!("model_list[{index}]");
    let mut d = Deployment {
        index,
        line: item.line,
        ..Deployment::default()
    };
    let Some(name) = item.get("model_name").and_then(Yaml::text) else {
        source.finding(
            item.line,
            label,
            FindingKind::NotMapped,
            "a deployment without model_name: LiteLLM cannot route to it either",
        );
        return None;
    };
    d.model_name = name;
    let params = item.get("litellm_params").filter(|p| p.is_map());
    let Some((params, model)) =
        params.and_then(|p| p.get("model").and_then(Yaml::text).map(|m| (p, m)))
    else {
        source.finding(
            item.line,
            label,
            FindingKind::NotMapped,
            format!(
                "`{}` has no litellm_params.model: there is no upstream to call",
                d.model_name
            ),
        );
        return None;
    };
    d.model = model.trim().to_owned();
    for entry in item.entries() {
        let key = format!("{label}.{}", entry.key);
        match entry.key.as_str() {
            "model_name" | "litellm_params" => {}
            "model_info" => read_model_info(&entry.value, &label, &mut d, source),
            "rpm" => d.rpm = d.rpm.or(count(entry, &key, source)),
            "tpm" => d.tpm = d.tpm.or(count(entry, &key, source)),
            _ => source.not_mapped(entry, &key, "not a deployment key Echelon knows"),
        }
    }
    for entry in params.entries() {
        let key = format!("{label}.litellm_params.{}", entry.key);
        let value = &entry.value;
        match entry.key.as_str() {
            "model" => {}
            "custom_llm_provider" => d.custom_provider = value.text(),
            "api_base" | "base_url" => d.api_base = env_text(entry, &key, source),
            "api_key" => {
                d.api_key = env_text(entry, &key, source).map(|value| Setting {
                    value,
                    line: entry.line,
                    key: key.clone(),
                });
            }
            "api_version" => d.api_version = env_text(entry, &key, source),
            "organization" => {
                if let Some(org) = env_text(entry, &key, source) {
                    d.headers.push(("OpenAI-Organization".to_owned(), org));
                }
            }
            "extra_headers" | "headers" => {
                for header in value.entries() {
                    if let Some(text) = env_text(header, &format!("{key}.{}", header.key), source) {
                        d.headers.push((header.key.clone(), text));
                    }
                }
            }
            "rpm" => {
                d.params_rpm = count(entry, &key, source);
                d.rpm = d.params_rpm;
            }
            "tpm" => {
                d.params_tpm = count(entry, &key, source);
                d.tpm = d.params_tpm;
            }
            "max_parallel_requests" => d.max_parallel = count(entry, &key, source),
            "weight" => d.weight = positive(entry, &key, source),
            "order" => d.order = count(entry, &key, source),
            "timeout" => d.timeout = seconds(entry, &key, source),
            "stream_timeout" => d.stream_timeout = seconds(entry, &key, source),
            "temperature" => d.temperature = value.number(),
            "max_tokens" => d.max_tokens = count(entry, &key, source),
            "input_cost_per_token" => d.input_cost = value.number(),
            "output_cost_per_token" => d.output_cost = value.number(),
            "max_retries" => source.not_mapped(
                entry,
                &key,
                "retries inside one provider call multiply the router's (LiteLLM's router sets them to 0 too); Echelon retries only through the echelon (num_retries)",
            ),
            "region_name" => source.not_mapped(
                entry,
                &key,
                "region filtering (pre-call checks) is not an Echelon feature; give each region its own pool and wrapper",
            ),
            "tags" => source.not_mapped(
                entry,
                &key,
                "tag-based routing is not an Echelon feature; give each tag its own wrapper",
            ),
            "mock_response" => source.not_mapped(
                entry,
                &key,
                "LiteLLM answers without calling the model; an Echelon provider with kind = \"mock\" does that",
            ),
            "cooldown_time" => source.not_mapped(
                entry,
                &key,
                "cooldowns are set per pool in Echelon ([circuit_breaker] recovery_time), not per deployment",
            ),
            "base_model" => source.not_mapped(
                entry,
                &key,
                "LiteLLM reads prices and context windows from it; set context_window and cost in the provider file",
            ),
            "litellm_credential_name" => source.not_mapped(
                entry,
                &key,
                "named credentials are not imported: write the key into the provider file",
            ),
            "drop_params" | "merge_reasoning_content_in_choices" => source.not_mapped(
                entry,
                &key,
                "Echelon forwards a request's parameters as the client sent them",
            ),
            other if is_cloud_credential(other) => {}
            _ => source.not_mapped(
                entry,
                &key,
                "a parameter LiteLLM adds to every call of this deployment; Echelon forwards what the client sends (echelon defaults cover temperature and max_tokens)",
            ),
        }
    }
    Some(d)
}

/// Parameters of providers Echelon has no adapter for; the deployment is reported as a whole.
fn is_cloud_credential(key: &str) -> bool {
    key.starts_with("aws_")
        || key.starts_with("vertex_")
        || key.starts_with("s3_")
        || key.starts_with("azure_ad")
        || matches!(
            key,
            "tenant_id" | "client_id" | "client_secret" | "project_id"
        )
}

fn read_model_info(info: &Yaml, label: &str, d: &mut Deployment, source: &mut Source) {
    for entry in info.entries() {
        let key = format!("{label}.model_info.{}", entry.key);
        match entry.key.as_str() {
            "id" => d.id = entry.value.text(),
            "mode" => d.mode = entry.value.text(),
            "max_input_tokens" => d.context_window = count(entry, &key, source).or(d.context_window),
            "max_tokens" => {
                if d.context_window.is_none() {
                    d.context_window = count(entry, &key, source);
                }
            }
            "input_cost_per_token" => d.input_cost = d.input_cost.or(entry.value.number()),
            "output_cost_per_token" => d.output_cost = d.output_cost.or(entry.value.number()),
            "rpm" => d.rpm = d.rpm.or(count(entry, &key, source)),
            "tpm" => d.tpm = d.tpm.or(count(entry, &key, source)),
            "base_model" => source.not_mapped(
                entry,
                &key,
                "LiteLLM reads prices and context windows from it; set context_window and cost in the provider file",
            ),
            "access_groups" | "team_id" | "team_public_model_name" => source.not_mapped(
                entry,
                &key,
                "model access by team or key group lives in LiteLLM's database; Echelon's client keys reach every wrapper",
            ),
            other if other.starts_with("supports_") => source.not_mapped(
                entry,
                &key,
                "capability metadata; Echelon does not route by capability",
            ),
            _ => source.not_mapped(entry, &key, "model metadata with no Echelon equivalent"),
        }
    }
}
