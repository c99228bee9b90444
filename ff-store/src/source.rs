//! `Source`: owns the current snapshot and keeps it fresh from a store.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::error::StoreError;
use crate::store::{Store, SyncReport, sync};
use ff_core::FlagDecl;
use ff_core::Lease;
use ff_core::Pins;
use ff_core::Snapshot;
use ff_core::Usage;
use ff_core::{Lifetimes, StoreState};

/// Most changes read per round trip while catching up.
const CHANGE_BATCH: u32 = 1000;

/// Sources a thread keeps a lease for (an application has one or two).
const MAX_LEASES: usize = 4;

thread_local! {
    /// This thread's lease per source (by address), on that source's current
    /// snapshot as of this thread's last request.
    static LEASES: std::cell::RefCell<Vec<(std::sync::Weak<Shared>, Arc<Lease>)>> = const { std::cell::RefCell::new(Vec::new()) };
}
const SNAPSHOT_FORMAT: &str = "ff-snapshot/1";

/// The current flag snapshot, kept fresh by a background task.
///
/// Clones share one snapshot and one task; the task stops when the last clone is dropped.
///
/// ```no_run
/// # async fn demo() -> Result<(), ff_store::StoreError> {
/// use ff_core::Flag;
/// use ff_store::{Source, SqlStore};
/// const NEW_CHECKOUT: Flag<bool> = Flag::new("NEW_CHECKOUT", false);
///
/// let store = SqlStore::connect_lazy("sqlite://flags.db?mode=rwc")?;
/// let source = Source::builder(store).declare([NEW_CHECKOUT.decl()]).start().await;
/// let snapshot = source.snapshot();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Source {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::AbortHandle::abort);
    }
}

struct Shared {
    current: ArcSwap<Snapshot>,
    status: watch::Sender<Status>,
    nudge: Notify,
    sync_report: Mutex<Option<SyncReport>>,
    /// Evaluation counters of every snapshot this source builds.
    usage: Arc<Usage>,
    /// Values the environment pins, given to every snapshot this source installs.
    pins: Arc<Pins>,
    /// Environment variables refused at start, with why.
    env_problems: Vec<(String, String)>,
    /// What requests to guarded flags' variations did, as the layer counts them.
    guard_telemetry: Arc<ff_core::guard::Telemetry>,
    /// The guardian's view of each guarded flag.
    guard_states: Mutex<Vec<crate::guard::GuardState>>,
}

/// Where the current snapshot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Nothing loaded yet: code defaults.
    Defaults,
    /// The snapshot saved on disk by an earlier run.
    SavedFile,
    /// The store.
    Store,
    /// Set directly (tests, fixed snapshots).
    Manual,
}

/// How fresh the served snapshot is.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// Where the snapshot came from.
    pub origin: Origin,
    /// The snapshot's version.
    pub version: u64,
    /// When the store last answered (a load, a poll or a change).
    pub last_success: Option<Instant>,
    /// The last error, cleared by the next success.
    pub last_error: Option<String>,
    /// Consecutive failed attempts.
    pub failures: u32,
}

impl Status {
    /// Whether the snapshot may be out of date: not loaded from the store yet, or
    /// the last attempt to reach it failed.
    pub fn is_stale(&self) -> bool {
        self.origin != Origin::Manual && (self.origin != Origin::Store || self.last_error.is_some())
    }

    /// Time since the store last answered; `None` if it never has.
    pub fn age(&self) -> Option<Duration> {
        self.last_success.map(|t| t.elapsed())
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source").field("status", &*self.inner.shared.status.borrow()).finish_non_exhaustive()
    }
}

/// Configures and starts a [`Source`].
#[derive(Debug)]
pub struct SourceBuilder {
    store: Arc<dyn Store>,
    decls: Vec<FlagDecl>,
    /// Whether the declarations registered in the binary are synced too.
    found: bool,
    lifetimes: Lifetimes,
    expiry_warning_interval: Duration,
    usage_interval: Duration,
    guard_interval: Duration,
    attributes: Vec<String>,
    snapshot_file: Option<PathBuf>,
    startup_timeout: Duration,
    poll_interval: Duration,
    retry_min: Duration,
    retry_max: Duration,
    env: Env,
}

/// Where environment overrides come from.
#[derive(Debug)]
enum Env {
    Process,
    Given(Vec<(String, String)>),
    Off,
}

impl SourceBuilder {
    /// Whether `FF_<KEY>=value` in the process environment pins a declared flag for
    /// this process (default: yes). A pin comes before everything in the evaluation
    /// order (reason `env`); a value that does not fit the declaration is refused
    /// with a warning naming the variable. See [`env_var_name`](crate::env_var_name).
    pub fn env_overrides(mut self, on: bool) -> Self {
        self.env = if on { Env::Process } else { Env::Off };
        self
    }

