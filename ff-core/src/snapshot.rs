//! `Snapshot`: an immutable, versioned, indexed view of every flag and override.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use hashbrown::HashTable;
use smol_str::SmolStr;

use crate::context::EvalContext;
use crate::flag::key_hash;
use crate::ids::{id_hash, str_eq};
use crate::pins::Pins;
use crate::targeting::SegmentRecord;
use crate::targeting::{Compiled, CompiledSegment, Fast, Outcome, Segments, Shape};
use crate::usage::{FlagUsage, Usage};
use time::OffsetDateTime;

use crate::flag::Flag;
use crate::model::{Action, Change, ChangeState, FlagRecord, OverrideRecord, StoreState};
use crate::reason::{Detail, PackedReason, Reason};
use crate::value::{FlagType, Value};

/// Every flag and per-user override at one point of the change log.
///
/// Built by a `Source` (ff-store) and shared by all requests until the
/// next change; never modified. Lookups of a flag and of one user's overrides
/// are hash lookups.
pub struct Snapshot {
    version: u64,
    flags: Arc<FlagTable>,
    users: Arc<UserTable>,
    segments: Arc<Segments>,
    shared_config: OnceLock<SharedConfig>,
}

/// Flags by key. Slot numbers are stable while the table is updated
/// incrementally, so per-user overrides can refer to flags by slot.
#[derive(Clone, Default)]
struct FlagTable {
    /// Slot numbers, found by the key's precomputed hash.
    index: crate::key_index::KeyIndex,
    /// What a read needs of each slot, by number, one cache line each.
    hot: Vec<Hot>,
    /// The slots by number.
    slots: Vec<Option<Arc<Slot>>>,
    /// Counters, shared by every table a `Source` builds.
    usage: Arc<Usage>,
    /// Values the environment pins, likewise.
    pins: Arc<Pins>,
    /// Slots whose targeting has a guard.
    guarded: u32,
}

/// What a read needs of one flag, in one cache line of a table in slot order.
/// A boolean flag without targeting, or with targeting of a common [`Shape`],
/// is read from here alone (and the set a shape shares): a read of many flags
/// touches one line per flag where the slot and its compiled targeting took four
/// or five, each found through the one before.
#[derive(Clone)]
#[repr(align(64))]
struct Hot {
    /// The key as two words if at most 15 bytes: a typed read compares these.
    key_short: crate::ids::Short,
    usage_id: u32,
    enabled: bool,
    /// The value and off value, for `Plain` and `Shape`.
    value: bool,
    off: bool,
    read: HotRead,
}

/// A plain tag (`repr(u8)`) and fields ordered to fill 40 bytes: a read
/// dispatches once, on one byte, where a shape nested in the enum took two.
#[derive(Clone)]
#[repr(u8)]
enum HotRead {
    /// No targeting and no expiry; boolean values.
    Plain,
    /// The [`Shape`]s: targeting of a common shape, nothing that reads a clock, no
    /// guard; boolean values.
    Split {
        n: u8,
        values: u8,
        salt: crate::bucket::Salted,
        bounds: [u32; 4],
    },
    Attr {
        not_in: bool,
        serve: bool,
        key: crate::ids::Short,
        set: Arc<[crate::ids::Short]>,
    },
    SmallList {
        misses: bool,
        serve: bool,
        groups: Arc<[u64]>,
        data: Arc<[u8]>,
    },
    List {
        misses: bool,
        serve: bool,
        set: Arc<crate::ids::IdSet>,
    },
    /// Everything else: the slot decides.
    Slot(Arc<Slot>),
    /// A removed flag's number (the index no longer leads here).
    Vacant,
}

const _: () = assert!(std::mem::size_of::<Hot>() == 64);
const _: () = assert!(std::mem::size_of::<HotRead>() == 40);

/// What a [`Shape`] in a `Hot` decides for `ctx`; `None` where the slot decides.
#[inline(always)]
fn shape_decides(h: &Hot, ctx: &EvalContext) -> Option<Fast> {
    match &h.read {
        HotRead::Split { n, values, salt, bounds } => Some(Shape::split(salt, bounds, *n, *values, ctx)),
        HotRead::Attr { not_in, serve, key, set } => Shape::attr(*key, set, *not_in, *serve, ctx),
        HotRead::SmallList { misses, serve, groups, data } => {
            Some(Shape::small_list(groups, data, *misses, *serve, ctx))
        }
        HotRead::List { misses, serve, set } => Some(Shape::list(set, *misses, *serve, ctx)),
        HotRead::Plain | HotRead::Slot(_) | HotRead::Vacant => None,
    }
}

impl Fast {
    /// The boolean served, its reason and split variation; `value` where nothing matched.
    #[inline(always)]
    fn served(self, value: bool) -> (bool, Reason, usize) {
        match self {
            Fast::Rule(b) => (b, Reason::Rule(0), 0),
            Fast::Split(j, b) => (b, Reason::Split, j),
            Fast::Fallthrough => (value, Reason::Global, 0),
        }
    }
}

/// A boolean a `Hot` decided as `flag`'s value, counted, if its type and bounds take
/// it; `None` (nothing counted) where they refuse it.
#[inline(always)]
fn served_bool<T: FlagType>(
    flag: &Flag<T>,
    usage_id: u32,
    b: bool,
    reason: Reason,
    number: usize,
) -> Option<T> {
    let v = T::from_bool(b).filter(|v| flag.accepts(v))?;
    #[cfg(feature = "coverage")]
    crate::coverage::record(flag.key(), T::TYPE, &BOOLS[usize::from(b)]);
    // `usage::variant` of a boolean value.
    let variant = if T::TYPE == crate::ValueType::Bool { usize::from(b) } else { number };
    crate::usage::record(usage_id, reason, variant);
    Some(v)
}

/// The boolean values a `Hot` serves, as the `Value` a read converts.
static BOOLS: [Value; 2] = [Value::Bool(false), Value::Bool(true)];

impl From<Shape> for HotRead {
    fn from(shape: Shape) -> Self {
        match shape {
            Shape::Split { salt, bounds, n, values } => HotRead::Split { n, values, salt, bounds },
            Shape::Attr { key, set, not_in, serve } => HotRead::Attr { not_in, serve, key, set },
            Shape::SmallList { groups, data, misses, serve } => {
                HotRead::SmallList { misses, serve, groups, data }
            }
            Shape::List { set, misses, serve } => HotRead::List { misses, serve, set },
        }
    }
}

impl Hot {
    fn new(s: &Arc<Slot>) -> Self {
        let (value, off) = match (&s.value, &s.off_value) {
            (Value::Bool(v), Value::Bool(o)) => (Some(*v), *o),
            _ => (None, false),
        };
        let read = match value {
            Some(_) if s.plain => HotRead::Plain,
            Some(_) if s.timeless && !s.guarded => s
                .compiled
                .as_ref()
                .and_then(Compiled::shape)
                .map_or_else(|| HotRead::Slot(s.clone()), HotRead::from),
            _ => HotRead::Slot(s.clone()),
        };
        Hot {
            key_short: crate::ids::Short::new(&s.key),
            usage_id: s.usage_id,
            enabled: s.enabled,
            value: value.unwrap_or(false),
            off,
            read,
        }
    }

    fn vacant() -> Self {
        let read = HotRead::Vacant;
        Hot {
            key_short: crate::ids::Short::new(""),
            usage_id: 0,
            enabled: false,
            value: false,
            off: false,
            read,
        }
    }
}

/// What a read touches comes first, in declaration order (`repr(C)`), in one
/// allocation: the key, the switch and the values, then the compiled targeting;
/// the rest of the record last.
#[repr(C)]
struct Slot {
    /// Inline up to 23 bytes, so most key checks stay in the slot's cache lines.
    key: SmolStr,
    /// Its number in `FlagTable::slots`.
    slot: u32,
    /// `usage.id()`, kept here so a read counts without reaching `usage`.
    usage_id: u32,
    /// A copy of the record's switch.
    enabled: bool,
    /// No targeting and no expiry: the switch, an override or the value decide,
    /// and the read touches nothing past the value.
    plain: bool,
    /// The environment pins it (`compiled` holds the pin).
    pinned: bool,
    /// Targeting that reads no clock (no expiry, pin or schedule): rules and splits
    /// are decided in a function with no clock code, and so a smaller frame.
    timeless: bool,
    /// Its targeting has a guard: a read its split decides is recorded for the layer.
    guarded: bool,
    /// `expires_at` is set.
    expiring: bool,
    /// Set once a read found the value unfit for the declared type, so the
    /// warning is logged once per flag version rather than once per read.
    warned: AtomicBool,
    value: Value,
    /// Targeting compiled once per flag version; `None` when there is none
    /// (or it is invalid, which is logged). Inline: a boxed one cost a cache
    /// miss per targeted flag when many flags are read.
    compiled: Option<Compiled>,
    off_value: Value,
    /// From then on the flag serves the code default (`serve_default` expiry).
    expires_at: Option<OffsetDateTime>,
    /// The key's hash: read only when the index grows.
    hash: u64,
    /// The flag's identity for counting, shared with its other versions: held so
    /// its counts are collected while any snapshot can still count it.
    usage: Arc<FlagUsage>,
    stored: Stored,
}

