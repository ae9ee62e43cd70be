//! Arbitrary input never panics the loader: random bytes, random text, and random TOML built
//! from the tree's own keys (which gets much deeper into phase 2 than random text does).

use proptest::prelude::*;

use echelon_config::load;

use crate::support::{BASE, env, tree};

const FILES: [&str; 7] = [
    "gateway.toml",
    "llms/_registry.toml",
    "llms/providers/mock.toml",
    "llms/pools/main.toml",
    "llms/task-groups/chat.toml",
    "llms/wrappers/default.toml",
    "llms/strategies/s.toml",
];

const KEYS: &[&str] = &[
    "kind",
    "model",
    "models",
    "weight",
    "key",
    "rotation",
    "instances",
    "echelons",
    "echelon1",
    "priority",
    "timeout",
    "fallback",
    "fallback_groups",
    "fallback_pools",
    "strategy",
    "wrappers",
    "type",
    "target",
    "api_key",
    "api_keys",
    "inherits_from",
    "server",
    "listen",
    "auth",
    "rules",
    "alerts",
    "kind",
    "global",
    "validation",
    "pools",
    "task_groups",
    "file",
    "enabled",
    "circuit_breaker",
    "half_open_requests",
    "health_check",
    "mock",
    "error_rate",
    "defaults",
];

const VALUES: &[&str] = &[
    "\"mock/small\"",
    "\"pool:main\"",
    "\"chat\"",
    "\"chat.echelon1\"",
    "\"strategy:s\"",
    "\"${X}\"",
    "\"${X:1}\"",
    "\"_p.toml\"",
    "\"../../x.toml\"",
    "\"30s\"",
    "\"4MiB\"",
    "0",
    "-1",
    "1",
    "99999999999",
    "1.5",
    "true",
    "\"round_robin\"",
    "\"lenient\"",
    "\"task_group\"",
    "\"mock\"",
    "[]",
    "[\"mock/large\", \"pool:main\"]",
    "{}",
    "{ file = \"pools/main.toml\" }",
    "1979-05-27T07:32:00Z",
    "\"\"",
];

/// Loads BASE with one file replaced by `text`; the outcome does not matter, only that it is
/// one (no panic) and that a report renders.
fn load_with_file(path: &str, text: &[u8]) {
    let dir = tree(BASE);
    std::fs::create_dir_all(dir.path().join(path).parent().unwrap()).unwrap();
    std::fs::write(dir.path().join(path), text).unwrap();
    match load(dir.path(), &env(&[("X", "7")])) {
        Ok(config) => {
            let _ = echelon_config::render_resolved(&config);
        }
        Err(report) => assert!(!report.to_string().is_empty()),
    }
}

fn toml_line() -> impl Strategy<Value = String> {
    prop_oneof![
        (prop::sample::select(KEYS), prop::sample::select(VALUES))
            .prop_map(|(k, v)| format!("{k} = {v}")),
        (prop::sample::select(KEYS), prop::sample::select(KEYS))
            .prop_map(|(a, b)| format!("[{a}.{b}]")),
        prop::sample::select(KEYS).prop_map(|k| format!("[[{k}]]")),
        prop::sample::select(KEYS).prop_map(|k| format!("[{k}]")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(file in prop::sample::select(&FILES[..]), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        load_with_file(file, &bytes);
    }

    #[test]
    fn random_text_never_panics(file in prop::sample::select(&FILES[..]), text in "[a-z_\\[\\]={}\"'$:.,0-9 \\n-]{0,200}") {
        load_with_file(file, text.as_bytes());
    }

    #[test]
    fn random_toml_from_the_schema_never_panics(file in prop::sample::select(&FILES[..]), lines in prop::collection::vec(toml_line(), 0..14)) {
        load_with_file(file, lines.join("\n").as_bytes());
    }
}
