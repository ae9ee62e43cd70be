//! Model groups: one pool per `order` level (rotation, weights, limits, breaker, health) and one
//! task group whose echelons are those levels, with LiteLLM's retries and timeouts.

use std::collections::BTreeMap;

use super::*;
use crate::import::source::{Proxy, Router};

/// Model groups by name, in order of first appearance, with their deployments' indexes.
pub(super) fn group_by_name(placed: &[Placed]) -> Vec<(String, Vec<usize>)> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, p) in placed.iter().enumerate() {
        match groups
            .iter_mut()
            .find(|(n, _)| *n == p.deployment.model_name)
        {
            Some((_, members)) => members.push(i),
            None => groups.push((p.deployment.model_name.clone(), vec![i])),
        }
    }
    groups
}

/// The Echelon names of the model groups: group and pool names (no `.`), wrapper names.
pub(super) struct Names {
    groups: BTreeMap<String, String>,
}

impl Names {
    pub(super) fn new(groups: &[(String, Vec<usize>)]) -> Self {
        let mut map = BTreeMap::new();
        let mut taken: Vec<String> = Vec::new();
        for (model_name, _) in groups {
            let name = unique(&entry_name(model_name), |n| taken.iter().any(|t| t == n));
            taken.push(name.clone());
            map.insert(model_name.clone(), name);
        }
        Self { groups: map }
    }

    pub(super) fn group(&self, model_name: &str) -> Option<&str> {
        self.groups.get(model_name).map(String::as_str)
    }
}

pub(super) fn plan_group(
    model_name: &str,
    members: &[usize],
    placed: &[Placed],
    router: &Router,
    proxy: &Proxy,
    names: &Names,
    tree: &mut Tree,
) {
    let group_name = names.group(model_name).unwrap_or(model_name).to_owned();
    let mut levels: Vec<Level> = members
        .iter()
        .map(|&i| {
            placed[i]
                .deployment
                .order
                .map_or(Level::Unordered, Level::Order)
        })
        .collect();
    levels.sort();
    levels.dedup();
    if levels == [Level::Unordered] {
        levels = vec![Level::All];
    }
    let num_retries = router
        .num_retries
        .as_ref()
        .map_or(litellm_defaults::NUM_RETRIES, |s| s.value);
    let mut echelons = Vec::new();
    for (n, level) in levels.iter().enumerate() {
        let in_level: Vec<&Placed> = members
            .iter()
            .map(|&i| &placed[i])
            .filter(|p| match level {
                Level::All => true,
                Level::Order(o) => p.deployment.order == Some(*o),
                Level::Unordered => p.deployment.order.is_none(),
            })
            .collect();
        let stem = match level {
            Level::All => group_name.clone(),
            Level::Order(o) => format!("{group_name}-order{o}"),
            Level::Unordered => format!("{group_name}-unordered"),
        };
        let pool_name = unique(&stem, |n| tree.pools.iter().any(|p| p.name == n));
        let pool = plan_pool(
            &pool_name, model_name, *level, &in_level, router, proxy, tree,
        );
        // LiteLLM's retries pick a deployment again: another one of the level, or, once a
        // failed one cools down, one of the next order. Only a group's last level retries
        // the same instance, when it is the only one.
        let last = n + 1 == levels.len();
        let (max_retries, retries_note) = match (pool.instances.len() == 1, last) {
            (true, true) => (
                num_retries.min(MAX_RETRIES),
                format!("one instance: LiteLLM's num_retries ({num_retries}) retry it"),
            ),
            (true, false) => (
                0,
                "a retry goes to the next echelon, as LiteLLM picks the next order once this deployment cools down".to_owned(),
            ),
            (false, _) => (
                0,
                "a retry goes to another instance, as LiteLLM picks a deployment again".to_owned(),
            ),
        };
        let timeout = level_timeout(&in_level, |d| d.timeout, router.timeout.as_ref());
        let stream_timeout = level_timeout(
            &in_level,
            |d| d.stream_timeout,
            router.stream_timeout.as_ref(),
        )
        .or_else(|| {
            timeout
                .as_ref()
                .map(|(d, why)| (*d, format!("{why}; LiteLLM streams under the same timeout")))
        });
        echelons.push(EchelonOut {
            name: format!("echelon{}", n + 1),
            pool: pool_name,
            level: *level,
            timeout,
            stream_timeout,
            max_retries,
            retries_note,
            temperature: agreed(&in_level, |d| d.temperature).filter(|t| (0.0..=2.0).contains(t)),
            max_tokens: agreed(&in_level, |d| d.max_tokens),
            fallback: None,
        });
        tree.pools.push(pool);
    }
    let line = members
        .iter()
        .map(|&i| placed[i].deployment.line)
        .min()
        .unwrap_or(1);
    if levels.contains(&Level::Unordered) {
        tree.findings.push(finding(
            line,
            &format!("model_list ({model_name})"),
            FindingKind::Warning,
            "deployments without `order` in a group where others have one: LiteLLM picks them only when no ordered deployment is available, so they are the last echelon",
        ));
    }
    if levels.iter().any(|l| matches!(l, Level::Order(_)))
        && router.pre_call_checks.as_ref().is_none_or(|s| !s.value)
    {
        tree.findings.push(finding(
            line,
            &format!("model_list ({model_name})"),
            FindingKind::Warning,
            "`order` becomes echelons; LiteLLM documents that it needs enable_pre_call_checks: true, which this file does not set, while Echelon always honours it",
        ));
    }
    tree.groups.push(GroupOut {
        name: group_name,
        model_name: model_name.to_owned(),
        lines: members.iter().map(|&i| placed[i].deployment.line).collect(),
        echelons,
        max_attempts: (num_retries + 1).min(MAX_ATTEMPTS),
        attempts_note: format!("1 + num_retries ({num_retries})"),
        retry_delay: router.retry_after.clone(),
        deadline: None,
        content_filter_fallback: false,
    });
}

