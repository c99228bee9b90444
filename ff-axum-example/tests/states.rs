//! The app's handlers in every state of the flags they read, in process: `TestFlags`
//! stands in for the store, `each_state` runs each body once per combination, and
//! the config's typed test builder sets settings by field.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ff_axum_example::{
    BookingConfig, CREDITS_PAYMENTS, EXTERNAL_CALENDAR_INTEGRATION, NEW_CHECKOUT, NEW_CHECKOUT_PRICING,
};
use ff_core::States;
use ff_store::{MemoryStore, TestFlags};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::time::Duration;
use tower::ServiceExt;

fn app(flags: &TestFlags) -> ff_axum_example::App {
    ff_axum_example::router(flags.source(), ff_admin::Admin::new(std::sync::Arc::new(MemoryStore::new())))
}

async fn call(flags: &TestFlags, method: &str, path: &str, user: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("x-user-id", user)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = app(flags).oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn checkout_and_payments_in_every_state_of_their_flags() {
    let flags = TestFlags::new();
    let states = States::new().flag(NEW_CHECKOUT).flag(NEW_CHECKOUT_PRICING).flag(CREDITS_PAYMENTS);
    flags
        .each_state(&states, async |case| {
            let name = |on: bool| if on { "new" } else { "classic" };
            let (s, page) = call(&flags, "GET", "/checkout", "alice", Value::Null).await;
            assert_eq!(s, StatusCode::OK);
            assert_eq!(page["checkout"], name(case.get(NEW_CHECKOUT)));
            assert_eq!(page["pricing"], name(case.get(NEW_CHECKOUT_PRICING)));
            let cents = if case.get(NEW_CHECKOUT_PRICING) { 5_900 } else { 6_000 };
            assert_eq!(page["captioning_hour_cents"], cents);
            let (s, paid) =
                call(&flags, "POST", "/payments", "alice", json!({"amount_cents": 100, "method": "credits"}))
                    .await;
            if case.get(CREDITS_PAYMENTS) {
                assert_eq!(
                    (s, paid["checkout"].clone()),
                    (StatusCode::CREATED, json!(name(case.get(NEW_CHECKOUT))))
                );
            } else {
                assert_eq!(
                    (s, paid["error"].clone()),
                    (StatusCode::SERVICE_UNAVAILABLE, json!("credits_disabled"))
                );
            }
        })
        .await;
}

#[tokio::test]
async fn bookings_in_both_states_of_the_calendar_and_at_each_lead_time() {
    let flags = TestFlags::new();
    let states = States::new().flag(EXTERNAL_CALENDAR_INTEGRATION).values(
        BookingConfig::MINIMUM_TIME_REQUIRED_BEFORE_BOOKING,
        [Duration::ZERO, Duration::from_secs(24 * 3600)],
    );
    flags
        .each_state(&states, async |case| {
            let lead = case.get(BookingConfig::MINIMUM_TIME_REQUIRED_BEFORE_BOOKING);
            let at = |hours: i64| {
                let t = time::OffsetDateTime::now_utc() + time::Duration::hours(hours);
                t.format(&time::format_description::well_known::Rfc3339).unwrap()
            };
            let (s, body) =
                call(&flags, "POST", "/bookings", "u", json!({"captioner_id": "c1", "starts_at": at(1)}))
                    .await;
            if lead.is_zero() {
                let by = if case.get(EXTERNAL_CALENDAR_INTEGRATION) { "external_calendar" } else { "basic" };
                assert_eq!(
                    (s, body["availability_checked_by"].clone()),
                    (StatusCode::CREATED, json!(by)),
                    "{body}"
                );
            } else {
                assert_eq!((s, body["error"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("too_soon")));
            }
        })
        .await;
}

#[tokio::test]
async fn rates_set_by_field_with_the_typed_builder() {
    let flags = TestFlags::new();
    flags.apply(BookingConfig::test().captioner_hourly_rate_min(1.0).captioner_hourly_rate_max(50.0));
    let rate =
        async |r: f64| call(&flags, "PUT", "/captioners/me/rate", "c1", json!({"hourly_rate": r})).await.0;
    assert_eq!(rate(1.0).await, StatusCode::OK);
    assert_eq!(rate(60.0).await, StatusCode::UNPROCESSABLE_ENTITY, "above the maximum of 50");
    // A minimum above the maximum breaks the struct's rule: the code defaults, 60 to 500.
    flags.apply(BookingConfig::test().captioner_hourly_rate_min(80.0));
    assert_eq!(rate(1.0).await, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(rate(60.0).await, StatusCode::OK);
    assert_eq!(rate(500.0).await, StatusCode::OK);
}