    /// Reads environment overrides from `vars` instead of the process environment
    /// (tests; the process environment cannot be changed safely while threads run).
    pub fn env_vars(
        mut self,
        vars: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
    ) -> Self {
        self.env = Env::Given(vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect());
        self
    }

    /// Declarations to sync into the store on start (missing keys are created
    /// with their code defaults; undeclared keys are reported, never deleted), besides
    /// those the binary registers ([`ff_core::declared`]: derived config structs and
    /// [`ff_core::declare!`]), which are synced without being named here.
    pub fn declare(mut self, decls: impl IntoIterator<Item = FlagDecl>) -> Self {
        self.decls.extend(decls);
        self
    }

    /// Whether the declarations registered in the binary ([`ff_core::declared`]) are
    /// synced (default: yes). Off, only those given to [`declare`](Self::declare) are.
    pub fn found_declarations(mut self, on: bool) -> Self {
        self.found = on;
        self
    }

    /// How long temporary flags created by the sync live when their declaration
    /// names no expiry date (default: release and experiment 40 days, ops 7).
    pub fn lifetimes(mut self, lifetimes: Lifetimes) -> Self {
        self.lifetimes = lifetimes;
        self
    }

    /// How often evaluation counts are written to the store, one upsert per flag
    /// evaluated since the last write (default 60 s).
    pub fn usage_interval(mut self, every: Duration) -> Self {
        self.usage_interval = every.max(Duration::from_millis(10));
        self
    }

    /// How often the guardian tests guarded rollouts and acts (default 1 s).
    pub fn guard_interval(mut self, every: Duration) -> Self {
        self.guard_interval = every.max(Duration::from_millis(10));
        self
    }

    /// How often expired flags are logged at WARN (default hourly; first at start).
    pub fn expiry_warning_interval(mut self, every: Duration) -> Self {
        self.expiry_warning_interval = every;
        self
    }

    /// Context attributes the application's `MakeContext` provides (plan, org_id...):
    /// synced into the store on start; once any are declared, targeting that reads an
    /// undeclared attribute is refused on write.
    pub fn attributes(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.attributes.extend(names.into_iter().map(Into::into));
        self
    }

    /// Saves every new snapshot to `path`, and serves it at start while the store is unreachable.
    pub fn snapshot_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.snapshot_file = Some(path.into());
        self
    }

    /// How long [`start`](Self::start) waits for the first load before serving
    /// defaults (or the saved snapshot). Default 5 s.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// How often the store is polled for changes it did not signal. Default 500 ms.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Bounds of the exponential backoff while the store is unreachable. Default 100 ms
    /// to 1 s (jittered ±25 %), so an instance is current again about a second after
    /// its database returns; raise the maximum to spare a database with very many
    /// instances from their retries.
    pub fn retry_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.retry_min = min;
        self.retry_max = max.max(min);
        self
    }

    /// [`try_start`](Self::try_start) for declarations known to agree.
    ///
    /// # Panics
    /// If two declarations of one key differ, or a config's code defaults break one
    /// of its rules: a mistake in the program, found at start (as axum refuses
    /// overlapping routes).
    pub async fn start(self) -> Source {
        match self.try_start().await {
            Ok(source) => source,
            Err(e) => panic!("ff: {e}"),
        }
    }

    /// Starts the background task and waits (at most the startup timeout) for the
    /// first load. An unreachable store is no error: code defaults (or the saved
    /// snapshot) are served while the task keeps retrying. The one error: the
    /// declarations disagree (one key declared twice differently, or a config's
    /// code defaults breaking its own rule), each place named.
    pub async fn try_start(mut self) -> Result<Source, ff_core::DeclarationError> {
        let found = if self.found { ff_core::declared_at()? } else { Vec::new() };
        let given = std::mem::take(&mut self.decls).into_iter().map(|d| (d, "SourceBuilder::declare"));
        self.decls = ff_core::merge_declarations(found.into_iter().chain(given))?;
        let usage = Arc::new(Usage::default());
        let (pins, env_problems) = match &self.env {
            Env::Process => Pins::from_env(&self.decls, |name| std::env::var(name).ok()),
            Env::Given(vars) => Pins::from_env(&self.decls, |name| {
                vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
            }),
            Env::Off => Default::default(),
        };
        for (variable, problem) in &env_problems {
            tracing::warn!(%variable, %problem, "ff: ignoring an environment override");
        }
        for (flag, value) in pins.iter() {
            tracing::warn!(%flag, %value, "ff: flag pinned by the environment for this process");
        }
        let pins = Arc::new(pins);
        let (initial, origin) =
            match self.snapshot_file.as_deref().and_then(|p| read_snapshot_file(p, &usage, &pins)) {
                Some(s) => (s, Origin::SavedFile),
                None => (
                    Snapshot::from_state_pinned(&StoreState::default(), usage.clone(), pins.clone()),
                    Origin::Defaults,
                ),
            };
        let shared = Arc::new(Shared {
            status: watch::Sender::new(Status {
                origin,
                version: initial.version(),
                last_success: None,
                last_error: None,
                failures: 0,
            }),
            current: ArcSwap::from_pointee(initial),
            nudge: Notify::new(),
            sync_report: Mutex::new(None),
            usage: usage.clone(),
            pins,
            env_problems,
            guard_telemetry: Default::default(),
            guard_states: Mutex::new(Vec::new()),
        });
        let mut status = shared.status.subscribe();
        let startup_timeout = self.startup_timeout;
        let collector = tokio::spawn(collect_usage(self.store.clone(), shared.clone(), self.usage_interval));
        let guardian = tokio::spawn(guard_rollouts(self.store.clone(), shared.clone(), self.guard_interval));
        let task = tokio::spawn(run(shared.clone(), self));
        let timeout = tokio::time::sleep(startup_timeout);
        tokio::pin!(timeout);
        loop {
            if status.borrow_and_update().origin == Origin::Store {
                break;
            }
            tokio::select! {
                _ = &mut timeout => {
                    tracing::warn!("ff: flag store not loaded within the startup timeout; serving defaults meanwhile");
                    break;
                }
                r = status.changed() => if r.is_err() { break },
            }
        }
        Ok(Source {
            inner: Arc::new(Inner {
                shared,
                tasks: vec![task.abort_handle(), collector.abort_handle(), guardian.abort_handle()],
            }),
        })
    }
}

