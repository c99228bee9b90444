//! Sets of ids probed with a hash computed once per request: a request's user id
//! is hashed when its `EvalContext` is made, and every override table, list and
//! segment lookup reuses that hash.

use std::hash::BuildHasher;
use std::sync::LazyLock;

use hashbrown::HashTable;

/// The key of every id table's hash, random per process: id lists and segments come
/// from editors, and with an unkeyed hash they could pick ids that all collide and
/// make tables slow to build and to probe.
static KEY: LazyLock<foldhash::fast::RandomState> = LazyLock::new(Default::default);

/// The hash every id table uses.
#[inline]
pub(crate) fn id_hash(id: &str) -> u64 {
    id_hash_bytes(id.as_bytes())
}

#[inline]
fn id_hash_bytes(id: &[u8]) -> u64 {
    use std::hash::Hasher;
    // The bytes alone: `str`'s `Hash` also writes a terminator, which costs a round.
    let mut h = KEY.build_hasher();
    h.write(id);
    h.finish()
}

/// String equality for the short keys and ids of the hot path, inline: a call
/// into `memcmp` costs more than the comparison itself at these lengths.
#[inline]
pub(crate) fn str_eq(a: &str, b: &str) -> bool {
    bytes_eq(a.as_bytes(), b.as_bytes())
}

#[inline]
fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // Overlapping chunks: two half-words cover 4..8 bytes, two words 8..=16.
    match n {
        0..4 => a.iter().zip(b).all(|(x, y)| x == y),
        4..8 => a.first_chunk::<4>() == b.first_chunk() && a.last_chunk::<4>() == b.last_chunk(),
        8..=16 => a.first_chunk::<8>() == b.first_chunk() && a.last_chunk::<8>() == b.last_chunk(),
        _ => long_eq(a, b),
    }
}

/// Equal lengths over 16 bytes, out of line so the short case stays small.
#[inline(never)]
fn long_eq(a: &[u8], b: &[u8]) -> bool {
    chunks_eq(a, b)
}

/// Id equality, inline at every length up to 48 bytes: ids are often UUIDs (36).
#[inline]
fn id_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() == b.len() && a.len() > 16 { chunks_eq(a, b) } else { bytes_eq(a, b) }
}

/// Equal lengths over 16 bytes: three overlapping 16-byte chunks up to 48.
#[inline]
fn chunks_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n > 48 {
        return a == b;
    }
    let mid = |s: &[u8]| s.get(n / 2 - 8..).and_then(|m| m.first_chunk::<16>().copied());
    a.first_chunk::<16>() == b.first_chunk() && a.last_chunk::<16>() == b.last_chunk() && mid(a) == mid(b)
}

/// A set of ids kept once, in insertion order (duplicates too), so the list it was
/// built from can be given back exactly: the ids sit end to end in one buffer, each
/// behind its length (one byte, or 0xFF and four bytes). Sets of more than [`SCAN`]
/// ids are indexed by a table of offsets into the buffer, found by the id's hash.
#[derive(Debug, Default, Clone)]
pub(crate) struct IdSet {
    data: Box<[u8]>,
    len: u32,
    /// Offsets of distinct ids; `None` for short sets, which are scanned.
    table: Option<HashTable<u32>>,
}

/// Sets this short are scanned: comparing a few ids beats hashing one.
const SCAN: usize = 8;
/// The header of an id of 255 bytes or more: four bytes of length follow.
const LONG: u8 = 0xFF;

/// The id at `at`, and where the next one starts.
#[inline]
fn entry(data: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let (start, len) = match *data.get(at)? {
        LONG => (at + 5, u32::from_le_bytes(*data.get(at + 1..at + 5)?.first_chunk()?) as usize),
        n => (at + 1, n as usize),
    };
    Some((data.get(start..start + len)?, start + len))
}

