//! What `echelon demo` shows: the routing events worth watching, the live frame (redrawn in
//! place on a terminal), the periodic plain line (when stdout is not a terminal) and the summary.

use echelon_domain::time::DurationText;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use echelon_domain::breaker::BreakerState;
use echelon_domain::events::{Event, EventSink};
use echelon_domain::health::HealthState;

use super::traffic::Tally;
use crate::api::StatusDto;
use crate::cli::table::percent;
use crate::cli::view::{echelon_table, instances_table};

/// Most recent events kept for the live view.
const RECENT_EVENTS: usize = 8;

/// The routing events of the demo: counters, and the last few as lines for people.
#[derive(Debug)]
pub struct DemoEvents {
    started: Instant,
    breaker_trips: AtomicU64,
    cooldowns: AtomicU64,
    recent: Mutex<VecDeque<Noted>>,
}

/// An event line: when it first happened, its text, and how many times in a row.
#[derive(Debug, Clone)]
struct Noted {
    at: Duration,
    text: String,
    times: u32,
}

impl DemoEvents {
    /// No events yet; times are shown from now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            breaker_trips: AtomicU64::new(0),
            cooldowns: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_EVENTS)),
        }
    }

    /// Breakers that opened (instances and echelons).
    pub fn breaker_trips(&self) -> u64 {
        self.breaker_trips.load(Ordering::Relaxed)
    }

    /// Cooldowns started by a 429.
    pub fn cooldowns(&self) -> u64 {
        self.cooldowns.load(Ordering::Relaxed)
    }

    /// The most recent event lines, oldest first.
    pub fn recent(&self) -> Vec<String> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|n| {
                let times = if n.times > 1 {
                    format!(" (×{})", n.times)
                } else {
                    String::new()
                };
                format!("{:>6.1}s  {}{times}", n.at.as_secs_f64(), n.text)
            })
            .collect()
    }

    /// Keeps an event line; the same text again right after counts as a repeat.
    fn note(&self, text: String) {
        let at = self.started.elapsed();
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(last) = recent.back_mut()
            && last.text == text
        {
            last.times += 1;
            return;
        }
        if recent.len() == RECENT_EVENTS {
            recent.pop_front();
        }
        recent.push_back(Noted { at, text, times: 1 });
    }
}

impl Default for DemoEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl EventSink for DemoEvents {
    fn record(&self, event: &Event) {
        match event {
            Event::Breaker { scope, to, .. } => match to {
                BreakerState::Open => {
                    self.breaker_trips.fetch_add(1, Ordering::Relaxed);
                    self.note(format!("breaker of {} opened", scope));
                }
                BreakerState::Closed => {
                    self.note(format!("breaker of {} closed again", scope));
                }
                BreakerState::HalfOpen => {}
            },
            Event::Cooldown {
                instance,
                retry_after,
                ..
            } => {
                self.cooldowns.fetch_add(1, Ordering::Relaxed);
                let wait = retry_after
                    .map(|d| format!(" for {}", DurationText::approx(d)))
                    .unwrap_or_default();
                self.note(format!("{instance} answered 429: cooling down{wait}"));
            }
            Event::Health { instance, from, to } => match (from, to) {
                (_, HealthState::Unhealthy) => self.note(format!("{instance} is unhealthy")),
                (HealthState::Recovering, HealthState::Healthy) => {
                    self.note(format!("{instance} is healthy again"));
                }
                _ => {}
            },
            Event::KeyDead { instance } => {
                self.note(format!("{instance}: key refused (401/403)"));
            }
            _ => {}
        }
    }
}

/// `echelon1 0.0%  echelon2 89.5%  echelon3 10.5%` over served requests.
fn shares(tally: &Tally, echelons: &[String]) -> String {
    echelons
        .iter()
        .map(|e| {
            let n = tally.by_echelon.get(e).copied().unwrap_or(0);
            format!("{e} {}", percent(n, tally.served))
        })
        .collect::<Vec<_>>()
        .join("  ")
}

