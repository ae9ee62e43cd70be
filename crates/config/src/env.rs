//! The environment the loader reads `${VAR}` references and `ECHELON_*` overrides from, behind a
//! trait so that tests inject a map and only the top of the program reads the process environment.

use std::collections::{BTreeMap, HashMap};

/// A source of environment variables.
pub trait Env {
    /// The value of `name`, or `None` when it is unset (or not valid UTF-8).
    fn var(&self, name: &str) -> Option<String>;

    /// Every variable whose name starts with `prefix`, sorted by name.
    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    #[allow(
        clippy::disallowed_methods,
        reason = "echelon-config is the one crate that reads the environment"
    )]
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let mut vars: Vec<_> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with(prefix))
            .collect();
        vars.sort();
        vars
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }

    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl<S: std::hash::BuildHasher> Env for HashMap<String, String, S> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }

    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let mut vars: Vec<_> = self
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vars.sort();
        vars
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_answer_lookups_and_prefix_listings_in_name_order() {
        let mut env = HashMap::new();
        env.insert("ECHELON_B".to_owned(), "2".to_owned());
        env.insert("ECHELON_A".to_owned(), "1".to_owned());
        env.insert("OTHER".to_owned(), "3".to_owned());
        assert_eq!(env.var("OTHER").as_deref(), Some("3"));
        assert_eq!(env.var("MISSING"), None);
        assert_eq!(
            env.vars_with_prefix("ECHELON_"),
            vec![
                ("ECHELON_A".to_owned(), "1".to_owned()),
                ("ECHELON_B".to_owned(), "2".to_owned())
            ]
        );
        let map: BTreeMap<_, _> = env.into_iter().collect();
        assert_eq!(map.vars_with_prefix("ECHELON_").len(), 2);
    }
}
