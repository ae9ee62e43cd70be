//! How the command line shows the admin API's documents (`/admin/route`, `/admin/status`): the
//! DTOs of [`crate::api`] rendered as text tables.
//!
//! The same renderer serves a running gateway (its JSON read into the DTOs) and an in-process one
//! (`route explain` offline, `echelon demo`: the DTOs built from the domain values directly).
//!
//! Instants are seconds on the gateway's monotonic clock. A remaining time (cooldown, open
//! breaker) can only be shown when the document also says what time it is (`now`); without it
//! the state is shown without the countdown.

use echelon_domain::time::DurationText;
use std::fmt::Write as _;
use std::time::Duration;

use super::table::{Table, percent};
use crate::api::{
    ExplanationDto, FailModeDto, GroupDto, HistoryDto, InstanceDto, LabelKind, SharedStateDto,
    SharingModeDto, SkipDto, StateBackendDto, StatusDto,
};

impl SkipDto {
    /// A sentence for people: why it is out and, when known, for how long.
    pub fn describe(&self, now: Option<f64>) -> String {
        let left = |until: Option<f64>| match (until, now) {
            (Some(until), Some(now)) => format!(" ({} left)", remaining(until, now)),
            _ => String::new(),
        };
        match self.kind.as_str() {
            "key_dead" => {
                "key refused by the upstream (401/403); dead until a probe or reload".into()
            }
            "cooling_down" => format!("cooling down after a 429{}", left(self.until)),
            "breaker_open" => match self.until {
                Some(_) => format!("circuit breaker open{}", left(self.until)),
                None => "circuit breaker half-open, its trial calls are in flight".into(),
            },
            "unhealthy" => format!("unhealthy, resting{}", left(self.until)),
            "saturated" => {
                let limit = match self.limit.as_deref() {
                    Some("rpm" | "requests") => "rpm",
                    Some("tpm" | "tokens") => "tpm",
                    Some("concurrency") => "concurrency",
                    _ => "a",
                };
                match self.retry_in {
                    Some(d) => format!(
                        "{limit} limit full (capacity back in {})",
                        DurationText::approx(d)
                    ),
                    None => format!("{limit} limit full"),
                }
            }
            "already_tried" => "already tried by this request".into(),
            "provider_failed" => format!(
                "provider {} already failed for this request",
                self.provider.as_deref().unwrap_or("?")
            ),
            "context_window_too_small" => "context window too small".into(),
            "attempts_spent" => "attempts for this target spent".into(),
            "cycle" => "already part of this plan (fallback cycle)".into(),
            "no_instances" => "no instances".into(),
            other => other.replace('_', " "),
        }
    }
}

/// Time from `now` to `until` on the gateway's clock, for a table cell.
fn remaining(until: f64, now: f64) -> String {
    DurationText::approx(Duration::from_secs_f64((until - now).max(0.0))).to_string()
}

impl ExplanationDto {
    /// The plan as text: a header, then each stage with a table of its candidates.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "route: {}", self.route);
        let _ = match self.verdict {
            None => writeln!(
                out,
                "at most {} upstream attempts; a request now would be served by the first candidate marked `in`",
                self.max_attempts
            ),
            Some(verdict) => writeln!(
                out,
                "at most {} upstream attempts; nothing can serve now: a request would get {} at once{}",
                self.max_attempts,
                verdict.status,
                verdict
                    .retry_after
                    .map(|d| format!(" with Retry-After {}", DurationText::approx(d)))
                    .unwrap_or_default()
            ),
        };
        for (i, stage) in self.stages.iter().enumerate() {
            let _ = writeln!(out, "\nstage {}: {}", i + 1, stage.label);
            if let Some(skip) = &stage.echelon_skip {
                let _ = writeln!(
                    out,
                    "  skipped as a whole: echelon {}",
                    skip.describe(self.now)
                );
            }
            for target in &stage.targets {
                let _ = writeln!(
                    out,
                    "  {} ({}, tries up to {} instance{})",
                    target.kind.route(&target.name),
                    target.rotation,
                    target.attempts,
                    if target.attempts == 1 { "" } else { "s" }
                );
                let mut table = Table::new([
                    "INSTANCE",
                    "HEALTH",
                    "BREAKER",
                    "IN-FLIGHT",
                    "WEIGHT",
                    "DECISION",
                ]);
                for c in &target.candidates {
                    let decision = match &c.skip {
                        None => "in".to_owned(),
                        Some(skip) => format!("out: {}", skip.describe(self.now)),
                    };
                    table.row([
                        c.instance.clone(),
                        c.health.clone(),
                        c.breaker.replace('_', "-"),
                        c.in_flight.to_string(),
                        c.weight.to_string(),
                        decision,
                    ]);
                }
                out.push_str(&table.render(4));
            }
        }
        if !self.cycles.is_empty() {
            let _ = writeln!(
                out,
                "\nfallback references left out as cycles: {}",
                self.cycles.join(", ")
            );
        }
        out
    }
}

