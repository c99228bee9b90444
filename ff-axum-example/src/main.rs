//! Runs the booking app: `cargo run -p ff-axum-example`.
//!
//! `FF_LISTEN` (default `127.0.0.1:3000`), `DATABASE_URL` (default a SQLite file
//! `ff-example.db` in the working directory; `postgres://...` for PostgreSQL),
//! `FF_SNAPSHOT_FILE` (optional: last snapshot saved to disk, served while the
//! database is unreachable at start), `FF_POLL_MS`, `FF_USAGE_MS` and `FF_GUARD_MS`
//! (intervals), `FF_APPROVALS` (kinds of flags whose changes wait for a second
//! editor's approval, e.g. `release,config`; `FF_SCHEDULE_MS` how often due scheduled
//! changes are applied), and `FF_DEMO_CHECKOUT_FAILURES` (demo only: the share, 0 to 1,
//! of the new checkout's requests that fail, for a guarded rollout to catch).

use std::time::Duration;

use anyhow::Context;
use std::sync::Arc;

use ff_store::{Source, Store, redact};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let listen = std::env::var("FF_LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let database_url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://ff-example.db?mode=rwc".into());
    let store: Arc<dyn Store> = ff_store::store_from_url(&database_url).context("DATABASE_URL")?;
    let env_token = std::env::var("FF_ADMIN_TOKEN").ok().filter(|t| !t.trim().is_empty());
    // The app's flags and settings are registered where they are declared: no list here.
    let mut admin =
        ff_admin::Admin::new(store.clone()).env_admin_token(env_token.clone()).context("FF_ADMIN_TOKEN")?;
    if let Ok(kinds) = std::env::var("FF_APPROVALS") {
        let kinds = ff_admin::parse_kinds(&kinds).map_err(|e| anyhow::anyhow!("FF_APPROVALS: {e}"))?;
        admin = admin.require_approval(kinds);
    }
    if let Some(ms) = std::env::var("FF_SCHEDULE_MS").ok().and_then(|v| v.parse().ok()) {
        admin = admin.schedule_interval(Duration::from_millis(ms));
    }
    ff_axum_example::install_metrics();
    let mut builder = Source::builder_arc(store.clone());
    if let Ok(path) = std::env::var("FF_SNAPSHOT_FILE") {
        builder = builder.snapshot_file(path);
    }
    if let Some(ms) = std::env::var("FF_USAGE_MS").ok().and_then(|v| v.parse().ok()) {
        builder = builder.usage_interval(Duration::from_millis(ms));
    }
    if let Some(ms) = std::env::var("FF_POLL_MS").ok().and_then(|v| v.parse().ok()) {
        builder = builder.poll_interval(Duration::from_millis(ms));
    }
    if let Some(ms) = std::env::var("FF_GUARD_MS").ok().and_then(|v| v.parse().ok()) {
        builder = builder.guard_interval(Duration::from_millis(ms));
    }
    if let Ok(share) = std::env::var("FF_DEMO_CHECKOUT_FAILURES") {
        let share: f64 =
            share.trim().parse().map_err(|e| anyhow::anyhow!("FF_DEMO_CHECKOUT_FAILURES={share:?}: {e}"))?;
        ff_axum_example::set_demo_checkout_failures(share)
            .map_err(|e| anyhow::anyhow!("FF_DEMO_CHECKOUT_FAILURES: {e}"))?;
        tracing::warn!(
            "demo: {:.0} % of the new checkout's requests fail (FF_DEMO_CHECKOUT_FAILURES)",
            share * 100.0
        );
    }
    let source = builder.try_start().await.context("the app's declarations")?;
    // OFREP evaluates against the live flags, as the app's own handlers do.
    let admin = admin.source(source.clone());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on FF_LISTEN={listen}"))?;
    let addr = listener.local_addr()?;
    println!("ff-axum-example listening on http://{addr} (store: {})", redact(&database_url));
    println!("try: curl -H 'x-user-id: tester' http://{addr}/me/config");
    if env_token.is_some() {
        println!("admin: http://{addr}/admin (page) and /admin/api (JSON), token from FF_ADMIN_TOKEN");
    } else if store.tokens().await.map(|t| t.iter().all(|t| t.revoked_at.is_some())).unwrap_or(false) {
        println!(
            "admin: http://{addr}/admin (page) and /admin/api (JSON) need a token: restart with \
             FF_ADMIN_TOKEN=<a long random secret>, or create one with `ff token create --role admin --name you`"
        );
    }
    // Only for the load benchmark's baseline: the same app without ff's layer.
    let with_layer = std::env::var("FF_WITHOUT_LAYER").map_or(true, |v| v != "1");
    if !with_layer {
        println!("FF_WITHOUT_LAYER=1: FlagsLayer is off, every flag serves its code default");
    }
    if with_layer {
        let app = ff_axum_example::make_service(source, admin);
        axum::serve(listener, app).with_graceful_shutdown(shutdown()).await
    } else {
        let app = ff_axum_example::routes(source, admin)
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app).with_graceful_shutdown(shutdown()).await
    }
    .context("server failed")
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
