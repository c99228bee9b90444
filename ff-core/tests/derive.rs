//! `#[derive(Config)]`: keys, declarations, nesting, integer widths, rules between
//! settings at read time, and declarations found at link time.

use std::sync::Arc;

use ff_core::{
    Config, EvalContext, Evaluator, FlagKind, FlagRecord, OverrideRecord, RuleOp, Settings, Snapshot,
    StoreState, Value, ValueType,
};
use serde_json::json;

/// Payments settings, nested in [`Booking`].
#[derive(Config, Debug, Clone, PartialEq)]
#[ff(prefix = "PAY_")]
struct Payments {
    /// Credits accepted
    #[ff(default = true, kind = kill_switch, owner = "payments")]
    credits: bool,
    /// Currency of prices
    #[ff(default = "usd", one_of = ["usd", "eur"])]
    currency: String,
}

#[derive(Config, Debug, Clone, PartialEq)]
#[ff(rule = "rate_min <= rate_max", rule = "max_party > min_party")]
struct Booking {
    /// Hours between booking
    /// and start
    #[ff(default = 24, max = 24 * 365)]
    lead_time_hours: u16,
    /// Lowest hourly rate (USD)
    #[ff(default = 60.0, min = 0.0, max = 10_000.0)]
    rate_min: f64,
    /// Highest hourly rate (USD)
    #[ff(default = 500.0, min = 0.0, max = 10_000.0, key = "CAPTIONER_RATE_MAX")]
    rate_max: f64,
    #[ff(default = 1)]
    min_party: u32,
    #[ff(default = 8)]
    max_party: u32,
    #[ff(default = r#"{"theme": "light"}"#)]
    page: serde_json::Value,
    #[ff(default = 0)]
    tz_offset: i8,
    #[ff(nested)]
    payments: Payments,
}

fn state(values: &[(&str, Value)], overrides: &[(&str, &str, serde_json::Value)]) -> Arc<Snapshot> {
    let flags = values.iter().map(|(k, v)| FlagRecord::new(*k, v.clone())).collect();
    let overrides = overrides
        .iter()
        .map(|(k, u, v)| OverrideRecord { key: (*k).into(), user_id: (*u).into(), value: v.clone() })
        .collect();
    Arc::new(Snapshot::from_state(&StoreState { seq: 1, flags, overrides, ..Default::default() }))
}

fn read(snapshot: &Arc<Snapshot>, user: &str) -> Arc<Booking> {
    Evaluator::new(snapshot.clone(), EvalContext::user(user)).config::<Booking>()
}

