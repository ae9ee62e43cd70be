//! The Prometheus text exposition (format 0.0.4) of the registry and of a live table snapshot.

use core::fmt::{Display, Write as _};
use std::collections::BTreeMap;
use std::sync::Arc;

use echelon_domain::error::ErrorClass;
use echelon_domain::health::HealthState;
use echelon_domain::routing::InstanceSnapshot;
use echelon_domain::shared::SharingMode;

use super::family::{Family, Histogram, LATENCY_BUCKETS};
use super::{
    BREAKER_STATES, HEALTH_STATES, LiveView, Metrics, OTHER, SKIP_REASONS, STATUS_SLOTS, get,
    status_label,
};
use echelon_application::health_check::ProbeResult;

/// Text being written, one family at a time.
struct Out {
    text: String,
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape(value: &str, into: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => into.push_str("\\\\"),
            '"' => into.push_str("\\\""),
            '\n' => into.push_str("\\n"),
            c => into.push(c),
        }
    }
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(key);
                self.text.push_str("=\"");
                escape(value, &mut self.text);
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let (cumulative, sum) = h.read();
        let bucket = format!("{name}_bucket");
        let mut with_le: Vec<(&str, &str)> = labels.to_vec();
        let bounds: Vec<String> = LATENCY_BUCKETS.iter().map(ToString::to_string).collect();
        for (i, count) in cumulative.iter().enumerate() {
            let le = bounds.get(i).map_or("+Inf", String::as_str);
            with_le.push(("le", le));
            self.sample(&bucket, &with_le, count);
            with_le.pop();
        }
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(
            &format!("{name}_count"),
            labels,
            cumulative.last().copied().unwrap_or(0),
        );
    }
}

/// Series of a family, sorted by label, the overflow series last under [`OTHER`].
fn sorted<K: Clone + Eq + core::hash::Hash, V: Default, L: Ord>(
    family: &Family<K, V>,
    label: impl Fn(&K) -> L,
    other: L,
) -> Vec<(L, Arc<V>)> {
    let (series, overflow) = family.series();
    let mut out: Vec<(L, Arc<V>)> = series.into_iter().map(|(k, v)| (label(&k), v)).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.extend(overflow.map(|v| (other, v)));
    out
}

pub(super) fn render(m: &Metrics, live: Option<LiveView<'_>>) -> String {
    let mut out = Out {
        text: String::with_capacity(16 * 1024),
    };
    requests(m, &mut out);
    instances(m, &mut out);
    stages(m, &mut out);
    operations(m, &mut out);
    if let Some(live) = live {
        live_gauges(m.cap, live, &mut out);
    }
    out.text
}

fn requests(m: &Metrics, out: &mut Out) {
    let routes = sorted(&m.routes, ToString::to_string, OTHER.to_owned());
    out.family(
        "echelon_requests_total",
        "counter",
        "Client requests answered, by route (configured name or unknown) and HTTP status.",
    );
    for (route, s) in &routes {
        for slot in 0..STATUS_SLOTS {
            let n = get(&s.statuses[slot]);
            if n > 0 {
                out.sample(
                    "echelon_requests_total",
                    &[("route", route), ("status", &status_label(slot))],
                    n,
                );
            }
        }
    }
    out.family(
        "echelon_request_errors_total",
        "counter",
        "Client requests that failed, by route and error class.",
    );
    for (route, s) in &routes {
        for (i, class) in ErrorClass::ALL.iter().enumerate() {
            let n = get(&s.classes[i]);
            if n > 0 {
                out.sample(
                    "echelon_request_errors_total",
                    &[("route", route), ("class", class.as_str())],
                    n,
                );
            }
        }
    }
    out.family(
        "echelon_request_duration_seconds",
        "histogram",
        "Time from request to the end of the answer, by route.",
    );
    for (route, s) in &routes {
        out.histogram(
            "echelon_request_duration_seconds",
            &[("route", route)],
            &s.latency,
        );
    }
    out.family(
        "echelon_time_to_first_token_seconds",
        "histogram",
        "Time from request to the first content chunk of streamed answers, by route.",
    );
    for (route, s) in &routes {
        if s.ttft.read().0.last().copied().unwrap_or(0) > 0 {
            out.histogram(
                "echelon_time_to_first_token_seconds",
                &[("route", route)],
                &s.ttft,
            );
        }
    }
}

