//! Write Projector projections in Rust.
//!
//! Implement [`Projection`] for a type, call [`register_projection!`], and build the
//! crate with `projector build <dir>`. The raw WIT bindings stay hidden.
//!
//! Inside one batch, [`Ctx`] keeps an overlay of everything the projection wrote:
//! [`Ctx::get`] reads through it (event 7 of a batch sees what events 1–6 wrote),
//! and each touched row leaves the module as one coalesced op.

#[cfg(any(target_arch = "wasm32", test))]
mod alloc;
mod batch;
mod ctx;
mod json;
mod manifest;
#[cfg(any(target_arch = "wasm32", test))]
mod mem;
mod value;

/// Every batch runs in a fresh instance: size classes, never given back (see `alloc`).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: alloc::SizeClasses = alloc::SizeClasses::new();

pub use ctx::{Ctx, Row};
pub use manifest::{Manifest, Table};
pub use value::{IntoKey, Key, Value};

/// The kinds of column a table can declare.
pub use bindings::projector::projection0_1_0::types::ColumnKind as Kind;
/// One recorded event, as the host delivers it.
pub use bindings::projector::projection0_1_0::types::Event;
/// Log levels for [`log`].
pub use bindings::projector::projection0_1_0::types::Level;
/// A global position in the event store.
pub use bindings::projector::projection0_1_0::types::Position;

/// Everything an author needs, in one `use`.
pub mod prelude {
    pub use crate::{
        Ctx, Error, Event, EventExt, IntoKey, Key, Kind, Level, Manifest, Projection, Result, Row,
        Table, Value, log, register_projection,
    };
}

/// The error a projection returns for an event it cannot handle.
#[derive(Debug, Clone, PartialEq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Self {
        Error(s.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error(format!("invalid event data: {e}"))
    }
}

/// Result with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A projection: what it owns ([`Projection::manifest`]) and how one event changes it.
///
/// Projections keep no state of their own between events: everything lives in their
/// tables, so replays are deterministic and new code can be swapped in at any batch.
pub trait Projection {
    /// Name, version, interests and tables. Called once when the module loads.
    fn manifest() -> Manifest;
    /// Apply one event. Returning an error fails the whole batch (nothing of it commits).
    fn handle(ctx: &mut Ctx, event: &Event) -> Result<()>;
}

/// Convenience methods on [`Event`].
pub trait EventExt {
    /// Deserialize the event's JSON data, exactly as `serde_json` reads it. Types may
    /// borrow from it: a `Cow<str>` field with `#[serde(borrow)]` copies no text.
    fn json<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T>;
}

impl EventExt for Event {
    fn json<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T> {
        let invalid = |e: &dyn std::fmt::Display| {
            Error(format!(
                "invalid data in {} event {} on stream {}: {e}",
                self.event_type, self.event_id, self.stream_id
            ))
        };
        // Checked as UTF-8 once, whole: the parser then takes each string as it is
        // instead of checking it again.
        let text = utf8(&self.data).map_err(|e| invalid(&e))?;
        // The common shape fast; anything else, and every error, as serde_json reads it.
        if let Ok(value) = json::from_str(text) {
            return Ok(value);
        }
        serde_json::from_str(text).map_err(|e| invalid(&e))
    }
}

/// `b` as text. Most event data is ASCII: checked eight bytes at a time here (the
/// standard library's check goes four at a time on wasm32); anything else is checked by
/// the standard library, which names the first bad byte.
fn utf8(b: &[u8]) -> std::result::Result<&str, std::str::Utf8Error> {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = b.chunks_exact(8);
    let ascii = words.by_ref().all(|w| {
        let mut x = [0u8; 8];
        x.copy_from_slice(w);
        u64::from_le_bytes(x) & HIGH == 0
    }) && words.remainder().is_ascii();
    if ascii {
        // SAFETY: ASCII is UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(b) });
    }
    std::str::from_utf8(b)
}

/// Log a line through the host (the host caps lines per batch).
pub fn log(level: Level, message: &str) {
    bindings::projector::projection0_1_0::log::log(level, message);
}

/// Register the type implementing [`Projection`] as this module's export.
#[macro_export]
macro_rules! register_projection {
    ($projection:ty) => {
        #[doc(hidden)]
        pub struct __ProjectorExport;

        impl $crate::__private::Guest for __ProjectorExport {
            fn manifest() -> $crate::__private::WitManifest {
                $crate::__private::manifest::<$projection>()
            }
            fn handle(
                batch: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<::std::vec::Vec<u8>, $crate::__private::HandleError> {
                $crate::__private::handle::<$projection>(batch)
            }
        }

        $crate::__private::bindings::__export_projection!(__ProjectorExport);
    };
}

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: ["../../wit/v0.1", "../../wit/v0.2"],
        world: "projector:projection/projection@0.2.0",
        // Contract 0.1's types and imports are 0.2's too.
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_projection",
        default_bindings_module: "projector_sdk::__private::bindings",
    });
}

