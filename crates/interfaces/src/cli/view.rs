//! What the command line shows of the admin API's JSON (`/admin/route`, `/admin/status`): client-side
//! views that read the JSON leniently, and their rendering as text tables.
//!
//! The same views serve a running gateway (over HTTP) and an in-process one (`route explain`
//! offline, `echelon demo`): the domain value is serialized to JSON and read back, so there is one
//! renderer and it is tested against the real serialization.
//!
//! Instants in that JSON are seconds on the gateway's monotonic clock. A remaining time (cooldown,
//! open breaker) can only be shown when the JSON also says what time it is (`now`); without it
//! the state is shown without the countdown.

use echelon_domain::time::DurationText;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Deserialize;

use super::table::{Table, percent};

/// A pool or a model, as the domain's `PoolLabel` serializes (`{"Pool": "fast"}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub enum LabelView {
    /// `pool:NAME`.
    Pool(String),
    /// `provider/model`.
    Model(String),
}

impl std::fmt::Display for LabelView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pool(name) => write!(f, "pool:{name}"),
            Self::Model(model) => f.write_str(model),
        }
    }
}

/// Why a candidate or an echelon is out (the domain's `SkipReason` / `Unavailable`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SkipView {
    /// The stable name: `cooling_down`, `breaker_open`, `unhealthy`, `key_dead`, `saturated`,
    /// `already_tried`, `provider_failed`, `context_window_too_small`, `attempts_spent`, `cycle`,
    /// `no_instances`.
    pub kind: String,
    /// End of a cooldown, rest or open breaker, on the gateway's clock.
    #[serde(default)]
    pub until: Option<f64>,
    /// For `saturated`: `requests`, `tokens` or `concurrency`.
    #[serde(default)]
    pub limit: Option<String>,
    /// For `saturated`: when capacity returns.
    #[serde(default)]
    pub retry_in: Option<Duration>,
    /// For `provider_failed`.
    #[serde(default)]
    pub provider: Option<String>,
}

impl SkipView {
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
                    Some("requests") => "rpm",
                    Some("tokens") => "tpm",
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

/// The dry run of a route (the domain's `Explanation`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ExplanationView {
    /// `wrapper › target`.
    pub route: String,
    /// The hard cap on upstream attempts.
    pub max_attempts: u32,
    /// Stages in the order a plan walks them.
    pub stages: Vec<StageView>,
    /// Fallback references dropped as cycles.
    #[serde(default)]
    pub cycles: Vec<String>,
    /// The immediate answer when nothing could serve now.
    #[serde(default)]
    pub verdict: Option<VerdictView>,
    /// The gateway's clock when the plan was made, when known.
    #[serde(default)]
    pub now: Option<f64>,
}

/// One stage of a plan.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StageView {
    /// `group › echelon`, `pool:NAME` or `provider/model`.
    pub label: String,
    /// Why the whole echelon is out, if it is.
    #[serde(default)]
    pub echelon_skip: Option<SkipView>,
    /// Its pools and models.
    pub targets: Vec<TargetView>,
}

/// One pool or model of a stage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TargetView {
    /// The pool or model.
    pub target: LabelView,
    /// Its rotation strategy.
    pub rotation: String,
    /// Instances it tries per request.
    pub attempts: u32,
    /// Its instances.
    pub candidates: Vec<CandidateView>,
}

/// One instance of a target.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CandidateView {
    /// `provider/model#key`.
    pub instance: String,
    /// Its weight in the pool.
    pub weight: u64,
    /// Health state.
    pub health: String,
    /// Breaker state.
    pub breaker: String,
    /// Requests in flight.
    pub in_flight: u32,
    /// Why it is out; `None` when it is in.
    #[serde(default)]
    pub skip: Option<SkipView>,
}

/// The immediate answer of a route that cannot serve now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct VerdictView {
    /// 429 or 503.
    pub status: u16,
    /// The Retry-After it would carry.
    #[serde(default)]
    pub retry_after: Option<Duration>,
}

impl ExplanationView {
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
                    target.target,
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

/// Totals of a routing element (the domain's `Stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct StatsView {
    /// Upstream attempts started.
    pub attempts: u64,
    /// Attempts that succeeded.
    pub successes: u64,
    /// Attempts that failed.
    pub failures: u64,
    /// Of the failures, the 429s.
    pub rate_limited: u64,
    /// Times a request moved on from here to a fallback.
    pub fallbacks: u64,
    /// Times this element was passed over.
    pub skips: u64,
}

