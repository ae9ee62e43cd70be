//! `echelon config import litellm PATH --out DIR`: a LiteLLM proxy `config.yaml` written out as
//! a commented `configs/` tree, with the report of what mapped and what did not on stdout.
//!
//! The conversion itself is `echelon_config::import` (pure); this command reads the one file,
//! refuses a non-empty `--out` unless `--force`, and writes the tree. Exit 0 when a tree was
//! written (unmapped parts are warnings in the report), 1 when the input cannot be read or is not
//! a LiteLLM config (nothing is written then) or the tree cannot be written.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

/// The largest input read: LiteLLM configurations are a few kilobytes.
const MAX_INPUT: u64 = 16 * 1024 * 1024;

/// `echelon config import litellm`.
#[derive(Debug, clap::Args)]
pub struct LitellmArgs {
    /// The LiteLLM proxy config (config.yaml).
    pub path: PathBuf,
    /// The folder to write the tree to (gateway.toml and llms/); created when missing.
    #[arg(long)]
    pub out: PathBuf,
    /// Write into a non-empty folder: its gateway.toml is replaced and its llms/ folder removed
    /// first, so no file of an older tree stays in the new one.
    #[arg(long)]
    pub force: bool,
}

/// Runs the import; see the module docs for the exit codes.
///
/// # Errors
/// When the tree cannot be written.
pub fn litellm(args: &LitellmArgs) -> anyhow::Result<ExitCode> {
    let shown = args.path.display().to_string();
    let text = match read(&args.path) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("error: cannot read {shown}: {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let name = args
        .path
        .file_name()
        .map_or_else(|| shown.clone(), |n| n.to_string_lossy().into_owned());
    let import = match echelon_config::import::litellm(&text, &name) {
        Ok(import) => import,
        Err(error) => {
            eprintln!("error: {error}");
            eprintln!("nothing was written");
            return Ok(ExitCode::FAILURE);
        }
    };
    let out = &args.out;
    if let Some(problem) = refuse(out, args.force) {
        eprintln!("error: {problem}");
        eprintln!("nothing was written");
        return Ok(ExitCode::FAILURE);
    }
    if args.force {
        clear(out)?;
    }
    for file in &import.files {
        let path = out.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, &file.text)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    print!(
        "{}",
        import
            .report
            .render(&shown, &out.display().to_string(), import.files.len())
    );
    Ok(ExitCode::SUCCESS)
}

fn read(path: &Path) -> std::io::Result<String> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.is_dir() {
        return Err(std::io::Error::other("it is a folder"));
    }
    let mut text = String::new();
    file.take(MAX_INPUT + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_INPUT {
        return Err(std::io::Error::other("larger than 16 MiB"));
    }
    Ok(text)
}

/// Why the tree may not be written to `out`, if it may not.
fn refuse(out: &Path, force: bool) -> Option<String> {
    let shown = out.display();
    match std::fs::metadata(out) {
        Err(_) => None,
        Ok(meta) if !meta.is_dir() => Some(format!("--out {shown} is a file, not a folder")),
        Ok(_) => {
            let empty = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_none());
            (!empty && !force).then(|| {
                format!(
                    "--out {shown} is not empty; choose an empty or new folder, or pass --force to replace its gateway.toml and llms/"
                )
            })
        }
    }
}

/// With `--force`: removes the files an older tree may have left where the new one goes.
fn clear(out: &Path) -> anyhow::Result<()> {
    let llms = out.join("llms");
    if llms.is_dir() {
        std::fs::remove_dir_all(&llms)
            .with_context(|| format!("cannot remove {}", llms.display()))?;
    }
    let gateway = out.join(echelon_config::GATEWAY_FILE);
    if gateway.is_file() {
        std::fs::remove_file(&gateway)
            .with_context(|| format!("cannot remove {}", gateway.display()))?;
    }
    Ok(())
}
