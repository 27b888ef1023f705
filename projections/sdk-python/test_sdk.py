"""Tests of the Python SDK's core under plain CPython: the host's `get` is injected.

    python3 -m unittest discover -s projections/sdk-python -p 'test_*.py'

The shop apps (projections/*-py/app.py) are also run here against an independent fold
of the shop events, in several batch sizes.
"""

import importlib.util
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import projector_sdk as sdk  # noqa: E402
from projector_sdk import (  # noqa: E402
    Ctx,
    Delete,
    Event,
    HandleError,
    Increment,
    Kind,
    MemoryStore,
    Projection,
    ProjectionError,
    Table,
    Upsert,
)


def orders_projection() -> Projection:
    """A small order projection: create, add items, confirm, delete."""
    p = Projection("orders-test", 3, stream_prefixes=["order-"])
    p.table(
        Table("orders")
        .column("order_id", Kind.TEXT)
        .column("status", Kind.TEXT)
        .column("total", Kind.INTEGER)
        .nullable("note", Kind.TEXT)
        .primary_key("order_id")
        .index("status")
    )
    p.table(
        Table("counts")
        .column("name", Kind.TEXT)
        .column("n", Kind.INTEGER)
        .column("sum", Kind.REAL)
        .primary_key("name")
    )

    @p.on("OrderCreated")
    def created(event: Event, ctx: Ctx) -> None:
        e = event.json
        ctx.upsert("orders", {"order_id": e["orderId"], "status": "created", "total": e["total"]})

    @p.on("OrderConfirmed")
    def confirmed(event: Event, ctx: Ctx) -> None:
        order = ctx.get("orders", event.json["orderId"])
        if order is None:
            raise ProjectionError(f"no order {event.json['orderId']}")
        order["status"] = "confirmed"
        ctx.save(order)

    @p.on("OrderDeleted")
    def deleted(event: Event, ctx: Ctx) -> None:
        ctx.delete("orders", event.json["orderId"])

    @p.on("Counted")
    def counted(event: Event, ctx: Ctx) -> None:
        ctx.increment("counts", event.json["name"], n=1, sum=event.json.get("x", 0))

    @p.on("Boom")
    def boom(event: Event, ctx: Ctx) -> None:
        return event.json["missing"]

    return p


class FakeHost:
    """A host `get` over fixed rows, recording its calls."""

    def __init__(self, rows=None):
        self.rows = rows or {}
        self.calls = []

    def get(self, table, key):
        self.calls.append((table, list(key)))
        row = self.rows.get((table, tuple(key)))
        return list(row) if row is not None else None


def ev(event_type, data, stream="order-1"):
    return Event(stream, event_type, data)


class ManifestTest(unittest.TestCase):
    def test_manifest_fields(self):
        m = orders_projection().manifest()
        self.assertEqual((m.name, m.version), ("orders-test", 3))
        self.assertEqual(m.stream_prefixes, ["order-"])
        # event_types=None: the types of the @on handlers, in registration order.
        self.assertEqual(m.event_types, ["OrderCreated", "OrderConfirmed", "OrderDeleted", "Counted", "Boom"])
        t = m.tables[0]
        self.assertEqual(t.name, "orders")
        self.assertEqual(
            [(c.name, c.kind, c.nullable) for c in t.columns],
            [("order_id", Kind.TEXT, False), ("status", Kind.TEXT, False), ("total", Kind.INTEGER, False), ("note", Kind.TEXT, True)],
        )
        self.assertEqual(t.primary_key_columns, ["order_id"])
        self.assertEqual(t.indexes, [["status"]])

    def test_catch_all_means_every_type(self):
        p = Projection("x", 1)
        p.handler(lambda e, c: None)
        self.assertEqual(p.manifest().event_types, [])
        self.assertEqual(Projection("y", 1, event_types=["A"]).manifest().event_types, ["A"])

    def test_bad_declarations(self):
        p = Projection("x", 1)
        p.table(Table("t").column("a", Kind.TEXT))
        with self.assertRaisesRegex(ValueError, "primary key"):
            p.manifest()
        p = Projection("x", 1)
        p.table(Table("t").column("a", Kind.TEXT).primary_key("b"))
        with self.assertRaisesRegex(ValueError, "no column `b`"):
            p.manifest()
        with self.assertRaises(ValueError):
            Projection("x", -1).manifest()

    def test_world_outside_a_component(self):
        cls = orders_projection().world()
        with self.assertRaises(RuntimeError):
            cls()


