//! An in-memory store: for tests and single-process demos. Nothing survives a restart.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::watch;

use super::write::{self, Backend, Staged, WriteTx};
use super::{
    Batch, ChangeQuery, FlagReader, FlagWriter, RequestRecord, TokenRecord, TokenStore, UsageStore, Write,
    flags_using,
};
use crate::error::StoreError;
use ff_core::SegmentDef;
use ff_core::{Change, FlagRecord, OverrideRecord, SegmentRecord, StoreState};

/// A store in process memory. Clones share the same data.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    data: Mutex<Data>,
    signal: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Data {
    flags: BTreeMap<String, FlagRecord>,
    overrides: BTreeMap<(String, String), serde_json::Value>,
    changes: Vec<Change>,
    tokens: BTreeMap<String, TokenRecord>,
    segments: BTreeMap<String, SegmentRecord>,
    attributes: std::collections::BTreeSet<String>,
    usage: BTreeMap<(String, time::Date, String, String), (u64, time::OffsetDateTime)>,
    unknown: BTreeMap<String, ff_core::UnknownFlag>,
    guard_counts: BTreeMap<(String, i64, String, u32), (ff_core::guard::Arm, time::OffsetDateTime)>,
    leases: BTreeMap<String, (String, time::OffsetDateTime)>,
    requests: BTreeMap<u64, RequestRecord>,
    records: BTreeMap<String, (u64, serde_json::Value)>,
}

/// A write transaction: reads the data as it is, and commits if no other writer
/// committed since it began (the data is not locked across awaits).
#[derive(Debug)]
pub(crate) struct MemoryTx {
    store: MemoryStore,
    last: u64,
}

#[async_trait]
impl Backend for MemoryStore {
    type Tx = MemoryTx;

    async fn begin(&self) -> Result<(MemoryTx, u64), StoreError> {
        let last = self.data().changes.len() as u64;
        Ok((MemoryTx { store: self.clone(), last }, last))
    }
}

#[async_trait]
impl WriteTx for MemoryTx {
    async fn flag(&mut self, key: &str) -> Result<Option<FlagRecord>, StoreError> {
        Ok(self.store.data().flags.get(key).cloned())
    }

