//! `KeyIndex`: slot numbers by a precomputed 64-bit hash, in one array probed linearly.
//!
//! A flag read starts here. Each entry is one word, the hash's low half beside the
//! number, so a probe is a load and a compare, a thousand flags' index fits in
//! 16 KiB, and the slot's own key is compared only when the half matches (nearly
//! always a hit). A hashbrown table costs a control-byte group, a bitmask walk and
//! a second cache line for the bucket on every read.
//!
//! In front of it, once a table is loaded, a perfect hash ([`Perfect`]) gives each
//! key held its own 4-byte entry, without a probe: a thousand flags' entries are
//! 4 KiB and their seeds 1 KiB, which stay in L1 while a request reads many flags,
//! where the 16 KiB of the index did not (a cache miss per flag read).

/// Homes are `hash & (cap - 1)` with at most three values per four homes; a probe
/// walks forward from its home and never wraps (entries that would pass the end
/// are appended), so a find is one slice walk with no bounds check per step.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyIndex {
    /// `(hash as u32) << 32 | value`; `FREE` is a free entry (values are below
    /// `u32::MAX`). The home is in the low half, so the index grows without the keys.
    entries: Vec<u64>,
    /// A power of two (at most 2^32), or 0 when empty.
    cap: usize,
    len: usize,
    /// Empty until [`seal`](Self::seal) (a loaded table).
    perfect: Perfect,
    sealed: bool,
}

/// A perfect hash over the values an index held when it was built (PTHash's
/// scheme with XOR displacement): a bucket by the hash's high bits, and per bucket
/// a seed, chosen so that every key of the bucket lands on a position of its own,
/// `(hash ^ seed) & (len - 1)`. A read is a shift, two loads, an XOR and an AND;
/// the caller checks the key in the slot the value names (a key the map does not
/// hold reads another key's value, or `P_FREE`). Keys added later take their
/// position if it is free, or the index; the map is rebuilt when too many do.
#[derive(Clone, Debug, Default)]
struct Perfect {
    /// By bucket (a power of two of them, about half the keys): few keys each, so
    /// the last placed are alone and take any free position.
    seeds: Vec<u16>,
    /// Shifts a hash's low half down to its bucket.
    shift: u32,
    /// By position (a power of two, at least the keys): `P_FREE`, or a value.
    map: Vec<u32>,
    /// Values the index holds that the map does not.
    missing: usize,
    /// Values added since the map was built.
    added: usize,
}

/// No value: values are below `u32::MAX`.
const P_FREE: u32 = u32::MAX;
/// Seeds tried per bucket when building.
const SEED_TRIES: usize = 4096;

impl Perfect {
    /// A map of `keys` (`(hash as u32, value)`): 5 to 10 bytes per key.
    fn build(keys: &[(u32, u32)]) -> Self {
        if keys.is_empty() {
            return Perfect::default();
        }
        let n = keys.len();
        let buckets = (n / 2).next_power_of_two();
        let mut p = Perfect {
            seeds: vec![0; buckets],
            shift: 32 - buckets.trailing_zeros(),
            map: vec![P_FREE; n.next_power_of_two().max(8)],
            missing: 0,
            added: 0,
        };
        let mut keyed: Vec<(usize, u32, u32)> = keys.iter().map(|&(h, v)| (p.bucket(h), h, v)).collect();
        keyed.sort_unstable();
        let mut groups: Vec<&[(usize, u32, u32)]> = keyed.chunk_by(|a, b| a.0 == b.0).collect();
        // The largest buckets first, while most positions are free; a bucket's first
        // key tries each free position in turn.
        groups.sort_by_key(|g| std::cmp::Reverse(g.len()));
        let mask = p.map.len() - 1;
        for group in groups {
            let Some(&(b, h0, _)) = group.first() else { continue };
            let at = |h: u32, seed: u16| (h ^ u32::from(seed)) as usize & mask;
            let fits = |seed: u16| {
                group.iter().enumerate().all(|(i, &(_, h, _))| {
                    let s = at(h, seed);
                    p.map.get(s) == Some(&P_FREE) && group.iter().take(i).all(|&(_, g, _)| at(g, seed) != s)
                })
            };
            // The seeds that put the first key on a free position, a bounded number:
            // past 2^16 positions a seed moves a key within its block of 2^16 only, and
            // a bucket that finds no place is left to the index.
            let free = (0..p.map.len()).filter(|s| p.map.get(*s) == Some(&P_FREE));
            let seeds = free.filter_map(|s| u16::try_from((h0 ^ s as u32) & 0xFFFF).ok());
            match seeds.take(SEED_TRIES).find(|seed| fits(*seed)) {
                Some(seed) => {
                    if let Some(slot) = p.seeds.get_mut(b) {
                        *slot = seed;
                    }
                    for &(_, h, v) in group {
                        if let Some(e) = p.map.get_mut(at(h, seed)) {
                            *e = v;
                        }
                    }
                }
                None => p.missing += group.len(),
            }
        }
        p
    }

