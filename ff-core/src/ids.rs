//! Sets of ids probed with a hash computed once per request: a request's user id
//! is hashed when its `EvalContext` is made, and every override table, list and
//! segment lookup reuses that hash.

use std::hash::BuildHasher;
use std::sync::LazyLock;

use hashbrown::HashTable;
use smol_str::SmolStr;

/// The key of every id table's hash, random per process: id lists and segments come
/// from editors, and with an unkeyed hash they could pick ids that all collide and
/// make tables slow to build and to probe.
static KEY: LazyLock<foldhash::fast::RandomState> = LazyLock::new(Default::default);

/// The hash every id table uses.
#[inline]
pub(crate) fn id_hash(id: &str) -> u64 {
    use std::hash::Hasher;
    // The bytes alone: `str`'s `Hash` also writes a terminator, which costs a round.
    let mut h = KEY.build_hasher();
    h.write(id.as_bytes());
    h.finish()
}

/// String equality for the short keys and ids of the hot path, inline: a call
/// into `memcmp` costs more than the comparison itself at these lengths.
#[inline]
pub(crate) fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // Two overlapping words cover 8..=16 bytes, two overlapping half-words 4..8.
    match n {
        0..4 => a.iter().zip(b).all(|(x, y)| x == y),
        4..8 => a.first_chunk::<4>() == b.first_chunk() && a.last_chunk::<4>() == b.last_chunk(),
        8..=16 => a.first_chunk::<8>() == b.first_chunk() && a.last_chunk::<8>() == b.last_chunk(),
        _ => a == b,
    }
}

/// Ids inline in the table (up to 23 bytes), so a probe that hits compares
/// without a pointer chase.
#[derive(Debug, Default, Clone)]
pub(crate) struct IdSet(HashTable<SmolStr>);

impl IdSet {
    pub(crate) fn insert(&mut self, id: &str) {
        let hash = id_hash(id);
        if self.0.find(hash, |s| s == id).is_none() {
            self.0.insert_unique(hash, SmolStr::new(id), |s| id_hash(s));
        }
    }

    /// `hash` must be `id_hash(id)`.
    #[inline]
    pub(crate) fn contains(&self, id: &str, hash: u64) -> bool {
        self.0.find(hash, |s| str_eq(s, id)).is_some()
    }
}

impl<'a> FromIterator<&'a str> for IdSet {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut set = IdSet(HashTable::with_capacity(iter.size_hint().0));
        iter.for_each(|id| set.insert(id));
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_eq_agrees_with_eq_at_every_length() {
        let base = "abcdefghijklmnopqrstuvwxyz";
        for n in 0..=base.len() {
            let a = &base[..n];
            assert!(str_eq(a, a));
            for at in 0..n {
                let mut b = a.as_bytes().to_vec();
                b[at] = b'_';
                let b = String::from_utf8(b).unwrap();
                assert!(!str_eq(a, &b), "{a:?} {b:?}");
            }
            if n > 0 {
                assert!(!str_eq(a, &base[..n - 1]));
            }
        }
    }

    #[test]
    fn sets_find_what_was_inserted() {
        let set: IdSet = ["alice", "bob", "a-user-id-longer-than-23-bytes"].into_iter().collect();
        for id in ["alice", "bob", "a-user-id-longer-than-23-bytes"] {
            assert!(set.contains(id, id_hash(id)), "{id}");
        }
        assert!(!set.contains("carol", id_hash("carol")));
        assert!(!set.contains("", id_hash("")));
    }
}