impl Source {
    /// A builder for a source fed by `store`.
    pub fn builder(store: impl Store) -> SourceBuilder {
        Self::builder_arc(Arc::new(store))
    }

    /// Like [`Source::builder`], for a shared store.
    pub fn builder_arc(store: Arc<dyn Store>) -> SourceBuilder {
        SourceBuilder {
            store,
            decls: Vec::new(),
            found: true,
            lifetimes: Lifetimes::default(),
            expiry_warning_interval: Duration::from_secs(3600),
            usage_interval: Duration::from_secs(60),
            guard_interval: Duration::from_secs(1),
            attributes: Vec::new(),
            snapshot_file: None,
            startup_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(500),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            env: Env::Process,
        }
    }

    /// A source that always serves `snapshot` (no store, no task).
    pub fn fixed(snapshot: Snapshot) -> Self {
        let shared = Arc::new(Shared {
            usage: snapshot.usage().clone(),
            status: watch::Sender::new(Status {
                origin: Origin::Manual,
                version: snapshot.version(),
                last_success: None,
                last_error: None,
                failures: 0,
            }),
            current: ArcSwap::from_pointee(snapshot),
            nudge: Notify::new(),
            sync_report: Mutex::new(None),
            pins: Arc::default(),
            env_problems: Vec::new(),
            guard_telemetry: Default::default(),
            guard_states: Mutex::new(Vec::new()),
        });
        Source { inner: Arc::new(Inner { shared, tasks: Vec::new() }) }
    }

