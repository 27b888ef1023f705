//! Python and JavaScript projections, built from source by `projector build` with the
//! pinned toolchains (scripts/setup-guest-langs.sh), load under the store limits derived
//! from each component and give the same tables as the Rust build (`projector diff`).

mod common;

use std::path::PathBuf;

use common::*;

fn build(project: &str) -> PathBuf {
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("guests")
        .join(format!("{project}.wasm"));
    projector::toolchain::build(&repo().join("projections").join(project), Some(&out))
        .unwrap_or_else(|e| panic!("building {project}: {e:#}"))
}

#[test]
fn python_and_javascript_shop_projections_equal_the_rust_ones() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 5, 20_000);
    let source = events.to_string_lossy().into_owned();
    let runtime = projector::runtime::Runtime::new(Default::default(), None).unwrap();
    for shop in ["order-summary", "customer-stats"] {
        let rust = guest(shop);
        let rust_module = runtime.load(&std::fs::read(&rust).unwrap()).unwrap();
        assert_eq!(rust_module.contract(), "0.2", "{shop} (Rust)");
        for lang in ["py", "js"] {
            let wasm = build(&format!("{shop}-{lang}"));
            let module = runtime
                .load(&std::fs::read(&wasm).unwrap())
                .unwrap_or_else(|e| panic!("{shop}-{lang} loads: {e:#}"));
            assert!(!module.wasi, "{shop}-{lang}: built with WASI stubbed out");
            // Python and JavaScript speak contract 0.1, the Rust SDK 0.2 (packed batch):
            // the diff below runs the same events through both.
            assert_eq!(module.contract(), "0.1", "{shop}-{lang}");
            assert!(
                module.footprint().instances > 4,
                "{shop}-{lang}: more core instances than the old fixed limit allowed: {:?}",
                module.footprint()
            );
            let diffs = projector::diff::diff(&rust, &wasm, &source, &Default::default())
                .unwrap_or_else(|e| panic!("{shop}-{lang}: {e:#}"));
            assert!(!diffs.is_empty());
            for d in &diffs {
                assert!(
                    d.same > 100 && d.added == 0 && d.removed == 0 && d.changed == 0,
                    "{shop}-{lang} differs from Rust: {d:?}"
                );
            }
        }
    }
}

#[test]
fn a_project_in_no_known_language_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = projector::toolchain::build(dir.path(), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected a Cargo.toml (Rust), an app.py (Python) or an app.js (JavaScript)"),
        "{err}"
    );
}