/// Latency figures of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct LatencyView {
    /// Exponentially weighted mean latency.
    pub ewma: Option<Duration>,
    /// Samples taken.
    pub samples: u64,
}

/// One instance's live state.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InstanceView {
    /// `provider/model#key`.
    pub id: String,
    /// Health state.
    pub health: String,
    /// Breaker state.
    pub breaker: String,
    /// When an open breaker admits trials.
    #[serde(default)]
    pub open_until: Option<f64>,
    /// End of a running cooldown.
    #[serde(default)]
    pub cooldown_until: Option<f64>,
    /// Whether the key is dead.
    #[serde(default)]
    pub key_dead: bool,
    /// Requests in flight.
    #[serde(default)]
    pub in_flight: u32,
    /// Latency figures.
    #[serde(default)]
    pub latency: LatencyView,
    /// Totals.
    #[serde(default)]
    pub stats: StatsView,
}

/// A pool member.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MemberView {
    /// Its weight.
    pub weight: u64,
    /// Its state.
    pub instance: InstanceView,
}

/// A pool's live state.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PoolView {
    /// The pool, or the model of a direct route.
    pub pool: LabelView,
    /// Its rotation.
    pub rotation: String,
    /// Members that would be picked now.
    pub available: usize,
    /// Members in the healthy state.
    pub healthy: usize,
    /// Its members.
    pub members: Vec<MemberView>,
}

/// An echelon's live state.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EchelonView {
    /// Its name.
    pub name: String,
    /// Its priority.
    pub priority: u32,
    /// Its breaker.
    pub breaker: String,
    /// When an open breaker admits trials.
    #[serde(default)]
    pub open_until: Option<f64>,
    /// Requests in flight.
    #[serde(default)]
    pub in_flight: u32,
    /// Its concurrency limit.
    #[serde(default)]
    pub concurrency_limit: Option<u32>,
    /// Its rpm limit.
    #[serde(default)]
    pub rpm_limit: Option<u32>,
    /// Its targets.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Totals.
    #[serde(default)]
    pub stats: StatsView,
}

/// A task group's live state.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GroupView {
    /// Its name.
    pub name: String,
    /// How it walks its echelons.
    pub fallback_strategy: String,
    /// Echelons in priority order.
    pub echelons: Vec<EchelonView>,
}

/// The last configuration reload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReloadView {
    /// What started it.
    pub trigger: String,
    /// Whether it is serving.
    pub applied: bool,
    /// Seconds since the Unix epoch.
    pub at_unix: u64,
    /// Problems that refused it.
    #[serde(default)]
    pub errors: Vec<String>,
}

/// Reload counters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct ReloadsView {
    /// Reloads applied.
    pub applied: u64,
    /// Reloads refused.
    pub rejected: u64,
    /// The most recent one.
    pub last: Option<ReloadView>,
}

/// One entry of the gateway's recent history (fallbacks and breaker transitions, with reasons).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HistoryView {
    /// A request moved on from one stage to the next.
    Fallback {
        /// When, on the gateway's clock.
        at: f64,
        /// The group it left.
        #[serde(default)]
        group: Option<String>,
        /// The echelon it left.
        #[serde(default)]
        from: Option<String>,
        /// The stage it moved to.
        to: String,
        /// Why, as far as the gateway can tell.
        #[serde(default)]
        reason: String,
    },
    /// A breaker changed state.
    Breaker {
        /// When, on the gateway's clock.
        at: f64,
        /// An instance, or `group › echelon`.
        scope: String,
        /// Before.
        from: String,
        /// After.
        to: String,
        /// Why, as far as the gateway can tell.
        #[serde(default)]
        reason: String,
    },
    /// An entry this version of the command line does not know.
    #[serde(other)]
    Other,
}

impl HistoryView {
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

/// `GET /admin/status`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StatusView {
    /// The configuration generation serving.
    #[serde(default)]
    pub generation: u64,
    /// Reloads.
    #[serde(default)]
    pub config: ReloadsView,
    /// Named pools.
    #[serde(default)]
    pub pools: Vec<PoolView>,
    /// Implicit pools of direct model routes.
    #[serde(default)]
    pub models: Vec<PoolView>,
    /// Task groups.
    #[serde(default)]
    pub groups: Vec<GroupView>,
    /// The gateway's clock, when known.
    #[serde(default)]
    pub now: Option<f64>,
    /// Recent fallbacks and breaker transitions, oldest first.
    #[serde(default)]
    pub history: Vec<HistoryView>,
}