    /// The current snapshot. Lock-free.
    #[inline]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.shared.current.load_full()
    }

    /// The current snapshot, leased by this thread: what the layer calls once per
    /// request. Requests on one thread share the lease, so no request writes the
    /// snapshot's reference count, which all threads share (see [`Lease`]).
    #[inline(always)]
    pub fn lease(&self) -> Arc<Lease> {
        let shared = &self.inner.shared;
        let current = shared.current.load();
        let leased = LEASES.try_with(|leases| {
            let mut leases = leases.try_borrow_mut().ok()?;
            let i = leases.iter().position(|(source, _)| std::ptr::eq(source.as_ptr(), Arc::as_ptr(shared)));
            // A lease on another snapshot (this one's or a dropped source's) is replaced.
            match i.map(|i| &mut leases[i]) {
                Some((_, lease)) if Arc::ptr_eq(lease.snapshot(), &current) => Some(lease.clone()),
                Some((source, lease)) => {
                    // (Also when a dropped source's address was reused: the lease held
                    // that source's snapshot, so it never matches this one's.)
                    *source = Arc::downgrade(shared);
                    *lease = Lease::for_thread(arc_swap::Guard::into_inner(current));
                    Some(lease.clone())
                }
                None => {
                    // A dropped source's lease goes, with the snapshot it held.
                    leases.retain(|(source, _)| source.strong_count() > 0);
                    let lease = Lease::for_thread(arc_swap::Guard::into_inner(current));
                    if leases.len() == MAX_LEASES {
                        leases.remove(0);
                    }
                    leases.push((Arc::downgrade(shared), lease.clone()));
                    Some(lease)
                }
            }
        });
        leased.ok().flatten().unwrap_or_else(|| Lease::new(shared.current.load_full()))
    }

    /// How fresh the snapshot is.
    pub fn status(&self) -> Status {
        self.inner.shared.status.borrow().clone()
    }

    /// Follows status changes (new versions, errors).
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.inner.shared.status.subscribe()
    }

    /// Waits until the snapshot's version is at least `version`; false on timeout.
    pub async fn wait_for_version(&self, version: u64, timeout: Duration) -> bool {
        let mut rx = self.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| s.version >= version)).await.is_ok_and(|r| r.is_ok())
    }

    /// Asks the background task to check the store now rather than at the next poll.
    pub fn refresh_soon(&self) {
        self.inner.shared.nudge.notify_one();
    }

    /// What requests to each guarded flag's variations did (errors, latency), as
    /// `FlagsLayer` counts them.
    pub fn guard_telemetry(&self) -> &Arc<ff_core::guard::Telemetry> {
        &self.inner.shared.guard_telemetry
    }

    /// Each guarded flag's test and counts, as this source's guardian last saw them.
    pub fn guard_states(&self) -> Vec<crate::guard::GuardState> {
        self.inner.shared.guard_states.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// This source's evaluation counters (flushed to the store by the source itself).
    pub fn usage(&self) -> &Arc<Usage> {
        &self.inner.shared.usage
    }

    /// Environment variables (`FF_<KEY>`) refused at start, with why; the pins that
    /// took are in [`Snapshot::pinned`].
    pub fn env_problems(&self) -> &[(String, String)] {
        &self.inner.shared.env_problems
    }

    /// What syncing the declarations found, once it has run.
    pub fn sync_report(&self) -> Option<SyncReport> {
        self.inner.shared.sync_report.lock().ok().and_then(|r| r.clone())
    }

    /// Replaces the snapshot (sources without a store: tests, fixed snapshots).
    #[cfg(feature = "test-util")]
    pub(crate) fn replace(&self, snapshot: Snapshot) {
        let version = snapshot.version();
        self.inner.shared.current.store(Arc::new(snapshot));
        self.inner.shared.status.send_modify(|s| {
            s.version = version;
            s.origin = Origin::Manual;
        });
    }
}

impl Shared {
    fn install(&self, snapshot: Snapshot) {
        let version = snapshot.version();
        self.current.store(Arc::new(snapshot));
        self.status.send_modify(|s| {
            s.origin = Origin::Store;
            s.version = version;
        });
    }

    fn succeeded(&self) {
        self.status.send_if_modified(|s| {
            let changed = s.last_error.is_some();
            if changed {
                tracing::info!(after_failures = s.failures, "ff: flag store reachable again");
            }
            s.last_success = Some(Instant::now());
            s.last_error = None;
            s.failures = 0;
            changed
        });
    }

    fn failed(&self, error: &StoreError) {
        self.status.send_modify(|s| {
            if s.failures == 0 {
                tracing::warn!(error = %error, version = s.version, "ff: cannot refresh flags; serving the last good snapshot");
            } else {
                tracing::debug!(error = %error, failures = s.failures, "ff: flag store still unreachable");
            }
            s.failures = s.failures.saturating_add(1);
            metrics::counter!("ff_refresh_errors_total").increment(1);
            s.last_error = Some(error.to_string());
        });
    }
}

async fn run(shared: Arc<Shared>, config: SourceBuilder) {
    let store = config.store.clone();
    let mut signal = store.subscribe();
    let mut backoff = config.retry_min;
    // Start: sync declarations, then load everything.
    loop {
        match initial_load(&*store, &config.decls, &config.lifetimes, &config.attributes).await {
            Ok((state, report)) => {
                log_sync(&report);
                if let Ok(mut r) = shared.sync_report.lock() {
                    *r = Some(report);
                }
                let snapshot = match build(state, &shared).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "ff: cannot build the snapshot; retrying");
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                };
                tracing::info!(version = snapshot.version(), flags = snapshot.len(), "ff: flags loaded");
                shared.install(snapshot);
                shared.succeeded();
                save(&config.snapshot_file, &shared).await;
                break;
            }
            Err(e) => {
                shared.failed(&e);
                sleep_or_nudge(&shared, jitter(backoff)).await;
                backoff = (backoff * 2).min(config.retry_max);
            }
        }
    }
    backoff = config.poll_interval;
    let mut expiry_warned: Option<Instant> = None;
    loop {
        if expiry_warned.is_none_or(|t| t.elapsed() >= config.expiry_warning_interval) {
            expiry_warned = Some(Instant::now());
            check_lifecycle(&*store, &shared.current.load()).await;
        }
        let healthy = shared.status.borrow().last_error.is_none();
        let wait = if healthy { config.poll_interval } else { jitter(backoff) };
        tokio::select! {
            r = signal.changed(), if healthy => {
                if r.is_err() {
                    // The store dropped its signal: polling alone from here on.
                    signal = watch::channel(0).1;
                }
            }
            _ = shared.nudge.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        match refresh(&*store, &shared).await {
            Ok(changed) => {
                shared.succeeded();
                backoff = config.poll_interval;
                if changed {
                    save(&config.snapshot_file, &shared).await;
                }
            }
            Err(e) => {
                shared.failed(&e);
                backoff = (backoff * 2).clamp(config.retry_min, config.retry_max);
            }
        }
    }
}

