// Write Projector projections in JavaScript (QuickJS, built with jco --backend qjs).
//
// One file: `projector build` writes it next to your app.js,
// which imports it as "./projector-sdk.js":
//
//   import { Projection, Table, Kind } from "./projector-sdk.js";
//
//   const projection = new Projection("order-summary", 1, { streamPrefixes: ["order-"] });
//   projection.table(new Table("orders").column("order_id", Kind.TEXT)
//     .column("events", Kind.INTEGER).primaryKey("order_id"));
//   projection.on("OrderCreated", (event, ctx) => {
//     ctx.increment("orders", event.json.orderId, { events: 1 });
//   });
//   export const { manifest, handle } = projection.exports();
//
// Inside one batch, `ctx` keeps an overlay of everything the projection wrote: `ctx.get`
// reads through it (event 7 of a batch sees what events 1-6 wrote) before asking the
// host, and each touched row leaves the module as one coalesced op, in first-touch order.
//
// Values: null (NULL), number (integer or real, by the column's kind), string (text, and
// raw JSON text for json columns), Uint8Array (blob). Objects, arrays and booleans given
// for a json column are JSON.stringify'd; booleans in integer columns become 0/1.
// 64-bit integers (s64 values, u64 event fields) travel as Numbers: exact up to 2^53,
// rounded above (the WIT bindings of QuickJS have no BigInt).
//
// Nothing here needs the host until `exports()` handles a batch: `handleBatch(events, get)`
// takes the host's `get` as a function, so the core runs under node with an injected get.

import { get as hostGet } from "projector:projection/read-model@0.1.0";
import { log as hostLog } from "projector:projection/log@0.1.0";

/** Column kinds. */
export const Kind = Object.freeze({
  INTEGER: "integer",
  REAL: "real",
  TEXT: "text",
  BLOB: "blob",
  JSON: "json",
});

const KINDS = new Set(Object.values(Kind));
const I64_LIMIT = 9223372036854775808; // 2^63 as a double

/** Throw it to fail the batch with exactly this message. */
export class ProjectionError extends Error {
  constructor(message) {
    super(message);
    this.name = "ProjectionError";
  }
}

/** A failed batch: what `handle` returns to the host as `handle-error`. */
export class HandleError extends Error {
  constructor(message, eventIndex) {
    super(message);
    this.name = "HandleError";
    this.eventIndex = eventIndex;
  }
}

// ---------------------------------------------------------------------------------------
// UTF-8 (QuickJS has no TextDecoder)

/** Decode UTF-8 bytes to a string, as TextDecoder does (the WHATWG decoder: each
 * maximal invalid subsequence becomes one U+FFFD). */
export function utf8Decode(bytes) {
  const n = bytes.length;
  let out = "";
  let chunk = [];
  let needed = 0;
  let seen = 0;
  let cp = 0;
  let lower = 0x80;
  let upper = 0xbf;
  for (let i = 0; i < n; i++) {
    const b = bytes[i];
    if (needed === 0) {
      if (b < 0x80) {
        chunk.push(b);
      } else if (b >= 0xc2 && b <= 0xdf) {
        needed = 1;
        cp = b & 0x1f;
      } else if (b >= 0xe0 && b <= 0xef) {
        if (b === 0xe0) lower = 0xa0;
        if (b === 0xed) upper = 0x9f;
        needed = 2;
        cp = b & 0x0f;
      } else if (b >= 0xf0 && b <= 0xf4) {
        if (b === 0xf0) lower = 0x90;
        if (b === 0xf4) upper = 0x8f;
        needed = 3;
        cp = b & 0x07;
      } else {
        chunk.push(0xfffd);
      }
    } else if (b < lower || b > upper) {
      // Invalid continuation: one U+FFFD for what came before, then this byte afresh.
      needed = seen = cp = 0;
      lower = 0x80;
      upper = 0xbf;
      chunk.push(0xfffd);
      i--;
    } else {
      lower = 0x80;
      upper = 0xbf;
      cp = (cp << 6) | (b & 0x3f);
      if (++seen === needed) {
        if (cp > 0xffff) {
          cp -= 0x10000;
          chunk.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
        } else {
          chunk.push(cp);
        }
        needed = seen = cp = 0;
      }
    }
    if (chunk.length >= 8192) {
      out += String.fromCharCode.apply(null, chunk);
      chunk = [];
    }
  }
  if (needed !== 0) chunk.push(0xfffd);
  return out + String.fromCharCode.apply(null, chunk);
}

