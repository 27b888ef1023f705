// `customer-stats`: per customer, orders placed, confirmed and cancelled, and lifetime value.
//
// Lifetime value adds an order's total when it is confirmed and subtracts that same amount
// if the confirmed order is later cancelled. The amounts live in a second table,
// `order_totals`, read back with `ctx.get`. The JavaScript twin of projections/customer-stats.

import { Kind, Projection, Table } from "./projector-sdk.js";

const projection = new Projection("customer-stats", 1, {
  eventTypes: ["OrderCreated", "ItemAdded", "OrderConfirmed", "OrderCancelled"],
  streamPrefixes: ["order-"],
});

projection.table(
  new Table("customers")
    .column("customer_id", Kind.TEXT)
    .column("orders", Kind.INTEGER)
    .column("confirmed", Kind.INTEGER)
    .column("cancelled", Kind.INTEGER)
    .column("lifetime_value_cents", Kind.INTEGER)
    .primaryKey("customer_id"),
);
projection.table(
  new Table("order_totals")
    .column("order_id", Kind.TEXT)
    .column("customer_id", Kind.TEXT)
    .column("total_cents", Kind.INTEGER)
    // What confirmations added to lifetime value and a cancel takes back.
    .column("confirmed_cents", Kind.INTEGER)
    .primaryKey("order_id"),
);

projection.on("OrderCreated", (event, ctx) => {
  const e = event.json;
  let total = 0;
  for (const item of e.items) total += item.quantity * item.priceCents;
  ctx.upsert("order_totals", [e.orderId, e.customerId, total, 0]);
  ctx.increment("customers", e.customerId, { orders: 1 });
});

projection.on("ItemAdded", (event, ctx) => {
  const e = event.json;
  const order = ctx.get("order_totals", e.orderId);
  if (!order) return; // not an order this projection saw created
  order.add("total_cents", e.quantity * e.priceCents);
  ctx.save(order);
});

projection.on("OrderConfirmed", (event, ctx) => {
  const order = ctx.get("order_totals", event.json.orderId);
  if (!order) return;
  const total = order.get("total_cents");
  order.add("confirmed_cents", total);
  ctx.save(order);
  ctx.increment("customers", order.get("customer_id"), { confirmed: 1, lifetime_value_cents: total });
});

projection.on("OrderCancelled", (event, ctx) => {
  const order = ctx.get("order_totals", event.json.orderId);
  if (!order) return;
  const refund = order.get("confirmed_cents");
  order.set("confirmed_cents", 0);
  ctx.save(order);
  ctx.increment("customers", order.get("customer_id"), { cancelled: 1, lifetime_value_cents: -refund });
});

export const { manifest, handle } = projection.exports();
export default projection;
