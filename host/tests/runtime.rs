//! The runtime: compile cache across restarts, and components that are not projections.

mod common;

use common::*;
use projector::runtime::{Limits, Runtime};

#[test]
fn a_restart_loads_compiled_code_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(guest("order-summary")).unwrap();
    let cache = dir.path().join("cache");
    let first = Runtime::new(Limits::default(), Some(cache.clone()))
        .unwrap()
        .load(&wasm)
        .unwrap();
    assert!(!first.from_cache);
    let entries = std::fs::read_dir(&cache).unwrap().count();
    assert_eq!(entries, 1, "one compiled artifact, keyed by content hash");
    let second = Runtime::new(Limits::default(), Some(cache.clone()))
        .unwrap()
        .load(&wasm)
        .unwrap();
    assert!(second.from_cache, "the second process must not recompile");
    assert_eq!(second.schema().name, "order-summary");
    assert_eq!(first.hash, second.hash);
}

#[test]
fn a_component_of_another_world_is_rejected_with_a_reason() {
    let rt = Runtime::new(Limits::default(), None).unwrap();
    // A valid component that exports nothing a projection must.
    let wrong = wat::parse_str("(component (core module (func (export \"f\"))))").unwrap();
    let err = format!("{:#}", rt.load(&wrong).err().expect("rejected"));
    assert!(
        err.contains("does not export the projection world") || err.contains("does not fit"),
        "{err}"
    );
    // WASI that the sandbox does not provide (HTTP), or a WASI import of the wrong
    // shape: refused before any code runs, naming the import.
    for (import, func) in [
        ("wasi:http/outgoing-handler@0.2.0", "handle"),
        ("wasi:filesystem/preopens@0.2.0", "get-directories"),
    ] {
        let wasi = wat::parse_str(format!(
            r#"(component (import "{import}" (instance (export "{func}" (func)))))"#
        ))
        .unwrap();
        let err = format!("{:#}", rt.load(&wasi).err().expect("rejected"));
        assert!(err.contains(import), "{err}");
    }
    let err = format!(
        "{:#}",
        rt.load(b"random bytes, not wasm").err().expect("rejected")
    );
    assert!(err.contains("not a valid WebAssembly component"), "{err}");
}
