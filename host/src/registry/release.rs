//! Safe releases: a new version's build is compared with the serving build before it
//! takes over, and held when the release rules say it would break the read model;
//! `promote` cuts over to a held build, `rollback` serves the previous build again
//! (through the module kept with it). The serving build keeps serving throughout.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context as _, Result};

use super::{Registry, RunnerId};
use crate::runner::{Role, Transition};
use crate::runtime::Module;
use crate::store::{Build, Held, TableComparison, build_path, builds_on_disk, module_path};

impl Registry {
    /// Start `name` with `module` from the folder, or the serving build's own module when
    /// the folder's is a version that has not taken over (it then rebuilds beside it, under
    /// the release rules) or one a rollback stepped back from.
    pub(super) fn start_projection(&mut self, name: &str, module: Arc<Module>) -> Result<()> {
        let catalog = self.recorder.catalog();
        let entry = catalog.entry(name)?;
        let release = catalog.release(name)?;
        let serving = entry
            .as_ref()
            .and_then(|e| Some((e.serving_version?, e.serving_generation)));
        let stepped_back = release
            .rolled_back
            .as_ref()
            .is_some_and(|b| b.sha256 == module.hash);
        let behind = serving.is_some_and(|(v, _)| v != module.schema().version);
        let kept = match serving {
            Some((v, g)) if stepped_back || behind => self.kept_module(name, v, g)?,
            _ => None,
        };
        let Some(kept) = kept else {
            let owner = self.start(&module, Role::Serving, None)?;
            if let Some(slot) = self.slots.get_mut(name) {
                slot.owner = owner;
            }
            return Ok(());
        };
        let owner = self.start(&kept, Role::Serving, serving.map(|(_, g)| g))?;
        if let Some(slot) = self.slots.get_mut(name) {
            slot.owner = owner;
        }
        if stepped_back {
            tracing::warn!(projection = %name, "the module in the folder was rolled back; the previous build serves (`projector promote {name}` runs the new one again)");
        } else {
            tracing::info!(projection = %name, version = module.schema().version, "a new version has not taken over yet: the serving build serves while it rebuilds");
            self.rebuild(name, module, None, None)?;
            self.mark_release(name);
        }
        Ok(())
    }

