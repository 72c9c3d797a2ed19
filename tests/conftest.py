"""Shared fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL runs when ``MSGAPI_TEST_DATABASE_URL`` names a server database we may
connect to (e.g. ``postgresql://postgres@127.0.0.1:5432/test``); the suite creates
its own database there and drops it at the end. Without the variable the
PostgreSQL half is skipped, unless ``MSGAPI_TEST_REQUIRE_POSTGRES=1`` (CI), where
a skip would hide a failure, so it fails instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import webtest

from msgapi.app import create_app
from msgapi.config import Config
from msgapi.store.connection import database

TEST_SECRET_KEY = "test-secret-key-" + "k" * 32
TEST_HASH_ITERATIONS = 1000
PASSWORD = "correct horse battery"


POSTGRES_SKIP_REASON = "PostgreSQL tests need MSGAPI_TEST_DATABASE_URL"
EXAMPLE_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Says loudly, last, when the PostgreSQL half of the suite was skipped for want of a database."""
    result = yield
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if isinstance(report.longrepr, tuple) and POSTGRES_SKIP_REASON in str(report.longrepr[2])
    ]
    if skipped:
        terminalreporter.write_sep("!", f"{len(skipped)} PostgreSQL tests did NOT run", red=True, bold=True)
        terminalreporter.write_line(
            "Every database test runs on SQLite and PostgreSQL; only the SQLite half ran. Run both with:", red=True
        )
        terminalreporter.write_line(f"    MSGAPI_TEST_DATABASE_URL={EXAMPLE_POSTGRES_URL} python -m pytest", bold=True)
        terminalreporter.write_line("(the role needs CREATEDB; the suite creates and drops its own database)")
    return result


