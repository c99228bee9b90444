//! Evaluation: who is asking (`EvalContext`), what they get (`Detail`, `Reason`),
//! and the per-request `Evaluator` with typed config.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use crate::flag::Flag;
use smol_str::SmolStr;

use crate::snapshot::{Input, Snapshot, UserRef};
use crate::value::FlagType;

/// Who a flag is evaluated for: a user id and any attributes the application extracts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalContext {
    // Inline up to 23 bytes: typical ids cost no allocation per request.
    user_id: Option<SmolStr>,
    // Few per request, sorted by name; empty costs nothing to create or drop.
    attributes: Vec<(String, serde_json::Value)>,
    // `id_hash` of the user id, computed once: override, list and segment lookups reuse it.
    user_hash: u64,
}

impl EvalContext {
    /// An anonymous context: no user id, no attributes.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// A context for one user.
    pub fn user(user_id: impl AsRef<str>) -> Self {
        let user_id = user_id.as_ref();
        EvalContext {
            user_id: Some(inline_or_shared(user_id)),
            attributes: Vec::new(),
            user_hash: crate::ids::id_hash(user_id),
        }
    }

    /// Adds an attribute (plan, country, app version...), for targeting.
    pub fn with_attribute(mut self, name: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        let (name, value) = (name.into(), value.into());
        match self.attributes.binary_search_by(|(n, _)| n.as_str().cmp(&name)) {
            Ok(i) => self.attributes[i].1 = value,
            Err(i) => self.attributes.insert(i, (name, value)),
        }
        self
    }

    /// The user id, if known.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// The user id with its hash.
    #[inline]
    pub(crate) fn user_id_hashed(&self) -> Option<(&str, u64)> {
        self.user_id.as_deref().map(|u| (u, self.user_hash))
    }

    /// One attribute.
    #[inline]
    pub fn attribute(&self, name: &str) -> Option<&serde_json::Value> {
        // A request has a few: a scan that mostly compares lengths beats a binary search.
        if self.attributes.len() <= 8 {
            return self.attributes.iter().find(|(n, _)| crate::ids::str_eq(n, name)).map(|(_, v)| v);
        }
        let i = self.attributes.binary_search_by(|(n, _)| n.as_str().cmp(name)).ok()?;
        Some(&self.attributes[i].1)
    }

    /// All attributes, sorted by name.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &serde_json::Value)> {
        self.attributes.iter().map(|(n, v)| (n.as_str(), v))
    }
}

/// Short ids are copied inline; `SmolStr::new` would also look for its
/// whitespace special case, which user ids never hit.
fn inline_or_shared(s: &str) -> SmolStr {
    if s.len() <= 23 { SmolStr::new_inline(s) } else { SmolStr::new(s) }
}

/// Why an evaluation served what it served, in the documented evaluation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// The key is not in the snapshot: the code default.
    Default,
    /// The flag is switched off: its off value, for everyone.
    Disabled,
    /// The user's explicit value.
    Override,
    /// Targeting rule number `i` matched.
    Rule(usize),
    /// The percentage rollout / variant split.
    Split,
    /// The flag's global value.
    Global,
    /// The stored value does not fit the declared type or bounds: the code default.
    Invalid,
    /// Schedule step `i` sets the value.
    Scheduled(usize),
    /// The flag is past its `expires_at` with the `serve_default` policy: the
    /// code default (untyped readers, which do not know it, get the off value).
    Expired,
    /// The process environment pins the value (`FF_<KEY>=value`): before everything else.
    Env,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Default => f.write_str("default"),
            Reason::Disabled => f.write_str("disabled"),
            Reason::Override => f.write_str("override"),
            Reason::Rule(i) => write!(f, "rule {i}"),
            Reason::Split => f.write_str("split"),
            Reason::Global => f.write_str("global"),
            Reason::Invalid => f.write_str("invalid"),
            Reason::Scheduled(i) => write!(f, "schedule step {i}"),
            Reason::Expired => f.write_str("expired"),
            Reason::Env => f.write_str("env"),
        }
    }
}

