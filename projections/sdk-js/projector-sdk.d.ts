// Type declarations for projector-sdk.js (the JavaScript SDK of Projector projections).
//
// 64-bit integers: the WIT's s64 values and u64 event fields (revision, positions,
// createdMs) travel as JavaScript Numbers, because QuickJS's component bindings have no
// BigInt. They are exact up to 2^53 (Number.MAX_SAFE_INTEGER) and ROUNDED above it: an
// integer column holding 2^53 + 1 reads back as 2^53, and writes round the same way.
// Keep counters and ids that may pass 2^53 in text columns.

/** Column kinds: SQLite INTEGER, REAL, TEXT, BLOB, and TEXT holding JSON. */
export type ColumnKind = "integer" | "real" | "text" | "blob" | "json";

export declare const Kind: Readonly<{
  INTEGER: "integer";
  REAL: "real";
  TEXT: "text";
  BLOB: "blob";
  JSON: "json";
}>;

/**
 * A column value: null (NULL), number (integer or real by the column's kind; integers
 * are exact only up to 2^53), string (text, or raw JSON text for json columns),
 * Uint8Array (blob).
 */
export type Value = null | number | string | Uint8Array;

/**
 * What a column accepts on write. Besides `Value`: undefined (NULL), booleans (0/1 in
 * integer columns, true/false in json columns), bigint within ±2^53, arrays of bytes and
 * ArrayBuffers for blobs, and any JSON-serializable object for json columns.
 */
export type ValueInput = Value | undefined | boolean | bigint | number[] | ArrayBuffer | object;

/** A primary key: one value, or an array of values in primary-key order. */
export type KeyInput = ValueInput | ValueInput[];

/** Table name, or the Table object `projection.table()` returned. */
export type TableRef = string | Table;

export interface Column {
  name: string;
  kind: ColumnKind;
  nullable: boolean;
}

/** A typed table the projection owns. The host creates it; you never write SQL. */
export declare class Table {
  constructor(name: string);
  readonly name: string;
  readonly columns: Column[];
  readonly primaryKeyColumns: string[];
  readonly indexes: string[][];
  /** A NOT NULL column (default for a created row: 0, 0.0, "", empty blob, JSON null). */
  column(name: string, kind: ColumnKind): this;
  /** A column that may hold NULL (null), also its default. */
  nullable(name: string, kind: ColumnKind): this;
  /** The primary key, by column names, in order. */
  primaryKey(...columns: (string | string[])[]): this;
  /** A secondary index, by column names. */
  index(...columns: (string | string[])[]): this;
}

/** A global position in the event store ($all). Numbers: exact up to 2^53. */
export interface Position {
  commit: number;
  prepare: number;
}

/** The fields of an event as the host delivers it (the WIT `event` record). */
export interface EventFields {
  streamId: string;
  eventType: string;
  eventId?: string;
  /** Revision within the stream (u64 as a Number: exact up to 2^53). */
  revision?: number;
  position?: Position;
  /** Milliseconds since the Unix epoch, as recorded (not the wall clock). */
  createdMs?: number;
  contentType?: string;
  /** The payload bytes; tests may pass a string or any JSON-serializable value. */
  data?: Uint8Array | string | unknown;
  metadata?: Uint8Array;
}

/** One recorded event. */
export declare class Event {
  constructor(fields: EventFields);
  readonly streamId: string;
  readonly eventType: string;
  readonly eventId: string;
  /** u64 as a Number: exact up to 2^53. */
  readonly revision: number;
  readonly position: Position;
  /** u64 as a Number: exact up to 2^53. */
  readonly createdMs: number;
  readonly contentType: string;
  readonly data: Uint8Array;
  readonly metadata: Uint8Array;
  /** `data` decoded from UTF-8 JSON, once per event (throws ProjectionError if invalid). */
  readonly json: any;
  /** `data` decoded from UTF-8. */
  readonly text: string;
  /** `metadata` decoded from JSON; null when empty. */
  readonly metadataJson: any;
}

/** A row read with `ctx.get` (or made with `ctx.newRow`): a copy to change and `ctx.save`. */
export declare class Row {
  readonly table: string;
  /** The column values, in declared order. */
  values: Value[];
  /** The value of `column` (throws for an unknown column). */
  get(column: string): Value;
  /** Set `column` (checked against its kind); returns the row. */
  set(column: string, value: ValueInput): this;
  /** Add to a numeric column (NULL counts as zero); returns the row. */
  add(column: string, delta: number): this;
  /** The row as an object keyed by column name. */
  toObject(): Record<string, Value>;
}

