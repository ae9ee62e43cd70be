//! `cargo xtask bench`: what one HTTP hop through Echelon costs, against a direct call and a bare
//! hyper proxy, in one run on the same pinned core and the same fake upstream (issue #6).
//!
//! This binary is its own workspace member, so that xtask, which `cargo xtask check` builds first,
//! carries no runtime and no HTTP stack. `cargo xtask bench` builds it in release and runs it in
//! the workspace root; it builds the release `echelon` binary and drives it as separate
//! processes, never linking the workspace crates. The process under test (the bare proxy, then
//! Echelon) runs alone on one core (`taskset -c 1`); the fake upstream (`echelon mock-upstream`)
//! and this process, which generates the load, share the other. Each target runs four phases:
//! non-streaming at c=1 and c=N, streaming at c=1 and c=N. `cargo xtask bench domain` (handled by
//! xtask itself) runs the domain's criterion benches.

mod config;
mod load;
mod procfs;
mod proxy;
mod report;

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;

use self::load::{Phase, PhaseResult, Summary, Workload};
use self::report::{Report, TargetRun};

/// Help for `cargo xtask bench`.
pub const USAGE: &str = "\
usage: cargo xtask bench [OPTIONS]       the gateway benchmark (about 2 minutes by default)
       cargo xtask bench domain [ARGS..] the domain's criterion benches (cargo bench -p echelon-domain)

Measures a direct call to the fake upstream, a bare hyper proxy and Echelon routing to a
two-instance pool, each pinned to the same core, and prints c=1 latency, c=N throughput and CPU
per request, streaming time to first byte and throughput, and memory.

options:
  --seconds S        recorded window of each phase (default 2)
  --warmup S         unrecorded load before each window (default 0.5)
  --connections N    connections of the loaded phases (default 64)
  --rounds N         times each phase runs, the targets taking turns; every figure is the
                     median over the rounds (default 3)
  --paced-rate R     offered load of the paced phase, in requests/s over the c=N connections:
                     CPU per request of the proxy and Echelon at the same load (default 5000)
  --gateway-cpu N    the core of the process under test (default 1)
  --driver-cpu N     the core of the load generator and the fake upstream (default 0)
  --no-build         use the release builds of echelon and the benchmark as they are
  --no-realtime      run at normal priority (by default every process of the run gets the
                     real-time round-robin policy, so that builds and tests running on the same
                     machine cannot preempt it; that needs root or CAP_SYS_NICE)
  --echelon-env K=V  extra environment of the Echelon process, for experiments (repeatable),
                     e.g. LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2
  --state B          Echelon's [state] backend: memory (default) or redis, which starts a
                     redis-server of its own on the driver core (persistence off) and shares
                     the keys' rpm budgets through it; compare the two runs' CPU per request
  --write            replace the generated part of docs/performance.md with this run";

/// The target whose figures are checked, and the one it is checked against.
const SUBJECT: &str = "echelon";
const FLOOR: &str = "bare proxy";

/// The user message; the fake upstream echoes it back, one SSE event per word.
const PROMPT: &str =
    "Reply with a short friendly greeting of exactly twelve words for the benchmark";

/// The real-time priority of the benchmark's processes (1 is the lowest, 99 the highest).
const REALTIME_PRIORITY: u32 = 10;

/// How long a started process may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Options of the gateway benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Recorded window of each phase.
    pub window: Duration,
    /// Unrecorded load before each window.
    pub warmup: Duration,
    /// Connections of the loaded phases.
    pub connections: usize,
    /// How many times every phase runs; figures are medians over the rounds.
    pub rounds: usize,
    /// The offered load of the paced phase, in requests per second.
    pub paced_rate: f64,
    /// The core of the process under test.
    pub gateway_cpu: usize,
    /// The core of the load generator and the fake upstream.
    pub driver_cpu: usize,
    /// Skip `cargo build --release`.
    pub no_build: bool,
    /// Run every process of the benchmark under the real-time round-robin policy.
    pub realtime: bool,
    /// Update `docs/performance.md`.
    pub write: bool,
    /// Extra environment of the Echelon process, for experiments (an allocator through
    /// `LD_PRELOAD`, `TOKIO_WORKER_THREADS`).
    pub echelon_env: Vec<(String, String)>,
    /// Run Echelon with `[state] backend = "redis"` against a redis-server of the run's own.
    pub redis: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(2),
            warmup: Duration::from_millis(500),
            connections: 64,
            rounds: 3,
            paced_rate: 5000.0,
            gateway_cpu: 1,
            driver_cpu: 0,
            no_build: false,
            realtime: true,
            write: false,
            echelon_env: Vec::new(),
            redis: false,
        }
    }
}

