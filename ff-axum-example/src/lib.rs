//! The booking app from the ff product story: captioners, bookings and payments,
//! with typed config and flags read per request through `Current`.
//!
//! Users are identified by the `x-user-id` header. It stands in for real
//! authentication: put ff's layer behind your auth layer and build the
//! `EvalContext` from the authenticated user instead.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use ff_core::{Config, Flag, FlagKind};
use ff_store::Source;
use ff_tower::{FlagsLayer, FlagsService, UserIdHeader};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tower::Layer;

/// Availability through the external calendar (new path) instead of the basic check.
pub const EXTERNAL_CALENDAR_INTEGRATION: Flag<bool> = Flag::new("EXTERNAL_CALENDAR_INTEGRATION", false)
    .description("Check captioner availability in their external calendar")
    .kind(FlagKind::Release)
    .owner("scheduling");
/// Kill switch for paying with in-app credits.
pub const CREDITS_PAYMENTS: Flag<bool> = Flag::new("CREDITS_PAYMENTS", true)
    .description("Kill switch: accept payments with in-app credits")
    .kind(FlagKind::KillSwitch)
    .owner("payments");
/// The redesigned checkout.
pub const NEW_CHECKOUT: Flag<bool> = Flag::new("NEW_CHECKOUT", false)
    .description("Serve the redesigned checkout")
    .kind(FlagKind::Release)
    .owner("checkout");

/// The redesigned checkout's prices: released together with [`NEW_CHECKOUT`] in one
/// batch, so no request sees the new checkout with the old prices or the other way round.
pub const NEW_CHECKOUT_PRICING: Flag<bool> = Flag::new("NEW_CHECKOUT_PRICING", false)
    .description("Prices of the redesigned checkout (flip together with NEW_CHECKOUT)")
    .kind(FlagKind::Release)
    .owner("checkout");

// The flags above, registered so that the `Source` and the admin find them (the
// settings below register themselves).
ff_core::declare!(EXTERNAL_CALENDAR_INTEGRATION, CREDITS_PAYMENTS, NEW_CHECKOUT, NEW_CHECKOUT_PRICING);

/// The app's typed configuration, read as `Current::config()`: each field is a
/// setting, its key the field's name in capitals (`BookingConfig::CAPTIONER_HOURLY_RATE_MIN`).
/// Operators cannot set a minimum rate above the maximum; if the values ever break
/// that rule, requests get the code defaults of the whole struct.
#[derive(Config, Debug, Clone, PartialEq)]
#[ff(rule = "captioner_hourly_rate_min <= captioner_hourly_rate_max")]
pub struct BookingConfig {
    /// Minimum time between making a booking and its start (testers get 0s)
    #[ff(default = "24h", max = "365d")]
    pub minimum_time_required_before_booking: std::time::Duration,
    /// Lowest hourly rate a captioner may set (USD)
    #[ff(default = 60.0, min = 0.0, max = 10_000.0)]
    pub captioner_hourly_rate_min: f64,
    /// Highest hourly rate a captioner may set (USD)
    #[ff(default = 500.0, min = 0.0, max = 10_000.0)]
    pub captioner_hourly_rate_max: f64,
}

/// `Current` for this app: flags plus `Current::config()` as [`BookingConfig`].
pub type Current = ff_tower::CurrentWith<BookingConfig>;

/// The app as served: ff's layer around the whole router.
pub type App = FlagsService<Router, UserIdHeader>;

/// The app's routes and ff's admin under `/admin`, all inside ff's layer. Wrapping the
/// router once costs less than `Router::layer`, which wraps (and boxes) every route:
/// about 150 instructions per request by callgrind. Serve it with [`make_service`].
pub fn router(source: Source, admin: ff_admin::Admin) -> App {
    FlagsLayer::new(source.clone()).make_context(UserIdHeader::new("x-user-id")).layer(routes(source, admin))
}

/// [`router`] as `axum::serve` takes it: `axum::serve(listener, make_service(source, admin))`.
/// With each connection's address, which the admin's throttle of failed
/// authentications keys on.
pub fn make_service(
    source: Source,
    admin: ff_admin::Admin,
) -> axum::extract::connect_info::IntoMakeServiceWithConnectInfo<App, std::net::SocketAddr> {
    axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info(router(source, admin))
}

