"""`probe-py`: on every event, try to reach outside the sandbox and record what happened.

Used by host/tests/sandbox_langs.rs. Each attempt in `ATTEMPTS` runs inside try/except on
every event; `probes(name, outcome)` holds one row per attempt: "denied: <exception
class>", "empty", or the value observed. The attempts in `TRAPPING` reach a WASI stub
that traps (no exception to catch: the whole batch fails), so they run only for an
`Escape` event naming one of them (`{"attempt": "socket"}`), still inside try/except.
Everything is imported here, at build time: the SDK refuses a module first imported
while handling events.
"""

import datetime
import io
import os
import random
import socket
import time
from typing import Callable

from projector_sdk import Ctx, Event, Kind, Projection, Table

projection = Projection("probe-py", 1, event_types=[])
projection.table(
    Table("probes").column("name", Kind.TEXT).column("outcome", Kind.TEXT).primary_key("name")
)


def read_file() -> str:
    with open("/etc/passwd") as f:
        return "read " + str(len(f.read())) + " chars"


def write_file() -> str:
    with open("/tmp/x", "w") as f:
        f.write("x")
    return "written"


def env() -> str:
    names = sorted(dict(os.environ))
    return "empty" if not names else "vars: " + ",".join(names)


def getenv() -> str:
    return repr(os.getenv("HOME"))


def clock() -> str:
    return repr(time.time())


def today() -> str:
    return datetime.date.today().isoformat()


_first_random = None


def rand() -> str:
    # The first number drawn by this instance (a fresh one per batch): the same whatever
    # the batch size, as long as the seed is fixed when the component is built.
    global _first_random
    if _first_random is None:
        _first_random = random.random()
    return repr(_first_random)


def str_hash() -> str:
    # String hashing is salted per process in CPython: here the salt is the build's.
    return str(hash("projector"))


ATTEMPTS = {
    "read_file": read_file,
    "write_file": write_file,
    "env": env,
    "getenv_home": getenv,
    "clock": clock,
    "date_today": today,
    "random": rand,
    "str_hash": str_hash,
}


def list_dir() -> str:
    return repr(os.listdir("/"))


def scandir() -> str:
    return repr(list(os.scandir("/")))


def stat() -> str:
    return repr(os.stat("/etc/passwd"))


def os_open() -> str:
    return repr(os.open("/etc/passwd", os.O_RDONLY))


def io_open() -> str:
    with io.open("/etc/passwd") as f:
        return f.read()


def connect() -> str:
    s = socket.socket()
    s.connect(("127.0.0.1", 22))
    return "connected"


def now() -> str:
    return datetime.datetime.now().isoformat()


def gmtime() -> str:
    return repr(time.gmtime())


def urandom() -> str:
    return os.urandom(8).hex()


def system_random() -> str:
    return repr(random.SystemRandom().random())


TRAPPING = {
    "list_dir": list_dir,
    "scandir": scandir,
    "stat": stat,
    "os_open": os_open,
    "io_open": io_open,
    "socket": connect,
    "datetime_now": now,
    "gmtime": gmtime,
    "urandom": urandom,
    "system_random": system_random,
}


def attempt(ctx: Ctx, name: str, fn: Callable[[], str]) -> None:
    try:
        outcome = fn()
    except Exception as e:  # noqa: BLE001 - recording the failure is the point
        outcome = "denied: " + type(e).__name__
    ctx.upsert("probes", {"name": name, "outcome": outcome})


@projection.handler
def probe(event: Event, ctx: Ctx) -> None:
    if event.event_type == "Escape":
        name = event.json["attempt"]
        attempt(ctx, name, TRAPPING[name])
        return
    for name, fn in ATTEMPTS.items():
        attempt(ctx, name, fn)


WitWorld = projection.world()
