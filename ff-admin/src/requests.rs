//! Change requests: an editor's change to a flag the approval policy covers waits for
//! a second editor's approval; any change can wait for a time (a scheduled change).
//! Both are one [`ChangeRequest`], kept in the store and applied once, through the
//! normal write path, in the transaction that marks it applied.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ff_api::{Approval, BatchOp, ChangeRequest, Decision, NewRequest, RequestStatus};
use ff_core::{Change, FlagKind, FlagRecord};
use ff_store::{Batch, FlagPatch, Mutation, RequestPut, Role, StoreError, Write};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::Admin;
use crate::auth::Caller;
use crate::error::AdminError;

/// The actor that applies scheduled changes when their time comes (and holds the lease).
pub const SCHEDULER: &str = "ff-scheduler";

/// How far ahead a change may be scheduled.
const LONGEST_SCHEDULE: time::Duration = time::Duration::days(366);

/// What the approval policy makes of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// No flag it changes needs approval.
    Direct,
    /// Only switches flags off: never waits, and is marked as an emergency.
    Emergency,
    /// Waits for approval.
    Request,
}

/// A patch that only switches a flag off.
fn only_switches_off(patch: &FlagPatch) -> bool {
    *patch == FlagPatch { enabled: Some(false), ..FlagPatch::default() }
}

impl Admin {
    /// Whether an editor's change to `flag` waits for a second editor's approval: the
    /// flag's own `approval`, else whether its kind is in [`require_approval`](Self::require_approval).
    pub fn needs_approval(&self, flag: &FlagRecord) -> bool {
        flag.meta.approval.unwrap_or_else(|| {
            self.inner.approval_kinds.contains(&flag.meta.kind_or_default(flag.value_type))
        })
    }

    async fn gate(&self, mutations: &[Mutation]) -> Result<Gate, AdminError> {
        let (mut request, mut emergency) = (false, false);
        for m in mutations {
            // A new flag serves nothing anyone relied on: creating one never waits.
            if matches!(m, Mutation::CreateFlag { .. }) {
                continue;
            }
            let Some(current) = self.store().flag(m.key()).await? else { continue };
            if !self.needs_approval(&current) {
                continue;
            }
            match m {
                Mutation::UpdateFlag { patch, .. } if only_switches_off(patch) && current.enabled => {
                    emergency = true
                }
                _ => request = true,
            }
        }
        Ok(if request {
            Gate::Request
        } else if emergency {
            Gate::Emergency
        } else {
            Gate::Direct
        })
    }

    /// Writes `w`, unless the approval policy holds it: then a request holds it
    /// ([`AdminError::Held`]) and nothing is served.
    pub(crate) async fn write(&self, w: Write) -> Result<Option<Change>, AdminError> {
        self.check_regex_budget(std::slice::from_ref(&w.mutation)).await?;
        match self.gate(std::slice::from_ref(&w.mutation)).await? {
            Gate::Direct => Ok(self.store().write(w).await?),
            Gate::Emergency => {
                let mut batch = Batch::new(w.actor, vec![w.mutation]).emergency();
                batch.reason = w.reason;
                Ok(self.store().write_batch(batch).await?.pop())
            }
            Gate::Request => Err(self.hold(&w.actor, w.reason, vec![w.mutation], None).await?),
        }
    }

    /// [`write`](Self::write) for a batch: one request holds all of it if any part waits.
    pub(crate) async fn write_batch(&self, b: Batch) -> Result<Vec<Change>, AdminError> {
        self.check_regex_budget(&b.mutations).await?;
        match self.gate(&b.mutations).await? {
            Gate::Direct => Ok(self.store().write_batch(b).await?),
            Gate::Emergency => Ok(self.store().write_batch(b.emergency()).await?),
            Gate::Request => Err(self.hold(&b.actor, b.reason, b.mutations, None).await?),
        }
    }