/// The same routes without ff's layer: handlers serve code defaults. The load
/// benchmark's baseline (`scripts/load.sh`).
pub fn routes(source: Source, admin: ff_admin::Admin) -> Router {
    Router::new()
        .route("/bookings", post(create_booking))
        .route("/captioners/me/rate", put(set_rate))
        .route("/payments", post(pay))
        .route("/me/config", get(my_config))
        .route("/checkout", get(checkout))
        .route("/healthz", get(move || health(source.clone())))
        .route("/metrics", get(metrics))
        .nest("/admin", admin.router())
}

/// The process's Prometheus recorder, installed on first use (one per process:
/// every router in it shares it).
fn prometheus() -> Option<&'static metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "another metrics recorder is installed; /metrics stays empty");
                    None
                }
            }
        })
        .as_ref()
}

/// Installs the Prometheus recorder now, so counts from the first requests are kept.
pub fn install_metrics() {
    let _ = prometheus();
}

/// `GET /metrics`: ff's counters and gauges in Prometheus text format.
async fn metrics() -> impl IntoResponse {
    let body = prometheus().map(|h| h.render()).unwrap_or_default();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// Errors as responses: `{ "error": code, "message": text }`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.code, "message": self.message }))).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        // The rejection's own status: 413 for an over-limit body, 415, 400 or 422.
        ApiError::new(r.status(), "invalid_body", r.body_text())
    }
}

type ApiResult = Result<(StatusCode, Json<Value>), ApiError>;

#[derive(Debug, Deserialize)]
struct NewBooking {
    captioner_id: String,
    starts_at: String,
}

async fn create_booking(body: Result<Json<NewBooking>, JsonRejection>) -> ApiResult {
    let Json(b) = body?;
    let starts_at = OffsetDateTime::parse(&b.starts_at, &Rfc3339).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_starts_at",
            format!("starts_at must be RFC 3339: {e}"),
        )
    })?;
    if b.captioner_id.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_captioner",
            "captioner_id is empty",
        ));
    }
    let lead = Current::config().minimum_time_required_before_booking;
    // Saturating: no duration, however long, can make the request path panic.
    let earliest = OffsetDateTime::now_utc()
        .saturating_add(time::Duration::try_from(lead).unwrap_or(time::Duration::MAX));
    if starts_at < earliest {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_soon",
            format!("bookings must start at least {} from now", ff_core::format_duration(lead)),
        ));
    }
    let (available, checked_by) = if Current::get(EXTERNAL_CALENDAR_INTEGRATION) {
        (check_availability_in_external_calendar(&b.captioner_id, starts_at), "external_calendar")
    } else {
        (check_basic_availability(&b.captioner_id, starts_at), "basic")
    };
    if !available {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "unavailable",
            "the captioner is not available then",
        ));
    }
    let starts_at = starts_at.format(&Rfc3339).unwrap_or(b.starts_at);
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "captioner_id": b.captioner_id, "starts_at": starts_at, "availability_checked_by": checked_by }),
        ),
    ))
}

/// The old path: captioners marked busy are never available.
fn check_basic_availability(captioner_id: &str, _at: OffsetDateTime) -> bool {
    !captioner_id.starts_with("busy")
}

/// The new path behind `EXTERNAL_CALENDAR_INTEGRATION`: shipped dark from the first commit.
fn check_availability_in_external_calendar(captioner_id: &str, at: OffsetDateTime) -> bool {
    check_basic_availability(captioner_id, at)
}

fn caller(headers: &axum::http::HeaderMap) -> Result<String, ApiError> {
    match headers.get("x-user-id").and_then(|v| v.to_str().ok()).map(str::trim) {
        Some(u) if !u.is_empty() => Ok(u.to_owned()),
        _ => Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "send an x-user-id header")),
    }
}

#[derive(Debug, Deserialize)]
struct NewRate {
    hourly_rate: f64,
}

async fn set_rate(headers: axum::http::HeaderMap, body: Result<Json<NewRate>, JsonRejection>) -> ApiResult {
    let user = caller(&headers)?;
    let Json(r) = body?;
    let config = Current::config();
    let (min, max) = (config.captioner_hourly_rate_min, config.captioner_hourly_rate_max);
    if !r.hourly_rate.is_finite() || r.hourly_rate < min || r.hourly_rate > max {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "rate_out_of_range",
            format!("hourly_rate must be between {min} and {max}"),
        ));
    }
    Ok((StatusCode::OK, Json(json!({ "captioner_id": user, "hourly_rate": r.hourly_rate }))))
}

