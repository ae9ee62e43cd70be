//! Helpers: temporary configuration trees written from `(path, text)` pairs, and environments.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The repository's `configs/` folder.
pub fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

/// An environment from pairs.
pub fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A temporary tree with the given files (paths relative to its root).
pub fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (path, text) in files {
        write(dir.path(), path, text);
    }
    dir
}

/// Writes one file of a tree, creating folders.
pub fn write(root: &Path, path: &str, text: &str) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().expect("file paths have a folder")).expect("mkdir");
    std::fs::write(full, text).expect("write");
}

/// A minimal valid tree: one mock provider with two keys, a pool, a group and wrappers.
pub const BASE: &[(&str, &str)] = &[
    (
        "llms/providers/mock.toml",
        "kind = \"mock\"\napi_keys = [\"k0\", \"k1\"]\n[models.small]\ncontext_window = 8192\n[models.large]\nupstream = \"large-v2\"\n",
    ),
    (
        "llms/pools/main.toml",
        "rotation = \"round_robin\"\n[[instances]]\nmodel = \"mock/small\"\n",
    ),
    (
        "llms/task-groups/chat.toml",
        "[echelons.echelon1]\nmodels = [\"pool:main\"]\n[echelons.echelon2]\nmodels = [\"mock/large\"]\n",
    ),
    (
        "llms/wrappers/default.toml",
        "[wrappers.chat]\ntype = \"task_group\"\ntarget = \"chat\"\n[wrappers.main]\ntype = \"pool\"\ntarget = \"main\"\n",
    ),
];

/// [`BASE`] with some files replaced or added.
pub fn base_with(changes: &[(&str, &str)]) -> tempfile::TempDir {
    let mut files: Vec<(&str, &str)> = BASE
        .iter()
        .filter(|(path, _)| !changes.iter().any(|(p, _)| p == path))
        .copied()
        .collect();
    files.extend(changes.iter().copied());
    tree(&files)
}
