//! Tests in every state: values set in code ([`TestValues`], and the typed builder
//! `#[derive(Config)]` makes), and a body run once per combination of flag states
//! ([`States`], [`each_state`]).

use std::fmt;
use std::sync::Arc;

use crate::context::EvalContext;
use crate::eval::{Config, Evaluator};
use crate::flag::Flag;
use crate::model::{FlagRecord, OverrideRecord, StoreState};
use crate::snapshot::Snapshot;
use crate::value::{FlagType, Value};

/// Flag values for a test, set in code: global values and users' values. A derived
/// config's `test()` builder holds one (`BookingConfig::test().rate_min(1.0)`).
///
/// ```
/// use ff_core::{Flag, TestValues};
///
/// const LEAD: Flag<i64> = Flag::new("LEAD", 24);
/// let values = TestValues::new().set(LEAD, 0).set_override(LEAD, "tester", 1);
/// assert_eq!(values.evaluator("someone").get(LEAD), 0);
/// assert_eq!(values.evaluator("tester").get(LEAD), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestValues {
    values: Vec<(String, Value)>,
    overrides: Vec<(String, String, Value)>,
    /// Code defaults of flags with overrides: their global value unless one is set.
    defaults: Vec<(String, Value)>,
}

impl TestValues {
    /// No values: every read serves the code default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a flag's global value.
    pub fn set<T: FlagType>(self, flag: Flag<T>, value: T) -> Self {
        self.set_value(flag.key(), value.to_value())
    }

    /// Sets a flag's global value, untyped.
    pub fn set_value(mut self, key: &str, value: Value) -> Self {
        self.values.retain(|(k, _)| k != key);
        self.values.push((key.to_owned(), value));
        self
    }

    /// Sets one user's value.
    pub fn set_override<T: FlagType>(mut self, flag: Flag<T>, user_id: &str, value: T) -> Self {
        if !self.defaults.iter().any(|(k, _)| k == flag.key()) {
            self.defaults.push((flag.key().to_owned(), flag.default_as_value()));
        }
        self.overrides.retain(|(k, u, _)| !(k == flag.key() && u == user_id));
        self.overrides.push((flag.key().to_owned(), user_id.to_owned(), value.to_value()));
        self
    }

    /// These values with `other`'s on top.
    pub fn extend(mut self, other: impl Into<TestValues>) -> Self {
        let other = other.into();
        for (k, v) in other.values {
            self = self.set_value(&k, v);
        }
        for (k, u, v) in other.overrides {
            self.overrides.retain(|(k2, u2, _)| !(*k2 == k && *u2 == u));
            self.overrides.push((k, u, v));
        }
        for (k, v) in other.defaults {
            if !self.defaults.iter().any(|(k2, _)| *k2 == k) {
                self.defaults.push((k, v));
            }
        }
        self
    }

    /// The global values set, in the order set.
    pub fn values(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The state a store would hold: each flag set, switched on, with its value;
    /// a flag with only overrides has its code default as its value.
    pub fn state(&self) -> StoreState {
        let mut flags: Vec<FlagRecord> =
            self.values.iter().map(|(k, v)| FlagRecord::new(k, v.clone())).collect();
        for (k, v) in &self.defaults {
            if !flags.iter().any(|f| f.key == *k) {
                flags.push(FlagRecord::new(k, v.clone()));
            }
        }
        let overrides = self
            .overrides
            .iter()
            .map(|(k, u, v)| OverrideRecord { key: k.clone(), user_id: u.clone(), value: v.to_json() })
            .collect();
        StoreState { seq: 1, flags, overrides, ..StoreState::default() }
    }

    /// A snapshot of these values.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::from_state(&self.state())
    }

    /// An evaluator for `user_id` over these values.
    pub fn evaluator(&self, user_id: &str) -> Evaluator {
        Evaluator::new(Arc::new(self.snapshot()), EvalContext::user(user_id))
    }

    /// A config as a user without overrides reads it from these values.
    pub fn config<C: Config>(&self) -> Arc<C> {
        Evaluator::new(Arc::new(self.snapshot()), EvalContext::anonymous()).config::<C>()
    }
}

/// The states a test runs in: each boolean flag off and on, each other flag each
/// value listed; [`each_state`] runs every combination.
///
/// ```
/// use ff_core::{Flag, States, each_state};
///
/// const NEW_CHECKOUT: Flag<bool> = Flag::new("NEW_CHECKOUT", false);
/// const LEAD: Flag<i64> = Flag::new("LEAD", 24);
/// let states = States::new().flag(NEW_CHECKOUT).values(LEAD, [0, 24]);
/// assert_eq!(states.cases().len(), 4);
/// each_state(&states, |case| {
///     let flags = case.evaluator("someone");
///     assert_eq!(flags.get(NEW_CHECKOUT), case.get(NEW_CHECKOUT));
/// });
/// ```
#[derive(Debug, Clone, Default)]
pub struct States {
    dimensions: Vec<(String, Vec<Value>)>,
}

impl States {
    /// No flags: one case, with the code defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// A boolean flag: off, then on.
    pub fn flag(self, flag: Flag<bool>) -> Self {
        self.values(flag, [false, true])
    }

    /// Each value listed, in order.
    pub fn values<T: FlagType>(mut self, flag: Flag<T>, values: impl IntoIterator<Item = T>) -> Self {
        let values = values.into_iter().map(|v| v.to_value()).collect();
        self.dimensions.retain(|(k, _)| k != flag.key());
        self.dimensions.push((flag.key().to_owned(), values));
        self
    }

    /// Every combination, the first flag's values varying slowest.
    pub fn cases(&self) -> Vec<Case> {
        let mut cases = vec![TestValues::new()];
        for (key, values) in &self.dimensions {
            cases = cases
                .into_iter()
                .flat_map(|c| values.iter().map(move |v| c.clone().set_value(key, v.clone())))
                .collect();
        }
        cases.into_iter().map(|values| Case { values }).collect()
    }
}

/// One combination of flag states.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    values: TestValues,
}

impl Case {
    /// This case's value of `flag` (the code default if the case does not set it).
    pub fn get<T: FlagType>(&self, flag: Flag<T>) -> T {
        self.values
            .values()
            .find(|(k, _)| *k == flag.key())
            .and_then(|(_, v)| T::from_value(v))
            .unwrap_or_else(|| flag.default_value())
    }

    /// The values this case sets.
    pub fn values(&self) -> &TestValues {
        &self.values
    }

    /// An evaluator for `user_id` in this state.
    pub fn evaluator(&self, user_id: &str) -> Evaluator {
        self.values.evaluator(user_id)
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, v) in self.values.values() {
            write!(f, "{}{k}={v}", if first { "" } else { ", " })?;
            first = false;
        }
        if first {
            f.write_str("code defaults")?;
        }
        Ok(())
    }
}

/// Runs `body` once per case of `states`, in order; a failing case fails the test
/// with its state named (`in state NEW_CHECKOUT=true, LEAD=0: ...`).
pub fn each_state(states: &States, mut body: impl FnMut(&Case)) {
    for case in states.cases() {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&case)));
        if let Err(panic) = run {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            panic!("in state {case}: {message}");
        }
    }
}
