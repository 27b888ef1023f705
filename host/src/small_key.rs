//! Hash-map keys held inline when short. The NDJSON source's revision map and the
//! commit window's row index each hold a few hundred thousand keys: with the key's
//! bytes inside the map's own slot, a lookup compares them there instead of following
//! a pointer to them, one cache miss less per lookup (and no allocation per new key).
//! Short keys are looked up as keys too ([`get`], [`get_mut`]): two inline keys compare
//! as fixed-size arrays, in a few instructions, where two slices need a `memcmp` call.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// Keys up to this many bytes are held inline.
const INLINE: usize = 30;

/// A byte-string key: inline up to [`INLINE`] bytes, on the heap beyond.
#[derive(Clone, Debug)]
pub(crate) enum SmallKey {
    /// Short: `bytes[..len]`.
    Inline { len: u8, bytes: [u8; INLINE] },
    /// Long.
    Heap(Box<[u8]>),
}

impl SmallKey {
    /// A key holding a copy of `b`.
    pub(crate) fn new(b: &[u8]) -> SmallKey {
        let mut bytes = [0u8; INLINE];
        match bytes.get_mut(..b.len()) {
            Some(to) => {
                to.copy_from_slice(b);
                SmallKey::Inline {
                    len: b.len() as u8,
                    bytes,
                }
            }
            None => SmallKey::Heap(b.into()),
        }
    }

    /// `b` as an inline key, without allocating; None when it is too long.
    pub(crate) fn inline(b: &[u8]) -> Option<SmallKey> {
        let mut bytes = [0u8; INLINE];
        bytes.get_mut(..b.len())?.copy_from_slice(b);
        Some(SmallKey::Inline {
            len: b.len() as u8,
            bytes,
        })
    }

    /// The key's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            SmallKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            SmallKey::Heap(b) => b,
        }
    }
}

// Hashed and compared as its bytes, so maps are looked up by `&[u8]`.
impl Borrow<[u8]> for SmallKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for SmallKey {
    fn eq(&self, other: &SmallKey) -> bool {
        match (self, other) {
            // The bytes past `len` are zero in both (`new`, `inline`).
            (SmallKey::Inline { len: a, bytes: x }, SmallKey::Inline { len: b, bytes: y }) => {
                a == b && x == y
            }
            _ => self.as_bytes() == other.as_bytes(),
        }
    }
}

/// `a == b` for the short names compared per event (event types, stream prefixes):
/// eight bytes at a time, then byte by byte, inline; `==` on slices calls `memcmp`, a
/// call per comparison that cost 2% of a catch-up.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut a, mut b) = (a, b);
    while let (Some((x, rest_a)), Some((y, rest_b))) =
        (a.split_first_chunk::<8>(), b.split_first_chunk::<8>())
    {
        if u64::from_ne_bytes(*x) != u64::from_ne_bytes(*y) {
            return false;
        }
        (a, b) = (rest_a, rest_b);
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// `s.starts_with(prefix)`, compared as [`same`] does.
pub(crate) fn starts_with(s: &[u8], prefix: &[u8]) -> bool {
    s.get(..prefix.len()).is_some_and(|head| same(head, prefix))
}

/// The value of key `b` in `map`.
pub(crate) fn get<'m, V, S: std::hash::BuildHasher>(
    map: &'m std::collections::HashMap<SmallKey, V, S>,
    b: &[u8],
) -> Option<&'m V> {
    match SmallKey::inline(b) {
        Some(k) => map.get(&k),
        None => map.get(b),
    }
}

/// The value of key `b` in `map`, to change.
pub(crate) fn get_mut<'m, V, S: std::hash::BuildHasher>(
    map: &'m mut std::collections::HashMap<SmallKey, V, S>,
    b: &[u8],
) -> Option<&'m mut V> {
    match SmallKey::inline(b) {
        Some(k) => map.get_mut(&k),
        None => map.get_mut(b),
    }
}

impl Eq for SmallKey {}

impl Hash for SmallKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_bytes().hash(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_either_side_of_the_inline_size_are_their_bytes() {
        let mut map = rustc_hash::FxHashMap::default();
        let keys: Vec<Vec<u8>> = (0..=2 * INLINE)
            .flat_map(|n| {
                [
                    vec![b'k'; n],
                    [vec![b'k'; n.saturating_sub(1)], vec![0]].concat(),
                ]
            })
            .collect();
        for (i, k) in keys.iter().enumerate() {
            map.entry(SmallKey::new(k)).or_insert(i);
        }
        for (i, k) in keys.iter().enumerate() {
            let first = keys.iter().position(|other| other == k).unwrap_or(i);
            assert_eq!(map.get(k.as_slice()), Some(&first), "{k:?}");
            assert_eq!(get(&map, k), Some(&first), "{k:?}");
            assert_eq!(get_mut(&mut map, k).copied(), Some(first), "{k:?}");
            assert_eq!(SmallKey::new(k).as_bytes(), k.as_slice());
        }
        assert!(matches!(
            SmallKey::new(&[1; INLINE]),
            SmallKey::Inline { .. }
        ));
        assert!(matches!(SmallKey::new(&[1; INLINE + 1]), SmallKey::Heap(_)));
        assert!(SmallKey::inline(&[1; INLINE + 1]).is_none());
        assert!(get(&map, b"never put").is_none());
    }

    #[test]
    fn same_and_starts_with_agree_with_the_standard_library() {
        let words: Vec<Vec<u8>> = (0..20)
            .flat_map(|n| {
                [
                    vec![b'a'; n],
                    [vec![b'a'; n.saturating_sub(1)], vec![b'b']].concat(),
                ]
            })
            .collect();
        for a in &words {
            for b in &words {
                assert_eq!(same(a, b), a == b, "{a:?} {b:?}");
                assert_eq!(starts_with(a, b), a.starts_with(b), "{a:?} {b:?}");
            }
        }
    }
}
