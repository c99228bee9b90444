//! A store in Redis, for teams whose shared state already lives there: flags,
//! overrides, segments, tokens and the change log under one key prefix, writes as
//! optimistic transactions (`WATCH` the seq counter, `MULTI`/`EXEC`, retry on a
//! conflict), and pub/sub for instant propagation across instances.
//!
//! Keys (prefix `ff` by default): `ff:seq`, `ff:flags` (hash key → record),
//! `ff:overrides` (hash `key␟user` → value), `ff:changes` (sorted set by seq),
//! `ff:segments`, `ff:tokens`, `ff:token_names`, `ff:attributes`, `ff:usage*`,
//! `ff:unknown*`, `ff:guard:FLAG:EPOCH` (hash `instance␟variation` → counts, expiring a
//! week after the last flush), `ff:lease:NAME`; notifications on the channel `ff:changes`.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::write::{self, Backend, Staged, WriteTx};
use super::{
    Batch, ChangeQuery, FlagReader, FlagWriter, RequestRecord, TokenRecord, TokenStore, UsageStore, Write,
    flags_using, from_millis, to_millis,
};
use crate::error::StoreError;
use ff_core::SegmentDef;
use ff_core::{Change, FlagRecord, OverrideRecord, SegmentRecord, StoreState};

/// Separates a flag key from a user id in hash fields (keys never contain it).
const SEP: char = '\u{1f}';

/// A store in Redis. Clones share the connections.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    prefix: String,
    /// Reads and non-transactional writes; reconnected after a failure.
    reads: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// `WATCH`/`MULTI`/`EXEC` need a connection no one else uses meanwhile.
    writer: Arc<tokio::sync::Mutex<Option<MultiplexedConnection>>>,
    signal: watch::Sender<u64>,
    listener: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Inner {
    fn new(client: redis::Client, prefix: String) -> Self {
        Inner {
            client,
            prefix,
            reads: tokio::sync::Mutex::new(None),
            writer: Arc::new(tokio::sync::Mutex::new(None)),
            signal: watch::Sender::new(0),
            listener: Mutex::new(None),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut l) = self.listener.lock()
            && let Some(h) = l.take()
        {
            h.abort();
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.inner.prefix).finish_non_exhaustive()
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

type Conn = MultiplexedConnection;

impl RedisStore {
    /// A store at `url` (`redis://host:port/db`); connects on first use. Keys are
    /// prefixed with `ff`.
    pub fn connect_lazy(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::UnsupportedUrl(format!("{} ({e})", super::redact(url))))?;
        Ok(RedisStore { inner: Arc::new(Inner::new(client, "ff".into())) })
    }

    /// Uses `prefix` for every key and the channel (several applications, or tests,
    /// in one Redis): a store of its own, sharing nothing with clones of this one.
    pub fn with_prefix(self, prefix: impl Into<String>) -> Self {
        RedisStore { inner: Arc::new(Inner::new(self.inner.client.clone(), prefix.into())) }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    fn k(&self, name: &str) -> String {
        format!("{}:{name}", self.inner.prefix)
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        let mut slot = self.inner.reads.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.inner.client.get_multiplexed_async_connection().await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs `cmd` on the shared connection; a broken connection is replaced next time.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut c = self.conn().await?;
        match cmd.query_async(&mut c).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() {
                    *self.inner.reads.lock().await = None;
                }
                Err(e.into())
            }
        }
    }

    async fn pipe<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, StoreError> {
        let mut c = self.conn().await?;
        match pipe.query_async(&mut c).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() {
                    *self.inner.reads.lock().await = None;
                }
                Err(e.into())
            }
        }
    }

    /// Ends a transaction: the seq moves to the last change's, the change rows are
    /// logged and announced. `false` (`EXEC` answered nil): someone else wrote first.
    async fn commit(
        &self,
        c: &mut Conn,
        mut pipe: redis::Pipeline,
        changes: &[Change],
    ) -> Result<bool, StoreError> {
        let end = changes.last().map_or(0, |c| c.seq);
        pipe.cmd("SET").arg(self.k("seq")).arg(end).ignore();
        for change in changes {
            pipe.cmd("ZADD").arg(self.k("changes")).arg(change.seq).arg(json(change)).ignore();
        }
        pipe.cmd("PUBLISH").arg(self.k("changes")).arg(end).ignore();
        let done: Option<Vec<redis::Value>> = pipe.atomic().query_async(c).await?;
        Ok(done.is_some())
    }

    async fn all<T: serde::de::DeserializeOwned>(&self, hash: &str) -> Result<Vec<T>, StoreError> {
        let map: HashMap<String, String> = self.query(redis::cmd("HGETALL").arg(self.k(hash))).await?;
        map.values().map(|t| parse(t, hash)).collect()
    }

    /// Follows the change channel, reconnecting with a backoff, and wakes the
    /// `Source` on every notification and every (re)connection.
    fn ensure_listener(&self) {
        let Ok(mut slot) = self.inner.listener.lock() else { return };
        if slot.is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (client, channel, signal) =
            (self.inner.client.clone(), self.k("changes"), self.inner.signal.clone());
        let task = runtime.spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match listen(&client, &channel, &signal).await {
                    Ok(()) => backoff = Duration::from_millis(100),
                    Err(e) => tracing::warn!(error = %e, "ff: lost the Redis change channel; reconnecting"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        });
        *slot = Some(task.abort_handle());
    }
}

