"""Settings: read once from the environment into one immutable object.

Nothing else in the package reads ``os.environ``; the app factory receives a
``Config``. A malformed value raises ``ConfigError`` whose message is one line
naming the setting, so an operator sees exactly what to fix.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from .database_url import database_url_problem, sqlite_path
from .keyfile import MIN_SECRET_KEY_LENGTH, KeyFileError, load_or_create_secret_key, shared_with_others
from .proxies import Network, parse_networks

log = logging.getLogger("msgapi.config")

DEFAULT_DATABASE_URL = "sqlite:///msgapi.sqlite3"
DEFAULT_HASH_ITERATIONS = 600_000  # OWASP's current figure for PBKDF2-HMAC-SHA256
MAX_BODY_BYTES = 64 * 1024


_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclasses.dataclass(frozen=True)
class Rate:
    """A request budget: ``limit`` requests per ``period`` seconds."""

    limit: int
    period: int  # seconds

    @classmethod
    def parse(cls, text: str) -> Rate | None:
        """``"10/minute"`` -> Rate(10, 60); ``"off"`` -> None; raises ValueError otherwise."""
        text = text.strip().lower()
        if text in ("off", "none", "0"):
            return None
        count, _, unit = text.partition("/")
        unit = unit.strip() or "minute"
        if unit.endswith("s") and unit[:-1] in _PERIODS:  # "10/minutes" reads as "10/minute"
            unit = unit[:-1]
        count = count.strip()
        if unit not in _PERIODS or not (count.isascii() and count.isdigit()) or int(count) <= 0:
            raise ValueError(text)
        return cls(int(count), _PERIODS[unit])


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one line naming it."""


@dataclasses.dataclass(frozen=True)
class Config:
    database_url: str = DEFAULT_DATABASE_URL
    secret_key: str = ""
    access_token_lifetime: int = 2 * 3600
    refresh_token_lifetime: int = 24 * 3600
    password_hash_iterations: int = DEFAULT_HASH_ITERATIONS
    # None: CORS off. ("*",): every origin. Otherwise the listed origins.
    cors_allow_origins: tuple[str, ...] | None = ("*",)
    # Waitress worker threads; the PostgreSQL pool is sized from it.
    threads: int = 16
    # The port ``serve`` listens on unless --port says otherwise (PaaS platforms set PORT); 0: any.
    port: int = 8000
    max_body_bytes: int = MAX_BODY_BYTES
    # Per client address (and per username at the token endpoint); None: no limit.
    auth_rate_limit: Rate | None = Rate(10, 60)
    # IPv6 clients are budgeted by this prefix length (a /64 is what one host or site gets).
    rate_limit_ipv6_prefix: int = 64
    # Message creates, updates and deletes per user; None: no limit.
    write_rate_limit: Rate | None = Rate(30, 60)
    # Waitress: open connections at most, and seconds before an idle one is closed.
    connection_limit: int = 500
    channel_timeout: int = 30
    # Proxies whose X-Forwarded-For is believed.
    trusted_proxies: tuple[Network, ...] = ()
    # Password hashes running at once; None: one per core but one, below the thread count.
    hash_concurrency: int | None = None
    hash_wait_seconds: float = 15.0
    # Messages per page when the client gives no ``limit``.
    list_page_size: int = 100
    # The most one list query may run before it is stopped and answered with a 503.
    list_time_limit_ms: int = 500
    # Single-use refresh tokens with reuse detection; off keeps simplejwt's reusable ones.
    rotate_refresh_tokens: bool = False
    # GET /metrics (Prometheus text format); off unless asked for.
    metrics: bool = False
    # "text" (readable lines) or "json" (one JSON object per line).
    log_format: str = "text"
    # PUT, PATCH and DELETE of a message without If-Match are 428.
    require_preconditions: bool = False
    # How long an Idempotency-Key's answer is kept, in seconds.
    idempotency_key_ttl: int = 24 * 3600
    # Problems worth an operator's attention that do not stop start-up.
    startup_warnings: tuple[str, ...] = dataclasses.field(default=(), compare=False)
    # The one of them saying that the generated key is in use, and whether this process made it.
    key_notice: str = dataclasses.field(default="", compare=False)
    key_generated: bool = dataclasses.field(default=False, compare=False)
    # Without SECRET_KEY on SQLite: the file the key is read from, or made in by ``with_secret_key``.
    key_file: Path | None = dataclasses.field(default=None, compare=False)

    def with_secret_key(self) -> Config:
        """This configuration with the generated key read from ``key_file``, or made there on a first start.

        ``from_env(generate_key=False)`` leaves this to the caller, to do once nothing
        else can stop the start: a start that fails before it leaves no key file behind.
        """
        if self.secret_key or self.key_file is None:
            return self
        try:
            secret_key, generated = load_or_create_secret_key(self.key_file)
        except KeyFileError as exc:
            raise ConfigError(str(exc)) from None
        notice = (
            f"SECRET_KEY is not set: using the generated key in {self.key_file}; "
            "set SECRET_KEY to share it between processes"
        )
        warnings = [notice]
        if shared_with_others(self.key_file):
            warnings.append(f"{self.key_file} is readable by other users; restrict it with: chmod 600 {self.key_file}")
        return dataclasses.replace(
            self,
            secret_key=secret_key,
            key_notice=notice,
            key_generated=generated,
            startup_warnings=(*warnings, *self.startup_warnings),
        )

    def log_startup_warnings(self, key_notice: bool = True) -> None:
        """Log the warnings; ``key_notice`` False leaves out the generated-key notice
        (operator commands show it only when they generated the key)."""
        for warning in self.startup_warnings:
            if key_notice or warning != self.key_notice:
                log.warning("%s", warning)

    def effective_hash_concurrency(self) -> int:
        if self.hash_concurrency is not None:
            return self.hash_concurrency
        # One core left for everything else: PBKDF2 releases the GIL and would otherwise
        # keep every core busy while reads wait for CPU.
        cores = os.cpu_count() or 1
        return max(1, min(cores - 1, self.threads - 1))

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a positive integer, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {raw!r}")
    return value


