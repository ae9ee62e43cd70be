//! `echelon demo`: the offline first run. Three fault-injecting fake upstreams on 127.0.0.1 (one
//! healthy, one flaky, one rate limited and slow), the gateway in-process in front of them with a
//! pool and a three-echelon task group, and a few clients driving traffic through its HTTP API
//! while a live view shows instances, breakers, cooldowns and fallbacks. It ends with a summary.
//!
//! Everything it starts is its own: the fakes and the gateway listen on ephemeral loopback ports,
//! the configuration tree lives in a temporary folder removed at the end, and no environment
//! variable is read.

pub mod screen;
pub mod traffic;
pub mod tree;

use echelon_domain::time::DurationText;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use echelon_application::gateway::Gateway;
use echelon_domain::routing::TableOptions;
use echelon_domain::time::Clock;
use echelon_fake_upstream::{FakeUpstream, FakeUpstreamOptions, Faults};
use echelon_infrastructure::http_client::{HttpClientSettings, build_http_client};
use tokio::sync::watch;
use tokio::task::JoinSet;

use self::screen::{DemoEvents, LiveScreen, Moment, RECENT_WINDOW};
use self::traffic::{Recorder, Tally};
use crate::api::StatusDto;
use crate::cli::table::{Table, percent};
use crate::cli::view::instances_table;

/// Faults of the healthy upstream.
pub const HEALTHY_FAULTS: &str = "latency-30ms";
/// Faults of the flaky upstream: a 500 for 30 % of requests.
pub const FLAKY_FAULTS: &str = "error-rate-30+latency-60ms";
/// Faults of the rate-limited upstream: a slow key with a quota of 20 requests per 4 s, then 429
/// with `Retry-After` until its window ends.
pub const LIMITED_FAULTS: &str = "quota-20-per-4s+latency-150ms";

/// How the demo runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoOptions {
    /// How long traffic runs.
    pub duration: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// Redraw a live view (a terminal) instead of printing a plain line every two seconds.
    pub live: bool,
}