    /// Segments hold no change requests: one that a flag under approval uses is changed
    /// by admins only (an editor could otherwise widen it to roll that flag out).
    pub(crate) async fn check_segment_policy(&self, caller: &Caller, key: &str) -> Result<(), AdminError> {
        if caller.role >= Role::Admin {
            return Ok(());
        }
        let guarded: Vec<String> = self
            .live_flags()
            .await?
            .into_iter()
            .filter(|f| self.needs_approval(f) && f.targeting.segment_keys().contains(&key))
            .map(|f| f.key)
            .collect();
        if guarded.is_empty() {
            return Ok(());
        }
        Err(AdminError::NotAllowed(format!(
            "segment {key:?} is used by {} whose changes need approval; only an admin may change it",
            guarded.join(", ")
        )))
    }

    /// Makes a request of `mutations` and answers with it.
    async fn hold(
        &self,
        author: &str,
        reason: Option<String>,
        mutations: Vec<Mutation>,
        apply_at: Option<OffsetDateTime>,
    ) -> Result<AdminError, AdminError> {
        let request = self.make_request(author, reason, mutations, apply_at).await?;
        let message = format!(
            "request {} holds this change until another editor approves it; nothing was changed yet",
            request.id
        );
        Ok(AdminError::Held(Box::new(ff_api::RequestMade { message, request })))
    }

    /// The request's changes, each checked by the store as it stands now, with the
    /// versions they are based on pinned.
    async fn pin(
        &self,
        mutations: Vec<Mutation>,
    ) -> Result<(Vec<BatchOp>, BTreeMap<String, u64>, bool), AdminError> {
        if mutations.is_empty() {
            return Err(AdminError::BadRequest("a request needs at least one change".into()));
        }
        if mutations.len() > Batch::MAX {
            return Err(AdminError::BadRequest(format!("a request holds at most {} changes", Batch::MAX)));
        }
        self.check_regex_budget(&mutations).await?;
        let (mut ops, mut base, mut needs) = (Vec::new(), BTreeMap::new(), false);
        // Flags an earlier change of this request touches: a later change of one is
        // planned on the earlier one's result, so it is checked (and its version
        // taken) only when the whole request is applied.
        let mut touched: Vec<String> = Vec::new();
        for (i, mut m) in mutations.into_iter().enumerate() {
            let first = !touched.iter().any(|k| k == m.key());
            let current = self.store().flag(m.key()).await?;
            if let Some(c) = current.as_ref().filter(|_| first) {
                base.insert(c.key.clone(), c.version);
                needs |= !matches!(m, Mutation::CreateFlag { .. }) && self.needs_approval(c);
                match &mut m {
                    Mutation::UpdateFlag { expected_version, .. }
                    | Mutation::ArchiveFlag { expected_version, .. } => {
                        expected_version.get_or_insert(c.version);
                    }
                    _ => {}
                }
            }
            // Refused now rather than when approved.
            if first {
                let check = self.store().check(Write::new("ff-check", m.clone())).await;
                check.map_err(|e| match e {
                    e @ StoreError::VersionConflict { .. } => AdminError::Store(e),
                    e => AdminError::Store(StoreError::InBatch { index: i, error: Box::new(e) }),
                })?;
            }
            touched.push(m.key().to_owned());
            ops.push(
                BatchOp::of(m).ok_or_else(|| AdminError::BadRequest(format!("change {i} cannot wait")))?,
            );
        }
        Ok((ops, base, needs))
    }