fn seconds(flag: &str, value: &str) -> Result<Duration> {
    let s: f64 = value
        .parse()
        .with_context(|| format!("`{flag} {value}`: not a number of seconds"))?;
    ensure!(
        s.is_finite() && s > 0.0 && s <= 3600.0,
        "`{flag} {value}`: must be more than 0 and at most 3600 seconds"
    );
    Ok(Duration::from_secs_f64(s))
}

fn rate(flag: &str, value: &str) -> Result<f64> {
    let rate: f64 = value
        .parse()
        .with_context(|| format!("`{flag} {value}`: not a number of requests per second"))?;
    ensure!(
        rate.is_finite() && (1.0..=1e7).contains(&rate),
        "`{flag} {value}`: must be between 1 and 10000000 requests per second"
    );
    Ok(rate)
}

fn number(flag: &str, value: &str) -> Result<usize> {
    value
        .parse()
        .with_context(|| format!("`{flag} {value}`: not a whole number"))
}

impl Options {
    /// Parses the arguments after `bench`.
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self::default();
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .map(String::as_str)
                    .with_context(|| format!("`{flag}` needs a value"))
            };
            match flag.as_str() {
                "--seconds" => options.window = seconds(flag, value()?)?,
                "--warmup" => options.warmup = seconds(flag, value()?)?,
                "--connections" => options.connections = number(flag, value()?)?,
                "--rounds" => options.rounds = number(flag, value()?)?,
                "--paced-rate" => options.paced_rate = rate(flag, value()?)?,
                "--gateway-cpu" => options.gateway_cpu = number(flag, value()?)?,
                "--driver-cpu" => options.driver_cpu = number(flag, value()?)?,
                "--no-build" => options.no_build = true,
                "--no-realtime" => options.realtime = false,
                "--write" => options.write = true,
                "--state" => {
                    options.redis = match value()? {
                        "redis" => true,
                        "memory" => false,
                        other => bail!("`--state {other}`: expected memory or redis"),
                    }
                }
                "--echelon-env" => {
                    let pair = value()?;
                    let (key, val) = pair
                        .split_once('=')
                        .with_context(|| format!("`{flag} {pair}`: expected KEY=VALUE"))?;
                    options.echelon_env.push((key.to_owned(), val.to_owned()));
                }
                other => bail!("unknown bench option `{other}`\n\n{USAGE}"),
            }
        }
        ensure!(
            (1..=4096).contains(&options.connections),
            "--connections must be between 1 and 4096"
        );
        ensure!(
            (1..=100).contains(&options.rounds),
            "--rounds must be between 1 and 100"
        );
        ensure!(
            options.gateway_cpu != options.driver_cpu,
            "--gateway-cpu and --driver-cpu must be different cores"
        );
        ensure!(
            !(options.write && options.redis),
            "--write records the memory backend; record a --state redis run by hand in docs/performance.md"
        );
        Ok(options)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        // Helpers of the benchmark, run as separate processes (or by hand, for profiling).
        Some("proxy") => proxy::main(&args[1..]),
        Some("load") => load_main(&args[1..]),
        _ if args
            .iter()
            .any(|arg| matches!(arg.as_str(), "help" | "-h" | "--help")) =>
        {
            println!("{USAGE}");
            Ok(())
        }
        _ => run(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `xtask-bench [OPTIONS]`, run by `cargo xtask bench` in the workspace root: checks the options,
/// builds the release `echelon` next to this binary (the load generator and the bare proxy are as
/// optimised as the gateway they measure), then runs the benchmark.
fn run(args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    let root = std::env::current_dir().context("cannot read the current directory")?;
    if !options.no_build {
        println!("==> cargo build --release -p echelon-interfaces");
        let status = Command::new(cargo_program())
            .args(["build", "--release", "-p", "echelon-interfaces"])
            .current_dir(&root)
            .stdin(Stdio::null())
            .status()
            .context("cannot start cargo")?;
        ensure!(
            status.success(),
            "`cargo build --release -p echelon-interfaces` failed ({status})"
        );
    }
    let command = std::iter::once("cargo xtask bench".to_owned())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    gateway(&root, &options, command)
}

/// The cargo that started `cargo xtask` (so `cargo +toolchain xtask bench` stays on that
/// toolchain), or the one on the `PATH`.
fn cargo_program() -> std::ffi::OsString {
    #[allow(
        clippy::disallowed_methods,
        reason = "the benchmark is tooling, not a product crate: it asks which cargo started it"
    )]
    let program = std::env::var_os("CARGO");
    program.unwrap_or_else(|| "cargo".into())
}