class OverlayTest(unittest.TestCase):
    def test_read_your_writes_create_then_confirm(self):
        host = FakeHost()
        p = orders_projection()
        ops = p.handle_batch(
            [ev("OrderCreated", {"orderId": "O1", "total": 500}), ev("OrderConfirmed", {"orderId": "O1"})],
            host.get,
        )
        self.assertEqual(ops, [Upsert("orders", ["O1", "confirmed", 500, None])])
        # The confirm read the created row from the overlay: the host was never asked.
        self.assertEqual(host.calls, [])

    def test_get_reads_host_once_then_overlay(self):
        host = FakeHost({("orders", ("O9",)): ["O9", "created", 70, "n"]})
        p = orders_projection()
        ops = p.handle_batch(
            [ev("OrderConfirmed", {"orderId": "O9"}), ev("OrderConfirmed", {"orderId": "O9"})],
            host.get,
        )
        self.assertEqual(host.calls, [("orders", ["O9"])])
        self.assertEqual(ops, [Upsert("orders", ["O9", "confirmed", 70, "n"])])

    def test_coalescing_one_op_per_row_first_touch_order(self):
        p = orders_projection()
        batch = [
            ev("OrderCreated", {"orderId": "B", "total": 1}),
            ev("Counted", {"name": "c", "x": 1.5}),
            ev("OrderCreated", {"orderId": "A", "total": 2}),
            ev("OrderConfirmed", {"orderId": "B"}),
            ev("Counted", {"name": "c", "x": 2}),
            ev("OrderConfirmed", {"orderId": "A"}),
            ev("OrderCreated", {"orderId": "B", "total": 3}),
        ]
        ops = p.handle_batch(batch, FakeHost().get)
        self.assertEqual(
            ops,
            [
                Upsert("orders", ["B", "created", 3, None]),
                Increment("counts", ["c"], [("n", 2), ("sum", 3.5)]),
                Upsert("orders", ["A", "confirmed", 2, None]),
            ],
        )
        # Deterministic: the same batch gives the same ops.
        self.assertEqual(ops, p.handle_batch(batch, FakeHost().get))

    def test_delete_then_get(self):
        host = FakeHost({("orders", ("O1",)): ["O1", "created", 5, None]})
        p = orders_projection()
        seen = []

        @p.on("Peek")
        def peek(event, ctx):
            seen.append(ctx.get("orders", event.json["orderId"]))

        ops = p.handle_batch(
            [ev("Peek", {"orderId": "O1"}), ev("OrderDeleted", {"orderId": "O1"}), ev("Peek", {"orderId": "O1"})],
            host.get,
        )
        self.assertEqual(seen[0]["status"], "created")
        self.assertIsNone(seen[1])
        self.assertEqual(host.calls, [("orders", ["O1"])])
        self.assertEqual(ops, [Delete("orders", ["O1"])])

    def test_delete_then_recreate_is_an_upsert(self):
        p = orders_projection()
        ops = p.handle_batch(
            [ev("OrderDeleted", {"orderId": "O1"}), ev("OrderCreated", {"orderId": "O1", "total": 9})],
            FakeHost().get,
        )
        self.assertEqual(ops, [Upsert("orders", ["O1", "created", 9, None])])

    def test_increment_of_missing_row_blind(self):
        host = FakeHost()
        ops = orders_projection().handle_batch([ev("Counted", {"name": "new"})], host.get)
        # Never read: an increment op; the host creates the row with defaults.
        self.assertEqual(ops, [Increment("counts", ["new"], [("n", 1), ("sum", 0.0)])])
        self.assertEqual(host.calls, [])

    def test_increment_then_get_resolves_against_defaults(self):
        host = FakeHost()
        p = orders_projection()
        seen = []

        @p.on("PeekCount")
        def peek(event, ctx):
            seen.append(ctx.get("counts", event.json["name"]))

        ops = p.handle_batch(
            [ev("Counted", {"name": "k", "x": 2}), ev("PeekCount", {"name": "k"}), ev("Counted", {"name": "k"})],
            host.get,
        )
        self.assertEqual(seen[0].values, ["k", 1, 2.0])
        self.assertEqual(ops, [Upsert("counts", ["k", 2, 2.0])])
        self.assertEqual(host.calls, [("counts", ["k"])])

    def test_increment_after_get_of_missing_row(self):
        p = orders_projection()

        @p.on("PeekCount")
        def peek(event, ctx):
            self.assertIsNone(ctx.get("counts", "z"))

        ops = p.handle_batch([ev("PeekCount", {}), ev("Counted", {"name": "z", "x": 1})], FakeHost().get)
        self.assertEqual(ops, [Upsert("counts", ["z", 1, 1.0])])

    def test_increment_of_stored_row(self):
        host = FakeHost({("counts", ("s",)): ["s", 10, 0.5]})
        p = orders_projection()
        seen = []

        @p.on("PeekCount")
        def peek(event, ctx):
            seen.append(ctx.get("counts", "s"))

        ops = p.handle_batch([ev("Counted", {"name": "s", "x": 1}), ev("PeekCount", {})], host.get)
        self.assertEqual(seen[0].values, ["s", 11, 1.5])
        self.assertEqual(ops, [Upsert("counts", ["s", 11, 1.5])])

    def test_clean_reads_emit_nothing(self):
        host = FakeHost({("orders", ("O1",)): ["O1", "created", 5, None]})
        p = orders_projection()

        @p.on("Peek")
        def peek(event, ctx):
            row = ctx.get("orders", "O1")
            row["status"] = "changed but not saved"

        self.assertEqual(p.handle_batch([ev("Peek", {})], host.get), [])


