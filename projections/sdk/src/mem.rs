//! The module's `memcmp` (and `bcmp`, which equality compiles to): eight bytes at a
//! time. Without it, wasm32's comes from `compiler_builtins`, one byte per loop turn
//! (each turn also metered for fuel), and every string match, table and column name
//! lookup and overlay key comparison goes through it. `compiler_builtins` links its
//! own weakly, so these take its place.

/// Compare `n` bytes: negative, zero or positive as the first differing byte of `a` is
/// below, equal to or above `b`'s.
///
/// # Safety
/// `a` and `b` must each be valid for reads of `n` bytes.
#[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n, and both are valid for n bytes (unaligned reads).
        let (x, y) = unsafe {
            (
                a.add(i).cast::<u64>().read_unaligned(),
                b.add(i).cast::<u64>().read_unaligned(),
            )
        };
        if x != y {
            // The first differing byte is the lowest in memory: little-endian words.
            i += ((u64::from_le(x) ^ u64::from_le(y)).trailing_zeros() / 8) as usize;
            break;
        }
        i += 8;
    }
    // The rest byte by byte: LLVM rewrites loops into memset and memcpy calls, never into
    // a memcmp call (which would call this one).
    while i < n {
        // SAFETY: i < n.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// Zero when the `n` bytes at `a` and `b` are equal, else nonzero.
///
/// # Safety
/// `a` and `b` must each be valid for reads of `n` bytes.
#[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's promise, passed on.
    unsafe { memcmp(a, b, n) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_as_bytes_compare() {
        let mut seed: u64 = 11;
        for _ in 0..20_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = (seed >> 59) as usize + (seed >> 40) as usize % 3;
            let a: Vec<u8> = (0..n).map(|i| (seed >> (i % 8 * 8)) as u8 % 4).collect();
            let mut b = a.clone();
            if n > 0 && seed & 1 == 1 {
                let at = (seed >> 20) as usize % n;
                b[at] = (seed >> 30) as u8;
            }
            // SAFETY: both hold n bytes.
            let got = unsafe { memcmp(a.as_ptr(), b.as_ptr(), n) };
            assert_eq!(got.signum(), a.cmp(&b) as i32, "{a:?} {b:?}");
            // SAFETY: as above.
            assert_eq!(unsafe { bcmp(a.as_ptr(), b.as_ptr(), n) } == 0, a == b);
        }
    }
}