/** Encode a string as UTF-8 bytes (lone surrogates become U+FFFD). */
export function utf8Encode(s) {
  const out = [];
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d < 0xe000) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      }
    }
    if (c >= 0xd800 && c < 0xe000) c = 0xfffd;
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 0x3f));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 0x3f), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
  }
  return new Uint8Array(out);
}

// ---------------------------------------------------------------------------------------
// Schema

/** A typed table the projection owns. The host creates it; you never write SQL. */
export class Table {
  constructor(name) {
    this.name = name;
    this.columns = [];
    this.primaryKeyColumns = [];
    this.indexes = [];
  }
  /** A NOT NULL column (default for a created row: 0, 0.0, "", empty blob, JSON null). */
  column(name, kind) {
    this.columns.push({ name, kind: checkKind(kind), nullable: false });
    return this;
  }
  /** A column that may hold NULL (null), also its default. */
  nullable(name, kind) {
    this.columns.push({ name, kind: checkKind(kind), nullable: true });
    return this;
  }
  /** The primary key, by column names, in order. */
  primaryKey(...columns) {
    this.primaryKeyColumns = columns.flat();
    return this;
  }
  /** A secondary index, by column names. */
  index(...columns) {
    this.indexes.push(columns.flat());
    return this;
  }
}

function checkKind(kind) {
  if (!KINDS.has(kind)) throw new TypeError(`unknown column kind ${JSON.stringify(kind)}`);
  return kind;
}

const EMPTY_BLOB = new Uint8Array(0);
const DEFAULTS = { integer: 0, real: 0, text: "", blob: EMPTY_BLOB, json: "null" };

function describe(v) {
  if (v === null || v === undefined) return "null";
  if (typeof v === "string") return `string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v)}`;
  if (typeof v === "number") return `number ${v}`;
  if (v instanceof Uint8Array) return "a Uint8Array";
  return typeof v === "object" ? (Array.isArray(v) ? "an array" : "an object") : `${typeof v} ${String(v)}`;
}

function normInteger(v) {
  if (typeof v === "number") {
    if (Number.isInteger(v) && v >= -I64_LIMIT && v < I64_LIMIT) return v;
    throw new TypeError(`an integer column cannot hold ${describe(v)}`);
  }
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "bigint") {
    if (v >= -9007199254740991n && v <= 9007199254740991n) return Number(v);
    throw new TypeError(`integer ${v} does not fit in a Number exactly (|n| > 2^53)`);
  }
  throw new TypeError(`an integer column cannot hold ${describe(v)}`);
}

function normReal(v) {
  if (typeof v === "number" && Number.isFinite(v)) return v;
  if (typeof v === "bigint") return Number(v);
  throw new TypeError(`a real column cannot hold ${describe(v)}`);
}

function normText(v) {
  if (typeof v === "string") return v;
  throw new TypeError(`a text column cannot hold ${describe(v)}`);
}

function normBlob(v) {
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (Array.isArray(v)) return Uint8Array.from(v);
  throw new TypeError(`a blob column cannot hold ${describe(v)}`);
}

function normJson(v) {
  if (typeof v === "string") return v; // raw JSON text; the host checks that it parses
  if (typeof v === "number" && !Number.isFinite(v)) throw new TypeError(`a json column cannot hold ${v}`);
  if (typeof v === "object" || typeof v === "boolean" || typeof v === "number") return JSON.stringify(v);
  throw new TypeError(`a json column cannot hold ${describe(v)}`);
}

const NORM = { integer: normInteger, real: normReal, text: normText, blob: normBlob, json: normJson };