class ErrorTest(unittest.TestCase):
    def test_exception_names_event_index_and_line(self):
        p = orders_projection()
        batch = [ev("OrderCreated", {"orderId": "O1", "total": 1}), ev("Counted", {"name": "a"}), ev("Boom", {})]
        with self.assertRaises(HandleError) as cm:
            p.handle_batch(batch, FakeHost().get)
        self.assertEqual(cm.exception.event_index, 2)
        self.assertIn("KeyError: 'missing'", cm.exception.message)
        self.assertIn("test_sdk.py", cm.exception.message)
        self.assertIn("in boom", cm.exception.message)

    def test_projection_error_message_is_kept(self):
        with self.assertRaises(HandleError) as cm:
            orders_projection().handle_batch([ev("OrderConfirmed", {"orderId": "nope"})], FakeHost().get)
        self.assertEqual((cm.exception.message, cm.exception.event_index), ("no order nope", 0))

    def test_invalid_json(self):
        with self.assertRaises(HandleError) as cm:
            orders_projection().handle_batch([ev("Counted", {"name": "a"}), Event("order-1", "Counted", b"{nope")], FakeHost().get)
        self.assertEqual(cm.exception.event_index, 1)
        self.assertIn("invalid JSON data in Counted event", cm.exception.message)

    def test_type_and_shape_errors(self):
        cases = [
            (lambda ctx: ctx.upsert("orders", ["O1", "s", "not an int", None]), "orders.total"),
            (lambda ctx: ctx.upsert("orders", ["O1", "s"]), "has 4 columns"),
            (lambda ctx: ctx.upsert("orders", {"order_id": "O", "nope": 1}), "no column `nope`"),
            (lambda ctx: ctx.upsert("orders", ["O1", None, 1, None]), "NOT NULL"),
            (lambda ctx: ctx.get("nope", "k"), "not declared"),
            (lambda ctx: ctx.get("orders", ("a", "b")), "1-column primary key"),
            (lambda ctx: ctx.increment("orders", "O1", status=1), "cannot increment text"),
            (lambda ctx: ctx.increment("counts", "c", name=1), "key column"),
            (lambda ctx: ctx.increment("counts", "c", n=1.5), "counts.n"),
            (lambda ctx: ctx.upsert("counts", ["c", 1 << 63, 0.0]), "64 bits"),
        ]
        for i, (action, needle) in enumerate(cases):
            p = orders_projection()

            @p.on("Act")
            def act(event, ctx, action=action):
                action(ctx)

            with self.assertRaises(HandleError, msg=needle) as cm:
                p.handle_batch([ev("Act", {})], FakeHost().get)
            self.assertIn(needle, cm.exception.message)
            self.assertEqual(cm.exception.event_index, 0)

    def test_integer_overflow_on_increment(self):
        host = FakeHost({("counts", ("c",)): ["c", (1 << 63) - 1, 0.0]})
        p = orders_projection()

        @p.on("Peek")
        def peek(event, ctx):
            ctx.get("counts", "c")
            ctx.increment("counts", "c", n=1)

        with self.assertRaises(HandleError) as cm:
            p.handle_batch([ev("Peek", {})], host.get)
        self.assertIn("overflow", cm.exception.message)


