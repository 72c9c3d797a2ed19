"""The deferred database: models bind to it at import; the app factory opens it from a URL.

SQLite and PostgreSQL both go through a Peewee pool, so a request borrows a
connection and returns it, instead of opening one per request. The pool keeps
one connection per thread; it is sized to Waitress's threads.
"""

from __future__ import annotations

import contextlib
import datetime
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

import peewee
from playhouse.db_url import parse
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

from .config import Config, sqlite_path

database = peewee.DatabaseProxy()

# SQLite allows one writer at a time. Threads that collide wait in SQLite's busy
# handler, which sleeps in steps of up to 100 ms: under load that sleeping, not the
# writing, dominates. Queueing this process's writers on a lock instead means they
# never collide with each other; the busy timeout still covers other processes.
# Per process by nature; PostgreSQL needs no such lock.
_sqlite_writes = threading.RLock()
_serialise_writes = False


@contextlib.contextmanager
def write_lock() -> Iterator[None]:
    """Hold around every write statement or write transaction, until it has committed."""
    if not _serialise_writes:
        yield
        return
    with _sqlite_writes:
        yield

# How long a writer waits for SQLite's lock before giving up (then 503, never 500).
SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    # WAL + NORMAL survives a killed process; only an OS crash may lose the last commits.
    "synchronous": "normal",
    "foreign_keys": 1,
    "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
    "cache_size": -16_000,  # 16 MB
}


def _casefold(value: str | None) -> str | None:
    return value.casefold() if isinstance(value, str) else value


def open_database(config: Config) -> peewee.Database:
    """A pooled database for ``config.database_url``, not yet connected."""
    global _serialise_writes
    _serialise_writes = config.is_sqlite
    # Threads plus a little headroom: the runner's own start-up work and CLI commands.
    max_connections = config.threads + 4
    if config.is_sqlite:
        db = PooledSqliteDatabase(
            str(sqlite_path(config.database_url)),
            pragmas=SQLITE_PRAGMAS,
            max_connections=max_connections,
            stale_timeout=None,
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
            check_same_thread=False,
        )
        # Unicode-aware case folding for search; SQLite's own lower() knows only ASCII.
        db.register_function(_casefold, "msgapi_casefold", 1)
        return db
    params = parse(config.database_url)
    # playhouse leaves percent-escapes in the credentials; libpq wants them decoded.
    for key in ("user", "password"):
        if key in params:
            params[key] = unquote(params[key])
    # Bounded waits when the server or the network goes away: no request hangs for long.
    params.setdefault("connect_timeout", 5)
    params.setdefault("keepalives", 1)
    params.setdefault("keepalives_idle", 10)
    params.setdefault("keepalives_interval", 5)
    params.setdefault("keepalives_count", 3)
    params.setdefault("tcp_user_timeout", 15_000)
    return PooledPostgresqlDatabase(
        params.pop("database"),
        max_connections=max_connections,
        stale_timeout=300,
        timeout=10,
        **params,
    )


def discard_broken_connections() -> None:
    """After a connection error: drop this thread's connection and every idle pooled one.

    When the database went away, the idle connections died with it; handing them
    out again would fail one request per connection after the database is back.
    """
    pool = database.obj
    if pool is None:
        return
    try:
        if not pool.is_closed():
            pool.manual_close()
        pool.close_idle()
    except Exception:  # closing a dead connection may itself fail; the pool forgets it either way
        pass


class PreparedQuery:
    """A Peewee query compiled to SQL once per database, then run with fresh parameters.

    Building and compiling a Peewee query costs far more than running it (about
    250 µs against 16 µs for a view on SQLite), and the hot statements never change
    shape. ``build`` is called once, with sample arguments, to produce the query;
    each parameter of the compiled SQL that equals a sample is bound to that
    argument on every run, the rest are constants of the query. Samples must be
    values no constant of the query could equal.
    """

    def __init__(self, build: Callable[..., peewee.Query], *samples: Any) -> None:
        self._build = build
        self._samples = samples
        self._compiled: weakref.WeakKeyDictionary[peewee.Database, tuple[str, list[tuple[bool, Any]]]] = (
            weakref.WeakKeyDictionary()
        )

    def _compile(self, db: peewee.Database) -> tuple[str, list[tuple[bool, Any]]]:
        sql, params = db.get_sql_context().sql(self._build(*self._samples)).query()
        slots: list[tuple[bool, Any]] = []
        for param in params:
            matches = [i for i, sample in enumerate(self._samples) if type(sample) is type(param) and sample == param]
            slots.append((True, matches[0]) if matches else (False, param))
        compiled = (sql, slots)
        self._compiled[db] = compiled
        return compiled

    def execute(self, *args: Any) -> Any:
        """The cursor, after executing with ``args`` in place of the samples."""
        db = database.obj
        sql, slots = self._compiled.get(db) or self._compile(db)
        return database.execute_sql(sql, [args[value] if is_arg else value for is_arg, value in slots])


def utcnow() -> datetime.datetime:
    """Now in UTC, naive: the database stores UTC without a zone, and we render it with ``Z``."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
