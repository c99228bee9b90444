//! The write path every backend shares. A backend supplies a transaction that can
//! read a flag, an override, a segment, a token and the declared attributes, and
//! commit staged rows with their change rows; this module plans each write against
//! what the transaction sees (a batch's earlier mutations on top), checks what new
//! targeting and segments refer to, numbers the change rows and commits — or, when
//! an optimistic backend reports that another writer came first, starts again.
//! Flag, override, segment and token writes all take this one path.

use std::collections::BTreeMap;

use async_trait::async_trait;
use ff_core::{Action, Change, FlagRecord, SegmentDef, SegmentRecord};
use time::OffsetDateTime;

use super::{
    Batch, FlagReader, MAX_REQUEST_BYTES, Mutation, Note, Plan, RequestPut, RequestRecord, TokenRecord,
    Write, check_attributes, check_segment, now, plan, plan_segment, validate_token_name,
};
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
    /// Segments to insert or replace (`Some`) or delete (`None`).
    pub(crate) segments: BTreeMap<String, Option<SegmentRecord>>,
    /// Tokens to insert or replace, by id.
    pub(crate) tokens: BTreeMap<String, TokenRecord>,
    /// Change requests to insert or replace, by id.
    pub(crate) requests: BTreeMap<u64, RequestRecord>,
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
            Plan::PutSegment { record, .. } => {
                self.segments.insert(record.key.clone(), Some(record.clone()));
            }
            Plan::DeleteSegment { before } => {
                self.segments.insert(before.key.clone(), None);
            }
            Plan::PutToken { token, .. } => {
                self.tokens.insert(token.id.clone(), token.clone());
            }
            Plan::PutRequest { record, .. } => {
                self.requests.insert(record.id, record.clone());
            }
            Plan::Note(_) => {}
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

    /// Every user's value of one flag.
    async fn overrides_of(&mut self, key: &str) -> Result<Vec<(String, serde_json::Value)>, StoreError>;

    /// One segment.
    async fn segment(&mut self, key: &str) -> Result<Option<SegmentRecord>, StoreError>;

    /// The live flags whose rules name segment `key`.
    async fn flags_using_segment(&mut self, key: &str) -> Result<Vec<String>, StoreError>;

    /// The token named `name`, revoked or not (names are never reused).
    async fn token_named(&mut self, name: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// The attributes the application declared, sorted.
    async fn declared_attributes(&mut self) -> Result<Vec<String>, StoreError>;

    /// One change request.
    async fn request(&mut self, id: u64) -> Result<Option<RequestRecord>, StoreError>;

    /// Writes `staged` and `changes`, moves the seq to the last change's, commits and
    /// notifies. `Ok(false)`: another writer committed first and nothing was written.
    async fn commit(self, staged: &Staged, changes: &[Change]) -> Result<bool, StoreError>;

    /// Ends the transaction without writing.
    async fn abort(self) -> Result<(), StoreError>;
}

