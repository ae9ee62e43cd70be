//! The shared state port over Redis: a connection manager that connects lazily and reconnects
//! by itself, one Lua script per sync (`script.lua`), `SET NX PX` for leases, and a timeout on
//! every call.
//!
//! Keys are `{key_prefix}:{kind}:{name}`: `budget:rpm:openai/gpt-4o#0` (a hash: tokens and the
//! time they were counted), `cool:…` (a cooldown deadline), `dead:…` (a dead-key mark), `open:…`
//! (a breaker's open deadline), `trial:…` (the replica holding the half-open trial), `probe:…`
//! (the latest probe verdict), `lease:…`
//! (a health-probe lease). Every key expires by itself. Errors never carry the URL or its
//! password.

use std::time::Duration;

use echelon_domain::secret::Secret;
use echelon_domain::shared::{
    BreakerReport, DeadReport, SharedBreaker, SharedInstanceState, SharedProbe, SharedState,
    SharedStateError, SyncBatch, SyncReply, TRIAL_LEASE,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Values the script returns per instance.
const PER_INSTANCE: usize = 7;

/// How long a dead-key mark (and a probe verdict) lasts without a probe or a reload reviving it.
const DEAD_MARK: Duration = Duration::from_secs(24 * 3600);

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://`, `rediss://` (TLS) or `unix://` URL; may hold a password.
    pub url: Secret,
    /// The first part of every key, so that several gateways can share one Redis.
    pub key_prefix: String,
    /// Bound on every call, connecting included.
    pub timeout: Duration,
}

/// The shared state port over Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisState {
    manager: ConnectionManager,
    prefix: String,
    timeout: Duration,
    script: redis::Script,
    /// The password, to scrub from any error text the client produces.
    password: Option<String>,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisState {
    /// A client for `options.url`; it connects on first use and reconnects after a failure, so
    /// building it never waits for Redis.
    ///
    /// # Errors
    /// When the URL is not a Redis URL the client understands.
    pub fn new(options: &RedisOptions) -> Result<Self, SharedStateError> {
        // rediss:// builds its TLS configuration from the process's crypto provider.
        crate::http_client::install_crypto_provider();
        let url = options.url.expose();
        let client = redis::Client::open(url).map_err(|e| {
            SharedStateError::new(format!(
                "invalid Redis URL {}: {:?}",
                super::redacted_url(url),
                e.kind()
            ))
        })?;
        let password = client
            .get_connection_info()
            .redis_settings()
            .password()
            .map(str::to_owned);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(1)
            .set_max_delay(options.timeout);
        let manager = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| {
            SharedStateError::new(format!("cannot start the Redis client: {:?}", e.kind()))
        })?;
        Ok(Self {
            manager,
            prefix: options.key_prefix.clone(),
            timeout: options.timeout,
            script: redis::Script::new(include_str!("script.lua")),
            password,
        })
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.prefix)
    }

    /// Runs `call` within the timeout; its error text is scrubbed of the password.
    async fn bounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, SharedStateError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.error(what, &error)),
            Err(_) => Err(SharedStateError::new(format!(
                "Redis {what} timed out after {}",
                echelon_domain::time::DurationText(self.timeout)
            ))),
        }
    }

    fn error(&self, what: &str, error: &redis::RedisError) -> SharedStateError {
        let mut text = error.to_string();
        if let Some(password) = self.password.as_deref().filter(|p| !p.is_empty()) {
            text = text.replace(password, "***");
        }
        SharedStateError::new(format!("Redis {what} failed: {text}"))
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn left(ms: i64) -> Option<Duration> {
    u64::try_from(ms)
        .ok()
        .filter(|&m| m > 0)
        .map(Duration::from_millis)
}

impl SharedState for RedisState {
    async fn sync(&self, batch: &SyncBatch) -> Result<SyncReply, SharedStateError> {
        if batch.budgets.is_empty() && batch.instances.is_empty() {
            return self.ping().await.map(|()| SyncReply::default());
        }
        let mut call = self.script.prepare_invoke();
        call.arg(&*batch.replica)
            .arg(batch.budgets.len())
            .arg(batch.instances.len())
            .arg(ms(TRIAL_LEASE))
            .arg(ms(DEAD_MARK));
        for budget in &batch.budgets {
            call.key(self.key("budget", &budget.key))
                .arg(budget.per_minute)
                .arg(budget.debt)
                .arg(budget.want);
        }
        for instance in &batch.instances {
            call.key(self.key("cool", &instance.key))
                .key(self.key("dead", &instance.key))
                .key(self.key("open", &instance.key))
                .key(self.key("trial", &instance.key))
                .key(self.key("probe", &instance.key));
            let dead = match instance.dead {
                DeadReport::Unchanged => 0,
                DeadReport::Dead => 1,
                DeadReport::Revived => 2,
            };
            let (breaker, open_ms) = match instance.breaker {
                BreakerReport::Unchanged => (0, 0),
                BreakerReport::Opened { remaining } => (1, ms(remaining).max(1)),
                BreakerReport::Closed => (2, 0),
            };
            let probe = match instance.probe {
                None => 0,
                Some(true) => 1,
                Some(false) => 2,
            };
            call.arg(instance.cooldown.map_or(0, ms))
                .arg(dead)
                .arg(breaker)
                .arg(open_ms)
                .arg(probe);
        }
        let mut connection = self.manager.clone();
        let values: Vec<i64> = self
            .bounded("sync", call.invoke_async(&mut connection))
            .await?;
        let budgets = batch.budgets.len();
        if values.len() != budgets + PER_INSTANCE * batch.instances.len() {
            return Err(SharedStateError::new(format!(
                "Redis sync answered {} values for {} budgets and {} instances",
                values.len(),
                budgets,
                batch.instances.len()
            )));
        }
        let instances = values[budgets..]
            .chunks_exact(PER_INSTANCE)
            .map(|v| SharedInstanceState {
                cooldown: left(v[0]),
                dead: v[1] != 0,
                breaker: match v[2] {
                    2 => SharedBreaker::Trial,
                    1 => SharedBreaker::Hold {
                        remaining: left(v[3]).unwrap_or(Duration::from_millis(1)),
                    },
                    _ => SharedBreaker::Closed,
                },
                probe: u64::try_from(v[4])
                    .ok()
                    .filter(|&seq| seq > 0)
                    .map(|seq| SharedProbe {
                        seq,
                        ok: v[5] != 0,
                        mine: v[6] != 0,
                    }),
            })
            .collect();
        Ok(SyncReply {
            granted: values[..budgets].to_vec(),
            instances,
        })
    }

    async fn lease(
        &self,
        key: &str,
        replica: &str,
        ttl: Duration,
    ) -> Result<bool, SharedStateError> {
        let mut connection = self.manager.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key("lease", key))
            .arg(replica)
            .arg("NX")
            .arg("PX")
            .arg(ms(ttl).max(1));
        let taken: Option<String> = self
            .bounded("lease", cmd.query_async(&mut connection))
            .await?;
        Ok(taken.is_some())
    }

    async fn ping(&self) -> Result<(), SharedStateError> {
        let mut connection = self.manager.clone();
        let pong: String = self
            .bounded("ping", redis::cmd("PING").query_async(&mut connection))
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(SharedStateError::new(format!(
                "Redis answered PING with {pong:?}"
            )))
        }
    }
}