/// The rest of a flag's record, as a slot keeps it: the key and the switch live in
/// the slot, and what most flags leave empty is boxed only when set (a record
/// inline would take 416 bytes per flag).
#[repr(C)]
struct Stored {
    value_type: crate::ValueType,
    archived: bool,
    description: Box<str>,
    schema: Option<Box<crate::Schema>>,
    meta: Option<Box<crate::model::FlagMeta>>,
    /// Without the lists the compiled form holds; `None` when empty.
    targeting: Option<Box<crate::Targeting>>,
    version: u64,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

/// `t` without the spare capacity parsing leaves (a vector read from JSON grows by
/// doubling: a one-rule list holds room for four).
fn compact(mut t: crate::Targeting) -> crate::Targeting {
    let splits = t.rules.iter_mut().filter_map(|r| r.split.as_mut());
    for s in splits.chain(t.split.as_mut()).chain(t.schedule.iter_mut().filter_map(|s| s.split.as_mut())) {
        s.variations.shrink_to_fit();
    }
    for r in &mut t.rules {
        r.clauses.iter_mut().for_each(|c| c.values.shrink_to_fit());
        r.clauses.shrink_to_fit();
    }
    t.rules.shrink_to_fit();
    t.schedule.shrink_to_fit();
    t
}

/// What `FlagInfo::meta` shows for a flag that has none set.
static NO_META: std::sync::LazyLock<crate::model::FlagMeta> = std::sync::LazyLock::new(Default::default);

impl Stored {
    fn new(r: FlagRecord) -> Self {
        fn set<T: Default + PartialEq>(v: T) -> Option<Box<T>> {
            (v != T::default()).then(|| Box::new(v))
        }
        Stored {
            value_type: r.value_type,
            archived: r.archived,
            description: r.description.into_boxed_str(),
            schema: set(r.schema),
            meta: set(r.meta),
            // A salt or `bucket_by` alone is kept too: it decides a later split's buckets.
            targeting: set(compact(r.targeting)),
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl Slot {
    fn new(
        slot: u32,
        hash: u64,
        mut record: FlagRecord,
        compiled: Option<Compiled>,
        usage: Arc<FlagUsage>,
    ) -> Self {
        let guarded =
            record.targeting.guard.is_some() && compiled.as_ref().is_some_and(|c| c.pin().is_none());
        // The compiled targeting holds the id lists; the record keeps each id once,
        // and none of a targeting the compiled form rebuilds exactly.
        if let Some(c) = compiled.as_ref().filter(|c| c.pin().is_none()) {
            let t = compact(std::mem::take(&mut record.targeting));
            if c.targeting().as_ref() != Some(&t) {
                record.targeting = t;
                c.strip(&mut record.targeting);
            }
        }
        // A pin outranks expiry.
        let expires_at = (record.meta.expiry == crate::model::ExpiryPolicy::ServeDefault
            && !record.meta.is_permanent(record.value_type)
            && compiled.as_ref().is_none_or(|c| c.pin().is_none()))
        .then_some(record.meta.expires_at)
        .flatten();
        Slot {
            key: SmolStr::new(std::mem::take(&mut record.key)),
            hash,
            slot,
            usage_id: usage.id(),
            enabled: record.enabled,
            warned: AtomicBool::new(false),
            plain: compiled.is_none() && expires_at.is_none(),
            pinned: compiled.as_ref().is_some_and(|c| c.pin().is_some()),
            guarded,
            timeless: expires_at.is_none()
                && compiled.as_ref().is_some_and(|c| c.pin().is_none() && !c.needs_time()),
            expiring: expires_at.is_some(),
            expires_at,
            usage,
            value: std::mem::replace(&mut record.value, Value::Bool(false)),
            off_value: std::mem::replace(&mut record.off_value, Value::Bool(false)),
            compiled,
            stored: Stored::new(record),
        }
    }
}

/// Users with overrides, in shards chosen by the id's hash, so a change to one
/// user's overrides copies one shard (1/256 of the users), not the table. Entries
/// are looked up once per request and then referred to by position, so reads touch
/// no reference count.
#[derive(Clone, Default)]
struct UserTable {
    /// Empty (no allocation) until the first user is put.
    shards: Box<[Arc<UserShard>]>,
    /// Users with an override, by flag slot: listings read it without walking the users.
    per_slot: Vec<u32>,
}

const USER_SHARDS: usize = 256;
/// A `UserRef` is the shard in the top 8 bits and the position in the low 24.
const USER_POSITION_BITS: u32 = 24;

/// Bits the shard's own hash table does not use (it takes the low bits for the
/// bucket and the top 7 for tags).
#[inline]
fn shard_of(hash: u64) -> usize {
    ((hash >> 32) as usize) % USER_SHARDS
}

impl UserTable {
    #[inline]
    fn entry(&self, user: UserRef) -> Option<&UserEntry> {
        let shard = self.shards.get((user.0 >> USER_POSITION_BITS) as usize)?;
        shard.entries.get((user.0 & ((1 << USER_POSITION_BITS) - 1)) as usize)?.as_deref()
    }

    #[inline]
    fn find(&self, user: &str, hash: u64) -> Option<u32> {
        let s = shard_of(hash);
        let i = self.shards.get(s)?.find(user, hash)?;
        Some(((s as u32) << USER_POSITION_BITS) | i)
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.index.len()).sum()
    }

    fn iter(&self) -> impl Iterator<Item = (&str, UserRef)> {
        self.shards.iter().enumerate().flat_map(|(s, shard)| {
            shard
                .index
                .iter()
                .map(move |(id, i)| (id.as_str(), UserRef(((s as u32) << USER_POSITION_BITS) | *i)))
        })
    }

    /// Copies the user's shard if an older snapshot still shares it.
    fn put(&mut self, user: &str, entry: Option<UserEntry>) {
        if self.shards.is_empty() {
            if entry.is_none() {
                return;
            }
            self.shards = (0..USER_SHARDS).map(|_| Arc::default()).collect();
        }
        let hash = id_hash(user);
        let old: Vec<u32> = self
            .find(user, hash)
            .and_then(|i| self.entry(UserRef(i)))
            .map(|e| e.slots.to_vec())
            .unwrap_or_default();
        for slot in old {
            if let Some(n) = self.per_slot.get_mut(slot as usize) {
                *n = n.saturating_sub(1);
            }
        }
        for &slot in entry.iter().flat_map(|e| e.slots.iter()) {
            if self.per_slot.len() <= slot as usize {
                self.per_slot.resize(slot as usize + 1, 0);
            }
            self.per_slot[slot as usize] += 1;
        }
        if let Some(shard) = self.shards.get_mut(shard_of(hash)) {
            Arc::make_mut(shard).put(user, hash, entry);
        }
    }
}

/// One shard of the user table.
#[derive(Clone, Default)]
struct UserShard {
    /// User id (inline up to 23 bytes, so a lookup compares without a pointer
    /// chase) and position in `entries`.
    index: HashTable<(SmolStr, u32)>,
    entries: Vec<Option<Arc<UserEntry>>>,
}

/// One user's overrides: flag slots (sorted) and their values, side by side so
/// the scan over slots stays within a cache line or two.
#[derive(Default)]
struct UserEntry {
    /// Bit `slot % 64` is set for every overridden slot: most reads of flags
    /// the user does not override end here.
    mask: u64,
    slots: Box<[u32]>,
    values: Box<[Value]>,
}

impl UserEntry {
    fn from_pairs(mut pairs: Vec<(u32, Value)>) -> Self {
        pairs.sort_by_key(|(s, _)| *s);
        let (slots, values): (Vec<u32>, Vec<Value>) = pairs.into_iter().unzip();
        let mask = slots.iter().fold(0, |m, s| m | 1u64 << (s % 64));
        UserEntry { mask, slots: slots.into(), values: values.into() }
    }

    fn pairs(&self) -> impl Iterator<Item = (u32, &Value)> {
        self.slots.iter().copied().zip(self.values.iter())
    }

    #[inline]
    fn get(&self, slot: u32) -> Option<&Value> {
        if self.mask & (1u64 << (slot % 64)) == 0 {
            return None;
        }
        let i = self.slots.binary_search(&slot).ok()?;
        self.values.get(i)
    }

    /// Whether any of `slots` (sorted) has an override.
    fn touches(&self, slots: &[u32]) -> bool {
        self.slots.iter().any(|s| slots.binary_search(s).is_ok())
    }
}

impl UserShard {
    /// Drops the holes removed users left, so positions fit a `UserRef`.
    fn compact(&mut self) {
        let mut entries = Vec::with_capacity(self.index.len());
        for (_, i) in self.index.iter_mut() {
            let e = self.entries.get_mut(*i as usize).and_then(Option::take);
            *i = entries.len() as u32;
            entries.push(e);
        }
        self.entries = entries;
    }

    #[inline]
    fn find(&self, user: &str, hash: u64) -> Option<u32> {
        self.index.find(hash, |(id, _)| str_eq(id, user)).map(|(_, i)| *i)
    }

    fn put(&mut self, user: &str, hash: u64, entry: Option<UserEntry>) {
        let entry = entry.filter(|e| !e.slots.is_empty()).map(Arc::new);
        match (self.find(user, hash), entry) {
            (Some(i), Some(e)) => self.entries[i as usize] = Some(e),
            (Some(i), None) => {
                if let Ok(found) = self.index.find_entry(hash, |(id, _)| id == user) {
                    found.remove();
                }
                self.entries[i as usize] = None;
            }
            (None, Some(e)) => {
                if self.entries.len() >= 1 << USER_POSITION_BITS {
                    self.compact();
                }
                let i = self.entries.len() as u32;
                self.entries.push(Some(e));
                self.index.insert_unique(hash, (SmolStr::new(user), i), |(id, _)| id_hash(id));
            }
            (None, None) => {}
        }
    }
}

/// A user's overrides in one snapshot: found once per request by
/// [`Snapshot::user`], valid only with the snapshot that returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserRef(u32);

pub(crate) struct SharedConfig {
    type_id: TypeId,
    value: Arc<dyn Any + Send + Sync>,
    touched: Box<[u32]>,
    /// Some flag it read has targeting: it cannot be shared between users.
    targeted: bool,
    /// The times between which it holds: the expiries of the flags it read that
    /// bracket the time it was built (`None`: unbounded on that side).
    valid_from: Option<OffsetDateTime>,
    valid_until: Option<OffsetDateTime>,
    /// The clock it was built at, if a flag it read needed one: a thread's copy is
    /// built at the same instant, so it is the same config.
    built_at: Option<OffsetDateTime>,
}

impl SharedConfig {
    /// The clock it was built at (`None`: no flag it read needed one).
    pub(crate) fn built_at(&self) -> Option<OffsetDateTime> {
        self.built_at
    }

    /// The config, if it is a `C` (cloning it writes a count every thread shares).
    pub(crate) fn value<C: Any + Send + Sync>(&self) -> Option<Arc<C>> {
        Arc::clone(&self.value).downcast::<C>().ok()
    }

    /// Some flag it read has targeting.
    pub(crate) fn targeted(&self) -> bool {
        self.targeted
    }

    /// Whether a reader at `now` (read only if some flag it read expires) sees these values.
    pub(crate) fn holds_at(&self, now: impl FnOnce() -> OffsetDateTime) -> bool {
        if self.valid_from.is_none() && self.valid_until.is_none() {
            return true;
        }
        let now = now();
        self.valid_from.is_none_or(|t| now >= t) && self.valid_until.is_none_or(|t| now < t)
    }
}

/// Who is asking, for one evaluation: the user's overrides, the context, and the
/// request's clock (read at most once, only by flags with a schedule).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Input<'a> {
    pub(crate) user: Option<UserRef>,
    /// `user` was not looked up: a flag that has overrides looks it up.
    pub(crate) lookup: bool,
    pub(crate) context: &'a EvalContext,
    /// `None` for one evaluation on its own: it keeps its own clock, where needed.
    pub(crate) clock: Option<&'a Clock>,
}

/// A request's clock, read at most once, and where a request served through the
/// layer records the guarded splits it reads: one pointer in [`Input`].
#[derive(Debug, Default, Clone)]
pub(crate) struct Clock {
    pub(crate) now: OnceLock<OffsetDateTime>,
    pub(crate) served: Option<Arc<crate::guard::Served>>,
}

impl Input<'_> {
    pub(crate) fn now(&self) -> OffsetDateTime {
        self.clock.map_or_else(OffsetDateTime::now_utc, |c| *c.now.get_or_init(OffsetDateTime::now_utc))
    }
}

/// The tables a run of changes has copied so far; the rest stay shared.
#[derive(Default)]
struct Copied {
    flags: Option<FlagTable>,
    users: Option<UserTable>,
    segments: Option<Segments>,
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
    /// The change can only be applied by loading everything again.
    #[error("change {seq} needs a full reload")]
    NeedsReload {
        /// The change.
        seq: u64,
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
        #[cfg(feature = "coverage")]
        crate::coverage::init();
        Snapshot {
            version: 0,
            flags: Arc::default(),
            users: Arc::default(),
            segments: Arc::default(),
            shared_config: OnceLock::new(),
        }
    }

    /// Builds a snapshot from a full store state. Overrides that do not fit
    /// their flag's type are dropped with a warning.
    pub fn from_state(state: &StoreState) -> Self {
        Self::from_state_counted(state, Arc::default())
    }

    /// [`from_state`](Self::from_state), counting evaluations into `usage` (a
    /// `Source` keeps one for all its snapshots).
    pub fn from_state_counted(state: &StoreState, usage: Arc<Usage>) -> Self {
        Self::from_state_pinned(state, usage, Arc::default())
    }

    /// [`from_state_counted`](Self::from_state_counted), with values the environment pins.
    pub fn from_state_pinned(state: &StoreState, usage: Arc<Usage>, pins: Arc<Pins>) -> Self {
        let records = state.flags.iter().filter(|f| !f.archived).cloned();
        Self::assemble(state.seq, state.flags.len(), records, state, usage, pins)
    }

    /// [`from_state_pinned`](Self::from_state_pinned), taking the state: each record
    /// is moved in (its id lists freed once compiled), so loading does not hold two
    /// copies of every record.
    pub fn from_owned_state(mut state: StoreState, usage: Arc<Usage>, pins: Arc<Pins>) -> Self {
        let flags = std::mem::take(&mut state.flags);
        let n = flags.len();
        Self::assemble(state.seq, n, flags.into_iter().filter(|f| !f.archived), &state, usage, pins)
    }

    /// A snapshot of `records`, with the overrides and segments of `state`.
    fn assemble(
        seq: u64,
        n: usize,
        records: impl Iterator<Item = FlagRecord>,
        state: &StoreState,
        usage: Arc<Usage>,
        pins: Arc<Pins>,
    ) -> Self {
        let mut flags = FlagTable { usage, pins, ..FlagTable::default() };
        flags.reserve(n);
        for record in records {
            flags.put(record);
        }
        Self::finish(seq, flags, &state.overrides, &state.segments)
    }

    /// Builds from a saved state's JSON (a [`StoreState`], as a `Source` saves its
    /// snapshot), compiling each flag as it is read: loading holds one record at a
    /// time, not all of them. Archived flags are skipped, as
    /// [`from_state`](Self::from_state) skips them.
    pub fn from_json(json: &[u8], usage: Arc<Usage>, pins: Arc<Pins>) -> serde_json::Result<Self> {
        use serde::de::DeserializeSeed;
        let mut de = serde_json::Deserializer::from_slice(json);
        let snapshot =
            load::StateSeed(FlagTable { usage, pins, ..FlagTable::default() }).deserialize(&mut de)?;
        de.end()?;
        Ok(snapshot)
    }

    /// The snapshot of compiled `flags`, with `overrides` and `segments`.
    fn finish(seq: u64, flags: FlagTable, overrides: &[OverrideRecord], segments: &[SegmentRecord]) -> Self {
        #[cfg(feature = "coverage")]
        crate::coverage::init();
        let mut by_user: HashMap<&str, Vec<(u32, Value)>> = HashMap::new();
        for o in overrides {
            if let Some(pair) = flags.typed_override(o) {
                by_user.entry(&o.user_id).or_default().push(pair);
            }
        }
        let mut flags = flags;
        flags.index.seal();
        let mut users = UserTable::default();
        for (user, pairs) in by_user {
            users.put(user, Some(UserEntry::from_pairs(pairs)));
        }
        let segments = segments.iter().filter_map(compile_segment).collect();
        Snapshot {
            version: seq,
            flags: Arc::new(flags),
            users: Arc::new(users),
            segments: Arc::new(segments),
            shared_config: OnceLock::new(),
        }
    }

    /// How many users override each flag that has overrides (kept as overrides
    /// change: no walk over the users).
    pub fn override_counts(&self) -> HashMap<&str, usize> {
        let counts = self.users.per_slot.iter().enumerate().filter(|(_, n)| **n > 0);
        counts
            .filter_map(|(slot, n)| Some((self.flags.slot(slot as u32)?.key.as_str(), *n as usize)))
            .collect()
    }

    /// The full state this snapshot was built from (for saving to disk).
    pub fn to_state(&self) -> StoreState {
        let mut flags: Vec<FlagRecord> = self.flags.slots.iter().flatten().map(|s| s.whole()).collect();
        flags.sort_by(|a, b| a.key.cmp(&b.key));
        let mut overrides: Vec<OverrideRecord> = Vec::new();
        for (user, i) in self.users.iter() {
            let Some(entry) = self.users.entry(i) else { continue };
            for (slot, value) in entry.pairs() {
                if let Some(flag) = self.flags.slot(slot) {
                    overrides.push(OverrideRecord {
                        key: flag.key.to_string(),
                        user_id: user.to_string(),
                        value: value.to_json(),
                    });
                }
            }
        }
        overrides.sort_by(|a, b| (&a.key, &a.user_id).cmp(&(&b.key, &b.user_id)));
        let mut segments: Vec<SegmentRecord> = self.segments.values().filter_map(|s| s.record()).collect();
        segments.sort_by(|a, b| a.key.cmp(&b.key));
        StoreState { seq: self.version, flags, overrides, segments }
    }

