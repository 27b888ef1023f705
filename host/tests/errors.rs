//! Bad input: malformed event lines, modules that send ops for undeclared tables,
//! files that are not components. Each stops only what it concerns, loses nothing.

mod common;

use common::*;
use shop_events::Fold;

#[derive(serde::Deserialize, Debug, PartialEq)]
struct Thing {
    id: String,
}

#[test]
fn a_malformed_line_is_an_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    // Line 2001: a required field is missing.
    shop_events_with(
        &events,
        1,
        3_000,
        &[(2000, r#"{"stream":"order-1","data":{"orderId":"O1"}}"#)],
    );

    let m = modules(dir.path(), &["order-summary"]);
    let summary = run_once(&config(dir.path(), &events, &m, 100));
    let err = summary.projections[0]
        .error
        .clone()
        .expect("the run must fail");
    assert!(
        err.contains("events.ndjson:2001"),
        "names file and line: {err}"
    );
    assert!(
        err.contains("missing field `type`"),
        "names the problem: {err}"
    );
    // Everything before the bad line is applied, nothing after it.
    let data = dir.path().join("data");
    let want = Fold::of_file(&events, Some(2000)).unwrap();
    assert_same("orders", &orders(&data), &want.orders);
}

#[test]
fn invalid_json_is_reported_too() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    std::fs::write(
        &events,
        "{\"stream\":\"x-1\",\"type\":\"Other\",\"data\":{}}\n\n{not json\n",
    )
    .unwrap();
    let m = modules(dir.path(), &["order-summary"]);
    let summary = run_once(&config(dir.path(), &events, &m, 100));
    let err = summary.projections[0]
        .error
        .clone()
        .expect("the run must fail");
    assert!(err.contains("events.ndjson:3: malformed event"), "{err}");
}

/// A module that sends an op for a table it never declared fails that batch and changes
/// nothing of it; the batches before it stay; a healthy projection next to it finishes.
#[test]
fn an_op_on_an_undeclared_table_fails_its_batch_and_changes_nothing() {
    a_bad_batch_of_ops_fails_and_changes_nothing(
        "Evil",
        &["table `sqlite_master` is not declared"],
        "not declared",
    );
}

/// The same for ops whose packing a module cut short: an error naming where the bytes
/// ran out, never a panic of the host.
#[test]
fn malformed_packed_ops_fail_their_batch_and_change_nothing() {
    a_bad_batch_of_ops_fails_and_changes_nothing(
        "Garbled",
        &[
            "the module returned malformed ops: ",
            "bytes wanted at byte",
        ],
        "malformed ops",
    );
}

/// Line 551 is an event of `event_type`, for which the hostile fixture sends bad ops.
fn a_bad_batch_of_ops_fails_and_changes_nothing(event_type: &str, error: &[&str], reason: &str) {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    // Batches are 100 events, so lines 501..600 fail.
    let bad_line = format!(r#"{{"stream":"x-1","type":"{event_type}","data":{{}}}}"#);
    let lines = shop_events_with(&events, 2, 1_000, &[(550, bad_line.as_str())]);

    let m = modules(dir.path(), &["undeclared-table", "order-summary"]);
    let summary = run_once(&config(dir.path(), &events, &m, 100));
    let bad = summary
        .projections
        .iter()
        .find(|p| p.name == "undeclared-table")
        .unwrap();
    let err = bad.error.clone().expect("the hostile projection faults");
    assert!(error.iter().all(|e| err.contains(e)), "{err}");
    let after: usize = err
        .split("after position ")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        after < 551 && after > 400,
        "the failed batch is the one holding line 551: {err}"
    );

    // Exactly the events of the committed batches (system events are filtered out).
    let data = dir.path().join("data");
    let mut things: Vec<String> =
        query::<Thing>(&data, "undeclared-table", "SELECT id FROM things")
            .into_iter()
            .map(|t| t.id)
            .collect();
    things.sort();
    let mut want: Vec<String> = lines[..after]
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| {
            !v["stream"].as_str().unwrap().starts_with('$')
                && !v["type"].as_str().unwrap().starts_with('$')
        })
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    want.sort();
    assert_eq!(things, want);
    let cp: Vec<serde_json::Value> = query(
        &data,
        "undeclared-table",
        "SELECT commit_position FROM _projector_checkpoint",
    );
    assert_eq!(cp[0]["commit_position"], after as u64);
    let catalog = projector::store::Catalog::open_read_only(&data).unwrap();
    let entry = catalog.entry("undeclared-table").unwrap().unwrap();
    assert_eq!(entry.state, projector::store::ProjectionState::Faulted);
    assert!(entry.reason.unwrap().contains(reason));

    // The healthy one ran to the end, exactly.
    let good = summary
        .projections
        .iter()
        .find(|p| p.name == "order-summary")
        .unwrap();
    assert!(good.error.is_none(), "{good:?}");
    assert_same(
        "orders",
        &orders(&data),
        &Fold::of_file(&events, None).unwrap().orders,
    );
}

#[test]
fn a_file_that_is_not_a_component_is_rejected_and_the_rest_run() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 4, 500);
    let m = modules(dir.path(), &["order-summary"]);
    std::fs::write(m.join("garbage.wasm"), b"\0asm not really a component").unwrap();
    let summary = run_once(&config(dir.path(), &events, &m, 100));
    assert_eq!(summary.rejected.len(), 1);
    assert!(
        summary.rejected[0]
            .1
            .contains("not a valid WebAssembly component"),
        "{:?}",
        summary.rejected
    );
    assert!(!summary.ok());
    assert_eq!(summary.projections.len(), 1);
    assert!(summary.projections[0].error.is_none());
}

#[test]
fn query_refuses_anything_but_one_read_only_statement() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 4, 500);
    let m = modules(dir.path(), &["order-summary"]);
    assert!(run_once(&config(dir.path(), &events, &m, 100)).ok());
    let data = dir.path().join("data");
    for sql in [
        "DELETE FROM orders",
        "DROP TABLE orders",
        "INSERT INTO orders (order_id) VALUES ('x')",
        "SELECT 1; DELETE FROM orders",
        "ATTACH DATABASE 'other.sqlite' AS other",
        "PRAGMA query_only = 0",
    ] {
        let mut out = Vec::new();
        let r = projector::query::query(&data, "order-summary", sql, &mut out);
        assert!(r.is_err(), "{sql} must be refused");
    }
    let rows: Vec<serde_json::Value> = query(
        &data,
        "order-summary",
        "SELECT count(*) AS n, sum(total_cents) AS t FROM orders",
    );
    assert!(
        rows[0]["n"].is_u64() && rows[0]["t"].is_u64(),
        "integers as JSON numbers: {rows:?}"
    );
    assert_eq!(
        rows[0]["n"].as_u64().unwrap() as usize,
        Fold::of_file(&events, None).unwrap().orders.len()
    );
}

#[test]
fn a_manifest_that_smuggles_sql_in_a_name_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 4, 500);
    let m = modules(dir.path(), &["sql-names", "order-summary"]);
    let summary = run_once(&config(dir.path(), &events, &m, 100));
    assert_eq!(summary.rejected.len(), 1, "{summary:?}");
    let reason = &summary.rejected[0].1;
    assert!(
        reason.contains("invalid manifest") && reason.contains("invalid table name"),
        "{reason}"
    );
    // The healthy projection ran, and its table is intact.
    assert!(summary.projections.iter().all(|p| p.error.is_none()));
    assert_same(
        "orders",
        &orders(&dir.path().join("data")),
        &Fold::of_file(&events, None).unwrap().orders,
    );
}