impl Reason {
    /// OpenFeature's name for this reason: `STATIC` (the flag's value, or a pin), `DEFAULT`
    /// (a targeted flag's fallthrough, or a code default), `TARGETING_MATCH` (rule,
    /// override, schedule step), `SPLIT`, `DISABLED`, `ERROR` (invalid). `targeted`: the
    /// flag has targeting.
    pub fn open_feature(self, targeted: bool) -> &'static str {
        match self {
            Reason::Global if targeted => "DEFAULT",
            Reason::Global | Reason::Env => "STATIC",
            Reason::Disabled => "DISABLED",
            Reason::Override | Reason::Rule(_) | Reason::Scheduled(_) => "TARGETING_MATCH",
            Reason::Split => "SPLIT",
            Reason::Invalid => "ERROR",
            Reason::Default | Reason::Expired => "DEFAULT",
        }
    }

    /// A variant name for what was served: `value`, `off`, `override`, `rule:N`,
    /// `step:N`, `split`, `env` or `default`.
    pub fn variant(self) -> String {
        match self {
            Reason::Global => "value".into(),
            Reason::Disabled => "off".into(),
            Reason::Override => "override".into(),
            Reason::Rule(i) => format!("rule:{i}"),
            Reason::Scheduled(i) => format!("step:{i}"),
            Reason::Split => "split".into(),
            Reason::Env => "env".into(),
            Reason::Default | Reason::Expired | Reason::Invalid => "default".into(),
        }
    }
}

/// A value with the reason it was served and the snapshot version it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detail<T> {
    /// The value.
    pub value: T,
    /// Why.
    pub reason: Reason,
    /// The snapshot's version.
    pub version: u64,
}

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
/// snapshot whose user has no override of a flag it reads.
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

/// One snapshot seen by one [`EvalContext`]: what a request reads flags through.
///
/// Cheap to clone (a reference count and a small copy), so it can follow work
/// into spawned tasks.
#[derive(Clone)]
pub struct Evaluator {
    snapshot: Arc<Snapshot>,
    context: EvalContext,
    user: Option<UserRef>,
    config: OnceLock<Arc<dyn Any + Send + Sync>>,
    /// The request's clock, read at most once (only flags with a schedule need it).
    now: OnceLock<time::OffsetDateTime>,
}

impl fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Evaluator")
            .field("version", &self.snapshot.version())
            .field("context", &self.context)
            .field("has_overrides", &self.user.is_some())
            .finish()
    }
}

impl Evaluator {
    /// Binds a snapshot to a context, looking up the user's overrides once.
    #[inline]
    pub fn new(snapshot: Arc<Snapshot>, context: EvalContext) -> Self {
        let user = snapshot.user_of(&context);
        Evaluator { snapshot, context, user, config: OnceLock::new(), now: OnceLock::new() }
    }

    /// Evaluates as of `now` instead of the request's own clock (previews, tests).
    pub fn at(self, now: time::OffsetDateTime) -> Self {
        let clock = OnceLock::new();
        let _ = clock.set(now);
        Evaluator { now: clock, config: OnceLock::new(), ..self }
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
        self.snapshot.evaluate_slot(&flag, &self.input()).1
    }

    /// Every live flag for this request's context, in one pass: see
    /// [`Snapshot::evaluate_all`].
    pub fn all(&self) -> impl Iterator<Item = (&crate::FlagRecord, &crate::Value, Reason)> {
        self.snapshot.evaluate_all_with(self.input())
    }

    /// The typed config, built at most once per evaluator, and shared across
    /// evaluators on one snapshot when this user overrides none of its flags.
    pub fn config<C: Config>(&self) -> Arc<C> {
        if let Some(c) = self.config.get().and_then(|c| c.clone().downcast::<C>().ok()) {
            return c;
        }
        let snapshot = &self.snapshot;
        let anonymous = EvalContext::anonymous();
        let shared = snapshot
            .shared_config(|now| build::<C>(snapshot, Input { user: None, context: &anonymous, now }));
        if let Some((value, shared)) = shared
            && !shared.targeted()
            && self.user.is_none_or(|u| !snapshot.user_touches_shared(u, shared))
            && shared.holds_at(|| self.input().now())
        {
            // The snapshot keeps it: no need to memoise per request.
            return value;
        }
        let config = Arc::new(build::<C>(snapshot, self.input()).0);
        // Only the first config type read through this evaluator is memoised.
        let _ = self.config.set(config.clone());
        config
    }

    fn input(&self) -> Input<'_> {
        Input { user: self.user, context: &self.context, now: &self.now }
    }

    /// The snapshot.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
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
    }

    #[test]
    fn kill_switch_beats_override() {
        let s = snapshot(false);
        let tester = Evaluator::new(s, EvalContext::user("tester"));
        assert!(!tester.detail(ON).value);
        assert_eq!(tester.detail(ON).reason, Reason::Disabled);
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

    #[test]
    fn defaults_evaluator() {
        let e = Evaluator::defaults();
        assert_eq!(e.get(HOURS), 24);
        assert_eq!(e.config::<Cfg>().hours, 24);
        let _ = ValueType::Bool;
    }
}