    /// Applies changes that directly follow this snapshot's version, giving the next snapshot.
    ///
    /// Only the tables a change touches are copied; the rest is shared with `self`.
    pub fn apply(&self, changes: &[Change]) -> Result<Snapshot, ApplyError> {
        let mut next = Copied::default();
        let mut version = self.version;
        for c in changes {
            if c.seq != version + 1 {
                return Err(ApplyError::Gap { expected: version + 1, found: c.seq });
            }
            version = c.seq;
            self.apply_one(&mut next, c)?;
        }
        Ok(Snapshot {
            version,
            flags: next.flags.map(Arc::new).unwrap_or_else(|| self.flags.clone()),
            users: next.users.map(Arc::new).unwrap_or_else(|| self.users.clone()),
            segments: next.segments.map(Arc::new).unwrap_or_else(|| self.segments.clone()),
            shared_config: OnceLock::new(),
        })
    }

    fn apply_one(&self, next: &mut Copied, c: &Change) -> Result<(), ApplyError> {
        let bad = |problem: &str| ApplyError::Bad { seq: c.seq, problem: problem.to_owned() };
        let after = || c.after_state().map_err(|e| bad(&e.to_string()))?.ok_or_else(|| bad("no after state"));
        match c.action {
            Action::TokenCreate | Action::TokenRevoke | Action::RequestPut => {}
            Action::WebhookAdd | Action::WebhookRemove => {}
            Action::SegmentPut => {
                let ChangeState::Segment(record) = after()? else { return Err(bad("not a segment")) };
                let map = next.segments.get_or_insert_with(|| (*self.segments).clone());
                match compile_segment(&record) {
                    Some((key, seg)) => map.insert(key, seg),
                    None => map.remove(&record.key),
                };
            }
            Action::SegmentDelete => {
                next.segments.get_or_insert_with(|| (*self.segments).clone()).remove(&c.key);
            }
            // The restored flag's overrides come back from the store's table,
            // which the change row does not carry.
            Action::FlagRestore => return Err(ApplyError::NeedsReload { seq: c.seq }),
            Action::FlagCreate | Action::FlagUpdate => {
                let ChangeState::Flag(record) = after()? else { return Err(bad("not a flag")) };
                let table = next.flags.get_or_insert_with(|| (*self.flags).clone());
                if let Some(old) = table.find(&record.key).and_then(|s| table.slot(s))
                    && old.stored.value_type != record.value_type
                {
                    return Err(bad("a flag's type changed"));
                }
                table.put(*record);
            }
            Action::FlagArchive => self.archive(next, &c.key),
            Action::OverrideSet | Action::OverrideDelete => self.apply_override(next, c)?,
        }
        Ok(())
    }

    /// Drops an archived flag and its overrides.
    fn archive(&self, next: &mut Copied, key: &str) {
        let table = next.flags.get_or_insert_with(|| (*self.flags).clone());
        let Some(slot) = table.remove(key) else { return };
        let map = next.users.get_or_insert_with(|| (*self.users).clone());
        let affected: Vec<(String, UserEntry)> = map
            .iter()
            .filter_map(|(u, i)| {
                let e = map.entry(i)?;
                e.get(slot)?;
                let rest = e.pairs().filter(|(s, _)| *s != slot).map(|(s, v)| (s, v.clone()));
                Some((u.to_owned(), UserEntry::from_pairs(rest.collect())))
            })
            .collect();
        for (user, entry) in affected {
            map.put(&user, Some(entry));
        }
    }

    /// Sets or removes one user's value of one flag.
    fn apply_override(&self, next: &mut Copied, c: &Change) -> Result<(), ApplyError> {
        let bad = |problem: &str| ApplyError::Bad { seq: c.seq, problem: problem.to_owned() };
        let user = c.subject.as_deref().ok_or_else(|| bad("no user"))?;
        let table = next.flags.as_ref().unwrap_or(&*self.flags);
        let Some(slot) = table.find(&c.key) else {
            return Err(bad("override of an unknown flag"));
        };
        let value = match (c.action, &c.after) {
            (Action::OverrideSet, Some(json)) => {
                let o = OverrideRecord { key: c.key.clone(), user_id: user.to_owned(), value: json.clone() };
                Some(table.typed_override(&o).ok_or_else(|| bad("override does not fit its flag"))?.1)
            }
            (Action::OverrideSet, None) => return Err(bad("no after state")),
            _ => None,
        };
        let map = next.users.get_or_insert_with(|| (*self.users).clone());
        let current = map.find(user, id_hash(user)).and_then(|i| map.entry(UserRef(i)));
        let mut pairs: Vec<(u32, Value)> = current
            .map(|e| e.pairs().filter(|(s, _)| *s != slot).map(|(s, v)| (s, v.clone())).collect())
            .unwrap_or_default();
        pairs.extend(value.map(|v| (slot, v)));
        map.put(user, Some(UserEntry::from_pairs(pairs)));
        Ok(())
    }

    /// The evaluation counters this snapshot's reads go to.
    pub fn usage(&self) -> &Arc<Usage> {
        &self.flags.usage
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

    /// The values the process environment pins (`FF_<KEY>=value`), by key.
    pub fn pinned(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.flags.pins.iter()
    }

    /// The stored record of a flag, whole (its id lists rebuilt from the compiled
    /// targeting, which alone holds them): for editing and saving.
    pub fn flag(&self, key: &str) -> Option<FlagRecord> {
        self.flag_info(key).map(|f| f.record())
    }

    /// A flag without its targeting's contents, borrowed: for reads and listings.
    pub fn flag_info(&self, key: &str) -> Option<FlagInfo<'_>> {
        let slot = self.flags.find(key)?;
        self.flags.slot(slot).map(|s| FlagInfo(s))
    }

    /// Memory the regexes of every flag and segment take, compiled: what the admin
    /// holds against [`REGEX_BUDGET_PER_SNAPSHOT`](crate::REGEX_BUDGET_PER_SNAPSHOT).
    pub fn regex_bytes(&self) -> usize {
        let flags: usize = self
            .flags
            .slots
            .iter()
            .flatten()
            .filter_map(|s| s.compiled.as_ref())
            .map(|c| c.regex_bytes())
            .sum();
        flags + self.segments.values().map(|s| s.regex_bytes).sum::<usize>()
    }

    /// Memory the regexes of flag `key` take, compiled (0: none, or no such flag).
    pub fn flag_regex_bytes(&self, key: &str) -> usize {
        let slot = self.flags.find(key).and_then(|i| self.flags.slot(i));
        slot.and_then(|s| s.compiled.as_ref()).map_or(0, |c| c.regex_bytes())
    }

    /// Memory the regexes of segment `key` take, compiled (0: none, or no such segment).
    pub fn segment_regex_bytes(&self, key: &str) -> usize {
        self.segments.get(key).map_or(0, |s| s.regex_bytes)
    }

    /// Whether any flag has a guard: the layer records what requests were served
    /// only then.
    #[inline]
    pub fn has_guards(&self) -> bool {
        self.flags.guarded > 0
    }

    /// The keys of the flags whose targeting has a guard, pinned ones included (a pin
    /// keeps this process's reads out of the split, not the rollout out of the store).
    pub fn guarded_keys(&self) -> Vec<&str> {
        let stored_guard = |s: &Slot| s.stored.targeting.as_ref().is_some_and(|t| t.guard.is_some());
        let guarded = |s: &&Arc<Slot>| s.guarded || (s.pinned && stored_guard(s));
        self.flags.slots.iter().flatten().filter(guarded).map(|s| s.key.as_str()).collect()
    }

    /// The key of the guarded flag in `slot`, as [`Served`](crate::guard::Served)
    /// names it, and the start of its rollout in ms (0 for a guard never stamped).
    pub fn slot_guard(&self, slot: u32) -> Option<(&str, i64)> {
        let s = self.flags.slot(slot)?;
        let started = s.stored.targeting.as_ref().and_then(|t| t.guard.as_ref()?.started);
        Some((s.key.as_str(), started.map_or(0, |t| (t.unix_timestamp_nanos() / 1_000_000) as i64)))
    }

    /// All live flags, in no particular order.
    pub fn flags(&self) -> impl Iterator<Item = FlagInfo<'_>> {
        self.flags.slots.iter().flatten().map(|s| FlagInfo(s))
    }

    /// Finds a user's overrides, once per request.
    #[inline]
    pub fn user(&self, user_id: &str) -> Option<UserRef> {
        self.users.find(user_id, id_hash(user_id)).map(UserRef)
    }

    /// The context's user's overrides, with the hash the context already holds.
    #[inline]
    pub(crate) fn user_of(&self, context: &EvalContext) -> Option<UserRef> {
        let (user, hash) = context.user_id_hashed()?;
        self.users.find(user, hash).map(UserRef)
    }

    /// Evaluates `flag` for `context`, in the documented order. Never panics;
    /// falls back to the code default.
    #[inline]
    pub fn evaluate<T: FlagType>(&self, flag: &Flag<T>, context: &EvalContext) -> Detail<T> {
        let (value, reason) = self.evaluate_one(flag, context);
        Detail { value, reason: reason.get(), version: self.version }
    }

    /// [`evaluate`](Self::evaluate): what the read table's line decides (a boolean
    /// switched off, plain or of a common shape, without an override) in this one frame,
    /// handed back in registers (the value and its packed reason) rather than as a
    /// `Detail` written to memory and read back; the rest through `evaluate_rest`. A read
    /// through the request's scope inlines the plain read and calls out for the rest
    /// instead: a read on its own gains nothing from the inlining, and the second frame
    /// cost a targeted read a tenth of its instructions.
    #[inline(never)]
    fn evaluate_one<T: FlagType>(&self, flag: &Flag<T>, context: &EvalContext) -> (T, PackedReason) {
        // The user's overrides are looked up only if the flag has any. Built where a
        // callee takes it, so the line's own reads store nothing.
        let input = || Input { user: None, lookup: true, context, clock: None };
        let Some((pos, h)) = self.flags.find_perfect(flag) else {
            let (_, d) = self.evaluate_probed(flag, &input());
            return (d.value, PackedReason::new(d.reason));
        };
        // What the line decides comes back in registers; the rest through `evaluate_rest`.
        if let Some((b, reason, number)) = self.hot_decides(pos, h, &input())
            && let Some(v) = served_bool(flag, h.usage_id, b, reason, number)
        {
            return (v, PackedReason::new(reason));
        }
        let (_, d) = self.evaluate_rest(flag, pos, h, &input());
        (d.value, PackedReason::new(d.reason))
    }

    /// A flag the perfect hash does not place (added since the table was sealed) or
    /// the snapshot lacks.
    #[cold]
    #[inline(never)]
    fn evaluate_probed<T: FlagType>(&self, flag: &Flag<T>, input: &Input<'_>) -> (Option<u32>, Detail<T>) {
        match self.flags.probe_flag(flag.key_short(), flag.key(), flag.key_hash()) {
            Some((pos, h)) => self.read_found(flag, pos, h, input),
            None => (None, self.not_found(flag)),
        }
    }

    /// Evaluates a flag by key without its Rust type (admin tools, "what does
    /// this user see"): `None` if the snapshot does not hold the key. Not counted:
    /// see [`read_key`](Self::read_key).
    pub fn evaluate_key(&self, key: &str, context: &EvalContext) -> Option<(Value, Reason)> {
        self.by_key(key, context, false)
    }

    /// [`evaluate_key`](Self::evaluate_key) for a client that uses the value
    /// (OFREP, the OpenFeature provider): the read is counted in usage and metrics
    /// as a typed read is. Keys the snapshot lacks are not counted: they come from
    /// clients, and remembering them would let any client grow memory.
    pub fn read_key(&self, key: &str, context: &EvalContext) -> Option<(Value, Reason)> {
        self.by_key(key, context, true)
    }

    fn by_key(&self, key: &str, context: &EvalContext, count: bool) -> Option<(Value, Reason)> {
        let Some(s) = self.flags.find_slot(key_hash(key), key) else {
            return self.flags.pins.get(key_hash(key), key).map(|v| (v.clone(), Reason::Env));
        };
        let input = Input { user: None, lookup: true, context, clock: None };
        let (value, reason) = self.resolve_counted(s, &input, count);
        Some((value.clone(), reason))
    }