/** One declared table, as the overlay needs it. */
class TableInfo {
  constructor(index, table) {
    this.index = index;
    this.name = table.name;
    this.columns = table.columns.slice();
    this.byName = new Map(this.columns.map((c, i) => [c.name, i]));
    this.pk = table.primaryKeyColumns.map((c) => this.byName.get(c));
    this.norm = this.columns.map((c) => NORM[c.kind]);
    this.defaults = this.columns.map((c) => (c.nullable ? null : DEFAULTS[c.kind]));
  }
  column(name) {
    const i = this.byName.get(name);
    if (i === undefined) throw new ProjectionError(`table \`${this.name}\` has no column \`${name}\``);
    return i;
  }
  check(col, v) {
    const c = this.columns[col];
    if (v === null || v === undefined) {
      if (c.nullable) return null;
      throw new ProjectionError(`column \`${this.name}.${c.name}\` is NOT NULL`);
    }
    try {
      return this.norm[col](v);
    } catch (e) {
      throw new ProjectionError(`column \`${this.name}.${c.name}\`: ${e.message}`);
    }
  }
  key(key) {
    const values = Array.isArray(key) ? key : [key];
    if (values.length !== this.pk.length) {
      throw new ProjectionError(
        `table \`${this.name}\` has a ${this.pk.length}-column primary key, got ${values.length} values`,
      );
    }
    const out = new Array(values.length);
    for (let i = 0; i < values.length; i++) out[i] = this.check(this.pk[i], values[i]);
    return out;
  }
  defaultRow(key) {
    const row = this.defaults.slice();
    for (let i = 0; i < this.pk.length; i++) row[this.pk[i]] = key[i];
    return row;
  }
}

function keyString(tableIndex, key) {
  if (key.length === 1 && typeof key[0] === "string") return tableIndex + "\u0000" + key[0];
  return (
    tableIndex +
    "\u0001" +
    JSON.stringify(key.map((v) => (v instanceof Uint8Array ? { b: Array.from(v) } : v)))
  );
}

// ---------------------------------------------------------------------------------------
// Events

/** One recorded event; `json` decodes `data` once, on first use. */
export class Event {
  constructor(fields) {
    this.streamId = fields.streamId;
    this.eventType = fields.eventType;
    this.eventId = fields.eventId ?? "";
    this.revision = fields.revision ?? 0;
    this.position = fields.position ?? { commit: 0, prepare: 0 };
    this.createdMs = fields.createdMs ?? 0;
    this.contentType = fields.contentType ?? "application/json";
    let data = fields.data ?? new Uint8Array([123, 125]);
    if (typeof data === "string") data = utf8Encode(data);
    else if (!(data instanceof Uint8Array) && !Array.isArray(data)) data = utf8Encode(JSON.stringify(data));
    this.data = data;
    this.metadata = fields.metadata ?? new Uint8Array(0);
    this._json = undefined;
    this._metadataJson = undefined;
  }
  /** The event's data decoded from JSON (once per event). */
  get json() {
    if (this._json === undefined) {
      try {
        this._json = JSON.parse(utf8Decode(this.data));
      } catch (e) {
        throw new ProjectionError(
          `invalid JSON data in ${this.eventType} event ${this.eventId} on stream ${this.streamId}: ${e.message}`,
        );
      }
    }
    return this._json;
  }
  /** The event's data as text. */
  get text() {
    return utf8Decode(this.data);
  }
  /** The event's metadata decoded from JSON (null when empty). */
  get metadataJson() {
    if (this._metadataJson === undefined) {
      try {
        this._metadataJson = this.metadata.length ? JSON.parse(utf8Decode(this.metadata)) : null;
      } catch (e) {
        throw new ProjectionError(`invalid JSON metadata in event ${this.eventId}: ${e.message}`);
      }
    }
    return this._metadataJson;
  }
}

// ---------------------------------------------------------------------------------------
// Rows, ops and the per-batch context

/** Numeric addition with the host's semantics: NULL counts as zero. */
function add(a, b) {
  if (a === null) return b;
  if (typeof a !== "number" || typeof b !== "number") throw new ProjectionError("increment needs numeric values");
  return a + b;
}