/// One write the shared path carries out.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WriteOp<'a> {
    /// Flag and override mutations, then change requests: all of them or none.
    /// `batched`: a refusal names its index, and the change rows carry the batch's end.
    Flags { mutations: &'a [Mutation], batched: bool, requests: &'a [RequestPut], notes: &'a [Note] },
    /// Creates or replaces a segment.
    PutSegment { key: &'a str, definition: &'a SegmentDef, expected_version: Option<u64> },
    /// Deletes a segment no live flag uses.
    DeleteSegment { key: &'a str },
    /// Creates a token under a name never used before.
    CreateToken(&'a TokenRecord),
    /// Revokes the live token named so.
    RevokeToken { name: &'a str },
}

/// Carries out `op` in one transaction and returns what it wrote: the change rows
/// (none when nothing changed) and the staged rows. On a refusal nothing is written.
pub(crate) async fn run<B: Backend>(
    backend: &B,
    op: WriteOp<'_>,
    who: impl Into<Who<'_>>,
) -> Result<(Vec<Change>, Staged), StoreError> {
    let who = who.into();
    // Every write comes here, from every route: one cap for the reason.
    if who.reason.is_some_and(|r| r.len() > ff_core::MAX_TEXT_BYTES) {
        return Err(StoreError::TooLong { field: "reason", max: ff_core::MAX_TEXT_BYTES });
    }
    for _ in 0..MAX_ATTEMPTS {
        let (mut tx, last) = backend.begin().await?;
        let at = now();
        let mut staged = Staged::default();
        let plans = match plan_op(&mut tx, &mut staged, op, at).await {
            Ok(plans) => plans,
            Err(e) => {
                // The refusal is what the caller needs to hear, not a failed rollback.
                let _ = tx.abort().await;
                return Err(e);
            }
        };
        if plans.is_empty() {
            tx.abort().await?;
            return Ok((Vec::new(), staged));
        }
        let batched = matches!(op, WriteOp::Flags { batched: true, .. });
        let batch_end = batched.then_some(last + plans.len() as u64);
        let changes: Vec<Change> = plans
            .iter()
            .zip(last + 1..)
            .map(|(p, seq)| Change {
                batch_end,
                approved_by: who.approved_by.map(str::to_owned),
                emergency: who.emergency,
                ..p.change(seq, at, (who.actor, who.reason))
            })
            .collect();
        if tx.commit(&staged, &changes).await? {
            return Ok((changes, staged));
        }
        tokio::task::yield_now().await;
    }
    Err(StoreError::Corrupt(format!("too many concurrent writers: gave up after {MAX_ATTEMPTS} attempts")))
}

/// Plans `op` against the transaction, staging what it will write.
async fn plan_op<T: WriteTx>(
    tx: &mut T,
    staged: &mut Staged,
    op: WriteOp<'_>,
    at: OffsetDateTime,
) -> Result<Vec<Plan>, StoreError> {
    let plan = match op {
        WriteOp::Flags { mutations, batched, requests, notes } => {
            let mut plans = plan_mutations(tx, staged, mutations, batched, at).await?;
            for put in requests {
                let p = plan_request(tx, staged, put).await?;
                staged.stage(&p);
                plans.push(p);
            }
            for n in notes {
                if !n.action.is_note() {
                    return Err(StoreError::Corrupt(format!("{} is not a note", n.action.as_str())));
                }
                plans.push(Plan::Note(n.clone()));
            }
            return Ok(plans);
        }
        WriteOp::PutSegment { key, definition, expected_version } => {
            let declared = tx.declared_attributes().await?;
            check_attributes(key, definition.attributes(), &declared)?;
            let before = tx.segment(key).await?;
            // Compiling its rules is CPU work: off the async workers.
            let (k, d, b) = (key.to_owned(), definition.clone(), before.clone());
            tokio::task::spawn_blocking(move || plan_segment(&k, d, b.as_ref(), expected_version, at))
                .await
                .map_err(|e| StoreError::Corrupt(format!("planning a segment failed: {e}")))??
                .map(|record| Plan::PutSegment { record, before })
        }
        WriteOp::DeleteSegment { key } => {
            let before = tx.segment(key).await?.ok_or_else(|| StoreError::UnknownSegment(key.to_owned()))?;
            let flags = tx.flags_using_segment(key).await?;
            if !flags.is_empty() {
                return Err(StoreError::SegmentInUse { key: key.to_owned(), flags });
            }
            Some(Plan::DeleteSegment { before })
        }
        WriteOp::CreateToken(token) => {
            if tx.token_named(&token.name).await?.is_some() {
                return Err(StoreError::TokenExists(token.name.clone()));
            }
            Some(Plan::PutToken { token: token.clone(), action: Action::TokenCreate })
        }
        WriteOp::RevokeToken { name } => {
            let live = tx.token_named(name).await?.filter(|t| t.revoked_at.is_none());
            let mut token = live.ok_or_else(|| StoreError::UnknownToken(name.to_owned()))?;
            token.revoked_at = Some(at);
            Some(Plan::PutToken { token, action: Action::TokenRevoke })
        }
    };
    if let Some(p) = &plan {
        staged.stage(p);
    }
    Ok(plan.into_iter().collect())
}

/// Who writes: recorded in every change row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Who<'a> {
    pub(crate) actor: &'a str,
    pub(crate) reason: Option<&'a str>,
    pub(crate) approved_by: Option<&'a str>,
    pub(crate) emergency: bool,
}

impl<'a> From<(&'a str, Option<&'a str>)> for Who<'a> {
    fn from((actor, reason): (&'a str, Option<&'a str>)) -> Self {
        Who { actor, reason, approved_by: None, emergency: false }
    }
}

/// A change request's write, if the stored one is at the version it expects.
async fn plan_request<T: WriteTx>(tx: &mut T, staged: &Staged, put: &RequestPut) -> Result<Plan, StoreError> {
    let before = match staged.requests.get(&put.id) {
        Some(r) => Some(r.clone()),
        None => tx.request(put.id).await?,
    };
    let actual = before.as_ref().map_or(0, |r| r.version);
    if actual != put.expected_version {
        return Err(StoreError::RequestConflict { id: put.id, expected: put.expected_version, actual });
    }
    if put.body.to_string().len() > MAX_REQUEST_BYTES {
        return Err(StoreError::TooLong { field: "request", max: MAX_REQUEST_BYTES });
    }
    let record =
        RequestRecord { id: put.id, key: put.key.clone(), version: actual + 1, body: put.body.clone() };
    Ok(Plan::PutRequest { record, before })
}

/// Plans a batch's mutations in order; on the first refusal, none.
async fn plan_mutations<T: WriteTx>(
    tx: &mut T,
    staged: &mut Staged,
    mutations: &[Mutation],
    batched: bool,
    at: OffsetDateTime,
) -> Result<Vec<Plan>, StoreError> {
    let (mut declared, mut plans) = (None, Vec::new());
    for (index, m) in mutations.iter().enumerate() {
        match plan_one(tx, staged, &mut declared, m, at).await {
            Ok(p) => plans.extend(p),
            Err(e) if batched => return Err(StoreError::InBatch { index, error: Box::new(e) }),
            Err(e) => return Err(e),
        }
    }
    // On the batch's end state: a batch may move both sides of a rule at once.
    super::rules::check(tx, staged).await?;
    Ok(plans)
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
    let Some(plan) = plan_compiled(m, current, current_override, at).await? else {
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
            check_segment(key, segment, tx.segment(segment).await?.is_some())?;
        }
    }
    staged.stage(&plan);
    Ok(Some(plan))
}

/// [`plan`], off the async workers when it compiles targeting (regexes are CPU work
/// bounded only by the regex budget).
async fn plan_compiled(
    m: &Mutation,
    current: Option<FlagRecord>,
    current_override: Option<serde_json::Value>,
    at: OffsetDateTime,
) -> Result<Option<Plan>, StoreError> {
    let compiles = match m {
        Mutation::CreateFlag { def, .. } => !def.targeting.is_empty(),
        Mutation::UpdateFlag { .. } | Mutation::RestoreFlag { .. } => {
            current.as_ref().is_some_and(|c| !c.targeting.is_empty())
                || matches!(m, Mutation::UpdateFlag { patch, .. } if patch.targeting.is_some())
        }
        _ => false,
    };
    if !compiles {
        return plan(m, current.as_ref(), current_override.as_ref(), at);
    }
    let m = m.clone();
    tokio::task::spawn_blocking(move || plan(&m, current.as_ref(), current_override.as_ref(), at))
        .await
        .map_err(|e| StoreError::Corrupt(format!("planning a write failed: {e}")))?
}

/// One mutation; `None` when it changed nothing.
pub(crate) async fn write<B: Backend>(backend: &B, write: &Write) -> Result<Option<Change>, StoreError> {
    let op = WriteOp::Flags {
        mutations: std::slice::from_ref(&write.mutation),
        batched: false,
        requests: &[],
        notes: &[],
    };
    Ok(run(backend, op, (write.actor.as_str(), write.reason.as_deref())).await?.0.pop())
}

/// One mutation checked as [`write`] would make it, against the data as it is now:
/// the change row it would write (`None`: nothing to do), writing nothing. Planned on
/// the store's plain reads, with no transaction: a check never holds a writer up.
pub(crate) async fn check<R: FlagReader + ?Sized>(
    reader: &R,
    write: &Write,
) -> Result<Option<Change>, StoreError> {
    let at = now();
    let mut staged = Staged::default();
    let op = WriteOp::Flags {
        mutations: std::slice::from_ref(&write.mutation),
        batched: false,
        requests: &[],
        notes: &[],
    };
    let plans = plan_op(&mut Reads(reader), &mut staged, op, at).await?;
    let seq = reader.latest_seq().await? + 1;
    Ok(plans.first().map(|p| p.change(seq, at, (&write.actor, write.reason.as_deref()))))
}

/// A store's plain reads where the write path plans: what a check reads.
struct Reads<'a, R: ?Sized>(&'a R);

