//! The refreshing Source: start-up, propagation, failure behaviour, saved snapshots.

#![cfg(feature = "sqlite")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ff_core::{EvalContext, Evaluator, Flag};
use ff_store::{
    FlagReader, FlagWriter, MemoryStore, Mutation, Origin, Source, SqlStore, Store, StoreError, Write,
};

#[path = "support/hooked.rs"]
mod hooked;
use hooked::Hooked;

const LEAD: Flag<i64> = Flag::new("LEAD", 24).range(0, 1000);
const CALENDAR: Flag<bool> = Flag::new("CALENDAR", false);
const PATIENCE: Duration = Duration::from_secs(10);

fn w(m: Mutation) -> Write {
    Write::new("test", m)
}

fn get<T: ff_core::FlagType>(source: &Source, flag: Flag<T>, user: &str) -> T {
    Evaluator::new(source.snapshot(), EvalContext::user(user)).get(flag)
}

fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("ff.db").display())
}

fn quick(store: impl Store) -> ff_store::SourceBuilder {
    Source::builder(store)
        .declare([LEAD.decl(), CALENDAR.decl()])
        .poll_interval(Duration::from_millis(100))
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(200))
        // Generous: a reachable store returns as soon as it is loaded, even on a busy machine.
        .startup_timeout(Duration::from_secs(5))
}

/// Unreachable stores: start-up gives up quickly.
const SHORT: Duration = Duration::from_millis(500);

#[tokio::test]
async fn start_syncs_declarations_and_serves_the_store() {
    let store = MemoryStore::new();
    store
        .write(w(Mutation::CreateFlag {
            def: ff_core::FlagDef {
                key: "LEGACY".into(),
                value_type: ff_core::ValueType::Bool,
                value: true.into(),
                enabled: true,
                off_value: None,
                description: String::new(),
                schema: Default::default(),
                meta: Default::default(),
                targeting: Default::default(),
            },
            if_missing: false,
        }))
        .await
        .unwrap();
    let source = quick(store.clone()).attributes(["plan", "org_id"]).start().await;
    let status = source.status();
    assert_eq!((status.origin, status.version, status.is_stale()), (Origin::Store, 3, false));
    assert_eq!(store.attributes().await.unwrap(), ["org_id", "plan"], "declared attributes synced");
    let report = source.sync_report().unwrap();
    assert_eq!(report.created, ["LEAD", "CALENDAR"]);
    assert_eq!(report.undeclared, ["LEGACY"]);
    assert_eq!(get(&source, LEAD, "u"), 24);

    // Changes arrive (in-process signal), overrides included, in order.
    store.write(w(Mutation::set_value("LEAD", 48))).await.unwrap();
    store.write(w(Mutation::set_override("LEAD", "tester", 0))).await.unwrap();
    assert!(source.wait_for_version(5, PATIENCE).await);
    assert_eq!((get(&source, LEAD, "u"), get(&source, LEAD, "tester")), (48, 0));
    store.write(w(Mutation::delete_override("LEAD", "tester"))).await.unwrap();
    store.write(w(Mutation::ArchiveFlag { key: "LEAD".into(), expected_version: None })).await.unwrap();
    assert!(source.wait_for_version(7, PATIENCE).await);
    assert_eq!(get(&source, LEAD, "tester"), 24);
    assert!(source.snapshot().flag("LEAD").is_none());
    // The incrementally built snapshot equals a fresh full load.
    assert_eq!(
        source.snapshot().to_state(),
        ff_core::Snapshot::from_state(&store.load().await.unwrap()).to_state()
    );
}

#[tokio::test]
async fn sqlite_write_from_another_connection_propagates_by_poll() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let source = quick(SqlStore::connect_lazy(&url).unwrap()).start().await;
    assert_eq!(source.status().origin, Origin::Store);
    // A second pool on the same file, as the CLI or another process would have.
    let other = SqlStore::connect(&url).await.unwrap();
    other.write(w(Mutation::set_override("CALENDAR", "tester", true))).await.unwrap();
    assert!(source.wait_for_version(3, PATIENCE).await);
    assert!(get(&source, CALENDAR, "tester"));
    assert!(!get(&source, CALENDAR, "alice"));
}

