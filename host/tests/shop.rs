//! The shipped shop projections, through the whole host, against an independent fold.

mod common;

use common::*;
use shop_events::Fold;

#[test]
fn shop_projections_match_the_independent_fold() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 7, 30_000);
    let m = modules(dir.path(), &["order-summary", "customer-stats"]);
    let summary = run_once(&config(dir.path(), &events, &m, 250));
    assert!(summary.ok(), "{summary:?}");
    assert_eq!(summary.source_events(), 30_000);

    let want = Fold::of_file(&events, None).unwrap();
    assert!(
        want.orders.len() > 1000 && want.customers.len() > 500,
        "the file exercises the projections"
    );
    let data = dir.path().join("data");
    assert_same("orders", &orders(&data), &want.orders);
    assert_same("customers", &customers(&data), &want.customers);

    // Accounting is kept in the catalog, equal to what the run reported.
    let catalog = projector::store::Catalog::open_read_only(&data).unwrap();
    for p in &summary.projections {
        let entry = catalog.entry(&p.name).unwrap().unwrap();
        assert_eq!(
            entry.accounting,
            projector::store::Accounting {
                events_read: p.events_read,
                ops_written: p.ops_written,
                fuel_used: p.fuel_used,
                peak_memory: p.peak_memory,
                events_failed: 0,
            },
            "{}",
            p.name
        );
        assert!(
            p.fuel_used > 0 && p.peak_memory >= 1 << 16 && p.ops_written > 0,
            "{p:?}"
        );
    }
}

/// One batch holds whole order lifecycles (created, items added, confirmed, cancelled):
/// customer-stats must read what earlier events of the same batch wrote.
#[test]
fn read_your_writes_within_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 11, 5_000);
    let m = modules(dir.path(), &["order-summary", "customer-stats"]);
    let mut cfg = config(dir.path(), &events, &m, 100_000);
    cfg.batch.adaptive = false;
    let summary = run_once(&cfg);
    assert!(summary.ok(), "{summary:?}");
    assert_eq!(
        summary.projections.iter().map(|p| p.batches).max(),
        Some(1),
        "everything in one batch"
    );

    let want = Fold::of_file(&events, None).unwrap();
    assert!(
        want.customers
            .values()
            .any(|c| c.confirmed > 0 && c.cancelled > 0)
    );
    let data = dir.path().join("data");
    assert_same("customers", &customers(&data), &want.customers);
    assert_same("orders", &orders(&data), &want.orders);
}

/// A second run continues exactly after the checkpoint of the first: appended events
/// are applied once, earlier ones not again.
#[test]
fn restart_resumes_after_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.ndjson");
    shop_events(&full, 3, 20_000);
    let text = std::fs::read_to_string(&full).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let events = dir.path().join("events.ndjson");
    std::fs::write(&events, lines[..12_345].join("\n") + "\n").unwrap();

    let m = modules(dir.path(), &["order-summary", "customer-stats"]);
    let cfg = config(dir.path(), &events, &m, 500);
    assert!(run_once(&cfg).ok());
    let data = dir.path().join("data");
    assert_same(
        "orders after part 1",
        &orders(&data),
        &Fold::of_file(&full, Some(12_345)).unwrap().orders,
    );

    std::fs::write(&events, text.clone()).unwrap();
    let second = run_once(&cfg);
    assert!(second.ok(), "{second:?}");
    let want = Fold::of_file(&full, None).unwrap();
    assert_same("orders", &orders(&data), &want.orders);
    assert_same("customers", &customers(&data), &want.customers);
}

/// Following a growing file: events appended while the host runs show up.
#[test]
fn follows_a_growing_file() {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.ndjson");
    shop_events(&full, 5, 4_000);
    let text = std::fs::read_to_string(&full).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let events = dir.path().join("events.ndjson");
    std::fs::write(&events, lines[..1_000].join("\n") + "\n").unwrap();

    let m = modules(dir.path(), &["order-summary"]);
    let cfg = config(dir.path(), &events, &m, 500);
    let shutdown = Arc::new(AtomicBool::new(false));
    let host = {
        let (cfg, shutdown) = (cfg.clone(), shutdown.clone());
        std::thread::spawn(move || projector::run(&cfg, projector::RunOptions::default(), shutdown))
    };
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&events)
        .unwrap();
    for chunk in lines[1_000..].chunks(700) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        // Write a line in two halves: a partial line must wait for its newline.
        let text = chunk.join("\n");
        let (a, b) = text.split_at(10);
        f.write_all(a.as_bytes()).unwrap();
        f.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        f.write_all(format!("{b}\n").as_bytes()).unwrap();
    }
    let want = Fold::of_file(&full, None).unwrap();
    let data = dir.path().join("data");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let committed = || {
        let mut out = Vec::new();
        let sql = "SELECT commit_position FROM _projector_checkpoint";
        projector::query::query(&data, "order-summary", sql, &mut out).ok()?;
        String::from_utf8(out).ok()
    };
    let done = format!("{{\"commit_position\":{}}}\n", lines.len());
    while committed().as_deref() != Some(done.as_str()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    shutdown.store(true, Ordering::Relaxed);
    let summary = host.join().unwrap().unwrap();
    assert!(summary.ok(), "{summary:?}");
    assert_same("orders", &orders(&data), &want.orders);
}
