//! An in-memory store: for tests and single-process demos. Nothing survives a restart.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::watch;

use super::{
    ChangeQuery, Plan, Store, TokenRecord, Write, check_attributes, check_segments, flags_using,
    mutation_attributes, plan, plan_segment, segment_change, token_audit, validate_token_name,
};
use crate::error::StoreError;
use crate::model::{Action, Change, FlagRecord, OverrideRecord, SegmentRecord, StoreState, now};
use crate::targeting::SegmentDef;

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
    unknown: BTreeMap<String, crate::UnknownFlag>,
}

impl Data {
    fn log(
        &mut self,
        action: Action,
        who: (&str, Option<&str>),
        subject: &str,
        after: serde_json::Value,
    ) -> Change {
        let (actor, reason) = who;
        let change = Change {
            seq: self.changes.len() as u64 + 1,
            at: now(),
            actor: actor.to_owned(),
            action,
            key: String::new(),
            subject: Some(subject.to_owned()),
            before: None,
            after: Some(after),
            reason: reason.map(str::to_owned),
        };
        self.changes.push(change.clone());
        change
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
impl Store for MemoryStore {
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

    async fn write(&self, write: Write) -> Result<Option<Change>, StoreError> {
        let change = {
            let mut d = self.data();
            let key = write.mutation.key().to_owned();
            check_segments(&write.mutation, |k| d.segments.contains_key(k))?;
            let declared: Vec<String> = d.attributes.iter().cloned().collect();
            let used = mutation_attributes(&write.mutation);
            check_attributes(&key, used.iter().map(String::as_str), &declared)?;
            let okey = write.mutation.user_id().map(|u| (key.clone(), u.to_owned()));
            let current_override = okey.as_ref().and_then(|k| d.overrides.get(k));
            let Some(plan) = plan(&write.mutation, d.flags.get(&key), current_override, now())? else {
                return Ok(None);
            };
            let change = plan.change(d.changes.len() as u64 + 1, now(), &write);
            match plan {
                Plan::PutFlag { record, .. } => {
                    d.flags.insert(key, record);
                }
                Plan::PutOverride { key, user_id, value, .. } => {
                    d.overrides.insert((key, user_id), value);
                }
                Plan::DeleteOverride { key, user_id, .. } => {
                    d.overrides.remove(&(key, user_id));
                }
            }
            d.changes.push(change.clone());
            change
        };
        self.inner.signal.send_modify(|n| *n += 1);
        Ok(Some(change))
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

    async fn create_token(
        &self,
        token: TokenRecord,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<TokenRecord, StoreError> {
        validate_token_name(&token.name).map_err(|e| StoreError::invalid("token", e))?;
        {
            let mut d = self.data();
            if d.tokens.values().any(|t| t.name == token.name) {
                return Err(StoreError::TokenExists(token.name));
            }
            d.tokens.insert(token.id.clone(), token.clone());
            d.log(Action::TokenCreate, (actor, reason), &token.name, token_audit(&token));
        }
        self.inner.signal.send_modify(|n| *n += 1);
        Ok(token)
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
        let token = {
            let mut d = self.data();
            let token = d.tokens.values_mut().find(|t| t.name == name && t.revoked_at.is_none());
            let Some(token) = token else { return Err(StoreError::UnknownToken(name.to_owned())) };
            token.revoked_at = Some(now());
            let token = token.clone();
            d.log(Action::TokenRevoke, (actor, reason), name, token_audit(&token));
            token
        };
        self.inner.signal.send_modify(|n| *n += 1);
        Ok(token)
    }

    async fn segments(&self) -> Result<Vec<SegmentRecord>, StoreError> {
        Ok(self.data().segments.values().cloned().collect())
    }

    async fn put_segment(
        &self,
        key: &str,
        definition: SegmentDef,
        expected_version: Option<u64>,
        who: (&str, Option<&str>),
    ) -> Result<Option<Change>, StoreError> {
        let change = {
            let mut d = self.data();
            let declared: Vec<String> = d.attributes.iter().cloned().collect();
            check_attributes(key, definition.attributes(), &declared)?;
            let current = d.segments.get(key);
            let Some(record) = plan_segment(key, definition, current, expected_version, now())? else {
                return Ok(None);
            };
            let seq = d.changes.len() as u64 + 1;
            let change = segment_change(seq, Action::SegmentPut, key, current, Some(&record), who);
            d.segments.insert(key.to_owned(), record);
            d.changes.push(change.clone());
            change
        };
        self.inner.signal.send_modify(|n| *n += 1);
        Ok(Some(change))
    }

    async fn delete_segment(&self, key: &str, who: (&str, Option<&str>)) -> Result<Change, StoreError> {
        let change = {
            let mut d = self.data();
            let Some(current) = d.segments.get(key).cloned() else {
                return Err(StoreError::UnknownSegment(key.to_owned()));
            };
            let flags: Vec<FlagRecord> = d.flags.values().cloned().collect();
            let users = flags_using(&flags, key);
            if !users.is_empty() {
                return Err(StoreError::SegmentInUse { key: key.to_owned(), flags: users });
            }
            let seq = d.changes.len() as u64 + 1;
            let change = segment_change(seq, Action::SegmentDelete, key, Some(&current), None, who);
            d.segments.remove(key);
            d.changes.push(change.clone());
            change
        };
        self.inner.signal.send_modify(|n| *n += 1);
        Ok(change)
    }

    async fn attributes(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.data().attributes.iter().cloned().collect())
    }

    async fn declare_attributes(&self, names: &[String]) -> Result<Vec<String>, StoreError> {
        let mut d = self.data();
        Ok(names.iter().filter(|n| d.attributes.insert((*n).clone())).cloned().collect())
    }

    async fn record_usage(
        &self,
        counts: &[crate::UsageCount],
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
            let e = d.unknown.entry(key.clone()).or_insert_with(|| crate::UnknownFlag {
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

    async fn usage(&self, since: time::Date) -> Result<Vec<crate::UsageRow>, StoreError> {
        let d = self.data();
        Ok(d.usage
            .iter()
            .filter(|((_, day, ..), _)| *day >= since)
            .map(|((key, day, reason, variant), (count, last_at))| crate::UsageRow {
                key: key.clone(),
                day: *day,
                reason: reason.clone(),
                variant: variant.clone(),
                count: *count,
                last_at: *last_at,
            })
            .collect())
    }

    async fn unknown_flags(&self) -> Result<Vec<crate::UnknownFlag>, StoreError> {
        Ok(self.data().unknown.values().cloned().collect())
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.signal.subscribe()
    }
}