#[tokio::test]
async fn unreachable_at_start_serves_defaults_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-yet");
    let url = sqlite_url(&missing);
    let started = Instant::now();
    let source = quick(SqlStore::connect_lazy(&url).unwrap()).startup_timeout(SHORT).start().await;
    // Start-up is bounded by the timeout (generous margin for a loaded machine).
    assert!(started.elapsed() < Duration::from_secs(5));
    let status = source.status();
    assert_eq!(status.origin, Origin::Defaults);
    assert!(status.is_stale());
    assert!(status.last_error.is_some());
    assert_eq!(get(&source, LEAD, "u"), 24);
    // The database appears: the background retries pick it up.
    std::fs::create_dir(&missing).unwrap();
    let other = SqlStore::connect(&url).await.unwrap();
    ff_store::sync(&other, &[LEAD.decl()], &Default::default()).await.unwrap();
    let written = other.write(w(Mutation::set_value("LEAD", 12))).await.unwrap().unwrap();
    // The source's own retry may sync and load before or after that write: wait for it.
    let mut rx = source.subscribe();
    tokio::time::timeout(PATIENCE, rx.wait_for(|s| s.origin == Origin::Store && s.version >= written.seq))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(get(&source, LEAD, "u"), 12);
    assert!(!source.status().is_stale());
}

#[tokio::test]
async fn saved_snapshot_is_served_while_the_store_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snapshot.json");
    let store = MemoryStore::new();
    let source = quick(store.clone()).snapshot_file(&file).start().await;
    store.write(w(Mutation::set_value("LEAD", 36))).await.unwrap();
    store.write(w(Mutation::set_override("CALENDAR", "tester", true))).await.unwrap();
    assert!(source.wait_for_version(4, PATIENCE).await);
    let deadline = Instant::now() + PATIENCE;
    while !std::fs::read_to_string(&file).is_ok_and(|s| s.contains("\"seq\":4")) {
        assert!(Instant::now() < deadline, "snapshot file not written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(source);

    // Next start: the store is unreachable.
    let down = SqlStore::connect_lazy(&sqlite_url(&dir.path().join("missing"))).unwrap();
    let source = quick(down).snapshot_file(&file).startup_timeout(SHORT).start().await;
    let status = source.status();
    assert_eq!((status.origin, status.version), (Origin::SavedFile, 4));
    assert!(status.is_stale());
    assert_eq!(get(&source, LEAD, "u"), 36);
    assert!(get(&source, CALENDAR, "tester"));
}

#[tokio::test]
async fn corrupt_or_truncated_snapshot_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    for content in [
        "{not json",
        "",
        r#"{"format":"ff-snapshot/99","state":{"seq":1,"flags":[],"overrides":[]}}"#,
        // The right format, a state that does not parse or ends early.
        r#"{"format":"ff-snapshot/1","state":{"seq":1,"flags":[{"key":"LEAD"}],"overrides":[]}}"#,
        r#"{"format":"ff-snapshot/1","state":{"seq":1,"flags":[],"overrides":[]"#,
    ] {
        let file = dir.path().join("snapshot.json");
        std::fs::write(&file, content).unwrap();
        let down = SqlStore::connect_lazy(&sqlite_url(&dir.path().join("missing"))).unwrap();
        let source =
            quick(down).snapshot_file(&file).startup_timeout(Duration::from_millis(50)).start().await;
        assert_eq!(source.status().origin, Origin::Defaults, "{content}");
        assert_eq!(get(&source, LEAD, "u"), 24);
    }
}

/// A store that can be switched off, to lose it while running.
fn switchable() -> (Hooked, Arc<AtomicBool>) {
    let down = Arc::new(AtomicBool::new(false));
    let flag = down.clone();
    let store = Hooked::new(move |_| {
        if flag.load(Ordering::SeqCst) { Err(StoreError::Corrupt("switched off".into())) } else { Ok(()) }
    });
    (store, down)
}

#[tokio::test]
async fn store_lost_while_running_keeps_the_last_good_snapshot() {
    let (store, down) = switchable();
    let source = quick(store.clone()).start().await;
    store.inner.write(w(Mutation::set_value("LEAD", 5))).await.unwrap();
    assert!(source.wait_for_version(3, PATIENCE).await);
    down.store(true, Ordering::SeqCst);
    let mut rx = source.subscribe();
    tokio::time::timeout(PATIENCE, rx.wait_for(|s| s.last_error.is_some())).await.unwrap().unwrap();
    let status = source.status();
    assert!(status.is_stale());
    assert_eq!(status.origin, Origin::Store);
    let age = status.age().unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(source.status().age().unwrap() > age, "age grows while the store is away");
    assert_eq!(get(&source, LEAD, "u"), 5, "last good value");
    // A change made meanwhile arrives once the store is back.
    store.inner.write(w(Mutation::set_value("LEAD", 6))).await.unwrap();
    down.store(false, Ordering::SeqCst);
    tokio::time::timeout(PATIENCE, rx.wait_for(|s| s.last_error.is_none() && s.version >= 4))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(get(&source, LEAD, "u"), 6);
}

