//! Test injection: build snapshots without a database.

use crate::flag::Flag;
use crate::model::{FlagRecord, OverrideRecord, StoreState};
use crate::snapshot::Snapshot;
use crate::testing::TestValues;
use crate::value::FlagType;

/// Builds a [`Snapshot`] in code.
///
/// ```
/// use ff_core::{EvalContext, Evaluator, Flag, SnapshotBuilder};
/// use std::sync::Arc;
///
/// const LEAD: Flag<i64> = Flag::new("LEAD", 24);
/// let snapshot = SnapshotBuilder::new().set(LEAD, 48).set_override(LEAD, "tester", 0).build();
/// let tester = Evaluator::new(Arc::new(snapshot), EvalContext::user("tester"));
/// assert_eq!(tester.get(LEAD), 0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct SnapshotBuilder {
    state: StoreState,
}

impl SnapshotBuilder {
    /// No flags: every read serves the code default.
    pub fn new() -> Self {
        Self::default()
    }

    fn record<T: FlagType>(&mut self, flag: Flag<T>) -> &mut FlagRecord {
        let i = match self.state.flags.iter().position(|f| f.key == flag.key()) {
            Some(i) => i,
            None => {
                self.state.flags.push(FlagRecord::new(flag.key(), flag.default_value().to_value()));
                self.state.flags.len() - 1
            }
        };
        &mut self.state.flags[i]
    }

    /// Sets the flag's global value (the flag stays on).
    pub fn set<T: FlagType>(mut self, flag: Flag<T>, value: T) -> Self {
        self.set_mut(flag, value);
        self
    }

    /// Sets one user's value.
    pub fn set_override<T: FlagType>(mut self, flag: Flag<T>, user_id: &str, value: T) -> Self {
        self.set_override_mut(flag, user_id, value);
        self
    }

    /// Turns the flag on or off (off serves its off value to everyone).
    pub fn enabled<T: FlagType>(mut self, flag: Flag<T>, enabled: bool) -> Self {
        self.record(flag).enabled = enabled;
        self.bump();
        self
    }

    /// Removes one user's value.
    pub fn without_override<T: FlagType>(mut self, flag: Flag<T>, user_id: &str) -> Self {
        self.state.overrides.retain(|o| !(o.key == flag.key() && o.user_id == user_id));
        self.bump();
        self
    }

    /// Removes the flag (and its overrides): reads serve the code default.
    pub fn without<T: FlagType>(mut self, flag: Flag<T>) -> Self {
        self.state.flags.retain(|f| f.key != flag.key());
        self.state.overrides.retain(|o| o.key != flag.key());
        self.bump();
        self
    }

    /// `values` on top of what is set (a derived config's `test()` builder, a [`Case`](crate::Case)'s values).
    pub fn with_values(mut self, values: &TestValues) -> Self {
        let state = values.state();
        for f in state.flags {
            match self.state.flags.iter_mut().find(|r| r.key == f.key) {
                // Only the values set are changed; a flag already here keeps the rest.
                Some(r) if values.values().any(|(k, _)| k == f.key) => {
                    r.value = f.value;
                    r.enabled = true;
                }
                Some(_) => {}
                None => self.state.flags.push(f),
            }
        }
        for o in state.overrides {
            self.state.overrides.retain(|x| !(x.key == o.key && x.user_id == o.user_id));
            self.state.overrides.push(o);
        }
        self.bump();
        self
    }

    /// The snapshot, at version `n` (the number of changes made so far).
    pub fn build(&self) -> Snapshot {
        Snapshot::from_state(&self.state)
    }

    fn bump(&mut self) {
        self.state.seq += 1;
    }

    fn set_mut<T: FlagType>(&mut self, flag: Flag<T>, value: T) {
        self.record(flag).value = value.to_value();
        self.bump();
    }

    fn set_override_mut<T: FlagType>(&mut self, flag: Flag<T>, user_id: &str, value: T) {
        self.record(flag);
        self.state.overrides.retain(|o| !(o.key == flag.key() && o.user_id == user_id));
        self.state.overrides.push(OverrideRecord {
            key: flag.key().to_owned(),
            user_id: user_id.to_owned(),
            value: value.to_value().to_json(),
        });
        self.bump();
    }
}
