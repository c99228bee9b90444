//! Evaluation counts per flag. Each thread counts in cells of its own (a plain load
//! and store: no lock, no read-modify-write, no cache line another core writes), and
//! a collector takes the growth since it last looked, flushing it to the store and
//! the `metrics` facade at an interval.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use hashbrown::HashTable;
use smol_str::SmolStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::flag::key_hash;
use crate::reason::Reason;
use crate::value::{Value, ValueType};

/// Reason kinds counted (the index of a reason without its rule or step number).
const REASONS: usize = 9;
/// Values or variants per reason: a bool's value, or a rule, variation or step
/// number (the last one also counts higher numbers), so labels stay bounded.
const WIDTH: usize = 4;
const CELLS: usize = REASONS * WIDTH;

/// One flag's identity for counting. Shared by every version of the flag in one
/// `Source`, so a change to the flag loses no counts.
#[derive(Debug)]
pub(crate) struct FlagUsage {
    key: SmolStr,
    value_type: ValueType,
    /// Process-wide: the position of this flag's cells in every thread's table.
    id: u32,
}

impl FlagUsage {
    pub(crate) fn id(&self) -> u32 {
        self.id
    }
}

/// Ids for `FlagUsage`, never reused: a thread's table is indexed by them.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);
/// The id of a flag whose reads are not counted: it falls outside every thread's table.
const NOT_COUNTED: u32 = u32::MAX;
/// Ids handed out at most: a thread's table takes 8 bytes per id up to the largest it
/// counted, so this bounds it at 32 MiB. A `Source` keeps its ids for its lifetime;
/// only a process that builds fresh `Usage`s (`Snapshot::from_state`) again and again
/// gets near it.
const ID_LIMIT: u32 = 1 << 22;

/// Flags per chunk: a thread counts 16 flags in one chunk, cell by cell, so reads
/// of many flags that serve alike (a page reading all its flags) share cache lines.
const LANES: usize = 16;
/// Chunk pointers per block of a thread's table; `TOP` blocks cover every id below `ID_LIMIT`.
const LOW: usize = 512;
const TOP: usize = ID_LIMIT as usize / LANES / LOW;

/// One thread's counters of 16 flags (ids `16 * index ..`). Only that thread writes
/// `counts` (32 bits wrap: the collector takes differences every second, far below
/// 4 billion reads).
#[derive(Debug)]
struct Chunk {
    counts: [[AtomicU32; LANES]; CELLS],
    /// What collectors took last: each lane only its flag's collector touches.
    seen: [[AtomicU32; LANES]; CELLS],
    index: u32,
}

impl Chunk {
    fn new(index: u32) -> Self {
        let zeros = || std::array::from_fn(|_| std::array::from_fn(|_| AtomicU32::new(0)));
        Chunk { counts: zeros(), seen: zeros(), index }
    }

    fn pending(&self, lane: usize) -> bool {
        self.counts
            .iter()
            .zip(&self.seen)
            .any(|(n, s)| n[lane].load(Ordering::Relaxed) != s[lane].load(Ordering::Relaxed))
    }
}

/// One thread's chunks, as collectors see them.
#[derive(Debug, Default)]
struct ThreadCells {
    /// Cleared when the thread ends: its chunks are dropped once collected.
    alive: AtomicBool,
    chunks: Mutex<Vec<Arc<Chunk>>>,
}

/// Every thread that has counted.
static THREADS: Mutex<Vec<Arc<ThreadCells>>> = Mutex::new(Vec::new());

/// Ids of flags some `Usage` or snapshot still has, a bit each: an ended thread's
/// chunk is kept while it holds counts of such a flag that no collector took yet.
static LIVE: Mutex<Vec<u64>> = Mutex::new(Vec::new());

fn set_live(id: u32, live: bool) {
    let mut bits = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let (word, bit) = (id as usize / 64, 1u64 << (id % 64));
    if live {
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        bits[word] |= bit;
    } else if let Some(w) = bits.get_mut(word) {
        *w &= !bit;
    }
}

impl Drop for FlagUsage {
    fn drop(&mut self) {
        if self.id != NOT_COUNTED {
            set_live(self.id, false);
        }
    }
}

/// A block of a thread's table: chunk pointers, each made on the first count of any of its ids.
type Block = OnceCell<Box<[OnceCell<Arc<Chunk>>; LOW]>>;