fn instances(m: &Metrics, out: &mut Out) {
    let instances = sorted(&m.instances, ToString::to_string, OTHER.to_owned());
    out.family(
        "echelon_attempts_total",
        "counter",
        "Upstream attempts finished, by instance and outcome (success or error class).",
    );
    for (id, s) in &instances {
        for (slot, c) in s.outcomes.iter().enumerate() {
            let n = get(c);
            if n > 0 {
                let outcome = slot
                    .checked_sub(1)
                    .map_or("success", |i| ErrorClass::ALL[i].as_str());
                out.sample(
                    "echelon_attempts_total",
                    &[("instance", id), ("outcome", outcome)],
                    n,
                );
            }
        }
    }
    out.family(
        "echelon_attempt_duration_seconds",
        "histogram",
        "Duration of finished upstream attempts, by instance.",
    );
    for (id, s) in &instances {
        if s.latency.read().0.last().copied().unwrap_or(0) > 0 {
            out.histogram(
                "echelon_attempt_duration_seconds",
                &[("instance", id)],
                &s.latency,
            );
        }
    }
    type Read = fn(&super::InstanceSeries) -> u64;
    let single: [(&str, &str, Read); 3] = [
        (
            "echelon_cooldowns_total",
            "Cooldowns started or extended after a rate limit, by instance.",
            |s| get(&s.cooldowns),
        ),
        (
            "echelon_keys_dead_total",
            "Times the upstream refused an instance's key (401/403), by instance.",
            |s| get(&s.keys_dead),
        ),
        (
            "echelon_keys_revived_total",
            "Times a probe revived a dead key, by instance.",
            |s| get(&s.keys_revived),
        ),
    ];
    for (name, help, read) in single {
        out.family(name, "counter", help);
        for (id, s) in &instances {
            let n = read(s);
            if n > 0 {
                out.sample(name, &[("instance", id)], n);
            }
        }
    }
    out.family(
        "echelon_health_transitions_total",
        "counter",
        "Health state changes, by instance and new state.",
    );
    for (id, s) in &instances {
        for (i, state) in HEALTH_STATES.iter().enumerate() {
            let n = get(&s.health_to[i]);
            if n > 0 {
                out.sample(
                    "echelon_health_transitions_total",
                    &[("instance", id), ("to", state.as_str())],
                    n,
                );
            }
        }
    }
    out.family(
        "echelon_probes_total",
        "counter",
        "Active health probes, by instance and result (ok, refused, failed, timeout, rate_limited).",
    );
    for (id, s) in &instances {
        for (i, result) in ProbeResult::NAMES.iter().enumerate() {
            let n = get(&s.probes[i]);
            if n > 0 {
                out.sample(
                    "echelon_probes_total",
                    &[("instance", id), ("result", result)],
                    n,
                );
            }
        }
    }
    out.family(
        "echelon_instance_skips_total",
        "counter",
        "Times an instance was passed over, by instance and reason.",
    );
    for (id, s) in &instances {
        for (i, reason) in SKIP_REASONS.iter().enumerate() {
            let n = get(&s.skips[i]);
            if n > 0 {
                out.sample(
                    "echelon_instance_skips_total",
                    &[("instance", id), ("reason", reason)],
                    n,
                );
            }
        }
    }
    out.family(
        "echelon_breaker_transitions_total",
        "counter",
        "Circuit breaker state changes, by scope (instance or echelon), target and new state.",
    );
    for (id, s) in &instances {
        for (i, state) in BREAKER_STATES.iter().enumerate() {
            let n = get(&s.breaker_to[i]);
            if n > 0 {
                out.sample(
                    "echelon_breaker_transitions_total",
                    &[
                        ("scope", "instance"),
                        ("target", id),
                        ("to", state.as_str()),
                    ],
                    n,
                );
            }
        }
    }
    let stages = stage_series(m);
    for ((group, echelon), s) in &stages {
        let target = format!("group:{group}.{echelon}");
        for (i, state) in BREAKER_STATES.iter().enumerate() {
            let n = get(&s.breaker_to[i]);
            if n > 0 {
                out.sample(
                    "echelon_breaker_transitions_total",
                    &[
                        ("scope", "echelon"),
                        ("target", &target),
                        ("to", state.as_str()),
                    ],
                    n,
                );
            }
        }
    }
}