/** A row from `ctx.get` (or `ctx.newRow`): a copy to change and `ctx.save`. */
export class Row {
  constructor(info, values) {
    this._info = info;
    /** The column values, in declared order. */
    this.values = values;
  }
  get table() {
    return this._info.name;
  }
  /** The value of `column`. */
  get(column) {
    return this.values[this._info.column(column)];
  }
  /** Set `column`; returns the row. */
  set(column, value) {
    const i = this._info.column(column);
    this.values[i] = this._info.check(i, value);
    return this;
  }
  /** Add to a numeric column (NULL counts as zero); returns the row. */
  add(column, delta) {
    const i = this._info.column(column);
    this.values[i] = this._info.check(i, add(this.values[i], delta));
    return this;
  }
  /** The row as an object keyed by column name. */
  toObject() {
    const o = {};
    this._info.columns.forEach((c, i) => {
      o[c.name] = this.values[i];
    });
    return o;
  }
}

const CLEAN = 0;
const ROW = 1;
const DELETED = 2;
const DELTAS = 3;

/** The projection's view of its tables while it handles one batch. */
export class Ctx {
  constructor(schema, get) {
    this._schema = schema;
    this._get = get;
    // Touched rows in first-touch order (Maps keep insertion order): deterministic ops.
    this._entries = new Map();
  }

  _table(table) {
    const name = typeof table === "string" ? table : table && table.name;
    const info = this._schema.byName.get(name);
    if (!info) throw new ProjectionError(`table \`${name}\` is not declared in the manifest`);
    return info;
  }

  /** The row with this primary key: this batch's writes first, then the host's tables. */
  get(table, key) {
    const info = this._table(table);
    const k = info.key(key);
    const ks = keyString(info.index, k);
    const e = this._entries.get(ks);
    if (e === undefined) {
      const base = this._get(info.name, k.slice());
      const row = base === null || base === undefined ? null : base.slice();
      this._entries.set(ks, { info, key: k, state: CLEAN, row, deltas: null });
      return row === null ? null : new Row(info, row.slice());
    }
    if (e.state === CLEAN || e.state === ROW) return e.row === null ? null : new Row(info, e.row.slice());
    if (e.state === DELETED) return null;
    // Deltas recorded blind: resolve them against the stored row now.
    const base = this._get(info.name, k.slice());
    const row = base === null || base === undefined ? info.defaultRow(k) : base.slice();
    for (const [col, by] of e.deltas) row[col] = add(row[col], by);
    e.state = ROW;
    e.row = row;
    e.deltas = null;
    return new Row(info, row.slice());
  }

  /** Insert or replace a whole row: an array with one value per column, in order, or an
   * object by column name (missing columns take their defaults). */
  upsert(table, row) {
    const info = this._table(table);
    let values;
    if (Array.isArray(row)) {
      if (row.length !== info.columns.length) {
        throw new ProjectionError(
          `table \`${info.name}\` has ${info.columns.length} columns, upsert gave ${row.length} values`,
        );
      }
      values = new Array(row.length);
      for (let i = 0; i < row.length; i++) values[i] = info.check(i, row[i]);
    } else if (row instanceof Row) {
      values = row.values.slice();
    } else {
      values = info.defaultRow(info.pk.map(() => null));
      for (const name of Object.keys(row)) {
        const i = info.column(name);
        values[i] = info.check(i, row[name]);
      }
      for (const i of info.pk) {
        if (!(info.columns[i].name in row)) {
          throw new ProjectionError(`upsert into \`${info.name}\` lacks key column \`${info.columns[i].name}\``);
        }
      }
    }
    this._put(info, values);
  }

  /** Write back a row from `get` or `newRow`. */
  save(row) {
    this._put(row._info, row.values.slice());
  }

  _put(info, values) {
    const k = info.pk.map((i) => values[i]);
    const ks = keyString(info.index, k);
    const e = this._entries.get(ks);
    if (e === undefined) this._entries.set(ks, { info, key: k, state: ROW, row: values, deltas: null });
    else {
      e.state = ROW;
      e.row = values;
      e.deltas = null;
    }
  }