/// Subscribes and forwards notifications until the connection ends.
async fn listen(
    client: &redis::Client,
    channel: &str,
    signal: &watch::Sender<u64>,
) -> redis::RedisResult<()> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    // Changes made while not listening are fetched now.
    signal.send_modify(|n| *n += 1);
    let mut messages = pubsub.into_on_message();
    while std::future::poll_fn(|cx| futures_core::Stream::poll_next(Pin::new(&mut messages), cx))
        .await
        .is_some()
    {
        signal.send_modify(|n| *n += 1);
    }
    Ok(())
}

/// A write transaction on the store's writer connection: the seq is `WATCH`ed, so
/// the commit's `EXEC` fails, and the write is retried, if another writer came first.
pub(crate) struct RedisTx {
    store: RedisStore,
    conn: tokio::sync::OwnedMutexGuard<Option<Conn>>,
}

impl fmt::Debug for RedisTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTx").finish_non_exhaustive()
    }
}

impl RedisTx {
    fn c(&mut self) -> Result<&mut Conn, StoreError> {
        self.conn.as_mut().ok_or_else(|| StoreError::Corrupt("no Redis writer connection".into()))
    }

    /// Drops a connection that failed, so the next write opens a new one.
    fn check<T>(&mut self, r: redis::RedisResult<T>) -> Result<T, StoreError> {
        if let Err(e) = &r
            && (e.is_io_error() || e.is_connection_dropped())
        {
            *self.conn = None;
        }
        Ok(r?)
    }

    async fn hget_raw(&mut self, hash: &str, field: &str) -> Result<Option<String>, StoreError> {
        let cmd = redis::cmd("HGET").arg(self.store.k(hash)).arg(field).clone();
        let text: redis::RedisResult<Option<String>> = cmd.query_async(self.c()?).await;
        self.check(text)
    }

    async fn hget<T: serde::de::DeserializeOwned>(
        &mut self,
        hash: &str,
        field: &str,
    ) -> Result<Option<T>, StoreError> {
        self.hget_raw(hash, field).await?.map(|t| parse(&t, hash)).transpose()
    }
}

#[async_trait]
impl Backend for RedisStore {
    type Tx = RedisTx;