type StageLabels = (String, String);

fn stage_series(m: &Metrics) -> Vec<(StageLabels, Arc<super::StageSeries>)> {
    let name = |o: Option<&str>| o.unwrap_or("none").to_owned();
    sorted(
        &m.stages,
        |(g, e)| {
            (
                name(g.as_ref().map(|g| g.as_str())),
                name(e.as_ref().map(|e| e.as_str())),
            )
        },
        (OTHER.to_owned(), OTHER.to_owned()),
    )
}

fn stages(m: &Metrics, out: &mut Out) {
    let stages = stage_series(m);
    out.family(
        "echelon_fallbacks_total",
        "counter",
        "Requests that moved on from a stage to the next, by the group and echelon they left (none for pool and model routes).",
    );
    for ((group, echelon), s) in &stages {
        let n = get(&s.fallbacks);
        if n > 0 {
            out.sample(
                "echelon_fallbacks_total",
                &[("group", group), ("echelon", echelon)],
                n,
            );
        }
    }
    out.family(
        "echelon_skips_total",
        "counter",
        "Candidates passed over, by group, echelon (none outside task groups) and reason.",
    );
    for ((group, echelon), s) in &stages {
        for (i, reason) in SKIP_REASONS.iter().enumerate() {
            let n = get(&s.skips[i]);
            if n > 0 {
                out.sample(
                    "echelon_skips_total",
                    &[("group", group), ("echelon", echelon), ("reason", reason)],
                    n,
                );
            }
        }
    }
}

