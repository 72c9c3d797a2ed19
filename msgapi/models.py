"""The data layer: users, messages, and every query the resources need.

Resources call these functions and never build SQL. Each write that must be
atomic is one statement (a view is ``UPDATE ... SET views = views + 1 ...
RETURNING``), so concurrent requests cannot lose an update.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import re
import secrets
import types
import unicodedata
import weakref
from collections.abc import Sequence
from typing import Any, NamedTuple

import peewee

from .db import PreparedQuery, database, time_limit, utcnow, write_lock
from .viewcount import ViewBatcher

log = logging.getLogger("msgapi.models")

# Ids are 32-bit on PostgreSQL (SERIAL); anything larger cannot exist, on either database.
MAX_ID = 2**31 - 1
# Django's; both the name and its case-folded key must fit (see User.canonical).
MAX_USERNAME_LENGTH = 150


def parse_id(raw: str) -> int | None:
    """A path segment as a row id, or None if no row can have it (0, -1, "1.5", "01", 20 digits)."""
    if raw.isascii() and raw.isdigit() and raw[0] != "0" and len(raw) <= 10 and int(raw) <= MAX_ID:
        return int(raw)
    return None


class NeverReusedId(peewee.AutoField):
    """A row id never handed out twice, even after the newest row is deleted.

    SQLite's plain INTEGER PRIMARY KEY gives the next row the highest id + 1, so a
    deleted newest user's id (and the unexpired tokens naming it) would go to the
    next one to register; AUTOINCREMENT never reuses one. PostgreSQL's SERIAL
    (a sequence) never does anyway.
    """

    def ddl(self, ctx: Any) -> peewee.NodeList:
        node = super().ddl(ctx)
        if isinstance(database.obj, peewee.SqliteDatabase):
            return peewee.NodeList((node, peewee.SQL("AUTOINCREMENT")))
        return node


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class User(BaseModel):
    id = NeverReusedId()
    username = peewee.CharField(max_length=MAX_USERNAME_LENGTH)  # NFKC-normalised, as Django stores it
    # The username case-folded: uniqueness is on this, so "Bob" and "bob" are one name.
    username_key = peewee.CharField(max_length=MAX_USERNAME_LENGTH, unique=True)
    password = peewee.CharField(max_length=255)
    email = peewee.CharField(max_length=254, default="")
    first_name = peewee.CharField(max_length=150, default="")
    last_name = peewee.CharField(max_length=150, default="")
    is_staff = peewee.BooleanField(default=False)
    is_active = peewee.BooleanField(default=True)
    # Bumped when every token already issued to the user must stop working.
    token_version = peewee.IntegerField(default=0)
    date_joined = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "users"

    @staticmethod
    def normalize(username: str) -> str:
        """The form a username is stored in: NFKC, as Django's ``normalize_username``."""
        return unicodedata.normalize("NFKC", username)

    @staticmethod
    def canonical(username: str) -> str:
        """The key of a name: NFKC, case-folded, NFKC again; fullwidth "admin", "Admin" and "admin" are one.

        It may be longer than the name ("ß" folds to "ss", "ﬃ" to "ffi").
        """
        return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username).casefold())

    @classmethod
    def by_username(cls, username: str) -> User | None:
        key = cls.canonical(username)
        if len(key) > MAX_USERNAME_LENGTH:
            return None  # no account can have it, and the column could not hold it
        return cls.get_or_none(cls.username_key == key)

    @classmethod
    def for_token(cls, claims: dict[str, Any]) -> User | None:
        """The active user a verified token speaks for, if the token is still current for them.

        Current means: on the user's token version, and from a login (``fam``) that was
        not revoked. Every authenticated request asks, so it is one precompiled query.
        """
        user_id = claims["user_id"]
        if not 0 < user_id <= MAX_ID:
            return None
        row = _TOKEN_USER.execute(user_id, claims["fam"]).fetchone()
        if row is None:
            return None
        values = {name: convert(value) for (name, convert), value in zip(_USER_CONVERTERS, row, strict=True)}
        if values["token_version"] != claims["ver"]:
            return None
        if not _RAW_MODEL_DATA:
            return cls(**values)
        # Without defaults (peewee's own __no_default__) and with the values put in place
        # at once: the constructor's defaults and per-field setters cost three times as much.
        user = cls(__no_default__=True)
        user.__data__ = values
        return user

    def public_json(self) -> dict[str, Any]:
        """The user as the old service showed it (never the password)."""
        return {
            "id": self.id,
            "username": self.username,
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "is_staff": self.is_staff,
        }

    def account_json(self) -> dict[str, Any]:
        """What the user sees of their own account, and staff of anyone's."""
        return {**self.public_json(), "is_active": self.is_active, "date_joined": render_timestamp(self.date_joined)}