    async fn begin(&self) -> Result<(RedisTx, u64), StoreError> {
        let mut conn = self.inner.writer.clone().lock_owned().await;
        if conn.is_none() {
            *conn = Some(self.inner.client.get_multiplexed_async_connection().await?);
        }
        let mut tx = RedisTx { store: self.clone(), conn };
        let c = tx.c()?;
        let watched = redis::cmd("WATCH").arg(self.k("seq")).query_async::<()>(&mut *c).await;
        tx.check(watched)?;
        let c = tx.c()?;
        let seq = redis::cmd("GET").arg(self.k("seq")).query_async::<Option<u64>>(c).await;
        let last = tx.check(seq)?.unwrap_or(0);
        Ok((tx, last))
    }
}

#[async_trait]
impl WriteTx for RedisTx {
    async fn flag(&mut self, key: &str) -> Result<Option<FlagRecord>, StoreError> {
        self.hget("flags", key).await
    }

    async fn override_value(
        &mut self,
        key: &str,
        user: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        self.hget("overrides", &format!("{key}{SEP}{user}")).await
    }

    async fn overrides_of(&mut self, key: &str) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        // Keys hold no glob characters (letters, digits, `_`, `-`, `.`).
        let pattern = format!("{key}{SEP}*");
        let (mut cursor, mut out) = (0u64, Vec::new());
        loop {
            let cmd = redis::cmd("HSCAN")
                .arg(self.store.k("overrides"))
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .clone();
            let page: redis::RedisResult<(u64, Vec<(String, String)>)> = cmd.query_async(self.c()?).await;
            let (next, fields) = self.check(page)?;
            for (field, text) in fields {
                if let Some((_, user)) = field.split_once(SEP) {
                    out.push((user.to_owned(), parse(&text, "overrides")?));
                }
            }
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    async fn segment(&mut self, key: &str) -> Result<Option<SegmentRecord>, StoreError> {
        self.hget("segments", key).await
    }

    async fn flags_using_segment(&mut self, key: &str) -> Result<Vec<String>, StoreError> {
        let cmd = redis::cmd("HGETALL").arg(self.store.k("flags")).clone();
        let all: redis::RedisResult<HashMap<String, String>> = cmd.query_async(self.c()?).await;
        let flags: Vec<FlagRecord> =
            self.check(all)?.values().map(|t| parse(t, "flags")).collect::<Result<_, _>>()?;
        Ok(flags_using(&flags, key))
    }

    async fn token_named(&mut self, name: &str) -> Result<Option<TokenRecord>, StoreError> {
        let Some(id) = self.hget_raw("token_names", name).await? else { return Ok(None) };
        self.hget_raw("tokens", &id).await?.map(|t| StoredToken::parse(&t)).transpose()
    }

    async fn declared_attributes(&mut self) -> Result<Vec<String>, StoreError> {
        let cmd = redis::cmd("SMEMBERS").arg(self.store.k("attributes")).clone();
        let names: redis::RedisResult<Vec<String>> = cmd.query_async(self.c()?).await;
        let mut names = self.check(names)?;
        names.sort();
        Ok(names)
    }

    async fn request(&mut self, id: u64) -> Result<Option<RequestRecord>, StoreError> {
        self.hget("requests", &id.to_string()).await
    }

    async fn commit(mut self, staged: &Staged, changes: &[Change]) -> Result<bool, StoreError> {
        let mut pipe = redis::pipe();
        for (key, record) in &staged.flags {
            pipe.cmd("HSET").arg(self.store.k("flags")).arg(key).arg(json(record)).ignore();
        }
        for ((key, user), value) in &staged.overrides {
            let field = format!("{key}{SEP}{user}");
            match value {
                Some(v) => {
                    pipe.cmd("HSET").arg(self.store.k("overrides")).arg(field).arg(v.to_string()).ignore()
                }
                None => pipe.cmd("HDEL").arg(self.store.k("overrides")).arg(field).ignore(),
            };
        }
        for (key, record) in &staged.segments {
            match record {
                Some(r) => pipe.cmd("HSET").arg(self.store.k("segments")).arg(key).arg(json(r)).ignore(),
                None => pipe.cmd("HDEL").arg(self.store.k("segments")).arg(key).ignore(),
            };
        }
        for (id, token) in &staged.tokens {
            pipe.cmd("HSET").arg(self.store.k("tokens")).arg(id).arg(StoredToken::of(token)).ignore();
            pipe.cmd("HSET").arg(self.store.k("token_names")).arg(&token.name).arg(id).ignore();
        }
        for (id, request) in &staged.requests {
            pipe.cmd("HSET").arg(self.store.k("requests")).arg(id).arg(json(request)).ignore();
        }
        let store = self.store.clone();
        let c = self.c()?;
        let done = store.commit(c, pipe, changes).await;
        if done.is_err() {
            *self.conn = None;
        }
        let done = done?;
        if done {
            store.inner.signal.send_modify(|n| *n += 1);
        }
        Ok(done)
    }

    async fn abort(mut self) -> Result<(), StoreError> {
        let c = self.c()?;
        let unwatched = redis::cmd("UNWATCH").query_async::<()>(c).await;
        self.check(unwatched)
    }
}

#[async_trait]
impl FlagReader for RedisStore {
    async fn load(&self) -> Result<StoreState, StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("GET")
            .arg(self.k("seq"))
            .cmd("HGETALL")
            .arg(self.k("flags"))
            .cmd("HGETALL")
            .arg(self.k("overrides"))
            .cmd("HGETALL")
            .arg(self.k("segments"));
        type Raw = (Option<u64>, HashMap<String, String>, HashMap<String, String>, HashMap<String, String>);
        let (seq, flags, overrides, segments): Raw = self.pipe(&pipe).await?;
        let mut flags: Vec<FlagRecord> = flags
            .values()
            .map(|t| parse::<FlagRecord>(t, "flags"))
            .filter(|r| !r.as_ref().is_ok_and(|r| r.archived))
            .collect::<Result<_, _>>()?;
        flags.sort_by(|a, b| a.key.cmp(&b.key));
        let live: std::collections::HashSet<&str> = flags.iter().map(|f| f.key.as_str()).collect();
        let mut overrides: Vec<OverrideRecord> = overrides
            .iter()
            .filter_map(|(field, value)| {
                let (key, user) = field.split_once(SEP)?;
                live.contains(key).then(|| {
                    Ok(OverrideRecord {
                        key: key.to_owned(),
                        user_id: user.to_owned(),
                        value: parse(value, "overrides")?,
                    })
                })
            })
            .collect::<Result<_, StoreError>>()?;
        overrides.sort_by(|a, b| (&a.key, &a.user_id).cmp(&(&b.key, &b.user_id)));
        let mut segments: Vec<SegmentRecord> =
            segments.values().map(|t| parse(t, "segments")).collect::<Result<_, _>>()?;
        segments.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(StoreState { seq: seq.unwrap_or(0), flags, overrides, segments })
    }

