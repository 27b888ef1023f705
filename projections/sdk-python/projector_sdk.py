"""Write Projector projections in Python.

One file: `projector build` writes it next to your `app.py`.

    from projector_sdk import Projection, Table, Kind, Event, Ctx

    projection = Projection("order-summary", 1, stream_prefixes=["order-"])
    projection.table(
        Table("orders")
        .column("order_id", Kind.TEXT)
        .column("events", Kind.INTEGER)
        .primary_key("order_id")
    )

    @projection.on("OrderCreated")
    def created(event: Event, ctx: Ctx) -> None:
        ctx.increment("orders", event.json["orderId"], events=1)

    WitWorld = projection.world()      # the component's exports (componentize-py)

Inside one batch, `Ctx` keeps an overlay of everything the projection wrote: `ctx.get`
reads through it (event 7 of a batch sees what events 1-6 wrote) before asking the
host, and each touched row leaves the module as one coalesced op, in first-touch order.

Values are plain Python: None (NULL), int (integer, signed 64-bit), float (real), str
(text, and raw JSON text for json columns), bytes (blob). A dict, list, bool or number
given for a json column is serialized with `json.dumps`.

Everything but `Projection.world()` runs under plain CPython: `Projection.handle_batch`
takes the host's `get` as a function, and `MemoryStore` plays the host for tests.
"""

from __future__ import annotations

import json as _json
import sys
from enum import Enum
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

__all__ = [
    "Projection",
    "Table",
    "Column",
    "Kind",
    "Manifest",
    "Event",
    "Position",
    "Ctx",
    "Row",
    "Upsert",
    "Delete",
    "Increment",
    "Op",
    "ProjectionError",
    "HandleError",
    "Level",
    "log",
    "MemoryStore",
]

# ---------------------------------------------------------------------------------------
# Values and schema

Value = Union[None, int, float, str, bytes]
"""A column value: None (NULL), int, float, str or bytes."""

KeyLike = Union[Value, Sequence[Value]]
"""A primary key: one value, or a tuple/list of values in primary-key order."""

Getter = Callable[[str, List[Value]], Optional[List[Value]]]
"""The host's `read-model.get`: (table, key values) -> the row's values, or None."""

_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1


class Kind(str, Enum):
    """Column kinds (SQLite storage: INTEGER, REAL, TEXT, BLOB, TEXT holding JSON)."""

    INTEGER = "integer"
    REAL = "real"
    TEXT = "text"
    BLOB = "blob"
    JSON = "json"


class ProjectionError(Exception):
    """Raise it to fail the batch with exactly this message (no exception type or line)."""


class HandleError(Exception):
    """A failed batch: what `handle` returns to the host as `handle-error`."""

    def __init__(self, message: str, event_index: Optional[int]) -> None:
        super().__init__(message)
        self.message = message
        self.event_index = event_index

    def __repr__(self) -> str:
        return f"HandleError({self.message!r}, event_index={self.event_index!r})"


class Column(NamedTuple):
    name: str
    kind: Kind
    nullable: bool