impl HistoryDto {
    /// One line for people, with the time relative to `now` when known.
    fn line(&self, now: Option<f64>) -> Option<String> {
        let when = |at: f64| match now {
            Some(now) => format!(
                "{} ago",
                DurationText::approx(Duration::from_secs_f64((now - at).max(0.0)))
            ),
            None => format!("at {at:.1}s"),
        };
        let reason = |r: &str| {
            if r.is_empty() {
                String::new()
            } else {
                format!(": {r}")
            }
        };
        match self {
            Self::Fallback {
                at,
                group,
                from,
                to,
                reason: why,
            } => {
                let left = match (group, from) {
                    (Some(g), Some(e)) => format!("{g} › {e}"),
                    (Some(g), None) => g.clone(),
                    (None, Some(e)) => e.clone(),
                    (None, None) => "a stage".into(),
                };
                Some(format!(
                    "{:>10}  fallback from {left} to {to}{}",
                    when(*at),
                    reason(why)
                ))
            }
            Self::Breaker {
                at,
                scope,
                from,
                to,
                reason: why,
                ..
            } => Some(format!(
                "{:>10}  breaker of {scope}: {} → {}{}",
                when(*at),
                from.replace('_', "-"),
                to.replace('_', "-"),
                reason(why)
            )),
            Self::Other => None,
        }
    }
}

/// Most history lines `status` prints.
const HISTORY_LINES: usize = 10;

impl SharedStateDto {
    /// One line of `echelon status`: where shared state lives and whether it is shared now.
    pub fn line(&self) -> String {
        if self.backend == StateBackendDto::Memory {
            return "shared state: memory (limits, cooldowns and breakers apply to this process only)"
                .to_owned();
        }
        let mode = match self.mode {
            SharingModeDto::Shared => "shared with the other replicas".to_owned(),
            SharingModeDto::Fallback => format!(
                "falling back to local state (Redis unreachable{})",
                self.last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
            SharingModeDto::Memory => "not shared".to_owned(),
            SharingModeDto::Other => "in a mode this echelon does not know".to_owned(),
        };
        let fail_mode = match self.fail_mode {
            Some(FailModeDto::Closed) => "closed",
            Some(FailModeDto::Other) => "unknown",
            Some(FailModeDto::Local) | None => "local",
        };
        format!(
            "shared state: redis, {mode}; {} replicas, fail mode {fail_mode}, {} failed syncs",
            self.replicas.unwrap_or(1),
            self.failures
        )
    }
}

impl InstanceDto {
    /// The breaker cell: state, and the time to the next trial when open.
    fn breaker_cell(&self, now: Option<f64>) -> String {
        let state = self.breaker.replace('_', "-");
        match (self.breaker.as_str(), self.open_until, now) {
            ("open", Some(until), Some(now)) => format!("{state} {}", remaining(until, now)),
            _ => state,
        }
    }

