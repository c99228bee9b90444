//! The OpenFeature evaluation behaviours, through the SDK's client and the provider.

use std::time::Duration;

use ff_core::{ExpiryPolicy, Flag, FlagKind};
use ff_openfeature::FfProvider;
use ff_store::{FlagPatch, FlagReader, FlagWriter, MemoryStore, Mutation, Source, UsageStore, Write};
use open_feature::provider::{FeatureProvider, ProviderStatus};
use open_feature::{EvaluationContext, EvaluationErrorCode, EvaluationReason, OpenFeature, StructValue};
use serde_json::json;

const CHECKOUT: Flag<bool> = Flag::new("NEW_CHECKOUT", false).kind(FlagKind::Release);
const LEAD: Flag<i64> = Flag::new("LEAD_HOURS", 24).range(0, 1000);
const RATE: Flag<f64> = Flag::new("RATE_MIN", 60.5);
const THEME: Flag<String> = Flag::new("THEME", "light");
const LAYOUT: Flag<serde_json::Value> =
    Flag::new("LAYOUT", r#"{"columns": 2, "nav": {"side": "left"}, "gone": null, "tags": [1, "a"]}"#);
const ONLY_IN_CODE: Flag<bool> = Flag::new("ONLY_IN_CODE", true);

fn decls() -> Vec<ff_core::FlagDecl> {
    vec![CHECKOUT.decl(), LEAD.decl(), RATE.decl(), THEME.decl(), LAYOUT.decl()]
}

async fn setup() -> (MemoryStore, Source) {
    let store = MemoryStore::new();
    let source = Source::builder(store.clone())
        .declare(decls())
        .poll_interval(Duration::from_millis(50))
        .start()
        .await;
    (store, source)
}

async fn write(store: &MemoryStore, source: &Source, m: Mutation) {
    store.write(Write::new("test", m)).await.unwrap();
    assert!(source.wait_for_version(store.latest_seq().await.unwrap(), Duration::from_secs(10)).await);
}

fn user(id: &str) -> EvaluationContext {
    EvaluationContext::default().with_targeting_key(id)
}

fn patch(key: &str, p: FlagPatch) -> Mutation {
    Mutation::UpdateFlag { key: key.into(), patch: p, expected_version: None }
}

/// Through the SDK's global API (one test per binary may own it).
#[tokio::test]
async fn typed_values_through_the_sdk_client() {
    let (_, source) = setup().await;
    let mut api = OpenFeature::singleton_mut().await;
    api.set_provider(FfProvider::new(source).declare(decls().into_iter().chain([ONLY_IN_CODE.decl()]))).await;
    let client = api.create_client();
    let ctx = user("alice");
    assert!(!client.get_bool_value("NEW_CHECKOUT", Some(&ctx), None).await.unwrap());
    assert_eq!(client.get_int_value("LEAD_HOURS", Some(&ctx), None).await.unwrap(), 24);
    assert_eq!(client.get_float_value("RATE_MIN", Some(&ctx), None).await.unwrap(), 60.5);
    assert_eq!(client.get_string_value("THEME", Some(&ctx), None).await.unwrap(), "light");
    let layout: StructValue = client.get_struct_value("LAYOUT", Some(&ctx), None).await.unwrap();
    assert_eq!(layout.fields["columns"].as_i64(), Some(2));
    assert!(!layout.fields.contains_key("gone"), "null fields are left out");
    // A declared flag the store lacks: its code default.
    assert!(client.get_bool_value("ONLY_IN_CODE", Some(&ctx), None).await.unwrap());
    // Missing flag and type mismatch: errors with the spec's codes; the caller's default applies.
    let missing = client.get_bool_value("NOPE", Some(&ctx), None).await.unwrap_err();
    assert_eq!(missing.code, EvaluationErrorCode::FlagNotFound);
    assert!(client.get_bool_value("NOPE", Some(&ctx), None).await.unwrap_or(true));
    let mismatch = client.get_int_value("NEW_CHECKOUT", Some(&ctx), None).await.unwrap_err();
    assert_eq!(mismatch.code, EvaluationErrorCode::TypeMismatch);
    assert!(mismatch.message.unwrap().contains("bool flag, read as int"));
    let details = client.get_bool_details("NEW_CHECKOUT", Some(&ctx), None).await.unwrap();
    assert_eq!((details.reason, details.variant.as_deref()), (Some(EvaluationReason::Static), Some("value")));
}

#[tokio::test]
async fn context_aware_targeting_and_reasons() {
    let (store, source) = setup().await;
    let p = FfProvider::new(source.clone()).declare(decls());
    let rules = json!({"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}], "value": "dark"}]});
    write(
        &store,
        &source,
        patch(
            "THEME",
            FlagPatch { targeting: Some(serde_json::from_value(rules).unwrap()), ..Default::default() },
        ),
    )
    .await;
    write(&store, &source, Mutation::set_override("LEAD_HOURS", "tester", 0)).await;
    // Attributes from the context.
    let pro = user("bob").with_custom_field("plan", "pro");
    let d = p.resolve_string_value("THEME", &pro).await.unwrap();
    assert_eq!(
        (d.value.as_str(), d.reason, d.variant.as_deref()),
        ("dark", Some(EvaluationReason::TargetingMatch), Some("rule:0"))
    );
    let free = user("bob").with_custom_field("plan", "free");
    let d = p.resolve_string_value("THEME", &free).await.unwrap();
    assert_eq!((d.value.as_str(), d.reason), ("light", Some(EvaluationReason::Default)));
    let meta = d.flag_metadata.unwrap();
    assert!(meta.values.contains_key("flagVersion") && meta.values.contains_key("snapshotVersion"));
    // The targeting key is the user id.
    let d = p.resolve_int_value("LEAD_HOURS", &user("tester")).await.unwrap();
    assert_eq!(
        (d.value, d.reason, d.variant.as_deref()),
        (0, Some(EvaluationReason::TargetingMatch), Some("override"))
    );
    assert_eq!(p.resolve_int_value("LEAD_HOURS", &user("other")).await.unwrap().value, 24);
    assert_eq!(p.resolve_int_value("LEAD_HOURS", &EvaluationContext::default()).await.unwrap().value, 24);
    let bad = p.resolve_int_value("LEAD_HOURS", &user("")).await.unwrap_err();
    assert_eq!(bad.code, EvaluationErrorCode::InvalidContext);
    assert!(bad.message.unwrap().contains("targeting key: user id is empty"));
    // An int flag reads as a float; a float does not read as an int.
    assert_eq!(p.resolve_float_value("LEAD_HOURS", &user("tester")).await.unwrap().value, 0.0);
    assert_eq!(
        p.resolve_int_value("RATE_MIN", &user("x")).await.unwrap_err().code,
        EvaluationErrorCode::TypeMismatch
    );
    // A split: stable per user, reason SPLIT, both variations over 40 users.
    let split =
        json!({"split": {"variations": [{"value": true, "weight": 5000}, {"value": false, "weight": 5000}]}});
    write(
        &store,
        &source,
        patch(
            "NEW_CHECKOUT",
            FlagPatch { targeting: Some(serde_json::from_value(split).unwrap()), ..Default::default() },
        ),
    )
    .await;
    let mut seen = [false; 2];
    for i in 0..40 {
        let ctx = user(&format!("user-{i}"));
        let a = p.resolve_bool_value("NEW_CHECKOUT", &ctx).await.unwrap();
        assert_eq!(a.value, p.resolve_bool_value("NEW_CHECKOUT", &ctx).await.unwrap().value);
        assert_eq!(a.reason, Some(EvaluationReason::Split));
        seen[a.value as usize] = true;
    }
    assert_eq!(seen, [true, true]);
    // Switched off: the off value, reason DISABLED.
    write(&store, &source, Mutation::set_enabled("NEW_CHECKOUT", false)).await;
    let d = p.resolve_bool_value("NEW_CHECKOUT", &user("user-1")).await.unwrap();
    assert_eq!(
        (d.value, d.reason, d.variant.as_deref()),
        (false, Some(EvaluationReason::Disabled), Some("off"))
    );
    // A JSON flag that is not an object is not a struct.
    write(&store, &source, Mutation::set_value("LAYOUT", json!([1, 2]))).await;
    assert_eq!(
        p.resolve_struct_value("LAYOUT", &user("x")).await.unwrap_err().code,
        EvaluationErrorCode::TypeMismatch
    );
}

#[tokio::test]
async fn expired_flags_serve_the_code_default_when_declared() {
    let (store, source) = setup().await;
    let past = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let p = FlagPatch {
        value: Some(json!(true)),
        expiry: Some(ExpiryPolicy::ServeDefault),
        expires_at: Some(Some(past)),
        ..Default::default()
    };
    write(&store, &source, patch("NEW_CHECKOUT", p)).await;
    let declared = FfProvider::new(source.clone()).declare(decls());
    let d = declared.resolve_bool_value("NEW_CHECKOUT", &user("a")).await.unwrap();
    assert_eq!(
        (d.value, d.reason, d.variant.as_deref()),
        (false, Some(EvaluationReason::Default), Some("default"))
    );
    // Without the declaration the provider cannot know the default: an error, so the caller's applies.
    let bare = FfProvider::new(source);
    let e = bare.resolve_bool_value("NEW_CHECKOUT", &user("a")).await.unwrap_err();
    assert_eq!(e.code, EvaluationErrorCode::General("EXPIRED".into()));
}

#[tokio::test]
async fn status_follows_the_source() {
    let (_, source) = setup().await;
    assert_eq!(FfProvider::new(source).status(), ProviderStatus::Ready);
    let unreachable = ff_store::SqlStore::connect_lazy("sqlite:///nonexistent-dir/for/sure/ff.db").unwrap();
    let source = Source::builder(unreachable).startup_timeout(Duration::from_millis(200)).start().await;
    let p = FfProvider::new(source);
    assert_eq!(p.status(), ProviderStatus::STALE);
    // Still answers: code defaults are not in the store, so unknown keys are errors, never panics.
    assert_eq!(
        p.resolve_bool_value("NEW_CHECKOUT", &user("a")).await.unwrap_err().code,
        EvaluationErrorCode::FlagNotFound
    );
}

/// A flag read only through OpenFeature is counted in usage (and so in metrics),
/// as a read through the layer is: it is neither "never evaluated" nor stale.
#[tokio::test]
async fn reads_are_counted_like_the_layers() {
    let store = MemoryStore::new();
    let source = Source::builder(store.clone())
        .declare(decls())
        .usage_interval(Duration::from_millis(50))
        .start()
        .await;
    let p = FfProvider::new(source.clone()).declare(decls());
    let ctx = user("alice");
    for _ in 0..3 {
        assert_eq!(p.resolve_string_value("THEME", &ctx).await.unwrap().value, "light");
    }
    assert!(!p.resolve_bool_value("NEW_CHECKOUT", &ctx).await.unwrap().value);
    let today = time::OffsetDateTime::now_utc().date();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = store.usage(today).await.unwrap();
        let count = |key: &str, variant: &str| {
            rows.iter().filter(|r| r.key == key && r.variant == variant).map(|r| r.count).sum::<u64>()
        };
        if count("THEME", "value") == 3 && count("NEW_CHECKOUT", "false") == 1 {
            assert_eq!(count("LEAD_HOURS", "value"), 0, "only what was read");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "reads never counted: {rows:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A duration and an enum: strings in the form they are written in.
#[derive(ff_core::SettingEnum, Clone, Copy, Debug, PartialEq)]
enum Plan {
    Free,
    Pro,
}
const WINDOW: Flag<std::time::Duration> = Flag::new("WINDOW", "24h");
const PLAN: Flag<Plan> = Flag::new("PLAN", Plan::Free);

#[tokio::test]
async fn durations_and_enum_names_are_strings_as_written() {
    let store = MemoryStore::new();
    let source = Source::builder(store.clone()).declare([WINDOW.decl(), PLAN.decl()]).start().await;
    let p = FfProvider::new(source.clone()).declare([WINDOW.decl(), PLAN.decl()]);
    assert_eq!(p.resolve_string_value("WINDOW", &user("u")).await.unwrap().value, "24h");
    assert_eq!(p.resolve_string_value("PLAN", &user("u")).await.unwrap().value, "Free");
    write(&store, &source, Mutation::set_value("WINDOW", "90m")).await;
    write(&store, &source, Mutation::set_value("PLAN", "Pro")).await;
    assert_eq!(p.resolve_string_value("WINDOW", &user("u")).await.unwrap().value, "90m");
    assert_eq!(p.resolve_string_value("PLAN", &user("u")).await.unwrap().value, "Pro");
}
