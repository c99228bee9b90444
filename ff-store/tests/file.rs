//! The file source: flags from YAML (the `ff export` format), reloaded on change —
//! rewritten in place, replaced by an atomic rename, or swapped behind a symlink as
//! Kubernetes config maps are — with the last good flags kept while the file is bad.

#![cfg(feature = "file")]

use std::path::Path;
use std::time::{Duration, Instant};

use ff_core::{EvalContext, Evaluator, Flag, Reason};
use ff_store::{FileStore, FlagReader, Mutation, Source, StoreError, Write};

const CHECKOUT: Flag<bool> = Flag::new("NEW_CHECKOUT", false);
const LEAD: Flag<i64> = Flag::new("LEAD_HOURS", 24).range(0, 1000);
const ONLY_IN_CODE: Flag<bool> = Flag::new("ONLY_IN_CODE", true);
const PATIENCE: Duration = Duration::from_secs(10);

/// A file as `ff export` writes it.
fn flags(checkout: bool, lead: i64) -> String {
    format!(
        r#"# ff export: every flag and override
version: 12
flags:
  - key: NEW_CHECKOUT
    version: 3
    type: bool
    value: {checkout}
    enabled: true
    off_value: false
    description: Redesigned checkout
    schema: {{}}
    owner: checkout
    tags: [web]
    ticket: ""
    expires_at: null
    targeting:
      rules:
        - clauses: [{{attribute: user_id, op: in_segment, values: [testers]}}]
          value: true
    overrides:
      alice: true
  - key: LEAD_HOURS
    type: int
    value: {lead}
    schema: {{min: 0, max: 1000}}
    overrides: {{tester: 0}}
segments:
  - key: testers
    definition: {{description: QA, included: [qa-1]}}
    version: 1
    created_at: 2026-01-01T00:00:00Z
    updated_at: 2026-01-01T00:00:00Z
"#
    )
}

fn get<T: ff_core::FlagType>(source: &Source, flag: Flag<T>, user: &str) -> (T, Reason) {
    let d = Evaluator::new(source.snapshot(), EvalContext::user(user)).detail(flag);
    (d.value, d.reason)
}

async fn source(store: FileStore) -> Source {
    Source::builder(store)
        .declare([CHECKOUT.decl(), LEAD.decl(), ONLY_IN_CODE.decl()])
        .poll_interval(Duration::from_millis(50))
        .start()
        .await
}

