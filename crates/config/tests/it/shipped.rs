//! The shipped default tree and every example tree load without errors or warnings.

use echelon_config::{ValidationMode, load, render_resolved};
use echelon_domain::name::{GroupName, PoolName, WrapperName};

use crate::support::{env, shipped_dir};

#[test]
fn default_tree_loads_offline_with_no_environment() {
    let config = load(&shipped_dir(), &env(&[])).unwrap_or_else(|report| panic!("{report}"));
    assert!(config.warnings.is_empty(), "{:#?}", config.warnings);
    assert_eq!(config.validation, ValidationMode::Strict);
    let topology = &config.topology;
    assert_eq!(topology.providers.len(), 2);
    let fast = &topology.pools[&PoolName::new("fast")];
    // Two models × three keys.
    assert_eq!(fast.instances.len(), 6);
    let chat = &topology.task_groups[&GroupName::new("chat")];
    assert_eq!(chat.echelons.len(), 3);
    // Inherited from strategies/resilient.toml.
    assert_eq!(chat.fallback.max_attempts, 6);
    for wrapper in ["chat", "fast", "reasoning", "deep"] {
        assert!(
            topology.wrappers.contains_key(&WrapperName::new(wrapper)),
            "{wrapper}"
        );
    }
    assert_eq!(config.gateway.alerts.rules.len(), 3);
}

#[test]
fn resolved_rendering_redacts_every_key() {
    let config = load(&shipped_dir(), &env(&[])).unwrap_or_else(|report| panic!("{report}"));
    let shown = render_resolved(&config);
    assert!(!shown.contains("mock-fast-key-0"), "{shown}");
    assert!(shown.contains("[redacted]"));
    assert!(shown.contains("\"request_timeout\": \"5m\""), "{shown}");
}
