//! Projector: a WebAssembly projection host for EventStoreDB / KurrentDB.
//!
//! Layers, bottom up (each uses only those below it):
//! - `wit` (the contract's types), `config`, `schema` (validated manifests);
//! - `source` (events in), `runtime` (Wasm modules), `store` (SQLite out);
//! - `runner`: one per projection build, source → module → store;
//! - `registry`: which module serves what, the runners' lifecycle, the one writer of
//!   projection state; `host`: the daemon around it;
//! - tools: `query`, `verify`, `diff`, `dead_letters`, `import`, `toolchain`.
#![deny(missing_docs)]

pub mod api;
pub mod authoring;
pub mod client;
pub mod cluster;
pub mod config;
pub mod dead_letters;
pub mod diff;
pub mod host;
pub mod import;
pub mod query;
pub mod registry;
pub mod runner;
pub mod runtime;
pub mod schema;
mod small_key;
pub mod source;
pub mod store;
pub mod toolchain;
pub mod verify;
pub mod wit;

pub use config::Config;
pub use host::{RunOptions, RunSummary, run};
