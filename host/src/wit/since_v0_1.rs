//! Contract `projector:projection@0.1.0` (`wit/v0.1`): the generated bindings.
// Generated items carry the WIT file's own documentation, where it has some.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit/v0.1",
    world: "projector:projection/projection@0.1.0",
    imports: { default: trappable },
});

/// The `log` import.
pub use self::projector::projection::log;
/// The `read-model` import: `get` a row of the module's own tables.
pub use self::projector::projection::read_model;
/// The contract's types (event, manifest, ops, values).
pub use self::projector::projection::types;
