"""Messages one at a time: read, count a view, create, replace, delete.

Each write that must be atomic is one statement (a view is ``UPDATE ... SET views =
views + 1 ... RETURNING``), so concurrent requests cannot lose an update. Messages come
back as the API's JSON text with their entity tag (``RenderedMessage``), or None when
there is no such message.
"""

from __future__ import annotations

import datetime
import types
import weakref
from collections.abc import Sequence
from typing import Any

import peewee

from ..viewcount import ViewBatcher
from .compiled import PreparedQuery
from .connection import database, dialect, write_lock
from .render import RenderedMessage, first_row, message_etag, message_json, rendered_message
from .revocations import login_not_revoked
from .schema import MAX_ID, Message, User, utcnow


def _author_name() -> peewee.Expression:
    """A scalar subquery for the author's username, usable inside RETURNING."""
    Author = User.alias("author_user")
    return Author.select(Author.username).where(Author.id == Message.author)


# A message's columns, for message_json, in a statement on the messages table itself.
_MESSAGE_ROW = types.SimpleNamespace(
    id=Message.id,
    content=Message.content,
    views=Message.views,
    created_at=Message.created_at,
    updated_at=Message.updated_at,
    author=_author_name(),
)


def _next_updated_at(now: Any) -> peewee.Node:
    """``now``, or a microsecond after the current ``updated_at`` if the clock has not passed it.

    So two edits of one message never share an ``updated_at``, whatever the clocks of the
    processes that made them: the entity tag changes with every edit.
    """
    return dialect().next_timestamp(Message.updated_at, now)


_GET_MESSAGE = PreparedQuery(
    lambda message_id: Message.select(message_json(_MESSAGE_ROW), Message.updated_at).where(
        Message.id == message_id
    ),
)
_COUNT_VIEW = PreparedQuery(
    lambda message_id: (
        Message.update(views=Message.views + 1)
        .where(Message.id == message_id)
        .returning(message_json(_MESSAGE_ROW), Message.updated_at)
    ),
)
_CREATE_MESSAGE = PreparedQuery(
    # INSERT ... SELECT from the author's row: inserts nothing unless the token's user
    # is active and still on the token's version, and the token's login was not revoked.
    lambda content, now, author_id, version, family: Message.insert_from(
        User.select(content, peewee.Value(0), now, now, User.id).where(
            (User.id == author_id)
            & (User.is_active == True)
            & (User.token_version == version)
            & login_not_revoked(family)
        ),
        fields=[Message.content, Message.views, Message.created_at, Message.updated_at, Message.author],
    ).returning(message_json(_MESSAGE_ROW), Message.id, Message.updated_at),
)
_REPLACE_CONTENT = PreparedQuery(
    lambda message_id, content, now: (
        Message.update(content=content, views=0, updated_at=_next_updated_at(now))
        .where(Message.id == message_id)
        .returning(message_json(_MESSAGE_ROW), Message.updated_at)
    ),
)
# The same, only if the message is still in the state the client saw: the check and the
# write are one statement, so no other edit can come between them.
_REPLACE_CONTENT_IF = PreparedQuery(
    lambda message_id, content, now, updated_at: (
        Message.update(content=content, views=0, updated_at=_next_updated_at(now))
        .where((Message.id == message_id) & (Message.updated_at == updated_at))
        .returning(message_json(_MESSAGE_ROW), Message.updated_at)
    ),
)
_WRITE_TARGET = PreparedQuery(
    lambda message_id: Message.select(Message.author, Message.updated_at).where(Message.id == message_id)
)
_DELETE_MESSAGE = PreparedQuery(lambda message_id: Message.delete().where(Message.id == message_id))
_DELETE_MESSAGE_IF = PreparedQuery(
    lambda message_id, updated_at: Message.delete().where(
        (Message.id == message_id) & (Message.updated_at == updated_at)
    )
)


def get(message_id: int) -> RenderedMessage | None:
    """The message without counting a view (HEAD)."""
    return rendered_message(_GET_MESSAGE.execute(message_id))


def count_view(message_id: int) -> RenderedMessage | None:
    """Count one view and return the message as that view left it.

    On PostgreSQL through the group commit (see viewcount.py): the views that arrive
    while one view statement runs are counted by the next, together.
    """
    db = database.obj
    if not db.dialect.batches_views:
        with write_lock():
            return rendered_message(_COUNT_VIEW.execute(message_id))
    batcher = _VIEW_BATCHERS.get(db)
    if batcher is None:
        batcher = _VIEW_BATCHERS.setdefault(db, ViewBatcher(_count_views_postgres))
    return batcher.count_view(message_id)


def view_statistics() -> dict[str, int]:
    """View statements run, views they counted and readers queued now, in this process (PostgreSQL)."""
    batcher = _VIEW_BATCHERS.get(database.obj)
    return batcher.snapshot() if batcher is not None else {"statements": 0, "views": 0, "waiting": 0}