/// A batch that straddles the end of a page of changes is still installed whole.
#[tokio::test]
async fn a_batch_across_a_page_boundary_is_never_served_in_part() {
    const A: Flag<bool> = Flag::new("PAIR_A", false);
    const B: Flag<bool> = Flag::new("PAIR_B", false);
    let down = Arc::new(AtomicBool::new(false));
    let split = Arc::new(AtomicBool::new(false));
    let cell: Arc<std::sync::OnceLock<Source>> = Arc::default();
    let store = {
        let (down, split, cell) = (down.clone(), split.clone(), cell.clone());
        // Before every store call, check the snapshot being served.
        Hooked::new(move |_| {
            if let Some(source) = cell.get()
                && get(source, A, "u") != get(source, B, "u")
            {
                split.store(true, Ordering::SeqCst);
            }
            if down.load(Ordering::SeqCst) { Err(StoreError::Corrupt("held".into())) } else { Ok(()) }
        })
    };
    let source = quick(store.clone()).declare([A.decl(), B.decl()]).start().await;
    cell.set(source.clone()).unwrap();
    let v = source.status().version;
    // Hold the Source back while 999 single changes and a batch of two pile up: the
    // first page (1,000 changes) ends after the batch's first change.
    down.store(true, Ordering::SeqCst);
    for i in 0..999 {
        store.inner.write(w(Mutation::set_value("LEAD", i % 2))).await.unwrap();
    }
    let batch = ff_store::Batch::new(
        "test",
        vec![Mutation::set_value("PAIR_A", true), Mutation::set_value("PAIR_B", true)],
    );
    let changes = store.inner.write_batch(batch).await.unwrap();
    assert_eq!(changes[0].seq, v + 1000);
    down.store(false, Ordering::SeqCst);
    assert!(source.wait_for_version(v + 1001, PATIENCE).await);
    assert!((get(&source, A, "u"), get(&source, B, "u")) == (true, true));
    assert!(!split.load(Ordering::SeqCst), "a snapshot served PAIR_A and PAIR_B differently");
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    #[tokio::test]
    async fn notify_delivers_changes_without_waiting_for_the_poll() {
        let Some(url) = ff_store::postgres_test_database().await else {
            return;
        };
        // Poll once a minute: only NOTIFY can deliver within the test's patience.
        let source =
            quick(SqlStore::connect_lazy(&url).unwrap()).poll_interval(Duration::from_secs(60)).start().await;
        assert_eq!(source.status().origin, Origin::Store);
        let other = SqlStore::connect(&url).await.unwrap();
        // Give the listener a moment to subscribe before the first write.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (i, value) in [1, 2, 3].into_iter().enumerate() {
            other.write(w(Mutation::set_value("LEAD", value))).await.unwrap();
            assert!(
                source.wait_for_version(3 + i as u64, Duration::from_secs(10)).await,
                "change {value} not delivered"
            );
            assert_eq!(get(&source, LEAD, "u"), value);
        }
        other.close().await;
    }

    #[tokio::test]
    async fn database_missing_at_start_then_created() {
        let Some(url) = ff_store::postgres_test_database().await else {
            return;
        };
        // The database does not exist yet: derive a name and create it later.
        let (base, _) = url.rsplit_once('/').unwrap();
        let name = format!("ff_late_{}", std::process::id());
        let late = format!("{base}/{name}");
        let source = quick(SqlStore::connect_lazy(&late).unwrap()).startup_timeout(SHORT).start().await;
        assert_eq!(source.status().origin, Origin::Defaults);
        assert_eq!(get(&source, LEAD, "u"), 24);
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap();
        sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {name}").as_str()).await.unwrap();
        let mut rx = source.subscribe();
        tokio::time::timeout(PATIENCE, rx.wait_for(|s| s.origin == Origin::Store)).await.unwrap().unwrap();
        let other = SqlStore::connect(&late).await.unwrap();
        other.write(w(Mutation::set_value("LEAD", 99))).await.unwrap();
        assert!(source.wait_for_version(3, PATIENCE).await);
        assert_eq!(get(&source, LEAD, "u"), 99);
        other.close().await;
        drop(source);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ =
            sqlx::Executor::execute(&mut admin, format!("DROP DATABASE {name} WITH (FORCE)").as_str()).await;
    }
}