    async fn override_value(
        &mut self,
        key: &str,
        user: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self.store.data().overrides.get(&(key.to_owned(), user.to_owned())).cloned())
    }

    async fn overrides_of(&mut self, key: &str) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let d = self.store.data();
        Ok(d.overrides
            .iter()
            .filter(|((k, _), _)| k == key)
            .map(|((_, u), v)| (u.clone(), v.clone()))
            .collect())
    }

    async fn segment(&mut self, key: &str) -> Result<Option<SegmentRecord>, StoreError> {
        Ok(self.store.data().segments.get(key).cloned())
    }

    async fn flags_using_segment(&mut self, key: &str) -> Result<Vec<String>, StoreError> {
        let d = self.store.data();
        let flags: Vec<FlagRecord> = d.flags.values().filter(|f| !f.archived).cloned().collect();
        Ok(flags_using(&flags, key))
    }

    async fn token_named(&mut self, name: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.store.data().tokens.values().find(|t| t.name == name).cloned())
    }

    async fn declared_attributes(&mut self) -> Result<Vec<String>, StoreError> {
        Ok(self.store.data().attributes.iter().cloned().collect())
    }

    async fn request(&mut self, id: u64) -> Result<Option<RequestRecord>, StoreError> {
        Ok(self.store.data().requests.get(&id).cloned())
    }

    async fn commit(self, staged: &Staged, changes: &[Change]) -> Result<bool, StoreError> {
        let mut d = self.store.data();
        if d.changes.len() as u64 != self.last {
            return Ok(false);
        }
        for (key, record) in &staged.flags {
            d.flags.insert(key.clone(), record.clone());
        }
        for (id, value) in &staged.overrides {
            match value {
                Some(v) => d.overrides.insert(id.clone(), v.clone()),
                None => d.overrides.remove(id),
            };
        }
        for (key, record) in &staged.segments {
            match record {
                Some(r) => d.segments.insert(key.clone(), r.clone()),
                None => d.segments.remove(key),
            };
        }
        for (id, token) in &staged.tokens {
            d.tokens.insert(id.clone(), token.clone());
        }
        for (id, request) in &staged.requests {
            d.requests.insert(*id, request.clone());
        }
        d.changes.extend(changes.iter().cloned());
        drop(d);
        self.store.inner.signal.send_modify(|n| *n += 1);
        Ok(true)
    }

    async fn abort(self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore { inner: Arc::new(Inner { data: Mutex::default(), signal: watch::Sender::new(0) }) }
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        // A panic while holding the lock cannot leave `Data` half-written: every
        // write is computed first and applied with infallible inserts.
        self.inner.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl FlagReader for MemoryStore {
    async fn load(&self) -> Result<StoreState, StoreError> {
        let d = self.data();
        let flags: Vec<FlagRecord> = d.flags.values().filter(|f| !f.archived).cloned().collect();
        let overrides = d
            .overrides
            .iter()
            .filter(|((k, _), _)| d.flags.get(k).is_some_and(|f| !f.archived))
            .map(|((key, user_id), value)| OverrideRecord {
                key: key.clone(),
                user_id: user_id.clone(),
                value: value.clone(),
            })
            .collect();
        let segments = d.segments.values().cloned().collect();
        Ok(StoreState { seq: d.changes.len() as u64, flags, overrides, segments })
    }

    async fn list_flags(&self) -> Result<Vec<FlagRecord>, StoreError> {
        Ok(self.data().flags.values().cloned().collect())
    }

    async fn flag(&self, key: &str) -> Result<Option<FlagRecord>, StoreError> {
        Ok(self.data().flags.get(key).cloned())
    }

    async fn overrides(&self, key: &str) -> Result<Vec<OverrideRecord>, StoreError> {
        let d = self.data();
        Ok(d.overrides
            .iter()
            .filter(|((k, _), _)| k == key)
            .map(|((key, user_id), value)| OverrideRecord {
                key: key.clone(),
                user_id: user_id.clone(),
                value: value.clone(),
            })
            .collect())
    }

    async fn changes_since(&self, after: u64, limit: u32) -> Result<Vec<Change>, StoreError> {
        let d = self.data();
        let start = usize::try_from(after).unwrap_or(usize::MAX).min(d.changes.len());
        Ok(d.changes[start..].iter().take(limit as usize).cloned().collect())
    }

    async fn latest_seq(&self) -> Result<u64, StoreError> {
        Ok(self.data().changes.len() as u64)
    }

    async fn segments(&self) -> Result<Vec<SegmentRecord>, StoreError> {
        Ok(self.data().segments.values().cloned().collect())
    }

    async fn attributes(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.data().attributes.iter().cloned().collect())
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.signal.subscribe()
    }
}

#[async_trait]
impl FlagWriter for MemoryStore {
    async fn write(&self, write: Write) -> Result<Option<Change>, StoreError> {
        write::write(self, &write).await
    }

    async fn write_batch(&self, batch: Batch) -> Result<Vec<Change>, StoreError> {
        write::write_batch(self, &batch).await
    }

    async fn changes(&self, q: &ChangeQuery) -> Result<Vec<Change>, StoreError> {
        let d = self.data();
        Ok(d.changes
            .iter()
            .rev()
            .filter(|c| q.key.as_ref().is_none_or(|k| &c.key == k))
            .filter(|c| q.actor.as_ref().is_none_or(|a| &c.actor == a))
            .filter(|c| q.since.is_none_or(|t| c.at >= t))
            .filter(|c| q.before_seq.is_none_or(|s| c.seq < s))
            .take(q.limit.min(1000) as usize)
            .cloned()
            .collect())
    }

    async fn change(&self, seq: u64) -> Result<Option<Change>, StoreError> {
        let d = self.data();
        Ok(seq.checked_sub(1).and_then(|i| d.changes.get(i as usize)).cloned())
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
        let mut d = self.data();
        Ok(names.iter().filter(|n| d.attributes.insert((*n).clone())).cloned().collect())
    }

