//! `ff import`: the steps that make the store match a flags file.
//!
//! The file is what `ff export` writes, edited: a flag the store lacks is created
//! from its entry; in a flag it has, only the fields the entry names change (bounds
//! and types come from code, never from the file); overrides listed replace the
//! flag's overrides. Flags missing from the file are left alone.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use ff_api::{BatchOp, Export, ExportedFlag};
use ff_core::{FlagDef, FlagMeta, ValueType};
use ff_store::FlagPatch;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A flags file.
#[derive(Debug, Deserialize)]
pub(crate) struct ImportFile {
    /// The flags; a file without them is refused.
    flags: Option<Vec<ImportFlag>>,
    /// Segments are reported, not applied.
    #[serde(default)]
    segments: Option<Vec<serde::de::IgnoredAny>>,
}

/// One flag of a file: its key, and the fields it sets.
#[derive(Debug, Deserialize)]
struct ImportFlag {
    key: String,
    #[serde(rename = "type", default)]
    value_type: Option<ValueType>,
    /// Written by `ff export`; the import checks the live version instead.
    #[serde(default, rename = "version")]
    _version: Option<u64>,
    /// The flag's users and values; `None`: overrides are left as they are.
    #[serde(default)]
    overrides: Option<BTreeMap<String, Value>>,
    #[serde(flatten)]
    fields: FlagPatch,
    /// Keys none of the above take: refused, so a typo is not silently ignored
    /// (under `flatten`, `FlagPatch` cannot refuse them itself).
    #[serde(flatten)]
    unknown: BTreeMap<String, serde::de::IgnoredAny>,
}

/// One change of the import, with the line that shows it.
#[derive(Debug)]
pub(crate) struct Step {
    pub(crate) op: BatchOp,
    pub(crate) says: String,
}

/// Parses a file's text (YAML, so JSON too).
pub(crate) fn parse(raw: &str, name: &str) -> anyhow::Result<ImportFile> {
    // Checked as YAML first, so syntax and shape get their own messages; then read
    // from the text, where a plain `12345:` key is a user id, not a number.
    serde_yaml_ng::from_str::<serde_yaml_ng::Value>(raw)
        .map_err(|e| anyhow::anyhow!("{name} is not valid YAML: {e}"))?;
    let file: ImportFile =
        serde_yaml_ng::from_str(raw).map_err(|e| anyhow::anyhow!("{name} is not a flags file: {e}"))?;
    for f in file.flags.iter().flatten() {
        if !f.unknown.is_empty() {
            let names: Vec<&str> = f.unknown.keys().map(String::as_str).collect();
            bail!(
                "{}: unknown field(s) {}; a flag takes key, type, overrides and {}",
                f.key,
                names.join(", "),
                FlagPatch::EDITABLE.join(", ")
            );
        }
    }
    Ok(file)
}

/// The steps that make `current` match `wanted`, and notes for the operator.
pub(crate) fn plan(current: &Export, wanted: ImportFile) -> anyhow::Result<(Vec<Step>, Vec<String>)> {
    let Some(flags) = wanted.flags else {
        bail!("the file needs a top-level `flags:` list (as `ff export` writes)");
    };
    let (mut steps, mut notes) = (Vec::new(), Vec::new());
    if wanted.segments.is_some_and(|s| !s.is_empty()) {
        notes.push("segments in the file are not imported: apply them with `ff segment put KEY FILE`".into());
    }
    for c in &current.flags {
        if !flags.iter().any(|w| w.key == c.def.key) {
            notes.push(format!("{}: in the store, not in the file; left as it is", c.def.key));
        }
    }
    for w in flags {
        match current.flags.iter().find(|c| c.def.key == w.key) {
            None => create(w, &mut steps)?,
            Some(c) => update(w, c, &mut steps, &mut notes)?,
        }
    }
    Ok((steps, notes))
}

