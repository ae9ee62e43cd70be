//! The local step of phase 2: each provider, pool, task group and wrapper converted on its own
//! into a draft, with its references still names; and the closed sets of names these files use.

use super::base_url::{self, default_base_url};
use super::*;

/// What a wrapper points at, as written in `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WrapperKind {
    TaskGroup,
    Pool,
    Direct,
}

impl Choice for WrapperKind {
    const WHAT: &'static str = "wrapper type";
    fn names() -> &'static [(Self, &'static str)] {
        &[
            (Self::TaskGroup, "task_group"),
            (Self::Pool, "pool"),
            (Self::Direct, "direct"),
        ]
    }
}

impl Choice for ProviderKind {
    const WHAT: &'static str = "provider kind";
    fn names() -> &'static [(Self, &'static str)] {
        &[
            (Self::Openai, "openai"),
            (Self::Anthropic, "anthropic"),
            (Self::Gemini, "gemini"),
            (Self::Mock, "mock"),
        ]
    }
}

impl Choice for RotationStrategy {
    const WHAT: &'static str = "rotation strategy";
    fn names() -> &'static [(Self, &'static str)] {
        &Self::ALL
    }
}

impl Choice for ProbeKind {
    const WHAT: &'static str = "probe";
    fn names() -> &'static [(Self, &'static str)] {
        &[(Self::Models, "models"), (Self::Completion, "completion")]
    }
}

impl Choice for PoolFallbackStrategy {
    const WHAT: &'static str = "pool fallback strategy";
    fn names() -> &'static [(Self, &'static str)] {
        &[
            (Self::InstanceRotation, "instance_rotation"),
            (Self::PoolFallback, "pool_fallback"),
        ]
    }
}

impl Choice for RateAlgorithm {
    const WHAT: &'static str = "rate limit algorithm";
    fn names() -> &'static [(Self, &'static str)] {
        &[
            (Self::TokenBucket, "token_bucket"),
            (Self::SlidingWindow, "sliding_window"),
        ]
    }
}

impl Choice for FallbackStrategy {
    const WHAT: &'static str = "fallback strategy";
    fn names() -> &'static [(Self, &'static str)] {
        &[
            (Self::EchelonDown, "echelon_down"),
            (Self::ModelRotate, "model_rotate"),
            (Self::ProviderFailover, "provider_failover"),
            (Self::GroupFallback, "group_fallback"),
        ]
    }
}

choice_from_val!(
    WrapperKind,
    ProviderKind,
    RotationStrategy,
    ProbeKind,
    PoolFallbackStrategy,
    RateAlgorithm,
    FallbackStrategy
);

pub(super) fn limits(
    rpm: &Option<Val<u32>>,
    tpm: &Option<Val<u32>>,
    concurrency: &Option<Val<u32>>,
    out: &mut Vec<Diagnostic>,
) -> Limits {
    Limits {
        rpm: rpm.value_in(out, Range::AtLeast(1)),
        tpm: tpm.value_in(out, Range::AtLeast(1)),
        max_concurrency: concurrency.value_in(out, Range::AtLeast(1)),
    }
}

