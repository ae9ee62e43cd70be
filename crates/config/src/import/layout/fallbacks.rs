//! Fallbacks: each task group followed by the echelons of its fallback model groups, in the order
//! LiteLLM tries them, and deadlines long enough for the longest attempt on the way.

use std::collections::BTreeMap;

use super::groups::Names;
use super::*;
use crate::import::source::{Router, Rule};
use echelon_domain::defaults;

/// Appends to every group the echelons of its fallback groups, in the order LiteLLM tries them:
/// depth first (a fallback group's own fallbacks before the next one), at most `max_fallbacks`
/// groups, a group already on the way skipped.
pub(super) fn link_fallbacks(router: &Router, names: &Names, tree: &mut Tree) -> Used {
    let max = router
        .max_fallbacks
        .as_ref()
        .map_or(litellm_defaults::MAX_FALLBACKS, |s| s.value) as usize;
    let general = router
        .fallbacks
        .as_ref()
        .map(|s| s.value.as_slice())
        .unwrap_or_default();
    let context = router
        .context_window_fallbacks
        .as_ref()
        .map(|s| s.value.as_slice())
        .unwrap_or_default();
    let content = router
        .content_policy_fallbacks
        .as_ref()
        .map(|s| s.value.as_slice())
        .unwrap_or_default();
    let default = router
        .default_fallbacks
        .as_ref()
        .map(|s| (s.value.clone(), s.line))
        .or_else(|| {
            general
                .iter()
                .find(|r| r.from == "*")
                .map(|r| (r.to.clone(), r.line))
        });
    // Each group's own echelons, before any fallback is appended.
    let own: BTreeMap<String, Vec<EchelonOut>> = tree
        .groups
        .iter()
        .map(|g| (g.model_name.clone(), g.echelons.clone()))
        .collect();
    let mut used = Used::default();
    let mut reported = Vec::new();
    for rules in [general, context, content] {
        for rule in rules.iter().filter(|r| r.from != "*") {
            if names.group(&rule.from).is_none()
                && !reported.contains(&(rule.line, rule.from.clone()))
            {
                reported.push((rule.line, rule.from.clone()));
                tree.findings.push(finding(
                    rule.line,
                    &format!("fallbacks: {}", rule.from),
                    FindingKind::NotMapped,
                    format!(
                        "`{}` is not a model group of this config that Echelon could map",
                        rule.from
                    ),
                ));
            }
            for to in &rule.to {
                if names.group(to).is_none() && !reported.contains(&(rule.line, to.clone())) {
                    reported.push((rule.line, to.clone()));
                    tree.findings.push(finding(
                        rule.line,
                        &format!("fallbacks: {} → {to}", rule.from),
                        FindingKind::NotMapped,
                        format!("`{to}` is not a model group of this config that Echelon could map, so the chain skips it"),
                    ));
                }
            }
        }
    }
    let fallbacks_of = |rules: &[Rule], from: &str, use_default: bool| -> Vec<(String, usize)> {
        match rules.iter().find(|r| r.from == from) {
            Some(rule) => rule.to.iter().map(|t| (t.clone(), rule.line)).collect(),
            None if use_default => default
                .as_ref()
                .map(|(to, line)| to.iter().map(|t| (t.clone(), *line)).collect())
                .unwrap_or_default(),
            None => Vec::new(),
        }
    };
    for g in 0..tree.groups.len() {
        let origin = tree.groups[g].model_name.clone();
        let mut chain: Vec<(String, String)> = Vec::new();
        let mut seen = vec![origin.clone()];
        // Regular fallbacks, depth first.
        let mut stack: Vec<(String, usize)> = fallbacks_of(general, &origin, true)
            .into_iter()
            .rev()
            .collect();
        while let Some((next, line)) = stack.pop() {
            if chain.len() >= max || seen.contains(&next) || !own.contains_key(&next) {
                continue;
            }
            seen.push(next.clone());
            used.fallbacks = true;
            chain.push((next.clone(), format!("fallbacks, line {line}")));
            for nested in fallbacks_of(general, &next, true).into_iter().rev() {
                stack.push(nested);
            }
        }
        // Context-window fallbacks: LiteLLM uses them on a context-length error only; Echelon
        // then moves only to larger context windows, so they come last.
        for (next, line) in fallbacks_of(context, &origin, false) {
            if seen.contains(&next) || !own.contains_key(&next) {
                continue;
            }
            seen.push(next.clone());
            used.context = true;
            chain.push((next, format!("context_window_fallbacks, line {line}")));
        }
        // Content-policy fallbacks: LiteLLM uses them on a content-policy refusal only. Echelon
        // leaves an echelon that refused for the next one on the ladder (the group's
        // `content_filter_fallback`), so they come last too and a refusal reaches them.
        let mut refusal_moves_on = false;
        for (next, line) in fallbacks_of(content, &origin, false) {
            if next == origin || !own.contains_key(&next) {
                continue;
            }
            // Already on the ladder (a regular fallback): a refusal reaches it as it is.
            used.content = true;
            refusal_moves_on = true;
            if !seen.contains(&next) {
                seen.push(next.clone());
                chain.push((next, format!("content_policy_fallbacks, line {line}")));
            }
        }
        let group = &mut tree.groups[g];
        group.content_filter_fallback = refusal_moves_on;
        for (next, via) in &chain {
            for echelon in &own[next] {
                let n = group.echelons.len() + 1;
                group.echelons.push(EchelonOut {
                    name: format!("echelon{n}"),
                    fallback: Some(format!("model group {next} ({via})")),
                    ..echelon.clone()
                });
            }
        }
        if !chain.is_empty() {
            let per_group = group.max_attempts;
            let groups = u32::try_from(chain.len() + 1).unwrap_or(u32::MAX);
            group.max_attempts = per_group.saturating_mul(groups).min(MAX_ATTEMPTS);
            group.attempts_note = format!(
                "{} for each of {groups} model groups ({} and its fallbacks)",
                group.attempts_note, group.model_name
            );
        }
    }
    // Deadlines: at least the default, and at least the longest single attempt on the way.
    for group in &mut tree.groups {
        let longest = group.echelons.iter().map(longest).max().unwrap_or_default();
        if longest > defaults::task_group::DEADLINE {
            group.deadline = Some(longest);
        }
    }
    used
}

/// Which fallback settings produced at least one fallback echelon.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Used {
    pub fallbacks: bool,
    pub context: bool,
    pub content: bool,
}

fn longest(e: &EchelonOut) -> Duration {
    let t = e
        .timeout
        .as_ref()
        .map_or(defaults::echelon::TIMEOUT, |(d, _)| *d);
    let s = e
        .stream_timeout
        .as_ref()
        .map_or(defaults::echelon::FIRST_TOKEN_TIMEOUT, |(d, _)| *d);
    t.max(s)
}