/// A flag the store lacks: created as the file defines it, with its overrides.
fn create(w: ImportFlag, steps: &mut Vec<Step>) -> anyhow::Result<()> {
    let key = w.key;
    let Some(value_type) = w.value_type else { bail!("{key}: a new flag needs `type`") };
    let f = w.fields;
    let Some(value) = f.value else { bail!("{key}: a new flag needs `value`") };
    let def = FlagDef {
        key: key.clone(),
        value_type,
        value,
        enabled: f.enabled.unwrap_or(true),
        off_value: f.off_value,
        description: f.description.unwrap_or_default(),
        schema: f.schema.unwrap_or_default(),
        meta: FlagMeta {
            kind: f.kind.flatten(),
            permanent: f.permanent.flatten(),
            expiry: f.expiry.unwrap_or_default(),
            owner: f.owner.unwrap_or_default(),
            tags: f.tags.unwrap_or_default(),
            ticket: f.ticket.unwrap_or_default(),
            expires_at: f.expires_at.flatten(),
            approval: f.approval.flatten(),
        },
        targeting: f.targeting.unwrap_or_default(),
    };
    let says = format!("+ create {key} ({value_type}) = {}", def.value);
    steps.push(Step { op: BatchOp::Create(def), says });
    for (user, value) in w.overrides.unwrap_or_default() {
        steps.push(set_override(&key, user, value));
    }
    Ok(())
}

/// A flag the store has: the fields that differ, then the overrides.
fn update(
    w: ImportFlag,
    c: &ExportedFlag,
    steps: &mut Vec<Step>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let key = w.key;
    if let Some(t) = w.value_type.filter(|t| *t != c.def.value_type) {
        bail!("{key}: the file says type {t}, the store has {}; types come from code", c.def.value_type);
    }
    if w.fields.schema.as_ref().is_some_and(|s| *s != c.def.schema) {
        notes.push(format!("{key}: bounds differ from the file; bounds come from code and stay as they are"));
    }
    let mut lines = Vec::new();
    let patch = changed(&w.fields, &c.def, &mut |field, before, after| {
        lines.push(format!("~ {key} {field}: {before} -> {after}"));
    });
    if patch != FlagPatch::default() {
        let op = BatchOp::Update { key: key.clone(), version: Some(c.version), patch };
        steps.push(Step { op, says: lines.join("\n") });
    }
    if let Some(wanted) = w.overrides {
        for user in c.overrides.keys().filter(|u| !wanted.contains_key(*u)) {
            let op = BatchOp::DeleteOverride { key: key.clone(), user_id: user.clone() };
            steps.push(Step { op, says: format!("- {key} override {user}") });
        }
        for (user, value) in wanted {
            if !c.overrides.get(&user).is_some_and(|v| same(v, &value)) {
                steps.push(set_override(&key, user, value));
            }
        }
    }
    Ok(())
}

/// The fields of `wanted` that differ from `current`, reporting each as
/// (field, before, after).
fn changed(wanted: &FlagPatch, current: &FlagDef, report: &mut dyn FnMut(&str, String, String)) -> FlagPatch {
    let m = &current.meta;
    let off = current.off_value.clone().unwrap_or(Value::Null);
    let times = |t: &Option<time::OffsetDateTime>| {
        t.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
    };
    let mut d = Differ { report };
    FlagPatch {
        value: d.field("value", &wanted.value, &current.value, same),
        enabled: d.field("enabled", &wanted.enabled, &current.enabled, PartialEq::eq),
        off_value: d.field("off_value", &wanted.off_value, &off, same),
        description: d.field("description", &wanted.description, &current.description, PartialEq::eq),
        schema: None,
        owner: d.field("owner", &wanted.owner, &m.owner, PartialEq::eq),
        tags: d.field("tags", &wanted.tags, &m.tags, PartialEq::eq),
        ticket: d.field("ticket", &wanted.ticket, &m.ticket, PartialEq::eq),
        targeting: d.field("targeting", &wanted.targeting, &current.targeting, same_targeting),
        kind: d.field("kind", &wanted.kind, &m.kind, PartialEq::eq),
        permanent: d.field("permanent", &wanted.permanent, &m.permanent, PartialEq::eq),
        approval: d.field("approval", &wanted.approval, &m.approval, PartialEq::eq),
        expiry: d.field("expiry", &wanted.expiry, &m.expiry, PartialEq::eq),
        expires_at: d
            .field("expires_at", &wanted.expires_at.map(|t| times(&t)), &times(&m.expires_at), PartialEq::eq)
            .map(|_| wanted.expires_at.flatten()),
    }
}

