//! Targeting: operators, rules, splits, bucketing attributes, schedules, validation.

use std::sync::Arc;

use ff_core::{EvalContext, Evaluator, Flag, FlagRecord, Reason, Snapshot, StoreState, Targeting, Value};
use ff_store::{FlagReader, FlagWriter, MemoryStore, Mutation, Write};
use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;

const PREMIUM: Flag<bool> = Flag::new("PREMIUM", false);
const CHECKOUT: Flag<String> = Flag::new("CHECKOUT", "classic");

fn targeting(t: serde_json::Value) -> Targeting {
    serde_json::from_value(t).expect("targeting parses")
}

fn snapshot(records: Vec<FlagRecord>) -> Arc<Snapshot> {
    Arc::new(Snapshot::from_state(&StoreState {
        seq: 1,
        flags: records,
        overrides: vec![],
        ..Default::default()
    }))
}

fn flag(key: &str, value: Value, t: serde_json::Value) -> FlagRecord {
    FlagRecord { targeting: targeting(t), ..FlagRecord::new(key, value) }
}

fn premium_with(clause: serde_json::Value) -> Arc<Snapshot> {
    snapshot(vec![flag(
        "PREMIUM",
        Value::Bool(false),
        json!({"rules": [{"clauses": [clause], "value": true}]}),
    )])
}