/// Every second: evaluation counts go to the `metrics` facade, and the snapshot's
/// version and age to gauges. Every `write_every`: the counts since the last write
/// go to the store, one upsert per flag (kept for the next try if the write fails).
async fn collect_usage(store: Arc<dyn Store>, shared: Arc<Shared>, write_every: Duration) {
    use std::collections::BTreeMap;
    let started = Instant::now();
    let mut pending: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    let mut unknown_pending: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_write = Instant::now();
    let tick = write_every.min(Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        let (counts, unknown) = shared.usage.collect();
        for c in counts {
            metrics::counter!(
                "ff_evaluations_total",
                "flag" => c.key.clone(),
                "value_or_variant" => c.variant.clone(),
                "reason" => c.reason.clone()
            )
            .increment(c.count);
            *pending.entry((c.key, c.reason, c.variant)).or_default() += c.count;
        }
        for (key, n) in unknown {
            metrics::counter!("ff_unknown_flag_reads_total", "flag" => key.clone()).increment(n);
            *unknown_pending.entry(key).or_default() += n;
        }
        for (config, rule, n) in ff_core::take_broken_rules() {
            metrics::counter!("ff_config_rule_broken_total", "config" => config, "rule" => rule.to_string())
                .increment(n);
        }
        let status = shared.status.borrow().clone();
        metrics::gauge!("ff_snapshot_version").set(status.version as f64);
        let since = status.last_success.unwrap_or(started);
        metrics::gauge!("ff_snapshot_age_seconds").set(since.elapsed().as_secs_f64());
        metrics::gauge!("ff_flags_pinned").set(shared.pins.iter().count() as f64);
        if last_write.elapsed() < write_every || (pending.is_empty() && unknown_pending.is_empty()) {
            continue;
        }
        last_write = Instant::now();
        let rows: Vec<ff_core::UsageCount> = pending
            .iter()
            .map(|((key, reason, variant), n)| ff_core::UsageCount {
                key: key.clone(),
                reason: reason.clone(),
                variant: variant.clone(),
                count: *n,
            })
            .collect();
        let unknown: Vec<(String, u64)> = unknown_pending.iter().map(|(k, n)| (k.clone(), *n)).collect();
        match store.record_usage(&rows, &unknown, time::OffsetDateTime::now_utc()).await {
            Ok(()) => {
                pending.clear();
                unknown_pending.clear();
            }
            // Kept, merged, for the next write: bounded by flags x reasons x variants.
            Err(e) => {
                tracing::warn!(error = %e, "ff: cannot write evaluation counts; keeping them for the next try")
            }
        }
    }
}

