//! The guardian of a `Source`: counts what the layer saw for each guarded flag,
//! flushes this instance's counts to the store and reads every instance's back,
//! tests the rollout's treatment against its control, and — on the one instance
//! holding the store's lease — writes what the test calls for through the audited
//! path: the rollback (or pause) of a regressed rollout, or a ramp's next step once
//! it is due and the guard finds the rollout healthy.
//!
//! Control: the variations that serve the flag's own value (what everyone got
//! before the rollout); treatment: the others. Counts are kept per rollout start
//! ([`Guard::started`], stamped by the store): a changed guard or split, or a ramp
//! step, starts afresh. Every write is version-checked, so two instances acting on
//! the same evidence write once, and an instance dying mid-decision leaves either
//! the write (one transaction with its audit row) or nothing.

use std::collections::{HashMap, VecDeque};

use ff_core::guard::{Arm, Counted, Guard, GuardAction, Verdict};
use ff_core::{FlagRecord, Snapshot, Split, Targeting};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{FlagPatch, GuardCount, Mutation, Store, StoreError, Write};

/// The actor the guardian's writes are recorded under.
pub const GUARD_ACTOR: &str = "ff-guard";

/// The store lease the acting guardian holds.
pub const LEASE: &str = "ff-guardian";

/// How often a history point is taken, and how many are kept (an hour).
const HISTORY_STEP: time::Duration = time::Duration::seconds(10);
const HISTORY_POINTS: usize = 360;

/// One guarded rollout being watched, since it started.
#[derive(Debug)]
struct Watched {
    epoch: i64,
    started: Option<OffsetDateTime>,
    guard: Guard,
    /// Variations of the split in force: counts of others are ignored.
    variations: usize,
    /// What identifies the rollout besides its start ([`fingerprint`]).
    rollout: u64,
    /// This tick's every-instance counts could not be read: nothing is decided on it.
    partial: bool,
    /// The flag version a write of ours was based on: nothing more is decided until
    /// the snapshot has moved past it.
    wrote_on: Option<u64>,
    /// This instance's counts, by variation.
    local: Vec<Arm>,
    /// `local` changed since the last flush.
    dirty: bool,
    /// Every instance's counts, by variation, and how many instances sent any.
    all: Vec<Arm>,
    instances: usize,
    control: Arm,
    treatment: Arm,
    verdict: Verdict,
    /// When this instance first found the rollout regressed.
    regressed_at: Option<OffsetDateTime>,
    /// Totals at the last history point, and the points (deltas) so far.
    mark: Option<(OffsetDateTime, Arm, Arm)>,
    history: VecDeque<HistoryPoint>,
    /// A write was made for this rollout's regression: not made again.
    acted: bool,
    /// Writes refused or failed so far (a read-only store refuses every one).
    failures: u32,
    /// What the guardian last did or is waiting for.
    note: Option<String>,
}

impl Watched {
    fn new(guard: Guard) -> Self {
        let needed = guard.min_requests;
        Watched {
            epoch: epoch(&guard),
            started: guard.started,
            guard,
            variations: 0,
            rollout: 0,
            partial: false,
            wrote_on: None,
            local: Vec::new(),
            dirty: false,
            all: Vec::new(),
            instances: 0,
            control: Arm::default(),
            treatment: Arm::default(),
            verdict: Verdict::Collecting { control: 0, treatment: 0, needed },
            regressed_at: None,
            mark: None,
            history: VecDeque::new(),
            acted: false,
            failures: 0,
            note: None,
        }
    }

    /// Splits `all` into control and treatment for `record`, and tests them.
    fn test(&mut self, record: &FlagRecord) {
        let (mut control, mut treatment) = (Arm::default(), Arm::default());
        for (v, arm) in self.all.iter().enumerate() {
            if is_control(record, v) { control.merge(arm) } else { treatment.merge(arm) }
        }
        self.verdict = self.guard.verdict(&control, &treatment);
        (self.control, self.treatment) = (control, treatment);
    }