#[test]
fn operator_table() {
    let ctx = |attrs: serde_json::Value| {
        let mut c = EvalContext::user("u1");
        for (k, v) in attrs.as_object().unwrap() {
            c = c.with_attribute(k.clone(), v.clone());
        }
        c
    };
    // (clause, matching attributes, non-matching attributes, wrongly typed attributes)
    let table = [
        (
            json!({"attribute": "plan", "op": "in", "values": ["pro", "enterprise"]}),
            json!({"plan": "pro"}),
            json!({"plan": "free"}),
            json!({"plan": ["pro"]}),
        ),
        (
            json!({"attribute": "plan", "op": "not_in", "values": ["free"]}),
            json!({"plan": "pro"}),
            json!({"plan": "free"}),
            json!({"plan": {}}),
        ),
        (
            json!({"attribute": "seats", "op": "in", "values": [5, 10]}),
            json!({"seats": 10}),
            json!({"seats": 7}),
            json!({"seats": [10]}),
        ),
        (
            json!({"attribute": "beta", "op": "eq", "values": [true]}),
            json!({"beta": true}),
            json!({"beta": false}),
            json!({"beta": {}}),
        ),
        (
            json!({"attribute": "country", "op": "neq", "values": ["US"]}),
            json!({"country": "DE"}),
            json!({"country": "US"}),
            json!({"country": []}),
        ),
        (
            json!({"attribute": "email", "op": "starts_with", "values": ["qa+"]}),
            json!({"email": "qa+1@x.io"}),
            json!({"email": "me@x.io"}),
            json!({"email": 5}),
        ),
        (
            json!({"attribute": "email", "op": "ends_with", "values": ["@example.com"]}),
            json!({"email": "a@example.com"}),
            json!({"email": "a@x.io"}),
            json!({"email": true}),
        ),
        (
            json!({"attribute": "email", "op": "contains", "values": ["staff"]}),
            json!({"email": "a.staff@x.io"}),
            json!({"email": "a@x.io"}),
            json!({"email": 1}),
        ),
        (
            json!({"attribute": "email", "op": "matches", "values": ["^[a-z]+@corp\\.io$"]}),
            json!({"email": "ann@corp.io"}),
            json!({"email": "ann@corp.iox"}),
            json!({"email": 1}),
        ),
        (
            json!({"attribute": "age", "op": "lt", "values": [18]}),
            json!({"age": 17}),
            json!({"age": 18}),
            json!({"age": "17"}),
        ),
        (
            json!({"attribute": "age", "op": "lte", "values": [18]}),
            json!({"age": 18}),
            json!({"age": 19}),
            json!({"age": "x"}),
        ),
        (
            json!({"attribute": "age", "op": "gt", "values": [18]}),
            json!({"age": 18.5}),
            json!({"age": 18}),
            json!({"age": null}),
        ),
        (
            json!({"attribute": "age", "op": "gte", "values": [18]}),
            json!({"age": 18}),
            json!({"age": 17}),
            json!({"age": false}),
        ),
        (
            json!({"attribute": "signup", "op": "before", "values": ["2026-01-01T00:00:00Z"]}),
            json!({"signup": "2025-06-01T00:00:00Z"}),
            json!({"signup": "2026-06-01T00:00:00Z"}),
            json!({"signup": "last year"}),
        ),
        (
            json!({"attribute": "signup", "op": "after", "values": [1_700_000_000_000_i64]}),
            json!({"signup": 1_800_000_000_000_i64}),
            json!({"signup": 1_600_000_000_000_i64}),
            json!({"signup": true}),
        ),
        (
            json!({"attribute": "app", "op": "semver_eq", "values": ["2.1.0"]}),
            json!({"app": "2.1.0"}),
            json!({"app": "2.1.1"}),
            json!({"app": "two"}),
        ),
        (
            json!({"attribute": "app", "op": "semver_lt", "values": ["2.1.0"]}),
            json!({"app": "2.0.9"}),
            json!({"app": "2.1.0"}),
            json!({"app": 2}),
        ),
        (
            json!({"attribute": "app", "op": "semver_gt", "values": ["2.1.0"]}),
            json!({"app": "2.10.0"}),
            json!({"app": "2.1.0-rc.1"}),
            json!({"app": "2.x"}),
        ),
        (
            json!({"attribute": "plan", "op": "exists"}),
            json!({"plan": "free"}),
            json!({"other": 1}),
            json!({"plan": null}),
        ),
        (
            json!({"attribute": "user_id", "op": "in", "values": ["u1", "u2"]}),
            json!({}),
            json!(null),
            json!(null),
        ),
    ];
    for (clause, yes, no, wrong) in table {
        let s = premium_with(clause.clone());
        let eval = |attrs: &serde_json::Value| Evaluator::new(s.clone(), ctx(attrs.clone())).detail(PREMIUM);
        let hit = eval(&yes);
        assert_eq!((hit.value, hit.reason), (true, Reason::Rule(0)), "{clause} with {yes}");
        if !no.is_null() {
            assert_eq!(eval(&no).reason, Reason::Global, "{clause} with {no}");
        }
        if !wrong.is_null() {
            assert_eq!(eval(&wrong).reason, Reason::Global, "{clause} with wrongly typed {wrong}");
        }
        // Missing attribute: never matches, negated or not.
        let attr = clause["attribute"].as_str().unwrap();
        if attr != "user_id" {
            assert_eq!(eval(&json!({})).reason, Reason::Global, "{clause} missing");
            let mut negated = clause.clone();
            negated["negate"] = json!(true);
            let s = premium_with(negated.clone());
            let missing = Evaluator::new(s.clone(), ctx(json!({}))).detail(PREMIUM);
            // `exists` is the one test of absence: negated, it matches a missing attribute.
            let expected = if clause["op"] == "exists" { Reason::Rule(0) } else { Reason::Global };
            assert_eq!(missing.reason, expected, "{negated} missing");
            if !no.is_null() {
                assert_eq!(
                    Evaluator::new(s.clone(), ctx(no.clone())).detail(PREMIUM).reason,
                    Reason::Rule(0),
                    "{negated} with {no}"
                );
            }
        }
    }
    // No user id: user_id clauses never match.
    let s = premium_with(json!({"attribute": "user_id", "op": "in", "values": ["u1"]}));
    assert_eq!(Evaluator::new(s, EvalContext::anonymous()).detail(PREMIUM).reason, Reason::Global);
}