/// The calling thread's chunks by id, and its entry in `THREADS`.
struct Local {
    /// The chunks of the first `LOW * LANES` ids, in the thread-local itself: a read
    /// finds its chunk in one load from the thread's base.
    first: [OnceCell<Arc<Chunk>>; LOW],
    /// Two levels of fixed size for the rest: the table grows without moving what
    /// it holds, so a read takes no borrow (no write but the count itself).
    blocks: [Block; TOP],
    shared: OnceLock<Arc<ThreadCells>>,
}

impl Local {
    #[inline]
    fn chunk(&self, id: u32) -> Option<&Chunk> {
        self.cell(id)?.get().map(|c| &**c)
    }

    /// Where the chunk of `id` is or goes; `None` past `ID_LIMIT` or before its block is made.
    #[inline]
    fn cell(&self, id: u32) -> Option<&OnceCell<Arc<Chunk>>> {
        let c = id as usize / LANES;
        match self.first.get(c) {
            Some(cell) => Some(cell),
            None => self.blocks.get(c / LOW)?.get()?.get(c % LOW),
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if let Some(t) = self.shared.get() {
            t.alive.store(false, Ordering::Release);
        }
    }
}

thread_local! {
    static LOCAL: Local = const {
        Local { first: [const { OnceCell::new() }; LOW], blocks: [const { OnceCell::new() }; TOP], shared: OnceLock::new() }
    };
}

/// Counts one evaluation of the flag whose `FlagUsage::id` is `id` on this thread.
#[inline]
pub(crate) fn record(id: u32, reason: Reason, variant: usize) {
    let i = reason_index(reason) * WIDTH + variant.min(WIDTH - 1);
    // A thread being torn down counts nothing rather than panic.
    let _ = LOCAL.try_with(|local| {
        if let Some(c) = local.chunk(id)
            && let Some(row) = c.counts.get(i)
        {
            // Only this thread writes it: a load and a store cannot lose a count.
            let n = &row[id as usize % LANES];
            n.store(n.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
            return;
        }
        first_count(local, id, i);
    });
}

/// The first count of one of a chunk's flags on this thread: the chunk is made and registered.
#[cold]
#[inline(never)]
fn first_count(local: &Local, id: u32, i: usize) {
    let c = id as usize / LANES;
    if local.first.get(c).is_none() {
        // Make the block (blocks past `first` hold ids from `LOW * LANES` on; block 0 is unused).
        let Some(block) = local.blocks.get(c / LOW) else { return };
        block.get_or_init(|| Box::new(std::array::from_fn(|_| OnceCell::new())));
    }
    let Some(cell) = local.cell(id) else { return };
    let chunk = cell.get_or_init(|| {
        let chunk = Arc::new(Chunk::new(c as u32));
        let shared = local.shared.get_or_init(|| {
            let t = Arc::new(ThreadCells { alive: AtomicBool::new(true), chunks: Mutex::default() });
            THREADS.lock().unwrap_or_else(|e| e.into_inner()).push(t.clone());
            t
        });
        shared.chunks.lock().unwrap_or_else(|e| e.into_inner()).push(chunk.clone());
        chunk
    });
    if let Some(row) = chunk.counts.get(i) {
        let n = &row[id as usize % LANES];
        n.store(n.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }
}

#[inline]
fn reason_index(reason: Reason) -> usize {
    match reason {
        Reason::Global | Reason::Default => 0,
        Reason::Disabled => 1,
        Reason::Override => 2,
        Reason::Rule(_) => 3,
        Reason::Split => 4,
        Reason::Scheduled(_) => 5,
        Reason::Invalid => 6,
        Reason::Expired => 7,
        Reason::Env => 8,
    }
}

const REASON_NAMES: [&str; REASONS] =
    ["global", "disabled", "override", "rule", "split", "scheduled", "invalid", "expired", "env"];

/// The variant a served value counts under: a bool's value; otherwise the rule,
/// variation or step number (0 for the rest).
#[inline]
pub(crate) fn variant(value_type: ValueType, value: &Value, number: usize) -> usize {
    match (value_type, value) {
        (ValueType::Bool, Value::Bool(b)) => usize::from(*b),
        _ => number,
    }
}

/// The label of variant `v` for `reason` (`true`/`false` for booleans).
fn variant_label(value_type: ValueType, reason: usize, v: usize) -> String {
    let more = if v == WIDTH - 1 { "+" } else { "" };
    match (value_type, REASON_NAMES[reason]) {
        (ValueType::Bool, _) => (v == 1).to_string(),
        (_, "rule") => format!("rule:{v}{more}"),
        (_, "split") => format!("variation:{v}{more}"),
        (_, "scheduled") => format!("step:{v}{more}"),
        (_, "disabled") => "off".into(),
        (_, "override") => "override".into(),
        (_, "invalid" | "expired") => "default".into(),
        _ => "value".into(),
    }
}

/// Evaluation counts of one flag since the last collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCount {
    /// The flag.
    pub key: String,
    /// The reason kind: `global`, `disabled`, `override`, `rule`, `split`,
    /// `scheduled`, `invalid`, `expired` or `env`.
    pub reason: String,
    /// The served value for booleans, otherwise the variant (`value`, `off`,
    /// `override`, `rule:N`, `variation:N`, `step:N`, `default`).
    pub variant: String,
    /// How many evaluations.
    pub count: u64,
}

/// Counters for every flag a `Source`'s snapshots hold, and the keys code asked
/// for that no snapshot had.
#[derive(Default)]
pub struct Usage {
    /// By the key's hash (the one flag lookups use), key checked.
    flags: Mutex<HashTable<Arc<FlagUsage>>>,
    unknown: RwLock<HashMap<&'static str, AtomicU64>>,
    /// One collection at a time: a lane of `Chunk::seen` is its flag's collector's alone.
    collecting: Mutex<()>,
    /// Reads through it count nothing (see [`Usage::uncounted`]).
    uncounted: bool,
}

impl std::fmt::Debug for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let flags = self.flags.lock().map(|f| f.len()).unwrap_or(0);
        f.debug_struct("Usage").field("flags", &flags).finish_non_exhaustive()
    }
}