class Table:
    """A typed table the projection owns. The host creates it; you never write SQL.

        Table("orders").column("order_id", Kind.TEXT).column("total", Kind.INTEGER)
                       .nullable("note", Kind.TEXT).primary_key("order_id")
                       .index("customer_id")
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.columns: List[Column] = []
        self.primary_key_columns: List[str] = []
        self.indexes: List[List[str]] = []

    def column(self, name: str, kind: Union[Kind, str]) -> "Table":
        """A NOT NULL column (default for a created row: 0, 0.0, '', b'', JSON null)."""
        self.columns.append(Column(name, Kind(kind), False))
        return self

    def nullable(self, name: str, kind: Union[Kind, str]) -> "Table":
        """A column that may hold NULL (None), also its default."""
        self.columns.append(Column(name, Kind(kind), True))
        return self

    def primary_key(self, *columns: str) -> "Table":
        """The primary key, by column names, in order."""
        self.primary_key_columns = list(columns)
        return self

    def index(self, *columns: str) -> "Table":
        """A secondary index, by column names."""
        self.indexes.append(list(columns))
        return self

    def __repr__(self) -> str:
        return f"Table({self.name!r})"


class Manifest(NamedTuple):
    name: str
    version: int
    event_types: List[str]
    stream_prefixes: List[str]
    tables: List[Table]


# Per-kind checks: a column value in, its normalized value out (or a TypeError message).
def _norm_integer(v: Any) -> Any:
    if type(v) is int:
        if _I64_MIN <= v <= _I64_MAX:
            return v
        raise ValueError(f"integer {v} does not fit in 64 bits")
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return _norm_integer(int(v))
    raise TypeError(f"an integer column cannot hold {type(v).__name__} {v!r}")


def _norm_real(v: Any) -> Any:
    if type(v) is float:
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError(f"a real column cannot hold {v}")
        return v
    if isinstance(v, (int, float)):
        return _norm_real(float(v))
    raise TypeError(f"a real column cannot hold {type(v).__name__} {v!r}")


def _norm_text(v: Any) -> Any:
    if type(v) is str:
        return v
    raise TypeError(f"a text column cannot hold {type(v).__name__} {v!r}")


def _norm_blob(v: Any) -> Any:
    if type(v) is bytes:
        return v
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    raise TypeError(f"a blob column cannot hold {type(v).__name__}")


def _norm_json(v: Any) -> Any:
    if type(v) is str:
        return v  # raw JSON text; the host checks that it parses
    if isinstance(v, (dict, list, tuple, bool, int, float)):
        return _json.dumps(v, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    raise TypeError(f"a json column cannot hold {type(v).__name__}")


_NORM = {
    Kind.INTEGER: _norm_integer,
    Kind.REAL: _norm_real,
    Kind.TEXT: _norm_text,
    Kind.BLOB: _norm_blob,
    Kind.JSON: _norm_json,
}
_DEFAULT: Dict[Kind, Value] = {
    Kind.INTEGER: 0,
    Kind.REAL: 0.0,
    Kind.TEXT: "",
    Kind.BLOB: b"",
    Kind.JSON: "null",
}


class _TableInfo:
    """One declared table, as the overlay needs it."""

    __slots__ = ("index", "name", "columns", "by_name", "pk", "pk_set", "norm", "defaults")

    def __init__(self, index: int, table: Table) -> None:
        self.index = index
        self.name = table.name
        self.columns = list(table.columns)
        self.by_name = {c.name: i for i, c in enumerate(self.columns)}
        self.pk = [self.by_name[c] for c in table.primary_key_columns]
        self.pk_set = frozenset(self.pk)
        self.norm = [_NORM[c.kind] for c in self.columns]
        self.defaults = [None if c.nullable else _DEFAULT[c.kind] for c in self.columns]

    def column(self, name: str) -> int:
        i = self.by_name.get(name)
        if i is None:
            raise ProjectionError(f"table `{self.name}` has no column `{name}`")
        return i

    def check(self, col: int, v: Any) -> Value:
        if v is None:
            if self.columns[col].nullable:
                return None
            raise ProjectionError(f"column `{self.name}.{self.columns[col].name}` is NOT NULL")
        try:
            return self.norm[col](v)
        except (TypeError, ValueError) as e:
            raise ProjectionError(f"column `{self.name}.{self.columns[col].name}`: {e}") from None

    def key(self, key: KeyLike) -> Tuple[Value, ...]:
        values = tuple(key) if isinstance(key, (tuple, list)) else (key,)
        if len(values) != len(self.pk):
            raise ProjectionError(
                f"table `{self.name}` has a {len(self.pk)}-column primary key, "
                f"got {len(values)} values"
            )
        return tuple(self.check(c, v) for c, v in zip(self.pk, values))

    def default_row(self, key: Tuple[Value, ...]) -> List[Value]:
        row = list(self.defaults)
        for c, v in zip(self.pk, key):
            row[c] = v
        return row


class _Schema:
    def __init__(self, tables: Sequence[Table]) -> None:
        self.tables = [_TableInfo(i, t) for i, t in enumerate(tables)]
        self.by_name = {t.name: t for t in self.tables}

    def table(self, table: Union[str, Table]) -> _TableInfo:
        name = table if isinstance(table, str) else table.name
        info = self.by_name.get(name)
        if info is None:
            raise ProjectionError(f"table `{name}` is not declared in the manifest")
        return info


# ---------------------------------------------------------------------------------------
# Events


class Position(NamedTuple):
    """A global position in the event store ($all)."""

    commit: int
    prepare: int


_UNSET: Any = object()


class Event:
    """One recorded event. `data` and `metadata` are the raw bytes; `json` decodes `data`
    once (on first use) and `metadata_json` decodes `metadata`."""

    __slots__ = (
        "stream_id",
        "event_type",
        "event_id",
        "revision",
        "position",
        "created_ms",
        "content_type",
        "data",
        "metadata",
        "_json",
        "_metadata_json",
    )

    stream_id: str
    event_type: str
    event_id: str
    revision: int
    position: Position
    created_ms: int
    content_type: str
    data: bytes
    metadata: bytes

    def __init__(
        self,
        stream_id: str,
        event_type: str,
        data: Union[bytes, str, Any] = b"{}",
        *,
        event_id: str = "",
        revision: int = 0,
        position: Position = Position(0, 0),
        created_ms: int = 0,
        content_type: str = "application/json",
        metadata: bytes = b"",
    ) -> None:
        """For tests: `data` may also be a str or any JSON-serializable object."""
        if isinstance(data, str):
            data = data.encode()
        elif not isinstance(data, (bytes, bytearray)):
            data = _json.dumps(data).encode()
        self.stream_id = stream_id
        self.event_type = event_type
        self.event_id = event_id
        self.revision = revision
        self.position = position
        self.created_ms = created_ms
        self.content_type = content_type
        self.data = bytes(data)
        self.metadata = metadata
        self._json = _UNSET
        self._metadata_json = _UNSET

    @classmethod
    def _from_wit(cls, e: Any) -> "Event":
        self = cls.__new__(cls)
        self.stream_id = e.stream_id
        self.event_type = e.event_type
        self.event_id = e.event_id
        self.revision = e.revision
        self.position = e.position  # has .commit and .prepare, like Position
        self.created_ms = e.created_ms
        self.content_type = e.content_type
        self.data = e.data
        self.metadata = e.metadata
        self._json = _UNSET
        self._metadata_json = _UNSET
        return self

    @property
    def json(self) -> Any:
        """The event's data, decoded from JSON (once per event)."""
        j = self._json
        if j is _UNSET:
            try:
                j = _json.loads(self.data)
            except ValueError as e:
                raise ProjectionError(
                    f"invalid JSON data in {self.event_type} event {self.event_id} "
                    f"on stream {self.stream_id}: {e}"
                ) from None
            self._json = j
        return j

    @property
    def metadata_json(self) -> Any:
        """The event's metadata, decoded from JSON (None when empty)."""
        j = self._metadata_json
        if j is _UNSET:
            try:
                j = _json.loads(self.metadata) if self.metadata else None
            except ValueError as e:
                raise ProjectionError(f"invalid JSON metadata in event {self.event_id}: {e}") from None
            self._metadata_json = j
        return j

    def __repr__(self) -> str:
        return f"Event({self.stream_id!r}, {self.event_type!r}, revision={self.revision})"


