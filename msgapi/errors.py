"""Errors as RFC 9457 problem details, decided in one place.

Every error response is ``application/problem+json`` with ``type``, ``title``,
``status`` and ``detail``; validation errors add ``errors``: field -> messages.
No exception text or trace ever reaches a client: unexpected exceptions are
logged with the request id and answered with a generic 500.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import falcon
import peewee

log = logging.getLogger("msgapi.errors")

PROBLEM_JSON = "application/problem+json"
# How long a client should wait before retrying when the database is unavailable.
RETRY_AFTER_SECONDS = 2


class ValidationFailed(falcon.HTTPBadRequest):
    """400 whose body names every bad field: ``errors: {field: [message, ...]}``."""

    def __init__(self, errors: dict[str, list[str]], detail: str = "The request body is not valid.") -> None:
        super().__init__(title="Invalid request", description=detail)
        self.errors = errors


def unauthorized(detail: str, *, token_sent: bool) -> falcon.HTTPUnauthorized:
    """401 with the Bearer challenge; ``error="invalid_token"`` when a token was sent but is bad."""
    challenge = 'Bearer error="invalid_token"' if token_sent else "Bearer"
    return falcon.HTTPUnauthorized(title="Not authenticated", description=detail, challenges=[challenge])


def problem_body(exc: falcon.HTTPError) -> dict[str, Any]:
    # Falcon's own errors (unknown route, 405) are titled "404 Not Found"; drop the number.
    title = exc.title.removeprefix(f"{exc.status_code} ")
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": exc.status_code,
        "detail": exc.description or title,
    }
    errors = getattr(exc, "errors", None)
    if errors:
        body["errors"] = errors
    return body


def serialize_problem(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    """Falcon's error serializer: always problem+json, whatever the client's Accept says."""
    resp.content_type = PROBLEM_JSON
    resp.data = json.dumps(problem_body(exc), ensure_ascii=False).encode("utf-8")


def _database_unavailable(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict) -> None:
    log.error("database unavailable: %s: %s", type(exc).__name__, str(exc).strip().splitlines()[0:1])
    raise falcon.HTTPServiceUnavailable(
        title="Service unavailable",
        description="The database is busy or unreachable; retry shortly.",
        retry_after=RETRY_AFTER_SECONDS,
    )


def _unexpected(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict) -> None:
    if isinstance(exc, falcon.HTTPError):
        raise exc
    log.exception("unhandled error on %s %s", req.method, req.path)
    raise falcon.HTTPInternalServerError(
        title="Internal server error", description="The server hit an unexpected error."
    )


def install(app: falcon.App) -> None:
    app.set_error_serializer(serialize_problem)
    # Handlers are matched most specific first (Falcon 3+), so the order here does not matter.
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(peewee.OperationalError, _database_unavailable)
    app.add_error_handler(peewee.InterfaceError, _database_unavailable)
