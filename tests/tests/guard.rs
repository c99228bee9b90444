//! Guarded rollouts end to end on SQLite: the layer counts each variation's
//! requests, the Source's guardian finds a failing treatment and rolls the flag
//! back through the audited write path (actor `ff-guard`, the numbers as reason),
//! an equal treatment is left alone, and a revert through the admin API undoes
//! the rollback.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use ff_core::Flag;
use ff_store::{ChangeQuery, FlagPatch, Mutation, Role, Source, SqlStore, Store, Write};
use ff_tower::{Current, FlagsLayer, UserIdHeader};
use http::StatusCode;
use tower::ServiceExt;

const NEW_CHECKOUT: Flag<bool> = Flag::new("NEW_CHECKOUT", false);

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<SqlStore>,
    source: Source,
    app: Router,
}

/// `NEW_CHECKOUT` on a guarded 50 % rollout; the new checkout fails one request
/// in `fail_every` (never with 0).
async fn setup(fail_every: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    let store = Arc::new(SqlStore::connect(&url).await.unwrap());
    let (source, app) = instance(store.clone() as Arc<dyn Store>, fail_every).await;
    guard(
        &*store,
        serde_json::json!({
            "split": {"variations": [{"value": true, "weight": 5000}, {"value": false, "weight": 5000}]},
            "guard": {"max_error_increase": 1, "min_requests": 100}
        }),
    )
    .await;
    wait(|| source.snapshot().has_guards()).await;
    Setup { _dir: dir, store, source, app }
}

/// Sets `NEW_CHECKOUT`'s targeting.
async fn guard(store: &dyn Store, targeting: serde_json::Value) {
    let patch =
        FlagPatch { targeting: Some(serde_json::from_value(targeting).unwrap()), ..FlagPatch::default() };
    let mutation = Mutation::UpdateFlag { key: "NEW_CHECKOUT".into(), patch, expected_version: None };
    store.write(Write::new("tests", mutation)).await.unwrap();
}

