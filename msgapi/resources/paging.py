"""Query parameters of ``GET /api/messages``: validation, opaque cursors, and the next-page link."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import json
from typing import Any
from urllib.parse import urlencode

import falcon

from ..errors import ValidationFailed
from ..store import MAX_ID
from ..store.listing import ORDERINGS as STORED_ORDERINGS

MAX_LIMIT = 1000
MAX_SEARCH_LENGTH = 160
DEFAULT_ORDERING = "-updated_at"
ORDERINGS = frozenset(STORED_ORDERINGS) | {f"-{name}" for name in STORED_ORDERINGS}
# DRF's browsable-API clients send format=json; accepted and ignored.
IGNORED_PARAMS = frozenset({"format"})
KNOWN_PARAMS = frozenset({"limit", "cursor", "author", "search", "ordering"}) | IGNORED_PARAMS
# The cursors we issue are under 100 characters; anything much longer is not one of ours,
# and is refused before it is decoded (a cursor of 5,000 nested "[" made json recurse too deep).
MAX_CURSOR_LENGTH = 200


def _bad_param(name: str, detail: str) -> falcon.HTTPBadRequest:
    return ValidationFailed({name: [detail]}, detail=f"Query parameter {name!r}: {detail}")


@dataclasses.dataclass(frozen=True)
class ListQuery:
    limit: int
    ordering: str
    after: tuple[Any, int] | None
    author: str | None
    search: str | None


def encode_cursor(ordering: str, after: tuple[Any, int]) -> str:
    """The cursor for the position after ``after``: (ordering value, id) of a page's last row."""
    value, last_id = after
    if isinstance(value, datetime.datetime):
        value = value.isoformat()
    raw = json.dumps([ordering, value, last_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _in_id_range(value: Any, lowest: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lowest <= value <= MAX_ID


def _decode_cursor(cursor: str, ordering: str) -> tuple[Any, int]:
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise _bad_param("cursor", "Invalid cursor.")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        cursor_ordering, value, last_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, RecursionError):
        raise _bad_param("cursor", "Invalid cursor.") from None
    if cursor_ordering != ordering:
        raise _bad_param("cursor", "This cursor belongs to a different ordering.")
    if not _in_id_range(last_id, 1):
        raise _bad_param("cursor", "Invalid cursor.")
    field = ordering.lstrip("-")
    if field in ("updated_at", "created_at"):
        try:
            value = datetime.datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise _bad_param("cursor", "Invalid cursor.") from None
        if value.tzinfo is not None:
            raise _bad_param("cursor", "Invalid cursor.")
    elif not _in_id_range(value, 0):
        # views and id: both are 32-bit non-negative integers in the database.
        raise _bad_param("cursor", "Invalid cursor.")
    return value, last_id


def _single(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if isinstance(value, list):
        raise _bad_param(name, "Give this parameter at most once.")
    if value is not None and ("\x00" in value or not value.isprintable()):
        raise _bad_param(name, "Contains characters that are not allowed.")
    return value


def parse_list_query(req: falcon.Request, default_limit: int) -> ListQuery:
    params = req.params
    for name in sorted(set(params) - KNOWN_PARAMS):
        raise _bad_param(name, "Unknown query parameter.")

    for name in IGNORED_PARAMS:
        _single(params, name)
    limit_text = _single(params, "limit")
    if limit_text is None:
        limit = default_limit
    elif limit_text.isascii() and limit_text.isdigit() and 1 <= int(limit_text) <= MAX_LIMIT:
        limit = int(limit_text)
    else:
        raise _bad_param("limit", f"Must be an integer from 1 to {MAX_LIMIT}.")

    ordering = _single(params, "ordering") or DEFAULT_ORDERING
    if ordering not in ORDERINGS:
        raise _bad_param("ordering", "Must be one of " + ", ".join(sorted(ORDERINGS)) + ".")

    cursor = _single(params, "cursor")
    after = _decode_cursor(cursor, ordering) if cursor else None

    author = _single(params, "author")
    search = _single(params, "search")
    if search is not None and len(search) > MAX_SEARCH_LENGTH:
        raise _bad_param("search", f"Ensure this value has at most {MAX_SEARCH_LENGTH} characters.")
    return ListQuery(limit=limit, ordering=ordering, after=after, author=author, search=search or None)


def next_link(req: falcon.Request, cursor: str) -> str:
    """``Link`` header value for the page at ``cursor``, keeping every other parameter."""
    params = [(name, value) for name, value in req.params.items() if name != "cursor"]
    params.append(("cursor", cursor))
    return f'<{req.path}?{urlencode(params)}>; rel="next"'
