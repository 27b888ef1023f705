//! `customer-stats`: per customer, orders placed, confirmed and cancelled, and lifetime value.
//!
//! Lifetime value adds an order's total when it is confirmed and subtracts that same
//! amount if the confirmed order is later cancelled. The amounts live in a second
//! table, `order_totals`, read back through the read-model `get` import.

use projector_sdk::prelude::*;
use shop_model::{ItemAdded, OrderCreated, OrderRef};

struct CustomerStats;

impl Projection for CustomerStats {
    fn manifest() -> Manifest {
        Manifest::new("customer-stats", 1)
            .event_types([
                "OrderCreated",
                "ItemAdded",
                "OrderConfirmed",
                "OrderCancelled",
            ])
            .stream_prefixes(["order-"])
            .table(
                Table::new("customers")
                    .column("customer_id", Kind::Text)
                    .column("orders", Kind::Integer)
                    .column("confirmed", Kind::Integer)
                    .column("cancelled", Kind::Integer)
                    .column("lifetime_value_cents", Kind::Integer)
                    .primary_key(["customer_id"]),
            )
            .table(
                Table::new("order_totals")
                    .column("order_id", Kind::Text)
                    .column("customer_id", Kind::Text)
                    .column("total_cents", Kind::Integer)
                    // What confirmations added to lifetime value and a cancel takes back.
                    .column("confirmed_cents", Kind::Integer)
                    .primary_key(["order_id"]),
            )
    }

    fn handle(ctx: &mut Ctx, event: &Event) -> Result<()> {
        match event.event_type.as_str() {
            "OrderCreated" => {
                let e: OrderCreated = event.json()?;
                let total = e.total_cents();
                ctx.upsert(
                    "order_totals",
                    vec![
                        e.order_id.into(),
                        (&*e.customer_id).into(),
                        total.into(),
                        0.into(),
                    ],
                )?;
                ctx.increment("customers", e.customer_id, &[("orders", 1.into())])
            }
            "ItemAdded" => {
                let e: ItemAdded = event.json()?;
                ctx.update("order_totals", &*e.order_id, |order| {
                    order.add("total_cents", e.quantity * e.price_cents);
                    Ok(())
                })?;
                Ok(())
            }
            "OrderConfirmed" => {
                let e: OrderRef = event.json()?;
                let mut confirmed = None;
                ctx.update("order_totals", &*e.order_id, |order| {
                    let total = order.int("total_cents");
                    confirmed = Some((total, order.text("customer_id").to_string()));
                    order.add("confirmed_cents", total);
                    Ok(())
                })?;
                let Some((total, customer)) = confirmed else {
                    return Ok(());
                };
                ctx.increment(
                    "customers",
                    customer,
                    &[
                        ("confirmed", 1.into()),
                        ("lifetime_value_cents", total.into()),
                    ],
                )
            }
            "OrderCancelled" => {
                let e: OrderRef = event.json()?;
                let mut cancelled = None;
                ctx.update("order_totals", &*e.order_id, |order| {
                    let refund = order.int("confirmed_cents");
                    cancelled = Some((refund, order.text("customer_id").to_string()));
                    order.set("confirmed_cents", 0);
                    Ok(())
                })?;
                let Some((refund, customer)) = cancelled else {
                    return Ok(());
                };
                ctx.increment(
                    "customers",
                    customer,
                    &[
                        ("cancelled", 1.into()),
                        ("lifetime_value_cents", (-refund).into()),
                    ],
                )
            }
            _ => Ok(()),
        }
    }
}

register_projection!(CustomerStats);