# ---------------------------------------------------------------------------------------
# Ops and the per-batch context


class Upsert(NamedTuple):
    """Insert or replace a whole row (values in declared column order)."""

    table: str
    row: List[Value]


class Delete(NamedTuple):
    """Delete the row with this key (values in primary-key order)."""

    table: str
    key: List[Value]


class Increment(NamedTuple):
    """Add to numeric columns of a row the batch never read (created if missing)."""

    table: str
    key: List[Value]
    deltas: List[Tuple[str, Union[int, float]]]


Op = Union[Upsert, Delete, Increment]


def _add(a: Value, b: Union[int, float]) -> Union[int, float]:
    """Numeric addition with the host's semantics: NULL counts as zero, integers stay exact."""
    if a is None:
        return b
    ta, tb = type(a), type(b)
    if ta is int and tb is int:
        s = a + b  # type: ignore[operator]
        if not _I64_MIN <= s <= _I64_MAX:
            raise ProjectionError(f"integer overflow adding {b} to {a}")
        return s
    if ta in (int, float) and tb in (int, float):
        return float(a) + float(b)  # type: ignore[arg-type]
    raise ProjectionError("increment needs numeric values")


class Row:
    """A row read with `ctx.get` (or made with `ctx.new_row`): a copy you can change and
    `ctx.save`. `row["col"]` reads, `row["col"] = v` sets, `row.add("col", n)` adds."""

    __slots__ = ("_info", "values")

    def __init__(self, info: _TableInfo, values: List[Value]) -> None:
        self._info = info
        self.values: List[Value] = values
        """The column values, in declared order."""

    @property
    def table(self) -> str:
        return self._info.name

    @property
    def columns(self) -> List[str]:
        return [c.name for c in self._info.columns]

    def __getitem__(self, column: str) -> Any:
        return self.values[self._info.column(column)]

    def __setitem__(self, column: str, value: Any) -> None:
        i = self._info.column(column)
        self.values[i] = self._info.check(i, value)

    def get(self, column: str, default: Any = None) -> Any:
        """The value of `column`, or `default` when it is NULL."""
        v = self.values[self._info.column(column)]
        return default if v is None else v

    def add(self, column: str, delta: Union[int, float]) -> "Row":
        """Add `delta` to a numeric column (NULL counts as zero). Returns the row."""
        i = self._info.column(column)
        self.values[i] = self._info.check(i, _add(self.values[i], delta))
        return self

    def set(self, column: str, value: Any) -> "Row":
        """Set `column`. Returns the row, for chaining."""
        self[column] = value
        return self

    def as_dict(self) -> Dict[str, Value]:
        return {c.name: v for c, v in zip(self._info.columns, self.values)}

    def __repr__(self) -> str:
        return f"Row({self._info.name!r}, {self.as_dict()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Row) and other._info is self._info and other.values == self.values


