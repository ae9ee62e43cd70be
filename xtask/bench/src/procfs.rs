//! What the benchmark reads from Linux about a process under test (CPU time, memory, threads) and
//! about the machine it runs on.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// CPU time a process has used, user and system, over all its threads.
///
/// `ticks_per_second` is the kernel's `USER_HZ` (`getconf CLK_TCK`, 100 on Linux).
pub fn cpu_time(pid: u32, ticks_per_second: u64) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_cpu_time(&text, ticks_per_second).with_context(|| format!("unexpected {path}"))
}

/// `utime + stime` of a `/proc/PID/stat` line. The command name (field 2) is in parentheses and
/// may hold spaces and parentheses itself, so fields are counted from the last `)`.
pub fn parse_cpu_time(stat: &str, ticks_per_second: u64) -> Result<Duration> {
    let Some((_, after_name)) = stat.rsplit_once(')') else {
        bail!("no `)` closing the command name");
    };
    // After the name come field 3 (state), 4 (ppid) and so on: utime is field 14, stime 15.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| -> Result<u64> {
        let text = fields
            .get(number - 3)
            .with_context(|| format!("field {number} missing"))?;
        text.parse()
            .with_context(|| format!("field {number} is not a number: `{text}`"))
    };
    if ticks_per_second == 0 {
        bail!("clock ticks per second must not be zero");
    }
    let ticks = field(14)? + field(15)?;
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(ticks_per_second);
    Ok(Duration::from_nanos(
        u64::try_from(nanos).unwrap_or(u64::MAX),
    ))
}

/// Memory and threads of a process, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Resident set size now (`VmRSS`), in KiB.
    pub rss_kib: u64,
    /// Peak resident set size (`VmHWM`), in KiB.
    pub peak_rss_kib: u64,
    /// Threads of the process.
    pub threads: u64,
}

/// Reads `/proc/PID/status`.
pub fn status(pid: u32) -> Result<Status> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_status(&text).with_context(|| format!("unexpected {path}"))
}

/// `VmRSS`, `VmHWM` and `Threads` of a `/proc/PID/status` text.
pub fn parse_status(text: &str) -> Result<Status> {
    let value = |key: &str| -> Result<u64> {
        let line = text
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
            .with_context(|| format!("no `{key}` line"))?;
        let number = line.split_whitespace().next().unwrap_or_default();
        number
            .parse()
            .with_context(|| format!("`{key}` is not a number: `{number}`"))
    };
    Ok(Status {
        rss_kib: value("VmRSS")?,
        peak_rss_kib: value("VmHWM")?,
        threads: value("Threads")?,
    })
}

/// The kernel's clock ticks per second for `/proc` CPU times (`getconf CLK_TCK`); Linux fixes
/// `USER_HZ` at 100 on every common architecture, which is the fallback.
pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

/// Facts about the machine a run was measured on, written next to its figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// Processors this process may run on, before the benchmark pins itself.
    pub cpus: usize,
    /// The processor model, from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// The kernel release.
    pub kernel: String,
    /// `rustc --version`.
    pub rustc: String,
}

impl Machine {
    /// Collects the facts. Call it before pinning this process to one core.
    pub fn probe() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let cpu_model = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| cpu_model(&text))
            .unwrap_or_else(|| "unknown".to_owned());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        let rustc = Command::new("rustc")
            .arg("--version")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".to_owned());
        Self {
            cpus,
            cpu_model,
            kernel,
            rustc,
        }
    }
}

/// The first `model name` of a `/proc/cpuinfo` text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

/// Pins a running process (its main thread, and so every thread and child it starts later) to
/// one processor, with `taskset`.
pub fn pin(pid: u32, cpu: usize) -> Result<()> {
    let output = Command::new("taskset")
        .args(["-p", "-c", &cpu.to_string(), &pid.to_string()])
        .output()
        .context("cannot run taskset (util-linux); the benchmark pins processes to cores")?;
    if !output.status.success() {
        bail!(
            "taskset could not pin process {pid} to cpu {cpu}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Gives a running process (and so every thread and child it starts later) the real-time
/// round-robin policy at `priority`, with `chrt`, so that other work on the machine (a build, a
/// test suite) cannot preempt it. The kernel's real-time throttling still leaves the rest of the
/// system 5 % of each core.
pub fn realtime(pid: u32, priority: u32) -> Result<()> {
    let output = Command::new("chrt")
        .args(["--rr", "-p", &priority.to_string(), &pid.to_string()])
        .output()
        .context("cannot run chrt (util-linux)")?;
    if !output.status.success() {
        bail!(
            "chrt could not give process {pid} real-time priority {priority} (root or \
             CAP_SYS_NICE is needed; pass --no-realtime to run at normal priority): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The 1-minute load average, from `/proc/loadavg`.
pub fn load_average() -> Option<f64> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Whether `/proc` is there to read (Linux).
pub fn available() -> bool {
    Path::new("/proc/self/stat").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line, with a command name holding a space and a parenthesis.
    const STAT: &str = "4242 (echelon (x) y) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                        250 75 0 0 20 0 2 0 123456 12345678 2500 18446744073709551615 1 1 0 0 0 0 \
                        0 4096 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn cpu_time_is_utime_plus_stime_in_ticks() {
        assert_eq!(
            parse_cpu_time(STAT, 100).unwrap(),
            Duration::from_millis(3250)
        );
        assert_eq!(
            parse_cpu_time(STAT, 1000).unwrap(),
            Duration::from_millis(325)
        );
    }

    #[test]
    fn cpu_time_refuses_broken_lines() {
        assert!(parse_cpu_time("4242 echelon S 1", 100).is_err());
        assert!(parse_cpu_time("4242 (echelon) S 1 2 3", 100).is_err());
        assert!(parse_cpu_time(STAT, 0).is_err());
        let text = STAT.replace(" 250 ", " x ");
        let error = parse_cpu_time(&text, 100).unwrap_err();
        assert_eq!(error.to_string(), "field 14 is not a number: `x`");
    }

    #[test]
    fn status_reads_rss_peak_and_threads() {
        let text = "Name:\techelon\nVmPeak:\t  900000 kB\nVmHWM:\t   10176 kB\n\
                    VmRSS:\t    9876 kB\nThreads:\t2\n";
        assert_eq!(
            parse_status(text).unwrap(),
            Status {
                rss_kib: 9876,
                peak_rss_kib: 10176,
                threads: 2
            }
        );
        let error = parse_status("Name:\techelon\nVmRSS:\t1 kB\n").unwrap_err();
        assert_eq!(error.to_string(), "no `VmHWM` line");
    }

    #[test]
    fn cpu_model_is_the_first_model_name() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n\
                    processor\t: 1\nmodel name\t: other\n";
        assert_eq!(cpu_model(text).as_deref(), Some("AMD EPYC"));
        assert_eq!(cpu_model("processor : 0\n"), None);
    }

    #[test]
    fn this_process_can_be_read() {
        assert!(available(), "the benchmark and this test need Linux /proc");
        let pid = std::process::id();
        cpu_time(pid, clock_ticks()).unwrap();
        let status = status(pid).unwrap();
        assert!(status.rss_kib > 0 && status.peak_rss_kib >= status.rss_kib);
        assert!(status.threads >= 1);
    }
}
