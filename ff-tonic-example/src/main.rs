//! The checkout gRPC service on an embedded SQLite file: `cargo run -p ff-tonic-example`.
//! `FF_LISTEN` (default `127.0.0.1:50051`), `DATABASE_URL` (default
//! `sqlite://ff-example.db?mode=rwc`, shared with the axum example),
//! `FF_DEMO_CHECKOUT_FAILURES` (demo only: the share, 0 to 1, of the new checkout's
//! requests that fail with `UNAVAILABLE`, for a guarded rollout to catch).

use anyhow::Context;
use ff_store::{Source, SqlStore};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let listen = std::env::var("FF_LISTEN").unwrap_or_else(|_| "127.0.0.1:50051".into());
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://ff-example.db?mode=rwc".into());
    let store = SqlStore::connect_lazy(&url)?;
    let source = Source::builder(store).start().await;
    let listener =
        tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    println!("ff-tonic-example listening on http://{} (gRPC: ff.example.Checkout)", listener.local_addr()?);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let service = match std::env::var("FF_DEMO_CHECKOUT_FAILURES") {
        Ok(share) => {
            let share: f64 = share
                .trim()
                .parse()
                .map_err(|e| anyhow::anyhow!("FF_DEMO_CHECKOUT_FAILURES={share:?}: {e}"))?;
            ff_tonic_example::CheckoutService::failing(share)
                .map_err(|e| anyhow::anyhow!("FF_DEMO_CHECKOUT_FAILURES: {e}"))?
        }
        Err(_) => ff_tonic_example::CheckoutService::default(),
    };
    ff_tonic_example::serve_service(listener, source, service, shutdown).await.context("server failed")
}
