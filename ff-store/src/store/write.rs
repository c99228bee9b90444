//! The write path every backend shares. A backend supplies a transaction that can
//! read a flag, an override, whether a segment exists and the declared attributes,
//! and commit staged rows with their change rows; this module plans each mutation
//! against what the transaction sees (the batch's earlier mutations on top), checks
//! what new targeting refers to, numbers the change rows and commits — or, when an
//! optimistic backend reports that another writer came first, starts again.

use std::collections::BTreeMap;

use async_trait::async_trait;
use ff_core::{Change, FlagRecord};
use time::OffsetDateTime;

use super::{Mutation, Plan, check_attributes, check_segment, now, plan};
use crate::error::StoreError;

/// How often a write is retried when other writers keep committing first.
const MAX_ATTEMPTS: usize = 100;

/// Rows a transaction will write, by key: what later mutations of a batch read.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    /// Flags to insert or replace.
    pub(crate) flags: BTreeMap<String, FlagRecord>,
    /// Overrides to set (`Some`) or delete (`None`), by (flag, user).
    pub(crate) overrides: BTreeMap<(String, String), Option<serde_json::Value>>,
}

impl Staged {
    fn stage(&mut self, plan: &Plan) {
        match plan {
            Plan::PutFlag { record, .. } => {
                self.flags.insert(record.key.clone(), record.clone());
            }
            Plan::PutOverride { key, user_id, value, .. } => {
                self.overrides.insert((key.clone(), user_id.clone()), Some(value.clone()));
            }
            Plan::DeleteOverride { key, user_id, .. } => {
                self.overrides.insert((key.clone(), user_id.clone()), None);
            }
        }
    }
}

/// A backend that starts write transactions.
#[async_trait]
pub(crate) trait Backend: Sync {
    /// Its transaction.
    type Tx: WriteTx;

    /// Starts a transaction; returns it with the seq of the last change.
    async fn begin(&self) -> Result<(Self::Tx, u64), StoreError>;
}

/// What the shared write path needs of one backend transaction.
#[async_trait]
pub(crate) trait WriteTx: Send + Sized {
    /// One flag, archived or not, as the transaction sees it.
    async fn flag(&mut self, key: &str) -> Result<Option<FlagRecord>, StoreError>;

    /// One user's value of one flag.
    async fn override_value(
        &mut self,
        key: &str,
        user: &str,
    ) -> Result<Option<serde_json::Value>, StoreError>;

    /// Whether segment `key` exists.
    async fn segment_exists(&mut self, key: &str) -> Result<bool, StoreError>;

    /// The attributes the application declared.
    async fn declared_attributes(&mut self) -> Result<Vec<String>, StoreError>;

    /// Writes `staged` and `changes`, moves the seq to the last change's, commits and
    /// notifies. `Ok(false)`: another writer committed first and nothing was written.
    async fn commit(self, staged: &Staged, changes: &[Change]) -> Result<bool, StoreError>;

    /// Ends the transaction without writing.
    async fn abort(self) -> Result<(), StoreError>;
}

/// Applies `mutations` in one transaction: all of them, or on the first refusal none
/// (in a batch, the refusal names its index). No-op mutations write no change row.
pub(crate) async fn write_all<B: Backend>(
    backend: &B,
    mutations: &[Mutation],
    who: (&str, Option<&str>),
    batched: bool,
) -> Result<Vec<Change>, StoreError> {
    for _ in 0..MAX_ATTEMPTS {
        let (mut tx, last) = backend.begin().await?;
        let at = now();
        let (mut staged, mut declared, mut plans) = (Staged::default(), None, Vec::new());
        for (index, m) in mutations.iter().enumerate() {
            match plan_one(&mut tx, &mut staged, &mut declared, m, at).await {
                Ok(Some(p)) => plans.push(p),
                Ok(None) => {}
                Err(e) => {
                    // The refusal is what the caller needs to hear, not a failed rollback.
                    let _ = tx.abort().await;
                    return Err(if batched { StoreError::InBatch { index, error: Box::new(e) } } else { e });
                }
            }
        }
        if plans.is_empty() {
            tx.abort().await?;
            return Ok(Vec::new());
        }
        let batch_end = batched.then_some(last + plans.len() as u64);
        let changes: Vec<Change> = plans
            .iter()
            .zip(last + 1..)
            .map(|(p, seq)| Change { batch_end, ..p.change(seq, at, who) })
            .collect();
        if tx.commit(&staged, &changes).await? {
            return Ok(changes);
        }
        tokio::task::yield_now().await;
    }
    Err(StoreError::Corrupt(format!("too many concurrent writers: gave up after {MAX_ATTEMPTS} attempts")))
}

/// Plans one mutation against the transaction with the batch's earlier ones on top,
/// and checks the segments and attributes of targeting it brings into force.
async fn plan_one<T: WriteTx>(
    tx: &mut T,
    staged: &mut Staged,
    declared: &mut Option<Vec<String>>,
    m: &Mutation,
    at: OffsetDateTime,
) -> Result<Option<Plan>, StoreError> {
    let key = m.key();
    let current = match staged.flags.get(key) {
        Some(r) => Some(r.clone()),
        None => tx.flag(key).await?,
    };
    let current_override = match m.user_id() {
        Some(user) => match staged.overrides.get(&(key.to_owned(), user.to_owned())) {
            Some(v) => v.clone(),
            None => tx.override_value(key, user).await?,
        },
        None => None,
    };
    let Some(plan) = plan(m, current.as_ref(), current_override.as_ref(), at)? else {
        return Ok(None);
    };
    if let Some(t) = plan.new_targeting() {
        let used = t.attributes();
        if !used.is_empty() {
            if declared.is_none() {
                *declared = Some(tx.declared_attributes().await?);
            }
            check_attributes(key, used, declared.as_deref().unwrap_or_default())?;
        }
        for segment in t.segment_keys() {
            check_segment(key, segment, tx.segment_exists(segment).await?)?;
        }
    }
    staged.stage(&plan);
    Ok(Some(plan))
}
