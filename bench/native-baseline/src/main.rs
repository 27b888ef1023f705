//! The native baseline: the two shop read models (`order-summary`'s `orders`,
//! `customer-stats`' `customers` and `order_totals`) written by hand in Rust with rusqlite,
//! no Wasm, no sandbox — what Projector is compared with in `scripts/bench.sh`.
//!
//! One thread reads the NDJSON file, parses each line once (borrowed, like the host),
//! keeps the order events, and applies both read models' writes through prepared
//! statements to one SQLite file (WAL, `synchronous=NORMAL`, the host's page cache and
//! mmap settings), one transaction per `--batch` events (default 10,000) with a
//! checkpoint row. With `--esdb URL` the events come from EventStoreDB instead (a
//! subscription to `$all` with the real client, read up to where it catches up; the file
//! is then only what `--check` folds): the same writes, over the path Projector's
//! EventStoreDB source takes. `--check` then compares the tables with the independent
//! fold of the file (`shop_events::Fold`), outside the timed part.
//!
//! Usage: `native-baseline EVENTS.ndjson DB.sqlite [--batch N] [--esdb URL] [--check]`

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use rusqlite::{Connection, OptionalExtension as _, Statement, params};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The fields of a line the read models use.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct Item {
    quantity: i64,
    #[serde(rename = "priceCents")]
    price_cents: i64,
}

#[derive(Deserialize)]
struct OrderCreated<'a> {
    #[serde(rename = "orderId", borrow)]
    order_id: Cow<'a, str>,
    #[serde(rename = "customerId", borrow)]
    customer_id: Cow<'a, str>,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct ItemAdded<'a> {
    #[serde(rename = "orderId", borrow)]
    order_id: Cow<'a, str>,
    quantity: i64,
    #[serde(rename = "priceCents")]
    price_cents: i64,
}

#[derive(Deserialize)]
struct OrderRef<'a> {
    #[serde(rename = "orderId", borrow)]
    order_id: Cow<'a, str>,
}

const SCHEMA: &str = "
PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536;
PRAGMA temp_store=MEMORY; PRAGMA wal_autocheckpoint=10000; PRAGMA mmap_size=268435456;
CREATE TABLE orders (order_id TEXT NOT NULL PRIMARY KEY, customer_id TEXT, status TEXT,
  item_count INTEGER, total_cents INTEGER, events INTEGER) STRICT;
CREATE INDEX orders_customer_id ON orders (customer_id);
CREATE TABLE customers (customer_id TEXT NOT NULL PRIMARY KEY, orders INTEGER NOT NULL DEFAULT 0,
  confirmed INTEGER NOT NULL DEFAULT 0, cancelled INTEGER NOT NULL DEFAULT 0,
  lifetime_value_cents INTEGER NOT NULL DEFAULT 0) STRICT;
CREATE TABLE order_totals (order_id TEXT NOT NULL PRIMARY KEY, customer_id TEXT,
  total_cents INTEGER, confirmed_cents INTEGER) STRICT;
CREATE TABLE checkpoint (id INTEGER PRIMARY KEY, events INTEGER NOT NULL) STRICT;
";

/// Every statement the read models use, prepared once.
struct Statements<'c> {
    order_created: Statement<'c>,
    order_item: Statement<'c>,
    order_status: Statement<'c>,
    totals_created: Statement<'c>,
    totals_item: Statement<'c>,
    totals_get: Statement<'c>,
    totals_confirm: Statement<'c>,
    totals_cancel: Statement<'c>,
    customer_add: Statement<'c>,
    checkpoint: Statement<'c>,
}

