"""The database connection: SQLite kept per thread, PostgreSQL pooled; the write lock.

Models bind to ``database``, a proxy initialised when the store opens; nothing outside
``msgapi.store`` sees it. A request borrows a PostgreSQL connection and returns it
(``release``); each SQLite connection stays with its thread.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import peewee
from playhouse.pool import PooledPostgresqlDatabase
from psycopg2.extensions import TRANSACTION_STATUS_UNKNOWN

from ..config import Config, ConfigError
from ..database_url import postgresql_parameters, sqlite_path
from .dialect import POSTGRES, SQLITE, Dialect

database = peewee.DatabaseProxy()

# RETURNING arrived in 3.35; JSON functions are built in from 3.38.
MIN_SQLITE_VERSION = (3, 38, 0)

# SQLite allows one writer at a time. Threads that collide wait in SQLite's busy
# handler, which sleeps in steps of up to 100 ms: under load that sleeping, not the
# writing, dominates. Queueing this process's writers on a lock instead means they
# never collide with each other; the busy timeout still covers other processes.
# Per process by nature; PostgreSQL needs no such lock.
_sqlite_writes = threading.RLock()
_serialise_writes = False


_no_lock = contextlib.nullcontext()


def write_lock() -> contextlib.AbstractContextManager[Any]:
    """Hold around every write statement or write transaction, until it has committed."""
    # The lock itself, not a generator-based wrapper: this is on every write's path.
    return _sqlite_writes if _serialise_writes else _no_lock


# How long a writer waits for SQLite's lock before giving up (then 503, never 500).
SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    # WAL + NORMAL survives a killed process; only an OS crash may lose the last commits.
    "synchronous": "normal",
    "foreign_keys": 1,
    "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
    # Page cache per connection, in KiB. Every Waitress thread keeps its own connection and
    # so its own cache: over time each fills with different pages of a large table, and
    # the process holds threads x cache_size. Reads that miss it come from the operating
    # system's file cache, which every connection shares, so a small one costs little.
    "cache_size": -2_000,
}


class _ThreadSqlite(peewee.SqliteDatabase):
    """One SQLite connection per thread, opened on first use and kept for the thread's life.

    Opening a SQLite connection is cheap but not free, and a pool's checkout and
    return cost a fifth of a cached read; a local file never goes away, so each
    Waitress thread simply keeps its own. ``close_all`` closes every one of them
    (at shutdown and between tests, when no request is running).
    """

    keeps_connections = True
    dialect = SQLITE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._opened: list[Any] = []
        self._opened_lock = threading.Lock()

    def _connect(self) -> Any:
        # Switching a new file to WAL needs an exclusive lock, and SQLite answers "database
        # is locked" at once, without its busy handler, when another process holds the file
        # (two first starts together). Retried here within the busy timeout, as SQLite would.
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
        pause = 0.005
        while True:
            try:
                conn = super()._connect()
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.1)
        with self._opened_lock:
            self._opened.append(conn)
        return conn

    def manual_close(self) -> None:
        self.close()

    def close_idle(self) -> None:
        pass  # nothing is idle: every connection belongs to a thread

    def close_all(self) -> None:
        self.close()
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            try:
                conn.close()
            except Exception:  # already closed by its thread
                pass


class _PooledPostgres(PooledPostgresqlDatabase):
    """Peewee's pool, without a round trip on every checkout of a busy connection.

    Peewee pings each pooled connection (``SELECT 1``) when handing it out: a round
    trip per request. A connection returned moments ago is checked locally only; one
    that sat idle longer is still pinged. A connection that died unnoticed fails its
    request with a 503, and the error handler then drops it and every idle one.
    """

    PING_AFTER_IDLE_SECONDS = 5.0
    dialect = POSTGRES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._returned_at: dict[int, float] = {}

    def _is_closed(self, conn: Any) -> bool:
        returned = self._returned_at.get(self.conn_key(conn))
        if returned is not None and time.monotonic() - returned < self.PING_AFTER_IDLE_SECONDS:
            # psycopg2's own API: Peewee's adapter object that wraps it exists only in Peewee 4.
            return bool(conn.closed) or conn.get_transaction_status() == TRANSACTION_STATUS_UNKNOWN
        return super()._is_closed(conn)

    def _close(self, conn: Any, close_conn: bool = False) -> None:
        self._returned_at[self.conn_key(conn)] = time.monotonic()
        super()._close(conn, close_conn)

    def _close_raw(self, conn: Any) -> None:
        self._returned_at.pop(self.conn_key(conn), None)
        super()._close_raw(conn)


def _create_owner_only(path: Any) -> None:
    """Create the SQLite file, empty, readable by its owner only: it holds password hashes.

    SQLite gives the -wal and -shm files it creates beside it the same mode.
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"DATABASE_URL: cannot create {path}: {exc.strerror}") from None


def _casefold(value: str | None) -> str | None:
    return value.casefold() if isinstance(value, str) else value