    #[inline]
    fn bucket(&self, h: u32) -> usize {
        (u64::from(h) >> self.shift) as usize
    }

    /// Where `h` goes, if the map is built.
    #[inline]
    fn spot(&self, h: u32) -> Option<usize> {
        let seed = *self.seeds.get(self.bucket(h))?;
        Some((h ^ u32::from(seed)) as usize & self.map.len().wrapping_sub(1))
    }

    #[inline]
    fn get(&self, hash: u64) -> Option<u32> {
        self.map.get(self.spot(hash as u32)?).copied()
    }

    /// Covers a value just added, if its position is free; `false` without a map.
    fn insert(&mut self, h: u32, value: u32) -> bool {
        let Some(s) = self.spot(h) else { return false };
        self.added += 1;
        match self.map.get_mut(s) {
            Some(e) if *e == P_FREE => *e = value,
            _ => self.missing += 1,
        }
        true
    }

    fn remove(&mut self, h: u32, value: u32) {
        let Some(s) = self.spot(h) else { return };
        match self.map.get_mut(s) {
            Some(e) if *e == value => *e = P_FREE,
            _ => self.missing = self.missing.saturating_sub(1),
        }
    }
}

/// The homes to hold `n` values: a power of two with `n` at most three quarters of it.
fn capacity_for(n: usize) -> usize {
    if n == 0 { 0 } else { (n * 4).div_ceil(3).next_power_of_two().max(8) }
}

const FREE: u64 = u64::MAX;

#[inline]
fn entry(hash: u64, value: u32) -> u64 {
    (hash & 0xffff_ffff) << 32 | u64::from(value)
}

