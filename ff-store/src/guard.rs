//! The guardian of a `Source`: adds up what the layer counted for each guarded
//! flag, tests the rollout's treatment against its control, and on a regression
//! rolls the flag back (or pauses its ramp) through the audited write path.
//!
//! Control: the variations that serve the flag's own value (what everyone got
//! before the rollout); treatment: the others. A rollback writes the targeting
//! without its split, ramp and guard (rules stay), version-checked: if the flag
//! changed meanwhile the write is refused and nothing is done, so two instances
//! acting on the same evidence write one rollback.

use std::collections::HashMap;

use ff_core::guard::{Arm, Guard, GuardAction, Verdict};
use ff_core::{FlagRecord, Snapshot, Split, Targeting};
use time::OffsetDateTime;

use crate::{FlagPatch, Mutation, Write};

/// The actor the guardian's writes are recorded under.
pub const GUARD_ACTOR: &str = "ff-guard";

/// One guarded rollout being watched: its counts since the guard was set.
#[derive(Debug)]
struct Watched {
    /// The guard and split it counts under: a change of either starts afresh.
    under: (Guard, Option<Split>),
    control: Arm,
    treatment: Arm,
    verdict: Verdict,
    /// A write was made for this regression: it is not made again.
    acted: bool,
    /// Writes for it refused or failed so far (a read-only store refuses every one).
    failures: u32,
}

impl Watched {
    fn new(under: (Guard, Option<Split>)) -> Self {
        let needed = under.0.min_requests;
        Watched {
            under,
            control: Arm::default(),
            treatment: Arm::default(),
            verdict: Verdict::Collecting { control: 0, treatment: 0, needed },
            acted: false,
            failures: 0,
        }
    }
}

/// Every guarded flag's counts and state.
#[derive(Debug, Default)]
pub(crate) struct Guardian {
    watched: HashMap<String, Watched>,
}

/// The split in force at `now`: a ramp's latest step with one, else the flag's split.
fn split_at(t: &Targeting, now: OffsetDateTime) -> Option<&Split> {
    let step = t.schedule.iter().rev().filter(|s| s.at <= now).find_map(|s| s.split.as_ref());
    step.or(t.split.as_ref())
}

impl Guardian {
    /// Adds what the layer counted (flag, variation, counts) and tests each guarded
    /// flag of `snapshot`; the writes to make for regressions not acted on yet.
    pub(crate) fn tick(
        &mut self,
        snapshot: &Snapshot,
        counted: Vec<(String, u32, Arm)>,
        now: OffsetDateTime,
    ) -> Vec<Write> {
        let mut records: HashMap<String, Option<FlagRecord>> = HashMap::new();
        for (key, variation, arm) in counted {
            let record = records.entry(key.clone()).or_insert_with(|| snapshot.flag(&key));
            let Some(record) = record else { continue };
            let Some(guard) = record.targeting.guard.clone() else { continue };
            let split = split_at(&record.targeting, now).cloned();
            // Compared as typed values: a float flag's 1.0 is the variation written 1.
            let control = split
                .as_ref()
                .and_then(|s| s.variations.get(variation as usize))
                .and_then(|v| ff_core::Value::from_json(record.value_type, &v.value).ok())
                .is_some_and(|v| v == record.value);
            let under = (guard, split);
            let w = self.watched.entry(key).or_insert_with(|| Watched::new(under.clone()));
            if w.under != under {
                *w = Watched::new(under);
            }
            if control { w.control.merge(&arm) } else { w.treatment.merge(&arm) }
        }
        let mut writes = Vec::new();
        // Flags that lost their guard (rolled back, edited, archived) are dropped.
        self.watched.retain(|key, _| snapshot.flag(key).is_some_and(|r| r.targeting.guard.is_some()));
        for (key, w) in &mut self.watched {
            w.verdict = w.under.0.verdict(&w.control, &w.treatment);
            let Verdict::Regressed { .. } = &w.verdict else { continue };
            if w.acted {
                continue;
            }
            w.acted = true;
            let Some(record) = snapshot.flag(key) else { continue };
            writes.push(action(record, &w.under.0, &w.verdict, now));
        }
        writes
    }

    /// The write for `key` was refused or failed: the next tick tries again (on the
    /// flag as it is then; a flag another instance rolled back is no longer watched).
    /// Whether it is the first failure for this regression (worth a warning).
    pub(crate) fn write_failed(&mut self, key: &str) -> bool {
        let Some(w) = self.watched.get_mut(key) else { return false };
        w.acted = false;
        w.failures += 1;
        w.failures == 1
    }

    /// Each watched flag's state and counts, for the page, the API and `ff guard`.
    pub(crate) fn states(&self) -> Vec<GuardState> {
        let mut states: Vec<GuardState> = self
            .watched
            .iter()
            .map(|(key, w)| GuardState {
                flag: key.clone(),
                verdict: w.verdict.clone(),
                control: w.control.clone(),
                treatment: w.treatment.clone(),
                acted: w.acted,
            })
            .collect();
        states.sort_by(|a, b| a.flag.cmp(&b.flag));
        states
    }
}