#[derive(Debug, Deserialize)]
struct Payment {
    amount_cents: i64,
    method: String,
}

async fn pay(body: Result<Json<Payment>, JsonRejection>) -> ApiResult {
    let Json(p) = body?;
    if p.amount_cents <= 0 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
            "amount_cents must be positive",
        ));
    }
    match p.method.as_str() {
        "card" => {}
        "credits" if Current::get(CREDITS_PAYMENTS) => {}
        "credits" => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "credits_disabled",
                "paying with credits is switched off for now; please pay by card",
            ));
        }
        other => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_method",
                format!("method must be \"card\" or \"credits\", not {other:?}"),
            ));
        }
    }
    let checkout = if Current::get(NEW_CHECKOUT) { "new" } else { "classic" };
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "status": "paid", "amount_cents": p.amount_cents, "method": p.method, "checkout": checkout }),
        ),
    ))
}

/// The checkout page's model: the page and its prices come from one snapshot, so
/// they always match.
async fn checkout() -> Result<Json<Value>, ApiError> {
    let (page, pricing) = (Current::get(NEW_CHECKOUT), Current::get(NEW_CHECKOUT_PRICING));
    if page && demo_fault() {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "demo_fault",
            "the new checkout failed (a demo fault: FF_DEMO_CHECKOUT_FAILURES)",
        ));
    }
    let name = |new| if new { "new" } else { "classic" };
    let hour_cents = if pricing { 5_900 } else { 6_000 };
    Ok(Json(json!({ "checkout": name(page), "pricing": name(pricing), "captioning_hour_cents": hour_cents })))
}

/// The share of new-checkout requests the demo fault fails (0: none), as f64 bits.
static DEMO_FAILURES: AtomicU64 = AtomicU64::new(0);
/// New-checkout requests served so far, for spreading the demo's failures evenly.
static DEMO_SERVED: AtomicU64 = AtomicU64::new(0);

/// Demo only: makes `share` (0 to 1) of the new checkout's requests fail with a 500,
/// evenly spread, so a guarded rollout has something to catch. What the binary's
/// `FF_DEMO_CHECKOUT_FAILURES` sets.
pub fn set_demo_checkout_failures(share: f64) -> Result<(), String> {
    if !(0.0..=1.0).contains(&share) {
        return Err(format!("must be a share from 0 to 1, not {share}"));
    }
    DEMO_FAILURES.store(share.to_bits(), Ordering::Relaxed);
    Ok(())
}

/// Whether this new-checkout request is one the demo fault fails.
fn demo_fault() -> bool {
    let share = f64::from_bits(DEMO_FAILURES.load(Ordering::Relaxed));
    if share <= 0.0 {
        return false;
    }
    let n = DEMO_SERVED.fetch_add(1, Ordering::Relaxed) as f64;
    // Fails exactly `share` of them: whenever n·share crosses an integer.
    ((n + 1.0) * share).floor() > (n * share).floor()
}

async fn my_config() -> Json<Value> {
    let c = Current::config();
    Json(json!({
        BookingConfig::MINIMUM_TIME_REQUIRED_BEFORE_BOOKING.key(): ff_core::format_duration(c.minimum_time_required_before_booking),
        BookingConfig::CAPTIONER_HOURLY_RATE_MIN.key(): c.captioner_hourly_rate_min,
        BookingConfig::CAPTIONER_HOURLY_RATE_MAX.key(): c.captioner_hourly_rate_max,
        EXTERNAL_CALENDAR_INTEGRATION.key(): Current::get(EXTERNAL_CALENDAR_INTEGRATION),
        CREDITS_PAYMENTS.key(): Current::get(CREDITS_PAYMENTS),
        NEW_CHECKOUT.key(): Current::get(NEW_CHECKOUT),
        NEW_CHECKOUT_PRICING.key(): Current::get(NEW_CHECKOUT_PRICING),
    }))
}

async fn health(source: Source) -> Json<Value> {
    let s = source.status();
    Json(json!({
        "snapshot_version": s.version,
        "origin": s.origin,
        "stale": s.is_stale(),
        "age_seconds": s.age().map(|a| a.as_secs_f64()),
        "last_error": s.last_error,
        // Flags this process's environment pins (FF_<KEY>): not what the store says.
        "pinned": source.snapshot().pinned().map(|(k, _)| k.to_owned()).collect::<Vec<_>>(),
    }))
}