class Message(BaseModel):
    id = NeverReusedId()
    content = peewee.CharField(max_length=160, constraints=[peewee.Check("length(content) BETWEEN 1 AND 160")])
    views = peewee.IntegerField(default=0, constraints=[peewee.SQL("DEFAULT 0"), peewee.Check("views >= 0")])
    created_at = peewee.DateTimeField()
    updated_at = peewee.DateTimeField()
    author = peewee.ForeignKeyField(User, null=True, on_delete="SET NULL", backref="messages")

    class Meta:
        table_name = "messages"
        indexes = (
            # The list's orders: keyset pages walk these, forwards or backwards.
            (("updated_at", "id"), False),
            (("created_at", "id"), False),
            # Without it ordering=views sorts the whole table. It costs every view an
            # index write (and rules out PostgreSQL's HOT updates): measured, that is cheap.
            (("views", "id"), False),
        )


def _author_name() -> peewee.Expression:
    """A scalar subquery for the author's username, usable inside RETURNING."""
    Author = User.alias("author_user")
    return Author.select(Author.username).where(Author.id == Message.author)


# A message's columns, for _message_as_json, in a statement on the messages table itself.
_MESSAGE_ROW = types.SimpleNamespace(
    id=Message.id,
    content=Message.content,
    views=Message.views,
    created_at=Message.created_at,
    updated_at=Message.updated_at,
    author=_author_name(),
)


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