    /// Every live flag for one context, in one pass over the flags (no lookup by
    /// key): what "what does this user see", a client bootstrap or a bulk endpoint
    /// needs. Values are the stored ones, without a Rust type to check them against.
    /// Not counted: see [`read_all`](Self::read_all).
    pub fn evaluate_all<'a>(
        &'a self,
        context: &'a EvalContext,
    ) -> impl Iterator<Item = (FlagInfo<'a>, &'a Value, Reason)> + 'a {
        self.all(context, false)
    }

    /// [`evaluate_all`](Self::evaluate_all) for a client that receives the values
    /// (OFREP's bulk evaluation): each flag served is counted as read.
    pub fn read_all<'a>(
        &'a self,
        context: &'a EvalContext,
    ) -> impl Iterator<Item = (FlagInfo<'a>, &'a Value, Reason)> + 'a {
        self.all(context, true)
    }

    fn all<'a>(
        &'a self,
        context: &'a EvalContext,
        count: bool,
    ) -> impl Iterator<Item = (FlagInfo<'a>, &'a Value, Reason)> + 'a {
        let user = self.user_of(context);
        let clock = Clock::default();
        self.flags.slots.iter().flatten().map(move |s| {
            let (value, reason) =
                self.resolve_counted(s, &Input { user, lookup: false, context, clock: Some(&clock) }, count);
            (FlagInfo(s), value, reason)
        })
    }

    /// The untyped evaluation, counted as a typed read would be when `count`.
    fn resolve_counted<'a>(&'a self, s: &'a Slot, input: &Input<'_>, count: bool) -> (&'a Value, Reason) {
        let (value, reason, number) = self.resolve(s.slot, s, input);
        #[cfg(feature = "coverage")]
        if count {
            crate::coverage::record(&s.key, s.stored.value_type, value);
        }
        if count {
            crate::usage::record(
                s.usage_id,
                reason,
                crate::usage::variant(s.stored.value_type, value, number),
            );
        }
        (value, reason)
    }

    /// [`evaluate_all`](Self::evaluate_all) with a request's own clock and user.
    pub(crate) fn evaluate_all_with<'a>(
        &'a self,
        input: Input<'a>,
    ) -> impl Iterator<Item = (FlagInfo<'a>, &'a Value, Reason)> + 'a {
        self.flags.slots.iter().flatten().map(move |s| {
            let (value, reason, _) = self.resolve(s.slot, s, &input);
            (FlagInfo(s), value, reason)
        })
    }

    /// The evaluation order, without the Rust type: the value and why.
    /// The user's override of `slot`, if any.
    #[inline(always)]
    fn overridden<'a>(&'a self, slot: u32, input: &Input<'_>) -> Option<&'a Value> {
        let user = if input.lookup {
            if self.users.per_slot.get(slot as usize).is_none_or(|n| *n == 0) {
                return None;
            }
            self.user_of(input.context)?
        } else {
            input.user?
        };
        self.users.entry(user)?.get(slot)
    }

    #[inline]
    fn resolve<'a>(&'a self, slot: u32, s: &'a Slot, input: &Input<'_>) -> (&'a Value, Reason, usize) {
        if s.plain {
            // No targeting and no expiry: the common case, kept short and inline.
            return self.resolve_plain(slot, s, input);
        }
        // By reference: a copy made by value was read back in wider loads than it
        // was written with, which stalls store-to-load forwarding on every read.
        if s.timeless { self.resolve_timeless(slot, s, input) } else { self.resolve_targeted(slot, s, input) }
    }

    /// Records a guarded flag's split decision for the request's layer.
    #[inline]
    fn served(&self, s: &Slot, input: &Input<'_>, variation: usize) {
        if s.guarded
            && let Some(served) = input.clock.and_then(|c| c.served.as_deref())
        {
            served.record(s.slot, variation as u32);
        }
    }

    /// Rules and splits, for a flag whose targeting reads no clock.
    #[inline(never)]
    fn resolve_timeless<'a>(
        &'a self,
        slot: u32,
        s: &'a Slot,
        input: &Input<'_>,
    ) -> (&'a Value, Reason, usize) {
        self.resolve_timeless_inline(slot, s, input)
    }

    /// The same, for a caller that is itself out of line (`evaluate_targeted`).
    #[inline(always)]
    fn resolve_timeless_inline<'a>(
        &'a self,
        slot: u32,
        s: &'a Slot,
        input: &Input<'_>,
    ) -> (&'a Value, Reason, usize) {
        let Some(c) = s.compiled.as_ref() else { return self.resolve_plain(slot, s, input) };
        self.decided(slot, s, c, input, None, s.enabled)
    }

    /// The switch (as the schedule sets it), the user's override, then rules, split
    /// and schedule: what both targeted paths end with.
    #[inline(always)]
    fn decided<'a>(
        &'a self,
        slot: u32,
        s: &'a Slot,
        c: &'a Compiled,
        input: &Input<'_>,
        step: Option<usize>,
        enabled: bool,
    ) -> (&'a Value, Reason, usize) {
        if !enabled {
            return (&s.off_value, Reason::Disabled, 0);
        }
        if let Some(v) = self.overridden(slot, input) {
            return (v, Reason::Override, 0);
        }
        match c.decide(input.context, step, &self.segments) {
            Outcome::Rule(i, v) => (v, Reason::Rule(i), i),
            Outcome::Split(j, v) => {
                self.served(s, input, j);
                (v, Reason::Split, j)
            }
            Outcome::Scheduled(i, v) => (v, Reason::Scheduled(i), i),
            Outcome::Fallthrough => (&s.value, Reason::Global, 0),
        }
    }

    /// The switch, the user's override, the value: a flag without targeting.
    #[inline(always)]
    fn resolve_plain<'a>(&'a self, slot: u32, s: &'a Slot, input: &Input<'_>) -> (&'a Value, Reason, usize) {
        if !s.enabled {
            (&s.off_value, Reason::Disabled, 0)
        } else if let Some(v) = self.overridden(slot, input) {
            (v, Reason::Override, 0)
        } else {
            (&s.value, Reason::Global, 0)
        }
    }

    /// Expiry, pins, schedules, rules and splits: out of line, so the common case
    /// above stays small wherever it is inlined.
    #[inline(never)]
    fn resolve_targeted<'a>(
        &'a self,
        slot: u32,
        s: &'a Slot,
        input: &Input<'_>,
    ) -> (&'a Value, Reason, usize) {
        // One clock for the whole evaluation, read only if needed.
        let own = Clock::default();
        let input = &Input { clock: input.clock.or(Some(&own)), ..*input };
        if s.expiring
            && let Some(at) = s.expires_at
            && input.now() >= at
        {
            return (&s.off_value, Reason::Expired, 0);
        }
        let Some(c) = s.compiled.as_ref() else { return self.resolve_plain(slot, s, input) };
        // A pinned flag's slot has a compiled pin and no expiry: the fast path above stays as it was.
        if s.pinned
            && let Some(v) = c.pin()
        {
            return (v, Reason::Env, 0);
        }
        let step = if c.needs_time() { c.step(Some(input.now())) } else { None };
        self.decided(slot, s, c, input, step, c.enabled_at(step).unwrap_or(s.enabled))
    }

    #[inline]
    pub(crate) fn evaluate_slot<T: FlagType>(
        &self,
        flag: &Flag<T>,
        input: &Input<'_>,
    ) -> (Option<u32>, Detail<T>) {
        let Some((pos, h)) = self.flags.find_flag(flag) else {
            return (None, self.not_found(flag));
        };
        self.read_found(flag, pos, h, input)
    }

    /// A found flag's read: a plain one inline (its tag is one byte compare), the rest
    /// out of line.
    #[inline(always)]
    fn read_found<T: FlagType>(
        &self,
        flag: &Flag<T>,
        pos: u32,
        h: &Hot,
        input: &Input<'_>,
    ) -> (Option<u32>, Detail<T>) {
        if let HotRead::Plain = h.read {
            return self.read_plain(flag, pos, h, input);
        }
        self.evaluate_rest(flag, pos, h, input)
    }

    /// A `Plain` read: switched off, overridden, or the global value.
    #[inline(always)]
    fn read_plain<T: FlagType>(
        &self,
        flag: &Flag<T>,
        pos: u32,
        h: &Hot,
        input: &Input<'_>,
    ) -> (Option<u32>, Detail<T>) {
        if !h.enabled {
            self.hot_bool(flag, pos, h.usage_id, h.off, Reason::Disabled, 0)
        } else if let Some(v) = self.overridden(pos, input) {
            self.hot_typed(flag, pos, h.usage_id, v, Reason::Override)
        } else {
            self.hot_bool(flag, pos, h.usage_id, h.value, Reason::Global, 0)
        }
    }

    /// Every read but a plain one through the request's scope and what a read on its
    /// own decides from the line (an override's value, other types, what the flag's
    /// bounds refuse, targeting the slot decides), out of line: where reads are inlined
    /// (a handler, `Current::get`) they hold no more in registers than the commonest needs.
    #[inline(never)]
    fn evaluate_rest<T: FlagType>(
        &self,
        flag: &Flag<T>,
        pos: u32,
        h: &Hot,
        input: &Input<'_>,
    ) -> (Option<u32>, Detail<T>) {
        match &h.read {
            HotRead::Split { .. }
            | HotRead::Attr { .. }
            | HotRead::SmallList { .. }
            | HotRead::List { .. } => self.evaluate_shape(flag, pos, h, input),
            HotRead::Slot(s) if s.plain => self.evaluate_plain(flag, s, input),
            HotRead::Slot(s) => self.evaluate_targeted(flag, s, input),
            // Read inline by `evaluate_slot`; `evaluate_one` sends one here when it is
            // overridden, or the type or the flag's bounds refuse the value it decided.
            HotRead::Plain => self.read_plain(flag, pos, h, input),
            HotRead::Vacant => (None, self.not_found(flag)),
        }
    }

    /// A boolean flag whose targeting has a common shape, read from its `Hot` and
    /// the set the shape shares; what the shape cannot decide goes to the slot.
    #[inline(always)]
    fn evaluate_shape<T: FlagType>(
        &self,
        flag: &Flag<T>,
        pos: u32,
        h: &Hot,
        input: &Input<'_>,
    ) -> (Option<u32>, Detail<T>) {
        let (b, reason, number) = if !h.enabled {
            (h.off, Reason::Disabled, 0)
        } else if let Some(v) = self.overridden(pos, input) {
            return self.hot_typed(flag, pos, h.usage_id, v, Reason::Override);
        } else {
            match shape_decides(h, input.context) {
                Some(fast) => fast.served(h.value),
                None => match self.flags.slot(pos) {
                    Some(s) => return self.evaluate_targeted(flag, s, input),
                    None => return (None, self.not_found(flag)),
                },
            }
        };
        self.hot_bool(flag, pos, h.usage_id, b, reason, number)
    }

    /// The boolean a `Hot` serves for `input`, with its reason and split variation, in
    /// the evaluation order (switched off, an override, the plain value or the shape's
    /// answer); `None` for an override, a removed flag or what the slot decides.
    #[inline(always)]
    fn hot_decides(&self, pos: u32, h: &Hot, input: &Input<'_>) -> Option<(bool, Reason, usize)> {
        if matches!(h.read, HotRead::Slot(_) | HotRead::Vacant) {
            return None;
        }
        if !h.enabled {
            return Some((h.off, Reason::Disabled, 0));
        }
        if self.overridden(pos, input).is_some() {
            return None;
        }
        let fast = match &h.read {
            HotRead::Plain => Fast::Fallthrough,
            _ => shape_decides(h, input.context)?,
        };
        Some(fast.served(h.value))
    }

    /// [`typed`](Self::typed) for a boolean its `Hot` decided.
    #[inline(always)]
    fn hot_bool<T: FlagType>(
        &self,
        flag: &Flag<T>,
        pos: u32,
        usage_id: u32,
        b: bool,
        reason: Reason,
        number: usize,
    ) -> (Option<u32>, Detail<T>) {
        if let Some(v) = served_bool(flag, usage_id, b, reason, number) {
            return (Some(pos), Detail { value: v, reason, version: self.version });
        }
        self.hot_default(flag, pos, &BOOLS[usize::from(b)], reason)
    }

    /// An override its `Hot` found: as [`typed`](Self::typed).
    #[inline(never)]
    fn hot_typed<T: FlagType>(
        &self,
        flag: &Flag<T>,
        pos: u32,
        usage_id: u32,
        value: &Value,
        reason: Reason,
    ) -> (Option<u32>, Detail<T>) {
        if let Some(v) = T::from_value(value).filter(|v| flag.accepts(v)) {
            #[cfg(feature = "coverage")]
            crate::coverage::record(flag.key(), T::TYPE, value);
            crate::usage::record(usage_id, reason, crate::usage::variant(T::TYPE, value, 0));
            return (Some(pos), Detail { value: v, reason, version: self.version });
        }
        self.hot_default(flag, pos, value, reason)
    }

    #[cold]
    fn hot_default<T: FlagType>(
        &self,
        flag: &Flag<T>,
        pos: u32,
        value: &Value,
        reason: Reason,
    ) -> (Option<u32>, Detail<T>) {
        match self.flags.slot(pos) {
            Some(s) => self.served_default(flag, s, value, reason),
            None => (None, self.not_found(flag)),
        }
    }

    /// A flag without targeting of another type than boolean, or a boolean that
    /// has another type's values.
    #[inline(never)]
    fn evaluate_plain<T: FlagType>(
        &self,
        flag: &Flag<T>,
        s: &Slot,
        input: &Input<'_>,
    ) -> (Option<u32>, Detail<T>) {
        let (value, reason, number) = self.resolve_plain(s.slot, s, input);
        self.typed(flag, s, value, reason, number)
    }

    /// A targeted read, whole, in one frame: the common plain read above calls
    /// nothing, and the targeting's outcome is not handed back through memory.
    #[inline(never)]
    fn evaluate_targeted<T: FlagType>(
        &self,
        flag: &Flag<T>,
        s: &Slot,
        input: &Input<'_>,
    ) -> (Option<u32>, Detail<T>) {
        let (value, reason, number) = if s.timeless {
            self.resolve_timeless_inline(s.slot, s, input)
        } else {
            self.resolve_targeted(s.slot, s, input)
        };
        self.typed(flag, s, value, reason, number)
    }

    /// The served value as `T`, counted; the code default if it does not fit.
    #[inline(always)]
    fn typed<T: FlagType>(
        &self,
        flag: &Flag<T>,
        s: &Slot,
        value: &Value,
        reason: Reason,
        number: usize,
    ) -> (Option<u32>, Detail<T>) {
        if reason != Reason::Expired
            && let Some(v) = T::from_value(value).filter(|v| flag.accepts(v))
        {
            #[cfg(feature = "coverage")]
            crate::coverage::record(flag.key(), T::TYPE, value);
            crate::usage::record(s.usage_id, reason, crate::usage::variant(T::TYPE, value, number));
            return (Some(s.slot), Detail { value: v, reason, version: self.version });
        }
        self.served_default(flag, s, value, reason)
    }

    /// A key the snapshot lacks: pinned (the store is unreachable, say), or the code default.
    #[cold]
    fn not_found<T: FlagType>(&self, flag: &Flag<T>) -> Detail<T> {
        let version = self.version;
        if let Some(v) = self.flags.pins.get(flag.key_hash(), flag.key()).and_then(T::from_value) {
            return Detail { value: v, reason: Reason::Env, version };
        }
        self.flags.usage.unknown(flag.key());
        #[cfg(feature = "coverage")]
        crate::coverage::record(flag.key(), T::TYPE, &flag.default_as_value());
        Detail { value: flag.default_value(), reason: Reason::Default, version }
    }

    /// Expired, or the stored value does not fit the declaration: the code default.
    #[cold]
    fn served_default<T: FlagType>(
        &self,
        flag: &Flag<T>,
        s: &Slot,
        stored: &Value,
        reason: Reason,
    ) -> (Option<u32>, Detail<T>) {
        let reason = if reason == Reason::Expired {
            s.warn_expired(flag.key());
            reason
        } else {
            s.warn_invalid(flag.key(), stored, T::TYPE);
            Reason::Invalid
        };
        let default = flag.default_value();
        #[cfg(feature = "coverage")]
        crate::coverage::record(flag.key(), T::TYPE, &flag.default_as_value());
        let served =
            if T::TYPE == crate::ValueType::Bool { flag.default_as_value() } else { Value::Bool(false) };
        crate::usage::record(s.usage_id, reason, crate::usage::variant(T::TYPE, &served, 0));
        (Some(s.slot), Detail { value: default, reason, version: self.version })
    }

    /// Whether any of `slots` has targeting (its value depends on who asks).
    pub(crate) fn any_targeted(&self, slots: &[u32]) -> bool {
        slots.iter().any(|s| self.flags.slot(*s).is_some_and(|s| s.targeting().is_some()))
    }

    /// Whether `user` overrides any of `slots` (sorted).
    pub(crate) fn user_touches(&self, user: UserRef, slots: &[u32]) -> bool {
        self.users.entry(user).is_some_and(|e| e.touches(slots))
    }

    /// The config built for users without overrides, shared by every request on
    /// this snapshot, as of the real clock; with what it read and where it holds.
    /// `None` if another config type holds the cache.
    pub(crate) fn shared_config<C: Any + Send + Sync>(
        &self,
        build: impl FnOnce(&Clock) -> (C, Vec<u32>),
    ) -> Option<&SharedConfig> {
        let shared = self.shared_config.get_or_init(|| {
            // Its own clock: an evaluator moved in time must not fill the cache.
            let clock = Clock::default();
            let (value, mut touched) = build(&clock);
            touched.sort_unstable();
            touched.dedup();
            let targeted = self.any_targeted(&touched);
            let built_at = clock.now.get().copied();
            let (valid_from, valid_until) = self.expiry_window(&touched, built_at);
            SharedConfig {
                type_id: TypeId::of::<C>(),
                value: Arc::new(value),
                touched: touched.into(),
                targeted,
                valid_from,
                valid_until,
                built_at,
            }
        });
        (shared.type_id == TypeId::of::<C>()).then_some(shared)
    }

    /// The expiries among `slots` closest before and after `at` (when a config was built).
    fn expiry_window(
        &self,
        slots: &[u32],
        at: Option<OffsetDateTime>,
    ) -> (Option<OffsetDateTime>, Option<OffsetDateTime>) {
        let expiries = slots.iter().filter_map(|s| self.flags.slot(*s)?.expires_at);
        let Some(at) = at else { return (None, None) };
        expiries.fold((None, None), |(from, until), t| {
            if t <= at {
                (from.max(Some(t)), until)
            } else {
                (from, Some(until.map_or(t, |u: OffsetDateTime| u.min(t))))
            }
        })
    }

    /// Whether `user` overrides any of the shared config's flags.
    pub(crate) fn user_touches_shared(&self, user: UserRef, shared: &SharedConfig) -> bool {
        self.user_touches(user, &shared.touched)
    }
}

