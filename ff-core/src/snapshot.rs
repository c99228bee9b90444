//! `Snapshot`: an immutable, versioned, indexed view of every flag and override.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use rustc_hash::FxHashMap;

use crate::eval::{Detail, Reason};
use crate::flag::Flag;
use crate::model::{Action, Change, FlagRecord, OverrideRecord, StoreState};
use crate::value::{FlagType, Value};

/// Every flag and per-user override at one point of the change log.
///
/// Built by a [`Source`](crate::Source) and shared by all requests until the
/// next change; never modified. Lookups of a flag and of one user's overrides
/// are hash lookups.
pub struct Snapshot {
    version: u64,
    flags: Arc<FlagTable>,
    users: Arc<FxHashMap<Arc<str>, UserOverrides>>,
    shared_config: OnceLock<SharedConfig>,
}

/// Flags by key. Slot numbers are stable while the table is updated
/// incrementally, so per-user overrides can refer to flags by slot.
#[derive(Clone, Default)]
struct FlagTable {
    index: FxHashMap<Arc<str>, u32>,
    slots: Vec<Option<Arc<Slot>>>,
}

struct Slot {
    record: FlagRecord,
    /// Set once a read found the value unfit for the declared type, so the
    /// warning is logged once per flag version rather than once per read.
    warned: AtomicBool,
}

/// One user's overrides, sorted by flag slot. Cheap to clone.
#[derive(Clone, Default)]
pub struct UserOverrides(Arc<[(u32, Value)]>);

impl UserOverrides {
    fn get(&self, slot: u32) -> Option<&Value> {
        // Few overrides per user: a linear scan beats a search.
        self.0.iter().find(|(s, _)| *s == slot).map(|(_, v)| v)
    }

    /// Number of flags this user has an explicit value for.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the user has no override.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for UserOverrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(s, v)| (s, v)))
            .finish()
    }
}

struct SharedConfig {
    type_id: TypeId,
    value: Arc<dyn Any + Send + Sync>,
    touched: Box<[u32]>,
}

/// Why a snapshot could not apply changes incrementally; the caller reloads fully.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The changes do not follow the snapshot's version without a gap.
    #[error("change {found} does not follow version {expected}")]
    Gap {
        /// The seq the next change should have.
        expected: u64,
        /// The seq it has.
        found: u64,
    },
    /// A change could not be understood or does not fit the snapshot.
    #[error("change {seq}: {problem}")]
    Bad {
        /// The change.
        seq: u64,
        /// What is wrong.
        problem: String,
    },
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("flags", &self.flags.index.len())
            .field("users_with_overrides", &self.users.len())
            .finish()
    }
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot::empty()
    }
}

impl Snapshot {
    /// A snapshot with no flags: every read serves the code default.
    pub fn empty() -> Self {
        Snapshot {
            version: 0,
            flags: Arc::default(),
            users: Arc::default(),
            shared_config: OnceLock::new(),
        }
    }

    /// Builds a snapshot from a full store state. Overrides that do not fit
    /// their flag's type are dropped with a warning.
    pub fn from_state(state: &StoreState) -> Self {
        let mut flags = FlagTable::default();
        for record in state.flags.iter().filter(|f| !f.archived) {
            flags.put(record.clone());
        }
        let mut users: HashMap<Arc<str>, Vec<(u32, Value)>> = HashMap::new();
        let mut interned: FxHashMap<&str, Arc<str>> = FxHashMap::default();
        for o in &state.overrides {
            let Some((slot, value)) = flags.typed_override(o) else {
                continue;
            };
            let user = interned
                .entry(&o.user_id)
                .or_insert_with(|| o.user_id.as_str().into())
                .clone();
            users.entry(user).or_default().push((slot, value));
        }
        let users = users
            .into_iter()
            .map(|(u, mut list)| {
                list.sort_by_key(|(s, _)| *s);
                (u, UserOverrides(list.into()))
            })
            .collect();
        Snapshot {
            version: state.seq,
            flags: Arc::new(flags),
            users: Arc::new(users),
            shared_config: OnceLock::new(),
        }
    }

    /// The full state this snapshot was built from (for saving to disk).
    pub fn to_state(&self) -> StoreState {
        let mut flags: Vec<FlagRecord> = self
            .flags
            .slots
            .iter()
            .flatten()
            .map(|s| s.record.clone())
            .collect();
        flags.sort_by(|a, b| a.key.cmp(&b.key));
        let mut overrides: Vec<OverrideRecord> = self
            .users
            .iter()
            .flat_map(|(user, list)| {
                list.0.iter().filter_map(|(slot, value)| {
                    let flag = self.flags.slot(*slot)?;
                    Some(OverrideRecord {
                        key: flag.record.key.clone(),
                        user_id: user.to_string(),
                        value: value.to_json(),
                    })
                })
            })
            .collect();
        overrides.sort_by(|a, b| (&a.key, &a.user_id).cmp(&(&b.key, &b.user_id)));
        StoreState {
            seq: self.version,
            flags,
            overrides,
        }
    }

