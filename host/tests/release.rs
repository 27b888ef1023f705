//! Safe releases: a version bump that would empty a table is held (the serving tables
//! stay exact and keep following the source); promote cuts over to it, rollback serves
//! the previous build again through its kept module; a good bump cuts over by itself;
//! the same works offline.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use projector::registry::control::{request_promote, request_rollback};
use projector::store::Catalog;

fn append(path: &Path, from: u64, n: u64) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in from..from + n {
        let t = ["A", "B", "C"][(i % 3) as usize];
        writeln!(f, r#"{{"stream":"t-{}","type":"{t}","data":{{}}}}"#, i % 7).unwrap();
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (event type, n, code) rows of the serving tally build.
fn rows(data: &Path) -> Vec<(String, u64, Option<String>)> {
    let mut out = Vec::new();
    if projector::query::query(
        data,
        "tally",
        "SELECT * FROM counts ORDER BY event_type",
        &mut out,
    )
    .is_err()
    {
        return vec![("not serving yet".into(), 0, None)];
    }
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    rows.iter()
        .map(|r| {
            (
                r["event_type"].as_str().unwrap_or_default().to_string(),
                r["n"].as_u64().unwrap_or(0),
                r["code"].as_str().map(String::from),
            )
        })
        .collect()
}

fn exact(total: u64, code: &str) -> Vec<(String, u64, Option<String>)> {
    ["A", "B", "C"]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let n = (0..total).filter(|k| k % 3 == i as u64).count() as u64;
            (t.to_string(), n, Some(code.to_string()))
        })
        .collect()
}

fn serving(data: &Path) -> (Option<u32>, u32) {
    let e = Catalog::open_read_only(data)
        .unwrap()
        .entry("tally")
        .unwrap()
        .unwrap();
    (e.serving_version, e.serving_generation)
}

fn ship(modules: &Path, fixture: &str) {
    let tmp = modules.join("tally.wasm.tmp");
    std::fs::copy(guest(fixture), &tmp).unwrap();
    std::fs::rename(tmp, modules.join("tally.wasm")).unwrap();
}

#[test]
fn a_bump_that_empties_a_table_is_held_then_promoted_and_rolled_back() {
    for f in ["tally-v1", "tally-v2", "tally-typo"] {
        guest(f);
    }
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    append(&events, 0, 3000);
    let modules = dir.path().join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    ship(&modules, "tally-v1");
    let data = dir.path().join("data");
    let mut cfg = config(dir.path(), &events, &modules, 500);
    cfg.reload.poll_ms = 50;
    cfg.http.listen = "127.0.0.1:0".into();
    let (shutdown, host) = start_host(&cfg);
    wait_for("v1 to serve", || {
        assert!(!host.is_finished(), "the host ended early");
        rows(&data) == exact(3000, "a")
    });

    // The typo'd bump rebuilds, compares, and is held: v1 keeps serving, exactly.
    ship(&modules, "tally-typo");
    wait_for("the hold", || {
        Catalog::open_read_only(&data)
            .unwrap()
            .release("tally")
            .unwrap()
            .held
            .is_some()
    });
    let held = Catalog::open_read_only(&data)
        .unwrap()
        .release("tally")
        .unwrap()
        .held
        .unwrap();
    assert_eq!(held.build.version, 3);
    assert!(
        held.reason
            .contains("table `counts` would go from 3 rows to none"),
        "{}",
        held.reason
    );
    assert!(
        held.reason.contains("event type `Aa` matched no event"),
        "{}",
        held.reason
    );
    assert_eq!(serving(&data), (Some(1), 0));
    append(&events, 3000, 300);
    wait_for("v1 to follow the source while v3 is held", || {
        rows(&data) == exact(3300, "a")
    });
    let status = projector::api::status::statuses(&data, &[], &mut Default::default()).unwrap();
    assert_eq!(status[0].held.as_ref().map(|h| h.version), Some(3));
    assert_eq!(status[0].held.as_ref().unwrap().comparison[0].new_rows, 0);

    // Promote: the held build serves (its table is empty, as the bump made it).
    let said = request_promote(&data, "tally").unwrap();
    assert!(said.contains("new build serves"), "{said}");
    wait_for("v3 to serve", || serving(&data).0 == Some(3));
    assert!(rows(&data).is_empty());
    assert!(
        data.join("tally/v1.sqlite").exists(),
        "the previous build is kept (keep_versions = 1)"
    );

    // Rollback: v1 serves again, through its kept module, and catches up from its own
    // checkpoint with what arrived meanwhile.
    append(&events, 3300, 200);
    let said = request_rollback(&data, "tally").unwrap();
    assert!(said.contains("version 1"), "{said}");
    wait_for("v1 back and exact", || {
        serving(&data) == (Some(1), 0) && rows(&data) == exact(3500, "a")
    });

    // A good bump cuts over by itself (it is new code, not the rolled-back one).
    ship(&modules, "tally-v2");
    wait_for("v2 to take over", || {
        serving(&data).0 == Some(2) && rows(&data) == exact(3500, "v2")
    });
    assert!(
        Catalog::open_read_only(&data)
            .unwrap()
            .release("tally")
            .unwrap()
            .held
            .is_none()
    );
    shutdown.store(true, Ordering::Relaxed);
    host.join().unwrap().unwrap();

    // Offline: roll back to the kept build; the next start serves it through its own
    // module and does not rebuild the module it stepped back from.
    let said = request_rollback(&data, "tally").unwrap();
    assert!(said.contains("serves again from the next start"), "{said}");
    append(&events, 3500, 100);
    cfg.http.listen = String::new();
    assert!(run_once(&cfg).ok());
    assert_eq!(serving(&data).0, Some(1));
    assert_eq!(
        rows(&data),
        exact(3600, "a"),
        "v1 caught up through its kept module"
    );
    let said = request_promote(&data, "tally").unwrap();
    assert!(said.contains("version 2"), "{said}");
    assert!(run_once(&cfg).ok());
    assert_eq!(serving(&data).0, Some(2));
    assert_eq!(rows(&data), exact(3600, "v2"));
}
