//! The daemon: load the modules folder into the registry (one runner thread per
//! projection), watch it, show progress, and summarize. `main` is a thin shell around [`run`].

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::config::Config;
use crate::registry::{Registry, Roster};
use crate::runner::{ProjectionReport, Stats};

/// How `run` should behave.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Stop once every projection has caught up with the end of the source.
    pub once: bool,
    /// Draw progress bars (when stderr is a terminal).
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// One report per projection that ran.
    pub projections: Vec<ProjectionReport>,
    /// Modules that were refused, with the reason.
    pub rejected: Vec<(PathBuf, String)>,
    /// Compiling (or loading from cache) and validating the modules.
    pub load_elapsed: Duration,
    /// Processing, after the modules were loaded.
    pub elapsed: Duration,
}

impl RunSummary {
    /// Events read from the source by the projection that read the most.
    pub fn source_events(&self) -> u64 {
        self.projections
            .iter()
            .map(|p| p.events_read)
            .max()
            .unwrap_or(0)
    }

    /// True when every module loaded and every projection ran without a fault.
    pub fn ok(&self) -> bool {
        self.rejected.is_empty() && self.projections.iter().all(|p| p.error.is_none())
    }
}

/// Run every projection in the config's modules folder until done (`once`) or shutdown.
/// Without `once`, the modules folder is watched: modules dropped in, changed or removed
/// are started, swapped, rebuilt or stopped while the rest keep running (see `registry`).
pub fn run(config: &Config, options: RunOptions, shutdown: Arc<AtomicBool>) -> Result<RunSummary> {
    let loading = Instant::now();
    std::fs::create_dir_all(&config.data)
        .with_context(|| format!("creating data dir {}", config.data.display()))?;
    let _lock = crate::store::HostLock::acquire(&config.data)?;
    // Create the catalog before runners open it concurrently.
    crate::store::Catalog::open(&config.data)?;
    let mut registry = Registry::new(config, options.once, shutdown.clone())?;
    registry.load_all()?;
    // The API while the host follows the source (a `--once` run ends on its own).
    let _server = if options.once {
        None
    } else {
        crate::api::start(
            &config.http,
            &config.data,
            crate::api::Peers {
                cluster: config.cluster()?,
                elsewhere: registry.elsewhere.clone(),
            },
            registry.roster.clone(),
            registry.commander(),
        )?
    };
    let elsewhere = registry.elsewhere.lock().map(|e| e.len()).unwrap_or(0);
    if options.once && registry.projections() == 0 && elsewhere == 0 {
        anyhow::bail!(
            "no projection module could be loaded from {}",
            config.modules.display()
        );
    }
    let load_elapsed = loading.elapsed();
    let started = Instant::now();

    let done = Arc::new(AtomicBool::new(false));
    let progress = {
        let (done, stats) = (done.clone(), registry.roster.clone());
        let bars = options.progress && std::io::stderr().is_terminal();
        std::thread::spawn(move || show_progress(stats, done, bars))
    };
    let _watcher = (!options.once).then(|| registry.watch()).flatten();
    let wait = Duration::from_millis(match (&_watcher, options.once) {
        (_, true) => 20,
        (Some(_), false) => 2000.min(config.reload.poll_ms.max(1) * 8),
        (None, false) => config.reload.poll_ms.max(1),
    });
    let outcome = loop {
        if shutdown.load(Ordering::Relaxed) || (options.once && !registry.running()) {
            break Ok(());
        }
        if let Err(e) = registry.tick(wait) {
            break Err(e);
        }
    };
    let finished = registry.finish();
    let _ = std::fs::remove_file(config.data.join(crate::api::ADDRESS_FILE));
    done.store(true, Ordering::Relaxed);
    let _ = progress.join();
    outcome?;
    finished?;
    Ok(RunSummary {
        projections: std::mem::take(&mut registry.reports),
        rejected: std::mem::take(&mut registry.rejected),
        load_elapsed,
        elapsed: started.elapsed(),
    })
}