#[test]
fn each_field_is_a_typed_key_with_its_declaration() {
    assert_eq!(Booking::LEAD_TIME_HOURS.key(), "LEAD_TIME_HOURS");
    assert_eq!(Booking::RATE_MAX.key(), "CAPTIONER_RATE_MAX", "a key given per field wins");
    assert_eq!(Payments::CREDITS.key(), "PAY_CREDITS", "the struct's prefix");
    let decls = Booking::declarations();
    let keys: Vec<&str> = decls.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "LEAD_TIME_HOURS",
            "RATE_MIN",
            "CAPTIONER_RATE_MAX",
            "MIN_PARTY",
            "MAX_PARTY",
            "PAGE",
            "TZ_OFFSET",
            "PAY_CREDITS",
            "PAY_CURRENCY"
        ],
        "in field order, the nested struct's where it sits"
    );
    let lead = &decls[0];
    assert_eq!(lead.value_type, ValueType::Int);
    assert_eq!(lead.default, Value::Int(24));
    assert_eq!(lead.description, "Hours between booking and start", "the doc comment, one line");
    assert_eq!(lead.kind, Some(FlagKind::Config), "settings are config unless said otherwise");
    assert_eq!(
        (lead.schema.min.clone(), lead.schema.max.clone()),
        (Some(0.into()), Some(8760.into())),
        "u16's floor, the declared max"
    );
    let tz = &decls[6];
    assert_eq!(
        (tz.schema.min.clone(), tz.schema.max.clone()),
        (Some((-128).into()), Some(127.into())),
        "i8's range"
    );
    let max_party = &decls[4];
    assert_eq!(
        (max_party.schema.min.clone(), max_party.schema.max.clone()),
        (Some(0.into()), Some(u32::MAX.into()))
    );
    assert_eq!(decls[7].kind, Some(FlagKind::KillSwitch));
    assert_eq!(decls[7].owner, "payments");
    assert_eq!(decls[8].schema.allowed, vec![json!("usd"), json!("eur")]);
    assert_eq!(decls[5].value_type, ValueType::Json);
    for d in &decls {
        d.validate().unwrap_or_else(|e| panic!("{}: {e}", d.key));
    }
    let rules: Vec<String> = Booking::rules().iter().map(ToString::to_string).collect();
    assert_eq!(rules, ["RATE_MIN <= CAPTIONER_RATE_MAX", "MAX_PARTY > MIN_PARTY"]);
    assert_eq!(Booking::rules()[0].op, RuleOp::Le);
    // Each rule is stored with both its settings, from each one's side: writes enforce it.
    let rule = |op, other: &str| ff_core::SchemaRule { op, other: other.into() };
    assert_eq!(decls[1].schema.rules, [rule(RuleOp::Le, "CAPTIONER_RATE_MAX")]);
    assert_eq!(decls[2].schema.rules, [rule(RuleOp::Ge, "RATE_MIN")]);
    assert_eq!(decls[3].schema.rules, [rule(RuleOp::Lt, "MAX_PARTY")]);
    assert_eq!(decls[4].schema.rules, [rule(RuleOp::Gt, "MIN_PARTY")]);
    assert!(decls[0].schema.rules.is_empty());
}

#[test]
fn the_struct_reads_each_setting_and_its_nested_structs() {
    let defaults = Booking::defaults();
    assert_eq!(*Evaluator::defaults().config::<Booking>(), defaults, "no store: the code defaults");
    assert_eq!(defaults.page, json!({"theme": "light"}));
    assert_eq!(defaults.payments, Payments { credits: true, currency: "usd".into() });
    let snap = state(
        &[
            ("LEAD_TIME_HOURS", Value::Int(48)),
            ("CAPTIONER_RATE_MAX", Value::Float(900.0)),
            ("PAY_CREDITS", Value::Bool(false)),
            ("PAY_CURRENCY", Value::String("eur".into())),
        ],
        &[("LEAD_TIME_HOURS", "tester", json!(0))],
    );
    let c = read(&snap, "someone");
    assert_eq!((c.lead_time_hours, c.rate_max, c.rate_min), (48, 900.0, 60.0));
    assert_eq!(c.payments, Payments { credits: false, currency: "eur".into() });
    assert_eq!(read(&snap, "tester").lead_time_hours, 0, "a user's override");
    // Typed keys read alone, as `Current::get` does.
    let e = Evaluator::new(snap.clone(), EvalContext::user("someone"));
    assert_eq!(e.get(Booking::LEAD_TIME_HOURS), 48u16);
    assert_eq!(e.get(Payments::CURRENCY), "eur");
}

#[test]
fn a_stored_integer_outside_the_fields_type_serves_the_default() {
    let snap = state(
        &[
            ("LEAD_TIME_HOURS", Value::Int(70_000)),
            ("TZ_OFFSET", Value::Int(-3)),
            ("MIN_PARTY", Value::Int(-1)),
        ],
        &[],
    );
    let e = Evaluator::new(snap, EvalContext::user("u"));
    let lead = e.detail(Booking::LEAD_TIME_HOURS);
    assert_eq!((lead.value, lead.reason), (24, ff_core::Reason::Invalid), "70,000 is no u16");
    assert_eq!(e.get(Booking::TZ_OFFSET), -3i8, "a negative i8 is one");
    assert_eq!(e.detail(Booking::MIN_PARTY).reason, ff_core::Reason::Invalid, "-1 is no u32");
}

