//! Targeting cost per evaluation: rules, splits, explicit lists, and a user's
//! whole flag set. 10,000 distinct users are cycled so no cache hides the work.
//! Each user has its own `Evaluator` (what `Current` reads through); the last two
//! benches show what the task-local read adds on top.
//!
//! Run: `cargo bench -p ff-tower --bench targeting`

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use ff_core::{EvalContext, Evaluator, Flag, Value};
use ff_tower::{Current, sync_scope};

#[path = "support/workload.rs"]
mod workload;
use workload::{list_ids, targeting_user, targeting_workload};

const USERS: usize = 10_000;
const RULE: Flag<bool> = Flag::new("rule", false);
const SPLIT: Flag<bool> = Flag::new("split", false);
const LIST: Flag<bool> = Flag::new("list", false);
const PLAIN: Flag<bool> = Flag::new("plain", false);

fn benches(c: &mut Criterion) {
    let snapshot = Arc::new(targeting_workload());
    let evals: Vec<Evaluator> =
        (0..USERS).map(|i| Evaluator::new(snapshot.clone(), targeting_user(i))).collect();
    let listed: Vec<Evaluator> =
        list_ids().into_iter().map(|u| Evaluator::new(snapshot.clone(), EvalContext::user(u))).collect();
    let mixed: Vec<Flag<bool>> =
        (0..1000).map(|i| Flag::new(Box::leak(format!("mixed_{i}").into_boxed_str()), false)).collect();
    let mut g = c.benchmark_group("targeting");
    let mut bench = |name: &str, users: &[Evaluator], read: &dyn Fn(&Evaluator) -> usize| {
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % users.len();
                read(black_box(&users[i]))
            })
        });
    };
    let one = |flag: Flag<bool>| move |e: &Evaluator| usize::from(e.get(black_box(flag)));
    // The same harness on a flag without targeting: what cycling users costs by itself.
    bench("plain_baseline", &evals, &one(PLAIN));
    bench("rule_plan_in", &evals, &one(RULE));
    bench("split_10_percent", &evals, &one(SPLIT));
    bench("list_100_user_in", &listed, &one(LIST));
    bench("list_100_user_out", &evals, &one(LIST));
    bench("all_1000_mixed_flags_one_user", &evals, &|e| {
        e.all().filter(|(_, v, _)| matches!(v, Value::Bool(true))).count()
    });
    // The same flags read one by one by key, as handlers do.
    bench("1000_mixed_flags_by_key_one_user", &evals, &|e| mixed.iter().filter(|f| e.get(**f)).count());
    // One user, in a request scope: the evaluator read directly and through `Current`.
    let user = evals[1].clone();
    g.bench_function("rule_evaluator_hot", |b| b.iter(|| user.get(black_box(RULE))));
    sync_scope(user.clone(), || {
        g.bench_function("rule_current_hot", |b| b.iter(|| Current::get(black_box(RULE))));
    });
    g.finish();
}

criterion_group!(targeting, benches);
criterion_main!(targeting);
