//! `projector import` into the protocol-level test server, read back through the real
//! `kurrentdb` client: every stream holds the file's events in the file's order, the
//! cross-stream order stays within the window, a second import appends nothing, an
//! interrupted or partial import completes exactly, servers without batch append get
//! unary appends, a stream written by someone else stops the import with the line, and
//! the shop projections over the imported server equal the file run.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use esdb_test_server::{NewEvent, TestServer};
use projector::import::{ImportOptions, import_with};

/// One event as the file has it or as it was read back.
#[derive(Debug, Clone, PartialEq)]
struct Ev {
    id: String,
    event_type: String,
    data: serde_json::Value,
    metadata: Option<serde_json::Value>,
}

/// The file's non-system events: each with its stream, in file order.
fn file_events(path: &Path) -> Vec<(String, Ev)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| {
            !v["stream"].as_str().unwrap().starts_with('$')
                && !v["type"].as_str().unwrap().starts_with('$')
        })
        .map(|v| {
            let ev = Ev {
                id: v["id"].as_str().unwrap().to_string(),
                event_type: v["type"].as_str().unwrap().to_string(),
                data: v["data"].clone(),
                metadata: Some(v["metadata"].clone()).filter(|m| !m.is_null()),
            };
            (v["stream"].as_str().unwrap().to_string(), ev)
        })
        .collect()
}

/// Everything the server holds, read through the client: `$all` in order, each with
/// its stream and revision.
fn read_back(server: &TestServer) -> Vec<(String, u64, Ev)> {
    use kurrentdb::{Client, ReadAllOptions};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::new(server.url().parse().unwrap()).unwrap();
        let mut read = client.read_all(&ReadAllOptions::default()).await.unwrap();
        let mut out = Vec::new();
        while let Some(e) = read.next().await.unwrap() {
            let e = e.get_original_event();
            let metadata = (!e.custom_metadata.is_empty())
                .then(|| serde_json::from_slice(&e.custom_metadata).unwrap());
            out.push((
                e.stream_id().to_string(),
                e.revision,
                Ev {
                    id: e.id.to_string(),
                    event_type: e.event_type.clone(),
                    data: serde_json::from_slice(&e.data).unwrap(),
                    metadata,
                },
            ));
        }
        out
    })
}

/// Every stream on the server holds exactly the file's events of that stream, in the
/// file's order, at revisions 0, 1, 2, …
fn assert_streams_equal_the_file(server: &TestServer, file: &Path) {
    let mut want: BTreeMap<String, Vec<Ev>> = BTreeMap::new();
    for (stream, ev) in file_events(file) {
        want.entry(stream).or_default().push(ev);
    }
    let mut got: BTreeMap<String, Vec<Ev>> = BTreeMap::new();
    for (stream, revision, ev) in read_back(server) {
        let events = got.entry(stream.clone()).or_default();
        assert_eq!(revision, events.len() as u64, "revisions of {stream}");
        events.push(ev);
    }
    assert_eq!(got.len(), want.len(), "streams");
    for (stream, events) in &want {
        assert_eq!(got.get(stream), Some(events), "stream {stream}");
    }
}

/// The cross-stream promise: a run (consecutive events of one stream in the file,
/// system events left out) lands after every run `window` or more places before it.
fn assert_within_window(server: &TestServer, file: &Path, window: usize) {
    let positions: BTreeMap<String, usize> = read_back(server)
        .into_iter()
        .enumerate()
        .map(|(at, (_, _, ev))| (ev.id, at))
        .collect();
    let mut runs: Vec<(String, Vec<usize>)> = Vec::new();
    for (stream, ev) in file_events(file) {
        let at = positions[&ev.id];
        match runs.last_mut() {
            Some((s, ats)) if *s == stream => ats.push(at),
            _ => runs.push((stream, vec![at])),
        }
    }
    // Latest position among runs 0..=j-window, against run j's earliest.
    let mut latest_before = None::<usize>;
    for j in 0..runs.len() {
        if j >= window {
            let k = j - window;
            let last = *runs[k].1.iter().max().unwrap();
            latest_before = Some(latest_before.map_or(last, |l| l.max(last)));
        }
        if let Some(l) = latest_before {
            let first = *runs[j].1.iter().min().unwrap();
            assert!(
                l < first,
                "run {j} ({}) landed before a run {window} or more places earlier",
                runs[j].0
            );
        }
    }
}

fn options(window: usize) -> ImportOptions {
    ImportOptions {
        window,
        ..ImportOptions::default()
    }
}