#[tokio::test]
async fn a_restored_flag_comes_back_with_its_overrides() {
    let store = MemoryStore::new();
    let source = quick(store.clone()).start().await;
    store.write(w(Mutation::set_override("LEAD", "tester", 1))).await.unwrap();
    store.write(w(Mutation::ArchiveFlag { key: "LEAD".into(), expected_version: None })).await.unwrap();
    assert!(source.wait_for_version(4, PATIENCE).await);
    assert_eq!(get(&source, LEAD, "tester"), 24);
    store.write(w(Mutation::RestoreFlag { key: "LEAD".into() })).await.unwrap();
    assert!(source.wait_for_version(5, PATIENCE).await);
    assert_eq!(get(&source, LEAD, "tester"), 1);
}

#[cfg(feature = "redis")]
mod redis_propagation {
    use super::*;

    /// Two instances, each with its own Redis connections: a write through one reaches
    /// the other by pub/sub (polling is set to a minute), also after its subscription
    /// was killed, with the write made meanwhile not lost.
    #[tokio::test]
    async fn changes_reach_other_instances_by_pub_sub() {
        let Some(a) = ff_store::redis_test_store().await else { return };
        let url = std::env::var("FF_TEST_REDIS_URL").unwrap();
        let b = ff_store::RedisStore::connect_lazy(&url).unwrap().with_prefix(a.prefix());
        let start = |s: ff_store::RedisStore| {
            Source::builder(s)
                .declare([LEAD.decl()])
                .poll_interval(Duration::from_secs(60))
                .retry_backoff(Duration::from_millis(20), Duration::from_millis(200))
                .start()
        };
        let (sa, sb) = (start(a.clone()).await, start(b.clone()).await);
        let mut times = Vec::new();
        for i in 0..20 {
            let t = Instant::now();
            a.write(w(Mutation::set_value("LEAD", 100 + i))).await.unwrap();
            let want = a.latest_seq().await.unwrap();
            assert!(sb.wait_for_version(want, PATIENCE).await, "instance b never saw seq {want}");
            times.push(t.elapsed());
            assert_eq!(get(&sb, LEAD, "u"), 100 + i);
        }
        times.sort();
        eprintln!("redis pub/sub propagation over 20 writes: p50 {:?}, max {:?}", times[10], times[19]);
        assert!(sa.wait_for_version(a.latest_seq().await.unwrap(), PATIENCE).await);
        // Kill every pub/sub connection, write meanwhile: both still arrive, by the resubscription.
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let killed: i64 =
            redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async(&mut c).await.unwrap();
        assert!(killed >= 1, "killed {killed}");
        b.write(w(Mutation::set_value("LEAD", 7))).await.unwrap();
        b.write(w(Mutation::set_value("LEAD", 8))).await.unwrap();
        let want = b.latest_seq().await.unwrap();
        let t = Instant::now();
        assert!(sa.wait_for_version(want, PATIENCE).await);
        eprintln!("after the subscription was killed: current within {:?}", t.elapsed());
        assert_eq!(get(&sa, LEAD, "u"), 8);
    }
}

/// Requests on one thread share a lease on the current snapshot; a change gives the
/// next request a lease on the new one; each source has its own.
#[tokio::test]
async fn leases_follow_the_current_snapshot_per_source() {
    let store = MemoryStore::new();
    let source = quick(store.clone()).start().await;
    let other = quick(MemoryStore::new()).start().await;
    let first = source.lease();
    assert!(Arc::ptr_eq(&first, &source.lease()), "one lease per thread and snapshot");
    assert!(Arc::ptr_eq(first.snapshot(), &source.snapshot()));
    assert!(!Arc::ptr_eq(&first, &other.lease()), "each source its own");
    let version = source.snapshot().version();
    store.write(w(Mutation::set_value("LEAD", 48))).await.unwrap();
    assert!(source.wait_for_version(version + 1, PATIENCE).await);
    let next = source.lease();
    assert!(!Arc::ptr_eq(&first, &next));
    assert_eq!(next.snapshot().version(), version + 1);
    let read = |lease| Evaluator::leased(lease, EvalContext::user("u1")).get(LEAD);
    assert_eq!((read(first), read(next)), (24, 48), "a request keeps the snapshot it started with");
    // Another thread leases on its own.
    let there = std::thread::scope(|s| s.spawn(|| source.lease()).join().unwrap());
    assert!(!Arc::ptr_eq(&there, &source.lease()));
    assert!(Arc::ptr_eq(there.snapshot(), source.lease().snapshot()));
}

