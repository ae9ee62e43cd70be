//! The sync of a replica with the fleet's shared state: one round trip per interval, off the
//! request path, and local state whenever the store is unreachable.
//!
//! Every `sync_interval` the task gathers, for every instance of the live routing table, what
//! this replica learned (a cooldown, a dead key, its own breaker opening or closing) and what
//! its rpm/tpm leases spent, sends it as one [`SyncBatch`] and applies the reply: new slices of
//! the budgets, the fleet's cooldowns (only ever later), dead keys, and breaker holds (open
//! somewhere in the fleet, or another replica holds the one half-open trial).
//!
//! Redis failure is not gateway failure: each sync is bounded by `timeout`; after
//! [`FAILURES_TO_FALL_BACK`] failures in a row the replica falls back — budgets are then granted
//! from local buckets of the limit divided by the `replicas` hint (or not at all with
//! [`FailMode::Closed`]) — and it tries the store again every `retry_interval`; the first sync
//! that succeeds resumes sharing. No request ever waits for the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use echelon_domain::breaker::{BreakerState, BreakerTransition};
use echelon_domain::defaults::state as defaults;
use echelon_domain::events::{BreakerScope, Event, EventSink};
use echelon_domain::instance::InstanceState;
use echelon_domain::limit::{LimitKind, RateLimiter};
use echelon_domain::name::InstanceId;
use echelon_domain::routing::RoutingTable;
use echelon_domain::shared::{
    BreakerReport, BudgetSync, DeadReport, DynSharedState, FailMode, InstanceSync, SharedBreaker,
    SharedInstanceState, SharingMode, SyncBatch, SyncReply, slice_wanted,
};
use echelon_domain::spec::RateAlgorithm;
use echelon_domain::time::{Clock, Instant};

use crate::gateway::Gateway;
use crate::task::BackgroundTask;

pub use echelon_domain::defaults::state::FAILURES_TO_FALL_BACK;

/// How the sync runs.
#[derive(Debug, Clone)]
pub struct SharedStateOptions {
    /// This replica's name, unique in the fleet.
    pub replica: Box<str>,
    /// Time between two syncs.
    pub sync_interval: Duration,
    /// Time between two attempts to reach the store while falling back.
    pub retry_interval: Duration,
    /// Bound on one sync.
    pub timeout: Duration,
    /// How many replicas share the limits (divides the local budgets while falling back).
    pub replicas: u32,
    /// What budgets do while the store is unreachable.
    pub fail_mode: FailMode,
}

impl Default for SharedStateOptions {
    fn default() -> Self {
        Self {
            replica: "replica".into(),
            sync_interval: defaults::SYNC_INTERVAL,
            retry_interval: defaults::RETRY_INTERVAL,
            timeout: defaults::TIMEOUT,
            replicas: defaults::REPLICAS,
            fail_mode: FailMode::Local,
        }
    }
}

/// The sync's state, readable by metrics and the admin API.
#[derive(Debug)]
pub struct SharingStatus {
    mode: AtomicU8,
    fail_mode: FailMode,
    replicas: u32,
    syncs: AtomicU64,
    failures: AtomicU64,
    fallbacks: AtomicU64,
    last_error: Mutex<Option<Box<str>>>,
}

/// A copy of [`SharingStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharingSnapshot {
    /// Sharing, falling back, or nothing to share.
    pub mode: SharingMode,
    /// What budgets do while falling back.
    pub fail_mode: FailMode,
    /// The `replicas` hint.
    pub replicas: u32,
    /// Syncs that succeeded since start.
    pub syncs: u64,
    /// Syncs that failed since start.
    pub failures: u64,
    /// Times the replica fell back to local state since start.
    pub fallbacks: u64,
    /// The last failure, free of secrets.
    pub last_error: Option<Box<str>>,
}

impl SharingStatus {
    /// The status of a replica that shares nothing (`backend = "memory"`).
    pub fn memory() -> Self {
        Self::new(SharingMode::Memory, FailMode::Local, 1)
    }