/// Progress bars on a terminal; a log line every few seconds otherwise. One line per
/// runner now running (the serving build, and a rebuild beside it), with its real state;
/// runners that ended leave the display.
fn show_progress(roster: Roster, done: Arc<AtomicBool>, bars: bool) {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let label = |r: &crate::registry::RosterEntry| {
        let role = if r.rebuild { " (rebuild)" } else { "" };
        format!("{} v{}{role}", r.name, r.version)
    };
    let state = |s: &Stats| {
        if s.caught_up.load(Ordering::Relaxed) {
            "live"
        } else {
            "catching up"
        }
    };
    let snapshot = || roster.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if bars {
        let multi = indicatif::MultiProgress::new();
        let style = indicatif::ProgressStyle::with_template(
            "{prefix:>28} [{bar:30}] {percent:>3}% {msg} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        let mut shown: Vec<(String, indicatif::ProgressBar, Arc<Stats>, Instant)> = Vec::new();
        while !done.load(Ordering::Relaxed) {
            let now = snapshot();
            shown.retain(|(key, bar, _, _)| {
                let keep = now.iter().any(|r| &label(r) == key);
                if !keep {
                    bar.finish();
                }
                keep
            });
            for r in &now {
                let key = label(r);
                if !shown.iter().any(|(k, ..)| *k == key) {
                    let bar = multi.add(indicatif::ProgressBar::new(1));
                    bar.set_style(style.clone());
                    bar.set_prefix(key.clone());
                    shown.push((key, bar, r.stats.clone(), Instant::now()));
                }
            }
            for (_, bar, s, t0) in &shown {
                bar.set_length(load(&s.progress_total).max(1));
                bar.set_position(load(&s.progress_done));
                let this_run = load(&s.events_read).saturating_sub(load(&s.events_at_start));
                let rate = this_run as f64 / t0.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!(
                    "{} events, {:.0}/s, {}",
                    load(&s.events_read),
                    rate,
                    state(s)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for (_, bar, _, _) in &shown {
            bar.finish();
        }
    } else {
        let mut last = Instant::now();
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            if last.elapsed() >= Duration::from_secs(5) {
                last = Instant::now();
                for r in snapshot() {
                    let s = &r.stats;
                    let (d, t) = (load(&s.progress_done), load(&s.progress_total).max(1));
                    tracing::info!(projection = %label(&r), events = load(&s.events_read), percent = d * 100 / t, state = state(s), "progress");
                }
            }
        }
    }
}

/// A printable summary: one line per projection, then the totals.
pub fn format_summary(s: &RunSummary) -> String {
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    let mut out = String::new();
    let mut by_name = BTreeMap::new();
    for p in &s.projections {
        by_name.insert(&p.name, p);
    }
    for p in by_name.values() {
        out.push_str(&format!(
            "  {:<16} v{:<3} {:>9} events read {:>9} handled {:>9} ops ({} rows written) | read {:.2}s wasm {:.2}s (get {:.2}s) sqlite {:.2}s commit {:.2}s | peak memory {:.1} MiB | {}\n",
            p.name,
            p.version,
            p.events_read,
            p.events_handled,
            p.ops_written,
            p.rows_written,
            p.seconds[0],
            p.seconds[1],
            p.get_seconds,
            p.seconds[2],
            p.seconds[3],
            p.peak_memory as f64 / (1 << 20) as f64,
            p.error
                .as_deref()
                .map_or("ok".to_string(), |e| format!("FAULTED: {e}")),
        ));
    }
    for (path, reason) in &s.rejected {
        out.push_str(&format!("  rejected {}: {reason}\n", path.display()));
    }
    // This run's work only: events read before it (a resumed run) do not count, and a
    // projection that ran as several builds counts once.
    let events = s
        .projections
        .iter()
        .map(|p| p.events_this_run)
        .max()
        .unwrap_or(0);
    let through: u64 = s.projections.iter().map(|p| p.events_this_run).sum();
    let names: std::collections::BTreeSet<&String> =
        s.projections.iter().map(|p| &p.name).collect();
    out.push_str(&format!(
        "processed {events} events in this run through {} projections in {:.2} s: {:.0} events/s ({:.0} projection-events/s); modules loaded in {:.2} s\n",
        names.len(),
        secs,
        events as f64 / secs,
        through as f64 / secs,
        s.load_elapsed.as_secs_f64(),
    ));
    out
}