/// What clients got, by verdict: `served 310 (28 after a fallback) · 429: 0 · 502: 0 · ...`.
fn verdicts(tally: &Tally) -> String {
    let count = |status: u16| tally.errors_by_status.get(&status).copied().unwrap_or(0);
    let other: u64 = tally
        .errors_by_status
        .iter()
        .filter(|(status, _)| ![429, 502, 503, 504].contains(*status))
        .map(|(_, n)| n)
        .sum();
    format!(
        "served {} ({} after a fallback) · 429: {} · 502: {} · 503: {} · 504: {} · other: {other}",
        tally.served,
        tally.fallbacks,
        count(429),
        count(502),
        count(503),
        count(504)
    )
}

fn latency(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| DurationText::approx(d).to_string())
}

/// Everything the live view and the plain lines show at one moment.
#[derive(Debug)]
pub struct Moment<'a> {
    /// Time since the traffic started.
    pub elapsed: Duration,
    /// How long the traffic runs.
    pub duration: Duration,
    /// The gateway's address.
    pub gateway: &'a str,
    /// Every outcome so far.
    pub total: &'a Tally,
    /// Outcomes of the last few seconds.
    pub recent: &'a Tally,
    /// Requests in flight.
    pub in_flight: u64,
    /// The routing state.
    pub status: &'a StatusDto,
    /// Routing events.
    pub events: &'a DemoEvents,
    /// The group's echelons, in order.
    pub echelons: &'a [String],
}

/// How far back "recent" counts go.
pub const RECENT_WINDOW: Duration = Duration::from_secs(5);

impl Moment<'_> {
    /// The live view: totals, recent verdicts, echelons, instances, recent events.
    pub fn frame(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "echelon demo  {:.1}s of {}s  gateway {}  model \"{}\"  (Ctrl-C stops)\n",
            self.elapsed.as_secs_f64(),
            self.duration.as_secs(),
            self.gateway,
            super::tree::WRAPPER
        );
        let t = self.total;
        let _ = writeln!(
            out,
            "requests {}  served {}  client-visible errors {}  fallbacks {} ({})  in flight {}",
            t.requests,
            t.served,
            t.errors,
            t.fallbacks,
            percent(t.fallbacks, t.requests),
            self.in_flight
        );
        let r = self.recent;
        let _ = writeln!(
            out,
            "last {}s: {}  p50 {} p95 {}",
            RECENT_WINDOW.as_secs(),
            verdicts(r),
            latency(r.percentile(50)),
            latency(r.percentile(95))
        );
        let _ = writeln!(out, "served by: {}", shares(t, self.echelons));
        let now = self.status.now;
        for group in &self.status.groups {
            let _ = writeln!(
                out,
                "\ntask group {} ({})",
                group.name, group.fallback_strategy
            );
            out.push_str(&echelon_table(group, now).render(2));
        }
        let _ = writeln!(out, "\ninstances");
        out.push_str(&instances_table(self.status.unique_instances(), now).render(2));
        let _ = writeln!(
            out,
            "\nevents: {} breaker trips, {} cooldowns after a 429",
            self.events.breaker_trips(),
            self.events.cooldowns(),
        );
        for line in self.events.recent() {
            let _ = writeln!(out, "  {line}");
        }
        out
    }

    /// One plain line, for a log or a pipe.
    pub fn line(&self) -> String {
        let t = self.total;
        let mut line = format!(
            "[{:>5.1}s] requests {}, served {}, client-visible errors {}, fallbacks {}; {}",
            self.elapsed.as_secs_f64(),
            t.requests,
            t.served,
            t.errors,
            t.fallbacks,
            shares(t, self.echelons)
        );
        let mut open = Vec::new();
        let mut cooling = Vec::new();
        for i in self.status.unique_instances() {
            if i.breaker == "open" {
                open.push(i.id.as_str());
            }
            if i.cooldown_until.is_some() {
                cooling.push(i.id.as_str());
            }
        }
        if !open.is_empty() {
            let _ = write!(line, "; breaker open: {}", open.join(", "));
        }
        if !cooling.is_empty() {
            let _ = write!(line, "; cooling down: {}", cooling.join(", "));
        }
        line
    }
}

