//! The benchmark's load generator: a fixed number of keep-alive HTTP/1.1 connections, each sending
//! one request after another, a warmup and then a timed window in which every request's latency
//! (and, for streams, its time to first byte) is recorded.
//!
//! It runs on a `current_thread` runtime on its own core, so its cost does not land on the
//! process under test. A request counts as an error when the transport fails, the status is not
//! 2xx, or a stream does not end with `data: [DONE]` (a trap some gateways fall into).

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::procfs;

/// The end of every complete OpenAI stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// What each request sends.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Where to send it.
    pub addr: SocketAddr,
    /// The request path.
    pub path: &'static str,
    /// The JSON body.
    pub body: Bytes,
    /// Whether the answer is an SSE stream that must end with [`DONE`].
    pub stream: bool,
}

/// The shape of one measured phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    /// Connections, each with one request in flight at a time.
    pub connections: usize,
    /// Load before the window, not recorded: connection set-up, pools, caches.
    pub warmup: Duration,
    /// The recorded window.
    pub window: Duration,
    /// Requests per second over all connections, each connection sending on its own schedule;
    /// `None` sends each request as soon as the one before it is answered (closed loop).
    pub rate: Option<f64>,
}

/// Latency samples of one phase, in nanoseconds, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Samples(Vec<u64>);

impl Samples {
    /// Sorts the raw samples.
    pub fn new(mut nanos: Vec<u64>) -> Self {
        nanos.sort_unstable();
        Self(nanos)
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `p`-th percentile by nearest rank (`p` in 0..=100), or `None` without samples.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let n = self.0.len();
        if n == 0 {
            return None;
        }
        let rank = (p.clamp(0.0, 100.0) / 100.0 * n as f64).ceil() as usize;
        Some(Duration::from_nanos(self.0[rank.clamp(1, n) - 1]))
    }
}

/// The outcome of one phase.
#[derive(Debug, Clone, Default)]
pub struct PhaseResult {
    /// Requests that started and completed inside the window.
    pub requests: u64,
    /// Failed requests inside the window (transport, status, missing `[DONE]`).
    pub errors: u64,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
    /// The window as measured.
    pub elapsed: Duration,
    /// Whole-request latency.
    pub latency: Samples,
    /// Time to the first body byte (streams only).
    pub ttfb: Samples,
    /// CPU time of the watched process over the window.
    pub cpu: Option<Duration>,
}

impl PhaseResult {
    /// Completed requests per second.
    pub fn throughput(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.requests as f64 / seconds
        } else {
            0.0
        }
    }

    /// CPU time of the watched process per completed request.
    pub fn cpu_per_request(&self) -> Option<Duration> {
        let cpu = self.cpu?;
        (self.requests > 0).then(|| cpu.div_f64(self.requests as f64))
    }

    /// The share of one core the watched process used over the window, in percent.
    pub fn busy_percent(&self) -> Option<f64> {
        let cpu = self.cpu?;
        let seconds = self.elapsed.as_secs_f64();
        (seconds > 0.0).then(|| cpu.as_secs_f64() / seconds * 100.0)
    }
}

/// The percentiles a [`Summary`] keeps of each latency distribution.
pub const KEPT_PERCENTILES: [f64; 2] = [50.0, 99.0];

/// The [`KEPT_PERCENTILES`] of one latency distribution, each the median over rounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spread([Option<Duration>; 2]);

impl Spread {
    /// The `p`-th percentile, for `p` in [`KEPT_PERCENTILES`]; `None` for any other `p` or
    /// without samples.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let index = KEPT_PERCENTILES.iter().position(|&kept| kept == p)?;
        self.0[index]
    }

    fn of(rounds: &[&Samples]) -> Self {
        Self(KEPT_PERCENTILES.map(|p| median(rounds.iter().filter_map(|s| s.percentile(p)))))
    }
}