#[test]
fn rules_in_order_then_split_then_global_and_precedence() {
    let t = json!({
        "rules": [
            {"clauses": [{"attribute": "plan", "op": "in", "values": ["enterprise"]}], "value": "new"},
            {"clauses": [{"attribute": "plan", "op": "in", "values": ["enterprise", "pro"]}], "value": "beta"}
        ],
        "split": {"variations": [{"value": "new", "weight": 10000}]}
    });
    let s = snapshot(vec![flag("CHECKOUT", Value::String("classic".into()), t)]);
    let eval = |c: EvalContext| Evaluator::new(s.clone(), c).detail(CHECKOUT);
    let ent = eval(EvalContext::user("a").with_attribute("plan", "enterprise"));
    assert_eq!((ent.value.as_str(), ent.reason), ("new", Reason::Rule(0)));
    let pro = eval(EvalContext::user("a").with_attribute("plan", "pro"));
    assert_eq!((pro.value.as_str(), pro.reason), ("beta", Reason::Rule(1)));
    let free = eval(EvalContext::user("a").with_attribute("plan", "free"));
    assert_eq!((free.value.as_str(), free.reason), ("new", Reason::Split));
    // No user id: the split cannot bucket, the global value is served.
    let anon = eval(EvalContext::anonymous());
    assert_eq!((anon.value.as_str(), anon.reason), ("classic", Reason::Global));
    // Off beats rules; overrides beat rules.
    let off = FlagRecord {
        enabled: false,
        ..flag(
            "CHECKOUT",
            Value::String("classic".into()),
            json!({"rules": [{"clauses": [{"attribute": "plan", "op": "exists"}], "value": "new"}]}),
        )
    };
    let s = Arc::new(Snapshot::from_state(&StoreState {
        seq: 1,
        flags: vec![off],
        overrides: vec![ff_core::OverrideRecord {
            key: "CHECKOUT".into(),
            user_id: "vip".into(),
            value: json!("vip"),
        }],
        ..Default::default()
    }));
    let d = Evaluator::new(s, EvalContext::user("vip").with_attribute("plan", "x")).detail(CHECKOUT);
    assert_eq!((d.value.as_str(), d.reason), ("classic", Reason::Disabled));
}

fn rollout(weight: u32, extra: serde_json::Value) -> Arc<Snapshot> {
    let mut t = json!({"split": {"variations": [{"value": true, "weight": weight}, {"value": false, "weight": 10000 - weight}]}});
    for (k, v) in extra.as_object().unwrap() {
        t[k] = v.clone();
    }
    snapshot(vec![flag("PREMIUM", Value::Bool(false), t)])
}

#[test]
fn a_ten_percent_split_is_about_ten_percent_sticky_and_monotone() {
    let ten = rollout(1000, json!({}));
    let twenty = rollout(2000, json!({}));
    let users: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
    let in_ten: Vec<bool> =
        users.iter().map(|u| Evaluator::new(ten.clone(), EvalContext::user(u)).get(PREMIUM)).collect();
    let count = in_ten.iter().filter(|b| **b).count();
    assert!((850..=1150).contains(&count), "{count} of 10,000 in a 10% split");
    // Same users again (a second pass, a new snapshot): the same answers.
    let again = rollout(1000, json!({}));
    for (u, was) in users.iter().zip(&in_ten) {
        assert_eq!(Evaluator::new(again.clone(), EvalContext::user(u)).get(PREMIUM), *was, "{u} flipped");
    }
    // Raising the percentage only adds users.
    for (u, was) in users.iter().zip(&in_ten) {
        let now = Evaluator::new(twenty.clone(), EvalContext::user(u)).get(PREMIUM);
        assert!(!*was || now, "{u} left the rollout when it grew");
    }
    assert_eq!(Evaluator::new(ten.clone(), EvalContext::user("x")).detail(PREMIUM).reason, Reason::Split);
}

