//! Client and admin authentication: bearer keys from configuration, compared in constant time.

use echelon_domain::secret::Secret;

/// The keys a request may present. No client keys means the API is open.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    client_keys: Vec<Secret>,
    admin_key: Option<Secret>,
}

/// What a presented credential allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The request may proceed.
    Granted,
    /// No credential was presented where one is required.
    Missing,
    /// A credential was presented and matches no key.
    Wrong,
}

impl KeyRing {
    /// Builds a key ring; empty or blank keys are ignored.
    pub fn new(client_keys: Vec<Secret>, admin_key: Option<Secret>) -> Self {
        Self {
            client_keys: client_keys.into_iter().filter(|k| !k.is_empty()).collect(),
            admin_key: admin_key.filter(|k| !k.is_empty()),
        }
    }

    /// Whether client requests need a key.
    pub fn is_open(&self) -> bool {
        self.client_keys.is_empty()
    }

    /// Whether an admin key is configured.
    pub fn has_admin_key(&self) -> bool {
        self.admin_key.is_some()
    }

    /// Checks the `Authorization` header of a client request.
    pub fn check_client(&self, authorization: Option<&[u8]>) -> Access {
        if self.is_open() {
            return Access::Granted;
        }
        match bearer(authorization) {
            None => Access::Missing,
            // Compare against every key without stopping early, so the time taken does not say
            // which key (or how much of one) matched.
            Some(token) => {
                let mut matched = false;
                for key in &self.client_keys {
                    matched |= constant_time_eq(key.expose().as_bytes(), token);
                }
                if matched {
                    Access::Granted
                } else {
                    Access::Wrong
                }
            }
        }
    }

    /// Checks the `Authorization` header of an admin request. Without an admin key, only
    /// loopback clients are admitted.
    pub fn check_admin(&self, authorization: Option<&[u8]>, from_loopback: bool) -> Access {
        let Some(admin) = &self.admin_key else {
            return if from_loopback {
                Access::Granted
            } else {
                Access::Wrong
            };
        };
        match bearer(authorization) {
            None => Access::Missing,
            Some(token) if constant_time_eq(admin.expose().as_bytes(), token) => Access::Granted,
            Some(_) => Access::Wrong,
        }
    }
}

fn bearer(authorization: Option<&[u8]>) -> Option<&[u8]> {
    let value = authorization?;
    let prefix = b"Bearer ";
    (value.len() > prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| value[prefix.len()..].trim_ascii())
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // Keep the optimiser from turning the loop into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::new(
            vec![
                Secret::new("client-a"),
                Secret::new("client-b"),
                Secret::new(""),
            ],
            Some(Secret::new("admin-1")),
        )
    }

    #[test]
    fn client_keys_are_checked_and_open_when_none() {
        let ring = ring();
        assert_eq!(ring.check_client(Some(b"Bearer client-b")), Access::Granted);
        assert_eq!(ring.check_client(Some(b"bearer client-a")), Access::Granted);
        assert_eq!(ring.check_client(Some(b"Bearer client-c")), Access::Wrong);
        assert_eq!(ring.check_client(Some(b"Bearer ")), Access::Missing);
        assert_eq!(ring.check_client(Some(b"Basic client-a")), Access::Missing);
        assert_eq!(ring.check_client(None), Access::Missing);
        let open = KeyRing::new(vec![Secret::new("")], None);
        assert!(open.is_open());
        assert_eq!(open.check_client(None), Access::Granted);
    }

    #[test]
    fn admin_needs_its_key_or_loopback_when_unset() {
        let ring = ring();
        assert_eq!(
            ring.check_admin(Some(b"Bearer admin-1"), false),
            Access::Granted
        );
        assert_eq!(
            ring.check_admin(Some(b"Bearer client-a"), true),
            Access::Wrong
        );
        assert_eq!(ring.check_admin(None, true), Access::Missing);
        let none = KeyRing::new(Vec::new(), None);
        assert_eq!(none.check_admin(None, true), Access::Granted);
        assert_eq!(none.check_admin(None, false), Access::Wrong);
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