def list_messages(
    *,
    limit: int,
    ordering: str = "-updated_at",
    after: tuple[Any, int] | None = None,
    author: str | None = None,
    search: str | None = None,
    time_limit_ms: int = 500,
) -> MessagePage:
    """One page of messages, keyset-paged: ``after`` is (ordering value, id) of the last row seen.

    Page 1,000 costs what page 1 costs: the position is a WHERE on the ordering
    index, never an OFFSET. One row more than the page is read, to tell whether a
    next page exists without a COUNT. Each statement stops after ``time_limit_ms``
    (``db.TimeLimitExceeded``), so no shape of request can hold the database for long.
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
        next_after = (_timestamp(key) if ordering.lstrip("-") in _TIMESTAMP_ORDERINGS else key, last_id)
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
    if not isinstance(database.obj, peewee.SqliteDatabase) or len(search.casefold()) < MIN_INDEXED_SEARCH:
        return SCAN
    found = run(_COUNT_SEARCH_MATCHES, _match_phrase(search), SEARCH_INDEX_CAP).fetchone()[0]
    return INDEXED if found < SEARCH_INDEX_CAP else SCAN


def _match_phrase(text: str) -> str:
    """An FTS5 phrase matching ``text`` as a substring of the case-folded content (SQLite)."""
    return '"' + text.casefold().replace('"', '""') + '"'


# SQLite's trigram index of case-folded content; rowid is the message's id. Contentless
# (content=''): it holds only the index, kept in step by triggers (_SQLITE_SEARCH_INDEX).
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
        # JSON for the page's rows only: in one query level, a sort would render every
        # row it considers (PostgreSQL chose a sort over 1,000 rows, 0.3 -> 2.6 ms).
        key = getattr(page.c, field.name)
        return peewee.Select(
            from_list=[page],
            columns=[_message_as_json(page.c), key, page.c.id],
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


def _message_as_json(row: Any) -> peewee.Node:
    """A message as the API shows it, rendered to JSON text by the database.

    The one place a message's representation is defined: the list, the item and
    every write's response use it. Turning rows into Python objects and back into
    JSON was most of the list's cost (in-process, a page of 100: 380 -> 165 µs).
    ``row`` names the columns: ``_MESSAGE_ROW``, or a subquery's ``.c``.
    """
    fields = [
        "id", row.id,
        "content", row.content,
        "views", row.views,
        "created_at", _rfc3339(row.created_at),
        "updated_at", _rfc3339(row.updated_at),
        "author", row.author,
    ]  # fmt: skip
    if isinstance(database.obj, peewee.SqliteDatabase):
        return peewee.fn.json_object(*fields)
    # row_to_json writes compact JSON, byte for byte what SQLite's json_object writes (and DRF
    # wrote); json_build_object would space its members out ("id" : 1, ...).
    members = peewee.Select(
        columns=[value.alias(name) for name, value in zip(fields[::2], fields[1::2], strict=True)]
    ).alias("message")
    return peewee.NodeList((peewee.SQL("(SELECT row_to_json(message)::text FROM"), members, peewee.SQL(")")))


def _rfc3339(column: peewee.ColumnBase) -> peewee.Node:
    """``render_timestamp`` in SQL: ``2026-11-24T18:35:32.123456Z``, always with microseconds."""
    if isinstance(database.obj, peewee.SqliteDatabase):
        # Stored as Python writes a naive datetime: "2026-11-24 18:35:32[.123456]".
        padded = peewee.fn.substr(column.concat(".000000"), 1, 26)
        return peewee.fn.replace(padded, " ", "T").concat("Z")
    return peewee.fn.to_char(column, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')


def _like_pattern(text: str) -> str:
    """``%text%`` with LIKE's wildcards escaped, so they match themselves; casefolded for SQLite."""
    if isinstance(database.obj, peewee.SqliteDatabase):
        text = text.casefold()
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _content_like(pattern: str) -> peewee.Node:
    """Case-insensitive substring match that behaves the same on both databases.

    PostgreSQL's ILIKE folds case for all of Unicode; SQLite's LIKE only for ASCII,
    so on SQLite both sides go through Python's casefold (registered per connection).
    """
    if isinstance(database.obj, peewee.SqliteDatabase):
        target, operator = peewee.fn.msgapi_casefold(Message.content), "LIKE"
    else:
        target, operator = Message.content, "ILIKE"
    return peewee.NodeList((target, peewee.SQL(operator), pattern, peewee.SQL("ESCAPE '\\'")))


def _single_row(query: peewee.Query) -> dict[str, Any] | None:
    rows = list(query.dicts().execute())
    return rows[0] if rows else None


def _write_returning(query: peewee.Query) -> dict[str, Any] | None:
    """Run a write with RETURNING; all rows are read inside the lock, which is when it commits."""
    with write_lock():
        return _single_row(query)


def _write(query: peewee.Query) -> int:
    with write_lock():
        return query.execute()


def _login_not_revoked(family: Any) -> peewee.Node:
    """True unless the login ``family`` was revoked: an index probe, in the statement that needs it."""
    return ~peewee.fn.EXISTS(RevokedFamily.select(peewee.SQL("1")).where(RevokedFamily.family == family))


def _timestamp(value: Any) -> datetime.datetime:
    """A stored timestamp as a datetime: SQLite keeps ISO text, PostgreSQL hands datetimes over.

    ``fromisoformat`` is C and reads every form SQLite holds; peewee's own parser tries
    several strptime formats in Python, which was most of the list's cost.
    """
    return datetime.datetime.fromisoformat(value) if isinstance(value, str) else value


def _first_message(cursor: Any) -> Any:
    """The first row of a message statement, or None."""
    rows = cursor.fetchall()  # all rows: a write with RETURNING commits when its rows are read
    return rows[0] if rows else None


class RenderedMessage(NamedTuple):
    """A message as the API shows it (see _message_as_json) and its entity tag."""

    json: str
    etag: str


