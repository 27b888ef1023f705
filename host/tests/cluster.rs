//! Three hosts (shards 0/3, 1/3, 2/3, real `projector run` processes) with a dozen
//! projections, reading a three-node cluster of the test server (gossip seeds): each
//! projection runs on exactly one host, any host answers any query with the owner's
//! answer, a `kill -9`ed host's projections answer 503 naming it while the others keep
//! serving, restarted it resumes exactly, and when the event-store node the hosts read
//! from dies, every host fails over to the new leader and every table stays exact.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use esdb_test_server::TestCluster;
use projector::client::request;
use projector::cluster::{Cluster, ClusterSettings};
use serde_json::Value;

/// (projection name, what it computes): the Rust shop projections and fixtures, and the
/// JavaScript twins of the shop projections renamed, so a dozen run side by side.
const PROJECTIONS: [(&str, &str); 12] = [
    ("order-summary", "order-summary"),
    ("orders-b", "order-summary"),
    ("orders-c", "order-summary"),
    ("orders-d", "order-summary"),
    ("orders-e", "order-summary"),
    ("customer-stats", "customer-stats"),
    ("customers-b", "customer-stats"),
    ("customers-c", "customer-stats"),
    ("customers-d", "customer-stats"),
    ("customers-e", "customer-stats"),
    ("tally", "tally-v1"),
    ("noop", "noop"),
];

/// Build the JavaScript twin of `guest` (`projections/<guest>-js`) under the name
/// `name` into `modules`.
fn js_twin(dir: &Path, guest: &str, name: &str, modules: &Path) {
    let src = repo().join("projections").join(format!("{guest}-js"));
    let project = dir.join("twins").join(name);
    std::fs::create_dir_all(&project).unwrap();
    for file in ["app.js", "package.json"] {
        let text = std::fs::read_to_string(src.join(file))
            .unwrap()
            .replace(&format!("\"{guest}\""), &format!("\"{name}\""));
        std::fs::write(project.join(file), text).unwrap();
    }
    projector::toolchain::build(&project, Some(&modules.join(format!("{name}.wasm"))))
        .unwrap_or_else(|e| panic!("building {name}: {e:#}"));
}

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

/// The guest a projection runs.
fn guest_of(projection: &str) -> &'static str {
    PROJECTIONS
        .iter()
        .find(|(p, _)| *p == projection)
        .map(|(_, g)| *g)
        .unwrap()
}

/// What a query of every table of `projection` answers: its rows, whole.
fn snapshot(base: &str, projection: &str) -> Value {
    let table = match guest_of(projection) {
        "order-summary" => "SELECT * FROM orders ORDER BY order_id",
        "customer-stats" => "SELECT * FROM customers ORDER BY customer_id",
        "tally-v1" => "SELECT * FROM counts ORDER BY event_type",
        _ => "SELECT 1 AS one",
    };
    let (status, body) = query(base, projection, table);
    assert_eq!(status, 200, "{projection} through {base}: {body}");
    body["rows"].clone()
}

/// Shop events from `seed`, plus `t-` streams for the tally fixture, as a file.
fn events_file(path: &Path, seed: u64, count: u64) {
    shop_events(path, seed, count);
    let mut lines = std::fs::read_to_string(path).unwrap();
    for i in 0..30 {
        lines.push_str(&format!(
            "{{\"stream\":\"t-{seed}-{i}\",\"type\":\"A\",\"data\":{{}}}}\n"
        ));
    }
    std::fs::write(path, lines).unwrap();
}

/// Append `more` to the file `all` and to the cluster's log.
fn append(all: &Path, more: &Path, cluster: &TestCluster) {
    use std::io::Write as _;
    let text = std::fs::read_to_string(more).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(all)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    cluster.append_direct(esdb_test_server::read_ndjson(more).unwrap());
}

/// Every projection's tables on its owner equal the fold of `events`, or the first
/// projection that differs.
fn exact(events: &Path, data: &dyn Fn(&str) -> PathBuf) -> Result<(), String> {
    let fold = shop_events::Fold::of_file(events, None).unwrap();
    let text = std::fs::read_to_string(events).unwrap();
    let tallied = text
        .lines()
        .filter(|l| l.contains("\"stream\":\"t-"))
        .count() as i64;
    for (p, guest) in PROJECTIONS {
        let same = match guest {
            "order-summary" => try_orders_of(&data(p), p).as_ref() == Some(&fold.orders),
            "customer-stats" => try_customers_of(&data(p), p).as_ref() == Some(&fold.customers),
            "tally-v1" => {
                let rows: Vec<Value> = common::query(&data(p), p, "SELECT sum(n) AS n FROM counts");
                rows[0]["n"].as_i64() == Some(tallied)
            }
            _ => true,
        };
        if !same {
            return Err(format!("{p} differs from the fold of {}", events.display()));
        }
    }
    Ok(())
}

#[test]
fn three_shards_split_the_projections_answer_for_each_other_and_fail_over() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    events_file(&events, 21, 8_000);
    let store = TestCluster::start(3, esdb_test_server::read_ndjson(&events).unwrap()).unwrap();
    let modules = modules(
        dir.path(),
        &["order-summary", "customer-stats", "tally-v1", "noop"],
    );
    for (p, guest) in PROJECTIONS {
        if p.starts_with("orders-") || p.starts_with("customers-") {
            js_twin(dir.path(), guest, p, &modules);
        }
    }
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
                    "source = {:?}\ndata = \"data{i}\"\nmodules = {:?}\n[batch]\nmax_events = 1000\npoll_ms = 20\n[reconnect]\ninitial_ms = 50\n[http]\nlisten = \"127.0.0.1:{}\"\n[cluster]\nshard = \"{i}/3\"\npeers = {:?}\n",
                    store.url(""),
                    modules.to_string_lossy(),
                    ports[i],
                    peers
                ),
            )
            .unwrap();
            path
        })
        .collect();
    let cluster = Cluster::from_settings(
        &ClusterSettings {
            shard: "0/3".into(),
            peers: peers.clone(),
        },
        "",
    )
    .unwrap();
    let owner = |p: &str| cluster.owner(p);
    let data = |p: &str| dir.path().join(format!("data{}", owner(p)));
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
    for (p, _) in PROJECTIONS {
        for i in 0..3 {
            let catalog =
                projector::store::Catalog::open_read_only(&dir.path().join(format!("data{i}")))
                    .unwrap();
            assert_eq!(
                catalog.entry(p).unwrap().is_some(),
                i == owner(p),
                "{p} on host {i}"
            );
        }
        let seen = list(&peers[(owner(p) + 1) % 3]);
        let entry = seen.iter().find(|s| s["name"] == p).unwrap();
        assert!(
            entry["owner"]
                .as_str()
                .unwrap()
                .starts_with(&format!("shard {}/3", owner(p))),
            "{entry}"
        );
    }
    assert!(
        (0..3).all(|i| PROJECTIONS.iter().any(|(p, _)| owner(p) == i)),
        "every host runs some projection"
    );

    // Any host answers any query with the owner's rows, and the rows are exact.
    for (p, _) in PROJECTIONS {
        let want = snapshot(&peers[owner(p)], p);
        for base in &peers {
            assert_eq!(snapshot(base, p), want, "{p} through {base}");
        }
    }
    exact(&events, &data).unwrap();

    // kill -9 the owner of order-summary: its projections answer 503 naming it, the
    // others keep serving.
    let victim = owner("order-summary");
    let other = (victim + 1) % 3;
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
    for (p, _) in PROJECTIONS.iter().filter(|(p, _)| owner(p) != victim) {
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
    events_file(&extra, 99, 2_000);
    append(&events, &extra, &store);
    hosts[victim] = Some(start(&configs[victim]));
    let all_caught_up = || peers.iter().all(|b| caught_up(b));
    wait_for("the restarted host to catch up", all_caught_up);
    wait_for("every table to hold the new events", || {
        exact(&events, &data).is_ok()
    });
    let want = snapshot(&peers[victim], "order-summary");
    assert_eq!(snapshot(&peers[other], "order-summary"), want);

    // The event-store node every host reads from (the leader) dies: the leader moves,
    // every host resubscribes through a live node from its checkpoints, and events
    // written after the failover reach every table exactly. Failover time: from the
    // kill to every table holding a small write made right after it.
    let read_from = store.leader();
    wait_for("every host reading from the leader", || {
        (0..3).all(|i| i == read_from || store.node(i).live_subscriptions() == 0)
            && store.node(read_from).live_subscriptions() >= 3
    });
    let t0 = Instant::now();
    store.kill(read_from);
    let leader = store.leader();
    assert_ne!(leader, read_from);
    let more = dir.path().join("more.ndjson");
    events_file(&more, 7, 300);
    append(&events, &more, &store);
    wait_for(
        "every table to hold the events written after the failover",
        || exact(&events, &data).is_ok(),
    );
    let failover = t0.elapsed();
    assert_eq!(store.node(read_from).live_subscriptions(), 0);
    assert!(
        store.node(leader).live_subscriptions() >= 3,
        "every host on the new leader"
    );

    // The old node comes back as a follower; then the leader changes back to it (both
    // nodes' subscriptions end as they change role): every host follows, exactly.
    store.restart(read_from).unwrap();
    let t1 = Instant::now();
    store.set_leader(read_from);
    let last = dir.path().join("last.ndjson");
    events_file(&last, 8, 300);
    append(&events, &last, &store);
    wait_for("every table exact after the leader changed", || {
        exact(&events, &data).is_ok()
    });
    let handover = t1.elapsed();
    wait_for("every host on the restored leader", || {
        store.node(read_from).live_subscriptions() >= 3
    });
    for base in &peers {
        wait_for("caught up everywhere", || caught_up(base));
    }
    eprintln!(
        "failover: every table of 3 hosts held a write made after the leader died {} ms \
         after the kill; {} ms after a leader change",
        failover.as_millis(),
        handover.as_millis()
    );
}