    async fn list_flags(&self) -> Result<Vec<FlagRecord>, StoreError> {
        let mut flags: Vec<FlagRecord> = self.all("flags").await?;
        flags.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(flags)
    }

    async fn flag(&self, key: &str) -> Result<Option<FlagRecord>, StoreError> {
        let text: Option<String> = self.query(redis::cmd("HGET").arg(self.k("flags")).arg(key)).await?;
        text.map(|t| parse(&t, "flags")).transpose()
    }

    async fn overrides(&self, key: &str) -> Result<Vec<OverrideRecord>, StoreError> {
        let mut out = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, page): (u64, Vec<(String, String)>) = self
                .query(
                    redis::cmd("HSCAN")
                        .arg(self.k("overrides"))
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{key}{SEP}*"))
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            for (field, value) in page {
                if let Some((k, user)) = field.split_once(SEP)
                    && k == key
                {
                    out.push(OverrideRecord {
                        key: key.to_owned(),
                        user_id: user.to_owned(),
                        value: parse(&value, "overrides")?,
                    });
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(out)
    }

    async fn changes_since(&self, after: u64, limit: u32) -> Result<Vec<Change>, StoreError> {
        let rows: Vec<String> = self
            .query(
                redis::cmd("ZRANGE")
                    .arg(self.k("changes"))
                    .arg(format!("({after}"))
                    .arg("+inf")
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        rows.iter().map(|t| parse(t, "changes")).collect()
    }

    async fn latest_seq(&self) -> Result<u64, StoreError> {
        Ok(self.query::<Option<u64>>(redis::cmd("GET").arg(self.k("seq"))).await?.unwrap_or(0))
    }

    async fn segments(&self) -> Result<Vec<SegmentRecord>, StoreError> {
        let mut all: Vec<SegmentRecord> = self.all("segments").await?;
        all.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(all)
    }

    async fn attributes(&self) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(self.k("attributes"))).await?;
        names.sort();
        Ok(names)
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        let rx = self.inner.signal.subscribe();
        self.ensure_listener();
        rx
    }
}

#[async_trait]
impl FlagWriter for RedisStore {
    async fn write(&self, write: Write) -> Result<Option<Change>, StoreError> {
        write::write(self, &write).await
    }

