"""Creating the tables, their indexes and the search index; rebuilding old SQLite tables.

Safe to run from several processes at once: every start runs it.
"""

from __future__ import annotations

import logging

import peewee

from .connection import database, dialect, write_lock
from .schema import ALL_MODELS, BaseModel, Message, User

log = logging.getLogger("msgapi.store")


def create_tables() -> None:
    """Create missing tables and indexes; safe to run from several processes at once.

    On SQLite, tables made before ids were never reused are rebuilt first.
    """
    sqlite = dialect().name == "sqlite"
    if sqlite:
        _rebuild_tables_that_reuse_ids()
    with write_lock(), dialect().schema_transaction(database):
        database.create_tables(ALL_MODELS, safe=True)
        # The author index before (author_id, updated_at, id) took its place, in older databases.
        database.execute_sql("DROP INDEX IF EXISTS messages_author_id")
        if sqlite:
            _create_sqlite_search_index()
        else:
            _create_postgres_search_index()


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


def _create_sqlite_search_index() -> None:
    """The trigram index and its triggers, filled from the existing rows, once."""
    exists = database.execute_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages_search'"
    ).fetchone()
    if not exists:
        for statement in _SQLITE_SEARCH_INDEX:
            database.execute_sql(statement)


def _create_postgres_search_index() -> None:
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


_NEVER_REUSED_ID_MODELS = (User, Message)  # parents first: messages refer to users


def _sqlite_tables_reusing_ids() -> list[type[BaseModel]]:
    """The models whose existing SQLite table was created without AUTOINCREMENT."""
    rows = database.execute_sql("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
    ddl = dict(rows)
    return [
        model
        for model in _NEVER_REUSED_ID_MODELS
        if model._meta.table_name in ddl and "AUTOINCREMENT" not in ddl[model._meta.table_name].upper()
    ]


def _rebuild_tables_that_reuse_ids() -> None:
    """Rebuild SQLite tables created without AUTOINCREMENT, keeping every row and id.

    SQLite cannot add AUTOINCREMENT to a table, so this follows its documented
    procedure for other schema changes: foreign keys off, then in one transaction
    create the new table, copy the rows, drop the old one, rename the new one,
    check the foreign keys, commit. Indexes are recreated by ``create_tables``.
    The copy sets the table's sequence to its highest id; an id deleted before
    this ran may still be handed out once more.
    """
    if not _sqlite_tables_reusing_ids():
        return
    with write_lock():
        # A no-op inside a transaction, so it is switched off before it and back on after.
        database.execute_sql("PRAGMA foreign_keys = OFF")
        try:
            with database.atomic(lock_type="IMMEDIATE"):
                # Checked again under the write lock: another process may have just done it.
                for model in _sqlite_tables_reusing_ids():
                    _rebuild_sqlite_table(model)
                broken = database.execute_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise peewee.IntegrityError(f"foreign keys broken by the rebuild: {broken[:5]}")
        finally:
            database.execute_sql("PRAGMA foreign_keys = ON")


def _rebuild_sqlite_table(model: type[BaseModel]) -> None:
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
