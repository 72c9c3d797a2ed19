"""Creating the tables and their indexes at start, with the dialect's search index and rebuilds.

Safe to run from several processes at once: every start runs it.
"""

from __future__ import annotations

from .connection import database, dialect, write_lock
from .schema import ALL_MODELS, Message, User

_NEVER_REUSED_ID_MODELS = (User, Message)  # parents first: messages refer to users


def create_tables() -> None:
    """Create missing tables and indexes; safe to run from several processes at once.

    On SQLite, tables made before ids were never reused are rebuilt first.
    """
    with write_lock():
        # Outside the schema transaction: SQLite's rebuild switches foreign keys off, a no-op inside one.
        dialect().rebuild_tables_that_reuse_ids(database, _NEVER_REUSED_ID_MODELS)
        with dialect().schema_transaction(database):
            database.create_tables(ALL_MODELS, safe=True)
            # The author index before (author_id, updated_at, id) took its place, in older databases.
            database.execute_sql("DROP INDEX IF EXISTS messages_author_id")
            dialect().create_search_index(database)
