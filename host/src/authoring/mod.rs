//! Tools for people writing projections: `projector new` ([`scaffold`]), `projector test`
//! ([`cases`]: given/when/then cases beside the projection) and `projector events`
//! ([`survey`]: what a source holds).

pub mod cases;
pub mod scaffold;
pub mod survey;

use std::path::PathBuf;

/// The repository this binary was built from (where the Rust SDK is), if it still exists.
pub fn repo_dir() -> Option<PathBuf> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    repo.join("projections/sdk/Cargo.toml")
        .exists()
        .then(|| std::fs::canonicalize(&repo).unwrap_or(repo))
}
