//! SQLite read models: one database file per build of a projection version, with its
//! checkpoint in the same file; the catalog of what serves; op validation; the layout
//! of the data folder.

mod catalog;
mod compare;
mod db;
mod layout;
mod ops;
mod window;

pub use catalog::{
    Accounting, Build, Catalog, CatalogEntry, Held, ProjectionState, RefusedModule, Release,
};
pub use compare::{TableComparison, compare_builds};
pub use db::{Checkpoint, ProjectionDb, TableReader};
pub use layout::{
    HostLock, build_path, builds_on_disk, drop_projection, keep_module, module_path, prune_builds,
    remove_build, version_path,
};
pub use ops::{OpError, OpLimits};
