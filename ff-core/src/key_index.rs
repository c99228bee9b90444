//! `KeyIndex`: slot numbers by a precomputed 64-bit hash, in one array probed linearly.
//!
//! A flag read starts here. Each entry is one word, the hash's low half beside the
//! number, so a probe is a load and a compare, a thousand flags' index fits in
//! 16 KiB, and the slot's own key is compared only when the half matches (nearly
//! always a hit). A hashbrown table costs a control-byte group, a bitmask walk and
//! a second cache line for the bucket on every read.

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

    fn rebuild(&mut self, cap: usize) {
        let old = std::mem::replace(&mut self.entries, vec![FREE; cap]);
        self.cap = cap;
        for e in old.into_iter().filter(|e| *e != FREE) {
            self.place(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
        while let Some(&key) = model.keys().next() {
            assert_eq!(index.remove(crowded(key), |v| u64::from(v) == key), Some(key as u32));
            model.remove(&key);
        }
        assert!(index.is_empty());
        assert_eq!(index.entries.iter().filter(|e| **e != FREE).count(), 0);
    }
}
