//! Targeting cost per evaluation: rules, splits, explicit lists, and a user's
//! whole flag set. 10,000 distinct users are cycled so no cache hides the work.
//!
//! Run: `cargo bench -p ff-tower --bench targeting`

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use ff_core::{EvalContext, Evaluator, Flag, FlagRecord, Snapshot, StoreState, Targeting, Value};
use serde_json::json;

const USERS: usize = 10_000;
const RULE: Flag<bool> = Flag::new("rule", false);
const SPLIT: Flag<bool> = Flag::new("split", false);
const LIST: Flag<bool> = Flag::new("list", false);
const PLAIN: Flag<bool> = Flag::new("plain", false);

fn record(key: &str, t: serde_json::Value) -> FlagRecord {
    let targeting: Targeting = serde_json::from_value(t).unwrap();
    FlagRecord { targeting, ..FlagRecord::new(key, Value::Bool(false)) }
}

fn list_ids() -> Vec<String> {
    (0..100).map(|i| format!("user-{}", i * 97)).collect()
}

fn kinds(key: &str, kind: usize) -> FlagRecord {
    match kind {
        0 => FlagRecord::new(key, Value::Bool(true)),
        1 => record(
            key,
            json!({"split": {"variations": [{"value": true, "weight": 1000}, {"value": false, "weight": 9000}]}}),
        ),
        2 => record(
            key,
            json!({"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro", "enterprise"]}], "value": true}]}),
        ),
        _ => record(
            key,
            json!({"rules": [{"clauses": [{"attribute": "user_id", "op": "in", "values": list_ids()}], "value": true}]}),
        ),
    }
}

fn benches(c: &mut Criterion) {
    let mut flags = vec![kinds("rule", 2), kinds("split", 1), kinds("list", 3), kinds("plain", 0)];
    // 1,000 more: a quarter each plain, split, rule, 100-id list.
    let keys: Vec<&'static str> =
        (0..1000).map(|i| &*Box::leak(format!("mixed_{i}").into_boxed_str())).collect();
    flags.extend(keys.iter().enumerate().map(|(i, k)| kinds(k, i % 4)));
    let snapshot = Arc::new(Snapshot::from_state(&StoreState {
        seq: 1,
        flags,
        overrides: vec![],
        ..Default::default()
    }));
    let plans = ["free", "pro", "enterprise", "team"];
    let evals: Vec<Evaluator> = (0..USERS)
        .map(|i| {
            let ctx = EvalContext::user(format!("user-{i}")).with_attribute("plan", plans[i % 4]);
            Evaluator::new(snapshot.clone(), ctx)
        })
        .collect();
    let mut g = c.benchmark_group("targeting");
    let mut i = 0;
    let mut next = || {
        i = (i + 1) % USERS;
        &evals[i]
    };
    // The same harness on a flag without targeting: what cycling users costs by itself.
    g.bench_function("plain_baseline", |b| b.iter(|| black_box(next().get(black_box(PLAIN)))));
    g.bench_function("rule_plan_in", |b| b.iter(|| black_box(next().get(black_box(RULE)))));
    g.bench_function("split_10_percent", |b| b.iter(|| black_box(next().get(black_box(SPLIT)))));
    let listed: Vec<Evaluator> =
        list_ids().into_iter().map(|u| Evaluator::new(snapshot.clone(), EvalContext::user(u))).collect();
    let mut j = 0;
    g.bench_function("list_100_user_in", |b| {
        b.iter(|| {
            j = (j + 1) % listed.len();
            black_box(listed[j].get(black_box(LIST)))
        })
    });
    g.bench_function("list_100_user_out", |b| b.iter(|| black_box(next().get(black_box(LIST)))));
    let mixed: Vec<Flag<bool>> = keys.iter().map(|k| Flag::new(k, false)).collect();
    g.bench_function("all_1000_mixed_flags_one_user", |b| {
        b.iter(|| {
            let e = next();
            mixed.iter().filter(|f| e.get(**f)).count()
        })
    });
    g.finish();
}

criterion_group!(targeting, benches);
criterion_main!(targeting);