    async fn write_batch(&self, batch: Batch) -> Result<Vec<Change>, StoreError> {
        write::write_batch(self, &batch).await
    }

    async fn changes(&self, q: &ChangeQuery) -> Result<Vec<Change>, StoreError> {
        let limit = q.limit.min(1000) as usize;
        let mut out = Vec::new();
        let mut upper = match q.before_seq {
            Some(s) => format!("({s}"),
            None => "+inf".to_owned(),
        };
        loop {
            let rows: Vec<String> = self
                .query(
                    redis::cmd("ZRANGE")
                        .arg(self.k("changes"))
                        .arg(&upper)
                        .arg("-inf")
                        .arg("BYSCORE")
                        .arg("REV")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(500),
                )
                .await?;
            let Some(last) = rows.last() else { break };
            let last_seq = parse::<Change>(last, "changes")?.seq;
            for row in &rows {
                let c: Change = parse(row, "changes")?;
                if q.key.as_ref().is_none_or(|k| &c.key == k)
                    && q.actor.as_ref().is_none_or(|a| &c.actor == a)
                    && q.since.is_none_or(|t| c.at >= t)
                {
                    out.push(c);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            if rows.len() < 500 {
                break;
            }
            upper = format!("({last_seq}");
        }
        Ok(out)
    }

    async fn change(&self, seq: u64) -> Result<Option<Change>, StoreError> {
        let rows: Vec<String> =
            self.query(redis::cmd("ZRANGE").arg(self.k("changes")).arg(seq).arg(seq).arg("BYSCORE")).await?;
        rows.first().map(|t| parse(t, "changes")).transpose()
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
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for n in names {
            pipe.cmd("SADD").arg(self.k("attributes")).arg(n);
        }
        let added: Vec<i64> = self.pipe(&pipe).await?;
        Ok(names.iter().zip(added).filter(|(_, a)| *a == 1).map(|(n, _)| n.clone()).collect())
    }

    async fn requests(&self) -> Result<Vec<RequestRecord>, StoreError> {
        let mut all: Vec<RequestRecord> = self.all("requests").await?;
        all.sort_by_key(|r| r.id);
        Ok(all)
    }

    async fn request(&self, id: u64) -> Result<Option<RequestRecord>, StoreError> {
        let text: Option<String> = self.query(redis::cmd("HGET").arg(self.k("requests")).arg(id)).await?;
        text.map(|t| parse(&t, "requests")).transpose()
    }
}

#[async_trait]
impl TokenStore for RedisStore {
    async fn create_token(
        &self,
        token: TokenRecord,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<TokenRecord, StoreError> {
        write::create_token(self, token, (actor, reason)).await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let map: HashMap<String, String> = self.query(redis::cmd("HGETALL").arg(self.k("tokens"))).await?;
        let mut all: Vec<TokenRecord> =
            map.values().map(|t| StoredToken::parse(t)).collect::<Result<_, _>>()?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let text: Option<String> = self.query(redis::cmd("HGET").arg(self.k("tokens")).arg(id)).await?;
        text.map(|t| StoredToken::parse(&t)).transpose()
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
impl UsageStore for RedisStore {
    async fn record_usage(
        &self,
        counts: &[ff_core::UsageCount],
        unknown: &[(String, u64)],
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (day, ms) = (at.date().to_julian_day(), to_millis(at));
        let mut pipe = redis::pipe();
        for (key, rows) in super::group_usage(counts) {
            for (reason, variant, n) in rows {
                let field = format!("{key}{SEP}{day}{SEP}{reason}{SEP}{variant}");
                pipe.cmd("HINCRBY").arg(self.k("usage")).arg(&field).arg(n).ignore();
                pipe.cmd("HSET").arg(self.k("usage_last")).arg(&field).arg(ms).ignore();
            }
        }
        for (key, n) in unknown {
            pipe.cmd("HINCRBY").arg(self.k("unknown")).arg(key).arg(*n).ignore();
            pipe.cmd("HSETNX").arg(self.k("unknown_first")).arg(key).arg(ms).ignore();
            pipe.cmd("HSET").arg(self.k("unknown_last")).arg(key).arg(ms).ignore();
        }
        self.pipe::<()>(pipe.atomic()).await
    }

    async fn usage(&self, since: time::Date) -> Result<Vec<ff_core::UsageRow>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("HGETALL").arg(self.k("usage")).cmd("HGETALL").arg(self.k("usage_last"));
        let (counts, last): (HashMap<String, u64>, HashMap<String, i64>) = self.pipe(&pipe).await?;
        let mut rows = Vec::new();
        for (field, count) in counts {
            let mut parts = field.split(SEP);
            let (Some(key), Some(day), Some(reason), Some(variant)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Some(day) = day.parse().ok().and_then(|d| time::Date::from_julian_day(d).ok()) else {
                continue;
            };
            if day < since {
                continue;
            }
            rows.push(ff_core::UsageRow {
                key: key.to_owned(),
                day,
                reason: reason.to_owned(),
                variant: variant.to_owned(),
                count,
                last_at: from_millis(last.get(&field).copied().unwrap_or_default()),
            });
        }
        rows.sort_by(|a, b| {
            (&a.key, a.day, &a.reason, &a.variant).cmp(&(&b.key, b.day, &b.reason, &b.variant))
        });
        Ok(rows)
    }

    async fn unknown_flags(&self) -> Result<Vec<ff_core::UnknownFlag>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HGETALL")
            .arg(self.k("unknown"))
            .cmd("HGETALL")
            .arg(self.k("unknown_first"))
            .cmd("HGETALL")
            .arg(self.k("unknown_last"));
        type Raw = (HashMap<String, u64>, HashMap<String, i64>, HashMap<String, i64>);
        let (counts, first, last): Raw = self.pipe(&pipe).await?;
        let mut out: Vec<ff_core::UnknownFlag> = counts
            .into_iter()
            .map(|(key, count)| ff_core::UnknownFlag {
                first_at: from_millis(first.get(&key).copied().unwrap_or_default()),
                last_at: from_millis(last.get(&key).copied().unwrap_or_default()),
                key,
                count,
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn put_guard_counts(
        &self,
        rows: &[super::GuardCount],
        _at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        for r in rows {
            let key = self.k(&format!("guard:{}:{}", r.flag, r.epoch));
            let arm = serde_json::to_string(&r.arm).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            pipe.cmd("HSET").arg(&key).arg(format!("{}{SEP}{}", r.instance, r.variation)).arg(arm).ignore();
            pipe.cmd("EXPIRE").arg(&key).arg(super::GUARD_COUNTS_KEPT.whole_seconds()).ignore();
        }
        self.pipe::<()>(pipe.atomic()).await
    }

    async fn guard_counts(&self, flag: &str, epoch: i64) -> Result<Vec<super::GuardCount>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(self.k(&format!("guard:{flag}:{epoch}")));
        let (fields,): (HashMap<String, String>,) = self.pipe(&pipe).await?;
        let mut rows = Vec::with_capacity(fields.len());
        for (field, arm) in fields {
            let Some((instance, variation)) = field.split_once(SEP) else { continue };
            let Ok(variation) = variation.parse() else { continue };
            let arm = serde_json::from_str(&arm).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            rows.push(super::GuardCount {
                flag: flag.to_owned(),
                epoch,
                instance: instance.to_owned(),
                variation,
                arm,
            });
        }
        rows.sort_by(|a, b| (&a.instance, a.variation).cmp(&(&b.instance, b.variation)));
        Ok(rows)
    }

    async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        _at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        // Redis's own clock expires the key; its holder renews it, nobody else can.
        const TAKE_OR_RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
             return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end \
             if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end return 0";
        let mut pipe = redis::pipe();
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        pipe.cmd("EVAL").arg(TAKE_OR_RENEW).arg(1).arg(self.k(&format!("lease:{name}"))).arg(holder).arg(ms);
        let (held,): (i64,) = self.pipe(&pipe).await?;
        Ok(held == 1)
    }

    async fn put_record(
        &self,
        name: &str,
        body: Option<&serde_json::Value>,
        expected_version: u64,
    ) -> Result<u64, StoreError> {
        // `version:json` in one hash field, compared and set in one script.
        const PUT: &str = "local cur = redis.call('HGET', KEYS[1], ARGV[1]) \
             local v = 0 if cur then v = tonumber(string.match(cur, '^(%d+):')) end \
             if v ~= tonumber(ARGV[2]) then return -1 - v end \
             if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) \
             else redis.call('HSET', KEYS[1], ARGV[1], (v + 1) .. ':' .. ARGV[3]) end return v + 1";
        let mut pipe = redis::pipe();
        let text = body.map(ToString::to_string).unwrap_or_default();
        pipe.cmd("EVAL").arg(PUT).arg(1).arg(self.k("records")).arg(name).arg(expected_version).arg(text);
        let (done,): (i64,) = self.pipe(&pipe).await?;
        if done < 0 {
            return Err(super::record_conflict(name, expected_version, (-1 - done) as u64));
        }
        Ok(done as u64)
    }

    async fn records(&self, prefix: &str) -> Result<Vec<super::StoredRecord>, StoreError> {
        let map: HashMap<String, String> = self.query(redis::cmd("HGETALL").arg(self.k("records"))).await?;
        let mut out = Vec::new();
        for (name, text) in map {
            if !name.starts_with(prefix) {
                continue;
            }
            let (version, body) =
                text.split_once(':').ok_or_else(|| StoreError::Corrupt(format!("record {name:?}")))?;
            let version =
                version.parse().map_err(|_| StoreError::Corrupt(format!("record {name:?} version")))?;
            out.push(super::StoredRecord { body: parse(body, "records")?, name, version });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// A token as kept in Redis: with its secret's hash, which the API form never shows.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredToken {
    id: String,
    name: String,
    role: String,
    secret_hash: String,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl StoredToken {
    fn of(t: &TokenRecord) -> String {
        json(&StoredToken {
            id: t.id.clone(),
            name: t.name.clone(),
            role: t.role.as_str().to_owned(),
            secret_hash: t.secret_hash.clone(),
            created_at: to_millis(t.created_at),
            revoked_at: t.revoked_at.map(to_millis),
        })
    }

    fn parse(text: &str) -> Result<TokenRecord, StoreError> {
        let s: StoredToken = parse(text, "tokens")?;
        Ok(TokenRecord {
            role: super::Role::parse(&s.role)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown role {:?}", s.role)))?,
            id: s.id,
            name: s.name,
            secret_hash: s.secret_hash,
            created_at: from_millis(s.created_at),
            revoked_at: s.revoked_at.map(from_millis),
        })
    }
}