  /** A row with this key and every other column at its default (not saved). */
  newRow(table, key) {
    const info = this._table(table);
    return new Row(info, info.defaultRow(info.key(key)));
  }

  /** Delete the row with this primary key. */
  delete(table, key) {
    const info = this._table(table);
    const k = info.key(key);
    const ks = keyString(info.index, k);
    const e = this._entries.get(ks);
    if (e === undefined) this._entries.set(ks, { info, key: k, state: DELETED, row: null, deltas: null });
    else {
      e.state = DELETED;
      e.row = null;
      e.deltas = null;
    }
  }

  /** Add to numeric columns without reading the row; a missing row is created with the
   * key and defaults. `ctx.increment("customers", id, { orders: 1 })`. */
  increment(table, key, deltas) {
    const info = this._table(table);
    const k = info.key(key);
    const cols = [];
    for (const name of Object.keys(deltas)) {
      const i = info.column(name);
      if (info.pk.includes(i)) throw new ProjectionError(`cannot increment key column \`${name}\` of \`${info.name}\``);
      const kind = info.columns[i].kind;
      if (kind !== "integer" && kind !== "real") {
        throw new ProjectionError(`cannot increment ${kind} column \`${name}\` of \`${info.name}\``);
      }
      const by = deltas[name];
      if (typeof by !== "number" && typeof by !== "bigint") {
        throw new ProjectionError(`cannot add ${describe(by)} to column \`${info.name}.${name}\``);
      }
      cols.push([i, info.check(i, by)]);
    }
    if (cols.length === 0) return;
    const ks = keyString(info.index, k);
    let e = this._entries.get(ks);
    if (e === undefined) {
      e = { info, key: k, state: DELTAS, row: null, deltas: new Map() };
      this._entries.set(ks, e);
    }
    if (e.state === DELTAS) {
      for (const [i, by] of cols) {
        const sum = e.deltas.has(i) ? e.deltas.get(i) + by : by;
        e.deltas.set(i, info.check(i, sum));
      }
      return;
    }
    const row = e.state === ROW ? e.row : e.state === CLEAN && e.row !== null ? e.row.slice() : info.defaultRow(k);
    for (const [i, by] of cols) row[i] = info.check(i, add(row[i], by));
    e.state = ROW;
    e.row = row;
    e.deltas = null;
  }

