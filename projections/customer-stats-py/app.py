"""`customer-stats`: per customer, orders placed, confirmed and cancelled, and lifetime value.

Lifetime value adds an order's total when it is confirmed and subtracts that same amount
if the confirmed order is later cancelled. The amounts live in a second table,
`order_totals`, read back with `ctx.get`. The Python twin of projections/customer-stats.
"""

from projector_sdk import Ctx, Event, Kind, Projection, Table

projection = Projection(
    "customer-stats",
    1,
    event_types=["OrderCreated", "ItemAdded", "OrderConfirmed", "OrderCancelled"],
    stream_prefixes=["order-"],
)
projection.table(
    Table("customers")
    .column("customer_id", Kind.TEXT)
    .column("orders", Kind.INTEGER)
    .column("confirmed", Kind.INTEGER)
    .column("cancelled", Kind.INTEGER)
    .column("lifetime_value_cents", Kind.INTEGER)
    .primary_key("customer_id")
)
projection.table(
    Table("order_totals")
    .column("order_id", Kind.TEXT)
    .column("customer_id", Kind.TEXT)
    .column("total_cents", Kind.INTEGER)
    # What confirmations added to lifetime value and a cancel takes back.
    .column("confirmed_cents", Kind.INTEGER)
    .primary_key("order_id")
)


@projection.on("OrderCreated")
def order_created(event: Event, ctx: Ctx) -> None:
    e = event.json
    total = sum(i["quantity"] * i["priceCents"] for i in e["items"])
    ctx.upsert("order_totals", [e["orderId"], e["customerId"], total, 0])
    ctx.increment("customers", e["customerId"], orders=1)


@projection.on("ItemAdded")
def item_added(event: Event, ctx: Ctx) -> None:
    e = event.json
    order = ctx.get("order_totals", e["orderId"])
    if order is None:
        return  # not an order this projection saw created
    order.add("total_cents", e["quantity"] * e["priceCents"])
    ctx.save(order)


@projection.on("OrderConfirmed")
def order_confirmed(event: Event, ctx: Ctx) -> None:
    order = ctx.get("order_totals", event.json["orderId"])
    if order is None:
        return
    total = order["total_cents"]
    order.add("confirmed_cents", total)
    ctx.save(order)
    ctx.increment("customers", order["customer_id"], confirmed=1, lifetime_value_cents=total)


@projection.on("OrderCancelled")
def order_cancelled(event: Event, ctx: Ctx) -> None:
    order = ctx.get("order_totals", event.json["orderId"])
    if order is None:
        return
    refund = order["confirmed_cents"]
    order["confirmed_cents"] = 0
    ctx.save(order)
    ctx.increment("customers", order["customer_id"], cancelled=1, lifetime_value_cents=-refund)


WitWorld = projection.world()