/// The median of some values (the upper one of an even count), or `None` without values.
fn median<T: PartialOrd + Copy>(values: impl Iterator<Item = T>) -> Option<T> {
    let mut values: Vec<T> = values.collect();
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values.get(values.len() / 2).copied()
}

/// One phase over every round of a run: each figure is the median of the rounds' figures, so a
/// round disturbed by other work on the machine does not decide the result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Rounds summarised.
    pub rounds: usize,
    /// Failed requests over every round.
    pub errors: u64,
    /// The first error seen in any round.
    pub first_error: Option<String>,
    /// Whole-request latency.
    pub latency: Spread,
    /// Time to the first body byte (streams only).
    pub ttfb: Spread,
    throughput: f64,
    cpu_per_request: Option<Duration>,
    busy_percent: Option<f64>,
}

impl Summary {
    /// Summarises the rounds of one phase.
    pub fn of(rounds: &[PhaseResult]) -> Self {
        Self {
            rounds: rounds.len(),
            errors: rounds.iter().map(|r| r.errors).sum(),
            first_error: rounds.iter().find_map(|r| r.first_error.clone()),
            latency: Spread::of(&rounds.iter().map(|r| &r.latency).collect::<Vec<_>>()),
            ttfb: Spread::of(&rounds.iter().map(|r| &r.ttfb).collect::<Vec<_>>()),
            throughput: median(rounds.iter().map(PhaseResult::throughput)).unwrap_or(0.0),
            cpu_per_request: median(rounds.iter().filter_map(PhaseResult::cpu_per_request)),
            busy_percent: median(rounds.iter().filter_map(PhaseResult::busy_percent)),
        }
    }

    /// Completed requests per second.
    pub fn throughput(&self) -> f64 {
        self.throughput
    }

    /// CPU time of the watched process per completed request.
    pub fn cpu_per_request(&self) -> Option<Duration> {
        self.cpu_per_request
    }

    /// The share of one core the watched process used, in percent.
    pub fn busy_percent(&self) -> Option<f64> {
        self.busy_percent
    }
}

/// Where a phase is: warming up, recording, or over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Warmup,
    Window,
    Over,
}

#[derive(Debug, Default)]
struct WorkerTally {
    latency: Vec<u64>,
    ttfb: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs one phase on the current (single-threaded) runtime. `watched` is the process whose CPU
/// time is charged to the window. Call inside a [`tokio::task::LocalSet`].
pub async fn run(
    workload: &Workload,
    phase: Phase,
    watched: Option<u32>,
    ticks: u64,
) -> Result<PhaseResult> {
    if phase.connections == 0 {
        bail!("a phase needs at least one connection");
    }
    let stage = Rc::new(Cell::new(Stage::Warmup));
    let mut workers = Vec::with_capacity(phase.connections);
    let start = tokio::time::Instant::now();
    for index in 0..phase.connections {
        let sender = connect(workload.addr).await?;
        let stage = Rc::clone(&stage);
        let workload = workload.clone();
        let pace = pace(phase, index, start);
        workers.push(tokio::task::spawn_local(worker(
            sender, workload, stage, pace,
        )));
    }
    tokio::time::sleep(phase.warmup).await;
    let cpu_before = watched
        .map(|pid| procfs::cpu_time(pid, ticks))
        .transpose()?;
    let started = Instant::now();
    stage.set(Stage::Window);
    tokio::time::sleep(phase.window).await;
    stage.set(Stage::Over);
    let elapsed = started.elapsed();
    let cpu_after = watched
        .map(|pid| procfs::cpu_time(pid, ticks))
        .transpose()?;
    let mut result = PhaseResult {
        elapsed,
        cpu: cpu_before
            .zip(cpu_after)
            .map(|(before, after)| after.saturating_sub(before)),
        ..PhaseResult::default()
    };
    let mut latency = Vec::new();
    let mut ttfb = Vec::new();
    for worker in workers {
        let tally = worker.await.context("a load worker panicked")?;
        latency.extend(tally.latency);
        ttfb.extend(tally.ttfb);
        result.errors += tally.errors;
        if result.first_error.is_none() {
            result.first_error = tally.first_error;
        }
    }
    result.latency = Samples::new(latency);
    result.requests = result.latency.len() as u64;
    result.ttfb = Samples::new(ttfb);
    Ok(result)
}

/// Sends one request and checks its answer like a measured one (status, `[DONE]` at the end of
/// a stream); returns the whole body. The readiness probe before measuring.
pub async fn probe(workload: &Workload) -> Result<Bytes> {
    let mut sender = connect(workload.addr).await?;
    sender.ready().await?;
    let response = sender.send_request(request(workload)?).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("status {status}: {}", String::from_utf8_lossy(&body));
    }
    if workload.stream && !body.ends_with(DONE) {
        bail!("the stream did not end with `data: [DONE]`");
    }
    Ok(body)
}