_VIEW_BATCHERS: weakref.WeakKeyDictionary[peewee.Database, ViewBatcher] = weakref.WeakKeyDictionary()
_VIEW_BATCH_SQL: dict[peewee.Database, tuple[str, list[Any]]] = {}


def _count_views_postgres(ids: Sequence[int], counts: Sequence[int]) -> list[tuple[int, RenderedMessage]]:
    """Add ``counts[i]`` views to message ``ids[i]``, in one statement; k rows per message.

    Row i of a message with k views holds it as the i-th of them left it (``views - k + i``),
    rendered by ``message_json``. Rows are locked in id order first: two processes
    counting the same messages then cannot deadlock.
    """
    db = database.obj
    compiled = _VIEW_BATCH_SQL.get(db)
    if compiled is None:
        row = types.SimpleNamespace(
            id=peewee.SQL("counted.id"),
            content=peewee.SQL("counted.content"),
            views=peewee.SQL("counted.views - counted.k + nth.n"),
            created_at=peewee.SQL("counted.created_at"),
            updated_at=peewee.SQL("counted.updated_at"),
            author=peewee.SQL("author_user.username"),
        )
        # Compiled as a column, where peewee parenthesises subqueries; then without "SELECT ".
        column, params = db.get_sql_context().sql(peewee.Select(columns=[message_json(row)])).query()
        assert column.startswith("SELECT ")
        rendered = column[len("SELECT ") :]
        sql = (
            "WITH batch AS (SELECT * FROM unnest(%s::integer[], %s::integer[]) AS b(id, k)), "
            # MATERIALIZED: never inlined into the UPDATE, so the locks are taken in this order.
            "locked AS MATERIALIZED (SELECT m.id FROM messages m JOIN batch ON batch.id = m.id "
            "ORDER BY m.id FOR UPDATE OF m), "
            "counted AS (UPDATE messages m SET views = m.views + batch.k "
            "FROM batch JOIN locked ON locked.id = batch.id WHERE m.id = batch.id "
            "RETURNING m.id, m.content, m.views, m.created_at, m.updated_at, m.author_id, batch.k) "
            f"SELECT counted.id, {rendered}, counted.updated_at "
            "FROM counted CROSS JOIN LATERAL generate_series(1, counted.k) AS nth(n) "
            "LEFT JOIN users author_user ON author_user.id = counted.author_id ORDER BY counted.id, nth.n"
        )
        compiled = _VIEW_BATCH_SQL.setdefault(db, (sql, params))
    sql, params = compiled
    rows = database.execute_sql(sql, [list(ids), list(counts), *params]).fetchall()
    return [(message_id, RenderedMessage(text, message_etag(updated_at))) for message_id, text, updated_at in rows]


def create(content: str, claims: dict[str, Any]) -> tuple[int, RenderedMessage] | None:
    """(id, message) of a new message by the user an access token speaks for.

    The check ``users.for_token`` makes (the user exists, is active and still on the
    token's version, and the token's login was not revoked) is part of the INSERT
    itself: one statement instead of two, one round trip on PostgreSQL. None, and
    nothing written, when the check fails.
    """
    author_id, version = claims["user_id"], claims["ver"]
    if not (0 < author_id <= MAX_ID and 0 <= version <= MAX_ID):
        return None
    with write_lock():
        row = first_row(_CREATE_MESSAGE.execute(content, utcnow(), author_id, version, claims["fam"]))
    if row is None:
        return None
    message_json, message_id, updated_at = row
    return message_id, RenderedMessage(message_json, message_etag(updated_at))


def replace_content(
    message_id: int, content: str, if_updated_at: datetime.datetime | None = None
) -> RenderedMessage | None:
    """New content, views back to 0, ``updated_at`` now; None if the message is gone.

    With ``if_updated_at``, only if the message still has that ``updated_at`` (its entity
    tag): None too when it has changed since.
    """
    with write_lock():
        if if_updated_at is None:
            return rendered_message(_REPLACE_CONTENT.execute(message_id, content, utcnow()))
        return rendered_message(_REPLACE_CONTENT_IF.execute(message_id, content, utcnow(), if_updated_at))


def delete(message_id: int, if_updated_at: datetime.datetime | None = None) -> bool:
    """Delete; with ``if_updated_at``, only if the message still has that ``updated_at``."""
    with write_lock():
        if if_updated_at is None:
            return _DELETE_MESSAGE.execute(message_id).rowcount > 0
        return _DELETE_MESSAGE_IF.execute(message_id, if_updated_at).rowcount > 0


def find_write_target(message_id: int) -> tuple[int | None, str] | None:
    """(author's id or None, entity tag) of a message, or None if there is none: 404, 403, 412."""
    row = _WRITE_TARGET.execute(message_id).fetchone()
    return None if row is None else (row[0], message_etag(row[1]))