#[test]
fn every_stream_equals_the_file_and_a_second_import_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let n = 40_000;
    shop_events(&events, 21, n);
    let server = TestServer::start(Vec::new()).unwrap();

    let t0 = Instant::now();
    let report = import_with(&events, &server.url(), &ImportOptions::default()).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "imported {} events in {:.2} s: {:.0} events/s ({} appends)",
        report.events,
        secs,
        report.events as f64 / secs,
        report.appends
    );
    assert!(report.batch_append, "the test server offers batch append");
    assert!(server.batch_sessions_served() >= 1);
    assert_eq!(report.events + report.skipped, n);
    assert_eq!(report.resent, 0);
    assert_eq!(server.len() as u64, report.events);
    assert_streams_equal_the_file(&server, &events);
    assert_within_window(&server, &events, ImportOptions::default().window);

    let appends = server.appends_served();
    let again = import_with(&events, &server.url(), &ImportOptions::default()).unwrap();
    assert_eq!(again.events, report.events);
    assert_eq!(server.len() as u64, report.events, "nothing appended twice");
    assert!(
        server.appends_served() > appends,
        "the second import did send"
    );
    assert_streams_equal_the_file(&server, &events);

    // The shop projections over the imported server equal the same modules over the file.
    let names = ["order-summary", "customer-stats"];
    let from_server = tempfile::tempdir().unwrap();
    let m = modules(from_server.path(), &names);
    let mut cfg = config(from_server.path(), Path::new("unused"), &m, 2_000);
    cfg.source = server.url();
    assert!(run_once(&cfg).ok());
    let from_file = tempfile::tempdir().unwrap();
    let m = modules(from_file.path(), &names);
    assert!(run_once(&config(from_file.path(), &events, &m, 2_000)).ok());
    for name in names {
        let wasm = std::fs::read(guest(name)).unwrap();
        let schema = projector::runtime::Runtime::new(Default::default(), None)
            .unwrap()
            .load(&wasm)
            .unwrap()
            .schema()
            .clone();
        assert_eq!(
            projector::verify::digest(&from_server.path().join("data"), &schema).unwrap(),
            projector::verify::digest(&from_file.path().join("data"), &schema).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn a_small_window_keeps_the_cross_stream_order_within_it_and_strict_order_keeps_all() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 4, 6_000);

    let server = TestServer::start(Vec::new()).unwrap();
    import_with(&events, &server.url(), &options(16)).unwrap();
    assert_streams_equal_the_file(&server, &events);
    assert_within_window(&server, &events, 16);

    let strict = TestServer::start(Vec::new()).unwrap();
    let report = import_with(
        &events,
        &strict.url(),
        &ImportOptions::default().strict_order(),
    )
    .unwrap();
    let order: Vec<String> = read_back(&strict).into_iter().map(|e| e.2.id).collect();
    let want: Vec<String> = file_events(&events).into_iter().map(|e| e.1.id).collect();
    assert_eq!(order, want, "$all in exactly the file's order");
    assert_eq!(report.events, want.len() as u64);
}

