// Tests of the JavaScript SDK's core under node, with the host's `get` injected.
//
//   node --test projections/sdk-js/          (or: node projections/sdk-js/test-sdk.mjs)
//
// The SDK imports the WIT interfaces ("projector:projection/read-model@0.1.0", ...),
// which only exist inside the component: a resolve hook maps them to a stand-in whose
// functions call `globalThis.__projectorHost`, and maps the apps' "./projector-sdk.js"
// to this folder's SDK. The shop apps (projections/*-js/app.js) run against an
// independent fold of the shop events.

import { register } from "node:module";
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const sdkUrl = pathToFileURL(path.join(here, "projector-sdk.js")).href;
const witStandIn =
  "data:text/javascript," +
  encodeURIComponent(
    "export function get(t, k) { return globalThis.__projectorHost.get(t, k); }\n" +
      "export function log(l, m) { globalThis.__projectorHost.log(l, m); }\n",
  );
register(
  "data:text/javascript," +
    encodeURIComponent(`
      export async function resolve(specifier, context, next) {
        if (specifier.startsWith("projector:projection/")) return { url: ${JSON.stringify(witStandIn)}, shortCircuit: true };
        if (specifier === "./projector-sdk.js") return { url: ${JSON.stringify(sdkUrl)}, shortCircuit: true };
        return next(specifier, context);
      }`),
);

const sdk = await import(sdkUrl);
const { Projection, Table, Kind, Event, HandleError, ProjectionError, utf8Decode, utf8Encode } = sdk;

function ordersProjection() {
  const p = new Projection("orders-test", 3, { streamPrefixes: ["order-"] });
  p.table(
    new Table("orders")
      .column("order_id", Kind.TEXT)
      .column("status", Kind.TEXT)
      .column("total", Kind.INTEGER)
      .nullable("note", Kind.TEXT)
      .primaryKey("order_id")
      .index("status"),
  );
  p.table(
    new Table("counts").column("name", Kind.TEXT).column("n", Kind.INTEGER).column("sum", Kind.REAL).primaryKey("name"),
  );
  p.on("OrderCreated", (event, ctx) => {
    const e = event.json;
    ctx.upsert("orders", { order_id: e.orderId, status: "created", total: e.total });
  });
  p.on("OrderConfirmed", (event, ctx) => {
    const order = ctx.get("orders", event.json.orderId);
    if (!order) throw new ProjectionError(`no order ${event.json.orderId}`);
    ctx.save(order.set("status", "confirmed"));
  });
  p.on("OrderDeleted", (event, ctx) => ctx.delete("orders", event.json.orderId));
  p.on("Counted", (event, ctx) => ctx.increment("counts", event.json.name, { n: 1, sum: event.json.x ?? 0 }));
  p.on("Boom", (event) => event.json.missing.deeper);
  return p;
}

class FakeHost {
  constructor(rows = {}) {
    this.rows = new Map(Object.entries(rows));
    this.calls = [];
    this.get = (table, key) => {
      this.calls.push([table, key]);
      const row = this.rows.get(`${table}/${JSON.stringify(key)}`);
      return row ? row.slice() : null;
    };
  }
}

const ev = (eventType, data, streamId = "order-1") => new Event({ streamId, eventType, data });
const upsert = (table, row) => ({ type: "upsert", table, row });
const del = (table, key) => ({ type: "delete", table, key });
const inc = (table, key, deltas) => ({ type: "increment", table, key, deltas });

test("manifest has the WIT's shape", () => {
  const m = ordersProjection().manifest();
  assert.equal(m.name, "orders-test");
  assert.equal(m.version, 3);
  assert.deepEqual(m.interests, {
    eventTypes: ["OrderCreated", "OrderConfirmed", "OrderDeleted", "Counted", "Boom"],
    streamPrefixes: ["order-"],
  });
  assert.deepEqual(m.tables[0], {
    name: "orders",
    columns: [
      { name: "order_id", kind: "text", nullable: false },
      { name: "status", kind: "text", nullable: false },
      { name: "total", kind: "integer", nullable: false },
      { name: "note", kind: "text", nullable: true },
    ],
    primaryKey: ["order_id"],
    indexes: [["status"]],
  });
  const all = new Projection("x", 1).handler(() => {});
  assert.deepEqual(all.manifest().interests.eventTypes, []);
});