impl InstanceView {
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
    instances: impl IntoIterator<Item = &'a InstanceView>,
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
pub fn echelon_table(group: &GroupView, now: Option<f64>) -> Table {
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

impl StatusView {
    /// Every instance once (an instance can be in a named pool and behind a direct model
    /// route), in the order pools and models list them.
    pub fn unique_instances(&self) -> Vec<&InstanceView> {
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
            let (heading, name) = match &pool.pool {
                LabelView::Pool(name) => ("pool", name),
                LabelView::Model(model) => ("model", model),
            };
            let _ = write!(
                out,
                "\n{heading} {name} ({}): {} of {} available, {} healthy",
                pool.rotation,
                pool.available,
                pool.members.len(),
                pool.healthy
            );
            let new: Vec<&InstanceView> = pool
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

/// Reads a view from JSON text the way the admin API writes it. A domain enum nested in another
/// internally tagged enum writes its `kind` twice; reading into a `Value` first keeps the inner
/// one, which is the more precise.
///
/// # Errors
/// When the text is not JSON of the expected shape.
pub fn from_json<T: serde::de::DeserializeOwned>(text: &[u8]) -> Result<T, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_slice(text)?;
    serde_json::from_value(value)
}

/// Reads a view from a serializable domain value (an in-process gateway).
///
/// # Errors
/// When the value's shape does not match the view.
pub fn from_domain<T: serde::de::DeserializeOwned, V: serde::Serialize>(
    value: &V,
) -> Result<T, serde_json::Error> {
    serde_json::from_value(serde_json::to_value(value)?)
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
            let json = serde_json::to_vec(&reason).unwrap();
            let view: SkipView = from_json(&json).unwrap();
            assert_eq!(
                view.describe(Some(10.0)),
                text,
                "{}",
                String::from_utf8_lossy(&json)
            );
            let view: SkipView = from_domain(&reason).unwrap();
            assert_eq!(view.describe(Some(10.0)), text);
        }
    }

    #[test]
    fn status_lists_an_instance_once_even_when_a_model_route_shares_it() {
        let instance = r#"{"id": "p/m#0", "health": "healthy", "breaker": "closed",
            "cooldown_until": 12.0, "latency": {"ewma": {"secs": 0, "nanos": 5000000}},
            "stats": {"attempts": 4, "successes": 3, "failures": 1}}"#;
        let json = format!(
            r#"{{"generation": 2, "config": {{"applied": 1, "rejected": 0}},
            "pools": [{{"pool": {{"Pool": "fast"}}, "rotation": "round_robin", "available": 1,
                "healthy": 1, "members": [{{"weight": 1, "instance": {instance}}}]}}],
            "models": [{{"pool": {{"Model": "p/m"}}, "rotation": "round_robin", "available": 1,
                "healthy": 1, "members": [{{"weight": 1, "instance": {instance}}}]}}],
            "groups": [], "now": 10.0, "history": [
                {{"kind": "breaker", "at": 7.5, "scope": "p/m#0", "from": "closed", "to": "open",
                  "open_until": 9.5, "reason": "5 failures in a row (server)"}},
                {{"kind": "fallback", "at": 8.0, "group": "chat", "from": "echelon1",
                  "to": "chat › echelon2", "reason": "breaker_open"}},
                {{"kind": "something_new", "at": 9.0}}]}}"#
        );
        let view: StatusView = from_json(json.as_bytes()).unwrap();
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
        let instance = InstanceView {
            id: "a/b#0".into(),
            health: "healthy".into(),
            breaker: "open".into(),
            open_until: Some(20.0),
            cooldown_until: Some(11.5),
            key_dead: false,
            in_flight: 0,
            latency: LatencyView::default(),
            stats: StatsView::default(),
        };
        assert_eq!(instance.cooldown_cell(None), "yes");
        assert_eq!(instance.cooldown_cell(Some(10.0)), "1.5s");
        assert_eq!(instance.breaker_cell(Some(10.0)), "open 10s");
        assert_eq!(instance.breaker_cell(None), "open");
    }
}
