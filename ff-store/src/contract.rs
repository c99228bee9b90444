//! The store contract: what every store must do, as async functions over an
//! `Arc<dyn Store>`, and [`store_contract_tests!`](crate::store_contract_tests), which
//! makes one test per contract for a backend (as tower-sessions' `route_tests!` does).
//! A store written elsewhere runs it with the `test-util` feature:
//!
//! ```ignore
//! ff_store::store_contract_tests!(|| async { Some(ff_store::contract::Subject::new(MyStore::new())) });
//! ```
//!
//! Each contract expects a new, empty store. Read-only stores run [`read_only`].

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use ff_core::UsageCount;
use ff_core::{Action, ApplyError, Flag, FlagDef, Schema, SegmentDef, Snapshot, ValidationError, ValueType};
use serde_json::json;

use crate::{
    Batch, ChangeQuery, FlagPatch, Mutation, RequestPut, Role, Store, StoreError, TokenRecord, Write, sync,
};

/// A store under test, with whatever must live as long as it (a temporary directory).
pub struct Subject {
    /// The store.
    pub store: Arc<dyn Store>,
    _keep: Option<Box<dyn Any + Send>>,
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject").finish_non_exhaustive()
    }
}

impl Subject {
    /// A store that needs nothing kept alive.
    pub fn new(store: impl Store + 'static) -> Self {
        Subject { store: Arc::new(store), _keep: None }
    }

    /// Keeps `guard` (a temporary directory, say) until the test ends.
    pub fn keeping(mut self, guard: impl Any + Send) -> Self {
        self._keep = Some(Box::new(guard));
        self
    }
}

/// One `#[tokio::test]` per contract, each on a store from `$make` (a closure
/// returning a future of `Option<Subject>`; `None` skips, as for an unconfigured
/// database). `read_only: $make` makes the tests for a read-only store instead.
#[macro_export]
macro_rules! store_contract_tests {
    (@each $make:expr; $($contract:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $contract() {
                let make = $make;
                let Some(subject) = make().await else { return };
                $crate::contract::$contract(subject.store.clone()).await;
            }
        )*
    };
    (read_only: $make:expr) => {
        $crate::store_contract_tests!(@each $make; read_only);
    };
    ($make:expr) => {
        $crate::store_contract_tests!(@each $make;
            flags_overrides_and_tokens, segments, attributes, sync_declarations, setting_rules, lifecycle,
            batches, usage, racing_writers, guarded_rollouts, checking_writes_nothing, change_requests, operational_records);
    };
}

/// A read-only store (a file): it loads, and refuses every write with
/// [`StoreError::ReadOnly`], writing nothing.
pub async fn read_only(store: Arc<dyn Store>) {
    let at = time::OffsetDateTime::now_utc();
    assert!(!store.lease("guard", "a", Duration::from_secs(1), at).await.unwrap(), "nothing to act on");
    assert_eq!(store.guard_counts("G", 1).await.unwrap(), None, "only this instance's counts");
    let s = &*store;
    assert!(s.read_only());
    let before = s.load().await.unwrap();
    let refused = |r: Result<(), StoreError>, what: &str| {
        assert!(matches!(r, Err(StoreError::ReadOnly(_))), "{what}: {r:?}");
    };
    let create = Mutation::CreateFlag { def: def("NEW", ValueType::Bool, json!(true)), if_missing: false };
    refused(s.write(w(create.clone())).await.map(drop), "write");
    refused(s.write_batch(Batch::new("t", vec![create])).await.map(drop), "write_batch");
    let token = TokenRecord {
        id: "id".into(),
        name: "n".into(),
        role: Role::Viewer,
        secret_hash: "h".into(),
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        revoked_at: None,
    };
    refused(s.create_token(token, "t", None).await.map(drop), "create_token");
    refused(s.revoke_token("n", "t", None).await.map(drop), "revoke_token");
    let segment: SegmentDef = serde_json::from_value(json!({"included": ["u"]})).unwrap();
    refused(s.put_segment("S", segment, None, ("t", None)).await.map(drop), "put_segment");
    refused(s.delete_segment("S", ("t", None)).await.map(drop), "delete_segment");
    let after = s.load().await.unwrap();
    assert_eq!(
        (after.seq, after.flags.len(), after.overrides.len()),
        (before.seq, before.flags.len(), before.overrides.len())
    );
    assert_eq!(s.latest_seq().await.unwrap(), before.seq);
    assert!(s.tokens().await.unwrap().is_empty());
}

fn def(key: &str, ty: ValueType, value: serde_json::Value) -> FlagDef {
    FlagDef {
        key: key.into(),
        value_type: ty,
        value,
        enabled: true,
        off_value: None,
        description: format!("{key} for tests"),
        schema: Schema::default(),
        meta: Default::default(),
        targeting: Default::default(),
    }
}

fn w(m: Mutation) -> Write {
    Write::new("tester@example.com", m)
}

async fn seq(store: &dyn Store) -> u64 {
    store.latest_seq().await.unwrap()
}