test("bad declarations are refused", () => {
  const p = new Projection("x", 1);
  p.table(new Table("t").column("a", Kind.TEXT));
  assert.throws(() => p.manifest(), /primary key/);
  const q = new Projection("x", 1);
  q.table(new Table("t").column("a", Kind.TEXT).primaryKey("b"));
  assert.throws(() => q.manifest(), /no column `b`/);
  assert.throws(() => new Projection("x", -1).manifest(), /u32/);
  assert.throws(() => new Table("t").column("a", "string"), /unknown column kind/);
});

test("read-your-writes: create then confirm in one batch", () => {
  const host = new FakeHost();
  const ops = ordersProjection().handleBatch(
    [ev("OrderCreated", { orderId: "O1", total: 500 }), ev("OrderConfirmed", { orderId: "O1" })],
    host.get,
  );
  assert.deepEqual(ops, [upsert("orders", ["O1", "confirmed", 500, null])]);
  assert.deepEqual(host.calls, []);
});

test("get asks the host once, then reads the overlay", () => {
  const host = new FakeHost({ 'orders/["O9"]': ["O9", "created", 70, "n"] });
  const ops = ordersProjection().handleBatch(
    [ev("OrderConfirmed", { orderId: "O9" }), ev("OrderConfirmed", { orderId: "O9" })],
    host.get,
  );
  assert.deepEqual(host.calls, [["orders", ["O9"]]]);
  assert.deepEqual(ops, [upsert("orders", ["O9", "confirmed", 70, "n"])]);
});

test("coalescing: one op per row, in first-touch order, deterministic", () => {
  const p = ordersProjection();
  const batch = [
    ev("OrderCreated", { orderId: "B", total: 1 }),
    ev("Counted", { name: "c", x: 1.5 }),
    ev("OrderCreated", { orderId: "A", total: 2 }),
    ev("OrderConfirmed", { orderId: "B" }),
    ev("Counted", { name: "c", x: 2 }),
    ev("OrderConfirmed", { orderId: "A" }),
    ev("OrderCreated", { orderId: "B", total: 3 }),
  ];
  const ops = p.handleBatch(batch, new FakeHost().get);
  assert.deepEqual(ops, [
    upsert("orders", ["B", "created", 3, null]),
    inc("counts", ["c"], [["n", 2], ["sum", 3.5]]),
    upsert("orders", ["A", "confirmed", 2, null]),
  ]);
  assert.deepEqual(p.handleBatch(batch, new FakeHost().get), ops);
});

test("delete then get", () => {
  const host = new FakeHost({ 'orders/["O1"]': ["O1", "created", 5, null] });
  const p = ordersProjection();
  const seen = [];
  p.on("Peek", (event, ctx) => seen.push(ctx.get("orders", event.json.orderId)));
  const ops = p.handleBatch(
    [ev("Peek", { orderId: "O1" }), ev("OrderDeleted", { orderId: "O1" }), ev("Peek", { orderId: "O1" })],
    host.get,
  );
  assert.equal(seen[0].get("status"), "created");
  assert.equal(seen[1], null);
  assert.deepEqual(host.calls, [["orders", ["O1"]]]);
  assert.deepEqual(ops, [del("orders", ["O1"])]);
});

test("delete then re-create is an upsert", () => {
  const ops = ordersProjection().handleBatch(
    [ev("OrderDeleted", { orderId: "O1" }), ev("OrderCreated", { orderId: "O1", total: 9 })],
    new FakeHost().get,
  );
  assert.deepEqual(ops, [upsert("orders", ["O1", "created", 9, null])]);
});

test("increment of a missing row, never read: an increment op", () => {
  const host = new FakeHost();
  const ops = ordersProjection().handleBatch([ev("Counted", { name: "new" })], host.get);
  assert.deepEqual(ops, [inc("counts", ["new"], [["n", 1], ["sum", 0]])]);
  assert.deepEqual(host.calls, []);
});

