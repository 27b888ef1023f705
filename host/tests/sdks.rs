//! The guest SDKs' own tests, run on the host: the Rust SDK's overlay with its base reader
//! injected, and `json-skim` (cargo test on the host target); the Python SDK under plain
//! CPython; and the JavaScript SDK under node.

mod common;

use std::process::Command;

fn run(what: &str, cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_rust_sdk_overlay_reads_its_own_writes() {
    let repo = common::repo();
    // A target dir of its own: this test runs inside a cargo that holds the outer one.
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sdk-host");
    run(
        "cargo test -p projector-sdk -p json-skim -p shop-model",
        Command::new(env!("CARGO"))
            .args([
                "test",
                "--release",
                "-p",
                "projector-sdk",
                "-p",
                "json-skim",
                "-p",
                "shop-model",
                "--manifest-path",
            ])
            .arg(repo.join("projections/Cargo.toml"))
            .arg("--target-dir")
            .arg(target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS"),
    );
}

#[test]
fn the_python_sdk_passes_its_tests() {
    run(
        "python3 -m unittest (projections/sdk-python)",
        Command::new("python3")
            .args(["-m", "unittest", "discover", "-q", "-p", "test_*.py", "-s"])
            .arg(common::repo().join("projections/sdk-python")),
    );
}

#[test]
fn the_javascript_sdk_passes_its_tests() {
    run(
        "node --test (projections/sdk-js)",
        Command::new("node")
            .arg("--test")
            .arg(common::repo().join("projections/sdk-js/test-sdk.mjs")),
    );
}
