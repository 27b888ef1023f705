//! `{{name}}`: one row per shop order with its customer, status, item count and total.

use projector_sdk::prelude::*;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    quantity: i64,
    price_cents: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderCreated {
    order_id: String,
    customer_id: String,
    items: Vec<Item>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ItemAdded {
    order_id: String,
    quantity: i64,
    price_cents: i64,
}

/// `OrderConfirmed`, `OrderCancelled`, `OrderShipped`: only the order matters here.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderEvent {
    order_id: String,
}

struct Orders;

impl Projection for Orders {
    fn manifest() -> Manifest {
        // Bump the version when the tables change: the host rebuilds from the first event.
        Manifest::new("{{name}}", 1)
            .event_types([
                "OrderCreated",
                "ItemAdded",
                "OrderConfirmed",
                "OrderCancelled",
                "OrderShipped",
            ])
            .stream_prefixes(["order-"])
            .table(
                Table::new("orders")
                    .column("order_id", Kind::Text)
                    .column("customer_id", Kind::Text)
                    .column("status", Kind::Text)
                    .column("item_count", Kind::Integer)
                    .column("total_cents", Kind::Integer)
                    .primary_key(["order_id"])
                    .index(["status"]),
            )
    }

    fn handle(ctx: &mut Ctx, event: &Event) -> Result<()> {
        let status = match event.event_type.as_str() {
            "OrderCreated" => {
                let e: OrderCreated = event.json()?;
                let item_count: i64 = e.items.iter().map(|i| i.quantity).sum();
                let total: i64 = e.items.iter().map(|i| i.quantity * i.price_cents).sum();
                return ctx.upsert(
                    "orders",
                    vec![
                        e.order_id.into(),
                        e.customer_id.into(),
                        "created".into(),
                        item_count.into(),
                        total.into(),
                    ],
                );
            }
            "ItemAdded" => {
                let e: ItemAdded = event.json()?;
                // Events of an order that was never created are ignored.
                let Some(mut order) = ctx.get("orders", &e.order_id)? else {
                    return Ok(());
                };
                order
                    .add("item_count", e.quantity)
                    .add("total_cents", e.quantity * e.price_cents);
                return ctx.save(order);
            }
            "OrderConfirmed" => "confirmed",
            "OrderCancelled" => "cancelled",
            "OrderShipped" => "shipped",
            _ => return Ok(()),
        };
        let e: OrderEvent = event.json()?;
        let Some(mut order) = ctx.get("orders", &e.order_id)? else {
            return Ok(());
        };
        order.set("status", status);
        ctx.save(order)
    }
}

register_projection!(Orders);