fn operations(m: &Metrics, out: &mut Out) {
    out.family(
        "echelon_config_reloads_total",
        "counter",
        "Configuration reloads, by result (ok: swapped in; error: refused, the old tree keeps serving).",
    );
    out.sample(
        "echelon_config_reloads_total",
        &[("result", "ok")],
        get(&m.reloads_ok),
    );
    out.sample(
        "echelon_config_reloads_total",
        &[("result", "error")],
        get(&m.reloads_failed),
    );
    let last = m.last_reload.load(core::sync::atomic::Ordering::Relaxed);
    if last > 0 {
        out.family(
            "echelon_config_last_reload_success",
            "gauge",
            "1 when the last configuration reload succeeded, 0 when it was refused.",
        );
        out.sample(
            "echelon_config_last_reload_success",
            &[],
            u8::from(last == 2),
        );
    }

    let alerts = sorted(&m.alerts, ToString::to_string, OTHER.to_owned());
    out.family(
        "echelon_alerts_firing",
        "gauge",
        "Targets for which an alert rule is firing now, by rule and level.",
    );
    for (rule, s) in &alerts {
        let level = match s.level.load(core::sync::atomic::Ordering::Relaxed) {
            0 => "info",
            1 => "warning",
            _ => "critical",
        };
        out.sample(
            "echelon_alerts_firing",
            &[("rule", rule), ("level", level)],
            s.firing.load(core::sync::atomic::Ordering::Relaxed),
        );
    }
    out.family(
        "echelon_alert_notices_total",
        "counter",
        "Alert notices sent, by rule and status (firing, resolved).",
    );
    for (rule, s) in &alerts {
        out.sample(
            "echelon_alert_notices_total",
            &[("rule", rule), ("status", "firing")],
            get(&s.fired),
        );
        out.sample(
            "echelon_alert_notices_total",
            &[("rule", rule), ("status", "resolved")],
            get(&s.resolved),
        );
    }

    if let Some(stats) = m.span_export.get() {
        out.family(
            "echelon_trace_spans_exported_total",
            "counter",
            "Spans handed to the OTLP collector.",
        );
        out.sample("echelon_trace_spans_exported_total", &[], stats.exported());
        out.family(
            "echelon_trace_spans_dropped_total",
            "counter",
            "Spans dropped instead of slowing requests, by reason (queue_full, export_failed).",
        );
        out.sample(
            "echelon_trace_spans_dropped_total",
            &[("reason", "queue_full")],
            stats.dropped_queue_full(),
        );
        out.sample(
            "echelon_trace_spans_dropped_total",
            &[("reason", "export_failed")],
            stats.dropped_export_failed(),
        );
    }
    if let Some(stats) = m.webhooks.get() {
        out.family(
            "echelon_webhook_deliveries_total",
            "counter",
            "Alert webhook deliveries, by result (delivered, failed after retries, dropped because the queue was full).",
        );
        for (result, n) in [
            ("delivered", stats.delivered()),
            ("failed", stats.failed()),
            ("dropped", stats.dropped()),
        ] {
            out.sample("echelon_webhook_deliveries_total", &[("result", result)], n);
        }
    }

    if let Some(status) = m.sharing.get() {
        let snapshot = status.snapshot();
        out.family(
            "echelon_shared_state_mode",
            "gauge",
            "1 for the mode the shared state is in: shared (syncing with Redis), fallback (Redis unreachable, local state) or memory (nothing shared).",
        );
        for mode in [
            SharingMode::Shared,
            SharingMode::Fallback,
            SharingMode::Memory,
        ] {
            out.sample(
                "echelon_shared_state_mode",
                &[("mode", mode.as_str())],
                u64::from(snapshot.mode == mode),
            );
        }
        out.family(
            "echelon_shared_state_syncs_total",
            "counter",
            "Syncs of this replica with the shared state, by result (ok, failed).",
        );
        out.sample(
            "echelon_shared_state_syncs_total",
            &[("result", "ok")],
            snapshot.syncs,
        );
        out.sample(
            "echelon_shared_state_syncs_total",
            &[("result", "failed")],
            snapshot.failures,
        );
        out.family(
            "echelon_shared_state_fallbacks_total",
            "counter",
            "Times this replica fell back to local state because the shared state was unreachable.",
        );
        out.sample(
            "echelon_shared_state_fallbacks_total",
            &[],
            snapshot.fallbacks,
        );
    }

    let connections = m.connections();
    out.family(
        "echelon_http_connections_open",
        "gauge",
        "Client connections open now.",
    );
    out.sample("echelon_http_connections_open", &[], connections.open_now());
    out.family(
        "echelon_http_connections_accepted_total",
        "counter",
        "Client connections accepted and served.",
    );
    out.sample(
        "echelon_http_connections_accepted_total",
        &[],
        connections.accepted_total(),
    );
    out.family(
        "echelon_http_connections_refused_total",
        "counter",
        "Client connections turned away because server.max_connections were open.",
    );
    out.sample(
        "echelon_http_connections_refused_total",
        &[],
        connections.refused_total(),
    );
    out.family(
        "echelon_http_connections_timed_out_total",
        "counter",
        "Client connections closed by a server timeout, by phase (tls_handshake, header, idle, body).",
    );
    for kind in super::ConnectionTimeout::ALL {
        out.sample(
            "echelon_http_connections_timed_out_total",
            &[("phase", kind.label())],
            connections.timed_out_total(kind),
        );
    }

    out.family(
        "echelon_metrics_label_overflow_total",
        "counter",
        "Observations counted under the label value other because their metric family was full.",
    );
    for (metric, n) in [
        ("routes", m.routes.overflowed()),
        ("instances", m.instances.overflowed()),
        ("stages", m.stages.overflowed()),
        ("alerts", m.alerts.overflowed()),
    ] {
        out.sample(
            "echelon_metrics_label_overflow_total",
            &[("family", metric)],
            n,
        );
    }
}

