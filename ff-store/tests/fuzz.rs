//! Fuzzing with proptest (a fixed number of cases per run, so CI time is bounded):
//! arbitrary and nearly-valid targeting, segment and value JSON is parsed,
//! validated, compiled and evaluated. Nothing may panic; every refusal is an error
//! value; evaluation always answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ff_core::{
    EvalContext, Evaluator, Flag, FlagDef, FlagRecord, Schema, SegmentDef, SegmentRecord, Snapshot,
    StoreState, Targeting, Value, ValueType,
};
use ff_store::{FlagWriter, MemoryStore, Mutation, StoreError, Write};
use proptest::prelude::*;
use serde_json::json;

const KEYS: &[&str] = &[
    "rules",
    "clauses",
    "attribute",
    "op",
    "values",
    "negate",
    "value",
    "split",
    "variations",
    "weight",
    "schedule",
    "at",
    "enabled",
    "bucket_by",
    "salt",
    "included",
    "excluded",
    "description",
    "x",
];
const OPS: &[&str] = &[
    "in",
    "not_in",
    "eq",
    "neq",
    "starts_with",
    "ends_with",
    "contains",
    "matches",
    "lt",
    "lte",
    "gt",
    "gte",
    "before",
    "after",
    "semver_eq",
    "semver_lt",
    "semver_gt",
    "exists",
    "in_segment",
    "nope",
];
const ATTRIBUTES: &[&str] = &["user_id", "plan", "country", "version", "n", "signup", ""];
const WORDS: &[&str] = &[
    "pro",
    "enterprise",
    "1.2.3",
    "2.0.0-beta.1",
    "2026-11-21T00:00:00Z",
    "(a+)+$",
    "[",
    ".*",
    "beta",
    "u1",
    "seg",
    "",
    "é",
    "2030-01-01T00:00:00Z",
];

fn leaf() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (-1e9f64..1e9).prop_map(|f| json!(f)),
        (0u32..20_000).prop_map(serde_json::Value::from),
        prop::sample::select(WORDS).prop_map(serde_json::Value::from),
        prop::sample::select(OPS).prop_map(serde_json::Value::from),
        "\\PC{0,12}".prop_map(serde_json::Value::from),
    ]
}

/// Any JSON, with object keys mostly from the targeting vocabulary.
fn any_json() -> impl Strategy<Value = serde_json::Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

fn clause() -> impl Strategy<Value = serde_json::Value> {
    (
        prop::sample::select(ATTRIBUTES),
        prop::sample::select(OPS),
        prop::collection::vec(leaf(), 0..4),
        any::<bool>(),
    )
        .prop_map(
            |(a, op, values, negate)| json!({"attribute": a, "op": op, "values": values, "negate": negate}),
        )
}

fn split() -> impl Strategy<Value = serde_json::Value> {
    prop::collection::vec((leaf(), prop_oneof![Just(5000u32), Just(10_000u32), 0u32..12_000]), 1..4)
        .prop_map(|v| json!({"variations": v.into_iter().map(|(value, weight)| json!({"value": value, "weight": weight})).collect::<Vec<_>>()}))
}

/// Targeting that is often valid: rules, a split and a schedule in the right shape.
fn near_targeting() -> impl Strategy<Value = serde_json::Value> {
    let rule = (prop::collection::vec(clause(), 0..3), leaf(), prop::option::of(split())).prop_map(
        |(clauses, value, split)| match split {
            Some(s) => json!({"clauses": clauses, "split": s}),
            None => json!({"clauses": clauses, "value": value}),
        },
    );
    let step = (prop::sample::select(WORDS), prop::option::of(any::<bool>()), prop::option::of(leaf()))
        .prop_map(|(at, enabled, value)| json!({"at": at, "enabled": enabled, "value": value}));
    (
        prop::collection::vec(rule, 0..4),
        prop::option::of(split()),
        prop::collection::vec(step, 0..3),
        prop::option::of(prop::sample::select(ATTRIBUTES)),
    )
        .prop_map(|(rules, split, schedule, bucket_by)| {
            let mut t = json!({"rules": rules, "schedule": schedule});
            if let Some(s) = split {
                t["split"] = s;
            }
            if let Some(b) = bucket_by {
                t["bucket_by"] = json!(b);
            }
            t
        })
}

fn context() -> impl Strategy<Value = EvalContext> {
    (
        prop::option::of("[a-z0-9]{1,8}"),
        prop::collection::vec((prop::sample::select(ATTRIBUTES), leaf()), 0..4),
    )
        .prop_map(|(user, attrs)| {
            let base = user.map_or_else(EvalContext::anonymous, EvalContext::user);
            attrs.into_iter().filter(|(a, _)| !a.is_empty()).fold(base, |c, (a, v)| c.with_attribute(a, v))
        })
}

const TYPES: [ValueType; 5] =
    [ValueType::Bool, ValueType::Int, ValueType::Float, ValueType::String, ValueType::Json];