    /// Takes a history point when one is due.
    fn remember(&mut self, now: OffsetDateTime) {
        let Some((at, control, treatment)) = &self.mark else {
            self.mark = Some((now, self.control.clone(), self.treatment.clone()));
            return;
        };
        if now - *at < HISTORY_STEP {
            return;
        }
        self.history.push_back(HistoryPoint {
            at: now,
            control: Summary::of(&self.control.since(control)),
            treatment: Summary::of(&self.treatment.since(treatment)),
        });
        if self.history.len() > HISTORY_POINTS {
            self.history.pop_front();
        }
        self.mark = Some((now, self.control.clone(), self.treatment.clone()));
    }

    fn state(&self, flag: &str, record: Option<&FlagRecord>, acting: bool) -> GuardState {
        let variations = record
            .and_then(|r| r.targeting.split.as_ref().map(|s| (r, s)))
            .map(|(r, split)| {
                split
                    .variations
                    .iter()
                    .enumerate()
                    .map(|(i, v)| VariationState {
                        value: v.value.clone(),
                        weight: v.weight,
                        control: is_control(r, i),
                        counts: Summary::of(self.all.get(i).unwrap_or(&Arm::default())),
                    })
                    .collect()
            })
            .unwrap_or_default();
        GuardState {
            flag: flag.to_owned(),
            guard: self.guard.clone(),
            started: self.started,
            verdict: self.verdict.clone(),
            regressed_at: self.regressed_at,
            control: Summary::of(&self.control),
            treatment: Summary::of(&self.treatment),
            variations,
            instances: self.instances,
            acting,
            acted: self.acted,
            note: self.note.clone(),
            next_step: record.and_then(|r| r.targeting.schedule.first().map(|s| s.at)),
            history: self.history.iter().cloned().collect(),
        }
    }
}

/// A rollout's identity: its start in ms (0 for a guard the store never stamped).
fn epoch(guard: &Guard) -> i64 {
    guard.started.map_or(0, crate::store::to_millis)
}

/// What else makes a rollout: the guard's settings, the split, the flag's value (which
/// decides control and treatment) and the bucketing.
fn fingerprint(record: &FlagRecord) -> u64 {
    use std::hash::{Hash, Hasher};
    let t = &record.targeting;
    let guard = t.guard.as_ref().map(|g| Guard { started: None, ..g.clone() });
    let parts = (guard, &t.split, record.value.to_json(), &t.bucket_by, &t.salt);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&parts).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// Whether variation `v` of the flag's split serves the flag's own value: compared
/// as typed values (a float flag's 1.0 is the variation written 1).
fn is_control(record: &FlagRecord, v: usize) -> bool {
    record.targeting.split.as_ref().is_some_and(|split| serves_value(record, split, v))
}

/// Whether variation `v` of `split` serves `record`'s own value.
fn serves_value(record: &FlagRecord, split: &Split, v: usize) -> bool {
    split
        .variations
        .get(v)
        .and_then(|v| ff_core::Value::from_json(record.value_type, &v.value).ok())
        .is_some_and(|v| v == record.value)
}

/// A write the guardian makes: a regression's rollback or pause, or a ramp step.
#[derive(Debug)]
pub(crate) struct Decision {
    pub(crate) key: String,
    pub(crate) write: Write,
    /// A ramp step (not a regression's action).
    pub(crate) advance: bool,
}

/// Every guarded flag's counts and state, on one instance.
#[derive(Debug)]
pub(crate) struct Guardian {
    instance: String,
    watched: HashMap<String, Watched>,
    /// When every watched rollout's counts were last written, changed or not.
    flushed_all: Option<OffsetDateTime>,
    acting: bool,
    /// The store takes no writes (a file): regressions are shown, never acted on.
    read_only: bool,
}

impl Guardian {
    pub(crate) fn new(instance: String, read_only: bool) -> Self {
        Guardian { instance, watched: HashMap::new(), flushed_all: None, acting: false, read_only }
    }

    pub(crate) fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether there is nothing to watch.
    pub(crate) fn idle(&self) -> bool {
        self.watched.is_empty()
    }

