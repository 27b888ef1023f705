//! Projector: a WebAssembly projection host for EventStoreDB / KurrentDB.
//!
//! Events flow `source` → `runner` (one per projection) → `runtime` (the Wasm
//! module) → `store` (SQLite, ops and checkpoint in one transaction). `host`
//! wires them together and `registry` starts, swaps, rebuilds and stops runners as
//! module files change; `query` reads the results; `toolchain` builds guests;
//! `verify` checks that a module is deterministic; `diff` compares two modules' tables.

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
pub mod source;
pub mod store;
pub mod toolchain;
pub mod verify;

pub use config::Config;
pub use host::{RunOptions, RunSummary, run};