/// Compares one field at a time, reporting those that differ.
struct Differ<'a> {
    report: &'a mut dyn FnMut(&str, String, String),
}

impl Differ<'_> {
    /// `Some(wanted)` when the file names the field with another value.
    fn field<T: Serialize + Clone>(
        &mut self,
        name: &str,
        wanted: &Option<T>,
        current: &T,
        eq: fn(&T, &T) -> bool,
    ) -> Option<T> {
        let w = wanted.as_ref().filter(|w| !eq(w, current))?;
        (self.report)(name, json_text(current), json_text(w));
        Some(w.clone())
    }
}

fn json_text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn set_override(key: &str, user: String, value: Value) -> Step {
    let says = format!("+ {key} override {user} = {value}");
    Step { op: BatchOp::SetOverride { key: key.to_owned(), user_id: user, value }, says }
}

/// Equal as targeting: a guard's start is the store's to stamp (another store's
/// export carries its own), so it is left out; and a guarded ramp the guardian has
/// moved on (due steps written into the split) is still the file's ramp.
fn same_targeting(file: &ff_core::Targeting, store: &ff_core::Targeting) -> bool {
    let unstamped = |t: &ff_core::Targeting| {
        let mut t = t.clone();
        if let Some(g) = t.guard.as_mut() {
            g.started = None;
        }
        t
    };
    let (file, store) = (unstamped(file), unstamped(store));
    if file == store {
        return true;
    }
    let applied = file.schedule.len().saturating_sub(store.schedule.len());
    let now = time::OffsetDateTime::now_utc();
    let without_ramp =
        |t: &ff_core::Targeting| ff_core::Targeting { split: None, schedule: Vec::new(), ..t.clone() };
    file.guard.is_some()
        && applied > 0
        && file.schedule[applied..] == store.schedule[..]
        && file.schedule[..applied].iter().all(|s| s.at <= now)
        && store.split == file.schedule[applied - 1].split
        && without_ramp(&file) == without_ramp(&store)
}

/// Equal as flag values: numbers by value, so `60` in a file equals a stored `60.0`.
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if a.is_number() && b.is_number() => x == y,
        _ => a == b,
    }
}