pub(super) fn provider(name: &str, raw: RawProvider, out: &mut Vec<Diagnostic>) -> ProviderDraft {
    let kind = match &raw.kind {
        Some(val) => val.get(out),
        None => {
            out.push(
                missing(
                    &raw.here,
                    "kind",
                    format!("provider `{name}` needs a `kind`"),
                )
                .help("one of `openai`, `anthropic`, `gemini`, `mock`"),
            );
            None
        }
    }
    .unwrap_or(ProviderKind::Mock);
    let base_url = match &raw.base_url {
        Some(val) => {
            match val.get(out) {
                Some(url) if kind == ProviderKind::Mock || http_url(&url) => {
                    match base_url::api_root(kind, &url) {
                        Ok(root) => root,
                        Err(wrong) => {
                            out.push(val.diagnostic(
                            DiagnosticKind::InvalidValue,
                            format!(
                                "base_url ends in the endpoint path `{}`, which the gateway appends itself",
                                wrong.path
                            ),
                            Some(format!("write the API root: base_url = \"{}\"", wrong.root)),
                        ));
                            wrong.root
                        }
                    }
                }
                Some(_) => {
                    out.push(val.diagnostic(
                    DiagnosticKind::InvalidValue,
                    crate::value::describe("invalid base URL", &val.raw),
                    Some(
                        "write an http:// or https:// URL, e.g. \"https://api.openai.com/v1\""
                            .into(),
                    ),
                ));
                    default_base_url(kind, name)
                }
                None => default_base_url(kind, name),
            }
        }
        None => default_base_url(kind, name),
    };
    let mut api_keys = Vec::new();
    match (&raw.api_key, &raw.api_keys) {
        (Some(key), Some(_)) => out.push(key.diagnostic(
            DiagnosticKind::Conflict,
            "`api_key` and `api_keys` are both set".to_owned(),
            Some("use `api_keys = [..]` for several keys, `api_key` for one".into()),
        )),
        (Some(key), None) => api_keys.extend(non_empty_secret(key, out)),
        (None, Some(keys)) => {
            let mut seen: Vec<(Secret, usize)> = Vec::new();
            for (index, key) in keys.iter().enumerate() {
                let Some(secret) = non_empty_secret(key, out) else {
                    continue;
                };
                if let Some((_, first)) = seen.iter().find(|(s, _)| *s == secret) {
                    out.push(key.diagnostic(
                        DiagnosticKind::Duplicate,
                        format!("api_keys[{index}] is the same key as api_keys[{first}]"),
                        Some("each key is an instance with its own limits; list a key once".into()),
                    ));
                } else {
                    seen.push((secret.clone(), index));
                }
                api_keys.push(secret);
            }
            if keys.len() > usize::from(u16::MAX) {
                out.push(missing(&raw.here, "api_keys", "more than 65535 keys"));
            }
        }
        (None, None) => {}
    }
    if api_keys.is_empty()
        && raw.api_key.is_none()
        && raw.api_keys.is_none()
        && matches!(kind, ProviderKind::Anthropic | ProviderKind::Gemini)
    {
        out.push(
            Diagnostic::warning(
                DiagnosticKind::MissingKey,
                format!("provider `{name}` has no api key"),
            )
            .at(raw.here.location.clone())
            .key(raw.here.key.clone())
            .help("set `api_key = \"${VAR}\"` or `api_keys = [..]`"),
        );
    }
    let mut headers = Vec::new();
    for (header, value) in raw.headers.iter().flatten() {
        let valid = !header.is_empty()
            && header
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
        if !valid {
            out.push(value.diagnostic(
                DiagnosticKind::InvalidValue,
                format!("`{header}` is not a valid HTTP header name"),
                None,
            ));
            continue;
        }
        if let Some(secret) = value.get(out) {
            headers.push((header.clone(), secret));
        }
    }
    let mock = match (&raw.mock, kind) {
        (Some(mock), ProviderKind::Mock) => Some(MockBehaviour {
            latency: mock.latency.read_or(out, Duration::ZERO),
            error_rate: mock
                .error_rate
                .read_or_in(out, Range::Between(0.0, 1.0), 0.0),
            reply: mock.reply.value(out),
        }),
        (None, ProviderKind::Mock) => Some(MockBehaviour::default()),
        (Some(mock), _) => {
            out.push(
                Diagnostic::error(
                    DiagnosticKind::Conflict,
                    "`[mock]` only applies to `kind = \"mock\"`",
                )
                .at(mock.here.location.clone())
                .key(mock.here.key.clone()),
            );
            None
        }
        (None, _) => None,
    };
    let spec = ProviderSpec {
        name: ProviderName::new(name),
        kind,
        base_url,
        api_keys,
        headers,
        connect_timeout: raw.connect_timeout.read_or_in(
            out,
            POSITIVE,
            defaults::provider::CONNECT_TIMEOUT,
        ),
        request_timeout: raw.request_timeout.read_or_in(
            out,
            POSITIVE,
            defaults::provider::REQUEST_TIMEOUT,
        ),
        mock,
    };
    let mut models = BTreeMap::new();
    match raw.models {
        None => out.push(
            Diagnostic::warning(
                DiagnosticKind::Unused,
                format!("provider `{name}` defines no models"),
            )
            .at(raw.here.location.clone())
            .key(raw.here.key.clone())
            .help("add [models.<id>] tables; pools and echelons address them as \"provider/id\""),
        ),
        Some(raw_models) => {
            for (id, raw_model) in raw_models {
                if let Some(model) = model(name, &id, &raw_model, out) {
                    models.insert(id, model);
                }
            }
        }
    }
    ProviderDraft { spec, models }
}

