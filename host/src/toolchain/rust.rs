//! A Rust guest crate → a projection component.
//!
//! Prefers rustup's `wasm32-unknown-unknown` target when installed; otherwise uses
//! Debian's rustc with its std source (`-Zbuild-std`). The core module becomes a
//! component in-process with `wit-component`.
//!
//! A crate may ask for `wasm32-wasip1` (`[package.metadata.projector] target`): its
//! module is wrapped with the WASI preview1 reactor adapter and runs with the host's
//! empty WASI context. Projections need no WASI; this route is for code that does.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};

const TARGET: &str = "wasm32-unknown-unknown";
/// The WASI target a crate may ask for.
const WASI_TARGET: &str = "wasm32-wasip1";
/// Debian's wasi-libc (package wasi-libc), which `wasm32-wasip1` links against.
const DEBIAN_WASI_LIBC: &str = "/usr/lib/wasm32-wasi";
/// Debian's compiler (package rustc-web) and its std source (rust-web-src).
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_STD_SRC: &str = "/usr/lib/rustlib/src/rust";
/// LLVM's inlining threshold for guests (its default is 225–250). At 1000 a shop module's
/// calls ran 7.9% fewer native instructions (callgrind, both shop modules over 100k
/// events): fewer calls, and a module's fuel count is stored before each call and loaded
/// after it. The code grows by 75%; 500 saved 3.9%, 3000 no more than 1000 at twice the
/// code.
const INLINE_THRESHOLD: &str = "-Cllvm-args=-inline-threshold=1000";

/// Which compiler builds the guest.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// rustup's wasm32-unknown-unknown target is installed.
    Rustup,
    /// Debian's rustc builds std from source.
    DebianBuildStd,
}

/// Pick the route this machine supports for `wasm32-unknown-unknown`, or say what to install.
pub fn detect_route() -> Result<Route> {
    detect_route_for(TARGET)
}

fn detect_route_for(target: &str) -> Result<Route> {
    let sysroot = Command::new("rustc").args(["--print", "sysroot"]).output();
    if let Ok(out) = sysroot {
        let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if Path::new(&root).join("lib/rustlib").join(target).exists() {
            return Ok(Route::Rustup);
        }
    }
    let libc_ok = target != WASI_TARGET || Path::new(DEBIAN_WASI_LIBC).exists();
    if Path::new(DEBIAN_RUSTC).exists() && Path::new(DEBIAN_STD_SRC).exists() && libc_ok {
        return Ok(Route::DebianBuildStd);
    }
    anyhow::bail!(
        "no {target} toolchain: install rustup's target (`rustup target add {target}`) or, on Debian, \
         `apt-get install rustc-web cargo-web rust-web-src lld-22 wasi-libc` (scripts/setup-toolchain.sh does this)"
    )
}

/// Build the guest crate in `dir` and write the component to `out` (default:
/// `target/projections/<package>.wasm` under the current directory). Returns the path.
pub fn build(dir: &Path, out: Option<&Path>) -> Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    let meta = Command::new("cargo")
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .context("running cargo metadata")?;
    if !meta.status.success() {
        anyhow::bail!(
            "{} is not a cargo crate: {}",
            dir.display(),
            String::from_utf8_lossy(&meta.stderr).trim()
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&meta.stdout).context("parsing cargo metadata")?;
    let manifest_abs = std::fs::canonicalize(&manifest)
        .with_context(|| format!("finding {}", manifest.display()))?;
    let package = meta["packages"]
        .as_array()
        .and_then(|ps| {
            ps.iter().find(|p| {
                p["manifest_path"].as_str().map(Path::new) == Some(manifest_abs.as_path())
            })
        })
        .with_context(|| format!("no package in {}", manifest.display()))?;
    let name = package["name"]
        .as_str()
        .context("package without a name")?
        .to_string();
    // Guests get their own target dir: a nested cargo must not wait on the host's lock.
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d).join("projector-guests"),
        None => PathBuf::from(
            meta["target_directory"]
                .as_str()
                .context("no target_directory")?,
        ),
    };

    let target = match package["metadata"]["projector"]["target"].as_str() {
        None | Some(TARGET) => TARGET,
        Some(WASI_TARGET) => WASI_TARGET,
        Some(other) => anyhow::bail!(
            "{}: unsupported [package.metadata.projector] target `{other}` (use {TARGET} or {WASI_TARGET})",
            manifest.display()
        ),
    };
    let route = detect_route_for(target)?;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(dir)
        .args([
            "build",
            "--release",
            "--lib",
            "--target",
            target,
            "--manifest-path",
        ])
        .arg(&manifest_abs)
        .arg("--target-dir")
        .arg(&target_dir);
    // The guest's flags are the builder's alone, not the caller's environment's.
    let mut flags = vec![INLINE_THRESHOLD.to_string()];
    if route == Route::DebianBuildStd {
        cmd.env("RUSTC_BOOTSTRAP", "1")
            .env("RUSTC", DEBIAN_RUSTC)
            .arg("-Zbuild-std=std,panic_abort");
        if target == WASI_TARGET {
            flags.push(format!("-L{DEBIAN_WASI_LIBC}"));
        }
    }
    cmd.env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"));
    tracing::info!(crate = %name, route = ?route, "building guest");
    let status = cmd.status().context("running cargo build for the guest")?;
    if !status.success() {
        anyhow::bail!("building {} failed ({status})", dir.display());
    }
    let core = target_dir
        .join(target)
        .join("release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    let core_bytes = std::fs::read(&core)
        .with_context(|| format!("reading the core module {}", core.display()))?;
    let component = if target == WASI_TARGET {
        componentize_wasi(&core_bytes)
    } else {
        componentize(&core_bytes)
    };
    let component =
        component.with_context(|| format!("turning {} into a component", core.display()))?;
    let out = match out {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from("target/projections").join(format!("{name}.wasm")),
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    crate::runtime::write_atomic(&out, &component)?;
    Ok(out)
}

/// Wrap a core module (with its embedded WIT metadata) into a component.
pub fn componentize(core: &[u8]) -> Result<Vec<u8>> {
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(core)?
        .encode()
}

/// Wrap a `wasm32-wasip1` core module into a component through the preview1 reactor adapter.
pub fn componentize_wasi(core: &[u8]) -> Result<Vec<u8>> {
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(core)?
        .adapter(
            "wasi_snapshot_preview1",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .encode()
}
