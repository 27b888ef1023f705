//! The fast path of [`crate::EventExt::json`]: a serde deserializer for the common shape
//! of event data (objects, arrays, strings without escapes, integers, booleans, null)
//! that checks every value it skips as strictly as JSON does (with `json-skim`, which
//! the host's event-line scan shares). Anything else (an escape, a float, a type it does
//! not serve, any error at all) makes it give up, and `serde_json` reads the data from
//! the start and decides: so data is read exactly as `serde_json` reads it, and only the
//! common shape is fast.

use serde::de::{self, DeserializeSeed, Visitor};

/// Why the fast path gave up (never shown: `serde_json` then reads the data).
#[derive(Debug)]
pub(crate) struct GiveUp;

impl std::fmt::Display for GiveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not the common shape")
    }
}

impl std::error::Error for GiveUp {}

impl de::Error for GiveUp {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        GiveUp
    }
}

type R<T> = Result<T, GiveUp>;

/// `T` from `text`, or [`GiveUp`].
pub(crate) fn from_str<'a, T: de::Deserialize<'a>>(text: &'a str) -> R<T> {
    let mut d = Deserializer {
        text,
        b: text.as_bytes(),
        i: 0,
        depth: 0,
    };
    let value = T::deserialize(&mut d)?;
    d.ws();
    if d.i == d.b.len() {
        Ok(value)
    } else {
        Err(GiveUp)
    }
}

struct Deserializer<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
    depth: u32,
}

impl<'a> Deserializer<'a> {
    fn peek(&self) -> R<u8> {
        self.b.get(self.i).copied().ok_or(GiveUp)
    }

    fn eat(&mut self, c: u8) -> R<()> {
        if self.peek()? != c {
            return Err(GiveUp);
        }
        self.i += 1;
        Ok(())
    }

    /// Past `c`, after any whitespace. Compact JSON has none: one look at the next byte
    /// does instead of the whitespace loop and a second look for `c`; whitespace is
    /// looked for only when that byte is not `c`.
    fn token(&mut self, c: u8) -> R<()> {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            return Ok(());
        }
        self.ws();
        self.eat(c)
    }

    fn ws(&mut self) {
        self.i = json_skim::ws(self.b, self.i);
    }

    fn literal(&mut self, word: &[u8]) -> R<()> {
        self.i = json_skim::literal(self.b, self.i, word).ok_or(GiveUp)?;
        Ok(())
    }

    /// A string without escapes or control characters, without its quotes.
    fn string(&mut self) -> R<&'a str> {
        let start = self.i + 1;
        let end = json_skim::string_end(self.b, self.i).ok_or(GiveUp)?;
        // SAFETY: `b` is `text`'s bytes, and `start - 1` and `end` hold quotes: ASCII, so
        // both ends of the range are on character boundaries (and `end` is in bounds).
        let s = unsafe { self.text.get_unchecked(start..end) };
        self.i = end + 1;
        Ok(s)
    }

    /// An integer as `serde_json` visits one: u64 when it is not negative, else i64.
    /// Fractions, exponents, `-0` and integers that fit neither are left to it.
    fn integer<V: Visitor<'a>>(&mut self, visitor: V) -> R<V::Value> {
        let negative = self.peek()? == b'-';
        if negative {
            self.i += 1;
        }
        let start = self.i;
        let mut n: u64 = 0;
        // Plain arithmetic: 19 digits cannot overflow a u64 (a checked multiply costs a
        // 128-bit one in wasm32); longer integers are left to serde_json.
        while let Some(d @ b'0'..=b'9') = self.b.get(self.i).copied() {
            n = n.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            self.i += 1;
        }
        let digits = self.i - start;
        if digits == 0
            || digits > 19
            || (digits > 1 && self.b[start] == b'0')
            || matches!(self.b.get(self.i), Some(b'.' | b'e' | b'E'))
        {
            return Err(GiveUp);
        }
        if !negative {
            return visitor.visit_u64(n);
        }
        if n == 0 || n > i64::MAX as u64 {
            return Err(GiveUp);
        }
        visitor.visit_i64(-(n as i64))
    }

    /// Skip any JSON value, checked as JSON defines it.
    fn skip(&mut self) -> R<()> {
        self.i = json_skim::value_end(self.b, self.i, self.depth).ok_or(GiveUp)?;
        Ok(())
    }

    fn nest(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > json_skim::MAX_DEPTH {
            return Err(GiveUp);
        }
        Ok(())
    }
}

