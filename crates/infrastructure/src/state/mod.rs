//! Shared state adapters: the domain's [`echelon_domain::shared::SharedState`] port over Redis
//! (or Valkey, which speaks the same protocol).
//!
//! [`redis::RedisState`] runs one Lua script per sync, so a replica's whole exchange with the
//! fleet is atomic and costs one round trip; `script.lua` is that script, with the key layout it
//! documents. [`redacted_url`] is the one way a Redis URL is shown (password replaced).

pub mod redis;

pub use self::redis::{RedisOptions, RedisState};

/// `url` with its password (and user name) replaced by `***`, for logs, errors and `doctor`.
/// A URL that does not parse is shown only by its scheme.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<invalid Redis URL>".to_owned();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_owned(),
    };
    if path.is_empty() {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::redacted_url;

    #[test]
    fn urls_lose_their_credentials_and_queries() {
        assert_eq!(
            redacted_url("redis://:hunter2@cache:6380/2"),
            "redis://***@cache:6380/2"
        );
        assert_eq!(
            redacted_url("rediss://user:p%40ss@r.example?password=x"),
            "rediss://***@r.example"
        );
        assert_eq!(
            redacted_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redacted_url("nonsense"), "<invalid Redis URL>");
    }
}
