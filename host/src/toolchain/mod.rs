//! `projector build`: a guest project → a projection component, by language: a Rust
//! crate (`Cargo.toml`), a Python project (`app.py`, built with componentize-py) or a
//! JavaScript project (`app.js`, built with jco and the QuickJS backend).

mod rust;
mod scripted;

use std::path::{Path, PathBuf};

use anyhow::Result;

pub use rust::{Route, componentize, componentize_wasi, detect_route};
pub use scripted::tools_dir;

/// The language of a guest project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// A cargo crate.
    Rust,
    /// `app.py` and the Python SDK.
    Python,
    /// `app.js` and the JavaScript SDK.
    JavaScript,
}

/// The language of the project in `dir`, from the files it holds.
pub fn detect(dir: &Path) -> Result<Language> {
    if dir.join("Cargo.toml").exists() {
        Ok(Language::Rust)
    } else if dir.join("app.py").exists() {
        Ok(Language::Python)
    } else if dir.join("app.js").exists() {
        Ok(Language::JavaScript)
    } else {
        anyhow::bail!(
            "{} holds no projection: expected a Cargo.toml (Rust), an app.py (Python) or an app.js (JavaScript)",
            dir.display()
        )
    }
}

/// Build the project in `dir` into `out` (default: `target/projections/<name>.wasm`).
pub fn build(dir: &Path, out: Option<&Path>) -> Result<PathBuf> {
    match detect(dir)? {
        Language::Rust => rust::build(dir, out),
        lang => scripted::build(lang, dir, out),
    }
}
