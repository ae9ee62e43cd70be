//! State shared by the replicas of one gateway: the shared state port and what crosses it.
//!
//! Replicas never ask the store on a request's path. Each one keeps its live state in memory (the
//! rate limiters' [`crate::limit::Lease`]s, cooldowns, dead keys, breakers) and a background sync
//! exchanges one [`SyncBatch`] for one [`SyncReply`] per interval: it hands back what it learned
//! (a cooldown, a dead key, a breaker that opened or closed), pays its debts and asks for new
//! slices of the budgets, and takes in what the other replicas learned. Deadlines cross the port
//! as durations from now, so the store's clock is the fleet's one clock and replicas whose
//! clocks disagree still agree on when a cooldown ends.

use core::future::Future;
use core::time::Duration;

use crate::limit::LeaseDemand;
use crate::ports::BoxFuture;

/// How long the replica that takes the fleet's half-open trial of an instance holds it: until
/// its trial reports, or at most this long (if it dies or gets no traffic, another one takes it).
pub const TRIAL_LEASE: Duration = Duration::from_secs(5);

/// What a replica does with shared budgets while the store is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum FailMode {
    /// Keep serving on local state: each budget is the limit divided by the `replicas` hint.
    #[default]
    Local,
    /// Refuse what the shared budgets guard (instances with rpm/tpm limits answer as
    /// saturated) until the store is back; everything else keeps serving.
    Closed,
}

impl FailMode {
    /// The stable snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Closed => "closed",
        }
    }
}

/// Whether a replica is sharing state right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum SharingMode {
    /// One process, nothing shared (`[state] backend = "memory"`).
    Memory,
    /// Syncing with the store.
    Shared,
    /// The store is unreachable: local state, following the fail mode, until a retry succeeds.
    Fallback,
}

impl SharingMode {
    /// The stable snake_case name, for metrics, logs and the admin API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Shared => "shared",
            Self::Fallback => "fallback",
        }
    }
}

/// The slice of a budget of `per_minute` a replica asks for, given what its lease saw since the
/// last sync: the debt to pay and the units wanted on top (negative: handed back).
///
/// The slice aims at twice the last interval's spending, or the largest slice when an admission
/// was refused for want of balance, and is never larger than `per_minute` ×
/// [`crate::defaults::state::LEASE_FRACTION`] / `replicas` (at least one unit). So the fleet
/// holds at most about that fraction of the limit unspent at any time, and an idle replica
/// holds one unit.
pub fn slice_wanted(per_minute: u32, replicas: u32, demand: LeaseDemand) -> (u64, i64) {
    let share =
        f64::from(per_minute) * crate::defaults::state::LEASE_FRACTION / f64::from(replicas.max(1));
    // A float of at most u32::MAX × 0.05: the cast neither wraps nor loses the sign.
    #[allow(clippy::cast_possible_truncation)]
    let largest = (share.floor() as i64).max(1);
    let target = if demand.starved {
        largest
    } else {
        demand.spent.saturating_mul(2).clamp(1, largest)
    };
    let debt = demand.balance.min(0).unsigned_abs();
    (debt, target - demand.balance.max(0))
}

/// The shared state port failed (unreachable, timed out, refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shared state unavailable: {message}")]
pub struct SharedStateError {
    /// What went wrong, free of secrets (never the store's URL or password).
    pub message: Box<str>,
}

impl SharedStateError {
    /// An error with `message`.
    pub fn new(message: impl Into<Box<str>>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// One replica's side of a sync.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncBatch {
    /// The replica's name, unique in the fleet (it owns trial leases by it).
    pub replica: Box<str>,
    /// The budgets this replica draws on.
    pub budgets: Vec<BudgetSync>,
    /// What this replica knows about its instances.
    pub instances: Vec<InstanceSync>,
}

/// One budget (an instance's rpm or tpm) in a sync: the debt to pay and the slice wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSync {
    /// The budget's name, the same on every replica (`rpm:openai/gpt-4o#0`).
    pub key: Box<str>,
    /// The fleet-wide limit per minute; the shared bucket holds at most this and refills at it.
    pub per_minute: u32,
    /// Units charged beyond the lease since the last sync: taken from the bucket whatever it
    /// holds (it may go below zero, which delays every replica's next slice).
    pub debt: u64,
    /// Units wanted on top of the debt (taken only as far as the bucket holds them), or, when
    /// negative, units handed back.
    pub want: i64,
}

/// What a replica reports about an instance in a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSync {
    /// The instance's name, the same on every replica (`openai/gpt-4o#0`).
    pub key: Box<str>,
    /// Time left of the local cooldown; the shared one becomes the later of the two.
    pub cooldown: Option<Duration>,
    /// A dead-key change seen here since the last sync.
    pub dead: DeadReport,
    /// A breaker change of this replica's own since the last sync.
    pub breaker: BreakerReport,
    /// The verdict of an active probe this replica ran since the last sync (true: healthy).
    pub probe: Option<bool>,
}

/// A dead-key change to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReport {
    /// Nothing changed here.
    Unchanged,
    /// The upstream refused the key (401/403) here.
    Dead,
    /// A probe here (or a reload) revived the key.
    Revived,
}

