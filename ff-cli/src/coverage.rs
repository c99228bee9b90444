//! `ff coverage`: which flags a test run read, and in which states, from the files
//! test processes write with `FF_FLAG_COVERAGE=DIR` (ff-core's `coverage` feature).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

/// What the tests read.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Coverage {
    /// Files read.
    pub(crate) files: usize,
    /// Each flag read, with its type and every value served (as JSON).
    pub(crate) read: BTreeMap<String, Read>,
    /// Flags declared in the scanned code that no test read.
    pub(crate) never_read: Vec<String>,
    /// The flags declared in the scanned code (empty: none scanned, every flag read counts).
    #[serde(skip)]
    pub(crate) declared: BTreeSet<String>,
}

/// One flag's reads.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Read {
    #[serde(rename = "type")]
    pub(crate) value_type: String,
    pub(crate) values: BTreeSet<String>,
}

impl Coverage {
    /// Flags the tests only ever read in one state (one value): of those declared in
    /// the scanned code if any was scanned (other tests' flags are theirs to judge).
    pub(crate) fn one_state(&self) -> impl Iterator<Item = (&String, &Read)> {
        let judged = |k: &String| self.declared.is_empty() || self.declared.contains(k);
        self.read.iter().filter(move |(k, r)| r.values.len() == 1 && judged(k))
    }
}

/// Reads every `ff-flag-coverage-*.tsv` in `dir`.
pub(crate) fn read(dir: &Path, declared: &BTreeSet<String>) -> anyhow::Result<Coverage> {
    let mut c = Coverage::default();
    let entries = std::fs::read_dir(dir).map_err(|e| {
        anyhow::anyhow!("cannot read {}: {e} (run the tests with FF_FLAG_COVERAGE={0})", dir.display())
    })?;
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if !(name.starts_with("ff-flag-coverage-") && name.ends_with(".tsv")) {
            continue;
        }
        c.files += 1;
        for (i, line) in std::fs::read_to_string(&path)?.lines().enumerate() {
            let mut parts = line.splitn(3, '\t');
            let (Some(key), Some(ty), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
                anyhow::bail!("{}:{}: expected key, type and value separated by tabs", path.display(), i + 1);
            };
            let read = c.read.entry(key.to_owned()).or_default();
            read.value_type = ty.to_owned();
            read.values.insert(value.to_owned());
        }
    }
    c.never_read = declared.iter().filter(|k| !c.read.contains_key(*k)).cloned().collect();
    c.declared = declared.clone();
    Ok(c)
}
