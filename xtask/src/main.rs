//! `cargo xtask`: project automation (checks, benchmarks).

fn main() -> anyhow::Result<()> {
    Ok(())
}
