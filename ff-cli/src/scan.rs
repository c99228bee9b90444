//! `ff scan`: flag keys in source files, set against the store's flags.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use regex::Regex;
use serde::Serialize;

/// Directories no one wants scanned: build output, dependencies, VCS data.
const SKIPPED_DIRS: &[&str] = &["target", "node_modules", ".git", ".hg", ".svn", "vendor", "dist", "build"];
/// Larger files are generated or data, not code.
const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024;

/// Where a key appears.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub(crate) struct Place {
    pub(crate) file: String,
    pub(crate) line: usize,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// What the files say.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// Keys declared with `Flag::new("KEY", ...)`.
    pub(crate) declared: BTreeMap<String, Vec<Place>>,
    /// Every quoted string that looks like a key, with where it is.
    pub(crate) strings: BTreeMap<String, Vec<Place>>,
    pub(crate) files: usize,
}

/// Reads every text file under `paths` (skipping build and dependency directories).
pub(crate) fn scan(paths: &[PathBuf]) -> anyhow::Result<Found> {
    let declaration = Regex::new(r#"Flag\s*(?:::\s*<[^>]*>\s*)?::\s*new\s*\(\s*"([A-Za-z0-9_.\-]{1,128})""#)?;
    let quoted = Regex::new(r#"["'`]([A-Za-z0-9_.\-]{1,128})["'`]"#)?;
    let mut found = Found::default();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    for p in paths {
        if !p.exists() {
            anyhow::bail!("{} does not exist", p.display());
        }
    }
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            let skip = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| SKIPPED_DIRS.contains(&n));
            if skip && !paths.contains(&path) {
                continue;
            }
            let mut entries: Vec<PathBuf> =
                std::fs::read_dir(&path)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
            entries.sort();
            stack.extend(entries.into_iter().rev());
        } else if meta.is_file() && meta.len() <= MAX_FILE_BYTES {
            // Binary or non-UTF-8 files are not source.
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            found.files += 1;
            let file = path.display().to_string();
            if file.ends_with(".rs") && text.contains("Config") {
                for (key, line) in derived_keys(&text) {
                    found.declared.entry(key).or_default().push(Place { file: file.clone(), line });
                }
            }
            for (i, line) in text.lines().enumerate() {
                let place = || Place { file: file.clone(), line: i + 1 };
                for c in declaration.captures_iter(line) {
                    found.declared.entry(c[1].to_owned()).or_default().push(place());
                }
                for c in quoted.captures_iter(line) {
                    found.strings.entry(c[1].to_owned()).or_default().push(place());
                }
            }
        }
    }
    Ok(found)
}

/// The keys `#[derive(Config)]` structs in a Rust file declare, with each field's
/// line: as the derive names them (the struct's prefix and the field's name in
/// capitals, or the field's own `key`), nested structs left to their own declaration.
/// A file that does not parse declares none this way.
fn derived_keys(text: &str) -> Vec<(String, usize)> {
    let Ok(file) = syn::parse_file(text) else { return Vec::new() };
    let mut out = Vec::new();
    let mut items: Vec<&syn::Item> = file.items.iter().collect();
    while let Some(item) = items.pop() {
        match item {
            syn::Item::Mod(m) => items.extend(m.content.iter().flat_map(|(_, i)| i)),
            syn::Item::Struct(s) if derives_config(&s.attrs) => {
                let prefix = ff_values(&s.attrs, "prefix").into_iter().next().unwrap_or_default();
                for field in &s.fields {
                    let Some(ident) = &field.ident else { continue };
                    if has_ff_flag(&field.attrs, "nested") {
                        continue;
                    }
                    let name = ident.to_string().trim_start_matches("r#").to_uppercase();
                    let key = ff_values(&field.attrs, "key")
                        .into_iter()
                        .next()
                        .unwrap_or(format!("{prefix}{name}"));
                    out.push((key, ident.span().start().line));
                }
            }
            _ => {}
        }
    }
    out
}

fn derives_config(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().filter(|a| a.path().is_ident("derive")).any(|a| {
        let mut yes = false;
        let _ = a.parse_nested_meta(|m| {
            yes |= m.path.segments.last().is_some_and(|s| s.ident == "Config");
            Ok(())
        });
        yes
    })
}

/// The string values of `name = "..."` in `#[ff(...)]`.
fn ff_values(attrs: &[syn::Attribute], name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for a in attrs.iter().filter(|a| a.path().is_ident("ff")) {
        let _ = a.parse_nested_meta(|m| {
            if m.path.is_ident(name) {
                out.push(m.value()?.parse::<syn::LitStr>()?.value());
            } else if m.input.peek(syn::Token![=]) {
                // Skip any other value (an expression, a list).
                let _: syn::Expr = m.value()?.parse()?;
            }
            Ok(())
        });
    }
    out
}

fn has_ff_flag(attrs: &[syn::Attribute], name: &str) -> bool {
    let mut yes = false;
    for a in attrs.iter().filter(|a| a.path().is_ident("ff")) {
        let _ = a.parse_nested_meta(|m| {
            yes |= m.path.is_ident(name);
            if m.input.peek(syn::Token![=]) {
                let _: syn::Expr = m.value()?.parse()?;
            }
            Ok(())
        });
    }
    yes
}

/// The report: what to add, what to delete, what to clean up first.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// Files read.
    pub(crate) files: usize,
    /// Declared in code, missing from the store.
    pub(crate) missing_from_store: Vec<Entry>,
    /// In the store, nowhere in code: safe to archive.
    pub(crate) unreferenced: Vec<String>,
    /// Stale or expired in the store, still in code.
    pub(crate) stale_in_code: Vec<StaleEntry>,
}

/// A key and where it appears.
#[derive(Debug, Serialize)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) places: Vec<Place>,
}

/// A stale key still referenced.
#[derive(Debug, Serialize)]
pub(crate) struct StaleEntry {
    pub(crate) key: String,
    pub(crate) reasons: Vec<String>,
    pub(crate) places: Vec<Place>,
}

impl Report {
    pub(crate) fn is_clean(&self) -> bool {
        self.missing_from_store.is_empty() && self.unreferenced.is_empty() && self.stale_in_code.is_empty()
    }
}

/// Sets what the files say against the store's live keys and its stale report.
pub(crate) fn report(
    found: &Found,
    store_keys: &BTreeSet<String>,
    stale: &BTreeMap<String, Vec<String>>,
) -> Report {
    let places = |key: &str| -> Vec<Place> {
        let mut all: Vec<Place> =
            found.declared.get(key).into_iter().chain(found.strings.get(key)).flatten().cloned().collect();
        all.sort();
        all.dedup();
        all
    };
    let missing_from_store = found
        .declared
        .keys()
        .filter(|k| !store_keys.contains(*k))
        .map(|k| Entry { key: k.clone(), places: places(k) })
        .collect();
    let referenced = |k: &str| found.declared.contains_key(k) || found.strings.contains_key(k);
    let unreferenced = store_keys.iter().filter(|k| !referenced(k)).cloned().collect();
    let stale_in_code = stale
        .iter()
        .filter(|(k, _)| referenced(k))
        .map(|(k, reasons)| StaleEntry { key: k.clone(), reasons: reasons.clone(), places: places(k) })
        .collect();
    Report { files: found.files, missing_from_store, unreferenced, stale_in_code }
}