fn plan_pool(
    name: &str,
    model_name: &str,
    level: Level,
    members: &[&Placed],
    router: &Router,
    proxy: &Proxy,
    tree: &mut Tree,
) -> PoolOut {
    let (rotation, rotation_note) = rotation(router);
    let mut instances: Vec<InstanceOut> = Vec::new();
    for p in members {
        let model = format!(
            "{}/{}",
            tree.providers[p.provider].name, p.endpoint.upstream
        );
        let d = &p.deployment;
        let max_concurrency = d
            .max_parallel
            .or(router.default_max_parallel.as_ref().map(|s| s.value));
        if let Some(same) = instances
            .iter_mut()
            .find(|i| i.model == model && i.key == p.key)
        {
            tree.findings.push(finding(
                d.line,
                &d.label(),
                FindingKind::Warning,
                format!(
                    "the same model and key as model_list[{}]: LiteLLM gives identical deployments one id, Echelon one instance",
                    same.deployment
                ),
            ));
            same.rpm = tighter(same.rpm, d.rpm);
            same.tpm = tighter(same.tpm, d.tpm);
            same.max_concurrency = tighter(same.max_concurrency, max_concurrency);
            continue;
        }
        let limits: Vec<String> = [
            d.rpm.map(|v| format!("{v} rpm")),
            d.tpm.map(|v| format!("{v} tpm")),
            max_concurrency.map(|v| format!("{v} at once")),
        ]
        .into_iter()
        .flatten()
        .collect();
        tree.findings.push(finding(
            d.line,
            &d.label(),
            FindingKind::Mapped,
            format!(
                "`{model_name}`: {model}{} in pool {name}{}{}",
                p.key.map(|k| format!(" (key #{k})")).unwrap_or_default(),
                if limits.is_empty() {
                    String::new()
                } else {
                    format!(", {}", limits.join(", "))
                },
                p.endpoint
                    .note
                    .map(|n| format!(", {n}"))
                    .unwrap_or_default(),
            ),
        ));
        instances.push(InstanceOut {
            model,
            key: p.key,
            weight: None,
            rpm: d.rpm,
            tpm: d.tpm,
            max_concurrency,
            deployment: d.index,
            line: d.line,
        });
    }
    if rotation == RotationStrategy::WeightedRandom {
        weigh(&mut instances, members, model_name, tree);
    }
    let num_retries = router
        .num_retries
        .as_ref()
        .map_or(litellm_defaults::NUM_RETRIES, |s| s.value);
    PoolOut {
        name: name.to_owned(),
        model_name: model_name.to_owned(),
        level,
        rotation,
        rotation_note,
        instances,
        max_instance_attempts: (num_retries + 1).min(MAX_ATTEMPTS),
        attempts_note: format!(
            "1 + num_retries ({num_retries}{})",
            if router.num_retries.is_some() {
                ""
            } else {
                ", LiteLLM's default"
            }
        ),
        breaker: breaker(router),
        health: health(proxy, router),
    }
}

