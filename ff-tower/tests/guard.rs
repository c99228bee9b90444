//! Guarded rollouts through the layer: each request a guarded split decided is
//! counted under its variation with its outcome; nothing else is.

use std::convert::Infallible;
use std::time::Duration;

use ff_core::{EvalContext, Flag, FlagRecord, Snapshot, StoreState, Value};
use ff_store::Source;
use ff_tower::{Current, FlagsLayer, UserIdHeader};
use http::{Request, Response, StatusCode};
use tower::{ServiceBuilder, ServiceExt};

const NEW_CHECKOUT: Flag<bool> = Flag::new("NEW_CHECKOUT", false);
const PLAIN: Flag<bool> = Flag::new("PLAIN", true);

/// `NEW_CHECKOUT` split 50/50 (variation 0 serves `true`), guarded or not.
fn source(guarded: bool) -> Source {
    source_with(guarded, true, Vec::new())
}

fn source_with(guarded: bool, enabled: bool, overrides: Vec<ff_core::OverrideRecord>) -> Source {
    let mut targeting = serde_json::json!({"split": {"variations": [
        {"value": true, "weight": 5000}, {"value": false, "weight": 5000}]}});
    if guarded {
        targeting["guard"] = serde_json::json!({"max_error_increase": 1});
    }
    let checkout = FlagRecord {
        targeting: serde_json::from_value(targeting).unwrap(),
        enabled,
        ..FlagRecord::new("NEW_CHECKOUT", Value::Bool(false))
    };
    let flags = vec![checkout, FlagRecord::new("PLAIN", Value::Bool(true))];
    Source::fixed(Snapshot::from_state(&StoreState { seq: 1, flags, overrides, ..Default::default() }))
}

/// What each path of the service does: `/checkout` fails on the new checkout,
/// `/grpc/N` answers with gRPC status N on it, `/plain` reads no guarded flag,
/// `/panic` panics on it, `/slow` never answers on it.
async fn handler(req: Request<()>) -> Result<Response<String>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/plain" {
        return Ok(Response::new(Current::get(PLAIN).to_string()));
    }
    let new = Current::get(NEW_CHECKOUT);
    if new && path == "/panic" {
        panic!("the new checkout panics");
    }
    if new && path == "/slow" {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let mut response = Response::new(new.to_string());
    if let Some(status) = path.strip_prefix("/grpc/") {
        if new {
            response.headers_mut().insert("grpc-status", status.parse().unwrap());
        }
    } else if new && path == "/checkout" {
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    }
    Ok(response)
}

fn request(path: &str, user: usize) -> Request<()> {
    Request::builder().uri(path).header("x-user-id", format!("user-{user}")).body(()).unwrap()
}

/// Requests and errors per variation, from what the layer counted.
fn counted(source: &Source) -> Vec<(u32, u64, u64)> {
    let arms = source.guard_telemetry().take();
    // Under the rollout the snapshot serves: 0, a guard no store stamped.
    assert!(arms.iter().all(|c| c.flag == "NEW_CHECKOUT" && c.epoch == 0), "{arms:?}");
    arms.into_iter().map(|c| (c.variation, c.arm.requests, c.arm.errors)).collect()
}

fn service(
    source: &Source,
) -> impl tower::Service<Request<()>, Response = Response<String>, Error = Infallible, Future: Send + 'static>
+ Clone
+ Send
+ 'static {
    ServiceBuilder::new()
        .layer(FlagsLayer::new(source.clone()).make_context(UserIdHeader::new("x-user-id")))
        .service_fn(handler)
}