pub(super) fn model(
    provider: &str,
    id: &str,
    raw: &RawModel,
    out: &mut Vec<Diagnostic>,
) -> Option<ModelSpec> {
    let name = ModelName::new(id);
    if !name.is_valid() {
        out.push(
            Diagnostic::error(
                DiagnosticKind::InvalidValue,
                format!("`{id}` is not a valid model id"),
            )
            .at(raw.here.location.clone())
            .key(raw.here.key.clone())
            .help("model ids are not empty and have no spaces"),
        );
        return None;
    }
    let upstream_name = match &raw.upstream {
        Some(val) => match val.get(out) {
            Some(u) if u.trim().is_empty() => {
                out.push(val.diagnostic(DiagnosticKind::InvalidValue, "`upstream` is empty", None));
                id.to_owned()
            }
            Some(u) => u,
            None => id.to_owned(),
        },
        None => id.to_owned(),
    };
    let cost = raw.cost.as_ref().map_or(Cost::default(), |c| Cost {
        input_per_mtok: c.input.read_or_in(out, Range::AtLeast(0.0), 0.0),
        output_per_mtok: c.output.read_or_in(out, Range::AtLeast(0.0), 0.0),
    });
    Some(ModelSpec {
        model: ModelRef::new(provider, name),
        upstream_name,
        context_window: raw.context_window.value_in(out, Range::AtLeast(1)),
        limits: limits(&raw.rpm_limit, &raw.tpm_limit, &raw.max_concurrency, out),
        cost,
    })
}

/// A `[circuit_breaker]` table over `base` (the defaults, or for an echelon its group's).
pub(super) fn breaker(
    raw: Option<&RawBreaker>,
    base: BreakerPolicy,
    out: &mut Vec<Diagnostic>,
) -> BreakerPolicy {
    let d = base;
    let Some(raw) = raw else { return d };
    let recovery_time = raw.recovery_time.read_or_in(out, POSITIVE, d.recovery_time);
    let max_recovery_time = match &raw.max_recovery_time {
        Some(val) => match val.get_in(out, &POSITIVE) {
            Some(max) if max < recovery_time => {
                out.push(val.diagnostic(
                    DiagnosticKind::Conflict,
                    "`max_recovery_time` is shorter than `recovery_time`",
                    Some("the open time grows from recovery_time up to max_recovery_time".into()),
                ));
                recovery_time
            }
            Some(max) => max,
            None => d.max_recovery_time.max(recovery_time),
        },
        None => d.max_recovery_time.max(recovery_time),
    };
    let failure_rate = match &raw.failure_rate {
        None => d.failure_rate,
        Some(rate) if !rate.enabled.read_or(out, true) => None,
        Some(rate) => {
            let base = d.failure_rate.unwrap_or_default();
            Some(FailureRate {
                threshold: rate
                    .threshold
                    .read_or_in(out, Range::Between(0.0, 1.0), base.threshold),
                window: rate.window.read_or_in(out, POSITIVE, base.window),
                min_calls: rate
                    .min_calls
                    .read_or_in(out, Range::AtLeast(1), base.min_calls),
            })
        }
    };
    BreakerPolicy {
        failure_threshold: raw.failure_threshold.read_or_in(
            out,
            Range::AtLeast(1),
            d.failure_threshold,
        ),
        failure_rate,
        recovery_time,
        max_recovery_time,
        half_open_requests: raw.half_open_requests.read_or_in(
            out,
            Range::Between(1, 1000),
            d.half_open_requests,
        ),
    }
}

pub(super) fn health(
    raw: Option<&RawHealthCheck>,
    out: &mut Vec<Diagnostic>,
) -> (HealthPolicy, HealthCheckSpec) {
    let (hp, hc) = (HealthPolicy::default(), HealthCheckSpec::default());
    let Some(raw) = raw else { return (hp, hc) };
    (
        HealthPolicy {
            failure_threshold: raw.failure_threshold.read_or_in(
                out,
                Range::AtLeast(1),
                hp.failure_threshold,
            ),
            success_threshold: raw.success_threshold.read_or_in(
                out,
                Range::AtLeast(1),
                hp.success_threshold,
            ),
            recovery_time: raw.recovery_time.read_or(out, hp.recovery_time),
        },
        HealthCheckSpec {
            enabled: raw.enabled.read_or(out, hc.enabled),
            interval: raw.interval.read_or_in(out, POSITIVE, hc.interval),
            timeout: raw.timeout.read_or_in(out, POSITIVE, hc.timeout),
            probe: raw.probe.read_or(out, hc.probe),
        },
    )
}

