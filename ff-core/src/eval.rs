//! The per-request `Evaluator` and typed config (`Config`), over a `Snapshot`.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::context::EvalContext;
use crate::flag::Flag;
use crate::reason::{Detail, Reason};

use crate::snapshot::{Clock, Input, SharedConfig, Snapshot, UserRef};
use crate::value::FlagType;

/// An application's typed configuration, read as one struct.
///
/// ```
/// use ff_core::{Config, ConfigReader, Flag};
///
/// const LEAD_TIME_HOURS: Flag<i64> = Flag::new("LEAD_TIME_HOURS", 24);
///
/// #[derive(Debug)]
/// struct AppConfig { lead_time_hours: i64 }
///
/// impl Config for AppConfig {
///     fn from_flags(flags: &ConfigReader<'_>) -> Self {
///         AppConfig { lead_time_hours: flags.get(LEAD_TIME_HOURS) }
///     }
/// }
/// ```
///
/// It is built at most once per request, and shared by all requests on the same
/// snapshot whose user has no override of a flag it reads: requests through a
/// `Source`'s leases (the layer's) share one copy per thread, built once per thread
/// and snapshot, so no reference count is written by every thread; `from_flags`
/// should have no side effects.
pub trait Config: Send + Sync + 'static {
    /// Reads the flags this config is made of.
    fn from_flags(flags: &ConfigReader<'_>) -> Self;
}

/// Reads flags while a [`Config`] is built, recording which ones it reads.
pub struct ConfigReader<'a> {
    snapshot: &'a Snapshot,
    input: Input<'a>,
    touched: RefCell<Vec<u32>>,
}

impl fmt::Debug for ConfigReader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigReader").field("version", &self.snapshot.version()).finish_non_exhaustive()
    }
}

impl ConfigReader<'_> {
    /// The flag's value for this request.
    pub fn get<T: FlagType>(&self, flag: Flag<T>) -> T {
        let (slot, detail) = self.snapshot.evaluate_slot(&flag, &self.input);
        self.touched.borrow_mut().extend(slot);
        detail.value
    }
}

fn build<C: Config>(snapshot: &Snapshot, input: Input<'_>) -> (C, Vec<u32>) {
    let reader = ConfigReader { snapshot, input, touched: RefCell::new(Vec::new()) };
    let config = C::from_flags(&reader);
    (config, reader.touched.into_inner())
}

/// The config users without overrides share, as of `now`.
fn build_shared<C: Config>(snapshot: &Snapshot, clock: &Clock) -> (C, Vec<u32>) {
    let anonymous = EvalContext::anonymous();
    build::<C>(snapshot, Input { user: None, lookup: false, context: &anonymous, clock: Some(clock) })
}

/// A hold on a snapshot that one thread's requests share: cloning it counts on
/// the lease's own reference count rather than the snapshot's, which every thread
/// would otherwise write on every request. A `Source` keeps one per thread.
#[derive(Debug)]
pub struct Lease {
    snapshot: Arc<Snapshot>,
    /// A thread's own copy of the snapshot's shared config ([`for_thread`](Self::for_thread)
    /// leases only): handing out the shared one would write its reference count
    /// from every thread on every `config()` call.
    config: Option<OnceLock<Arc<dyn Any + Send + Sync>>>,
}

impl Lease {
    /// A lease on `snapshot`, for one evaluator or a few.
    pub fn new(snapshot: Arc<Snapshot>) -> Arc<Self> {
        Arc::new(Lease { snapshot, config: None })
    }

    /// A lease one thread's requests share (what `Source::lease` hands out): it also
    /// keeps the thread's own copy of the shared config, built on its first read.
    pub fn for_thread(snapshot: Arc<Snapshot>) -> Arc<Self> {
        Arc::new(Lease { snapshot, config: Some(OnceLock::new()) })
    }

    /// The snapshot.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }
}

