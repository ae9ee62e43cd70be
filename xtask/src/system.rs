//! The system packages the tests need, and the first step of `cargo xtask check` that makes sure
//! they are there: it installs what is missing with Debian's `apt-get` when it runs as root, and
//! otherwise fails naming the command to run, so a fresh machine never gets as far as a test that
//! cannot start its browser or its server.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// A program the tests run, the Debian package that provides it, and why they need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemPackage {
    /// The executable looked for on the `PATH`.
    pub binary: &'static str,
    /// The Debian package that installs it.
    pub debian: &'static str,
    pub why: &'static str,
}

/// Every system package the test suite needs. Add a row here when a test starts running a new
/// program; `cargo xtask help` prints this table and `cargo xtask check` installs from it.
pub const SYSTEM_PACKAGES: &[SystemPackage] = &[
    SystemPackage {
        binary: "chromium",
        debian: "chromium",
        why: "the status page's test in a headless browser (interfaces/tests/it/ui.rs)",
    },
    SystemPackage {
        binary: "redis-server",
        debian: "redis-server",
        why: "the tests of state shared by gateway replicas, against a real Redis",
    },
];

/// What the check does about the missing packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Everything is on the `PATH`.
    Present,
    /// Install these Debian packages with `apt-get`.
    Install(Vec<&'static str>),
    /// Stop, with this message naming what to install and how.
    Refuse(String),
}

/// The packages of `table` whose binary is in none of the `PATH` directories `path`.
pub fn missing<'a>(table: &'a [SystemPackage], path: &OsStr) -> Vec<&'a SystemPackage> {
    table
        .iter()
        .filter(|package| !on_path(package.binary, path))
        .collect()
}

