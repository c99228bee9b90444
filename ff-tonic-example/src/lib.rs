//! ff's `FlagsLayer` on a tonic gRPC server: the booking app's checkout as a gRPC
//! service. gRPC metadata are HTTP/2 headers, so the layer reads who is asking from
//! them, and handlers read `Current` exactly as axum handlers do.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use ff_core::{EvalContext, Flag, FlagKind};
use ff_store::Source;
use ff_tower::{Current, FlagsLayer};
use tonic::{Request, Response, Status};

/// The generated gRPC code (`proto/checkout.proto`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    tonic::include_proto!("ff.example");
}

use proto::checkout_server::{Checkout, CheckoutServer};
use proto::{CheckoutReply, CheckoutRequest};

/// The redesigned checkout.
pub const NEW_CHECKOUT: Flag<bool> =
    Flag::new("NEW_CHECKOUT", false).kind(FlagKind::Release).owner("checkout");
/// Its prices, released together with it.
pub const NEW_CHECKOUT_PRICING: Flag<bool> =
    Flag::new("NEW_CHECKOUT_PRICING", false).kind(FlagKind::Release).owner("checkout");
/// Hours between booking and start.
pub const LEAD_HOURS: Flag<i64> =
    Flag::new("MINIMUM_TIME_REQUIRED_BEFORE_BOOKING_IN_HOURS", 24).range(0, 24 * 365);

// Registered: the `Source` syncs them with no list to keep.
ff_core::declare!(NEW_CHECKOUT, NEW_CHECKOUT_PRICING, LEAD_HOURS);

/// Who is asking, from gRPC metadata: `x-user-id` is the user, `x-plan` an attribute
/// rules can target. (Behind real authentication, build it from the verified identity.)
pub fn context_from_metadata(parts: &http::request::Parts) -> EvalContext {
    let get = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let ctx = match get("x-user-id") {
        Some(user) if !user.is_empty() => EvalContext::user(user),
        _ => EvalContext::anonymous(),
    };
    match get("x-plan") {
        Some(plan) => ctx.with_attribute("plan", plan),
        None => ctx,
    }
}

/// The checkout service: every value from the request's snapshot.
#[derive(Debug, Default)]
pub struct CheckoutService {
    /// Demo only: the share of new-checkout requests that fail.
    fail_share: f64,
    /// New-checkout requests so far, to spread the failures evenly.
    served: AtomicU64,
}

impl CheckoutService {
    /// Demo only: fails `share` (0 to 1) of the new checkout's requests with
    /// `UNAVAILABLE`, evenly spread, for a guarded rollout to catch.
    pub fn failing(share: f64) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&share) {
            return Err(format!("must be a share from 0 to 1, not {share}"));
        }
        Ok(CheckoutService { fail_share: share, served: AtomicU64::new(0) })
    }

    /// Whether this new-checkout request is one the demo fault fails.
    fn fault(&self) -> bool {
        if self.fail_share <= 0.0 {
            return false;
        }
        let n = self.served.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * self.fail_share).floor() > (n * self.fail_share).floor()
    }
}

#[tonic::async_trait]
impl Checkout for CheckoutService {
    async fn get_checkout(&self, _: Request<CheckoutRequest>) -> Result<Response<CheckoutReply>, Status> {
        let name = |new: bool| if new { "new" } else { "classic" }.to_owned();
        let checkout = Current::detail(NEW_CHECKOUT);
        if checkout.value && self.fault() {
            return Err(Status::unavailable(
                "the new checkout failed (a demo fault: FF_DEMO_CHECKOUT_FAILURES)",
            ));
        }
        Ok(Response::new(CheckoutReply {
            checkout: name(checkout.value),
            pricing: name(Current::get(NEW_CHECKOUT_PRICING)),
            lead_hours: Current::get(LEAD_HOURS),
            flags_version: checkout.version,
        }))
    }
}

/// Serves the checkout on `listener` with ff's layer until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    source: Source,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    serve_service(listener, source, CheckoutService::default(), shutdown).await
}

/// [`serve`] with a given service (a demo fault's).
pub async fn serve_service(
    listener: tokio::net::TcpListener,
    source: Source,
    service: CheckoutService,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let layer = FlagsLayer::new(source).make_context(context_from_metadata);
    tonic::transport::Server::builder()
        .layer(layer)
        .add_service(CheckoutServer::new(service))
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), shutdown)
        .await
}
