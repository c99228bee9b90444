//! `KeyIndex`: values by a precomputed 64-bit hash, in one array probed linearly.
//!
//! A flag read starts here. Each entry keeps the full hash beside the value, so a
//! probe is a load and a compare in one cache line, and the value's own key is
//! compared only when the whole hash matches (nearly always a hit). A hashbrown
//! table costs a control-byte group, a bitmask walk and a second cache line for
//! the bucket on every read.

/// Homes are `hash & (cap - 1)` with at most three values per four homes; a probe
/// walks forward from its home and never wraps (entries that would pass the end
/// are appended), so a find is one slice walk with no bounds check per step.
#[derive(Clone, Debug)]
pub(crate) struct KeyIndex<T> {
    entries: Vec<Option<(u64, T)>>,
    /// A power of two, or 0 when empty.
    cap: usize,
    len: usize,
}

impl<T> Default for KeyIndex<T> {
    fn default() -> Self {
        KeyIndex { entries: Vec::new(), cap: 0, len: 0 }
    }
}

/// The homes to hold `n` values: a power of two with `n` at most three quarters of it.
fn capacity_for(n: usize) -> usize {
    if n == 0 { 0 } else { (n * 4).div_ceil(3).next_power_of_two().max(8) }
}

impl<T> KeyIndex<T> {
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
    fn position(&self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<usize> {
        let home = self.home(hash);
        for (i, e) in self.entries.get(home..)?.iter().enumerate() {
            let (h, v) = e.as_ref()?;
            if *h == hash && eq(v) {
                return Some(home + i);
            }
        }
        None
    }

    #[inline]
    pub(crate) fn find(&self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<&T> {
        for e in self.entries.get(self.home(hash)..)? {
            let (h, v) = e.as_ref()?;
            if *h == hash && eq(v) {
                return Some(v);
            }
        }
        None
    }

    /// Adds a value whose key the index does not hold.
    pub(crate) fn insert_unique(&mut self, hash: u64, value: T) {
        if capacity_for(self.len + 1) > self.cap {
            self.rebuild(capacity_for((self.len + 1).max(self.len * 2)));
        }
        self.place(hash, value);
        self.len += 1;
    }

    fn place(&mut self, hash: u64, value: T) {
        let home = self.home(hash);
        let free = self.entries.iter().skip(home).position(Option::is_none);
        match free.and_then(|i| self.entries.get_mut(home + i)) {
            Some(e) => *e = Some((hash, value)),
            None => self.entries.push(Some((hash, value))),
        }
    }

    /// Removes the value found; the entries after it that may fill the hole move
    /// back, so no probe stops early at it.
    pub(crate) fn remove(&mut self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<T> {
        let mut hole = self.position(hash, eq)?;
        let (_, removed) = self.entries.get_mut(hole)?.take()?;
        self.len -= 1;
        for j in hole + 1..self.entries.len() {
            let Some(Some((h, _))) = self.entries.get(j) else { break };
            // Probes run forward: an entry whose home is at or before the hole passes it.
            if self.home(*h) <= hole {
                self.entries.swap(hole, j);
                hole = j;
            }
        }
        Some(removed)
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
        let old = std::mem::replace(&mut self.entries, (0..cap).map(|_| None).collect());
        self.cap = cap;
        for (hash, value) in old.into_iter().flatten() {
            self.place(hash, value);
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
        assert_eq!(index.find(1, |_: &u64| true), None, "empty");
        for round in 0..4u64 {
            for n in 0..300u64 {
                let key = n * 31 % 200;
                let hash = crowded(key);
                match (n + round) % 5 {
                    0..=2 if !model.contains_key(&key) => {
                        index.insert_unique(hash, key);
                        model.insert(key, ());
                    }
                    3 => assert_eq!(index.find(hash, |v| *v == key).is_some(), model.contains_key(&key)),
                    _ => assert_eq!(index.remove(hash, |v| *v == key), model.remove(&key).map(|_| key)),
                }
                assert_eq!(index.len(), model.len());
            }
            for key in 0..200u64 {
                let found = index.find(crowded(key), |v| *v == key).copied();
                assert_eq!(found, model.contains_key(&key).then_some(key), "key {key} in round {round}");
            }
            index.shrink_to_fit();
            assert_eq!(index.cap, capacity_for(index.len()));
            index.reserve(50);
        }
        while let Some(&key) = model.keys().next() {
            assert_eq!(index.remove(crowded(key), |v| *v == key), Some(key));
            model.remove(&key);
        }
        assert!(index.is_empty());
        assert_eq!(index.entries.iter().flatten().count(), 0);
    }
}
