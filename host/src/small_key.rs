//! Hash-map keys held inline when short. The NDJSON source's revision map and the
//! commit window's row index each hold a few hundred thousand keys: with the key's
//! bytes inside the map's own slot, a lookup compares them there instead of following
//! a pointer to them, one cache miss less per lookup (and no allocation per new key).

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
        self.as_bytes() == other.as_bytes()
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
            assert_eq!(SmallKey::new(k).as_bytes(), k.as_slice());
        }
        assert!(matches!(
            SmallKey::new(&[1; INLINE]),
            SmallKey::Inline { .. }
        ));
        assert!(matches!(SmallKey::new(&[1; INLINE + 1]), SmallKey::Heap(_)));
    }
}