    /// The cooldown cell: time left, `yes` when the clock is unknown, `-` when none.
    fn cooldown_cell(&self, now: Option<f64>) -> String {
        if self.key_dead {
            return "key dead".into();
        }
        match (self.cooldown_until, now) {
            (Some(until), Some(now)) => remaining(until, now),
            (Some(_), None) => "yes".into(),
            (None, _) => "-".into(),
        }
    }
}

/// Instances as a table: health, breaker, cooldown, in-flight, latency, success rate.
pub fn instances_table<'a>(
    instances: impl IntoIterator<Item = &'a InstanceDto>,
    now: Option<f64>,
) -> Table {
    let mut table = Table::new([
        "INSTANCE",
        "HEALTH",
        "BREAKER",
        "COOLDOWN",
        "IN-FLIGHT",
        "LATENCY",
        "SUCCESS",
        "ATTEMPTS",
    ]);
    for i in instances {
        table.row([
            i.id.clone(),
            i.health.clone(),
            i.breaker_cell(now),
            i.cooldown_cell(now),
            i.in_flight.to_string(),
            i.latency
                .ewma
                .map_or_else(|| "-".into(), |d| DurationText::approx(d).to_string()),
            percent(i.stats.successes, i.stats.successes + i.stats.failures),
            i.stats.attempts.to_string(),
        ]);
    }
    table
}

