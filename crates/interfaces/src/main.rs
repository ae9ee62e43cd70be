//! The `echelon` binary: parses the command line and hands over to the composition root.

fn main() -> anyhow::Result<()> {
    println!("echelon {}", env!("CARGO_PKG_VERSION"));
    Ok(())
}
