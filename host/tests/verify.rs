//! `projector verify`: the shipped projections are deterministic; hidden state is caught.

mod common;

use common::*;
use projector::runtime::Limits;
use projector::verify::verify;

#[test]
fn the_shipped_projections_are_deterministic_across_batch_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 21, 20_000);
    for name in ["order-summary", "customer-stats"] {
        let report = verify(
            &guest(name),
            events.to_str().unwrap(),
            Limits::default(),
            [10_000, 97],
        )
        .unwrap();
        assert!(report.deterministic(), "{name}: {report:?}");
        assert!(
            report.runs[0].iter().all(|t| t.rows > 0),
            "{name}: tables were filled: {report:?}"
        );
    }
}

#[test]
fn hidden_state_between_events_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let lines: Vec<String> = (0..500)
        .map(|i| format!(r#"{{"stream":"c-1","type":"Count","id":"e{i}","data":{{}}}}"#))
        .collect();
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();
    let report = verify(
        &guest("hostile"),
        events.to_str().unwrap(),
        Limits::default(),
        [10_000, 97],
    )
    .unwrap();
    assert!(!report.deterministic(), "{report:?}");
    assert_eq!(report.runs[0][0].rows, 500);
    assert_eq!(report.runs[1][0].rows, 500);
}
