//! `cargo xtask`: project automation. `cargo xtask check` is the one command that says the tree
//! is healthy; see `cargo xtask help`.

mod bench;
mod lex;
mod model;
mod rules;
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
  check           format, clippy, architecture rules, tests and examples; stops at the first failure
  rules           only the architecture rules (the third step of `check`)
  examples        build and run every example target of the workspace (the end of `check`)
  bench [OPTS..]  the gateway benchmark: direct vs bare proxy vs Echelon (`bench --help`)
  bench domain    the domain's criterion benches, ARGS passed through (e.g. `-- --quick`)
  domain-deps     list what echelon-domain builds on, to maintain the allowlist in xtask/src/rules.rs
  help            this text";

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
        Some("examples") => examples(&root),
        Some("bench") => bench::main(&root, &args[1..]),
        // Hidden helpers of the gateway benchmark, run as separate processes.
        Some("bench-run") => bench::run_main(&root, &args[1..]),
        Some("bench-proxy") => bench::proxy::main(&args[1..]),
        Some("bench-load") => bench::load_main(&args[1..]),
        Some("domain-deps") => domain_deps(&root),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command `{other}`\n\n{USAGE}"),
        None => bail!("no command given\n\n{USAGE}"),
    }
}

type StepFn = fn(&Path) -> Result<()>;

fn check(root: &Path) -> Result<()> {
    let steps: [(&str, StepFn); 4] = [
        ("format: cargo fmt --all --check", |root| {
            cargo(root, &["fmt", "--all", "--check"])
        }),
        (
            "lints: cargo clippy --workspace --all-targets --all-features -- -D warnings",
            |root| {
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
        ),
        (
            "architecture rules (xtask/src/rules.rs)",
            architecture_rules,
        ),
        (
            "tests: cargo test --workspace --all-features, then every example",
            |root| {
                cargo(root, &["test", "--workspace", "--all-features"])?;
                examples(root)
            },
        ),
    ];
    let started = Instant::now();
    for (number, (title, step)) in steps.iter().enumerate() {
        println!("\n==> step {}/{}: {title}", number + 1, steps.len());
        step(root)
            .with_context(|| format!("check failed at step {}/{}", number + 1, steps.len()))?;
    }
    println!(
        "\n==> check passed: {} steps in {:.0?}",
        steps.len(),
        started.elapsed()
    );
    Ok(())
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
fn cargo_program() -> OsString {
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

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
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