#[async_trait]
impl<R: FlagReader + ?Sized> WriteTx for Reads<'_, R> {
    async fn flag(&mut self, key: &str) -> Result<Option<FlagRecord>, StoreError> {
        self.0.flag(key).await
    }

    async fn override_value(
        &mut self,
        key: &str,
        user: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self.0.overrides(key).await?.into_iter().find(|o| o.user_id == user).map(|o| o.value))
    }

    async fn overrides_of(&mut self, key: &str) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        Ok(self.0.overrides(key).await?.into_iter().map(|o| (o.user_id, o.value)).collect())
    }

    async fn segment(&mut self, key: &str) -> Result<Option<SegmentRecord>, StoreError> {
        Ok(self.0.segments().await?.into_iter().find(|s| s.key == key))
    }

    async fn flags_using_segment(&mut self, key: &str) -> Result<Vec<String>, StoreError> {
        let flags: Vec<FlagRecord> = self.0.list_flags().await?.into_iter().filter(|f| !f.archived).collect();
        Ok(super::flags_using(&flags, key))
    }

    async fn token_named(&mut self, _: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(None)
    }

    async fn declared_attributes(&mut self) -> Result<Vec<String>, StoreError> {
        self.0.attributes().await
    }

    async fn request(&mut self, _: u64) -> Result<Option<RequestRecord>, StoreError> {
        Ok(None)
    }

    async fn commit(self, _: &Staged, _: &[Change]) -> Result<bool, StoreError> {
        Err(StoreError::Corrupt("a check does not commit".into()))
    }

    async fn abort(self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A batch: all of its mutations or none.
pub(crate) async fn write_batch<B: Backend>(backend: &B, batch: &Batch) -> Result<Vec<Change>, StoreError> {
    batch.check_size()?;
    let op = WriteOp::Flags {
        mutations: &batch.mutations,
        batched: true,
        requests: &batch.requests,
        notes: &batch.notes,
    };
    let who = Who {
        actor: &batch.actor,
        reason: batch.reason.as_deref(),
        approved_by: batch.approved_by.as_deref(),
        emergency: batch.emergency,
    };
    Ok(run(backend, op, who).await?.0)
}

/// Creates or replaces a segment; `None` when it is unchanged.
pub(crate) async fn put_segment<B: Backend>(
    backend: &B,
    key: &str,
    definition: &SegmentDef,
    expected_version: Option<u64>,
    who: (&str, Option<&str>),
) -> Result<Option<Change>, StoreError> {
    Ok(run(backend, WriteOp::PutSegment { key, definition, expected_version }, who).await?.0.pop())
}

/// Deletes a segment no live flag uses.
pub(crate) async fn delete_segment<B: Backend>(
    backend: &B,
    key: &str,
    who: (&str, Option<&str>),
) -> Result<Change, StoreError> {
    let (mut changes, _) = run(backend, WriteOp::DeleteSegment { key }, who).await?;
    changes.pop().ok_or_else(|| StoreError::UnknownSegment(key.to_owned()))
}

/// Creates a token; its name must be valid and never used before.
pub(crate) async fn create_token<B: Backend>(
    backend: &B,
    token: TokenRecord,
    who: (&str, Option<&str>),
) -> Result<TokenRecord, StoreError> {
    validate_token_name(&token.name).map_err(|e| StoreError::invalid("token", e))?;
    run(backend, WriteOp::CreateToken(&token), who).await?;
    Ok(token)
}

/// Revokes the live token named `name`; returns it as revoked.
pub(crate) async fn revoke_token<B: Backend>(
    backend: &B,
    name: &str,
    who: (&str, Option<&str>),
) -> Result<TokenRecord, StoreError> {
    let (_, staged) = run(backend, WriteOp::RevokeToken { name }, who).await?;
    staged.tokens.into_values().next().ok_or_else(|| StoreError::UnknownToken(name.to_owned()))
}