test("increment then get resolves against the host's row or defaults", () => {
  const host = new FakeHost();
  const p = ordersProjection();
  const seen = [];
  p.on("PeekCount", (event, ctx) => seen.push(ctx.get("counts", event.json.name)));
  const ops = p.handleBatch(
    [ev("Counted", { name: "k", x: 2 }), ev("PeekCount", { name: "k" }), ev("Counted", { name: "k" })],
    host.get,
  );
  assert.deepEqual(seen[0].values, ["k", 1, 2]);
  assert.deepEqual(ops, [upsert("counts", ["k", 2, 2])]);
  assert.deepEqual(host.calls, [["counts", ["k"]]]);

  const stored = new FakeHost({ 'counts/["s"]': ["s", 10, 0.5] });
  const q = ordersProjection();
  const got = [];
  q.on("PeekCount", (event, ctx) => got.push(ctx.get("counts", "s")));
  assert.deepEqual(q.handleBatch([ev("Counted", { name: "s", x: 1 }), ev("PeekCount", {})], stored.get), [
    upsert("counts", ["s", 11, 1.5]),
  ]);
  assert.deepEqual(got[0].toObject(), { name: "s", n: 11, sum: 1.5 });
});

test("increment after a get of a missing row is an upsert", () => {
  const p = ordersProjection();
  p.on("PeekCount", (event, ctx) => assert.equal(ctx.get("counts", "z"), null));
  const ops = p.handleBatch([ev("PeekCount", {}), ev("Counted", { name: "z", x: 1 })], new FakeHost().get);
  assert.deepEqual(ops, [upsert("counts", ["z", 1, 1])]);
});

test("rows read but not saved emit nothing", () => {
  const host = new FakeHost({ 'orders/["O1"]': ["O1", "created", 5, null] });
  const p = ordersProjection();
  p.on("Peek", (event, ctx) => ctx.get("orders", "O1").set("status", "changed, not saved"));
  assert.deepEqual(p.handleBatch([ev("Peek", {})], host.get), []);
});

test("an exception becomes a HandleError with the event index", () => {
  const batch = [ev("OrderCreated", { orderId: "O1", total: 1 }), ev("Counted", { name: "a" }), ev("Boom", {})];
  assert.throws(
    () => ordersProjection().handleBatch(batch, new FakeHost().get),
    (e) => e instanceof HandleError && e.eventIndex === 2 && /^TypeError: .*deeper/.test(e.message) && /test-sdk\.mjs/.test(e.message),
  );
  assert.throws(
    () => ordersProjection().handleBatch([ev("OrderConfirmed", { orderId: "nope" })], new FakeHost().get),
    (e) => e.message === "no order nope" && e.eventIndex === 0,
  );
  const p = ordersProjection();
  p.on("Str", () => {
    throw "plain string";
  });
  assert.throws(
    () => p.handleBatch([ev("Counted", { name: "a" }), ev("Str", {})], new FakeHost().get),
    (e) => e.message === "thrown: plain string" && e.eventIndex === 1,
  );
  assert.throws(
    () => ordersProjection().handleBatch([new Event({ streamId: "order-1", eventType: "Counted", data: "{nope" })], new FakeHost().get),
    (e) => e.eventIndex === 0 && /invalid JSON data in Counted event/.test(e.message),
  );
});

test("type and shape errors name the column", () => {
  const cases = [
    [(ctx) => ctx.upsert("orders", ["O1", "s", "not an int", null]), "orders.total"],
    [(ctx) => ctx.upsert("orders", ["O1", "s", 1.5, null]), "orders.total"],
    [(ctx) => ctx.upsert("orders", ["O1", "s"]), "has 4 columns"],
    [(ctx) => ctx.upsert("orders", { order_id: "O", nope: 1 }), "no column `nope`"],
    [(ctx) => ctx.upsert("orders", ["O1", null, 1, null]), "NOT NULL"],
    [(ctx) => ctx.get("nope", "k"), "not declared"],
    [(ctx) => ctx.get("orders", ["a", "b"]), "1-column primary key"],
    [(ctx) => ctx.increment("orders", "O1", { status: 1 }), "cannot increment text"],
    [(ctx) => ctx.increment("counts", "c", { name: 1 }), "key column"],
    [(ctx) => ctx.increment("counts", "c", { n: 1.5 }), "counts.n"],
    [(ctx) => ctx.upsert("counts", ["c", 2 ** 64, 0]), "counts.n"],
    [(ctx) => ctx.upsert("counts", ["c", 1, NaN]), "counts.sum"],
  ];
  for (const [action, needle] of cases) {
    const p = ordersProjection();
    p.on("Act", (event, ctx) => action(ctx));
    assert.throws(
      () => p.handleBatch([ev("Act", {})], new FakeHost().get),
      (e) => e instanceof HandleError && e.eventIndex === 0 && e.message.includes(needle),
      needle,
    );
  }
});