#[test]
fn bucket_by_another_attribute_and_salt() {
    // Everyone in one org gets the same answer.
    let s = rollout(5000, json!({"bucket_by": "org_id"}));
    for org in ["org-1", "org-2", "org-3", "org-4"] {
        let answers: Vec<bool> = (0..20)
            .map(|i| {
                Evaluator::new(s.clone(), EvalContext::user(format!("u{i}")).with_attribute("org_id", org))
                    .get(PREMIUM)
            })
            .collect();
        assert!(answers.iter().all(|a| *a == answers[0]), "{org}: {answers:?}");
    }
    // Without the attribute: no bucket, the global value.
    let d = Evaluator::new(s, EvalContext::user("u1")).detail(PREMIUM);
    assert_eq!((d.value, d.reason), (false, Reason::Global));
    // Two flags with one salt move together; different salts do not.
    let a = rollout(5000, json!({"salt": "shared"}));
    let b = snapshot(vec![flag(
        "OTHER",
        Value::Bool(false),
        json!({"salt": "shared", "split": {"variations": [{"value": true, "weight": 5000}, {"value": false, "weight": 5000}]}}),
    )]);
    const OTHER: Flag<bool> = Flag::new("OTHER", false);
    for i in 0..200 {
        let u = format!("u{i}");
        assert_eq!(
            Evaluator::new(a.clone(), EvalContext::user(&u)).get(PREMIUM),
            Evaluator::new(b.clone(), EvalContext::user(&u)).get(OTHER)
        );
    }
}

#[test]
fn a_ramp_at_fixed_instants() {
    let t = json!({"schedule": [
        {"at": "2026-12-01T09:00:00Z", "split": {"variations": [{"value": true, "weight": 100}, {"value": false, "weight": 9900}]}},
        {"at": "2026-12-02T09:00:00Z", "split": {"variations": [{"value": true, "weight": 1000}, {"value": false, "weight": 9000}]}},
        {"at": "2026-12-03T09:00:00Z", "split": {"variations": [{"value": true, "weight": 5000}, {"value": false, "weight": 5000}]}},
        {"at": "2026-12-04T09:00:00Z", "value": true},
        {"at": "2026-12-10T00:00:00Z", "enabled": false}
    ]});
    let s = snapshot(vec![flag("PREMIUM", Value::Bool(false), t)]);
    let share = |at: OffsetDateTime| {
        (0..10_000)
            .filter(|i| Evaluator::new(s.clone(), EvalContext::user(format!("user-{i}"))).at(at).get(PREMIUM))
            .count()
    };
    assert_eq!(share(datetime!(2026-11-30 00:00 UTC)), 0, "before the ramp: the global value");
    let one = share(datetime!(2026-12-01 12:00 UTC));
    assert!((60..=140).contains(&one), "1%: {one}");
    let ten = share(datetime!(2026-12-02 09:00 UTC));
    assert!((850..=1150).contains(&ten), "10%: {ten}");
    let half = share(datetime!(2026-12-03 10:00 UTC));
    assert!((4700..=5300).contains(&half), "50%: {half}");
    assert_eq!(share(datetime!(2026-12-05 00:00 UTC)), 10_000, "everyone");
    let d =
        Evaluator::new(s.clone(), EvalContext::user("u")).at(datetime!(2026-12-05 00:00 UTC)).detail(PREMIUM);
    assert_eq!(d.reason, Reason::Scheduled(3));
    let off =
        Evaluator::new(s.clone(), EvalContext::user("u")).at(datetime!(2026-12-11 00:00 UTC)).detail(PREMIUM);
    assert_eq!((off.value, off.reason), (false, Reason::Disabled), "turned off at T");
    // Monotone for users as the ramp rises.
    for i in 0..2_000 {
        let u = format!("user-{i}");
        let at = |t| Evaluator::new(s.clone(), EvalContext::user(&u)).at(t).get(PREMIUM);
        let steps = [
            at(datetime!(2026-12-01 10:00 UTC)),
            at(datetime!(2026-12-02 10:00 UTC)),
            at(datetime!(2026-12-03 10:00 UTC)),
        ];
        assert!(steps.windows(2).all(|w| !w[0] || w[1]), "{u}: {steps:?}");
    }
    // "Turn on at T" for a flag that is off now.
    let on_at = FlagRecord {
        enabled: false,
        ..flag(
            "PREMIUM",
            Value::Bool(true),
            json!({"schedule": [{"at": "2026-12-24T18:00:00Z", "enabled": true}]}),
        )
    };
    let s = snapshot(vec![on_at]);
    let at = |t| Evaluator::new(s.clone(), EvalContext::user("u")).at(t).detail(PREMIUM);
    assert_eq!(at(datetime!(2026-12-24 17:59 UTC)).reason, Reason::Disabled);
    assert_eq!(
        (at(datetime!(2026-12-24 18:00 UTC)).value, at(datetime!(2026-12-24 18:00 UTC)).reason),
        (true, Reason::Global)
    );
}