/// Streams in long runs, so a file cut in the middle of a run leaves a stream that
/// holds part of the next import's first append.
fn long_runs(path: &Path, n: usize) {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            serde_json::json!({
                "stream": format!("acct-{}", (i / 37) % 23),
                "type": "Deposited",
                "id": uuid::Uuid::from_u128(0xabc0_0000 + i as u128).to_string(),
                "data": {"n": i, "text": "x".repeat(i % 50)},
                "metadata": {"i": i},
            })
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// The first `lines` lines of `from`, as a file of its own.
fn prefix(from: &Path, to: &Path, lines: usize) {
    let text = std::fs::read_to_string(from).unwrap();
    let head: Vec<&str> = text.lines().take(lines).collect();
    std::fs::write(to, head.join("\n") + "\n").unwrap();
}

#[test]
fn an_import_of_a_prefix_then_of_the_whole_file_is_complete_and_exact() {
    let dir = tempfile::tempdir().unwrap();
    // Shop events: the file cut anywhere.
    let (shop, shop_head) = (
        dir.path().join("shop.ndjson"),
        dir.path().join("head.ndjson"),
    );
    shop_events(&shop, 8, 20_000);
    prefix(&shop, &shop_head, 12_345);
    let server = TestServer::start(Vec::new()).unwrap();
    import_with(&shop_head, &server.url(), &ImportOptions::default()).unwrap();
    assert_streams_equal_the_file(&server, &shop_head);
    let rest = import_with(&shop, &server.url(), &ImportOptions::default()).unwrap();
    assert_streams_equal_the_file(&server, &shop);
    assert_eq!(server.len() as u64, rest.events);

    // Long runs cut in the middle of one: that append meets a stream holding part of
    // it, and goes again event by event.
    let (runs, runs_head) = (dir.path().join("runs.ndjson"), dir.path().join("rh.ndjson"));
    long_runs(&runs, 5_000);
    prefix(&runs, &runs_head, 1_000); // 1000 = 27 × 37 + 1: one event into a run
    let server = TestServer::start(Vec::new()).unwrap();
    let head = import_with(&runs_head, &server.url(), &ImportOptions::default()).unwrap();
    assert_eq!(head.events, 1_000);
    let full = import_with(&runs, &server.url(), &ImportOptions::default()).unwrap();
    assert!(full.resent > 0, "the cut run was sent again: {full:?}");
    assert_eq!(full.events, 5_000);
    assert_eq!(server.len(), 5_000);
    assert_streams_equal_the_file(&server, &runs);
    // And once more: nothing new.
    import_with(&runs, &server.url(), &ImportOptions::default()).unwrap();
    assert_eq!(server.len(), 5_000);
}

#[test]
fn a_server_outage_during_an_import_is_ridden_out_and_the_result_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 17, 60_000);
    let server = std::sync::Arc::new(TestServer::start(Vec::new()).unwrap());
    let stopped = std::sync::Arc::new(AtomicBool::new(false));
    let watcher = {
        let (server, stopped) = (server.clone(), stopped.clone());
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while server.len() < 15_000 && t0.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_micros(200));
            }
            server.stop();
            stopped.store(true, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(300));
            server.start_again().unwrap();
        })
    };
    let report = import_with(&events, &server.url(), &ImportOptions::default()).unwrap();
    watcher.join().unwrap();
    assert!(stopped.load(Ordering::Relaxed));
    assert!(
        report.resent > 0,
        "appends went again after the outage: {report:?}"
    );
    assert_eq!(server.len() as u64, report.events);
    assert_streams_equal_the_file(&server, &events);
}

#[test]
fn an_import_that_gives_up_is_completed_by_running_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 19, 30_000);
    let server = std::sync::Arc::new(TestServer::start(Vec::new()).unwrap());
    let watcher = {
        let server = server.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while server.len() < 8_000 && t0.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_micros(200));
            }
            server.stop(); // for longer than the import's retries last
        })
    };
    let err = import_with(&events, &server.url(), &ImportOptions::default()).unwrap_err();
    watcher.join().unwrap();
    let msg = format!("{err:#}");
    assert!(msg.contains("run the import again"), "{msg}");
    let partial = server.len();
    assert!((8_000..29_000).contains(&partial), "{partial}");
    server.start_again().unwrap();
    let report = import_with(&events, &server.url(), &ImportOptions::default()).unwrap();
    assert_eq!(server.len() as u64, report.events);
    assert_streams_equal_the_file(&server, &events);
}

#[test]
fn a_server_without_batch_append_gets_unary_appends() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 23, 5_000);
    let server = TestServer::start(Vec::new()).unwrap();
    server.set_batch_append(false);
    let report = import_with(&events, &server.url(), &ImportOptions::default()).unwrap();
    assert!(!report.batch_append);
    assert_eq!(server.batch_sessions_served(), 0);
    assert_streams_equal_the_file(&server, &events);
    import_with(&events, &server.url(), &ImportOptions::default()).unwrap();
    assert_eq!(server.len() as u64, report.events, "nothing appended twice");
}

#[test]
fn a_stream_holding_another_event_stops_the_import_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    long_runs(&events, 400);
    let server = TestServer::start(vec![NewEvent {
        stream: "acct-3".into(),
        event_type: "Deposited".into(),
        id: uuid::Uuid::from_u128(7),
        data: b"{}".to_vec(),
        metadata: vec![],
        content_type: "application/json".into(),
        created_ms: 0,
    }])
    .unwrap();
    let err = import_with(&events, &server.url(), &ImportOptions::default()).unwrap_err();
    let msg = format!("{err:#}");
    // acct-3's first event is line 3 × 37 + 1 = 112.
    assert!(
        msg.contains("line 112") && msg.contains("acct-3") && msg.contains("revision 0"),
        "{msg}"
    );
}

#[test]
fn a_malformed_line_stops_the_import_after_the_events_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let lines = shop_events_with(&events, 29, 3_000, &[(2_000, "{\"stream\": \"order-1\"")]);
    let server = TestServer::start(Vec::new()).unwrap();
    let err = import_with(&events, &server.url(), &ImportOptions::default()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("events.ndjson:2001: malformed event"), "{msg}");
    let before = dir.path().join("before.ndjson");
    std::fs::write(&before, lines[..2_000].join("\n") + "\n").unwrap();
    assert_streams_equal_the_file(&server, &before);
}
