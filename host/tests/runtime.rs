//! The runtime: compile cache across restarts, components that are not projections,
//! modules' functions named to `perf`, and instances allocated one by one for valgrind.

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

#[test]
fn projector_perfmap_names_each_modules_functions_to_perf() {
    let dir = tempfile::tempdir().unwrap();
    shop_events(&dir.path().join("events.ndjson"), 3, 200);
    let cfg = config_file(dir.path(), &modules(dir.path(), &["order-summary"]), "");
    let run = |perfmap: &str| {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_projector"))
            .args(["run", "--once", "--config"])
            .arg(&cfg)
            .env("PROJECTOR_PERFMAP", perfmap)
            .env("PROJECTOR_CACHE", dir.path().join("cache"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let map = std::path::PathBuf::from(format!("/tmp/perf-{}.map", child.id()));
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = std::fs::read_to_string(&map).ok();
        let _ = std::fs::remove_file(&map);
        std::fs::remove_dir_all(dir.path().join("data")).unwrap();
        text
    };
    // One line per compiled function: start address, size (both hex), name.
    let named = |text: &str| {
        text.lines()
            .filter(|l| {
                let f: Vec<&str> = l.splitn(3, ' ').collect();
                f.len() == 3
                    && f[..2]
                        .iter()
                        .all(|h| u64::from_str_radix(h.trim_start_matches("0x"), 16).is_ok())
                    && !f[2].is_empty()
            })
            .count()
    };
    let compiled = run("1").expect("a perf map");
    assert!(named(&compiled) > 10, "{compiled}");
    let cached = run("1").expect("a perf map for a module loaded from the cache");
    assert_eq!(named(&cached), named(&compiled), "{cached}");
    assert_eq!(run("0"), None, "no map unless asked for");
}

/// `PROJECTOR_ON_DEMAND=1` (the switch that lets a whole host run under valgrind): the
/// host says it allocates instances one by one, and projects the same tables as with the
/// pool.
#[test]
fn projector_on_demand_allocates_instances_one_by_one_with_the_same_tables() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 5, 3_000);
    let m = modules(dir.path(), &["order-summary", "customer-stats"]);
    // Small batches: many instances, each from the pool or allocated on its own.
    let cfg = config_file(dir.path(), &m, "[batch]\nmax_events = 100\n");
    for on_demand in ["1", "0"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_projector"))
            .args(["run", "--once", "--config"])
            .arg(&cfg)
            .env("PROJECTOR_ON_DEMAND", on_demand)
            .env("PROJECTOR_CACHE", dir.path().join("cache"))
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{log}");
        assert_eq!(
            log.contains("instances allocated one by one"),
            on_demand == "1",
            "{log}"
        );
        assert!(shop_exact(&dir.path().join("data"), &events, None), "{log}");
        std::fs::remove_dir_all(dir.path().join("data")).unwrap();
    }
}
