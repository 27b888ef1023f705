//! The native baseline writes the tables of the fold whether it reads the file or the
//! same events from EventStoreDB (the protocol-level test server, through the real
//! client), and names a server it cannot reach.

use std::path::Path;
use std::process::{Command, Output};

fn native(events: &Path, db: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_native-baseline"))
        .arg(events)
        .arg(db)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn the_file_and_the_server_give_the_tables_of_the_fold() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&events).unwrap());
    shop_events::generate(11, 3_000, &mut f).unwrap();
    std::io::Write::flush(&mut f).unwrap();
    drop(f);
    let server =
        esdb_test_server::TestServer::start(esdb_test_server::read_ndjson(&events).unwrap())
            .unwrap();
    let db = dir.path().join("native.sqlite");
    let url = server.url();
    for extra in [&["--check"][..], &["--check", "--esdb", &url][..]] {
        // Small transactions: several commits in a run of 3,000 events.
        let out = native(&events, &db, &[&["--batch", "500"][..], extra].concat());
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{extra:?}: {text}{err}");
        assert!(text.contains("equal the fold"), "{extra:?}: {text}");
        assert_eq!(
            text.contains(&format!("from {url}")),
            extra.len() > 1,
            "{text}"
        );
    }
}

#[test]
fn a_server_out_of_reach_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    std::fs::write(&events, "").unwrap();
    // A port nothing listens on: the client's connection is refused.
    let url = "esdb://127.0.0.1:1?tls=false";
    let out = native(&events, &dir.path().join("native.sqlite"), &["--esdb", url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("reading $all from esdb://127.0.0.1:1"),
        "{err}"
    );
}
