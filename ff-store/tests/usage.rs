//! Usage counting: what a read records, how counts reach the store (one write per
//! interval, none when idle), and unknown keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ff_core::{EvalContext, Evaluator, Flag, FlagRecord, Snapshot, StoreState, UsageCount, Value};
use ff_store::UsageStore;
use serde_json::json;

#[path = "support/hooked.rs"]
mod hooked;
use hooked::Hooked;

const ON: Flag<bool> = Flag::new("ON", false);
const RATE: Flag<i64> = Flag::new("RATE", 60).range(1, 100);
const AB: Flag<String> = Flag::new("AB", "classic");
const NOWHERE: Flag<bool> = Flag::new("NOWHERE", true);

fn count(counts: &[UsageCount], key: &str, reason: &str, variant: &str) -> u64 {
    counts
        .iter()
        .filter(|c| (c.key.as_str(), c.reason.as_str(), c.variant.as_str()) == (key, reason, variant))
        .map(|c| c.count)
        .sum()
}

#[test]
fn reads_are_counted_by_reason_and_value_or_variant() {
    let ab = FlagRecord {
        targeting: serde_json::from_value(json!({"split": {"variations": [
            {"value": "classic", "weight": 5000}, {"value": "new", "weight": 5000}
        ]}}))
        .unwrap(),
        ..FlagRecord::new("AB", Value::String("classic".into()))
    };
    let state = StoreState {
        seq: 1,
        flags: vec![
            FlagRecord::new("ON", Value::Bool(true)),
            // Out of the declared bounds: served as the code default, reason invalid.
            FlagRecord::new("RATE", Value::Int(500)),
            ab,
        ],
        overrides: vec![ff_core::OverrideRecord {
            key: "ON".into(),
            user_id: "u0".into(),
            value: json!(false),
        }],
        ..Default::default()
    };
    let snapshot = Arc::new(Snapshot::from_state_counted(&state, Arc::default()));
    let mut variants = [0u64; 2];
    for i in 0..100 {
        let e = Evaluator::new(snapshot.clone(), EvalContext::user(format!("u{i}")));
        e.get(ON);
        assert_eq!(e.get(RATE), 60);
        variants[usize::from(e.get(AB) == "new")] += 1;
        e.get(NOWHERE);
    }
    let (counts, unknown) = snapshot.usage().collect();
    assert_eq!(count(&counts, "ON", "global", "true"), 99);
    assert_eq!(count(&counts, "ON", "override", "false"), 1);
    assert_eq!(count(&counts, "RATE", "invalid", "default"), 100);
    assert_eq!(count(&counts, "AB", "split", "variation:0"), variants[0]);
    assert_eq!(count(&counts, "AB", "split", "variation:1"), variants[1]);
    assert!(variants[0] > 20 && variants[1] > 20, "{variants:?}");
    assert_eq!(unknown, [("NOWHERE".to_owned(), 100)]);
    // Collecting takes the counts: the next collection starts from zero.
    let (again, unknown) = snapshot.usage().collect();
    assert!(again.is_empty() && unknown.is_empty(), "{again:?}");
    // A new version of the flag counts into the same counters.
    let next = Snapshot::from_state_counted(&state, snapshot.usage().clone());
    Evaluator::new(Arc::new(next), EvalContext::anonymous()).get(ON);
    assert_eq!(count(&snapshot.usage().collect().0, "ON", "global", "true"), 1);
}

#[tokio::test]
async fn the_source_flushes_counts_once_per_interval_and_not_when_idle() {
    let write_calls = Arc::new(AtomicUsize::new(0));
    let counter = write_calls.clone();
    let store = Arc::new(Hooked::new(move |method| {
        if method == "record_usage" {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }));
    let interval = Duration::from_millis(200);
    let source = ff_store::Source::builder_arc(store.clone())
        .declare([ON.decl()])
        .usage_interval(interval)
        .start()
        .await;
    let e = Evaluator::new(source.snapshot(), EvalContext::user("alice"));
    for _ in 0..1000 {
        e.get(ON);
        e.get(NOWHERE);
    }
    let today = time::OffsetDateTime::now_utc().date();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = store.usage(today).await.unwrap();
        if rows.iter().any(|r| r.key == "ON" && r.count == 1000) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "counts never reached the store: {rows:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let writes = write_calls.load(Ordering::SeqCst);
    assert_eq!(writes, 1, "1,000 reads of two keys make one write");
    let unknown = store.unknown_flags().await.unwrap();
    assert_eq!((unknown[0].key.as_str(), unknown[0].count), ("NOWHERE", 1000));
    // Idle: no reads, no writes.
    tokio::time::sleep(interval * 3).await;
    assert_eq!(write_calls.load(Ordering::SeqCst), writes);
    // More reads are added to the day's total.
    e.get(ON);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !store.usage(today).await.unwrap().iter().any(|r| r.key == "ON" && r.count == 1001) {
        assert!(std::time::Instant::now() < deadline, "second flush never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A flush that fails part-way writes nothing, so the Source's retry counts once.
#[cfg(feature = "sqlite")]
async fn failed_flush_writes_nothing(store: &ff_store::SqlStore, fail: &str, heal: &str) {
    let at = time::macros::datetime!(2026-11-20 10:00 UTC);
    let counts = [UsageCount { key: "ON".into(), reason: "global".into(), variant: "true".into(), count: 5 }];
    let unknown = [("GONE".to_owned(), 3)];
    store.usage(at.date()).await.unwrap();
    sqlx::raw_sql(fail).execute(store.pool()).await.unwrap();
    // The flag's counts go first, then the unknown key's insert fails.
    assert!(store.record_usage(&counts, &unknown, at).await.is_err());
    assert_eq!(store.usage(at.date()).await.unwrap(), []);
    sqlx::raw_sql(heal).execute(store.pool()).await.unwrap();
    store.record_usage(&counts, &unknown, at).await.unwrap();
    let rows = store.usage(at.date()).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.count).collect::<Vec<_>>(), [5], "counted once");
    assert_eq!(store.unknown_flags().await.unwrap()[0].count, 3);
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_usage_flush_is_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    let store = ff_store::SqlStore::connect(&url).await.unwrap();
    let fail =
        "CREATE TRIGGER fail BEFORE INSERT ON ff_unknown_flags BEGIN SELECT RAISE(ABORT, 'refused'); END";
    failed_flush_writes_nothing(&store, fail, "DROP TRIGGER fail").await;
    #[cfg(feature = "postgres")]
    if let Some(url) = ff_store::postgres_test_database().await {
        let store = ff_store::SqlStore::connect(&url).await.unwrap();
        let fail = "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$; \
                    CREATE TRIGGER fail BEFORE INSERT ON ff_unknown_flags FOR EACH ROW EXECUTE FUNCTION refuse()";
        failed_flush_writes_nothing(&store, fail, "DROP TRIGGER fail ON ff_unknown_flags").await;
    }
}
