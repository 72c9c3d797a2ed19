"""``create_app(config)``: the one place that wires configuration, storage, middleware and routes."""

from __future__ import annotations

import falcon

from . import errors, models
from .config import Config, from_env
from .db import database, open_database
from .middleware import BearerAuth, BodyLimit, DatabaseSession, RequestContext
from .passwords import HashingGate
from .ratelimit import RateLimiter
from .resources.auth import Register, TokenObtain, TokenRefresh
from .resources.docs import ASSETS_PREFIX, SWAGGER_ASSETS, DocsPage, OpenAPISpec
from .resources.messages import MessageCollection, MessageItem
from .tokens import TokenService

EXPOSED_HEADERS = ["Location", "Link", "Retry-After", "X-Request-ID", "WWW-Authenticate"]


def _cors(config: Config) -> list[falcon.CORSMiddleware]:
    if config.cors_allow_origins is None:
        return []
    origins = "*" if config.cors_allow_origins == ("*",) else list(config.cors_allow_origins)
    # No credentials: tokens travel in the Authorization header, never in cookies.
    return [falcon.CORSMiddleware(allow_origins=origins, expose_headers=EXPOSED_HEADERS)]


def create_app(config: Config | None = None) -> falcon.App:
    """Build the WSGI app; reads the environment only when no config is given."""
    config = config or from_env()
    database.initialize(open_database(config))
    try:
        models.create_tables()
    finally:
        database.close()

    tokens = TokenService(config.secret_key, config.access_token_lifetime, config.refresh_token_lifetime)
    app = falcon.App(
        middleware=[
            RequestContext(config.trusted_proxies),
            *_cors(config),
            BodyLimit(config.max_body_bytes),
            DatabaseSession(),
            BearerAuth(tokens),
        ]
    )
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)

    limiter = RateLimiter(config.auth_rate_limit)
    gate = HashingGate(config.effective_hash_concurrency(), config.hash_wait_seconds)
    app.add_route("/api/auth/register", Register(config.password_hash_iterations, limiter, gate))
    app.add_route("/api/auth/token", TokenObtain(tokens, config.password_hash_iterations, limiter, gate))
    app.add_route("/api/auth/token/refresh", TokenRefresh(tokens))
    app.add_route("/api/messages", MessageCollection())
    app.add_route("/api/messages/{id}", MessageItem())
    docs = DocsPage()
    app.add_route("/", docs)
    app.add_route("/docs/init.js", docs, suffix="init")
    app.add_route("/openapi.yaml", OpenAPISpec())
    app.add_static_route(ASSETS_PREFIX, str(SWAGGER_ASSETS))
    return app
