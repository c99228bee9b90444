//! Test injection: a source whose clones share flags a test flips, and fresh
//! PostgreSQL databases and Redis prefixes for store tests.

use std::sync::{Arc, Mutex, MutexGuard};

use ff_core::{Case, Flag, FlagType, Snapshot, SnapshotBuilder, States, TestValues};

use crate::source::Source;

/// Flags for tests: a [`Source`] without a database whose clones share state,
/// so a test can flip a flag between two requests. Every change is visible to
/// the next snapshot read, synchronously.
#[derive(Debug, Clone)]
pub struct TestFlags {
    builder: Arc<Mutex<SnapshotBuilder>>,
    source: Source,
}

impl Default for TestFlags {
    fn default() -> Self {
        Self::new()
    }
}

impl TestFlags {
    /// No flags set: code defaults everywhere.
    pub fn new() -> Self {
        TestFlags { builder: Arc::default(), source: Source::fixed(Snapshot::empty()) }
    }

    /// The source to give to the layer.
    pub fn source(&self) -> Source {
        self.source.clone()
    }

    fn edit(&self, f: impl FnOnce(SnapshotBuilder) -> SnapshotBuilder) {
        let mut b: MutexGuard<'_, SnapshotBuilder> = self.builder.lock().unwrap_or_else(|p| p.into_inner());
        *b = f(std::mem::take(&mut *b));
        self.source.replace(b.build());
    }

    /// Sets a flag's global value.
    pub fn set<T: FlagType>(&self, flag: Flag<T>, value: T) -> &Self {
        self.edit(|b| b.set(flag, value));
        self
    }

    /// Sets one user's value.
    pub fn set_override<T: FlagType>(&self, flag: Flag<T>, user_id: &str, value: T) -> &Self {
        self.edit(|b| b.set_override(flag, user_id, value));
        self
    }

    /// Removes one user's value.
    pub fn remove_override<T: FlagType>(&self, flag: Flag<T>, user_id: &str) -> &Self {
        self.edit(|b| b.without_override(flag, user_id));
        self
    }

    /// Turns a flag on or off.
    pub fn set_enabled<T: FlagType>(&self, flag: Flag<T>, enabled: bool) -> &Self {
        self.edit(|b| b.enabled(flag, enabled));
        self
    }

    /// Sets `values` on top of what is set: a derived config's typed builder
    /// (`flags.apply(BookingConfig::test().minimum_time_required_before_booking_in_hours(0))`).
    pub fn apply(&self, values: impl Into<TestValues>) -> &Self {
        let values = values.into();
        self.edit(|b| b.with_values(&values));
        self
    }

    /// Runs `body` once per case of `states` (each boolean flag off and on, each
    /// other flag each value listed), with these flags set to the case on top of
    /// what was set before; afterwards the flags are as before. Each case is named
    /// on stderr before it runs, so a failing test shows its state.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use ff_core::{Flag, States};
    /// use ff_store::TestFlags;
    ///
    /// const NEW_CHECKOUT: Flag<bool> = Flag::new("NEW_CHECKOUT", false);
    /// let flags = TestFlags::new();
    /// flags.each_state(&States::new().flag(NEW_CHECKOUT), async |case| {
    ///     let served = flags.source().snapshot().evaluate(&NEW_CHECKOUT, &Default::default()).value;
    ///     assert_eq!(served, case.get(NEW_CHECKOUT));
    /// }).await;
    /// # });
    /// ```
    pub async fn each_state(&self, states: &States, mut body: impl AsyncFnMut(Case)) {
        let before = self.builder.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // The flags are as before even when a case fails (the panic unwinds through here).
        let _restore = Restore { flags: self, before: before.clone() };
        for case in states.cases() {
            eprintln!("ff: in state {case}");
            let values = case.values().clone();
            self.edit(|_| before.clone().with_values(&values));
            body(case).await;
        }
    }

    /// Removes a flag from the snapshot: reads serve the code default.
    pub fn remove<T: FlagType>(&self, flag: Flag<T>) -> &Self {
        self.edit(|b| b.without(flag));
        self
    }
}

/// Puts the flags back as they were when dropped.
struct Restore<'a> {
    flags: &'a TestFlags,
    before: SnapshotBuilder,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let before = std::mem::take(&mut self.before);
        self.flags.edit(|_| before);
    }
}

/// A fresh, empty PostgreSQL database for one test, created next to the one named
/// by `FF_TEST_POSTGRES_URL`. `None` (with a skip notice) when that variable is
/// unset, unless `FF_REQUIRE_POSTGRES=1`, which makes a missing database a failure.
#[cfg(feature = "postgres")]
pub async fn postgres_test_database() -> Option<String> {
    use sqlx::Connection;
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let required = std::env::var("FF_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    let Ok(base) = std::env::var("FF_TEST_POSTGRES_URL") else {
        assert!(!required, "FF_REQUIRE_POSTGRES=1 but FF_TEST_POSTGRES_URL is not set");
        eprintln!(
            "skipping PostgreSQL test: set FF_TEST_POSTGRES_URL=postgres://user:pass@host/db to run it"
        );
        return None;
    };
    let mut admin = match sqlx::PgConnection::connect(&base).await {
        Ok(c) => c,
        Err(e) => {
            assert!(!required, "FF_REQUIRE_POSTGRES=1 but {} is unreachable: {e}", crate::redact(&base));
            eprintln!("skipping PostgreSQL test: {} is unreachable: {e}", crate::redact(&base));
            return None;
        }
    };
    let name = format!(
        "ff_t_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        time::OffsetDateTime::now_utc().unix_timestamp_nanos() % 1_000_000
    );
    sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    let (prefix, rest) = base.rsplit_once('/').unwrap_or((&base, ""));
    let query = rest.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
    Some(format!("{prefix}/{name}{query}"))
}

/// A `RedisStore` with a key prefix no other test uses, on the server named by
/// `FF_TEST_REDIS_URL`. `None` (with a skip notice) when that variable is unset or the
/// server unreachable, unless `FF_REQUIRE_REDIS=1`, which makes either a failure.
#[cfg(feature = "redis")]
pub async fn redis_test_store() -> Option<crate::RedisStore> {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let required = std::env::var("FF_REQUIRE_REDIS").is_ok_and(|v| v == "1");
    let Ok(url) = std::env::var("FF_TEST_REDIS_URL") else {
        assert!(!required, "FF_REQUIRE_REDIS=1 but FF_TEST_REDIS_URL is not set");
        eprintln!("skipping Redis test: set FF_TEST_REDIS_URL=redis://127.0.0.1:6379 to run it");
        return None;
    };
    let prefix = format!(
        "ff_t_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        time::OffsetDateTime::now_utc().unix_timestamp_nanos() % 1_000_000
    );
    let store = crate::RedisStore::connect_lazy(&url).ok()?.with_prefix(prefix);
    if let Err(e) = crate::FlagReader::latest_seq(&store).await {
        assert!(!required, "FF_REQUIRE_REDIS=1 but {url} is unreachable: {e}");
        eprintln!("skipping Redis test: {url} is unreachable: {e}");
        return None;
    }
    Some(store)
}