/// simple-shuffle's weights: `weight`, else `rpm`, else `tpm`, read from the level's first
/// deployment as LiteLLM does (a deployment without the value gets 0 there, 1 here).
fn weigh(instances: &mut [InstanceOut], members: &[&Placed], model_name: &str, tree: &mut Tree) {
    type Pick = fn(&Deployment) -> Option<f64>;
    let sources: [(&str, Pick); 3] = [
        ("weight", |d| d.weight),
        ("rpm", |d| d.params_rpm.map(f64::from)),
        ("tpm", |d| d.params_tpm.map(f64::from)),
    ];
    let first = &members[0].deployment;
    let Some((what, pick)) = sources.iter().find(|(_, pick)| pick(first).is_some()) else {
        if members.iter().any(|p| p.deployment.weight.is_some()) {
            tree.findings.push(finding(
                first.line,
                &first.label(),
                FindingKind::Warning,
                format!(
                    "`{model_name}`: LiteLLM ignores every weight of this group because its first deployment has none (LiteLLM #33329); Echelon applies them"
                ),
            ));
            set_weights(instances, members, |d| d.weight);
        }
        return;
    };
    if members.iter().any(|p| pick(&p.deployment).is_none()) {
        tree.findings.push(finding(
            first.line,
            &first.label(),
            FindingKind::Warning,
            format!(
                "`{model_name}`: a deployment without `{what}` gets weight 0 in LiteLLM (never picked while the others are available); Echelon's least weight is 1"
            ),
        ));
    }
    set_weights(instances, members, *pick);
}

fn set_weights(
    instances: &mut [InstanceOut],
    members: &[&Placed],
    pick: impl Fn(&Deployment) -> Option<f64>,
) {
    let values: Vec<f64> = instances
        .iter()
        .map(|i| {
            members
                .iter()
                .find(|p| p.deployment.index == i.deployment)
                .and_then(|p| pick(&p.deployment))
                .unwrap_or(0.0)
        })
        .collect();
    for (instance, weight) in instances.iter_mut().zip(integer_weights(&values)) {
        instance.weight = Some(weight);
    }
}