/// Requests read the shared config from their thread's own copy (a count only that
/// thread writes), equal to the snapshot's; one-off evaluators read the snapshot's.
#[tokio::test]
async fn each_thread_reads_its_own_copy_of_the_shared_config() {
    struct Lead(i64);
    impl ff_core::Config for Lead {
        fn from_flags(f: &ff_core::ConfigReader<'_>) -> Self {
            Lead(f.get(LEAD))
        }
    }
    let store = MemoryStore::new();
    let source = quick(store.clone()).start().await;
    store.write(w(Mutation::set_override("LEAD", "u2", 1))).await.unwrap();
    assert!(source.wait_for_version(store.load().await.unwrap().seq, PATIENCE).await);
    let read = |lease, user| Evaluator::leased(lease, EvalContext::user(user)).config::<Lead>();
    let (a, b) = (read(source.lease(), "u1"), read(source.lease(), "u3"));
    assert!(Arc::ptr_eq(&a, &b), "one copy per thread and snapshot");
    let there = std::thread::scope(|s| s.spawn(|| read(source.lease(), "u1")).join().unwrap());
    assert!(!Arc::ptr_eq(&a, &there), "another thread has its own");
    assert_eq!((a.0, there.0), (24, 24));
    let one_off = || Evaluator::new(source.snapshot(), EvalContext::user("u1")).config::<Lead>();
    let (c, d) = (one_off(), one_off());
    assert!(Arc::ptr_eq(&c, &d) && !Arc::ptr_eq(&c, &a), "the snapshot's own");
    assert_eq!(c.0, 24);
    // A user who overrides a flag it reads gets a config of their own, per request.
    let own = read(source.lease(), "u2");
    assert_eq!(own.0, 1);
    assert!(!Arc::ptr_eq(&own, &read(source.lease(), "u2")));
    // A change: a new lease, a new copy.
    let version = source.snapshot().version();
    store.write(w(Mutation::set_value("LEAD", 48))).await.unwrap();
    assert!(source.wait_for_version(version + 1, PATIENCE).await);
    assert_eq!(read(source.lease(), "u1").0, 48);
    assert_eq!(a.0, 24, "a request keeps what it read");
}

/// A dropped source's lease is let go on the thread's next new lease.
#[tokio::test]
async fn a_dropped_sources_lease_goes() {
    let gone = quick(MemoryStore::new()).start().await;
    let held = Arc::downgrade(gone.lease().snapshot());
    drop(gone);
    let other = quick(MemoryStore::new()).start().await;
    let _ = other.lease();
    // The refresh task may still hold the snapshot for a moment after the drop.
    let start = Instant::now();
    while held.strong_count() > 0 && start.elapsed() < PATIENCE {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let _ = quick(MemoryStore::new()).start().await.lease();
    }
    assert_eq!(held.strong_count(), 0, "the dropped source's snapshot was let go");
}

#[tokio::test]
async fn two_different_declarations_of_one_key_stop_the_start_naming_both() {
    const A: ff_core::Flag<i64> = ff_core::Flag::new("SAME", 24);
    const B: ff_core::Flag<bool> = ff_core::Flag::new("SAME", false);
    let e = Source::builder(MemoryStore::new()).declare([A.decl(), B.decl()]).try_start().await.unwrap_err();
    let said = e.to_string();
    assert!(
        said.contains("flag SAME is declared twice, differently") && said.contains("(int = 24)"),
        "{said}"
    );
    assert!(said.contains("(bool = false)"), "{said}");
    // The same declaration twice is one.
    let ok = Source::builder(MemoryStore::new()).declare([A.decl(), A.decl()]).try_start().await.unwrap();
    assert_eq!(ok.sync_report().unwrap().created, ["SAME"]);
}

#[tokio::test]
#[should_panic(expected = "ff: flag SAME is declared twice, differently")]
async fn start_panics_on_the_same_conflict() {
    const A: ff_core::Flag<i64> = ff_core::Flag::new("SAME", 24);
    const B: ff_core::Flag<i64> = ff_core::Flag::new("SAME", 48);
    Source::builder(MemoryStore::new()).declare([A.decl(), B.decl()]).start().await;
}

#[tokio::test]
async fn each_state_puts_the_flags_back_even_when_a_state_fails() {
    use ff_core::{Flag, States};
    const ON: Flag<bool> = Flag::new("ON", false);
    let flags = ff_store::TestFlags::new();
    flags.set(ON, true);
    let f = flags.clone();
    let failed = tokio::spawn(async move {
        f.each_state(&States::new().flag(ON), async |case| assert!(case.get(ON), "off fails")).await;
    })
    .await;
    assert!(failed.is_err(), "the failing state fails the test");
    let served = flags.source().snapshot().evaluate(&ON, &ff_core::EvalContext::anonymous()).value;
    assert!(served, "as set before each_state");
}