/// One instance of the app on `store`: its source and router.
async fn instance(store: Arc<dyn Store>, fail_every: u64) -> (Source, Router) {
    let source = Source::builder_arc(store)
        .declare([NEW_CHECKOUT.decl()])
        .poll_interval(Duration::from_millis(20))
        .guard_interval(Duration::from_millis(20))
        .start()
        .await;
    let served = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route(
            "/checkout",
            get(move || {
                let served = served.clone();
                async move {
                    let new = Current::get(NEW_CHECKOUT);
                    let n = served.fetch_add(u64::from(new), Ordering::Relaxed);
                    if new && fail_every > 0 && n.is_multiple_of(fail_every) {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        )
        .layer(FlagsLayer::new(source.clone()).make_context(UserIdHeader::new("x-user-id")));
    (source, app)
}

async fn wait(mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends up to `n` requests from distinct users; how many it took until `stop`.
async fn drive(app: &Router, n: usize, stop: impl FnMut() -> bool) -> Option<usize> {
    drive_all(std::slice::from_ref(app), n, stop).await
}

/// [`drive`], each request to the next of `apps` in turn.
async fn drive_all(apps: &[Router], n: usize, mut stop: impl FnMut() -> bool) -> Option<usize> {
    for i in 0..n {
        if stop() {
            return Some(i);
        }
        let req = http::Request::get("/checkout")
            .header("x-user-id", format!("user-{i}"))
            .body(Body::empty())
            .unwrap();
        apps[i % apps.len()].clone().oneshot(req).await.unwrap();
        if i % 100 == 99 {
            // Lets the guardian and the source run between bursts.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    stop().then_some(n)
}

/// Traffic spread over `instances` in bursts of 300 until the store has the rollback
/// (at most 60,000 requests); whether it came.
async fn drive_until_rolled_back(instances: &[(Source, Router)], store: &dyn Store) -> bool {
    let apps: Vec<Router> = instances.iter().map(|(_, a)| a.clone()).collect();
    for _ in 0..200 {
        drive_all(&apps, 300, || false).await;
        if rolled_back_store(store).await {
            return true;
        }
    }
    false
}

async fn rolled_back_store(store: &dyn Store) -> bool {
    store.flag("NEW_CHECKOUT").await.unwrap().is_some_and(|f| f.targeting.split.is_none())
}

fn rolled_back(source: &Source) -> bool {
    source.snapshot().flag("NEW_CHECKOUT").is_some_and(|f| f.targeting.split.is_none())
}

async fn guard_changes(store: &dyn Store) -> Vec<ff_core::Change> {
    let query = ChangeQuery {
        key: Some("NEW_CHECKOUT".into()),
        actor: Some("ff-guard".into()),
        limit: 100,
        ..Default::default()
    };
    store.changes(&query).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_treatment_is_rolled_back_once_and_a_revert_undoes_it() {
    let s = setup(5).await;
    let took = drive(&s.app, 20_000, || rolled_back(&s.source)).await;
    let took = took.expect("rolled back within 20,000 requests");
    eprintln!("20 % of the new checkout failing at 50 %: rolled back after {took} requests");
    // More traffic after the rollback writes nothing more.
    drive(&s.app, 500, || false).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let changes = guard_changes(&*s.store).await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    let reason = changes[0].reason.clone().unwrap();
    assert!(reason.starts_with("guarded rollout rolled back: regressed: error rate"), "{reason}");
    assert!(reason.contains("+1.00 allowed") && reason.contains("mSPRT ln Λ"), "{reason}");
    let record = s.source.snapshot().flag("NEW_CHECKOUT").unwrap();
    assert!(record.targeting.guard.is_none() && record.targeting.schedule.is_empty());
    assert!(!s.source.snapshot().has_guards(), "the layer stops recording");
    // Everyone gets the control now.
    for i in 0..20 {
        let ctx = ff_core::EvalContext::user(format!("user-{i}"));
        assert!(!s.source.snapshot().evaluate(&NEW_CHECKOUT, &ctx).value);
    }

    // The audit log's revert brings the guarded rollout back.
    let (_, token) = ff_admin::create_token(&*s.store, "root", Role::Admin, "test", None).await.unwrap();
    let admin = Router::new().nest("/admin", ff_admin::Admin::new(s.store.clone()).router());
    let req = http::Request::post(format!("/admin/api/changes/{}/revert", changes[0].seq))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let res = admin.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    wait(|| s.source.snapshot().flag("NEW_CHECKOUT").is_some_and(|f| f.targeting.guard.is_some())).await;
    let restored = s.source.snapshot().flag("NEW_CHECKOUT").unwrap();
    assert!(restored.targeting.split.is_some());
    assert!(s.source.snapshot().has_guards());
    // A new start: the old evidence does not roll it back again.
    let old_start = serde_json::from_value::<ff_core::FlagRecord>(changes[0].before.clone().unwrap())
        .unwrap()
        .targeting
        .guard
        .unwrap()
        .started;
    assert!(restored.targeting.guard.unwrap().started > old_start);
    wait(|| s.source.guard_states().first().is_some_and(|g| g.started > old_start)).await;
    let state = &s.source.guard_states()[0];
    assert!(
        matches!(state.verdict, ff_core::guard::Verdict::Collecting { control: 0, treatment: 0, .. }),
        "{state:?}"
    );
    assert!(state.acting, "the one instance holds the lease");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(guard_changes(&*s.store).await.len(), 1);
}

/// A guarded ramp's step is applied by the guardian once due and only after the
/// guard has found the rollout healthy; a failing treatment is rolled back instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_ramp_advances_only_while_healthy() {
    for fail_every in [0, 5] {
        let s = setup(fail_every).await;
        let at = (time::OffsetDateTime::now_utc() - time::Duration::seconds(1))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let split = |w: u32| serde_json::json!({"variations": [{"value": true, "weight": w}, {"value": false, "weight": 10_000 - w}]});
        guard(
            &*s.store,
            serde_json::json!({
                "split": split(1000), "schedule": [{"at": at, "split": split(5000)}],
                "guard": {"max_error_increase": 1, "min_requests": 100}
            }),
        )
        .await;
        wait(|| s.source.snapshot().flag("NEW_CHECKOUT").unwrap().targeting.schedule.len() == 1).await;
        // Due, but nothing counted yet: it waits.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(s.source.snapshot().flag("NEW_CHECKOUT").unwrap().targeting.schedule.len(), 1);
        let advanced = || s.source.snapshot().flag("NEW_CHECKOUT").unwrap().targeting.schedule.is_empty();
        drive(&s.app, 20_000, advanced).await.expect("the ramp moved on or was rolled back");
        let changes = guard_changes(&*s.store).await;
        let reason = changes[0].reason.clone().unwrap();
        let record = s.source.snapshot().flag("NEW_CHECKOUT").unwrap();
        if fail_every == 0 {
            assert!(reason.starts_with("guarded ramp advanced to true 50 %, false 50 %"), "{reason}");
            assert!(reason.contains("guard healthy on true 10 %"), "{reason}");
            assert_eq!(record.targeting.split.unwrap().variations[0].weight, 5000);
        } else {
            assert!(reason.starts_with("guarded rollout rolled back"), "{reason}");
            assert!(record.targeting.split.is_none());
        }
        assert_eq!(changes.len(), 1, "{changes:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_postgresql() {
    let Some(url) = ff_store::postgres_test_database().await else { return };
    three_instances_combine_counts_and_one_acts(Arc::new(SqlStore::connect(&url).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_redis() {
    let Some(store) = ff_store::redis_test_store().await else { return };
    three_instances_combine_counts_and_one_acts(Arc::new(store)).await;
}

/// Three instances on one store: each counts its own requests, the guardian
/// holding the lease decides on all three's counts, and one rollback is written.
/// Then, on a fresh rollout, the acting instance dies mid-rollout: another takes the
/// lease over and rolls back, once.
async fn three_instances_combine_counts_and_one_acts(store: Arc<dyn Store>) {
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(instance(store.clone(), 5).await);
    }
    let rollout = serde_json::json!({
        "split": {"variations": [{"value": true, "weight": 5000}, {"value": false, "weight": 5000}]},
        // Needs more than any one instance sees before the evidence is in.
        "guard": {"max_error_increase": 1, "min_requests": 300}
    });
    guard(&*store, rollout.clone()).await;
    wait(|| instances.iter().all(|(s, _)| s.snapshot().has_guards())).await;
    assert!(
        drive_until_rolled_back(&instances, &*store).await,
        "rolled back within 60,000 requests: {:#?}",
        instances.iter().map(|(s, _)| s.guard_states()).collect::<Vec<_>>()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let changes = guard_changes(&*store).await;
    assert_eq!(changes.len(), 1, "exactly one rollback: {changes:?}");
    let before = serde_json::from_value::<ff_core::FlagRecord>(changes[0].before.clone().unwrap()).unwrap();
    let epoch = before.targeting.guard.unwrap().started.unwrap();
    let rows = store
        .guard_counts(&before.key, (epoch.unix_timestamp_nanos() / 1_000_000) as i64)
        .await
        .unwrap()
        .unwrap();
    let per_instance = |i: &str| rows.iter().filter(|r| r.instance == i).map(|r| r.arm.requests).sum::<u64>();
    let names: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.instance.as_str()).collect();
    assert_eq!(names.len(), 3, "every instance flushed its counts: {names:?}");
    let reason = changes[0].reason.clone().unwrap();
    let decided_on: u64 =
        reason.split("; ").last().unwrap().split(' ').filter_map(|w| w.parse::<u64>().ok()).sum();
    assert!(names.iter().all(|n| decided_on > per_instance(n)), "decided on all three's counts: {reason}");

    // A new rollout; the instance acting for it dies before it decides.
    guard(&*store, rollout).await;
    wait(|| instances.iter().all(|(s, _)| s.snapshot().has_guards())).await;
    wait(|| instances.iter().any(|(s, _)| s.guard_states().first().is_some_and(|g| g.acting))).await;
    let acting =
        instances.iter().position(|(s, _)| s.guard_states().first().is_some_and(|g| g.acting)).unwrap();
    drop(instances.remove(acting));
    assert!(drive_until_rolled_back(&instances, &*store).await, "another instance took over and rolled back");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let changes = guard_changes(&*store).await;
    assert_eq!(changes.len(), 2, "one more rollback, written once: {changes:?}");
    let record = store.flag("NEW_CHECKOUT").await.unwrap().unwrap();
    assert!(record.targeting.guard.is_none() && record.targeting.split.is_none(), "consistent: {record:?}");
    assert!(instances.iter().any(|(s, _)| s.guard_states().is_empty()), "nothing left to watch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equal_treatment_is_left_alone() {
    let s = setup(0).await;
    assert_eq!(drive(&s.app, 5_000, || rolled_back(&s.source)).await, None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(guard_changes(&*s.store).await.is_empty());
    let states = s.source.guard_states();
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(states[0].flag, "NEW_CHECKOUT");
    assert!(matches!(states[0].verdict, ff_core::guard::Verdict::Healthy { .. }), "{:?}", states[0].verdict);
    assert!(states[0].control.requests > 1_000 && states[0].treatment.requests > 1_000, "{states:?}");
    assert!(!states[0].acted);
}
