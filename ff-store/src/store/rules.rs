//! Rules between settings (`RATE_MIN <= RATE_MAX`, declared on a config struct and
//! stored in both flags' schemas), enforced on every write on the write's end state.
//!
//! What a setting serves can depend on who asks (overrides, targeting, a schedule),
//! so the check is the safe one: every value a setting may serve to someone without
//! an override (its value, its off value if it is or may be switched off, each rule's,
//! variation's and step's value) must keep the rule with every value the other may
//! serve; and for each user with an override of either, that user's values with every
//! value the other may serve them. A write that leaves any pair breaking the rule is
//! refused, naming both settings, the rule, the values and the user.

use std::collections::{BTreeMap, BTreeSet};

use ff_core::{FlagRecord, RuleOp, Value};

use super::write::{Staged, WriteTx};
use crate::error::{RuleViolation, StoreError};

/// Refuses `staged` if, once written, it leaves a rule between two settings broken.
pub(crate) async fn check<T: WriteTx>(tx: &mut T, staged: &Staged) -> Result<(), StoreError> {
    let touched: BTreeSet<&str> = staged
        .flags
        .keys()
        .map(String::as_str)
        .chain(staged.overrides.keys().map(|(k, _)| k.as_str()))
        .collect();
    let mut checked = BTreeSet::new();
    for key in touched {
        let Some(flag) = record(tx, staged, key).await? else { continue };
        for rule in &flag.schema.rules {
            // Once per pair, whichever side the write touched.
            let pair = if key <= rule.other.as_str() {
                (key.to_owned(), rule.other.clone())
            } else {
                (rule.other.clone(), key.to_owned())
            };
            if !checked.insert(pair) {
                continue;
            }
            // A setting the store lacks yet (before its first sync) is left to reads.
            let Some(other) = record(tx, staged, &rule.other).await? else { continue };
            check_pair(tx, staged, &flag, rule.op, &other).await?;
        }
    }
    Ok(())
}

/// A flag as the write leaves it, archived or not.
async fn record<T: WriteTx>(
    tx: &mut T,
    staged: &Staged,
    key: &str,
) -> Result<Option<FlagRecord>, StoreError> {
    Ok(match staged.flags.get(key) {
        Some(r) => Some(r.clone()),
        None => tx.flag(key).await?,
    })
}

/// What a flag may serve someone without an override, and whether overrides apply.
struct Served {
    values: Vec<Value>,
    /// Switched on now or by a step: overrides may apply.
    may_be_on: bool,
    off_value: Option<Value>,
}

fn served(flag: &FlagRecord) -> Served {
    let default = flag.schema.default.as_ref().and_then(|j| Value::from_json(flag.value_type, j).ok());
    if flag.archived {
        // Archived, it serves its code default to everyone, overrides included.
        return Served { values: default.into_iter().collect(), may_be_on: false, off_value: None };
    }
    let t = &flag.targeting;
    let may_be_on = flag.enabled || t.schedule.iter().any(|s| s.enabled == Some(true));
    let may_be_off = !flag.enabled || t.schedule.iter().any(|s| s.enabled == Some(false));
    let off_value = may_be_off.then(|| flag.off_value.clone());
    let mut values: Vec<Value> = off_value.iter().cloned().collect();
    if may_be_on {
        values.push(flag.value.clone());
        let splits = t
            .rules
            .iter()
            .filter_map(|r| r.split.as_ref())
            .chain(t.split.as_ref())
            .chain(t.schedule.iter().filter_map(|s| s.split.as_ref()));
        let json = t
            .rules
            .iter()
            .filter_map(|r| r.value.as_ref())
            .chain(splits.flat_map(|s| s.variations.iter().map(|v| &v.value)))
            .chain(t.schedule.iter().filter_map(|s| s.value.as_ref()));
        values.extend(json.filter_map(|j| Value::from_json(flag.value_type, j).ok()));
    }
    if flag.meta.expiry == ff_core::ExpiryPolicy::ServeDefault && flag.meta.expires_at.is_some() {
        // Past its expiry it serves the code default.
        values.extend(default);
    }
    let mut distinct = Vec::with_capacity(values.len());
    for v in values {
        if !distinct.contains(&v) {
            distinct.push(v);
        }
    }
    Served { values: distinct, may_be_on, off_value }
}

impl Served {
    /// What one user may be served, given their override.
    fn for_user(&self, value_type: ff_core::ValueType, over: Option<&serde_json::Value>) -> Vec<Value> {
        match over.and_then(|j| Value::from_json(value_type, j).ok()) {
            Some(v) if self.may_be_on => std::iter::once(v).chain(self.off_value.clone()).collect(),
            _ => self.values.clone(),
        }
    }
}

async fn check_pair<T: WriteTx>(
    tx: &mut T,
    staged: &Staged,
    left: &FlagRecord,
    op: RuleOp,
    right: &FlagRecord,
) -> Result<(), StoreError> {
    let (l, r) = (served(left), served(right));
    holds(left, &l.values, op, right, &r.values, None)?;
    // Whose overrides to check: everyone's if either flag changed, else the users written.
    let all = staged.flags.contains_key(&left.key) || staged.flags.contains_key(&right.key);
    let (lo, ro) = if all {
        (tx.overrides_of(&left.key).await?, tx.overrides_of(&right.key).await?)
    } else {
        (Vec::new(), Vec::new())
    };
    let stored: BTreeMap<(&str, &str), &serde_json::Value> = lo
        .iter()
        .map(|(u, v)| ((left.key.as_str(), u.as_str()), v))
        .chain(ro.iter().map(|(u, v)| ((right.key.as_str(), u.as_str()), v)))
        .collect();
    let written = staged.overrides.keys().filter(|(k, _)| *k == left.key || *k == right.key);
    let users: BTreeSet<&str> =
        stored.keys().map(|(_, u)| *u).chain(written.map(|(_, u)| u.as_str())).collect();
    for user in users {
        let mut value = async |key: &str| -> Result<Option<serde_json::Value>, StoreError> {
            if let Some(v) = staged.overrides.get(&(key.to_owned(), user.to_owned())) {
                return Ok(v.clone());
            }
            if all {
                return Ok(stored.get(&(key, user)).map(|v| (*v).clone()));
            }
            tx.override_value(key, user).await
        };
        let a = value(&left.key).await?;
        let b = value(&right.key).await?;
        if a.is_none() && b.is_none() {
            continue;
        }
        let (lv, rv) = (l.for_user(left.value_type, a.as_ref()), r.for_user(right.value_type, b.as_ref()));
        holds(left, &lv, op, right, &rv, Some(user))?;
    }
    Ok(())
}

fn holds(
    left: &FlagRecord,
    lv: &[Value],
    op: RuleOp,
    right: &FlagRecord,
    rv: &[Value],
    user: Option<&str>,
) -> Result<(), StoreError> {
    for a in lv {
        for b in rv {
            if !op.holds_for(left.schema.cmp_rule(a, &right.schema, b)) {
                return Err(StoreError::RuleBroken(Box::new(RuleViolation {
                    left: left.key.clone(),
                    op,
                    right: right.key.clone(),
                    left_value: a.to_string(),
                    right_value: b.to_string(),
                    user: user.map(str::to_owned),
                })));
            }
        }
    }
    Ok(())
}