#[test]
fn values_that_break_a_rule_serve_the_code_defaults_of_the_whole_struct() {
    ff_core::take_broken_rules();
    let snap = state(
        &[
            ("RATE_MIN", Value::Float(600.0)),
            ("CAPTIONER_RATE_MAX", Value::Float(500.0)),
            ("LEAD_TIME_HOURS", Value::Int(48)),
        ],
        &[("RATE_MIN", "tester", json!(1.0))],
    );
    assert_eq!(
        *read(&snap, "someone"),
        Booking::defaults(),
        "600 > 500: every field its default, lead time too"
    );
    let tester = read(&snap, "tester");
    assert_eq!((tester.rate_min, tester.lead_time_hours), (1.0, 48), "the tester's own values keep the rule");
    let broken = ff_core::take_broken_rules();
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert_eq!(
        (broken[0].0, broken[0].1.to_string()),
        ("Booking", "RATE_MIN <= CAPTIONER_RATE_MAX".to_owned())
    );
    assert!(broken[0].2 >= 1);
    // The rule is checked on each user's values with their overrides.
    let snap = state(&[], &[("CAPTIONER_RATE_MAX", "cheap", json!(10.0))]);
    assert_eq!(*read(&snap, "cheap"), Booking::defaults());
    assert_eq!(read(&snap, "other").rate_max, 500.0);
    let b = Booking { rate_min: 600.0, ..Booking::defaults() }.broken_rule().expect("broken");
    assert_eq!(
        b.to_string(),
        "Booking: rule RATE_MIN <= CAPTIONER_RATE_MAX is broken: RATE_MIN is 600.0, CAPTIONER_RATE_MAX is 500.0"
    );
    // A strict rule.
    let b = Booking { max_party: 1, ..Booking::defaults() }.broken_rule().expect("1 > 1 is false");
    assert_eq!(b.rule.to_string(), "MAX_PARTY > MIN_PARTY");
}

#[test]
fn declarations_are_found_at_link_time_each_key_once() {
    let found = ff_core::declared().expect("no conflict in this binary");
    for key in ["LEAD_TIME_HOURS", "CAPTIONER_RATE_MAX", "PAY_CREDITS", "PAY_CURRENCY", "NEW_SEARCH"] {
        assert_eq!(
            found.iter().filter(|d| d.key == key).count(),
            1,
            "{key} once, though Payments is also nested"
        );
    }
}

const NEW_SEARCH: ff_core::Flag<bool> = ff_core::Flag::new("NEW_SEARCH", false);
ff_core::declare!(NEW_SEARCH);

#[test]
fn a_key_declared_twice_differently_is_an_error_naming_both_places() {
    let a = ff_core::Flag::<i64>::new("LEAD", 24).decl();
    let b = ff_core::Flag::<i64>::new("LEAD", 48).decl();
    let merged = ff_core::merge_declarations([(a.clone(), "a.rs:1"), (a.clone(), "b.rs:2")]).unwrap();
    assert_eq!(merged, vec![a.clone()], "the same declaration twice is one");
    let e = ff_core::merge_declarations([(a.clone(), "a.rs:1"), (b, "b.rs:2")]).unwrap_err().to_string();
    assert!(e.contains("LEAD") && e.contains("a.rs:1 (int = 24)") && e.contains("b.rs:2 (int = 48)"), "{e}");
    let c = ff_core::Flag::<f64>::new("LEAD", 24.0).decl();
    let e = ff_core::merge_declarations([(a.clone(), "a.rs:1"), (c, "c.rs:3")]).unwrap_err().to_string();
    assert!(e.contains("float = 24"), "{e}");
    // A struct's typed key declared alone too (`declare!(Booking::RATE_MIN)`): one, with the rules.
    let with_rules = Booking::declarations().into_iter().find(|d| d.key == "RATE_MIN").unwrap();
    let alone = Booking::RATE_MIN.decl();
    let merged = ff_core::merge_declarations([(alone, "c.rs:1"), (with_rules.clone(), "d.rs:2")]).unwrap();
    assert_eq!(merged, vec![with_rules]);
    let d = ff_core::Flag::<i64>::new("LEAD", 24).description("other").decl();
    let e = ff_core::merge_declarations([(a, "a.rs:1"), (d, "d.rs:4")]).unwrap_err().to_string();
    assert!(e.contains("other"), "a different description is named too: {e}");
}

