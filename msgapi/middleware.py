"""Middleware: request ids and the access log, body limits, database connections, Bearer auth."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Sequence
from typing import Any

import falcon

from . import logcontext
from .errors import TOKEN_WRONG_TYPE, bad_authorization_header, bearer_token_refused, token_user_refused, unauthorized
from .proxies import Network, client_address
from .store import Store
from .tokens import ACCESS, InvalidToken, TokenService, WrongTokenType

# A client's X-Request-ID is kept only when it is short and harmless to echo and log.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
# Request ids only need to be unique, not secret: a seeded PRNG, not a system call per request.
_request_ids = random.Random()


class RequestContext:
    """Gives every request an id and a client address, logs one access line for it,
    and sets the headers every response needs."""

    def __init__(self, trusted_proxies: Sequence[Network] = ()) -> None:
        self._trusted_proxies = tuple(trusted_proxies)
        self._access_log = logcontext.AccessLog()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()
        incoming = req.get_header("X-Request-ID")
        if incoming and _SANE_REQUEST_ID.match(incoming):
            req.context.request_id = incoming
        else:
            req.context.request_id = f"{_request_ids.getrandbits(128):032x}"
        req.context.log_token = logcontext.request_id.set(req.context.request_id)
        req.context.user = None
        req.context.client_ip = client_address(
            req.remote_addr, req.get_header("X-Forwarded-For"), self._trusted_proxies
        )

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool) -> None:
        resp.set_header("X-Request-ID", req.context.request_id)
        resp.set_header("X-Content-Type-Options", "nosniff")
        elapsed_ms = (time.perf_counter() - req.context.started) * 1000
        # The path only: query strings may carry secrets some client put there.
        self._access_log.info(f"{req.method} {req.path} {resp.status_code} {elapsed_ms:.1f}ms", req.context.request_id)
        logcontext.request_id.reset(req.context.log_token)


class BodyLimit:
    """413 from ``Content-Length`` before anything reads the body."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        length = req.content_length
        if length is not None and length > self._max_bytes:
            raise falcon.HTTPContentTooLarge(
                title="Request body too large",
                description=f"The body may be at most {self._max_bytes} bytes.",
            )


class DatabaseSession:
    """Returns the request's pooled connection when the response is done.

    The connection is taken lazily on the first query (so the docs and the spec
    never touch the database), and always given back here, even after errors.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool) -> None:
        self._store.release()


class BearerAuth:
    """Authenticates the methods a resource lists in ``auth_methods``, and no others.

    Runs before the responder, so a missing or bad token is 401 before the
    responder can say 404 or 400. The user must still exist, be active and be on
    the token's version: checked here and put in ``req.context.user``, except for
    the methods a resource lists in ``checks_token_user``, whose data-layer call
    makes the same check in its own statement (``req.context.claims`` has the token).
    """

    def __init__(self, tokens: TokenService, store: Store) -> None:
        self._tokens = tokens
        self._store = store

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict) -> None:
        if req.method not in getattr(resource, "auth_methods", ()):
            return
        # Read as simplejwt read it, so old clients get the answers they know: no header or
        # another scheme is "not provided"; "Bearer" must be followed by exactly one value.
        parts = (req.get_header("Authorization") or "").split()
        if not parts or parts[0].lower() != "bearer":
            raise unauthorized("Authentication credentials were not provided.", token_sent=False)
        if len(parts) != 2:
            raise bad_authorization_header()
        try:
            claims = self._tokens.decode(parts[1], ACCESS)
        except WrongTokenType:
            raise bearer_token_refused(TOKEN_WRONG_TYPE) from None
        except InvalidToken:
            raise bearer_token_refused() from None
        req.context.claims = claims
        if req.method in getattr(resource, "checks_token_user", ()):
            return
        user = self._store.users.for_token(claims)
        if user is None:
            raise token_user_refused()
        req.context.user = user