test("values normalize by column kind", () => {
  const p = new Projection("v", 1);
  p.table(
    new Table("t")
      .column("k", Kind.INTEGER)
      .column("r", Kind.REAL)
      .column("b", Kind.BLOB)
      .column("j", Kind.JSON)
      .nullable("n", Kind.JSON)
      .primaryKey("k"),
  );
  p.handler((event, ctx) => {
    ctx.upsert("t", [true, 3, [120], { a: [1, 2] }, undefined]);
    ctx.upsert("t", { k: 2 });
    ctx.increment("t", 5n, { r: 1 });
  });
  const ops = p.handleBatch([ev("Any", {})], new FakeHost().get);
  assert.deepEqual(ops, [
    upsert("t", [1, 3, new Uint8Array([120]), '{"a":[1,2]}', null]),
    upsert("t", [2, 0, new Uint8Array(0), "null", null]),
    inc("t", [5], [["r", 1]]),
  ]);
});

test("composite keys", () => {
  const p = new Projection("v", 1);
  p.table(new Table("t").column("a", Kind.TEXT).column("b", Kind.INTEGER).column("n", Kind.INTEGER).primaryKey("a", "b"));
  p.handler((event, ctx) => {
    ctx.increment("t", ["x", 1], { n: 1 });
    ctx.increment("t", ["x", 1], { n: 2 });
    ctx.increment("t", ["x", 2], { n: 1 });
  });
  assert.deepEqual(p.handleBatch([ev("Any", {})], new FakeHost().get), [
    inc("t", ["x", 1], [["n", 3]]),
    inc("t", ["x", 2], [["n", 1]]),
  ]);
});

test("integers above 2^53 lose precision (Numbers)", () => {
  const p = new Projection("v", 1);
  p.table(new Table("t").column("k", Kind.TEXT).column("n", Kind.INTEGER).primaryKey("k"));
  p.handler((event, ctx) => ctx.upsert("t", ["a", 2 ** 53 + 1]));
  const [op] = p.handleBatch([ev("Any", {})], new FakeHost().get);
  assert.equal(op.row[1], 2 ** 53); // 2^53 + 1 is not a Number
});