#[test]
fn derive_errors_point_at_the_field() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/derive-fail/*.rs");
}

#[test]
fn the_typed_test_builder_sets_each_field_and_nested_structs() {
    let values = ff_core::TestValues::from(
        Booking::test().lead_time_hours(0).rate_min(1.0).payments(Payments::test().currency("eur".into())),
    )
    .set_override(Booking::RATE_MAX, "tester", 2.0);
    let c = values.config::<Booking>();
    assert_eq!((c.lead_time_hours, c.rate_min, c.rate_max), (0, 1.0, 500.0));
    assert_eq!(c.payments.currency, "eur");
    assert!(c.payments.credits, "not set: the code default");
    assert_eq!(values.evaluator("tester").config::<Booking>().rate_max, 2.0);
    // Values that break a rule give the code defaults, in tests as in production.
    assert_eq!(*Booking::test().rate_min(900.0).config::<Booking>(), Booking::defaults());
}

#[test]
fn each_state_runs_every_combination_once() {
    use ff_core::{States, each_state};
    let states = States::new().flag(NEW_SEARCH).values(Booking::LEAD_TIME_HOURS, [0, 24, 48]);
    let mut seen = Vec::new();
    each_state(&states, |case| {
        let e = case.evaluator("someone");
        assert_eq!(e.get(NEW_SEARCH), case.get(NEW_SEARCH));
        assert_eq!(e.config::<Booking>().lead_time_hours, case.get(Booking::LEAD_TIME_HOURS));
        seen.push(case.to_string());
    });
    assert_eq!(
        seen,
        [
            "NEW_SEARCH=false, LEAD_TIME_HOURS=0",
            "NEW_SEARCH=false, LEAD_TIME_HOURS=24",
            "NEW_SEARCH=false, LEAD_TIME_HOURS=48",
            "NEW_SEARCH=true, LEAD_TIME_HOURS=0",
            "NEW_SEARCH=true, LEAD_TIME_HOURS=24",
            "NEW_SEARCH=true, LEAD_TIME_HOURS=48",
        ]
    );
    assert_eq!(States::new().cases().len(), 1, "no flags: one case, the code defaults");
    assert_eq!(States::new().cases()[0].to_string(), "code defaults");
}

#[test]
#[should_panic(expected = "in state NEW_SEARCH=true: the new search is broken")]
fn a_failing_state_is_named() {
    ff_core::each_state(&ff_core::States::new().flag(NEW_SEARCH), |case| {
        assert!(!case.get(NEW_SEARCH), "the new search is broken");
    });
}

/// A setting's enum: stored as its names.
#[derive(ff_core::SettingEnum, Clone, Copy, Debug, PartialEq)]
enum Plan {
    Free,
    #[ff(name = "pro")]
    Pro,
    Enterprise,
}

#[derive(Config, Debug)]
#[allow(dead_code)] // read through its typed keys here
struct Timing {
    /// Lead time
    #[ff(default = "24h", min = "1h", max = "365d")]
    lead: std::time::Duration,
    #[ff(default = Plan::Free)]
    plan: Plan,
    #[ff(default = Plan::Pro, one_of = [Plan::Pro, Plan::Enterprise])]
    paid_plan: Plan,
}

#[test]
fn durations_are_stored_as_written_and_bounded_in_their_own_units() {
    use std::time::Duration;
    let decls = Timing::declarations();
    let lead = &decls[0];
    assert_eq!((lead.value_type, lead.default.clone()), (ValueType::String, Value::String("24h".into())));
    assert_eq!(lead.schema.format, Some(ff_core::ValueFormat::Duration));
    assert_eq!(
        (lead.schema.min.clone(), lead.schema.max.clone()),
        (Some(3600.into()), Some(31_536_000.into()))
    );
    lead.validate().unwrap();
    let check = |v: &str| lead.schema.check(&Value::String(v.into())).map_err(|e| e.to_string());
    assert_eq!(check("90m"), Ok(()));
    assert_eq!(check("1h30m"), Ok(()));
    assert_eq!(check("10m"), Err(r#""10m" is below the minimum "1h""#.to_owned()));
    assert_eq!(check("400d"), Err(r#""400d" is above the maximum "8760h""#.to_owned()));
    assert_eq!(
        check("2 days"),
        Err(r#""2 days" is not a duration like 90m, 48h or 1h30m (units ms, s, m, h, d)"#.to_owned())
    );
    let snap = state(&[("LEAD", Value::String("90m".into()))], &[]);
    assert_eq!(Evaluator::new(snap, EvalContext::user("u")).get(Timing::LEAD), Duration::from_secs(5400));
    let snap = state(&[("LEAD", Value::String("2 days".into()))], &[]);
    let d = Evaluator::new(snap, EvalContext::user("u")).detail(Timing::LEAD);
    assert_eq!((d.value, d.reason), (Duration::from_secs(86_400), ff_core::Reason::Invalid));
    // The typed builder writes the shortest form.
    let t: ff_core::TestValues = Timing::test().lead(Duration::from_secs(5400)).into();
    assert_eq!(t.values().next(), Some(("LEAD", &Value::String("90m".into()))));
}

#[test]
fn enums_are_stored_as_their_names_which_are_their_allowed_values() {
    let decls = Timing::declarations();
    assert_eq!(decls[1].value_type, ValueType::String);
    assert_eq!(decls[1].default, Value::String("Free".into()));
    assert_eq!(decls[1].schema.allowed, vec![json!("Free"), json!("pro"), json!("Enterprise")]);
    assert_eq!(
        decls[2].schema.allowed,
        vec![json!("pro"), json!("Enterprise")],
        "one_of narrows the variants"
    );
    let refused = decls[1].schema.check(&Value::String("Gold".into())).unwrap_err().to_string();
    assert!(refused.contains(r#""Gold" is not one of the allowed values"#), "{refused}");
    let snap =
        state(&[("PLAN", Value::String("pro".into())), ("PAID_PLAN", Value::String("Free".into()))], &[]);
    let e = Evaluator::new(snap, EvalContext::user("u"));
    assert_eq!(e.get(Timing::PLAN), Plan::Pro);
    let paid = e.detail(Timing::PAID_PLAN);
    assert_eq!((paid.value, paid.reason), (Plan::Pro, ff_core::Reason::Invalid), "Free is not a paid plan");
    let snap = state(&[("PLAN", Value::String("Gold".into()))], &[]);
    assert_eq!(Evaluator::new(snap, EvalContext::user("u")).get(Timing::PLAN), Plan::Free);
}

#[test]
fn environment_pins_take_durations_and_enum_names_as_written() {
    let decls = Timing::declarations();
    let env = |lead: &'static str, plan: &'static str| {
        move |name: &str| match name {
            "FF_LEAD" => Some(lead.to_owned()),
            "FF_PLAN" => Some(plan.to_owned()),
            _ => None,
        }
    };
    let (pins, problems) = ff_core::Pins::from_env(&decls, env("90m", "pro"));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(pins.iter().count(), 2);
    let (pins, problems) = ff_core::Pins::from_env(&decls, env("2 days", "Gold"));
    assert_eq!(pins.iter().count(), 0);
    let said: Vec<String> = problems.into_iter().map(|(v, p)| format!("{v}: {p}")).collect();
    assert!(said[0].starts_with("FF_LEAD: ") && said[0].contains("is not a duration like 90m"), "{said:?}");
    assert!(
        said[1].starts_with("FF_PLAN: ") && said[1].contains("not one of the allowed values"),
        "{said:?}"
    );
}

/// A serde type as a setting.
#[derive(serde::Serialize, serde::Deserialize, Default, Debug, PartialEq, Clone)]
struct Banner {
    text: String,
    color: String,
}

#[derive(Config, Debug)]
#[allow(dead_code)] // read through its typed keys here
struct Lists {
    #[ff(default = &["1h", "24h"])]
    reminders: Vec<std::time::Duration>,
    #[ff(default = &[Plan::Free])]
    plans: Vec<Plan>,
    #[ff(default = &[1, 2])]
    seats: Vec<u8>,
    #[ff(default = r#"{"text": "hi", "color": "blue"}"#)]
    banner: ff_core::Json<Banner>,
}

#[test]
fn lists_are_checked_item_by_item_and_serde_types_when_read() {
    use std::time::Duration;
    let decls = Lists::declarations();
    for d in &decls {
        d.validate().unwrap_or_else(|e| panic!("{}: {e}", d.key));
    }
    assert_eq!(decls[0].value_type, ValueType::Json);
    assert_eq!(decls[0].default.to_json(), json!(["1h", "24h"]));
    let items = |i: usize| serde_json::to_value(&decls[i].schema.items).unwrap();
    assert_eq!(items(0), json!({"type": "string", "format": "duration"}));
    assert_eq!(items(1), json!({"type": "string", "allowed": ["Free", "pro", "Enterprise"]}));
    assert_eq!(items(2), json!({"type": "int", "min": 0, "max": 255}));
    let check = |i: usize, v: serde_json::Value| {
        decls[i].schema.check(&Value::from_json(ValueType::Json, &v).unwrap()).map_err(|e| e.to_string())
    };
    assert_eq!(check(0, json!(["90m", "1h30m"])), Ok(()));
    assert_eq!(
        check(0, json!(["1h", "2 days"])),
        Err(r#"item 1: "2 days" is not a duration like 90m, 48h or 1h30m (units ms, s, m, h, d)"#.into())
    );
    assert_eq!(check(2, json!([1, 300])), Err("item 1: 300 is above the maximum 255".into()));
    assert!(
        check(1, json!(["Gold"]))
            .unwrap_err()
            .starts_with(r#"item 0: "Gold" is not one of the allowed values"#)
    );
    assert_eq!(check(2, json!({"a": 1})), Err(r#""{\"a\":1}" is not a list (a JSON array)"#.into()));
    let snap = state(
        &[
            ("REMINDERS", Value::from_json(ValueType::Json, &json!(["90m"])).unwrap()),
            ("PLANS", Value::from_json(ValueType::Json, &json!(["pro", "Enterprise"])).unwrap()),
            ("BANNER", Value::from_json(ValueType::Json, &json!({"text": "sale", "color": "red"})).unwrap()),
        ],
        &[],
    );
    let c = Evaluator::new(snap, EvalContext::user("u")).config::<Lists>();
    assert_eq!(c.reminders, vec![Duration::from_secs(5400)]);
    assert_eq!(c.plans, vec![Plan::Pro, Plan::Enterprise]);
    assert_eq!(c.seats, vec![1, 2]);
    assert_eq!(c.banner.text, "sale");
    let snap = state(&[("BANNER", Value::from_json(ValueType::Json, &json!({"nope": 1})).unwrap())], &[]);
    let b = Evaluator::new(snap, EvalContext::user("u")).detail(Lists::BANNER);
    assert_eq!((b.value.text.as_str(), b.reason), ("hi", ff_core::Reason::Invalid), "the code default");
    let t: ff_core::TestValues = Lists::test().seats(vec![3]).into();
    assert_eq!(t.values().next().map(|(_, v)| v.to_json()), Some(json!([3])));
}