/** A coalesced op, as `handleBatch` returns it (native values). */
export type Op =
  | { type: "upsert"; table: string; row: Value[] }
  | { type: "delete"; table: string; key: Value[] }
  | { type: "increment"; table: string; key: Value[]; deltas: [column: string, by: number][] };

/** The projection's view of its tables while it handles one batch. */
export declare class Ctx {
  /** The row with this primary key: this batch's writes first, then the host's tables. */
  get(table: TableRef, key: KeyInput): Row | null;
  /** Insert or replace a whole row: an array with one value per declared column, in
   * order, or an object by column name (missing columns take their defaults). */
  upsert(table: TableRef, row: ValueInput[] | Record<string, ValueInput>): void;
  /** Write back a row from `get` or `newRow`. */
  save(row: Row): void;
  /** A row with this key and every other column at its default (not saved). */
  newRow(table: TableRef, key: KeyInput): Row;
  /** Delete the row with this primary key. */
  delete(table: TableRef, key: KeyInput): void;
  /** Add to integer/real columns without reading the row; a missing row is created with
   * the key and defaults: `ctx.increment("customers", id, { orders: 1 })`. */
  increment(table: TableRef, key: KeyInput, deltas: Record<string, number>): void;
  /** The coalesced ops so far: at most one per touched row, in first-touch order. */
  ops(): Op[];
}

export type Handler = (event: Event, ctx: Ctx) => void;

export interface ProjectionOptions {
  /** Event types the host delivers. Omitted: the `on` handlers' types when there is no
   * catch-all handler, else all. [] means all. */
  eventTypes?: string[];
  /** Only streams starting with one of these. Omitted or []: all streams. */
  streamPrefixes?: string[];
  /** One handler for every event without an `on` handler. */
  handle?: Handler;
}

/** The manifest, in the WIT's shape. */
export interface Manifest {
  name: string;
  version: number;
  interests: { eventTypes: string[]; streamPrefixes: string[] };
  tables: { name: string; columns: Column[]; primaryKey: string[]; indexes: string[][] }[];
}

/** The host's read-model lookup, native values in and out (tests inject their own). */
export type Getter = (table: string, key: Value[]) => Value[] | null | undefined;

/** The WIT `value` variant. */
export type WitValue =
  | { tag: "null" }
  | { tag: "integer"; val: number }
  | { tag: "real"; val: number }
  | { tag: "text"; val: string }
  | { tag: "blob"; val: Uint8Array };

/** The component's exports. `handle` returns the WIT ops, or throws a handle-error
 * record `{ message, eventIndex }` (the `err` of the WIT result). */
export interface WorldExports {
  manifest(): Manifest;
  handle(batch: EventFields[]): ({ tag: "upsert" | "delete" | "increment"; val: unknown })[];
}

export declare class Projection {
  constructor(name: string, version: number, options?: ProjectionOptions);
  readonly name: string;
  readonly version: number;
  readonly tables: Table[];
  /** Declare a table the projection owns; returns it. */
  table(table: Table): Table;
  /** `projection.on("OrderCreated", "OrderUpdated", (event, ctx) => {...})`. */
  on(...typesThenHandler: [...(string | string[])[], Handler]): this;
  /** One handler for every event without an `on` handler. */
  handler(fn: Handler): this;
  /** The validated manifest (throws for a malformed declaration). */
  manifest(): Manifest;
  /** Run a batch through one overlay; the coalesced ops, or throws HandleError. */
  handleBatch(events: (Event | EventFields)[], get: Getter): Op[];
  /** `export const { manifest, handle } = projection.exports();` ends every app.js. */
  exports(): WorldExports;
}

/** Throw it to fail the batch with exactly this message. */
export declare class ProjectionError extends Error {
  constructor(message: string);
}

/** A failed batch: message and the index of the event in the batch (null if none). */
export declare class HandleError extends Error {
  constructor(message: string, eventIndex: number | null);
  readonly eventIndex: number | null;
}

export type Level = "trace" | "debug" | "info" | "warn" | "error";

/** Log a line through the host (the host caps lines per batch). In the component,
 * console.log/info/debug/warn/error also go here. */
export declare function log(level: Level, message: string): void;

/** Where `log` lines go outside the component (tests); default: console.error. */
export declare function setLogSink(fn: (level: Level, message: string) => void): void;

/** UTF-8 bytes to a string, as TextDecoder does (QuickJS has none). */
export declare function utf8Decode(bytes: Uint8Array | ArrayLike<number>): string;

/** A string to UTF-8 bytes. */
export declare function utf8Encode(text: string): Uint8Array;
