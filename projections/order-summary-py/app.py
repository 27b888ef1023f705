"""`order-summary`: one row per order with its status, item count, total and event count.

The Python twin of projections/order-summary (same name, version and tables).
"""

from projector_sdk import Ctx, Event, Kind, Projection, Table

projection = Projection(
    "order-summary",
    1,
    event_types=["OrderCreated", "ItemAdded", "OrderConfirmed", "OrderCancelled", "OrderShipped"],
    stream_prefixes=["order-"],
)
projection.table(
    Table("orders")
    .column("order_id", Kind.TEXT)
    .column("customer_id", Kind.TEXT)
    .column("status", Kind.TEXT)
    .column("item_count", Kind.INTEGER)
    .column("total_cents", Kind.INTEGER)
    .column("events", Kind.INTEGER)
    .primary_key("order_id")
    .index("customer_id")
)


@projection.on("OrderCreated")
def order_created(event: Event, ctx: Ctx) -> None:
    e = event.json
    items = e["items"]
    item_count = sum(i["quantity"] for i in items)
    total = sum(i["quantity"] * i["priceCents"] for i in items)
    # A repeated OrderCreated restarts the order but keeps counting its events.
    previous = ctx.get("orders", e["orderId"])
    events = previous["events"] if previous else 0
    ctx.upsert("orders", [e["orderId"], e["customerId"], "created", item_count, total, events + 1])


@projection.on("ItemAdded")
def item_added(event: Event, ctx: Ctx) -> None:
    e = event.json
    order = ctx.get("orders", e["orderId"])
    if order is None:
        return  # events for an order that was never created are ignored
    quantity = e["quantity"]
    order.add("item_count", quantity).add("total_cents", quantity * e["priceCents"]).add("events", 1)
    ctx.save(order)


STATUS = {"OrderConfirmed": "confirmed", "OrderCancelled": "cancelled", "OrderShipped": "shipped"}


@projection.on(*STATUS)
def status_changed(event: Event, ctx: Ctx) -> None:
    order = ctx.get("orders", event.json["orderId"])
    if order is None:
        return
    order["status"] = STATUS[event.event_type]
    order.add("events", 1)
    ctx.save(order)


WitWorld = projection.world()