/// Whole weights from 1 to 1,000,000 in the same proportions: whole numbers divided by their
/// greatest common divisor, anything else scaled so the largest is 1000.
pub(crate) fn integer_weights(values: &[f64]) -> Vec<u32> {
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    if max <= 0.0 {
        return vec![1; values.len()];
    }
    // A zero (LiteLLM: never picked) keeps the least weight, 1, far below the others.
    let whole = values.iter().all(|v| v.fract() == 0.0 && *v > 0.0) && max <= 1_000_000.0;
    if whole {
        let ints: Vec<u32> = values.iter().map(|v| *v as u32).collect();
        let divisor = ints.iter().copied().filter(|v| *v > 0).fold(0, gcd).max(1);
        ints.iter().map(|v| (v / divisor).max(1)).collect()
    } else {
        values
            .iter()
            .map(|v| ((v / max * 1000.0).round() as u32).max(1))
            .collect()
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn tighter(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub(super) fn rotation(router: &Router) -> (RotationStrategy, String) {
    let strategy = router.routing_strategy.as_ref().map(|s| s.value.as_str());
    match strategy {
        None | Some("simple-shuffle") => (
            RotationStrategy::WeightedRandom,
            "simple-shuffle (LiteLLM's default): a random pick weighted by weight, else rpm, else tpm".to_owned(),
        ),
        Some("least-busy") => (
            RotationStrategy::LeastConnections,
            "least-busy: the deployment with the fewest requests in flight".to_owned(),
        ),
        Some("latency-based-routing") => (
            RotationStrategy::FastestResponse,
            "latency-based-routing: the lowest average latency (p2c_ewma also weighs requests in flight and penalises 429s)".to_owned(),
        ),
        Some("usage-based-routing" | "usage-based-routing-v2") => (
            RotationStrategy::RoundRobin,
            "usage-based-routing, closest: even shares, skipping instances at their rpm/tpm limit".to_owned(),
        ),
        Some(other) => (
            RotationStrategy::WeightedRandom,
            format!("{other} has no Echelon equivalent; weighted_random as simple-shuffle"),
        ),
    }
}

fn breaker(router: &Router) -> BreakerOut {
    let failure_threshold = router.allowed_fails.as_ref().map(|s| {
        (
            s.value.saturating_add(1),
            format!(
                "{} = {}: LiteLLM cools a deployment down after more than {} failures in a minute; Echelon counts failures in a row",
                s.key, s.value, s.value
            ),
        )
    });
    let recovery_time = match &router.cooldown_time {
        Some(s) if s.value.is_zero() => None,
        Some(s) => Some((s.value, format!("{} (line {})", s.key, s.line))),
        None => Some((
            litellm_defaults::COOLDOWN,
            "LiteLLM's default cooldown_time".to_owned(),
        )),
    };
    BreakerOut {
        failure_threshold,
        recovery_time,
    }
}

fn health(proxy: &Proxy, router: &Router) -> HealthOut {
    // LiteLLM takes a deployment out only by cooling it down: its health follows the same
    // count as the breaker when allowed_fails sets one.
    let failure_threshold = router
        .allowed_fails
        .as_ref()
        .map(|s| s.value.saturating_add(1));
    let mut out = match &proxy.health_checks {
        Some(s) if s.value => HealthOut {
            enabled: true,
            interval: Some(
                proxy
                    .health_check_interval
                    .as_ref()
                    .map_or(litellm_defaults::HEALTH_CHECK_INTERVAL, |s| s.value),
            ),
            note: format!(
                "{} (line {}); Echelon's probe lists models, which costs nothing, where LiteLLM's sends a completion",
                s.key, s.line
            ),
            failure_threshold: None,
        },
        _ => HealthOut {
            enabled: false,
            interval: None,
            note: "LiteLLM probes deployments only with general_settings.background_health_checks"
                .to_owned(),
            failure_threshold: None,
        },
    };
    out.failure_threshold = failure_threshold;
    out
}

/// The largest timeout of a level's deployments, else the router's.
fn level_timeout(
    members: &[&Placed],
    pick: impl Fn(&Deployment) -> Option<Duration>,
    router: Option<&Setting<Duration>>,
) -> Option<(Duration, String)> {
    let own: Vec<(Duration, &Deployment)> = members
        .iter()
        .filter_map(|p| pick(&p.deployment).map(|t| (t, &p.deployment)))
        .collect();
    match own.iter().max_by_key(|(t, _)| *t) {
        Some((t, d)) => {
            let differ = own.iter().any(|(o, _)| o != t);
            Some((
                *t,
                format!(
                    "{}'s litellm_params{}",
                    d.label(),
                    if differ {
                        ", the largest of the level"
                    } else {
                        ""
                    }
                ),
            ))
        }
        None => router.map(|s| (s.value, s.key.clone())),
    }
}

/// A value every deployment of the level sets to the same thing.
fn agreed<T: PartialEq + Copy>(
    members: &[&Placed],
    pick: impl Fn(&Deployment) -> Option<T>,
) -> Option<T> {
    let first = pick(&members.first()?.deployment)?;
    members
        .iter()
        .all(|p| pick(&p.deployment) == Some(first))
        .then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_keep_their_proportions() {
        assert_eq!(integer_weights(&[9.0, 1.0]), [9, 1]);
        assert_eq!(integer_weights(&[900.0, 10.0]), [90, 1]);
        assert_eq!(integer_weights(&[0.9, 0.1]), [1000, 111]);
        assert_eq!(integer_weights(&[3.0, 0.0]), [1000, 1]);
        assert_eq!(integer_weights(&[2_000_000.0, 1_000_000.0]), [1000, 500]);
    }
}