    fn new(mode: SharingMode, fail_mode: FailMode, replicas: u32) -> Self {
        Self {
            mode: AtomicU8::new(mode_code(mode)),
            fail_mode,
            replicas,
            syncs: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// The mode now.
    pub fn mode(&self) -> SharingMode {
        match self.mode.load(Ordering::Acquire) {
            1 => SharingMode::Shared,
            2 => SharingMode::Fallback,
            _ => SharingMode::Memory,
        }
    }

    /// A copy of every figure.
    pub fn snapshot(&self) -> SharingSnapshot {
        SharingSnapshot {
            mode: self.mode(),
            fail_mode: self.fail_mode,
            replicas: self.replicas,
            syncs: self.syncs.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    fn set_mode(&self, mode: SharingMode) {
        self.mode.store(mode_code(mode), Ordering::Release);
    }
}

fn mode_code(mode: SharingMode) -> u8 {
    match mode {
        SharingMode::Memory => 0,
        SharingMode::Shared => 1,
        SharingMode::Fallback => 2,
    }
}

/// What this replica last agreed with the fleet about one instance, so that it reports only
/// its own news and never echoes what it adopted.
#[derive(Debug, Default)]
struct Memo {
    /// The latest cooldown end reported or adopted.
    cooldown: Option<Instant>,
    /// The dead-key state last agreed.
    dead: bool,
    /// The breaker state seen at the last sync.
    breaker: Option<BreakerState>,
    /// The open deadline this replica reported as its own.
    reported_open: Option<Instant>,
    /// The open deadline set by a fleet hold.
    held_until: Option<Instant>,
    /// The fleet's latest probe seen (`None` before the first sync: older verdicts are not
    /// applied).
    probe_seq: Option<u64>,
}

/// Budgets and instances of one batch, to apply the reply to.
struct Pending {
    limiters: Vec<(Arc<InstanceState>, LimitKind)>,
    instances: Vec<Arc<InstanceState>>,
}

/// The sync task. See the module docs.
pub struct SharedStateSync {
    gateway: Arc<Gateway>,
    store: Arc<dyn DynSharedState>,
    options: SharedStateOptions,
    status: Arc<SharingStatus>,
    memos: Mutex<HashMap<Box<str>, Memo>>,
    /// Local buckets of limit ÷ replicas, granting budgets while falling back.
    fallback: Mutex<HashMap<Box<str>, RateLimiter>>,
    /// Probe verdicts of this replica not yet reported.
    probes: Mutex<HashMap<Box<str>, bool>>,
}

impl std::fmt::Debug for SharedStateSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStateSync")
            .field("options", &self.options)
            .field("mode", &self.status.mode())
            .finish_non_exhaustive()
    }
}

fn limiter(instance: &InstanceState, kind: LimitKind) -> Option<&RateLimiter> {
    match kind {
        LimitKind::Requests => instance.rpm_limiter(),
        _ => instance.tpm_limiter(),
    }
}

fn key_of(instance: &InstanceState) -> Box<str> {
    instance.id().to_string().into_boxed_str()
}

fn budget_key(instance: &InstanceState, kind: LimitKind) -> Box<str> {
    format!("{}:{}", kind.as_str(), instance.id()).into_boxed_str()
}

impl SharedStateSync {
    /// A sync of `gateway`'s live state through `store`. The gateway's table must be built with
    /// `shared_budgets`, so that limits admit nothing the fleet has not granted.
    pub fn new(
        gateway: Arc<Gateway>,
        store: Arc<dyn DynSharedState>,
        options: SharedStateOptions,
    ) -> Self {
        let status = Arc::new(SharingStatus::new(
            SharingMode::Shared,
            options.fail_mode,
            options.replicas.max(1),
        ));
        Self {
            gateway,
            store,
            options,
            status,
            memos: Mutex::new(HashMap::new()),
            fallback: Mutex::new(HashMap::new()),
            probes: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this replica probes `instance` this interval: true when it takes the fleet's
    /// probe lease, and whenever the store cannot say (falling back, or no answer in time), so
    /// that a replica on its own still probes.
    pub async fn probe_turn(&self, instance: &InstanceId, interval: Duration) -> bool {
        if self.status.mode() != SharingMode::Shared {
            return true;
        }
        let key = format!("probe:{instance}");
        // A little shorter than the interval, so the holder's next round finds it free.
        let ttl = interval.mul_f64(0.9).max(Duration::from_millis(1));
        let lease = self.store.lease_boxed(&key, &self.options.replica, ttl);
        !matches!(
            tokio::time::timeout(self.options.timeout, lease).await,
            Ok(Ok(false))
        )
    }

    /// Queues the verdict of a probe this replica ran, for the next sync.
    pub fn report_probe(&self, instance: &InstanceId, ok: bool) {
        self.probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(instance.to_string().into_boxed_str(), ok);
    }

    /// The sync's status.
    pub fn status(&self) -> Arc<SharingStatus> {
        Arc::clone(&self.status)
    }

    /// Runs the sync until stopped.
    pub fn spawn(self: Arc<Self>) -> BackgroundTask {
        BackgroundTask::spawn("shared state sync", move |mut stop| async move {
            let mut failures = 0u32;
            let mut retry_at = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(self.options.sync_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => break,
                }
                let falling_back = self.status.mode() == SharingMode::Fallback;
                if falling_back {
                    self.grant_locally();
                    if tokio::time::Instant::now() < retry_at {
                        continue;
                    }
                }
                match self.sync_once().await {
                    Ok(()) => {
                        failures = 0;
                        if falling_back {
                            tracing::info!(
                                "shared state reachable again: limits, cooldowns and breakers are shared"
                            );
                            self.status.set_mode(SharingMode::Shared);
                        }
                    }
                    Err(error) => {
                        failures += 1;
                        retry_at = tokio::time::Instant::now() + self.options.retry_interval;
                        if !falling_back && failures >= FAILURES_TO_FALL_BACK {
                            tracing::warn!(
                                %error,
                                fail_mode = self.options.fail_mode.as_str(),
                                "shared state unreachable: falling back to local state"
                            );
                            self.status.fallbacks.fetch_add(1, Ordering::Relaxed);
                            self.status.set_mode(SharingMode::Fallback);
                            self.grant_locally();
                        }
                    }
                }
            }
        })
    }

    /// One sync: gather, exchange (bounded by the timeout), apply.
    ///
    /// # Errors
    /// When the store fails or does not answer in time; nothing is applied then.
    pub async fn sync_once(&self) -> Result<(), echelon_domain::shared::SharedStateError> {
        let table = Arc::clone(&self.gateway.generation().table);
        let now = self.gateway.clock().now();
        let (batch, pending) = self.gather(&table, now);
        let result = tokio::time::timeout(self.options.timeout, self.store.sync_boxed(&batch))
            .await
            .unwrap_or_else(|_| {
                Err(echelon_domain::shared::SharedStateError::new(format!(
                    "shared state sync timed out after {}",
                    echelon_domain::time::DurationText(self.options.timeout)
                )))
            });
        match result {
            Ok(reply) => {
                let now = self.gateway.clock().now();
                self.apply(&table, &pending, &reply, now);
                self.status.syncs.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(error) => {
                // Nothing was granted: the debts stay in the balances for the next sync.
                self.status.failures.fetch_add(1, Ordering::Relaxed);
                *self
                    .status
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(error.message.clone());
                Err(error)
            }
        }
    }

    fn gather(&self, table: &RoutingTable, now: Instant) -> (SyncBatch, Pending) {
        let mut memos = self.memos.lock().unwrap_or_else(PoisonError::into_inner);
        let mut probes =
            std::mem::take(&mut *self.probes.lock().unwrap_or_else(PoisonError::into_inner));
        let mut batch = SyncBatch {
            replica: self.options.replica.clone(),
            ..SyncBatch::default()
        };
        let mut pending = Pending {
            limiters: Vec::new(),
            instances: Vec::new(),
        };
        for instance in table.instances() {
            for kind in [LimitKind::Requests, LimitKind::Tokens] {
                let Some(limiter) = limiter(instance, kind) else {
                    continue;
                };
                let (debt, want) = slice_wanted(
                    limiter.per_minute(),
                    self.options.replicas,
                    limiter.lease().take_demand(),
                );
                batch.budgets.push(BudgetSync {
                    key: budget_key(instance, kind),
                    per_minute: limiter.per_minute(),
                    debt,
                    want,
                });
                pending.limiters.push((Arc::clone(instance), kind));
            }
            let memo = memos.entry(key_of(instance)).or_default();
            batch.instances.push(InstanceSync {
                key: key_of(instance),
                cooldown: report_cooldown(instance, memo, now),
                dead: report_dead(instance, memo),
                breaker: report_breaker(instance, memo, now),
                probe: probes.remove(&*key_of(instance)),
            });
            pending.instances.push(Arc::clone(instance));
        }
        (batch, pending)
    }

    fn apply(&self, table: &RoutingTable, pending: &Pending, reply: &SyncReply, now: Instant) {
        for ((instance, kind), granted) in pending.limiters.iter().zip(&reply.granted) {
            if let Some(limiter) = limiter(instance, *kind) {
                limiter.lease().credit(*granted);
            }
        }
        let sink = table.sink();
        let mut memos = self.memos.lock().unwrap_or_else(PoisonError::into_inner);
        for (instance, shared) in pending.instances.iter().zip(&reply.instances) {
            let memo = memos
                .entry(instance.id().to_string().into_boxed_str())
                .or_default();
            self.adopt(instance, memo, shared, now, sink);
        }
    }

    fn adopt(
        &self,
        instance: &InstanceState,
        memo: &mut Memo,
        shared: &SharedInstanceState,
        now: Instant,
        sink: &dyn EventSink,
    ) {
        if let Some(left) = shared.cooldown {
            let until = now + left;
            let local = instance.cooldown_until(now);
            // A millisecond of slack: the store rounds to milliseconds.
            if local.is_none_or(|l| until > l + Duration::from_millis(1)) {
                instance.start_cooldown(until, None, sink);
            }
            memo.cooldown = memo.cooldown.max(Some(until));
        }
        if shared.dead != instance.is_key_dead() {
            if shared.dead {
                instance.mark_key_dead(sink);
            } else {
                instance.revive_key();
                sink.record(&Event::KeyRevived {
                    instance: instance.id().clone(),
                });
            }
        }
        memo.dead = shared.dead;
        if let Some(probe) = shared.probe {
            if !probe.mine && memo.probe_seq.is_some_and(|seen| probe.seq > seen) {
                instance.record_probe(now, probe.ok, sink);
            }
            memo.probe_seq = Some(probe.seq);
        } else if memo.probe_seq.is_none() {
            memo.probe_seq = Some(0);
        }
        let breaker = instance.breaker();
        let mut close_fleet = false;
        match shared.breaker {
            SharedBreaker::Hold { remaining } => {
                // Held at least two intervals, so that a hold never lapses between syncs.
                let until = now + remaining.max(self.options.sync_interval * 2);
                if breaker.open_until(now).is_none_or(|u| u < until) {
                    if let Some(t) = breaker.hold_open(until) {
                        emit(instance, t, sink);
                    }
                    memo.held_until = Some(until);
                }
            }
            SharedBreaker::Trial => {
                // This replica holds the fleet's trial: a hold of ours ends now. Closed here (it
                // never saw the failures), its own traffic is the trial: it reports the close.
                if memo.held_until.take().is_some() && breaker.open_until(now).is_some() {
                    breaker.hold_open(now);
                } else if breaker.state(now) == BreakerState::Closed {
                    close_fleet = true;
                }
            }
            SharedBreaker::Closed => {
                if memo.held_until.take().is_some() && breaker.state(now) != BreakerState::Closed {
                    breaker.reset();
                    emit(
                        instance,
                        BreakerTransition {
                            from: BreakerState::Open,
                            to: BreakerState::Closed,
                            open_until: None,
                        },
                        sink,
                    );
                }
            }
        }
        // A close to report reads as "was not closed" at the next sync.
        memo.breaker = Some(if close_fleet {
            BreakerState::HalfOpen
        } else {
            breaker.state(now)
        });
    }

    /// Grants every budget from local buckets of limit ÷ replicas (nothing with
    /// [`FailMode::Closed`]), as the store would.
    fn grant_locally(&self) {
        if self.options.fail_mode == FailMode::Closed {
            return;
        }
        let table = Arc::clone(&self.gateway.generation().table);
        let now = self.gateway.clock().now();
        let replicas = self.options.replicas.max(1);
        let mut buckets = self.fallback.lock().unwrap_or_else(PoisonError::into_inner);
        for instance in table.instances() {
            for kind in [LimitKind::Requests, LimitKind::Tokens] {
                let Some(limiter) = limiter(instance, kind) else {
                    continue;
                };
                let share = limiter.per_minute().div_ceil(replicas).max(1);
                let bucket = buckets
                    .entry(budget_key(instance, kind))
                    .or_insert_with(|| {
                        RateLimiter::new(kind, share, RateAlgorithm::TokenBucket, now)
                    });
                let (debt, want) = slice_wanted(
                    limiter.per_minute(),
                    replicas,
                    limiter.lease().take_demand(),
                );
                let debt_units = i64::try_from(debt).unwrap_or(i64::MAX);
                bucket.adjust(now, debt_units);
                let mut granted = debt_units;
                if want < 0 {
                    bucket.adjust(now, want);
                    granted += want;
                } else {
                    let take = u32::try_from(want)
                        .unwrap_or(u32::MAX)
                        .min(bucket.available(now));
                    if take > 0 && bucket.try_acquire(now, take).is_ok() {
                        granted += i64::from(take);
                    }
                }
                limiter.lease().credit(granted);
            }
        }
    }
}

fn emit(instance: &InstanceState, t: BreakerTransition, sink: &dyn EventSink) {
    sink.record(&Event::Breaker {
        scope: BreakerScope::Instance(instance.id().clone()),
        from: t.from,
        to: t.to,
        open_until: t.open_until,
    });
}

/// The local cooldown's time left, when it ends later than anything reported or adopted.
fn report_cooldown(instance: &InstanceState, memo: &mut Memo, now: Instant) -> Option<Duration> {
    let until = instance.cooldown_until(now)?;
    if memo
        .cooldown
        .is_some_and(|known| until <= known + Duration::from_millis(1))
    {
        return None;
    }
    memo.cooldown = Some(until);
    Some(until - now)
}

fn report_dead(instance: &InstanceState, memo: &Memo) -> DeadReport {
    match (instance.is_key_dead(), memo.dead) {
        (true, false) => DeadReport::Dead,
        (false, true) => DeadReport::Revived,
        _ => DeadReport::Unchanged,
    }
}

/// The breaker's own news: an open deadline it did not adopt, or a close.
fn report_breaker(instance: &InstanceState, memo: &mut Memo, now: Instant) -> BreakerReport {
    let breaker = instance.breaker();
    let state = breaker.state(now);
    let before = memo.breaker.replace(state);
    if let Some(until) = breaker.open_until(now)
        && memo.held_until != Some(until)
        && memo.reported_open != Some(until)
    {
        memo.reported_open = Some(until);
        memo.held_until = None;
        return BreakerReport::Opened {
            remaining: until - now,
        };
    }
    if state == BreakerState::Closed && before.is_some_and(|b| b != BreakerState::Closed) {
        memo.reported_open = None;
        return BreakerReport::Closed;
    }
    BreakerReport::Unchanged
}
