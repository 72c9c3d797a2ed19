"""/api/messages and /api/messages/{id}."""

from __future__ import annotations

import datetime
import hashlib
import re
import time

import falcon

from ..body import FieldErrors, read_body
from ..errors import token_user_refused, with_members
from ..ratelimit import RateLimiter
from ..store import RenderedMessage, Store, etag_timestamp, parse_id
from .paging import encode_cursor, next_link, parse_list_query

MAX_CONTENT_LENGTH = 160


def send_json(resp: falcon.Response, text: str) -> None:
    """A body the database already rendered as JSON (see store.render.message_json)."""
    resp.content_type = falcon.MEDIA_JSON
    resp.text = text


def send_message(resp: falcon.Response, message: RenderedMessage) -> None:
    """One message, with its entity tag (the validator a conditional write sends back in If-Match)."""
    resp.etag = message.etag
    send_json(resp, message.json)


def parse_message_id(raw: str) -> int:
    """The id from the path; anything that cannot be a message's id is 404, like an unknown one."""
    message_id = parse_id(raw)
    if message_id is None:
        raise not_found()
    return message_id


def not_found() -> falcon.HTTPNotFound:
    # "error" is the old service's body, which its clients read.
    return with_members(
        falcon.HTTPNotFound(title="Not found", description="No message has this id."), error="Message not found!"
    )


def count_write(limiter: RateLimiter, user_id: int) -> None:
    """One create, update or delete in the user's WRITE_RATE_LIMIT budget, or 429."""
    limiter.hit(limiter.account_bucket("write", str(user_id)))


def read_content(req: falcon.Request) -> str:
    """``content`` from the body: trimmed, then 1 to 160 code points."""
    errors = FieldErrors()
    content = errors.string(read_body(req), "content", strip=True, max_length=MAX_CONTENT_LENGTH)
    errors.raise_if_any()
    assert content is not None
    return content


# At most 255 characters, none of them a control character (the header's value, as sent, is the key).
_IDEMPOTENCY_KEY = re.compile(r"[^\x00-\x1f\x7f]{1,255}\Z")


def read_idempotency_key(req: falcon.Request) -> str | None:
    """The ``Idempotency-Key`` header, if sent; 400 if it is empty, too long or holds control characters."""
    key = req.get_header("Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        raise falcon.HTTPBadRequest(
            title="Invalid Idempotency-Key",
            description="An Idempotency-Key must be 1 to 255 characters, without control characters.",
        )
    return key


class MessageCollection:
    auth_methods = frozenset({"POST"})
    checks_token_user = frozenset({"POST"})  # store.messages.create checks the token's user

    def __init__(
        self,
        store: Store,
        page_size: int,
        write_limiter: RateLimiter,
        time_limit_ms: int,
        idempotency_key_ttl: int,
    ) -> None:
        self._store = store
        self._page_size = page_size
        self._write_limiter = write_limiter
        self._time_limit_ms = time_limit_ms
        self._idempotency_key_ttl = idempotency_key_ttl

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = parse_list_query(req, self._page_size)
        page = self._store.listing.page(
            limit=query.limit,
            ordering=query.ordering,
            after=query.after,
            author=query.author,
            search=query.search,
            time_limit_ms=self._time_limit_ms,
        )
        if page.next_after is not None:
            cursor = encode_cursor(query.ordering, page.next_after)
            resp.append_header("Link", next_link(req, cursor))
            # The same cursor on its own, for clients (and generated ones) that do not parse Link.
            resp.set_header("X-Next-Cursor", cursor)
        send_json(resp, page.json)

    on_head = on_get

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        claims = req.context.claims
        # The token's user is checked once, before anything that needs it: only a token still
        # accepted spends its user's write budget (a revoked one, kept by a thief after the owner
        # changed the password, must not lock the owner's writes out) or claims an
        # Idempotency-Key. A plain create with no budget needs no separate check: its INSERT
        # makes it in the same statement.
        checked = self._write_limiter.enabled or req.get_header("Idempotency-Key") is not None
        if checked and self._store.users.for_token(claims) is None:
            raise token_user_refused()
        count_write(self._write_limiter, claims["user_id"])
        try:
            key = read_idempotency_key(req)
            content = read_content(req)
        except falcon.HTTPError:
            # A refused token outranks a bad body, as on every other endpoint.
            if not checked and self._store.users.for_token(claims) is None:
                raise token_user_refused() from None
            raise
        if key is None:
            created = self._store.messages.create(content, claims)
        else:
            created = self._create_once(content, claims, key)
        if created is None:
            raise token_user_refused()
        message_id, message = created
        resp.status = falcon.HTTP_201
        resp.location = f"/api/messages/{message_id}"
        send_message(resp, message)

    def _create_once(self, content: str, claims: dict, key: str) -> tuple[int, RenderedMessage] | None:
        """Create under an Idempotency-Key, for a token whose user is checked: the first request
        with it creates; the rest get its answer."""
        user_id = claims["user_id"]
        fingerprint = hashlib.sha256(content.encode("utf-8")).hexdigest()
        found = self._store.idempotency.claim(user_id, key, fingerprint, int(time.time()), self._idempotency_key_ttl)
        if found.mismatch:
            raise falcon.HTTPUnprocessableEntity(
                title="Idempotency key reused",
                description="This Idempotency-Key was used for a different request; use a new key.",
            )
        if found.replay is not None:
            return found.replay
        if found.claim is None:
            raise key_in_flight()
        try:
            created = self._store.idempotency.create_once(content, claims, key, found.claim)
        except Exception:
            self._store.idempotency.release(user_id, key, found.claim)
            raise
        if created is False:
            raise key_in_flight()
        return created