    /// Follows `snapshot`'s guarded flags (a new rollout start resets its counts)
    /// and adds what the layer counted (flag, variation, counts). Returns this
    /// instance's counts to flush: each changed rollout's, all of them so far.
    pub(crate) fn count(
        &mut self,
        snapshot: &Snapshot,
        counted: Vec<Counted>,
        now: OffsetDateTime,
    ) -> Vec<GuardCount> {
        let guarded = snapshot.guarded_keys();
        self.watched.retain(|key, _| guarded.contains(&key.as_str()));
        for key in guarded {
            let Some(record) = snapshot.flag(key) else { continue };
            let Some(guard) = record.targeting.guard.clone() else { continue };
            let variations = record.targeting.split.as_ref().map_or(0, |s| s.variations.len());
            // The rollout as the test sees it: a store stamps a new start when it changes;
            // a file (whose start is whatever it says) is caught here.
            let rollout = fingerprint(&record);
            match self.watched.get_mut(key) {
                Some(w) if w.epoch == epoch(&guard) && w.rollout == rollout => {}
                _ => {
                    self.watched
                        .insert(key.to_owned(), Watched { variations, rollout, ..Watched::new(guard) });
                }
            }
        }
        for c in counted {
            // A flag whose guard went (rolled back, edited), or requests served under
            // an earlier split, count no more.
            let Some(w) = self.watched.get_mut(&c.flag).filter(|w| w.epoch == c.epoch) else { continue };
            let v = c.variation as usize;
            if v >= w.variations {
                continue;
            }
            if w.local.len() <= v {
                w.local.resize(v + 1, Arm::default());
            }
            w.local[v].merge(&c.arm);
            w.dirty = true;
        }
        // Rows are dropped after a week untouched: a quiet instance's are rewritten daily.
        let refresh = self.flushed_all.is_none_or(|t| now - t >= time::Duration::days(1));
        if refresh {
            self.flushed_all = Some(now);
        }
        let mut rows = Vec::new();
        for (key, w) in self.watched.iter().filter(|(_, w)| w.dirty || refresh) {
            rows.extend(w.local.iter().enumerate().filter(|(_, a)| a.requests > 0).map(|(v, arm)| {
                GuardCount {
                    flag: key.clone(),
                    epoch: w.epoch,
                    instance: self.instance.clone(),
                    variation: v as u32,
                    arm: arm.clone(),
                }
            }));
        }
        rows
    }

    /// The counts were flushed.
    pub(crate) fn flushed(&mut self) {
        self.watched.values_mut().for_each(|w| w.dirty = false);
    }

    /// The rollouts whose every-instance counts to read: (flag, epoch).
    pub(crate) fn epochs(&self) -> Vec<(String, i64)> {
        self.watched.iter().map(|(k, w)| (k.clone(), w.epoch)).collect()
    }

    /// Takes every instance's counts of `flag` (`Ok(None)`: the store keeps none;
    /// `Err`: they could not be read this tick, so nothing is decided on them) and
    /// tests them, with this instance's own.
    pub(crate) fn combine(
        &mut self,
        snapshot: &Snapshot,
        flag: &str,
        rows: Result<Option<Vec<GuardCount>>, ()>,
        now: OffsetDateTime,
    ) {
        let (Some(w), Some(record)) = (self.watched.get_mut(flag), snapshot.flag(flag)) else { return };
        w.partial = rows.is_err();
        let rows = rows.unwrap_or(None);
        match rows {
            Some(rows) => {
                // Our own latest counts, whether or not their flush went through.
                let rows = rows.into_iter().filter(|r| r.instance != self.instance && r.epoch == w.epoch);
                let mut all = w.local.clone();
                let mut instances = std::collections::BTreeSet::new();
                for r in rows {
                    let v = r.variation as usize;
                    if v >= w.variations {
                        continue;
                    }
                    if v >= all.len() {
                        all.resize(v + 1, Arm::default());
                    }
                    all[v].merge(&r.arm);
                    instances.insert(r.instance);
                }
                w.instances = instances.len() + usize::from(w.local.iter().any(|a| a.requests > 0));
                w.all = all;
            }
            None => {
                w.all = w.local.clone();
                w.instances = usize::from(w.local.iter().any(|a| a.requests > 0));
            }
        }
        w.test(&record);
        if matches!(w.verdict, Verdict::Regressed { .. }) && w.regressed_at.is_none() {
            w.regressed_at = Some(now);
        }
        w.remember(now);
    }

    /// Whether this instance holds the lease and acts.
    pub(crate) fn set_acting(&mut self, acting: bool) {
        self.acting = acting;
    }

