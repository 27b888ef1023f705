// `{{name}}`: one row per shop order with its customer, status, item count and total.

import { Kind, Projection, Table } from "./projector-sdk.js";

// Bump the version when the tables change: the host rebuilds from the first event.
const projection = new Projection("{{name}}", 1, { streamPrefixes: ["order-"] });

projection.table(
  new Table("orders")
    .column("order_id", Kind.TEXT)
    .column("customer_id", Kind.TEXT)
    .column("status", Kind.TEXT)
    .column("item_count", Kind.INTEGER)
    .column("total_cents", Kind.INTEGER)
    .primaryKey("order_id")
    .index("status"),
);

projection.on("OrderCreated", (event, ctx) => {
  const e = event.json;
  let itemCount = 0;
  let total = 0;
  for (const item of e.items) {
    itemCount += item.quantity;
    total += item.quantity * item.priceCents;
  }
  ctx.upsert("orders", {
    order_id: e.orderId,
    customer_id: e.customerId,
    status: "created",
    item_count: itemCount,
    total_cents: total,
  });
});

projection.on("ItemAdded", (event, ctx) => {
  const e = event.json;
  const order = ctx.get("orders", e.orderId);
  if (!order) return; // events of an order that was never created are ignored
  order.add("item_count", e.quantity).add("total_cents", e.quantity * e.priceCents);
  ctx.save(order);
});

const STATUS = { OrderConfirmed: "confirmed", OrderCancelled: "cancelled", OrderShipped: "shipped" };

projection.on(Object.keys(STATUS), (event, ctx) => {
  const order = ctx.get("orders", event.json.orderId);
  if (!order) return;
  order.set("status", STATUS[event.eventType]);
  ctx.save(order);
});

export const { manifest, handle } = projection.exports();
export default projection;
