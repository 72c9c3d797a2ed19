"""What differs between SQLite and PostgreSQL, in one place, chosen once when the store opens.

Each database class of ``connection.py`` carries its dialect; queries ask the open
database's dialect (``connection.dialect()``) while they are built, never its type.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import peewee

log = logging.getLogger("msgapi.store")


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

    def create_search_index(self, database: peewee.Database) -> None:
        """FTS5's trigram index and its triggers, filled from the existing rows, once."""
        exists = database.execute_sql(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages_search'"
        ).fetchone()
        if not exists:
            for statement in _SQLITE_SEARCH_INDEX:
                database.execute_sql(statement)

    def rebuild_tables_that_reuse_ids(self, database: peewee.Database, models: tuple[type[peewee.Model], ...]) -> None:
        """Rebuild the tables of ``models`` created without AUTOINCREMENT, keeping every row and id.

        SQLite cannot add AUTOINCREMENT to a table, so this follows its documented
        procedure for other schema changes: foreign keys off, then in one transaction
        create the new table, copy the rows, drop the old one, rename the new one,
        check the foreign keys, commit. Indexes are recreated with the other tables'.
        The copy sets the table's sequence to its highest id; an id deleted before
        this ran may still be handed out once more. ``models`` lists parents first.
        """
        if not _sqlite_tables_reusing_ids(database, models):
            return
        # A no-op inside a transaction, so it is switched off before it and back on after.
        database.execute_sql("PRAGMA foreign_keys = OFF")
        try:
            with database.atomic(lock_type="IMMEDIATE"):
                # Checked again under the write lock: another process may have just done it.
                for model in _sqlite_tables_reusing_ids(database, models):
                    _rebuild_sqlite_table(database, model)
                broken = database.execute_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise peewee.IntegrityError(f"foreign keys broken by the rebuild: {broken[:5]}")
        finally:
            database.execute_sql("PRAGMA foreign_keys = ON")

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

    def create_search_index(self, database: peewee.Database) -> None:
        """pg_trgm's GIN index on content, which serves ILIKE '%...%' for 3+ characters.

        Creating the extension needs a superuser, or (pg_trgm being trusted) a user with
        CREATE on the database. Without it msgapi still runs: searches then scan, stopped
        at LIST_TIME_LIMIT_MS, and a warning says what to run.
        """
        try:
            with database.atomic():
                database.execute_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
                database.execute_sql(
                    "CREATE INDEX IF NOT EXISTS messages_content_trgm ON messages USING gin (content gin_trgm_ops)"
                )
        except peewee.DatabaseError as exc:
            first_line = (str(exc).strip().splitlines() or [""])[0]
            log.warning(
                "search is not indexed: %s. As a superuser, run in this database: CREATE EXTENSION pg_trgm; "
                "CREATE INDEX messages_content_trgm ON messages USING gin (content gin_trgm_ops);",
                first_line,
            )

    def rebuild_tables_that_reuse_ids(self, database: peewee.Database, models: tuple[type[peewee.Model], ...]) -> None:
        pass  # SERIAL never reused an id: no PostgreSQL table needs rebuilding

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


# Contentless: the index holds the case-folded text, which is no column of messages. The
# triggers fold with msgapi_casefold, the function connection.open_database registers on every
# connection; a view (UPDATE of views only) does not fire them.
_SQLITE_SEARCH_INDEX = (
    "CREATE VIRTUAL TABLE messages_search USING fts5(content, content='', tokenize='trigram case_sensitive 1')",
    """CREATE TRIGGER messages_search_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_search (rowid, content) VALUES (new.id, msgapi_casefold(new.content));
    END""",
    """CREATE TRIGGER messages_search_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_search (messages_search, rowid, content)
        VALUES ('delete', old.id, msgapi_casefold(old.content));
    END""",
    """CREATE TRIGGER messages_search_update AFTER UPDATE OF content ON messages BEGIN
        INSERT INTO messages_search (messages_search, rowid, content)
        VALUES ('delete', old.id, msgapi_casefold(old.content));
        INSERT INTO messages_search (rowid, content) VALUES (new.id, msgapi_casefold(new.content));
    END""",
    "INSERT INTO messages_search (rowid, content) SELECT id, msgapi_casefold(content) FROM messages",
)


def _sqlite_tables_reusing_ids(
    database: peewee.Database, models: tuple[type[peewee.Model], ...]
) -> list[type[peewee.Model]]:
    """The ``models`` whose existing SQLite table was created without AUTOINCREMENT."""
    ddl = dict(database.execute_sql("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
    return [
        model
        for model in models
        if model._meta.table_name in ddl and "AUTOINCREMENT" not in ddl[model._meta.table_name].upper()
    ]


def _rebuild_sqlite_table(database: peewee.Database, model: type[peewee.Model]) -> None:
    table = model._meta.table_name
    rebuilt = f"{table}_rebuilt"
    create_sql, params = model._schema._create_table(safe=False).query()
    prefix = f'CREATE TABLE "{table}" '
    assert create_sql.startswith(prefix) and not params, create_sql
    columns = ", ".join(f'"{field.column_name}"' for field in model._meta.sorted_fields)
    database.execute_sql(f'DROP TABLE IF EXISTS "{rebuilt}"')
    database.execute_sql(f'CREATE TABLE "{rebuilt}" ' + create_sql[len(prefix) :])
    database.execute_sql(f'INSERT INTO "{rebuilt}" ({columns}) SELECT {columns} FROM "{table}"')
    database.execute_sql(f'DROP TABLE "{table}"')
    database.execute_sql(f'ALTER TABLE "{rebuilt}" RENAME TO "{table}"')


SQLITE = SqliteDialect()
POSTGRES = PostgresDialect()

Dialect = SqliteDialect | PostgresDialect