    /// The writes the tests call for, made only by the acting instance: the
    /// rollback or pause of a regression not acted on yet, or a ramp's due step
    /// while the guard is healthy with every metric within its allowance so far
    /// (or has nothing to watch yet).
    pub(crate) fn decide(&mut self, snapshot: &Snapshot, now: OffsetDateTime) -> Vec<Decision> {
        let mut writes = Vec::new();
        for (key, w) in &mut self.watched {
            let Some(record) = snapshot.flag(key) else { continue };
            if w.partial || w.wrote_on.is_some_and(|v| record.version <= v) {
                continue;
            }
            let step = record.targeting.schedule.first().filter(|s| s.at <= now).cloned();
            match &w.verdict {
                Verdict::Regressed { .. } if !w.acted => {
                    if self.read_only {
                        w.note = Some("the store is read-only: roll the rollout back in its file".into());
                        continue;
                    }
                    if !self.acting {
                        continue;
                    }
                    w.acted = true;
                    match action(record, &w.guard, &w.verdict) {
                        Some(write) => writes.push(Decision { key: key.clone(), write, advance: false }),
                        None => w.note = Some("regressed: no ramp steps left to pause".into()),
                    }
                }
                Verdict::Regressed { .. } => {}
                verdict => {
                    let Some(step) = step else { continue };
                    let held = if self.read_only {
                        Some("the store is read-only: its ramp steps cannot be applied")
                    } else if !record.enabled {
                        Some("the flag is switched off")
                    } else {
                        None
                    };
                    if let Some(why) = held {
                        w.note = Some(format!("ramp step due at {} waits: {why}", rfc3339(step.at)));
                        continue;
                    }
                    let nothing_watched = record.targeting.split.is_none();
                    // Healthy, and no worse than allowed so far: a treatment above the
                    // margin whose excess is not yet significant holds the ramp too.
                    let within = match verdict {
                        Verdict::Healthy { evidence } => match evidence.iter().find(|e| e.excess > e.allowed)
                        {
                            Some(e) => Err(format!("worse than allowed so far, not yet significant: {e}")),
                            None => Ok(()),
                        },
                        other => Err(other.to_string()),
                    };
                    if let (false, Err(why)) = (nothing_watched, within) {
                        w.note = Some(format!("ramp step due at {} waits: {why}", rfc3339(step.at)));
                        continue;
                    }
                    if !self.acting || w.acted {
                        continue;
                    }
                    w.acted = true;
                    writes.push(Decision {
                        key: key.clone(),
                        write: advance(record, verdict),
                        advance: true,
                    });
                }
            }
        }
        writes
    }

    /// The write for `key` went through. After a ramp step the next one is
    /// considered on its own (even when the step left the split as it was).
    pub(crate) fn wrote(&mut self, decision: &Decision, what: &str) {
        if let Some(w) = self.watched.get_mut(&decision.key) {
            w.note = Some(what.to_owned());
            w.acted &= !decision.advance;
            if let Mutation::UpdateFlag { expected_version, .. } = &decision.write.mutation {
                w.wrote_on = *expected_version;
            }
        }
    }

    /// The write for `key` was refused or failed: the next tick tries again (on the
    /// flag as it is then; a flag another instance rolled back is no longer watched).
    /// Whether it is the first failure for this rollout (worth a warning).
    pub(crate) fn write_failed(&mut self, key: &str, error: &StoreError) -> bool {
        let Some(w) = self.watched.get_mut(key) else { return false };
        w.acted = false;
        w.failures += 1;
        w.note = Some(format!("not written: {error}"));
        w.failures == 1
    }

    /// Each watched flag's state and counts, for the page, the API and `ff guard`.
    pub(crate) fn states(&self, snapshot: &Snapshot) -> Vec<GuardState> {
        let mut states: Vec<GuardState> = self
            .watched
            .iter()
            .map(|(key, w)| w.state(key, snapshot.flag(key).as_ref(), self.acting))
            .collect();
        states.sort_by(|a, b| a.flag.cmp(&b.flag));
        states
    }
}