#[tokio::test]
async fn bad_targeting_is_refused_on_write() {
    let store = MemoryStore::new();
    ff_store::sync(
        &store,
        &[PREMIUM.decl(), Flag::<i64>::new("LIMIT", 5).range(0, 10).decl()],
        &Default::default(),
    )
    .await
    .unwrap();
    let write = |key: &str, t: serde_json::Value| {
        let store = store.clone();
        let key = key.to_owned();
        async move {
            let patch: ff_store::FlagPatch = serde_json::from_value(json!({ "targeting": t }))?;
            store
                .write(Write::new("t", Mutation::UpdateFlag { key, patch, expected_version: None }))
                .await
                .map_err(|e| serde_json::Error::io(std::io::Error::other(e.to_string())))
        }
    };
    let cases = [
        (
            "PREMIUM",
            json!({"rules": [{"clauses": [{"attribute": "a", "op": "resembles", "values": []}], "value": true}]}),
            "unknown variant",
        ),
        (
            "PREMIUM",
            json!({"rules": [{"clauses": [{"attribute": "a", "op": "matches", "values": ["(unclosed"]}], "value": true}]}),
            "bad regex",
        ),
        (
            "PREMIUM",
            json!({"rules": [{"clauses": [{"attribute": "a", "op": "matches", "values": ["\\w{5000}{5000}"]}], "value": true}]}),
            "compiles to more than 65536 bytes (the limit of one regex)",
        ),
        (
            "PREMIUM",
            json!({"split": {"variations": [{"value": true, "weight": 1000}, {"value": false, "weight": 8000}]}}),
            "add up to 9000",
        ),
        ("PREMIUM", json!({"rules": [{"clauses": [], "value": true}]}), "no clauses"),
        ("PREMIUM", json!({"rules": [{"clauses": [{"attribute": "a", "op": "exists"}]}]}), "serves nothing"),
        (
            "PREMIUM",
            json!({"rules": [{"clauses": [{"attribute": "a", "op": "exists"}], "value": "yes"}]}),
            "expected a bool",
        ),
        (
            "LIMIT",
            json!({"rules": [{"clauses": [{"attribute": "a", "op": "exists"}], "value": 11}]}),
            "above the maximum",
        ),
        (
            "PREMIUM",
            json!({"rules": [{"clauses": [{"attribute": "a", "op": "lt", "values": ["ten"]}], "value": true}]}),
            "takes a number",
        ),
        (
            "PREMIUM",
            json!({"rules": [{"clauses": [{"attribute": "a", "op": "semver_gt", "values": ["v1"]}], "value": true}]}),
            "bad version",
        ),
        (
            "PREMIUM",
            json!({"schedule": [{"at": "2026-12-02T00:00:00Z", "value": true}, {"at": "2026-12-01T00:00:00Z", "value": false}]}),
            "time order",
        ),
        ("PREMIUM", json!({"schedule": [{"at": "2026-12-02T00:00:00Z"}]}), "changes nothing"),
        (
            "PREMIUM",
            json!({"rules": [{"clauses": [{"attribute": "a", "op": "exists", "values": [1]}], "value": true}]}),
            "takes no values",
        ),
        ("PREMIUM", json!({"rulez": []}), "unknown field"),
    ];
    for (key, t, says) in cases {
        let err = write(key, t.clone()).await.unwrap_err().to_string();
        assert!(err.contains(says), "{t}: {err}");
    }
    assert_eq!(store.latest_seq().await.unwrap(), 2, "nothing written");
    let ok = json!({"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}], "value": true}]});
    write("PREMIUM", ok).await.unwrap();
    let s = Arc::new(Snapshot::from_state(&store.load().await.unwrap()));
    assert!(Evaluator::new(s, EvalContext::user("u").with_attribute("plan", "pro")).get(PREMIUM));
}

#[tokio::test]
async fn targeting_round_trips_through_sqlite_and_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    let store = ff_store::SqlStore::connect(&url).await.unwrap();
    let source = ff_store::Source::builder(store.clone())
        .declare([PREMIUM.decl()])
        .poll_interval(std::time::Duration::from_millis(50))
        .start()
        .await;
    let patch: ff_store::FlagPatch = serde_json::from_value(json!({"targeting": {
        "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro", "enterprise"]}], "value": true, "description": "paying"}],
        "split": {"variations": [{"value": true, "weight": 1000}, {"value": false, "weight": 9000}]}
    }}))
    .unwrap();
    store
        .write(Write::new("t", Mutation::UpdateFlag { key: "PREMIUM".into(), patch, expected_version: None }))
        .await
        .unwrap();
    assert!(source.wait_for_version(2, std::time::Duration::from_secs(10)).await);
    let pro = Evaluator::new(source.snapshot(), EvalContext::user("u").with_attribute("plan", "pro"))
        .detail(PREMIUM);
    assert_eq!((pro.value, pro.reason), (true, Reason::Rule(0)));
    let stored = store.flag("PREMIUM").await.unwrap().unwrap();
    assert_eq!(stored.targeting.rules[0].description, "paying");
    // The change log carries it, so an incremental apply equals a full load.
    assert_eq!(source.snapshot().to_state(), Snapshot::from_state(&store.load().await.unwrap()).to_state());
}