impl<'c> Statements<'c> {
    fn new(db: &'c Connection) -> Result<Self> {
        Ok(Statements {
            // A repeated OrderCreated restarts the order but keeps counting its events.
            order_created: db.prepare(
                "INSERT INTO orders VALUES (?1, ?2, 'created', ?3, ?4, 1)
                 ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id,
                 status = 'created', item_count = excluded.item_count,
                 total_cents = excluded.total_cents, events = orders.events + 1",
            )?,
            order_item: db.prepare(
                "UPDATE orders SET item_count = item_count + ?2, total_cents = total_cents + ?3,
                 events = events + 1 WHERE order_id = ?1",
            )?,
            order_status: db.prepare(
                "UPDATE orders SET status = ?2, events = events + 1 WHERE order_id = ?1",
            )?,
            totals_created: db.prepare(
                "INSERT INTO order_totals VALUES (?1, ?2, ?3, 0)
                 ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id,
                 total_cents = excluded.total_cents, confirmed_cents = 0",
            )?,
            totals_item: db.prepare(
                "UPDATE order_totals SET total_cents = total_cents + ?2 WHERE order_id = ?1",
            )?,
            totals_get: db.prepare(
                "SELECT customer_id, total_cents, confirmed_cents FROM order_totals
                 WHERE order_id = ?1",
            )?,
            totals_confirm: db.prepare(
                "UPDATE order_totals SET confirmed_cents = confirmed_cents + ?2
                 WHERE order_id = ?1",
            )?,
            totals_cancel: db
                .prepare("UPDATE order_totals SET confirmed_cents = 0 WHERE order_id = ?1")?,
            customer_add: db.prepare(
                "INSERT INTO customers VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (customer_id) DO UPDATE SET orders = orders + ?2,
                 confirmed = confirmed + ?3, cancelled = cancelled + ?4,
                 lifetime_value_cents = lifetime_value_cents + ?5",
            )?,
            checkpoint: db.prepare("INSERT OR REPLACE INTO checkpoint VALUES (1, ?1)")?,
        })
    }