/// A guarded flag's state read from the store alone (no `Source` in this process):
/// every instance's counts, tested; no history. `None` without a guard.
pub async fn report(store: &dyn Store, record: &FlagRecord) -> Result<Option<GuardState>, StoreError> {
    let Some(guard) = record.targeting.guard.clone() else { return Ok(None) };
    let mut w = Watched::new(guard);
    let rows = store.guard_counts(&record.key, w.epoch).await?.unwrap_or_default();
    let mut instances = std::collections::BTreeSet::new();
    let variations = record.targeting.split.as_ref().map_or(0, |s| s.variations.len());
    for r in rows.into_iter().filter(|r| (r.variation as usize) < variations) {
        let v = r.variation as usize;
        if v >= w.all.len() {
            w.all.resize(v + 1, Arm::default());
        }
        w.all[v].merge(&r.arm);
        instances.insert(r.instance);
    }
    w.instances = instances.len();
    w.test(record);
    Ok(Some(w.state(&record.key, Some(record), false)))
}

/// One guarded flag as a guardian sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardState {
    /// The flag.
    pub flag: String,
    /// The guard's settings.
    pub guard: Guard,
    /// When the rollout being watched started.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started: Option<OffsetDateTime>,
    /// The test's state: collecting, healthy or regressed (with the numbers).
    pub verdict: Verdict,
    /// When the rollout was found regressed (by this process's guardian).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub regressed_at: Option<OffsetDateTime>,
    /// Requests served the flag's own value, and the others.
    pub control: Summary,
    /// See `control`.
    pub treatment: Summary,
    /// Each variation of the split in force, with its counts.
    pub variations: Vec<VariationState>,
    /// Instances whose counts are in.
    pub instances: usize,
    /// Whether this instance holds the lease and makes the guard's writes.
    pub acting: bool,
    /// Whether the guardian wrote its action for this rollout.
    pub acted: bool,
    /// What the guardian last did, or is waiting for.
    pub note: Option<String>,
    /// When the ramp's next step is due.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_step: Option<OffsetDateTime>,
    /// Counts per 10-second window, oldest first (the last hour; only a `Source` keeps them).
    pub history: Vec<HistoryPoint>,
}

/// One variation of a guarded split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariationState {
    /// What it serves.
    pub value: serde_json::Value,
    /// Its share, in basis points.
    pub weight: u32,
    /// Whether it serves the flag's own value (the control side).
    pub control: bool,
    /// Its requests, errors and latency.
    pub counts: Summary,
}

/// Requests, errors and latency percentiles of some requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// `errors / requests` (0 with none).
    pub error_rate: f64,
    /// Latency percentiles in ms (to within 12.5 %); `None` with no requests.
    pub p50_ms: Option<f64>,
    /// See `p50_ms`.
    pub p95_ms: Option<f64>,
    /// See `p50_ms`.
    pub p99_ms: Option<f64>,
}

impl Summary {
    fn of(arm: &Arm) -> Self {
        let ms = |q| arm.latency_quantile(q).map(|us| (us / 10.0).round() / 100.0);
        Summary {
            requests: arm.requests,
            errors: arm.errors,
            error_rate: arm.error_rate(),
            p50_ms: ms(0.5),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
        }
    }
}

/// What one window counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// The window's end.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Control's requests in the window.
    pub control: Summary,
    /// Treatment's requests in the window.
    pub treatment: Summary,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// `split` as "true 10 %, false 90 %".
fn describe(split: Option<&Split>) -> String {
    let Some(split) = split else { return "no split".into() };
    let parts: Vec<String> =
        split.variations.iter().map(|v| format!("{} {} %", v.value, f64::from(v.weight) / 100.0)).collect();
    parts.join(", ")
}

fn update(record: &FlagRecord, targeting: Targeting) -> Mutation {
    let patch = FlagPatch { targeting: Some(targeting), ..FlagPatch::default() };
    Mutation::UpdateFlag { key: record.key.clone(), patch, expected_version: Some(record.version) }
}

/// The write a regression calls for: the rollback (or pause), version-checked, by
/// [`GUARD_ACTOR`], with the numbers as its reason. `None`: a pause with no ramp
/// steps left.
fn action(record: FlagRecord, guard: &Guard, verdict: &Verdict) -> Option<Write> {
    let t = record.targeting.clone();
    let (targeting, what) = match guard.action {
        // Back to before the rollout: the rules stay; no split, ramp or guard.
        GuardAction::Rollback => {
            (Targeting { split: None, schedule: Vec::new(), guard: None, ..t }, "rolled back".to_owned())
        }
        // The ramp stops where it is: its steps are dropped, the split stays watched.
        GuardAction::Pause if t.schedule.is_empty() => return None,
        GuardAction::Pause => {
            let held = describe(t.split.as_ref());
            (Targeting { schedule: Vec::new(), ..t }, format!("ramp paused at {held}"))
        }
    };
    Some(
        Write::new(GUARD_ACTOR, update(&record, targeting))
            .reason(format!("guarded rollout {what}: {verdict}")),
    )
}

