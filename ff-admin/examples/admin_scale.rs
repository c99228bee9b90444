//! Admin reads at scale: 10,000 flags and 1,000,000 overrides (100 per flag, over
//! UUID-shaped user ids) in SQLite, the admin reading through the live `Source`.
//! Prints the median time of listing flags, looking up a user and exporting.
//!
//! Run: `cargo run --release -p ff-admin --example admin_scale [FLAGS OVERRIDES]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use ff_core::FlagDef;
use ff_store::{Batch, FlagReader, FlagWriter, Mutation, Role, Source, SqlStore};
use http_body_util::BodyExt;
use tower::ServiceExt;

const ROUNDS: usize = 9;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("a number"));
    let (flags, overrides) = (args.next().unwrap_or(10_000), args.next().unwrap_or(1_000_000));
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    let store = Arc::new(SqlStore::connect(&url).await.unwrap());
    let start = Instant::now();
    fill(&store, flags, overrides).await;
    println!("{flags} flags, {overrides} overrides written in {:.1?}", start.elapsed());
    let start = Instant::now();
    let source = Source::builder_arc(store.clone()).startup_timeout(Duration::from_secs(120)).start().await;
    assert!(source.wait_for_version(store.latest_seq().await.unwrap(), Duration::from_secs(120)).await);
    println!("Source loaded in {:.1?} (version {})", start.elapsed(), source.snapshot().version());
    let (_, token) = ff_admin::create_token(&*store, "bench", Role::Viewer, "bench", None).await.unwrap();
    let user = uuid(7 * flags + 3);
    let routes = [
        "/admin/api/flags?limit=100".to_owned(),
        "/admin/api/flags".to_owned(),
        format!("/admin/api/users/{user}"),
        "/admin/api/export".into(),
    ];
    for (label, admin) in [
        ("with the live Source", ff_admin::Admin::new(store.clone()).source(source.clone())),
        ("without a Source (store reads)", ff_admin::Admin::new(store.clone())),
    ] {
        let app = Router::new().nest("/admin", admin.router());
        println!("{label}:");
        for route in &routes {
            let median = median_of(&app, route, &token).await;
            let shown = if route.contains("/users/") { "/admin/api/users/{id}" } else { route.as_str() };
            println!("  GET {shown:<40} median {:>8.2} ms", ms(median));
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median of `ROUNDS` calls, after one to warm up.
async fn median_of(app: &Router, path: &str, token: &str) -> Duration {
    let mut times = Vec::with_capacity(ROUNDS);
    for round in 0..=ROUNDS {
        let req =
            http::Request::get(path).header("authorization", format!("Bearer {token}")).body(Body::empty());
        let start = Instant::now();
        let res = app.clone().oneshot(req.unwrap()).await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        res.into_body().collect().await.unwrap();
        if round > 0 {
            times.push(start.elapsed());
        }
    }
    times.sort();
    times[ROUNDS / 2]
}

/// A 36-character UUID-shaped id.
fn uuid(i: usize) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        i.wrapping_mul(2_654_435_761) as u32,
        i % 65_536,
        i % 4096,
        i % 4095,
        i
    )
}

/// Flags through the store's batches; overrides straight into the table (a batch
/// per 1,000 would take minutes and is not what is measured).
async fn fill(store: &SqlStore, flags: usize, overrides: usize) {
    let defs: Vec<Mutation> = (0..flags)
        .map(|i| {
            let def: FlagDef = serde_json::from_value(serde_json::json!({
                "key": format!("FLAG_{i:05}"), "type": "bool", "value": i % 2 == 0,
                "description": format!("flag number {i}"),
            }))
            .unwrap();
            Mutation::CreateFlag { def, if_missing: false }
        })
        .collect();
    for chunk in defs.chunks(Batch::MAX) {
        store.write_batch(Batch::new("bench", chunk.to_vec())).await.unwrap();
    }
    let mut tx = store.pool().begin().await.unwrap();
    for i in 0..overrides {
        sqlx::query("INSERT INTO ff_overrides (key, user_id, value, updated_at) VALUES ($1, $2, $3, 0)")
            .bind(format!("FLAG_{:05}", i % flags))
            .bind(uuid(i))
            .bind(if i % 3 == 0 { "true" } else { "false" })
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}