/// Where this binary and the release `echelon` it measures live: `cargo build --release` puts
/// both in the same directory.
fn release_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the benchmark's executable")?;
    exe.parent()
        .map(Path::to_path_buf)
        .with_context(|| format!("{} has no parent directory", exe.display()))
}

/// The gateway benchmark.
fn gateway(root: &Path, options: &Options, command: String) -> Result<()> {
    ensure!(
        procfs::available(),
        "the gateway benchmark needs Linux (/proc and taskset)"
    );
    let machine = procfs::Machine::probe();
    let highest = options.gateway_cpu.max(options.driver_cpu);
    ensure!(
        highest < machine.cpus,
        "the benchmark pins to cores {} and {}, but this process may use only {} core(s); \
         pick others with --gateway-cpu and --driver-cpu",
        options.driver_cpu,
        options.gateway_cpu,
        machine.cpus
    );
    let echelon = release_dir()?.join("echelon");
    ensure!(
        echelon.is_file(),
        "{} does not exist; run without --no-build",
        echelon.display()
    );
    let bench = std::env::current_exe().context("cannot find the benchmark's executable")?;
    let load_before = procfs::load_average();
    // Threads and processes started from here on inherit the driver core and the policy.
    procfs::pin(std::process::id(), options.driver_cpu)?;
    if options.realtime {
        procfs::realtime(std::process::id(), REALTIME_PRIORITY)?;
    }
    let scratch = tempfile::Builder::new()
        .prefix("echelon-bench-")
        .tempdir()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let bench = Bench {
        options,
        echelon: &echelon,
        bench: &bench,
        scratch: scratch.path(),
        ticks: procfs::clock_ticks(),
    };
    let (runs, stream_events) = local.block_on(&runtime, bench.all())?;
    let report = Report {
        command,
        commit: commit(root),
        machine,
        connections: options.connections,
        window: options.window,
        rounds: options.rounds,
        paced_rate: options.paced_rate,
        echelon_env: options.echelon_env.clone(),
        realtime: options.realtime.then_some(REALTIME_PRIORITY),
        load_before,
        stream_events,
        runs,
    };
    println!("\n{}\n\n{}", report.conditions(), report.tables());
    println!("{}", report.checks_table(SUBJECT, FLOOR));
    let failed: Vec<String> = report
        .runs
        .iter()
        .filter(|run| run.errors() > 0)
        .map(|run| {
            format!(
                "{}: {} failed request(s), first: {}",
                run.name,
                run.errors(),
                run.first_error().unwrap_or("?")
            )
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "requests failed during the run, so its figures are not written:\n  {}",
            failed.join("\n  ")
        );
    }
    if options.write {
        let path = root.join("docs").join("performance.md");
        let doc = fs::read_to_string(&path).unwrap_or_default();
        let updated = report::splice(&doc, &report.markdown(SUBJECT, FLOOR));
        fs::write(&path, updated).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote the figures to {}", path.display());
    } else {
        println!("(run with --write to put these figures into docs/performance.md)");
    }
    Ok(())
}

/// The short hash of the commit measured.
fn commit(root: &Path) -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

struct Bench<'a> {
    options: &'a Options,
    echelon: &'a Path,
    bench: &'a Path,
    scratch: &'a Path,
    ticks: u64,
}