/// Redraws the live view in place on the terminal's alternate screen, and puts the terminal back
/// when dropped (also on an early return or a panic).
#[derive(Debug)]
pub struct LiveScreen {
    active: bool,
}

impl LiveScreen {
    /// Switches to the alternate screen and hides the cursor.
    pub fn enter() -> Self {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(b"\x1b[?1049h\x1b[?25l");
        let _ = stdout.flush();
        Self { active: true }
    }

    /// Draws a frame over the previous one.
    pub fn draw(&self, frame: &str) {
        let mut text = String::with_capacity(frame.len() + 256);
        text.push_str("\x1b[H");
        for line in frame.lines() {
            text.push_str(line);
            text.push_str("\x1b[K\n");
        }
        text.push_str("\x1b[J");
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }

    /// Leaves the alternate screen and shows the cursor again.
    pub fn leave(&mut self) {
        if self.active {
            self.active = false;
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(b"\x1b[?25h\x1b[?1049l");
            let _ = stdout.flush();
        }
    }
}

impl Drop for LiveScreen {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use echelon_domain::events::BreakerScope;
    use echelon_domain::name::{EchelonName, GroupName, InstanceId, ModelRef};

    use super::*;

    #[test]
    fn verdicts_count_each_error_status_and_the_rest_as_other() {
        let mut tally = Tally {
            served: 7,
            fallbacks: 2,
            ..Tally::default()
        };
        tally.errors_by_status.insert(502, 1);
        tally.errors_by_status.insert(0, 2);
        tally.errors_by_status.insert(400, 1);
        assert_eq!(
            verdicts(&tally),
            "served 7 (2 after a fallback) · 429: 0 · 502: 1 · 503: 0 · 504: 0 · other: 3"
        );
    }

    #[test]
    fn events_count_trips_and_cooldowns_and_keep_the_last_lines() {
        let events = DemoEvents::new();
        let id = InstanceId::new(ModelRef::new("flaky", "gpt-demo"), 1);
        events.record(&Event::Breaker {
            scope: BreakerScope::Instance(id.clone()),
            from: BreakerState::Closed,
            to: BreakerState::Open,
            open_until: None,
        });
        events.record(&Event::Breaker {
            scope: BreakerScope::Echelon {
                group: GroupName::new("demo"),
                echelon: EchelonName::new("echelon2"),
            },
            from: BreakerState::HalfOpen,
            to: BreakerState::Closed,
            open_until: None,
        });
        events.record(&Event::Cooldown {
            instance: id.clone(),
            until: echelon_domain::time::Instant::ZERO,
            retry_after: Some(Duration::from_secs(2)),
        });
        for _ in 0..20 {
            events.record(&Event::Health {
                instance: id.clone(),
                from: HealthState::Healthy,
                to: HealthState::Degraded,
            });
        }
        assert_eq!(events.breaker_trips(), 1);
        assert_eq!(events.cooldowns(), 1);
        let recent = events.recent();
        assert_eq!(recent.len(), 3, "healthy → degraded is not worth a line");
        assert!(recent[0].ends_with("breaker of flaky/gpt-demo#1 opened"));
        assert!(recent[1].ends_with("breaker of demo › echelon2 closed again"));
        assert!(recent[2].ends_with("flaky/gpt-demo#1 answered 429: cooling down for 2s"));
        events.record(&Event::Cooldown {
            instance: id,
            until: echelon_domain::time::Instant::ZERO,
            retry_after: Some(Duration::from_secs(2)),
        });
        let recent = events.recent();
        assert_eq!(recent.len(), 3, "a repeat counts on the same line");
        assert!(recent[2].ends_with("cooling down for 2s (×2)"));
        for n in 0..(RECENT_EVENTS + 3) {
            let instance = InstanceId::new(ModelRef::new("flaky", "gpt-demo"), n as u16);
            events.record(&Event::KeyDead { instance });
        }
        assert_eq!(events.recent().len(), RECENT_EVENTS);
    }
}