/// Flags, overrides, the change log, version checks and tokens: the core of every writable store.
pub async fn flags_overrides_and_tokens(store: Arc<dyn Store>) {
    let s = &*store;
    let state = s.load().await.unwrap();
    assert_eq!((state.seq, state.flags.len(), state.overrides.len()), (0, 0, 0));
    let mut signal = s.subscribe();
    signal.borrow_and_update();

    // Create, with a change row carrying actor, reason and the record.
    let rate = FlagDef {
        schema: Schema { min: Some(1.into()), max: Some(500.into()), ..Schema::default() },
        ..def("RATE_MIN", ValueType::Float, json!(60.0))
    };
    let c = s
        .write(w(Mutation::CreateFlag { def: rate.clone(), if_missing: false }).reason("launch"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((c.seq, c.action, c.key.as_str()), (1, Action::FlagCreate, "RATE_MIN"));
    assert_eq!(c.actor, "tester@example.com");
    assert_eq!(c.reason.as_deref(), Some("launch"));
    assert!(c.before.is_none());
    assert_eq!(c.after.as_ref().unwrap()["value"], json!(60.0));
    tokio::time::timeout(Duration::from_secs(5), signal.changed()).await.unwrap().unwrap();

    // Creating again fails, or is a silent no-op with if_missing.
    assert!(matches!(
        s.write(w(Mutation::CreateFlag { def: rate.clone(), if_missing: false })).await,
        Err(StoreError::FlagExists(_))
    ));
    assert!(s.write(w(Mutation::CreateFlag { def: rate, if_missing: true })).await.unwrap().is_none());
    assert_eq!(seq(s).await, 1);

    // A bool flag: off value defaults to false.
    s.write(w(Mutation::CreateFlag { def: def("KILL", ValueType::Bool, json!(true)), if_missing: false }))
        .await
        .unwrap();
    let kill = s.flag("KILL").await.unwrap().unwrap();
    assert_eq!((kill.off_value.to_json(), kill.version), (json!(false), 1));

    // Values are checked against type and bounds; nothing is written on error.
    let c = s.write(w(Mutation::set_value("RATE_MIN", 75))).await.unwrap().unwrap();
    assert_eq!((c.seq, c.action), (3, Action::FlagUpdate));
    assert_eq!(c.before.as_ref().unwrap()["value"], json!(60.0));
    assert_eq!(c.after.as_ref().unwrap()["value"], json!(75.0));
    for (bad, check) in [
        (json!("cheap"), "expected a float value, got string"),
        (json!(0.5), "below the minimum"),
        (json!(501), "above the maximum"),
    ] {
        let err = s.write(w(Mutation::set_value("RATE_MIN", bad))).await.unwrap_err();
        assert!(err.to_string().contains(check), "{err}");
        assert!(err.to_string().contains("RATE_MIN"), "{err}");
    }
    assert!(matches!(
        s.write(w(Mutation::set_value("NOPE", 1))).await,
        Err(StoreError::UnknownFlag(k)) if k == "NOPE"
    ));
    let bad_key = def("bad key", ValueType::Bool, json!(true));
    assert!(matches!(
        s.write(w(Mutation::CreateFlag { def: bad_key, if_missing: false })).await,
        Err(StoreError::Invalid { error: ValidationError::BadKey { .. }, .. })
    ));
    assert_eq!(seq(s).await, 3);
    let rate = s.flag("RATE_MIN").await.unwrap().unwrap();
    assert_eq!((rate.value.to_json(), rate.version), (json!(75.0), 2));

    // No-op updates write nothing.
    assert!(s.write(w(Mutation::set_value("RATE_MIN", 75))).await.unwrap().is_none());

    // Versions: a stale version is refused and nothing is written.
    let stale = Mutation::UpdateFlag {
        key: "RATE_MIN".into(),
        patch: FlagPatch { value: Some(json!(80)), ..FlagPatch::default() },
        expected_version: Some(1),
    };
    assert!(matches!(
        s.write(w(stale)).await,
        Err(StoreError::VersionConflict { expected: 1, actual: 2, .. })
    ));
    let fresh = Mutation::UpdateFlag {
        key: "RATE_MIN".into(),
        patch: FlagPatch { value: Some(json!(80)), ..FlagPatch::default() },
        expected_version: Some(2),
    };
    assert_eq!(s.write(w(fresh)).await.unwrap().unwrap().seq, 4);

    // Overrides.
    let c = s.write(w(Mutation::set_override("RATE_MIN", "tester", 1))).await.unwrap().unwrap();
    assert_eq!(
        (c.action, c.subject.as_deref(), c.after.clone()),
        (Action::OverrideSet, Some("tester"), Some(json!(1.0)))
    );
    s.write(w(Mutation::set_override("RATE_MIN", "other", 2))).await.unwrap();
    s.write(w(Mutation::set_override("KILL", "tester", false))).await.unwrap();
    for (m, check) in [
        (Mutation::set_override("RATE_MIN", "", 5), "user id is empty"),
        (Mutation::set_override("RATE_MIN", "x", "five"), "expected a float"),
        (Mutation::set_override("RATE_MIN", "x", 1000), "above the maximum"),
    ] {
        let err = s.write(w(m)).await.unwrap_err();
        assert!(err.to_string().contains(check), "{err}");
    }
    assert!(matches!(
        s.write(w(Mutation::set_override("NOPE", "x", 1))).await,
        Err(StoreError::UnknownFlag(_))
    ));
    assert_eq!(seq(s).await, 7);
    let o = s.overrides("RATE_MIN").await.unwrap();
    assert_eq!(o.iter().map(|o| o.user_id.as_str()).collect::<Vec<_>>(), ["other", "tester"]);
    let c = s.write(w(Mutation::delete_override("RATE_MIN", "other"))).await.unwrap().unwrap();
    assert_eq!(
        (c.action, c.before.clone(), c.after.clone()),
        (Action::OverrideDelete, Some(json!(2.0)), None)
    );
    assert!(s.write(w(Mutation::delete_override("RATE_MIN", "other"))).await.unwrap().is_none());

    // The log is gap-free, ordered, and pages with a limit.
    let all = s.changes_since(0, 100).await.unwrap();
    assert_eq!(all.iter().map(|c| c.seq).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
    assert_eq!(s.changes_since(5, 2).await.unwrap().iter().map(|c| c.seq).collect::<Vec<_>>(), [6, 7]);
    assert!(s.changes_since(8, 100).await.unwrap().is_empty());

    // Replaying the log gives the same snapshot as a full load.
    let loaded = Snapshot::from_state(&s.load().await.unwrap());
    let replayed = Snapshot::empty().apply(&all).unwrap();
    assert_eq!(loaded.version(), 8);
    assert_eq!(loaded.to_state(), replayed.to_state());

    // Archive: gone from load (with its overrides), kept in list_flags, no more writes.
    let c = s
        .write(w(Mutation::ArchiveFlag { key: "KILL".into(), expected_version: Some(1) }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.action, Action::FlagArchive);
    let state = s.load().await.unwrap();
    assert_eq!(state.flags.iter().map(|f| f.key.as_str()).collect::<Vec<_>>(), ["RATE_MIN"]);
    assert!(state.overrides.iter().all(|o| o.key != "KILL"));
    assert!(s.list_flags().await.unwrap().iter().any(|f| f.key == "KILL" && f.archived));
    assert!(matches!(
        s.write(w(Mutation::set_enabled("KILL", false))).await,
        Err(StoreError::UnknownFlag(_))
    ));
    let after_archive = Snapshot::empty().apply(&s.changes_since(0, 100).await.unwrap()).unwrap();
    assert_eq!(after_archive.to_state(), Snapshot::from_state(&state).to_state());

    // Restore: back as it was, version bumped, overrides back with it.
    assert!(matches!(
        s.write(w(Mutation::RestoreFlag { key: "RATE_MIN".into() })).await,
        Err(StoreError::NotArchived(_))
    ));
    let c = s.write(w(Mutation::RestoreFlag { key: "KILL".into() })).await.unwrap().unwrap();
    assert_eq!((c.seq, c.action), (10, Action::FlagRestore));
    let kill = s.flag("KILL").await.unwrap().unwrap();
    assert_eq!((kill.archived, kill.version), (false, 3));
    assert!(s.load().await.unwrap().overrides.iter().any(|o| o.key == "KILL"));

    // Metadata: set, kept by other patches, cleared with null, validated.
    let expires = time::OffsetDateTime::from_unix_timestamp(2_000_000_000).unwrap();
    let patch: FlagPatch = serde_json::from_value(json!({
        "owner": "payments-team", "tags": ["payments", "q3"], "ticket": "PAY-12",
        "expires_at": "2033-05-18T03:33:20Z"
    }))
    .unwrap();
    s.write(w(Mutation::UpdateFlag { key: "KILL".into(), patch, expected_version: Some(3) })).await.unwrap();
    s.write(w(Mutation::set_enabled("KILL", false))).await.unwrap();
    let kill = s.flag("KILL").await.unwrap().unwrap();
    assert_eq!(kill.meta.owner, "payments-team");
    assert_eq!(kill.meta.tags, ["payments", "q3"]);
    assert_eq!((kill.meta.ticket.as_str(), kill.meta.expires_at), ("PAY-12", Some(expires)));
    let clear: FlagPatch = serde_json::from_value(json!({ "expires_at": null })).unwrap();
    s.write(w(Mutation::UpdateFlag { key: "KILL".into(), patch: clear, expected_version: None }))
        .await
        .unwrap();
    assert_eq!(s.flag("KILL").await.unwrap().unwrap().meta.expires_at, None);
    let before = seq(s).await;
    let bad_tags: FlagPatch = serde_json::from_value(json!({ "tags": ["Has Space"] })).unwrap();
    let err = s
        .write(w(Mutation::UpdateFlag { key: "KILL".into(), patch: bad_tags, expected_version: None }))
        .await;
    assert!(err.unwrap_err().to_string().contains("tags"));
    assert_eq!(seq(s).await, before);

    // The audit log, newest first, filtered and paged.
    let all = s.changes(&ChangeQuery { limit: 100, ..ChangeQuery::default() }).await.unwrap();
    assert_eq!(all.first().unwrap().seq, before);
    assert!(all.windows(2).all(|p| p[0].seq > p[1].seq));
    let kill_log = s
        .changes(&ChangeQuery { key: Some("KILL".into()), limit: 100, ..ChangeQuery::default() })
        .await
        .unwrap();
    assert!(!kill_log.is_empty() && kill_log.iter().all(|c| c.key == "KILL"));
    let page =
        s.changes(&ChangeQuery { before_seq: Some(5), limit: 2, ..ChangeQuery::default() }).await.unwrap();
    assert_eq!(page.iter().map(|c| c.seq).collect::<Vec<_>>(), [4, 3]);
    let nobody = ChangeQuery { actor: Some("nobody".into()), limit: 10, ..ChangeQuery::default() };
    assert!(s.changes(&nobody).await.unwrap().is_empty());
    let future = Some(time::OffsetDateTime::now_utc() + time::Duration::hours(1));
    assert!(
        s.changes(&ChangeQuery { since: future, limit: 10, ..ChangeQuery::default() })
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.change(3).await.unwrap().unwrap().seq, 3);
    assert!(s.change(9999).await.unwrap().is_none());

    // Tokens: stored, unique by name, revocable, audited without secrets.
    let token = TokenRecord {
        id: "tok1".into(),
        name: "ci-bot".into(),
        role: Role::Editor,
        secret_hash: "abc123".into(),
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        revoked_at: None,
    };
    s.create_token(token.clone(), "admin@example.com", Some("CI needs it")).await.unwrap();
    assert!(matches!(s.create_token(token.clone(), "admin", None).await, Err(StoreError::TokenExists(_))));
    let bad = TokenRecord { id: "tok2".into(), name: "bad name".into(), ..token.clone() };
    assert!(s.create_token(bad, "admin", None).await.is_err());
    // The system's own actor names, and its prefix, are not for tokens.
    for name in ["env-admin", "ff-sync", "FF-CLI", "ff-guard"] {
        let t = TokenRecord { id: format!("r-{name}"), name: name.into(), ..token.clone() };
        let err = s.create_token(t, "admin", None).await.unwrap_err().to_string();
        assert!(err.contains("reserved for the system"), "{name}: {err}");
    }
    // One cap on free text, for every write.
    let long = "x".repeat(ff_core::MAX_TEXT_BYTES + 1);
    let t = TokenRecord { id: "tok9".into(), name: "long-reason".into(), ..token.clone() };
    let err = s.create_token(t, "admin", Some(&long)).await.unwrap_err();
    assert!(matches!(err, StoreError::TooLong { field: "reason", max: 1024 }), "{err}");
    let err = s.write(w(Mutation::set_enabled("KILL", false)).reason(long.clone())).await.unwrap_err();
    assert_eq!(err.to_string(), "reason is longer than 1024 bytes");
    let patch = FlagPatch { description: Some(long.clone()), ..FlagPatch::default() };
    let err = s.write(w(Mutation::UpdateFlag { key: "KILL".into(), patch, expected_version: None })).await;
    assert!(err.unwrap_err().to_string().contains("description is longer than 1024 bytes"));
    let seg = SegmentDef { description: long, ..SegmentDef::default() };
    assert!(s.put_segment("long", seg, None, ("admin", None)).await.is_err());
    assert_eq!(s.token("tok1").await.unwrap().unwrap().secret_hash, "abc123");
    assert_eq!(s.tokens().await.unwrap().len(), 1);
    let revoked = s.revoke_token("ci-bot", "admin@example.com", Some("rotated")).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(s.token("tok1").await.unwrap().unwrap().revoked_at.is_some());
    assert!(matches!(s.revoke_token("ci-bot", "admin", None).await, Err(StoreError::UnknownToken(_))));
    let again = TokenRecord { id: "tok3".into(), ..token.clone() };
    assert!(
        matches!(s.create_token(again, "admin", None).await, Err(StoreError::TokenExists(_))),
        "a revoked token's name is not reused"
    );
    let log = s.changes(&ChangeQuery { limit: 2, ..ChangeQuery::default() }).await.unwrap();
    assert_eq!(log.iter().map(|c| c.action).collect::<Vec<_>>(), [Action::TokenRevoke, Action::TokenCreate]);
    assert_eq!(
        log.iter().map(|c| c.reason.as_deref()).collect::<Vec<_>>(),
        [Some("rotated"), Some("CI needs it")]
    );
    assert!(log.iter().all(|c| !c.after.as_ref().unwrap().to_string().contains("abc123")));
    // A restore can only be followed by a full load (its overrides are not in the log);
    // after it, token rows and the rest apply incrementally.
    let log = s.changes_since(0, 1000).await.unwrap();
    assert!(matches!(Snapshot::empty().apply(&log), Err(ApplyError::NeedsReload { seq: 10 })));
    let at_restore = Snapshot::from_state(&ff_core::StoreState { seq: 10, ..Default::default() });
    assert!(at_restore.apply(&log[10..]).is_ok());
}

/// Segments: created, versioned, refused while a live flag uses them.
pub async fn segments(store: Arc<dyn Store>) {
    let s = &*store;
    let who = ("ops@example.com", Some("beta testers"));
    let seg = |v: serde_json::Value| serde_json::from_value::<SegmentDef>(v).unwrap();
    let testers = seg(json!({"description": "QA", "included": ["qa-1", "qa-2"], "excluded": ["qa-2"]}));
    let c = s.put_segment("testers", testers.clone(), Some(0), who).await.unwrap().unwrap();
    assert_eq!((c.seq, c.action, c.key.as_str()), (1, Action::SegmentPut, "testers"));
    assert_eq!((c.actor.as_str(), c.reason.as_deref()), ("ops@example.com", Some("beta testers")));
    assert!(s.put_segment("testers", testers.clone(), None, who).await.unwrap().is_none(), "unchanged");
    assert!(matches!(
        s.put_segment("testers", testers.clone(), Some(0), who).await,
        Err(StoreError::VersionConflict { expected: 0, actual: 1, .. })
    ));
    for (key, bad, says) in [
        ("x", json!({"included": [""]}), "user id is empty"),
        (
            "x",
            json!({"rules": [{"clauses": [{"attribute": "user_id", "op": "in_segment", "values": ["testers"]}]}]}),
            "cannot refer to segments",
        ),
        (
            "x",
            json!({"rules": [{"clauses": [{"attribute": "email", "op": "matches", "values": ["("]}]}]}),
            "bad regex",
        ),
        ("bad key", json!({}), "may only contain"),
    ] {
        let err = s.put_segment(key, seg(bad), None, who).await.unwrap_err().to_string();
        assert!(err.contains(says), "{err}");
    }
    assert_eq!(s.latest_seq().await.unwrap(), 1, "nothing written by refused writes");

    // Flags may only name segments that exist.
    let mut flag = def("BETA", ValueType::Bool, json!(false));
    flag.targeting = serde_json::from_value(json!({"rules": [{"clauses": [{"attribute": "user_id", "op": "in_segment", "values": ["nobody"]}], "value": true}]})).unwrap();
    let err = s.write(w(Mutation::CreateFlag { def: flag.clone(), if_missing: false })).await.unwrap_err();
    assert!(err.to_string().contains("segment \"nobody\" does not exist"), "{err}");
    flag.targeting = serde_json::from_value(json!({"rules": [{"clauses": [{"attribute": "user_id", "op": "in_segment", "values": ["testers"]}], "value": true}]})).unwrap();
    s.write(w(Mutation::CreateFlag { def: flag, if_missing: false })).await.unwrap();

    // In use: not deleted. Unused: deleted, with its record in the log.
    assert!(
        matches!(s.delete_segment("testers", who).await, Err(StoreError::SegmentInUse { flags, .. }) if flags == ["BETA"])
    );
    let state = s.load().await.unwrap();
    assert_eq!(state.segments.iter().map(|x| x.key.as_str()).collect::<Vec<_>>(), ["testers"]);
    let log = s.changes_since(0, 100).await.unwrap();
    assert_eq!(Snapshot::empty().apply(&log).unwrap().to_state(), Snapshot::from_state(&state).to_state());
    s.write(w(Mutation::ArchiveFlag { key: "BETA".into(), expected_version: None })).await.unwrap();
    let c = s.delete_segment("testers", who).await.unwrap();
    assert_eq!(
        (c.action, c.before.as_ref().unwrap()["definition"]["description"].clone()),
        (Action::SegmentDelete, json!("QA"))
    );
    assert!(matches!(s.delete_segment("testers", who).await, Err(StoreError::UnknownSegment(_))));
    assert!(s.segments().await.unwrap().is_empty());
}

/// Declared attributes: targeting may only read declared ones.
pub async fn attributes(store: Arc<dyn Store>) {
    let s = &*store;
    s.write(w(Mutation::CreateFlag { def: def("F", ValueType::Bool, json!(false)), if_missing: false }))
        .await
        .unwrap();
    let targeting = |t: serde_json::Value| {
        let patch: FlagPatch = serde_json::from_value(json!({ "targeting": t })).unwrap();
        Mutation::UpdateFlag { key: "F".into(), patch, expected_version: None }
    };
    let split = json!({"variations": [{"value": true, "weight": 10000}]});
    // Nothing declared: anything goes.
    s.write(w(targeting(json!({"split": split, "bucket_by": "anything"})))).await.unwrap();
    assert_eq!(s.declare_attributes(&["plan".into(), "org_id".into()]).await.unwrap(), ["plan", "org_id"]);
    assert_eq!(s.declare_attributes(&["plan".into()]).await.unwrap(), Vec::<String>::new(), "idempotent");
    assert_eq!(s.attributes().await.unwrap(), ["org_id", "plan"]);
    let before = seq(s).await;
    for (t, says) in [
        (
            json!({"split": split, "bucket_by": "country"}),
            "attribute \"country\" is not declared (declared: org_id, plan)",
        ),
        (
            json!({"rules": [{"clauses": [{"attribute": "pln", "op": "in", "values": ["pro"]}], "value": true}]}),
            "\"pln\" is not declared",
        ),
    ] {
        let err = s.write(w(targeting(t))).await.unwrap_err().to_string();
        assert!(err.contains(says), "{err}");
    }
    let seg: SegmentDef =
        serde_json::from_value(json!({"rules": [{"clauses": [{"attribute": "country", "op": "exists"}]}]}))
            .unwrap();
    assert!(
        s.put_segment("s", seg, None, ("t", None)).await.unwrap_err().to_string().contains("not declared")
    );
    assert_eq!(seq(s).await, before, "nothing written");
    s.write(w(targeting(json!({"split": split, "bucket_by": "org_id",
        "rules": [{"clauses": [{"attribute": "plan", "op": "exists"}, {"attribute": "user_id", "op": "exists"}], "value": true}]}))))
        .await
        .unwrap();
}

/// Syncing code declarations: created once, metadata follows the code, operators' values stay.
pub async fn sync_declarations(store: Arc<dyn Store>) {
    const A: Flag<bool> = Flag::new("A", false).description("a");
    const B: Flag<i64> = Flag::new("B", 24).range(0, 100);
    const B_NARROW: Flag<i64> = Flag::new("B", 24).range(0, 50).description("narrower");
    const B_TOO_NARROW: Flag<i64> = Flag::new("B", 5).range(0, 10);
    const C_AS_STRING: Flag<String> = Flag::new("C", "x");
    const BROKEN: Flag<i64> = Flag::new("BROKEN", 500).range(0, 10);
    let s = &*store;
    s.write(w(Mutation::CreateFlag { def: def("C", ValueType::Int, json!(1)), if_missing: false }))
        .await
        .unwrap();
    s.write(w(Mutation::CreateFlag { def: def("LEGACY", ValueType::Bool, json!(true)), if_missing: false }))
        .await
        .unwrap();
    let r =
        sync(s, &[A.decl(), B.decl(), C_AS_STRING.decl(), BROKEN.decl()], &Default::default()).await.unwrap();
    assert_eq!(r.created, ["A", "B"]);
    assert_eq!(r.undeclared, ["LEGACY"]);
    assert_eq!(r.type_conflicts, ["C"]);
    assert_eq!(r.problems.len(), 1);
    assert!(r.problems[0].1.contains("above the maximum"), "{:?}", r.problems);
    let b = s.flag("B").await.unwrap().unwrap();
    assert_eq!((b.value.to_json(), b.description.as_str()), (json!(24), ""));
    let created = s.changes_since(2, 10).await.unwrap();
    assert!(created.iter().all(|c| c.actor == crate::SYNC_ACTOR));

    // Idempotent.
    let before = seq(s).await;
    let again = sync(s, &[A.decl(), B.decl()], &Default::default()).await.unwrap();
    assert!(again.created.is_empty() && again.updated.is_empty());
    assert_eq!(seq(s).await, before);

    // Bounds follow code; values never change on sync.
    s.write(w(Mutation::set_value("B", 40))).await.unwrap();
    let r = sync(s, &[B_NARROW.decl()], &Default::default()).await.unwrap();
    assert_eq!(r.updated, ["B"]);
    let b = s.flag("B").await.unwrap().unwrap();
    assert_eq!(
        (b.value.to_json(), b.schema.max.clone(), b.description.as_str()),
        (json!(40), Some(50.into()), "narrower")
    );
    // Bounds the stored value does not fit are reported, not applied.
    let r = sync(s, &[B_TOO_NARROW.decl()], &Default::default()).await.unwrap();
    assert!(r.updated.is_empty());
    assert!(r.problems[0].1.contains("does not fit"), "{:?}", r.problems);
    assert_eq!(s.flag("B").await.unwrap().unwrap().schema.max, Some(50.into()));
}

/// Rules between settings (`RATE_MIN <= RATE_MAX`): synced with the declarations,
/// stored on both flags, and every write that would leave one broken — a value, an
/// override, a switch, targeting, a batch — is refused naming both settings, the
/// values and the user, with nothing written.
pub async fn setting_rules(store: Arc<dyn Store>) {
    use ff_core::{RuleOp, SettingRule, Targeting};
    const MIN: Flag<f64> = Flag::new("RATE_MIN", 60.0).range(0.0, 10_000.0);
    const MAX: Flag<f64> = Flag::new("RATE_MAX", 500.0).range(0.0, 10_000.0);
    let mut decls = vec![MIN.decl(), MAX.decl()];
    ff_core::attach_rules(&mut decls, &[SettingRule { left: "RATE_MIN", op: RuleOp::Le, right: "RATE_MAX" }]);
    let s = &*store;
    let r = sync(s, &decls, &Default::default()).await.unwrap();
    assert_eq!(r.created, ["RATE_MIN", "RATE_MAX"]);
    for d in &decls {
        assert_eq!(s.flag(&d.key).await.unwrap().unwrap().schema.rules, d.schema.rules, "{} stored", d.key);
    }
    let refused = async |m: Mutation| -> String {
        let before = seq(s).await;
        let e = s.write(w(m)).await.expect_err("refused");
        assert!(matches!(e.root(), StoreError::RuleBroken(_)), "{e:?}");
        assert_eq!(seq(s).await, before, "nothing written");
        e.to_string()
    };
    // Global values, from either side.
    assert_eq!(
        refused(Mutation::set_value("RATE_MIN", 600.0)).await,
        "rule RATE_MIN <= RATE_MAX would be broken: RATE_MIN would serve 600.0, RATE_MAX 500.0"
    );
    assert_eq!(
        refused(Mutation::set_value("RATE_MAX", 50.0)).await,
        "rule RATE_MAX >= RATE_MIN would be broken: RATE_MAX would serve 50.0, RATE_MIN 60.0"
    );
    s.write(w(Mutation::set_value("RATE_MAX", 60.0))).await.unwrap();
    s.write(w(Mutation::set_value("RATE_MAX", 500.0))).await.unwrap();
    // A user's values with their overrides.
    s.write(w(Mutation::set_override("RATE_MIN", "tester", 1.0))).await.unwrap();
    let e = refused(Mutation::set_override("RATE_MAX", "tester", 0.5)).await;
    assert!(e.contains("for user \"tester\"") && e.contains("RATE_MAX would serve 0.5, RATE_MIN 1.0"), "{e}");
    s.write(w(Mutation::set_override("RATE_MAX", "tester", 2.0))).await.unwrap();
    let e = refused(Mutation::set_override("RATE_MAX", "cheap", 30.0)).await;
    assert!(
        e.contains("for user \"cheap\"") && e.contains("RATE_MIN 60.0"),
        "against the global minimum: {e}"
    );
    // A global change that breaks someone's override.
    s.write(w(Mutation::set_override("RATE_MIN", "vip", 400.0))).await.unwrap();
    let e = refused(Mutation::set_value("RATE_MAX", 300.0)).await;
    assert!(e.contains("for user \"vip\""), "{e}");
    s.write(w(Mutation::delete_override("RATE_MIN", "vip"))).await.unwrap();
    // Deleting an override that kept a user's pair within the rule.
    s.write(w(Mutation::set_override("RATE_MAX", "big", 900.0))).await.unwrap();
    s.write(w(Mutation::set_override("RATE_MIN", "big", 800.0))).await.unwrap();
    let e = refused(Mutation::delete_override("RATE_MAX", "big")).await;
    assert!(e.contains("for user \"big\": RATE_MAX would serve 500.0, RATE_MIN 800.0"), "{e}");
    s.write(w(Mutation::delete_override("RATE_MIN", "big"))).await.unwrap();
    // A batch is checked as a whole: both sides move together.
    let both = vec![Mutation::set_value("RATE_MIN", 600.0), Mutation::set_value("RATE_MAX", 1000.0)];
    s.write_batch(Batch::new("t", both)).await.unwrap();
    let before = seq(s).await;
    let e = s.write_batch(Batch::new("t", vec![Mutation::set_value("RATE_MIN", 2000.0)])).await.unwrap_err();
    assert!(matches!(e.root(), StoreError::RuleBroken(_)), "{e:?}");
    assert_eq!(seq(s).await, before);
    // Switching a setting off serves its off value (here 500.0, its value when created):
    // below the minimum of 600.
    let e = refused(Mutation::set_enabled("RATE_MAX", false)).await;
    assert!(e.contains("RATE_MAX would serve 500.0, RATE_MIN 600.0"), "{e}");
    // Targeting: every value a split may serve.
    let split = |v: f64| -> Targeting {
        serde_json::from_value(json!({"split": {"variations": [
            {"value": v, "weight": 1000}, {"value": 600.0, "weight": 9000}]}}))
        .unwrap()
    };
    let patch = |t| Mutation::UpdateFlag {
        key: "RATE_MIN".into(),
        patch: FlagPatch { targeting: Some(t), ..Default::default() },
        expected_version: None,
    };
    s.write(w(patch(split(900.0)))).await.unwrap();
    assert!(refused(patch(split(1200.0))).await.contains("RATE_MIN would serve 1200.0, RATE_MAX 1000.0"));
    // A schedule step's split too.
    let step: Targeting = serde_json::from_value(json!({"schedule": [{"at": "2030-01-01T00:00:00Z",
        "split": {"variations": [{"value": 1100.0, "weight": 10000}]}}]}))
    .unwrap();
    assert!(refused(patch(step)).await.contains("RATE_MIN would serve 1100.0"));
    // Archived, or past its expiry with `serve_default`, a setting serves its code default (500).
    let e = refused(Mutation::ArchiveFlag { key: "RATE_MAX".into(), expected_version: None }).await;
    assert!(e.contains("RATE_MAX would serve 500.0, RATE_MIN 600.0"), "{e}");
    let expiring = Mutation::UpdateFlag {
        key: "RATE_MAX".into(),
        patch: FlagPatch {
            expiry: Some(ff_core::ExpiryPolicy::ServeDefault),
            expires_at: Some(Some(time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(30_000))),
            ..Default::default()
        },
        expected_version: None,
    };
    assert!(refused(expiring).await.contains("RATE_MAX would serve 500.0"));
    // Stored values that break a newly declared rule: reported by sync, not applied.
    let mut flipped = vec![MIN.decl(), MAX.decl()];
    ff_core::attach_rules(
        &mut flipped,
        &[SettingRule { left: "RATE_MIN", op: RuleOp::Gt, right: "RATE_MAX" }],
    );
    let r = sync(s, &flipped, &Default::default()).await.unwrap();
    assert!(r.problems.iter().any(|(_, p)| p.contains("break a declared rule")), "{:?}", r.problems);
    assert_eq!(s.flag("RATE_MIN").await.unwrap().unwrap().schema.rules, decls[0].schema.rules);
}

/// Kinds, permanence, expiry policy and dates: declared in code, stored, patched.
pub async fn lifecycle(store: Arc<dyn Store>) {
    use ff_core::{ExpiryPolicy, FlagKind, Lifetimes};
    use time::{Duration as Days, OffsetDateTime};
    const RELEASE: Flag<bool> = Flag::new("RELEASE", false).owner("checkout-team");
    const EXPERIMENT: Flag<bool> = Flag::new("EXPERIMENT", false).kind(FlagKind::Experiment);
    const OPS: Flag<bool> = Flag::new("OPS", false).kind(FlagKind::Ops).expiry(ExpiryPolicy::ServeDefault);
    const KILL: Flag<bool> = Flag::new("KILL", true).kind(FlagKind::KillSwitch);
    const LIMIT: Flag<i64> = Flag::new("LIMIT", 5);
    const DATED: Flag<bool> = Flag::new("DATED", false).expires("2030-01-02");
    const PINNED: Flag<bool> = Flag::new("PINNED", false).permanent();
    const BAD_DATE: Flag<bool> = Flag::new("BAD_DATE", false).expires("next tuesday");
    let s = &*store;
    let lifetimes = Lifetimes { ops: Days::days(3), ..Lifetimes::default() };
    let decls = [RELEASE, EXPERIMENT, OPS, KILL, DATED, PINNED, BAD_DATE].map(|f| f.decl());
    let before = OffsetDateTime::now_utc();
    let r = sync(s, &[&decls[..], &[LIMIT.decl()]].concat(), &lifetimes).await.unwrap();
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0].1.contains("next tuesday"), "{:?}", r.problems);
    let get = async |key: &str| s.flag(key).await.unwrap().unwrap();
    // Days from the sync, rounded (the store keeps milliseconds).
    let lifetime = |f: &ff_core::FlagRecord| {
        f.meta.expires_at.map(|t| ((t - before).as_seconds_f64() / 86_400.0).round() as i64)
    };
    let release = get("RELEASE").await;
    assert_eq!((release.meta.kind, release.meta.owner.as_str()), (None, "checkout-team"));
    assert_eq!(release.meta.kind_or_default(release.value_type), FlagKind::Release);
    assert_eq!(lifetime(&release), Some(40));
    assert_eq!(lifetime(&get("EXPERIMENT").await), Some(40));
    let ops = get("OPS").await;
    assert_eq!((lifetime(&ops), ops.meta.expiry), (Some(3), ExpiryPolicy::ServeDefault));
    let kill = get("KILL").await;
    assert!(kill.meta.expires_at.is_none() && kill.meta.is_permanent(kill.value_type));
    let limit = get("LIMIT").await;
    assert_eq!(limit.meta.kind_or_default(limit.value_type), FlagKind::Config);
    assert!(limit.meta.expires_at.is_none());
    assert_eq!(get("DATED").await.meta.expires_at, Some(time::macros::datetime!(2030-01-02 00:00 UTC)));
    assert!(get("PINNED").await.meta.expires_at.is_none());

    // The API changes them; the code wins for kind and owner, the store for dates.
    let later = time::macros::datetime!(2031-05-06 07:08 UTC);
    let patch = FlagPatch {
        owner: Some("someone-else".into()),
        kind: Some(Some(FlagKind::Ops)),
        expires_at: Some(Some(later)),
        expiry: Some(ExpiryPolicy::ServeDefault),
        ..FlagPatch::default()
    };
    s.write(w(Mutation::UpdateFlag { key: "RELEASE".into(), patch, expected_version: None })).await.unwrap();
    let patched = get("RELEASE").await;
    assert_eq!(
        (patched.meta.owner.as_str(), patched.meta.kind, patched.meta.expiry),
        ("someone-else", Some(FlagKind::Ops), ExpiryPolicy::ServeDefault)
    );
    let r = sync(s, &[RELEASE.decl()], &lifetimes).await.unwrap();
    assert_eq!(r.updated, ["RELEASE"]);
    let synced = get("RELEASE").await;
    assert_eq!(synced.meta.owner, "checkout-team");
    // Undeclared kind and policy are left as the store has them.
    assert_eq!((synced.meta.kind, synced.meta.expiry), (Some(FlagKind::Ops), ExpiryPolicy::ServeDefault));
    assert_eq!(synced.meta.expires_at, Some(later));
    // Permanent can be set and cleared by the API.
    let patch = FlagPatch { permanent: Some(Some(true)), ..FlagPatch::default() };
    s.write(w(Mutation::UpdateFlag { key: "EXPERIMENT".into(), patch, expected_version: None }))
        .await
        .unwrap();
    let e = get("EXPERIMENT").await;
    assert_eq!(e.meta.permanent, Some(true));
    assert!(!e.meta.is_expired(e.value_type, later + Days::days(3650)));
    // Unknown kinds are refused with the field named.
    let bad: Result<FlagPatch, _> = serde_json::from_value(json!({"kind": "forever"}));
    assert!(bad.unwrap_err().to_string().contains("forever"));
}

/// Batches: all or nothing, in order, one `batch_end`, served from one snapshot.
pub async fn batches(store: Arc<dyn Store>) {
    let s = &*store;
    let mut signal = s.subscribe();
    signal.borrow_and_update();
    let create = |k: &str, ty, v| Mutation::CreateFlag { def: def(k, ty, v), if_missing: false };
    // Later mutations see earlier ones: create, then override the new flag.
    let b = Batch::new(
        "ops@example.com",
        vec![
            create("A", ValueType::Bool, json!(false)),
            create("B", ValueType::Bool, json!(false)),
            Mutation::set_override("B", "tester", true),
        ],
    )
    .reason("pair");
    let changes = s.write_batch(b).await.unwrap();
    assert_eq!(changes.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(changes.iter().all(|c| c.batch_end == Some(3)), "{changes:?}");
    assert!(changes.iter().all(|c| c.actor == "ops@example.com" && c.reason.as_deref() == Some("pair")));
    assert_eq!(s.changes_since(0, 10).await.unwrap(), changes, "the log holds what the batch returned");
    tokio::time::timeout(Duration::from_secs(5), signal.changed()).await.unwrap().unwrap();

    // A single write is not a batch.
    let single = s.write(w(Mutation::set_value("A", true))).await.unwrap().unwrap();
    assert_eq!((single.seq, single.batch_end), (4, None));

    // The third mutation is refused: nothing of the batch is written, and the error says which.
    let before = s.load().await.unwrap();
    let bad = Batch::new(
        "ops@example.com",
        vec![
            Mutation::set_value("A", false),
            Mutation::set_override("A", "u1", false),
            Mutation::set_value("B", "yes"),
            Mutation::set_value("B", true),
        ],
    );
    let err = s.write_batch(bad).await.unwrap_err();
    assert!(matches!(&err, StoreError::InBatch { index: 2, .. }), "{err:?}");
    assert!(matches!(err.root(), StoreError::Invalid { key, .. } if key == "B"), "{err:?}");
    assert!(err.to_string().starts_with("change 2 of the batch"), "{err}");
    assert_eq!(s.load().await.unwrap(), before, "a refused batch writes nothing");
    // A new flag created earlier in a refused batch is gone too.
    let err = s
        .write_batch(Batch::new(
            "x",
            vec![create("C", ValueType::Int, json!(1)), Mutation::set_value("NOPE", 1)],
        ))
        .await
        .unwrap_err();
    assert!(matches!(err.root(), StoreError::UnknownFlag(k) if k == "NOPE"), "{err:?}");
    assert!(s.flag("C").await.unwrap().is_none());
    assert_eq!(s.load().await.unwrap(), before);

    // Versions are checked inside a batch; the conflict names the flag.
    let a = s.flag("A").await.unwrap().unwrap();
    let stale = Mutation::UpdateFlag {
        key: "A".into(),
        patch: FlagPatch { value: Some(json!(false)), ..Default::default() },
        expected_version: Some(a.version - 1),
    };
    let err = s.write_batch(Batch::new("x", vec![Mutation::set_value("B", true), stale])).await.unwrap_err();
    assert!(
        matches!(err.root(), StoreError::VersionConflict { key, actual, .. } if key == "A" && *actual == a.version),
        "{err:?}"
    );
    assert_eq!(s.load().await.unwrap(), before);
    // An unknown segment is refused in a batch as in a single write.
    let rules = json!({"rules": [{"clauses": [{"attribute": "user_id", "op": "in_segment", "values": ["ghosts"]}], "value": true}]});
    let targeting = serde_json::from_value(rules).unwrap();
    let m = Mutation::UpdateFlag {
        key: "A".into(),
        patch: FlagPatch { targeting: Some(targeting), ..Default::default() },
        expected_version: None,
    };
    let err = s.write_batch(Batch::new("x", vec![m])).await.unwrap_err();
    assert!(matches!(err, StoreError::InBatch { index: 0, .. }), "{err:?}");
    assert_eq!(s.load().await.unwrap(), before);

    // No-ops write nothing: no change row, no seq.
    let noop =
        Batch::new("x", vec![Mutation::set_value("A", true), Mutation::delete_override("A", "nobody")]);
    assert!(s.write_batch(noop).await.unwrap().is_empty());
    assert!(s.write_batch(Batch::new("x", vec![])).await.unwrap().is_empty());
    assert_eq!(seq(s).await, 4);
    // Mixed: a no-op in the middle takes no seq.
    let mixed = Batch::new(
        "x",
        vec![
            Mutation::set_value("A", false),
            Mutation::set_value("A", false),
            Mutation::set_value("B", true),
        ],
    );
    let changes = s.write_batch(mixed).await.unwrap();
    assert_eq!(
        changes.iter().map(|c| (c.seq, c.batch_end)).collect::<Vec<_>>(),
        [(5, Some(6)), (6, Some(6))]
    );

    // Too many mutations: refused before anything is read or written.
    let huge = Batch::new(
        "x",
        (0..=Batch::MAX).map(|i| Mutation::set_override("A", format!("u{i}"), true)).collect(),
    );
    let err = s.write_batch(huge).await.unwrap_err();
    assert!(matches!(err, StoreError::BatchTooLarge { len: 1001, max: 1000 }), "{err:?}");
    assert!(err.to_string().contains("at most 1000"), "{err}");
    assert_eq!(seq(s).await, 6);

    // Applying the log incrementally equals a full load.
    let state = s.load().await.unwrap();
    let incremental = Snapshot::empty().apply(&s.changes_since(0, 100).await.unwrap()).unwrap();
    let full = Snapshot::from_state(&state);
    let ctx = ff_core::EvalContext::user("tester");
    for key in ["A", "B"] {
        assert_eq!(incremental.evaluate_key(key, &ctx), full.evaluate_key(key, &ctx), "{key}");
    }
    assert_eq!(incremental.version(), 6);
}

/// Ten batches of three and ten single writes racing (stores shared by instances):
/// the log stays gap-free and each batch contiguous.
pub async fn racing_writers(store: Arc<dyn Store>) {
    store
        .write(w(Mutation::CreateFlag { def: def("N", ValueType::Int, json!(0)), if_missing: false }))
        .await
        .unwrap();
    // Segment and token writes race with flag writes on the same log.
    let tasks: Vec<_> = (0..28)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move {
                if i >= 24 {
                    let token = TokenRecord {
                        id: format!("race-{i}"),
                        name: format!("racer-{i}"),
                        role: Role::Viewer,
                        secret_hash: "h".into(),
                        created_at: time::OffsetDateTime::UNIX_EPOCH,
                        revoked_at: None,
                    };
                    s.create_token(token, "x", None).await.map(|_| 1)
                } else if i >= 20 {
                    let def = serde_json::from_value(json!({ "included": [format!("u{i}")] })).unwrap();
                    s.put_segment(&format!("seg-{i}"), def, Some(0), ("x", None))
                        .await
                        .map(|c| c.iter().len())
                } else if i % 2 == 0 {
                    let m = (0..3).map(|j| Mutation::set_override("N", format!("b{i}-{j}"), j)).collect();
                    s.write_batch(Batch::new("x", m)).await.map(|c| c.len())
                } else {
                    s.write(w(Mutation::set_override("N", format!("u{i}"), i))).await.map(|c| c.iter().len())
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let log = store.changes_since(0, 100).await.unwrap();
    assert_eq!(log.iter().map(|c| c.seq).collect::<Vec<_>>(), (1..=49).collect::<Vec<_>>());
    assert_eq!(store.segments().await.unwrap().len(), 4);
    assert_eq!(store.tokens().await.unwrap().len(), 4);
    // Each batch's three changes sit together, ending at their batch_end.
    for c in log.iter().filter(|c| c.batch_end.is_some()) {
        let end = c.batch_end.unwrap();
        let members: Vec<_> = log.iter().filter(|d| d.batch_end == Some(end)).map(|d| d.seq).collect();
        assert_eq!(members, [end - 2, end - 1, end], "{log:?}");
        assert_eq!(
            c.subject.as_deref().map(|u| u.rsplit_once('-').unwrap().0),
            log.iter()
                .find(|d| d.seq == end)
                .unwrap()
                .subject
                .as_deref()
                .map(|u| u.rsplit_once('-').unwrap().0)
        );
    }
}

/// Usage counts add up by key, day, reason and variant; unknown keys by key.
pub async fn usage(store: Arc<dyn Store>) {
    let store = &*store;
    let at = time::macros::datetime!(2026-11-20 10:00 UTC);
    let c = |key: &str, reason: &str, variant: &str, count| UsageCount {
        key: key.into(),
        reason: reason.into(),
        variant: variant.into(),
        count,
    };
    store
        .write(Write::new(
            "t",
            Mutation::CreateFlag {
                def: FlagDef::from(&Flag::<bool>::new("ON", true).decl()),
                if_missing: false,
            },
        ))
        .await
        .unwrap();
    let counts =
        [c("ON", "global", "true", 5), c("ON", "override", "false", 1), c("ON", "global", "true", 2)];
    store.record_usage(&counts, &[("GONE".into(), 3)], at).await.unwrap();
    let later = at + time::Duration::hours(1);
    store.record_usage(&[c("ON", "global", "true", 10)], &[("GONE".into(), 1)], later).await.unwrap();
    let next_day = at + time::Duration::days(1);
    store.record_usage(&[c("ON", "global", "true", 4)], &[], next_day).await.unwrap();
    let rows = store.usage(at.date()).await.unwrap();
    let got: Vec<_> =
        rows.iter().map(|r| (r.day.to_string(), r.reason.as_str(), r.variant.as_str(), r.count)).collect();
    assert_eq!(
        got,
        [
            ("2026-11-20".into(), "global", "true", 17),
            ("2026-11-20".into(), "override", "false", 1),
            ("2026-11-21".into(), "global", "true", 4),
        ]
    );
    assert_eq!(rows[0].last_at, later);
    assert_eq!(store.usage(next_day.date()).await.unwrap().len(), 1);
    let unknown = store.unknown_flags().await.unwrap();
    assert_eq!(unknown.len(), 1);
    assert_eq!((unknown[0].count, unknown[0].first_at, unknown[0].last_at), (4, at, later));
}

/// A guarded rollout's start is stamped by the store; each instance's counts are
/// replaced whole and read back together; one holder at a time has a lease.
pub async fn guarded_rollouts(store: Arc<dyn Store>) {
    let store = &*store;
    let split = json!({"variations": [{"value": true, "weight": 1000}, {"value": false, "weight": 9000}]});
    let targeting = |guard: serde_json::Value| -> ff_core::Targeting {
        serde_json::from_value(json!({"split": split, "guard": guard})).unwrap()
    };
    let mut def = FlagDef::from(&Flag::<bool>::new("G", false).decl());
    def.targeting = targeting(json!({"started": "2001-01-01T00:00:00Z"}));
    store.write(Write::new("t", Mutation::CreateFlag { def, if_missing: false })).await.unwrap();
    let started = |r: ff_core::FlagRecord| r.targeting.guard.unwrap().started.unwrap();
    let first = started(store.flag("G").await.unwrap().unwrap());
    assert!(first.year() > 2001, "the store stamps the start, ignoring the writer's");
    let update = |patch: FlagPatch| {
        Write::new("t", Mutation::UpdateFlag { key: "G".into(), patch, expected_version: None })
    };
    // The same rollout sent back with another start: nothing to do.
    let same = FlagPatch {
        targeting: Some(targeting(json!({"started": "2002-02-02T00:00:00Z"}))),
        ..Default::default()
    };
    assert!(store.write(update(same)).await.unwrap().is_none());
    let described = FlagPatch { description: Some("checkout".into()), ..Default::default() };
    store.write(update(described)).await.unwrap();
    assert_eq!(started(store.flag("G").await.unwrap().unwrap()), first, "another field: the same rollout");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let stricter =
        FlagPatch { targeting: Some(targeting(json!({"max_error_increase": 0.5}))), ..Default::default() };
    store.write(update(stricter)).await.unwrap();
    assert!(started(store.flag("G").await.unwrap().unwrap()) > first, "a new test starts afresh");

    // The flag's value changing swaps control and treatment: a new rollout.
    let stamped = started(store.flag("G").await.unwrap().unwrap());
    tokio::time::sleep(Duration::from_millis(5)).await;
    store.write(update(FlagPatch { value: Some(json!(true)), ..Default::default() })).await.unwrap();
    assert!(started(store.flag("G").await.unwrap().unwrap()) > stamped);
    // A guarded split needs a control and a treatment; a step something to roll out.
    let refused = [
        (
            json!({"split": {"variations": [{"value": false, "weight": 10000}]}, "guard": {}}),
            "the split must serve both",
        ),
        (
            json!({"split": split, "schedule": [{"at": "2099-01-01T00:00:00Z", "split": {"variations": [{"value": true, "weight": 10000}]}}], "guard": {}}),
            "schedule step 0 serves only the flag's value (true): nothing to roll out",
        ),
    ];
    for (t, message) in refused {
        let patch = FlagPatch { targeting: Some(serde_json::from_value(t).unwrap()), ..Default::default() };
        let e = store.write(update(patch)).await.unwrap_err().to_string();
        assert!(e.contains(message), "{e}");
    }
    // A ramp the clock runs, then guarded: the step in force goes into the split.
    let half = json!({"variations": [{"value": false, "weight": 5000}, {"value": true, "weight": 5000}]});
    let ramp = json!({"split": split, "schedule": [{"at": "2020-01-01T00:00:00Z", "split": half}, {"at": "2099-01-01T00:00:00Z", "split": {"variations": [{"value": false, "weight": 10000}]}}]});
    assert!(store.flag("G").await.unwrap().unwrap().targeting.guard.is_some());
    store
        .write(update(FlagPatch { targeting: Some(Default::default()), ..Default::default() }))
        .await
        .unwrap();
    let unguarded =
        FlagPatch { targeting: Some(serde_json::from_value(ramp.clone()).unwrap()), ..Default::default() };
    store.write(update(unguarded)).await.unwrap();
    let mut guarded = ramp.clone();
    guarded["guard"] = json!({});
    let patch =
        FlagPatch { targeting: Some(serde_json::from_value(guarded.clone()).unwrap()), ..Default::default() };
    store.write(update(patch)).await.unwrap();
    let t = store.flag("G").await.unwrap().unwrap().targeting;
    assert_eq!((t.split.unwrap().variations[0].weight, t.schedule.len()), (5000, 1), "50 % stays in force");
    // Undone (as a revert would): the clock serves the same 50 % again, so it may.
    let unguarded =
        FlagPatch { targeting: Some(serde_json::from_value(ramp.clone()).unwrap()), ..Default::default() };
    store.write(update(unguarded)).await.unwrap();
    let patch =
        FlagPatch { targeting: Some(serde_json::from_value(guarded.clone()).unwrap()), ..Default::default() };
    store.write(update(patch)).await.unwrap();
    // A step waiting on the guard cannot lose it: the clock would serve it at once.
    let waiting = json!({"split": half, "schedule": [{"at": "2020-06-01T00:00:00Z", "split": {"variations": [{"value": false, "weight": 10000}]}}], "guard": {}});
    let patch =
        FlagPatch { targeting: Some(serde_json::from_value(waiting.clone()).unwrap()), ..Default::default() };
    store.write(update(patch)).await.unwrap();
    let mut unguarded = waiting;
    unguarded.as_object_mut().unwrap().remove("guard");
    let patch =
        FlagPatch { targeting: Some(serde_json::from_value(unguarded).unwrap()), ..Default::default() };
    let e = store.write(update(patch)).await.unwrap_err().to_string();
    assert!(e.contains("schedule step 0 (due 2020-06-01T00:00:00Z) waits on the guard"), "{e}");
    // A kill switch still flips.
    store.write(Write::new("t", Mutation::set_enabled("G", false))).await.unwrap();

    let at = time::OffsetDateTime::now_utc();
    let arm = |requests, errors| ff_core::guard::Arm { requests, errors, ..Default::default() };
    let row = |instance: &str, epoch, variation, requests| crate::GuardCount {
        flag: "G".into(),
        epoch,
        instance: instance.into(),
        variation,
        arm: arm(requests, requests / 10),
    };
    store.put_guard_counts(&[row("a", 1, 0, 10), row("a", 1, 1, 90), row("a", 2, 0, 5)], at).await.unwrap();
    store.put_guard_counts(&[row("b", 1, 0, 20)], at).await.unwrap();
    // A later flush holds all of "a"'s counts so far: it replaces, never adds.
    store.put_guard_counts(&[row("a", 1, 0, 30)], at).await.unwrap();
    let got = store.guard_counts("G", 1).await.unwrap().unwrap();
    let got: Vec<_> =
        got.iter().map(|r| (r.instance.as_str(), r.variation, r.arm.requests, r.arm.errors)).collect();
    assert_eq!(got, [("a", 0, 30, 3), ("a", 1, 90, 9), ("b", 0, 20, 2)]);
    assert_eq!(store.guard_counts("G", 2).await.unwrap().unwrap().len(), 1);
    assert!(store.guard_counts("OTHER", 1).await.unwrap().unwrap().is_empty());

    let ttl = Duration::from_millis(300);
    let now = time::OffsetDateTime::now_utc;
    assert!(store.lease("guard", "a", ttl, now()).await.unwrap(), "free: taken");
    assert!(!store.lease("guard", "b", ttl, now()).await.unwrap(), "held by another");
    assert!(store.lease("guard", "a", ttl, now()).await.unwrap(), "renewed by its holder");
    assert!(store.lease("other", "b", ttl, now()).await.unwrap(), "leases are by name");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(store.lease("guard", "b", ttl, now()).await.unwrap(), "expired: taken over");
    assert!(!store.lease("guard", "a", ttl, now()).await.unwrap());
}

/// `check` validates a write as `write` would and shows its change row, writing nothing.
pub async fn checking_writes_nothing(store: Arc<dyn Store>) {
    let store = &*store;
    let def = FlagDef::from(&Flag::<i64>::new("LEAD", 24).range(0, 100).decl());
    store.write(Write::new("t", Mutation::CreateFlag { def, if_missing: false })).await.unwrap();
    let seq = store.latest_seq().await.unwrap();
    let change = store.check(Write::new("t", Mutation::set_value("LEAD", 12))).await.unwrap().unwrap();
    let value = |state: Option<serde_json::Value>| {
        serde_json::from_value::<ff_core::FlagRecord>(state.unwrap()).unwrap().value
    };
    assert_eq!(value(change.after.clone()), ff_core::Value::Int(12));
    assert_eq!(value(change.before.clone()), ff_core::Value::Int(24));
    let e = store.check(Write::new("t", Mutation::set_value("LEAD", 500))).await.unwrap_err();
    assert!(e.to_string().contains("above the maximum 100"), "{e}");
    assert!(
        store.check(Write::new("t", Mutation::set_value("LEAD", 24))).await.unwrap().is_none(),
        "no change"
    );
    assert_eq!(store.latest_seq().await.unwrap(), seq, "nothing written");
    assert_eq!(store.flag("LEAD").await.unwrap().unwrap().value, ff_core::Value::Int(24));
    // And the write itself still goes through afterwards.
    store.write(Write::new("t", Mutation::set_value("LEAD", 12))).await.unwrap();
    assert_eq!(store.latest_seq().await.unwrap(), seq + 1);
}

/// Change requests: written version-checked, alone or in the transaction of the
/// changes they hold (all or nothing), with audit rows; change rows say who approved
/// them, or that they were an emergency.
pub async fn change_requests(store: Arc<dyn Store>) {
    let store = &*store;
    let def = FlagDef::from(&Flag::<i64>::new("RATE", 60).range(0, 100).decl());
    store.write(Write::new("t", Mutation::CreateFlag { def, if_missing: false })).await.unwrap();
    let put = |version: u64, status: &str| RequestPut {
        id: 7,
        key: "RATE".into(),
        body: json!({"status": status, "value": 1}),
        expected_version: version,
    };
    // Made: a new request, with its audit row.
    let made = store.write_batch(Batch::new("ann", vec![]).request(put(0, "pending"))).await.unwrap();
    assert_eq!(made.len(), 1);
    assert_eq!(
        (made[0].action, made[0].key.as_str(), made[0].subject.as_deref()),
        (Action::RequestPut, "RATE", Some("7"))
    );
    assert_eq!(made[0].after, Some(json!({"status": "pending", "value": 1})));
    let stored = store.request(7).await.unwrap().unwrap();
    assert_eq!((stored.id, stored.key.as_str(), stored.version), (7, "RATE", 1));
    assert_eq!(store.requests().await.unwrap(), vec![stored]);
    // A second maker of the same id, or a decider on an old version, is refused.
    let seq = store.latest_seq().await.unwrap();
    for stale in [put(0, "pending"), put(2, "applied")] {
        let e = store.write_batch(Batch::new("bob", vec![]).request(stale)).await.unwrap_err();
        assert!(matches!(e, StoreError::RequestConflict { id: 7, actual: 1, .. }), "{e:?}");
    }
    // Refused with the changes it holds: neither is written.
    let applying =
        Batch::new("ann", vec![Mutation::set_value("RATE", 1)]).approved_by("bob").request(put(2, "applied"));
    assert!(matches!(store.write_batch(applying).await.unwrap_err(), StoreError::RequestConflict { .. }));
    assert_eq!(store.latest_seq().await.unwrap(), seq, "nothing written");
    assert_eq!(store.flag("RATE").await.unwrap().unwrap().value, ff_core::Value::Int(60));
    // A change the request holds that the store refuses leaves the request as it was.
    let bad = Batch::new("ann", vec![Mutation::set_value("RATE", 500)]).request(put(1, "applied"));
    assert!(store.write_batch(bad).await.is_err());
    assert_eq!(store.request(7).await.unwrap().unwrap().version, 1);
    // Applied: the change and the request together; the change row names both people.
    let applied = Batch::new("ann", vec![Mutation::set_value("RATE", 1)])
        .reason("tester rate")
        .approved_by("bob")
        .request(put(1, "applied"));
    let changes = store.write_batch(applied).await.unwrap();
    assert_eq!(changes.len(), 2);
    assert_eq!((changes[0].action, changes[0].actor.as_str()), (Action::FlagUpdate, "ann"));
    assert_eq!(changes[0].approved_by.as_deref(), Some("bob"));
    assert!(!changes[0].emergency);
    assert_eq!(store.flag("RATE").await.unwrap().unwrap().value, ff_core::Value::Int(1));
    assert_eq!(store.request(7).await.unwrap().unwrap().body["status"], "applied");
    let logged = store.change(changes[0].seq).await.unwrap().unwrap();
    assert_eq!(logged, changes[0], "the log keeps who approved");
    // An emergency is marked as such in the log.
    let off = Batch::new(
        "ann",
        vec![Mutation::UpdateFlag {
            key: "RATE".into(),
            patch: FlagPatch { enabled: Some(false), ..FlagPatch::default() },
            expected_version: None,
        }],
    )
    .emergency();
    let changes = store.write_batch(off).await.unwrap();
    assert!(changes[0].emergency && changes[0].approved_by.is_none());
    assert!(store.change(changes[0].seq).await.unwrap().unwrap().emergency);
    // Notes: audit rows of what was done outside the flags; only note actions.
    let note =
        |action| crate::Note { action, subject: "1".into(), before: None, after: Some(json!({"url": "x"})) };
    let noted = store.write_batch(Batch::new("root", vec![]).note(note(Action::WebhookAdd))).await.unwrap();
    assert_eq!(
        (noted[0].action, noted[0].subject.as_deref(), noted[0].key.as_str()),
        (Action::WebhookAdd, Some("1"), "")
    );
    let seq = store.latest_seq().await.unwrap();
    assert!(store.write_batch(Batch::new("root", vec![]).note(note(Action::FlagUpdate))).await.is_err());
    assert_eq!(store.latest_seq().await.unwrap(), seq, "a note may not pass for a flag change");
    // Sources skip request and note rows: a snapshot follows the log across them.
    let state = store.load().await.unwrap();
    let snapshot = Snapshot::from_state(&state);
    assert!(!snapshot.flag("RATE").unwrap().enabled);
    let log = store.changes_since(0, 1000).await.unwrap();
    let following = Snapshot::from_state(&ff_core::StoreState::default()).apply(&log).unwrap();
    assert_eq!(following.version(), state.seq);
    assert!(!following.flag("RATE").unwrap().enabled);
}

/// Operational records: written only on the version read (two instances never both
/// advance one), listed by prefix, deleted; never in the change log.
pub async fn operational_records(store: Arc<dyn Store>) {
    let usage = store.usage_store().expect("a writable store keeps records");
    let seq = store.latest_seq().await.unwrap();
    assert_eq!(usage.put_record("webhook:1", Some(&json!({"url": "a"})), 0).await.unwrap(), 1);
    assert_eq!(usage.put_record("webhook:2", Some(&json!({"url": "b"})), 0).await.unwrap(), 1);
    assert_eq!(usage.put_record("other", Some(&json!(1)), 0).await.unwrap(), 1);
    let e = usage.put_record("webhook:1", Some(&json!({"url": "c"})), 0).await.unwrap_err();
    assert!(matches!(&e, StoreError::RecordConflict { expected: 0, actual: 1, .. }), "{e:?}");
    assert_eq!(usage.put_record("webhook:1", Some(&json!({"url": "c"})), 1).await.unwrap(), 2);
    let stale = usage.put_record("webhook:1", Some(&json!({"url": "d"})), 1).await.unwrap_err();
    assert!(matches!(stale, StoreError::RecordConflict { expected: 1, actual: 2, .. }), "{stale:?}");
    let listed = usage.records("webhook:").await.unwrap();
    let names: Vec<(&str, u64)> = listed.iter().map(|r| (r.name.as_str(), r.version)).collect();
    assert_eq!(names, [("webhook:1", 2), ("webhook:2", 1)]);
    assert_eq!(listed[0].body, json!({"url": "c"}));
    assert!(usage.put_record("webhook:2", None, 5).await.is_err(), "a delete checks the version too");
    usage.put_record("webhook:2", None, 1).await.unwrap();
    assert_eq!(usage.records("webhook:").await.unwrap().len(), 1);
    assert_eq!(usage.records("").await.unwrap().len(), 2);
    assert_eq!(store.latest_seq().await.unwrap(), seq, "not in the change log");
}
