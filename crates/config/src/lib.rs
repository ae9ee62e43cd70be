//! Echelon configuration: loads the `configs/` TOML tree and turns it into validated domain values.
