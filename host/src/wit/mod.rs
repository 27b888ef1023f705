//! The WIT contract as the host sees it: one module per contract version
//! (`since_v0_1` for `wit/v0.1`), and the current version's types re-exported here.
//!
//! Everything below the runtime speaks these types (events, positions, values, ops);
//! only the runtime touches the generated bindings' worlds and host traits. A new
//! contract version is a new `since_v0_x` module beside this one.

pub mod since_v0_1;
pub mod since_v0_2;

pub use since_v0_1::types::*;

impl PartialEq for Position {
    fn eq(&self, o: &Self) -> bool {
        self.commit == o.commit && self.prepare == o.prepare
    }
}

impl Eq for Position {}

// A generated type: the derive would have to go through bindgen for every type.
#[allow(clippy::derivable_impls)]
impl Default for Position {
    fn default() -> Self {
        Position {
            commit: 0,
            prepare: 0,
        }
    }
}

// Generated, as above: an event with every field empty, for buffers to fill in.
#[allow(clippy::derivable_impls)]
impl Default for Event {
    fn default() -> Self {
        Event {
            stream_id: String::new(),
            event_type: String::new(),
            event_id: String::new(),
            revision: 0,
            position: Position::default(),
            created_ms: 0,
            content_type: String::new(),
            data: Vec::new(),
            metadata: Vec::new(),
        }
    }
}

impl Position {
    /// The position of a source whose commit and prepare positions are one number
    /// (a line of an event file).
    pub fn at(n: u64) -> Position {
        Position {
            commit: n,
            prepare: n,
        }
    }
}