def _rate(environ: Mapping[str, str], name: str, default: str) -> Rate | None:
    raw = environ.get(name, "")
    try:
        return Rate.parse(raw or default)
    except ValueError:
        raise ConfigError(
            f"{name} must look like '10/minute' (second, minute, hour, day) or 'off', got {raw!r}"
        ) from None


def _port(environ: Mapping[str, str]) -> int:
    raw = environ.get("PORT", "").strip()
    if not raw:
        return 8000
    if not (raw.isascii() and raw.isdigit() and int(raw) <= 65535):
        raise ConfigError(f"PORT must be a port number from 0 to 65535, got {raw!r}")
    return int(raw)


def _cors_origins(raw: str | None) -> tuple[str, ...] | None:
    if raw is None:
        return ("*",)
    origins = tuple(part.strip().rstrip("/") for part in raw.split(",") if part.strip())
    if not origins:
        return None
    if "*" in origins and len(origins) > 1:
        raise ConfigError("CORS_ALLOW_ORIGINS: '*' cannot be combined with other origins")
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ConfigError(f"CORS_ALLOW_ORIGINS: {origin!r} is not an http(s) origin")
    return origins


def _boolean(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _validate_database_url(url: str) -> str:
    problem = database_url_problem(url, "DATABASE_URL")
    if problem:
        raise ConfigError(problem)
    return url


def _check_sqlite_location(url: str) -> None:
    """The SQLite file's folder must exist and be writable: SQLite writes the file, -wal and -shm there."""
    path = sqlite_path(url)
    folder = path.parent
    if not folder.is_dir():
        raise ConfigError(f"DATABASE_URL: the folder {folder} for the SQLite database does not exist; create it first")
    if path.is_dir():
        raise ConfigError(f"DATABASE_URL: {path} is a folder; name a database file in it")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"DATABASE_URL: the folder {folder} is not writable by this user; SQLite writes there")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise ConfigError(f"DATABASE_URL: {path} is not readable and writable by this user")