/// Glue used by [`register_projection!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    use crate::batch::{Batch, empty_event};
    pub use crate::bindings;
    pub use crate::bindings::Guest;
    pub use crate::bindings::projector::projection0_1_0::types::{
        HandleError, Manifest as WitManifest, Op,
    };
    use crate::{Ctx, Projection, ctx::Schema};
    use std::sync::OnceLock;

    static SCHEMA: OnceLock<Schema> = OnceLock::new();

    fn schema<P: Projection>() -> &'static Schema {
        SCHEMA.get_or_init(|| Schema::new(&P::manifest()))
    }

    /// The manifest export.
    pub fn manifest<P: Projection>() -> WitManifest {
        P::manifest().into_wit()
    }

    /// The handle export: read the packed batch one event at a time, run each through
    /// one overlay, return the coalesced ops.
    pub fn handle<P: Projection>(batch: Vec<u8>) -> Result<Vec<u8>, HandleError> {
        install_panic_hook();
        let failed = |message: String, index: u32| HandleError {
            message,
            event_index: Some(index),
        };
        let mut ctx = Ctx::new(schema::<P>());
        let mut events = Batch::new(&batch).map_err(|m| HandleError {
            message: m,
            event_index: None,
        })?;
        ctx.expect_events(events.left() as usize);
        let mut event = empty_event();
        let mut index = 0;
        while events.next_into(&mut event).map_err(|m| failed(m, index))? {
            P::handle(&mut ctx, &event).map_err(|e| failed(e.0, index))?;
            index += 1;
        }
        let ops = ctx.pack_ops();
        // The instance ends with this call: freeing the overlay row by row would only
        // fill free lists nobody takes from.
        std::mem::forget(ctx);
        Ok(ops)
    }

    /// Ops packed for the handle export (for modules that bypass [`Projection`]).
    pub fn pack_ops(ops: &[Op]) -> Vec<u8> {
        crate::batch::pack_ops(ops)
    }

    /// Every event of a packed batch, owned (for modules that bypass [`Projection`]).
    pub fn events(batch: &[u8]) -> Result<Vec<crate::Event>, HandleError> {
        let failed = |message: String| HandleError {
            message,
            event_index: None,
        };
        let mut events = Batch::new(batch).map_err(failed)?;
        let mut all = Vec::new();
        let mut event = empty_event();
        while events.next_into(&mut event).map_err(failed)? {
            all.push(event.clone());
        }
        Ok(all)
    }

    /// A panic aborts the instance; log its message first so the host can name the cause.
    fn install_panic_hook() {
        static HOOK: OnceLock<()> = OnceLock::new();
        HOOK.get_or_init(|| {
            std::panic::set_hook(Box::new(|info| {
                crate::log(crate::Level::Error, &format!("panic: {info}"));
            }))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Payload {
        name: String,
        n: i64,
    }

    fn event(data: &[u8]) -> Event {
        let mut e = batch::empty_event();
        e.event_type = "Named".into();
        e.event_id = "e-1".into();
        e.stream_id = "s-1".into();
        e.data = data.to_vec();
        e
    }

    #[test]
    fn utf8_agrees_with_the_standard_library() {
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for n in 0..20 {
            let ascii = vec![b'a'; n];
            inputs.push(ascii.clone());
            for at in 0..=n {
                for odd in [&b"\xc3\xa9"[..], b"\xe2\x82\xac", b"\xff", b"\xc3", b"\x80"] {
                    let mut v = ascii.clone();
                    v.splice(at..at, odd.iter().copied());
                    inputs.push(v);
                }
            }
        }
        for b in &inputs {
            assert_eq!(utf8(b), std::str::from_utf8(b), "{b:?}");
        }
    }

    #[test]
    fn json_decodes_the_data_and_names_the_event_when_it_cannot() {
        let ok: Payload = event(br#"{"name":"caf\u00e9 \u00e9","n":3}"#)
            .json()
            .expect("decodes");
        assert_eq!(
            ok,
            Payload {
                name: "café é".into(),
                n: 3
            }
        );
        let not_json = event(br#"{"name":1}"#).json::<Payload>().unwrap_err().0;
        assert!(
            not_json.starts_with("invalid data in Named event e-1 on stream s-1: invalid type"),
            "{not_json}"
        );
        let not_utf8 = event(b"{\"name\":\"\xff\",\"n\":1}")
            .json::<Payload>()
            .unwrap_err()
            .0;
        assert!(
            not_utf8.contains("on stream s-1: invalid utf-8 sequence of 1 bytes from index 9"),
            "{not_utf8}"
        );
    }

    #[test]
    fn json_lends_plain_strings_and_owns_escaped_ones() {
        use std::borrow::Cow;
        #[derive(serde::Deserialize)]
        struct Ids<'a> {
            #[serde(borrow)]
            id: Cow<'a, str>,
        }
        let plain = event(br#"{"id":"O1"}"#);
        let ids: Ids = plain.json().expect("decodes");
        assert!(matches!(ids.id, Cow::Borrowed("O1")), "lent from the data");
        let escaped = event(br#"{"id":"O\u0031"}"#);
        let ids: Ids = escaped.json().expect("decodes");
        assert!(
            matches!(ids.id, Cow::Owned(ref s) if s == "O1"),
            "decoded into its own"
        );
    }
}
