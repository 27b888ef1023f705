//! Three hosts (shards 0/3, 1/3, 2/3, real `projector run` processes) over one event
//! file and one modules folder: each projection runs on exactly one host, any host
//! answers any query with the owner's answer, a `kill -9`ed host's projections answer 503
//! naming it while the others keep serving, and restarted it resumes exactly.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use projector::client::request;
use projector::cluster::{Cluster, ClusterSettings};
use serde_json::Value;

const PROJECTIONS: [&str; 4] = ["order-summary", "customer-stats", "tally", "noop"];

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// Kill -9 on drop, so a failing test leaves no host behind.
struct Host(Child);

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &Path) -> Host {
    let log = std::fs::File::create(config.with_extension("log")).unwrap();
    Host(
        Command::new(env!("CARGO_BIN_EXE_projector"))
            .args(["run", "--config"])
            .arg(config)
            .env("PROJECTOR_TOKEN", "cluster-token")
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn query(base: &str, projection: &str, sql: &str) -> (u16, Value) {
    let body = serde_json::json!({ "sql": sql }).to_string();
    match request(
        base,
        "POST",
        &format!("/api/projections/{projection}/query"),
        None,
        Some(&body),
    ) {
        Ok(r) => (
            r.status,
            serde_json::from_str(&r.body).unwrap_or(Value::Null),
        ),
        Err(_) => (0, Value::Null),
    }
}

fn list(base: &str) -> Vec<Value> {
    request(base, "GET", "/api/projections", None, None)
        .ok()
        .and_then(|r| serde_json::from_str::<Vec<Value>>(&r.body).ok())
        .unwrap_or_default()
}

/// What a query of every table of `projection` answers: its rows, whole.
fn snapshot(base: &str, projection: &str) -> Value {
    let table = match projection {
        "order-summary" => "SELECT * FROM orders ORDER BY order_id",
        "customer-stats" => "SELECT * FROM customers ORDER BY customer_id",
        "tally" => "SELECT * FROM counts ORDER BY event_type",
        _ => "SELECT 1 AS one",
    };
    let (status, body) = query(base, projection, table);
    assert_eq!(status, 200, "{projection} through {base}: {body}");
    body["rows"].clone()
}

#[test]
fn three_shards_split_the_projections_and_answer_for_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 21, 8_000);
    // The tally fixture counts `t-` streams: give it some.
    let mut lines = std::fs::read_to_string(&events).unwrap();
    for i in 0..30 {
        lines.push_str(&format!(
            "{{\"stream\":\"t-{i}\",\"type\":\"A\",\"data\":{{}}}}\n"
        ));
    }
    std::fs::write(&events, lines).unwrap();
    let modules = modules(
        dir.path(),
        &["order-summary", "customer-stats", "tally-v1", "noop"],
    );
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let configs: Vec<PathBuf> = (0..3)
        .map(|i| {
            let path = dir.path().join(format!("host{i}.toml"));
            std::fs::write(
                &path,
                format!(
                    "source = {:?}\ndata = \"data{i}\"\nmodules = {:?}\n[batch]\nmax_events = 1000\npoll_ms = 20\n[http]\nlisten = \"127.0.0.1:{}\"\n[cluster]\nshard = \"{i}/3\"\npeers = {:?}\n",
                    events.to_string_lossy(),
                    modules.to_string_lossy(),
                    ports[i],
                    peers
                ),
            )
            .unwrap();
            path
        })
        .collect();
    let cluster = |i: usize| {
        Cluster::from_settings(
            &ClusterSettings {
                shard: format!("{i}/3"),
                peers: peers.clone(),
            },
            "",
        )
        .unwrap()
    };
    let mut hosts: Vec<Option<Host>> = configs.iter().map(|c| Some(start(c))).collect();
    let caught_up = |base: &str| {
        let l = list(base);
        l.len() == PROJECTIONS.len() && l.iter().all(|p| p["state"] == "caught-up")
    };
    for base in &peers {
        wait_for("every projection caught up, seen from every host", || {
            caught_up(base)
        });
    }

    // Each projection runs on exactly one host: the one rendezvous hashing names.
    for p in PROJECTIONS {
        let owner = cluster(0).owner(p);
        for i in 0..3 {
            let catalog =
                projector::store::Catalog::open_read_only(&dir.path().join(format!("data{i}")))
                    .unwrap();
            assert_eq!(
                catalog.entry(p).unwrap().is_some(),
                i == owner,
                "{p} on host {i}"
            );
        }
        let seen = list(&peers[(owner + 1) % 3]);
        let entry = seen.iter().find(|s| s["name"] == p).unwrap();
        assert!(
            entry["owner"]
                .as_str()
                .unwrap()
                .starts_with(&format!("shard {owner}/3")),
            "{entry}"
        );
    }

    // Any host answers any query with the owner's rows.
    for p in PROJECTIONS {
        let want = snapshot(&peers[cluster(0).owner(p)], p);
        for base in &peers {
            assert_eq!(snapshot(base, p), want, "{p} through {base}");
        }
    }
    let data = |i: usize| dir.path().join(format!("data{i}"));
    let victim = cluster(0).owner("order-summary");
    let other = (victim + 1) % 3;
    assert_same(
        "orders",
        &orders(&data(victim)),
        &shop_events::Fold::of_file(&events, None).unwrap().orders,
    );

    // kill -9 the owner of order-summary: its projections answer 503 naming it, the
    // others keep serving.
    hosts[victim] = None;
    let (status, body) = query(
        &peers[other],
        "order-summary",
        "SELECT count(*) FROM orders",
    );
    assert_eq!(status, 503, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("shard {victim}/3 ({})", peers[victim]))
            && error.contains("unreachable"),
        "{error}"
    );
    for p in PROJECTIONS.iter().filter(|p| cluster(0).owner(p) != victim) {
        assert_eq!(
            query(&peers[other], p, "SELECT 1").0,
            200,
            "{p} still serves"
        );
    }
    let seen = list(&peers[other]);
    assert_eq!(seen.len(), PROJECTIONS.len());
    let down = seen.iter().find(|s| s["name"] == "order-summary").unwrap();
    assert_eq!(down["state"], "unreachable");

    // More events while it is down; restarted, it resumes from its checkpoint, exactly.
    let extra = dir.path().join("extra.ndjson");
    shop_events(&extra, 99, 2_000);
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&events)
        .unwrap()
        .write_all(std::fs::read_to_string(&extra).unwrap().as_bytes())
        .unwrap();
    hosts[victim] = Some(start(&configs[victim]));
    wait_for("the restarted host to catch up", || {
        caught_up(&peers[other]) && caught_up(&peers[victim])
    });
    assert_same(
        "orders",
        &orders(&data(victim)),
        &shop_events::Fold::of_file(&events, None).unwrap().orders,
    );
    let want = snapshot(&peers[victim], "order-summary");
    assert_eq!(snapshot(&peers[other], "order-summary"), want);
}
