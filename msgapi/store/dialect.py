"""What differs between SQLite and PostgreSQL, in one place, chosen once when the store opens.

Each database class of ``connection.py`` carries its dialect; queries ask the open
database's dialect (``connection.dialect()``) while they are built, never its type.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import peewee


class TimeLimitExceeded(Exception):
    """A statement run under ``time_limit`` was stopped by the database."""


# SQLite calls the progress handler every this many virtual machine steps: often enough
# to stop within a millisecond or so, rarely enough to cost nothing measurable.
SQLITE_PROGRESS_STEPS = 4000
_QUERY_CANCELED = "57014"  # PostgreSQL's SQLSTATE for a statement stopped by statement_timeout


class SqliteDialect:
    name = "sqlite"
    # One request at a time per process runs here (see scheduling.py): no reader ever waits
    # for another's view statement, so there is nothing to batch.
    batches_views = False
    # Searches of 3+ characters may take their candidates from the trigram index (listing.py).
    counts_search_matches = True

    def message_object(self, names: list[str], values: list[Any]) -> peewee.Node:
        """A JSON object of ``names`` and ``values``, as compact text."""
        return peewee.fn.json_object(*[item for pair in zip(names, values, strict=True) for item in pair])

    def rfc3339(self, column: peewee.ColumnBase) -> peewee.Node:
        # Stored as Python writes a naive datetime: "2026-11-24 18:35:32[.123456]".
        padded = peewee.fn.substr(column.concat(".000000"), 1, 26)
        return peewee.fn.replace(padded, " ", "T").concat("Z")

    def fold_search(self, text: str) -> str:
        # SQLite's LIKE folds ASCII only: both sides go through Python's casefold instead.
        return text.casefold()

    def content_like(self, column: peewee.ColumnBase, pattern: str) -> peewee.Node:
        folded = peewee.fn.msgapi_casefold(column)
        return peewee.NodeList((folded, peewee.SQL("LIKE"), pattern, peewee.SQL("ESCAPE '\\'")))

    def next_timestamp(self, column: peewee.ColumnBase, now: Any) -> peewee.Node:
        """``now``, or a microsecond after ``column`` if the clock has not passed it."""
        return peewee.fn.msgapi_next_updated_at(column, now)

    def never_reused_id(self, ddl: peewee.NodeList) -> peewee.NodeList:
        # A plain INTEGER PRIMARY KEY gives the next row the highest id + 1, reusing a deleted newest id.
        return peewee.NodeList((ddl, peewee.SQL("AUTOINCREMENT")))

    def skip_locked(self, query: peewee.Select) -> peewee.Select:
        return query  # one writer at a time: nothing is ever locked by another writer

    def after_explicit_ids(self, database: peewee.Database, tables: tuple[str, ...]) -> None:
        pass  # AUTOINCREMENT's counter follows the highest id inserted, explicit or not

    @contextlib.contextmanager
    def schema_transaction(self, database: peewee.Database) -> Iterator[None]:
        """The transaction that creates the schema, one process at a time."""
        # The write lock before the schema is read: a deferred transaction that reads, then
        # writes after another process committed, fails at once with "database is locked".
        with database.atomic("IMMEDIATE"):
            yield

    @contextlib.contextmanager
    def time_limit(self, database: peewee.Database, milliseconds: int) -> Iterator[Callable[..., Any]]:
        # A progress handler on the connection aborts the statement (checked while rows are read, too).
        conn = database.connection()
        deadline = time.monotonic() + milliseconds / 1000
        conn.set_progress_handler(lambda: time.monotonic() > deadline, SQLITE_PROGRESS_STEPS)
        try:
            yield lambda query, *args: query.execute(*args)
        except peewee.OperationalError as exc:
            if str(exc) == "interrupted":
                raise TimeLimitExceeded() from None
            raise
        finally:
            conn.set_progress_handler(None, SQLITE_PROGRESS_STEPS)


class PostgresDialect:
    name = "postgresql"
    batches_views = True
    # ILIKE, with the planner choosing pg_trgm's index or the ordering's from statistics.
    counts_search_matches = False

    def message_object(self, names: list[str], values: list[Any]) -> peewee.Node:
        # row_to_json writes compact JSON, byte for byte what SQLite's json_object writes (and
        # DRF wrote); json_build_object would space its members out ("id" : 1, ...).
        members = peewee.Select(columns=[value.alias(name) for name, value in zip(names, values, strict=True)])
        prefix, suffix = peewee.SQL("(SELECT row_to_json(message)::text FROM"), peewee.SQL(")")
        return peewee.NodeList((prefix, members.alias("message"), suffix))

    def rfc3339(self, column: peewee.ColumnBase) -> peewee.Node:
        return peewee.fn.to_char(column, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')

    def fold_search(self, text: str) -> str:
        return text  # ILIKE folds all of Unicode itself

    def content_like(self, column: peewee.ColumnBase, pattern: str) -> peewee.Node:
        return peewee.NodeList((column, peewee.SQL("ILIKE"), pattern, peewee.SQL("ESCAPE '\\'")))

    def next_timestamp(self, column: peewee.ColumnBase, now: Any) -> peewee.Node:
        return peewee.fn.GREATEST(now, column + peewee.SQL("interval '1 microsecond'"))

    def never_reused_id(self, ddl: peewee.NodeList) -> peewee.NodeList:
        return ddl  # SERIAL is a sequence, which never hands an id out twice

    def skip_locked(self, query: peewee.Select) -> peewee.Select:
        # Two writers pruning at once skip each other's rows instead of deadlocking on them.
        return query.for_update("FOR UPDATE SKIP LOCKED")

    def after_explicit_ids(self, database: peewee.Database, tables: tuple[str, ...]) -> None:
        # Explicit ids leave the sequences behind; the next insert would collide.
        for table in tables:
            database.execute_sql(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST((SELECT MAX(id) FROM {table}), 1))"
            )

    @contextlib.contextmanager
    def schema_transaction(self, database: peewee.Database) -> Iterator[None]:
        """The transaction that creates the schema, one process at a time."""
        with database.atomic():
            # CREATE TABLE IF NOT EXISTS still races in PostgreSQL's catalog; serialise it.
            database.execute_sql("SELECT pg_advisory_xact_lock(7466734)")
            yield

    @contextlib.contextmanager
    def time_limit(self, database: peewee.Database, milliseconds: int) -> Iterator[Callable[..., Any]]:
        # Sent with the statement, in the same round trip and the same implicit transaction.
        prefix = f"SET LOCAL statement_timeout = {int(milliseconds)}; "
        try:
            yield lambda query, *args: query.execute(*args, sql_prefix=prefix)
        except peewee.OperationalError as exc:
            if getattr(exc.__context__, "pgcode", None) == _QUERY_CANCELED:
                raise TimeLimitExceeded() from None
            raise


SQLITE = SqliteDialect()
POSTGRES = PostgresDialect()

Dialect = SqliteDialect | PostgresDialect
