//! Environment overrides: `FF_<KEY>=value` pins a declared flag for the process,
//! before everything else, with the declaration's validation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ff_core::{EvalContext, Evaluator, Flag, FlagKind, Reason, env_var_name};
use ff_store::{FlagReader, FlagWriter, MemoryStore, Mutation, Source, Store, StoreError, Write};

#[path = "support/hooked.rs"]
mod hooked;
use hooked::Hooked;

const CHECKOUT: Flag<bool> = Flag::new("NEW_CHECKOUT", false).kind(FlagKind::Release);
const LEAD: Flag<i64> = Flag::new("LEAD_HOURS", 24).range(0, 1000);
const BANNER: Flag<String> = Flag::new("banner.text", "hi");
const PATIENCE: Duration = Duration::from_secs(10);

fn w(m: Mutation) -> Write {
    Write::new("test", m)
}

fn eval(source: &Source, user: &str) -> Evaluator {
    Evaluator::new(source.snapshot(), EvalContext::user(user))
}

async fn start(store: impl Store, vars: &[(&str, &str)]) -> Source {
    Source::builder(store)
        .declare([CHECKOUT.decl(), LEAD.decl(), BANNER.decl()])
        .env_vars(vars.iter().map(|(k, v)| (*k, *v)))
        .poll_interval(Duration::from_millis(50))
        .startup_timeout(Duration::from_secs(5))
        .start()
        .await
}

#[test]
fn variable_names() {
    assert_eq!(env_var_name("NEW_CHECKOUT"), "FF_NEW_CHECKOUT");
    assert_eq!(env_var_name("new-checkout.v2"), "FF_NEW_CHECKOUT_V2");
    assert_eq!(env_var_name("banner.text"), "FF_BANNER_TEXT");
}

#[tokio::test]
async fn a_pin_beats_the_switch_overrides_and_the_global_value_in_both_states() {
    for (pin, other) in [("true", false), ("false", true)] {
        let store = MemoryStore::new();
        let source = start(store.clone(), &[("FF_NEW_CHECKOUT", pin), ("FF_UNRELATED", "1")]).await;
        let want = !other;
        // The store says the other value, for everyone and for u1 explicitly.
        store.write(w(Mutation::set_value("NEW_CHECKOUT", other))).await.unwrap();
        store.write(w(Mutation::set_override("NEW_CHECKOUT", "u1", other))).await.unwrap();
        assert!(source.wait_for_version(store.latest_seq().await.unwrap(), PATIENCE).await);
        for user in ["u1", "u2"] {
            let d = eval(&source, user).detail(CHECKOUT);
            assert_eq!((d.value, d.reason), (want, Reason::Env), "{user}");
        }
        // Switched off: still the pin.
        store.write(w(Mutation::set_enabled("NEW_CHECKOUT", false))).await.unwrap();
        assert!(source.wait_for_version(store.latest_seq().await.unwrap(), PATIENCE).await);
        assert_eq!(eval(&source, "u1").detail(CHECKOUT).reason, Reason::Env);
        assert_eq!(eval(&source, "u1").get(CHECKOUT), want);
        // Untyped readers (the admin) see it too, and other flags are untouched.
        let snapshot = source.snapshot();
        let ctx = EvalContext::user("u1");
        assert_eq!(
            snapshot.evaluate_key("NEW_CHECKOUT", &ctx),
            Some((ff_core::Value::Bool(want), Reason::Env))
        );
        let all: Vec<_> =
            eval(&source, "u1").all().map(|(r, v, why)| (r.key().to_owned(), v.clone(), why)).collect();
        assert!(all.contains(&("NEW_CHECKOUT".into(), ff_core::Value::Bool(want), Reason::Env)), "{all:?}");
        assert_eq!(eval(&source, "u1").detail(LEAD).reason, Reason::Global);
        assert_eq!(snapshot.pinned().collect::<Vec<_>>(), [("NEW_CHECKOUT", &ff_core::Value::Bool(want))]);
        assert!(source.env_problems().is_empty());
    }
}