_EPOCH = datetime.datetime(1970, 1, 1)
_MICROSECOND = datetime.timedelta(microseconds=1)
_ETAG = re.compile(r'"(-?[0-9a-f]{1,15})"\Z')


def message_etag(updated_at: Any) -> str:
    """The strong entity tag of a message's editable state: its ``updated_at``, in microseconds.

    Every edit moves ``updated_at`` forward by at least a microsecond (see ``_next_updated_at``),
    so within one message a tag names one content. ``views`` is not part of it: a read is no edit.
    """
    return f'"{(_timestamp(updated_at) - _EPOCH) // _MICROSECOND:x}"'


def etag_timestamp(etag: str) -> datetime.datetime | None:
    """The ``updated_at`` a strong tag of ours stands for; None for anything else (weak tags too)."""
    match = _ETAG.match(etag)
    if match is None:
        return None
    try:
        return _EPOCH + int(match.group(1), 16) * _MICROSECOND
    except OverflowError:
        return None


def _rendered_message(cursor: Any) -> RenderedMessage | None:
    """The message of a statement whose columns are ``_message_as_json`` and ``updated_at``, or None."""
    row = _first_message(cursor)
    return None if row is None else RenderedMessage(row[0], message_etag(row[1]))


def _next_updated_at(now: Any) -> peewee.Node:
    """``now``, or a microsecond after the current ``updated_at`` if the clock has not passed it.

    So two edits of one message never share an ``updated_at``, whatever the clocks of the
    processes that made them: the entity tag changes with every edit.
    """
    if isinstance(database.obj, peewee.SqliteDatabase):
        return peewee.fn.msgapi_next_updated_at(Message.updated_at, now)
    return peewee.fn.GREATEST(now, Message.updated_at + peewee.SQL("interval '1 microsecond'"))


_GET_MESSAGE = PreparedQuery(
    lambda message_id: Message.select(_message_as_json(_MESSAGE_ROW), Message.updated_at).where(
        Message.id == message_id
    ),
)
_COUNT_VIEW = PreparedQuery(
    lambda message_id: (
        Message.update(views=Message.views + 1)
        .where(Message.id == message_id)
        .returning(_message_as_json(_MESSAGE_ROW), Message.updated_at)
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
            & _login_not_revoked(family)
        ),
        fields=[Message.content, Message.views, Message.created_at, Message.updated_at, Message.author],
    ).returning(_message_as_json(_MESSAGE_ROW), Message.id, Message.updated_at),
)
_REPLACE_CONTENT = PreparedQuery(
    lambda message_id, content, now: (
        Message.update(content=content, views=0, updated_at=_next_updated_at(now))
        .where(Message.id == message_id)
        .returning(_message_as_json(_MESSAGE_ROW), Message.updated_at)
    ),
)
# The same, only if the message is still in the state the client saw: the check and the
# write are one statement, so no other edit can come between them.
_REPLACE_CONTENT_IF = PreparedQuery(
    lambda message_id, content, now, updated_at: (
        Message.update(content=content, views=0, updated_at=_next_updated_at(now))
        .where((Message.id == message_id) & (Message.updated_at == updated_at))
        .returning(_message_as_json(_MESSAGE_ROW), Message.updated_at)
    ),
)
_WRITE_TARGET = PreparedQuery(
    lambda message_id: Message.select(Message.author, Message.updated_at).where(Message.id == message_id)
)

def _raw_model_data_works() -> bool:
    """Whether this Peewee builds a model without defaults and keeps its values in ``__data__``.

    Both are Peewee internals (stable from 3.x to 4.x); a release that changes them gets
    the public constructor instead, with a warning, rather than users with wrong fields.
    """
    try:
        probe = User(__no_default__=True)
        probe.__data__ = {"username": "probe"}
        works = probe.username == "probe" and probe.is_active is None
    except Exception:
        works = False
    if not works:
        logging.getLogger("msgapi").warning(
            "this Peewee release builds models differently from what msgapi expects: using the public constructor"
        )
    return works


_RAW_MODEL_DATA = _raw_model_data_works()