/// Parses the export the admin answers.
pub(crate) fn export_of(body: Value) -> anyhow::Result<Export> {
    serde_json::from_value(body).context("the admin's export is not what this `ff` reads")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ff_core::{ExpiryPolicy, FlagKind, FlagRecord};

    fn export(records: Vec<FlagRecord>, overrides: &[(&str, &str, Value)]) -> Export {
        let flags = records
            .iter()
            .map(|r| ExportedFlag {
                def: r.into(),
                version: r.version,
                overrides: overrides
                    .iter()
                    .filter(|(k, _, _)| *k == r.key)
                    .map(|(_, u, v)| ((*u).to_owned(), v.clone()))
                    .collect(),
            })
            .collect();
        Export { version: 1, flags, segments: Vec::new() }
    }

    fn lines(current: &Export, file: &str) -> anyhow::Result<Vec<String>> {
        let (steps, _) = plan(current, parse(file, "f")?)?;
        Ok(steps.into_iter().map(|s| s.says).collect())
    }

    #[test]
    fn an_unedited_export_imports_as_nothing() {
        let mut r = FlagRecord::new("RATE", ff_core::Value::Float(60.0));
        r.meta.kind = Some(FlagKind::Ops);
        r.meta.permanent = Some(true);
        r.meta.expiry = ExpiryPolicy::ServeDefault;
        r.meta.expires_at = Some(time::macros::datetime!(2027-01-01 0:00 UTC));
        let current = export(vec![r], &[("RATE", "tester", serde_json::json!(1.0))]);
        let file = serde_yaml_ng::to_string(&current).unwrap();
        assert!(file.contains("kind: ops") && file.contains("expiry: serve_default"), "{file}");
        assert_eq!(lines(&current, &file).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn only_the_fields_a_flag_names_change() {
        let current =
            export(vec![FlagRecord::new("A", ff_core::Value::Bool(false))], &[("A", "u1", true.into())]);
        let file = "flags:\n  - key: A\n    kind: kill_switch\n    permanent: true\n    expires_at: 2027-01-01T00:00:00Z\n";
        assert_eq!(
            lines(&current, file).unwrap(),
            [
                "~ A kind: null -> \"kill_switch\"\n~ A permanent: null -> true\n~ A expires_at: null -> \"2027-01-01T00:00:00Z\""
            ]
        );
        let file = "flags:\n  - key: A\n    value: 60\n    overrides: {}\n";
        assert_eq!(lines(&current, file).unwrap(), ["~ A value: false -> 60", "- A override u1"]);
        // Plain ids that look like numbers are user ids; `segments: null` is no segments.
        let file = "flags:\n  - key: A\n    overrides: {u1: true, 12345: true}\nsegments:\n";
        assert_eq!(lines(&current, file).unwrap(), ["+ A override 12345 = true"]);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let current = export(vec![FlagRecord::new("A", ff_core::Value::Bool(false))], &[]);
        for (file, says) in [
            ("flags: [unclosed", "not valid YAML"),
            ("nothing: here", "top-level `flags:`"),
            ("flags:\n  - value: 1", "missing field `key`"),
            ("flags:\n  - key: NEW\n    value: 1", "NEW: a new flag needs `type`"),
            ("flags:\n  - key: NEW\n    type: int", "NEW: a new flag needs `value`"),
            ("flags:\n  - key: A\n    type: string", "types come from code"),
            ("flags:\n  - key: A\n    overrides: [u1]", "not a flags file"),
            (
                "flags:\n  - key: A\n    enabeld: false",
                "A: unknown field(s) enabeld; a flag takes key, type, overrides and value,",
            ),
        ] {
            let e = lines(&current, file).unwrap_err().to_string();
            assert!(e.contains(says), "{file}: {e}");
        }
    }

    /// A guarded ramp the guardian moved on is the file's ramp: importing the file
    /// again changes nothing; any other difference is a change.
    #[test]
    fn a_guarded_ramp_moved_on_is_the_same_ramp() {
        let split = |w: u32| serde_json::json!({"variations": [{"value": true, "weight": w}, {"value": false, "weight": 10_000 - w}]});
        let t = |v: serde_json::Value| serde_json::from_value::<ff_core::Targeting>(v).unwrap();
        let file = t(serde_json::json!({"split": split(1000), "guard": {"started": "2020-01-01T00:00:00Z"},
            "schedule": [{"at": "2020-01-02T00:00:00Z", "split": split(5000)}, {"at": "2099-01-01T00:00:00Z", "split": split(9000)}]}));
        let moved = t(serde_json::json!({"split": split(5000), "guard": {"started": "2026-12-02T00:00:00Z"},
            "schedule": [{"at": "2099-01-01T00:00:00Z", "split": split(9000)}]}));
        assert!(same_targeting(&file, &moved));
        assert!(same_targeting(&file, &file));
        let other = t(serde_json::json!({"split": split(2000), "guard": {},
            "schedule": [{"at": "2099-01-01T00:00:00Z", "split": split(9000)}]}));
        assert!(!same_targeting(&file, &other), "a split the ramp never had");
        let stricter = t(serde_json::json!({"split": split(5000), "guard": {"alpha": 0.01},
            "schedule": [{"at": "2099-01-01T00:00:00Z", "split": split(9000)}]}));
        assert!(!same_targeting(&file, &stricter), "another guard");
    }
}
