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


def open_database(config: Config) -> peewee.Database:
    """A pooled database for ``config.database_url``, not yet connected."""
    # Threads plus a little headroom: the runner's own start-up work and CLI commands.
    max_connections = config.threads + 4
    if config.is_sqlite:
        return PooledSqliteDatabase(
            str(sqlite_path(config.database_url)),
            pragmas=SQLITE_PRAGMAS,
            max_connections=max_connections,
            stale_timeout=None,
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
            check_same_thread=False,
        )
    params = parse(config.database_url)
    # playhouse leaves percent-escapes in the credentials; libpq wants them decoded.
    for key in ("user", "password"):
        if key in params:
            params[key] = unquote(params[key])
    params.setdefault("connect_timeout", 5)
    return PooledPostgresqlDatabase(
        params.pop("database"),
        max_connections=max_connections,
        stale_timeout=300,
        timeout=10,
        **params,
    )


def utcnow() -> datetime.datetime:
    """Now in UTC, naive: the database stores UTC without a zone, and we render it with ``Z``."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
