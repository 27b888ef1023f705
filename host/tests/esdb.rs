//! The EventStoreDB path, end to end through the real `kurrentdb` client against the
//! protocol-level test server: same tables as from the file, resume after a restart,
//! exact tables through dropped subscriptions, refused connections and a server restart,
//! live appends, bad events through the error policy, and `projector import`.

mod common;

/// The allocator the `projector` binary runs with, so the benchmark below measures the
/// host as it runs (glibc's malloc costs the client's per-event allocations ~20%).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use esdb_test_server::{NewEvent, TestServer, read_ndjson};
use shop_events::Fold;

/// A server holding `count` shop events of `seed` (also written to `dir/events.ndjson`).
fn shop_server(dir: &Path, seed: u64, count: u64) -> (TestServer, std::path::PathBuf) {
    let events = dir.join("events.ndjson");
    shop_events(&events, seed, count);
    let server = TestServer::start(read_ndjson(&events).unwrap()).unwrap();
    (server, events)
}

/// A config reading from `server`, with fast reconnects.
fn esdb_config(dir: &Path, server: &TestServer, names: &[&str]) -> projector::Config {
    let m = modules(dir, names);
    let mut cfg = config(dir, Path::new("unused"), &m, 500);
    cfg.source = server.url();
    cfg.reconnect.initial_ms = 20;
    cfg.reconnect.max_ms = 200;
    cfg
}

#[test]
fn shop_projections_from_the_server_equal_the_fold_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (server, events) = shop_server(dir.path(), 7, 30_000);
    let cfg = esdb_config(dir.path(), &server, &["order-summary", "customer-stats"]);
    let summary = run_once(&cfg);
    assert!(summary.ok(), "{summary:?}");
    let data = dir.path().join("data");
    let want = Fold::of_file(&events, None).unwrap();
    assert!(
        want.orders.len() > 1000,
        "the data exercises the projections"
    );
    assert_same("orders", &orders(&data), &want.orders);
    assert_same("customers", &customers(&data), &want.customers);

    // The same modules over the file give byte-identical tables.
    let file_dir = tempfile::tempdir().unwrap();
    let m = modules(file_dir.path(), &["order-summary", "customer-stats"]);
    assert!(run_once(&config(file_dir.path(), &events, &m, 500)).ok());
    let schema_of = |name: &str| {
        let wasm = std::fs::read(guest(name)).unwrap();
        projector::runtime::Runtime::new(Default::default(), None)
            .unwrap()
            .load(&wasm)
            .unwrap()
            .schema()
            .clone()
    };
    for name in ["order-summary", "customer-stats"] {
        let schema = schema_of(name);
        assert_eq!(
            projector::verify::digest(&data, &schema).unwrap(),
            projector::verify::digest(&file_dir.path().join("data"), &schema).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn a_restarted_host_resumes_without_gaps_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 11, 120_000);
    let all = read_ndjson(&events).unwrap();
    // The server starts with the first half; the second half arrives later.
    let server = TestServer::start(all[..60_000].to_vec()).unwrap();
    let mut cfg = esdb_config(dir.path(), &server, &["order-summary", "customer-stats"]);
    cfg.batch.commit_events = 2_000;
    let data = dir.path().join("data");

    assert!(run_once(&cfg).ok());
    assert!(shop_exact(&data, &events, Some(60_000)));

    // Appended while the host is down; then a host stopped mid-stream, then resumed.
    server.append_direct(all[60_000..].iter().cloned());
    let (shutdown, host) = start_host(&cfg);
    std::thread::sleep(Duration::from_millis(300));
    shutdown.store(true, Ordering::Relaxed);
    let first = host.join().unwrap().unwrap();
    assert!(first.ok(), "{first:?}");
    let summary = run_once(&cfg);
    assert!(summary.ok(), "{summary:?}");
    assert!(shop_exact(&data, &events, None));
}

#[test]
fn twenty_dropped_subscriptions_a_refusal_and_a_restart_leave_the_tables_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (server, events) = shop_server(dir.path(), 5, 200_000);
    let mut cfg = esdb_config(dir.path(), &server, &["order-summary", "customer-stats"]);
    cfg.batch.max_events = 200;
    let data = dir.path().join("data");
    let (shutdown, host) = start_host(&cfg);

    let mut served = 0;
    for i in 0..20 {
        // Each drop hits the host's shared subscription (and the own subscription of a
        // projection reading alone for a while, if any), resubscribed since the last.
        wait_until("resubscribed", Duration::from_secs(30), || {
            server.subscriptions_served() > served && server.live_subscriptions() >= 1
        });
        served = server.subscriptions_served();
        std::thread::sleep(Duration::from_millis(30));
        server.drop_subscriptions();
        if i == 8 {
            // Connections refused for a while.
            server.stop();
            std::thread::sleep(Duration::from_millis(300));
            server.start_again().unwrap();
        }
        if i == 14 {
            server.restart().unwrap();
        }
        if i == 17 {
            server.stall(Duration::from_millis(200));
        }
    }
    wait_until("exact tables", Duration::from_secs(120), || {
        shop_exact(&data, &events, None)
    });
    shutdown.store(true, Ordering::Relaxed);
    let summary = host.join().unwrap().unwrap();
    assert!(summary.ok(), "{summary:?}");
    assert!(
        server.subscriptions_served() > 20,
        "resubscribed: {}",
        server.subscriptions_served()
    );
    assert!(shop_exact(&data, &events, None));
}