_USER_FIELDS = User._meta.sorted_fields
_USER_CONVERTERS = [
    (field.name, _timestamp if field is User.date_joined else field.python_value) for field in _USER_FIELDS
]
_TOKEN_USER = PreparedQuery(
    lambda user_id, family: User.select(*_USER_FIELDS).where(
        (User.id == user_id) & (User.is_active == True) & _login_not_revoked(family)
    ),
)
_DELETE_MESSAGE = PreparedQuery(lambda message_id: Message.delete().where(Message.id == message_id))
_DELETE_MESSAGE_IF = PreparedQuery(
    lambda message_id, updated_at: Message.delete().where(
        (Message.id == message_id) & (Message.updated_at == updated_at)
    )
)


# Messages come back from these as the API's JSON text (see _message_as_json) with their
# entity tag, or None when there is no such message.


def get_message(message_id: int) -> RenderedMessage | None:
    """The message without counting a view (HEAD)."""
    return _rendered_message(_GET_MESSAGE.execute(message_id))


def count_view(message_id: int) -> RenderedMessage | None:
    """Count one view and return the message as that view left it.

    On PostgreSQL through the group commit (see viewcount.py): the views that arrive
    while one view statement runs are counted by the next, together.
    """
    db = database.obj
    if isinstance(db, peewee.SqliteDatabase):
        with write_lock():
            return _rendered_message(_COUNT_VIEW.execute(message_id))
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
    rendered by ``_message_as_json``. Rows are locked in id order first: two processes
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
        column, params = db.get_sql_context().sql(peewee.Select(columns=[_message_as_json(row)])).query()
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


def create_message(content: str, claims: dict[str, Any]) -> tuple[int, RenderedMessage] | None:
    """(id, message) of a new message by the user an access token speaks for.

    The check ``User.for_token`` makes (the user exists, is active and still on the
    token's version, and the token's login was not revoked) is part of the INSERT
    itself: one statement instead of two, one round trip on PostgreSQL. None, and
    nothing written, when the check fails.
    """
    author_id, version = claims["user_id"], claims["ver"]
    if not (0 < author_id <= MAX_ID and 0 <= version <= MAX_ID):
        return None
    with write_lock():
        row = _first_message(_CREATE_MESSAGE.execute(content, utcnow(), author_id, version, claims["fam"]))
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
            return _rendered_message(_REPLACE_CONTENT.execute(message_id, content, utcnow()))
        return _rendered_message(_REPLACE_CONTENT_IF.execute(message_id, content, utcnow(), if_updated_at))


def delete_message(message_id: int, if_updated_at: datetime.datetime | None = None) -> bool:
    """Delete; with ``if_updated_at``, only if the message still has that ``updated_at``."""
    with write_lock():
        if if_updated_at is None:
            return _DELETE_MESSAGE.execute(message_id).rowcount > 0
        return _DELETE_MESSAGE_IF.execute(message_id, if_updated_at).rowcount > 0


def find_write_target(message_id: int) -> tuple[int | None, str] | None:
    """(author's id or None, entity tag) of a message, or None if there is none: 404, 403, 412."""
    row = _WRITE_TARGET.execute(message_id).fetchone()
    return None if row is None else (row[0], message_etag(row[1]))


def create_user(username: str, password_hash: str, **profile: Any) -> User:
    """Insert a user; raises ``peewee.IntegrityError`` when the name is taken (in any case).

    The name must have been validated, its key's length too (``accounts.read_username``).
    """
    with write_lock(), database.atomic():
        return User.create(
            username=User.normalize(username),
            username_key=User.canonical(username),
            password=password_hash,
            **profile,
        )


def upgrade_password_hash(user: User, password_hash: str) -> bool:
    """Store a rehash of the same password (a work-factor upgrade): tokens stay valid.

    Only if the stored hash is still ``user.password``, the one that was checked: a
    login racing a password change must not put the old password back.
    """
    checked = (User.id == user.id) & (User.password == user.password)
    return _write(User.update(password=password_hash).where(checked)) > 0


