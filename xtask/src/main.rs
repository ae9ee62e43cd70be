//! `cargo xtask`: project automation. `cargo xtask check` is the one command that says the tree
//! is healthy; see `cargo xtask help`.

mod deny;
mod lex;
mod model;
mod rules;
mod system;
mod workspace;

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cargo_metadata::TargetKind;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  check           system packages, format, clippy, architecture rules, tests and examples; stops
                  at the first failure
  system-packages install (as root, with apt-get) or name the system packages the tests need
  rules           only the architecture rules (a step of `check`)
  deny            only the supply-chain checks: cargo-deny over deny.toml, installed if missing
  examples        build and run every example target of the workspace (the end of `check`)
  bench [OPTS..]  the gateway benchmark: direct vs bare proxy vs Echelon (`bench --help`)
  bench domain    the domain's criterion benches, ARGS passed through (e.g. `-- --quick`)
  domain-deps     list what echelon-domain builds on, to maintain the allowlist in xtask/src/rules.rs
  help            this text";

/// The package (and binary) of the gateway benchmark.
const BENCH_PACKAGE: &str = "xtask-bench";

/// How long one built example may run before it counts as hanging.
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let root = workspace::root();
    match args.first().map(String::as_str) {
        Some("check") => check(&root),
        Some("rules") => architecture_rules(&root),
        Some("deny") => deny::check(&root),
        Some("examples") => examples(&root),
        Some("bench") => bench(&root, &args[1..]),
        Some("domain-deps") => domain_deps(&root),
        Some("system-packages") => system::ensure(&root),
        Some("help" | "-h" | "--help") => {
            println!("{}", help());
            Ok(())
        }
        Some(other) => bail!("unknown command `{other}`\n\n{USAGE}"),
        None => bail!("no command given\n\n{USAGE}"),
    }
}

/// One step of `cargo xtask check`: what it runs, and the function that runs it.
struct Step {
    title: &'static str,
    run: fn(&Path) -> Result<()>,
}

/// The steps of `cargo xtask check`, in order; the check stops at the first that fails. A new
/// step is one more row.
const CHECK_STEPS: &[Step] = &[
    Step {
        title: "system packages the tests need (cargo xtask help lists them)",
        run: system::ensure,
    },
    Step {
        title: "format: cargo fmt --all --check",
        run: |root| cargo(root, &["fmt", "--all", "--check"]),
    },
    Step {
        title: "lints: cargo clippy --workspace --all-targets --all-features -- -D warnings",
        run: |root| {
            cargo(
                root,
                &[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--all-features",
                    "--",
                    "-D",
                    "warnings",
                ],
            )
        },
    },
    Step {
        title: "architecture rules (xtask/src/rules.rs)",
        run: architecture_rules,
    },
    Step {
        title: "supply chain: cargo deny check licenses bans sources (advisories with a local database; deny.toml)",
        run: deny::check,
    },
    Step {
        title: "tests: cargo test --workspace --all-features, then every example",
        run: |root| {
            cargo(root, &["test", "--workspace", "--all-features"])?;
            examples(root)
        },
    },
];

fn check(root: &Path) -> Result<()> {
    let started = Instant::now();
    let total = CHECK_STEPS.len();
    for (number, step) in CHECK_STEPS.iter().enumerate() {
        println!("\n==> step {}/{total}: {}", number + 1, step.title);
        (step.run)(root).with_context(|| format!("check failed at step {}/{total}", number + 1))?;
    }
    println!(
        "\n==> check passed: {total} steps in {:.0?}",
        started.elapsed()
    );
    Ok(())
}

/// `cargo xtask help`: the commands, the steps of the check and the system packages it needs.
fn help() -> String {
    let steps: Vec<String> = CHECK_STEPS
        .iter()
        .enumerate()
        .map(|(number, step)| format!("  {}. {}", number + 1, step.title))
        .collect();
    format!(
        "{USAGE}\n\n`cargo xtask check` runs, in order:\n{}\n\nsystem packages the tests need \
         (the check installs them with apt-get\nwhen it runs as root, and otherwise names the \
         command to run):\n{}",
        steps.join("\n"),
        system::table()
    )
}

fn architecture_rules(root: &Path) -> Result<()> {
    let workspace = workspace::load(root)?;
    let violations = rules::check(&workspace);
    for violation in &violations {
        println!("{violation}");
    }
    let members = workspace.members().count();
    if violations.is_empty() {
        println!(
            "architecture rules: ok ({} rules over {members} crates, {} packages, {} files)",
            rules::RULES.len(),
            workspace.packages.len(),
            workspace.sources.len(),
        );
        Ok(())
    } else {
        bail!(
            "{} architecture rule violation(s); rule summaries: cargo xtask help, \
             docs/ARCHITECTURE.md",
            violations.len()
        )
    }
}

