//! Expiry as evaluation sees it: `serve_default` past `expires_at` serves the code
//! default with reason `Expired`; `warn` keeps serving; permanent flags never expire.

use std::sync::Arc;

use ff_core::{
    EvalContext, Evaluator, ExpiryPolicy, Flag, FlagKind, FlagMeta, FlagRecord, Reason, Snapshot, StoreState,
    Value,
};
use time::macros::datetime;

const CHECKOUT: Flag<bool> = Flag::new("CHECKOUT", false);
const RATE: Flag<i64> = Flag::new("RATE", 60);

fn snapshot(flags: Vec<FlagRecord>) -> Arc<Snapshot> {
    let overrides = vec![ff_core::OverrideRecord {
        key: "CHECKOUT".into(),
        user_id: "tester".into(),
        value: true.into(),
    }];
    Arc::new(Snapshot::from_state(&StoreState { seq: 1, flags, overrides, ..Default::default() }))
}

fn with_meta(key: &str, value: Value, meta: FlagMeta) -> FlagRecord {
    FlagRecord { meta, ..FlagRecord::new(key, value) }
}

#[test]
fn serve_default_past_expiry_serves_the_code_default_to_everyone() {
    let meta = FlagMeta {
        expires_at: Some(datetime!(2026-12-01 00:00 UTC)),
        expiry: ExpiryPolicy::ServeDefault,
        ..FlagMeta::default()
    };
    let s = snapshot(vec![
        with_meta("CHECKOUT", Value::Bool(true), meta.clone()),
        with_meta("RATE", Value::Int(1), FlagMeta { kind: Some(FlagKind::Release), ..meta }),
    ]);
    let at = |user: &str, t| Evaluator::new(s.clone(), EvalContext::user(user)).at(t);
    let before = datetime!(2026-11-30 23:59:59 UTC);
    let after = datetime!(2026-12-01 00:00 UTC);
    assert_eq!(at("alice", before).detail(CHECKOUT).reason, Reason::Global);
    assert!(at("alice", before).get(CHECKOUT));
    assert_eq!(at("tester", before).detail(CHECKOUT).reason, Reason::Override);
    for user in ["alice", "tester"] {
        let d = at(user, after).detail(CHECKOUT);
        assert_eq!((d.value, d.reason), (false, Reason::Expired), "{user}");
        let d = at(user, after).detail(RATE);
        assert_eq!((d.value, d.reason), (60, Reason::Expired), "{user}");
    }
    // Untyped readers do not know the code default: they get the off value.
    let alice = at("alice", after);
    let (f, v, r) = alice.all().find(|(f, ..)| f.key() == "CHECKOUT").unwrap();
    assert_eq!((f.key(), v, r), ("CHECKOUT", &Value::Bool(false), Reason::Expired));
    let alice = at("alice", before);
    let (_, v, r) = alice.all().find(|(f, ..)| f.key() == "CHECKOUT").unwrap();
    assert_eq!((v, r), (&Value::Bool(true), Reason::Global));
}

#[test]
fn warn_policy_and_permanent_flags_keep_serving() {
    let past = datetime!(2020-01-01 00:00 UTC);
    let s = snapshot(vec![
        with_meta("CHECKOUT", Value::Bool(true), FlagMeta { expires_at: Some(past), ..FlagMeta::default() }),
        with_meta(
            "RATE",
            Value::Int(1),
            // Config is permanent: an expiry date with serve_default does nothing.
            FlagMeta { expires_at: Some(past), expiry: ExpiryPolicy::ServeDefault, ..FlagMeta::default() },
        ),
    ]);
    let e = Evaluator::new(s.clone(), EvalContext::user("alice"));
    assert_eq!(e.detail(CHECKOUT).reason, Reason::Global);
    assert!(e.get(CHECKOUT));
    assert_eq!((e.get(RATE), e.detail(RATE).reason), (1, Reason::Global));
    let checkout = s.flag("CHECKOUT").unwrap();
    assert!(checkout.meta.is_expired(checkout.value_type, time::OffsetDateTime::now_utc()));
    let rate = s.flag("RATE").unwrap();
    assert!(!rate.meta.is_expired(rate.value_type, time::OffsetDateTime::now_utc()));
}

#[test]
fn kinds_parse_and_default() {
    for k in FlagKind::ALL {
        assert_eq!(FlagKind::parse(k.as_str()), Some(k));
    }
    assert_eq!(FlagKind::parse("forever"), None);
    assert!(FlagKind::KillSwitch.permanent_by_default() && FlagKind::Config.permanent_by_default());
    assert!(!FlagKind::Release.permanent_by_default() && !FlagKind::Ops.permanent_by_default());
    assert_eq!(ExpiryPolicy::parse("serve_default"), Some(ExpiryPolicy::ServeDefault));
    assert_eq!(ExpiryPolicy::parse("explode"), None);
}