    async fn requests(&self) -> Result<Vec<RequestRecord>, StoreError> {
        Ok(self.data().requests.values().cloned().collect())
    }

    async fn request(&self, id: u64) -> Result<Option<RequestRecord>, StoreError> {
        Ok(self.data().requests.get(&id).cloned())
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn create_token(
        &self,
        token: TokenRecord,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<TokenRecord, StoreError> {
        write::create_token(self, token, (actor, reason)).await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let mut all: Vec<TokenRecord> = self.data().tokens.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.data().tokens.get(id).cloned())
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
impl UsageStore for MemoryStore {
    async fn record_usage(
        &self,
        counts: &[ff_core::UsageCount],
        unknown: &[(String, u64)],
        at: time::OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut d = self.data();
        for (key, rows) in super::group_usage(counts) {
            for (reason, variant, n) in rows {
                let e = d
                    .usage
                    .entry((key.to_owned(), at.date(), reason.to_owned(), variant.to_owned()))
                    .or_insert((0, at));
                *e = (e.0 + n, at);
            }
        }
        for (key, n) in unknown {
            let e = d.unknown.entry(key.clone()).or_insert_with(|| ff_core::UnknownFlag {
                key: key.clone(),
                count: 0,
                first_at: at,
                last_at: at,
            });
            e.count += n;
            e.last_at = at;
        }
        Ok(())
    }

    async fn usage(&self, since: time::Date) -> Result<Vec<ff_core::UsageRow>, StoreError> {
        let d = self.data();
        Ok(d.usage
            .iter()
            .filter(|((_, day, ..), _)| *day >= since)
            .map(|((key, day, reason, variant), (count, last_at))| ff_core::UsageRow {
                key: key.clone(),
                day: *day,
                reason: reason.clone(),
                variant: variant.clone(),
                count: *count,
                last_at: *last_at,
            })
            .collect())
    }

    async fn unknown_flags(&self) -> Result<Vec<ff_core::UnknownFlag>, StoreError> {
        Ok(self.data().unknown.values().cloned().collect())
    }

    async fn put_guard_counts(
        &self,
        rows: &[super::GuardCount],
        at: time::OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut d = self.data();
        for r in rows {
            let key = (r.flag.clone(), r.epoch, r.instance.clone(), r.variation);
            d.guard_counts.insert(key, (r.arm.clone(), at));
        }
        d.guard_counts.retain(|_, (_, updated)| *updated >= at - super::GUARD_COUNTS_KEPT);
        Ok(())
    }

    async fn guard_counts(&self, flag: &str, epoch: i64) -> Result<Vec<super::GuardCount>, StoreError> {
        let d = self.data();
        Ok(d.guard_counts
            .iter()
            .filter(|((f, e, ..), _)| f == flag && *e == epoch)
            .map(|((flag, epoch, instance, variation), (arm, _))| super::GuardCount {
                flag: flag.clone(),
                epoch: *epoch,
                instance: instance.clone(),
                variation: *variation,
                arm: arm.clone(),
            })
            .collect())
    }

    async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
        at: time::OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut d = self.data();
        let held = d.leases.get(name).is_some_and(|(h, until)| h != holder && *until >= at);
        if !held {
            d.leases.insert(name.to_owned(), (holder.to_owned(), at + ttl));
        }
        Ok(!held)
    }

    async fn put_record(
        &self,
        name: &str,
        body: Option<&serde_json::Value>,
        expected_version: u64,
    ) -> Result<u64, StoreError> {
        let mut d = self.data();
        let actual = d.records.get(name).map_or(0, |(v, _)| *v);
        if actual != expected_version {
            return Err(super::record_conflict(name, expected_version, actual));
        }
        match body {
            Some(b) => d.records.insert(name.to_owned(), (actual + 1, b.clone())),
            None => d.records.remove(name),
        };
        Ok(actual + 1)
    }

    async fn records(&self, prefix: &str) -> Result<Vec<super::StoredRecord>, StoreError> {
        let d = self.data();
        Ok(d.records
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(name, (version, body))| super::StoredRecord {
                name: name.clone(),
                version: *version,
                body: body.clone(),
            })
            .collect())
    }
}
