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
use ff_store::{ChangeQuery, FlagPatch, FlagWriter, Mutation, Role, Source, SqlStore, Write};
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
    let source = Source::builder_arc(store.clone())
        .declare([NEW_CHECKOUT.decl()])
        .poll_interval(Duration::from_millis(20))
        .guard_interval(Duration::from_millis(20))
        .start()
        .await;
    let targeting = serde_json::from_value(serde_json::json!({
        "split": {"variations": [{"value": true, "weight": 5000}, {"value": false, "weight": 5000}]},
        "guard": {"max_error_increase": 1, "min_requests": 100}
    }))
    .unwrap();
    let patch = FlagPatch { targeting: Some(targeting), ..FlagPatch::default() };
    let mutation = Mutation::UpdateFlag { key: "NEW_CHECKOUT".into(), patch, expected_version: None };
    store.write(Write::new("tests", mutation)).await.unwrap();
    wait(|| source.snapshot().has_guards()).await;
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
    Setup { _dir: dir, store, source, app }
}

async fn wait(mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends up to `n` requests from distinct users; how many it took until `stop`.
async fn drive(app: &Router, n: usize, mut stop: impl FnMut() -> bool) -> Option<usize> {
    for i in 0..n {
        if stop() {
            return Some(i);
        }
        let req = http::Request::get("/checkout")
            .header("x-user-id", format!("user-{i}"))
            .body(Body::empty())
            .unwrap();
        app.clone().oneshot(req).await.unwrap();
        if i % 100 == 99 {
            // Lets the guardian and the source run between bursts.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    stop().then_some(n)
}

fn rolled_back(source: &Source) -> bool {
    source.snapshot().flag("NEW_CHECKOUT").is_some_and(|f| f.targeting.split.is_none())
}

async fn guard_changes(store: &SqlStore) -> Vec<ff_core::Change> {
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
    let changes = guard_changes(&s.store).await;
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
    assert!(s.source.snapshot().flag("NEW_CHECKOUT").unwrap().targeting.split.is_some());
    assert!(s.source.snapshot().has_guards());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equal_treatment_is_left_alone() {
    let s = setup(0).await;
    assert_eq!(drive(&s.app, 5_000, || rolled_back(&s.source)).await, None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(guard_changes(&s.store).await.is_empty());
    let states = s.source.guard_states();
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(states[0].flag, "NEW_CHECKOUT");
    assert!(matches!(states[0].verdict, ff_core::guard::Verdict::Healthy { .. }), "{:?}", states[0].verdict);
    assert!(states[0].control.requests > 1_000 && states[0].treatment.requests > 1_000, "{states:?}");
    assert!(!states[0].acted);
}