/// Builds and runs every example target of the workspace, so an example added later is covered
/// without touching CI.
fn examples(root: &Path) -> Result<()> {
    let metadata = workspace::metadata(root)?;
    let mut found = 0;
    for package in metadata.workspace_packages() {
        for target in &package.targets {
            if !target.kind.contains(&TargetKind::Example) {
                continue;
            }
            found += 1;
            let name = package.name.to_string();
            let mut args = vec!["run", "-p", &name, "--example", &target.name];
            let features = target.required_features.join(",");
            if !features.is_empty() {
                args.extend(["--features", &features]);
            }
            println!(
                "\n--> example {name}/{}: cargo {}",
                target.name,
                args.join(" ")
            );
            // Build first, without a time limit, so the limit applies to the run alone.
            args[0] = "build";
            cargo(root, &args)?;
            args[0] = "run";
            cargo_with_timeout(root, &args, EXAMPLE_TIMEOUT)?;
        }
    }
    if found == 0 {
        println!("\n--> no example targets in the workspace");
    } else {
        println!("\n--> {found} example(s) ran");
    }
    Ok(())
}

/// `cargo xtask bench domain ...` runs the domain's criterion benches; every other `cargo xtask
/// bench ...` builds the gateway benchmark (its own member, `xtask/bench`, so that xtask carries
/// no runtime) in release and runs it in the workspace root with the same arguments. The
/// benchmark parses and checks them, and builds the release `echelon` it measures.
fn bench(root: &Path, args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("domain") {
        // `--benches`: the bench targets only; the lib's test harness refuses criterion's flags.
        let mut cargo_args = vec!["bench", "-p", "echelon-domain", "--benches"];
        cargo_args.extend(args[1..].iter().map(String::as_str));
        return cargo(root, &cargo_args);
    }
    if !args.iter().any(|arg| arg == "--no-build") {
        cargo(
            root,
            &["build", "--quiet", "--release", "-p", BENCH_PACKAGE],
        )?;
    }
    let target_dir = workspace::metadata(root)?.target_directory;
    let program = target_dir.as_std_path().join("release").join(BENCH_PACKAGE);
    if !program.is_file() {
        bail!(
            "{} does not exist; run without --no-build",
            program.display()
        );
    }
    let status = Command::new(&program)
        .args(args)
        .current_dir(root)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot start {}", program.display()))?;
    if !status.success() {
        bail!("the benchmark failed ({status})");
    }
    Ok(())
}

fn domain_deps(root: &Path) -> Result<()> {
    let workspace = workspace::load(root)?;
    let domain = workspace
        .members()
        .find(|p| p.name == rules::DOMAIN)
        .context("echelon-domain is not a workspace member")?;
    let mut lines: Vec<String> = rules::domain_closure(&workspace, domain)
        .iter()
        .filter_map(|(id, chain)| {
            let name = &workspace.package(id)?.name;
            let status = if rules::DOMAIN_ALLOWLIST.iter().any(|(n, _)| n == name) {
                "allowed"
            } else {
                "NOT ALLOWED"
            };
            Some(format!(
                "{name:<24} {status:<12} via {}",
                chain.join(" -> ")
            ))
        })
        .collect();
    lines.sort();
    lines.dedup();
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// The cargo that runs this xtask (so `cargo +toolchain xtask` stays on that toolchain).
pub(crate) fn cargo_program() -> OsString {
    #[allow(
        clippy::disallowed_methods,
        reason = "xtask is tooling, not a product crate: it asks which cargo started it"
    )]
    let program = std::env::var_os("CARGO");
    program.unwrap_or_else(|| "cargo".into())
}

fn cargo_command(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(cargo_program());
    command.args(args).current_dir(root).stdin(Stdio::null());
    command
}

pub(crate) fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    let status = cargo_command(root, args)
        .status()
        .with_context(|| format!("cannot start cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn cargo_with_timeout(root: &Path, args: &[&str], timeout: Duration) -> Result<()> {
    let mut child = cargo_command(root, args)
        .spawn()
        .with_context(|| format!("cannot start cargo {}", args.join(" ")))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("`cargo {}` failed ({status})", args.join(" "));
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            child.kill().ok();
            child.wait().ok();
            bail!(
                "`cargo {}` still running after {timeout:?}; examples must finish on their own",
                args.join(" ")
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}