pub(super) fn model_ref(val: &Val<String>, out: &mut Vec<Diagnostic>) -> Option<Ref<ModelRef>> {
    let text = val.get(out)?;
    match ModelRef::parse(text.trim()) {
        Some(model) if model.model.is_valid() => Some(Ref {
            value: model,
            location: val.location.clone(),
            key: val.key.clone(),
        }),
        _ => {
            out.push(val.diagnostic(
                DiagnosticKind::InvalidValue,
                crate::value::describe("invalid model reference", &val.raw),
                Some("write \"provider/model\", e.g. \"openai/gpt-4o-mini\"".into()),
            ));
            None
        }
    }
}

pub(super) fn group_ref(val: &Val<String>, out: &mut Vec<Diagnostic>) -> Option<Ref<GroupRef>> {
    let text = val.get(out)?;
    let text = strip(text.trim(), "group:");
    let (group, echelon) = match text.split_once('.') {
        Some((g, e)) => (g, Some(e)),
        None => (text, None),
    };
    if !valid_name(group, false) || echelon.is_some_and(|e| !valid_name(e, false)) {
        out.push(val.diagnostic(
            DiagnosticKind::InvalidValue,
            crate::value::describe("invalid task group reference", &val.raw),
            Some("write \"group\" or \"group.echelonN\"".into()),
        ));
        return None;
    }
    Some(Ref {
        value: GroupRef {
            group: GroupName::new(group),
            echelon: echelon.map(EchelonName::new),
        },
        location: val.location.clone(),
        key: val.key.clone(),
    })
}

pub(super) fn name_ref(
    val: &Val<String>,
    prefix: &str,
    what: &str,
    out: &mut Vec<Diagnostic>,
) -> Option<Ref<String>> {
    let text = val.get(out)?;
    let name = strip(text.trim(), prefix);
    if !valid_name(name, false) {
        out.push(val.diagnostic(
            DiagnosticKind::InvalidValue,
            crate::value::describe(&format!("invalid {what} name"), &val.raw),
            None,
        ));
        return None;
    }
    Some(Ref {
        value: name.to_owned(),
        location: val.location.clone(),
        key: val.key.clone(),
    })
}

