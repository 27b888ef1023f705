//! `order-summary`: one row per order with its status, item count, total and event count.

use projector_sdk::prelude::*;
use shop_model::{ItemAdded, OrderCreated, OrderRef};

struct OrderSummary;

impl Projection for OrderSummary {
    fn manifest() -> Manifest {
        Manifest::new("order-summary", 1)
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
                    .column("events", Kind::Integer)
                    .primary_key(["order_id"])
                    .index(["customer_id"]),
            )
    }

    fn handle(ctx: &mut Ctx, event: &Event) -> Result<()> {
        let status = match event.event_type.as_str() {
            "OrderCreated" => {
                let e: OrderCreated = event.json()?;
                let item_count = e.item_count();
                let total = e.total_cents();
                // A repeated OrderCreated restarts the order but keeps counting its events.
                let events = ctx
                    .get("orders", &*e.order_id)?
                    .map_or(0, |r| r.int("events"));
                return ctx.upsert(
                    "orders",
                    vec![
                        e.order_id.into(),
                        e.customer_id.into(),
                        "created".into(),
                        item_count.into(),
                        total.into(),
                        (events + 1).into(),
                    ],
                );
            }
            "ItemAdded" => {
                let e: ItemAdded = event.json()?;
                // Events for an order that was never created are ignored (no row).
                ctx.update("orders", &*e.order_id, |order| {
                    order
                        .add("item_count", e.quantity)
                        .add("total_cents", e.quantity * e.price_cents)
                        .add("events", 1);
                    Ok(())
                })?;
                return Ok(());
            }
            "OrderConfirmed" => "confirmed",
            "OrderCancelled" => "cancelled",
            "OrderShipped" => "shipped",
            _ => return Ok(()),
        };
        let e: OrderRef = event.json()?;
        // Events for an order that was never created are ignored (no row).
        ctx.update("orders", &*e.order_id, |order| {
            order.set("status", status).add("events", 1);
            Ok(())
        })?;
        Ok(())
    }
}

register_projection!(OrderSummary);