fn request(workload: &Workload) -> Result<Request<Full<Bytes>>> {
    Ok(Request::post(workload.path)
        .header(header::HOST, HeaderValue::from_static("127.0.0.1"))
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
        .body(Full::new(workload.body.clone()))?)
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(tcp)).await?;
    tokio::task::spawn_local(async move {
        // A connection error surfaces on the next request of its sender.
        let _ = connection.await;
    });
    Ok(sender)
}

/// When one connection of a paced phase sends: its first slot, and the time between slots.
#[derive(Debug, Clone, Copy)]
struct Pace {
    next: tokio::time::Instant,
    interval: Duration,
}

/// The schedule of connection `index`: with `n` connections sharing `rate`, each sends every
/// `n / rate` seconds, the connections staggered evenly over that interval.
fn pace(phase: Phase, index: usize, start: tokio::time::Instant) -> Option<Pace> {
    let rate = phase.rate.filter(|r| r.is_finite() && *r > 0.0)?;
    let interval = Duration::from_secs_f64(phase.connections as f64 / rate);
    let offset = interval.mul_f64(index as f64 / phase.connections as f64);
    Some(Pace {
        next: start + offset,
        interval,
    })
}

async fn worker(
    mut sender: SendRequest<Full<Bytes>>,
    workload: Workload,
    stage: Rc<Cell<Stage>>,
    mut pace: Option<Pace>,
) -> WorkerTally {
    let mut tally = WorkerTally::default();
    loop {
        if let Some(pace) = &mut pace {
            tokio::time::sleep_until(pace.next).await;
            // A late answer does not make the next requests burst to catch up.
            pace.next = (pace.next + pace.interval).max(tokio::time::Instant::now());
        }
        let at_start = stage.get();
        if at_start == Stage::Over {
            return tally;
        }
        let started = Instant::now();
        let outcome = exchange(&mut sender, &workload).await;
        let elapsed = started.elapsed();
        let counted = at_start == Stage::Window && stage.get() == Stage::Window;
        match outcome {
            Ok(first_byte) => {
                if counted {
                    tally.latency.push(nanos(elapsed));
                    if let Some(first_byte) = first_byte {
                        tally.ttfb.push(nanos(first_byte));
                    }
                }
            }
            Err(error) => {
                if counted {
                    tally.errors += 1;
                    tally
                        .first_error
                        .get_or_insert_with(|| format!("{error:#}"));
                }
                // The connection may be gone: start a fresh one, pausing so that a server that
                // refuses everything is not hammered in a tight loop.
                tokio::time::sleep(Duration::from_millis(10)).await;
                match connect(workload.addr).await {
                    Ok(fresh) => sender = fresh,
                    Err(error) => {
                        tally
                            .first_error
                            .get_or_insert_with(|| format!("{error:#}"));
                        tally.errors += 1;
                        return tally;
                    }
                }
            }
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// One request and its whole answer. Returns the time to the first body byte for streams.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    workload: &Workload,
) -> Result<Option<Duration>> {
    let started = Instant::now();
    let request = request(workload)?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let mut body = response.into_body();
    let mut first_byte = None;
    let mut tail = Tail::default();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref()
            && !data.is_empty()
        {
            first_byte.get_or_insert_with(|| started.elapsed());
            tail.push(data);
        }
    }
    if !status.is_success() {
        bail!("status {status}: {}", String::from_utf8_lossy(tail.bytes()));
    }
    if workload.stream {
        if !tail.bytes().ends_with(DONE) {
            bail!("the stream did not end with `data: [DONE]`");
        }
        return Ok(first_byte);
    }
    Ok(None)
}

/// The last bytes of a body, enough to check its ending or quote an error's end.
#[derive(Debug, Default)]
struct Tail(Vec<u8>);

impl Tail {
    const KEEP: usize = 256;

    fn push(&mut self, data: &[u8]) {
        if data.len() >= Self::KEEP {
            self.0.clear();
            self.0.extend_from_slice(&data[data.len() - Self::KEEP..]);
        } else {
            let overflow = (self.0.len() + data.len()).saturating_sub(Self::KEEP);
            self.0.drain(..overflow);
            self.0.extend_from_slice(data);
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::Response;
    use hyper::body::Frame;
    use hyper::server::conn::http1 as server_http1;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let samples = Samples::new((1..=100).rev().collect());
        assert_eq!(samples.len(), 100);
        assert_eq!(samples.percentile(50.0), Some(Duration::from_nanos(50)));
        assert_eq!(samples.percentile(99.0), Some(Duration::from_nanos(99)));
        assert_eq!(samples.percentile(100.0), Some(Duration::from_nanos(100)));
        assert_eq!(samples.percentile(0.0), Some(Duration::from_nanos(1)));
        let one = Samples::new(vec![7]);
        assert_eq!(one.percentile(99.0), Some(Duration::from_nanos(7)));
        assert_eq!(Samples::default().percentile(50.0), None);
    }

    #[test]
    fn rates_and_cpu_per_request() {
        let result = PhaseResult {
            requests: 500,
            elapsed: Duration::from_secs(2),
            cpu: Some(Duration::from_millis(10)),
            ..PhaseResult::default()
        };
        assert!((result.throughput() - 250.0).abs() < 1e-9);
        assert_eq!(result.cpu_per_request(), Some(Duration::from_micros(20)));
        assert!((result.busy_percent().unwrap() - 0.5).abs() < 1e-9);
        let idle = PhaseResult::default();
        assert_eq!(idle.throughput(), 0.0);
        assert_eq!(idle.cpu_per_request(), None);
    }

    #[test]
    fn summaries_take_the_median_round() {
        let round =
            |latency_us: &[u64], requests: u64, cpu_ms: u64, error: Option<&str>| PhaseResult {
                requests,
                errors: u64::from(error.is_some()),
                first_error: error.map(str::to_owned),
                elapsed: Duration::from_secs(1),
                latency: Samples::new(latency_us.iter().map(|us| us * 1000).collect()),
                ttfb: Samples::default(),
                cpu: Some(Duration::from_millis(cpu_ms)),
            };
        let summary = Summary::of(&[
            round(&[100, 900], 1000, 500, None),
            round(&[300, 300], 3000, 600, Some("status 502")),
            round(&[200, 400], 2000, 900, None),
        ]);
        assert_eq!(summary.rounds, 3);
        assert_eq!(summary.errors, 1);
        assert_eq!(summary.first_error.as_deref(), Some("status 502"));
        assert_eq!(
            summary.latency.percentile(50.0),
            Some(Duration::from_micros(200))
        );
        assert_eq!(
            summary.latency.percentile(99.0),
            Some(Duration::from_micros(400))
        );
        assert_eq!(summary.latency.percentile(90.0), None);
        assert_eq!(summary.ttfb.percentile(50.0), None);
        assert!((summary.throughput() - 2000.0).abs() < 1e-9);
        // 500 µs, 200 µs and 450 µs of CPU per request: the median is 450 µs.
        assert_eq!(summary.cpu_per_request(), Some(Duration::from_micros(450)));
        assert!((summary.busy_percent().unwrap() - 60.0).abs() < 1e-9);
        assert_eq!(Summary::of(&[]).throughput(), 0.0);
    }

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut tail = Tail::default();
        tail.push(b"data: {}\n\n");
        tail.push(&[b'x'; 300]);
        tail.push(DONE);
        assert_eq!(tail.bytes().len(), Tail::KEEP);
        assert!(tail.bytes().ends_with(DONE));
        assert!(tail.bytes().starts_with(b"xxx"));
    }

    /// A server that answers every request with `events` SSE frames, then `[DONE]` when
    /// `done` is set.
    async fn sse_server(events: usize, done: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::task::spawn_local(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                tokio::task::spawn_local(async move {
                    let service = service_fn(move |_request| async move {
                        let mut frames: std::collections::VecDeque<Bytes> = (0..events)
                            .map(|_| Bytes::from_static(b"data: {}\n\n"))
                            .collect();
                        if done {
                            frames.push_back(Bytes::from_static(DONE));
                        }
                        Ok::<_, Infallible>(Response::new(Frames(frames)))
                    });
                    let _ = server_http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        addr
    }

    /// A body that yields its frames one by one, each its own write.
    struct Frames(std::collections::VecDeque<Bytes>);

    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            std::task::Poll::Ready(self.0.pop_front().map(|data| Ok(Frame::data(data))))
        }
    }

    fn workload(addr: SocketAddr) -> Workload {
        Workload {
            addr,
            path: "/v1/chat/completions",
            body: Bytes::from_static(b"{}"),
            stream: true,
        }
    }

    #[test]
    fn a_phase_counts_streams_and_their_first_bytes() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        let result = local.block_on(&runtime, async {
            let addr = sse_server(3, true).await;
            let phase = Phase {
                connections: 4,
                warmup: Duration::from_millis(20),
                window: Duration::from_millis(100),
                rate: None,
            };
            let pid = std::process::id();
            run(&workload(addr), phase, Some(pid), procfs::clock_ticks())
                .await
                .unwrap()
        });
        assert_eq!(result.errors, 0, "{:?}", result.first_error);
        assert!(result.requests > 0);
        assert_eq!(result.latency.len() as u64, result.requests);
        assert_eq!(result.ttfb.len() as u64, result.requests);
        assert!(result.ttfb.percentile(50.0) <= result.latency.percentile(50.0));
        assert!(result.cpu.is_some());
    }

    #[test]
    fn paced_connections_share_the_rate_staggered() {
        let phase = Phase {
            connections: 4,
            warmup: Duration::from_millis(100),
            window: Duration::from_secs(1),
            rate: Some(200.0),
        };
        let start = tokio::time::Instant::now();
        let slots: Vec<Pace> = (0..4).map(|i| pace(phase, i, start).unwrap()).collect();
        assert!(
            slots
                .iter()
                .all(|p| p.interval == Duration::from_millis(20))
        );
        assert_eq!(slots[1].next - start, Duration::from_millis(5));
        assert_eq!(slots[3].next - start, Duration::from_millis(15));
        let closed = Phase {
            rate: None,
            ..phase
        };
        assert!(pace(closed, 0, start).is_none());
    }

    #[test]
    fn a_stream_without_done_is_an_error() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async {
            let addr = sse_server(3, false).await;
            let error = probe(&workload(addr)).await.unwrap_err();
            assert_eq!(
                error.to_string(),
                "the stream did not end with `data: [DONE]`"
            );
            let good = sse_server(2, true).await;
            let body = probe(&workload(good)).await.unwrap();
            assert_eq!(&body[..], b"data: {}\n\ndata: {}\n\ndata: [DONE]\n\n");
        });
    }
}