#[tokio::test]
async fn values_are_parsed_and_checked_like_any_other() {
    let store = MemoryStore::new();
    let source = start(
        store.clone(),
        &[
            ("FF_LEAD_HOURS", "5000"),
            ("FF_BANNER_TEXT", "closed for maintenance"),
            ("FF_NEW_CHECKOUT", "yes"),
        ],
    )
    .await;
    let problems = source.env_problems().to_vec();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0].0, "FF_NEW_CHECKOUT");
    assert!(problems[0].1.contains("expected a bool value, got string"), "{problems:?}");
    assert_eq!(problems[1].0, "FF_LEAD_HOURS");
    assert!(problems[1].1.contains("above the maximum 1000"), "{problems:?}");
    // Refused pins change nothing; a plain word is a string.
    let e = eval(&source, "u");
    assert_eq!((e.get(LEAD), e.detail(LEAD).reason), (24, Reason::Global));
    assert_eq!((e.get(CHECKOUT), e.detail(CHECKOUT).reason), (false, Reason::Global));
    assert_eq!((e.get(BANNER).as_str(), e.detail(BANNER).reason), ("closed for maintenance", Reason::Env));
    // JSON is JSON: a quoted string, and an in-range number.
    let source =
        start(MemoryStore::new(), &[("FF_LEAD_HOURS", "12"), ("FF_BANNER_TEXT", "\"quoted\"")]).await;
    assert_eq!((eval(&source, "u").get(LEAD), eval(&source, "u").get(BANNER).as_str()), (12, "quoted"));
}

#[tokio::test]
async fn two_keys_with_one_variable_pin_neither() {
    const DOTTED: Flag<bool> = Flag::new("a.b", false);
    const SNAKE: Flag<bool> = Flag::new("A_B", false);
    let source = Source::builder(MemoryStore::new())
        .declare([DOTTED.decl(), SNAKE.decl()])
        .env_vars([("FF_A_B", "true")])
        .start()
        .await;
    assert_eq!(source.env_problems().len(), 2);
    assert!(source.env_problems()[0].1.contains("names both"), "{:?}", source.env_problems());
    assert!(!eval(&source, "u").get(DOTTED) && !eval(&source, "u").get(SNAKE));
}

#[tokio::test]
async fn pins_hold_across_changes_full_reloads_and_a_store_that_is_down() {
    let down = Arc::new(AtomicBool::new(true));
    let flag = down.clone();
    let store = Hooked::new(move |_| {
        if flag.load(Ordering::SeqCst) { Err(StoreError::Corrupt("down".into())) } else { Ok(()) }
    });
    let source = Source::builder(store.clone())
        .declare([CHECKOUT.decl(), LEAD.decl()])
        .env_vars([("FF_NEW_CHECKOUT", "true")])
        .startup_timeout(Duration::from_millis(300))
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(100))
        .poll_interval(Duration::from_millis(50))
        .start()
        .await;
    // The store never answered: code defaults, and the pin.
    let e = eval(&source, "u");
    assert_eq!((e.get(CHECKOUT), e.detail(CHECKOUT).reason), (true, Reason::Env));
    assert_eq!((e.get(LEAD), e.detail(LEAD).reason), (24, Reason::Default));
    down.store(false, Ordering::SeqCst);
    let mut rx = source.subscribe();
    tokio::time::timeout(PATIENCE, rx.wait_for(|s| s.origin == ff_store::Origin::Store))
        .await
        .unwrap()
        .unwrap();
    store.inner.write(w(Mutation::set_value("LEAD_HOURS", 7))).await.unwrap();
    let v = source.status().version;
    assert!(source.wait_for_version(v + 1, PATIENCE).await);
    let e = eval(&source, "u");
    assert_eq!((e.get(CHECKOUT), e.detail(CHECKOUT).reason, e.get(LEAD)), (true, Reason::Env, 7));
}

#[tokio::test]
async fn switched_off_the_environment_is_not_read() {
    let source = Source::builder(MemoryStore::new())
        .declare([CHECKOUT.decl()])
        .env_vars([("FF_NEW_CHECKOUT", "true")])
        .env_overrides(false)
        .start()
        .await;
    assert_eq!(eval(&source, "u").detail(CHECKOUT).reason, Reason::Global);
    assert_eq!(source.snapshot().pinned().count(), 0);
}