    /// Apply one order event to both read models.
    fn apply(&mut self, event_type: &str, data: &[u8]) -> Result<()> {
        match event_type {
            "OrderCreated" => {
                let e: OrderCreated = serde_json::from_slice(data)?;
                let count: i64 = e.items.iter().map(|i| i.quantity).sum();
                let total: i64 = e.items.iter().map(|i| i.quantity * i.price_cents).sum();
                self.order_created
                    .execute(params![e.order_id, e.customer_id, count, total])?;
                self.totals_created
                    .execute(params![e.order_id, e.customer_id, total])?;
                self.customer_add
                    .execute(params![e.customer_id, 1, 0, 0, 0])?;
            }
            "ItemAdded" => {
                let e: ItemAdded = serde_json::from_slice(data)?;
                let added = e.quantity * e.price_cents;
                self.order_item
                    .execute(params![e.order_id, e.quantity, added])?;
                self.totals_item.execute(params![e.order_id, added])?;
            }
            "OrderConfirmed" | "OrderCancelled" | "OrderShipped" => {
                let e: OrderRef = serde_json::from_slice(data)?;
                let status = match event_type {
                    "OrderConfirmed" => "confirmed",
                    "OrderCancelled" => "cancelled",
                    _ => "shipped",
                };
                self.order_status.execute(params![e.order_id, status])?;
                if event_type == "OrderShipped" {
                    return Ok(());
                }
                let order: Option<(String, i64, i64)> = self
                    .totals_get
                    .query_row(params![e.order_id], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()?;
                let Some((customer, total, confirmed)) = order else {
                    return Ok(());
                };
                if event_type == "OrderConfirmed" {
                    self.totals_confirm.execute(params![e.order_id, total])?;
                    self.customer_add
                        .execute(params![customer, 0, 1, 0, total])?;
                } else {
                    self.totals_cancel.execute(params![e.order_id])?;
                    self.customer_add
                        .execute(params![customer, 0, 0, 1, -confirmed])?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

const USAGE: &str =
    "usage: native-baseline EVENTS.ndjson DB.sqlite [--batch N] [--esdb URL] [--check]";

/// Takes each event as (stream, type, data), in order.
type Each<'f> = dyn FnMut(&str, &str, &[u8]) -> Result<()> + 'f;

/// Every event of the file, in order, as (stream, type, data); errors name the line.
fn read_file(file: &str, each: &mut Each) -> Result<()> {
    let reader = std::io::BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(file).with_context(|| format!("opening {file}"))?,
    );
    for (n, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let l: Line = serde_json::from_slice(&line)
            .with_context(|| format!("{file}:{}: malformed event", n + 1))?;
        each(&l.stream, &l.event_type, l.data.get().as_bytes())
            .with_context(|| format!("{file}:{}", n + 1))?;
    }
    Ok(())
}

/// Every event of `$all` on the server at `url`, in order, up to where the subscription
/// catches up: the real client, driven from this thread, as a hand-written consumer
/// would.
fn read_esdb(url: &str, each: &mut Each) -> Result<()> {
    use kurrentdb::{Client, SubscribeToAllOptions, SubscriptionEvent};
    let rt = tokio::runtime::Runtime::new()?;
    // The client spawns its connection task on the runtime it is made in.
    let _in_rt = rt.enter();
    let settings = url
        .parse()
        .map_err(|e| anyhow::anyhow!("--esdb {url}: {e}"))?;
    let client = Client::new(settings).map_err(|e| anyhow::anyhow!("connecting to {url}: {e}"))?;
    let mut sub = rt.block_on(client.subscribe_to_all(&SubscribeToAllOptions::default()));
    loop {
        match rt
            .block_on(sub.next_subscription_event())
            .with_context(|| format!("reading $all from {url}"))?
        {
            SubscriptionEvent::EventAppeared(e) => {
                let e = e.get_original_event();
                each(e.stream_id(), &e.event_type, &e.data).with_context(|| {
                    format!("{url}: event at commit position {}", e.position.commit)
                })?;
            }
            SubscriptionEvent::CaughtUp(_) => return Ok(()),
            _ => {}
        }
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut file, mut db_path, mut batch, mut check, mut esdb) =
        (None, None, 10_000u64, false, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--batch" => {
                batch = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .context("--batch takes a number above 0")?
            }
            "--esdb" => esdb = Some(args.next().context("--esdb takes a URL")?),
            "--check" => check = true,
            _ if file.is_none() => file = Some(a),
            _ if db_path.is_none() => db_path = Some(a),
            _ => bail!(USAGE),
        }
    }
    let (Some(file), Some(db_path)) = (file, db_path) else {
        bail!(USAGE);
    };
    let _ = std::fs::remove_file(&db_path);
    let db = Connection::open(&db_path).with_context(|| format!("opening {db_path}"))?;
    db.execute_batch(SCHEMA)?;

    let t0 = Instant::now();
    let (mut events, mut applied) = (0u64, 0u64);
    {
        let mut st = Statements::new(&db)?;
        db.execute_batch("BEGIN")?;
        let mut each = |stream: &str, event_type: &str, data: &[u8]| -> Result<()> {
            events += 1;
            // Both read models' interests: order streams, these types.
            if stream.starts_with("order-") {
                st.apply(event_type, data)?;
                applied += 1;
            }
            if events % batch == 0 {
                st.checkpoint.execute(params![events])?;
                db.execute_batch("COMMIT; BEGIN")?;
            }
            Ok(())
        };
        match &esdb {
            None => read_file(&file, &mut each)?,
            Some(url) => read_esdb(url, &mut each)?,
        }
        st.checkpoint.execute(params![events])?;
        db.execute_batch("COMMIT")?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let from = esdb
        .as_deref()
        .map_or(String::new(), |url| format!(" from {url}"));
    println!(
        "native baseline{from}: {events} events ({applied} order events applied to both read models) in {secs:.2} s: {:.0} events/s",
        events as f64 / secs
    );
    if check {
        let want = shop_events::Fold::of_file(std::path::Path::new(&file), None)?;
        let mut orders = BTreeMap::new();
        let mut q = db.prepare("SELECT * FROM orders")?;
        for r in q.query_map([], |r| {
            Ok(shop_events::OrderRow {
                order_id: r.get(0)?,
                customer_id: r.get(1)?,
                status: r.get(2)?,
                item_count: r.get(3)?,
                total_cents: r.get(4)?,
                events: r.get(5)?,
            })
        })? {
            let r = r?;
            orders.insert(r.order_id.clone(), r);
        }
        let mut customers = BTreeMap::new();
        let mut q = db.prepare("SELECT * FROM customers")?;
        for r in q.query_map([], |r| {
            Ok(shop_events::CustomerRow {
                customer_id: r.get(0)?,
                orders: r.get(1)?,
                confirmed: r.get(2)?,
                cancelled: r.get(3)?,
                lifetime_value_cents: r.get(4)?,
            })
        })? {
            let r = r?;
            customers.insert(r.customer_id.clone(), r);
        }
        if orders != want.orders || customers != want.customers {
            bail!("the tables differ from the fold of {file}");
        }
        println!(
            "check: {} orders and {} customers equal the fold",
            orders.len(),
            customers.len()
        );
    }
    Ok(())
}
