//! Guarded rollouts through the real example binary: `NEW_CHECKOUT` on a guarded
//! 10 % → 50 % ramp set through the admin API, traffic from distinct users, and the
//! demo fault (`FF_DEMO_CHECKOUT_FAILURES`) failing a share of the new checkout.
//! A failing treatment is rolled back within a bounded number of requests; an A/A
//! run of the same length is not, and its ramp moves on once the guard is healthy.

use ff_api::GuardView;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[path = "support/binary.rs"]
mod binary;

const OPERATOR: &str = "guard-operator-secret-0123456789abcdef";
/// The most requests a run sends: the bound the failing run must be caught within.
const REQUESTS: usize = 20_000;

struct App {
    _binary: binary::Binary,
    base: String,
    http: reqwest::Client,
}

impl App {
    async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> (StatusCode, Value, Option<String>) {
        let mut req = self
            .http
            .request(method, format!("{}/admin/api{path}", self.base))
            .header("authorization", format!("Bearer {OPERATOR}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(v) = if_match {
            req = req.header("if-match", v);
        }
        let res = req.send().await.unwrap();
        let (status, etag) =
            (res.status(), res.headers().get("etag").map(|v| v.to_str().unwrap().to_owned()));
        (status, res.json().await.unwrap_or(Value::Null), etag)
    }

    async fn guard(&self) -> GuardView {
        let (status, body, _) = self.admin(Method::GET, "/flags/NEW_CHECKOUT/guard", None, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_value(body).unwrap()
    }

    async fn checkout(&self, user: &str) -> StatusCode {
        let res =
            self.http.get(format!("{}/checkout", self.base)).header("x-user-id", user).send().await.unwrap();
        res.status()
    }
}

/// A 36-character UUID-shaped user id.
fn user(i: usize) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        i * 2_654_435_761 % (1 << 32),
        i % 65_536,
        i % 4096,
        (i / 7) % 4096,
        i
    )
}

/// Starts the binary with `share` of the new checkout failing and puts
/// `NEW_CHECKOUT` on a guarded ramp: 10 % now, 50 % as soon as the guard allows.
async fn start(dir: &tempfile::TempDir, share: &str) -> App {
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    let binary = binary::Binary::start(
        &url,
        &[("FF_ADMIN_TOKEN", OPERATOR), ("FF_GUARD_MS", "50"), ("FF_DEMO_CHECKOUT_FAILURES", share)],
    );
    let app = App { base: binary.base.clone(), _binary: binary, http: reqwest::Client::new() };
    let (_, _, etag) = app.admin(Method::GET, "/flags/NEW_CHECKOUT", None, None).await;
    let split = |w: u32| json!({"variations": [{"value": true, "weight": w}, {"value": false, "weight": 10_000 - w}]});
    let due = (OffsetDateTime::now_utc() - time::Duration::seconds(1)).format(&Rfc3339).unwrap();
    let body = json!({
        "targeting": {
            "split": split(1_000),
            "schedule": [{"at": due, "split": split(5_000)}],
            "guard": {"max_error_increase": 1, "min_requests": 200}
        },
        "reason": "new checkout: guarded ramp 10 % then 50 %"
    });
    let (status, body, _) =
        app.admin(Method::PATCH, "/flags/NEW_CHECKOUT", Some(body), etag.as_deref()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app
}

/// Sends up to [`REQUESTS`] checkouts, looking at the guard every 250; how many it
/// took until `done` (`None`: never).
async fn drive(app: &App, done: impl Fn(&GuardView) -> bool) -> Option<usize> {
    for i in 0..REQUESTS {
        if i % 250 == 0 && done(&app.guard().await) {
            return Some(i);
        }
        let status = app.checkout(&user(i)).await;
        assert!(status == StatusCode::OK || status == StatusCode::INTERNAL_SERVER_ERROR, "{status}");
    }
    done(&app.guard().await).then_some(REQUESTS)
}

fn rolled_back(view: &GuardView) -> bool {
    view.actions
        .iter()
        .any(|c| c.reason.as_deref().is_some_and(|r| r.starts_with("guarded rollout rolled back")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_new_checkout_is_rolled_back_and_a_healthy_one_ramps_on() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(&dir, "0.2").await;
    let took = drive(&app, rolled_back).await.expect("rolled back within 20,000 requests");
    eprintln!("20 % of the new checkout failing: rolled back after {took} requests");
    let view = app.guard().await;
    assert!(view.state.is_none(), "the rollback removed the guard: {view:?}");
    let reason = view.actions[0].reason.clone().unwrap();
    assert!(reason.contains("error rate") && reason.contains("mSPRT"), "{reason}");
    assert_eq!(view.actions.len(), 1, "one write: the ramp never advanced: {:?}", view.actions);
    // Everyone gets the classic checkout, and it works.
    for i in 0..50 {
        assert_eq!(app.checkout(&user(i)).await, StatusCode::OK);
    }
    // The guardian clears the state gauge on its first tick after the rollback.
    let cleared = "ff_guard_state{flag=\"NEW_CHECKOUT\"} -1";
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
        if metrics.contains(cleared) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(metrics.contains("ff_guard_actions_total{flag=\"NEW_CHECKOUT\"} 1"), "{metrics}");
    assert!(metrics.contains("ff_guard_errors_total{flag=\"NEW_CHECKOUT\""), "{metrics}");
    assert!(
        metrics.contains("ff_guard_latency_seconds{flag=\"NEW_CHECKOUT\",variation=\"0\",quantile=\"0.95\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ff_guard_state{flag=\"NEW_CHECKOUT\"} -1"),
        "cleared after the rollback: {metrics}"
    );
    drop(app);

    // A/A: the same length of traffic, nothing failing.
    let dir = tempfile::tempdir().unwrap();
    let app = start(&dir, "0").await;
    assert_eq!(drive(&app, rolled_back).await, None, "an A/A run is not rolled back");
    let view = app.guard().await;
    let state = view.state.expect("still guarded");
    assert!(matches!(state.verdict, ff_core::guard::Verdict::Healthy { .. }), "{:?}", state.verdict);
    assert_eq!(state.variations[0].weight, 5_000, "the ramp moved on to 50 %");
    assert!(state.treatment.requests > 1_000 && state.treatment.errors == 0, "{state:?}");
    assert!(state.acting && state.instances == 1);
    let advanced = view.actions[0].reason.clone().unwrap();
    assert!(advanced.starts_with("guarded ramp advanced to true 50 %"), "{advanced}");
}
