"""/api/messages and /api/messages/{id}."""

from __future__ import annotations

import falcon

from .. import models
from ..body import FieldErrors, read_body
from ..errors import token_user_refused, with_members
from ..ratelimit import RateLimiter
from .paging import encode_cursor, next_link, parse_list_query

MAX_CONTENT_LENGTH = 160


def send_json(resp: falcon.Response, text: str) -> None:
    """A body the database already rendered as JSON (see models._message_as_json)."""
    resp.content_type = falcon.MEDIA_JSON
    resp.text = text


def parse_message_id(raw: str) -> int:
    """The id from the path; anything that cannot be a message's id is 404, like an unknown one."""
    message_id = models.parse_id(raw)
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


class MessageCollection:
    auth_methods = frozenset({"POST"})
    checks_token_user = frozenset({"POST"})  # models.create_message checks the token's user

    def __init__(self, page_size: int, write_limiter: RateLimiter, time_limit_ms: int = 500) -> None:
        self._page_size = page_size
        self._write_limiter = write_limiter
        self._time_limit_ms = time_limit_ms

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = parse_list_query(req, self._page_size)
        page = models.list_messages(
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
        count_write(self._write_limiter, claims["user_id"])
        try:
            content = read_content(req)
        except falcon.HTTPError:
            # A refused token outranks a bad body, as on every other endpoint.
            if models.User.for_token(claims) is None:
                raise token_user_refused() from None
            raise
        created = models.create_message(content, claims)
        if created is None:
            raise token_user_refused()
        message_id, message = created
        resp.status = falcon.HTTP_201
        resp.location = f"/api/messages/{message_id}"
        send_json(resp, message)


class MessageItem:
    auth_methods = frozenset({"PUT", "PATCH", "DELETE"})

    def __init__(self, write_limiter: RateLimiter) -> None:
        self._write_limiter = write_limiter

    def on_get(self, req: falcon.Request, resp: falcon.Response, id: str) -> None:
        message = models.count_view(parse_message_id(id))
        if message is None:
            raise not_found()
        send_json(resp, message)

    def on_head(self, req: falcon.Request, resp: falcon.Response, id: str) -> None:
        # HEAD answers like GET (same headers and length) but does not count a view.
        message = models.get_message(parse_message_id(id))
        if message is None:
            raise not_found()
        send_json(resp, message)

    def _writable_id(self, req: falcon.Request, raw_id: str) -> int:
        """The id of a message the user may change: 404 before 403, both before any body error."""
        count_write(self._write_limiter, req.context.user.id)
        message_id = parse_message_id(raw_id)
        exists, author_id = models.find_author_id(message_id)
        if not exists:
            raise not_found()
        user = req.context.user
        if not user.is_staff and (author_id is None or author_id != user.id):
            raise falcon.HTTPForbidden(
                title="Forbidden",
                description="Only the message's author or staff may change it.",
            )
        return message_id

    def _replace(self, req: falcon.Request, resp: falcon.Response, id: str) -> None:
        message_id = self._writable_id(req, id)
        message = models.replace_content(message_id, read_content(req))
        if message is None:  # deleted between the check and the update
            raise not_found()
        send_json(resp, message)

    on_put = _replace
    on_patch = _replace

    def on_delete(self, req: falcon.Request, resp: falcon.Response, id: str) -> None:
        if not models.delete_message(self._writable_id(req, id)):
            raise not_found()
        resp.status = falcon.HTTP_204
