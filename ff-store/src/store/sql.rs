//! The SQL store: SQLite (embedded, the default) and PostgreSQL, through sqlx.
//!
//! One code path serves both databases through sqlx's `Any` driver: the SQL is
//! written to run on both (`$N` parameters, `ON CONFLICT`, `RETURNING`), and
//! only migrations and change notification differ per dialect.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool, Connection, Executor, Row};
use time::OffsetDateTime;
use tokio::sync::{OnceCell, watch};

use super::write::{self, Backend, Staged, WriteTx};
use super::{
    Batch, ChangeQuery, FlagReader, FlagWriter, RequestRecord, Role, TokenRecord, TokenStore, UsageStore,
    Write, flags_using, from_millis, now, redact, to_millis,
};
use crate::error::StoreError;
use ff_core::SegmentDef;
use ff_core::{
    Action, Change, ExpiryPolicy, FlagKind, FlagMeta, FlagRecord, OverrideRecord, SegmentRecord, StoreState,
};
use ff_core::{Value, ValueType};

/// The PostgreSQL channel the store notifies on and listens to.
pub(crate) const NOTIFY_CHANNEL: &str = "ff_changes";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

const MIGRATIONS_SQLITE: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_admin.sql")),
    (3, include_str!("../../migrations/sqlite/0003_targeting.sql")),
    (4, include_str!("../../migrations/sqlite/0004_segments.sql")),
    (5, include_str!("../../migrations/sqlite/0005_attributes.sql")),
    (6, include_str!("../../migrations/sqlite/0006_lifecycle.sql")),
    (7, include_str!("../../migrations/sqlite/0007_batches.sql")),
    (8, include_str!("../../migrations/sqlite/0008_guards.sql")),
    (9, include_str!("../../migrations/sqlite/0009_requests.sql")),
    (10, include_str!("../../migrations/sqlite/0010_records.sql")),
];
const MIGRATIONS_POSTGRES: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_admin.sql")),
    (3, include_str!("../../migrations/postgres/0003_targeting.sql")),
    (4, include_str!("../../migrations/postgres/0004_segments.sql")),
    (5, include_str!("../../migrations/postgres/0005_attributes.sql")),
    (6, include_str!("../../migrations/postgres/0006_lifecycle.sql")),
    (7, include_str!("../../migrations/postgres/0007_batches.sql")),
    (8, include_str!("../../migrations/postgres/0008_guards.sql")),
    (9, include_str!("../../migrations/postgres/0009_requests.sql")),
    (10, include_str!("../../migrations/postgres/0010_records.sql")),
];

/// A store in SQLite or PostgreSQL. Clones share one connection pool.
///
/// Migrations ship with the crate and run on first use, tracked in the table
/// `ff_migrations` (not sqlx's own, so they never clash with the application's).
#[derive(Clone)]
pub struct SqlStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: AnyPool,
    dialect: Dialect,
    url: String,
    ready: OnceCell<()>,
    signal: watch::Sender<u64>,
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("dialect", &self.inner.dialect)
            .field("url", &redact(&self.inner.url))
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(h) = self.listener.get_mut().ok().and_then(Option::take) {
            h.abort();
        }
    }
}

impl SqlStore {
    /// A store for `url`: `sqlite://path.db?mode=rwc` (a file, created if missing),
    /// `sqlite::memory:` (one connection, gone when the store is dropped) or
    /// `postgres://user:pass@host/db`.
    ///
    /// Does not touch the database: connecting and migrating happen on first use,
    /// so an application can start while its database is down.
    pub fn connect_lazy(url: &str) -> Result<Self, StoreError> {
        Self::connect_lazy_with(url, PoolConfig::default())
    }

