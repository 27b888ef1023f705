//! The status page in a real headless browser (Debian's chromium, driven through
//! chromedriver over WebDriver): it lists the projections, follows the host live without
//! a reload, runs a typed query into the results table, shows a bad query's error, and
//! shows a faulted projection's fault in its row.
//!
//! Needs /usr/bin/chromium and /usr/bin/chromedriver: `bash scripts/setup-browser.sh`.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// The longest any one thing on the page may take to show up.
const WAIT: Duration = Duration::from_secs(20);

/// Events in the file at start (plus one `Panic` for the hostile fixture) and appended
/// later, while the page is open.
const FIRST: usize = 1000;
const LATER: usize = 1500;

#[test]
fn the_status_page_works_in_a_browser() {
    let chromium = browser_binary("chromium");
    let chromedriver = browser_binary("chromedriver");

    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let mut all = Vec::new();
    shop_events::generate(21, (FIRST + LATER) as u64, &mut all).unwrap();
    let all: Vec<String> = String::from_utf8(all)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(all.len(), FIRST + LATER);
    // The hostile fixture panics on this one (line 101); the shop projections skip it.
    let mut first = all[..FIRST].to_vec();
    first.insert(
        100,
        r#"{"stream":"evil-1","type":"Panic","id":"bad-1","data":{}}"#.into(),
    );
    std::fs::write(&events, first.join("\n") + "\n").unwrap();
    let later = all[FIRST..].join("\n") + "\n";

    let m = modules(dir.path(), &["order-summary", "customer-stats", "hostile"]);
    let mut cfg = config(dir.path(), &events, &m, 500);
    cfg.http.listen = "127.0.0.1:0".into();
    let data = dir.path().join("data");
    let (shutdown, host) = start_host(&cfg);
    let t0 = Instant::now();
    while !data.join("api.address").exists() {
        if host.is_finished() {
            let why = host.join().unwrap().err().map(|e| format!("{e:#}"));
            panic!("the host stopped before serving its API: {why:?}");
        }
        assert!(t0.elapsed() < WAIT, "the host wrote no API address");
        std::thread::sleep(Duration::from_millis(20));
    }
    let base = std::fs::read_to_string(data.join("api.address")).unwrap();

    let driver = ChromeDriver::start(&chromedriver);
    let profile = dir.path().join("chromium-profile");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = rt.block_on(async {
        let client = connect(&driver.url, &chromium, &profile).await?;
        let checked = check_page(&client, &base, &events, &later, &data, &m).await;
        // Close the session whatever happened, so that chromedriver ends the browser.
        let closed = client.close().await;
        checked?;
        closed.context("closing the browser session")
    });

    shutdown.store(true, Ordering::Relaxed);
    drop(driver);
    if let Err(e) = outcome {
        panic!("{e:#}");
    }
    host.join().unwrap().unwrap();
}

