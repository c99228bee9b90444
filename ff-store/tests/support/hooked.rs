//! A `MemoryStore` behind a hook that runs before every call (by method name):
//! tests switch the store off, or count calls.

#![allow(dead_code)] // each test file uses part of it

use std::sync::Arc;

use async_trait::async_trait;
use ff_core::{Change, FlagRecord, OverrideRecord, StoreState};
use ff_store::{
    Batch, ChangeQuery, FlagReader, FlagWriter, MemoryStore, StoreError, TokenRecord, TokenStore, UsageStore,
    Write,
};
use tokio::sync::watch;

type Hook = Arc<dyn Fn(&'static str) -> Result<(), StoreError> + Send + Sync>;

#[derive(Clone)]
pub(crate) struct Hooked {
    pub(crate) inner: MemoryStore,
    hook: Hook,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooked").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl Hooked {
    pub(crate) fn new(hook: impl Fn(&'static str) -> Result<(), StoreError> + Send + Sync + 'static) -> Self {
        Hooked { inner: MemoryStore::new(), hook: Arc::new(hook) }
    }
}

#[async_trait]
impl FlagReader for Hooked {
    async fn load(&self) -> Result<StoreState, StoreError> {
        (self.hook)("load")?;
        self.inner.load().await
    }
    async fn list_flags(&self) -> Result<Vec<FlagRecord>, StoreError> {
        (self.hook)("list_flags")?;
        self.inner.list_flags().await
    }
    async fn flag(&self, key: &str) -> Result<Option<FlagRecord>, StoreError> {
        (self.hook)("flag")?;
        self.inner.flag(key).await
    }
    async fn overrides(&self, key: &str) -> Result<Vec<OverrideRecord>, StoreError> {
        (self.hook)("overrides")?;
        self.inner.overrides(key).await
    }
    async fn changes_since(&self, after: u64, limit: u32) -> Result<Vec<Change>, StoreError> {
        (self.hook)("changes_since")?;
        self.inner.changes_since(after, limit).await
    }
    async fn latest_seq(&self) -> Result<u64, StoreError> {
        (self.hook)("latest_seq")?;
        self.inner.latest_seq().await
    }
    async fn segments(&self) -> Result<Vec<ff_core::SegmentRecord>, StoreError> {
        (self.hook)("segments")?;
        self.inner.segments().await
    }
    async fn attributes(&self) -> Result<Vec<String>, StoreError> {
        (self.hook)("attributes")?;
        self.inner.attributes().await
    }
    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.subscribe()
    }
}

#[async_trait]
impl FlagWriter for Hooked {
    async fn write(&self, write: Write) -> Result<Option<Change>, StoreError> {
        self.inner.write(write).await
    }
    async fn write_batch(&self, batch: Batch) -> Result<Vec<Change>, StoreError> {
        self.inner.write_batch(batch).await
    }
    async fn changes(&self, q: &ChangeQuery) -> Result<Vec<Change>, StoreError> {
        (self.hook)("changes")?;
        self.inner.changes(q).await
    }
    async fn change(&self, seq: u64) -> Result<Option<Change>, StoreError> {
        (self.hook)("change")?;
        self.inner.change(seq).await
    }
    async fn put_segment(
        &self,
        key: &str,
        def: ff_core::SegmentDef,
        expected: Option<u64>,
        who: (&str, Option<&str>),
    ) -> Result<Option<Change>, StoreError> {
        self.inner.put_segment(key, def, expected, who).await
    }
    async fn delete_segment(&self, key: &str, who: (&str, Option<&str>)) -> Result<Change, StoreError> {
        self.inner.delete_segment(key, who).await
    }
    async fn declare_attributes(&self, names: &[String]) -> Result<Vec<String>, StoreError> {
        (self.hook)("declare_attributes")?;
        self.inner.declare_attributes(names).await
    }
    async fn requests(&self) -> Result<Vec<ff_store::RequestRecord>, StoreError> {
        (self.hook)("requests")?;
        self.inner.requests().await
    }
    async fn request(&self, id: u64) -> Result<Option<ff_store::RequestRecord>, StoreError> {
        (self.hook)("request")?;
        self.inner.request(id).await
    }
}

#[async_trait]
impl TokenStore for Hooked {
    async fn create_token(
        &self,
        t: TokenRecord,
        actor: &str,
        why: Option<&str>,
    ) -> Result<TokenRecord, StoreError> {
        self.inner.create_token(t, actor, why).await
    }
    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.inner.tokens().await
    }
    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.token(id).await
    }
    async fn revoke_token(
        &self,
        name: &str,
        actor: &str,
        why: Option<&str>,
    ) -> Result<TokenRecord, StoreError> {
        self.inner.revoke_token(name, actor, why).await
    }
}

#[async_trait]
impl UsageStore for Hooked {
    async fn record_usage(
        &self,
        counts: &[ff_core::UsageCount],
        unknown: &[(String, u64)],
        at: time::OffsetDateTime,
    ) -> Result<(), StoreError> {
        (self.hook)("record_usage")?;
        self.inner.record_usage(counts, unknown, at).await
    }
    async fn usage(&self, since: time::Date) -> Result<Vec<ff_core::UsageRow>, StoreError> {
        (self.hook)("usage")?;
        self.inner.usage(since).await
    }
    async fn unknown_flags(&self) -> Result<Vec<ff_core::UnknownFlag>, StoreError> {
        (self.hook)("unknown_flags")?;
        self.inner.unknown_flags().await
    }
    async fn put_guard_counts(
        &self,
        rows: &[ff_store::GuardCount],
        at: time::OffsetDateTime,
    ) -> Result<(), StoreError> {
        (self.hook)("put_guard_counts")?;
        self.inner.put_guard_counts(rows, at).await
    }
    async fn guard_counts(&self, flag: &str, epoch: i64) -> Result<Vec<ff_store::GuardCount>, StoreError> {
        (self.hook)("guard_counts")?;
        self.inner.guard_counts(flag, epoch).await
    }
    async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
        at: time::OffsetDateTime,
    ) -> Result<bool, StoreError> {
        (self.hook)("lease")?;
        self.inner.lease(name, holder, ttl, at).await
    }
    async fn put_record(
        &self,
        name: &str,
        body: Option<&serde_json::Value>,
        expected: u64,
    ) -> Result<u64, StoreError> {
        (self.hook)("put_record")?;
        self.inner.put_record(name, body, expected).await
    }
    async fn records(&self, prefix: &str) -> Result<Vec<ff_store::StoredRecord>, StoreError> {
        (self.hook)("records")?;
        self.inner.records(prefix).await
    }
}
