//! `projector events`: what a source holds, for someone about to write a projection:
//! each event type with its count, the stream prefixes it appears under (the stream
//! name up to its first `-`, EventStoreDB's category convention) and the field paths of
//! its data (`items[].priceCents`) with one sample value each.
//!
//! Reads through [`crate::source::open`] with an empty filter (so system events, `$…`,
//! are left out, as projections see them) and without following.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Result;
use serde_json::Value as Json;

use crate::source::{EventBuffer, Filter, SourceError, esdb::RetrySettings};

/// Field paths kept per event type; more are counted, not listed.
const MAX_FIELDS: usize = 100;
/// Characters of a sample value shown.
const SAMPLE_CHARS: usize = 40;

/// One field path of an event type's data.
#[derive(Debug, Clone, Default)]
pub struct Field {
    /// Events whose data holds the path.
    pub count: u64,
    /// JSON kinds seen: `string`, `integer`, `number`, `bool`, `null`, `object`, `array`.
    pub kinds: BTreeSet<&'static str>,
    /// The first non-null value seen (JSON, shortened).
    pub sample: Option<String>,
}

/// One event type.
#[derive(Debug, Clone, Default)]
pub struct EventType {
    /// The type.
    pub name: String,
    /// Events of the type.
    pub count: u64,
    /// Events per stream prefix (`order-`; a stream without `-` is its own prefix).
    pub streams: BTreeMap<String, u64>,
    /// Field paths of the data.
    pub fields: BTreeMap<String, Field>,
    /// Occurrences (once per event) of field paths beyond the kept ones.
    pub more_fields: u64,
    /// Events whose data is not JSON.
    pub not_json: u64,
}

/// What a source holds.
#[derive(Debug, Clone, Default)]
pub struct Survey {
    /// Events read (system events excluded).
    pub events: u64,
    /// Events the source could not read (malformed lines).
    pub malformed: u64,
    /// The event types, most frequent first.
    pub types: Vec<EventType>,
}

/// The stream prefix (category) of a stream: up to and including its first `-`.
pub fn stream_prefix(stream: &str) -> &str {
    match stream.find('-') {
        Some(i) => &stream[..=i],
        None => stream,
    }
}

/// Read `source` (an NDJSON file or an esdb:// URL) to its end, or `limit` events.
pub fn survey(source: &str, limit: Option<u64>) -> Result<Survey> {
    let mut src = crate::source::open(
        source,
        None,
        Filter::default(),
        false,
        &RetrySettings::default(),
    )?;
    let mut buf = EventBuffer::default();
    let mut out = Survey::default();
    let mut types: BTreeMap<String, EventType> = BTreeMap::new();
    'read: loop {
        buf.clear();
        let read = match src.read_batch(&mut buf, 10_000, Duration::from_millis(500)) {
            Ok(r) => r,
            Err(SourceError::BadEvent(_)) => {
                out.malformed += 1;
                continue;
            }
            Err(SourceError::Failed(e)) => return Err(e),
        };
        for e in buf.iter() {
            if limit.is_some_and(|l| out.events >= l) {
                break 'read;
            }
            out.events += 1;
            let t = types.entry(e.event_type.clone()).or_default();
            t.count += 1;
            *t.streams
                .entry(stream_prefix(&e.stream_id).to_string())
                .or_default() += 1;
            match serde_json::from_slice::<Json>(&e.data) {
                Ok(data) => {
                    let mut seen = BTreeSet::new();
                    walk(t, &mut seen, String::new(), &data);
                }
                Err(_) => t.not_json += 1,
            }
        }
        if read.at_end {
            break;
        }
    }
    out.types = types
        .into_iter()
        .map(|(name, t)| EventType { name, ..t })
        .collect();
    out.types
        .sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// Record the leaves (and empty containers) of `v` under `path`, once per event.
fn walk(t: &mut EventType, seen: &mut BTreeSet<String>, path: String, v: &Json) {
    match v {
        Json::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(t, seen, p, x);
            }
        }
        Json::Array(a) if !a.is_empty() => {
            for x in a {
                walk(t, seen, format!("{path}[]"), x);
            }
        }
        _ => {
            let path = if path.is_empty() {
                "(data)".into()
            } else {
                path
            };
            let kind = match v {
                Json::Null => "null",
                Json::Bool(_) => "bool",
                Json::Number(n) if n.is_i64() || n.is_u64() => "integer",
                Json::Number(_) => "number",
                Json::String(_) => "string",
                Json::Array(_) => "array",
                Json::Object(_) => "object",
            };
            if !t.fields.contains_key(&path) && t.fields.len() >= MAX_FIELDS {
                if seen.insert(path) {
                    t.more_fields += 1;
                }
                return;
            }
            let f = t.fields.entry(path.clone()).or_default();
            f.kinds.insert(kind);
            if f.sample.is_none() && !v.is_null() {
                let s = v.to_string();
                f.sample = Some(match s.char_indices().nth(SAMPLE_CHARS) {
                    Some((i, _)) => format!("{}…", &s[..i]),
                    None => s,
                });
            }
            if seen.insert(path) {
                f.count += 1;
            }
        }
    }
}