    /// Stores a new request for `mutations`: pending if any flag needs approval,
    /// else approved (only a schedule holds it).
    pub(crate) async fn make_request(
        &self,
        author: &str,
        reason: Option<String>,
        mutations: Vec<Mutation>,
        apply_at: Option<OffsetDateTime>,
    ) -> Result<ChangeRequest, AdminError> {
        let (changes, base, needs_approval) = self.pin(mutations).await?;
        if apply_at.is_none() && !needs_approval {
            return Err(AdminError::BadRequest(
                "nothing here waits: no flag it changes needs approval and it has no apply_at; \
                 make the changes directly (POST /api/batch)"
                    .into(),
            ));
        }
        let now = OffsetDateTime::now_utc();
        let mut request = ChangeRequest {
            id: 0,
            key: changes.first().map(|c| c.key().to_owned()).unwrap_or_default(),
            changes,
            base,
            author: author.to_owned(),
            reason,
            created_at: now,
            apply_at,
            needs_approval,
            approvals: Vec::new(),
            status: if needs_approval { RequestStatus::Pending } else { RequestStatus::Approved },
            decision: None,
            revision: 1,
            version: 0,
        };
        // Numbers come from the requests there are; two made at once take turns.
        for _ in 0..5 {
            request.id = self.store().requests().await?.iter().map(|r| r.id).max().unwrap_or(0) + 1;
            let put = RequestPut {
                id: request.id,
                key: request.key.clone(),
                body: request.body(),
                expected_version: 0,
            };
            let mut batch = Batch::new(author, Vec::new()).request(put);
            batch.reason = request.reason.clone();
            match self.store().write_batch(batch).await {
                Ok(_) => {
                    request.version = 1;
                    return Ok(request);
                }
                Err(StoreError::RequestConflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AdminError::Conflict("too many requests made at once; try again".into()))
    }

    /// A request that applies `mutations` at `at` (after approval, if a flag needs it).
    pub(crate) async fn schedule(
        &self,
        author: &str,
        reason: Option<String>,
        mutations: Vec<Mutation>,
        at: OffsetDateTime,
    ) -> Result<ChangeRequest, AdminError> {
        check_schedule(Some(at))?;
        self.make_request(author, reason, mutations, Some(at)).await
    }

    /// One request, as stored.
    pub(crate) async fn change_request(&self, id: u64) -> Result<ChangeRequest, AdminError> {
        let record = self
            .store()
            .request(id)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("no request {id}")))?;
        ChangeRequest::from_record(&record)
            .map_err(|e| AdminError::Store(StoreError::Corrupt(format!("request {id}: {e}"))))
    }