impl Usage {
    /// Counters that count nothing, for snapshots no collector reads (the admin's
    /// view of the store): each thread keeps cells per counted flag, so counting
    /// into a `Usage` nobody collects would only grow them.
    pub fn uncounted() -> Self {
        Usage { uncounted: true, ..Usage::default() }
    }

    /// Room for `n` flags, so a full load does not grow the table step by step.
    pub(crate) fn reserve(&self, n: usize) {
        let mut flags = self.flags.lock().unwrap_or_else(|e| e.into_inner());
        flags.reserve(n, |u| key_hash(&u.key));
    }

    /// The counters of `key`, created on first use.
    pub(crate) fn flag(&self, key: &str, hash: u64, value_type: ValueType) -> Arc<FlagUsage> {
        let mut flags = self.flags.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = || {
            // Ids are never reused: past the limit, reads are no longer counted
            // rather than counted into another flag's cells.
            let id = if self.uncounted {
                NOT_COUNTED
            } else {
                let next = |n: u32| (n < ID_LIMIT).then_some(n + 1);
                NEXT_ID.fetch_update(Ordering::Relaxed, Ordering::Relaxed, next).unwrap_or_else(|_| {
                    tracing::warn!(
                        flag = key,
                        "ff: too many flag counters made in this process; not counting this flag"
                    );
                    NOT_COUNTED
                })
            };
            if id != NOT_COUNTED {
                set_live(id, true);
            }
            Arc::new(FlagUsage { key: SmolStr::new(key), value_type, id })
        };
        match flags.entry(hash, |u| u.key == key, |u| key_hash(&u.key)) {
            hashbrown::hash_table::Entry::Occupied(mut e) => {
                if e.get().value_type != value_type {
                    // The type changed: old counts would be labelled wrongly.
                    *e.get_mut() = fresh();
                }
                e.get().clone()
            }
            hashbrown::hash_table::Entry::Vacant(e) => e.insert(fresh()).get().clone(),
        }
    }