    /// Like [`SqlStore::connect_lazy`], with pool settings.
    pub fn connect_lazy_with(url: &str, config: PoolConfig) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") && cfg!(feature = "sqlite") {
            Dialect::Sqlite
        } else if (url.starts_with("postgres:") || url.starts_with("postgresql:"))
            && cfg!(feature = "postgres")
        {
            Dialect::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(redact(url)));
        };
        // Every connection to an in-memory SQLite database sees its own database:
        // keep exactly one, and never retire it.
        let in_memory =
            dialect == Dialect::Sqlite && (url.contains(":memory:") || url.contains("mode=memory"));
        let pool = AnyPoolOptions::new()
            .max_connections(if in_memory { 1 } else { config.max_connections })
            .idle_timeout((!in_memory).then_some(Duration::from_secs(600)))
            .max_lifetime((!in_memory).then_some(Duration::from_secs(1800)))
            .acquire_timeout(config.acquire_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA busy_timeout = 5000",
                            "PRAGMA synchronous = NORMAL",
                        ] {
                            conn.execute(pragma).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_lazy(url)?;
        Ok(SqlStore {
            inner: Arc::new(Inner {
                pool,
                dialect,
                url: url.to_owned(),
                ready: OnceCell::new(),
                signal: watch::Sender::new(0),
                listener: Mutex::new(None),
            }),
        })
    }

    /// Connects and migrates now; fails if the database cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let store = Self::connect_lazy(url)?;
        store.migrate().await?;
        Ok(store)
    }

    /// Runs pending migrations (once per store; retried on the next call after a failure).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.ready.get_or_try_init(|| self.run_migrations()).await.map(|_| ())
    }

    /// The connection pool, e.g. to close it.
    pub fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }

    async fn run_migrations(&self) -> Result<(), StoreError> {
        let (migrations, lock) = match self.inner.dialect {
            Dialect::Sqlite => (MIGRATIONS_SQLITE, None),
            // Serialises instances that start together against one database.
            Dialect::Postgres => (MIGRATIONS_POSTGRES, Some("SELECT pg_advisory_xact_lock(7239001)")),
        };
        let mut tx = self.inner.pool.begin().await?;
        if let Some(lock) = lock {
            sqlx::query(lock).execute(&mut *tx).await?;
        }
        tx.execute("CREATE TABLE IF NOT EXISTS ff_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .await?;
        let applied: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM ff_migrations")
            .fetch_one(&mut *tx)
            .await?;
        for (version, sql) in migrations.iter().filter(|(v, _)| *v > applied) {
            tx.execute(*sql).await?;
            sqlx::query("INSERT INTO ff_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(*version)
                .bind(to_millis(now()))
                .execute(&mut *tx)
                .await?;
            tracing::info!(version, "ff: applied store migration");
        }
        tx.commit().await?;
        Ok(())
    }

    async fn ready(&self) -> Result<&AnyPool, StoreError> {
        self.migrate().await?;
        Ok(&self.inner.pool)
    }

    #[cfg(feature = "postgres")]
    fn ensure_listener(&self) {
        if self.inner.dialect != Dialect::Postgres {
            return;
        }
        let Ok(mut slot) = self.inner.listener.lock() else {
            return;
        };
        if slot.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("ff: no tokio runtime; PostgreSQL notifications disabled, polling only");
            return;
        };
        *slot = Some(rt.spawn(listen(self.inner.url.clone(), self.inner.signal.clone())));
    }

    #[cfg(not(feature = "postgres"))]
    fn ensure_listener(&self) {}
}

/// Connection pool settings for [`SqlStore::connect_lazy_with`].
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Most connections held open.
    pub max_connections: u32,
    /// How long an operation waits for a connection (and so for an unreachable database).
    pub acquire_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig { max_connections: 4, acquire_timeout: Duration::from_secs(3) }
    }
}

/// Follows `LISTEN ff_changes`, bumping `signal` on every notification and on
/// every (re)connection, since notifications sent while disconnected are lost.
#[cfg(feature = "postgres")]
async fn listen(url: String, signal: watch::Sender<u64>) {
    use sqlx::postgres::PgListener;
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = async {
            let mut l = PgListener::connect(&url).await?;
            l.listen(NOTIFY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = tokio::select! {
            _ = signal.closed() => return,
            l = connected => match l {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "ff: cannot LISTEN for flag changes");
                    tokio::select! {
                        _ = signal.closed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(100);
        tracing::debug!("ff: listening for flag changes");
        signal.send_modify(|n| *n += 1);
        loop {
            tokio::select! {
                _ = signal.closed() => return,
                msg = listener.try_recv() => match msg {
                    Ok(Some(_)) => signal.send_modify(|n| *n += 1),
                    Ok(None) => {
                        tracing::warn!("ff: LISTEN connection lost; reconnecting");
                        signal.send_modify(|n| *n += 1);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "ff: LISTEN connection failed; reconnecting");
                        signal.send_modify(|n| *n += 1);
                        break;
                    }
                },
            }
        }
    }
}

const FLAG_COLUMNS: &str = "key, value_type, value, off_value, enabled, schema, description, archived, version, \
     created_at, updated_at, owner, tags, ticket, expires_at, targeting, kind, permanent, expiry, approval";
const SEGMENT_COLUMNS: &str = "key, definition, version, created_at, updated_at";

fn segment_from_row(row: &AnyRow) -> Result<SegmentRecord, StoreError> {
    let key: String = row.try_get("key")?;
    let definition: String = row.try_get("definition")?;
    Ok(SegmentRecord {
        definition: serde_json::from_str(&definition)
            .map_err(|e| corrupt(format!("segment {key:?}: {e}")))?,
        version: row.try_get::<i64, _>("version")? as u64,
        created_at: from_millis(row.try_get("created_at")?),
        updated_at: from_millis(row.try_get("updated_at")?),
        key,
    })
}

async fn declared_attributes(conn: &mut AnyConnection) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT name FROM ff_attributes ORDER BY name").fetch_all(conn).await?)
}

async fn fetch_segment(conn: &mut AnyConnection, key: &str) -> Result<Option<SegmentRecord>, StoreError> {
    sqlx::query(&format!("SELECT {SEGMENT_COLUMNS} FROM ff_segments WHERE key = $1"))
        .bind(key)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(segment_from_row)
        .transpose()
}

const TOKEN_COLUMNS: &str = "id, name, role, secret_hash, created_at, revoked_at";

fn token_from_row(row: &AnyRow) -> Result<TokenRecord, StoreError> {
    let role: String = row.try_get("role")?;
    Ok(TokenRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: Role::parse(&role).ok_or_else(|| corrupt(format!("unknown token role {role:?}")))?,
        secret_hash: row.try_get("secret_hash")?,
        created_at: from_millis(row.try_get("created_at")?),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(from_millis),
    })
}

