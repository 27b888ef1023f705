//! Hot reload against a running host whose event file is being appended to: a module
//! dropped in goes live; new code of the same version swaps in without replay; a broken
//! module or a table change without a version bump is refused while the old keeps
//! running; a version bump rebuilds beside the serving version and cuts over with no
//! reader ever seeing a mix or a partial table; a removed file stops its projection,
//! and `projector drop` deletes its tables once the host has stopped.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use projector::store::Catalog;

/// The event file, and how many events of each type it holds.
struct Events {
    path: PathBuf,
    counts: BTreeMap<String, u64>,
    lines: u64,
}

impl Events {
    fn new(path: PathBuf) -> Events {
        std::fs::write(&path, "").unwrap();
        Events {
            path,
            counts: BTreeMap::new(),
            lines: 0,
        }
    }

    /// Append `n` events cycling through `types` (plus one event the tally ignores).
    fn append(&mut self, n: u64, types: &[&str]) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .unwrap();
        let mut buf = String::new();
        for i in 0..n {
            let t = types[(i % types.len() as u64) as usize];
            buf.push_str(&format!(
                "{{\"stream\":\"t-{}\",\"type\":\"{t}\",\"data\":{{}}}}\n",
                i % 7
            ));
            *self.counts.entry(t.to_string()).or_default() += 1;
        }
        buf.push_str("{\"stream\":\"other-1\",\"type\":\"Ignored\",\"data\":{}}\n");
        f.write_all(buf.as_bytes()).unwrap();
        self.lines += n + 1;
    }

    fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct Count {
    event_type: String,
    n: u64,
    code: String,
}

/// The tally's serving table, or None while it has none.
fn counts(data: &Path) -> Option<BTreeMap<String, Count>> {
    let mut out = Vec::new();
    projector::query::query(
        data,
        "tally",
        "SELECT event_type, n, code FROM counts",
        &mut out,
    )
    .ok()?;
    Some(
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Count>(l).unwrap())
            .map(|c| (c.event_type.clone(), c))
            .collect(),
    )
}

/// Wait (up to 60 s) until `cond` holds; returns how long it took.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    t0.elapsed()
}

/// Copy a guest into the modules folder as `name`, atomically (write, then rename).
fn ship(guest_name: &str, modules: &Path, name: &str) {
    let tmp = modules.join(format!(".{name}.partial"));
    std::fs::copy(guest(guest_name), &tmp).unwrap();
    std::fs::rename(&tmp, modules.join(name)).unwrap();
}

/// Counts equal to the file's, all written by `code`'s version (for the types listed).
fn exact(data: &Path, events: &Events) -> bool {
    counts(data).is_some_and(|c| {
        c.len() == events.counts.len()
            && events
                .counts
                .iter()
                .all(|(t, n)| c.get(t).is_some_and(|r| r.n == *n))
    })
}