    /// Counts a read of a key no snapshot has.
    #[cold]
    pub(crate) fn unknown(&self, key: &'static str) {
        if let Ok(known) = self.unknown.read()
            && let Some(n) = known.get(key)
        {
            n.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Ok(mut all) = self.unknown.write() {
            all.entry(key).or_default().fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes the counts since the last call (evaluations go on meanwhile: none is lost).
    pub fn collect(&self) -> (Vec<UsageCount>, Vec<(String, u64)>) {
        let _one = self.collecting.lock().unwrap_or_else(|e| e.into_inner());
        let flags: Vec<Arc<FlagUsage>> = {
            let flags = self.flags.lock().unwrap_or_else(|e| e.into_inner());
            flags.iter().cloned().collect()
        };
        let position: HashMap<u32, usize> = flags.iter().enumerate().map(|(i, f)| (f.id, i)).collect();
        let mut totals = vec![[0u64; CELLS]; flags.len()];
        let threads: Vec<Arc<ThreadCells>> = THREADS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for t in &threads {
            // Read before the counts: a thread that ended has written its last count.
            let alive = t.alive.load(Ordering::Acquire);
            let mut chunks = t.chunks.lock().unwrap_or_else(|e| e.into_inner());
            let live = (!alive).then(|| LIVE.lock().unwrap_or_else(|e| e.into_inner()).clone());
            chunks.retain(|c| {
                let mut keep = alive;
                for lane in 0..LANES {
                    let id = c.index as usize * LANES + lane;
                    let Some(&at) = position.get(&(id as u32)) else {
                        // Another `Usage`'s flag: an ended thread's chunk waits for its collector.
                        let is_live = live
                            .as_ref()
                            .and_then(|l| l.get(id / 64))
                            .is_some_and(|w| w & 1 << (id % 64) != 0);
                        keep |= is_live && c.pending(lane);
                        continue;
                    };
                    for (total, (n, seen)) in totals[at].iter_mut().zip(c.counts.iter().zip(&c.seen)) {
                        let now = n[lane].load(Ordering::Relaxed);
                        *total += u64::from(now.wrapping_sub(seen[lane].swap(now, Ordering::Relaxed)));
                    }
                }
                // An ended thread's counts are final once taken.
                keep
            });
        }
        THREADS.lock().unwrap_or_else(|e| e.into_inner()).retain(|t| {
            t.alive.load(Ordering::Acquire) || !t.chunks.lock().map(|c| c.is_empty()).unwrap_or(true)
        });
        let mut counts = Vec::new();
        for (usage, cells) in flags.iter().zip(&totals) {
            let (key, ty) = (usage.key.as_str(), usage.value_type);
            for (i, n) in cells.iter().enumerate().filter(|(_, n)| **n > 0) {
                let (reason, v) = (i / WIDTH, i % WIDTH);
                counts.push(UsageCount {
                    key: key.to_owned(),
                    reason: REASON_NAMES[reason].into(),
                    variant: variant_label(ty, reason, v),
                    count: *n,
                });
            }
        }
        // Labels can repeat (an int's `off` at any variant number): add them up.
        counts.sort_by(|a, b| (&a.key, &a.reason, &a.variant).cmp(&(&b.key, &b.reason, &b.variant)));
        counts.dedup_by(|next, kept| {
            let same = (&next.key, &next.reason, &next.variant) == (&kept.key, &kept.reason, &kept.variant);
            if same {
                kept.count += next.count;
            }
            same
        });
        let unknown = match self.unknown.read() {
            Ok(u) => u
                .iter()
                .map(|(k, n)| (k.to_string(), n.swap(0, Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            Err(_) => Vec::new(),
        };
        (counts, unknown)
    }
}

/// A day of usage as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The flag.
    pub key: String,
    /// The UTC day.
    pub day: time::Date,
    /// Reason kind, as in [`UsageCount`].
    pub reason: String,
    /// Value or variant, as in [`UsageCount`].
    pub variant: String,
    /// Evaluations that day, over all instances.
    pub count: u64,
    /// The last flush that counted any.
    #[serde(with = "time::serde::rfc3339")]
    pub last_at: OffsetDateTime,
}

/// A key that code read and the store did not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnknownFlag {
    /// The key.
    pub key: String,
    /// Reads, over all instances.
    pub count: u64,
    /// First flush that reported it.
    #[serde(with = "time::serde::rfc3339")]
    pub first_at: OffsetDateTime,
    /// Last flush that reported it.
    #[serde(with = "time::serde::rfc3339")]
    pub last_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(usage: &Usage) -> HashMap<(String, String, String), u64> {
        let (counts, _) = usage.collect();
        counts.into_iter().map(|c| ((c.key, c.reason, c.variant), c.count)).collect()
    }

    #[test]
    fn counts_from_every_thread_including_ended_ones_each_once() {
        let usage = Usage::default();
        let a = usage.flag("A", key_hash("A"), ValueType::Bool);
        let b = usage.flag("B", key_hash("B"), ValueType::Int);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        record(a.id(), Reason::Global, 1);
                    }
                    record(b.id(), Reason::Rule(2), 2);
                });
            }
        });
        // Every counting thread has ended: their cells are read once, then dropped.
        record(a.id(), Reason::Disabled, 0);
        let first = count(&usage);
        let key = |k: &str, r: &str, v: &str| (k.to_owned(), r.to_owned(), v.to_owned());
        assert_eq!(first.get(&key("A", "global", "true")), Some(&4000));
        assert_eq!(first.get(&key("A", "disabled", "false")), Some(&1));
        assert_eq!(first.get(&key("B", "rule", "rule:2")), Some(&4));
        assert_eq!(first.len(), 3);
        assert!(count(&usage).is_empty(), "a second collection takes nothing twice");
        record(a.id(), Reason::Disabled, 0);
        assert_eq!(count(&usage), HashMap::from([(key("A", "disabled", "false"), 1)]));
    }

    #[test]
    fn another_usage_takes_only_its_own_flags() {
        let (one, two) = (Usage::default(), Usage::default());
        let a = one.flag("A", key_hash("A"), ValueType::Bool);
        let also_a = two.flag("A", key_hash("A"), ValueType::Bool);
        record(a.id(), Reason::Global, 1);
        record(also_a.id(), Reason::Global, 0);
        assert_eq!(count(&two).values().sum::<u64>(), 1);
        assert_eq!(count(&one).values().sum::<u64>(), 1);
    }

    #[test]
    fn an_ended_threads_counts_wait_for_each_usage_that_has_some() {
        let (one, two) = (Usage::default(), Usage::default());
        // Two flags of different `Usage`s counted in one chunk (ids run on across usages).
        let (a, b) = (0..100)
            .map(|i| {
                (
                    one.flag(&format!("A{i}"), key_hash("A"), ValueType::Bool),
                    two.flag("B", key_hash("B"), ValueType::Bool),
                )
            })
            .find(|(a, b)| a.id() as usize / LANES == b.id() as usize / LANES)
            .expect("adjacent ids");
        std::thread::scope(|s| {
            s.spawn(|| {
                record(a.id(), Reason::Global, 1);
                record(b.id(), Reason::Global, 0);
                record(b.id(), Reason::Global, 0);
            });
        });
        assert_eq!(count(&one).values().sum::<u64>(), 1);
        assert_eq!(
            count(&two).values().sum::<u64>(),
            2,
            "the ended thread's chunk was kept for the other usage"
        );
        assert!(count(&one).is_empty() && count(&two).is_empty(), "each count taken once");
    }

    #[test]
    fn ids_past_the_thread_local_are_counted_in_their_own_lanes() {
        let i = reason_index(Reason::Global) * WIDTH + 1;
        // Ids no test process hands out, so no other test's flag shares their counts
        // (the ids below `LOW * LANES`, in the thread-local, are every other test's).
        for id in [ID_LIMIT / 2 + 21, ID_LIMIT / 2 + 16 * 600, ID_LIMIT - 1] {
            std::thread::spawn(move || {
                record(id, Reason::Global, 1);
                record(id, Reason::Global, 1);
                LOCAL.with(|l| {
                    let c = l.chunk(id).expect("a chunk");
                    assert_eq!(c.index as usize, id as usize / LANES);
                    let lanes: Vec<u32> = c.counts[i].iter().map(|n| n.load(Ordering::Relaxed)).collect();
                    let want: Vec<u32> =
                        (0..LANES).map(|l| if l == id as usize % LANES { 2 } else { 0 }).collect();
                    assert_eq!(lanes, want, "id {id}");
                });
            })
            .join()
            .expect("counted");
        }
    }

    #[test]
    fn an_uncounted_usage_counts_nothing_and_keeps_no_cells() {
        let usage = Usage::uncounted();
        let a = usage.flag("A", key_hash("A"), ValueType::Bool);
        assert_eq!(a.id(), NOT_COUNTED);
        record(a.id(), Reason::Global, 1);
        assert!(count(&usage).is_empty());
        assert!(LOCAL.with(|l| l.chunk(NOT_COUNTED).is_none()));
    }

    #[test]
    fn a_type_change_starts_the_flag_afresh() {
        let usage = Usage::default();
        let old = usage.flag("A", key_hash("A"), ValueType::Bool);
        record(old.id(), Reason::Global, 1);
        let new = usage.flag("A", key_hash("A"), ValueType::Int);
        assert_ne!(old.id(), new.id());
        record(new.id(), Reason::Global, 0);
        drop(old);
        let counts = count(&usage);
        assert_eq!(counts.len(), 1, "{counts:?}");
        assert!(counts.contains_key(&("A".to_owned(), "global".to_owned(), "value".to_owned())));
    }
}