# Overlay entry states.
_CLEAN, _ROW, _DELETED, _DELTAS = 0, 1, 2, 3


class _Entry:
    __slots__ = ("info", "key", "state", "row", "deltas")

    def __init__(self, info: _TableInfo, key: Tuple[Value, ...], state: int, row: Optional[List[Value]]) -> None:
        self.info = info
        self.key = key
        self.state = state
        self.row = row
        self.deltas: Optional[Dict[int, Union[int, float]]] = None


class Ctx:
    """The projection's view of its tables while it handles one batch."""

    def __init__(self, schema: _Schema, get: Getter) -> None:
        self._schema = schema
        self._host_get = get
        # Touched rows in first-touch order (dicts keep insertion order): deterministic ops.
        self._entries: Dict[Tuple[int, Tuple[Value, ...]], _Entry] = {}

    def get(self, table: Union[str, Table], key: KeyLike) -> Optional[Row]:
        """The row with this primary key: this batch's writes first, then the host's tables."""
        info = self._schema.table(table)
        k = info.key(key)
        e = self._entries.get((info.index, k))
        if e is None:
            base = self._host_get(info.name, list(k))
            base = list(base) if base is not None else None
            self._entries[(info.index, k)] = _Entry(info, k, _CLEAN, base)
            return Row(info, list(base)) if base is not None else None
        state = e.state
        if state == _CLEAN or state == _ROW:
            return Row(info, list(e.row)) if e.row is not None else None
        if state == _DELETED:
            return None
        # Deltas recorded blind: resolve them against the stored row now.
        base = self._host_get(info.name, list(k))
        row = list(base) if base is not None else info.default_row(k)
        for col, by in e.deltas.items():  # type: ignore[union-attr]
            row[col] = _add(row[col], by)
        e.state, e.row, e.deltas = _ROW, row, None
        return Row(info, list(row))

    def upsert(self, table: Union[str, Table], row: Union[Sequence[Any], Mapping[str, Any]]) -> None:
        """Insert or replace a whole row: a sequence with one value per declared column, in
        order, or a mapping by column name (missing columns take their defaults)."""
        info = self._schema.table(table)
        if isinstance(row, Mapping):
            values = list(info.defaults)
            for name, v in row.items():
                i = info.column(name)
                values[i] = info.check(i, v)
            for i in info.pk:
                if info.columns[i].name not in row:
                    raise ProjectionError(f"upsert into `{info.name}` lacks key column `{info.columns[i].name}`")
        else:
            if len(row) != len(info.columns):
                raise ProjectionError(
                    f"table `{info.name}` has {len(info.columns)} columns, upsert gave {len(row)} values"
                )
            values = [info.check(i, v) for i, v in enumerate(row)]
        self._put(info, values)

    def save(self, row: Row) -> None:
        """Write back a row from `get` or `new_row`."""
        self._put(row._info, list(row.values))

    def _put(self, info: _TableInfo, values: List[Value]) -> None:
        k = tuple(values[i] for i in info.pk)
        e = self._entries.get((info.index, k))
        if e is None:
            self._entries[(info.index, k)] = _Entry(info, k, _ROW, values)
        else:
            e.state, e.row, e.deltas = _ROW, values, None

    def new_row(self, table: Union[str, Table], key: KeyLike) -> Row:
        """A row of `table` with this key and every other column at its default (not saved)."""
        info = self._schema.table(table)
        return Row(info, info.default_row(info.key(key)))

    def delete(self, table: Union[str, Table], key: KeyLike) -> None:
        """Delete the row with this primary key."""
        info = self._schema.table(table)
        k = info.key(key)
        e = self._entries.get((info.index, k))
        if e is None:
            self._entries[(info.index, k)] = _Entry(info, k, _DELETED, None)
        else:
            e.state, e.row, e.deltas = _DELETED, None, None

    def increment(
        self,
        table: Union[str, Table],
        key: KeyLike,
        deltas: Optional[Mapping[str, Union[int, float]]] = None,
        **by_column: Union[int, float],
    ) -> None:
        """Add to numeric columns without reading the row; a missing row is created with
        the key and defaults. `ctx.increment("customers", cid, orders=1)` or
        `ctx.increment("customers", cid, {"orders": 1})`."""
        info = self._schema.table(table)
        k = info.key(key)
        items = list(deltas.items()) if deltas else []
        items.extend(by_column.items())
        if not items:
            return
        cols: List[Tuple[int, Union[int, float]]] = []
        for name, by in items:
            i = info.column(name)
            if i in info.pk_set:
                raise ProjectionError(f"cannot increment key column `{name}` of `{info.name}`")
            kind = info.columns[i].kind
            if kind is not Kind.INTEGER and kind is not Kind.REAL:
                raise ProjectionError(f"cannot increment {kind.value} column `{name}` of `{info.name}`")
            if by is None or isinstance(by, bool) or not isinstance(by, (int, float)):
                raise ProjectionError(f"cannot add {type(by).__name__} {by!r} to column `{info.name}.{name}`")
            cols.append((i, info.check(i, by)))
        e = self._entries.get((info.index, k))
        if e is None:
            e = self._entries[(info.index, k)] = _Entry(info, k, _DELTAS, None)
            e.deltas = {}
        state = e.state
        if state == _DELTAS:
            pending = e.deltas
            for i, by in cols:
                pending[i] = _add(pending[i], by) if i in pending else by  # type: ignore[index,operator]
            return
        if state == _ROW or (state == _CLEAN and e.row is not None):
            row = e.row if state == _ROW else list(e.row)  # type: ignore[arg-type]
        else:  # clean and absent, or deleted
            row = info.default_row(k)
        for i, by in cols:
            row[i] = _add(row[i], by)  # type: ignore[index]
        e.state, e.row, e.deltas = _ROW, row, None

    def ops(self) -> List[Op]:
        """The coalesced ops of the batch so far: at most one per touched row."""
        out: List[Op] = []
        for e in self._entries.values():
            st = e.state
            if st == _ROW:
                out.append(Upsert(e.info.name, list(e.row)))  # type: ignore[arg-type]
            elif st == _DELETED:
                out.append(Delete(e.info.name, list(e.key)))
            elif st == _DELTAS and e.deltas:
                cols = e.info.columns
                out.append(Increment(e.info.name, list(e.key), [(cols[i].name, by) for i, by in e.deltas.items()]))
        return out