/// What the demo did, for the closing summary.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Time the traffic ran.
    pub elapsed: Duration,
    /// Whether Ctrl-C ended it early.
    pub interrupted: bool,
    /// Concurrent clients.
    pub clients: usize,
    /// Every client-side outcome.
    pub tally: Tally,
    /// The group's echelons, in order.
    pub echelons: Vec<String>,
    /// Breakers that opened.
    pub breaker_trips: u64,
    /// Cooldowns started by 429s.
    pub cooldowns: u64,
    /// Chat requests each fake upstream received: healthy, flaky, limited.
    pub upstream_requests: [(&'static str, u64); 3],
    /// The routing state at the end.
    pub status: StatusDto,
}

impl Summary {
    /// Requests whose client saw an error (a status other than 200, an incomplete stream, no
    /// answer).
    pub fn client_visible_errors(&self) -> u64 {
        self.tally.errors
    }

    /// The summary as text.
    pub fn render(&self) -> String {
        let t = &self.tally;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "echelon demo summary: {:.1}s of traffic from {} clients through the wrapper \"{}\"{}\n",
            self.elapsed.as_secs_f64(),
            self.clients,
            tree::WRAPPER,
            if self.interrupted {
                " (stopped by Ctrl-C)"
            } else {
                ""
            }
        );
        let served_by = self
            .echelons
            .iter()
            .map(|e| {
                let n = t.by_echelon.get(e).copied().unwrap_or(0);
                format!("{e} {n} ({})", percent(n, t.served))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let latency = |pct| {
            t.percentile(pct)
                .map_or_else(|| "-".into(), |d| DurationText::approx(d).to_string())
        };
        let max = t
            .latencies
            .last()
            .copied()
            .map_or_else(|| "-".into(), |d| DurationText::approx(d).to_string());
        let upstream = self
            .upstream_requests
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut table = Table::new(["", ""]);
        table.row([
            "requests".to_owned(),
            format!("{} ({} streamed)", t.requests, t.streamed),
        ]);
        table.row([
            "served".to_owned(),
            format!("{} ({})", t.served, percent(t.served, t.requests)),
        ]);
        table.row([
            "client-visible errors".to_owned(),
            self.client_visible_errors().to_string(),
        ]);
        table.row([
            "fallbacks".to_owned(),
            format!(
                "{} requests needed more than one upstream attempt ({})",
                t.fallbacks,
                percent(t.fallbacks, t.requests)
            ),
        ]);
        table.row(["served by".to_owned(), served_by]);
        table.row([
            "latency".to_owned(),
            format!("p50 {}, p95 {}, max {max}", latency(50), latency(95)),
        ]);
        table.row(["breaker trips".to_owned(), self.breaker_trips.to_string()]);
        table.row(["429 cooldowns".to_owned(), self.cooldowns.to_string()]);
        table.row(["upstream requests".to_owned(), upstream]);
        // The header row is empty; skip it.
        let rendered = table.render(2);
        out.push_str(rendered.split_once('\n').map_or("", |(_, rest)| rest));
        if !t.errors_by_status.is_empty() {
            let by_status = t
                .errors_by_status
                .iter()
                .map(|(status, n)| {
                    if *status == 0 {
                        format!("no answer ×{n}")
                    } else {
                        format!("{status} ×{n}")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(out, "  errors by status       {by_status}");
        }
        let _ = writeln!(out, "\ninstances at the end");
        out.push_str(&instances_table(self.status.unique_instances(), self.status.now).render(2));
        if t.errors == 0 && t.requests > 0 {
            let _ = writeln!(
                out,
                "\nEvery 500, 429 and slow answer above stayed between the gateway and the upstreams: clients saw none of them."
            );
        }
        let _ = writeln!(
            out,
            "Next: `echelon serve` runs the gateway on configs/ (see README.md, \"Five-minute tour\")."
        );
        out
    }
}

/// The three fake upstreams.
#[derive(Debug)]
struct Fakes {
    healthy: FakeUpstream,
    flaky: FakeUpstream,
    limited: FakeUpstream,
}

impl Fakes {
    async fn start() -> anyhow::Result<Self> {
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let options = |faults: &str, reply: &str, seed: u64| -> anyhow::Result<_> {
            Ok(FakeUpstreamOptions {
                faults: Faults::parse(faults)?,
                reply: Some(reply.to_owned()),
                seed,
                max_hang: Duration::from_secs(10),
                shutdown_grace: Duration::from_millis(500),
                ..FakeUpstreamOptions::default()
            })
        };
        let start = |options| async move {
            FakeUpstream::start(loopback, options)
                .await
                .map_err(|e| anyhow::anyhow!("cannot start a fake upstream on 127.0.0.1: {e}"))
        };
        Ok(Self {
            healthy: start(options(
                HEALTHY_FAULTS,
                "hello from the healthy upstream",
                1,
            )?)
            .await?,
            flaky: start(options(FLAKY_FAULTS, "hello from the flaky upstream", 2)?).await?,
            limited: start(options(
                LIMITED_FAULTS,
                "hello from the limited upstream",
                3,
            )?)
            .await?,
        })
    }

    fn urls(&self) -> tree::UpstreamUrls {
        tree::UpstreamUrls {
            healthy: self.healthy.base_url(),
            flaky: self.flaky.base_url(),
            limited: self.limited.base_url(),
        }
    }

    fn requests(&self) -> [(&'static str, u64); 3] {
        [
            ("healthy", self.healthy.total_requests()),
            ("flaky", self.flaky.total_requests()),
            ("limited", self.limited.total_requests()),
        ]
    }

    async fn stop(self) {
        self.healthy.stop().await;
        self.flaky.stop().await;
        self.limited.stop().await;
    }
}

/// The routing state of an in-process gateway as the admin API shows it, with its clock.
pub fn status_of(gateway: &Gateway) -> StatusDto {
    StatusDto::of_table(&gateway.snapshot(), gateway.clock().now())
}

/// Runs the demo until `options.duration` has passed or `interrupt` resolves, then stops
/// everything it started and returns what happened.
///
/// # Errors
/// When a fake upstream, the gateway or the temporary configuration cannot be set up.
pub async fn run(
    options: DemoOptions,
    interrupt: impl Future<Output = ()>,
) -> anyhow::Result<Summary> {
    let fakes = Fakes::start().await?;
    let dir = tempfile::Builder::new()
        .prefix("echelon-demo-")
        .tempdir()
        .map_err(|e| {
            anyhow::anyhow!("cannot create a temporary folder for the demo configuration: {e}")
        })?;
    tree::write(dir.path(), &fakes.urls())?;
    // An empty environment: the demo behaves the same whatever ECHELON_* variables are set.
    let config = echelon_config::load(dir.path(), &BTreeMap::<String, String>::new())
        .map_err(|report| anyhow::anyhow!("the demo configuration does not load:\n{report}"))?;
    let echelons: Vec<String> = config
        .topology
        .task_groups
        .values()
        .flat_map(|g| g.echelons.iter().map(|e| e.name.to_string()))
        .collect();
    let events = Arc::new(DemoEvents::new());
    let build = crate::app::BuildOptions {
        table: TableOptions {
            sink: Arc::clone(&events) as Arc<dyn echelon_domain::events::EventSink>,
            ..TableOptions::default()
        },
        ..crate::app::BuildOptions::default()
    };
    let components = crate::app::build(dir.path(), config, build)?;
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let server = crate::http::start(
        listener,
        &components,
        crate::http::ServerOptions {
            max_body_size: 1 << 20,
            shutdown_grace: Duration::from_secs(2),
            ..Default::default()
        },
        std::future::pending(),
    )?;
    let gateway_url = format!("http://{}", server.addr);

    let http = build_http_client(&HttpClientSettings {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(20),
        pool_idle_timeout: Duration::from_secs(30),
        pool_max_idle_per_host: options.clients,
    })?;
    let recorder = Arc::new(Recorder::new());
    let (stop, stopped) = watch::channel(false);
    let mut clients = JoinSet::new();
    let chat_url = format!("{gateway_url}/v1/chat/completions");
    for number in 0..options.clients {
        clients.spawn(traffic::client(
            number,
            http.clone(),
            chat_url.clone(),
            tree::WRAPPER,
            Arc::clone(&recorder),
            stopped.clone(),
        ));
    }

    let mut screen = options.live.then(LiveScreen::enter);
    let refresh = if options.live {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(2)
    };
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + refresh, refresh);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let deadline = tokio::time::sleep(options.duration);
    let mut deadline = std::pin::pin!(deadline);
    let mut interrupt = std::pin::pin!(interrupt);
    if let Some(screen) = &screen {
        screen.draw(&format!("echelon demo: starting, gateway {gateway_url}"));
    }
    let interrupted = loop {
        tokio::select! {
            () = &mut deadline => break false,
            () = &mut interrupt => break true,
            _ = ticker.tick() => {
                let status = status_of(&components.gateway);
                let total = recorder.tally(None);
                let recent = recorder.tally(Some(RECENT_WINDOW));
                let moment = Moment {
                    elapsed: recorder.elapsed(),
                    duration: options.duration,
                    gateway: &gateway_url,
                    total: &total,
                    recent: &recent,
                    in_flight: recorder.in_flight(),
                    status: &status,
                    events: &events,
                    echelons: &echelons,
                };
                match &screen {
                    Some(screen) => screen.draw(&moment.frame()),
                    None => println!("{}", moment.line()),
                }
            }
        }
    };
    let elapsed = recorder.elapsed();
    if let Some(screen) = &screen {
        screen.draw("echelon demo: letting the requests in flight finish…");
    }
    // Clients finish the request they are in (each bounded by the client's timeout), then stop.
    let _ = stop.send(true);
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while clients.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        clients.abort_all();
    }
    let status = status_of(&components.gateway);
    if let Some(screen) = &mut screen {
        screen.leave();
    }
    server.shutdown().await?;
    let summary = Summary {
        elapsed,
        interrupted,
        clients: options.clients,
        tally: recorder.tally(None),
        echelons,
        breaker_trips: events.breaker_trips(),
        cooldowns: events.cooldowns(),
        upstream_requests: fakes.requests(),
        status,
    };
    fakes.stop().await;
    dir.close()?;
    Ok(summary)
}