/// Every `every`: adds what the layer counted to each guarded flag's counts,
/// flushes them to the store and reads every instance's back, tests each rollout,
/// and — holding the store's lease — writes what the tests call for.
async fn guard_rollouts(store: Arc<dyn Store>, shared: Arc<Shared>, every: Duration) {
    let mut guardian = crate::guard::Guardian::new(instance_id(), store.read_only());
    // Long enough to outlast a slow tick; short enough that another instance takes
    // over within seconds of this one's death.
    let ttl = (every * 5).max(Duration::from_millis(500));
    let mut flush_failed = false;
    let mut published = std::collections::BTreeSet::new();
    loop {
        tokio::time::sleep(every).await;
        let counted = shared.guard_telemetry.take();
        for c in &counted {
            let labels = [("flag", c.flag.clone()), ("variation", c.variation.to_string())];
            metrics::counter!("ff_guard_requests_total", &labels).increment(c.arm.requests);
            metrics::counter!("ff_guard_errors_total", &labels).increment(c.arm.errors);
            // Each request at its bucket's middle (within 12.5 % of its latency).
            let latency = metrics::histogram!("ff_guard_latency_seconds", &labels);
            for (b, n) in c.arm.latency_buckets.iter().enumerate().filter(|(_, n)| **n > 0) {
                latency.record_many(ff_core::guard::Arm::bucket_middle(b) / 1e6, *n as usize);
            }
        }
        let snapshot = shared.current.load_full();
        let now = time::OffsetDateTime::now_utc();
        let rows = guardian.count(&snapshot, counted, now);
        if guardian.idle() {
            publish(&shared, &mut published, Vec::new(), false);
            continue;
        }
        match store.put_guard_counts(&rows, now).await {
            Ok(()) => {
                guardian.flushed();
                flush_failed = false;
            }
            // Kept: the next flush holds everything so far.
            Err(e) if !flush_failed => {
                flush_failed = true;
                tracing::warn!(error = %e, "ff: cannot write guarded rollouts' counts; deciding on this instance's");
            }
            Err(_) => {}
        }
        // A flag whose counts could not be read is shown, not decided on, this tick.
        for (flag, epoch) in guardian.epochs() {
            let rows = store.guard_counts(&flag, epoch).await.map_err(|e| {
                tracing::debug!(flag = %flag, error = %e, "ff: cannot read guarded rollout counts");
            });
            guardian.combine(&snapshot, &flag, rows, now);
        }
        let at = time::OffsetDateTime::now_utc();
        let acting = store.lease(crate::guard::LEASE, guardian.instance(), ttl, at).await.unwrap_or(false);
        guardian.set_acting(acting);
        let decisions = guardian.decide(&snapshot, now);
        for d in decisions {
            let (key, reason) = (d.key.clone(), d.write.reason.clone().unwrap_or_default());
            match store.write(d.write.clone()).await {
                Ok(_) => {
                    tracing::warn!(flag = %key, "ff: {reason}");
                    metrics::counter!("ff_guard_actions_total", "flag" => key.clone()).increment(1);
                    guardian.wrote(&d, &reason);
                    shared.nudge.notify_one();
                }
                // Another instance acted first, the flag changed, or the store failed:
                // the next tick looks again at the flag as it is then.
                Err(e) => {
                    if guardian.write_failed(&key, &e) {
                        tracing::warn!(flag = %key, error = %e, "ff: guarded rollout not changed yet: {reason}");
                    } else {
                        tracing::debug!(flag = %key, error = %e, "ff: guarded rollout still not changed");
                    }
                }
            }
        }
        publish(&shared, &mut published, guardian.states(&snapshot), acting);
    }
}

/// The guardian's states for the page and API, and as gauges: `ff_guard_state` (0
/// collecting, 1 healthy, 2 regressed; -1 once the flag has no guard), error rates and
/// p95 latency per side (NaN when there is none), and whether this instance acts. `published`: the flags with
/// gauges set, so a flag no longer guarded is set to -1 once instead of left as it was.
fn publish(
    shared: &Shared,
    published: &mut std::collections::BTreeSet<String>,
    states: Vec<crate::guard::GuardState>,
    acting: bool,
) {
    metrics::gauge!("ff_guard_acting").set(f64::from(u8::from(acting)));
    for gone in published.iter().filter(|f| !states.iter().any(|s| &s.flag == *f)) {
        metrics::gauge!("ff_guard_state", "flag" => gone.clone()).set(-1.0);
        for side in ["control", "treatment"] {
            let labels = [("flag", gone.clone()), ("side", side.to_owned())];
            metrics::gauge!("ff_guard_error_rate", &labels).set(f64::NAN);
            metrics::gauge!("ff_guard_latency_p95_seconds", &labels).set(f64::NAN);
        }
    }
    published.clear();
    for st in &states {
        let state = match st.verdict {
            ff_core::guard::Verdict::Collecting { .. } => 0.0,
            ff_core::guard::Verdict::Healthy { .. } => 1.0,
            ff_core::guard::Verdict::Regressed { .. } => 2.0,
        };
        metrics::gauge!("ff_guard_state", "flag" => st.flag.clone()).set(state);
        for (side, s) in [("control", &st.control), ("treatment", &st.treatment)] {
            let labels = [("flag", st.flag.clone()), ("side", side.to_owned())];
            metrics::gauge!("ff_guard_error_rate", &labels).set(s.error_rate);
            let p95 = s.p95_ms.map_or(f64::NAN, |ms| ms / 1000.0);
            metrics::gauge!("ff_guard_latency_p95_seconds", &labels).set(p95);
        }
        published.insert(st.flag.clone());
    }
    if let Ok(mut shared_states) = shared.guard_states.lock() {
        *shared_states = states;
    }
}

/// This process's name among the instances that count guarded rollouts.
fn instance_id() -> String {
    use std::hash::BuildHasher;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let random = std::collections::hash_map::RandomState::new().hash_one(nanos.as_nanos());
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    format!("{host}{}{}-{:08x}", if host.is_empty() { "" } else { "-" }, std::process::id(), random as u32)
}