# ---------------------------------------------------------------------------------------
# Logging


class Level(str, Enum):
    TRACE = "trace"
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


def _stderr_sink(level: str, message: str) -> None:
    print(f"[{level}] {message}", file=sys.stderr)


_log_sink: Callable[[str, str], None] = _stderr_sink


def log(level: Union[Level, str], message: str) -> None:
    """Log a line through the host (the host caps lines per batch). Outside the component
    (tests) lines go to stderr."""
    _log_sink(Level(level).value, str(message))


# ---------------------------------------------------------------------------------------
# The projection

Handler = Callable[[Event, Ctx], None]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ProjectionError):
        return str(exc)
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    # Name the innermost frame outside this file: usually the author's line. Walk the
    # frames by hand: the traceback module reads source files, and inside the component
    # every file-system call is a trapping stub.
    where = None
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if not code.co_filename.endswith("projector_sdk.py"):
            where = (code.co_filename.rsplit("/", 1)[-1], tb.tb_lineno, code.co_name)
        tb = tb.tb_next
    if where is None:
        return text
    return f"{text} (at {where[0]}:{where[1]} in {where[2]})"


class Projection:
    """A projection: name, version, interests, tables and handlers.

    `event_types=None` (the default) means: the event types of the `@on` handlers when
    there is no catch-all handler, else every type. Pass a list to choose ([] = all)."""

    def __init__(
        self,
        name: str,
        version: int,
        *,
        event_types: Optional[Iterable[str]] = None,
        stream_prefixes: Iterable[str] = (),
        handle: Optional[Handler] = None,
    ) -> None:
        self.name = name
        self.version = version
        self.event_types = list(event_types) if event_types is not None else None
        self.stream_prefixes = list(stream_prefixes)
        self.tables: List[Table] = []
        self._handlers: Dict[str, Handler] = {}
        self._catch_all: Optional[Handler] = handle
        self._schema: Optional[_Schema] = None

    def table(self, table: Table) -> Table:
        """Declare a table the projection owns. Returns it."""
        self.tables.append(table)
        self._schema = None
        return table

    def on(self, *event_types: str) -> Callable[[Handler], Handler]:
        """Decorator: `@projection.on("OrderCreated")` handles events of these types."""

        def register(fn: Handler) -> Handler:
            for t in event_types:
                if t in self._handlers:
                    raise ValueError(f"two handlers for event type {t!r}")
                self._handlers[t] = fn
            return fn

        return register

    def handler(self, fn: Handler) -> Handler:
        """Decorator: one `handle(event, ctx)` for every event without an `@on` handler."""
        self._catch_all = fn
        return fn

    # -- manifest ------------------------------------------------------------------------

    def manifest(self) -> Manifest:
        """The manifest, validated (raises ValueError for a malformed declaration)."""
        if not self.name:
            raise ValueError("a projection needs a name")
        if not (0 <= self.version <= 0xFFFFFFFF) or not isinstance(self.version, int):
            raise ValueError(f"version must be a u32, got {self.version!r}")
        if self.event_types is not None:
            event_types = list(self.event_types)
        elif self._catch_all is None:
            event_types = list(self._handlers)
        else:
            event_types = []
        seen = set()
        for t in self.tables:
            if t.name in seen:
                raise ValueError(f"table `{t.name}` is declared twice")
            seen.add(t.name)
            names = [c.name for c in t.columns]
            if len(set(names)) != len(names):
                raise ValueError(f"table `{t.name}` has a column declared twice")
            if not t.primary_key_columns:
                raise ValueError(f"table `{t.name}` needs a primary key")
            for cols in [t.primary_key_columns, *t.indexes]:
                for c in cols:
                    if c not in names:
                        raise ValueError(f"table `{t.name}` has no column `{c}`")
        return Manifest(self.name, self.version, event_types, list(self.stream_prefixes), list(self.tables))

    def schema(self) -> _Schema:
        if self._schema is None:
            self._schema = _Schema(self.manifest().tables)
        return self._schema

    # -- handling ------------------------------------------------------------------------

    def handle_batch(self, events: Sequence[Any], get: Getter) -> List[Op]:
        """Run a batch through one overlay and return its coalesced ops. `get` is the
        host's read-model lookup. Raises HandleError (message, event index) on failure.
        `events` are `Event`s or objects with the same fields (the WIT records)."""
        try:
            schema = self.schema()
        except Exception as e:
            raise HandleError(f"invalid manifest: {e}", None) from None
        ctx = Ctx(schema, get)
        handlers = self._handlers
        catch_all = self._catch_all
        index = 0
        try:
            for index, raw in enumerate(events):
                event = raw if isinstance(raw, Event) else Event._from_wit(raw)
                fn = handlers.get(event.event_type, catch_all)
                if fn is not None:
                    fn(event, ctx)
        except BaseException as e:  # noqa: BLE001 - every failure becomes a handle-error
            raise HandleError(_describe(e), index) from None
        try:
            return ctx.ops()
        except BaseException as e:  # noqa: BLE001
            raise HandleError(_describe(e), None) from None

    # -- the component -------------------------------------------------------------------

    def world(self) -> type:
        """The class componentize-py exports: end `app.py` with `WitWorld = projection.world()`.

        Binds to the generated `wit_world` module (present only in a componentize-py build;
        under plain CPython it returns a placeholder, so tests can import app.py). The
        manifest is validated here, so a bad declaration fails the build."""
        try:
            import wit_world  # type: ignore[import-not-found]
        except ImportError:
            # Plain CPython (tests importing app.py): nothing to bind to.
            self.manifest()
            return _NotInComponent
        from componentize_py_types import Err  # type: ignore[import-not-found]
        from wit_world.imports import log as wit_log  # type: ignore[import-not-found]
        from wit_world.imports import read_model  # type: ignore[import-not-found]
        from wit_world.imports import types as wt  # type: ignore[import-not-found]

        manifest = self.manifest()
        self.schema()
        projection = self

        kinds = {
            Kind.INTEGER: wt.ColumnKind.INTEGER,
            Kind.REAL: wt.ColumnKind.REAL,
            Kind.TEXT: wt.ColumnKind.TEXT,
            Kind.BLOB: wt.ColumnKind.BLOB,
            Kind.JSON: wt.ColumnKind.JSON,
        }
        levels = {lv.value: wt.Level[lv.name] for lv in Level}
        null = wt.Value_Null()
        to_wit_by_type = {
            int: wt.Value_Integer,
            float: wt.Value_Real,
            str: wt.Value_Text,
            bytes: wt.Value_Blob,
        }

        def to_wit(v: Value) -> Any:
            return null if v is None else to_wit_by_type[type(v)](v)

        def host_get(table: str, key: List[Value]) -> Optional[List[Value]]:
            row = read_model.get(table, [to_wit(v) for v in key])
            if row is None:
                return None
            return [getattr(v, "value", None) for v in row]

        def op_to_wit(op: Op) -> Any:
            if type(op) is Upsert:
                return wt.Op_Upsert(wt.RowOp(op.table, [to_wit(v) for v in op.row]))
            if type(op) is Delete:
                return wt.Op_Delete(wt.KeyOp(op.table, [to_wit(v) for v in op.key]))
            return wt.Op_Increment(
                wt.AddOp(op.table, [to_wit(v) for v in op.key], [wt.Delta(c, to_wit(by)) for c, by in op.deltas])
            )

        wit_manifest = wt.Manifest(
            manifest.name,
            manifest.version,
            wt.Interests(list(manifest.event_types), list(manifest.stream_prefixes)),
            [
                wt.Table(
                    t.name,
                    [wt.Column(c.name, kinds[c.kind], c.nullable) for c in t.columns],
                    list(t.primary_key_columns),
                    [list(ix) for ix in t.indexes],
                )
                for t in manifest.tables
            ],
        )

        global _log_sink

        def wit_sink(level: str, message: str) -> None:
            wit_log.log(levels[level], message)

        _log_sink = wit_sink
        # print() would reach a trapping WASI stub: send stdout/stderr lines to the log.
        sys.stdout = _LogWriter(Level.INFO.value)  # type: ignore[assignment]
        sys.stderr = _LogWriter(Level.WARN.value)  # type: ignore[assignment]
        _fence_clock_and_files()

        class WitWorld(wit_world.WitWorld):  # type: ignore[misc]
            def manifest(self) -> Any:
                return wit_manifest

            def handle(self, batch: List[Any]) -> List[Any]:
                _NoLateImports.active = True
                try:
                    ops = projection.handle_batch(batch, host_get)
                    return [op_to_wit(op) for op in ops]
                except HandleError as e:
                    error = wt.HandleError(e.message, e.event_index)
                except BaseException as e:  # noqa: BLE001 - never trap
                    error = wt.HandleError(_describe(e), None)
                finally:
                    _NoLateImports.active = False
                    for w in (sys.stdout, sys.stderr):
                        if isinstance(w, _LogWriter):
                            w.flush()
                raise Err(error)

        return WitWorld


