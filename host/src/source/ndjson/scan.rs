//! The fast path for an event line: one pass over the bytes for the common shape (a flat
//! object whose keys and string fields have no escapes), checking every value it skips
//! as strictly as JSON does (with `json-skim`, which the SDK's deserializer shares).
//! Anything else (escapes, control characters, a duplicate field, a missing one, a
//! malformed value, deep nesting) gives `None`, and the line goes to `serde_json`, which
//! decides: so a line is read exactly as `serde_json` reads it, and only the common
//! shape is fast.

/// An event line's fields, borrowed from the line (raw JSON text for the JSON values).
#[derive(Debug, Default)]
pub(super) struct Fields<'a> {
    pub stream: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub data: Option<&'a str>,
    pub id: Option<&'a str>,
    pub metadata: Option<&'a str>,
    pub created: Option<&'a str>,
    pub revision: Option<u64>,
}

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
        // Read first, checked after: a field read twice only sends the line to serde_json.
        let bit = match key {
            "stream" => {
                f.stream = Some(s.string()?);
                1
            }
            "type" => {
                f.event_type = Some(s.string()?);
                2
            }
            "data" => {
                f.data = Some(s.value()?);
                4
            }
            "id" => {
                f.id = s.or_null(Scanner::string)?;
                8
            }
            "metadata" => {
                f.metadata = s.or_null(Scanner::value)?;
                16
            }
            "created" => {
                f.created = s.or_null(Scanner::value)?;
                32
            }
            "revision" => {
                f.revision = s.or_null(Scanner::u64)?;
                64
            }
            _ => {
                s.value()?;
                0
            }
        };
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
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
        self.i = json_skim::ws(self.b, self.i);
    }

    /// `null` (then Ok(None)), else what `read` reads.
    fn or_null<T>(&mut self, read: fn(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.peek()? == b'n' {
            self.i = json_skim::literal(self.b, self.i, b"null")?;
            return Some(None);
        }
        read(self).map(Some)
    }

    /// A string without escapes or control characters, without its quotes.
    fn string(&mut self) -> Option<&'a str> {
        let end = json_skim::string_end(self.b, self.i)?;
        // The quotes are ASCII, so both ends are on character boundaries.
        let s = self.text.get(self.i + 1..end)?;
        self.i = end + 1;
        Some(s)
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
        let end = json_skim::value_end(self.b, self.i, 0)?;
        let v = self.text.get(self.i..end)?;
        self.i = end;
        Some(v)
    }
}