def from_env(environ: Mapping[str, str] | None = None, *, generate_key: bool = True) -> Config:
    """Build a ``Config`` from environment variables (``os.environ`` by default).

    Without SECRET_KEY on SQLite, the generated key is read or made at the end; with
    ``generate_key`` False, not at all: the caller calls ``with_secret_key`` later.
    """
    environ = os.environ if environ is None else environ
    # Logged by whoever starts the app, once logging is set up as LOG_FORMAT says.
    warnings: list[str] = []
    database_url = _validate_database_url(environ.get("DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL)
    is_sqlite = database_url.startswith("sqlite")
    if is_sqlite:
        _check_sqlite_location(database_url)

    secret_key = environ.get("SECRET_KEY", "")
    key_file = None
    if not secret_key:
        if not is_sqlite:
            raise ConfigError("SECRET_KEY is required with PostgreSQL: every process must sign with the same key")
        db_file = sqlite_path(database_url)
        key_file = db_file.with_name(db_file.name + ".secret_key")
    if is_sqlite:
        db_file = sqlite_path(database_url)
        for path in (db_file, *(db_file.with_name(db_file.name + suffix) for suffix in ("-wal", "-shm"))):
            if shared_with_others(path):
                warnings.append(
                    f"{path} holds password hashes and is readable by other users; restrict it with: chmod 600 {path}"
                )
    if secret_key and len(secret_key) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(f"SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters long, got {len(secret_key)}")

    iterations = _positive_int(environ, "PASSWORD_HASH_ITERATIONS", DEFAULT_HASH_ITERATIONS)
    if iterations < DEFAULT_HASH_ITERATIONS:
        warnings.append(
            f"PASSWORD_HASH_ITERATIONS={iterations} is below the recommended {DEFAULT_HASH_ITERATIONS}; "
            "use it only for tests"
        )

    try:
        auth_rate_limit = Rate.parse(environ.get("AUTH_RATE_LIMIT", "") or "10/minute")
    except ValueError:
        raise ConfigError(
            f"AUTH_RATE_LIMIT must look like '10/minute' (second, minute, hour, day) or 'off', "
            f"got {environ.get('AUTH_RATE_LIMIT')!r}"
        ) from None
    write_rate_limit = _rate(environ, "WRITE_RATE_LIMIT", "30/minute")
    ipv6_prefix = _positive_int(environ, "RATE_LIMIT_IPV6_PREFIX", 64)
    if ipv6_prefix > 128:
        raise ConfigError(f"RATE_LIMIT_IPV6_PREFIX must be from 1 to 128, got {ipv6_prefix}")
    try:
        trusted_proxies = parse_networks(environ.get("TRUSTED_PROXIES", ""))
    except ValueError as exc:
        raise ConfigError(f"TRUSTED_PROXIES must be comma-separated addresses or networks: {exc}") from None
    hash_concurrency = environ.get("HASH_CONCURRENCY", "").strip()
    log_format = environ.get("LOG_FORMAT", "").strip().lower() or "text"
    if log_format not in ("text", "json"):
        raise ConfigError(f"LOG_FORMAT must be text or json, got {log_format!r}")
    list_page_size = _positive_int(environ, "LIST_PAGE_SIZE", 100)
    if list_page_size > 1000:
        raise ConfigError(f"LIST_PAGE_SIZE must be from 1 to 1000, got {list_page_size}")

    config = Config(
        database_url=database_url,
        secret_key=secret_key,
        access_token_lifetime=_positive_int(environ, "ACCESS_TOKEN_LIFETIME", 2 * 3600),
        refresh_token_lifetime=_positive_int(environ, "REFRESH_TOKEN_LIFETIME", 24 * 3600),
        password_hash_iterations=iterations,
        cors_allow_origins=_cors_origins(environ.get("CORS_ALLOW_ORIGINS")),
        threads=_positive_int(environ, "THREADS", 16),
        port=_port(environ),
        auth_rate_limit=auth_rate_limit,
        rate_limit_ipv6_prefix=ipv6_prefix,
        write_rate_limit=write_rate_limit,
        connection_limit=_positive_int(environ, "CONNECTION_LIMIT", 500),
        channel_timeout=_positive_int(environ, "CHANNEL_TIMEOUT", 30),
        trusted_proxies=trusted_proxies,
        hash_concurrency=_positive_int(environ, "HASH_CONCURRENCY", 1) if hash_concurrency else None,
        hash_wait_seconds=float(_positive_int(environ, "HASH_WAIT_SECONDS", 15)),
        list_page_size=list_page_size,
        list_time_limit_ms=_positive_int(environ, "LIST_TIME_LIMIT_MS", 500),
        rotate_refresh_tokens=_boolean(environ, "ROTATE_REFRESH_TOKENS", False),
        metrics=_boolean(environ, "METRICS", False),
        log_format=log_format,
        require_preconditions=_boolean(environ, "REQUIRE_PRECONDITIONS", False),
        idempotency_key_ttl=_positive_int(environ, "IDEMPOTENCY_KEY_TTL", 24 * 3600),
        startup_warnings=tuple(warnings),
        key_file=key_file,
    )
    return config.with_secret_key() if generate_key else config