def _fence_clock_and_files() -> None:
    """In the component every WASI call is a trapping stub (a trap carries no message).
    Turn the common ones into exceptions that name the cause instead."""
    import builtins
    import time

    def no_clock(*_args: Any, **_kw: Any) -> Any:
        raise ProjectionError(
            "projections have no clock (replays must be deterministic): use event.created_ms"
        )

    def no_files(*_args: Any, **_kw: Any) -> Any:
        raise ProjectionError("projections have no file system")

    for name in ("time", "time_ns", "monotonic", "monotonic_ns", "perf_counter",
                 "perf_counter_ns", "process_time", "process_time_ns", "sleep"):
        if hasattr(time, name):
            setattr(time, name, no_clock)
    builtins.open = no_files
    # A module first imported while handling events would be read from the (stubbed) file
    # system: refuse it with a message. Modules imported at build time stay importable.
    sys.meta_path.insert(0, _NoLateImports)  # type: ignore[arg-type]


class _NoLateImports:
    """A meta-path finder refusing imports of modules not loaded at build time."""

    import importlib.machinery as _machinery

    active = False  # set while a batch runs (the build itself still imports freely)

    @classmethod
    def find_spec(cls, name: str, path: Any = None, target: Any = None) -> None:
        if not cls.active:
            return None
        m = cls._machinery
        if m.BuiltinImporter.find_spec(name) is not None or m.FrozenImporter.find_spec(name) is not None:
            return None
        raise ImportError(
            f"cannot import {name!r} while handling events (the component has no file system): "
            "import it at the top of app.py"
        )


