"""The data layer. ``open_store(config)`` opens the database and gives the ``Store``.

Resources, middleware, the rate limiter and the command line receive a ``Store`` and
reach the data only through it; none of them builds SQL or sees a connection.

    connection.py   SQLite per thread, pooled PostgreSQL, the write lock, open/release
    dialect.py      what differs between SQLite and PostgreSQL, chosen once at open
    compiled.py     queries compiled once, run with placeholders that cannot collide
    schema.py       the tables as Peewee models
    tables.py       creating them (and the search index) at start-up
    render.py       a message and a timestamp as the API shows them
    users.py messages.py listing.py idempotency.py limits.py revocations.py importing.py
                    the queries of each, named for what they answer
"""

from __future__ import annotations

from typing import Any

from ..config import Config
from . import idempotency, importing, limits, listing, messages, revocations, users
from .connection import database, describe_open_failure, discard_broken, open_database, release
from .dialect import TimeLimitExceeded
from .render import RenderedMessage, etag_timestamp
from .schema import MAX_ID, MAX_USERNAME_LENGTH, User, parse_id
from .tables import create_tables

__all__ = [
    "MAX_ID",
    "MAX_USERNAME_LENGTH",
    "RenderedMessage",
    "Store",
    "TimeLimitExceeded",
    "User",
    "describe_open_failure",
    "etag_timestamp",
    "open_store",
    "parse_id",
]


class Store:
    """One open database and its queries, grouped by what they answer.

    ``users``, ``messages`` (one at a time), ``listing`` (pages of them),
    ``idempotency`` (keyed creates), ``limits`` (rate-limit counters), ``revocations``
    and ``importing`` (the old service's rows). Peewee binds models to one database
    per process, so one store is open at a time; a test may pass any object with the
    same attributes instead (``create_app(config, store=...)``).
    """

    users = users
    messages = messages
    listing = listing
    idempotency = idempotency
    limits = limits
    revocations = revocations
    importing = importing

    def release(self) -> None:
        """At the end of a request: give its pooled connection back (SQLite keeps its own)."""
        release()

    def discard_broken(self) -> None:
        """After a connection error: drop this thread's connection and every idle pooled one."""
        discard_broken()

    def ping(self) -> None:
        """Raise (a database error) unless the database answers."""
        database.execute_sql("SELECT 1").fetchone()

    def view_statistics(self) -> dict[str, int]:
        return messages.view_statistics()

    def pool_statistics(self) -> dict[str, int]:
        """Connections in use, idle, and the most there may be (all 0 for SQLite, which keeps one per thread)."""
        # Peewee's pool keeps these in private attributes; absent ones read as 0, never an error.
        pool: Any = database.obj
        return {
            "in_use": len(getattr(pool, "_in_use", ())),
            "idle": len(getattr(pool, "_connections", ())),
            "max": getattr(pool, "_max_connections", 0) or 0,
        }

    def close(self) -> None:
        """Close every connection (at shutdown, and between tests)."""
        database.close_all()


def open_store(config: Config) -> Store:
    """Open ``config.database_url`` and create any missing tables.

    Raises ``peewee.OperationalError`` or ``InterfaceError`` when the database cannot be
    opened (``describe_open_failure`` words it for an operator).
    """
    database.initialize(open_database(config))
    try:
        create_tables()
    finally:
        database.close()
    return Store()