#[test]
fn a_server_that_refuses_connections_at_start_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (server, events) = shop_server(dir.path(), 3, 5_000);
    server.stop();
    let cfg = esdb_config(dir.path(), &server, &["order-summary"]);
    let (shutdown, host) = start_host(&cfg);
    std::thread::sleep(Duration::from_millis(700));
    server.start_again().unwrap();
    let data = dir.path().join("data");
    let want = Fold::of_file(&events, None).unwrap();
    wait_until("exact tables", Duration::from_secs(60), || {
        try_orders(&data).as_ref() == Some(&want.orders)
    });
    shutdown.store(true, Ordering::Relaxed);
    assert!(host.join().unwrap().unwrap().ok());
}

#[test]
fn a_server_that_never_answers_stops_the_projection_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = shop_server(dir.path(), 3, 100);
    server.stop();
    let mut cfg = esdb_config(dir.path(), &server, &["order-summary"]);
    cfg.reconnect.max_attempts = 3;
    let summary = run_once(&cfg);
    let err = summary.projections[0].error.clone().expect("it gives up");
    assert!(
        err.contains("giving up after 3 failed attempts")
            && err.contains(&server.addr().to_string()),
        "{err}"
    );
}

/// Events appended through the real client while the host runs show up live; bad
/// events from the server (data that is not JSON) go through the error policy.
#[test]
fn appended_events_show_up_live_and_bad_ones_follow_the_policy() {
    use kurrentdb::{AppendToStreamOptions, Client, EventData, StreamState};
    let dir = tempfile::tempdir().unwrap();
    let (server, events) = shop_server(dir.path(), 9, 2_000);
    let mut cfg = esdb_config(dir.path(), &server, &["order-summary"]);
    cfg.projections.insert(
        "order-summary".into(),
        projector::config::ProjectionSettings {
            error_policy: projector::config::ErrorPolicy::DeadLetter,
            ..Default::default()
        },
    );
    let data = dir.path().join("data");
    let (shutdown, host) = start_host(&cfg);
    let want = Fold::of_file(&events, None).unwrap();
    wait_until("caught up", Duration::from_secs(60), || {
        try_orders(&data).as_ref() == Some(&want.orders)
    });

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::new(server.url().parse().unwrap()).unwrap();
        let created = serde_json::json!({"orderId": "live-1", "customerId": "U-live", "items": [{"quantity": 2, "priceCents": 500}]});
        let id = uuid::Uuid::from_u128(42);
        let ev = || EventData::json("OrderCreated", &created).unwrap().id(id);
        let opts = AppendToStreamOptions::default().stream_state(StreamState::NoStream);
        client.append_to_stream("order-live-1", &opts, ev()).await.unwrap();
        // The same append retried (same id, same expected revision) is idempotent...
        client.append_to_stream("order-live-1", &opts, ev()).await.unwrap();
        // ...while another event at a stale revision is refused.
        let other = EventData::json("OrderCreated", &created).unwrap();
        let stale = client.append_to_stream("order-live-1", &opts, other).await;
        assert!(stale.is_err(), "{stale:?}");
        let bad = EventData::binary("OrderConfirmed", "not json".into()).id(uuid::Uuid::from_u128(43));
        client
            .append_to_stream("order-live-1", &AppendToStreamOptions::default(), bad)
            .await
            .unwrap();
    });
    wait_until("the live order", Duration::from_secs(30), || {
        try_orders(&data).is_some_and(|o| o.contains_key("live-1"))
    });
    wait_until("the dead letter", Duration::from_secs(30), || {
        try_query::<serde_json::Value>(
            &data,
            "order-summary",
            "SELECT * FROM _projector_dead_letters",
        )
        .is_some_and(|d| !d.is_empty())
    });
    let dead: Vec<serde_json::Value> = query(
        &data,
        "order-summary",
        "SELECT event_id, event_type, stream_id, error FROM _projector_dead_letters",
    );
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["stream_id"], "order-live-1");
    // The id the event was appended with (43), in the usual lower-case hyphenated form.
    assert_eq!(dead[0]["event_id"], "00000000-0000-0000-0000-00000000002b");
    assert!(
        dead[0]["error"]
            .as_str()
            .unwrap()
            .contains("invalid data in OrderConfirmed"),
        "{dead:?}"
    );
    assert_eq!(
        server.len(),
        2_000 + 2,
        "the idempotent retry added nothing"
    );
    shutdown.store(true, Ordering::Relaxed);
    assert!(host.join().unwrap().unwrap().ok());
}

