"""/api/messages and /api/messages/{id}."""

from __future__ import annotations

from typing import Any

import falcon

from .. import models
from ..body import FieldErrors, read_body

MAX_CONTENT_LENGTH = 160


def message_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "content": row["content"],
        "views": row["views"],
        "created_at": models.render_timestamp(row["created_at"]),
        "updated_at": models.render_timestamp(row["updated_at"]),
        "author": row["author"],
    }


def parse_message_id(raw: str) -> int:
    """The id from the path; anything that cannot be a message's id is 404, like an unknown one."""
    if raw.isascii() and raw.isdigit() and raw[0] != "0" and len(raw) <= 10:
        message_id = int(raw)
        if message_id <= models.MAX_ID:
            return message_id
    raise not_found()


def not_found() -> falcon.HTTPNotFound:
    return falcon.HTTPNotFound(title="Not found", description="No message has this id.")


def read_content(req: falcon.Request) -> str:
    """``content`` from the body: trimmed, then 1 to 160 code points."""
    errors = FieldErrors()
    content = errors.string(read_body(req), "content", strip=True, max_length=MAX_CONTENT_LENGTH)
    errors.raise_if_any()
    assert content is not None
    return content


class MessageCollection:
    auth_methods = frozenset({"POST"})

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = [message_json(row) for row in models.list_messages()]

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        row = models.create_message(read_content(req), req.context.user)
        resp.status = falcon.HTTP_201
        resp.location = f"/api/messages/{row['id']}"
        resp.media = message_json(row)


class MessageItem:
    auth_methods = frozenset({"PUT", "PATCH", "DELETE"})

    def on_get(self, req: falcon.Request, resp: falcon.Response, id: str) -> None:
        row = models.count_view(parse_message_id(id))
        if row is None:
            raise not_found()
        resp.media = message_json(row)

    def on_head(self, req: falcon.Request, resp: falcon.Response, id: str) -> None:
        # HEAD answers like GET (same headers and length) but does not count a view.
        row = models.get_message(parse_message_id(id))
        if row is None:
            raise not_found()
        resp.media = message_json(row)

    def _replace(self, req: falcon.Request, resp: falcon.Response, id: str) -> None:
        message_id = parse_message_id(id)
        # 404 before any body error: the order of checks is part of the contract.
        if not models.message_exists(message_id):
            raise not_found()
        row = models.replace_content(message_id, read_content(req))
        if row is None:  # deleted between the check and the update
            raise not_found()
        resp.media = message_json(row)

    on_put = _replace
    on_patch = _replace

    def on_delete(self, req: falcon.Request, resp: falcon.Response, id: str) -> None:
        if not models.delete_message(parse_message_id(id)):
            raise not_found()
        resp.status = falcon.HTTP_204