/// Echelons of a group as a table: breaker, in-flight, limits, success rate, fallbacks.
pub fn echelon_table(group: &GroupDto, now: Option<f64>) -> Table {
    let mut table = Table::new([
        "ECHELON",
        "PRIORITY",
        "BREAKER",
        "IN-FLIGHT",
        "LIMITS",
        "SUCCESS",
        "FALLBACKS",
        "TARGETS",
    ]);
    for e in &group.echelons {
        let breaker = match (e.breaker.as_str(), e.open_until, now) {
            ("open", Some(until), Some(now)) => format!("open {}", remaining(until, now)),
            _ => e.breaker.replace('_', "-"),
        };
        let limits = [
            e.concurrency_limit.map(|c| format!("{c} at once")),
            e.rpm_limit.map(|r| format!("{r} rpm")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        table.row([
            e.name.clone(),
            e.priority.to_string(),
            breaker,
            e.in_flight.to_string(),
            if limits.is_empty() {
                "-".into()
            } else {
                limits
            },
            percent(e.stats.successes, e.stats.successes + e.stats.failures),
            e.stats.fallbacks.to_string(),
            e.targets.join(", "),
        ]);
    }
    table
}

impl StatusDto {
    /// Every instance once (an instance can be in a named pool and behind a direct model
    /// route), in the order pools and models list them.
    pub fn unique_instances(&self) -> Vec<&InstanceDto> {
        let mut seen = std::collections::HashSet::new();
        self.pools
            .iter()
            .chain(&self.models)
            .flat_map(|p| p.members.iter().map(|m| &m.instance))
            .filter(|i| seen.insert(i.id.as_str()))
            .collect()
    }

    /// Every pool, direct model and group as tables.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = write!(out, "configuration generation {}", self.generation);
        let _ = write!(
            out,
            "; reloads: {} applied, {} refused",
            self.config.applied, self.config.rejected
        );
        if let Some(last) = &self.config.last {
            let _ = write!(
                out,
                "; last ({}) {}",
                last.trigger,
                if last.applied { "applied" } else { "refused" }
            );
        }
        out.push('\n');
        if let Some(shared) = &self.shared_state {
            let _ = writeln!(out, "{}", shared.line());
        }
        if let Some(last) = self.config.last.as_ref().filter(|l| !l.applied) {
            for error in &last.errors {
                let _ = writeln!(out, "  refused: {}", error.replace('\n', "\n    "));
            }
        }
        if self.now.is_none() {
            let _ = writeln!(
                out,
                "(this gateway does not report its clock, so cooldowns show as `yes` without the time left)"
            );
        }
        // An instance can be in a named pool and behind a direct model route at once, with one
        // live state: its row is shown the first time only.
        let mut shown = std::collections::HashSet::new();
        for pool in self.pools.iter().chain(&self.models) {
            let heading = match pool.kind {
                LabelKind::Pool => "pool",
                LabelKind::Model | LabelKind::Other => "model",
            };
            let name = &pool.name;
            let _ = write!(
                out,
                "\n{heading} {name} ({}): {} of {} available, {} healthy",
                pool.rotation,
                pool.available,
                pool.members.len(),
                pool.healthy
            );
            let new: Vec<&InstanceDto> = pool
                .members
                .iter()
                .map(|m| &m.instance)
                .filter(|i| shown.insert(i.id.as_str()))
                .collect();
            if new.is_empty() {
                let _ = writeln!(out, "; its instances are listed above");
                continue;
            }
            out.push('\n');
            out.push_str(&instances_table(new, self.now).render(2));
        }
        for group in &self.groups {
            let _ = writeln!(
                out,
                "\ntask group {} ({})",
                group.name, group.fallback_strategy
            );
            out.push_str(&echelon_table(group, self.now).render(2));
        }
        let lines: Vec<String> = self
            .history
            .iter()
            .filter_map(|h| h.line(self.now))
            .collect();
        if !lines.is_empty() {
            let shown = lines.len().min(HISTORY_LINES);
            let _ = writeln!(
                out,
                "\nrecent fallbacks and breaker changes (last {shown} of {})",
                lines.len()
            );
            for line in &lines[lines.len() - shown..] {
                let _ = writeln!(out, "  {line}");
            }
        }
        out
    }
}

/// Reads a document of the admin API.
///
/// # Errors
/// When the text is not JSON of the expected shape.
pub fn from_json<T: serde::de::DeserializeOwned>(text: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(text)
}

#[cfg(test)]
mod tests {
    use echelon_domain::events::SkipReason;
    use echelon_domain::instance::Unavailable;
    use echelon_domain::limit::{LimitKind, Saturated};
    use echelon_domain::time::Instant;

    use super::*;

    fn secs(s: u64) -> Instant {
        Instant::from_elapsed(Duration::from_secs(s))
    }

    #[test]
    fn skip_reasons_read_from_the_domains_own_serialization() {
        let cases = [
            (
                SkipReason::Instance(Unavailable::CoolingDown { until: secs(12) }),
                "cooling down after a 429 (2s left)",
            ),
            (
                SkipReason::Instance(Unavailable::BreakerOpen {
                    until: Some(secs(40)),
                }),
                "circuit breaker open (30s left)",
            ),
            (
                SkipReason::Echelon(Unavailable::BreakerOpen { until: None }),
                "circuit breaker half-open, its trial calls are in flight",
            ),
            (
                SkipReason::Instance(Unavailable::Saturated(Saturated {
                    limit: LimitKind::Requests,
                    retry_in: Some(Duration::from_millis(500)),
                })),
                "rpm limit full (capacity back in 500ms)",
            ),
            (
                SkipReason::Instance(Unavailable::KeyDead),
                "key refused by the upstream (401/403); dead until a probe or reload",
            ),
            (SkipReason::AlreadyTried, "already tried by this request"),
        ];
        for (reason, text) in cases {
            let dto = SkipDto::from(&reason);
            assert_eq!(dto.describe(Some(10.0)), text, "{dto:?}");
            // And the same after a trip through the wire.
            let json = serde_json::to_vec(&dto).unwrap();
            let read: SkipDto = from_json(&json).unwrap();
            assert_eq!(read.describe(Some(10.0)), text);
        }
    }

    #[test]
    fn status_lists_an_instance_once_even_when_a_model_route_shares_it() {
        let instance = r#"{"id": "p/m#0", "health": "healthy", "breaker": "closed",
            "cooldown_until": 12.0, "latency": {"ewma": "5ms"},
            "stats": {"attempts": 4, "successes": 3, "failures": 1}}"#;
        let json = format!(
            r#"{{"generation": 2, "config": {{"applied": 1, "rejected": 0}},
            "pools": [{{"kind": "pool", "name": "fast", "rotation": "round_robin", "available": 1,
                "healthy": 1, "members": [{{"weight": 1, "instance": {instance}}}]}}],
            "models": [{{"kind": "model", "name": "p/m", "rotation": "round_robin", "available": 1,
                "healthy": 1, "members": [{{"weight": 1, "instance": {instance}}}]}}],
            "groups": [], "now": 10.0, "history": [
                {{"kind": "breaker", "at": 7.5, "scope": "p/m#0", "from": "closed", "to": "open",
                  "open_until": 9.5, "reason": "5 failures in a row (server)"}},
                {{"kind": "fallback", "at": 8.0, "group": "chat", "from": "echelon1",
                  "to": "chat › echelon2", "reason": "breaker_open"}},
                {{"kind": "something_new", "at": 9.0}}]}}"#
        );
        let view: StatusDto = from_json(json.as_bytes()).unwrap();
        assert_eq!(
            view.render(),
            "configuration generation 2; reloads: 1 applied, 0 refused\n\
             \npool fast (round_robin): 1 of 1 available, 1 healthy\n\
             \x20 INSTANCE  HEALTH   BREAKER  COOLDOWN  IN-FLIGHT  LATENCY  SUCCESS  ATTEMPTS\n\
             \x20 p/m#0     healthy  closed   2s        0          5ms      75.0%    4\n\
             \nmodel p/m (round_robin): 1 of 1 available, 1 healthy; its instances are listed above\n\
             \nrecent fallbacks and breaker changes (last 2 of 2)\n\
             \x20   2.5s ago  breaker of p/m#0: closed → open: 5 failures in a row (server)\n\
             \x20     2s ago  fallback from chat › echelon1 to chat › echelon2: breaker_open\n"
        );
    }

    #[test]
    fn cooldown_without_a_clock_says_yes_and_with_one_the_time_left() {
        let instance: InstanceDto = serde_json::from_str(
            r#"{"id": "a/b#0", "health": "healthy", "breaker": "open", "open_until": 20.0,
                "cooldown_until": 11.5}"#,
        )
        .unwrap();
        assert_eq!(instance.cooldown_cell(None), "yes");
        assert_eq!(instance.cooldown_cell(Some(10.0)), "1.5s");
        assert_eq!(instance.breaker_cell(Some(10.0)), "open 10s");
        assert_eq!(instance.breaker_cell(None), "open");
    }

    #[test]
    fn the_shared_state_line_says_where_state_lives_and_why_it_is_not_shared() {
        use echelon_application::shared_state::SharingSnapshot;
        use echelon_domain::shared::{FailMode, SharingMode};

        assert_eq!(
            SharedStateDto::of(None).line(),
            "shared state: memory (limits, cooldowns and breakers apply to this process only)"
        );
        let mut snapshot = SharingSnapshot {
            mode: SharingMode::Shared,
            fail_mode: FailMode::Closed,
            replicas: 3,
            syncs: 40,
            failures: 0,
            fallbacks: 0,
            last_error: None,
        };
        assert_eq!(
            SharedStateDto::of(Some(&snapshot)).line(),
            "shared state: redis, shared with the other replicas; 3 replicas, fail mode closed, 0 failed syncs"
        );
        snapshot.mode = SharingMode::Fallback;
        snapshot.failures = 2;
        snapshot.last_error = Some("timed out after 200ms".into());
        let dto = SharedStateDto::of(Some(&snapshot));
        assert_eq!(
            dto.line(),
            "shared state: redis, falling back to local state (Redis unreachable: timed out after 200ms); 3 replicas, fail mode closed, 2 failed syncs"
        );
        // The wire form reads back, and a newer gateway's mode does not break an older reader.
        let json = serde_json::to_value(&dto).unwrap();
        assert_eq!(json["mode"], "fallback");
        assert_eq!(json["fail_mode"], "closed");
        assert_eq!(serde_json::from_value::<SharedStateDto>(json).unwrap(), dto);
        let newer: SharedStateDto =
            serde_json::from_str(r#"{"backend":"redis","mode":"draining","fail_mode":"open"}"#)
                .unwrap();
        assert_eq!(newer.mode, SharingModeDto::Other);
        assert!(
            newer.line().contains("a mode this echelon does not know"),
            "{}",
            newer.line()
        );
    }
}
