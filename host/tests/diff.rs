//! `projector diff`: two modules over the same events, compared table by table.

mod common;

use common::*;

/// Events the tally counts: `n` of each of A, B, C (and some it ignores).
fn tally_events(path: &std::path::Path, n: usize) {
    let mut text = String::new();
    for i in 0..n {
        for t in ["A", "B", "C"] {
            text.push_str(&format!(
                "{{\"stream\":\"t-{i}\",\"type\":\"{t}\",\"data\":{{}}}}\n"
            ));
        }
        text.push_str("{\"stream\":\"other\",\"type\":\"X\",\"data\":{}}\n");
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn diff_names_rows_changed_added_and_removed_per_table() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    tally_events(&events, 50);
    let source = events.to_str().unwrap();
    let limits = Default::default();

    // Same counts, another `code` in every row.
    let d = projector::diff::diff(&guest("tally-v1"), &guest("tally-v2"), source, &limits).unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(
        (
            d[0].table.as_str(),
            d[0].added,
            d[0].removed,
            d[0].changed,
            d[0].same
        ),
        ("counts", 0, 0, 3, 0)
    );
    assert!(
        d[0].examples[0].contains("\"code\":\"a\"") && d[0].examples[0].contains("\"code\":\"v2\""),
        "{:?}",
        d[0].examples
    );

    // A module against itself: nothing differs.
    let d = projector::diff::diff(&guest("tally-v1"), &guest("tally-v1"), source, &limits).unwrap();
    assert_eq!(
        (d[0].added, d[0].removed, d[0].changed, d[0].same),
        (0, 0, 0, 3)
    );

    // Different tables altogether: all of one removed, all of the other added.
    let d = projector::diff::diff(&guest("tally-v1"), &guest("hostile"), source, &limits).unwrap();
    let by: std::collections::BTreeMap<_, _> = d.iter().map(|t| (t.table.as_str(), t)).collect();
    assert_eq!((by["counts"].removed, by["counts"].added), (3, 0));
    assert_eq!((by["seen"].added, by["seen"].removed), (200, 0));
}