#[test]
fn config_is_not_shared_when_it_reads_a_targeted_flag() {
    #[derive(Debug)]
    struct Cfg(bool);
    impl ff_core::Config for Cfg {
        fn from_flags(f: &ff_core::ConfigReader<'_>) -> Self {
            Cfg(f.get(PREMIUM))
        }
    }
    let s = premium_with(json!({"attribute": "plan", "op": "in", "values": ["pro"]}));
    let pro = Evaluator::new(s.clone(), EvalContext::user("a").with_attribute("plan", "pro")).config::<Cfg>();
    let free =
        Evaluator::new(s.clone(), EvalContext::user("b").with_attribute("plan", "free")).config::<Cfg>();
    assert!(pro.0 && !free.0);
}

#[tokio::test]
async fn segments_in_rules() {
    let store = MemoryStore::new();
    ff_store::sync(&store, &[PREMIUM.decl()], &Default::default()).await.unwrap();
    let who = ("t", None);
    let seg = |v: serde_json::Value| serde_json::from_value::<ff_core::SegmentDef>(v).unwrap();
    // 100,000 explicit ids, an exclusion, and a rule.
    let ids: Vec<String> = (0..100_000).map(|i| format!("member-{i}")).collect();
    let big = seg(
        json!({"included": ids, "excluded": ["member-7"], "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["enterprise"]}]}]}),
    );
    store.put_segment("beta", big, None, who).await.unwrap();
    store.put_segment("empty", seg(json!({})), None, who).await.unwrap();
    let t = json!({"rules": [
        {"clauses": [{"attribute": "user_id", "op": "in_segment", "values": ["beta"]}], "value": true},
        {"clauses": [{"attribute": "user_id", "op": "in_segment", "values": ["empty"], "negate": true}, {"attribute": "plan", "op": "eq", "values": ["never"]}], "value": true}
    ]});
    let patch: ff_store::FlagPatch = serde_json::from_value(json!({ "targeting": t })).unwrap();
    store
        .write(Write::new("t", Mutation::UpdateFlag { key: "PREMIUM".into(), patch, expected_version: None }))
        .await
        .unwrap();
    let source = ff_store::Source::builder(store.clone())
        .poll_interval(std::time::Duration::from_millis(20))
        .start()
        .await;
    let eval = |c: EvalContext| Evaluator::new(source.snapshot(), c).detail(PREMIUM);
    assert_eq!(eval(EvalContext::user("member-99999")).reason, Reason::Rule(0));
    assert_eq!(eval(EvalContext::user("member-7")).reason, Reason::Global, "excluded beats included");
    assert_eq!(
        eval(EvalContext::user("stranger").with_attribute("plan", "enterprise")).reason,
        Reason::Rule(0)
    );
    assert_eq!(
        eval(EvalContext::user("member-7").with_attribute("plan", "enterprise")).reason,
        Reason::Global,
        "excluded beats rules"
    );
    assert_eq!(eval(EvalContext::user("stranger")).reason, Reason::Global);
    assert_eq!(
        eval(EvalContext::user("x").with_attribute("plan", "never")).reason,
        Reason::Rule(1),
        "negated in_segment"
    );
    // 100,000 lookups of a 100,000-id segment: O(1) each (a hash set), so this is quick.
    let snap = source.snapshot();
    let started = std::time::Instant::now();
    let hits = (0..100_000)
        .filter(|i| Evaluator::new(snap.clone(), EvalContext::user(format!("member-{i}"))).get(PREMIUM))
        .count();
    assert_eq!(hits, 99_999);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "generous bound: {:?}",
        started.elapsed()
    );
    // Changing the segment changes who gets the flag, without touching the flag.
    let version = source.status().version;
    store.put_segment("beta", seg(json!({"included": ["newcomer"]})), None, who).await.unwrap();
    assert!(source.wait_for_version(version + 1, std::time::Duration::from_secs(10)).await);
    assert_eq!(eval(EvalContext::user("newcomer")).reason, Reason::Rule(0));
    assert_eq!(eval(EvalContext::user("member-99999")).reason, Reason::Global);
}

#[test]
fn an_unknown_segment_never_matches() {
    let s = premium_with(json!({"attribute": "user_id", "op": "in_segment", "values": ["gone"]}));
    assert_eq!(Evaluator::new(s, EvalContext::user("u")).detail(PREMIUM).reason, Reason::Global);
}

#[test]
fn evaluate_all_agrees_with_reads_by_key() {
    let mut records = vec![
        FlagRecord { enabled: false, ..FlagRecord::new("off", Value::Bool(true)) },
        FlagRecord::new("plain", Value::Int(7)),
        flag(
            "rule",
            Value::Bool(false),
            json!({"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}], "value": true}]}),
        ),
        flag(
            "split",
            Value::Bool(false),
            json!({"split": {"variations": [{"value": true, "weight": 5000}, {"value": false, "weight": 5000}]}}),
        ),
        flag(
            "list",
            Value::Bool(false),
            json!({"rules": [{"clauses": [{"attribute": "user_id", "op": "in", "values": ["u1", "u3"]}], "value": true}]}),
        ),
    ];
    records.push(FlagRecord::new("overridden", Value::Bool(false)));
    let s = Arc::new(Snapshot::from_state(&StoreState {
        seq: 1,
        flags: records,
        overrides: vec![ff_core::OverrideRecord {
            key: "overridden".into(),
            user_id: "u2".into(),
            value: json!(true),
        }],
        ..Default::default()
    }));
    let mut reasons = std::collections::HashSet::new();
    for i in 0..50 {
        let ctx = EvalContext::user(format!("u{i}"))
            .with_attribute("plan", if i % 2 == 0 { "pro" } else { "free" });
        let all: Vec<_> = Evaluator::new(s.clone(), ctx.clone())
            .all()
            .map(|(f, v, r)| (f.key().to_owned(), v.clone(), r))
            .collect();
        assert_eq!(all.len(), 6);
        for (key, value, reason) in all {
            assert_eq!(s.evaluate_key(&key, &ctx), Some((value, reason)), "{key} for u{i}");
            reasons.insert(format!("{key} {reason}"));
        }
    }
    for expected in
        ["off disabled", "plain global", "rule rule 0", "rule global", "split split", "list rule 0"]
    {
        assert!(reasons.contains(expected), "{expected} never seen: {reasons:?}");
    }
    assert!(reasons.contains("overridden override") && reasons.contains("overridden global"));
}
