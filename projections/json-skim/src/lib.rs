//! Skimming JSON text: where a string ends and where a value ends, checked as strictly
//! as JSON defines them. Shared by the host's event-line scan and the Rust SDK's data
//! deserializer. Both are fast paths: each function returns `None` on anything outside
//! the common shape (an escape, a control character, nesting deeper than [`MAX_DEPTH`])
//! as well as on anything invalid, and the caller then hands the text to `serde_json`,
//! which decides. So what these accept, `serde_json` accepts too.

/// Nesting deeper than this is left to `serde_json` (whose own limit is 128).
pub const MAX_DEPTH: u32 = 100;

/// Where the first byte at or after `at` that is not JSON whitespace is.
#[inline]
pub fn ws(b: &[u8], mut at: usize) -> usize {
    while matches!(b.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// The string whose opening quote is at `at`: where its closing quote is, when it has
/// no escapes or control characters.
#[inline]
pub fn string_end(b: &[u8], at: usize) -> Option<usize> {
    if b.get(at) != Some(&b'"') {
        return None;
    }
    let end = at + 1 + special(b.get(at + 1..)?)?;
    (b[end] == b'"').then_some(end)
}

/// The value starting at `at` (no whitespace before it): the index just past its end.
/// `depth` is the nesting it starts at.
pub fn value_end(b: &[u8], at: usize, depth: u32) -> Option<usize> {
    match *b.get(at)? {
        b'"' => string_end(b, at).map(|end| end + 1),
        open @ (b'{' | b'[') => {
            if depth >= MAX_DEPTH {
                return None;
            }
            let close = if open == b'{' { b'}' } else { b']' };
            let mut i = ws(b, at + 1);
            if *b.get(i)? == close {
                return Some(i + 1);
            }
            loop {
                i = ws(b, i);
                if open == b'{' {
                    i = ws(b, string_end(b, i)? + 1);
                    if *b.get(i)? != b':' {
                        return None;
                    }
                    i = ws(b, i + 1);
                }
                i = ws(b, value_end(b, i, depth + 1)?);
                match *b.get(i)? {
                    b',' => i += 1,
                    c if c == close => return Some(i + 1),
                    _ => return None,
                }
            }
        }
        b't' => literal(b, at, b"true"),
        b'f' => literal(b, at, b"false"),
        b'n' => literal(b, at, b"null"),
        b'-' | b'0'..=b'9' => number_end(b, at),
        _ => None,
    }
}

/// `word` at `at`: the index just past it.
#[inline]
pub fn literal(b: &[u8], at: usize, word: &[u8]) -> Option<usize> {
    let end = at + word.len();
    (b.get(at..end)? == word).then_some(end)
}

/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?` at `at`: the index just past it.
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match *b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(b, i),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        i = some_digits(b, i + 1)?;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = some_digits(b, i)?;
    }
    Some(i)
}

fn digits(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b'0'..=b'9')) {
        i += 1;
    }
    i
}

fn some_digits(b: &[u8], i: usize) -> Option<usize> {
    let end = digits(b, i);
    (end > i).then_some(end)
}

/// Where the first quote, backslash or control character of `b` is, eight bytes at a
/// time (strings are most of an event's bytes).
#[inline]
fn special(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte's high bit is set where the byte is zero (or, above the first such byte,
    // possibly a false one: the lowest is always right).
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let mut at = 0;
    while let Some(chunk) = b.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let hits =
            zero(x ^ (ONES * u64::from(b'"'))) | zero(x ^ (ONES * u64::from(b'\\'))) | below_space;
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    b[at..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|p| at + p)
}

/// For tests of fast paths against `serde_json`.
#[cfg(feature = "testing")]
pub mod testing {
    /// `count` seeded random mutations of `input`, each one to three edits: a byte
    /// replaced by one that matters to JSON, removed, or inserted.
    pub fn mutations(input: &[u8], mut seed: u64, count: usize) -> Vec<Vec<u8>> {
        let alphabet = b"\"{}[]:,-+.0123456789eEntfalsru \t\r\n\x01\\/x";
        let mut rand = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        (0..count)
            .map(|_| {
                let mut m = input.to_vec();
                for _ in 0..1 + rand(3) {
                    if m.is_empty() {
                        break;
                    }
                    let at = rand(m.len());
                    let c = alphabet[rand(alphabet.len())];
                    match rand(3) {
                        0 => m[at] = c,
                        1 => {
                            m.remove(at);
                        }
                        _ => m.insert(at, c),
                    }
                }
                m
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_finds_the_first_quote_backslash_or_control_character() {
        let mut seed: u64 = 7;
        for _ in 0..20_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 58) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    let r = (seed >> (i % 7 * 8)) as u8 ^ i as u8;
                    // Mostly plain bytes (ASCII and UTF-8 continuation), a few special.
                    match r % 16 {
                        0 => b'"',
                        1 => b'\\',
                        2 => r % 0x20,
                        _ => 0x20 + r % 0x60 + (r & 0x80),
                    }
                })
                .collect();
            let naive = bytes
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20);
            assert_eq!(special(&bytes), naive, "{bytes:?}");
        }
    }

    #[test]
    fn values_end_where_json_says_and_the_rest_is_left() {
        for (text, end) in [
            (r#""abc" "#, Some(5)),
            (r#"{"a":[1,-2.5e+3,true,null,{}],"b":"c"}x"#, Some(38)),
            (r#"[ 1 , [ ] ]"#, Some(11)),
            ("-0.0e0,", Some(6)),
            ("01", Some(1)),
            (r#""a\"b""#, None),
            ("[1,]", None),
            (r#"{"a" 1}"#, None),
            ("1.", None),
            ("-", None),
            ("tru", None),
            ("\"\u{1}\"", None),
        ] {
            assert_eq!(value_end(text.as_bytes(), 0, 0), end, "{text}");
        }
        let deep = "[".repeat(101) + &"]".repeat(101);
        assert_eq!(value_end(deep.as_bytes(), 0, 0), None);
        let ok = "[".repeat(100) + &"]".repeat(100);
        assert_eq!(value_end(ok.as_bytes(), 0, 0), Some(200));
    }
}
