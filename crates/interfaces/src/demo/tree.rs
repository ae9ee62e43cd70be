//! The configuration tree `echelon demo` writes for its three fake upstreams: a pool over the
//! flaky upstream's two keys and a three-echelon task group behind the wrapper `demo`.

use std::io;
use std::path::Path;

/// The wrapper the demo's clients send as `model`.
pub const WRAPPER: &str = "demo";

/// Base URLs of the three fake upstreams (`http://127.0.0.1:PORT/v1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrls {
    /// Always answers, after a short latency.
    pub healthy: String,
    /// Fails a share of requests with 500s.
    pub flaky: String,
    /// A slow key with a small quota: 429 with a Retry-After once it is spent.
    pub limited: String,
}

/// Writes the tree under `root` (which must exist): `gateway.toml` and `llms/`.
///
/// # Errors
/// When a file cannot be written.
pub fn write(root: &Path, urls: &UpstreamUrls) -> io::Result<()> {
    let files = [
        ("gateway.toml", GATEWAY.to_owned()),
        ("llms/_registry.toml", REGISTRY.to_owned()),
        (
            "llms/providers/healthy.toml",
            provider(
                "The healthy upstream: answers every request after about 30 ms.",
                &urls.healthy,
                "api_key = \"demo-key-healthy\"",
            ),
        ),
        (
            "llms/providers/flaky.toml",
            provider(
                "The flaky upstream: fails about 30 % of requests with a 500. Two keys, so two instances.",
                &urls.flaky,
                "api_keys = [\"demo-key-flaky-0\", \"demo-key-flaky-1\"]",
            ),
        ),
        (
            "llms/providers/limited.toml",
            format!(
                "{}max_concurrency = 1   # one call at a time finds out whether the quota is back\n",
                provider(
                    "The rate-limited upstream: a slow key with a quota of 20 requests per 4 s; past it, 429 with a Retry-After.",
                    &urls.limited,
                    "api_key = \"demo-key-limited\"",
                )
            ),
        ),
        ("llms/pools/demo-pool.toml", POOL.to_owned()),
        ("llms/task-groups/demo.toml", GROUP.to_owned()),
        ("llms/wrappers/demo.toml", WRAPPERS.to_owned()),
    ];
    for (path, text) in files {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)?;
    }
    Ok(())
}

fn provider(comment: &str, base_url: &str, keys: &str) -> String {
    format!(
        "# {comment}\nkind = \"openai\"\nbase_url = \"{base_url}\"\n{keys}\nconnect_timeout = \"1s\"\nrequest_timeout = \"10s\"\n\n[models.gpt-demo]\ncontext_window = 16384\n"
    )
}

const GATEWAY: &str = "\
# Written by `echelon demo` and removed when it exits.
[server]
request_timeout = \"30s\"
shutdown_grace = \"2s\"
";

const REGISTRY: &str = "\
[registry]
version = 1

[global]
validation = \"strict\"
hot_reload = false
";

const POOL: &str = "\
# Both keys of the flaky upstream. p2c_ewma steers towards the key that answers well; each key's
# breaker opens after 5 failures in a row and lets a trial call through after 2 s.
rotation = \"p2c_ewma\"

[[instances]]
model = \"flaky/gpt-demo\"

[health_check]
interval = \"5s\"
failure_threshold = 5
success_threshold = 2
recovery_time = \"2s\"

[fallback]
max_instance_attempts = 2

[circuit_breaker]
failure_threshold = 5
recovery_time = \"2s\"
max_recovery_time = \"8s\"
half_open_requests = 1
";

const GROUP: &str = "\
# The demo ladder: a rate-limited premium echelon, the flaky pool, the healthy backstop.
fallback_strategy = \"echelon_down\"

# The echelon's own breaker: when the pool as a whole keeps failing, skip it for a while.
[circuit_breaker]
failure_threshold = 6
recovery_time = \"2s\"
max_recovery_time = \"6s\"
half_open_requests = 1

[fallback]
max_attempts = 5
retry_delay = \"50ms\"
deadline = \"20s\"

# Over its quota: the gateway cools the key down for the Retry-After and moves on at once
# instead of waiting for it.
[echelons.echelon1]
models = [\"limited/gpt-demo\"]
timeout = \"5s\"
max_retries = 0
retry_after_max_wait = \"0s\"

# The flaky pool: a failed key hands over to the other key, then to the next echelon.
[echelons.echelon2]
models = [\"pool:demo-pool\"]
timeout = \"5s\"
first_token_timeout = \"3s\"
idle_timeout = \"3s\"
max_retries = 0

[echelons.echelon3]
models = [\"healthy/gpt-demo\"]
timeout = \"5s\"
max_retries = 1
";

const WRAPPERS: &str = "\
[wrappers.demo]
type = \"task_group\"
target = \"demo\"
description = \"the demo ladder: rate-limited premium, flaky pool, healthy backstop\"
";

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn the_tree_loads_strictly_with_three_echelons_behind_the_wrapper() {
        let dir = tempfile::tempdir().unwrap();
        let urls = UpstreamUrls {
            healthy: "http://127.0.0.1:1/v1".into(),
            flaky: "http://127.0.0.1:2/v1".into(),
            limited: "http://127.0.0.1:3/v1".into(),
        };
        write(dir.path(), &urls).unwrap();
        let config = echelon_config::load(dir.path(), &BTreeMap::<String, String>::new())
            .unwrap_or_else(|report| panic!("{report}"));
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        let topology = &config.topology;
        assert_eq!(topology.providers.len(), 3);
        let group = topology.task_groups.values().next().unwrap();
        assert_eq!(group.echelons.len(), 3);
        let pool = topology.pools.values().next().unwrap();
        assert_eq!(pool.instances.len(), 2, "one instance per flaky key");
        assert!(topology.wrappers.keys().any(|w| w.as_str() == WRAPPER));
    }
}
