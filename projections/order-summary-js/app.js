// `order-summary`: one row per order with its status, item count, total and event count.
// The JavaScript twin of projections/order-summary (same name, version and tables).

import { Kind, Projection, Table } from "./projector-sdk.js";

const projection = new Projection("order-summary", 1, {
  eventTypes: ["OrderCreated", "ItemAdded", "OrderConfirmed", "OrderCancelled", "OrderShipped"],
  streamPrefixes: ["order-"],
});

projection.table(
  new Table("orders")
    .column("order_id", Kind.TEXT)
    .column("customer_id", Kind.TEXT)
    .column("status", Kind.TEXT)
    .column("item_count", Kind.INTEGER)
    .column("total_cents", Kind.INTEGER)
    .column("events", Kind.INTEGER)
    .primaryKey("order_id")
    .index("customer_id"),
);

projection.on("OrderCreated", (event, ctx) => {
  const e = event.json;
  let itemCount = 0;
  let total = 0;
  for (const item of e.items) {
    itemCount += item.quantity;
    total += item.quantity * item.priceCents;
  }
  // A repeated OrderCreated restarts the order but keeps counting its events.
  const previous = ctx.get("orders", e.orderId);
  const events = previous ? previous.get("events") : 0;
  ctx.upsert("orders", [e.orderId, e.customerId, "created", itemCount, total, events + 1]);
});

projection.on("ItemAdded", (event, ctx) => {
  const e = event.json;
  const order = ctx.get("orders", e.orderId);
  if (!order) return; // events for an order that was never created are ignored
  order.add("item_count", e.quantity).add("total_cents", e.quantity * e.priceCents).add("events", 1);
  ctx.save(order);
});

const STATUS = { OrderConfirmed: "confirmed", OrderCancelled: "cancelled", OrderShipped: "shipped" };

projection.on(Object.keys(STATUS), (event, ctx) => {
  const order = ctx.get("orders", event.json.orderId);
  if (!order) return;
  order.set("status", STATUS[event.eventType]).add("events", 1);
  ctx.save(order);
});

export const { manifest, handle } = projection.exports();
export default projection;