/// Everything checked in the browser, in order.
async fn check_page(
    client: &Client,
    base: &str,
    events: &Path,
    later: &str,
    data: &Path,
    modules: &Path,
) -> Result<()> {
    client.goto(base).await.context("opening the page")?;
    ensure!(
        client.title().await? == "Projector status",
        "not the status page"
    );

    // The page loads and shows the projections; the shop ones catch up with the file.
    let initial = (FIRST + 1) as u64;
    for name in ["order-summary", "customer-stats"] {
        wait_until(&format!("{name} caught up at {initial}"), async || {
            let (state, position, lag) = (
                cell(client, name, "state").await?,
                cell(client, name, "position").await?,
                cell(client, name, "lag").await?,
            );
            ensure!(
                state == "caught-up" && number(&position) == Some(initial) && lag == "0",
                "state {state:?}, position {position:?}, lag {lag:?}"
            );
            Ok(())
        })
        .await?;
    }
    let updated = text(client, "#updated").await?;
    ensure!(updated.starts_with("updated "), "#updated says {updated:?}");
    let options: Vec<String> = client
        .execute(
            "return [...document.querySelectorAll('#query-projection option')].map(o => o.value)",
            vec![],
        )
        .await
        .and_then(|v| Ok(serde_json::from_value(v)?))
        .context("listing the query box's projections")?;
    for name in ["order-summary", "customer-stats", "hostile"] {
        ensure!(
            options.iter().any(|o| o == name),
            "{name} not offered in the query box: {options:?}"
        );
    }

    // The faulted projection shows its fault in its row.
    wait_until("hostile faulted, with its fault in its row", async || {
        let (state, fault) = (
            cell(client, "hostile", "state").await?,
            cell(client, "hostile", "fault").await?,
        );
        ensure!(
            state == "faulted" && fault.contains("boom at bad-1"),
            "state {state:?}, fault {fault:?}"
        );
        Ok(())
    })
    .await?;
    let class = row(client, "hostile").await?.attr("class").await?;
    ensure!(
        class
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .any(|c| c == "faulted"),
        "the hostile row is not marked faulted: class {class:?}"
    );
    let summary = text(client, "#summary").await?;
    ensure!(
        summary == "3 projections · 1 faulted",
        "#summary says {summary:?}"
    );

    // A module file the host refuses shows, with why, until it goes; none: no section.
    ensure!(
        !client
            .find(Locator::Id("refused-section"))
            .await?
            .is_displayed()
            .await?,
        "the refused modules show with none refused"
    );
    std::fs::write(modules.join("broken.wasm"), b"\0asm but not really")?;
    wait_until("the refused module shown", async || {
        let cells = texts(client, "#refused tbody td").await?;
        ensure!(
            cells.len() == 3
                && cells[0].ends_with("broken.wasm")
                && cells[1].contains("not a valid WebAssembly component"),
            "#refused shows {cells:?}"
        );
        Ok(())
    })
    .await?;
    std::fs::remove_file(modules.join("broken.wasm"))?;
    wait_until("the refused module gone with its file", async || {
        let shown = client
            .find(Locator::Id("refused-section"))
            .await?
            .is_displayed()
            .await?;
        ensure!(!shown, "the refused modules still show");
        Ok(())
    })
    .await?;

    // A state change shows without a reload: mark this document, append to the event
    // file, and watch the positions move in the same document.
    client
        .execute(
            "window.__projectorPageTest = 'same document'; return null",
            vec![],
        )
        .await?;
    let mut f = std::fs::OpenOptions::new().append(true).open(events)?;
    f.write_all(later.as_bytes())?;
    drop(f);
    let end = (FIRST + 1 + LATER) as u64;
    for name in ["order-summary", "customer-stats"] {
        wait_until(&format!("{name} live at position {end}"), async || {
            let (position, lag) = (
                cell(client, name, "position").await?,
                cell(client, name, "lag").await?,
            );
            ensure!(
                number(&position) == Some(end) && lag == "0",
                "position {position:?}, lag {lag:?}"
            );
            Ok(())
        })
        .await?;
    }
    let mark = client
        .execute("return window.__projectorPageTest || null", vec![])
        .await?;
    ensure!(
        mark == json!("same document"),
        "the page reloaded (mark {mark})"
    );

    // A query typed into the box shows its rows.
    let sql = "SELECT order_id, status FROM orders ORDER BY order_id LIMIT 5";
    run_query(client, "order-summary", sql).await?;
    let want: Vec<Value> = query(data, "order-summary", sql);
    ensure!(
        want.len() == 5,
        "the read model has too few orders: {want:?}"
    );
    wait_until("the query's rows in #query-results", async || {
        let head = texts(client, "#query-results thead th").await?;
        let cells = texts(client, "#query-results tbody td").await?;
        let expected: Vec<String> = want
            .iter()
            .flat_map(|r| [r["order_id"].clone(), r["status"].clone()])
            .map(|v| v.as_str().map(String::from).unwrap_or(v.to_string()))
            .collect();
        ensure!(
            head == ["order_id", "status"] && cells == expected,
            "header {head:?}, cells {cells:?}, want {expected:?}"
        );
        Ok(())
    })
    .await?;
    let error = text(client, "#query-error").await?;
    ensure!(error.is_empty(), "a good query shows an error: {error:?}");

    // A bad query shows its error, and no rows.
    run_query(client, "order-summary", "SELECT * FROM nope").await?;
    wait_until("the bad query's error in #query-error", async || {
        let error = text(client, "#query-error").await?;
        let rows = client
            .find_all(Locator::Css("#query-results tbody tr"))
            .await?
            .len();
        ensure!(
            error.contains("no such table: nope") && rows == 0,
            "error {error:?}, {rows} result rows"
        );
        Ok(())
    })
    .await?;
    Ok(())
}