    /// Applies changes that directly follow this snapshot's version, giving the next snapshot.
    pub fn apply(&self, changes: &[Change]) -> Result<Snapshot, ApplyError> {
        let mut flags: Option<FlagTable> = None;
        let mut users: Option<FxHashMap<Arc<str>, UserOverrides>> = None;
        let mut version = self.version;
        for c in changes {
            if c.seq != version + 1 {
                return Err(ApplyError::Gap {
                    expected: version + 1,
                    found: c.seq,
                });
            }
            version = c.seq;
            let bad = |problem: &str| ApplyError::Bad {
                seq: c.seq,
                problem: problem.to_owned(),
            };
            match c.action {
                Action::FlagCreate | Action::FlagUpdate => {
                    let after = c.after.clone().ok_or_else(|| bad("no after state"))?;
                    let record: FlagRecord =
                        serde_json::from_value(after).map_err(|e| bad(&e.to_string()))?;
                    let table = flags.get_or_insert_with(|| (*self.flags).clone());
                    if let Some(slot) = table.index.get(record.key.as_str()).copied() {
                        let old = table.slot(slot).map(|s| s.record.value_type);
                        if old.is_some_and(|t| t != record.value_type) {
                            return Err(bad("a flag's type changed"));
                        }
                    }
                    table.put(record);
                }
                Action::FlagArchive => {
                    let table = flags.get_or_insert_with(|| (*self.flags).clone());
                    if let Some(slot) = table.index.remove(c.key.as_str()) {
                        table.slots[slot as usize] = None;
                        let map = users.get_or_insert_with(|| (*self.users).clone());
                        map.retain(|_, list| {
                            if list.get(slot).is_some() {
                                *list = UserOverrides(
                                    list.0.iter().filter(|(s, _)| *s != slot).cloned().collect(),
                                );
                            }
                            !list.is_empty()
                        });
                    }
                }
                Action::OverrideSet | Action::OverrideDelete => {
                    let user = c.subject.as_deref().ok_or_else(|| bad("no user"))?;
                    let table = flags.as_ref().unwrap_or(&self.flags);
                    let Some(slot) = table.index.get(c.key.as_str()).copied() else {
                        return Err(bad("override of an unknown flag"));
                    };
                    let value = match (c.action, &c.after) {
                        (Action::OverrideSet, Some(json)) => {
                            let o = OverrideRecord {
                                key: c.key.clone(),
                                user_id: user.to_owned(),
                                value: json.clone(),
                            };
                            Some(
                                table
                                    .typed_override(&o)
                                    .ok_or_else(|| bad("override does not fit its flag"))?
                                    .1,
                            )
                        }
                        (Action::OverrideSet, None) => return Err(bad("no after state")),
                        _ => None,
                    };
                    let map = users.get_or_insert_with(|| (*self.users).clone());
                    let mut list: Vec<(u32, Value)> = map
                        .get(user)
                        .map(|l| l.0.iter().filter(|(s, _)| *s != slot).cloned().collect())
                        .unwrap_or_default();
                    if let Some(v) = value {
                        list.push((slot, v));
                        list.sort_by_key(|(s, _)| *s);
                    }
                    if list.is_empty() {
                        map.remove(user);
                    } else {
                        map.insert(user.into(), UserOverrides(list.into()));
                    }
                }
            }
        }
        Ok(Snapshot {
            version,
            flags: flags.map(Arc::new).unwrap_or_else(|| self.flags.clone()),
            users: users.map(Arc::new).unwrap_or_else(|| self.users.clone()),
            shared_config: OnceLock::new(),
        })
    }

    /// The sequence number of the last change included (0: nothing from a store).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Number of live flags.
    pub fn len(&self) -> usize {
        self.flags.index.len()
    }

    /// Whether the snapshot holds no flag.
    pub fn is_empty(&self) -> bool {
        self.flags.index.is_empty()
    }

    /// Number of users with at least one override.
    pub fn users_with_overrides(&self) -> usize {
        self.users.len()
    }

    /// The stored record of a flag.
    pub fn flag(&self, key: &str) -> Option<&FlagRecord> {
        let slot = *self.flags.index.get(key)?;
        self.flags.slot(slot).map(|s| &s.record)
    }