def change_password(user: User, password_hash: str) -> int:
    """Store a new password and end every token issued before; returns the new token version."""
    row = _write_returning(
        User.update(password=password_hash, token_version=User.token_version + 1)
        .where(User.id == user.id)
        .returning(User.token_version)
    )
    assert row is not None
    return row["token_version"]


def update_profile(user: User, profile: dict[str, str]) -> User:
    if profile:
        _write(User.update(**profile).where(User.id == user.id))
    return User.get_by_id(user.id)


def set_active(user: User, active: bool) -> User:
    """Activate or deactivate; deactivating also ends every token already issued."""
    changes: dict[Any, Any] = {User.is_active: active}
    if not active:
        changes[User.token_version] = User.token_version + 1
    _write(User.update(changes).where(User.id == user.id))
    return User.get_by_id(user.id)


class RateLimitHit(BaseModel):
    """Requests counted per bucket (e.g. ``token:ip:10.0.0.1``) and fixed time window.

    Kept in the database, not in memory, so the limit holds across processes.
    """

    bucket = peewee.CharField(max_length=200)
    window_start = peewee.BigIntegerField()
    hits = peewee.IntegerField()

    class Meta:
        table_name = "rate_limit_hits"
        primary_key = peewee.CompositeKey("bucket", "window_start")
        indexes = ((("window_start",), False),)


def count_hit(bucket: str, window_start: int) -> int:
    """Count one request in ``bucket``'s window and return the window's total, atomically."""
    query = (
        RateLimitHit.insert(bucket=bucket, window_start=window_start, hits=1)
        .on_conflict(
            conflict_target=[RateLimitHit.bucket, RateLimitHit.window_start],
            update={RateLimitHit.hits: RateLimitHit.hits + 1},
        )
        .returning(RateLimitHit.hits)
    )
    row = _write_returning(query)
    assert row is not None
    return row["hits"]


def uncount_hit(bucket: str, window_start: int) -> None:
    """Take back one hit ``count_hit`` counted; a window left at zero hits is no row at all."""
    where = (RateLimitHit.bucket == bucket) & (RateLimitHit.window_start == window_start)
    with write_lock(), database.atomic():
        RateLimitHit.update(hits=RateLimitHit.hits - 1).where(where).execute()
        RateLimitHit.delete().where(where & (RateLimitHit.hits <= 0)).execute()


def hits_in_windows(bucket: str, previous_window: int, current_window: int) -> tuple[int, int]:
    """(hits, hits) in ``bucket``'s previous and current windows, in one read."""
    rows = RateLimitHit.select(RateLimitHit.window_start, RateLimitHit.hits).where(
        (RateLimitHit.bucket == bucket) & RateLimitHit.window_start.in_([previous_window, current_window])
    )
    hits = {row.window_start: row.hits for row in rows}
    return hits.get(previous_window, 0), hits.get(current_window, 0)


def prune_hits(before_window: int) -> None:
    _write(RateLimitHit.delete().where(RateLimitHit.window_start < before_window))


class RevokedToken(BaseModel):
    """A refresh token that may not be used again: logged out, or spent by rotation.

    A row is kept until ``expires_at``, which the caller sets past the last moment
    any process could still accept the token (``TokenService.revocation_expiry``);
    rows past it are pruned on every revocation write.
    """

    jti = peewee.CharField(max_length=64, primary_key=True)
    family = peewee.CharField(max_length=64)
    reason = peewee.CharField(max_length=16)  # "logout" or "rotated"
    expires_at = peewee.BigIntegerField(index=True)  # Unix time

    class Meta:
        table_name = "revoked_tokens"


class RevokedFamily(BaseModel):
    """Every token descended from one login, access and refresh: revoked when a spent refresh token is reused."""

    family = peewee.CharField(max_length=64, primary_key=True)
    expires_at = peewee.BigIntegerField(index=True)

    class Meta:
        table_name = "revoked_families"


LOGOUT = "logout"
ROTATED = "rotated"


def _prune_revocations(now: int) -> None:
    RevokedToken.delete().where(RevokedToken.expires_at < now).execute()
    RevokedFamily.delete().where(RevokedFamily.expires_at < now).execute()