impl<'de> de::Deserializer<'de> for &mut Deserializer<'de> {
    type Error = GiveUp;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.ws();
        match self.peek()? {
            b'"' => visitor.visit_borrowed_str(self.string()?),
            b'{' => self.deserialize_map(visitor),
            b'[' => self.deserialize_seq(visitor),
            b't' | b'f' => self.deserialize_bool(visitor),
            b'n' => {
                self.literal(b"null")?;
                visitor.visit_unit()
            }
            _ => self.integer(visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.ws();
        if self.peek()? == b't' {
            self.literal(b"true")?;
            return visitor.visit_bool(true);
        }
        self.literal(b"false")?;
        visitor.visit_bool(false)
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.deserialize_i64(visitor)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.deserialize_i64(visitor)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.deserialize_i64(visitor)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        if !matches!(self.b.get(self.i), Some(b'0'..=b'9' | b'-')) {
            self.ws();
        }
        self.integer(visitor)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.deserialize_i64(visitor)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.deserialize_i64(visitor)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.deserialize_i64(visitor)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        if self.b.get(self.i) != Some(&b'"') {
            self.ws();
        }
        visitor.visit_borrowed_str(self.string()?)
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.deserialize_str(visitor)
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        // A key: `next_key_seed` has passed the whitespace before it (anywhere else, a
        // quote not found here gives up to serde_json, which reads it all the same).
        visitor.visit_borrowed_str(self.string()?)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.ws();
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return visitor.visit_none();
        }
        visitor.visit_some(self)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.ws();
        self.literal(b"null")?;
        visitor.visit_unit()
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.token(b'[')?;
        self.nest()?;
        let value = visitor.visit_seq(Members {
            de: &mut *self,
            first: true,
            close: b']',
        })?;
        self.token(b']')?;
        self.depth -= 1;
        Ok(value)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.token(b'{')?;
        self.nest()?;
        let value = visitor.visit_map(Members {
            de: &mut *self,
            first: true,
            close: b'}',
        })?;
        self.token(b'}')?;
        self.depth -= 1;
        Ok(value)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> R<V::Value> {
        // serde_json also reads a struct from an array; that is left to it.
        self.deserialize_map(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.ws();
        self.skip()?;
        visitor.visit_unit()
    }

    // Floats, chars, bytes, enums, newtypes and the rest: serde_json's to read.
    fn deserialize_f32<V: Visitor<'de>>(self, _: V) -> R<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, _: V) -> R<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_i128<V: Visitor<'de>>(self, _: V) -> R<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_u128<V: Visitor<'de>>(self, _: V) -> R<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_char<V: Visitor<'de>>(self, _: V) -> R<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, _: V) -> R<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, _: V) -> R<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, _: V) -> R<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, _: V) -> R<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, _: V) -> R<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        _: V,
    ) -> R<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> R<V::Value> {
        Err(GiveUp)
    }
}

/// The members of an array, or the entries of an object, in order.
struct Members<'d, 'a> {
    de: &'d mut Deserializer<'a>,
    first: bool,
    close: u8,
}

impl Members<'_, '_> {
    /// True when another member follows (its separator taken).
    fn next(&mut self) -> R<bool> {
        self.de.ws();
        let c = self.de.peek()?;
        if c == self.close {
            return Ok(false);
        }
        if !std::mem::take(&mut self.first) {
            if c != b',' {
                return Err(GiveUp);
            }
            self.de.i += 1;
        }
        Ok(true)
    }
}

impl<'de> de::SeqAccess<'de> for Members<'_, 'de> {
    type Error = GiveUp;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> R<Option<T::Value>> {
        if !self.next()? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.de).map(Some)
    }
}