async fn until(source: &Source, what: &str, ok: impl Fn(&Source) -> bool) -> Duration {
    let start = Instant::now();
    while !ok(source) {
        assert!(start.elapsed() < PATIENCE, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn serves_the_file_and_reloads_it_however_it_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.yaml");
    std::fs::write(&path, flags(false, 24)).unwrap();
    let store = FileStore::open(&path).unwrap();
    let source = source(store.clone()).await;
    // Values, overrides, rules and segments from the file; a declared flag it lacks
    // serves its code default, and nothing is written to the file.
    assert_eq!(get(&source, CHECKOUT, "bob"), (false, Reason::Global));
    assert_eq!(get(&source, CHECKOUT, "alice"), (true, Reason::Override));
    assert_eq!(get(&source, CHECKOUT, "qa-1"), (true, Reason::Rule(0)));
    assert_eq!(get(&source, LEAD, "tester"), (0, Reason::Override));
    assert_eq!(get(&source, ONLY_IN_CODE, "bob"), (true, Reason::Default));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), flags(false, 24));

    // Rewritten in place.
    std::fs::write(&path, flags(true, 24)).unwrap();
    let t1 = until(&source, "in-place rewrite", |s| get(s, CHECKOUT, "bob").0).await;
    // Replaced by an atomic rename.
    let tmp = dir.path().join(".flags.yaml.tmp");
    std::fs::write(&tmp, flags(true, 12)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let t2 = until(&source, "atomic rename", |s| get(s, LEAD, "bob").0 == 12).await;
    eprintln!("reloaded after {t1:?} (rewrite) and {t2:?} (rename)");
    // Rewritten twice in quick succession with the same size (and likely the same
    // modification time): the second is still seen.
    std::fs::write(&path, flags(true, 36)).unwrap();
    until(&source, "first same-size rewrite", |s| get(s, LEAD, "bob").0 == 36).await;
    std::fs::write(&path, flags(true, 37)).unwrap();
    until(&source, "second same-size rewrite", |s| get(s, LEAD, "bob").0 == 37).await;
    assert!(store.last_error().is_none());
}

/// Kubernetes mounts a config map as `flags.yaml -> ..data/flags.yaml` with
/// `..data -> ..2026_01_01_v1`, and updates it by swapping `..data`.
#[cfg(unix)]
#[tokio::test]
async fn follows_a_config_map_symlink_swap() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let version = |name: &str, content: String| {
        std::fs::create_dir(dir.path().join(name)).unwrap();
        std::fs::write(dir.path().join(name).join("flags.yaml"), content).unwrap();
    };
    version("..v1", flags(false, 24));
    symlink("..v1", dir.path().join("..data")).unwrap();
    symlink("..data/flags.yaml", dir.path().join("flags.yaml")).unwrap();
    let source = source(FileStore::open(dir.path().join("flags.yaml")).unwrap()).await;
    assert_eq!(get(&source, LEAD, "bob").0, 24);
    version("..v2", flags(false, 36));
    symlink("..v2", dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    until(&source, "symlink swap", |s| get(s, LEAD, "bob").0 == 36).await;
}

#[tokio::test]
async fn a_bad_file_keeps_the_last_good_flags_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.yaml");
    std::fs::write(&path, flags(true, 24)).unwrap();
    let store = FileStore::open(&path).unwrap();
    let source = source(store.clone()).await;
    let bad = [
        ("flags: [unclosed", "not valid YAML"),
        ("nothing: here", "top-level `flags:`"),
        (&flags(true, 5000) as &str, "LEAD_HOURS\": 5000 is above the maximum"),
        ("flags:\n  - key: X\n    type: colour\n    value: 1", "flag \"X\""),
        ("flags:\n  - type: bool\n    value: true", "flag #1 has no `key`"),
        ("flags:\n  - {key: X, type: int, value: 1, overrides: {u: \"x\"}}", "override of \"u\""),
        ("flags:\n  - {key: X, type: int, value: 1}\n  - {key: X, type: int, value: 2}", "appears twice"),
        (
            "flags:\n  - key: X\n    type: bool\n    value: true\n    targeting: {rules: [{clauses: [{attribute: user_id, op: in_segment, values: [nobody]}], value: true}]}",
            "nobody",
        ),
    ];
    for (content, says) in bad {
        std::fs::write(&path, content).unwrap();
        let s = store.clone();
        let what = format!("{says} (the file: {content:?})");
        until(&source, &what, move |_| s.last_error().is_some_and(|e| e.contains(says))).await;
        assert!(store.last_error().unwrap().contains("flags.yaml"), "names the file");
        assert_eq!(get(&source, CHECKOUT, "bob"), (true, Reason::Global), "the last good flags");
    }
    // Gone, then back.
    std::fs::remove_file(&path).unwrap();
    let s = store.clone();
    until(&source, "missing file reported", move |_| {
        s.last_error().is_some_and(|e| e.contains("cannot read"))
    })
    .await;
    assert!(get(&source, CHECKOUT, "bob").0);
    std::fs::write(&path, flags(false, 24)).unwrap();
    until(&source, "fixed file", |s| !get(s, CHECKOUT, "bob").0).await;
    assert!(store.last_error().is_none());
}

#[tokio::test]
async fn code_bounds_still_hold_for_a_file_without_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.yaml");
    std::fs::write(&path, "flags:\n  - {key: LEAD_HOURS, type: int, value: 5000}\n").unwrap();
    let source = source(FileStore::open(&path).unwrap()).await;
    assert_eq!(get(&source, LEAD, "bob"), (24, Reason::Invalid));
}

#[tokio::test]
async fn polling_alone_sees_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.yaml");
    std::fs::write(&path, flags(false, 24)).unwrap();
    let source = source(FileStore::open_polling(&path).unwrap()).await;
    std::fs::write(&path, flags(false, 48)).unwrap();
    until(&source, "polled reload", |s| get(s, LEAD, "bob").0 == 48).await;
}

#[tokio::test]
async fn opening_a_missing_or_invalid_file_is_an_error_and_writes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.yaml");
    let e = FileStore::open(&path).unwrap_err();
    assert!(matches!(e, StoreError::BadFile(_)), "{e:?}");
    assert!(e.to_string().starts_with("cannot read") && e.to_string().contains("flags.yaml"), "{e}");
    std::fs::write(&path, "flags: 3").unwrap();
    assert!(FileStore::open(&path).unwrap_err().to_string().contains("top-level `flags:`"));
    write_file(&path);
    // Writes exist only through the `dyn Store` handle the admin and the CLI hold.
    let store: std::sync::Arc<dyn ff_store::Store> = std::sync::Arc::new(FileStore::open(&path).unwrap());
    let e = store.write(Write::new("x", Mutation::set_value("LEAD_HOURS", 1))).await.unwrap_err();
    assert!(matches!(&e, StoreError::ReadOnly(p) if p.ends_with("flags.yaml")), "{e}");
    assert!(e.to_string().contains("change the file"), "{e}");
    assert!(store.write_batch(ff_store::Batch::new("x", vec![])).await.is_err());
    assert_ne!(store.latest_seq().await.unwrap(), 0);
    assert_eq!(store.flag("LEAD_HOURS").await.unwrap().unwrap().value, ff_core::Value::Int(24));
    assert_eq!(store.overrides("LEAD_HOURS").await.unwrap().len(), 1);
    assert_eq!(store.segments().await.unwrap()[0].key, "testers");
}