    /// The module kept with build (`version`, `generation`) of `name`, if there is one.
    fn kept_module(
        &self,
        name: &str,
        version: u32,
        generation: u32,
    ) -> Result<Option<Arc<Module>>> {
        let path = module_path(&self.config.data, name, version, generation);
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(None);
        };
        let module = self
            .runtime
            .load(&bytes)
            .with_context(|| format!("loading the kept module {}", path.display()))?;
        Ok(Some(Arc::new(module)))
    }

    /// True (and logged) when `module` is the one a rollback stepped back from.
    pub(super) fn rolled_back(&self, name: &str, module: &Module) -> Result<bool> {
        let release = self.recorder.catalog().release(name)?;
        let back = release.rolled_back.is_some_and(|b| b.sha256 == module.hash);
        if back {
            tracing::warn!(projection = %name, "not running the module a rollback stepped back from; `projector promote {name}` runs it again");
        }
        Ok(back)
    }

    /// The rebuild of `name` just started is a release: the rules decide its takeover.
    pub(super) fn mark_release(&mut self, name: &str) {
        if let Some(h) = self.slots.get(name).and_then(|s| s.rebuild.as_ref()) {
            self.releases.insert(h.id);
        }
    }

    /// A release rebuild caught up: compare it with the serving build; true when the
    /// rules hold it (recorded, and it keeps following the source).
    pub(super) fn hold(&mut self, id: RunnerId) -> Result<bool> {
        let Some(info) = self.runners.get(&id).cloned() else {
            return Ok(false);
        };
        let name = info.name.as_str();
        let Some(slot) = self.slots.get(name) else {
            return Ok(false);
        };
        let (Some(owner), Some(rebuild)) = (&slot.owner, &slot.rebuild) else {
            return Ok(false);
        };
        let Some(old) = self.runners.get(&owner.id) else {
            return Ok(false);
        };
        let data = &self.config.data;
        let cmp = crate::store::compare_builds(
            &build_path(data, name, old.version, old.generation),
            &build_path(data, name, info.version, info.generation),
        )?;
        let rules = self.config.release_rules(name);
        let mut reasons = judge(&cmp, rules.hold_when_emptied, rules.max_removed_share);
        if rules.hold_on_unmatched_types {
            let before = &owner.module.schema().event_types;
            let seen = rebuild
                .stats
                .matched_types
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for t in &rebuild.module.schema().event_types {
                if !seen.contains_key(t) && !before.contains(t) {
                    reasons.push(format!(
                        "event type `{t}` matched no event in the whole history, and the serving version does not name it"
                    ));
                }
            }
        }
        let summary = cmp
            .iter()
            .map(|c| {
                format!(
                    "{}: {} → {} rows (+{} -{} ~{})",
                    c.table, c.old_rows, c.new_rows, c.added, c.removed, c.changed
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        if reasons.is_empty() {
            tracing::info!(projection = %name, version = info.version, "compared with the serving build: {summary}");
            return Ok(false);
        }
        let held = Held {
            build: Build {
                version: info.version,
                generation: info.generation,
                sha256: info.hash.clone(),
            },
            reason: reasons.join("; "),
            comparison: serde_json::to_string(&cmp)?,
        };
        self.recorder.catalog().set_held(name, Some(&held))?;
        tracing::warn!(projection = %name, version = info.version, "held: {}; the serving build keeps serving and this one keeps following the source ({summary}); `projector promote {name}` cuts over", held.reason);
        Ok(true)
    }

    /// Cut over to the held build of `name`, or run again the build a rollback stepped
    /// back from.
    pub fn promote(&mut self, name: &str) -> Result<String> {
        let catalog = self.recorder.catalog();
        let release = catalog.release(name)?;
        let slot = self
            .slots
            .get(name)
            .with_context(|| format!("no module provides projection `{name}`"))?;
        if let Some(rebuild) = &slot.rebuild {
            let caught_up = rebuild.stats.caught_up.load(Ordering::Relaxed);
            anyhow::ensure!(
                caught_up,
                "the rebuild of `{name}` has not caught up yet; it takes over by itself unless the release rules hold it"
            );
            let id = rebuild.id;
            self.releases.remove(&id);
            self.record(id, Transition::CaughtUp)?;
            return Ok(format!("`{name}`: the new build serves"));
        }
        let Some(back) = release.rolled_back else {
            anyhow::bail!("projection `{name}` has no held build and no rollback to undo");
        };
        let module = slot.module.clone();
        anyhow::ensure!(
            module.hash == back.sha256,
            "the module in the folder is not the one rolled back from; nothing to promote"
        );
        self.stop_runners(name);
        let catalog = self.recorder.catalog();
        catalog.cut_over(name, back.version, back.generation, &back.sha256)?;
        catalog.set_rolled_back(name, None)?;
        let owner = self.start(&module, Role::Serving, Some(back.generation))?;
        if let Some(slot) = self.slots.get_mut(name) {
            slot.owner = owner;
        }
        Ok(format!(
            "`{name}`: version {} (build {}) serves again",
            back.version, back.generation
        ))
    }

    /// Serve the previous build of `name` again, through the module kept with it.
    pub fn rollback(&mut self, name: &str) -> Result<String> {
        anyhow::ensure!(
            self.slots.contains_key(name),
            "no module provides projection `{name}`"
        );
        let catalog = self.recorder.catalog();
        let entry = catalog
            .entry(name)?
            .with_context(|| format!("no projection `{name}`"))?;
        let current = previous_build(&self.config.data, name, &entry)?;
        let (prev, serving) = current;
        let module = self
            .kept_module(name, prev.0, prev.1)?
            .with_context(|| format!("the module of build {prev:?} was not kept"))?;
        self.stop_runners(name);
        let catalog = self.recorder.catalog();
        catalog.cut_over(name, prev.0, prev.1, &module.hash)?;
        catalog.set_held(name, None)?;
        catalog.set_rolled_back(name, Some(&serving))?;
        let owner = self.start(&module, Role::Serving, Some(prev.1))?;
        if let Some(slot) = self.slots.get_mut(name) {
            slot.owner = owner;
        }
        Ok(format!(
            "`{name}`: version {} (build {}) serves again; it catches up from its own checkpoint",
            prev.0, prev.1
        ))
    }

    /// Stop the owner and the rebuild of `name`, keeping the slot.
    fn stop_runners(&mut self, name: &str) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        for h in [slot.rebuild.take(), slot.owner.take()]
            .into_iter()
            .flatten()
        {
            self.runners.remove(&h.id);
            self.releases.remove(&h.id);
            self.reports.push(h.stop());
        }
    }
}

/// Which rules a comparison trips, as reasons for people.
pub fn judge(cmp: &[TableComparison], when_emptied: bool, max_removed_share: f64) -> Vec<String> {
    let mut reasons = Vec::new();
    for c in cmp {
        if when_emptied && c.old_rows > 0 && c.new_rows == 0 {
            reasons.push(format!(
                "table `{}` would go from {} rows to none",
                c.table, c.old_rows
            ));
        } else if c.old_rows > 0 && c.removed as f64 / c.old_rows as f64 > max_removed_share {
            reasons.push(format!(
                "table `{}` would lose {} of its {} rows (over the {:.0}% allowed)",
                c.table,
                c.removed,
                c.old_rows,
                max_removed_share * 100.0
            ));
        }
    }
    reasons
}

/// The build to roll back to (the newest kept build other than the serving one, with its
/// module kept), and the serving build it steps back from.
pub fn previous_build(
    data: &std::path::Path,
    name: &str,
    entry: &crate::store::CatalogEntry,
) -> Result<((u32, u32), Build)> {
    let serving = entry
        .serving_version
        .map(|v| (v, entry.serving_generation))
        .with_context(|| format!("projection `{name}` serves nothing yet"))?;
    let kept = |b: &(u32, u32)| *b != serving && module_path(data, name, b.0, b.1).exists();
    let last = crate::store::Catalog::open_read_only(data)?.previous(name)?;
    let prev = last
        .filter(kept)
        .or_else(|| builds_on_disk(data, name).into_iter().rev().find(kept))
        .with_context(|| {
            format!(
                "no previous build of `{name}` is kept ([reload] keep_versions = 0, or none was replaced yet)"
            )
        })?;
    let sha256 = entry.module_sha256.clone().unwrap_or_default();
    Ok((
        prev,
        Build {
            version: serving.0,
            generation: serving.1,
            sha256,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(old_rows: u64, new_rows: u64, removed: u64) -> TableComparison {
        TableComparison {
            table: "t".into(),
            old_rows,
            new_rows,
            removed,
            ..Default::default()
        }
    }

    #[test]
    fn the_rules_hold_an_emptied_or_shrunken_table_only() {
        assert_eq!(
            judge(&[table(3, 0, 3)], true, 0.5),
            vec!["table `t` would go from 3 rows to none"]
        );
        assert!(
            judge(&[table(3, 0, 3)], false, 1.0).is_empty(),
            "rules can be switched off"
        );
        assert_eq!(judge(&[table(10, 4, 6)], true, 0.5).len(), 1, "60% removed");
        assert!(
            judge(&[table(10, 12, 2)], true, 0.5).is_empty(),
            "20% replaced: fine"
        );
        assert!(
            judge(&[table(0, 0, 0)], true, 0.5).is_empty(),
            "empty before and after"
        );
    }
}