/// Whether an executable file `binary` is in one of the `PATH` directories `path`.
fn on_path(binary: &str, path: &OsStr) -> bool {
    std::env::split_paths(path).any(|dir| is_executable(&dir.join(binary)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Decides what to do about `missing`: install as root where `apt-get` is available, otherwise
/// refuse with the command to run.
pub fn plan(missing: &[&SystemPackage], root: bool, apt: bool) -> Plan {
    if missing.is_empty() {
        return Plan::Present;
    }
    let debian: Vec<&'static str> = missing.iter().map(|p| p.debian).collect();
    if root && apt {
        return Plan::Install(debian);
    }
    let mut message = String::from("the tests need programs this machine does not have:\n");
    for package in missing {
        let _ = writeln!(message, "  {}: {}", package.binary, package.why);
    }
    let command = install_command(&debian).join(" ");
    let _ = write!(
        message,
        "install them and run the check again:\n  {}{command}",
        if root { "" } else { "sudo " },
    );
    if !apt {
        message.push_str(
            "\n(that is Debian's command; elsewhere install the packages that provide the \
             programs above)",
        );
    }
    Plan::Refuse(message)
}

/// `apt-get install` of `packages`, without recommended extras.
fn install_command(packages: &[&str]) -> Vec<String> {
    ["apt-get", "install", "-y", "-qq", "--no-install-recommends"]
        .iter()
        .chain(packages)
        .map(|s| (*s).to_owned())
        .collect()
}

/// The table as `cargo xtask help` prints it: program, Debian package, why.
pub fn table() -> String {
    let rows: Vec<[&str; 3]> = std::iter::once(["program", "Debian package", "needed by"])
        .chain(SYSTEM_PACKAGES.iter().map(|p| [p.binary, p.debian, p.why]))
        .collect();
    let width = |column: usize| rows.iter().map(|row| row[column].len()).max().unwrap_or(0);
    let (first, second) = (width(0), width(1));
    let lines: Vec<String> = rows
        .iter()
        .map(|[binary, debian, why]| format!("  {binary:<first$}  {debian:<second$}  {why}"))
        .collect();
    lines.join("\n")
}

/// The check's step: makes sure every program of [`SYSTEM_PACKAGES`] is on the `PATH`.
pub fn ensure(_root: &Path) -> Result<()> {
    #[allow(
        clippy::disallowed_methods,
        reason = "xtask is tooling, not a product crate: it looks for programs on the PATH"
    )]
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing_now = missing(SYSTEM_PACKAGES, &path);
    match plan(&missing_now, is_root(), on_path("apt-get", &path)) {
        Plan::Present => {
            let names: Vec<&str> = SYSTEM_PACKAGES.iter().map(|p| p.binary).collect();
            println!("system packages: all present ({})", names.join(", "));
            Ok(())
        }
        Plan::Refuse(message) => bail!("{message}"),
        Plan::Install(packages) => {
            println!(
                "==> apt-get update, then {}",
                install_command(&packages).join(" ")
            );
            apt_get(&["update", "-qq"])?;
            let install = install_command(&packages);
            let args: Vec<&str> = install[1..].iter().map(String::as_str).collect();
            apt_get(&args)?;
            let still = missing(SYSTEM_PACKAGES, &path);
            if !still.is_empty() {
                let names: Vec<&str> = still.iter().map(|p| p.binary).collect();
                bail!(
                    "apt-get installed {} but {} is still not on the PATH",
                    packages.join(", "),
                    names.join(", ")
                );
            }
            Ok(())
        }
    }
}

fn apt_get(args: &[&str]) -> Result<()> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .context("cannot start apt-get")?;
    if !status.success() {
        bail!("`apt-get {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Whether this process runs as root (user id 0), as in a CI container.
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[SystemPackage] = &[
        SystemPackage {
            binary: "chromium",
            debian: "chromium",
            why: "the browser test",
        },
        SystemPackage {
            binary: "redis-server",
            debian: "redis-server",
            why: "the shared-state tests",
        },
    ];

    #[test]
    fn missing_finds_only_executables_on_the_path() {
        use std::os::unix::fs::PermissionsExt as _;
        let bin = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let chromium = bin.path().join("chromium");
        std::fs::write(&chromium, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&chromium, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A file that cannot be run does not count.
        std::fs::write(other.path().join("redis-server"), "").unwrap();
        let path = std::env::join_paths([other.path(), bin.path()]).unwrap();
        let names: Vec<&str> = missing(TABLE, &path).iter().map(|p| p.binary).collect();
        assert_eq!(names, ["redis-server"]);
        let names: Vec<&str> = missing(TABLE, OsStr::new(""))
            .iter()
            .map(|p| p.binary)
            .collect();
        assert_eq!(names, ["chromium", "redis-server"]);
    }

    #[test]
    fn root_with_apt_installs_and_nothing_missing_does_nothing() {
        let all: Vec<&SystemPackage> = TABLE.iter().collect();
        assert_eq!(plan(&[], false, false), Plan::Present);
        assert_eq!(
            plan(&all, true, true),
            Plan::Install(vec!["chromium", "redis-server"])
        );
    }

    #[test]
    fn without_root_or_apt_the_check_names_the_command_to_run() {
        let Plan::Refuse(message) = plan(&[&TABLE[0]], false, true) else {
            panic!("a user without root must be told what to run");
        };
        assert_eq!(
            message,
            "the tests need programs this machine does not have:\n  \
             chromium: the browser test\n\
             install them and run the check again:\n  \
             sudo apt-get install -y -qq --no-install-recommends chromium"
        );
        let Plan::Refuse(message) = plan(&[&TABLE[1]], true, false) else {
            panic!("without apt-get nothing can be installed");
        };
        assert!(message.ends_with(
            "  apt-get install -y -qq --no-install-recommends redis-server\n\
             (that is Debian's command; elsewhere install the packages that provide the \
             programs above)"
        ));
    }

    #[test]
    fn the_help_table_names_every_binary_its_package_and_why() {
        let table = table();
        let mut lines = table.lines();
        assert!(lines.next().unwrap().starts_with("  program"));
        assert_eq!(lines.clone().count(), SYSTEM_PACKAGES.len());
        for (line, package) in lines.zip(SYSTEM_PACKAGES) {
            let columns: Vec<&str> = line.split_whitespace().take(2).collect();
            assert_eq!(columns, [package.binary, package.debian], "{line}");
            assert!(line.ends_with(package.why), "{line}");
        }
    }
}