fn write_file(path: &Path) {
    std::fs::write(path, flags(false, 24)).unwrap();
}

#[tokio::test]
async fn versions_come_from_the_content_and_a_restored_file_clears_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.yaml");
    write_file(&path);
    let first = FileStore::open_polling(&path).unwrap();
    let v24 = first.latest_seq().await.unwrap();
    // Another process, or this one restarted: the same content has the same version.
    assert_eq!(FileStore::open_polling(&path).unwrap().latest_seq().await.unwrap(), v24);
    assert!(v24 < 1 << 53, "exact in JSON clients");
    // Other content, another version, in this process and in a new one.
    std::fs::write(&path, flags(false, 36)).unwrap();
    let v36 = first.latest_seq().await.unwrap();
    assert_ne!(v36, v24);
    assert_eq!(FileStore::open_polling(&path).unwrap().latest_seq().await.unwrap(), v36);
    assert_eq!(first.load().await.unwrap().seq, v36);
    // Deleted: the last good flags stay, with the error said.
    std::fs::remove_file(&path).unwrap();
    assert_eq!(first.latest_seq().await.unwrap(), v36);
    assert!(first.last_error().unwrap().starts_with("cannot read"));
    // Restored unchanged: nothing to reload, and nothing wrong any more.
    std::fs::write(&path, flags(false, 36)).unwrap();
    assert_eq!(first.latest_seq().await.unwrap(), v36);
    assert_eq!(first.last_error(), None);
    // A bad file, deleted, then restored bad: the parse error again, not the read error.
    std::fs::write(&path, "flags: 3").unwrap();
    first.latest_seq().await.unwrap();
    assert!(first.last_error().unwrap().contains("top-level `flags:`"));
    std::fs::remove_file(&path).unwrap();
    first.latest_seq().await.unwrap();
    std::fs::write(&path, "flags: 3").unwrap();
    first.latest_seq().await.unwrap();
    assert!(first.last_error().unwrap().contains("top-level `flags:`"), "{:?}", first.last_error());
    // Back to the first content: its version again.
    write_file(&path);
    assert_eq!(first.latest_seq().await.unwrap(), v24);
}

/// A guarded rollout in a file: its counts are tested on this instance alone (the
/// file keeps none), and the regression is shown, never written: the guardian holds
/// no lease on a store it cannot write, and says to roll back in the file.
#[tokio::test]
async fn a_guarded_rollout_in_a_file_is_watched_and_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.yaml");
    std::fs::write(&path, guarded_file(24)).unwrap();
    let source = Source::builder(FileStore::open(&path).unwrap())
        .declare([CHECKOUT.decl(), LEAD.decl()])
        .guard_interval(Duration::from_millis(20))
        .start()
        .await;
    assert!(source.snapshot().has_guards());
    // As the layer counts: a failing treatment.
    let telemetry = source.guard_telemetry();
    for i in 0..1_000u64 {
        telemetry.record("NEW_CHECKOUT", 0, 0, i % 5 == 0, 1_000);
        telemetry.record("NEW_CHECKOUT", 0, 1, false, 1_000);
    }
    until(&source, "regressed", |s| {
        s.guard_states()
            .first()
            .is_some_and(|g| matches!(g.verdict, ff_core::guard::Verdict::Regressed { .. }))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let state = &source.guard_states()[0];
    assert!(!state.acting && !state.acted, "{state:?}");
    assert!(state.regressed_at.is_some(), "regressed at a time");
    assert_eq!((state.instances, state.treatment.requests), (1, 1_000));
    assert!(state.note.as_deref().unwrap().contains("read-only"), "{:?}", state.note);
    assert!(
        source.snapshot().flag("NEW_CHECKOUT").unwrap().targeting.split.is_some(),
        "the file is as it was"
    );
    // Another flag edited in the file: the rollout's counts and verdict stay.
    let version = source.snapshot().version();
    std::fs::write(&path, guarded_file(25)).unwrap();
    until(&source, "reloaded", |s| s.snapshot().version() != version).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let state = &source.guard_states()[0];
    assert!(matches!(state.verdict, ff_core::guard::Verdict::Regressed { .. }), "{state:?}");
    assert_eq!(state.treatment.requests, 1_000);
}

fn guarded_file(lead: i64) -> String {
    flags(false, lead).replace(
        "      rules:",
        "      split: {variations: [{value: true, weight: 1000}, {value: false, weight: 9000}]}\n      guard: {min_requests: 100}\n      rules:",
    )
}
