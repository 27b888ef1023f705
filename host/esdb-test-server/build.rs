//! Compile server stubs for the EventStoreDB gRPC protocol from the `.proto` files that
//! ship inside the published `kurrentdb` crate (located with `cargo metadata`), with the
//! pure-Rust `protox` compiler: no `protoc`, no copied files.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("Cargo.toml");
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(&manifest)
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let kurrentdb = meta["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "kurrentdb"))
        .and_then(|p| p["manifest_path"].as_str())
        .map(PathBuf::from)
        .expect("the kurrentdb crate in the dependency graph");
    let protos = kurrentdb.parent().expect("a crate folder").join("protos");
    let files = ["streams.proto", "serverfeatures.proto", "gossip.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={}", protos.join(f).display());
    }
    let fds =
        protox::compile(files.map(|f| protos.join(f)), [&protos]).expect("compiling the protos");
    tonic_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_fds(fds)
        .expect("generating the server stubs");
}