/// The write that applies a guarded ramp's first step (due) into its split.
/// A step that leaves no one on the flag's value completes the rollout: the guard,
/// with nothing left to compare, goes with the remaining steps.
fn advance(record: FlagRecord, verdict: &Verdict) -> Write {
    let mut t = record.targeting.clone();
    let step = t.schedule.remove(0);
    let from = describe(t.split.as_ref());
    t.split = step.split;
    let to = describe(t.split.as_ref());
    let why = match verdict {
        Verdict::Healthy { .. } => format!("guard healthy on {from}"),
        _ => "nothing watched yet".to_owned(),
    };
    let mut what = "advanced";
    let control = t.split.as_ref().is_some_and(|split| {
        split.variations.iter().enumerate().any(|(v, var)| var.weight > 0 && serves_value(&record, split, v))
    });
    if !control {
        (t.guard, t.schedule, what) = (None, Vec::new(), "completed");
    }
    Write::new(GUARD_ACTOR, update(&record, t))
        .reason(format!("guarded ramp {what} to {to} (step due at {}): {why}", rfc3339(step.at)))
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

    /// As the layer counts them, under the flag's rollout in `s`.
    fn counts(s: &Snapshot, counted: Vec<(String, u32, Arm)>) -> Vec<Counted> {
        let epoch = |flag: &str| {
            s.flag(flag).and_then(|r| r.targeting.guard?.started).map_or(0, crate::store::to_millis)
        };
        counted
            .into_iter()
            .map(|(flag, variation, arm)| Counted { epoch: epoch(&flag), flag, variation, arm })
            .collect()
    }

    fn bad() -> Vec<(String, u32, Arm)> {
        vec![("F".to_owned(), 0, arm(1_000, 200)), ("F".to_owned(), 1, arm(9_000, 90))]
    }

    /// One tick as the source runs it, with `others` as the other instances' rows.
    fn tick(
        g: &mut Guardian,
        s: &Snapshot,
        counted: Vec<(String, u32, Arm)>,
        others: Vec<GuardCount>,
    ) -> Vec<Write> {
        let now = OffsetDateTime::now_utc();
        g.count(s, counts(s, counted), now);
        g.flushed();
        for (flag, _) in g.epochs() {
            g.combine(s, &flag, Ok(Some(others.clone())), now);
        }
        g.decide(s, now).into_iter().map(|d| d.write).collect()
    }

    #[test]
    fn a_regression_is_acted_on_once_by_the_acting_instance_and_again_after_a_failed_write() {
        // A float flag whose value 1.0 is the variation written `1`: the control.
        let s = snapshot(
            Value::Float(1.0),
            serde_json::json!({"split": {"variations": [{"value": 2, "weight": 1000}, {"value": 1, "weight": 9000}]},
                               "guard": {"min_requests": 100}}),
        );
        let mut g = Guardian::new("me".into(), false);
        assert!(tick(&mut g, &s, bad(), Vec::new()).is_empty(), "without the lease nothing is written");
        g.set_acting(true);
        let writes = tick(&mut g, &s, Vec::new(), Vec::new());
        assert_eq!(writes.len(), 1);
        let state = &g.states(&s)[0];
        assert_eq!((state.control.requests, state.treatment.requests), (9_000, 1_000));
        assert!(state.variations[1].control && !state.variations[0].control);
        assert!(state.acted && matches!(state.verdict, Verdict::Regressed { .. }));
        let Mutation::UpdateFlag { patch, expected_version, .. } = &writes[0].mutation else { panic!() };
        let t = patch.targeting.as_ref().unwrap();
        assert!(t.split.is_none() && t.guard.is_none(), "{t:?}");
        assert_eq!(*expected_version, Some(s.flag("F").unwrap().version));
        assert_eq!(writes[0].actor, GUARD_ACTOR);
        assert!(tick(&mut g, &s, Vec::new(), Vec::new()).is_empty(), "acted once");
        assert!(g.write_failed("F", &StoreError::ReadOnly("file".into())), "the first failure");
        assert_eq!(tick(&mut g, &s, Vec::new(), Vec::new()).len(), 1, "tried again");
        assert!(!g.write_failed("F", &StoreError::ReadOnly("file".into())), "quietly");
    }

    #[test]
    fn other_instances_counts_are_added_and_ours_are_flushed_whole() {
        let s = snapshot(
            Value::Bool(false),
            serde_json::json!({"split": {"variations": [{"value": true, "weight": 1000}, {"value": false, "weight": 9000}]},
                               "guard": {"min_requests": 100}}),
        );
        let mut g = Guardian::new("me".into(), false);
        g.set_acting(true);
        let now = OffsetDateTime::now_utc();
        let rows = g.count(&s, counts(&s, vec![("F".to_owned(), 0, arm(50, 0))]), now);
        assert_eq!(rows.len(), 1);
        let rows = g.count(&s, counts(&s, vec![("F".to_owned(), 0, arm(10, 0))]), now);
        assert_eq!(rows[0].arm.requests, 60, "all so far");
        g.flushed();
        assert!(g.count(&s, Vec::new(), now).is_empty(), "nothing new: nothing to flush");
        let tomorrow = now + time::Duration::days(1);
        assert_eq!(g.count(&s, Vec::new(), tomorrow).len(), 1, "rewritten daily, so kept while it runs");
        g.flushed();
        // Requests served under another rollout of the flag, or a variation it lacks, are not counted.
        let stale = Counted { flag: "F".into(), epoch: 1, variation: 0, arm: arm(5, 5) };
        let beyond = Counted { flag: "F".into(), epoch: g.epochs()[0].1, variation: 7, arm: arm(5, 5) };
        assert!(g.count(&s, vec![stale, beyond], tomorrow).is_empty());
        // Another instance saw the errors: together they are a regression.
        let epoch = g.epochs()[0].1;
        let other =
            |v, a| GuardCount { flag: "F".into(), epoch, instance: "other".into(), variation: v, arm: a };
        let others = vec![other(0, arm(1_000, 200)), other(1, arm(9_000, 90))];
        let writes = tick(&mut g, &s, Vec::new(), others);
        assert_eq!(writes.len(), 1);
        let state = &g.states(&s)[0];
        assert_eq!((state.instances, state.treatment.requests), (2, 1_060));
    }

    #[test]
    fn a_ramp_step_is_applied_when_due_only_while_healthy_and_a_pause_drops_the_rest() {
        let now = OffsetDateTime::now_utc();
        let at = |secs: i64| rfc3339(now + time::Duration::seconds(secs));
        let split = |w: u32| serde_json::json!({"variations": [{"value": true, "weight": w}, {"value": false, "weight": 10_000 - w}]});
        let ramp = |guard: serde_json::Value| {
            snapshot(
                Value::Bool(false),
                serde_json::json!({"split": split(1000), "schedule": [{"at": at(-1), "split": split(5000)}, {"at": at(60), "split": split(10_000)}],
                                   "guard": guard}),
            )
        };
        let s = ramp(serde_json::json!({"min_requests": 100}));
        let mut g = Guardian::new("me".into(), false);
        g.set_acting(true);
        assert!(tick(&mut g, &s, vec![("F".to_owned(), 0, arm(50, 0))], Vec::new()).is_empty(), "collecting");
        assert!(g.states(&s)[0].note.as_deref().unwrap().contains("waits: collecting"));
        // Enough requests, no significant regression, but worse than allowed so far: it waits.
        let suspect = vec![("F".to_owned(), 0, arm(100, 20)), ("F".to_owned(), 1, arm(900, 9))];
        assert!(tick(&mut g, &s, suspect, Vec::new()).is_empty());
        assert!(matches!(g.states(&s)[0].verdict, Verdict::Healthy { .. }));
        assert!(
            g.states(&s)[0].note.as_deref().unwrap().contains("worse than allowed so far"),
            "{:?}",
            g.states(&s)[0].note
        );
        let mut g = Guardian::new("me".into(), false);
        g.set_acting(true);
        let healthy = vec![("F".to_owned(), 0, arm(1_000, 10)), ("F".to_owned(), 1, arm(9_000, 90))];
        let writes = tick(&mut g, &s, healthy, Vec::new());
        assert_eq!(writes.len(), 1, "healthy: the due step is applied");
        let Mutation::UpdateFlag { patch, .. } = &writes[0].mutation else { panic!() };
        let t = patch.targeting.as_ref().unwrap();
        assert_eq!(t.split.as_ref().unwrap().variations[0].weight, 5000);
        assert_eq!(t.schedule.len(), 1, "the later step waits its turn");
        assert!(writes[0].reason.as_deref().unwrap().starts_with("guarded ramp advanced to true 50 %"));

        // Applied, the next step is considered on its own, even one that keeps the split.
        let same = snapshot(
            Value::Bool(false),
            serde_json::json!({"split": split(1000), "schedule": [{"at": at(-2), "split": split(1000)}, {"at": at(-1), "split": split(10_000)}],
                               "guard": {"min_requests": 100}}),
        );
        let mut g = Guardian::new("me".into(), false);
        g.set_acting(true);
        let healthy = || vec![("F".to_owned(), 0, arm(1_000, 10)), ("F".to_owned(), 1, arm(9_000, 90))];
        let now = OffsetDateTime::now_utc();
        g.count(&same, counts(&same, healthy()), now);
        g.combine(&same, "F", Ok(None), now);
        let d = g.decide(&same, now);
        assert_eq!(d.len(), 1);
        g.wrote(&d[0], "advanced");
        assert!(g.decide(&same, now).is_empty(), "nothing more until the write is in the snapshot");
        let mut moved = same.flag("F").unwrap();
        moved.version += 1;
        moved.targeting.schedule.remove(0);
        let moved = Snapshot::from_state(&StoreState { seq: 2, flags: vec![moved], ..Default::default() });
        g.count(&moved, Vec::new(), now);
        assert_eq!(g.decide(&moved, now).len(), 1, "not stuck after a step that kept the split");
        // A step serving the treatment to everyone completes the rollout: the guard goes.
        let last = snapshot(
            Value::Bool(false),
            serde_json::json!({"split": split(5000), "schedule": [{"at": at(-1), "split": split(10_000)}, {"at": at(60), "split": split(10_000)}],
                               "guard": {"min_requests": 100}}),
        );
        let writes = tick(
            &mut Guardian { acting: true, ..Guardian::new("me".into(), false) },
            &last,
            healthy(),
            Vec::new(),
        );
        let Mutation::UpdateFlag { patch, .. } = &writes[0].mutation else { panic!() };
        let t = patch.targeting.as_ref().unwrap();
        assert!(t.guard.is_none() && t.schedule.is_empty(), "{t:?}");
        assert!(writes[0].reason.as_deref().unwrap().starts_with("guarded ramp completed to true 100 %"));
        // A switched-off flag's ramp waits.
        let mut off = FlagRecord {
            targeting: serde_json::from_value(serde_json::json!({"split": split(1000), "schedule": [{"at": at(-1), "split": split(5000)}], "guard": {"min_requests": 100}})).unwrap(),
            ..FlagRecord::new("F", Value::Bool(false))
        };
        off.enabled = false;
        let off = Snapshot::from_state(&StoreState { seq: 1, flags: vec![off], ..Default::default() });
        let mut g = Guardian { acting: true, ..Guardian::new("me".into(), false) };
        assert!(tick(&mut g, &off, healthy(), Vec::new()).is_empty());
        assert!(g.states(&off)[0].note.as_deref().unwrap().ends_with("waits: the flag is switched off"));

        let s = ramp(serde_json::json!({"min_requests": 100, "action": "pause"}));
        let mut g = Guardian::new("me".into(), false);
        g.set_acting(true);
        let writes = tick(&mut g, &s, bad(), Vec::new());
        let Mutation::UpdateFlag { patch, .. } = &writes[0].mutation else { panic!() };
        let t = patch.targeting.as_ref().unwrap();
        assert!(t.schedule.is_empty() && t.guard.is_some(), "paused: no steps, still watched");
        assert_eq!(t.split.as_ref().unwrap().variations[0].weight, 1000, "where it was");
        assert!(writes[0].reason.as_deref().unwrap().starts_with("guarded rollout ramp paused at true 10 %"));
    }
}
