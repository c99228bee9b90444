//! A read-only store over a YAML file in the format `ff export` writes, for teams who
//! keep flags in git. The file is reloaded when it changes: a watcher on its directory
//! (which survives atomic renames and the symlink swaps of Kubernetes config maps) and,
//! as a fallback, a check on every `latest_seq` (the `Source` polls). An invalid file
//! keeps the last good flags and reports why.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::watch;

use super::{
    FlagReader, FlagWriter, Mutation, Plan, Store, TokenStore, UsageStore, check_segment, plan, plan_segment,
};
use crate::error::StoreError;
use crate::store::now;
use ff_core::FlagDef;
use ff_core::SegmentDef;
use ff_core::{Change, FlagRecord, OverrideRecord, SegmentRecord, StoreState};

/// Flags from a YAML file, read-only. Clones share the file's state.
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    state: Mutex<Loaded>,
    signal: watch::Sender<u64>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

/// The last good content and what was last seen on disk.
struct Loaded {
    state: StoreState,
    /// Size, modification time and inode of the file as last read, good or bad.
    seen: Option<(u64, Option<SystemTime>, u64)>,
    /// Hash of the content last read, good or bad; 0 after a failed read.
    content: u64,
    /// Hash of the content being served, 0 before the first: the store's seq, so the
    /// same content has the same version in every process and after restarts.
    good: u64,
    error: Option<String>,
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

impl FileStore {
    /// Reads `path` and watches it. A missing or invalid file is an error naming what
    /// is wrong; later, an invalid version keeps the flags of the last good one.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let store = Self::open_polling(path)?;
        store.watch();
        Ok(store)
    }

    /// Like [`open`](Self::open), without the watcher: changes are seen when the
    /// `Source` polls (its `poll_interval`).
    pub fn open_polling(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let path = path.into();
        let store = FileStore {
            inner: Arc::new(Inner {
                path,
                state: Mutex::new(Loaded {
                    state: StoreState::default(),
                    seen: None,
                    content: 0,
                    good: 0,
                    error: None,
                }),
                signal: watch::Sender::new(0),
                watcher: Mutex::new(None),
            }),
        };
        store.check();
        if let Some(e) = store.last_error() {
            return Err(StoreError::BadFile(e));
        }
        Ok(store)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Why the file on disk is not being served, if it is not (the last good flags are).
    pub fn last_error(&self) -> Option<String> {
        self.loaded().error.clone()
    }

    fn loaded(&self) -> MutexGuard<'_, Loaded> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches the directory, not the file: renames and symlink swaps replace the file.
    fn watch(&self) {
        use notify::Watcher;
        let dir = match self.inner.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let weak = Arc::downgrade(&self.inner);
        let watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
            if let Some(inner) = weak.upgrade() {
                FileStore { inner }.check();
            }
        });
        match watcher.and_then(|mut w| w.watch(&dir, notify::RecursiveMode::NonRecursive).map(|()| w)) {
            Ok(w) => *self.inner.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(w),
            Err(e) => {
                tracing::warn!(path = %self.inner.path.display(), error = %e, "ff: cannot watch the flags file; polling it");
            }
        }
    }

    /// Reloads the file if it changed; true if the flags did.
    fn check(&self) -> bool {
        let path = &self.inner.path;
        let meta = std::fs::metadata(path);
        let mut loaded = self.loaded();
        let meta = match meta {
            Ok(m) => m,
            Err(e) => {
                let error = format!("cannot read {}: {e}", path.display());
                if loaded.error.as_deref() != Some(error.as_str()) {
                    tracing::warn!(error = %error, "ff: keeping the last good flags");
                    loaded.error = Some(error);
                    loaded.seen = None;
                    loaded.content = 0;
                }
                return false;
            }
        };
        let fingerprint = (meta.len(), meta.modified().ok(), inode(&meta));
        if loaded.seen == Some(fingerprint) {
            return false;
        }
        // A file changed within the clock's granularity could change again with the
        // same size and time: until it is older, compare its content every time.
        let settled = meta
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(2));
        loaded.seen = settled.then_some(fingerprint);
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                loaded.error = Some(format!("cannot read {}: {e}", path.display()));
                loaded.content = 0;
                return false;
            }
        };
        let content = version_of(&text);
        let read_before = std::mem::replace(&mut loaded.content, content) == content;
        // What is served (read again, or a bad edit undone): nothing to reload, nothing wrong.
        if content == loaded.good {
            loaded.error = None;
            return false;
        }
        // The same bad content again (an event and a poll): its error stands.
        if read_before {
            return false;
        }
        match parse(&text) {
            Ok(mut state) => {
                loaded.good = content;
                state.seq = content;
                loaded.state = state;
                loaded.error = None;
                tracing::info!(path = %path.display(), version = content, flags = loaded.state.flags.len(), "ff: loaded the flags file");
                drop(loaded);
                self.inner.signal.send_modify(|n| *n += 1);
                true
            }
            Err(e) => {
                let error = format!("{}: {e}", path.display());
                tracing::warn!(error = %error, "ff: the flags file is invalid; keeping the last good flags");
                loaded.error = Some(error);
                false
            }
        }
    }

    fn refused(&self) -> StoreError {
        StoreError::ReadOnly(self.inner.path.display().to_string())
    }
}

