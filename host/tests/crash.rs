//! `kill -9` in the middle of a run: the read model is always exactly a prefix of the
//! stream (the checkpoint's), and a restart finishes with no event applied twice.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use shop_events::Fold;

#[test]
fn kill_dash_nine_leaves_a_prefix_and_restart_completes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 99, 400_000);
    let m = modules(dir.path(), &["order-summary", "customer-stats"]);
    let cfg = config_file(
        dir.path(),
        &m,
        "[batch]\nmax_events = 300\ncommit_events = 3000\n",
    );
    let data = dir.path().join("data");

    for round in 0..2 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_projector"))
            .args(["run", "--once", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Let it commit some batches, then kill it mid-flight.
        let start = Instant::now();
        let target = 60_000 * (round + 1);
        loop {
            let pos = committed(&data, "order-summary");
            if pos >= target || start.elapsed() > Duration::from_secs(60) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        for projection in ["order-summary", "customer-stats"] {
            let pos = committed(&data, projection);
            assert!(
                pos < 400_000,
                "round {round}: {projection} finished before the kill; make the file bigger"
            );
            let prefix = Fold::of_file(&events, Some(pos as usize)).unwrap();
            if projection == "order-summary" {
                assert_same(
                    &format!("orders at line {pos}"),
                    &orders(&data),
                    &prefix.orders,
                );
            } else {
                assert_same(
                    &format!("customers at line {pos}"),
                    &customers(&data),
                    &prefix.customers,
                );
            }
        }
    }

    let status = Command::new(env!("CARGO_BIN_EXE_projector"))
        .args(["run", "--once", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let want = Fold::of_file(&events, None).unwrap();
    assert_same("orders", &orders(&data), &want.orders);
    assert_same("customers", &customers(&data), &want.customers);
}

/// The committed checkpoint line of a projection (0 before its first commit).
fn committed(data: &Path, projection: &str) -> u64 {
    #[derive(serde::Deserialize)]
    struct Cp {
        commit_position: u64,
    }
    let mut out = Vec::new();
    match projector::query::query(
        data,
        projection,
        "SELECT commit_position FROM _projector_checkpoint",
        &mut out,
    ) {
        Ok(_) => String::from_utf8(out)
            .unwrap()
            .lines()
            .next()
            .map_or(0, |l| {
                serde_json::from_str::<Cp>(l).unwrap().commit_position
            }),
        Err(_) => 0,
    }
}