class ValueTest(unittest.TestCase):
    def test_kinds_normalize(self):
        p = Projection("v", 1)
        p.table(
            Table("t")
            .column("k", Kind.INTEGER)
            .column("r", Kind.REAL)
            .column("b", Kind.BLOB)
            .column("j", Kind.JSON)
            .nullable("n", Kind.JSON)
            .primary_key("k")
        )

        @p.handler
        def handle(event, ctx):
            ctx.upsert("t", [True, 3, bytearray(b"x"), {"a": [1, 2]}, None])
            ctx.upsert("t", {"k": 2})

        ops = p.handle_batch([ev("Any", {})], FakeHost().get)
        self.assertEqual(ops, [Upsert("t", [1, 3.0, b"x", '{"a":[1,2]}', None]), Upsert("t", [2, 0.0, b"", "null", None])])
        self.assertIs(type(ops[0].row[1]), float)

    def test_composite_keys(self):
        p = Projection("v", 1)
        p.table(Table("t").column("a", Kind.TEXT).column("b", Kind.INTEGER).column("n", Kind.INTEGER).primary_key("a", "b"))

        @p.handler
        def handle(event, ctx):
            ctx.increment("t", ("x", 1), n=1)
            ctx.increment("t", ["x", 1], {"n": 2})
            ctx.increment("t", ("x", 2), n=1)

        ops = p.handle_batch([ev("Any", {})], FakeHost().get)
        self.assertEqual(ops, [Increment("t", ["x", 1], [("n", 3)]), Increment("t", ["x", 2], [("n", 1)])])

    def test_event_json_decoded_once(self):
        e = Event("s", "T", b'{"a": 1}')
        self.assertIs(e.json, e.json)
        self.assertIsNone(e.metadata_json)

    def test_log_goes_to_sink(self):
        lines = []
        old = sdk._log_sink
        sdk._log_sink = lambda level, msg: lines.append((level, msg))
        try:
            sdk.log("warn", "hello")
            sdk.log(sdk.Level.ERROR, "bye")
        finally:
            sdk._log_sink = old
        self.assertEqual(lines, [("warn", "hello"), ("error", "bye")])


# ---------------------------------------------------------------------------------------
# The shop apps against an independent fold (the shop README's definition).