  /** The coalesced ops of the batch so far: at most one per touched row.
   * `{type: "upsert", table, row}`, `{type: "delete", table, key}`,
   * `{type: "increment", table, key, deltas: [[column, by], ...]}`. */
  ops() {
    const out = [];
    for (const e of this._entries.values()) {
      if (e.state === ROW) out.push({ type: "upsert", table: e.info.name, row: e.row.slice() });
      else if (e.state === DELETED) out.push({ type: "delete", table: e.info.name, key: e.key.slice() });
      else if (e.state === DELTAS && e.deltas.size > 0) {
        const deltas = [];
        for (const [i, by] of e.deltas) deltas.push([e.info.columns[i].name, by]);
        out.push({ type: "increment", table: e.info.name, key: e.key.slice(), deltas });
      }
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------
// Logging

const LEVELS = new Set(["trace", "debug", "info", "warn", "error"]);
let logSink = (level, message) => {
  if (typeof console !== "undefined") console.error(`[${level}] ${message}`);
};

/** Log a line through the host (the host caps lines per batch). */
export function log(level, message) {
  if (!LEVELS.has(level)) throw new TypeError(`unknown log level ${JSON.stringify(level)}`);
  logSink(level, String(message));
}

/** Replace where `log` lines go outside the component (tests). */
export function setLogSink(fn) {
  logSink = fn;
}

// ---------------------------------------------------------------------------------------
// The projection

function describeError(e) {
  if (e instanceof ProjectionError) return e.message;
  if (e instanceof Error) {
    let text = e.message ? `${e.name}: ${e.message}` : e.name;
    // Name the innermost stack frame outside this file: usually the author's line.
    const frames = String(e.stack || "").split("\n");
    for (const f of frames) {
      const line = f.trim();
      if (line && !line.includes("projector-sdk.js") && /:\d+/.test(line)) {
        text += ` (${line.replace(/^at\s+/, "at ")})`;
        break;
      }
    }
    return text;
  }
  try {
    return `thrown: ${typeof e === "string" ? e : JSON.stringify(e)}`;
  } catch {
    return `thrown: ${String(e)}`;
  }
}

/** A projection: name, version, interests, tables and handlers.
 * `eventTypes` omitted means: the types of the `on` handlers when there is no catch-all
 * handler, else every type. Pass an array to choose ([] = all). */
export class Projection {
  constructor(name, version, options = {}) {
    this.name = name;
    this.version = version;
    this.eventTypes = options.eventTypes ? options.eventTypes.slice() : null;
    this.streamPrefixes = (options.streamPrefixes || []).slice();
    this.tables = [];
    this._handlers = new Map();
    this._catchAll = options.handle || null;
    this._schema = null;
  }

  /** Declare a table the projection owns; returns it. */
  table(table) {
    this.tables.push(table);
    this._schema = null;
    return table;
  }

  /** `projection.on("OrderCreated", "OrderUpdated", (event, ctx) => {...})`. */
  on(...args) {
    const fn = args.pop();
    if (typeof fn !== "function") throw new TypeError("on(type..., handler): the last argument must be a function");
    for (const t of args.flat()) {
      if (this._handlers.has(t)) throw new Error(`two handlers for event type ${JSON.stringify(t)}`);
      this._handlers.set(t, fn);
    }
    return this;
  }

  /** One `(event, ctx) => {...}` for every event without an `on` handler. */
  handler(fn) {
    this._catchAll = fn;
    return this;
  }

  /** The manifest in the WIT's shape, validated (throws for a malformed declaration). */
  manifest() {
    if (!this.name) throw new Error("a projection needs a name");
    if (!Number.isInteger(this.version) || this.version < 0 || this.version > 0xffffffff) {
      throw new Error(`version must be a u32, got ${this.version}`);
    }
    const eventTypes =
      this.eventTypes !== null ? this.eventTypes.slice() : this._catchAll ? [] : [...this._handlers.keys()];
    const seen = new Set();
    for (const t of this.tables) {
      if (seen.has(t.name)) throw new Error(`table \`${t.name}\` is declared twice`);
      seen.add(t.name);
      const names = t.columns.map((c) => c.name);
      if (new Set(names).size !== names.length) throw new Error(`table \`${t.name}\` has a column declared twice`);
      if (t.primaryKeyColumns.length === 0) throw new Error(`table \`${t.name}\` needs a primary key`);
      for (const cols of [t.primaryKeyColumns, ...t.indexes]) {
        for (const c of cols) if (!names.includes(c)) throw new Error(`table \`${t.name}\` has no column \`${c}\``);
      }
    }
    return {
      name: this.name,
      version: this.version,
      interests: { eventTypes, streamPrefixes: this.streamPrefixes.slice() },
      tables: this.tables.map((t) => ({
        name: t.name,
        columns: t.columns.map((c) => ({ name: c.name, kind: c.kind, nullable: c.nullable })),
        primaryKey: t.primaryKeyColumns.slice(),
        indexes: t.indexes.map((ix) => ix.slice()),
      })),
    };
  }

  _schemaInfo() {
    if (this._schema === null) {
      this.manifest();
      const tables = this.tables.map((t, i) => new TableInfo(i, t));
      this._schema = { tables, byName: new Map(tables.map((t) => [t.name, t])) };
    }
    return this._schema;
  }

  /** Run a batch through one overlay and return its coalesced ops (see `Ctx.ops`).
   * `get(table, key)` is the host's lookup (native values in and out; null when absent).
   * Throws HandleError(message, eventIndex) on failure. */
  handleBatch(events, get) {
    let schema;
    try {
      schema = this._schemaInfo();
    } catch (e) {
      throw new HandleError(`invalid manifest: ${e.message}`, null);
    }
    const ctx = new Ctx(schema, get);
    const handlers = this._handlers;
    const catchAll = this._catchAll;
    let index = 0;
    try {
      for (; index < events.length; index++) {
        const raw = events[index];
        const event = raw instanceof Event ? raw : new Event(raw);
        const fn = handlers.get(event.eventType) || catchAll;
        if (fn) fn(event, ctx);
      }
    } catch (e) {
      throw new HandleError(describeError(e), index);
    }
    try {
      return ctx.ops();
    } catch (e) {
      throw new HandleError(describeError(e), null);
    }
  }

  /** The component's exports: `export const { manifest, handle } = projection.exports();`
   * The manifest is validated here, so a bad declaration fails the build. */
  exports() {
    const wit = this.manifest();
    const schema = this._schemaInfo();
    const projection = this;
    logSink = (level, message) => hostLog(level, message);
    // Inside the component (QuickJS: no console, no process) every WASI call is a
    // trapping stub, and a trap carries no message: make reading the clock an exception
    // that names the cause, and send console.* lines to the host's log.
    const inComponent = typeof globalThis.console === "undefined" && typeof globalThis.process === "undefined";
    if (inComponent && !globalThis.Date.__projector) {
      const RealDate = globalThis.Date;
      const noClock = () => {
        throw new ProjectionError("projections have no clock (replays must be deterministic): use event.createdMs");
      };
      class Date extends RealDate {
        constructor(...args) {
          if (args.length === 0) noClock();
          super(...args);
        }
        static now() {
          return noClock();
        }
      }
      Date.__projector = true;
      globalThis.Date = Date;
    }
    if (inComponent) {
      const line = (level) => (...args) => logSink(level, args.map(formatArg).join(" "));
      globalThis.console = {
        log: line("info"),
        info: line("info"),
        debug: line("debug"),
        trace: line("trace"),
        warn: line("warn"),
        error: line("error"),
      };
    }

    function get(table, key) {
      const info = schema.byName.get(table);
      const row = hostGet(
        table,
        key.map((v, i) => toWit(info.columns[info.pk[i]].kind, v)),
      );
      return row === null || row === undefined ? null : row.map(fromWit);
    }

    function handle(batch) {
      let ops;
      try {
        ops = projection.handleBatch(batch, get);
        return ops.map((op) => opToWit(schema, op));
      } catch (e) {
        // A thrown value is the `err` of the result: a handle-error record. Never trap.
        if (e instanceof HandleError) throw { message: e.message, eventIndex: e.eventIndex };
        throw { message: describeError(e), eventIndex: null };
      }
    }
    return { manifest: () => wit, handle };
  }
}

function formatArg(a) {
  if (typeof a === "string") return a;
  if (a instanceof Error) return a.stack ? `${a.name}: ${a.message}\n${a.stack}` : `${a.name}: ${a.message}`;
  try {
    const s = JSON.stringify(a);
    return s === undefined ? String(a) : s;
  } catch {
    return String(a);
  }
}

// ---------------------------------------------------------------------------------------
// The WIT boundary: native values <-> `value` variants

function toWit(kind, v) {
  if (v === null) return { tag: "null" };
  switch (kind) {
    case "integer":
      return { tag: "integer", val: v };
    case "real":
      return { tag: "real", val: v };
    case "blob":
      return { tag: "blob", val: v };
    default:
      return { tag: "text", val: v };
  }
}

function fromWit(v) {
  return v.tag === "null" ? null : v.val;
}

function opToWit(schema, op) {
  const info = schema.byName.get(op.table);
  const cols = info.columns;
  if (op.type === "upsert") {
    return { tag: "upsert", val: { table: op.table, row: op.row.map((v, i) => toWit(cols[i].kind, v)) } };
  }
  const key = op.key.map((v, i) => toWit(cols[info.pk[i]].kind, v));
  if (op.type === "delete") return { tag: "delete", val: { table: op.table, key } };
  return {
    tag: "increment",
    val: {
      table: op.table,
      key,
      deltas: op.deltas.map(([column, by]) => ({ column, by: toWit(cols[info.byName.get(column)].kind, by) })),
    },
  };
}