/// A breaker change of this replica's own to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerReport {
    /// Nothing changed here.
    Unchanged,
    /// The breaker opened here (a trip, or a failed trial) for this long.
    Opened {
        /// Time left until it admits a trial.
        remaining: Duration,
    },
    /// The breaker closed here (its trial succeeded).
    Closed,
}

/// The store's side of a sync: one entry per budget and per instance of the batch, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncReply {
    /// Units granted per budget (the debt included; negative: units handed back).
    pub granted: Vec<i64>,
    /// The fleet's view of each instance.
    pub instances: Vec<SharedInstanceState>,
}

/// The fleet's view of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SharedInstanceState {
    /// Time left of the fleet's cooldown.
    pub cooldown: Option<Duration>,
    /// Whether some replica saw the key refused and no probe has revived it since.
    pub dead: bool,
    /// What the fleet's breaker says this replica may do.
    pub breaker: SharedBreaker,
    /// The fleet's latest probe verdict of the instance, if any replica probed it.
    pub probe: Option<SharedProbe>,
}

/// The latest active probe of an instance, whichever replica ran it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedProbe {
    /// Increases with every probe reported by any replica.
    pub seq: u64,
    /// The verdict (true: healthy).
    pub ok: bool,
    /// Whether this sync reported it (the replica has applied it already).
    pub mine: bool,
}

/// The fleet's breaker of one instance, from one replica's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SharedBreaker {
    /// Closed: calls flow.
    #[default]
    Closed,
    /// Refuse calls for this long: the breaker is open somewhere in the fleet, or another
    /// replica holds the half-open trial.
    Hold {
        /// How long to keep refusing.
        remaining: Duration,
    },
    /// This replica holds the fleet's half-open trial: let the local breaker admit it.
    Trial,
}

/// The shared state port: one round trip per sync, plus the health-probe lease.
///
/// One replica probes each instance per interval (the one holding its lease) and reports the
/// verdict in its next sync; the others apply it when they see a newer `seq`.
///
/// Every call of an adapter has a short timeout of its own; the caller also bounds it, and a
/// failure only makes the replica fall back to local state, never fails a request.
pub trait SharedState: Send + Sync {
    /// Exchanges this replica's batch for the fleet's reply, atomically in the store.
    fn sync(
        &self,
        batch: &SyncBatch,
    ) -> impl Future<Output = Result<SyncReply, SharedStateError>> + Send;

    /// Takes the lease `key` for `ttl` if no replica holds it: true when this replica may run
    /// the job it guards (one health probe of an instance per interval across the fleet).
    fn lease(
        &self,
        key: &str,
        replica: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, SharedStateError>> + Send;

    /// Whether the store answers.
    fn ping(&self) -> impl Future<Output = Result<(), SharedStateError>> + Send;
}

/// The object-safe form of [`SharedState`], implemented for every `SharedState`.
pub trait DynSharedState: Send + Sync {
    /// See [`SharedState::sync`].
    fn sync_boxed<'a>(
        &'a self,
        batch: &'a SyncBatch,
    ) -> BoxFuture<'a, Result<SyncReply, SharedStateError>>;
    /// See [`SharedState::lease`].
    fn lease_boxed<'a>(
        &'a self,
        key: &'a str,
        replica: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, SharedStateError>>;
    /// See [`SharedState::ping`].
    fn ping_boxed(&self) -> BoxFuture<'_, Result<(), SharedStateError>>;
}

impl<T: SharedState> DynSharedState for T {
    fn sync_boxed<'a>(
        &'a self,
        batch: &'a SyncBatch,
    ) -> BoxFuture<'a, Result<SyncReply, SharedStateError>> {
        Box::pin(self.sync(batch))
    }

    fn lease_boxed<'a>(
        &'a self,
        key: &'a str,
        replica: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, SharedStateError>> {
        Box::pin(self.lease(key, replica, ttl))
    }

    fn ping_boxed(&self) -> BoxFuture<'_, Result<(), SharedStateError>> {
        Box::pin(self.ping())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(balance: i64, spent: i64, starved: bool) -> LeaseDemand {
        LeaseDemand {
            balance,
            spent,
            starved,
        }
    }

    #[test]
    fn slices_follow_demand_within_the_fraction_of_the_limit() {
        // 60 rpm over 3 replicas: at most one unit each.
        assert_eq!(slice_wanted(60, 3, demand(0, 0, true)), (0, 1));
        // 6,000 rpm over 3: at most 100; twice the spending otherwise; one unit when idle.
        assert_eq!(slice_wanted(6_000, 3, demand(0, 0, true)), (0, 100));
        assert_eq!(slice_wanted(6_000, 3, demand(5, 20, false)), (0, 35));
        assert_eq!(slice_wanted(6_000, 3, demand(0, 0, false)), (0, 1));
        // A surplus goes back; a debt is paid before anything new.
        assert_eq!(slice_wanted(6_000, 3, demand(90, 1, false)), (0, -88));
        assert_eq!(slice_wanted(6_000, 1, demand(-40, 500, true)), (40, 300));
    }
}
