//! The one writer of projection state: runners report transitions, the recorder
//! decides what each means for the projection and writes the catalog. A runner that
//! does not own its projection (a rebuild that has not taken over, or a build that lost
//! it) changes nothing but its own file.

use std::path::Path;

use anyhow::Result;

use crate::runner::{Role, Transition};
use crate::store::{Catalog, ProjectionState};

/// Who reported: what the recorder needs to know of a runner.
#[derive(Debug, Clone)]
pub struct RunnerInfo {
    /// The projection.
    pub name: String,
    /// The version the runner builds.
    pub version: u32,
    /// The build of that version.
    pub generation: u32,
    /// SHA-256 of the module it runs.
    pub hash: String,
    /// What it is for.
    pub role: Role,
}

/// What a recorded transition asks of whoever manages the runners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing more to do.
    Recorded,
    /// The reporting rebuild now serves: the runner it replaced must stop.
    TookOver,
}

/// Writes transitions into the catalog.
pub struct Recorder {
    catalog: Catalog,
}

impl Recorder {
    /// A recorder over the catalog of `data`.
    pub fn open(data: &Path) -> Result<Recorder> {
        Ok(Recorder {
            catalog: Catalog::open(data)?,
        })
    }

    /// The catalog, for reading.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Record `t`, reported by `who`, which owns the projection (`owner`) or not.
    pub fn record(&self, who: &mut RunnerInfo, owner: bool, t: &Transition) -> Result<Outcome> {
        let c = &self.catalog;
        let name = who.name.as_str();
        match (t, owner) {
            (Transition::Started, true) => c.started(name, who.version, &who.hash)?,
            (Transition::Swapped(hash), _) => {
                who.hash = hash.clone();
                if owner {
                    c.started(name, who.version, &who.hash)?;
                }
            }
            (Transition::Committed(a), true) => c.account(name, *a)?,
            (Transition::CaughtUp, true) => {
                c.set_state(name, ProjectionState::CaughtUp, None)?;
                c.serve(name, who.version, who.generation)?;
            }
            (Transition::CaughtUp, false) => {
                c.cut_over(name, who.version, who.generation, &who.hash)?;
                tracing::info!(projection = %name, version = who.version, generation = who.generation, "cut over: queries now read this build");
                return Ok(Outcome::TookOver);
            }
            (Transition::Paused(reason), owner) => {
                if !owner {
                    c.cut_over(name, who.version, who.generation, &who.hash)?;
                }
                c.set_state(name, ProjectionState::Paused, Some(reason))?;
                if !owner {
                    return Ok(Outcome::TookOver);
                }
            }
            (Transition::Faulted(reason), true) => {
                c.set_state(name, ProjectionState::Faulted, Some(reason))?
            }
            (Transition::Faulted(reason), false) => c.set_failed_rebuild(name, Some(reason))?,
            (Transition::Started, false) => c.set_failed_rebuild(name, None)?,
            (Transition::Stopped, true) => c.set_state(name, ProjectionState::Stopped, None)?,
            // A rebuild's own progress, or a runner that no longer owns the projection.
            _ => {}
        }
        Ok(Outcome::Recorded)
    }
}
