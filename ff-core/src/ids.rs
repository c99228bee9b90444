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

/// The hash every id table uses (of the id's text, also for a UUID held packed).
#[inline]
pub(crate) fn id_hash(id: &str) -> u64 {
    id_hash_bytes(id.as_bytes())
}

/// A digit's value; 0xFF for anything but `0-9a-f` (uppercase UUIDs stay as text).
const HEX: [u8; 256] = {
    let mut t = [0xFF; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Where each byte's two digits start in `8-4-4-4-12`.
const DIGITS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

/// A canonical (lowercase, hyphenated) UUID as its 16 bytes: how id tables hold
/// one, in less than half the room.
#[inline]
pub(crate) fn pack_uuid(id: &str) -> Option<[u8; 16]> {
    let b: &[u8; 36] = id.as_bytes().try_into().ok()?;
    if b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    let mut out = [0u8; 16];
    let mut bad = 0u8;
    for (o, &at) in out.iter_mut().zip(&DIGITS) {
        let (hi, lo) = (HEX[b[at] as usize], HEX[b[at + 1] as usize]);
        bad |= hi | lo;
        *o = hi << 4 | lo;
    }
    (bad & 0xF0 == 0).then_some(out)
}

fn unpack_uuid(u: &[u8]) -> String {
    let mut s = String::with_capacity(36);
    for (i, byte) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

/// An id's UUID packing, found when first needed: a context's user id is packed
/// at most once per request, when a set of UUIDs is first probed with it, or a
/// mixed set holds a UUID with the same hash tag.
pub(crate) type Packed = std::sync::OnceLock<Option<[u8; 16]>>;

/// An id as tables are probed with it: its text, its hash and its UUID packing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe<'a> {
    pub(crate) id: &'a str,
    pub(crate) hash: u64,
    pub(crate) packed: &'a Packed,
}

impl<'a> Probe<'a> {
    /// The id packed, if it is a canonical UUID: packed once per request.
    #[inline]
    fn uuid(&self) -> Option<&[u8; 16]> {
        self.packed.get_or_init(|| pack_uuid(self.id)).as_ref()
    }

    #[inline]
    fn matches(&self, header: u8, bytes: &[u8]) -> bool {
        match header {
            UUID => self.uuid().is_some_and(|u| bytes == u),
            _ => id_eq(bytes, self.id.as_bytes()),
        }
    }
}

#[inline]
fn id_hash_bytes(id: &[u8]) -> u64 {
    use std::hash::Hasher;
    // The bytes alone: `str`'s `Hash` also writes a terminator, which costs a round.
    let mut h = KEY.build_hasher();
    h.write(id);
    h.finish()
}

/// A string of at most 15 bytes as two words: its bytes, then `0x80 | len` in the
/// last byte. Equal strings make equal keys, so a short attribute name or value is
/// matched with two integer compares, no hashing and no length dispatch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Short([u64; 2]);

impl Short {
    /// Longer strings have no key (`is_some` is false).
    #[inline]
    pub(crate) const fn new(s: &str) -> Short {
        let b = s.as_bytes();
        if b.len() > 15 {
            return Short([0, 0]);
        }
        let mut buf = [0u8; 16];
        let mut i = 0;
        while i < b.len() {
            buf[i] = b[i];
            i += 1;
        }
        buf[15] = 0x80 | b.len() as u8;
        let v = u128::from_le_bytes(buf);
        Short([v as u64, (v >> 64) as u64])
    }

    #[inline]
    pub(crate) fn is_some(self) -> bool {
        self.0[1] != 0
    }

    /// Equality without a branch per word.
    #[inline]
    pub(crate) fn same(self, other: Short) -> bool {
        (self.0[0] ^ other.0[0]) | (self.0[1] ^ other.0[1]) == 0
    }
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
/// behind a header, its length (one byte, or 0xFF and four bytes) or 0xFE for a
/// canonical UUID packed into 16 bytes. Sets of more than [`SCAN`] ids are indexed
/// by the id's hash: a set of UUIDs only (every entry 17 bytes, so an entry's
/// number is its place) by a small open-addressed table of tags and numbers; any
/// other set by a table of offsets into the buffer.
#[derive(Debug, Default, Clone)]
pub(crate) struct IdSet {
    /// Shared, with a `Small` table, by the flag's read-table entry.
    data: std::sync::Arc<[u8]>,
    len: u32,
    index: Index,
}

#[derive(Debug, Default, Clone)]
enum Index {
    /// Short sets, scanned.
    #[default]
    Scan,
    /// UUIDs only, at most [`SMALL`] entries: groups of four 16-bit slots.
    Small(std::sync::Arc<[u64]>),
    /// UUIDs only, more entries: 32-bit slots, 8 bits of tag and 24 of entry number + 1.
    Large(Box<[u32]>),
    /// Offsets of distinct ids.
    Table(HashTable<u32>),
}

/// Entries a `Small` table can number.
const SMALL: usize = (1 << 9) - 1;
/// Entries a `Large` table can number.
const LARGE: usize = (1 << 24) - 1;
/// Bytes a packed UUID takes with its header.
const PACKED: usize = 17;

/// The 16 bytes of UUID entry `entry` (every entry of a UUID set is `PACKED` bytes).
#[inline]
fn packed_at(data: &[u8], entry: usize) -> Option<&[u8; 16]> {
    data.get(entry * PACKED + 1..)?.first_chunk::<16>()
}

// A `Small` slot is 0 (empty) or 7 bits of tag (the hash's top bits) over 9 bits of
// entry number + 1; four slots make a group, tested at once (SWAR) for the tag and
// for an empty slot. At most half the slots are used, so nearly every miss reads one
// group and takes two predictable branches; the tags make a wrong compare rare.
const LANE_LOW: u64 = 0x7FFF_7FFF_7FFF_7FFF;
const LANE_HIGH: u64 = 0x8000_8000_8000_8000;
const LANE_ONES: u64 = 0x0001_0001_0001_0001;
const LANE_TAGS: u64 = 0xFE00 * LANE_ONES;

/// The high bit of each 16-bit lane of `x` that is zero (exact: no carry between lanes).
#[inline]
fn zero_lanes(x: u64) -> u64 {
    !(((x & LANE_LOW) + LANE_LOW) | x) & LANE_HIGH
}

#[inline]
fn small_tag(hash: u64) -> u64 {
    (hash >> 57) << 9
}

/// A `Small` table and the buffer it indexes.
pub(crate) type SmallParts = (std::sync::Arc<[u64]>, std::sync::Arc<[u8]>);

/// Whether the `Small` table `groups` over `data` holds the probed id.
#[inline(always)]
pub(crate) fn contains_small(groups: &[u64], data: &[u8], probe: &Probe<'_>) -> bool {
    // An id that is not a canonical UUID is in no UUID set; one that is, is
    // packed once per request.
    let Some(uuid) = probe.uuid() else { return false };
    probe_small(groups, data, probe.hash, uuid)
}

/// [`contains_small`] with the probe inlined: for the read table's list entries,
/// read in a function of their own kind's code.
#[inline(always)]
pub(crate) fn contains_small_inline(groups: &[u64], data: &[u8], probe: &Probe<'_>) -> bool {
    let Some(uuid) = probe.uuid() else { return false };
    probe_small_inline(groups, data, probe.hash, uuid)
}

/// Whether the `Small` table `groups` over `data` holds `uuid`, whose id's hash is
/// `hash`. Out of line but a leaf: inlined, its constants and registers were paid
/// by every targeted read.
#[inline(never)]
fn probe_small(groups: &[u64], data: &[u8], hash: u64, uuid: &[u8; 16]) -> bool {
    probe_small_inline(groups, data, hash, uuid)
}

#[inline(always)]
fn probe_small_inline(groups: &[u64], data: &[u8], hash: u64, uuid: &[u8; 16]) -> bool {
    let mask = groups.len() - 1;
    let tags = small_tag(hash) * LANE_ONES;
    let mut g = hash as usize;
    loop {
        g &= mask;
        let Some(&w) = groups.get(g) else { return false };
        let mut hits = zero_lanes((w & LANE_TAGS) ^ tags);
        while hits != 0 {
            let slot = (w >> (hits.trailing_zeros() & !15)) as usize & 0x1FF;
            hits &= hits - 1;
            if slot != 0 && packed_at(data, slot - 1) == Some(uuid) {
                return true;
            }
        }
        if zero_lanes(w) != 0 {
            return false;
        }
        g += 1;
    }
}

/// The `Small` table of entries with hashes `hashes`, duplicates left out.
fn small_table(data: &[u8], hashes: &[u64]) -> Box<[u64]> {
    let mut groups = vec![0u64; (hashes.len() * 2).next_power_of_two().max(16) / 4];
    let mask = groups.len() - 1;
    'entries: for (entry, &hash) in hashes.iter().enumerate() {
        let tag = small_tag(hash);
        let mut g = hash as usize;
        loop {
            g &= mask;
            let w = groups[g];
            for lane in 0..4 {
                let slot = (w >> (lane * 16)) as usize & 0xFFFF;
                if slot == 0 {
                    groups[g] |= (tag | (entry as u64 + 1)) << (lane * 16);
                    continue 'entries;
                }
                if (slot as u64 & 0xFE00) == tag
                    && packed_at(data, (slot & 0x1FF) - 1) == packed_at(data, entry)
                {
                    continue 'entries;
                }
            }
            g += 1;
        }
    }
    groups.into_boxed_slice()
}

/// Whether the `Large` table `slots` over `data` holds `uuid` (linear probing).
fn probe_large(slots: &[u32], data: &[u8], hash: u64, uuid: &[u8; 16]) -> bool {
    let mask = slots.len() - 1;
    let tag = ((hash >> 56) as u32) << 24;
    let mut i = hash as usize;
    loop {
        i &= mask;
        let Some(&slot) = slots.get(i) else { return false };
        if slot == 0 {
            return false;
        }
        if slot & 0xFF00_0000 == tag && packed_at(data, (slot & 0xFF_FFFF) as usize - 1) == Some(uuid) {
            return true;
        }
        i += 1;
    }
}

/// The `Large` table of entries with hashes `hashes`, duplicates left out.
fn large_table(data: &[u8], hashes: &[u64]) -> Box<[u32]> {
    let mut slots = vec![0u32; (hashes.len() * 2).next_power_of_two()];
    let mask = slots.len() - 1;
    for (entry, &hash) in hashes.iter().enumerate() {
        let tag = ((hash >> 56) as u32) << 24;
        let mut i = hash as usize;
        loop {
            i &= mask;
            let slot = slots[i];
            if slot == 0 {
                slots[i] = tag | (entry as u32 + 1);
                break;
            }
            if slot & 0xFF00_0000 == tag
                && packed_at(data, (slot & 0xFF_FFFF) as usize - 1) == packed_at(data, entry)
            {
                break;
            }
            i += 1;
        }
    }
    slots.into_boxed_slice()
}

/// Sets this short are scanned: comparing a few ids beats hashing one.
const SCAN: usize = 8;
/// The header of an id of 254 bytes or more: four bytes of length follow.
const LONG: u8 = 0xFF;
/// The header of a packed UUID: 16 bytes follow.
const UUID: u8 = 0xFE;

/// The header and bytes of the id at `at`, and where the next one starts.
#[inline]
fn entry(data: &[u8], at: usize) -> Option<(u8, &[u8], usize)> {
    let header = *data.get(at)?;
    let (start, len) = match header {
        LONG => (at + 5, u32::from_le_bytes(*data.get(at + 1..at + 5)?.first_chunk()?) as usize),
        UUID => (at + 1, 16),
        n => (at + 1, n as usize),
    };
    Some((header, data.get(start..start + len)?, start + len))
}

impl IdSet {
    /// How many ids it was built from (duplicates included).
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// The ids in the order they were given, duplicates included.
    pub(crate) fn iter(&self) -> impl Iterator<Item = String> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            let (header, bytes, next) = entry(&self.data, at)?;
            at = next;
            Some(match header {
                UUID => unpack_uuid(bytes),
                // Every other id was a `str`, kept as is.
                _ => String::from_utf8_lossy(bytes).into_owned(),
            })
        })
    }

    /// [`contains`](Self::contains) for an id not probed yet: a short set is
    /// scanned without hashing it.
    #[inline]
    pub(crate) fn contains_str(&self, id: &str) -> bool {
        let packed = Packed::new();
        let scan = matches!(self.index, Index::Scan);
        let hash = if scan { 0 } else { id_hash(id) };
        let probe = Probe { id, hash, packed: &packed };
        if scan { self.scan(&probe) } else { self.contains(&probe) }
    }

    fn scan(&self, probe: &Probe<'_>) -> bool {
        let mut at = 0;
        while let Some((header, bytes, next)) = entry(&self.data, at) {
            if probe.matches(header, bytes) {
                return true;
            }
            at = next;
        }
        false
    }

    #[inline(always)]
    pub(crate) fn contains(&self, probe: &Probe<'_>) -> bool {
        // The common list (up to 511 UUIDs) first; the rest out of line.
        if let Index::Small(slots) = &self.index {
            return contains_small(slots, &self.data, probe);
        }
        self.contains_other(probe)
    }

    /// The `Small` table and the buffer it indexes, if the set has one.
    pub(crate) fn small(&self) -> Option<SmallParts> {
        match &self.index {
            Index::Small(groups) => Some((groups.clone(), self.data.clone())),
            _ => None,
        }
    }

    #[inline(never)]
    fn contains_other(&self, probe: &Probe<'_>) -> bool {
        match &self.index {
            Index::Small(slots) => {
                probe.uuid().is_some_and(|u| probe_small(slots, &self.data, probe.hash, u))
            }
            Index::Large(slots) => {
                probe.uuid().is_some_and(|u| probe_large(slots, &self.data, probe.hash, u))
            }
            Index::Table(table) => table
                .find(probe.hash, |&at| {
                    entry(&self.data, at as usize).is_some_and(|(h, b, _)| probe.matches(h, b))
                })
                .is_some(),
            Index::Scan => self.scan(probe),
        }
    }
}

