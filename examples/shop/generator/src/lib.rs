//! Realistic shop events, seeded, any size; and an independent fold of the two shop
//! read models (`orders`, `customers`) that tests compare the projections against.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use serde_json::{Value, json};

/// splitmix64: tiny, seeded, stable across versions (the files must not change).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const CARRIERS: [&str; 3] = ["DHL", "UPS", "FedEx"];

struct Open {
    id: u64,
    stage: u8,
}

/// Write `count` events generated from `seed` to `out`, one JSON object per line.
pub fn generate(seed: u64, count: u64, out: &mut impl Write) -> std::io::Result<()> {
    let mut rng = Rng(seed);
    let customers = (count / 25).max(5);
    let mut open: Vec<Open> = Vec::new();
    let mut next_order = 1u64;
    let mut next_cart = 1u64;
    let mut created_ms = 1_700_000_000_000u64;
    for n in 0..count {
        created_ms += 1 + rng.below(50);
        let roll = rng.below(100);
        let (stream, event_type, data) = if roll < 6 {
            // Carts: an `ItemAdded` on a stream that is not an order's.
            let cart = if rng.chance(50) || next_cart == 1 {
                next_cart += 1;
                next_cart - 1
            } else {
                1 + rng.below(next_cart)
            };
            let ty = if rng.chance(80) {
                "ItemAdded"
            } else {
                "CartCheckedOut"
            };
            (
                format!("cart-{cart}"),
                ty.to_string(),
                json!({"cartId": format!("C{cart}"), "productId": format!("P{}", rng.below(500)), "quantity": 1 + rng.below(3), "priceCents": 100 + rng.below(9900)}),
            )
        } else if roll < 8 {
            (
                format!("$$order-{}", 1 + rng.below(next_order)),
                "$metadata".to_string(),
                json!({"$maxAge": 86400}),
            )
        } else if roll < 9 {
            (
                "$stats-127.0.0.1:2113".to_string(),
                "$statsCollected".to_string(),
                json!({"proc-cpu": rng.below(100)}),
            )
        } else if roll < 11 {
            let c = 1 + rng.below(customers);
            (
                format!("customer-{c}"),
                "CustomerRegistered".to_string(),
                json!({"customerId": format!("U{c}"), "email": format!("user{c}@example.com")}),
            )
        } else if roll < 12 {
            // An order event for an order that was never created: ignored by both.
            let ghost = 1_000_000_000 + n;
            let ty = [
                "OrderConfirmed",
                "OrderCancelled",
                "OrderShipped",
                "ItemAdded",
            ][rng.below(4) as usize];
            (
                format!("order-{ghost}"),
                ty.to_string(),
                json!({"orderId": format!("O{ghost}"), "reason": "unknown", "carrier": "none", "productId": "P1", "quantity": 1, "priceCents": 100}),
            )
        } else if open.len() < 50 || (open.len() < 2000 && rng.chance(30)) {
            let id = next_order;
            next_order += 1;
            open.push(Open { id, stage: 0 });
            let items: Vec<Value> = (0..1 + rng.below(4))
                .map(|_| json!({"productId": format!("P{}", rng.below(500)), "quantity": 1 + rng.below(5), "priceCents": 100 + rng.below(19_900)}))
                .collect();
            let customer = 1 + rng.below(customers);
            (
                format!("order-{id}"),
                "OrderCreated".to_string(),
                json!({"orderId": format!("O{id}"), "customerId": format!("U{customer}"), "items": items}),
            )
        } else {
            let i = rng.below(open.len() as u64) as usize;
            let (id, stage) = (open[i].id, open[i].stage);
            let oid = format!("O{id}");
            let (ty, data, done, next_stage) = match stage {
                0 if rng.chance(35) => (
                    "ItemAdded",
                    json!({"orderId": oid, "productId": format!("P{}", rng.below(500)), "quantity": 1 + rng.below(3), "priceCents": 100 + rng.below(9_900)}),
                    false,
                    0,
                ),
                0 if rng.chance(12) => (
                    "OrderCancelled",
                    json!({"orderId": oid, "reason": "customer changed their mind"}),
                    true,
                    0,
                ),
                0 => ("OrderConfirmed", json!({"orderId": oid}), false, 1),
                1 if rng.chance(20) => (
                    "ItemAdded",
                    json!({"orderId": oid, "productId": format!("P{}", rng.below(500)), "quantity": 1, "priceCents": 100 + rng.below(4_900)}),
                    false,
                    1,
                ),
                1 if rng.chance(15) => (
                    "OrderCancelled",
                    json!({"orderId": oid, "reason": "payment failed"}),
                    true,
                    1,
                ),
                _ => (
                    "OrderShipped",
                    json!({"orderId": oid, "carrier": CARRIERS[rng.below(3) as usize]}),
                    true,
                    2,
                ),
            };
            if done {
                open.swap_remove(i);
            } else {
                open[i].stage = next_stage;
            }
            (format!("order-{id}"), ty.to_string(), data)
        };
        let line = json!({
            "stream": stream,
            "type": event_type,
            "id": format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", seed as u32, (n >> 48) as u16, (n >> 36) & 0xfff, (n >> 24) & 0xfff, n & 0xffff_ffff_ffff),
            "created": created_ms,
            "data": data,
            "metadata": {"correlationId": format!("corr-{}", n / 7)},
        });
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// One row of `orders`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderRow {
    pub order_id: String,
    pub customer_id: String,
    pub status: String,
    pub item_count: i64,
    pub total_cents: i64,
    pub events: i64,
}

/// One row of `customers`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct CustomerRow {
    pub customer_id: String,
    pub orders: i64,
    pub confirmed: i64,
    pub cancelled: i64,
    pub lifetime_value_cents: i64,
}