/// Compiles a stored segment for a snapshot; an invalid one is skipped with a warning.
fn compile_segment(record: &SegmentRecord) -> Option<(String, Arc<CompiledSegment>)> {
    match CompiledSegment::new(&record.definition) {
        Ok(mut seg) => {
            seg.keep(record.clone());
            Some((record.key.clone(), Arc::new(seg)))
        }
        Err(e) => {
            tracing::warn!(segment = %record.key, error = %e, "ff: ignoring a segment that does not compile");
            None
        }
    }
}

/// A flag of a snapshot as reads and listings see it: everything but the contents
/// of its targeting, whose id lists only the compiled form holds. [`record`](Self::record)
/// gives the record whole.
#[derive(Clone, Copy)]
pub struct FlagInfo<'a>(&'a Slot);

impl fmt::Debug for FlagInfo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagInfo").field("key", &self.key()).field("version", &self.version()).finish()
    }
}

impl<'a> FlagInfo<'a> {
    /// The key.
    pub fn key(&self) -> &'a str {
        &self.0.key
    }

    /// The stored type.
    pub fn value_type(&self) -> crate::ValueType {
        self.0.stored.value_type
    }

    /// The stored value (served when on and nothing more specific applies).
    pub fn value(&self) -> &'a Value {
        &self.0.value
    }

    /// Whether the flag is switched on.
    pub fn enabled(&self) -> bool {
        self.0.enabled
    }

    /// The flag's version (changes made to it).
    pub fn version(&self) -> u64 {
        self.0.stored.version
    }

    /// Kind, owner, expiry and the rest.
    pub fn meta(&self) -> &'a crate::model::FlagMeta {
        self.0.stored.meta.as_deref().unwrap_or(&NO_META)
    }

    /// Whether it has targeting (rules, a split or a schedule).
    pub fn is_targeted(&self) -> bool {
        let s = self.0;
        s.stored.targeting.as_deref().is_some_and(|t| !t.is_empty()) || s.targeting().is_some()
    }

    /// The stored record, whole.
    pub fn record(&self) -> FlagRecord {
        self.0.whole()
    }
}

impl Slot {
    /// The compiled targeting, unless the slot holds a pin instead.
    fn targeting(&self) -> Option<&Compiled> {
        self.compiled.as_ref().filter(|_| !self.pinned)
    }

    /// The record with its id lists put back.
    fn whole(&self) -> FlagRecord {
        let s = &self.stored;
        let compiled = self.targeting();
        let targeting = match (s.targeting.as_deref(), compiled) {
            // Checked when the slot was made: this is the targeting as given.
            (None, Some(c)) => c.targeting().unwrap_or_default(),
            (kept, c) => {
                let mut t = kept.cloned().unwrap_or_default();
                if let Some(c) = c {
                    c.restore(&mut t);
                }
                t
            }
        };
        FlagRecord {
            value: self.value.clone(),
            off_value: self.off_value.clone(),
            enabled: self.enabled,
            value_type: s.value_type,
            archived: s.archived,
            key: self.key.to_string(),
            description: s.description.to_string(),
            schema: s.schema.as_deref().cloned().unwrap_or_default(),
            meta: s.meta.as_deref().cloned().unwrap_or_default(),
            targeting,
            version: s.version,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }

    /// Once per flag version and process: an expired flag that serves its default
    /// changes behaviour, so it says so loudly.
    #[cold]
    fn warn_expired(&self, key: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                flag = key,
                expires_at = ?self.expires_at,
                "ff: flag is past its expiry with policy serve_default: serving the code default to everyone"
            );
        }
    }

    #[cold]
    fn warn_invalid(&self, key: &str, value: &Value, declared: crate::ValueType) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                flag = key,
                stored = %value,
                declared = %declared,
                "ff: stored value does not fit the flag's declaration; serving the code default"
            );
        }
    }
}

/// [`Snapshot::from_json`]: a `StoreState` document read field by field, its flags
/// put into the table as each is parsed.
mod load {
    use std::fmt;

    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

    use super::{FlagTable, Snapshot};
    use crate::model::{FlagRecord, OverrideRecord};
    use crate::targeting::SegmentRecord;

    pub(super) struct StateSeed(pub(super) FlagTable);

    impl<'de> DeserializeSeed<'de> for StateSeed {
        type Value = Snapshot;

        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Snapshot, D::Error> {
            // As the derived `Deserialize` of `StoreState`: an object, or its fields in order.
            d.deserialize_struct("StoreState", &["seq", "flags", "overrides", "segments"], self)
        }
    }

    impl<'de> Visitor<'de> for StateSeed {
        type Value = Snapshot;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a store state (seq, flags, overrides, segments)")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Snapshot, A::Error> {
            let mut flags = self.0;
            let missing = |i, what| de::Error::invalid_length(i, &what);
            let number = seq.next_element()?.ok_or_else(|| missing(0, "a store state of 3 or 4 fields"))?;
            seq.next_element_seed(Records(&mut flags))?
                .ok_or_else(|| missing(1, "a store state of 3 or 4 fields"))?;
            let overrides: Vec<_> =
                seq.next_element()?.ok_or_else(|| missing(2, "a store state of 3 or 4 fields"))?;
            let segments: Vec<_> = seq.next_element()?.unwrap_or_default();
            Ok(done(number, flags, &overrides, &segments))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Snapshot, A::Error> {
            let mut flags = self.0;
            let (mut seq, mut overrides, mut segments, mut read) = (None, None, None, false);
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                match &*key {
                    "seq" if seq.is_none() => seq = Some(map.next_value()?),
                    "flags" if !read => {
                        map.next_value_seed(Records(&mut flags))?;
                        read = true;
                    }
                    "overrides" if overrides.is_none() => overrides = Some(map.next_value::<Vec<_>>()?),
                    "segments" if segments.is_none() => segments = Some(map.next_value::<Vec<_>>()?),
                    "seq" | "flags" | "overrides" | "segments" => {
                        return Err(de::Error::custom(format!("duplicate field `{key}`")));
                    }
                    _ => drop(map.next_value::<IgnoredAny>()?),
                }
            }
            let seq = seq.ok_or_else(|| de::Error::missing_field("seq"))?;
            if !read {
                return Err(de::Error::missing_field("flags"));
            }
            let overrides = overrides.ok_or_else(|| de::Error::missing_field("overrides"))?;
            Ok(done(seq, flags, &overrides, &segments.unwrap_or_default()))
        }
    }

    fn done(
        seq: u64,
        mut flags: FlagTable,
        overrides: &[OverrideRecord],
        segments: &[SegmentRecord],
    ) -> Snapshot {
        // Grown by doubling while read: given back what it did not fill.
        flags.shrink_to_fit();
        Snapshot::finish(seq, flags, overrides, segments)
    }

    /// The `flags` array, each record compiled into the table as soon as it is read.
    struct Records<'a>(&'a mut FlagTable);

    impl<'de> DeserializeSeed<'de> for Records<'_> {
        type Value = ();

        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for Records<'_> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of flag records")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(record) = seq.next_element::<FlagRecord>()? {
                if !record.archived {
                    self.0.put(record);
                }
            }
            Ok(())
        }
    }
}

impl FlagTable {
    fn shrink_to_fit(&mut self) {
        self.index.shrink_to_fit();
        self.hot.shrink_to_fit();
        self.slots.shrink_to_fit();
    }

    fn slot(&self, slot: u32) -> Option<&Arc<Slot>> {
        self.slots.get(slot as usize)?.as_ref()
    }

    fn reserve(&mut self, n: usize) {
        self.index.reserve(n);
        self.hot.reserve(n);
        self.slots.reserve(n);
        self.usage.reserve(n);
    }

    #[inline]
    fn find_slot(&self, hash: u64, key: &str) -> Option<&Slot> {
        let pos = self.index.find(hash, |p| self.slot(p).is_some_and(|s| str_eq(&s.key, key)))?;
        self.slot(pos).map(|s| &**s)
    }

    /// A declared flag's number and `Hot`: a key of at most 15 bytes is compared as
    /// two words, in the `Hot`. The index's perfect hash first (inline, no loop),
    /// its probe out of line.
    #[inline]
    fn find_flag<T: FlagType>(&self, flag: &Flag<T>) -> Option<(u32, &Hot)> {
        self.find_perfect(flag).or_else(|| self.probe_flag(flag.key_short(), flag.key(), flag.key_hash()))
    }

    /// [`find_flag`](Self::find_flag) through the perfect hash alone.
    #[inline(always)]
    fn find_perfect<T: FlagType>(&self, flag: &Flag<T>) -> Option<(u32, &Hot)> {
        let short = flag.key_short();
        let p = self.index.perfect(flag.key_hash())?;
        let h = self.hot.get(p as usize)?;
        (h.key_short.same(short) && (short.is_some() || self.long_key_is(p, flag.key()))).then_some((p, h))
    }

    #[inline(never)]
    fn probe_flag(&self, short: crate::ids::Short, key: &str, hash: u64) -> Option<(u32, &Hot)> {
        self.index.find_map(hash, |p| {
            let h = self.hot.get(p as usize).filter(|h| h.key_short.same(short))?;
            (short.is_some() || self.long_key_is(p, key)).then_some((p, h))
        })
    }

    /// Whether slot `p` has the key, for a key longer than 15 bytes: out of line,
    /// so a short key's lookup keeps no more in registers than it needs.
    #[inline(never)]
    fn long_key_is(&self, p: u32, key: &str) -> bool {
        self.slot(p).is_some_and(|s| str_eq(&s.key, key))
    }

    fn find(&self, key: &str) -> Option<u32> {
        self.find_slot(key_hash(key), key).map(|s| s.slot)
    }