/// Parses, validates and compiles `t` for a flag of type `ty`, then evaluates it for
/// `contexts`: never panics, always answers, quickly.
fn exercise(t: &serde_json::Value, ty: ValueType, contexts: &[EvalContext]) {
    let Ok(targeting) = serde_json::from_value::<Targeting>(t.clone()) else { return };
    let value = match ty {
        ValueType::Bool => Value::Bool(false),
        ValueType::Int => Value::Int(0),
        ValueType::Float => Value::Float(0.0),
        ValueType::String => Value::String("x".into()),
        ValueType::Json => Value::Json(Arc::new(json!({}))),
    };
    let segment = SegmentRecord {
        key: "seg".into(),
        definition: SegmentDef { included: vec!["u1".into()], ..Default::default() },
        version: 1,
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        updated_at: time::OffsetDateTime::UNIX_EPOCH,
    };
    // A write either stores it or refuses it with an error naming the problem.
    match write(create("F", &value, targeting.clone()), Some(&segment)) {
        Ok(()) | Err(StoreError::Invalid { .. }) => {}
        Err(e) => panic!("unexpected error {e} for {t}"),
    }
    let state = StoreState {
        seq: 1,
        flags: vec![FlagRecord { targeting, ..FlagRecord::new("F", value) }],
        segments: vec![segment],
        ..Default::default()
    };
    let snapshot = Arc::new(Snapshot::from_state(&state));
    let start = Instant::now();
    for c in contexts {
        let e = Evaluator::new(snapshot.clone(), c.clone()).at(time::macros::datetime!(2027-01-01 00:00 UTC));
        let _ = e.get(Flag::<bool>::new("F", false));
        let _ = e.get(Flag::<i64>::new("F", 0));
        let _ = e.get(Flag::<String>::new("F", "d"));
        let _ = snapshot.evaluate_key("F", c);
    }
    assert!(start.elapsed() < Duration::from_secs(2), "evaluation took {:?} for {t}", start.elapsed());
}

/// Creating flag `key` of `value`'s type with `targeting`, as a client would.
fn create(key: &str, value: &Value, targeting: Targeting) -> Mutation {
    let decl = ff_core::FlagDecl {
        key: key.into(),
        value_type: value.value_type(),
        default: value.clone(),
        description: String::new(),
        schema: Schema::default(),
        kind: None,
        owner: String::new(),
        permanent: None,
        expiry: None,
        expires: String::new(),
    };
    Mutation::CreateFlag { def: FlagDef { targeting, ..FlagDef::from(&decl) }, if_missing: false }
}

/// One write to a fresh store (with the segment, if any).
fn write(m: Mutation, segment: Option<&SegmentRecord>) -> Result<(), StoreError> {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(async {
        let store = MemoryStore::new();
        if let Some(s) = segment {
            store.put_segment(&s.key, s.definition.clone(), Some(0), ("fuzz", None)).await?;
        }
        store.write(Write::new("fuzz", m)).await.map(|_| ())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_json_as_targeting(t in any_json(), ty in prop::sample::select(&TYPES[..]), cs in prop::collection::vec(context(), 1..6)) {
        exercise(&t, ty, &cs);
    }

    #[test]
    fn nearly_valid_targeting(t in near_targeting(), ty in prop::sample::select(&TYPES[..]), cs in prop::collection::vec(context(), 1..8)) {
        exercise(&t, ty, &cs);
    }

    #[test]
    fn arbitrary_json_as_segments(s in any_json(), ids in prop::collection::vec("\\PC{0,10}", 0..5)) {
        if let Ok(mut definition) = serde_json::from_value::<SegmentDef>(s) {
            definition.included.extend(ids);
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let r = rt.block_on(MemoryStore::new().put_segment("s", definition, Some(0), ("fuzz", None)));
            prop_assert!(matches!(r, Ok(_) | Err(StoreError::Invalid { .. })), "{:?}", r);
        }
    }

    #[test]
    fn values_against_declarations(v in any_json(), ty in prop::sample::select(&TYPES[..]), min in prop::option::of(-100i64..100), max in prop::option::of(-100i64..100)) {
        let schema = Schema { min: min.map(Into::into), max: max.map(Into::into), ..Schema::default() };
        // A schema either is refused for its type or checks values without panicking.
        if schema.check_self(ty).is_ok()
            && let Ok(value) = Value::from_json(ty, &v)
        {
            let _ = schema.check(&value);
            prop_assert_eq!(value.value_type(), ty);
        }
    }
}

#[test]
fn a_catastrophic_regex_is_refused_or_fast() {
    // Exponential in backtracking engines; the regex crate is linear, and big patterns are refused.
    let t = json!({"rules": [{"clauses": [{"attribute": "plan", "op": "matches", "values": ["(a+)+$"]}], "value": true}]});
    let ctx = EvalContext::user("u").with_attribute("plan", format!("{}!", "a".repeat(10_000)));
    exercise(&t, ValueType::Bool, &[ctx]);
    let huge = format!("({})", "a{1000}".repeat(100));
    let t = json!({"rules": [{"clauses": [{"attribute": "plan", "op": "matches", "values": [huge]}], "value": true}]});
    let targeting: Targeting = serde_json::from_value(t).unwrap();
    let err = write(create("F", &Value::Bool(false), targeting), None).unwrap_err();
    assert!(err.to_string().contains("regex"), "{err}");
}
