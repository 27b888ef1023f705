//! Column values and primary keys.

pub use crate::bindings::projector::projection0_1_0::types::Value;

impl Value {
    /// The integer, or 0 for NULL and other kinds.
    pub fn as_i64(&self) -> i64 {
        match self {
            Value::Integer(i) => *i,
            Value::Real(r) => *r as i64,
            _ => 0,
        }
    }

    /// The real (integers widen), or 0.0 for NULL and other kinds.
    pub fn as_f64(&self) -> f64 {
        match self {
            Value::Real(r) => *r,
            Value::Integer(i) => *i as f64,
            _ => 0.0,
        }
    }

    /// The text, or "" for NULL and other kinds.
    pub fn as_str(&self) -> &str {
        match self {
            Value::Text(s) => s,
            _ => "",
        }
    }

    /// True for NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Bytes that identify the value (f64 by its bits): the overlay's lookup key, and
    /// the value as contract 0.2 packs it.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.push(0),
            Value::Integer(i) => {
                out.push(1);
                out.extend_from_slice(&i.to_le_bytes());
            }
            Value::Real(r) => {
                out.push(2);
                out.extend_from_slice(&r.to_bits().to_le_bytes());
            }
            Value::Text(s) => {
                out.push(3);
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Value::Blob(b) => {
                out.push(4);
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }
        }
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self { Value::Integer(v as i64) }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32);

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Integer(v as i64)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Real(v as f64)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl From<std::borrow::Cow<'_, str>> for Value {
    fn from(s: std::borrow::Cow<'_, str>) -> Value {
        Value::Text(s.into_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// A primary key: the key columns' values, in primary-key order.
#[derive(Debug, Clone)]
pub struct Key(pub Vec<Value>);

/// Anything that can name a primary key: one value, a tuple of values, or a [`Key`].
pub trait IntoKey {
    /// The key's values.
    fn into_key(self) -> Key;
}

impl IntoKey for Key {
    fn into_key(self) -> Key {
        self
    }
}
impl IntoKey for Vec<Value> {
    fn into_key(self) -> Key {
        Key(self)
    }
}
impl<T: Into<Value>> IntoKey for T {
    fn into_key(self) -> Key {
        Key(vec![self.into()])
    }
}
impl<A: Into<Value>, B: Into<Value>> IntoKey for (A, B) {
    fn into_key(self) -> Key {
        Key(vec![self.0.into(), self.1.into()])
    }
}