/// Locks the seq counter and reads it: this serialises writers before they read
/// what they change, so seq order is commit order and the log has no gaps.
async fn lock_seq(conn: &mut AnyConnection) -> Result<u64, StoreError> {
    let seq: i64 =
        sqlx::query_scalar("UPDATE ff_meta SET seq = seq WHERE id = 1 RETURNING seq").fetch_one(conn).await?;
    Ok(seq as u64)
}

/// A write transaction: the seq counter is locked at the start, so writers take
/// turns and a commit never has to be retried.
pub(crate) struct SqlTx {
    store: SqlStore,
    tx: sqlx::Transaction<'static, sqlx::Any>,
}

impl fmt::Debug for SqlTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlTx").finish_non_exhaustive()
    }
}

#[async_trait]
impl Backend for SqlStore {
    type Tx = SqlTx;

    async fn begin(&self) -> Result<(SqlTx, u64), StoreError> {
        let mut tx = self.ready().await?.begin().await?;
        let last = lock_seq(&mut tx).await?;
        Ok((SqlTx { store: self.clone(), tx }, last))
    }
}

#[async_trait]
impl WriteTx for SqlTx {
    async fn flag(&mut self, key: &str) -> Result<Option<FlagRecord>, StoreError> {
        sqlx::query(&format!("SELECT {FLAG_COLUMNS} FROM ff_flags WHERE key = $1"))
            .bind(key)
            .fetch_optional(&mut *self.tx)
            .await?
            .as_ref()
            .map(flag_from_row)
            .transpose()
    }

    async fn override_value(
        &mut self,
        key: &str,
        user: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        sqlx::query_scalar::<_, String>("SELECT value FROM ff_overrides WHERE key = $1 AND user_id = $2")
            .bind(key)
            .bind(user)
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|t| json(&t, "override"))
            .transpose()
    }

    async fn overrides_of(&mut self, key: &str) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let rows =
            sqlx::query_as::<_, (String, String)>("SELECT user_id, value FROM ff_overrides WHERE key = $1")
                .bind(key)
                .fetch_all(&mut *self.tx)
                .await?;
        rows.into_iter().map(|(u, t)| Ok((u, json(&t, "override")?))).collect()
    }

    async fn segment(&mut self, key: &str) -> Result<Option<SegmentRecord>, StoreError> {
        fetch_segment(&mut self.tx, key).await
    }

    async fn flags_using_segment(&mut self, key: &str) -> Result<Vec<String>, StoreError> {
        // Only flags with segment rules can use one.
        let flags = sqlx::query(&format!(
            "SELECT {FLAG_COLUMNS} FROM ff_flags WHERE archived = 0 AND targeting LIKE '%in_segment%'"
        ))
        .fetch_all(&mut *self.tx)
        .await?
        .iter()
        .map(flag_from_row)
        .collect::<Result<Vec<_>, _>>()?;
        Ok(flags_using(&flags, key))
    }

    async fn token_named(&mut self, name: &str) -> Result<Option<TokenRecord>, StoreError> {
        sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM ff_tokens WHERE name = $1"))
            .bind(name)
            .fetch_optional(&mut *self.tx)
            .await?
            .as_ref()
            .map(token_from_row)
            .transpose()
    }

    async fn declared_attributes(&mut self) -> Result<Vec<String>, StoreError> {
        declared_attributes(&mut self.tx).await
    }

    async fn request(&mut self, id: u64) -> Result<Option<RequestRecord>, StoreError> {
        sqlx::query("SELECT id, key, version, body FROM ff_requests WHERE id = $1")
            .bind(id as i64)
            .fetch_optional(&mut *self.tx)
            .await?
            .as_ref()
            .map(request_from_row)
            .transpose()
    }

    async fn commit(mut self, staged: &Staged, changes: &[Change]) -> Result<bool, StoreError> {
        let at = changes.first().map_or_else(now, |c| c.at);
        for record in staged.flags.values() {
            put_flag(&mut self.tx, record).await?;
        }
        for ((key, user_id), value) in &staged.overrides {
            put_override(&mut self.tx, key, user_id, value.as_ref(), at).await?;
        }
        for (key, record) in &staged.segments {
            put_segment(&mut self.tx, key, record.as_ref()).await?;
        }
        for token in staged.tokens.values() {
            put_token(&mut self.tx, token).await?;
        }
        for request in staged.requests.values() {
            put_request(&mut self.tx, request).await?;
        }
        for change in changes {
            self.store.record(&mut self.tx, change).await?;
        }
        let end = changes.last().map_or(0, |c| c.seq);
        sqlx::query("UPDATE ff_meta SET seq = $1 WHERE id = 1")
            .bind(end as i64)
            .execute(&mut *self.tx)
            .await?;
        self.tx.commit().await?;
        self.store.inner.signal.send_modify(|n| *n += 1);
        Ok(true)
    }

    async fn abort(self) -> Result<(), StoreError> {
        Ok(self.tx.rollback().await?)
    }
}