def _next_updated_at(current: str | None, now: str) -> str:
    """``now``, or a microsecond after ``current`` if ``now`` is not later (both as SQLite stores them)."""
    if current is None:
        return now
    previous = datetime.datetime.fromisoformat(current)
    if datetime.datetime.fromisoformat(now) > previous:
        return now
    # str() is how the datetime adapter writes it: "2026-11-24 18:35:32.123457".
    return str(previous + datetime.timedelta(microseconds=1))


def open_database(config: Config) -> peewee.Database:
    """A pooled database for ``config.database_url``, not yet connected."""
    global _serialise_writes
    _serialise_writes = config.is_sqlite
    if config.is_sqlite and sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
        raise ConfigError(
            f"SQLite {sqlite3.sqlite_version} is too old: msgapi needs {'.'.join(map(str, MIN_SQLITE_VERSION))} "
            "or newer (RETURNING, built-in JSON); use a newer Python build, or PostgreSQL"
        )
    # Threads plus a little headroom: the runner's own start-up work and CLI commands.
    max_connections = config.threads + 4
    if config.is_sqlite:
        _create_owner_only(sqlite_path(config.database_url))
        db = _ThreadSqlite(
            str(sqlite_path(config.database_url)),
            pragmas=SQLITE_PRAGMAS,
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
            # Only so that close_all may close other threads' connections when they are done.
            check_same_thread=False,
        )
        # Unicode-aware case folding for search; SQLite's own lower() knows only ASCII.
        db.register_function(_casefold, "msgapi_casefold", 1)
        # Edits move updated_at strictly forward (see messages._next_updated_at).
        db.register_function(_next_updated_at, "msgapi_next_updated_at", 2)
        return db
    params = postgresql_parameters(config.database_url)
    # Bounded waits when the server or the network goes away: no request hangs for long.
    params.setdefault("connect_timeout", 5)
    params.setdefault("keepalives", 1)
    params.setdefault("keepalives_idle", 10)
    params.setdefault("keepalives_interval", 5)
    params.setdefault("keepalives_count", 3)
    params.setdefault("tcp_user_timeout", 15_000)
    return _PooledPostgres(
        params.pop("database"),
        max_connections=max_connections,
        stale_timeout=300,
        timeout=10,
        **params,
    )


def describe_open_failure(url: str, exc: Exception, setting: str = "DATABASE_URL") -> str:
    """One line for an operator: which database could not be opened, why, and what to check.

    Names the file, or the host, port, database and user; never the password.
    """
    reason = " ".join((str(exc).strip().splitlines() or [type(exc).__name__])[0].split())
    parts = urlsplit(url)
    if parts.password:
        for secret in {parts.password, unquote(parts.password)}:
            reason = reason.replace(secret, "***")
    if url.startswith("sqlite"):
        return (
            f"cannot open the SQLite database {sqlite_path(url)}: {reason}; "
            f"check {setting}, and that the file's folder exists and is writable"
        )
    try:
        port = parts.port or 5432
    except ValueError:
        port = "?"
    host = parts.hostname or "localhost"
    name = unquote(parts.path[1:])
    user = unquote(parts.username or "")
    lowered = reason.lower()
    if "database" in lowered and "does not exist" in lowered:
        hint = f"create it (createdb {name}) or fix the database name in {setting}"
    elif "password" in lowered or "authentication" in lowered or "role" in lowered:
        hint = f"check the user name and password in {setting}"
    else:
        hint = f"check that PostgreSQL is running and accepts connections on {host}:{port}, and {setting}"
    who = f" as user {user!r}" if user else ""
    return f"cannot connect to PostgreSQL database {name!r} on {host}:{port}{who}: {reason}; {hint}"


def release() -> None:
    """At the end of a request: give a PostgreSQL connection back to the pool.

    SQLite connections stay with their thread (see ``_ThreadSqlite``).
    """
    if not getattr(database.obj, "keeps_connections", False) and not database.is_closed():
        database.close()


def discard_broken() -> None:
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


def dialect() -> Dialect:
    """The open database's dialect (see dialect.py)."""
    return database.obj.dialect


def time_limit(milliseconds: int) -> contextlib.AbstractContextManager[Callable[..., Any]]:
    """Run compiled statements so that each stops after ``milliseconds``.

    Yields ``run(query, *args)``, to use instead of ``query.execute(*args)`` inside the
    block. A statement over the limit raises ``TimeLimitExceeded``; the connection stays usable.
    """
    return dialect().time_limit(database, milliseconds)


def single_row(query: peewee.Query) -> dict[str, Any] | None:
    rows = list(query.dicts().execute())
    return rows[0] if rows else None


def write_returning(query: peewee.Query) -> dict[str, Any] | None:
    """Run a write with RETURNING; all rows are read inside the lock, which is when it commits."""
    with write_lock():
        return single_row(query)


def write(query: peewee.Query) -> int:
    with write_lock():
        return query.execute()
