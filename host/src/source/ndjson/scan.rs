//! The fast path for an event line: one pass over the bytes for the common shape (a flat
//! object whose keys and string fields have no escapes), validating every value it
//! skips as strictly as JSON does. Anything else (escapes, control characters, a
//! duplicate field, a missing one, a malformed value, deep nesting) gives `None`, and
//! the line goes to `serde_json`, which decides: so a line is read exactly as
//! `serde_json` reads it, and only the common shape is fast.

/// An event line's fields, borrowed from the line (raw JSON text for the JSON values).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Fields<'a> {
    pub stream: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub data: Option<&'a str>,
    pub id: Option<&'a str>,
    pub metadata: Option<&'a str>,
    pub created: Option<&'a str>,
    pub revision: Option<u64>,
}

/// Nesting deeper than this goes to `serde_json` (whose own limit is 128).
const MAX_DEPTH: u32 = 100;

/// The line's fields, or None when the line is not of the common shape or not valid.
pub(super) fn scan(line: &str) -> Option<Fields<'_>> {
    let mut s = Scanner {
        text: line,
        b: line.as_bytes(),
        i: 0,
    };
    let mut f = Fields::default();
    // One bit per known field: a second occurrence is serde's "duplicate field" error.
    let mut seen = 0u8;
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        return None; // no fields: serde names the missing one
    }
    loop {
        s.ws();
        let key = s.string()?;
        s.ws();
        s.eat(b':')?;
        s.ws();
        let bit = match key {
            "stream" => 1,
            "type" => 2,
            "data" => 4,
            "id" => 8,
            "metadata" => 16,
            "created" => 32,
            "revision" => 64,
            _ => 0,
        };
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
        match key {
            "stream" => f.stream = Some(s.string()?),
            "type" => f.event_type = Some(s.string()?),
            "data" => f.data = Some(s.value()?),
            "id" => f.id = s.or_null(Scanner::string)?,
            "metadata" => f.metadata = s.or_null(Scanner::value)?,
            "created" => f.created = s.or_null(Scanner::value)?,
            "revision" => f.revision = s.or_null(Scanner::u64)?,
            _ => {
                s.value()?;
            }
        }
        s.ws();
        match s.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    s.ws();
    (s.i == s.b.len()).then_some(f)
}

struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// `null` (then Ok(None)), else what `read` reads.
    fn or_null<T>(&mut self, read: fn(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Some(None);
        }
        read(self).map(Some)
    }

    /// A string without escapes or control characters, without its quotes.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let end = start + special(&self.b[start..])?;
        if self.b[end] != b'"' {
            return None; // an escape or a control character: serde_json decides
        }
        self.i = end + 1;
        // The quotes are ASCII, so both ends are on character boundaries.
        self.text.get(start..end)
    }

    /// An unsigned integer that fits a u64 (as serde_json reads one into a u64).
    fn u64(&mut self) -> Option<u64> {
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.i += 1;
        }
        let digits = self.i - start;
        let leading_zero = digits > 1 && self.b[start] == b'0';
        let fraction = matches!(self.peek(), Some(b'.' | b'e' | b'E'));
        (digits > 0 && !leading_zero && !fraction).then_some(n)
    }

    /// Any JSON value, checked as JSON defines it; its text.
    fn value(&mut self) -> Option<&'a str> {
        let start = self.i;
        self.skip(0)?;
        self.text.get(start..self.i)
    }

    fn skip(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' if depth >= MAX_DEPTH => None,
            b'{' => {
                self.i += 1;
                self.ws();
                if self.peek()? == b'}' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.skip(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => continue,
                        b'}' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    self.skip(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => continue,
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }
}

/// Where the first quote, backslash or control character of `b` is, eight bytes at a
/// time (strings are most of a line's bytes).
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

#[cfg(test)]
mod tests {
    use super::special;

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
}