/// One guarded flag as the guardian sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GuardState {
    /// The flag.
    pub flag: String,
    /// The test's state: collecting, healthy or regressed (with the numbers).
    pub verdict: Verdict,
    /// Requests served the flag's own value, and the others.
    pub control: Arm,
    /// See `control`.
    pub treatment: Arm,
    /// Whether the guardian wrote its action for this regression.
    pub acted: bool,
}

/// The write a regression calls for: the rollback (or pause), version-checked,
/// by [`GUARD_ACTOR`], with the numbers as its reason.
fn action(record: FlagRecord, guard: &Guard, verdict: &Verdict, now: OffsetDateTime) -> Write {
    let t = record.targeting;
    let targeting = match guard.action {
        // Back to before the rollout: the rules stay; no split, ramp or guard.
        GuardAction::Rollback => Targeting { split: None, schedule: Vec::new(), guard: None, ..t },
        // The ramp stops where it is: later steps are dropped.
        GuardAction::Pause => {
            let schedule = t.schedule.iter().filter(|s| s.at <= now).cloned().collect();
            Targeting { schedule, ..t }
        }
    };
    let what = match guard.action {
        GuardAction::Rollback => "rolled back",
        GuardAction::Pause => "ramp paused",
    };
    let patch = FlagPatch { targeting: Some(targeting), ..FlagPatch::default() };
    let mutation = Mutation::UpdateFlag { key: record.key, patch, expected_version: Some(record.version) };
    Write::new(GUARD_ACTOR, mutation).reason(format!("guarded rollout {what}: {verdict}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ff_core::{StoreState, Value};

    fn snapshot(value: Value, targeting: serde_json::Value) -> Snapshot {
        let record = FlagRecord {
            targeting: serde_json::from_value(targeting).unwrap(),
            ..FlagRecord::new("F", value)
        };
        Snapshot::from_state(&StoreState { seq: 1, flags: vec![record], ..Default::default() })
    }

    fn arm(requests: u64, errors: u64) -> Arm {
        Arm { requests, errors, ..Default::default() }
    }

    #[test]
    fn a_regression_is_acted_on_once_and_again_after_a_failed_write() {
        let now = OffsetDateTime::now_utc();
        // A float flag whose value 1.0 is the variation written `1`: the control.
        let s = snapshot(
            Value::Float(1.0),
            serde_json::json!({"split": {"variations": [{"value": 2, "weight": 1000}, {"value": 1, "weight": 9000}]},
                               "guard": {"min_requests": 100}}),
        );
        let mut g = Guardian::default();
        let bad = || vec![("F".to_owned(), 0, arm(1_000, 200)), ("F".to_owned(), 1, arm(9_000, 90))];
        let writes = g.tick(&s, bad(), now);
        assert_eq!(writes.len(), 1);
        let state = &g.states()[0];
        assert_eq!((state.control.requests, state.treatment.requests), (9_000, 1_000));
        assert!(state.acted && matches!(state.verdict, Verdict::Regressed { .. }));
        let Mutation::UpdateFlag { patch, expected_version, .. } = &writes[0].mutation else { panic!() };
        let t = patch.targeting.as_ref().unwrap();
        assert!(t.split.is_none() && t.guard.is_none(), "{t:?}");
        assert_eq!(*expected_version, Some(s.flag("F").unwrap().version));
        assert_eq!(writes[0].actor, GUARD_ACTOR);
        assert!(g.tick(&s, Vec::new(), now).is_empty(), "acted once");
        assert!(g.write_failed("F"), "the first failure");
        assert!(g.tick(&s, Vec::new(), now).len() == 1 && !g.write_failed("F"), "tried again, quietly");
        assert_eq!(g.tick(&s, Vec::new(), now).len(), 1, "and again");
    }

    #[test]
    fn a_pause_drops_the_ramps_later_steps_only() {
        let now = OffsetDateTime::now_utc();
        let at = |days: i64| {
            (now + time::Duration::days(days)).format(&time::format_description::well_known::Rfc3339).unwrap()
        };
        let split = |w: u32| serde_json::json!({"variations": [{"value": true, "weight": w}, {"value": false, "weight": 10_000 - w}]});
        let s = snapshot(
            Value::Bool(false),
            serde_json::json!({"schedule": [{"at": at(-1), "split": split(1000)}, {"at": at(1), "split": split(5000)}],
                               "guard": {"min_requests": 100, "action": "pause"}}),
        );
        let mut g = Guardian::default();
        let writes =
            g.tick(&s, vec![("F".to_owned(), 0, arm(1_000, 200)), ("F".to_owned(), 1, arm(9_000, 90))], now);
        let Mutation::UpdateFlag { patch, .. } = &writes[0].mutation else { panic!() };
        let t = patch.targeting.as_ref().unwrap();
        assert_eq!(t.schedule.len(), 1, "the step in force stays, the next one goes");
        assert!(t.guard.is_some());
        assert!(writes[0].reason.as_deref().unwrap().starts_with("guarded rollout ramp paused: regressed"));
    }
}
