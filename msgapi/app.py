"""``create_app(config)``: the one place that wires configuration, storage, middleware and routes."""

from __future__ import annotations

from typing import Any

import falcon

from . import errors, jsontext
from .config import Config, from_env
from .metrics import Metrics, MetricsMiddleware, MetricsResource
from .middleware import BearerAuth, BodyLimit, DatabaseSession, RequestContext
from .passwords import HashingGate
from .ratelimit import RateLimiter
from .resources.accounts import Me, PasswordChange, UserAdmin
from .resources.auth import Register, TokenBlacklist, TokenObtain, TokenRefresh, TokenVerify
from .resources.docs import ASSETS_PREFIX, DocsAsset, DocsPage, OpenAPISpec
from .resources.health import Health
from .resources.messages import MessageCollection, MessageItem
from .store import Store, open_store
from .tokens import TokenService

EXPOSED_HEADERS = ["Location", "Link", "X-Next-Cursor", "Retry-After", "X-Request-ID", "WWW-Authenticate", "ETag"]


class AllowListCORS(falcon.CORSMiddleware):
    """Falcon's CORS policy for a list of origins, plus the ``Vary: Origin`` it leaves out.

    The answer depends on the request's Origin (echoed, or no CORS headers at all), so
    every response says so, with or without an Origin: otherwise a shared cache could
    hand one origin's answer (or a no-Origin answer) to another origin.
    """

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool) -> None:
        super().process_response(req, resp, resource, req_succeeded)
        resp.append_header("Vary", "Origin")


def _cors(config: Config) -> list[falcon.CORSMiddleware]:
    if config.cors_allow_origins is None:
        return []
    # No credentials: tokens travel in the Authorization header, never in cookies.
    if config.cors_allow_origins == ("*",):
        # "*" is the same answer for every origin: nothing to vary on.
        return [falcon.CORSMiddleware(allow_origins="*", expose_headers=EXPOSED_HEADERS)]
    return [AllowListCORS(allow_origins=list(config.cors_allow_origins), expose_headers=EXPOSED_HEADERS)]


def create_app(config: Config | None = None, store: Store | None = None) -> falcon.App:
    """Build the WSGI app; reads the environment only when no config is given.

    Opens the store from the config (creating missing tables) unless one is given.
    """
    config = (config or from_env()).with_secret_key()
    config.log_startup_warnings()
    store = store or open_store(config)

    tokens = TokenService(config.secret_key, config.access_token_lifetime, config.refresh_token_lifetime)
    metrics = Metrics() if config.metrics else None
    app = falcon.App(
        middleware=[
            RequestContext(config.trusted_proxies),
            *([MetricsMiddleware(metrics)] if metrics else []),
            *_cors(config),
            BodyLimit(config.max_body_bytes),
            DatabaseSession(store),
            BearerAuth(tokens, store),
        ]
    )
    app.req_options.strip_url_path_trailing_slash = True
    # "?limit=" must be a 400, not silently the default.
    app.req_options.keep_blank_qs_values = True
    errors.install(app, store)
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = falcon.media.JSONHandler(dumps=jsontext.dumps)

    limiter = RateLimiter(store.limits, config.auth_rate_limit, config.rate_limit_ipv6_prefix)
    write_limiter = RateLimiter(store.limits, config.write_rate_limit)
    # Logins may hold at most half the server's threads (hashing or queued for it): the
    # other half stays free for everything else, however many logins arrive at once.
    concurrency = config.effective_hash_concurrency()
    gate = HashingGate(concurrency, config.hash_wait_seconds, max(concurrency + 1, config.threads // 2))
    iterations = config.password_hash_iterations
    app.add_route("/api/auth/register", Register(store, iterations, limiter, gate))
    app.add_route("/api/auth/token", TokenObtain(store, tokens, iterations, limiter, gate))
    app.add_route("/api/auth/token/refresh", TokenRefresh(store, tokens, config.rotate_refresh_tokens))
    app.add_route("/api/auth/token/verify", TokenVerify(store, tokens))
    app.add_route("/api/auth/token/blacklist", TokenBlacklist(store, tokens))
    app.add_route("/api/auth/me", Me(store))
    app.add_route("/api/auth/password", PasswordChange(store, tokens, iterations, limiter, gate))
    app.add_route("/api/users/{id}", UserAdmin(store))
    app.add_route(
        "/api/messages",
        MessageCollection(
            store, config.list_page_size, write_limiter, config.list_time_limit_ms, config.idempotency_key_ttl
        ),
    )
    app.add_route("/api/messages/{id}", MessageItem(store, write_limiter, config.require_preconditions))
    app.add_route("/healthz", Health(store))
    if metrics:
        # Switched off by default, and kept out of openapi.yaml: it is for operators, not clients.
        app.add_route("/metrics", MetricsResource(metrics, store))
    docs = DocsPage()
    app.add_route("/", docs)
    app.add_route("/docs/init.js", docs, suffix="init")
    app.add_route("/openapi.yaml", OpenAPISpec())
    app.add_route(ASSETS_PREFIX + "/{name}", DocsAsset())
    return app