/// One snapshot seen by one [`EvalContext`]: what a request reads flags through.
///
/// Cheap to clone (a reference count and a small copy), so it can follow work
/// into spawned tasks.
#[derive(Clone)]
pub struct Evaluator {
    lease: Arc<Lease>,
    context: EvalContext,
    user: Option<UserRef>,
    config: OnceLock<Arc<dyn Any + Send + Sync>>,
    /// The request's clock, read at most once (only flags with a schedule need it),
    /// and where the guarded splits it reads are recorded (the layer sets it when
    /// the snapshot has a guard; clones share it, so spawned work counts too).
    clock: Clock,
}

impl fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Evaluator")
            .field("version", &self.lease.snapshot.version())
            .field("context", &self.context)
            .field("has_overrides", &self.user.is_some())
            .finish()
    }
}

impl Evaluator {
    /// Binds a snapshot to a context, looking up the user's overrides once.
    #[inline]
    pub fn new(snapshot: Arc<Snapshot>, context: EvalContext) -> Self {
        Self::leased(Lease::new(snapshot), context)
    }

    /// [`new`](Self::new) on a lease many requests share (what the layer uses).
    #[inline(always)]
    pub fn leased(lease: Arc<Lease>, context: EvalContext) -> Self {
        let user = lease.snapshot.user_of(&context);
        Evaluator { lease, context, user, config: OnceLock::new(), clock: Clock::default() }
    }

    /// Records the guarded splits this request reads in `served` (the layer does
    /// this when the snapshot has a guard, and reports them with the response).
    pub fn record_served(&mut self, served: Arc<crate::guard::Served>) {
        self.clock.served = Some(served);
    }

    /// Evaluates as of `now` instead of the request's own clock (previews, tests).
    pub fn at(self, now: time::OffsetDateTime) -> Self {
        let clock = Clock { now: OnceLock::new(), served: self.clock.served.clone() };
        let _ = clock.now.set(now);
        Evaluator { clock, config: OnceLock::new(), ..self }
    }

    /// An evaluator over an empty snapshot: every read serves the code default.
    pub fn defaults() -> Self {
        // One empty snapshot for the process: reads outside a request scope are
        // cheap, and a typed config of defaults is built once.
        static EMPTY: std::sync::LazyLock<Arc<Snapshot>> =
            std::sync::LazyLock::new(|| Arc::new(Snapshot::empty()));
        Self::new(EMPTY.clone(), EvalContext::anonymous())
    }

    /// The flag's value.
    #[inline]
    pub fn get<T: FlagType>(&self, flag: Flag<T>) -> T {
        self.detail(flag).value
    }

    /// The flag's value with the reason and snapshot version.
    #[inline]
    pub fn detail<T: FlagType>(&self, flag: Flag<T>) -> Detail<T> {
        self.lease.snapshot.evaluate_slot(&flag, &self.input()).1
    }

    /// Every live flag for this request's context, in one pass: see
    /// [`Snapshot::evaluate_all`].
    pub fn all(&self) -> impl Iterator<Item = (crate::FlagInfo<'_>, &crate::Value, Reason)> {
        self.lease.snapshot.evaluate_all_with(self.input())
    }

    /// The typed config, built at most once per evaluator, and shared across
    /// evaluators on one snapshot when this user overrides none of its flags.
    pub fn config<C: Config>(&self) -> Arc<C> {
        if let Some(c) = self.config.get().and_then(|c| c.clone().downcast::<C>().ok()) {
            return c;
        }
        let snapshot = &self.lease.snapshot;
        let shared = snapshot.shared_config(|now| build_shared::<C>(snapshot, now));
        if let Some(shared) = shared
            && !shared.targeted()
            && self.user.is_none_or(|u| !snapshot.user_touches_shared(u, shared))
            && shared.holds_at(|| self.input().now())
            && let Some(value) = self.thread_copy::<C>(shared).or_else(|| shared.value::<C>())
        {
            // The snapshot (or this thread's lease) keeps it: no need to memoise per request.
            return value;
        }
        let config = Arc::new(build::<C>(snapshot, self.input()).0);
        // Only the first config type read through this evaluator is memoised.
        let _ = self.config.set(config.clone());
        config
    }

