//! The HTTP API of a running host, through real HTTP requests: status, queries (JSON
//! and NDJSON), tables, metrics, the page, control calls with their token, and hostile
//! requests.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use projector::client::{Response, request};
use serde_json::Value;

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn call(base: &str, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Response {
    request(base, method, path, token, body).unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
}

fn json(r: &Response) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

fn projections(base: &str) -> Vec<Value> {
    let r = call(base, "GET", "/api/projections", None, None);
    assert_eq!(r.status, 200, "{}", r.body);
    json(&r).as_array().cloned().unwrap_or_default()
}

fn find<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing from {list:?}"))
}

fn sql(base: &str, projection: &str, sql: &str) -> Response {
    let body = serde_json::json!({ "sql": sql }).to_string();
    call(
        base,
        "POST",
        &format!("/api/projections/{projection}/query"),
        None,
        Some(&body),
    )
}

#[test]
fn a_running_host_answers_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 11, 20_000);
    let m = modules(dir.path(), &["order-summary", "customer-stats"]);
    let mut cfg = config(dir.path(), &events, &m, 1000);
    cfg.http.listen = "127.0.0.1:0".into();
    cfg.http.token = Some("s3cret".into());
    cfg.http.max_rows = 50;
    let data = dir.path().join("data");
    let (shutdown, host) = start_host(&cfg);
    wait_for("the API address", || data.join("api.address").exists());
    let base = std::fs::read_to_string(data.join("api.address")).unwrap();

    // Status: both projections, caught up, counting.
    wait_for("both caught up", || {
        let list = projections(&base);
        list.len() == 2 && list.iter().all(|p| p["state"] == "caught-up")
    });
    let list = projections(&base);
    let orders = find(&list, "order-summary");
    assert_eq!(orders["version"], 1);
    assert_eq!(orders["lag_events"], 0);
    assert_eq!(orders["position"], 20_000);
    assert!(
        orders["events_handled"].as_u64().unwrap() > 1000,
        "{orders}"
    );
    assert!(orders["ops_written"].as_u64().unwrap() > 0, "{orders}");
    assert!(orders["last_fault"].is_null());

    // Queries: JSON with columns and rows, the same as the CLI; NDJSON on request.
    let r = sql(&base, "order-summary", "SELECT count(*) AS n FROM orders");
    assert_eq!(r.status, 200, "{}", r.body);
    let n: Vec<Value> = query(&data, "order-summary", "SELECT count(*) AS n FROM orders");
    let answer = json(&r);
    assert_eq!(answer["columns"], serde_json::json!(["n"]));
    assert_eq!(answer["rows"][0][0], n[0]["n"]);
    let r = sql(&base, "order-summary", "SELECT order_id FROM orders");
    assert_eq!(json(&r)["rows"].as_array().unwrap().len(), 50, "row cap");
    assert_eq!(json(&r)["truncated"], true);
    let body = serde_json::json!({ "sql": "SELECT order_id, status FROM orders ORDER BY order_id LIMIT 3" }).to_string();
    let raw = request_with_accept(&base, &body);
    let mut cli = Vec::new();
    projector::query::query(
        &data,
        "order-summary",
        "SELECT order_id, status FROM orders ORDER BY order_id LIMIT 3",
        &mut cli,
    )
    .unwrap();
    assert_eq!(
        raw,
        String::from_utf8(cli).unwrap(),
        "NDJSON exactly as the CLI prints"
    );

    // Tables.
    let r = call(
        &base,
        "GET",
        "/api/projections/order-summary/tables",
        None,
        None,
    );
    assert_eq!(r.status, 200);
    let tables = json(&r);
    assert_eq!(tables[0]["name"], "orders");
    assert_eq!(tables[0]["columns"][0]["name"], "order_id");
    assert_eq!(tables[0]["primary_key"], serde_json::json!(["order_id"]));

    // A module file the host refuses is listed, with why, until it goes.
    let refused = || json(&call(&base, "GET", "/api/modules/refused", None, None));
    assert_eq!(refused(), serde_json::json!([]));
    std::fs::write(m.join("broken.wasm"), b"\0asm but not really").unwrap();
    wait_for("the refusal listed", || {
        refused().as_array().unwrap().len() == 1
    });
    let r = refused();
    assert!(
        r[0]["file"].as_str().unwrap().ends_with("broken.wasm"),
        "{r}"
    );
    assert!(
        r[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not a valid WebAssembly component"),
        "{r}"
    );
    std::fs::remove_file(m.join("broken.wasm")).unwrap();
    wait_for("the refusal gone with its file", || {
        refused() == serde_json::json!([])
    });

    // Hostile requests are refused with a reason.
    for (bad, want) in [
        ("DELETE FROM orders", "read-only"),
        ("ATTACH DATABASE '/tmp/x.db' AS x", "read-only"),
        ("PRAGMA writable_schema = 1", "read-only"),
        ("SELECT load_extension('/tmp/evil')", "not authorized"),
        ("SELECT 1; DELETE FROM orders", "read-only"),
        ("SELECT * FROM nope", "no such table"),
    ] {
        let r = sql(&base, "order-summary", bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(
            json(&r)["error"].as_str().unwrap().contains(want),
            "{bad}: {}",
            r.body
        );
    }
    let r = sql(&base, "nope", "SELECT 1");
    assert_eq!(r.status, 404, "{}", r.body);
    let r = sql(&base, "..%2Fcatalog", "SELECT 1");
    assert_eq!(r.status, 400, "{}", r.body);
    let huge = format!("{{\"sql\": \"SELECT '{}'\"}}", "x".repeat(100_000));
    let r = call(
        &base,
        "POST",
        "/api/projections/order-summary/query",
        None,
        Some(&huge),
    );
    assert_eq!(r.status, 413, "huge bodies are refused");
    let r = call(
        &base,
        "POST",
        "/api/projections/order-summary/query",
        None,
        Some("{nope"),
    );
    assert_eq!(r.status, 400);
    assert_eq!(n.len(), 1);
    assert_eq!(
        count(&data),
        n[0]["n"].as_u64().unwrap(),
        "nothing was written"
    );

    // Control calls need the token, and answer what the host did.
    let r = call(
        &base,
        "POST",
        "/api/projections/order-summary/replay",
        None,
        None,
    );
    assert_eq!(r.status, 401, "{}", r.body);
    let r = call(
        &base,
        "POST",
        "/api/projections/order-summary/replay",
        Some("wrong"),
        None,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = call(
        &base,
        "POST",
        "/api/projections/order-summary/resume",
        Some("s3cret"),
        None,
    );
    assert_eq!(r.status, 409, "running: nothing to resume: {}", r.body);
    assert!(
        json(&r)["error"]
            .as_str()
            .unwrap()
            .contains("neither faulted nor paused")
    );
    let r = call(
        &base,
        "POST",
        "/api/projections/nope/replay",
        Some("s3cret"),
        None,
    );
    assert_eq!(r.status, 409);
    assert!(
        json(&r)["error"]
            .as_str()
            .unwrap()
            .contains("no module provides")
    );
    let r = call(
        &base,
        "POST",
        "/api/projections/order-summary/replay",
        Some("s3cret"),
        None,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(json(&r)["accepted"], true);
    wait_for("the replay to take over", || {
        projector::store::Catalog::open_read_only(&data)
            .unwrap()
            .entry("order-summary")
            .unwrap()
            .is_some_and(|e| e.serving_generation == 1)
    });
    let r = sql(&base, "order-summary", "SELECT count(*) AS n FROM orders");
    assert_eq!(
        json(&r)["rows"][0][0],
        n[0]["n"],
        "the replayed build serves the same rows"
    );

    // Metrics and the page.
    let r = call(&base, "GET", "/metrics", None, None);
    assert_eq!(r.status, 200);
    assert!(
        r.body
            .contains("projector_events_handled{projection=\"customer-stats\"}"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains("projector_state{projection=\"order-summary\",state=\"caught-up\"} 1")
    );
    assert!(
        r.body
            .contains("# TYPE projector_batch_duration_seconds histogram")
            && r.body
                .contains("projector_batch_duration_seconds_count{projection=\"order-summary\"}"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains("projector_fuel_used{projection=\"order-summary\"}")
    );
    let r = call(&base, "GET", "/", None, None);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("id=\"query-run\""));
    assert_eq!(call(&base, "GET", "/readyz", None, None).status, 200);

    shutdown.store(true, Ordering::Relaxed);
    host.join().unwrap().unwrap();
    assert!(
        !data.join("api.address").exists(),
        "the address goes with the host"
    );
}

fn count(data: &Path) -> u64 {
    let n: Vec<Value> = query(data, "order-summary", "SELECT count(*) AS n FROM orders");
    n[0]["n"].as_u64().unwrap()
}

/// A query asking for NDJSON, by hand: the raw body.
fn request_with_accept(base: &str, body: &str) -> String {
    use std::io::{Read as _, Write as _};
    let host = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "POST /api/projections/order-summary/query HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/x-ndjson\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("application/x-ndjson"),
        "{head}"
    );
    rest.to_string()
}

/// Load: 32 concurrent clients making point lookups through the API while both shop
/// projections catch up on COUNT (default 1M) events; prints queries/s, p50/p99 and how
/// much slower the projections were than without queries.
#[test]
#[ignore = "benchmark: scripts/bench.sh runs it"]
fn bench_queries_while_catching_up() {
    let count: u64 = std::env::var("COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 42, count);
    let ids: Vec<String> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"OrderCreated\""))
        .take(2000)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["data"]["orderId"].as_str().map(String::from))
        .collect();
    let m = modules(dir.path(), &["order-summary", "customer-stats"]);

    // Without queries: from start to both caught up, as below.
    let mut cfg = config(dir.path(), &events, &m, 10_000);
    cfg.batch.commit_events = 200_000;
    cfg.http.listen = "127.0.0.1:0".into();
    cfg.data = dir.path().join("quiet");
    let t0 = Instant::now();
    let (shutdown, host) = start_host(&cfg);
    wait_for("the API address", || cfg.data.join("api.address").exists());
    let base = std::fs::read_to_string(cfg.data.join("api.address")).unwrap();
    wait_for("both caught up", || {
        let list = projections(&base);
        list.len() == 2 && list.iter().all(|p| p["state"] == "caught-up")
    });
    let quiet = t0.elapsed().as_secs_f64();
    shutdown.store(true, Ordering::Relaxed);
    host.join().unwrap().unwrap();

    // With 32 clients querying until both have caught up.
    cfg.data = dir.path().join("busy");
    let data = cfg.data.clone();
    let t0 = Instant::now();
    let (shutdown, host) = start_host(&cfg);
    wait_for("the API address", || data.join("api.address").exists());
    let base = std::fs::read_to_string(data.join("api.address")).unwrap();
    wait_for("order-summary to serve", || {
        sql(&base, "order-summary", "SELECT 1 FROM orders LIMIT 1").status == 200
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..32)
        .map(|c| {
            let (base, ids, stop) = (base.clone(), ids.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let id = &ids[i % ids.len().max(1)];
                    let t = Instant::now();
                    let r = sql(
                        &base,
                        "order-summary",
                        &format!("SELECT * FROM orders WHERE order_id = '{id}'"),
                    );
                    assert_eq!(r.status, 200, "{}", r.body);
                    lat.push(t.elapsed());
                    i += 32;
                }
                lat
            })
        })
        .collect();
    wait_for("both caught up", || {
        let list = projections(&base);
        list.len() == 2 && list.iter().all(|p| p["state"] == "caught-up")
    });
    let busy = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<Duration> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    shutdown.store(true, Ordering::Relaxed);
    host.join().unwrap().unwrap();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "api under load: {} point lookups in {busy:.2} s = {:.0} queries/s, p50 {:.1} ms, p99 {:.1} ms; projections caught up in {busy:.2} s vs {quiet:.2} s without queries ({:+.0}%)",
        lat.len(),
        lat.len() as f64 / busy,
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        (busy / quiet - 1.0) * 100.0
    );
}