#[test]
fn modules_are_shipped_swapped_rebuilt_and_removed_while_the_host_runs() {
    common::logs_on_failure();
    let dir = tempfile::tempdir().unwrap();
    let mut events = Events::new(dir.path().join("events.ndjson"));
    events.append(20_000, &["A", "B", "C"]);
    let modules = dir.path().join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    let data = dir.path().join("data");
    let mut cfg = config(dir.path(), &events.path, &modules, 1000);
    cfg.reload.debounce_ms = 50;
    cfg.reload.poll_ms = 100;
    cfg.reload.keep_versions = 0; // this test watches old builds go
    // Build every variant before the clock starts.
    for g in ["tally-v1", "tally-v1b", "tally-v1-wide", "tally-v2"] {
        guest(g);
    }

    let (shutdown, host) = start_host(&cfg);

    // 1. A module dropped in goes live and catches up.
    std::thread::sleep(Duration::from_millis(300));
    ship("tally-v1", &modules, "tally.wasm");
    let t = wait_for("tally v1 to serve", || exact(&data, &events));
    println!(
        "new module: {} ms from file written to its tables serving (20,000 events)",
        t.as_millis()
    );
    events.append(3000, &["A", "B", "C"]);
    wait_for("live events", || exact(&data, &events));

    // 2. Same version, new code: swapped at a batch boundary, no replay. Only `A` events
    // follow, so rows B and C keep the old code's mark: nothing was replayed.
    let t0 = Instant::now();
    ship("tally-v1b", &modules, "tally.wasm");
    let mut swapped = None;
    for _ in 0..500 {
        events.append(10, &["A"]);
        if counts(&data).is_some_and(|c| c["A"].code == "b") {
            swapped = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let swapped = swapped.expect("the new code took over");
    println!(
        "new code, same version: {} ms from file written to serving",
        swapped.as_millis()
    );
    wait_for("exact counts after the swap", || exact(&data, &events));
    let c = counts(&data).unwrap();
    assert_eq!((c["B"].code.as_str(), c["C"].code.as_str()), ("a", "a"));
    let catalog = Catalog::open_read_only(&data).unwrap();
    assert_eq!(
        catalog.entry("tally").unwrap().unwrap().serving_version,
        Some(1)
    );

    // 3. A broken module and a table change without a version bump are refused; the
    // running code keeps running.
    std::fs::write(modules.join("broken.wasm"), b"\0asm but not really").unwrap();
    ship("tally-v1-wide", &modules, "tally.wasm");
    // The host shows both refusals in its catalog (for `projector status` and the API)
    // while it runs; step 4 replaces the file only after the watcher has judged it.
    let refused = || {
        Catalog::open_read_only(&data)
            .unwrap()
            .refused()
            .unwrap()
            .into_iter()
            .map(|r| (r.file, r.reason))
            .collect::<Vec<_>>()
    };
    wait_for("both refusals shown", || {
        let r = refused();
        r.iter().any(|(f, why)| {
            f.ends_with("broken.wasm") && why.contains("not a valid WebAssembly component")
        }) && r.iter().any(|(f, why)| {
            f.ends_with("tally.wasm") && why.contains("changed its tables without a version bump")
        })
    });
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_projector"))
        .args(["status", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success()
            && shown
                .lines()
                .any(|l| l.starts_with("REFUSED ") && l.contains("broken.wasm")),
        "{shown}"
    );
    events.append(900, &["A", "B", "C"]);
    wait_for("the old code to keep running", || exact(&data, &events));
    assert_eq!(counts(&data).unwrap()["B"].code, "b");

    // 4. A version bump rebuilds beside the serving version. A reader polls throughout:
    // every answer is all-old or all-new, and a new answer is never partial.
    let at_bump = events.total();
    let stop_reader = Arc::new(AtomicBool::new(false));
    let reader = {
        let (data, stop) = (data.clone(), stop_reader.clone());
        std::thread::spawn(move || {
            let (mut polls, mut new_seen) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let c = counts(&data).expect("the tally always has a serving table");
                let new = c.values().filter(|r| r.code == "v2").count();
                assert!(new == 0 || new == c.len(), "a mix of versions: {c:?}");
                if new > 0 {
                    new_seen += 1;
                    let total: u64 = c.values().map(|r| r.n).sum();
                    assert!(total >= at_bump, "a partial table: {total} < {at_bump}");
                }
                polls += 1;
            }
            (polls, new_seen)
        })
    };
    let t0 = Instant::now();
    ship("tally-v2", &modules, "tally.wasm");
    // The old version keeps processing live events during the rebuild.
    while Catalog::open_read_only(&data)
        .unwrap()
        .entry("tally")
        .unwrap()
        .unwrap()
        .serving_version
        != Some(2)
    {
        events.append(50, &["A", "B", "C"]);
        assert!(t0.elapsed() < Duration::from_secs(60), "no cutover");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "version bump: {} ms from file written to cutover ({} events replayed)",
        t0.elapsed().as_millis(),
        events.total()
    );
    wait_for("v2 exact and live", || {
        exact(&data, &events) && counts(&data).unwrap().values().all(|r| r.code == "v2")
    });
    std::thread::sleep(Duration::from_millis(100));
    stop_reader.store(true, Ordering::Relaxed);
    let (polls, new_seen) = reader.join().expect("the reader saw only whole versions");
    assert!(polls > 10 && new_seen > 0, "{polls} polls, {new_seen} new");
    let folder = data.join("tally");
    wait_for("the old version's tables dropped", || {
        !folder.join("v1.sqlite").exists()
    });
    assert!(folder.join("v2.sqlite").exists());

    // The file loads now: its refusal is no longer shown; the broken file's still is.
    let r = refused();
    assert!(r.len() == 1 && r[0].0.ends_with("broken.wasm"), "{r:?}");

    // 5. File removed: the projection stops; its tables stay.
    std::fs::remove_file(modules.join("tally.wasm")).unwrap();
    wait_for("the projection to stop", || {
        Catalog::open_read_only(&data)
            .unwrap()
            .entry("tally")
            .unwrap()
            .unwrap()
            .state
            == projector::store::ProjectionState::Stopped
    });
    let before = counts(&data).unwrap();
    events.append(500, &["A"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        counts(&data).unwrap(),
        before,
        "a stopped projection reads nothing"
    );

    // `projector drop` waits for the host to stop: it holds the data folder's lock.
    let refused = format!(
        "{:#}",
        projector::store::drop_projection(&data, "tally").unwrap_err()
    );
    assert!(refused.contains("stop the host first"), "{refused}");

    shutdown.store(true, Ordering::Relaxed);
    let summary = host.join().unwrap().expect("the host ran");
    projector::store::drop_projection(&data, "tally").unwrap();
    assert!(!folder.exists() && counts(&data).is_none());
    let rejected: Vec<String> = summary
        .rejected
        .iter()
        .map(|(p, r)| format!("{}: {r}", p.display()))
        .collect();
    assert!(
        rejected
            .iter()
            .any(|r| r.contains("broken.wasm") && r.contains("not a valid WebAssembly component")),
        "{rejected:?}"
    );
    assert!(
        rejected
            .iter()
            .any(|r| r.contains("changed its tables without a version bump")
                && r.contains("bump the manifest version")),
        "{rejected:?}"
    );
    assert!(
        summary.projections.iter().all(|p| p.error.is_none()),
        "{:?}",
        summary.projections
    );
}

/// Tally counts of the first `upto` lines of the event file.
fn counts_upto(events: &Events, upto: usize) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in std::fs::read_to_string(&events.path)
        .unwrap()
        .lines()
        .take(upto)
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["stream"].as_str().unwrap().starts_with("t-") {
            *out.entry(v["type"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    out
}

fn ns(data: &Path) -> BTreeMap<String, u64> {
    counts(data)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, c)| (k, c.n))
        .collect()
}

fn entry(data: &Path) -> projector::store::CatalogEntry {
    Catalog::open_read_only(data)
        .unwrap()
        .entry("tally")
        .unwrap()
        .unwrap()
}

/// `projector replay` against a running host: a new build of the same version replays
/// beside the serving one and cuts over; `--until` pauses it at a position (serving the
/// tables as of there) until `resume`. Offline, the same commands run in-process.
#[test]
fn replay_rebuilds_beside_the_serving_build_and_pauses_until_resumed() {
    use projector::registry::control::{
        Delivery, request_replay as replay, request_resume as resume,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut events = Events::new(dir.path().join("events.ndjson"));
    events.append(5000, &["A", "B", "C"]);
    let modules = dir.path().join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    ship("tally-v1", &modules, "tally.wasm");
    let data = dir.path().join("data");
    let mut cfg = config(dir.path(), &events.path, &modules, 500);
    cfg.reload.poll_ms = 50;
    cfg.reload.keep_versions = 0; // this test watches old builds go

    let (shutdown, host) = start_host(&cfg);
    wait_for("tally to serve", || exact(&data, &events));

    // A full replay: generation 1 of version 1 takes over; generation 0 is dropped.
    assert_eq!(replay(&cfg, "tally", None).unwrap(), Delivery::Requested);
    wait_for("the replay to cut over", || {
        entry(&data).serving_generation == 1
    });
    wait_for("exact after the replay", || exact(&data, &events));
    let folder = data.join("tally");
    assert!(folder.join("v1.1.sqlite").exists());
    wait_for("generation 0 dropped", || {
        !folder.join("v1.sqlite").exists()
    });

    // Replay until line 1000: it serves the tables as of there, paused.
    assert_eq!(
        replay(&cfg, "tally", Some(1000)).unwrap(),
        Delivery::Requested
    );
    wait_for("the pause", || {
        let e = entry(&data);
        e.state == projector::store::ProjectionState::Paused && e.serving_generation == 2
    });
    assert_eq!(ns(&data), counts_upto(&events, 1000));
    events.append(300, &["A"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        ns(&data),
        counts_upto(&events, 1000),
        "paused: reads nothing more"
    );

    // Resume: it continues from there to the live head.
    assert_eq!(resume(&data, "tally").unwrap(), Delivery::Requested);
    wait_for("exact after resuming", || exact(&data, &events));
    shutdown.store(true, Ordering::Relaxed);
    host.join().unwrap().unwrap();

    // Offline: the command runs here. A pause survives a restart until resumed.
    assert_eq!(replay(&cfg, "tally", Some(500)).unwrap(), Delivery::Done);
    assert_eq!(ns(&data), counts_upto(&events, 500));
    assert_eq!(
        entry(&data).state,
        projector::store::ProjectionState::Paused
    );
    assert!(run_once(&cfg).ok());
    assert_eq!(ns(&data), counts_upto(&events, 500), "still paused");
    assert_eq!(resume(&data, "tally").unwrap(), Delivery::Done);
    assert!(run_once(&cfg).ok());
    assert!(exact(&data, &events));

    // A new version shipped while the host is down serves its own first build.
    assert!(entry(&data).serving_generation > 0);
    ship("tally-v2", &modules, "tally.wasm");
    assert!(run_once(&cfg).ok());
    let e = entry(&data);
    assert_eq!((e.serving_version, e.serving_generation), (Some(2), 0));
    assert!(exact(&data, &events));
    assert!(counts(&data).unwrap().values().all(|c| c.code == "v2"));
}

/// After a cutover, old builds beyond `keep_versions` are deleted, newest kept first;
/// the serving build is never touched.
#[test]
fn pruning_keeps_the_serving_build_and_the_newest_others() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let folder = data.join("p");
    std::fs::create_dir_all(&folder).unwrap();
    for f in [
        "v1.sqlite",
        "v2.sqlite",
        "v2.1.sqlite",
        "v3.sqlite",
        "v3.sqlite-wal",
    ] {
        std::fs::write(folder.join(f), b"").unwrap();
    }
    let catalog = Catalog::open(data).unwrap();
    catalog.cut_over("p", 2, 1, "hash").unwrap();
    assert_eq!(
        projector::store::builds_on_disk(data, "p"),
        vec![(1, 0), (2, 0), (2, 1), (3, 0)]
    );
    let gone = projector::store::prune_builds(data, "p", 1).unwrap();
    assert_eq!(gone, vec![(2, 0), (1, 0)]);
    assert_eq!(
        projector::store::builds_on_disk(data, "p"),
        vec![(2, 1), (3, 0)]
    );
    assert!(!folder.join("v3.sqlite-wal").exists() || folder.join("v3.sqlite").exists());
    let gone = projector::store::prune_builds(data, "p", 0).unwrap();
    assert_eq!(gone, vec![(3, 0)]);
    assert!(
        !folder.join("v3.sqlite-wal").exists(),
        "its WAL goes with it"
    );
    assert_eq!(projector::store::builds_on_disk(data, "p"), vec![(2, 1)]);
}