    /// This thread's copy of the snapshot's shared config, if the lease keeps one
    /// (of this type): built from the same snapshot at the same instant, so the same
    /// config. (Its reads are counted in usage, once per thread and snapshot.)
    fn thread_copy<C: Config>(&self, shared: &SharedConfig) -> Option<Arc<C>> {
        let copy = self.lease.config.as_ref()?;
        let snapshot = &self.lease.snapshot;
        let copy = copy.get_or_init(|| {
            let clock = Clock::default();
            if let Some(at) = shared.built_at() {
                let _ = clock.now.set(at);
            }
            Arc::new(build_shared::<C>(snapshot, &clock).0)
        });
        copy.clone().downcast::<C>().ok()
    }

    fn input(&self) -> Input<'_> {
        Input { user: self.user, lookup: false, context: &self.context, clock: Some(&self.clock) }
    }

    /// The snapshot.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.lease.snapshot
    }

    /// The context.
    pub fn context(&self) -> &EvalContext {
        &self.context
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FlagRecord, OverrideRecord, StoreState};
    use crate::value::{Value, ValueType};

    const ON: Flag<bool> = Flag::new("ON", false);
    const HOURS: Flag<i64> = Flag::new("HOURS", 24).range(0, 100);
    const MISSING: Flag<i64> = Flag::new("MISSING", 7);
    const TYPO: Flag<String> = Flag::new("HOURS", "x");

    fn record(key: &str, value: Value, enabled: bool) -> FlagRecord {
        FlagRecord { enabled, ..FlagRecord::new(key, value) }
    }

    fn snapshot(on_enabled: bool) -> Arc<Snapshot> {
        Arc::new(Snapshot::from_state(&StoreState {
            seq: 9,
            flags: vec![record("ON", Value::Bool(true), on_enabled), record("HOURS", Value::Int(24), true)],
            overrides: vec![
                OverrideRecord { key: "ON".into(), user_id: "tester".into(), value: true.into() },
                OverrideRecord { key: "HOURS".into(), user_id: "tester".into(), value: 0.into() },
                OverrideRecord { key: "HOURS".into(), user_id: "bad".into(), value: 500.into() },
            ],
            ..Default::default()
        }))
    }

    #[derive(Debug)]
    struct Cfg {
        hours: i64,
    }
    impl Config for Cfg {
        fn from_flags(f: &ConfigReader<'_>) -> Self {
            Cfg { hours: f.get(HOURS) }
        }
    }

    #[test]
    fn evaluation_order() {
        let s = snapshot(true);
        let anon = Evaluator::new(s.clone(), EvalContext::anonymous());
        assert_eq!(anon.detail(ON), Detail { value: true, reason: Reason::Global, version: 9 });
        assert_eq!(anon.detail(MISSING).reason, Reason::Default);
        assert_eq!(anon.get(MISSING), 7);
        let tester = Evaluator::new(s.clone(), EvalContext::user("tester"));
        assert_eq!(tester.detail(HOURS), Detail { value: 0, reason: Reason::Override, version: 9 });
        // Out of the declared bounds: the code default, reason Invalid.
        let bad = Evaluator::new(s.clone(), EvalContext::user("bad"));
        assert_eq!(bad.detail(HOURS), Detail { value: 24, reason: Reason::Invalid, version: 9 });
        // Declared with another type in code.
        assert_eq!(anon.detail(TYPO), Detail { value: "x".to_owned(), reason: Reason::Invalid, version: 9 });
        // A read on its own (`Snapshot::evaluate`, its own frame) answers the same.
        for (who, ctx) in [
            (&anon, EvalContext::anonymous()),
            (&tester, EvalContext::user("tester")),
            (&bad, EvalContext::user("bad")),
        ] {
            assert_eq!(s.evaluate(&ON, &ctx), who.detail(ON));
            assert_eq!(s.evaluate(&MISSING, &ctx), who.detail(MISSING));
            assert_eq!(s.evaluate(&HOURS, &ctx), who.detail(HOURS));
            assert_eq!(s.evaluate(&TYPO, &ctx), who.detail(TYPO));
        }
    }

    #[test]
    fn kill_switch_beats_override() {
        let s = snapshot(false);
        let tester = Evaluator::new(s.clone(), EvalContext::user("tester"));
        assert!(!tester.detail(ON).value);
        assert_eq!(tester.detail(ON).reason, Reason::Disabled);
        assert_eq!(s.evaluate(&ON, &EvalContext::user("tester")), tester.detail(ON));
    }

    #[test]
    fn config_is_shared_unless_overridden() {
        let s = snapshot(true);
        let a = Evaluator::new(s.clone(), EvalContext::user("someone")).config::<Cfg>();
        let b = Evaluator::new(s.clone(), EvalContext::anonymous()).config::<Cfg>();
        assert!(Arc::ptr_eq(&a, &b), "users without overrides share one config");
        assert_eq!(a.hours, 24);
        let tester = Evaluator::new(s.clone(), EvalContext::user("tester"));
        let t1 = tester.config::<Cfg>();
        assert_eq!(t1.hours, 0);
        assert!(!Arc::ptr_eq(&t1, &a));
        assert!(Arc::ptr_eq(&t1, &tester.config::<Cfg>()), "memoised per evaluator");
        // A new snapshot builds a new shared config.
        let c = Evaluator::new(snapshot(true), EvalContext::anonymous()).config::<Cfg>();
        assert!(!Arc::ptr_eq(&a, &c));
    }

    /// HOURS stores 50 and expires (serving its code default, 24) at `at`.
    fn expiring(at: time::OffsetDateTime) -> Arc<Snapshot> {
        let mut hours = record("HOURS", Value::Int(50), true);
        hours.meta.expiry = crate::model::ExpiryPolicy::ServeDefault;
        hours.meta.permanent = Some(false);
        hours.meta.expires_at = Some(at);
        Arc::new(Snapshot::from_state(&StoreState { seq: 3, flags: vec![hours], ..Default::default() }))
    }

    #[test]
    fn config_agrees_with_get_across_expiry() {
        let now = time::OffsetDateTime::now_utc();
        let hour = time::Duration::hours(1);
        for at in [now + hour, now - hour] {
            let s = expiring(at);
            // A reader moved in time first: it must neither see nor fill the shared config.
            for t in [now - 2 * hour, now + 2 * hour, now] {
                let e = Evaluator::new(s.clone(), EvalContext::user("someone")).at(t);
                assert_eq!(e.config::<Cfg>().hours, e.get(HOURS), "expiry at {at}, read at {t}");
                let expected = if t >= at { 24 } else { 50 };
                assert_eq!(e.get(HOURS), expected);
            }
            let e = Evaluator::new(s.clone(), EvalContext::anonymous());
            assert_eq!(e.config::<Cfg>().hours, e.get(HOURS));
        }
    }

    /// A thread's copy of the shared config is the shared config: built at the same
    /// instant, even when a flag it reads expires between the two builds.
    #[test]
    fn a_threads_copy_is_the_shared_config_across_expiry() {
        let at = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(300);
        let s = expiring(at);
        let shared = Evaluator::new(s.clone(), EvalContext::anonymous()).config::<Cfg>();
        assert_eq!(shared.hours, 50, "built before the expiry");
        std::thread::sleep(std::time::Duration::from_millis(400));
        // A reader before the expiry, on a thread lease that builds its copy only now.
        let lease = Lease::for_thread(s.clone());
        let before =
            Evaluator::leased(lease.clone(), EvalContext::anonymous()).at(at - time::Duration::SECOND);
        let copy = before.config::<Cfg>();
        assert_eq!((copy.hours, before.get(HOURS)), (50, 50));
        assert!(!Arc::ptr_eq(&copy, &shared), "the thread's own");
        let again = Evaluator::leased(lease, EvalContext::user("someone")).at(at - time::Duration::SECOND);
        assert!(Arc::ptr_eq(&copy, &again.config::<Cfg>()), "one per thread lease");
        // Past the expiry, both agree on the code default.
        let now = Evaluator::leased(Lease::for_thread(s), EvalContext::anonymous());
        assert_eq!((now.config::<Cfg>().hours, now.get(HOURS)), (24, 24));
    }

    #[test]
    fn defaults_evaluator() {
        let e = Evaluator::defaults();
        assert_eq!(e.get(HOURS), 24);
        assert_eq!(e.config::<Cfg>().hours, 24);
        let _ = ValueType::Bool;
    }
}