/// A process the benchmark started; killed when dropped, so no run leaves one behind.
struct Started {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Started {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let lines: Vec<String> = fs::File::open(&self.log)
            .map(|file| BufReader::new(file).lines().map_while(Result::ok).collect())
            .unwrap_or_default();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until `addr` accepts connections.
    fn wait_listening(&mut self, addr: SocketAddr) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited before listening ({status}); its log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not listen on {addr} within {START_TIMEOUT:?}; its log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1, for a process started next.
fn free_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn chat_body(model: &str, stream: bool) -> Bytes {
    // `model` after `messages`, as the OpenAI SDKs send it, so a router must scan the whole body.
    Bytes::from(format!(
        r#"{{"messages":[{{"role":"system","content":"You are a helpful assistant."}},{{"role":"user","content":"{PROMPT}"}}],"model":"{model}","max_tokens":64,"temperature":0.2,"stream":{stream}}}"#
    ))
}

impl Bench<'_> {
    fn start(
        &self,
        name: &'static str,
        cpu: usize,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<Started> {
        let log = self.scratch.join(format!("{}.log", name.replace(' ', "-")));
        let file = fs::File::create(&log)?;
        let child = Command::new("taskset")
            .args(["-c", &cpu.to_string()])
            .arg(program)
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {name} ({})", program.display()))?;
        Ok(Started { name, child, log })
    }

    async fn all(&self) -> Result<(Vec<TargetRun>, usize)> {
        let upstream_addr = free_port()?;
        let mut upstream = self.start(
            "fake upstream",
            self.options.driver_cpu,
            self.echelon,
            &[
                "mock-upstream".into(),
                "--listen".into(),
                upstream_addr.to_string(),
                "--faults".into(),
                "ok".into(),
                "--max-connections".into(),
                "8192".into(),
            ],
            &[],
        )?;
        upstream.wait_listening(upstream_addr)?;

        let proxy_addr = free_port()?;
        let mut proxy = self.start(
            FLOOR,
            self.options.gateway_cpu,
            self.bench,
            &[
                "proxy".into(),
                "--listen".into(),
                proxy_addr.to_string(),
                "--upstream".into(),
                upstream_addr.to_string(),
            ],
            &[],
        )?;
        proxy.wait_listening(proxy_addr)?;

        let redis = if self.options.redis {
            let addr = free_port()?;
            let mut redis = self.start(
                "redis",
                self.options.driver_cpu,
                Path::new("redis-server"),
                &[
                    "--bind".into(),
                    "127.0.0.1".into(),
                    "--port".into(),
                    addr.port().to_string(),
                    "--save".into(),
                    String::new(),
                    "--appendonly".into(),
                    "no".into(),
                ],
                &[],
            )?;
            redis.wait_listening(addr)?;
            Some((redis, format!("redis://{addr}")))
        } else {
            None
        };
        let echelon_addr = free_port()?;
        let config_dir = self.scratch.join("echelon-config");
        config::write(
            &config_dir,
            upstream_addr,
            echelon_addr,
            redis.as_ref().map(|(_, url)| url.as_str()),
        )?;
        let mut echelon = self.start(
            SUBJECT,
            self.options.gateway_cpu,
            self.echelon,
            &[
                "serve".into(),
                "--config".into(),
                config_dir.display().to_string(),
                "--listen".into(),
                echelon_addr.to_string(),
            ],
            &self.options.echelon_env,
        )?;
        echelon.wait_listening(echelon_addr)?;

        // Both processes under test stay up for the whole run and take turns, so that a slow
        // moment of the machine falls on one round of each rather than on one target.
        let targets = [
            Target::new("direct", upstream_addr, None),
            Target::new(FLOOR, proxy_addr, Some(proxy.pid())),
            Target::new(SUBJECT, echelon_addr, Some(echelon.pid())),
        ];
        let mut stream_events = 0;
        for target in &targets {
            load::probe(&target.json)
                .await
                .with_context(|| format!("{} did not answer a chat completion", target.name))?;
            let streamed = load::probe(&target.stream).await.with_context(|| {
                format!("{} did not answer a streamed chat completion", target.name)
            })?;
            stream_events = String::from_utf8_lossy(&streamed)
                .split("\n\n")
                .filter(|event| event.starts_with("data: "))
                .count();
        }
        // Let start-up work settle before the idle readings.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let idle = targets
            .iter()
            .map(|t| t.pid.map(procfs::status).transpose())
            .collect::<Result<Vec<_>>>()?;
        let single = Phase {
            connections: 1,
            warmup: self.options.warmup,
            window: self.options.window,
            rate: None,
        };
        let many = Phase {
            connections: self.options.connections,
            ..single
        };
        let paced = Phase {
            rate: Some(self.options.paced_rate),
            ..many
        };
        let kinds = [
            (false, single),
            (false, many),
            (false, paced),
            (true, single),
            (true, many),
        ];
        let mut results: Vec<[Vec<PhaseResult>; 5]> =
            targets.iter().map(|_| Default::default()).collect();
        for round in 1..=self.options.rounds {
            for (kind, &(stream, phase)) in kinds.iter().enumerate() {
                for (target, results) in targets.iter().zip(&mut results) {
                    if phase.rate.is_some() && target.pid.is_none() {
                        // Pacing compares CPU per request at the same load; direct calls have
                        // no process to measure.
                        continue;
                    }
                    let workload = if stream { &target.stream } else { &target.json };
                    let result = load::run(workload, phase, target.pid, self.ticks).await?;
                    print_phase(
                        round,
                        self.options.rounds,
                        target.name,
                        stream,
                        phase,
                        &result,
                    );
                    results[kind].push(result);
                }
            }
        }
        let mut runs = Vec::new();
        for ((target, results), idle) in targets.iter().zip(results).zip(idle) {
            let [
                json_single,
                json_many,
                json_paced,
                stream_single,
                stream_many,
            ] = results.map(|rounds| Summary::of(&rounds));
            runs.push(TargetRun {
                name: target.name,
                has_process: target.pid.is_some(),
                json_single,
                json_many,
                json_paced,
                stream_single,
                stream_many,
                idle,
                after: target.pid.map(procfs::status).transpose()?,
            });
        }
        drop((echelon, proxy, upstream, redis));
        Ok((runs, stream_events))
    }
}

/// One thing the load generator talks to.
struct Target {
    name: &'static str,
    /// The process whose CPU and memory are measured, if any.
    pid: Option<u32>,
    json: Workload,
    stream: Workload,
}

impl Target {
    fn new(name: &'static str, addr: SocketAddr, pid: Option<u32>) -> Self {
        let workload = |stream| Workload {
            addr,
            path: "/v1/chat/completions",
            body: chat_body(config::WRAPPER, stream),
            stream,
        };
        Self {
            name,
            pid,
            json: workload(false),
            stream: workload(true),
        }
    }
}

fn print_phase(
    round: usize,
    rounds: usize,
    name: &str,
    stream: bool,
    phase: Phase,
    result: &PhaseResult,
) {
    let what = format!(
        "{} c={}{}",
        if stream { "stream" } else { "json" },
        phase.connections,
        if phase.rate.is_some() { " paced" } else { "" }
    );
    let p50 = result.latency.percentile(50.0).map_or_else(
        || "–".to_owned(),
        |d| format!("{:.3} ms", d.as_secs_f64() * 1e3),
    );
    let cpu = result.cpu_per_request().map_or_else(String::new, |d| {
        format!(", {:.1} µs CPU/request", d.as_secs_f64() * 1e6)
    });
    println!(
        "==> {round}/{rounds} {name:<10} {what:<11} {:>9.0} req/s, p50 {p50}{cpu}, {} error(s)",
        result.throughput(),
        result.errors
    );
}

/// `xtask-bench load --addr ADDR [--connections N] [--seconds S] [--rate R] [--stream] [--model M]`:
/// the load generator alone, against a server started by hand (for profiling it with `perf`).
pub fn load_main(args: &[String]) -> Result<()> {
    let mut addr = None;
    let mut phase = Phase {
        connections: 64,
        warmup: Duration::from_secs(1),
        window: Duration::from_secs(10),
        rate: None,
    };
    let mut stream = false;
    let mut model = config::WRAPPER.to_owned();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .map(String::as_str)
                .with_context(|| format!("`{flag}` needs a value"))
        };
        match flag.as_str() {
            "--addr" => {
                let text = value()?;
                addr = Some(
                    text.parse::<SocketAddr>()
                        .with_context(|| format!("`--addr {text}`: not an address"))?,
                );
            }
            "--connections" => phase.connections = number(flag, value()?)?,
            "--seconds" => phase.window = seconds(flag, value()?)?,
            "--rate" => phase.rate = Some(rate(flag, value()?)?),
            "--model" => value()?.clone_into(&mut model),
            "--stream" => stream = true,
            other => bail!("unknown `load` option `{other}`"),
        }
    }
    let workload = Workload {
        addr: addr.context("`load` needs --addr ADDR")?,
        path: "/v1/chat/completions",
        body: chat_body(&model, stream),
        stream,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, async {
        load::probe(&workload).await?;
        load::run(&workload, phase, None, procfs::clock_ticks()).await
    })?;
    let ms = |p: f64| {
        result
            .latency
            .percentile(p)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{} requests in {:.1?}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, {} error(s){}",
        result.requests,
        result.elapsed,
        result.throughput(),
        ms(50.0),
        ms(99.0),
        result.errors,
        result
            .first_error
            .map_or_else(String::new, |e| format!(" (first: {e})"))
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_default_to_a_short_run() {
        let options = Options::parse(&[]).unwrap();
        assert_eq!(options, Options::default());
        // (3 targets × 4 phases + 2 paced phases) × rounds × (window + warmup) stays within two
        // minutes.
        let total = (options.window + options.warmup) * 14 * u32::try_from(options.rounds).unwrap();
        assert!(total <= Duration::from_secs(120), "{total:?}");
    }

    #[test]
    fn options_parse_and_refuse() {
        let options = Options::parse(&args(&[
            "--seconds",
            "15",
            "--warmup",
            "0.5",
            "--connections",
            "32",
            "--rounds",
            "5",
            "--paced-rate",
            "2500",
            "--gateway-cpu",
            "3",
            "--driver-cpu",
            "2",
            "--no-build",
            "--no-realtime",
            "--write",
            "--echelon-env",
            "A=b=c",
        ]))
        .unwrap();
        assert_eq!(
            options,
            Options {
                window: Duration::from_secs(15),
                warmup: Duration::from_millis(500),
                connections: 32,
                rounds: 5,
                paced_rate: 2500.0,
                gateway_cpu: 3,
                driver_cpu: 2,
                no_build: true,
                realtime: false,
                write: true,
                echelon_env: vec![("A".to_owned(), "b=c".to_owned())],
                redis: false,
            }
        );
        let error = |list: &[&str]| Options::parse(&args(list)).unwrap_err().to_string();
        assert_eq!(
            error(&["--seconds", "soon"]),
            "`--seconds soon`: not a number of seconds"
        );
        assert_eq!(
            error(&["--seconds", "0"]),
            "`--seconds 0`: must be more than 0 and at most 3600 seconds"
        );
        assert_eq!(error(&["--connections"]), "`--connections` needs a value");
        assert_eq!(
            error(&["--echelon-env", "A"]),
            "`--echelon-env A`: expected KEY=VALUE"
        );
        assert_eq!(
            error(&["--connections", "0"]),
            "--connections must be between 1 and 4096"
        );
        assert_eq!(
            error(&["--paced-rate", "0"]),
            "`--paced-rate 0`: must be between 1 and 10000000 requests per second"
        );
        assert_eq!(
            error(&["--rounds", "0"]),
            "--rounds must be between 1 and 100"
        );
        assert_eq!(
            error(&["--gateway-cpu", "0"]),
            "--gateway-cpu and --driver-cpu must be different cores"
        );
        assert!(error(&["--fast"]).starts_with("unknown bench option `--fast`"));
    }

    #[test]
    fn the_chat_body_is_a_chat_request_with_model_last() {
        let body = chat_body("bench", true);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["model"], "bench");
        assert_eq!(value["stream"], true);
        assert_eq!(value["messages"][1]["content"], PROMPT);
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.find("\"model\"").unwrap() > text.find("\"messages\"").unwrap());
        let plain: serde_json::Value = serde_json::from_slice(&chat_body("m", false)).unwrap();
        assert_eq!(plain["stream"], false);
    }
}