/// Gauges read from the live table. Their label sets come from the configuration; the same cap
/// as for the other families still applies (series beyond it are left out).
#[allow(clippy::cast_precision_loss, reason = "small counts")]
fn live_gauges(cap: usize, live: LiveView<'_>, out: &mut Out) {
    out.family(
        "echelon_config_generation",
        "gauge",
        "The configuration generation serving (1 at start, +1 per successful reload).",
    );
    out.sample("echelon_config_generation", &[], live.generation);

    let snapshot = live.snapshot;
    let budget = &snapshot.retry_budget;
    out.family(
        "echelon_retry_budget_left",
        "gauge",
        "Retries the fleet-wide retry budget still allows in its window.",
    );
    out.sample("echelon_retry_budget_left", &[], budget.left);
    out.family(
        "echelon_retry_budget_window_requests",
        "gauge",
        "Requests in the retry budget's window.",
    );
    out.sample("echelon_retry_budget_window_requests", &[], budget.requests);
    out.family(
        "echelon_retry_budget_window_retries",
        "gauge",
        "Retries and fallback attempts in the retry budget's window.",
    );
    out.sample("echelon_retry_budget_window_retries", &[], budget.retries);
    out.family(
        "echelon_retry_budget_refused_total",
        "counter",
        "Retries the fleet-wide retry budget refused (since the budget's policy last changed).",
    );
    out.sample("echelon_retry_budget_refused_total", &[], budget.refused);

    let mut unique: BTreeMap<String, &InstanceSnapshot> = BTreeMap::new();
    for pool in snapshot.pools.iter().chain(&snapshot.models) {
        for member in &pool.members {
            if unique.len() >= cap {
                break;
            }
            unique
                .entry(member.instance.id.to_string())
                .or_insert(&member.instance);
        }
    }

    out.family(
        "echelon_instance_in_flight",
        "gauge",
        "Upstream requests in flight, by instance.",
    );
    for (id, i) in &unique {
        out.sample(
            "echelon_instance_in_flight",
            &[("instance", id)],
            i.in_flight,
        );
    }
    out.family(
        "echelon_instance_health",
        "gauge",
        "1 for the instance's current health state (healthy, degraded, unhealthy, recovering), 0 for the others.",
    );
    for (id, i) in &unique {
        for state in [
            HealthState::Healthy,
            HealthState::Degraded,
            HealthState::Unhealthy,
            HealthState::Recovering,
        ] {
            out.sample(
                "echelon_instance_health",
                &[("instance", id), ("state", state.as_str())],
                u8::from(i.health == state),
            );
        }
    }
    out.family(
        "echelon_instance_breaker_state",
        "gauge",
        "1 for the instance breaker's current state (closed, open, half_open), 0 for the others.",
    );
    for (id, i) in &unique {
        for state in BREAKER_STATES {
            out.sample(
                "echelon_instance_breaker_state",
                &[("instance", id), ("state", state.as_str())],
                u8::from(i.breaker == state),
            );
        }
    }
    out.family(
        "echelon_instance_cooldown_remaining_seconds",
        "gauge",
        "Seconds until a rate-limited instance's cooldown ends (0 when not cooling down).",
    );
    for (id, i) in &unique {
        let remaining = i
            .cooldown_until
            .map_or(0.0, |until| (until - live.now).as_secs_f64());
        out.sample(
            "echelon_instance_cooldown_remaining_seconds",
            &[("instance", id)],
            remaining,
        );
    }
    out.family(
        "echelon_instance_key_dead",
        "gauge",
        "1 while the upstream refuses the instance's key (until a probe or reload revives it).",
    );
    for (id, i) in &unique {
        out.sample(
            "echelon_instance_key_dead",
            &[("instance", id)],
            u8::from(i.key_dead),
        );
    }
    out.family(
        "echelon_instance_available",
        "gauge",
        "1 when the instance would take a request now, 0 when it would be skipped.",
    );
    for (id, i) in &unique {
        out.sample(
            "echelon_instance_available",
            &[("instance", id)],
            u8::from(i.unavailable.is_none()),
        );
    }
    out.family(
        "echelon_instance_limiter_saturation",
        "gauge",
        "Share of a configured instance limit in use (concurrency: in flight / max_concurrency; rpm and tpm: the share of the per-minute budget spent).",
    );
    for (id, i) in &unique {
        if let Some(max) = i.limits.max_concurrency.filter(|m| *m > 0) {
            out.sample(
                "echelon_instance_limiter_saturation",
                &[("instance", id), ("limit", "concurrency")],
                f64::from(i.in_flight) / f64::from(max),
            );
        }
        for (limit, max, available) in [
            ("rpm", i.limits.rpm, i.rpm_available),
            ("tpm", i.limits.tpm, i.tpm_available),
        ] {
            if let Some(max) = max.filter(|m| *m > 0) {
                let available = f64::from(available.unwrap_or(max).min(max));
                out.sample(
                    "echelon_instance_limiter_saturation",
                    &[("instance", id), ("limit", limit)],
                    1.0 - available / f64::from(max),
                );
            }
        }
    }

    out.family(
        "echelon_pool_instances",
        "gauge",
        "Instances of a pool (pool:NAME, or provider/model for a model's implicit pool), by state (total, healthy, available).",
    );
    for pool in snapshot.pools.iter().chain(&snapshot.models).take(cap) {
        let label = pool.pool.to_string();
        for (state, n) in [
            ("total", pool.members.len()),
            ("healthy", pool.healthy),
            ("available", pool.available),
        ] {
            out.sample(
                "echelon_pool_instances",
                &[("pool", &label), ("state", state)],
                n,
            );
        }
    }

    let echelons: Vec<_> = snapshot
        .groups
        .iter()
        .flat_map(|g| g.echelons.iter().map(move |e| (g.name.as_str(), e)))
        .take(cap)
        .collect();
    out.family(
        "echelon_group_echelon_in_flight",
        "gauge",
        "Requests in flight through an echelon of a task group.",
    );
    for (group, e) in &echelons {
        out.sample(
            "echelon_group_echelon_in_flight",
            &[("group", group), ("echelon", e.name.as_str())],
            e.in_flight,
        );
    }
    out.family(
        "echelon_group_echelon_breaker_state",
        "gauge",
        "1 for the echelon breaker's current state (closed, open, half_open), 0 for the others.",
    );
    for (group, e) in &echelons {
        for state in BREAKER_STATES {
            out.sample(
                "echelon_group_echelon_breaker_state",
                &[
                    ("group", group),
                    ("echelon", e.name.as_str()),
                    ("state", state.as_str()),
                ],
                u8::from(e.breaker == state),
            );
        }
    }
    out.family(
        "echelon_group_echelon_limiter_saturation",
        "gauge",
        "Share of an echelon's configured limit in use, by limit (concurrency: in flight / concurrency_limit; rpm: used / rpm_limit).",
    );
    for (group, e) in &echelons {
        if let Some(max) = e.concurrency_limit.filter(|m| *m > 0) {
            out.sample(
                "echelon_group_echelon_limiter_saturation",
                &[
                    ("group", group),
                    ("echelon", e.name.as_str()),
                    ("limit", "concurrency"),
                ],
                f64::from(e.in_flight) / f64::from(max),
            );
        }
        if let Some(max) = e.rpm_limit.filter(|m| *m > 0) {
            let available = f64::from(e.rpm_available.unwrap_or(max).min(max));
            out.sample(
                "echelon_group_echelon_limiter_saturation",
                &[
                    ("group", group),
                    ("echelon", e.name.as_str()),
                    ("limit", "rpm"),
                ],
                1.0 - available / f64::from(max),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        escape("a\"b\\c\nd", &mut s);
        assert_eq!(s, "a\\\"b\\\\c\\nd");
    }
}
