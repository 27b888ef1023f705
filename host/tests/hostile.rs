//! Hostile modules next to a healthy one: each misbehaviour stops only its own
//! projection, with a message naming the cause; the healthy projection comes out exact
//! and nothing of the failed batch is written.

mod common;

use common::*;
use shop_events::Fold;

/// Run `hostile` + `order-summary` over shop events with one bad event at line 301.
fn run_with(
    bad_type: &str,
    tune: impl FnOnce(&mut projector::Config),
) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 8, 600);
    let mut lines: Vec<String> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.insert(
        300,
        format!(r#"{{"stream":"evil-1","type":"{bad_type}","data":{{}}}}"#),
    );
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();

    let m = modules(dir.path(), &["hostile", "order-summary"]);
    let mut cfg = config(dir.path(), &events, &m, 100);
    tune(&mut cfg);
    let summary = run_once(&cfg);

    let good = summary
        .projections
        .iter()
        .find(|p| p.name == "order-summary")
        .unwrap();
    assert!(good.error.is_none(), "{good:?}");
    let data = dir.path().join("data");
    assert_same(
        "orders",
        &orders(&data),
        &Fold::of_file(&events, None).unwrap().orders,
    );

    let bad = summary
        .projections
        .iter()
        .find(|p| p.name == "hostile")
        .unwrap();
    let err = bad.error.clone().expect("the hostile projection faults");
    // Nothing of the failing batch (the one holding line 301) was written.
    let after: u64 = err
        .split("after position ")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(after < 301, "{err}");
    let seen: Vec<serde_json::Value> = query(&data, "hostile", "SELECT count(*) AS n FROM seen");
    let want = lines[..after as usize]
        .iter()
        .filter(|l| !l.contains("\"$"))
        .count();
    assert_eq!(
        seen[0]["n"], want as u64,
        "only the batches before the bad one: {err}"
    );
    let catalog = projector::store::Catalog::open_read_only(&data).unwrap();
    assert_eq!(catalog.entry("hostile").unwrap().unwrap().state, "faulted");
    (err, dir)
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    let (err, _d) = run_with("Loop", |c| c.limits.fuel_per_event = 1_000_000);
    assert!(err.contains("ran out of its CPU budget (fuel)"), "{err}");
}

#[test]
fn an_infinite_loop_without_fuel_hits_the_deadline() {
    let (err, _d) = run_with("Loop", |c| {
        c.limits.fuel_per_event = 0;
        c.limits.timeout_ms = 300;
    });
    assert!(err.contains("ran past its 300 ms deadline"), "{err}");
}

#[test]
fn unbounded_allocation_hits_the_memory_limit() {
    let (err, _d) = run_with("Bomb", |c| c.limits.memory_mib = 32);
    assert!(err.contains("over its 32 MiB memory limit"), "{err}");
}

#[test]
fn a_panic_is_reported_with_its_message() {
    let (err, _d) = run_with("Panic", |_| {});
    assert!(err.contains("trapped") && err.contains("boom at"), "{err}");
}

#[test]
fn an_oversized_value_is_refused() {
    let (err, _d) = run_with("Huge", |_| {});
    assert!(
        err.contains("column `payload`: value of 2097152 bytes is over the 1048576 byte limit"),
        "{err}"
    );
}

#[test]
fn a_flood_of_ops_is_refused() {
    let (err, _d) = run_with("Flood", |c| c.limits.max_ops_per_batch = 10_000);
    assert!(err.contains("over the limit of 10000"), "{err}");
}
