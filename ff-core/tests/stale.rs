//! Stale rules, each in isolation: expired, not evaluated, one value; and what
//! never is stale (permanent, archived, recently changed).

use ff_core::{
    ExpiryPolicy, FlagKind, FlagMeta, FlagRecord, StaleReason, StaleRules, UsageRow, Value, stale_flags,
};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const NOW: OffsetDateTime = datetime!(2026-11-21 12:00 UTC);

fn flag(key: &str, meta: FlagMeta) -> FlagRecord {
    let long_ago = NOW - Duration::days(60);
    FlagRecord { meta, created_at: long_ago, updated_at: long_ago, ..FlagRecord::new(key, Value::Bool(true)) }
}

fn used(key: &str, days_ago: i64, variant: &str) -> UsageRow {
    let at = NOW - Duration::days(days_ago);
    UsageRow {
        key: key.into(),
        day: at.date(),
        reason: "global".into(),
        variant: variant.into(),
        count: 10,
        last_at: at,
    }
}

fn reasons(flags: &[FlagRecord], usage: &[UsageRow]) -> Vec<(String, Vec<StaleReason>)> {
    stale_flags(flags, usage, StaleRules::default(), NOW).into_iter().map(|s| (s.key, s.reasons)).collect()
}

#[test]
fn each_rule_alone() {
    let both_values = [used("A", 1, "true"), used("A", 2, "false")];
    // Expired, but evaluated and serving two values.
    let expired = flag("A", FlagMeta { expires_at: Some(NOW - Duration::hours(1)), ..FlagMeta::default() });
    assert_eq!(reasons(&[expired], &both_values), [("A".into(), vec![StaleReason::Expired])]);
    // Not expired, last evaluated 8 days ago.
    assert_eq!(
        reasons(&[flag("A", FlagMeta::default())], &[used("A", 8, "true"), used("A", 9, "false")]),
        [("A".into(), vec![StaleReason::NotEvaluated])]
    );
    // Never evaluated at all.
    assert_eq!(
        reasons(&[flag("A", FlagMeta::default())], &[]),
        [("A".into(), vec![StaleReason::NotEvaluated])]
    );
    // Evaluated yesterday, always `true`.
    let one = stale_flags(
        &[flag("A", FlagMeta::default())],
        &[used("A", 1, "true"), used("A", 3, "true")],
        StaleRules::default(),
        NOW,
    );
    assert_eq!(one[0].reasons, [StaleReason::OneValue]);
    assert_eq!(one[0].only_value.as_deref(), Some("true"));
    assert_eq!(one[0].last_evaluated, Some(NOW - Duration::days(1)));
    // Healthy: evaluated, two values, not expired.
    assert!(reasons(&[flag("A", FlagMeta::default())], &both_values).is_empty());
    // Expiry in the future is not stale.
    let later = flag("A", FlagMeta { expires_at: Some(NOW + Duration::days(1)), ..FlagMeta::default() });
    assert!(reasons(&[later], &both_values).is_empty());
}

#[test]
fn permanent_archived_and_recent_flags_are_never_stale() {
    let past = Some(NOW - Duration::days(30));
    let kill =
        flag("KILL", FlagMeta { kind: Some(FlagKind::KillSwitch), expires_at: past, ..FlagMeta::default() });
    let pinned = flag("PINNED", FlagMeta { permanent: Some(true), expires_at: past, ..FlagMeta::default() });
    let config = FlagRecord {
        value_type: ff_core::ValueType::Int,
        value: Value::Int(1),
        off_value: Value::Int(1),
        ..flag(
            "LIMIT",
            FlagMeta { expires_at: past, expiry: ExpiryPolicy::ServeDefault, ..FlagMeta::default() },
        )
    };
    let archived = FlagRecord { archived: true, ..flag("OLD", FlagMeta::default()) };
    let fresh = FlagRecord { updated_at: NOW - Duration::days(2), ..flag("NEW", FlagMeta::default()) };
    // A temporary config flag is judged like any other.
    let temporary_kill = flag(
        "TMP",
        FlagMeta { kind: Some(FlagKind::KillSwitch), permanent: Some(false), ..FlagMeta::default() },
    );
    let got = reasons(&[kill, pinned, config, archived, fresh, temporary_kill], &[]);
    assert_eq!(got, [("TMP".into(), vec![StaleReason::NotEvaluated])]);
}

#[test]
fn windows_are_configurable() {
    let rules = StaleRules { not_evaluated_days: 30, one_value_days: 30 };
    let f = flag("A", FlagMeta::default());
    let usage = [used("A", 8, "true"), used("A", 20, "false")];
    assert!(stale_flags(std::slice::from_ref(&f), &usage, rules, NOW).is_empty());
    assert_eq!(rules.since(NOW), datetime!(2026-10-22 00:00 UTC).date());
    assert_eq!(stale_flags(&[f], &usage, StaleRules::default(), NOW)[0].reasons, [StaleReason::NotEvaluated]);
}