#[tokio::test]
async fn pinned_reads_are_counted_as_env() {
    let source = start(MemoryStore::new(), &[("FF_NEW_CHECKOUT", "true")]).await;
    for _ in 0..3 {
        assert!(eval(&source, "u").get(CHECKOUT));
    }
    let (counts, _) = source.usage().collect();
    let env: Vec<_> = counts.iter().filter(|c| c.key == "NEW_CHECKOUT").collect();
    assert_eq!(env.len(), 1, "{counts:?}");
    assert_eq!((env[0].reason.as_str(), env[0].variant.as_str(), env[0].count), ("env", "true", 3));
}

#[tokio::test]
async fn a_pin_beats_rules_and_expiry() {
    let store = MemoryStore::new();
    let source = start(store.clone(), &[("FF_NEW_CHECKOUT", "false")]).await;
    let targeting = serde_json::from_value(serde_json::json!({"rules": [{"clauses": [
        {"attribute": "user_id", "op": "in", "values": ["u1"]}], "value": true}]}))
    .unwrap();
    let patch = ff_store::FlagPatch {
        value: Some(true.into()),
        targeting: Some(targeting),
        expiry: Some(ff_core::ExpiryPolicy::ServeDefault),
        expires_at: Some(Some(time::OffsetDateTime::now_utc() - time::Duration::days(1))),
        ..Default::default()
    };
    let m = Mutation::UpdateFlag { key: "NEW_CHECKOUT".into(), patch, expected_version: None };
    store.write(w(m)).await.unwrap();
    assert!(source.wait_for_version(store.latest_seq().await.unwrap(), PATIENCE).await);
    for user in ["u1", "u2"] {
        let d = eval(&source, user).detail(CHECKOUT);
        assert_eq!((d.value, d.reason), (false, Reason::Env), "{user}");
    }
    // Without the pin the same flag is expired (the code default) for everyone.
    let unpinned = start(store.clone(), &[]).await;
    assert_eq!(eval(&unpinned, "u1").detail(CHECKOUT).reason, Reason::Expired);
}

/// A flag the environment pins is not counted in this process (its reads are no
/// split's), yet its guardian watches the rollout: the lease holder decides for all.
#[tokio::test]
async fn a_pinned_guarded_flag_is_not_watched() {
    let store = MemoryStore::new();
    let targeting = serde_json::json!({
        "split": {"variations": [{"value": true, "weight": 5000}, {"value": false, "weight": 5000}]},
        "guard": {"min_requests": 10}
    });
    let patch = ff_store::FlagPatch {
        targeting: Some(serde_json::from_value(targeting).unwrap()),
        ..Default::default()
    };
    let source = start(store.clone(), &[]).await;
    store
        .write(w(Mutation::UpdateFlag { key: "NEW_CHECKOUT".into(), patch, expected_version: None }))
        .await
        .unwrap();
    drop(source);
    let source = Source::builder(store.clone())
        .declare([CHECKOUT.decl()])
        .env_vars([("FF_NEW_CHECKOUT", "true")])
        .guard_interval(Duration::from_millis(20))
        .start()
        .await;
    assert!(!source.snapshot().has_guards(), "pinned: this process's reads are not the split's");
    assert_eq!(eval(&source, "u").detail(CHECKOUT).reason, Reason::Env);
    // Still watched here: were this instance the one acting, the other instances'
    // counts would reach a decision.
    let mut waited = 0;
    while source.guard_states().is_empty() && waited < 500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    let state = &source.guard_states()[0];
    assert_eq!(
        (state.flag.as_str(), state.control.requests, state.treatment.requests),
        ("NEW_CHECKOUT", 0, 0)
    );
    assert!(state.acting, "the one instance holds the lease");
    assert!(store.flag("NEW_CHECKOUT").await.unwrap().unwrap().targeting.guard.is_some(), "nothing written");
}
