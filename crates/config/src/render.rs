//! `echelon config show`: the resolved tree as pretty JSON, secrets redacted, durations written
//! the way the files write them (`"30s"`, not `{"secs": 30, "nanos": 0}`).

use serde::Serialize;
use serde_json::{Map, Value};

use crate::LoadedConfig;
use echelon_domain::time::DurationText;

#[derive(Serialize)]
struct Resolved<'a> {
    validation: crate::ValidationMode,
    registry: &'a crate::RegistrySettings,
    gateway: &'a crate::GatewaySettings,
    topology: &'a echelon_domain::spec::Topology,
}

/// The resolved configuration as pretty-printed JSON. Every secret prints as `[redacted]`.
pub fn render_resolved(config: &LoadedConfig) -> String {
    serde_json::to_string_pretty(&resolved_json(config)).unwrap_or_default()
}

/// The resolved configuration as a JSON value, for callers that add what they know (the CLI adds
/// each provider's endpoint URLs). Every secret is `"[redacted]"`.
pub fn resolved_json(config: &LoadedConfig) -> Value {
    let resolved = Resolved {
        validation: config.validation,
        registry: &config.registry,
        gateway: &config.gateway,
        topology: &config.topology,
    };
    // Serializing plain data into a `Value` cannot fail: every map key is a string.
    let mut value = serde_json::to_value(&resolved).unwrap_or(Value::Null);
    humanize_durations(&mut value);
    value
}

/// Replaces serde's `{"secs": N, "nanos": M}` duration objects with `"30s"`-style text.
fn humanize_durations(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(duration) = as_duration(map) {
                *value = Value::String(DurationText(duration).to_string());
                return;
            }
            for v in map.values_mut() {
                humanize_durations(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(humanize_durations),
        _ => {}
    }
}

fn as_duration(map: &Map<String, Value>) -> Option<core::time::Duration> {
    if map.len() != 2 {
        return None;
    }
    let secs = map.get("secs")?.as_u64()?;
    let nanos = u32::try_from(map.get("nanos")?.as_u64()?).ok()?;
    Some(core::time::Duration::new(secs, nanos))
}