/// A projection that ignores most events still moves its checkpoint forward, through
/// the filtered subscription's checkpoints.
#[test]
fn filtered_checkpoints_advance_a_projection_that_ignores_most_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut events: Vec<NewEvent> = (0..5_000u128)
        .map(|i| NewEvent {
            stream: format!("noise-{}", i % 10),
            event_type: "Noise".into(),
            id: uuid::Uuid::from_u128(i + 1),
            data: b"{}".to_vec(),
            metadata: vec![],
            content_type: "application/json".into(),
            created_ms: 0,
        })
        .collect();
    events[10].stream = "t-1".into();
    events[10].event_type = "A".into();
    let server = TestServer::start(events).unwrap();
    let cfg = esdb_config(dir.path(), &server, &["tally-v1"]);
    assert!(run_once(&cfg).ok());
    let data = dir.path().join("data");
    let cp: Vec<serde_json::Value> = query(
        &data,
        "tally",
        "SELECT commit_position FROM _projector_checkpoint",
    );
    let at = cp[0]["commit_position"].as_u64().unwrap();
    assert!(
        at > 4_000 * 64,
        "the checkpoint moved past the ignored events: {at}"
    );
    let n: Vec<serde_json::Value> = query(&data, "tally", "SELECT n FROM counts");
    assert_eq!(n[0]["n"], 1);
}

/// `projector import` loads a file through the real client, in file order; the host
/// then projects exactly the fold of the file; importing again appends nothing.
#[test]
fn import_loads_a_file_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 13, 300);
    let server = TestServer::start(Vec::new()).unwrap();
    let report = projector::import::import(&events, &server.url(), 500).unwrap();
    let lines = std::fs::read_to_string(&events).unwrap();
    let system = lines.lines().filter(|l| l.contains("\"type\":\"$")).count() as u64;
    assert_eq!(report.events + report.skipped, 300);
    assert_eq!(report.skipped, system);
    assert_eq!(server.len() as u64, report.events);

    let again = projector::import::import(&events, &server.url(), 500).unwrap();
    assert_eq!(again.events, report.events);
    assert_eq!(server.len() as u64, report.events, "nothing appended twice");

    let cfg = esdb_config(dir.path(), &server, &["order-summary", "customer-stats"]);
    assert!(run_once(&cfg).ok());
    assert!(shop_exact(&dir.path().join("data"), &events, None));
}

/// Benchmark (printed, not asserted; run by `scripts/bench.sh`): events/s through the
/// EventStoreDB path against the raw client's subscription ceiling, same data, same run.
/// With `BENCH_NATIVE` naming the native baseline's binary, the same two read models
/// written by hand over the same server too (its tables checked against the fold).
#[test]
#[ignore = "benchmark: scripts/bench.sh runs it"]
fn bench_esdb_path_against_the_raw_client() {
    let count: u64 = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let dir = tempfile::tempdir().unwrap();
    let (server, events) = shop_server(dir.path(), 42, count);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let raw = rt.block_on(async {
        use kurrentdb::{Client, SubscribeToAllOptions, SubscriptionEvent};
        let client = Client::new(server.url().parse().unwrap()).unwrap();
        let t0 = Instant::now();
        let mut sub = client
            .subscribe_to_all(&SubscribeToAllOptions::default())
            .await;
        let mut n = 0u64;
        loop {
            match sub.next_subscription_event().await.unwrap() {
                SubscriptionEvent::EventAppeared(_) => n += 1,
                SubscriptionEvent::CaughtUp(_) => break,
                _ => {}
            }
        }
        n as f64 / t0.elapsed().as_secs_f64()
    });

    for names in [
        &["noop"][..],
        &["order-summary"][..],
        &["order-summary", "customer-stats"][..],
    ] {
        let sub = tempfile::tempdir().unwrap();
        let mut cfg = esdb_config(sub.path(), &server, names);
        // The defaults a user runs with (the tests' config has small batches).
        cfg.batch.max_events = projector::config::BatchSettings::default().max_events;
        cfg.batch.commit_events = 200_000;
        let summary = run_once(&cfg);
        assert!(summary.ok(), "{summary:?}");
        let rate = summary.source_events() as f64 / summary.elapsed.as_secs_f64();
        println!(
            "esdb path, {count} shop events, {}: raw client subscription {raw:.0} events/s; projector {rate:.0} events/s = {:.0}% of the raw ceiling",
            names.join(" + "),
            100.0 * rate / raw
        );
        print!("{}", projector::host::format_summary(&summary));
    }

    if let Some(native) = std::env::var_os("BENCH_NATIVE") {
        let out = std::process::Command::new(native)
            .arg(&events)
            .arg(dir.path().join("native.sqlite"))
            .args(["--esdb", &server.url(), "--check"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rate: f64 = text
            .lines()
            .find_map(|l| {
                l.split(" s: ")
                    .nth(1)?
                    .strip_suffix(" events/s")?
                    .parse()
                    .ok()
            })
            .unwrap();
        println!(
            "esdb path, {count} shop events, native baseline: raw client subscription {raw:.0} events/s; native baseline {rate:.0} events/s = {:.0}% of the raw ceiling",
            100.0 * rate / raw
        );
        print!("{text}");
    }
}
