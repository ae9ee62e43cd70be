//! Helpers shared by the integration tests: configuration trees written into temporary folders.

use std::path::Path;

/// Writes `text` to `file` (relative to `dir`), creating its folders.
pub fn write(dir: &Path, file: &str, text: &str) {
    let path = dir.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}
