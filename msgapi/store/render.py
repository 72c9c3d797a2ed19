"""A message and a timestamp as the API shows them: the one definition of each.

Messages are rendered to JSON text by the database, in the statement that reads or
writes them, so no row becomes a Python object on the way out; users, tokens and
errors are rendered by Python (``jsontext.dumps``). Both write the same compact JSON.
"""

from __future__ import annotations

import datetime
import re
from typing import Any, NamedTuple

import peewee

from .connection import dialect

# A message's members, in the order the API shows them (DRF's serializer order).
MESSAGE_MEMBERS = ["id", "content", "views", "created_at", "updated_at", "author"]
_TIMESTAMP_MEMBERS = frozenset({"created_at", "updated_at"})


def message_json(row: Any) -> peewee.Node:
    """A message as the API shows it, rendered to JSON text by the database.

    The list, the item and every write's response use it. ``row`` names the columns
    (``id``, ``content``, ... ``author``): the messages table's, or a subquery's ``.c``.
    """
    values = [
        timestamp_sql(getattr(row, name)) if name in _TIMESTAMP_MEMBERS else getattr(row, name)
        for name in MESSAGE_MEMBERS
    ]
    return dialect().message_object(MESSAGE_MEMBERS, values)


# The API's timestamps: RFC 3339 in UTC, always with microseconds: 2026-11-24T18:35:32.123456Z.
# Rendered in SQL for messages and in Python for accounts; tests/test_json_spelling.py holds
# the two to the same bytes on both databases.


def timestamp_sql(column: peewee.ColumnBase) -> peewee.Node:
    """A stored timestamp rendered by the database."""
    return dialect().rfc3339(column)


def render_timestamp(value: datetime.datetime) -> str:
    """A naive UTC datetime rendered by Python."""
    # isoformat with microseconds always shown yields exactly this shape, fast.
    return value.isoformat(timespec="microseconds") + "Z"


def parse_timestamp(value: Any) -> datetime.datetime:
    """A stored timestamp as a datetime: SQLite keeps ISO text, PostgreSQL hands datetimes over.

    ``fromisoformat`` is C and reads every form SQLite holds; Peewee's own parser tries
    several strptime formats in Python.
    """
    return datetime.datetime.fromisoformat(value) if isinstance(value, str) else value


class RenderedMessage(NamedTuple):
    """A message as the API shows it (see ``message_json``) and its entity tag."""

    json: str
    etag: str


_EPOCH = datetime.datetime(1970, 1, 1)
_MICROSECOND = datetime.timedelta(microseconds=1)
_ETAG = re.compile(r'"(-?[0-9a-f]{1,15})"\Z')


def message_etag(updated_at: Any) -> str:
    """The strong entity tag of a message's editable state: its ``updated_at``, in microseconds.

    Every edit moves ``updated_at`` forward by at least a microsecond (see
    ``Dialect.next_timestamp``), so within one message a tag names one content. ``views``
    is not part of it: a read is no edit.
    """
    return f'"{(parse_timestamp(updated_at) - _EPOCH) // _MICROSECOND:x}"'


def etag_timestamp(etag: str) -> datetime.datetime | None:
    """The ``updated_at`` a strong tag of ours stands for; None for anything else (weak tags too)."""
    match = _ETAG.match(etag)
    if match is None:
        return None
    try:
        return _EPOCH + int(match.group(1), 16) * _MICROSECOND
    except OverflowError:
        return None


def first_row(cursor: Any) -> Any:
    """The first row of a statement, or None."""
    rows = cursor.fetchall()  # all rows: a write with RETURNING commits when its rows are read
    return rows[0] if rows else None


def rendered_message(cursor: Any) -> RenderedMessage | None:
    """The message of a statement whose columns are ``message_json`` and ``updated_at``, or None."""
    row = first_row(cursor)
    return None if row is None else RenderedMessage(row[0], message_etag(row[1]))