pub(super) fn pool(raw: RawPool, out: &mut Vec<Diagnostic>) -> PoolDraft {
    let mut entries = Vec::new();
    for instance in raw.instances.iter().flatten() {
        if let Some(entry) = instance_entry(instance, out) {
            entries.push(entry);
        }
    }
    let task_groups: Vec<_> = raw
        .task_groups
        .iter()
        .flatten()
        .filter_map(|v| group_ref(v, out))
        .collect();
    let (health, health_check) = health(raw.health_check.as_ref(), out);
    let fallback = raw.fallback.as_ref();
    let strategy = fallback.map_or(PoolFallbackStrategy::InstanceRotation, |f| {
        f.strategy
            .read_or(out, PoolFallbackStrategy::InstanceRotation)
    });
    let fallback_pools: Vec<_> = fallback
        .and_then(|f| f.fallback_pools.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| name_ref(v, "pool:", "pool", out))
        .map(|r| Ref {
            value: PoolName::new(r.value.as_str()),
            location: r.location,
            key: r.key,
        })
        .collect();
    let fallback_key = format!("{}.fallback", raw.here.key);
    match strategy {
        PoolFallbackStrategy::PoolFallback
            if fallback_pools.is_empty() && !had_error_at(out, &fallback_key) =>
        {
            out.push(
                Diagnostic::warning(
                    DiagnosticKind::Unused,
                    "`strategy = \"pool_fallback\"` without `fallback_pools`",
                )
                .at(raw.here.location.clone())
                .key(fallback_key)
                .help("list the pools to continue with in `fallback_pools`"),
            );
        }
        PoolFallbackStrategy::InstanceRotation if !fallback_pools.is_empty() => {
            out.push(
                Diagnostic::warning(
                    DiagnosticKind::Unused,
                    "`fallback_pools` are only used with `strategy = \"pool_fallback\"`",
                )
                .at(fallback_pools[0].location.clone())
                .key(format!("{fallback_key}.fallback_pools")),
            );
        }
        _ => {}
    }
    if raw.instances.as_ref().is_none_or(Vec::is_empty)
        && raw.task_groups.as_ref().is_none_or(Vec::is_empty)
        && !had_error_at(out, &format!("{}.instances", raw.here.key))
        && !had_error_at(out, &format!("{}.task_groups", raw.here.key))
    {
        out.push(
            missing(&raw.here, "instances", "the pool has no instances")
                .help("add [[instances]] with `model = \"provider/model\"`, or `task_groups = [\"group.echelonN\"]`"),
        );
    }
    let rate = raw.rate_limit.as_ref();
    PoolDraft {
        rotation: raw.rotation.read_or(out, RotationStrategy::RoundRobin),
        entries,
        task_groups,
        health,
        health_check,
        breaker: breaker(raw.circuit_breaker.as_ref(), BreakerPolicy::default(), out),
        max_ejection_percent: raw.max_ejection_percent.read_or_in(
            out,
            Range::Between(0, 100),
            defaults::pool::MAX_EJECTION_PERCENT,
        ),
        strategy,
        max_instance_attempts: fallback.map_or(defaults::pool::MAX_INSTANCE_ATTEMPTS, |f| {
            f.max_instance_attempts.read_or_in(
                out,
                Range::Between(1, 100),
                defaults::pool::MAX_INSTANCE_ATTEMPTS,
            )
        }),
        fallback_pools,
        limits: Limits {
            rpm: rate.and_then(|r| r.rpm.value_in(out, Range::AtLeast(1))),
            tpm: rate.and_then(|r| r.tpm.value_in(out, Range::AtLeast(1))),
            max_concurrency: raw
                .concurrency
                .as_ref()
                .and_then(|c| c.max.value_in(out, Range::AtLeast(1))),
        },
        rate_algorithm: rate.map_or(RateAlgorithm::TokenBucket, |r| {
            r.algorithm.read_or(out, RateAlgorithm::TokenBucket)
        }),
        here: raw.here,
    }
}

pub(super) fn instance_entry(
    raw: &RawInstance,
    out: &mut Vec<Diagnostic>,
) -> Option<InstanceDraft> {
    let weight = raw.weight.read_or_in(out, Range::Between(1, 1_000_000), 1);
    let limits = limits(&raw.rpm_limit, &raw.tpm_limit, &raw.max_concurrency, out);
    let key = raw.key.as_ref().and_then(|val| {
        Some(Ref {
            value: val.get(out)?,
            location: val.location.clone(),
            key: val.key.clone(),
        })
    });
    let Some(model) = &raw.model else {
        out.push(
            missing(&raw.here, "model", "an instance needs a `model`")
                .help("write `model = \"provider/model\"`"),
        );
        return None;
    };
    Some(InstanceDraft {
        model: model_ref(model, out)?,
        key,
        weight,
        limits,
    })
}