/// Logs expired flags and sets the `ff_flags_expired` and `ff_flags_stale` gauges
/// (the stale report needs the store's usage; without it the gauge keeps its value).
async fn check_lifecycle(store: &dyn Store, snapshot: &Snapshot) {
    let expired = warn_expired(snapshot);
    metrics::gauge!("ff_flags_expired").set(expired as f64);
    let now = time::OffsetDateTime::now_utc();
    let rules = ff_core::StaleRules::default();
    match (store.list_flags().await, store.usage(rules.since(now)).await) {
        (Ok(flags), Ok(usage)) => {
            let stale = ff_core::stale_flags(&flags, &usage, rules, now);
            metrics::gauge!("ff_flags_stale").set(stale.len() as f64);
        }
        (Err(e), _) | (_, Err(e)) => tracing::debug!(error = %e, "ff: stale report skipped"),
    }
}

/// Logs every temporary flag past its `expires_at`, whatever its policy; how many.
fn warn_expired(snapshot: &Snapshot) -> usize {
    let now = time::OffsetDateTime::now_utc();
    let mut n = 0;
    for f in snapshot.flags().filter(|f| f.meta().is_expired(f.value_type(), now)) {
        n += 1;
        tracing::warn!(
            flag = %f.key(),
            owner = %f.meta().owner,
            expires_at = ?f.meta().expires_at,
            policy = f.meta().expiry.as_str(),
            "ff: flag is past its expiry: remove it from the code, then archive it"
        );
    }
    n
}

async fn initial_load(
    store: &dyn Store,
    decls: &[FlagDecl],
    lifetimes: &Lifetimes,
    attributes: &[String],
) -> Result<(StoreState, SyncReport), StoreError> {
    if !attributes.is_empty() && !store.read_only() {
        let added = store.declare_attributes(attributes).await?;
        if !added.is_empty() {
            tracing::info!(attributes = ?added, "ff: declared context attributes");
        }
    }
    // A read-only store (a file) is what it is: declared flags it lacks serve code defaults.
    let report = if decls.is_empty() || store.read_only() {
        SyncReport::default()
    } else {
        sync(store, decls, lifetimes).await?
    };
    Ok((store.load().await?, report))
}

fn log_sync(report: &SyncReport) {
    if !report.created.is_empty() {
        tracing::info!(keys = ?report.created, "ff: created declared flags with their code defaults");
    }
    if !report.updated.is_empty() {
        tracing::info!(keys = ?report.updated, "ff: updated flag descriptions/bounds from code");
    }
    if !report.undeclared.is_empty() {
        tracing::warn!(keys = ?report.undeclared, "ff: flags in the store that code does not declare (not deleted)");
    }
    if !report.archived.is_empty() {
        tracing::warn!(keys = ?report.archived, "ff: declared flags are archived in the store; serving code defaults");
    }
    if !report.type_conflicts.is_empty() {
        tracing::warn!(keys = ?report.type_conflicts, "ff: stored type differs from the declaration; serving code defaults");
    }
    for (key, problem) in &report.problems {
        tracing::warn!(flag = %key, problem = %problem, "ff: declaration problem");
    }
}

/// Brings the snapshot up to date; `Ok(true)` if it changed.
async fn refresh(store: &dyn Store, shared: &Shared) -> Result<bool, StoreError> {
    let mut changed = false;
    loop {
        let current = shared.current.load_full();
        let latest = store.latest_seq().await?;
        if latest == current.version() && shared.status.borrow().origin == Origin::Store {
            return Ok(changed);
        }
        if latest < current.version() || shared.status.borrow().origin != Origin::Store || store.read_only() {
            // The store was reset or replaced, we serve a saved file, or the store has no
            // change log: start over.
            full_reload(store, shared).await?;
            return Ok(true);
        }
        let mut changes = store.changes_since(current.version(), CHANGE_BATCH).await?;
        // A page that ends inside a batch is completed, so a batch is never served in part.
        if let Some(last) = changes.last().map(|c| c.seq)
            && let Some(end) = changes.last().and_then(|c| c.batch_end).filter(|&end| end > last)
        {
            let rest = u32::try_from(end - last).unwrap_or(u32::MAX);
            changes.extend(store.changes_since(last, rest).await?);
        }
        // Compiling targeting (regexes) is CPU work: off the async workers.
        let base = current.clone();
        let applied = tokio::task::spawn_blocking(move || base.apply(&changes))
            .await
            .map_err(|e| StoreError::Corrupt(format!("applying changes failed: {e}")))?;
        match applied {
            Ok(next) if next.version() > current.version() => {
                tracing::debug!(from = current.version(), to = next.version(), "ff: applied flag changes");
                shared.install(next);
                changed = true;
            }
            Ok(_) => return Ok(changed),
            Err(e) => {
                tracing::info!(error = %e, "ff: cannot apply changes incrementally; reloading all flags");
                full_reload(store, shared).await?;
                return Ok(true);
            }
        }
    }
}

async fn full_reload(store: &dyn Store, shared: &Shared) -> Result<(), StoreError> {
    let state = store.load().await?;
    shared.install(build(state, shared).await?);
    Ok(())
}