impl<'a> FromIterator<&'a str> for IdSet {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> Self {
        let ids: Vec<&str> = iter.into_iter().collect();
        let packed: Vec<Packed> = ids.iter().map(|id| Packed::from(pack_uuid(id))).collect();
        let ids: Vec<Probe<'_>> =
            ids.iter().zip(&packed).map(|(id, packed)| Probe { id, hash: id_hash(id), packed }).collect();
        let size: usize = ids
            .iter()
            .map(|p| match p.packed.get() {
                Some(Some(_)) => 17,
                _ => p.id.len() + if p.id.len() < UUID as usize { 1 } else { 5 },
            })
            .sum();
        let mut data = Vec::with_capacity(size);
        let mut starts = Vec::with_capacity(ids.len());
        for p in &ids {
            starts.push(data.len() as u32);
            match p.packed.get().copied().flatten().as_ref() {
                Some(u) => {
                    data.push(UUID);
                    data.extend_from_slice(u);
                }
                None if p.id.len() < UUID as usize => {
                    data.push(p.id.len() as u8);
                    data.extend_from_slice(p.id.as_bytes());
                }
                None => {
                    data.push(LONG);
                    data.extend_from_slice(&(p.id.len() as u32).to_le_bytes());
                    data.extend_from_slice(p.id.as_bytes());
                }
            }
        }
        let data: std::sync::Arc<[u8]> = data.into();
        let uuids = ids.iter().all(|p| matches!(p.packed.get(), Some(Some(_))));
        let hashes = || ids.iter().map(|p| p.hash).collect::<Vec<_>>();
        let index = if ids.len() <= SCAN {
            Index::Scan
        } else if uuids && ids.len() <= SMALL {
            Index::Small(small_table(&data, &hashes()).into())
        } else if uuids && ids.len() <= LARGE {
            Index::Large(large_table(&data, &hashes()))
        } else {
            let rehash = |&o: &u32| {
                entry(&data, o as usize).map_or(0, |(h, b, _)| match h {
                    UUID => id_hash(&unpack_uuid(b)),
                    _ => id_hash_bytes(b),
                })
            };
            let mut table = HashTable::with_capacity(ids.len());
            for (p, at) in ids.iter().zip(starts) {
                let same = |&o: &u32| entry(&data, o as usize).is_some_and(|(h, b, _)| p.matches(h, b));
                if table.find(p.hash, same).is_none() {
                    table.insert_unique(p.hash, at, rehash);
                }
            }
            Index::Table(table)
        };
        IdSet { data, len: ids.len() as u32, index }
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
            for id in &list {
                assert!(set.contains_str(id), "{id} by text");
            }
            assert_eq!(set.len(), list.len());
            for id in &list {
                assert!(set.contains(&Probe { id, hash: id_hash(id), packed: &Packed::new() }), "{id}");
            }
            for id in
                ["0f8b3c1e-9a2d-4e5f-a6b7-c8d9e0f1a2b4", "u3", "0f8b3c1e-9a2d-4e5f-a6b7-c8d9e0f1a2b", "x"]
            {
                assert!(!set.contains(&Probe { id, hash: id_hash(id), packed: &Packed::new() }), "{id}");
            }
        }
    }

    #[test]
    fn uuids_pack_only_in_canonical_form_and_hash_alike_as_text_or_packed() {
        let id = "0f8b3c1e-9a2d-4e5f-a6b7-c8d9e0f1a2b3";
        let packed = pack_uuid(id).unwrap();
        assert_eq!(unpack_uuid(&packed), id);
        let none = Packed::new();
        let p = Probe { id, hash: id_hash(id), packed: &none };
        assert!(p.matches(UUID, &packed), "packed when first compared with a packed entry");
        assert_eq!(none.get(), Some(&Some(packed)));
        for other in [
            "0F8B3C1E-9A2D-4E5F-A6B7-C8D9E0F1A2B3",
            "0f8b3c1e-9a2d-4e5f-a6b7c-8d9e0f1a2b3",
            "0f8b3c1e-9a2d-4e5f-a6b7-c8d9e0f1a2bg",
            "0f8b3c1e9a2d4e5fa6b7c8d9e0f1a2b3abcd",
            "0f8b3c1e-9a2d-4e5f-a6b7-c8d9e0f1a2b",
        ] {
            assert!(pack_uuid(other).is_none(), "{other}");
        }
    }

    #[test]
    fn large_sets_find_every_member_and_nothing_else() {
        let uuid = |i: u32| format!("{i:08x}-9a2d-4e5f-a6b7-c8d9e0f1a2b3");
        for n in [9, 56, 57, 100, 1000, 5000] {
            let ids: Vec<String> =
                (0..n).map(|i| if i % 3 == 0 { format!("user-{i}") } else { uuid(i) }).collect();
            let set: IdSet = ids.iter().map(String::as_str).collect();
            for id in &ids {
                assert!(set.contains_str(id), "{id} of {n}");
            }
            for i in n..n + 2000 {
                assert!(!set.contains_str(&uuid(i)) && !set.contains_str(&format!("user-{i}")), "{i} of {n}");
            }
        }
    }

    #[test]
    fn uuid_sets_of_every_size_find_every_member_and_nothing_else() {
        let uuid = |i: u32| format!("{i:08x}-9a2d-4e5f-a6b7-c8d9e0f1a2b3");
        for (n, kind) in
            [(9, "small"), (100, "small"), (SMALL, "small"), (SMALL + 1, "large"), (5000, "large")]
        {
            // Every id twice: duplicates are kept in the list and left out of the table.
            let ids: Vec<String> = (0..n as u32).map(|i| uuid(i / 2)).collect();
            let set: IdSet = ids.iter().map(String::as_str).collect();
            let got = match set.index {
                Index::Small(_) => "small",
                Index::Large(_) => "large",
                _ => "other",
            };
            assert_eq!(got, kind, "{n} ids");
            assert_eq!(set.iter().collect::<Vec<_>>(), ids, "given back exactly");
            for id in &ids {
                assert!(set.contains_str(id), "{id} of {n}");
            }
            let upper = uuid(0).to_uppercase();
            for id in (n as u32..n as u32 + 3000).map(uuid).chain([upper, "user-1".into(), String::new()]) {
                assert!(!set.contains_str(&id), "{id} of {n}");
            }
        }
    }

    #[test]
    fn zero_lanes_finds_exactly_the_zero_lanes() {
        for v in 0..=0xFFFFu64 {
            for lane in 0..4 {
                for others in [0u64, 0x8001_0001_FFFF_0100] {
                    let x = (others & !(0xFFFF << (lane * 16))) | v << (lane * 16);
                    let naive = (0..4)
                        .filter(|l| (x >> (l * 16)) & 0xFFFF == 0)
                        .fold(0, |m, l| m | 0x8000 << (l * 16));
                    assert_eq!(zero_lanes(x), naive, "{x:#x}");
                }
            }
        }
    }

    #[test]
    fn sets_find_what_was_inserted() {
        let set: IdSet = ["alice", "bob", "a-user-id-longer-than-23-bytes"].into_iter().collect();
        for id in ["alice", "bob", "a-user-id-longer-than-23-bytes"] {
            assert!(set.contains(&Probe { id, hash: id_hash(id), packed: &Packed::new() }), "{id}");
        }
        assert!(!set.contains_str("carol"));
        assert!(!set.contains_str(""));
    }
}