pub(super) fn group(name: &str, raw: &RawGroup, out: &mut Vec<Diagnostic>) -> GroupDraft {
    let strategy = raw
        .fallback_strategy
        .read_or(out, FallbackStrategy::EchelonDown);
    let fallback = raw.fallback.as_ref();
    let fallback_groups: Vec<_> = fallback
        .and_then(|f| f.fallback_groups.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| group_ref(v, out))
        .collect();
    let fallback_key = format!("{}.fallback", raw.here.key);
    if strategy == FallbackStrategy::GroupFallback
        && fallback_groups.is_empty()
        && !had_error_at(out, &fallback_key)
    {
        out.push(
            Diagnostic::warning(
                DiagnosticKind::Unused,
                "`fallback_strategy = \"group_fallback\"` without `fallback_groups`",
            )
            .at(raw.here.location.clone())
            .key(format!("{fallback_key}.fallback_groups"))
            .help("without fallback groups it behaves like `echelon_down`"),
        );
    }
    if strategy != FallbackStrategy::GroupFallback && !fallback_groups.is_empty() {
        out.push(
            Diagnostic::warning(
                DiagnosticKind::Unused,
                "`fallback_groups` are only used with `fallback_strategy = \"group_fallback\"`",
            )
            .at(fallback_groups[0].location.clone())
            .key(format!("{fallback_key}.fallback_groups")),
        );
    }
    let group_breaker = breaker(raw.circuit_breaker.as_ref(), BreakerPolicy::default(), out);
    let mut echelons: Vec<EchelonDraft> = Vec::new();
    let mut priorities: BTreeMap<u32, String> = BTreeMap::new();
    for (echelon_name, raw_echelon) in raw.echelons.iter().flatten() {
        if !valid_name(echelon_name, false) {
            out.push(
                Diagnostic::error(
                    DiagnosticKind::InvalidValue,
                    format!("`{echelon_name}` is not a valid echelon name"),
                )
                .at(raw_echelon.here.location.clone())
                .key(raw_echelon.here.key.clone())
                .help("use letters, digits, `-` and `_`, e.g. `echelon1`"),
            );
            continue;
        }
        let Some(draft) = echelon(echelon_name, raw_echelon, group_breaker, out) else {
            continue;
        };
        if let Some(other) = priorities.get(&draft.spec.priority) {
            let at = raw_echelon
                .priority
                .as_ref()
                .map_or(raw_echelon.here.location.clone(), |p| p.location.clone());
            out.push(
                Diagnostic::error(
                    DiagnosticKind::Duplicate,
                    format!(
                        "echelons `{other}` and `{echelon_name}` have the same priority {}",
                        draft.spec.priority
                    ),
                )
                .at(at)
                .key(format!("{}.priority", raw_echelon.here.key))
                .help("give each echelon its own priority; smaller goes first"),
            );
        } else {
            priorities.insert(draft.spec.priority, echelon_name.clone());
        }
        echelons.push(draft);
    }
    if raw.echelons.as_ref().is_none_or(BTreeMap::is_empty)
        && !had_error_at(out, &format!("{}.echelons", raw.here.key))
    {
        out.push(
            missing(
                &raw.here,
                "echelons",
                format!("task group `{name}` has no echelons"),
            )
            .help("add [echelons.echelon1] with `models = [\"provider/model\"]`"),
        );
    }
    GroupDraft {
        strategy,
        breaker: group_breaker,
        fallback_groups,
        max_attempts: fallback.map_or(defaults::task_group::MAX_ATTEMPTS, |f| {
            f.max_attempts.read_or_in(
                out,
                Range::Between(1, 100),
                defaults::task_group::MAX_ATTEMPTS,
            )
        }),
        retry_delay: fallback.map_or(defaults::task_group::RETRY_DELAY, |f| {
            f.retry_delay
                .read_or(out, defaults::task_group::RETRY_DELAY)
        }),
        deadline: fallback.map_or(defaults::task_group::DEADLINE, |f| {
            f.deadline
                .read_or_in(out, POSITIVE, defaults::task_group::DEADLINE)
        }),
        content_filter_fallback: fallback.map_or(
            defaults::task_group::CONTENT_FILTER_FALLBACK,
            |f| {
                f.content_filter_fallback
                    .read_or(out, defaults::task_group::CONTENT_FILTER_FALLBACK)
            },
        ),
        echelons,
    }
}

/// `N` of an `echelonN` name.
pub(super) fn number_in_name(name: &str) -> Option<u32> {
    name.strip_prefix("echelon")?.parse().ok()
}