def _admin_url() -> str | None:
    return os.environ.get("MSGAPI_TEST_DATABASE_URL") or None


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    admin_url = _admin_url()
    if admin_url is None:
        if os.environ.get("MSGAPI_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail("MSGAPI_TEST_REQUIRE_POSTGRES=1 but MSGAPI_TEST_DATABASE_URL is not set")
        pytest.skip(POSTGRES_SKIP_REASON)
    import psycopg2

    name = f"msgapi_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(admin_url, name)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _truncate_postgres(url: str) -> None:
    import psycopg2

    with psycopg2.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        tables = [row[0] for row in cursor.fetchall()]
        if tables:
            cursor.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
    conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A clean database: a new SQLite file, or the session's PostgreSQL database emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'msgapi.sqlite3'}"
    url = request.getfixturevalue("postgres_url")
    _truncate_postgres(url)
    return url


@pytest.fixture
def config(database_url: str) -> Config:
    return Config(
        database_url=database_url,
        secret_key=TEST_SECRET_KEY,
        password_hash_iterations=TEST_HASH_ITERATIONS,
        threads=4,
        # Tests log in far more often than a person; the limiter has its own tests.
        auth_rate_limit=None,
        write_rate_limit=None,
    )


@pytest.fixture
def wsgi_app(config: Config) -> Iterator:
    app = create_app(config)
    yield app
    database.close_all()


@pytest.fixture
def app(wsgi_app) -> webtest.TestApp:
    """A fresh app on a clean database, driven in-process by WebTest."""
    return webtest.TestApp(wsgi_app)


@contextlib.contextmanager
def messages_trigger(database_url: str, event: str, sqlite_body: str, postgres_body: str) -> Iterator[None]:
    """While inside, a trigger on the messages table (``event``: e.g. "AFTER INSERT") runs the body
    for each row: a fault or a racing request put into the middle of one statement, on either database."""
    if database_url.startswith("sqlite"):
        import sqlite3

        from msgapi.database_url import sqlite_path

        conn = sqlite3.connect(sqlite_path(database_url), isolation_level=None)
        conn.execute(f"CREATE TRIGGER injected {event} ON messages BEGIN {sqlite_body} END")
        try:
            yield
        finally:
            conn.execute("DROP TRIGGER injected")
            conn.close()
        return
    import psycopg2

    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    cursor = conn.cursor()
    cursor.execute(f"CREATE FUNCTION injected() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {postgres_body} END $$")
    cursor.execute(f"CREATE TRIGGER injected {event} ON messages FOR EACH ROW EXECUTE FUNCTION injected()")
    try:
        yield
    finally:
        cursor.execute("DROP TRIGGER injected ON messages")
        cursor.execute("DROP FUNCTION injected()")
        conn.close()


def register(app: webtest.TestApp, username: str, password: str = PASSWORD, **extra) -> dict:
    return app.post_json("/api/auth/register/", {"username": username, "password": password, **extra}).json


def obtain_tokens(app: webtest.TestApp, username: str, password: str = PASSWORD) -> dict:
    return app.post_json("/api/auth/token/", {"username": username, "password": password}).json


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(app: webtest.TestApp) -> dict:
    """A registered user ``alice`` and her token pair."""
    register(app, "alice")
    return obtain_tokens(app, "alice")


@pytest.fixture
def auth(tokens: dict) -> dict[str, str]:
    """Headers that authenticate as ``alice``."""
    return bearer(tokens["access"])


@pytest.fixture
def create_message(app: webtest.TestApp, auth: dict[str, str]):
    """Create a message as ``alice`` and return its JSON."""

    def create(content: str = "hello") -> dict:
        return app.post_json("/api/messages", {"content": content}, headers=auth).json

    return create


# Generous: a healthy start takes about a second, but the machine running the suite may be busy.
START_TIMEOUT = 60.0
SERVING_ON = re.compile(r"serving on (http://\S+?)/? ")


def serving_on(log: list[str]) -> tuple[str, list[str]] | None:
    """msgapi's readiness: its URL and the log up to its "serving on" line, once that is logged."""
    for number, line in enumerate(log):
        match = SERVING_ON.search(line)
        if match:
            return match.group(1), log[: number + 1]
    return None


class ServerProcess:
    """A server in a subprocess, its merged output read from the start so it never blocks on a full pipe.

    ``wait_until_ready`` waits, bounded, for a readiness condition; a start that fails or
    never gets ready fails the test with the log, and leaves the process stopped.
    """

    def __init__(self, command: list[str], env: dict[str, str], cwd) -> None:
        import subprocess
        import threading

        self.env = env
        self.process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.log_lines: list[str] = []
        self._logged = threading.Condition()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._logged:
                self.log_lines.append(line)
                self._logged.notify_all()
        with self._logged:
            self._logged.notify_all()

    def wait_until_ready(self, ready=serving_on, timeout: float = START_TIMEOUT):
        """What ``ready(log so far)`` returns once it is not None; polled on each log line and every 50 ms."""
        import time

        deadline = time.monotonic() + timeout
        with self._logged:
            while True:
                found = ready(list(self.log_lines))
                if found is not None:
                    return found
                if not self._reader.is_alive() and self.process.poll() is not None:
                    pytest.fail(f"the server exited with {self.process.returncode}:\n" + "".join(self.log_lines))
                if time.monotonic() > deadline:
                    break
                self._logged.wait(0.05)
        self.stop()
        pytest.fail(f"the server was not ready within {timeout} s:\n" + "".join(self.log_lines))

    def stop(self) -> None:
        import subprocess

        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # Closed only once the reader is done with it; a child that outlives the process may hold it open.
        self._reader.join(timeout=10)
        if not self._reader.is_alive() and self.process.stdout is not None:
            self.process.stdout.close()


class LiveServer(ServerProcess):
    """``python run.py`` in a subprocess on a free loopback port: the real Waitress, over real HTTP."""

    def __init__(self, database_url: str, env: dict[str, str] | None = None, threads: int = 8) -> None:
        import sys
        from pathlib import Path

        root = Path(__file__).resolve().parent.parent
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "SECRET_KEY": TEST_SECRET_KEY,
            "PASSWORD_HASH_ITERATIONS": str(TEST_HASH_ITERATIONS),
            "AUTH_RATE_LIMIT": "off",
            "WRITE_RATE_LIMIT": "off",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        address = ["--host", "127.0.0.1", "--port", "0"]
        super().__init__([sys.executable, str(root / "run.py"), *address, "--threads", str(threads)], env, root)
        self.url, _ = self.wait_until_ready()


@pytest.fixture
def live_server(database_url: str, live_server_on):
    """Start ``run.py`` on the test database; call it (optionally with env) to start more."""

    def start(env: dict[str, str] | None = None, threads: int = 8) -> LiveServer:
        return live_server_on(database_url, env, threads)

    return start


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A new SQLite file, for tests about SQLite alone (no PostgreSQL twin that would skip)."""
    return f"sqlite:///{tmp_path / 'msgapi.sqlite3'}"


@pytest.fixture
def postgresql_url(postgres_url: str) -> str:
    """The session's PostgreSQL database emptied, for tests about PostgreSQL alone."""
    _truncate_postgres(postgres_url)
    return postgres_url


@pytest.fixture
def live_server_on():
    """Start ``run.py`` on any database URL: ``live_server_on(url, env=None, threads=8)``; all stopped afterwards."""
    servers: list[LiveServer] = []

    def start(database_url: str, env: dict[str, str] | None = None, threads: int = 8) -> LiveServer:
        server = LiveServer(database_url, env, threads)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


class WireResponse:
    def __init__(self, status: int, headers, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        import json

        return json.loads(self.body)


class WireClient:
    """One keep-alive HTTP/1.1 connection to a live server; give each thread its own."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        import http.client

        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)

    def request(self, method: str, path: str, body=None, headers: dict[str, str] | None = None) -> WireResponse:
        import json

        all_headers = dict(headers or {})
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        self.connection.request(method, path, body=payload, headers=all_headers)
        response = self.connection.getresponse()
        return WireResponse(response.status, response.headers, response.read())

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def wire_login(url: str, username: str, password: str = PASSWORD) -> dict[str, str]:
    """Register ``username`` on a live server and return Bearer headers for it."""
    with WireClient(url) as client:
        response = client.request("POST", "/api/auth/register/", {"username": username, "password": password})
        assert response.status == 201, response.body
        response = client.request("POST", "/api/auth/token/", {"username": username, "password": password})
        assert response.status == 200, response.body
        return bearer(response.json()["access"])


@pytest.fixture
def make_app(config: Config):
    """Build a WebTest app on the test database with config overrides: ``make_app(rotate_refresh_tokens=True)``.

    Do not combine with the ``app`` fixture in one test: both bind the one shared database proxy.
    """
    import dataclasses

    def make(**overrides) -> webtest.TestApp:
        return webtest.TestApp(create_app(dataclasses.replace(config, **overrides)))

    yield make
    database.close_all()


def http_json(url: str, method: str, path: str, body: dict | None = None, token: str | None = None):
    """One JSON request to a live server over a real socket: (status, decoded body or None)."""
    import http.client
    import json
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    return response.status, json.loads(payload) if payload else None


def assert_problem(resp, status: int) -> dict:
    """A problem-details error response (a WebTest response) with this status; returns its body.

    RFC 9457's members as the serializer promises them (``type``, ``title``, ``status``,
    ``detail``), and no Python traceback anywhere in the body.
    """
    assert resp.status_int == status, resp.text[:500]
    assert resp.content_type == "application/problem+json"
    body = resp.json
    assert body["status"] == status
    for member in ("type", "title", "detail"):
        assert isinstance(body[member], str) and body[member], member
    for marker in ("Traceback", 'File "'):
        assert marker not in resp.text
    return body


def wait_for_log(server, predicate, seconds: float = 10.0) -> list[str]:
    """The server's log lines matching ``predicate``, waiting (bounded) for the log reader to catch up."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        found = [line for line in list(server.log_lines) if predicate(line)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def set_next_user_id(database_url: str, next_id: int) -> None:
    """The id the next registration gets, set in the database's own id sequence."""
    if database_url.startswith("sqlite"):
        import sqlite3

        from msgapi.database_url import sqlite_path

        with contextlib.closing(sqlite3.connect(sqlite_path(database_url))) as conn, conn:
            conn.execute("DELETE FROM sqlite_sequence WHERE name = 'users'")
            conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('users', ?)", (next_id - 1,))
        return
    import psycopg2

    with contextlib.closing(psycopg2.connect(database_url)) as conn, conn, conn.cursor() as cursor:
        cursor.execute("SELECT setval(pg_get_serial_sequence('users', 'id'), %s)", (next_id - 1,))


def run_msgapi(*args: str, env: dict[str, str], cwd, stdin: str = "", prefix: tuple[str, ...] = ()):
    """``python run.py ARGS`` to completion, with this test run's interpreter: its output as text."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    return subprocess.run(
        [*prefix, sys.executable, str(root / "run.py"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )
