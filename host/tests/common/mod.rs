//! Shared test helpers: guest components built from source, event files, configs,
//! and reading read models back.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

use projector::config::{BatchSettings, Config};
use projector::runtime::Limits;
use shop_events::{CustomerRow, OrderRow};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Build a guest crate under `projections/` once per test process; returns the component.
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(BTreeMap::new()));
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let dir = ["", "test-fixtures/"]
        .iter()
        .map(|sub| repo().join("projections").join(format!("{sub}{name}")))
        .find(|d| d.join("Cargo.toml").exists())
        .unwrap_or_else(|| panic!("no guest crate named {name}"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("guests")
        .join(format!("{name}.wasm"));
    projector::toolchain::build(&dir, Some(&out))
        .unwrap_or_else(|e| panic!("building guest {name}: {e:#}"));
    built.insert(name.to_string(), out.clone());
    out
}

/// A fresh modules folder holding the named guests.
pub fn modules(dir: &Path, names: &[&str]) -> PathBuf {
    let m = dir.join("modules");
    std::fs::create_dir_all(&m).unwrap();
    for name in names {
        std::fs::copy(guest(name), m.join(format!("{name}.wasm"))).unwrap();
    }
    m
}

/// A config file for the binary in `dir`: the events in `dir/events.ndjson`, data in
/// `dir/data`, the modules in `modules`, no HTTP, then the tables in `extra`.
pub fn config_file(dir: &Path, modules: &Path, extra: &str) -> PathBuf {
    let cfg = dir.join("projector.toml");
    std::fs::write(
        &cfg,
        format!(
            "source = \"events.ndjson\"\ndata = \"data\"\nmodules = {:?}\n[http]\nlisten = \"\"\n{extra}",
            modules.to_string_lossy()
        ),
    )
    .unwrap();
    cfg
}

/// Write `count` shop events from `seed` to `path`.
pub fn shop_events(path: &Path, seed: u64, count: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    shop_events::generate(seed, count, &mut f).unwrap();
    std::io::Write::flush(&mut f).unwrap();
}

/// Write `count` shop events from `seed` to `path` with extra lines inserted, each at
/// its 0-based index (applied in order); returns the file's lines.
pub fn shop_events_with(
    path: &Path,
    seed: u64,
    count: u64,
    inserts: &[(usize, &str)],
) -> Vec<String> {
    shop_events(path, seed, count);
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    for (at, line) in inserts {
        lines.insert(*at, line.to_string());
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    lines
}

/// A config over `source` with data in `dir/data`.
pub fn config(dir: &Path, source: &Path, modules: &Path, max_events: usize) -> Config {
    Config {
        source: source.to_string_lossy().into_owned(),
        data: dir.join("data"),
        modules: modules.to_path_buf(),
        batch: BatchSettings {
            max_events,
            max_wait_ms: 200,
            commit_events: 5_000,
            commit_interval_ms: 1000,
            poll_ms: 10,
            shared_ingest: true,
            read_ahead: true,
            adaptive: true,
        },
        limits: Limits::default(),
        projections: Default::default(),
        reload: Default::default(),
        reconnect: Default::default(),
        // Tests run hosts side by side: no fixed port unless a test asks for one.
        http: projector::config::HttpSettings {
            listen: String::new(),
            ..Default::default()
        },
        cache: None,
        release: Default::default(),
        cluster: Default::default(),
    }
}

/// Run to the end of the source in-process.
pub fn run_once(config: &Config) -> projector::RunSummary {
    projector::run(
        config,
        projector::RunOptions {
            once: true,
            progress: false,
        },
        Arc::new(AtomicBool::new(false)),
    )
    .expect("run")
}

/// Start the host in follow mode (watching, live) on a thread; set the flag to stop it.
pub fn start_host(
    cfg: &Config,
) -> (
    Arc<AtomicBool>,
    std::thread::JoinHandle<anyhow::Result<projector::RunSummary>>,
) {
    let shutdown = Arc::new(AtomicBool::new(false));
    let (cfg, flag) = (cfg.clone(), shutdown.clone());
    let handle = std::thread::spawn(move || {
        projector::run(
            &cfg,
            projector::RunOptions {
                once: false,
                progress: false,
            },
            flag,
        )
    });
    (shutdown, handle)
}

/// Rows of a query, parsed from the NDJSON `projector query` prints.
pub fn query<T: serde::de::DeserializeOwned>(data: &Path, projection: &str, sql: &str) -> Vec<T> {
    let mut out = Vec::new();
    projector::query::query(data, projection, sql, &mut out)
        .unwrap_or_else(|e| panic!("query {sql}: {e:#}"));
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The `orders` table of order-summary.
pub fn orders(data: &Path) -> BTreeMap<String, OrderRow> {
    query::<OrderRow>(data, "order-summary", "SELECT * FROM orders")
        .into_iter()
        .map(|r| (r.order_id.clone(), r))
        .collect()
}

/// The `customers` table of customer-stats.
pub fn customers(data: &Path) -> BTreeMap<String, CustomerRow> {
    query::<CustomerRow>(data, "customer-stats", "SELECT * FROM customers")
        .into_iter()
        .map(|r| (r.customer_id.clone(), r))
        .collect()
}

/// Assert two tables are equal, naming the first differing row.
pub fn assert_same<T: PartialEq + std::fmt::Debug>(
    what: &str,
    got: &BTreeMap<String, T>,
    want: &BTreeMap<String, T>,
) {
    for (k, w) in want {
        assert_eq!(got.get(k), Some(w), "{what}: row {k} differs");
    }
    assert_eq!(got.len(), want.len(), "{what}: extra rows");
}

/// Rows of a query, or None while the projection has no tables yet.
pub fn try_query<T: serde::de::DeserializeOwned>(
    data: &Path,
    name: &str,
    sql: &str,
) -> Option<Vec<T>> {
    let mut out = Vec::new();
    projector::query::query(data, name, sql, &mut out).ok()?;
    String::from_utf8(out)
        .ok()?
        .lines()
        .map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The `orders` table of the order-summary build named `name`, keyed by id; None while
/// there is none.
pub fn try_orders_of(data: &Path, name: &str) -> Option<BTreeMap<String, OrderRow>> {
    let rows: Vec<OrderRow> = try_query(data, name, "SELECT * FROM orders")?;
    Some(rows.into_iter().map(|r| (r.order_id.clone(), r)).collect())
}

/// The `customers` table of the customer-stats build named `name`, keyed by id; None
/// while there is none.
pub fn try_customers_of(data: &Path, name: &str) -> Option<BTreeMap<String, CustomerRow>> {
    let rows: Vec<CustomerRow> = try_query(data, name, "SELECT * FROM customers")?;
    Some(
        rows.into_iter()
            .map(|r| (r.customer_id.clone(), r))
            .collect(),
    )
}

/// order-summary's orders table keyed by id, or None while there is none.
pub fn try_orders(data: &Path) -> Option<BTreeMap<String, OrderRow>> {
    try_orders_of(data, "order-summary")
}

/// Both shop read models equal the fold of the first `upto` events of the file.
pub fn shop_exact(data: &Path, events: &Path, upto: Option<usize>) -> bool {
    let want = shop_events::Fold::of_file(events, upto).unwrap();
    try_orders(data) == Some(want.orders)
        && try_customers_of(data, "customer-stats") == Some(want.customers)
}

/// Poll `cond` every 25 ms until it holds; fail naming `what` after `limit`.
pub fn wait_until(what: &str, limit: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

/// Send the in-process host's logs to the test's captured output: shown only when the
/// test fails, so a failure says what the host was doing.
pub fn logs_on_failure() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("projector=info"))
        .with_test_writer()
        .try_init();
}
