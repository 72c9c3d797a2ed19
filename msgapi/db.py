"""The deferred database: models bind to it at import; the app factory opens it from a URL.

SQLite and PostgreSQL both go through a Peewee pool, so a request borrows a
connection and returns it, instead of opening one per request. The pool keeps
one connection per thread; it is sized to Waitress's threads.
"""

from __future__ import annotations

import datetime
from urllib.parse import unquote

import peewee
from playhouse.db_url import parse
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

from .config import Config, sqlite_path

database = peewee.DatabaseProxy()

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


def utcnow() -> datetime.datetime:
    """Now in UTC, naive: the database stores UTC without a zone, and we render it with ``Z``."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
