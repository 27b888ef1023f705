//! One ingest per host: projections at the head share one reader of the source (one
//! `$all` subscription for all of them), a projection added later catches up on its own
//! and then joins, and a projection stuck on slow events is left behind instead of
//! holding the others back; every table stays exact.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use esdb_test_server::{TestServer, read_ndjson};
use serde_json::Value;

/// The host's `/api/projections`, by name → the projection's status.
fn status(data: &Path) -> Vec<Value> {
    let Some(base) = projector::client::address(data) else {
        return Vec::new();
    };
    projector::client::request(&base, "GET", "/api/projections", None, None)
        .ok()
        .and_then(|r| serde_json::from_str(&r.body).ok())
        .unwrap_or_default()
}

/// True when every listed projection is caught up and reads from the shared reader.
fn all_shared(data: &Path, names: &[&str]) -> bool {
    let s = status(data);
    names.iter().all(|n| {
        s.iter()
            .any(|p| p["name"] == *n && p["state"] == "caught-up" && p["ingest"] == "shared")
    })
}

#[test]
fn projections_at_the_head_share_one_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 4, 20_000);
    let server = TestServer::start(read_ndjson(&events).unwrap()).unwrap();
    let m = modules(dir.path(), &["order-summary", "customer-stats", "noop"]);

    // Shared (the default): three projections, one subscription.
    let mut cfg = config(dir.path(), Path::new("unused"), &m, 1_000);
    cfg.source = server.url();
    let summary = run_once(&cfg);
    assert!(summary.ok(), "{summary:?}");
    assert!(shop_exact(&cfg.data, &events, None));
    assert_eq!(
        server.subscriptions_served(),
        1,
        "one subscription for three"
    );

    // Each on its own: one subscription each, the same tables.
    cfg.data = dir.path().join("data-own");
    cfg.batch.shared_ingest = false;
    let summary = run_once(&cfg);
    assert!(summary.ok(), "{summary:?}");
    assert!(shop_exact(&cfg.data, &events, None));
    assert_eq!(server.subscriptions_served(), 1 + 3);
}

#[test]
fn every_module_is_compiled_before_any_runner_starts() {
    // Runners started one by one, as each module compiled, would find the first ones far
    // ahead (out of the shared reader's reach) and read on their own until caught up.
    let dir = tempfile::tempdir().unwrap();
    shop_events(&dir.path().join("events.ndjson"), 8, 2_000);
    let cfg = config_file(
        dir.path(),
        &modules(dir.path(), &["customer-stats", "noop", "order-summary"]),
        "",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_projector"))
        .args(["run", "--once", "--config"])
        .arg(&cfg)
        .env("NO_COLOR", "1")
        // An empty compile cache: each module takes a while to compile.
        .env("PROJECTOR_CACHE", dir.path().join("cache"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let lines: Vec<&str> = log.lines().collect();
    let loaded: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains("loaded module="))
        .collect();
    let started: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains("started projection="))
        .collect();
    assert_eq!((loaded.len(), started.len()), (3, 3), "{log}");
    assert!(
        loaded[2] < started[0],
        "a runner started before the last module loaded:\n{log}"
    );
}

#[test]
fn a_new_projection_catches_up_on_its_own_then_joins_the_shared_reader() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    // More than the shared reader keeps behind its members: the newcomer cannot start
    // on it.
    shop_events(&events, 5, 80_000);
    let m = modules(dir.path(), &["order-summary"]);
    let mut cfg = config(dir.path(), &events, &m, 1_000);
    cfg.http.listen = "127.0.0.1:0".into();
    let data = cfg.data.clone();
    let (shutdown, host) = start_host(&cfg);
    wait_until(
        "order-summary on the shared reader",
        Duration::from_secs(60),
        || all_shared(&data, &["order-summary"]),
    );

    std::fs::copy(guest("customer-stats"), m.join("customer-stats.wasm")).unwrap();
    // Seen reading on its own, part way through the history.
    let mut seen_own = false;
    let mut observe = |data: &Path| {
        let s = status(data);
        if let Some(c) = s.iter().find(|p| p["name"] == "customer-stats") {
            let read = c["events_read"].as_u64().unwrap_or(0);
            seen_own |= c["ingest"] == "own" && read > 0 && read < 80_000;
        }
    };
    wait_until(
        "customer-stats caught up, on the shared reader",
        Duration::from_secs(60),
        || {
            observe(&data);
            all_shared(&data, &["order-summary", "customer-stats"])
        },
    );
    // More events: both read them from the shared reader, exactly.
    let extra = dir.path().join("extra.ndjson");
    shop_events(&extra, 6, 5_000);
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&events)
        .unwrap()
        .write_all(&std::fs::read(&extra).unwrap())
        .unwrap();
    wait_until("both exact", Duration::from_secs(60), || {
        shop_exact(&data, &events, None)
    });
    assert!(all_shared(&data, &["order-summary", "customer-stats"]));
    shutdown.store(true, Ordering::Relaxed);
    assert!(host.join().unwrap().unwrap().ok());
    assert!(seen_own, "customer-stats read on its own while behind");
}

#[test]
fn a_projection_stuck_on_slow_events_does_not_hold_the_others_back() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    // Each `Loop` event costs the hostile fixture a full call deadline (twice: in its
    // batch, then alone when the batch is retried event by event); the shop events
    // after them are more than the shared reader may run ahead of a member.
    let loops: Vec<(usize, String)> = (0..6)
        .map(|i| {
            (
                i,
                format!("{{\"stream\":\"h-{i}\",\"type\":\"Loop\",\"data\":{{}}}}"),
            )
        })
        .collect();
    let inserts: Vec<(usize, &str)> = loops.iter().map(|(i, l)| (*i, l.as_str())).collect();
    shop_events_with(&events, 8, 80_000, &inserts);
    let m = modules(dir.path(), &["order-summary", "customer-stats", "hostile"]);
    let mut cfg = config(dir.path(), &events, &m, 1_000);
    cfg.http.listen = "127.0.0.1:0".into();
    cfg.limits.fuel_per_event = 0;
    cfg.limits.timeout_ms = 1_000;
    cfg.projections.insert(
        "hostile".into(),
        toml::from_str("error_policy = \"skip\"").unwrap(),
    );
    let data = cfg.data.clone();
    let (shutdown, host) = start_host(&cfg);

    // The shop projections finish while the hostile one is still on its slow events.
    wait_until("the shop tables exact", Duration::from_secs(60), || {
        shop_exact(&data, &events, None)
    });
    let hostile_seen = |data: &Path| -> i64 {
        try_query::<Value>(data, "hostile", "SELECT count(*) AS n FROM seen")
            .and_then(|r| r.first().and_then(|v| v["n"].as_i64()))
            .unwrap_or(0)
    };
    // It sees every event but system events and its slow ones.
    let text = std::fs::read_to_string(&events).unwrap();
    let want = text
        .lines()
        .filter(|l| !l.contains("\"type\":\"$") && !l.contains("\"type\":\"Loop\""))
        .count() as i64;
    assert!(
        hostile_seen(&data) < want,
        "the shop projections waited for the hostile one"
    );
    // It catches up on its own, skipping the slow events, and joins again.
    wait_until(
        "the hostile projection to catch up",
        Duration::from_secs(120),
        || hostile_seen(&data) == want,
    );
    wait_until("all on the shared reader", Duration::from_secs(30), || {
        all_shared(&data, &["order-summary", "customer-stats", "hostile"])
    });
    shutdown.store(true, Ordering::Relaxed);
    assert!(host.join().unwrap().unwrap().ok());
    assert!(shop_exact(&data, &events, None));
}