def revoke_token(jti: str, family: str, reason: str, expires_at: int, now: int) -> str | None:
    """Record ``jti`` as unusable. Returns None if this call recorded it, else the earlier reason.

    One INSERT decides between concurrent callers: exactly one of two refreshes
    racing with the same token records it; the other learns it was already spent.
    """
    with write_lock(), database.atomic():
        _prune_revocations(now)
        inserted = _single_row(
            RevokedToken.insert(jti=jti, family=family, reason=reason, expires_at=expires_at)
            .on_conflict_ignore()
            .returning(RevokedToken.jti)
        )
        if inserted is not None:
            return None
        earlier = RevokedToken.get_or_none(RevokedToken.jti == jti)
        return earlier.reason if earlier else reason


def revoke_family(family: str, expires_at: int, now: int) -> None:
    with write_lock(), database.atomic():
        _prune_revocations(now)
        RevokedFamily.insert(family=family, expires_at=expires_at).on_conflict_ignore().execute()


def is_family_revoked(family: str) -> bool:
    return RevokedFamily.select().where(RevokedFamily.family == family).exists()


def is_token_revoked(jti: str) -> bool:
    return RevokedToken.select().where(RevokedToken.jti == jti).exists()


class IdempotencyKey(BaseModel):
    """A create's ``Idempotency-Key``, per user: claimed while its message is written, then its answer.

    Kept in the database so that a retry reaching another process, or this one after a
    restart, finds it. ``response`` is None while the create is in flight.
    """

    user = peewee.ForeignKeyField(User, on_delete="CASCADE", index=False)
    key = peewee.CharField(max_length=255)
    fingerprint = peewee.CharField(max_length=64)  # SHA-256 of the request's content
    claim = peewee.CharField(max_length=32)  # the request creating it now (random)
    created_at = peewee.BigIntegerField(index=True)  # Unix time: claimed, or taken over
    message_id = peewee.IntegerField(null=True)  # no foreign key: the answer outlives the message
    response = peewee.TextField(null=True)
    etag = peewee.CharField(max_length=32, null=True)

    class Meta:
        table_name = "idempotency_keys"
        primary_key = peewee.CompositeKey("user", "key")


# A claim older than this is taken to be from a request that died, and may be taken over.
IDEMPOTENCY_LEASE_SECONDS = 30
# Expired keys deleted per claim: pruning never makes one create slow.
IDEMPOTENCY_PRUNE_BATCH = 100


@dataclasses.dataclass(frozen=True)
class KeyClaim:
    """What claiming an idempotency key found: exactly one of these is set, or neither (in flight)."""

    claim: str | None = None  # claimed: create the message with create_message_once
    replay: tuple[int, RenderedMessage] | None = None  # done before: (id, message) as first answered
    mismatch: bool = False  # used before for a different request


def _this_key(user_id: int, key: str) -> peewee.Expression:
    return (IdempotencyKey.user == user_id) & (IdempotencyKey.key == key)


def claim_idempotency_key(user_id: int, key: str, fingerprint: str, now: int, ttl: int) -> KeyClaim:
    """Claim ``key`` for a create by ``user_id``, or say what an earlier request with it left.

    One INSERT decides between concurrent requests with one key: the one that inserts
    the row creates the message; the others find the row, in flight or answered.
    """
    claim = secrets.token_hex(16)
    with write_lock(), database.atomic():
        expired = IdempotencyKey.created_at < now - ttl
        oldest = (
            IdempotencyKey.select(IdempotencyKey.user, IdempotencyKey.key)
            .where(expired)
            .limit(IDEMPOTENCY_PRUNE_BATCH)
        )
        if not isinstance(database.obj, peewee.SqliteDatabase):
            # Two claims pruning at once skip each other's rows instead of deadlocking on them.
            oldest = oldest.for_update("FOR UPDATE SKIP LOCKED")
        IdempotencyKey.delete().where(
            peewee.Tuple(IdempotencyKey.user, IdempotencyKey.key).in_(oldest)
            | (_this_key(user_id, key) & expired)
        ).execute()
        inserted = _single_row(
            IdempotencyKey.insert(user=user_id, key=key, fingerprint=fingerprint, claim=claim, created_at=now)
            .on_conflict_ignore()
            .returning(IdempotencyKey.claim)
        )
        if inserted is not None:
            return KeyClaim(claim=claim)
        earlier = IdempotencyKey.get_or_none(_this_key(user_id, key))
        if earlier is None:  # deleted since the INSERT saw it: the client may simply retry
            return KeyClaim()
        if earlier.fingerprint != fingerprint:
            return KeyClaim(mismatch=True)
        if earlier.response is not None:
            return KeyClaim(replay=(earlier.message_id, RenderedMessage(earlier.response, earlier.etag)))
        if earlier.created_at >= now - IDEMPOTENCY_LEASE_SECONDS:
            return KeyClaim()
        taken = (
            IdempotencyKey.update(claim=claim, created_at=now)
            .where(_this_key(user_id, key) & (IdempotencyKey.claim == earlier.claim))
            .execute()
        )
        return KeyClaim(claim=claim) if taken else KeyClaim()