impl<'de> de::MapAccess<'de> for Members<'_, 'de> {
    type Error = GiveUp;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> R<Option<K::Value>> {
        if !self.next()? {
            return Ok(None);
        }
        // Compact JSON: the key's quote right after the comma (or the brace).
        if self.de.b.get(self.de.i) != Some(&b'"') {
            self.de.ws();
            if self.de.peek()? != b'"' {
                return Err(GiveUp);
            }
        }
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> R<V::Value> {
        self.de.token(b':')?;
        seed.deserialize(&mut *self.de)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Item {
        quantity: i64,
        price_cents: u32,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Order<'a> {
        order_id: String,
        #[serde(borrow)]
        customer_id: std::borrow::Cow<'a, str>,
        items: Vec<Item>,
        note: Option<String>,
        flag: Option<bool>,
        small: Option<u8>,
        tags: Option<BTreeMap<String, i32>>,
        unit: Option<()>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(untagged)]
    enum Loose {
        Num(i64),
        Text(String),
        List(Vec<Loose>),
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Flat {
        id: String,
        #[serde(flatten)]
        rest: BTreeMap<String, serde_json::Value>,
    }

    /// Wherever the fast path reads `text` as a `T`, serde_json reads the same `T`.
    fn agrees<'a, T: Deserialize<'a> + PartialEq + std::fmt::Debug>(text: &'a str) -> bool {
        let Ok(fast) = from_str::<T>(text) else {
            return false;
        };
        match serde_json::from_str::<T>(text) {
            Ok(slow) => assert_eq!(fast, slow, "{text}"),
            Err(e) => panic!("the fast path read what serde_json refuses ({e}): {text}"),
        }
        true
    }

    fn all(text: &str) -> bool {
        let read = [
            agrees::<Order>(text),
            agrees::<Loose>(text),
            agrees::<Flat>(text),
            agrees::<serde_json::Value>(text),
            agrees::<BTreeMap<String, Loose>>(text),
            agrees::<Vec<i64>>(text),
        ];
        read.iter().any(|&r| r)
    }

    #[test]
    fn reads_data_exactly_as_serde_json_does() {
        let inputs = [
            r#"{"orderId":"O1","customerId":"U2","items":[{"quantity":-3,"priceCents":15962,"productId":"P264"}],"note":null,"flag":true,"small":255,"tags":{"a":-1,"b":2},"unit":null,"extra":{"deep":[[1,2.5e-3,{}],[],true,false,null,"x"]}}"#,
            r#" { "orderId" : "é" , "customerId":"ü", "items" : [ ] } "#,
            r#"{"id":"x","a":1,"b":[1,"two",[3]],"c":{"d":null}}"#,
            r#"[1, -2, 0, 9223372036854775807, -9223372036854775808, 18446744073709551615]"#,
            r#"{"orderId":"O1","customerId":"U2","items":[],"small":256}"#,
            r#"{"orderId":"O1","customerId":"U2","items":[],"orderId":"O2"}"#,
            r#"{"orderId":"caf\u00e9","customerId":"U2","items":[]}"#,
            r#"{"k":[1,"v",["w",-7]]}"#,
        ];
        // The common shape is read by the fast path, not handed on.
        assert!(from_str::<Order>(inputs[0]).is_ok());
        assert!(from_str::<Order>(inputs[1]).is_ok());
        assert!(from_str::<Flat>(inputs[2]).is_ok());
        assert!(
            from_str::<Vec<i64>>(inputs[3]).is_err(),
            "u64::MAX is not an i64"
        );
        assert!(from_str::<BTreeMap<String, Loose>>(inputs[7]).is_ok());
        let mut read = 0;
        for input in inputs {
            all(input);
            for m in json_skim::testing::mutations(input.as_bytes(), 0x2545_f491_4f6c_dd1d, 3000) {
                if let Ok(text) = std::str::from_utf8(&m) {
                    read += usize::from(all(text));
                }
            }
        }
        // Mutations the fast path still read (and serde_json agreed with).
        assert!(read > 1000, "{read}");
    }
}