class _NotInComponent:
    """What `world()` returns outside a component build (no `wit_world` bindings)."""

    def __init__(self) -> None:
        raise RuntimeError("not running inside a componentize-py component")


class _LogWriter:
    """A text stream that logs each complete line (used for print() in the component)."""

    def __init__(self, level: str) -> None:
        self.level = level
        self.buf = ""

    def write(self, s: str) -> int:
        self.buf += s
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            _log_sink(self.level, line)
        return len(s)

    def flush(self) -> None:
        if self.buf:
            line, self.buf = self.buf, ""
            _log_sink(self.level, line)

    def isatty(self) -> bool:
        return False


# ---------------------------------------------------------------------------------------
# Testing: the host's side, in memory


class MemoryStore:
    """The host's tables in memory, for tests under CPython: applies ops with the host's
    semantics and serves `get`.

        store = MemoryStore(projection)
        store.run(events, batch_size=100)
        store.rows("orders")   # {key tuple: {column: value}}
    """

    def __init__(self, projection: Projection) -> None:
        self.projection = projection
        self.schema = projection.schema()
        self.tables: Dict[str, Dict[Tuple[Value, ...], List[Value]]] = {t.name: {} for t in self.schema.tables}
        self.gets = 0

    def get(self, table: str, key: List[Value]) -> Optional[List[Value]]:
        self.gets += 1
        row = self.tables[table].get(tuple(key))
        return list(row) if row is not None else None

    def apply(self, ops: Iterable[Op]) -> None:
        for op in ops:
            info = self.schema.table(op.table)
            rows = self.tables[op.table]
            if isinstance(op, Upsert):
                rows[tuple(op.row[i] for i in info.pk)] = list(op.row)
            elif isinstance(op, Delete):
                rows.pop(tuple(op.key), None)
            else:
                key = tuple(op.key)
                row = rows.get(key) or info.default_row(key)
                for name, by in op.deltas:
                    i = info.by_name[name]
                    row[i] = _add(row[i], by)
                rows[key] = row

    def handle(self, events: Sequence[Any]) -> List[Op]:
        """One batch: handle it and apply its ops (nothing applies when it fails)."""
        ops = self.projection.handle_batch(events, self.get)
        self.apply(ops)
        return ops

    def run(self, events: Iterable[Any], batch_size: int = 1000) -> None:
        batch: List[Any] = []
        for e in events:
            batch.append(e)
            if len(batch) >= batch_size:
                self.handle(batch)
                batch = []
        if batch:
            self.handle(batch)

    def rows(self, table: str) -> Dict[Tuple[Value, ...], Dict[str, Value]]:
        info = self.schema.table(table)
        return {k: {c.name: v for c, v in zip(info.columns, row)} for k, row in self.tables[table].items()}


def read_ndjson(path: str) -> Iterator[Event]:
    """Events from an NDJSON event file (the host's file format), for tests."""
    counts: Dict[str, int] = {}
    with open(path, "rb") as f:
        for n, line in enumerate(f):
            if not line.strip():
                continue
            o = _json.loads(line)
            stream = o["stream"]
            rev = o.get("revision", counts.get(stream, 0))
            counts[stream] = rev + 1
            yield Event(
                stream,
                o["type"],
                _json.dumps(o.get("data"), separators=(",", ":")).encode(),
                event_id=o.get("id", ""),
                revision=rev,
                position=Position(n, n),
                created_ms=o.get("created", 0) if isinstance(o.get("created", 0), int) else 0,
                metadata=_json.dumps(o["metadata"]).encode() if "metadata" in o else b"",
            )
