//! Sandbox proof for WASI guests: a Python and a JavaScript projection (built with WASI
//! stubbed out, so they import no `wasi:` interface) try to read, list and write files,
//! read the environment, open sockets, read the clock and draw random numbers. Every
//! attempt fails or answers empty/fixed inside the guest, which records it in its table
//! `probes(name, outcome)` and keeps running; two runs (and `projector verify`) give the
//! same table. The attempts whose WASI stub traps (no exception for the guest to catch)
//! are made one batch at a time: each fails that batch only, and the next runs.
//! Fixtures: projections/test-fixtures-langs/probe-py and probe-js (not under
//! test-fixtures/, whose every folder is a member of the Rust guests' Cargo workspace).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use projector::runtime::{CallError, Module, RowReader};
use projector::wit::{Event, Op, Position, Value};

/// Shop events each probe runs over.
const EVENTS: u64 = 300;

/// Build a probe fixture (Python or JavaScript) into the test's target folder.
fn build(fixture: &str) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("guests")
        .join(format!("{fixture}.wasm"));
    projector::toolchain::build(
        &repo().join("projections/test-fixtures-langs").join(fixture),
        Some(&out),
    )
    .unwrap_or_else(|e| panic!("building {fixture}: {e:#}"))
}

/// A projection with no rows yet.
struct NoRows;

impl RowReader for NoRows {
    fn get(&mut self, _table: &str, _key: &[Value]) -> anyhow::Result<Option<Vec<Value>>> {
        Ok(None)
    }
}

fn event(n: u64, event_type: &str, data: &str) -> Event {
    Event {
        stream_id: format!("probe-{n}"),
        event_type: event_type.into(),
        event_id: format!("00000000-0000-4000-8000-{n:012}"),
        revision: 0,
        position: Position::at(n),
        created_ms: 1_700_000_000_000,
        content_type: "application/json".into(),
        data: data.as_bytes().to_vec(),
        metadata: Vec::new(),
    }
}

/// The `probes` table a run left: name -> outcome.
fn probes(data: &Path, projection: &str) -> BTreeMap<String, String> {
    query::<serde_json::Value>(data, projection, "SELECT name, outcome FROM probes")
        .into_iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Everything both languages must show; returns the probes table for the
/// language-specific checks.
fn sandboxed(fixture: &str, trapping: &[&str]) -> BTreeMap<String, String> {
    let wasm = build(fixture);
    let runtime = projector::runtime::Runtime::new(Default::default(), None).unwrap();
    let module = runtime.load(&std::fs::read(&wasm).unwrap()).unwrap();
    assert!(!module.wasi, "{fixture} imports a wasi: interface");

    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 11, EVENTS);
    // System events ("$..." streams and types) never reach a module.
    let handled = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("\"$"))
        .count() as u64;
    assert!(handled > EVENTS / 2);

    // Two runs at different batch sizes: no fault, every event handled, same table.
    let mut tables = Vec::new();
    for (run, batch) in [(1, 50), (2, 7)] {
        let run_dir = dir.path().join(format!("run{run}"));
        let m = run_dir.join("modules");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::copy(&wasm, m.join(format!("{fixture}.wasm"))).unwrap();
        let summary = run_once(&config(&run_dir, &events, &m, batch));
        assert!(summary.ok(), "{fixture} run {run}: {summary:?}");
        let report = &summary.projections[0];
        assert_eq!(
            (
                report.events_read,
                report.events_handled,
                report.events_failed
            ),
            (EVENTS, handled, 0),
            "{fixture} run {run}"
        );
        tables.push(probes(&run_dir.join("data"), fixture));
    }
    assert_eq!(tables[0], tables[1], "{fixture}: two runs differ");

    let report = projector::verify::verify(
        &wasm,
        events.to_str().unwrap(),
        Default::default(),
        [10_000, 97],
    )
    .unwrap_or_else(|e| panic!("verify {fixture}: {e:#}"));
    assert!(report.deterministic(), "{fixture}: {:?}", report.runs);
    assert_eq!(
        report.runs[0][0].rows,
        tables[0].len() as u64,
        "{fixture}: {:?}",
        report.runs
    );

    for name in trapping {
        escape_traps(&module, fixture, name);
    }
    tables.pop().unwrap()
}