def key_in_flight() -> falcon.HTTPConflict:
    return falcon.HTTPConflict(
        title="Request in progress",
        description="A request with this Idempotency-Key is still being processed; retry shortly.",
        headers={"Retry-After": "1"},
    )


def precondition_failed() -> falcon.HTTPPreconditionFailed:
    return falcon.HTTPPreconditionFailed(
        title="Precondition failed",
        description="The message has changed since the entity tag in If-Match; read it again and retry.",
    )


# One element of an If-Match list: an entity tag, weak (W/) or strong, or nothing (",,").
_LIST_ELEMENT = re.compile(r'[ \t]*(?:(W/)?("[!#-~\x80-\xff]*")[ \t]*)?(?:,|\Z)')


def strong_tags(header: str) -> set[str]:
    """The strong entity tags of an If-Match list; none at all if the list is malformed.

    Weak tags never match (If-Match uses the strong comparison), nor do unquoted ones.
    """
    tags: set[str] = set()
    position = 0
    while position < len(header):
        element = _LIST_ELEMENT.match(header, position)
        if element is None or element.end() == position:
            return set()
        if element.group(2) and not element.group(1):
            tags.add(element.group(2))
        position = element.end()
    return tags


class MessageItem:
    auth_methods = frozenset({"PUT", "PATCH", "DELETE"})

    def __init__(self, store: Store, write_limiter: RateLimiter, require_preconditions: bool) -> None:
        self._store = store
        self._write_limiter = write_limiter
        self._require_preconditions = require_preconditions

    def on_get(self, req: falcon.Request, resp: falcon.Response, id: str) -> None:
        message = self._store.messages.count_view(parse_message_id(id))
        if message is None:
            raise not_found()
        send_message(resp, message)

    def on_head(self, req: falcon.Request, resp: falcon.Response, id: str) -> None:
        # HEAD answers like GET (same headers and length) but does not count a view.
        message = self._store.messages.get(parse_message_id(id))
        if message is None:
            raise not_found()
        send_message(resp, message)

    def _writable_id(self, req: falcon.Request, raw_id: str) -> tuple[int, datetime.datetime | None]:
        """The id of a message the user may change, and the state it must still be in to change it.

        404 before 403 before 412 (If-Match) or 428, all before any body error. The state
        (``updated_at``, from the matched entity tag) is None without a precondition and for
        ``If-Match: *``; the write itself checks it again, in the same statement.
        """
        count_write(self._write_limiter, req.context.user.id)
        message_id = parse_message_id(raw_id)
        target = self._store.messages.find_write_target(message_id)
        if target is None:
            raise not_found()
        author_id, etag = target
        user = req.context.user
        if not user.is_staff and (author_id is None or author_id != user.id):
            raise falcon.HTTPForbidden(
                title="Forbidden",
                description="Only the message's author or staff may change it.",
            )
        header = req.get_header("If-Match")
        if header is None:
            if self._require_preconditions:
                raise falcon.HTTPPreconditionRequired(
                    title="Precondition required",
                    description="Send If-Match with the message's ETag (or *) to change it.",
                )
            return message_id, None
        if header.strip() == "*":
            return message_id, None
        if etag not in strong_tags(header):
            raise precondition_failed()
        return message_id, etag_timestamp(etag)

    def _lost_race(self, message_id: int, condition: datetime.datetime | None) -> falcon.HTTPError:
        """What a write that changed nothing answers: 404 if the message is gone, else 412."""
        if condition is None or self._store.messages.find_write_target(message_id) is None:
            return not_found()
        return precondition_failed()

    def _replace(self, req: falcon.Request, resp: falcon.Response, id: str) -> None:
        message_id, condition = self._writable_id(req, id)
        message = self._store.messages.replace_content(message_id, read_content(req), condition)
        if message is None:  # deleted, or changed, between the check and the update
            raise self._lost_race(message_id, condition)
        send_message(resp, message)

    on_put = _replace
    on_patch = _replace

    def on_delete(self, req: falcon.Request, resp: falcon.Response, id: str) -> None:
        message_id, condition = self._writable_id(req, id)
        if not self._store.messages.delete(message_id, condition):
            raise self._lost_race(message_id, condition)
        resp.status = falcon.HTTP_204