class _ClaimLost(Exception):
    """Another request took the key over: this create must not count."""


def create_message_once(
    content: str, claims: dict[str, Any], key: str, claim: str
) -> tuple[int, RenderedMessage] | bool | None:
    """``create_message`` under a claimed key, storing the answer with the key in the same transaction.

    None (and the key released) when the token's user may not create; False when the
    claim was taken over meanwhile (nothing created).
    """
    this_claim = _this_key(claims["user_id"], key) & (IdempotencyKey.claim == claim)
    try:
        with write_lock(), database.atomic():
            created = create_message(content, claims)
            if created is None:
                IdempotencyKey.delete().where(this_claim).execute()
                return None
            message_id, message = created
            stored = (
                IdempotencyKey.update(message_id=message_id, response=message.json, etag=message.etag)
                .where(this_claim)
                .execute()
            )
            if not stored:
                raise _ClaimLost
            return created
    except _ClaimLost:
        return False


def release_idempotency_key(user_id: int, key: str, claim: str) -> None:
    """Give up a claim whose create failed, so that a retry need not wait for the lease."""
    with write_lock():
        IdempotencyKey.delete().where(
            _this_key(user_id, key) & (IdempotencyKey.claim == claim) & IdempotencyKey.response.is_null()
        ).execute()


ALL_MODELS = (User, Message, RateLimitHit, RevokedToken, RevokedFamily, IdempotencyKey)


def create_tables() -> None:
    """Create missing tables and indexes; safe to run from several processes at once.

    On SQLite, tables made before ids were never reused are rebuilt first.
    """
    sqlite = isinstance(database.obj, peewee.SqliteDatabase)
    if sqlite:
        _rebuild_tables_that_reuse_ids()
    # On SQLite, IMMEDIATE: the write lock before the schema is read. A deferred transaction
    # that reads, then writes after another process committed, fails at once with "database
    # is locked" (SQLite cannot wait there): two first starts together would lose one.
    with write_lock(), (database.atomic("IMMEDIATE") if sqlite else database.atomic()):
        if isinstance(database.obj, peewee.PostgresqlDatabase):
            # CREATE TABLE IF NOT EXISTS still races in PostgreSQL's catalog; serialise it.
            database.execute_sql("SELECT pg_advisory_xact_lock(7466734)")
        database.create_tables(ALL_MODELS, safe=True)
        if isinstance(database.obj, peewee.SqliteDatabase):
            _create_sqlite_search_index()
        else:
            _create_postgres_search_index()


# Contentless: the index holds the case-folded text, which is no column of messages. The
# triggers fold with msgapi_casefold, the function db.open_database registers on every
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


def render_timestamp(value: datetime.datetime) -> str:
    """RFC 3339 in UTC, always with microseconds: ``2026-11-24T18:35:32.123456Z``."""
    # isoformat is several times faster than strftime, and with microseconds always
    # shown it yields exactly this shape (the value is naive UTC).
    return value.isoformat(timespec="microseconds") + "Z"
