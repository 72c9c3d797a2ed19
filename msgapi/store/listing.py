"""The message list: keyset pages in any of the orderings, filtered by author and by search.

Page 1,000 costs what page 1 costs: the position is a WHERE on the ordering's index,
never an OFFSET. The page is rendered to one JSON array by the database.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import peewee

from .compiled import PreparedQuery
from .connection import dialect, time_limit
from .render import message_json, parse_timestamp
from .schema import Message, User


def _message_columns() -> list[Any]:
    return [Message.id, Message.content, Message.views, Message.created_at, Message.updated_at]


# What the list may be ordered by; ties are always broken by id, in the same direction.
ORDERINGS = {
    "updated_at": Message.updated_at,
    "created_at": Message.created_at,
    "views": Message.views,
    "id": Message.id,
}


@dataclasses.dataclass(frozen=True)
class MessagePage:
    """One page of the list, rendered by the database."""

    json: str  # a JSON array of messages, each exactly as the API shows one message
    next_after: tuple[Any, int] | None  # (ordering value, id) of the last row, when more rows follow


def page(
    *,
    limit: int,
    time_limit_ms: int,
    ordering: str = "-updated_at",
    after: tuple[Any, int] | None = None,
    author: str | None = None,
    search: str | None = None,
) -> MessagePage:
    """One page of messages, keyset-paged: ``after`` is (ordering value, id) of the last row seen.

    Page 1,000 costs what page 1 costs: the position is a WHERE on the ordering
    index, never an OFFSET. One row more than the page is read, to tell whether a
    next page exists without a COUNT. Each statement stops after ``time_limit_ms``
    (``TimeLimitExceeded``), so no shape of request can hold the database for long.
    """
    after_value, after_id = after if after is not None else (None, None)
    if isinstance(after_value, datetime.datetime):
        after_value = Message.updated_at.db_value(after_value)
    with time_limit(time_limit_ms) as run:
        search_mode = _search_mode(run, search) if search else None
        shape = (ordering, after is not None, author is not None, search_mode)
        query = _LIST_QUERIES.get(shape) or _LIST_QUERIES.setdefault(shape, _list_query(*shape))
        rows = run(
            query,
            limit + 1,
            after_value,
            after_id,
            User.canonical(author) if author is not None else None,
            _like_pattern(search) if search else None,
            _match_phrase(search) if search else None,
        ).fetchall()
    next_after = None
    if len(rows) > limit:
        del rows[limit:]
        _, key, last_id = rows[-1]
        next_after = (parse_timestamp(key) if ordering.lstrip("-") in _TIMESTAMP_ORDERINGS else key, last_id)
    return MessagePage(json="[" + ",".join([row[0] for row in rows]) + "]", next_after=next_after)


_TIMESTAMP_ORDERINGS = frozenset({"updated_at", "created_at"})

# One compiled query per shape of the list request (ordering, position, filters): at most 96.
_LIST_QUERIES: dict[tuple[str, bool, bool, str | None], PreparedQuery] = {}

# How a search finds its rows. SCAN: walk the ordering's index and test each row, which
# stops as soon as the page is full: cheap when many rows match. INDEXED (SQLite): take
# the matching ids from the trigram index, then sort only those: cheap when few match.
# PostgreSQL always states the search as ILIKE and its planner picks the trigram index
# or the ordering's from the column's statistics.
SCAN = "scan"
INDEXED = "indexed"
# SQLite: when the trigram index finds fewer matches than this, they are fetched and
# sorted (bounded by this); when it finds more, at least 1 row in N/this matches, so a
# scan fills a page of P after about P*N/this rows.
SEARCH_INDEX_CAP = 5000
# Trigram indexes (both databases) need 3 characters; shorter searches scan, within the time limit.
MIN_INDEXED_SEARCH = 3


def _search_mode(run: Any, search: str) -> str:
    if not dialect().counts_search_matches or len(search.casefold()) < MIN_INDEXED_SEARCH:
        return SCAN
    found = run(_COUNT_SEARCH_MATCHES, _match_phrase(search), SEARCH_INDEX_CAP).fetchone()[0]
    return INDEXED if found < SEARCH_INDEX_CAP else SCAN


def _match_phrase(text: str) -> str:
    """An FTS5 phrase matching ``text`` as a substring of the case-folded content (SQLite)."""
    return '"' + text.casefold().replace('"', '""') + '"'


# SQLite's trigram index of case-folded content; rowid is the message's id. Contentless
# (content=''): it holds only the index, kept in step by triggers (see dialect.py).
_SEARCH_INDEX = peewee.Table("messages_search", ("rowid", "messages_search"))


def _search_matches(phrase: str) -> peewee.Query:
    match = peewee.NodeList((_SEARCH_INDEX.messages_search, peewee.SQL("MATCH"), phrase))
    return _SEARCH_INDEX.select(_SEARCH_INDEX.rowid).where(match)


_COUNT_SEARCH_MATCHES = PreparedQuery(
    lambda phrase, cap: peewee.Select(
        from_list=[_search_matches(phrase).limit(cap).alias("found")], columns=[peewee.fn.COUNT(peewee.SQL("*"))]
    ),
)


def _list_query(ordering: str, has_after: bool, has_author: bool, search_mode: str | None) -> PreparedQuery:
    descending = ordering.startswith("-")
    field = ORDERINGS[ordering.lstrip("-")]

    def order(key: Any, row_id: Any) -> list[Any]:
        """By the ordering's column, ties broken by id in the same direction."""
        keys = [row_id] if field is Message.id else [key, row_id]
        return [column.desc() if descending else column.asc() for column in keys]

    def build(
        limit: int, after_value: Any, after_id: int, author_key: str, pattern: str, phrase: str
    ) -> peewee.Query:
        query = Message.select(*_message_columns(), User.username.alias("author")).join(
            User, peewee.JOIN.LEFT_OUTER, on=(Message.author == User.id)
        )
        if has_author:
            query = query.where(User.username_key == author_key)
        if search_mode == INDEXED:
            # The index finds the candidates; the same test as a scan decides, so both
            # plans answer exactly alike.
            query = query.where(Message.id.in_(_search_matches(phrase)))
        if search_mode is not None:
            query = query.where(_content_like(pattern))
        if has_after:
            if field is Message.id:
                query = query.where(Message.id < after_id if descending else Message.id > after_id)
            else:
                key = peewee.Tuple(field, Message.id)
                position = peewee.Tuple(after_value, after_id)
                query = query.where(key < position if descending else key > position)
        page = query.order_by(*order(field, Message.id)).limit(limit).alias("page")
        # JSON for the page's rows only: in one query level, a sort would render every row it
        # considers, and PostgreSQL may choose a sort over many more rows than the page.
        key = getattr(page.c, field.name)
        return peewee.Select(
            from_list=[page],
            columns=[message_json(page.c), key, page.c.id],
        ).order_by(*order(key, page.c.id))

    unused = [
        name
        for name, used in (
            ("after_value", has_after and field is not Message.id),
            ("after_id", has_after),
            ("author_key", has_author),
            ("pattern", search_mode is not None),
            ("phrase", search_mode == INDEXED),
        )
        if not used
    ]
    return PreparedQuery(build, unused=tuple(unused))


def _like_pattern(text: str) -> str:
    """``%text%`` with LIKE's wildcards escaped, so they match themselves (case folded where the dialect needs it)."""
    escaped = dialect().fold_search(text).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _content_like(pattern: str) -> peewee.Node:
    """Case-insensitive substring match that behaves the same on both databases (see the dialects)."""
    return dialect().content_like(Message.content, pattern)