def load_app(folder):
    path = os.path.join(HERE, "..", folder, "app.py")
    spec = importlib.util.spec_from_file_location(f"app_{folder.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.projection


def shop_events():
    """A hand-written event list touching every rule, with noise and ghosts."""
    def order(n, t, **data):
        return Event(f"order-{n}", t, {"orderId": f"O{n}", **data})

    items = lambda *qp: [{"productId": "P", "quantity": q, "priceCents": p} for q, p in qp]  # noqa: E731
    return [
        order(1, "OrderCreated", customerId="U1", items=items((2, 100), (1, 50))),
        Event("cart-1", "ItemAdded", {"cartId": "C1", "quantity": 9, "priceCents": 9}),
        order(1, "ItemAdded", productId="P2", quantity=3, priceCents=10),
        order(2, "OrderCreated", customerId="U1", items=items((1, 1000))),
        order(1, "OrderConfirmed"),
        order(3, "OrderCreated", customerId="U2", items=[]),
        Event("customer-1", "CustomerRegistered", {"customerId": "U1"}),
        order(2, "OrderCancelled", reason="x"),
        order(1, "ItemAdded", productId="P3", quantity=1, priceCents=5),
        order(1, "OrderCancelled", reason="y"),
        order(3, "OrderConfirmed"),
        order(3, "OrderShipped", carrier="UPS"),
        order(99, "OrderConfirmed"),
        order(99, "ItemAdded", quantity=1, priceCents=1),
        order(2, "OrderCreated", customerId="U3", items=items((1, 7))),
        order(2, "OrderConfirmed"),
        Event("$stats-1", "$statsCollected", {"x": 1}),
    ]


def fold(events):
    orders, customers, confirmed = {}, {}, {}
    for e in events:
        if not e.stream_id.startswith("order-"):
            continue
        d, t = e.json, e.event_type
        oid = d.get("orderId", "")
        if t == "OrderCreated":
            count = sum(i["quantity"] for i in d["items"])
            total = sum(i["quantity"] * i["priceCents"] for i in d["items"])
            events_n = orders[oid]["events"] + 1 if oid in orders else 1
            orders[oid] = dict(order_id=oid, customer_id=d["customerId"], status="created", item_count=count, total_cents=total, events=events_n)
            confirmed[oid] = 0
            c = customers.setdefault(d["customerId"], dict(customer_id=d["customerId"], orders=0, confirmed=0, cancelled=0, lifetime_value_cents=0))
            c["orders"] += 1
        elif t == "ItemAdded" and oid in orders:
            o = orders[oid]
            o["item_count"] += d["quantity"]
            o["total_cents"] += d["quantity"] * d["priceCents"]
            o["events"] += 1
        elif t in ("OrderConfirmed", "OrderCancelled", "OrderShipped") and oid in orders:
            o = orders[oid]
            o["events"] += 1
            o["status"] = {"OrderConfirmed": "confirmed", "OrderCancelled": "cancelled"}.get(t, "shipped")
            c = customers.setdefault(o["customer_id"], dict(customer_id=o["customer_id"], orders=0, confirmed=0, cancelled=0, lifetime_value_cents=0))
            if t == "OrderConfirmed":
                c["confirmed"] += 1
                c["lifetime_value_cents"] += o["total_cents"]
                confirmed[oid] = confirmed.get(oid, 0) + o["total_cents"]
            elif t == "OrderCancelled":
                c["cancelled"] += 1
                c["lifetime_value_cents"] -= confirmed.get(oid, 0)
                confirmed[oid] = 0
    return orders, customers


def interesting(projection, events):
    m = projection.manifest()
    return [
        e for e in events
        if (not m.event_types or e.event_type in m.event_types)
        and (not m.stream_prefixes or any(e.stream_id.startswith(p) for p in m.stream_prefixes))
    ]


class ShopAppsTest(unittest.TestCase):
    def events(self):
        path = os.environ.get("SHOP_EVENTS")  # an NDJSON file, e.g. from shop-events
        return list(sdk.read_ndjson(path)) if path else shop_events()

    def test_apps_match_the_fold_in_any_batch_size(self):
        events = self.events()
        orders, customers = fold(events)
        self.assertTrue(orders and customers)
        summary, stats = load_app("order-summary-py"), load_app("customer-stats-py")
        self.assertEqual((summary.name, summary.version, stats.name, stats.version), ("order-summary", 1, "customer-stats", 1))
        for batch_size in (1, 3, 7, 1000):
            store = MemoryStore(summary)
            store.run(interesting(summary, events), batch_size)
            self.assertEqual({k[0]: v for k, v in store.rows("orders").items()}, orders, batch_size)
            store = MemoryStore(stats)
            store.run(interesting(stats, events), batch_size)
            self.assertEqual({k[0]: v for k, v in store.rows("customers").items()}, customers, batch_size)


if __name__ == "__main__":
    unittest.main()