test("UTF-8 decoder", () => {
  const samples = ["", "plain ascii", "é ü ß", "€ ✓ 中文", "emoji 😀 𝄞", '{"k":"\\u00e9"}', "x".repeat(20000) + "é"];
  for (const s of samples) {
    assert.equal(utf8Decode(new TextEncoder().encode(s)), s);
    assert.deepEqual(Array.from(utf8Encode(s)), Array.from(new TextEncoder().encode(s)));
  }
  const invalid = [
    [0xff],
    [0xc3],
    [0xe2, 0x82],
    [0xed, 0xa0, 0x80], // a surrogate
    [0xc0, 0x80], // overlong
    [0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
    [0x61, 0x80, 0x62],
  ];
  for (const bytes of invalid) {
    assert.equal(utf8Decode(new Uint8Array(bytes)), new TextDecoder().decode(new Uint8Array(bytes)), JSON.stringify(bytes));
  }
  // Random byte strings, mostly non-ASCII: the same text as TextDecoder.
  let seed = 42;
  const next = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
  for (let n = 0; n < 5000; n++) {
    const bytes = Uint8Array.from({ length: next() % 12 }, () => (next() < 64 ? next() & 0x7f : 0x80 | next()));
    assert.equal(utf8Decode(bytes), new TextDecoder().decode(bytes), JSON.stringify(Array.from(bytes)));
  }
  assert.deepEqual(ev("T", { a: "é" }).json, { a: "é" });
  const e = ev("T", { a: 1 });
  assert.equal(e.json, e.json); // decoded once
  assert.equal(e.metadataJson, null);
});

test("exports(): the WIT boundary (value variants, handle-error records, log)", () => {
  const logs = [];
  const calls = [];
  globalThis.__projectorHost = {
    get: (table, key) => {
      calls.push([table, key]);
      return table === "counts" && key[0].val === "s"
        ? [{ tag: "text", val: "s" }, { tag: "integer", val: 4 }, { tag: "real", val: 0.5 }]
        : null;
    },
    log: (level, message) => logs.push([level, message]),
  };
  const p = ordersProjection();
  p.on("PeekCount", (event, ctx) => {
    sdk.log("info", `n=${ctx.get("counts", "s").get("n")}`);
  });
  const { manifest, handle } = p.exports();
  assert.equal(manifest().name, "orders-test");
  const raw = (eventType, data) => ({
    streamId: "order-1",
    eventType,
    eventId: "e1",
    revision: 0,
    position: { commit: 1, prepare: 1 },
    createdMs: 0,
    contentType: "application/json",
    data: new TextEncoder().encode(JSON.stringify(data)),
    metadata: new Uint8Array(0),
  });
  const ops = handle([
    raw("PeekCount", {}),
    raw("Counted", { name: "s", x: 1 }),
    raw("OrderCreated", { orderId: "O1", total: 7 }),
    raw("OrderDeleted", { orderId: "O2" }),
    raw("Counted", { name: "t" }),
  ]);
  assert.deepEqual(calls, [["counts", [{ tag: "text", val: "s" }]]]);
  assert.deepEqual(logs, [["info", "n=4"]]);
  assert.deepEqual(ops, [
    {
      tag: "upsert",
      val: { table: "counts", row: [{ tag: "text", val: "s" }, { tag: "integer", val: 5 }, { tag: "real", val: 1.5 }] },
    },
    {
      tag: "upsert",
      val: {
        table: "orders",
        row: [{ tag: "text", val: "O1" }, { tag: "text", val: "created" }, { tag: "integer", val: 7 }, { tag: "null" }],
      },
    },
    { tag: "delete", val: { table: "orders", key: [{ tag: "text", val: "O2" }] } },
    {
      tag: "increment",
      val: {
        table: "counts",
        key: [{ tag: "text", val: "t" }],
        deltas: [
          { column: "n", by: { tag: "integer", val: 1 } },
          { column: "sum", by: { tag: "real", val: 0 } },
        ],
      },
    },
  ]);
  assert.throws(
    () => handle([raw("Counted", { name: "a" }), raw("Boom", {})]),
    (e) => !(e instanceof Error) && e.eventIndex === 1 && /^TypeError/.test(e.message),
  );
});

// ---------------------------------------------------------------------------------------
// The shop apps against an independent fold (the shop README's definition).

function shopEvents() {
  const order = (n, type, data = {}) => ev(type, { orderId: `O${n}`, ...data }, `order-${n}`);
  const items = (...qp) => qp.map(([quantity, priceCents]) => ({ productId: "P", quantity, priceCents }));
  return [
    order(1, "OrderCreated", { customerId: "U1", items: items([2, 100], [1, 50]) }),
    ev("ItemAdded", { cartId: "C1", quantity: 9, priceCents: 9 }, "cart-1"),
    order(1, "ItemAdded", { productId: "P2", quantity: 3, priceCents: 10 }),
    order(2, "OrderCreated", { customerId: "U1", items: items([1, 1000]) }),
    order(1, "OrderConfirmed"),
    order(3, "OrderCreated", { customerId: "U2", items: [] }),
    ev("CustomerRegistered", { customerId: "U1" }, "customer-1"),
    order(2, "OrderCancelled", { reason: "x" }),
    order(1, "ItemAdded", { productId: "P3", quantity: 1, priceCents: 5 }),
    order(1, "OrderCancelled", { reason: "y" }),
    order(3, "OrderConfirmed"),
    order(3, "OrderShipped", { carrier: "UPS" }),
    order(99, "OrderConfirmed"),
    order(99, "ItemAdded", { quantity: 1, priceCents: 1 }),
    order(2, "OrderCreated", { customerId: "U3", items: items([1, 7]) }),
    order(2, "OrderConfirmed"),
    ev("$statsCollected", { x: 1 }, "$stats-1"),
  ];
}

function readNdjson(file) {
  const counts = new Map();
  return fs
    .readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.trim())
    .map((line, n) => {
      const o = JSON.parse(line);
      const revision = o.revision ?? counts.get(o.stream) ?? 0;
      counts.set(o.stream, revision + 1);
      return new Event({
        streamId: o.stream,
        eventType: o.type,
        eventId: o.id ?? "",
        revision,
        position: { commit: n, prepare: n },
        data: JSON.stringify(o.data),
      });
    });
}