    /// All live flags, in no particular order.
    pub fn flags(&self) -> impl Iterator<Item = &FlagRecord> {
        self.flags.slots.iter().flatten().map(|s| &s.record)
    }

    /// One user's overrides, looked up once per request.
    pub fn user(&self, user_id: &str) -> Option<UserOverrides> {
        self.users.get(user_id).cloned()
    }

    /// Evaluates `flag` for a user (with that user's overrides, if any), in the
    /// documented order. Never panics; falls back to the code default.
    pub fn evaluate<T: FlagType>(&self, flag: &Flag<T>, user: Option<&UserOverrides>) -> Detail<T> {
        self.evaluate_slot(flag, user).1
    }

    fn evaluate_slot<T: FlagType>(
        &self,
        flag: &Flag<T>,
        user: Option<&UserOverrides>,
    ) -> (Option<u32>, Detail<T>) {
        let version = self.version;
        let default = |reason| Detail {
            value: flag.default_value(),
            reason,
            version,
        };
        let Some(&slot) = self.flags.index.get(flag.key()) else {
            return (None, default(Reason::Default));
        };
        let Some(s) = self.flags.slot(slot) else {
            return (None, default(Reason::Default));
        };
        let r = &s.record;
        let (value, reason) = if !r.enabled {
            (&r.off_value, Reason::Disabled)
        } else if let Some(v) = user.and_then(|u| u.get(slot)) {
            (v, Reason::Override)
        } else {
            (&r.value, Reason::Global)
        };
        match T::from_value(value) {
            Some(v) if flag.accepts(&v) => (
                Some(slot),
                Detail {
                    value: v,
                    reason,
                    version,
                },
            ),
            _ => {
                if !s.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        flag = flag.key(),
                        stored = %value,
                        declared = %T::TYPE,
                        "ff: stored value does not fit the flag's declaration; serving the code default"
                    );
                }
                (Some(slot), default(Reason::Invalid))
            }
        }
    }

    /// Evaluates and records which slot was read (for config dependency tracking).
    pub(crate) fn evaluate_tracked<T: FlagType>(
        &self,
        flag: &Flag<T>,
        user: Option<&UserOverrides>,
        touched: &mut Vec<u32>,
    ) -> Detail<T> {
        let (slot, detail) = self.evaluate_slot(flag, user);
        touched.extend(slot);
        detail
    }

    /// The config built for users without overrides, shared by every request on
    /// this snapshot; with the slots it read. `None` if another config type holds the cache.
    pub(crate) fn shared_config<C: Any + Send + Sync>(
        &self,
        build: impl FnOnce() -> (C, Vec<u32>),
    ) -> Option<(Arc<C>, &[u32])> {
        let shared = self.shared_config.get_or_init(|| {
            let (value, mut touched) = build();
            touched.sort_unstable();
            touched.dedup();
            SharedConfig {
                type_id: TypeId::of::<C>(),
                value: Arc::new(value),
                touched: touched.into(),
            }
        });
        if shared.type_id != TypeId::of::<C>() {
            return None;
        }
        let value = shared.value.clone().downcast::<C>().ok()?;
        Some((value, &shared.touched))
    }
}

impl UserOverrides {
    /// Whether any of `slots` (sorted) has an override for this user.
    pub(crate) fn touches(&self, slots: &[u32]) -> bool {
        self.0.iter().any(|(s, _)| slots.binary_search(s).is_ok())
    }
}

impl FlagTable {
    fn slot(&self, slot: u32) -> Option<&Arc<Slot>> {
        self.slots.get(slot as usize)?.as_ref()
    }

    fn put(&mut self, record: FlagRecord) {
        let slot = Arc::new(Slot {
            record,
            warned: AtomicBool::new(false),
        });
        match self.index.get(slot.record.key.as_str()) {
            Some(&i) => self.slots[i as usize] = Some(slot),
            None => {
                let i = self.slots.len() as u32;
                self.index.insert(slot.record.key.as_str().into(), i);
                self.slots.push(Some(slot));
            }
        }
    }

    fn typed_override(&self, o: &OverrideRecord) -> Option<(u32, Value)> {
        let slot = *self.index.get(o.key.as_str())?;
        let flag = &self.slot(slot)?.record;
        match Value::from_json(flag.value_type, &o.value) {
            Ok(v) => Some((slot, v)),
            Err(e) => {
                tracing::warn!(flag = %o.key, user = %o.user_id, error = %e, "ff: ignoring an override that does not fit its flag");
                None
            }
        }
    }
}
