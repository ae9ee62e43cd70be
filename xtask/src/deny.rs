//! The supply-chain step of `cargo xtask check`: cargo-deny over `deny.toml` (licences, bans,
//! sources; advisories when a copy of the RustSec database is on disk), installed first when
//! it is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The cargo-deny release the check installs: the newest that builds with the workspace's
/// toolchain (0.20 needs rustc 1.88). `cargo install` of it takes about three minutes of two
/// cores (measured: 5 min 41 s of CPU), paid once per machine; docs/ARCHITECTURE.md says so.
pub const VERSION: &str = "0.20.2";

/// The checks that need no network.
const OFFLINE_CHECKS: [&str; 3] = ["licenses", "bans", "sources"];

/// Runs cargo-deny, installing it first if `cargo deny` is not there.
pub fn check(root: &Path) -> Result<()> {
    if !installed() {
        install()?;
    }
    let mut checks: Vec<&str> = OFFLINE_CHECKS.to_vec();
    match advisory_db() {
        Some(db) => {
            println!("advisories: using the database at {}", db.display());
            checks.push("advisories");
        }
        None => println!(
            "advisories: skipped, no RustSec database on disk (this machine cannot fetch it); \
             run `cargo deny check advisories` where the network allows"
        ),
    }
    let mut args = vec!["deny", "--offline", "check"];
    args.extend(checks.iter().copied());
    crate::cargo(root, &args)
}

fn installed() -> bool {
    Command::new(crate::cargo_program())
        .args(["deny", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn install() -> Result<()> {
    let spec = format!("cargo-deny@{VERSION}");
    println!("cargo-deny is missing: cargo install --locked {spec} (a few minutes, once)");
    let started = Instant::now();
    let status = Command::new(crate::cargo_program())
        .args(["install", "--locked", &spec])
        .stdin(Stdio::null())
        .status()
        .context("cannot start cargo install")?;
    if !status.success() {
        bail!("`cargo install --locked {spec}` failed ({status})");
    }
    println!("installed {spec} in {:.0?}", started.elapsed());
    Ok(())
}

/// Where cargo-deny keeps its advisory databases, if one has been fetched there.
fn advisory_db() -> Option<PathBuf> {
    #[allow(
        clippy::disallowed_methods,
        reason = "xtask is tooling, not a product crate: it looks for cargo's home"
    )]
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            #[allow(
                clippy::disallowed_methods,
                reason = "xtask is tooling, not a product crate: cargo's home defaults to ~/.cargo"
            )]
            let home = std::env::var_os("HOME");
            home.map(|home| PathBuf::from(home).join(".cargo"))
        })?;
    let dbs = cargo_home.join("advisory-dbs");
    let has_db = std::fs::read_dir(&dbs)
        .ok()?
        .filter_map(Result::ok)
        .any(|entry| entry.path().join("crates").is_dir());
    has_db.then_some(dbs)
}
