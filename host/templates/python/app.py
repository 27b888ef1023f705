"""`{{name}}`: one row per shop order with its customer, status, item count and total."""

from projector_sdk import Ctx, Event, Kind, Projection, Table

# Bump the version when the tables change: the host rebuilds from the first event.
projection = Projection("{{name}}", 1, stream_prefixes=["order-"])
projection.table(
    Table("orders")
    .column("order_id", Kind.TEXT)
    .column("customer_id", Kind.TEXT)
    .column("status", Kind.TEXT)
    .column("item_count", Kind.INTEGER)
    .column("total_cents", Kind.INTEGER)
    .primary_key("order_id")
    .index("status")
)


@projection.on("OrderCreated")
def order_created(event: Event, ctx: Ctx) -> None:
    e = event.json
    items = e["items"]
    ctx.upsert(
        "orders",
        {
            "order_id": e["orderId"],
            "customer_id": e["customerId"],
            "status": "created",
            "item_count": sum(i["quantity"] for i in items),
            "total_cents": sum(i["quantity"] * i["priceCents"] for i in items),
        },
    )


@projection.on("ItemAdded")
def item_added(event: Event, ctx: Ctx) -> None:
    e = event.json
    order = ctx.get("orders", e["orderId"])
    if order is None:
        return  # events of an order that was never created are ignored
    order.add("item_count", e["quantity"]).add("total_cents", e["quantity"] * e["priceCents"])
    ctx.save(order)


STATUS = {"OrderConfirmed": "confirmed", "OrderCancelled": "cancelled", "OrderShipped": "shipped"}


@projection.on(*STATUS)
def status_changed(event: Event, ctx: Ctx) -> None:
    order = ctx.get("orders", event.json["orderId"])
    if order is None:
        return
    order["status"] = STATUS[event.event_type]
    ctx.save(order)


WitWorld = projection.world()
