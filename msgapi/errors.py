"""Errors as RFC 9457 problem details, decided in one place.

Every error response is ``application/problem+json`` with ``type``, ``title``,
``status`` and ``detail``; validation errors add ``errors``: field -> messages.
The old service's clients read DRF's and simplejwt's bodies, so those members are
kept as extensions: each bad field's messages also at the top level, ``code``
(``token_not_valid``) on every 401 for a bad token, ``error`` on a message 404.
No exception text or trace ever reaches a client: unexpected exceptions are
logged with the request id and answered with a generic 500.
"""

from __future__ import annotations

import logging
from typing import Any

import falcon
import peewee

from . import jsontext
from .passwords import HashingBusy
from .ratelimit import RateLimited
from .store import Store, TimeLimitExceeded

log = logging.getLogger("msgapi.errors")

PROBLEM_JSON = "application/problem+json"
# How long a client should wait before retrying when the database is unavailable.
RETRY_AFTER_SECONDS = 2
# simplejwt's code for a bad, expired, revoked or wrong-type token: frontends refresh on it.
TOKEN_NOT_VALID = "token_not_valid"
# Members a field's messages must never replace at the top level of the body
# (RFC 9457's own, and the extensions we add).
PROBLEM_MEMBERS = frozenset({"type", "title", "status", "detail", "instance", "errors", "code", "error", "messages"})


class ValidationFailed(falcon.HTTPBadRequest):
    """400 whose body names every bad field: ``errors: {field: [message, ...]}``."""

    def __init__(self, errors: dict[str, list[str]], detail: str = "The request body is not valid.") -> None:
        super().__init__(title="Invalid request", description=detail)
        self.errors = errors


def with_members(exc: falcon.HTTPError, **members: Any) -> falcon.HTTPError:
    """``exc`` whose problem body also carries ``members`` (extension members, RFC 9457 3.2)."""
    exc.extensions = members  # type: ignore[attr-defined]
    return exc


def unauthorized(detail: str, *, token_sent: bool) -> falcon.HTTPUnauthorized:
    """401 with the Bearer challenge.

    When a token was sent but is bad: ``error="invalid_token"`` in the challenge and
    simplejwt's ``"code": "token_not_valid"`` in the body.
    """
    challenge = 'Bearer error="invalid_token"' if token_sent else "Bearer"
    exc = falcon.HTTPUnauthorized(title="Not authenticated", description=detail, challenges=[challenge])
    if token_sent:
        with_members(exc, code=TOKEN_NOT_VALID)
    return exc


# simplejwt's texts, without a final period: clients compare them.
BEARER_TOKEN_NOT_VALID = "Given token not valid for any token type"
TOKEN_INVALID_OR_EXPIRED = "Token is invalid or expired"
TOKEN_WRONG_TYPE = "Token has wrong type"
# simplejwt's code and text for an Authorization header that is "Bearer" with no token, or
# with more than one value after it.
BAD_AUTHORIZATION_HEADER = "bad_authorization_header"
BAD_AUTHORIZATION_HEADER_DETAIL = "Authorization header must contain two space-delimited values"


def bearer_token_refused(reason: str = TOKEN_INVALID_OR_EXPIRED) -> falcon.HTTPUnauthorized:
    """401 for a Bearer token that cannot be accepted, spelled as simplejwt spelled it.

    simplejwt tried each token class it knew (only ``AccessToken``) and listed why each
    refused the token under ``messages``; ``reason`` is that text.
    """
    exc = unauthorized(BEARER_TOKEN_NOT_VALID, token_sent=True)
    attempt = {"token_class": "AccessToken", "token_type": "access", "message": reason}
    return with_members(exc, code=TOKEN_NOT_VALID, messages=[attempt])


def token_user_refused() -> falcon.HTTPUnauthorized:
    """401 for a valid token whose user may no longer act (inactive, deleted, or tokens ended).

    To a client this token is as dead as a revoked one, so it gets the same answer.
    """
    return bearer_token_refused()


def bad_authorization_header() -> falcon.HTTPUnauthorized:
    """401 for ``Bearer`` followed by no token, or by more than one value."""
    exc = unauthorized(BAD_AUTHORIZATION_HEADER_DETAIL, token_sent=True)
    return with_members(exc, code=BAD_AUTHORIZATION_HEADER)


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
        # DRF put each field's messages at the top level, where old clients look for them.
        for field, messages in errors.items():
            if field not in PROBLEM_MEMBERS:
                body[field] = messages
    for name, value in getattr(exc, "extensions", {}).items():
        body.setdefault(name, value)
    return body


def serialize_problem(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    """Falcon's error serializer: always problem+json, whatever the client's Accept says."""
    resp.content_type = PROBLEM_JSON
    resp.data = jsontext.dumps(problem_body(exc)).encode("utf-8")


def _database_unavailable(store: Store) -> Any:
    def handle(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict) -> None:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        log.error("database unavailable: %s: %s", type(exc).__name__, first_line)
        store.discard_broken()
        raise falcon.HTTPServiceUnavailable(
            title="Service unavailable",
            description="The database is busy or unreachable; retry shortly.",
            retry_after=RETRY_AFTER_SECONDS,
        )

    return handle


def _time_limit_exceeded(req: falcon.Request, resp: falcon.Response, exc: TimeLimitExceeded, params: dict) -> None:
    # Not a failure of the database: its connection stays. The log line carries the request id.
    log.warning("list query stopped at its time limit")
    raise falcon.HTTPServiceUnavailable(
        title="Query too slow",
        description=(
            "This list query needed more than the time it is allowed. Narrow it (search for 3 or "
            "more characters, add author) or retry shortly."
        ),
        retry_after=RETRY_AFTER_SECONDS,
    )


def _unexpected(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict) -> None:
    if isinstance(exc, falcon.HTTPError):
        raise exc
    log.exception("unhandled error on %s %s", req.method, req.path)
    raise falcon.HTTPInternalServerError(
        title="Internal server error", description="The server hit an unexpected error."
    )


def _rate_limited(req: falcon.Request, resp: falcon.Response, exc: RateLimited, params: dict) -> None:
    raise falcon.HTTPTooManyRequests(
        title="Too many requests",
        description=f"Too many attempts from this client or for this account; retry in {exc.retry_after} s.",
        retry_after=exc.retry_after,
    )


def _hashing_busy(req: falcon.Request, resp: falcon.Response, exc: HashingBusy, params: dict) -> None:
    raise falcon.HTTPServiceUnavailable(
        title="Service busy",
        description="Too many logins and registrations are being processed; retry shortly.",
        retry_after=RETRY_AFTER_SECONDS,
    )


def install(app: falcon.App, store: Store) -> None:
    app.set_error_serializer(serialize_problem)
    # Handlers are matched most specific first (Falcon 3+), so the order here does not matter.
    app.add_error_handler(Exception, _unexpected)
    unavailable = _database_unavailable(store)
    app.add_error_handler(peewee.OperationalError, unavailable)
    app.add_error_handler(peewee.InterfaceError, unavailable)
    app.add_error_handler(TimeLimitExceeded, _time_limit_exceeded)
    app.add_error_handler(RateLimited, _rate_limited)
    app.add_error_handler(HashingBusy, _hashing_busy)
