//! Across crates: a write through the Store reaches requests through Source and FlagsLayer.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use ff_core::{Config, ConfigReader, Flag};
use ff_store::{FlagWriter, Mutation, Source, SqlStore, Write};
use ff_tower::{CurrentWith, FlagsLayer, UserIdHeader};
use http_body_util::BodyExt;
use tower::ServiceExt;

const LEAD: Flag<i64> = Flag::new("LEAD_HOURS", 24).range(0, 1000);
const CALENDAR: Flag<bool> = Flag::new("CALENDAR", false);

#[derive(Debug)]
struct AppConfig {
    lead: i64,
}

impl Config for AppConfig {
    fn from_flags(f: &ConfigReader<'_>) -> Self {
        AppConfig { lead: f.get(LEAD) }
    }
}

type Current = CurrentWith<AppConfig>;

fn app(source: Source) -> Router {
    Router::new()
        .route("/", get(|| async { format!("{} {}", Current::config().lead, Current::get(CALENDAR)) }))
        .layer(FlagsLayer::new(source).make_context(UserIdHeader::new("x-user-id")))
}

async fn answer(app: &Router, user: &str) -> String {
    let req = http::Request::get("/").header("x-user-id", user).body(Body::empty()).unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// Waits (bounded) until `user` gets `expected`; returns how long it took.
async fn until(app: &Router, user: &str, expected: &str) -> Duration {
    let start = Instant::now();
    loop {
        let got = answer(app, user).await;
        if got == expected {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{user} still gets {got:?}, not {expected:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn story(url: &str, poll: Duration) -> Vec<Duration> {
    let source = Source::builder(SqlStore::connect_lazy(url).unwrap())
        .declare([LEAD.decl(), CALENDAR.decl()])
        .poll_interval(poll)
        .start()
        .await;
    let app = app(source);
    assert_eq!(answer(&app, "tester").await, "24 false");
    // Another handle, as another instance or the CLI would write.
    let writer = SqlStore::connect(url).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut took = Vec::new();
    let steps: [(Mutation, &str, &str); 4] = [
        (Mutation::set_override("LEAD_HOURS", "tester", 0), "tester", "0 false"),
        (Mutation::set_value("CALENDAR", true), "alice", "24 true"),
        (Mutation::set_enabled("CALENDAR", false), "tester", "0 false"),
        (Mutation::delete_override("LEAD_HOURS", "tester"), "tester", "24 false"),
    ];
    for (m, user, expected) in steps {
        writer.write(Write::new("tests", m)).await.unwrap();
        took.push(until(&app, user, expected).await);
    }
    assert_eq!(answer(&app, "alice").await, "24 false");
    writer.close().await;
    took
}

#[tokio::test]
async fn sqlite_write_reaches_requests() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    story(&url, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn postgres_write_reaches_requests_through_notify() {
    let Some(url) = ff_store::postgres_test_database().await else { return };
    // A one-minute poll: anything faster than that came through LISTEN/NOTIFY.
    let took = story(&url, Duration::from_secs(60)).await;
    eprintln!("propagation through NOTIFY: {took:?}");
    assert!(took.iter().all(|d| *d < Duration::from_secs(5)), "{took:?}");
}

#[tokio::test]
async fn a_request_keeps_its_snapshot_while_the_source_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    let source = Source::builder(SqlStore::connect_lazy(&url).unwrap())
        .declare([LEAD.decl()])
        .poll_interval(Duration::from_millis(20))
        .start()
        .await;
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<()>();
    let seen_tx = std::sync::Arc::new(std::sync::Mutex::new(Some(seen_tx)));
    let writer = SqlStore::connect(&url).await.unwrap();
    let version = source.status().version;
    let watcher = source.clone();
    let app = Router::new()
        .route(
            "/",
            get(move || {
                let tx = seen_tx.lock().unwrap().take();
                let watcher = watcher.clone();
                async move {
                    let before = (Current::config().lead, Current::get(LEAD));
                    if let Some(tx) = tx {
                        tx.send(()).unwrap();
                    }
                    // Wait until the source has applied the write below.
                    assert!(watcher.wait_for_version(version + 1, Duration::from_secs(10)).await);
                    let after = (Current::config().lead, Current::get(LEAD));
                    format!("{before:?} {after:?} {}", watcher.snapshot().flag("LEAD_HOURS").unwrap().value)
                }
            }),
        )
        .layer(FlagsLayer::new(source.clone()));
    let request = tokio::spawn({
        let app = app.clone();
        async move {
            let res = app.oneshot(http::Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
            String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
        }
    });
    seen_rx.await.unwrap();
    writer.write(Write::new("tests", Mutation::set_value("LEAD_HOURS", 48))).await.unwrap();
    assert_eq!(request.await.unwrap(), "(24, 24) (24, 24) 48");
}