    fn put(&mut self, record: FlagRecord) {
        let hash = key_hash(&record.key);
        let compiled = if let Some(pin) = self.pins.get(hash, &record.key) {
            Some(Compiled::pinned(pin.clone()))
        } else {
            match Compiled::new(&record.key, record.value_type, &record.schema, &record.targeting) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(flag = %record.key, error = %e, "ff: ignoring targeting that does not compile");
                    None
                }
            }
        };
        let found = self.index.find(hash, |p| self.slot(p).is_some_and(|s| s.key == record.key));
        let slot = found.unwrap_or(self.slots.len() as u32);
        let usage = self.usage.flag(&record.key, hash, record.value_type);
        let new = Arc::new(Slot::new(slot, hash, record, compiled, usage));
        self.guarded += u32::from(new.guarded);
        let hot = Hot::new(&new);
        if found.is_some()
            && let (Some(h), Some(s)) = (self.hot.get_mut(slot as usize), self.slots.get_mut(slot as usize))
        {
            // The key keeps its number: the index stays as it is.
            *h = hot;
            if let Some(old) = s.replace(new) {
                self.guarded -= u32::from(old.guarded);
            }
        } else {
            self.index.insert_unique(hash, slot);
            self.hot.push(hot);
            self.slots.push(Some(new));
        }
    }

    fn remove(&mut self, key: &str) -> Option<u32> {
        let slots = &self.slots;
        let slot = self.index.remove(key_hash(key), |p| {
            slots.get(p as usize).and_then(Option::as_ref).is_some_and(|s| s.key == key)
        })?;
        let removed = self.slots.get_mut(slot as usize)?.take()?;
        self.guarded -= u32::from(removed.guarded);
        if let Some(h) = self.hot.get_mut(slot as usize) {
            *h = Hot::vacant();
        }
        Some(slot)
    }

    fn typed_override(&self, o: &OverrideRecord) -> Option<(u32, Value)> {
        let slot = self.find(&o.key)?;
        let flag = &self.slot(slot)?.stored;
        match Value::from_json(flag.value_type, &o.value) {
            Ok(v) => Some((slot, v)),
            Err(e) => {
                tracing::warn!(flag = %o.key, user = %o.user_id, error = %e, "ff: ignoring an override that does not fit its flag");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guard is part of the targeting: kept with the record, refused without a
    /// split to watch or with settings that make no test, and it marks the snapshot.
    #[test]
    fn guards_are_checked_kept_and_found() {
        use crate::{Schema, Targeting, ValueType};
        let targeting = |t: serde_json::Value| serde_json::from_value::<Targeting>(t).unwrap();
        let split = serde_json::json!({"variations": [{"value": true, "weight": 1000}, {"value": false, "weight": 9000}]});
        let guarded = targeting(serde_json::json!({"split": split, "guard": {"max_latency_increase": 20}}));
        let check =
            |t: &Targeting| t.validate("F", ValueType::Bool, &Schema::default()).map_err(|e| e.to_string());
        check(&guarded).unwrap();
        let ramp = targeting(
            serde_json::json!({"schedule": [{"at": "2026-01-01T00:00:00Z", "split": split}], "guard": {}}),
        );
        check(&ramp).unwrap();
        for (t, error) in [
            (serde_json::json!({"guard": {}}), "a guard watches a percentage rollout"),
            (
                serde_json::json!({"rules": [{"clauses": [{"attribute": "plan", "op": "eq", "values": ["pro"]}], "value": true}], "guard": {}}),
                "a guard watches a percentage rollout",
            ),
            (
                serde_json::json!({"split": split, "guard": {"alpha": 0.9}}),
                "targeting guard: alpha must be above 0 and at most 0.5",
            ),
            (
                serde_json::json!({"split": split, "schedule": [{"at": "2026-01-01T00:00:00Z", "enabled": false}], "guard": {}}),
                "schedule step 0: a guarded ramp's steps set a split only",
            ),
        ] {
            assert!(check(&targeting(t)).unwrap_err().contains(error), "{error}");
        }
        let record = FlagRecord { targeting: guarded.clone(), ..FlagRecord::new("F", Value::Bool(false)) };
        let snapshot =
            Snapshot::from_state(&StoreState { seq: 1, flags: vec![record], ..Default::default() });
        assert!(snapshot.has_guards());
        assert_eq!(snapshot.flag("F").unwrap().targeting, guarded, "given back as written");
        assert_eq!(snapshot.to_state().flags[0].targeting, guarded);
        let plain = Snapshot::from_state(&StoreState {
            seq: 1,
            flags: vec![FlagRecord::new("F", Value::Bool(false))],
            ..Default::default()
        });
        assert!(!plain.has_guards());
        // A guarded ramp's step is not served by time: the guardian applies it.
        let all_on = serde_json::json!({"variations": [{"value": true, "weight": 10000}]});
        let ramp = targeting(
            serde_json::json!({"schedule": [{"at": "2020-01-01T00:00:00Z", "split": all_on}], "guard": {}}),
        );
        let record = FlagRecord { targeting: ramp.clone(), ..FlagRecord::new("F", Value::Bool(false)) };
        let snapshot =
            Snapshot::from_state(&StoreState { seq: 1, flags: vec![record], ..Default::default() });
        let ctx = crate::EvalContext::user("u1");
        assert!(!snapshot.evaluate(&crate::Flag::<bool>::new("F", false), &ctx).value);
        assert_eq!(snapshot.guarded_keys(), vec!["F"]);
        assert_eq!(snapshot.flag("F").unwrap().targeting, ramp, "the steps are kept");
    }

    /// A UUID-shaped id, distinct for each `n`.
    fn uuid(n: u64) -> String {
        let h = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        format!("{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}", h >> 32, h & 0xffff, n & 0xfff, (h >> 20) & 0xfff, n)
    }

    /// Every read a flag's `Hot` decides serves what the general evaluation (the
    /// untyped read, which goes through the slot) serves, for the reason it gives,
    /// counted the same; and the shapes it decides are the ones meant to be.
    #[test]
    fn hot_reads_agree_with_the_general_evaluation() {
        use serde_json::json;
        let split = |w: &[(serde_json::Value, u32)]| {
            let v: Vec<_> = w.iter().map(|(v, w)| json!({"value": v, "weight": w})).collect();
            json!({"variations": v})
        };
        let rule = |attribute: &str, op: &str, values: serde_json::Value, negate: bool| json!({"rules": [{"clauses": [{"attribute": attribute, "op": op, "values": values, "negate": negate}], "value": true}]});
        let list: Vec<String> = (0..40).map(uuid).collect();
        let mixed_list = json!([list[0], list[1], "not-a-uuid"]);
        let long_list: Vec<String> = (0..600).map(uuid).collect();
        let mut flags: Vec<(&str, bool, Value, serde_json::Value, &str)> = vec![
            ("plain_on", true, Value::Bool(true), json!({}), "plain"),
            ("plain_off", false, Value::Bool(true), json!({}), "plain"),
            ("plain_int", true, Value::Int(4), json!({}), "slot"),
            ("split_1", true, Value::Bool(false), json!({"split": split(&[(json!(true), 10_000)])}), "shape"),
            (
                "split_2",
                true,
                Value::Bool(false),
                json!({"split": split(&[(json!(true), 3_000), (json!(false), 7_000)])}),
                "shape",
            ),
            (
                "split_off",
                false,
                Value::Bool(false),
                json!({"split": split(&[(json!(true), 10_000)])}),
                "shape",
            ),
            (
                "split_4",
                true,
                Value::Bool(false),
                json!({"split": split(&[(json!(true), 2_500), (json!(false), 2_500), (json!(true), 2_500), (json!(false), 2_500)])}),
                "shape",
            ),
            (
                "split_5",
                true,
                Value::Bool(false),
                json!({"split": split(&[(json!(true), 2_000), (json!(false), 2_000), (json!(true), 2_000), (json!(false), 2_000), (json!(true), 2_000)])}),
                "slot",
            ),
            (
                "split_salted",
                true,
                Value::Bool(false),
                json!({"split": split(&[(json!(true), 5_000), (json!(false), 5_000)]), "salt": "s"}),
                "shape",
            ),
            (
                "split_by_plan",
                true,
                Value::Bool(false),
                json!({"split": split(&[(json!(true), 5_000), (json!(false), 5_000)]), "bucket_by": "plan"}),
                "slot",
            ),
            (
                "guarded",
                true,
                Value::Bool(false),
                json!({"split": split(&[(json!(true), 5_000), (json!(false), 5_000)]), "guard": {}}),
                "slot",
            ),
            (
                "plan_in",
                true,
                Value::Bool(false),
                rule("plan", "in", json!(["pro", "enterprise"]), false),
                "shape",
            ),
            (
                "plan_in_off",
                false,
                Value::Bool(false),
                rule("plan", "in", json!(["pro", "enterprise"]), false),
                "shape",
            ),
            (
                "plan_not_in",
                true,
                Value::Bool(false),
                rule("plan", "not_in", json!(["pro", "enterprise"]), false),
                "shape",
            ),
            ("plan_eq_negated", true, Value::Bool(false), rule("plan", "eq", json!(["pro"]), true), "shape"),
            ("plan_neq", true, Value::Bool(false), rule("plan", "neq", json!(["pro"]), false), "shape"),
            (
                "plan_long_values",
                true,
                Value::Bool(false),
                rule("plan", "in", json!(["a-plan-name-of-many-bytes"]), false),
                "slot",
            ),
            (
                "long_attribute",
                true,
                Value::Bool(false),
                rule("an_attribute_name_of_many_bytes", "in", json!(["pro"]), false),
                "slot",
            ),
            (
                "plan_starts",
                true,
                Value::Bool(false),
                rule("plan", "starts_with", json!(["p"]), false),
                "slot",
            ),
            ("on_list", true, Value::Bool(false), rule("user_id", "in", json!(list), false), "small_list"),
            (
                "off_list",
                true,
                Value::Bool(false),
                rule("user_id", "not_in", json!(list), false),
                "small_list",
            ),
            (
                "list_negated",
                true,
                Value::Bool(false),
                rule("user_id", "in", json!(list), true),
                "small_list",
            ),
            ("mixed_list", true, Value::Bool(false), rule("user_id", "in", mixed_list, false), "list"),
            ("long_list", true, Value::Bool(false), rule("user_id", "in", json!(long_list), false), "list"),
            (
                "two_rules",
                true,
                Value::Bool(false),
                json!({"rules": [
                {"clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}], "value": true},
                {"clauses": [{"attribute": "plan", "op": "in", "values": ["free"]}], "value": false}]}),
                "slot",
            ),
            (
                "rule_and_split",
                true,
                Value::Bool(false),
                json!({"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}], "value": true}],
                "split": split(&[(json!(true), 5_000), (json!(false), 5_000)])}),
                "slot",
            ),
            (
                "rule_serves_split",
                true,
                Value::Bool(false),
                json!({"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}],
                "split": split(&[(json!(true), 5_000), (json!(false), 5_000)])}]}),
                "slot",
            ),
            (
                "scheduled",
                true,
                Value::Bool(false),
                json!({"schedule": [{"at": "2020-01-01T00:00:00Z", "value": true}]}),
                "slot",
            ),
        ];
        let mut expiring = FlagRecord::new("expiring", Value::Bool(true));
        expiring.meta.expiry = crate::model::ExpiryPolicy::ServeDefault;
        expiring.meta.expires_at = Some(OffsetDateTime::now_utc() + time::Duration::days(1));
        let mut records: Vec<FlagRecord> = flags
            .iter()
            .map(|(key, enabled, value, targeting, _)| {
                let mut r = FlagRecord::new(*key, value.clone());
                r.enabled = *enabled;
                r.off_value = if let Value::Int(_) = value { Value::Int(-1) } else { Value::Bool(false) };
                r.targeting = serde_json::from_value(targeting.clone()).unwrap();
                r
            })
            .collect();
        records.push(expiring);
        flags.push(("expiring", true, Value::Bool(true), json!({}), "slot"));
        // An override for one user on every boolean flag: served before any shape.
        let overrides = records
            .iter()
            .filter(|r| r.value_type == crate::ValueType::Bool)
            .map(|r| OverrideRecord { key: r.key.clone(), user_id: list[1].clone(), value: json!(true) })
            .collect();
        let state = StoreState { seq: 1, flags: records, overrides, segments: Vec::new() };
        let (typed_usage, untyped_usage) = (Arc::new(Usage::default()), Arc::new(Usage::default()));
        let typed = Snapshot::from_state_counted(&state, typed_usage.clone());
        let untyped = Snapshot::from_state_counted(&state, untyped_usage.clone());
        // Read alone and through the request's path, with bounds a value can fail.
        let (bounded_usage, bounded_slot_usage) = (Arc::new(Usage::default()), Arc::new(Usage::default()));
        let bounded = Snapshot::from_state_counted(&state, bounded_usage.clone());
        let bounded_slot = Snapshot::from_state_counted(&state, bounded_slot_usage.clone());
        for (key, .., kind) in &flags {
            let pos = typed.flags.find(key).unwrap();
            let found = match &typed.flags.hot[pos as usize].read {
                HotRead::Plain => "plain",
                HotRead::SmallList { .. } => "small_list",
                HotRead::List { .. } => "list",
                HotRead::Split { .. } | HotRead::Attr { .. } => "shape",
                HotRead::Slot(_) => "slot",
                HotRead::Vacant => "vacant",
            };
            assert_eq!(found, *kind, "{key}");
        }
        let mut contexts =
            vec![EvalContext::anonymous(), EvalContext::anonymous().with_attribute("plan", "pro")];
        for user in [list[0].as_str(), list[1].as_str(), &uuid(1_000), "user-7", "not-a-uuid"] {
            for plan in
                [json!("pro"), json!("free"), json!(7), json!("a-plan-name-of-many-bytes"), json!(null)]
            {
                contexts.push(EvalContext::user(user).with_attribute("plan", plan.clone()));
            }
            contexts.push(EvalContext::user(user));
            let many = (0..9).fold(EvalContext::user(user), |c, i| c.with_attribute(format!("a{i}"), i));
            contexts.push(many.with_attribute("plan", "pro"));
        }
        for n in 0..200 {
            contexts.push(EvalContext::user(uuid(n)).with_attribute("plan", "enterprise"));
        }
        let mut served = std::collections::BTreeSet::new();
        for ctx in &contexts {
            for (key, _, value, ..) in &flags {
                let (want, reason) = untyped.read_key(key, ctx).unwrap();
                let key: &'static str = Box::leak(key.to_string().into_boxed_str());
                let Value::Bool(_) = value else {
                    let got = typed.evaluate(&Flag::<i64>::new(key, 0), ctx);
                    assert_eq!((Value::Int(got.value), got.reason), (want, reason), "{key}");
                    continue;
                };
                let got = typed.evaluate(&Flag::<bool>::new(key, false), ctx);
                let want = if reason == Reason::Expired { Value::Bool(false) } else { want };
                assert_eq!((Value::Bool(got.value), got.reason), (want, reason), "{key} for {ctx:?}");
                served.insert((key, got.value, format!("{:?}", got.reason)));
                // Read as another type: the code default, counted as such, on both paths.
                let int = Flag::<i64>::new(key, 9);
                assert_eq!(typed.evaluate(&int, ctx).value, 9, "{key}");
                assert_eq!(untyped.evaluate(&int, ctx).value, 9, "{key}");
                // A bound the value can fail: a read on its own and a request's read agree.
                let only_true = Flag::<bool>::new(key, false).one_of(&[true]);
                let input = Input { user: None, lookup: true, context: ctx, clock: None };
                assert_eq!(
                    bounded.evaluate(&only_true, ctx),
                    bounded_slot.evaluate_slot(&only_true, &input).1,
                    "{key}"
                );
            }
        }
        // Both values of each shape, for the reasons meant.
        for (key, value, reason) in [
            ("split_2", true, "Split"),
            ("split_2", false, "Split"),
            ("split_2", false, "Global"),
            ("plan_in", true, "Rule(0)"),
            ("plan_in", false, "Global"),
            ("plan_not_in", true, "Rule(0)"),
            ("on_list", true, "Rule(0)"),
            ("on_list", false, "Global"),
            ("off_list", true, "Rule(0)"),
            ("off_list", false, "Global"),
            ("mixed_list", true, "Rule(0)"),
            ("long_list", true, "Rule(0)"),
            ("long_list", false, "Global"),
            ("plan_in_off", false, "Disabled"),
            ("plan_in", true, "Override"),
        ] {
            assert!(served.contains(&(key, value, reason.to_string())), "{key} serves {value} for {reason}");
        }
        let counted = |usage: &Usage| {
            let mut all = usage.collect().0;
            all.sort_by(|x, y| (&x.key, &x.reason, &x.variant).cmp(&(&y.key, &y.reason, &y.variant)));
            format!("{all:?}")
        };
        assert_eq!(counted(&typed_usage), counted(&untyped_usage), "counted alike");
        let refused = counted(&bounded_usage);
        assert_eq!(refused, counted(&bounded_slot_usage), "bounded reads counted alike");
        assert!(refused.contains(r#"reason: "invalid""#), "a refused value is counted as invalid: {refused}");
    }

    /// A flag updated or removed leaves its `Hot` true to it: the number stays, the
    /// shape follows the new version, and a removed key is not found.
    #[test]
    fn hot_entries_follow_changes() {
        let ctx = EvalContext::user(uuid(3)).with_attribute("plan", "pro");
        let flag = Flag::<bool>::new("F", false);
        let mut table = FlagTable::default();
        table.put(FlagRecord::new("G", Value::Bool(true)));
        table.put(FlagRecord::new("F", Value::Bool(true)));
        let snap = |t: &FlagTable| Snapshot::finish(1, t.clone(), &[], &[]);
        assert_eq!(snap(&table).evaluate(&flag, &ctx).reason, Reason::Global);
        let mut r = FlagRecord::new("F", Value::Bool(false));
        r.targeting = serde_json::from_value(serde_json::json!({"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}], "value": true}]})).unwrap();
        table.put(r);
        assert_eq!(table.find("F"), Some(1));
        assert!(matches!(table.hot[1].read, HotRead::Attr { .. }));
        let d = snap(&table).evaluate(&flag, &ctx);
        assert_eq!((d.value, d.reason), (true, Reason::Rule(0)));
        table.put(FlagRecord::new("F", Value::Int(3)));
        assert!(matches!(table.hot[1].read, HotRead::Slot(_)));
        assert_eq!(snap(&table).evaluate(&flag, &ctx).reason, Reason::Invalid);
        assert_eq!(table.remove("F"), Some(1));
        assert!(matches!(table.hot[1].read, HotRead::Vacant));
        assert_eq!(snap(&table).evaluate(&flag, &ctx).reason, Reason::Default);
        assert!(snap(&table).evaluate(&Flag::<bool>::new("G", false), &ctx).value);
        table.put(FlagRecord::new("F", Value::Bool(true)));
        assert_eq!(table.find("F"), Some(2), "a new number");
        assert!(snap(&table).evaluate(&flag, &ctx).value);
    }

    /// The read table through many changes, as `Snapshot::apply` makes them: the
    /// index grows from empty and shifts back on removals, keys longer than 15 bytes
    /// find their own entries, an old snapshot keeps its own table, and a request's
    /// reads (the user looked up once, as the layer does) agree with the slot path.
    #[test]
    fn hot_entries_follow_many_changes() {
        use serde_json::json;
        // Sets of one value, or of two: an entry's set changes with its length and
        // without.
        let rules = |attribute: &str, values: &[&str]| {
            serde_json::from_value::<crate::Targeting>(json!({"rules": [{"clauses": [
                {"attribute": attribute, "op": "in", "values": values}], "value": true}]}))
            .unwrap()
        };
        let rule = |attribute: &str| rules(attribute, &["pro"]);
        let key = |i: usize| {
            if i.is_multiple_of(3) { format!("a_key_longer_than_fifteen_{i}") } else { format!("k{i}") }
        };
        let mut table = FlagTable::default();
        for i in 0..300 {
            let mut r = FlagRecord::new(key(i), Value::Bool(i % 2 == 0));
            if i % 4 == 1 {
                r.targeting = rule("plan");
            }
            table.put(r);
        }
        let before = Arc::new(Snapshot::finish(1, table.clone(), &[], &[]));
        // Changes to a loaded table (with its perfect hash), as `apply` makes them.
        table.index.seal();
        for i in (0..300).step_by(7) {
            assert!(table.remove(&key(i)).is_some());
        }
        for i in (0..300).step_by(5) {
            // Flip plain and targeted: the entries change kind under the same number.
            let mut r = FlagRecord::new(key(i), Value::Bool(i % 2 == 1));
            if i % 4 != 1 {
                r.targeting = rule("plan");
            } else if i % 3 == 0 {
                r.targeting = rules("plan", &["free", "team"]);
            }
            table.put(r);
        }
        for i in (0..300).step_by(10) {
            // Another set of one value.
            let mut r = FlagRecord::new(key(i), Value::Bool(false));
            r.targeting = rules("plan", &["team"]);
            table.put(r);
        }
        for i in 300..400 {
            table.put(FlagRecord::new(key(i), Value::Bool(i % 2 == 0)));
        }
        for i in (300..400).step_by(9) {
            assert!(table.remove(&key(i)).is_some());
        }
        let overrides = vec![OverrideRecord { key: key(10), user_id: uuid(1), value: json!(false) }];
        let after = Arc::new(Snapshot::finish(2, table.clone(), &overrides, &[]));
        // The same state read through the table as changed (not sealed again).
        let sealed = Snapshot::finish(2, table.clone(), &overrides, &[]);
        let changed = Arc::new(Snapshot { flags: Arc::new(table), shared_config: OnceLock::new(), ..sealed });
        for (snapshot, version) in [(&before, 1), (&after, 2), (&changed, 2)] {
            for user in [uuid(1), uuid(2)] {
                let ctx = EvalContext::user(&user).with_attribute("plan", "pro");
                let evaluator = crate::Evaluator::new(snapshot.clone(), ctx.clone());
                for i in 0..400 {
                    let k: &'static str = Box::leak(key(i).into_boxed_str());
                    let flag = Flag::<bool>::new(k, false);
                    let d = snapshot.evaluate(&flag, &ctx);
                    let general = snapshot.evaluate_key(k, &ctx);
                    match general {
                        Some((Value::Bool(v), reason)) => {
                            assert_eq!(
                                (d.value, d.reason, d.version),
                                (v, reason, version),
                                "{k} at {version}"
                            )
                        }
                        _ => assert_eq!(d.reason, Reason::Default, "{k} at {version}"),
                    }
                    let e = evaluator.detail(flag);
                    assert_eq!((e.value, e.reason), (d.value, d.reason), "{k} through an evaluator");
                }
            }
        }
        let k10 = Flag::<bool>::new("k10", true);
        let ctx = EvalContext::user(uuid(1)).with_attribute("plan", "pro");
        assert_eq!(after.evaluate(&k10, &ctx).reason, Reason::Override, "an override over a put");
        assert_eq!(before.evaluate(&Flag::<bool>::new("k7", true), &ctx).reason, Reason::Global);
        assert_eq!(after.evaluate(&Flag::<bool>::new("k7", true), &ctx).reason, Reason::Default, "removed");
        for snapshot in [&after, &changed] {
            for (i, reason) in
                [(301, Reason::Global), (312, Reason::Global), (309, Reason::Default), (310, Reason::Global)]
            {
                let k: &'static str = Box::leak(key(i).into_boxed_str());
                assert_eq!(snapshot.evaluate(&Flag::<bool>::new(k, true), &ctx).reason, reason, "{k}");
            }
        }
    }

    /// Keys up to 15 bytes are compared as two words, longer ones as text: keys that
    /// share a prefix across that boundary find their own slot and nothing else.
    #[test]
    fn typed_reads_find_their_own_key_at_every_length() {
        const KEYS: [&str; 5] =
            ["A", "ABCDEFGHIJKLMN", "ABCDEFGHIJKLMNO", "ABCDEFGHIJKLMNOP", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"];
        let flags =
            KEYS[..5].iter().enumerate().map(|(i, k)| FlagRecord::new(*k, Value::Int(i as i64))).collect();
        let snapshot = Snapshot::from_state(&StoreState { seq: 1, flags, ..Default::default() });
        let ctx = EvalContext::anonymous();
        for (i, key) in KEYS.iter().enumerate() {
            let detail = snapshot.evaluate(&Flag::<i64>::new(key, -1), &ctx);
            assert_eq!((detail.value, detail.reason), (i as i64, Reason::Global), "{key}");
        }
        for missing in
            ["B", "ABCDEFGHIJKLMNo", "ABCDEFGHIJKLMNOQ", "ABCDEFGHIJKLMNOPQRSTUVWXYz", "ABCDEFGHIJKLM"]
        {
            let detail = snapshot.evaluate(&Flag::<i64>::new(missing, -1), &ctx);
            assert_eq!((detail.value, detail.reason), (-1, Reason::Default), "{missing}");
        }
    }

    /// `plan in [...]` over short strings is tested on integer keys; a set with one
    /// long value takes the general path. Both decide the same for every operator,
    /// negation and kind of attribute value.
    #[test]
    fn short_string_sets_decide_as_the_general_path() {
        let long = "a-value-longer-than-15";
        let rule = |key: &str, op: &str, negate: bool, values: serde_json::Value| {
            let t = serde_json::json!({"rules": [{"clauses": [
                {"attribute": "plan", "op": op, "values": values, "negate": negate}], "value": true}]});
            FlagRecord {
                targeting: serde_json::from_value(t).unwrap(),
                ..FlagRecord::new(key, Value::Bool(false))
            }
        };
        let mut flags = Vec::new();
        for op in ["in", "not_in", "eq", "neq"] {
            for negate in [false, true] {
                let short = if op.ends_with('q') {
                    vec!["pro"]
                } else {
                    vec!["pro", "", "enterprise", "fifteen-bytes-x"]
                };
                let general = [short.clone(), vec![long]].concat();
                // `eq` takes one value: its twin is `in` with the long one added (no context has it).
                let general_op = match op {
                    "eq" => "in",
                    "neq" => "not_in",
                    other => other,
                };
                flags.push(rule(&format!("S-{op}-{negate}"), op, negate, serde_json::json!(short)));
                flags.push(rule(&format!("G-{op}-{negate}"), general_op, negate, serde_json::json!(general)));
            }
        }
        let snapshot = Snapshot::from_state(&StoreState { seq: 1, flags, ..Default::default() });
        let contexts = [
            EvalContext::user("u"),
            EvalContext::user("u").with_attribute("plan", "pro"),
            EvalContext::user("u").with_attribute("plan", "enterprise"),
            EvalContext::user("u").with_attribute("plan", ""),
            EvalContext::user("u").with_attribute("plan", "fifteen-bytes-x"),
            EvalContext::user("u").with_attribute("plan", "fifteen-bytes-y"),
            EvalContext::user("u").with_attribute("plan", "sixteen-bytes-xx"),
            EvalContext::user("u").with_attribute("plan", "Pro"),
            EvalContext::user("u").with_attribute("plan", 5),
            EvalContext::user("u").with_attribute("plan", true),
            EvalContext::user("u").with_attribute("plan", serde_json::Value::Null),
            EvalContext::user("u").with_attribute("country", "pro"),
            // Many attributes: found by name, not by key.
            (0..12)
                .fold(EvalContext::user("u"), |c, i| c.with_attribute(format!("a{i:02}"), "x"))
                .with_attribute("plan", "pro"),
        ];
        for op in ["in", "not_in", "eq", "neq"] {
            for negate in [false, true] {
                for ctx in &contexts {
                    let short = snapshot.evaluate_key(&format!("S-{op}-{negate}"), ctx).unwrap();
                    let general = snapshot.evaluate_key(&format!("G-{op}-{negate}"), ctx).unwrap();
                    assert_eq!(short, general, "{op} negate={negate} for {ctx:?}");
                }
            }
        }
        let pro = snapshot.evaluate_key("S-in-false", &contexts[1]).unwrap();
        assert_eq!(pro, (Value::Bool(true), Reason::Rule(0)));
        let sixteen = snapshot.evaluate_key("S-in-false", &contexts[6]).unwrap();
        assert_eq!(sixteen, (Value::Bool(false), Reason::Global));
    }

    /// Lists the compiled targeting holds (strings only: a mixed list stays in the
    /// record), with duplicates and in an order a set would not keep.
    fn listed() -> StoreState {
        let targeting = serde_json::from_value(serde_json::json!({"rules": [
            {"clauses": [{"attribute": "user_id", "op": "in", "values": ["u3", "u1", "u3", "u2", "u9", "u8", "u7", "u6", "u5", "u4"]}], "value": true},
            {"clauses": [{"attribute": "plan", "op": "in", "values": ["pro", 3, true]},
                         {"attribute": "country", "op": "not_in", "values": []}], "value": true},
            {"clauses": [{"attribute": "user_id", "op": "in_segment", "values": ["beta"]}], "value": true}
        ]}))
        .unwrap();
        let flag = FlagRecord { targeting, ..FlagRecord::new("LISTED", Value::Bool(false)) };
        // Targeting with only a salt and `bucket_by`: nothing to compile, all to keep.
        let salted =
            serde_json::from_value(serde_json::json!({"salt": "s1", "bucket_by": "org_id"})).unwrap();
        let salted = FlagRecord { targeting: salted, ..FlagRecord::new("SALTED", Value::Bool(true)) };
        let definition = serde_json::from_value(serde_json::json!({
            "included": ["s2", "s1", "s2"], "excluded": ["u1"], "rules": []
        }))
        .unwrap();
        let now = OffsetDateTime::UNIX_EPOCH;
        let segment =
            SegmentRecord { key: "beta".into(), definition, version: 1, created_at: now, updated_at: now };
        StoreState { seq: 4, flags: vec![flag, salted], overrides: vec![], segments: vec![segment] }
    }

    #[test]
    fn id_lists_are_held_once_and_given_back_exactly() {
        let state = listed();
        let snapshot = Snapshot::from_state(&state);
        assert_eq!(snapshot.to_state(), state, "saved whole");
        assert_eq!(snapshot.flag("LISTED").as_ref(), state.flags.first(), "read whole");
        // The slot's record keeps only what the compiled form does not hold.
        let kept = snapshot.flags.slot(0).unwrap().stored.targeting.as_deref().unwrap();
        assert!(kept.rules[0].clauses[0].values.is_empty());
        assert_eq!(kept.rules[1].clauses[0].values.len(), 3, "a mixed list stays");
        let info = snapshot.flag_info("LISTED").unwrap();
        assert!(info.is_targeted());
        assert!(!snapshot.flag_info("SALTED").unwrap().is_targeted(), "a salt alone targets no one");
        assert_eq!((info.key(), info.version(), info.value_type()), ("LISTED", 1, crate::ValueType::Bool));
        // Membership still answers from the compiled sets.
        let get = |user: &str| snapshot.evaluate_key("LISTED", &EvalContext::user(user)).unwrap();
        assert_eq!(get("u7"), (Value::Bool(true), Reason::Rule(0)));
        assert_eq!(get("s1"), (Value::Bool(true), Reason::Rule(2)));
        assert_eq!(get("zz"), (Value::Bool(false), Reason::Global));
        // A context that probed a list of UUIDs is still equal to a fresh one.
        let uuid = "0f8b3c1e-9a2d-4e5f-a6b7-c8d9e0f1a2b3";
        let ctx = EvalContext::user(uuid);
        let seg =
            CompiledSegment::new(&serde_json::from_value(serde_json::json!({"included": [uuid]})).unwrap());
        assert!(seg.unwrap().contains(&ctx));
        assert_eq!(ctx, EvalContext::user(uuid));
        assert_eq!(format!("{ctx:?}"), format!("{:?}", EvalContext::user(uuid)));
        // And a snapshot applied incrementally saves the same.
        let change = Change {
            seq: 5,
            at: OffsetDateTime::UNIX_EPOCH,
            actor: "t".into(),
            action: Action::FlagUpdate,
            key: "LISTED".into(),
            subject: None,
            before: None,
            after: Some(serde_json::to_value(&state.flags[0]).unwrap()),
            reason: None,
            batch_end: None,
            approved_by: None,
            emergency: false,
        };
        let next = snapshot.apply(&[change]).unwrap();
        assert_eq!(next.to_state(), StoreState { seq: 5, ..state });
    }

    /// Targeting the compiled form rebuilds exactly is not kept twice; anything it
    /// would rebuild differently (a description, a regex, a salt, a number written
    /// `1` for a float flag) is kept as given.
    #[test]
    fn targeting_is_kept_only_where_the_compiled_form_cannot_give_it_back() {
        let t = |v: serde_json::Value| serde_json::from_value::<crate::Targeting>(v).unwrap();
        let ids: Vec<String> = (0..20).map(|i| format!("0f8b3c1e-9a2d-4e5f-a6b7-c8d9e0f1a{i:03}")).collect();
        let rebuilt = t(serde_json::json!({
            "rules": [
                {"clauses": [{"attribute": "user_id", "op": "in", "values": ids}], "value": "list"},
                {"clauses": [{"attribute": "plan", "op": "not_in", "values": ["free"], "negate": true},
                             {"attribute": "email", "op": "ends_with", "values": ["@example.com"]},
                             {"attribute": "beta", "op": "exists"}],
                 "split": {"variations": [{"value": "a", "weight": 2500}, {"value": "b", "weight": 7500}]}}
            ],
            "split": {"variations": [{"value": "a", "weight": 0}, {"value": "b", "weight": 10000}]},
            "bucket_by": "org_id",
            "schedule": [{"at": "2026-01-01T00:00:00Z", "enabled": true},
                         {"at": "2026-02-01T00:00:00Z", "value": "b"}]
        }));
        let kept = [
            serde_json::json!({"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}],
                                          "value": "x", "description": "for people"}]}),
            serde_json::json!({"rules": [{"clauses": [{"attribute": "email", "op": "matches", "values": ["@a\\.com$"]}], "value": "x"}]}),
            serde_json::json!({"split": {"variations": [{"value": "x", "weight": 10000}]}, "salt": "s"}),
            serde_json::json!({"split": {"variations": [{"value": "x", "weight": 10000}]}, "bucket_by": "user_id"}),
        ];
        let string = |key: &str, targeting| FlagRecord {
            targeting,
            ..FlagRecord::new(key, Value::String("g".into()))
        };
        let mut flags = vec![string("REBUILT", rebuilt)];
        flags.extend(kept.into_iter().enumerate().map(|(i, k)| string(&format!("KEPT{i}"), t(k))));
        let float = t(
            serde_json::json!({"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}], "value": 1}]}),
        );
        flags.push(FlagRecord { targeting: float, ..FlagRecord::new("FLOAT", Value::Float(0.5)) });
        flags.sort_by(|a, b| a.key.cmp(&b.key));
        let state = StoreState { seq: 1, flags, ..Default::default() };
        let snapshot = Snapshot::from_state(&state);
        assert_eq!(snapshot.to_state(), state, "saved whole");
        for f in &state.flags {
            let slot = snapshot.flags.find_slot(key_hash(&f.key), &f.key).unwrap();
            assert_eq!(slot.stored.targeting.is_none(), f.key == "REBUILT", "{}", f.key);
            assert_eq!(snapshot.flag(&f.key).as_ref(), Some(f));
            assert!(snapshot.flag_info(&f.key).unwrap().is_targeted(), "{}", f.key);
        }
        // Served from the compiled form as before.
        let ctx = EvalContext::user("0f8b3c1e-9a2d-4e5f-a6b7-c8d9e0f1a003");
        assert_eq!(
            snapshot.evaluate_key("REBUILT", &ctx).unwrap(),
            (Value::String("list".into()), Reason::Rule(0))
        );
    }

    #[test]
    fn a_state_read_from_json_is_the_state_built_from_records() {
        let mut state = listed();
        let archived = FlagRecord { archived: true, ..FlagRecord::new("GONE", Value::Bool(true)) };
        state.flags.push(archived);
        let value = serde_json::Value::Bool(false);
        state.overrides.push(OverrideRecord { key: "SALTED".into(), user_id: "u1".into(), value });
        let json = serde_json::to_vec(&state).unwrap();
        let read = Snapshot::from_json(&json, Arc::default(), Arc::default()).unwrap();
        let built = Snapshot::from_state(&state);
        assert_eq!(read.to_state(), built.to_state());
        assert!(read.flag("GONE").is_none(), "archived flags are skipped");
        let ctx = EvalContext::user("u1");
        assert_eq!(read.evaluate_key("SALTED", &ctx), Some((Value::Bool(false), Reason::Override)));
        // Field order does not matter; `segments` may be absent, unknown fields are ignored.
        let reordered = br#"{"overrides": [], "extra": {"a": [1]}, "flags": [], "seq": 3}"#;
        assert_eq!(Snapshot::from_json(reordered, Arc::default(), Arc::default()).unwrap().version(), 3);
        // The fields in order, as the derived parser also takes them.
        let listed = serde_json::to_vec(&(4, &state.flags, &state.overrides, &state.segments)).unwrap();
        let read_listed = Snapshot::from_json(&listed, Arc::default(), Arc::default()).unwrap();
        assert_eq!(read_listed.to_state(), built.to_state());
        assert!(Snapshot::from_json(b"[4, []]", Arc::default(), Arc::default()).is_err());
        // What the derived `Deserialize` refuses, this refuses, naming it.
        for (bad, says) in [
            (&br#"{"flags": [], "overrides": []}"#[..], "missing field `seq`"),
            (br#"{"seq": 1, "overrides": []}"#, "missing field `flags`"),
            (br#"{"seq": 1, "flags": [], "overrides": [], "seq": 2}"#, "duplicate field `seq`"),
            (br#"{"seq": 1, "flags": [{"key": "A"}], "overrides": []}"#, "missing field"),
            (br#"{"seq": 1, "flags": [], "overrides": []} x"#, "trailing characters"),
        ] {
            let e = Snapshot::from_json(bad, Arc::default(), Arc::default()).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn a_compacted_shard_finds_the_same_entries() {
        let mut shard = UserShard::default();
        let put = |shard: &mut UserShard, user: &str, v: Option<bool>| {
            let entry = v.map(|v| UserEntry::from_pairs(vec![(3, Value::Bool(v))]));
            shard.put(user, id_hash(user), entry);
        };
        for i in 0..100 {
            put(&mut shard, &format!("u{i}"), Some(i % 2 == 0));
        }
        for i in (0..100).step_by(3) {
            put(&mut shard, &format!("u{i}"), None);
        }
        assert_eq!(shard.entries.len(), 100);
        shard.compact();
        assert_eq!(shard.entries.len(), shard.index.len());
        for i in 0..100 {
            let user = format!("u{i}");
            let found = shard.find(&user, id_hash(&user));
            let value =
                found.and_then(|p| shard.entries[p as usize].as_ref()).and_then(|e| e.get(3).cloned());
            let want = (i % 3 != 0).then_some(Value::Bool(i % 2 == 0));
            assert_eq!(value, want, "{user}");
        }
    }

    #[test]
    fn override_counts_follow_sets_deletes_and_archives() {
        let flags = ["A", "B"].map(|k| FlagRecord::new(k, Value::Bool(true))).to_vec();
        let o = |key: &str, user: &str| OverrideRecord {
            key: key.into(),
            user_id: user.into(),
            value: false.into(),
        };
        let overrides = vec![o("A", "u1"), o("A", "u2"), o("B", "u1")];
        let s = Snapshot::from_state(&StoreState { seq: 1, flags, overrides, ..Default::default() });
        let counts = |s: &Snapshot| {
            let mut c: Vec<(String, usize)> =
                s.override_counts().into_iter().map(|(k, n)| (k.to_owned(), n)).collect();
            c.sort();
            c
        };
        assert_eq!(counts(&s), [("A".to_owned(), 2), ("B".to_owned(), 1)]);
        let change = |seq, action, key: &str, subject: Option<&str>, after| Change {
            seq,
            at: OffsetDateTime::UNIX_EPOCH,
            actor: "t".into(),
            action,
            key: key.into(),
            subject: subject.map(str::to_owned),
            before: None,
            after,
            reason: None,
            batch_end: None,
            approved_by: None,
            emergency: false,
        };
        let s = s
            .apply(&[
                change(2, Action::OverrideDelete, "A", Some("u2"), None),
                change(3, Action::OverrideSet, "B", Some("u3"), Some(false.into())),
                change(4, Action::OverrideSet, "B", Some("u3"), Some(true.into())),
            ])
            .unwrap();
        assert_eq!(counts(&s), [("A".to_owned(), 1), ("B".to_owned(), 2)]);
        let s = s.apply(&[change(5, Action::FlagArchive, "B", None, None)]).unwrap();
        assert_eq!(counts(&s), [("A".to_owned(), 1)]);
    }

    #[test]
    fn user_refs_name_shard_and_position() {
        let mut table = UserTable::default();
        for i in 0..2_000 {
            table.put(&format!("u{i}"), Some(UserEntry::from_pairs(vec![(i % 7, Value::Int(i64::from(i)))])));
        }
        assert_eq!(table.len(), 2_000);
        assert!(table.shards.iter().filter(|s| !s.index.is_empty()).count() > 200, "ids spread over shards");
        for i in 0..2_000u32 {
            let user = format!("u{i}");
            let r = UserRef(table.find(&user, id_hash(&user)).unwrap());
            assert_eq!(table.entry(r).and_then(|e| e.get(i % 7)), Some(&Value::Int(i64::from(i))));
        }
        assert_eq!(table.iter().count(), 2_000);
    }
}