/// A hash of the file's bytes, stable across processes, platforms and releases
/// (FNV-1a), cut to 53 bits so JSON clients read it exactly; never 0.
fn version_of(text: &str) -> u64 {
    let hash =
        text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (hash & ((1 << 53) - 1)).max(1)
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

/// The file's flags, overrides and segments, validated as writes to a store would be.
fn parse(text: &str) -> Result<StoreState, String> {
    let doc: serde_json::Value = serde_yaml_ng::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let flags = doc.get("flags").and_then(|f| f.as_array()).ok_or("needs a top-level `flags:` list")?;
    let at = now();
    let mut state = StoreState::default();
    for (i, s) in doc.get("segments").and_then(|s| s.as_array()).into_iter().flatten().enumerate() {
        let key = s
            .get("key")
            .and_then(|k| k.as_str())
            .ok_or_else(|| format!("segment #{} has no `key`", i + 1))?;
        let mut def = s.get("definition").cloned().unwrap_or_else(|| s.clone());
        if let Some(obj) = def.as_object_mut() {
            obj.remove("key");
        }
        let def: SegmentDef = serde_json::from_value(def).map_err(|e| format!("segment {key:?}: {e}"))?;
        if state.segments.iter().any(|s| s.key == key) {
            return Err(format!("segment {key:?} appears twice"));
        }
        let record = plan_segment(key, def, None, None, at).map_err(|e| format!("segment {key:?}: {e}"))?;
        state.segments.extend(record);
    }
    let segments: HashSet<&str> = state.segments.iter().map(|s| s.key.as_str()).collect();
    let mut records: Vec<FlagRecord> = Vec::with_capacity(flags.len());
    let mut overrides = Vec::new();
    for (i, f) in flags.iter().enumerate() {
        let key =
            f.get("key").and_then(|k| k.as_str()).ok_or_else(|| format!("flag #{} has no `key`", i + 1))?;
        let mut body = f.clone();
        let wanted = body.as_object_mut().and_then(|o| {
            o.remove("version");
            o.remove("overrides")
        });
        let def: FlagDef = serde_json::from_value(body).map_err(|e| format!("flag {key:?}: {e}"))?;
        if records.iter().any(|r| r.key == key) {
            return Err(format!("flag {key:?} appears twice"));
        }
        // A guarded rollout's start is the file's: a reload does not restart it.
        let started = def.targeting.guard.as_ref().and_then(|g| g.started);
        let create = Mutation::CreateFlag { def, if_missing: false };
        let Some(Plan::PutFlag { mut record, .. }) =
            plan(&create, None, None, at).map_err(|e| e.to_string())?
        else {
            return Err(format!("flag {key:?} could not be read"));
        };
        if let Some(g) = record.targeting.guard.as_mut() {
            g.started = started;
        }
        for s in record.targeting.segment_keys() {
            check_segment(key, s, segments.contains(s)).map_err(|e| e.to_string())?;
        }
        match wanted {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(users)) => {
                for (user, value) in users {
                    let set = Mutation::SetOverride { key: key.to_owned(), user_id: user.clone(), value };
                    if let Some(Plan::PutOverride { value, .. }) = plan(&set, Some(&record), None, at)
                        .map_err(|e| format!("{e} (override of {user:?})"))?
                    {
                        overrides.push(OverrideRecord { key: key.to_owned(), user_id: user, value });
                    }
                }
            }
            Some(_) => return Err(format!("flag {key:?}: `overrides` must map user ids to values")),
        }
        records.push(record);
    }
    state.flags = records;
    state.overrides = overrides;
    Ok(state)
}

#[async_trait]
impl FlagReader for FileStore {
    async fn load(&self) -> Result<StoreState, StoreError> {
        self.check();
        Ok(self.loaded().state.clone())
    }

    async fn list_flags(&self) -> Result<Vec<FlagRecord>, StoreError> {
        let mut flags = self.loaded().state.flags.clone();
        flags.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(flags)
    }

    async fn flag(&self, key: &str) -> Result<Option<FlagRecord>, StoreError> {
        Ok(self.loaded().state.flags.iter().find(|f| f.key == key).cloned())
    }

    async fn overrides(&self, key: &str) -> Result<Vec<OverrideRecord>, StoreError> {
        let mut o: Vec<_> = self.loaded().state.overrides.iter().filter(|o| o.key == key).cloned().collect();
        o.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(o)
    }

    /// No change log: a file is reloaded whole.
    async fn changes_since(&self, _after: u64, _limit: u32) -> Result<Vec<Change>, StoreError> {
        Ok(Vec::new())
    }

    /// The served content's hash; checks the file first (the poll fallback).
    async fn latest_seq(&self) -> Result<u64, StoreError> {
        self.check();
        Ok(self.loaded().good)
    }

    async fn segments(&self) -> Result<Vec<SegmentRecord>, StoreError> {
        Ok(self.loaded().state.segments.clone())
    }

    async fn attributes(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.signal.subscribe()
    }
}

/// Only reads: a file is changed by editing it (the admin and `ff` say so).
impl Store for FileStore {
    fn writer(&self) -> Option<&dyn FlagWriter> {
        None
    }

    fn token_store(&self) -> Option<&dyn TokenStore> {
        None
    }

    fn usage_store(&self) -> Option<&dyn UsageStore> {
        None
    }

    fn refusal(&self) -> StoreError {
        self.refused()
    }
}