impl KeyIndex {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        hash as usize & self.cap.wrapping_sub(1)
    }

    /// The value at `hash`'s position in the perfect hash: the value of `hash`'s key
    /// if the index holds it, else another's or `u32::MAX` (the caller checks the key).
    #[inline]
    pub(crate) fn perfect(&self, hash: u64) -> Option<u32> {
        self.perfect.get(hash)
    }

    fn build_perfect(&mut self) {
        let keys: Vec<(u32, u32)> =
            self.entries.iter().filter(|e| **e != FREE).map(|e| ((e >> 32) as u32, *e as u32)).collect();
        self.perfect = Perfect::build(&keys);
    }

    /// Where the value with `hash` for which `eq` holds is.
    #[inline]
    fn position(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<usize> {
        let home = self.home(hash);
        let tag = hash & 0xffff_ffff;
        for (i, &e) in self.entries.get(home..)?.iter().enumerate() {
            if e == FREE {
                return None;
            }
            if e >> 32 == tag && eq(e as u32) {
                return Some(home + i);
            }
        }
        None
    }

    #[inline]
    pub(crate) fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        self.find_map(hash, |v| eq(v).then_some(v))
    }

    /// The first `Some` that `f` makes of a value with `hash`.
    #[inline]
    pub(crate) fn find_map<R>(&self, hash: u64, mut f: impl FnMut(u32) -> Option<R>) -> Option<R> {
        let tag = hash & 0xffff_ffff;
        for &e in self.entries.get(self.home(hash)..)? {
            if e == FREE {
                return None;
            }
            if e >> 32 == tag
                && let Some(r) = f(e as u32)
            {
                return Some(r);
            }
        }
        None
    }

    /// Adds a value whose key the index does not hold (below `u32::MAX`).
    pub(crate) fn insert_unique(&mut self, hash: u64, value: u32) {
        if capacity_for(self.len + 1) > self.cap {
            self.rebuild(capacity_for((self.len + 1).max(self.len * 2)));
        }
        debug_assert!(value != u32::MAX);
        self.place(entry(hash, value));
        self.len += 1;
        // Rebuilt when many added keys miss it (at most once per sixteenth of the keys
        // added, however many the map could not place), or when the table was sealed
        // empty.
        let limit = self.len / 16 + 4;
        let placed = self.perfect.insert(hash as u32, value);
        if self.sealed && (!placed || (self.perfect.missing > limit && self.perfect.added > limit)) {
            self.build_perfect();
        }
    }

    fn place(&mut self, e: u64) {
        let home = self.home(e >> 32);
        let free = self.entries.iter().skip(home).position(|e| *e == FREE);
        match free.and_then(|i| self.entries.get_mut(home + i)) {
            Some(slot) => *slot = e,
            None => self.entries.push(e),
        }
    }

    /// Removes the value found; the entries after it that may fill the hole move
    /// back, so no probe stops early at it.
    pub(crate) fn remove(&mut self, hash: u64, eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut hole = self.position(hash, eq)?;
        let removed = std::mem::replace(self.entries.get_mut(hole)?, FREE);
        self.len -= 1;
        self.perfect.remove(hash as u32, removed as u32);
        for j in hole + 1..self.entries.len() {
            let Some(&e) = self.entries.get(j).filter(|e| **e != FREE) else { break };
            // Probes run forward: an entry whose home is at or before the hole passes it.
            if self.home(e >> 32) <= hole {
                self.entries.swap(hole, j);
                hole = j;
            }
        }
        Some(removed as u32)
    }

    pub(crate) fn reserve(&mut self, additional: usize) {
        let want = capacity_for(self.len + additional);
        if want > self.cap {
            self.rebuild(want);
        }
    }

    pub(crate) fn shrink_to_fit(&mut self) {
        let want = capacity_for(self.len);
        if want < self.cap {
            self.rebuild(want);
        }
        self.entries.shrink_to_fit();
    }

    /// Builds the perfect hash over the values held (a table is loaded).
    pub(crate) fn seal(&mut self) {
        self.sealed = true;
        self.build_perfect();
    }

    fn rebuild(&mut self, cap: usize) {
        let old = std::mem::replace(&mut self.entries, vec![FREE; cap]);
        self.cap = cap;
        for e in old.into_iter().filter(|e| *e != FREE) {
            self.place(e);
        }
        if self.sealed {
            self.build_perfect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(k: u64) -> u64 {
        (k ^ 0x5555).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    /// The perfect hash of a sealed index: each key at a position of its own, keys
    /// added later at theirs if free (else in the index, and the map rebuilt when
    /// many are), removed keys' positions freed; what the index holds is found.
    #[test]
    fn a_sealed_index_places_each_key() {
        let mut index = KeyIndex::default();
        let n = 1000u64;
        for k in 0..n {
            index.insert_unique(spread(k), k as u32);
        }
        assert_eq!(index.perfect(spread(0)), None, "not sealed");
        index.seal();
        let placed = (0..n).filter(|k| index.perfect(spread(*k)) == Some(*k as u32)).count();
        assert!(placed >= 995, "{placed} of {n} placed");
        assert!(index.perfect.map.len() * 4 + index.perfect.seeds.len() * 2 <= 6 * n as usize, "size");
        let find = |index: &KeyIndex, k: u64| {
            let hinted = index.perfect(spread(k)).filter(|v| u64::from(*v) == k);
            hinted.or_else(|| index.find(spread(k), |v| u64::from(v) == k))
        };
        for k in n..n + 300 {
            index.insert_unique(spread(k), k as u32);
        }
        assert!(index.perfect.missing <= index.len() / 16 + 4, "rebuilt when many miss");
        for k in (0..n + 300).step_by(3) {
            assert_eq!(index.remove(spread(k), |v| u64::from(v) == k), Some(k as u32));
            assert_ne!(index.perfect(spread(k)), Some(k as u32), "{k} freed");
        }
        for k in 0..n + 400 {
            let held = k < n + 300 && k % 3 != 0;
            assert_eq!(find(&index, k), held.then_some(k as u32), "{k}");
        }
    }

    /// A table sealed empty gets its map with its first key; keys the map cannot
    /// place (all sharing their hash's low half) are found through the index, and
    /// adding more of them rebuilds the map once per sixteenth of the keys, not on
    /// every insert.
    #[test]
    fn a_sealed_index_rebuilds_its_map_when_it_should() {
        let mut index = KeyIndex::default();
        index.seal();
        assert_eq!(index.perfect(spread(1)), None);
        index.insert_unique(spread(1), 1);
        assert_eq!(index.perfect(spread(1)), Some(1), "built with the first key");

        let same = |k: u64| (k << 32) | 7;
        let mut index = KeyIndex::default();
        for k in 0..200 {
            index.insert_unique(same(k), k as u32);
        }
        index.seal();
        assert!(index.perfect.missing >= 199, "one bucket, no seed separates them");
        for k in 200..205 {
            index.insert_unique(same(k), k as u32);
        }
        assert_eq!(index.perfect.added, 5, "no rebuild yet");
        for k in 205..240 {
            index.insert_unique(same(k), k as u32);
        }
        assert!(index.perfect.added < 35, "rebuilt once more were added");
        for k in 0..240 {
            assert_eq!(index.find(same(k), |v| u64::from(v) == k), Some(k as u32), "{k}");
        }
    }

    /// Hashes that pile up on few homes: probes cross each other and wrap around.
    fn crowded(n: u64) -> u64 {
        ((n % 3) << 60) | ((n * 7) % 5) | if n.is_multiple_of(4) { u64::MAX - 2 } else { 0 }
    }

    #[test]
    fn finds_what_it_holds_through_inserts_and_removes() {
        let mut index = KeyIndex::default();
        let mut model = std::collections::BTreeMap::new();
        assert_eq!(index.find(1, |_| true), None, "empty");
        for round in 0..4u64 {
            for n in 0..300u64 {
                let key = n * 31 % 200;
                let hash = crowded(key);
                match (n + round) % 5 {
                    0..=2 if !model.contains_key(&key) => {
                        index.insert_unique(hash, key as u32);
                        model.insert(key, ());
                    }
                    3 => assert_eq!(
                        index.find(hash, |v| u64::from(v) == key).is_some(),
                        model.contains_key(&key)
                    ),
                    _ => assert_eq!(
                        index.remove(hash, |v| u64::from(v) == key),
                        model.remove(&key).map(|_| key as u32)
                    ),
                }
                assert_eq!(index.len(), model.len());
            }
            for key in 0..200u64 {
                let found = index.find(crowded(key), |v| u64::from(v) == key);
                assert_eq!(
                    found,
                    model.contains_key(&key).then_some(key as u32),
                    "key {key} in round {round}"
                );
            }
            index.shrink_to_fit();
            assert_eq!(index.cap, capacity_for(index.len()));
            index.reserve(50);
            // From the second round on, changes go to a sealed index (as to a loaded
            // table): keys that share their hash's low half cannot all have a place.
            index.seal();
            for &key in model.keys() {
                let v = index.perfect(crowded(key));
                // A free position reads as `P_FREE`, which is no value.
                assert!(v.is_none_or(|v| v == P_FREE || model.contains_key(&u64::from(v))), "{key}: {v:?}");
            }
        }
        while let Some(&key) = model.keys().next() {
            assert_eq!(index.remove(crowded(key), |v| u64::from(v) == key), Some(key as u32));
            model.remove(&key);
        }
        assert!(index.is_empty());
        assert_eq!(index.entries.iter().filter(|e| **e != FREE).count(), 0);
    }
}