#[tokio::test]
async fn each_variation_is_counted_with_its_errors() {
    let source = source(true);
    let svc = service(&source);
    let mut served_new = 0;
    for user in 0..200 {
        let response = svc.clone().oneshot(request("/checkout", user)).await.unwrap();
        served_new += usize::from(response.into_body() == "true");
    }
    let counts = counted(&source);
    assert_eq!(counts.len(), 2, "{counts:?}");
    let (new, old) = (counts[0], counts[1]);
    assert_eq!((new.0, old.0), (0, 1));
    assert_eq!(new.1 as usize, served_new);
    assert_eq!(new.1 + old.1, 200);
    assert_eq!(new.2, new.1, "every request served the new checkout failed");
    assert_eq!(old.2, 0);
    assert!((60..140).contains(&served_new), "about half: {served_new}");
    assert!(counted(&source).is_empty(), "taken");

    // A request that reads no guarded flag is not counted.
    for user in 0..20 {
        svc.clone().oneshot(request("/plain", user)).await.unwrap();
    }
    assert!(counted(&source).is_empty());
}

#[tokio::test]
async fn grpc_failures_panics_and_dropped_requests_count_as_errors() {
    let source = source(true);
    let svc = service(&source);
    // Users 0..40, each served one variation: the same in every request below.
    let new_users: Vec<usize> = {
        let snapshot = source.snapshot();
        (0..40)
            .filter(|u| snapshot.evaluate(&NEW_CHECKOUT, &EvalContext::user(format!("user-{u}"))).value)
            .collect()
    };
    assert!(!new_users.is_empty());
    let errors_on_new = |counts: Vec<(u32, u64, u64)>| counts.iter().find(|c| c.0 == 0).map(|c| (c.1, c.2));

    for (status, failed) in [("13", true), ("14", true), ("4", true), ("2", true), ("5", false), ("0", false)]
    {
        for &user in &new_users {
            svc.clone().oneshot(request(&format!("/grpc/{status}"), user)).await.unwrap();
        }
        let n = new_users.len() as u64;
        assert_eq!(
            errors_on_new(counted(&source)),
            Some((n, if failed { n } else { 0 })),
            "grpc-status {status}"
        );
    }

    let user = new_users[0];
    let panicked = tokio::spawn(svc.clone().oneshot(request("/panic", user))).await;
    assert!(panicked.unwrap_err().is_panic());
    assert_eq!(errors_on_new(counted(&source)), Some((1, 1)), "a panic");

    let timed_out =
        tokio::time::timeout(Duration::from_millis(20), svc.clone().oneshot(request("/slow", user))).await;
    assert!(timed_out.is_err());
    assert_eq!(errors_on_new(counted(&source)), Some((1, 1)), "a request dropped before its response");
}

#[tokio::test]
async fn without_a_guard_nothing_is_recorded() {
    let unguarded = source(false);
    assert!(!unguarded.snapshot().has_guards());
    let svc = service(&unguarded);
    for user in 0..50 {
        svc.clone().oneshot(request("/checkout", user)).await.unwrap();
    }
    assert!(unguarded.guard_telemetry().take().is_empty());
    assert!(source(true).snapshot().has_guards());
}

#[tokio::test]
async fn overrides_and_the_kill_switch_are_not_counted() {
    let overrides = (0..10)
        .map(|u| ff_core::OverrideRecord {
            key: "NEW_CHECKOUT".into(),
            user_id: format!("user-{u}"),
            value: true.into(),
        })
        .collect();
    let source = source_with(true, true, overrides);
    let svc = service(&source);
    for user in 0..10 {
        let body = svc.clone().oneshot(request("/checkout", user)).await.unwrap().into_body();
        assert_eq!(body, "true", "the override serves");
    }
    assert!(counted(&source).is_empty(), "overrides are not the split's decision");
    svc.clone().oneshot(request("/checkout", 10)).await.unwrap();
    assert_eq!(counted(&source).iter().map(|c| c.1).sum::<u64>(), 1, "a split decision is");

    let off = source_with(true, false, Vec::new());
    let svc = service(&off);
    for user in 0..20 {
        assert_eq!(svc.clone().oneshot(request("/checkout", user)).await.unwrap().into_body(), "false");
    }
    assert!(counted(&off).is_empty(), "a switched-off flag serves no variation");
}