impl IdSet {
    /// How many ids it was built from (duplicates included).
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// The ids in the order they were given, duplicates included.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            let (bytes, next) = entry(&self.data, at)?;
            at = next;
            // Every id was a `str`.
            Some(std::str::from_utf8(bytes).unwrap_or_default())
        })
    }

    /// [`contains`](Self::contains) for an id not hashed yet: a short set is
    /// scanned without hashing it.
    #[inline]
    pub(crate) fn contains_hashing(&self, id: &str) -> bool {
        if self.table.is_none() { self.scan(id.as_bytes()) } else { self.contains(id, id_hash(id)) }
    }

    fn scan(&self, id: &[u8]) -> bool {
        let mut at = 0;
        while let Some((bytes, next)) = entry(&self.data, at) {
            if id_eq(bytes, id) {
                return true;
            }
            at = next;
        }
        false
    }

    /// `hash` must be `id_hash(id)`.
    #[inline]
    pub(crate) fn contains(&self, id: &str, hash: u64) -> bool {
        let id = id.as_bytes();
        match &self.table {
            Some(table) => table
                .find(hash, |&at| entry(&self.data, at as usize).is_some_and(|(b, _)| id_eq(b, id)))
                .is_some(),
            None => self.scan(id),
        }
    }
}

impl<'a> FromIterator<&'a str> for IdSet {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> Self {
        let ids: Vec<&str> = iter.into_iter().collect();
        let size: usize = ids.iter().map(|id| id.len() + if id.len() < LONG as usize { 1 } else { 5 }).sum();
        let mut data = Vec::with_capacity(size);
        let mut starts = Vec::with_capacity(ids.len());
        for id in &ids {
            starts.push(data.len() as u32);
            if id.len() < LONG as usize {
                data.push(id.len() as u8);
            } else {
                data.push(LONG);
                data.extend_from_slice(&(id.len() as u32).to_le_bytes());
            }
            data.extend_from_slice(id.as_bytes());
        }
        let data = data.into_boxed_slice();
        let table = (ids.len() > SCAN).then(|| {
            let rehash = |&o: &u32| entry(&data, o as usize).map_or(0, |(b, _)| id_hash_bytes(b));
            let mut table = HashTable::with_capacity(ids.len());
            for (id, at) in ids.iter().zip(starts) {
                let hash = id_hash(id);
                let same = |&o: &u32| entry(&data, o as usize).is_some_and(|(b, _)| b == id.as_bytes());
                if table.find(hash, same).is_none() {
                    table.insert_unique(hash, at, rehash);
                }
            }
            table
        });
        IdSet { data, len: ids.len() as u32, table }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_eq_agrees_with_eq_at_every_length() {
        let base = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
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
    fn sets_give_back_their_list_exactly_and_find_each_id() {
        let uuid = "0f8b3c1e-9a2d-4e5f-a6b7-c8d9e0f1a2b3";
        let upper = "0F8B3C1E-9A2D-4E5F-A6B7-C8D9E0F1A2B3";
        let edge = "y".repeat(254);
        let long = "x".repeat(300);
        let lists: Vec<Vec<&str>> = vec![
            vec![],
            vec!["a", uuid, "a"],
            vec![uuid, upper, "", "not-a-uuid-0f8b3c1e-9a2d-4e5f-a6b7", &long, &edge],
            (0..40).map(|i| ["u1", "u2", uuid, upper, "é", &long][i % 6]).collect(),
        ];
        for list in lists {
            let set: IdSet = list.iter().copied().collect();
            assert_eq!(set.iter().collect::<Vec<_>>(), list, "given back in order, duplicates kept");
            assert_eq!(set.len(), list.len());
            for id in &list {
                assert!(set.contains(id, id_hash(id)), "{id}");
            }
            for id in
                ["0f8b3c1e-9a2d-4e5f-a6b7-c8d9e0f1a2b4", "u3", "0f8b3c1e-9a2d-4e5f-a6b7-c8d9e0f1a2b", "x"]
            {
                assert!(!set.contains(id, id_hash(id)), "{id}");
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