/// An attempt the guest cannot catch fails its batch (a trap, nothing written) and the
/// next batch, in a fresh instance, runs.
fn escape_traps(module: &Module, fixture: &str, name: &str) {
    let escape = event(1, "Escape", &format!(r#"{{"attempt":"{name}"}}"#));
    let (_, out) = module.handle(Box::new(NoRows), &[&escape]);
    match out {
        Err(CallError::Trap(msg)) => {
            assert!(msg.contains("unreachable"), "{fixture} {name}: {msg}")
        }
        other => panic!("{fixture} {name}: expected a trap, got {other:?}"),
    }
    let (_, out) = module.handle(Box::new(NoRows), &[&event(2, "Probe", "{}")]);
    let ops = out.unwrap_or_else(|e| panic!("{fixture} after {name}: {e}"));
    assert!(
        ops.iter().all(|op| matches!(op, Op::Upsert(_))) && ops.len() > 5,
        "{fixture} after {name}: {ops:?}"
    );
}

fn denied(p: &BTreeMap<String, String>, name: &str) -> bool {
    p.get(name).is_some_and(|o| o.starts_with("denied: "))
}

fn random_number(p: &BTreeMap<String, String>, name: &str) {
    let r: f64 = p[name]
        .parse()
        .unwrap_or_else(|_| panic!("{name}: {}", p[name]));
    assert!((0.0..1.0).contains(&r), "{name}: {r}");
}

#[test]
fn a_python_guest_reaches_nothing_outside_and_stays_deterministic() {
    let p = sandboxed(
        "probe-py",
        &[
            "list_dir",
            "scandir",
            "stat",
            "os_open",
            "io_open",
            "socket",
            "datetime_now",
            "gmtime",
            "urandom",
            "system_random",
        ],
    );
    let names: Vec<&str> = p.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "clock",
            "date_today",
            "env",
            "getenv_home",
            "random",
            "read_file",
            "str_hash",
            "write_file"
        ],
        "{p:?}"
    );
    // open() for reading and writing: the SDK's fence raises.
    assert!(denied(&p, "read_file") && denied(&p, "write_file"), "{p:?}");
    assert_eq!(p["env"], "empty", "{p:?}");
    assert_eq!(p["getenv_home"], "None", "{p:?}");
    // The clock: denied (equal across runs, as checked above, if it ever answered).
    assert!(denied(&p, "clock") && denied(&p, "date_today"), "{p:?}");
    random_number(&p, "random");
    assert!(p["str_hash"].parse::<i64>().is_ok(), "{p:?}");
}

#[test]
fn a_javascript_guest_reaches_nothing_outside_and_stays_deterministic() {
    let p = sandboxed("probe-js", &["performance_now", "unfenced_date_now"]);
    for name in ["read_file", "list_dir", "write_file", "env", "socket"] {
        assert_eq!(p[name], "absent", "{name}: {p:?}");
    }
    for global in ["std", "os", "require", "process", "fetch", "WebSocket"] {
        assert!(
            p["globals"].contains(&format!("{global}=undefined")),
            "{global}: {p:?}"
        );
    }
    assert_eq!(p["clock"], "denied: ProjectionError", "{p:?}");
    assert_eq!(p["new_date"], "denied: ProjectionError", "{p:?}");
    assert!(denied(&p, "date_call"), "{p:?}");
    // A number fixed when the component was built (equal across runs, checked above).
    assert!(p["performance_time_origin"].parse::<f64>().is_ok(), "{p:?}");
    random_number(&p, "random");
}
