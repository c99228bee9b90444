//! Property tests (proptest): bucketing and rollouts for arbitrary users and percentages.

use std::collections::HashSet;
use std::sync::Arc;

use ff_core::{
    BUCKETS, EvalContext, Evaluator, Flag, FlagRecord, Snapshot, StoreState, Targeting, Value, bucket,
};
use proptest::prelude::*;
use serde_json::json;

const F: Flag<bool> = Flag::new("F", false);

fn rollout(basis_points: u32, salt: Option<&str>) -> Arc<Snapshot> {
    let mut t = json!({"split": {"variations": [
        {"value": true, "weight": basis_points},
        {"value": false, "weight": BUCKETS - basis_points}
    ]}});
    if basis_points == 0 {
        t = json!({"split": {"variations": [{"value": false, "weight": BUCKETS}]}});
    } else if basis_points == BUCKETS {
        t = json!({"split": {"variations": [{"value": true, "weight": BUCKETS}]}});
    }
    if let Some(s) = salt {
        t["salt"] = json!(s);
    }
    let targeting: Targeting = serde_json::from_value(t).unwrap();
    let record = FlagRecord { targeting, ..FlagRecord::new("F", Value::Bool(false)) };
    Arc::new(Snapshot::from_state(&StoreState {
        seq: 1,
        flags: vec![record],
        overrides: vec![],
        ..Default::default()
    }))
}

fn inside(s: &Arc<Snapshot>, user: &str) -> bool {
    Evaluator::new(s.clone(), EvalContext::user(user)).get(F)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_bucket_is_in_range_and_stable(salt in ".{0,40}", value in ".{0,60}") {
        let b = bucket(&salt, &value);
        prop_assert!(b < BUCKETS);
        prop_assert_eq!(b, bucket(&salt, &value));
    }

    #[test]
    fn raising_a_percentage_never_removes_a_user(user in "[a-zA-Z0-9_@.-]{1,40}", p in 0u32..=10_000, q in 0u32..=10_000) {
        let (low, high) = (p.min(q), p.max(q));
        let (a, b) = (rollout(low, None), rollout(high, None));
        prop_assert!(!inside(&a, &user) || inside(&b, &user));
        // Exactly the users whose bucket is below the percentage.
        prop_assert_eq!(inside(&a, &user), bucket("F", &user) < low);
    }

    #[test]
    fn the_same_input_gives_the_same_answer_after_a_rebuild(user in ".{1,40}", p in 0u32..=10_000) {
        prop_assert_eq!(inside(&rollout(p, None), &user), inside(&rollout(p, None), &user));
        prop_assert_eq!(inside(&rollout(p, Some("s")), &user), bucket("s", &user) < p);
    }

}

proptest! {
    // 20,000 evaluations a case: a few cases are enough.
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn random_samples_are_close_to_the_percentage(seed in any::<u64>()) {
        // 20,000 distinct random ids in a 10 % rollout: within 1.5 points.
        let s = rollout(1_000, None);
        let mut rng = seed;
        let mut ids = HashSet::new();
        while ids.len() < 20_000 {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ids.insert(format!("{:x}", rng >> 11));
        }
        let n = ids.iter().filter(|id| inside(&s, id)).count();
        prop_assert!((1_700..=2_300).contains(&n), "{} of 20,000", n);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Any sequence of override sets and deletes and value changes, applied one
    /// change at a time (copying only the touched user shard), gives the snapshot a
    /// full load gives.
    #[test]
    fn applying_changes_one_by_one_equals_a_full_load(
        ops in prop::collection::vec((0u8..3, 0usize..2_000, 0usize..4, any::<bool>()), 1..150)
    ) {
        use ff_store::{FlagReader, FlagWriter, MemoryStore, Mutation, Write};
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let store = MemoryStore::new();
            let keys = ["A", "B", "C", "D"];
            let decls: Vec<_> = keys.iter().map(|k| Flag::<bool>::new(k, false).decl()).collect();
            ff_store::sync(&store, &decls, &Default::default()).await.unwrap();
            let mut snapshot = Snapshot::from_state(&store.load().await.unwrap());
            for (op, user, flag, value) in ops {
                let (key, user) = (keys[flag], format!("user-{user}"));
                let m = match op {
                    0 => Mutation::set_override(key, user, value),
                    1 => Mutation::DeleteOverride { key: key.into(), user_id: user },
                    _ => Mutation::set_value(key, value),
                };
                store.write(Write::new("p", m)).await.unwrap();
                let changes = store.changes_since(snapshot.version(), 10).await.unwrap();
                snapshot = snapshot.apply(&changes).unwrap();
            }
            let full = Snapshot::from_state(&store.load().await.unwrap());
            assert_eq!(snapshot.to_state(), full.to_state());
            assert_eq!(snapshot.users_with_overrides(), full.users_with_overrides());
            // Override counts kept per change agree with a count of the full state.
            let mut counted = std::collections::HashMap::new();
            for o in full.to_state().overrides {
                *counted.entry(o.key).or_insert(0) += 1;
            }
            let kept: std::collections::HashMap<String, usize> =
                snapshot.override_counts().into_iter().map(|(k, n)| (k.to_owned(), n)).collect();
            assert_eq!(kept, counted);
            for u in (0..2_000).step_by(37) {
                let ctx = EvalContext::user(format!("user-{u}"));
                for key in keys {
                    assert_eq!(snapshot.evaluate_key(key, &ctx), full.evaluate_key(key, &ctx), "{key} user-{u}");
                }
            }
        });
    }
}