/// Sets (`Some`) or deletes (`None`) one override row.
async fn put_override(
    conn: &mut AnyConnection,
    key: &str,
    user_id: &str,
    value: Option<&serde_json::Value>,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    let Some(value) = value else {
        sqlx::query("DELETE FROM ff_overrides WHERE key = $1 AND user_id = $2")
            .bind(key)
            .bind(user_id)
            .execute(conn)
            .await?;
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO ff_overrides (key, user_id, value, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (key, user_id) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )
    .bind(key)
    .bind(user_id)
    .bind(value.to_string())
    .bind(to_millis(at))
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts or replaces (`Some`) or deletes (`None`) one segment row.
async fn put_segment(
    conn: &mut AnyConnection,
    key: &str,
    record: Option<&SegmentRecord>,
) -> Result<(), StoreError> {
    let Some(record) = record else {
        sqlx::query("DELETE FROM ff_segments WHERE key = $1").bind(key).execute(conn).await?;
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO ff_segments (key, definition, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (key) DO UPDATE SET definition = excluded.definition, version = excluded.version, \
         updated_at = excluded.updated_at",
    )
    .bind(key)
    .bind(serde_json::to_string(&record.definition).map_err(|e| corrupt(format!("segment {key:?}: {e}")))?)
    .bind(record.version as i64)
    .bind(to_millis(record.created_at))
    .bind(to_millis(record.updated_at))
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts a new token (an id already taken is an error, never an overwrite), or
/// records a revocation.
async fn put_token(conn: &mut AnyConnection, token: &TokenRecord) -> Result<(), StoreError> {
    if let Some(at) = token.revoked_at {
        sqlx::query("UPDATE ff_tokens SET revoked_at = $1 WHERE id = $2")
            .bind(to_millis(at))
            .bind(&token.id)
            .execute(conn)
            .await?;
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO ff_tokens (id, name, role, secret_hash, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, NULL)",
    )
    .bind(&token.id)
    .bind(&token.name)
    .bind(token.role.as_str())
    .bind(&token.secret_hash)
    .bind(to_millis(token.created_at))
    .execute(conn)
    .await?;
    Ok(())
}

const CHANGE_COLUMNS: &str = "seq, at_ms, actor, action, key, subject, before_state, after_state, reason, batch_end, approved_by, emergency";

fn corrupt(what: impl fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn json(text: &str, what: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("{what}: {e}")))
}

fn flag_from_row(row: &AnyRow) -> Result<FlagRecord, StoreError> {
    let key: String = row.try_get("key")?;
    let ty: String = row.try_get("value_type")?;
    let value_type =
        ValueType::parse(&ty).ok_or_else(|| corrupt(format!("flag {key:?} has unknown type {ty:?}")))?;
    let value = |col: &str| -> Result<Value, StoreError> {
        let text: String = row.try_get(col)?;
        Value::from_json(value_type, &json(&text, col)?)
            .map_err(|e| corrupt(format!("flag {key:?} {col}: {e}")))
    };
    let schema: String = row.try_get("schema")?;
    Ok(FlagRecord {
        value: value("value")?,
        off_value: value("off_value")?,
        value_type,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        schema: serde_json::from_str(&schema).map_err(|e| corrupt(format!("flag {key:?} schema: {e}")))?,
        description: row.try_get("description")?,
        meta: FlagMeta {
            owner: row.try_get("owner")?,
            tags: serde_json::from_str(&row.try_get::<String, _>("tags")?)
                .map_err(|e| corrupt(format!("flag {key:?} tags: {e}")))?,
            ticket: row.try_get("ticket")?,
            expires_at: row.try_get::<Option<i64>, _>("expires_at")?.map(from_millis),
            kind: row
                .try_get::<Option<String>, _>("kind")?
                .map(|k| FlagKind::parse(&k).ok_or_else(|| corrupt(format!("flag {key:?} kind {k:?}"))))
                .transpose()?,
            permanent: row.try_get::<Option<i64>, _>("permanent")?.map(|p| p != 0),
            approval: row.try_get::<Option<i64>, _>("approval")?.map(|p| p != 0),
            expiry: {
                let e: String = row.try_get("expiry")?;
                ExpiryPolicy::parse(&e).ok_or_else(|| corrupt(format!("flag {key:?} expiry {e:?}")))?
            },
        },
        targeting: serde_json::from_str(&row.try_get::<String, _>("targeting")?)
            .map_err(|e| corrupt(format!("flag {key:?} targeting: {e}")))?,
        archived: row.try_get::<i64, _>("archived")? != 0,
        version: row.try_get::<i64, _>("version")? as u64,
        created_at: from_millis(row.try_get("created_at")?),
        updated_at: from_millis(row.try_get("updated_at")?),
        key,
    })
}

fn change_from_row(row: &AnyRow) -> Result<Change, StoreError> {
    let action: String = row.try_get("action")?;
    let state = |col: &str| -> Result<Option<serde_json::Value>, StoreError> {
        row.try_get::<Option<String>, _>(col)?.map(|t| json(&t, col)).transpose()
    };
    Ok(Change {
        seq: row.try_get::<i64, _>("seq")? as u64,
        at: from_millis(row.try_get("at_ms")?),
        actor: row.try_get("actor")?,
        action: Action::parse(&action).ok_or_else(|| corrupt(format!("unknown action {action:?}")))?,
        key: row.try_get("key")?,
        subject: row.try_get("subject")?,
        before: state("before_state")?,
        after: state("after_state")?,
        reason: row.try_get("reason")?,
        batch_end: row.try_get::<Option<i64>, _>("batch_end")?.map(|s| s as u64),
        approved_by: row.try_get("approved_by")?,
        emergency: row.try_get::<i64, _>("emergency")? != 0,
    })
}

fn request_from_row(row: &AnyRow) -> Result<RequestRecord, StoreError> {
    let body: String = row.try_get("body")?;
    Ok(RequestRecord {
        id: row.try_get::<i64, _>("id")? as u64,
        key: row.try_get("key")?,
        version: row.try_get::<i64, _>("version")? as u64,
        body: json(&body, "request")?,
    })
}

/// Inserts or replaces one change request.
async fn put_request(conn: &mut AnyConnection, r: &RequestRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ff_requests (id, key, version, body) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET key = excluded.key, version = excluded.version, body = excluded.body",
    )
    .bind(r.id as i64)
    .bind(&r.key)
    .bind(r.version as i64)
    .bind(r.body.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

fn override_from_row(row: &AnyRow) -> Result<OverrideRecord, StoreError> {
    let text: String = row.try_get("value")?;
    Ok(OverrideRecord {
        key: row.try_get("key")?,
        user_id: row.try_get("user_id")?,
        value: json(&text, "override")?,
    })
}

async fn put_flag(conn: &mut AnyConnection, r: &FlagRecord) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO ff_flags ({FLAG_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) \
         ON CONFLICT (key) DO UPDATE SET value_type = excluded.value_type, value = excluded.value, \
         off_value = excluded.off_value, enabled = excluded.enabled, schema = excluded.schema, \
         description = excluded.description, archived = excluded.archived, version = excluded.version, \
         updated_at = excluded.updated_at, owner = excluded.owner, tags = excluded.tags, \
         ticket = excluded.ticket, expires_at = excluded.expires_at, \
         targeting = excluded.targeting, kind = excluded.kind, permanent = excluded.permanent, \
         expiry = excluded.expiry, approval = excluded.approval"
    );
    sqlx::query(&sql)
        .bind(&r.key)
        .bind(r.value_type.as_str())
        .bind(r.value.to_json().to_string())
        .bind(r.off_value.to_json().to_string())
        .bind(i64::from(r.enabled))
        .bind(serde_json::to_string(&r.schema).unwrap_or_else(|_| "{}".into()))
        .bind(&r.description)
        .bind(i64::from(r.archived))
        .bind(r.version as i64)
        .bind(to_millis(r.created_at))
        .bind(to_millis(r.updated_at))
        .bind(&r.meta.owner)
        .bind(serde_json::to_string(&r.meta.tags).unwrap_or_else(|_| "[]".into()))
        .bind(&r.meta.ticket)
        .bind(r.meta.expires_at.map(to_millis))
        .bind(serde_json::to_string(&r.targeting).unwrap_or_else(|_| "{}".into()))
        .bind(r.meta.kind.map(FlagKind::as_str))
        .bind(r.meta.permanent.map(i64::from))
        .bind(r.meta.expiry.as_str())
        .bind(r.meta.approval.map(i64::from))
        .execute(conn)
        .await?;
    Ok(())
}

#[async_trait]
impl FlagReader for SqlStore {
    async fn load(&self) -> Result<StoreState, StoreError> {
        let pool = self.ready().await?;
        let mut tx = pool.begin().await?;
        if self.inner.dialect == Dialect::Postgres {
            // One consistent view of flags, overrides and seq.
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM ff_meta WHERE id = 1").fetch_one(&mut *tx).await?;
        let flags =
            sqlx::query(&format!("SELECT {FLAG_COLUMNS} FROM ff_flags WHERE archived = 0 ORDER BY key"))
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(flag_from_row)
                .collect::<Result<Vec<_>, _>>()?;
        let overrides = sqlx::query(
            "SELECT o.key, o.user_id, o.value FROM ff_overrides o JOIN ff_flags f ON f.key = o.key \
             WHERE f.archived = 0 ORDER BY o.key, o.user_id",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(override_from_row)
        .collect::<Result<Vec<_>, _>>()?;
        let segments = sqlx::query(&format!("SELECT {SEGMENT_COLUMNS} FROM ff_segments ORDER BY key"))
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(segment_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await?;
        Ok(StoreState { seq: seq as u64, flags, overrides, segments })
    }

    async fn list_flags(&self) -> Result<Vec<FlagRecord>, StoreError> {
        let pool = self.ready().await?;
        sqlx::query(&format!("SELECT {FLAG_COLUMNS} FROM ff_flags ORDER BY key"))
            .fetch_all(pool)
            .await?
            .iter()
            .map(flag_from_row)
            .collect()
    }

    async fn flag(&self, key: &str) -> Result<Option<FlagRecord>, StoreError> {
        let pool = self.ready().await?;
        sqlx::query(&format!("SELECT {FLAG_COLUMNS} FROM ff_flags WHERE key = $1"))
            .bind(key)
            .fetch_optional(pool)
            .await?
            .as_ref()
            .map(flag_from_row)
            .transpose()
    }

    async fn overrides(&self, key: &str) -> Result<Vec<OverrideRecord>, StoreError> {
        let pool = self.ready().await?;
        sqlx::query("SELECT key, user_id, value FROM ff_overrides WHERE key = $1 ORDER BY user_id")
            .bind(key)
            .fetch_all(pool)
            .await?
            .iter()
            .map(override_from_row)
            .collect()
    }

    async fn changes_since(&self, after: u64, limit: u32) -> Result<Vec<Change>, StoreError> {
        let pool = self.ready().await?;
        sqlx::query(&format!("SELECT {CHANGE_COLUMNS} FROM ff_changes WHERE seq > $1 ORDER BY seq LIMIT $2"))
            .bind(after as i64)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(change_from_row)
            .collect()
    }

    async fn latest_seq(&self) -> Result<u64, StoreError> {
        let pool = self.ready().await?;
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM ff_meta WHERE id = 1").fetch_one(pool).await?;
        Ok(seq as u64)
    }

    async fn segments(&self) -> Result<Vec<SegmentRecord>, StoreError> {
        let pool = self.ready().await?;
        sqlx::query(&format!("SELECT {SEGMENT_COLUMNS} FROM ff_segments ORDER BY key"))
            .fetch_all(pool)
            .await?
            .iter()
            .map(segment_from_row)
            .collect()
    }

    async fn attributes(&self) -> Result<Vec<String>, StoreError> {
        let pool = self.ready().await?;
        let mut conn = pool.acquire().await?;
        declared_attributes(&mut conn).await
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        let rx = self.inner.signal.subscribe();
        self.ensure_listener();
        rx
    }
}

#[async_trait]
impl FlagWriter for SqlStore {
    async fn write(&self, write: Write) -> Result<Option<Change>, StoreError> {
        write::write(self, &write).await
    }

    async fn write_batch(&self, batch: Batch) -> Result<Vec<Change>, StoreError> {
        write::write_batch(self, &batch).await
    }

    async fn changes(&self, q: &ChangeQuery) -> Result<Vec<Change>, StoreError> {
        let pool = self.ready().await?;
        let mut sql = format!("SELECT {CHANGE_COLUMNS} FROM ff_changes WHERE 1 = 1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        if q.key.is_some() {
            sql += &format!(" AND key = ${}", next());
        }
        if q.actor.is_some() {
            sql += &format!(" AND actor = ${}", next());
        }
        if q.since.is_some() {
            sql += &format!(" AND at_ms >= ${}", next());
        }
        if q.before_seq.is_some() {
            sql += &format!(" AND seq < ${}", next());
        }
        sql += &format!(" ORDER BY seq DESC LIMIT ${}", next());
        let mut query = sqlx::query(&sql);
        if let Some(k) = &q.key {
            query = query.bind(k);
        }
        if let Some(a) = &q.actor {
            query = query.bind(a);
        }
        if let Some(t) = q.since {
            query = query.bind(to_millis(t));
        }
        if let Some(s) = q.before_seq {
            query = query.bind(s as i64);
        }
        query = query.bind(i64::from(q.limit.min(1000)));
        query.fetch_all(pool).await?.iter().map(change_from_row).collect()
    }

    async fn change(&self, seq: u64) -> Result<Option<Change>, StoreError> {
        let pool = self.ready().await?;
        sqlx::query(&format!("SELECT {CHANGE_COLUMNS} FROM ff_changes WHERE seq = $1"))
            .bind(seq as i64)
            .fetch_optional(pool)
            .await?
            .as_ref()
            .map(change_from_row)
            .transpose()
    }

    async fn put_segment(
        &self,
        key: &str,
        definition: SegmentDef,
        expected_version: Option<u64>,
        who: (&str, Option<&str>),
    ) -> Result<Option<Change>, StoreError> {
        write::put_segment(self, key, &definition, expected_version, who).await
    }

    async fn delete_segment(&self, key: &str, who: (&str, Option<&str>)) -> Result<Change, StoreError> {
        write::delete_segment(self, key, who).await
    }

    async fn declare_attributes(&self, names: &[String]) -> Result<Vec<String>, StoreError> {
        let pool = self.ready().await?;
        let mut added = Vec::new();
        for name in names {
            let done = sqlx::query(
                "INSERT INTO ff_attributes (name, declared_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(to_millis(now()))
            .execute(pool)
            .await?;
            if done.rows_affected() > 0 {
                added.push(name.clone());
            }
        }
        Ok(added)
    }

    async fn requests(&self) -> Result<Vec<RequestRecord>, StoreError> {
        let pool = self.ready().await?;
        sqlx::query("SELECT id, key, version, body FROM ff_requests ORDER BY id")
            .fetch_all(pool)
            .await?
            .iter()
            .map(request_from_row)
            .collect()
    }

    async fn request(&self, id: u64) -> Result<Option<RequestRecord>, StoreError> {
        let pool = self.ready().await?;
        sqlx::query("SELECT id, key, version, body FROM ff_requests WHERE id = $1")
            .bind(id as i64)
            .fetch_optional(pool)
            .await?
            .as_ref()
            .map(request_from_row)
            .transpose()
    }
}

#[async_trait]
impl TokenStore for SqlStore {
    async fn create_token(
        &self,
        token: TokenRecord,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<TokenRecord, StoreError> {
        write::create_token(self, token, (actor, reason)).await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let pool = self.ready().await?;
        sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM ff_tokens ORDER BY name"))
            .fetch_all(pool)
            .await?
            .iter()
            .map(token_from_row)
            .collect()
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let pool = self.ready().await?;
        sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM ff_tokens WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await?
            .as_ref()
            .map(token_from_row)
            .transpose()
    }

    async fn revoke_token(
        &self,
        name: &str,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<TokenRecord, StoreError> {
        write::revoke_token(self, name, (actor, reason)).await
    }
}

#[async_trait]
impl UsageStore for SqlStore {
    async fn record_usage(
        &self,
        counts: &[ff_core::UsageCount],
        unknown: &[(String, u64)],
        at: time::OffsetDateTime,
    ) -> Result<(), StoreError> {
        let pool = self.ready().await?;
        let day = day_number(at.date());
        // One transaction: the Source retries a failed flush whole, so a part
        // written before the failure would be counted twice.
        let mut tx = pool.begin().await?;
        for (key, rows) in super::group_usage(counts) {
            // One statement per flag: all its (reason, variant) rows at once.
            let values: Vec<String> = (0..rows.len())
                .map(|i| {
                    let p = 6 * i;
                    format!("(${}, ${}, ${}, ${}, ${}, ${})", p + 1, p + 2, p + 3, p + 4, p + 5, p + 6)
                })
                .collect();
            let sql = format!(
                "INSERT INTO ff_usage (key, day, reason, variant, count, last_at) VALUES {} \
                 ON CONFLICT (key, day, reason, variant) DO UPDATE \
                 SET count = ff_usage.count + excluded.count, last_at = excluded.last_at",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for (reason, variant, n) in rows {
                q = q.bind(key).bind(day).bind(reason).bind(variant).bind(n as i64).bind(to_millis(at));
            }
            q.execute(&mut *tx).await?;
        }
        for (key, n) in unknown {
            sqlx::query(
                "INSERT INTO ff_unknown_flags (key, count, first_at, last_at) VALUES ($1, $2, $3, $3) \
                 ON CONFLICT (key) DO UPDATE SET count = ff_unknown_flags.count + excluded.count, \
                 last_at = excluded.last_at",
            )
            .bind(key)
            .bind(*n as i64)
            .bind(to_millis(at))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn usage(&self, since: time::Date) -> Result<Vec<ff_core::UsageRow>, StoreError> {
        let pool = self.ready().await?;
        let rows = sqlx::query(
            "SELECT key, day, reason, variant, count, last_at FROM ff_usage WHERE day >= $1 \
             ORDER BY key, day, reason, variant",
        )
        .bind(day_number(since))
        .fetch_all(pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ff_core::UsageRow {
                    key: r.try_get("key")?,
                    day: from_day_number(r.try_get("day")?),
                    reason: r.try_get("reason")?,
                    variant: r.try_get("variant")?,
                    count: r.try_get::<i64, _>("count")? as u64,
                    last_at: from_millis(r.try_get("last_at")?),
                })
            })
            .collect()
    }

    async fn put_guard_counts(
        &self,
        rows: &[super::GuardCount],
        at: time::OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.put_guard_rows(rows, at).await
    }

    async fn guard_counts(&self, flag: &str, epoch: i64) -> Result<Vec<super::GuardCount>, StoreError> {
        let pool = self.ready().await?;
        let rows = sqlx::query(
            "SELECT instance, variation, arm FROM ff_guard_counts WHERE flag = $1 AND epoch = $2 \
             ORDER BY instance, variation",
        )
        .bind(flag)
        .bind(epoch)
        .fetch_all(pool)
        .await?;
        rows.iter()
            .map(|r| {
                let arm: String = r.try_get("arm")?;
                Ok(super::GuardCount {
                    flag: flag.to_owned(),
                    epoch,
                    instance: r.try_get("instance")?,
                    variation: u32::try_from(r.try_get::<i64, _>("variation")?).unwrap_or(u32::MAX),
                    arm: serde_json::from_str(&arm).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                })
            })
            .collect()
    }

    async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
        _at: time::OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let pool = self.ready().await?;
        // The database's clock, one for every instance (theirs may disagree), in ms.
        let now = match self.inner.dialect {
            Dialect::Postgres => "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
            Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
        };
        // Taken when free or expired, renewed by its holder; otherwise the row stays.
        let sql = format!(
            "INSERT INTO ff_leases (name, holder, expires_at) VALUES ($1, $2, {now} + $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE ff_leases.holder = excluded.holder OR ff_leases.expires_at < {now}"
        );
        let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let done = sqlx::query(&sql).bind(name).bind(holder).bind(ttl).execute(pool).await?;
        Ok(done.rows_affected() == 1)
    }

    async fn put_record(
        &self,
        name: &str,
        body: Option<&serde_json::Value>,
        expected_version: u64,
    ) -> Result<u64, StoreError> {
        let pool = self.ready().await?;
        let expected = expected_version as i64;
        // One statement each, conditional on the version: no transaction to hold.
        let done = match (body, expected_version) {
            (Some(b), 0) => {
                sqlx::query("INSERT INTO ff_records (name, version, body) VALUES ($1, 1, $2) ON CONFLICT (name) DO NOTHING")
                    .bind(name)
                    .bind(b.to_string())
                    .execute(pool)
                    .await?
            }
            (Some(b), _) => {
                sqlx::query("UPDATE ff_records SET version = version + 1, body = $1 WHERE name = $2 AND version = $3")
                    .bind(b.to_string())
                    .bind(name)
                    .bind(expected)
                    .execute(pool)
                    .await?
            }
            (None, _) => {
                sqlx::query("DELETE FROM ff_records WHERE name = $1 AND version = $2")
                    .bind(name)
                    .bind(expected)
                    .execute(pool)
                    .await?
            }
        };
        if done.rows_affected() == 1 {
            return Ok(expected_version + 1);
        }
        let actual: Option<i64> = sqlx::query_scalar("SELECT version FROM ff_records WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
        Err(super::record_conflict(name, expected_version, actual.unwrap_or(0) as u64))
    }

    async fn records(&self, prefix: &str) -> Result<Vec<super::StoredRecord>, StoreError> {
        let pool = self.ready().await?;
        let rows =
            sqlx::query("SELECT name, version, body FROM ff_records ORDER BY name").fetch_all(pool).await?;
        let mut out = Vec::new();
        for r in &rows {
            let name: String = r.try_get("name")?;
            if !name.starts_with(prefix) {
                continue;
            }
            let body: String = r.try_get("body")?;
            let version = r.try_get::<i64, _>("version")? as u64;
            out.push(super::StoredRecord { body: json(&body, &name)?, name, version });
        }
        Ok(out)
    }

    async fn unknown_flags(&self) -> Result<Vec<ff_core::UnknownFlag>, StoreError> {
        let pool = self.ready().await?;
        let rows = sqlx::query("SELECT key, count, first_at, last_at FROM ff_unknown_flags ORDER BY key")
            .fetch_all(pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ff_core::UnknownFlag {
                    key: r.try_get("key")?,
                    count: r.try_get::<i64, _>("count")? as u64,
                    first_at: from_millis(r.try_get("first_at")?),
                    last_at: from_millis(r.try_get("last_at")?),
                })
            })
            .collect()
    }
}

impl SqlStore {
    async fn put_guard_rows(
        &self,
        rows: &[super::GuardCount],
        at: time::OffsetDateTime,
    ) -> Result<(), StoreError> {
        let pool = self.ready().await?;
        let mut tx = pool.begin().await?;
        for r in rows {
            let arm = serde_json::to_string(&r.arm).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query(
                "INSERT INTO ff_guard_counts (flag, epoch, instance, variation, arm, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (flag, epoch, instance, variation) \
                 DO UPDATE SET arm = excluded.arm, updated_at = excluded.updated_at",
            )
            .bind(&r.flag)
            .bind(r.epoch)
            .bind(&r.instance)
            .bind(i64::from(r.variation))
            .bind(arm)
            .bind(to_millis(at))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM ff_guard_counts WHERE updated_at < $1")
            .bind(to_millis(at - super::GUARD_COUNTS_KEPT))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes a change row and, on PostgreSQL, its notification (delivered at commit).
    async fn record(&self, conn: &mut AnyConnection, change: &Change) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO ff_changes ({CHANGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ))
        .bind(change.seq as i64)
        .bind(to_millis(change.at))
        .bind(&change.actor)
        .bind(change.action.as_str())
        .bind(&change.key)
        .bind(change.subject.as_deref())
        .bind(change.before.as_ref().map(|v| v.to_string()))
        .bind(change.after.as_ref().map(|v| v.to_string()))
        .bind(change.reason.as_deref())
        .bind(change.batch_end.map(|s| s as i64))
        .bind(change.approved_by.as_deref())
        .bind(i64::from(change.emergency))
        .execute(&mut *conn)
        .await?;
        if self.inner.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(change.seq.to_string())
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Closes the pool's connections (and stops listening).
    pub async fn close(&self) {
        if let Ok(mut l) = self.inner.listener.lock()
            && let Some(h) = l.take()
        {
            h.abort();
        }
        self.inner.pool.close().await;
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.inner.pool.acquire().await?;
        conn.ping().await?;
        Ok(())
    }
}

/// The Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i32 = 2_440_588;

/// Days since 1970-01-01 (UTC), as `ff_usage.day` keeps them.
fn day_number(day: time::Date) -> i64 {
    i64::from(day.to_julian_day() - UNIX_EPOCH_JULIAN_DAY)
}

fn from_day_number(n: i64) -> time::Date {
    let julian = i32::try_from(n).map_or(0, |n| n.saturating_add(UNIX_EPOCH_JULIAN_DAY));
    time::Date::from_julian_day(julian).unwrap_or(time::Date::MIN)
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://ff.db"), "sqlite://ff.db");
        assert_eq!(
            redact("postgres://ff@h/db?sslmode=require&password=s3cret&PGPASS=x&pwd=y&sslpassword=z"),
            "postgres://ff@h/db?sslmode=require&password=***&PGPASS=***&pwd=***&sslpassword=***"
        );
        assert_eq!(redact("redis://:pw@h:6379/0?prefix=ff"), "redis://:***@h:6379/0?prefix=ff");
        assert_eq!(redact("postgres://h/db?user=a@b&password=p"), "postgres://h/db?user=a@b&password=***");
    }
}