/// Pick `projection` in the query box, type `sql` over what is there, and press Run.
async fn run_query(client: &Client, projection: &str, sql: &str) -> Result<()> {
    client
        .find(Locator::Id("query-projection"))
        .await?
        .select_by_value(projection)
        .await?;
    let textarea = client.find(Locator::Id("query-sql")).await?;
    textarea.clear().await?;
    textarea.send_keys(sql).await?;
    let typed = textarea.prop("value").await?;
    ensure!(
        typed.as_deref() == Some(sql),
        "the box holds {typed:?}, not {sql:?}"
    );
    client.find(Locator::Id("query-run")).await?.click().await?;
    Ok(())
}

/// Try `check` until it passes, for up to [`WAIT`]; the timeout names what was last seen.
async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> Result<()>) -> Result<()> {
    let t0 = Instant::now();
    loop {
        match check().await {
            Ok(()) => return Ok(()),
            Err(e) if t0.elapsed() >= WAIT => {
                bail!("timed out after {WAIT:?} waiting for {what}; last seen: {e:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn row(client: &Client, projection: &str) -> Result<fantoccini::elements::Element> {
    client
        .find(Locator::Css(&format!(
            "#projections tr[data-projection=\"{projection}\"]"
        )))
        .await
        .map_err(|e| anyhow!("no row for {projection}: {e}"))
}

/// The text of a cell of a projection's row.
async fn cell(client: &Client, projection: &str, field: &str) -> Result<String> {
    let td = row(client, projection)
        .await?
        .find(Locator::Css(&format!("[data-field=\"{field}\"]")))
        .await
        .map_err(|e| anyhow!("no {field} cell for {projection}: {e}"))?;
    Ok(td.text().await?.trim().to_string())
}

async fn text(client: &Client, css: &str) -> Result<String> {
    let e = client
        .find(Locator::Css(css))
        .await
        .map_err(|e| anyhow!("no {css}: {e}"))?;
    Ok(e.text().await?.trim().to_string())
}

/// The text content of each element matched: as written, not as styled (the header
/// is shown upper-cased).
async fn texts(client: &Client, css: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in client.find_all(Locator::Css(css)).await? {
        out.push(e.prop("textContent").await?.unwrap_or_default());
    }
    Ok(out)
}

/// A number as the page formats it ("1,001").
fn number(s: &str) -> Option<u64> {
    s.replace(',', "").parse().ok()
}

/// A WebDriver session in headless chromium, with the flags this machine needs (its
/// closed network refuses Chromium's background connections).
async fn connect(driver: &str, chromium: &Path, profile: &Path) -> Result<Client> {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1600,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    tokio::time::timeout(
        WAIT,
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(driver),
    )
    .await
    .map_err(|_| anyhow!("chromium did not start within {WAIT:?}"))?
    .context("starting chromium through chromedriver")
}

/// The browser's binaries, or a failure that says how to install them.
fn browser_binary(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "{name} is not installed: this browser test needs Debian's chromium and \
             chromium-driver; install them with `bash scripts/setup-browser.sh`"
        )
    })
}

/// chromedriver on a port of its own choosing (`--port=0`), stopped on drop.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    fn start(bin: &Path) -> ChromeDriver {
        let mut child = Command::new(bin)
            .args(["--port=0", "--log-level=WARNING"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        // It says which port it took; read that, then keep draining its output.
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in out.lines().map_while(|l| l.ok()) {
                if let Some(port) = line
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|p| p.trim_end_matches('.').trim().parse::<u16>().ok())
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(port);
                }
            }
        });
        let mut driver = ChromeDriver {
            child,
            url: String::new(),
        };
        match rx.recv_timeout(WAIT) {
            Ok(port) => driver.url = format!("http://127.0.0.1:{port}"),
            Err(_) => panic!(
                "chromedriver ({}) did not report its port within {WAIT:?}",
                bin.display()
            ),
        }
        driver
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