    /// Every request, newest first; only open ones unless `all`.
    pub(crate) async fn change_requests(&self, all: bool) -> Result<Vec<ChangeRequest>, AdminError> {
        let mut out = Vec::new();
        for record in self.store().requests().await?.iter().rev() {
            match ChangeRequest::from_record(record) {
                Ok(r) if all || r.status.is_open() => out.push(r),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(id = record.id, error = %e, "ff-admin: skipping a request it cannot read")
                }
            }
        }
        Ok(out)
    }

    /// Writes `request` as its next version.
    async fn put_request(
        &self,
        actor: &str,
        request: &ChangeRequest,
        reason: Option<String>,
    ) -> Result<(), AdminError> {
        let put = RequestPut {
            id: request.id,
            key: request.key.clone(),
            body: request.body(),
            expected_version: request.version,
        };
        let mut batch = Batch::new(actor, Vec::new()).request(put);
        batch.reason = reason;
        self.store().write_batch(batch).await.map_err(|e| stale_request(request.id, e))?;
        Ok(())
    }

    /// Applies `request`'s changes and marks it applied by `by`, in one transaction.
    /// A flag changed since it was made refuses it: it must be re-based.
    async fn apply(
        &self,
        mut request: ChangeRequest,
        by: &str,
        pinned: bool,
    ) -> Result<(ChangeRequest, Vec<Change>), AdminError> {
        let mut mutations: Vec<Mutation> = Vec::new();
        if pinned {
            // Flags whose version no change pins are checked all the same (an override
            // request is stale once its flag has moved too); a restored flag is
            // checked by its restore (an archived flag takes no update).
            let pins: Vec<&str> = request
                .changes
                .iter()
                .filter(|c| {
                    matches!(
                        c,
                        BatchOp::Update { version: Some(_), .. }
                            | BatchOp::Archive { version: Some(_), .. }
                            | BatchOp::Restore { .. }
                    )
                })
                .map(BatchOp::key)
                .collect();
            for (key, version) in &request.base {
                if !pins.contains(&key.as_str()) {
                    mutations.push(Mutation::UpdateFlag {
                        key: key.clone(),
                        patch: FlagPatch::default(),
                        expected_version: Some(*version),
                    });
                }
            }
            mutations.extend(request.changes.iter().cloned().map(Mutation::from));
        } else {
            // At its time: applied to the flags as they are then (it was approved, or
            // needed no approval, when it was made; other changes may come between).
            mutations.extend(request.changes.iter().cloned().map(|op| match Mutation::from(op) {
                Mutation::UpdateFlag { key, patch, .. } => {
                    Mutation::UpdateFlag { key, patch, expected_version: None }
                }
                Mutation::ArchiveFlag { key, .. } => Mutation::ArchiveFlag { key, expected_version: None },
                m => m,
            }));
        }
        self.check_regex_budget(&mutations).await?;
        let version = request.version;
        request.status = RequestStatus::Applied;
        request.decision = Some(Decision { by: by.to_owned(), at: OffsetDateTime::now_utc(), reason: None });
        let approvers: Vec<&str> = request.approvals.iter().map(|a| a.by.as_str()).collect();
        let put = RequestPut {
            id: request.id,
            key: request.key.clone(),
            body: request.body(),
            expected_version: version,
        };
        let mut batch = Batch::new(request.author.clone(), mutations).request(put);
        batch.reason = request.reason.clone();
        if !approvers.is_empty() {
            batch = batch.approved_by(approvers.join(", "));
        }
        let changes = self.store().write_batch(batch).await.map_err(|e| match e.root() {
            StoreError::VersionConflict { key, expected, actual } => AdminError::Conflict(format!(
                "request {} is stale: {key} changed since it was made (version {expected}, now {actual}); \
                 re-base it and have it approved again",
                request.id
            )),
            _ => AdminError::Store(e),
        })?;
        request.version = version + 1;
        Ok((request, changes))
    }

    /// Approves `id` as `caller`: applied at once (or at its time) once approved.
    pub(crate) async fn approve(
        &self,
        caller: &Caller,
        id: u64,
        revision: Option<u32>,
    ) -> Result<ChangeRequest, AdminError> {
        let mut request = self.change_request(id).await?;
        if let Some(read) = revision.filter(|r| *r != request.revision) {
            return Err(AdminError::Conflict(format!(
                "request {id} was changed since you read it (revision {read}, now {}): read it again",
                request.revision
            )));
        }
        if request.status != RequestStatus::Pending {
            return Err(AdminError::Conflict(format!(
                "request {id} is {}, not pending",
                request.status.as_str()
            )));
        }
        if caller.name == request.author {
            return Err(AdminError::NotAllowed(format!(
                "{} made request {id}: another editor must approve it",
                caller.name
            )));
        }
        request.approvals.push(Approval { by: caller.name.clone(), at: OffsetDateTime::now_utc() });
        let due = request.apply_at.is_none_or(|t| t <= OffsetDateTime::now_utc());
        if due {
            return Ok(self.apply(request, &caller.name, true).await.map_err(stale_request_for_api)?.0);
        }
        // Approved for later: what was approved must be what the flags are now.
        for (key, version) in &request.base {
            let now = self.store().flag(key).await?.map_or(0, |f| f.version);
            if now != *version {
                return Err(AdminError::Conflict(format!(
                    "request {id} is stale: {key} changed since it was made (version {version}, now {now}); \
                     re-base it and have it approved again"
                )));
            }
        }
        request.status = RequestStatus::Approved;
        self.put_request(&caller.name, &request, None).await?;
        request.version += 1;
        Ok(request)
    }

    /// Rejects (or, by its author, withdraws) an open request.
    pub(crate) async fn reject(
        &self,
        caller: &Caller,
        id: u64,
        reason: Option<String>,
    ) -> Result<ChangeRequest, AdminError> {
        let mut request = self.change_request(id).await?;
        if !request.status.is_open() {
            return Err(AdminError::Conflict(format!("request {id} is {} already", request.status.as_str())));
        }
        request.status = RequestStatus::Rejected;
        request.decision =
            Some(Decision { by: caller.name.clone(), at: OffsetDateTime::now_utc(), reason: reason.clone() });
        self.put_request(&caller.name, &request, reason).await?;
        request.version += 1;
        Ok(request)
    }

    /// Replaces an open request's changes (or, with `None`, re-bases them on the flags
    /// as they are now): only its author may, and its approvals are dropped.
    pub(crate) async fn revise(
        &self,
        caller: &Caller,
        id: u64,
        edit: Option<(Vec<Mutation>, Option<String>, Option<OffsetDateTime>)>,
    ) -> Result<ChangeRequest, AdminError> {
        let mut request = self.change_request(id).await?;
        if !request.status.is_open() {
            return Err(AdminError::Conflict(format!(
                "request {id} is {}: it cannot change",
                request.status.as_str()
            )));
        }
        if caller.name != request.author {
            return Err(AdminError::NotAllowed(format!("only {} may change request {id}", request.author)));
        }
        let mutations = match edit {
            Some((mutations, reason, apply_at)) => {
                request.reason = reason;
                request.apply_at = apply_at;
                mutations
            }
            // Re-based: the same changes, on the versions there are now.
            None => unpinned(&request.changes),
        };
        let (changes, base, needs_approval) = self.pin(mutations).await?;
        if request.apply_at.is_none() && !needs_approval {
            return Err(AdminError::BadRequest(
                "nothing would wait: no flag it changes needs approval and it has no apply_at".into(),
            ));
        }
        request.changes = changes;
        request.base = base;
        request.needs_approval = needs_approval;
        request.approvals.clear();
        request.revision += 1;
        request.status = if needs_approval { RequestStatus::Pending } else { RequestStatus::Approved };
        self.put_request(&caller.name, &request, None).await?;
        request.version += 1;
        Ok(request)
    }

    /// Applies every approved request whose time has come (and that nothing else
    /// applied first): what the scheduler does each tick while it holds the lease.
    /// A request the store refuses is marked failed, with why; one it could not reach
    /// is tried again on the next tick. One made without approval whose flags have come
    /// under the policy since waits for approval instead.
    pub async fn apply_due(&self) -> Result<Vec<ChangeRequest>, AdminError> {
        let now = OffsetDateTime::now_utc();
        let mut applied = Vec::new();
        let mut open = self.change_requests(false).await?;
        metrics::gauge!("ff_change_requests_open").set(open.len() as f64);
        // In the order of their times: "on at 9" before "off at 18", however late both are.
        open.sort_by_key(|r| (r.apply_at, r.id));
        for request in open {
            let due = request.status == RequestStatus::Approved && request.apply_at.is_none_or(|t| t <= now);
            if !due {
                continue;
            }
            let id = request.id;
            let now_needs = match self.now_needs_approval(&request).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(request = id, error = %e, "ff-admin: a scheduled change must wait");
                    continue;
                }
            };
            if !request.needs_approval && request.approvals.is_empty() && now_needs {
                // Held for approval, on the flags as they are now (so it can be approved).
                if let Err(e) = self.hold_for_approval(request).await {
                    tracing::debug!(request = id, error = %e, "ff-admin: a request moved meanwhile");
                }
                continue;
            }
            match self.apply(request.clone(), SCHEDULER, false).await {
                Ok((done, _)) => {
                    metrics::counter!("ff_scheduled_changes_total", "result" => "applied").increment(1);
                    applied.push(done);
                }
                // Another instance applied or decided it first.
                Err(AdminError::Store(StoreError::RequestConflict { .. })) => {}
                Err(e) if e.parts().0.is_client_error() => {
                    let (_, _, why) = e.parts();
                    tracing::warn!(request = id, error = %why, "ff-admin: a scheduled change was refused");
                    metrics::counter!("ff_scheduled_changes_total", "result" => "failed").increment(1);
                    let mut failed = request;
                    failed.status = RequestStatus::Failed;
                    failed.decision = Some(Decision { by: SCHEDULER.into(), at: now, reason: Some(why) });
                    if let Err(e) = self.put_request(SCHEDULER, &failed, None).await {
                        tracing::debug!(request = id, error = %e, "ff-admin: a request moved meanwhile");
                    }
                }
                // The store could not be reached, or gave up: tried again next tick.
                Err(e) => tracing::warn!(request = id, error = %e, "ff-admin: a scheduled change must wait"),
            }
        }
        Ok(applied)
    }

    /// A request that needs approval now, re-based on the flags as they are.
    async fn hold_for_approval(&self, mut request: ChangeRequest) -> Result<(), AdminError> {
        let (changes, base, _) = self.pin(unpinned(&request.changes)).await?;
        (request.changes, request.base) = (changes, base);
        request.needs_approval = true;
        request.status = RequestStatus::Pending;
        request.revision += 1;
        self.put_request(SCHEDULER, &request, None).await
    }

    /// Whether any flag `request` changes needs approval now.
    async fn now_needs_approval(&self, request: &ChangeRequest) -> Result<bool, AdminError> {
        for key in request.base.keys() {
            if self.store().flag(key).await?.is_some_and(|f| self.needs_approval(&f)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Applies due scheduled changes every `every`, on the instance holding the
    /// scheduler's lease, and delivers webhooks on the one holding theirs, while this
    /// admin lives.
    pub(crate) fn schedule_every(&self, every: std::time::Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        // Not a busy loop, whatever was configured.
        let every = every.max(std::time::Duration::from_millis(10));
        if self.store().read_only() || self.store().usage_store().is_none() {
            return;
        }
        let admin = std::sync::Arc::downgrade(&self.inner);
        let mut holder = [0u8; 8];
        let _ = getrandom::getrandom(&mut holder);
        let holder = format!("admin-{}", hex::encode(holder));
        let ttl = (every * 5).max(std::time::Duration::from_secs(1));
        let deliverer = (admin.clone(), holder.clone());
        runtime.spawn(async move {
            let (admin, holder) = deliverer;
            let Some(http) = crate::webhooks::client() else { return };
            let ttl = crate::webhooks::DELIVERY_LEASE;
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = admin.upgrade() else { return };
                let admin = Admin { inner };
                let Some(leases) = admin.store().usage_store() else { return };
                match leases.lease(crate::webhooks::DELIVERER, &holder, ttl, OffsetDateTime::now_utc()).await
                {
                    Ok(true) => {
                        if let Err(e) = admin.deliver_webhooks(&http).await {
                            tracing::warn!(error = %e, "ff-admin: delivering webhooks failed");
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::debug!(error = %e, "ff-admin: webhook lease unavailable"),
                }
            }
        });
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = admin.upgrade() else { return };
                let admin = Admin { inner };
                let Some(leases) = admin.store().usage_store() else { return };
                match leases.lease(SCHEDULER, &holder, ttl, OffsetDateTime::now_utc()).await {
                    Ok(true) => {
                        if let Err(e) = admin.apply_due().await {
                            tracing::warn!(error = %e, "ff-admin: applying scheduled changes failed");
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::debug!(error = %e, "ff-admin: scheduler lease unavailable"),
                }
            }
        });
    }
}

/// A request's changes without the versions they were pinned to.
fn unpinned(changes: &[BatchOp]) -> Vec<Mutation> {
    changes
        .iter()
        .cloned()
        .map(|op| match op {
            BatchOp::Update { key, patch, .. } => Mutation::UpdateFlag { key, patch, expected_version: None },
            BatchOp::Archive { key, .. } => Mutation::ArchiveFlag { key, expected_version: None },
            op => op.into(),
        })
        .collect()
}

/// A refused apply, for a person: another decider came first.
fn stale_request_for_api(e: AdminError) -> AdminError {
    match e {
        AdminError::Store(StoreError::RequestConflict { id, .. }) => AdminError::Conflict(format!(
            "request {id} was changed or decided by someone else meanwhile: reload it"
        )),
        e => e,
    }
}

/// A refused request write: another decider came first.
fn stale_request(id: u64, e: StoreError) -> AdminError {
    match e {
        StoreError::RequestConflict { .. } => AdminError::Conflict(format!(
            "request {id} was changed or decided by someone else meanwhile: reload it"
        )),
        e => AdminError::Store(e),
    }
}

/// `apply_at` must be ahead, and within a year.
fn check_schedule(at: Option<OffsetDateTime>) -> Result<(), AdminError> {
    let Some(at) = at else { return Ok(()) };
    let now = OffsetDateTime::now_utc();
    if at <= now {
        return Err(AdminError::BadRequest(format!(
            "apply_at {} is not in the future (now is {})",
            crate::api::rfc3339(at),
            crate::api::rfc3339(now)
        )));
    }
    if at > now + LONGEST_SCHEDULE {
        return Err(AdminError::BadRequest("apply_at is more than a year ahead".into()));
    }
    Ok(())
}

impl Admin {
    /// The mutations of a new or edited request, as the batch API would make them.
    fn request_mutations(&self, body: &NewRequest) -> Result<Vec<Mutation>, AdminError> {
        check_schedule(body.apply_at)?;
        if body.reason.as_ref().is_some_and(|r| r.len() > ff_core::MAX_TEXT_BYTES) {
            return Err(AdminError::BadRequest(format!(
                "reason is longer than {} bytes",
                ff_core::MAX_TEXT_BYTES
            )));
        }
        Ok(body.changes.iter().cloned().map(|op| crate::api::op_mutation(self, op)).collect())
    }
}

type ApiResult = Result<Response, AdminError>;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    /// `open` (default) or `all`.
    status: Option<String>,
}

pub(crate) async fn list(
    State(admin): State<Admin>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    caller.require(Role::Viewer)?;
    let Query(q) = query?;
    let all = match q.status.as_deref() {
        None | Some("open") => false,
        Some("all") => true,
        Some(other) => {
            return Err(AdminError::BadRequest(format!("status must be open or all, got {other:?}")));
        }
    };
    Ok(Json(ff_api::RequestList { requests: admin.change_requests(all).await? }).into_response())
}

pub(crate) async fn get(State(admin): State<Admin>, caller: Caller, Path(id): Path<u64>) -> ApiResult {
    caller.require(Role::Viewer)?;
    Ok(Json(admin.change_request(id).await?).into_response())
}

/// `POST /api/requests`: changes that wait for approval, a time, or both.
pub(crate) async fn create(
    State(admin): State<Admin>,
    caller: Caller,
    body: Result<Json<NewRequest>, JsonRejection>,
) -> ApiResult {
    caller.require(Role::Editor)?;
    let Json(body) = body?;
    let mutations = admin.request_mutations(&body)?;
    let request = admin.make_request(&caller.name, body.reason, mutations, body.apply_at).await?;
    Ok((StatusCode::CREATED, Json(request)).into_response())
}

/// `PUT /api/requests/{id}`: new changes for an open request (its author only).
pub(crate) async fn edit(
    State(admin): State<Admin>,
    caller: Caller,
    Path(id): Path<u64>,
    body: Result<Json<NewRequest>, JsonRejection>,
) -> ApiResult {
    caller.require(Role::Editor)?;
    let Json(body) = body?;
    let mutations = admin.request_mutations(&body)?;
    let edit = Some((mutations, body.reason, body.apply_at));
    Ok(Json(admin.revise(&caller, id, edit).await?).into_response())
}

/// `POST /api/requests/{id}/approve`, optionally `{"revision": N}`: the revision the
/// approver read (refused if it was edited since).
pub(crate) async fn approve(
    State(admin): State<Admin>,
    caller: Caller,
    Path(id): Path<u64>,
    body: axum::body::Bytes,
) -> ApiResult {
    caller.require(Role::Editor)?;
    let revision = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let read: ff_api::Approve = serde_json::from_slice(&body).map_err(|e| AdminError::InvalidBody {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: e.to_string(),
        })?;
        read.revision
    };
    Ok(Json(admin.approve(&caller, id, revision).await?).into_response())
}

pub(crate) async fn reject(
    State(admin): State<Admin>,
    caller: Caller,
    Path(id): Path<u64>,
    body: axum::body::Bytes,
) -> ApiResult {
    caller.require(Role::Editor)?;
    let reason = crate::api::optional_reason(&body)?;
    Ok(Json(admin.reject(&caller, id, reason).await?).into_response())
}

pub(crate) async fn rebase(State(admin): State<Admin>, caller: Caller, Path(id): Path<u64>) -> ApiResult {
    caller.require(Role::Editor)?;
    Ok(Json(admin.revise(&caller, id, None).await?).into_response())
}

/// The kinds a policy names, from text like `release,config` (for `FF_APPROVALS`).
pub fn parse_kinds(text: &str) -> Result<Vec<FlagKind>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| FlagKind::parse(k).ok_or_else(|| format!("unknown flag kind {k:?}")))
        .collect()
}