/// Both read models, computed directly from the events.
#[derive(Debug, Default, PartialEq)]
pub struct Fold {
    pub orders: BTreeMap<String, OrderRow>,
    pub customers: BTreeMap<String, CustomerRow>,
    /// What confirmations of each order added to its customer's lifetime value.
    confirmed_cents: BTreeMap<String, i64>,
}

impl Fold {
    /// Apply one event (stream, type, data) to both read models.
    pub fn apply(&mut self, stream: &str, event_type: &str, data: &Value) {
        if !stream.starts_with("order-") {
            return;
        }
        let id = data["orderId"].as_str().unwrap_or_default().to_string();
        let sum = |items: &Value, f: &dyn Fn(&Value) -> i64| {
            items.as_array().map_or(0, |a| a.iter().map(f).sum::<i64>())
        };
        match event_type {
            "OrderCreated" => {
                let items = &data["items"];
                let count = sum(items, &|i| i["quantity"].as_i64().unwrap_or(0));
                let total = sum(items, &|i| {
                    i["quantity"].as_i64().unwrap_or(0) * i["priceCents"].as_i64().unwrap_or(0)
                });
                let customer = data["customerId"].as_str().unwrap_or_default().to_string();
                let events = self.orders.get(&id).map_or(0, |o| o.events) + 1;
                self.orders.insert(
                    id.clone(),
                    OrderRow {
                        order_id: id.clone(),
                        customer_id: customer.clone(),
                        status: "created".into(),
                        item_count: count,
                        total_cents: total,
                        events,
                    },
                );
                self.confirmed_cents.insert(id, 0);
                let c = self
                    .customers
                    .entry(customer.clone())
                    .or_insert_with(|| CustomerRow {
                        customer_id: customer,
                        ..Default::default()
                    });
                c.orders += 1;
            }
            "ItemAdded" => {
                if let Some(o) = self.orders.get_mut(&id) {
                    let q = data["quantity"].as_i64().unwrap_or(0);
                    o.item_count += q;
                    o.total_cents += q * data["priceCents"].as_i64().unwrap_or(0);
                    o.events += 1;
                }
            }
            "OrderConfirmed" | "OrderCancelled" | "OrderShipped" => {
                let Some(o) = self.orders.get_mut(&id) else {
                    return;
                };
                o.events += 1;
                o.status = match event_type {
                    "OrderConfirmed" => "confirmed",
                    "OrderCancelled" => "cancelled",
                    _ => "shipped",
                }
                .into();
                let (customer, total) = (o.customer_id.clone(), o.total_cents);
                let c = self
                    .customers
                    .entry(customer.clone())
                    .or_insert_with(|| CustomerRow {
                        customer_id: customer,
                        ..Default::default()
                    });
                let added = self.confirmed_cents.entry(id).or_insert(0);
                if event_type == "OrderConfirmed" {
                    c.confirmed += 1;
                    c.lifetime_value_cents += total;
                    *added += total;
                } else if event_type == "OrderCancelled" {
                    c.cancelled += 1;
                    c.lifetime_value_cents -= *added;
                    *added = 0;
                }
            }
            _ => {}
        }
    }

    /// Fold an NDJSON event file (or its first `limit` lines).
    pub fn of_file(path: &std::path::Path, limit: Option<usize>) -> std::io::Result<Fold> {
        let mut fold = Fold::default();
        let reader = std::io::BufReader::new(std::fs::File::open(path)?);
        for line in reader.lines().take(limit.unwrap_or(usize::MAX)) {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&line).map_err(std::io::Error::other)?;
            fold.apply(
                v["stream"].as_str().unwrap_or_default(),
                v["type"].as_str().unwrap_or_default(),
                &v["data"],
            );
        }
        Ok(fold)
    }
}