/// A snapshot of `state`, compiled off the async workers.
async fn build(state: StoreState, shared: &Shared) -> Result<Snapshot, StoreError> {
    let (usage, pins) = (shared.usage.clone(), shared.pins.clone());
    tokio::task::spawn_blocking(move || Snapshot::from_owned_state(state, usage, pins))
        .await
        .map_err(|e| StoreError::Corrupt(format!("building the snapshot failed: {e}")))
}

async fn sleep_or_nudge(shared: &Shared, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shared.nudge.notified() => {}
    }
}

/// Spreads retries of many instances over time (±25 %), without a random-number crate:
/// std's `RandomState` is seeded from the OS once per thread and differs on every call.
fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::hash::RandomState::new().build_hasher().finish();
    let factor = 0.75 + (random % 10_001) as f64 / 20_000.0;
    d.mul_f64(factor)
}

#[derive(Serialize)]
struct SnapshotFile {
    format: String,
    state: StoreState,
}

/// A saved [`SnapshotFile`] as read back: the state is left as text for
/// [`Snapshot::from_json`].
#[derive(Deserialize)]
struct SavedFile<'a> {
    format: String,
    #[serde(borrow)]
    state: &'a serde_json::value::RawValue,
}

/// Reads a saved snapshot; `None` (with a warning) if missing, unreadable or corrupt.
fn read_snapshot_file(path: &Path, usage: &Arc<Usage>, pins: &Arc<Pins>) -> Option<Snapshot> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ff: cannot read the saved snapshot; ignoring it");
            return None;
        }
    };
    let file = match serde_json::from_slice::<SavedFile<'_>>(&bytes) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ff: saved snapshot is corrupt; ignoring it");
            return None;
        }
    };
    if file.format != SNAPSHOT_FORMAT {
        tracing::warn!(path = %path.display(), format = %file.format, "ff: saved snapshot has an unknown format; ignoring it");
        return None;
    }
    // Compiled as it is parsed: one record at a time in memory, not the whole state.
    match Snapshot::from_json(file.state.get().as_bytes(), usage.clone(), pins.clone()) {
        Ok(snapshot) => {
            tracing::info!(path = %path.display(), version = snapshot.version(), "ff: serving the saved snapshot until the store answers");
            Some(snapshot)
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ff: saved snapshot is corrupt; ignoring it");
            None
        }
    }
}

async fn save(path: &Option<PathBuf>, shared: &Shared) {
    let Some(path) = path.clone() else { return };
    let state = shared.current.load().to_state();
    let result = tokio::task::spawn_blocking(move || write_snapshot_file(&path, state)).await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "ff: cannot save the snapshot file"),
        Err(e) => tracing::warn!(error = %e, "ff: snapshot save task failed"),
    }
}

/// Writes atomically (temporary file, then rename) so a crash never leaves half a file.
/// The temporary is new, randomly named and created exclusively next to the target:
/// a file or symlink planted there is never followed or overwritten.
fn write_snapshot_file(path: &Path, state: StoreState) -> std::io::Result<()> {
    use std::hash::{BuildHasher, RandomState};
    use std::io::Write as _;
    let file = SnapshotFile { format: SNAPSHOT_FORMAT.to_owned(), state };
    let json = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    for attempt in 0u32..16 {
        let tmp = dir.join(format!(".{name}.{:016x}.tmp", RandomState::new().hash_one(attempt)));
        let mut out = match std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        let written =
            out.write_all(&json).and_then(|()| out.sync_all()).and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        return written;
    }
    Err(std::io::Error::other("no free temporary name next to the snapshot file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_snapshot_writer_follows_no_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let (path, victim) = (dir.path().join("flags.json"), dir.path().join("victim"));
        std::fs::write(&victim, "keep").unwrap();
        for planted in ["flags.json.tmp", ".flags.json.tmp"] {
            std::os::unix::fs::symlink(&victim, dir.path().join(planted)).unwrap();
        }
        write_snapshot_file(&path, StoreState::default()).unwrap();
        write_snapshot_file(&path, StoreState { seq: 2, ..Default::default() }).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let read = read_snapshot_file(&path, &Arc::default(), &Arc::default()).unwrap();
        assert_eq!(read.version(), 2);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 4, "no temporaries left: {left:?}");
    }

    #[test]
    fn jitter_spreads_retries_within_a_quarter() {
        let d = Duration::from_secs(1);
        let waits: std::collections::BTreeSet<Duration> = (0..200).map(|_| jitter(d)).collect();
        assert!(waits.len() > 150, "only {} distinct waits of 200", waits.len());
        assert!(waits.iter().all(|w| (d.mul_f64(0.75)..=d.mul_f64(1.25)).contains(w)));
        let (lo, hi) = (waits.first().unwrap(), waits.last().unwrap());
        assert!(*hi - *lo > Duration::from_millis(250), "spread {lo:?}..{hi:?}");
    }
}