pub(super) fn echelon(
    name: &str,
    raw: &RawEchelon,
    group_breaker: BreakerPolicy,
    out: &mut Vec<Diagnostic>,
) -> Option<EchelonDraft> {
    let priority = match &raw.priority {
        Some(val) => val.get(out)?,
        None => match number_in_name(name) {
            Some(n) => n,
            None => {
                out.push(
                    missing(&raw.here, "priority", format!("echelon `{name}` needs a `priority`"))
                        .help("echelons named `echelonN` default to priority N; others set `priority` (smaller goes first)"),
                );
                return None;
            }
        },
    };
    let mut refs: Vec<Ref<EchelonTarget>> = Vec::new();
    for val in raw.models.iter().flatten() {
        let Some(text) = val.get(out) else { continue };
        let text = text.trim();
        let target = if let Some(pool) = text.strip_prefix("pool:") {
            valid_name(pool, false).then(|| EchelonTarget::Pool(PoolName::new(pool)))
        } else if text.starts_with("group:") {
            out.push(val.diagnostic(
                DiagnosticKind::InvalidValue,
                "an echelon cannot list a task group".to_owned(),
                Some("list models or pools here; continue with other groups through `fallback.fallback_groups`".into()),
            ));
            continue;
        } else {
            ModelRef::parse(text)
                .filter(|m| m.model.is_valid())
                .map(EchelonTarget::Model)
        };
        let Some(target) = target else {
            out.push(val.diagnostic(
                DiagnosticKind::InvalidValue,
                crate::value::describe("invalid echelon target", &val.raw),
                Some("write \"provider/model\" or \"pool:NAME\"".into()),
            ));
            continue;
        };
        if refs.iter().any(|r| r.value == target) {
            out.push(val.diagnostic(
                DiagnosticKind::Duplicate,
                format!("`{text}` is listed twice in echelon `{name}`"),
                None,
            ));
            continue;
        }
        refs.push(Ref {
            value: target,
            location: val.location.clone(),
            key: val.key.clone(),
        });
    }
    let models_key = format!("{}.models", raw.here.key);
    if raw.models.as_ref().is_none_or(Vec::is_empty) && !had_error_at(out, &models_key) {
        out.push(
            missing(
                &raw.here,
                "models",
                format!("echelon `{name}` lists no models"),
            )
            .help("write `models = [\"provider/model\", \"pool:NAME\"]`"),
        );
    }
    let defaults_raw = raw.defaults.as_ref();
    Some(EchelonDraft {
        spec: EchelonSpec {
            name: EchelonName::new(name),
            priority,
            targets: refs.iter().map(|r| r.value.clone()).collect(),
            breaker: raw
                .circuit_breaker
                .as_ref()
                .map(|b| breaker(Some(b), group_breaker, out)),
            concurrency_limit: raw.concurrency_limit.value_in(out, Range::AtLeast(1)),
            rpm_limit: raw.rpm_limit.value_in(out, Range::AtLeast(1)),
            timeout: raw
                .timeout
                .read_or_in(out, POSITIVE, defaults::echelon::TIMEOUT),
            first_token_timeout: raw.first_token_timeout.read_or_in(
                out,
                POSITIVE,
                defaults::echelon::FIRST_TOKEN_TIMEOUT,
            ),
            idle_timeout: raw.idle_timeout.read_or_in(
                out,
                POSITIVE,
                defaults::echelon::IDLE_TIMEOUT,
            ),
            max_retries: raw.max_retries.read_or_in(
                out,
                Range::Between(0, 10),
                defaults::echelon::MAX_RETRIES,
            ),
            retry_after_max_wait: raw
                .retry_after_max_wait
                .read_or(out, defaults::echelon::RETRY_AFTER_MAX_WAIT),
            defaults: RequestDefaults {
                temperature: defaults_raw
                    .and_then(|d| d.temperature.value_in(out, Range::Between(0.0, 2.0))),
                max_tokens: defaults_raw
                    .and_then(|d| d.max_tokens.value_in(out, Range::AtLeast(1))),
            },
        },
        refs,
    })
}

pub(super) fn wrapper(
    name: &str,
    raw: &RawWrapper,
    out: &mut Vec<Diagnostic>,
) -> Option<WrapperDraft> {
    let enabled = raw.enabled.read_or(out, true);
    let kind = match &raw.kind {
        Some(val) => val.get(out),
        None => {
            out.push(
                missing(
                    &raw.here,
                    "type",
                    format!("wrapper `{name}` needs a `type`"),
                )
                .help("one of `task_group`, `pool`, `direct`"),
            );
            None
        }
    };
    let target = match &raw.target {
        Some(val) => val.get(out).map(|t| Ref {
            value: t.trim().to_owned(),
            location: val.location.clone(),
            key: val.key.clone(),
        }),
        None => {
            out.push(missing(
                &raw.here,
                "target",
                format!("wrapper `{name}` needs a `target`"),
            ));
            None
        }
    };
    let description = raw.description.value(out);
    if !enabled {
        return None;
    }
    Some(WrapperDraft {
        name: name.to_owned(),
        kind: kind?,
        target: target?,
        description,
    })
}