function fold(events) {
  const orders = new Map();
  const customers = new Map();
  const confirmed = new Map();
  const customer = (id) => {
    if (!customers.has(id)) customers.set(id, { customer_id: id, orders: 0, confirmed: 0, cancelled: 0, lifetime_value_cents: 0 });
    return customers.get(id);
  };
  for (const e of events) {
    if (!e.streamId.startsWith("order-")) continue;
    const d = e.json;
    const id = d.orderId ?? "";
    if (e.eventType === "OrderCreated") {
      const count = d.items.reduce((s, i) => s + i.quantity, 0);
      const total = d.items.reduce((s, i) => s + i.quantity * i.priceCents, 0);
      const events = (orders.get(id)?.events ?? 0) + 1;
      orders.set(id, { order_id: id, customer_id: d.customerId, status: "created", item_count: count, total_cents: total, events });
      confirmed.set(id, 0);
      customer(d.customerId).orders += 1;
    } else if (e.eventType === "ItemAdded" && orders.has(id)) {
      const o = orders.get(id);
      o.item_count += d.quantity;
      o.total_cents += d.quantity * d.priceCents;
      o.events += 1;
    } else if (["OrderConfirmed", "OrderCancelled", "OrderShipped"].includes(e.eventType) && orders.has(id)) {
      const o = orders.get(id);
      o.events += 1;
      o.status = { OrderConfirmed: "confirmed", OrderCancelled: "cancelled" }[e.eventType] ?? "shipped";
      const c = customer(o.customer_id);
      if (e.eventType === "OrderConfirmed") {
        c.confirmed += 1;
        c.lifetime_value_cents += o.total_cents;
        confirmed.set(id, (confirmed.get(id) ?? 0) + o.total_cents);
      } else if (e.eventType === "OrderCancelled") {
        c.cancelled += 1;
        c.lifetime_value_cents -= confirmed.get(id) ?? 0;
        confirmed.set(id, 0);
      }
    }
  }
  return { orders, customers };
}

/** The host's side in memory: applies ops, serves get. */
function memoryStore(projection) {
  const manifest = projection.manifest();
  const tables = new Map(manifest.tables.map((t) => [t.name, { t, rows: new Map() }]));
  const k = (key) => JSON.stringify(key);
  const get = (table, key) => tables.get(table).rows.get(k(key))?.slice() ?? null;
  const apply = (ops) => {
    for (const op of ops) {
      const { t, rows } = tables.get(op.table);
      const idx = (name) => t.columns.findIndex((c) => c.name === name);
      if (op.type === "upsert") rows.set(k(t.primaryKey.map((n) => op.row[idx(n)])), op.row);
      else if (op.type === "delete") rows.delete(k(op.key));
      else {
        const row =
          rows.get(k(op.key)) ??
          t.columns.map((c) => (c.nullable ? null : { integer: 0, real: 0, text: "", json: "null", blob: new Uint8Array(0) }[c.kind]));
        t.primaryKey.forEach((n, i) => (row[idx(n)] = op.key[i]));
        for (const [col, by] of op.deltas) row[idx(col)] = (row[idx(col)] ?? 0) + by;
        rows.set(k(op.key), row);
      }
    }
  };
  const interests = manifest.interests;
  const wanted = (e) =>
    (!interests.eventTypes.length || interests.eventTypes.includes(e.eventType)) &&
    (!interests.streamPrefixes.length || interests.streamPrefixes.some((p) => e.streamId.startsWith(p)));
  const run = (events, size) => {
    const mine = events.filter(wanted);
    for (let i = 0; i < mine.length; i += size) apply(projection.handleBatch(mine.slice(i, i + size), get));
  };
  const rows = (table) => {
    const { t, rows } = tables.get(table);
    return new Map([...rows].map(([key, r]) => [JSON.parse(key)[0], Object.fromEntries(t.columns.map((c, i) => [c.name, r[i]]))]));
  };
  return { run, rows };
}

test("the shop apps match the fold in any batch size", async () => {
  const summary = (await import(pathToFileURL(path.join(here, "../order-summary-js/app.js")).href)).default;
  const stats = (await import(pathToFileURL(path.join(here, "../customer-stats-js/app.js")).href)).default;
  assert.deepEqual([summary.name, summary.version, stats.name, stats.version], ["order-summary", 1, "customer-stats", 1]);
  const events = process.env.SHOP_EVENTS ? readNdjson(process.env.SHOP_EVENTS) : shopEvents();
  const { orders, customers } = fold(events);
  assert.ok(orders.size && customers.size);
  for (const size of [1, 3, 7, 1000]) {
    const a = memoryStore(summary);
    a.run(events, size);
    assert.deepEqual(a.rows("orders"), orders, `batch size ${size}`);
    const b = memoryStore(stats);
    b.run(events, size);
    assert.deepEqual(b.rows("customers"), customers, `batch size ${size}`);
  }
});
