"""Scale-out on real parts: three msgapi processes on one PostgreSQL, through PgBouncer in transaction mode.

msgapi keeps no session state on a connection and sends no server-side prepared
statements, so a transaction-pooling PgBouncer may hand each transaction to any server
connection. These tests run the deploy recipe's shape (deploy/pgbouncer.ini) on the local
PostgreSQL: view counts exact and distinct across processes, rate limits and revocations
shared, and a process killed mid-load loses no write it acknowledged.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from conftest import PASSWORD, ServerProcess, WireClient, wire_login
from test_concurrency import assert_every_view_counted_once, create_message, peek, read_in_parallel

PROCESSES = 3
EVENTUALLY = 15.0


def _pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (path for path in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(path, os.X_OK)), None
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PgBouncer:
    """A PgBouncer in transaction pooling mode in front of ``target`` (a postgresql:// URL)."""

    def __init__(self, binary: str, target: str) -> None:
        parts = urlsplit(target)
        self.port = _free_port()
        # PgBouncer refuses to run as root; as the postgres user it must read its own files.
        self.folder = Path(tempfile.mkdtemp(prefix="msgapi-pgbouncer-"))
        self.folder.chmod(0o755)
        user = parts.username or "postgres"
        (self.folder / "userlist.txt").write_text(f'"{user}" ""\n', encoding="utf-8")
        (self.folder / "pgbouncer.ini").write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = host={parts.hostname or '127.0.0.1'} port={parts.port or 5432}",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = trust",
                    f"auth_file = {self.folder / 'userlist.txt'}",
                    "pool_mode = transaction",
                    "max_client_conn = 200",
                    "default_pool_size = 10",
                    "",
                ]
            ),
            encoding="utf-8",
        )
        for path in self.folder.iterdir():
            path.chmod(0o644)
        command = [binary, str(self.folder / "pgbouncer.ini")]
        if os.name == "posix" and os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        self.server = ServerProcess(command, dict(os.environ), cwd=None)
        self.server.wait_until_ready(lambda log: _accepts_connections(self.port) or None, timeout=EVENTUALLY)
        self.url = urlunsplit(parts._replace(netloc=f"{parts.netloc.rpartition('@')[0]}@127.0.0.1:{self.port}"))

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def pgbouncer(postgresql_url):
    binary = _pgbouncer_binary()
    if binary is None:
        if os.environ.get("MSGAPI_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail("the scale-out tests need PgBouncer (Debian package pgbouncer)")
        pytest.skip("the scale-out tests need PgBouncer (Debian package pgbouncer)")
    bouncer = PgBouncer(binary, postgresql_url)
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture
def processes(pgbouncer, live_server_on):
    """Start ``PROCESSES`` msgapi processes through PgBouncer, with extra settings."""

    def start(env: dict[str, str] | None = None) -> list:
        return [live_server_on(pgbouncer.url, env) for _ in range(PROCESSES)]

    return start


def test_views_are_exact_and_distinct_across_processes_through_pgbouncer(processes):
    servers = processes()
    urls = [server.url for server in servers]
    auth = wire_login(urls[0], "reader")
    message = create_message(urls[1], auth)
    start = peek(urls[2], message["id"])["views"]

    views = read_in_parallel(urls, message["id"])

    assert_every_view_counted_once(start, views, peek(urls[0], message["id"])["views"])


def test_rate_limits_and_revocations_are_shared_by_every_process(processes):
    servers = processes({"AUTH_RATE_LIMIT": f"{PROCESSES}/minute"})
    urls = [server.url for server in servers]
    statuses = []
    for n, url in enumerate(urls + urls):
        with WireClient(url) as client:
            response = client.request("POST", "/api/auth/register/", {"username": f"user{n}", "password": PASSWORD})
            statuses.append(response.status)
    # One registration on each process spends the address's budget on all of them.
    assert statuses == [201] * PROCESSES + [429] * PROCESSES

    # A refresh token logged out on one process is refused by the others.
    limited_free = processes()
    urls = [server.url for server in limited_free]
    with WireClient(urls[0]) as client:
        client.request("POST", "/api/auth/register/", {"username": "leaver", "password": PASSWORD})
        pair = client.request("POST", "/api/auth/token/", {"username": "leaver", "password": PASSWORD}).json()
        assert client.request("POST", "/api/auth/token/blacklist/", {"refresh": pair["refresh"]}).status == 200
    for url in urls[1:]:
        with WireClient(url) as client:
            assert client.request("POST", "/api/auth/token/refresh/", {"refresh": pair["refresh"]}).status == 401


def test_a_process_killed_mid_load_loses_no_acknowledged_write(processes, postgresql_url):
    servers = processes()
    urls = [server.url for server in servers]
    auth = wire_login(urls[0], "writer")
    acknowledged: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def write(url: str) -> None:
        count = 0
        while not stop.is_set() and count < 400:
            count += 1
            try:
                with WireClient(url, timeout=10) as client:
                    response = client.request("POST", "/api/messages", {"content": f"from {url} #{count}"}, auth)
            except OSError:
                continue  # the killed process: no answer, nothing acknowledged
            if response.status == 201:
                with lock:
                    acknowledged.append(response.json()["id"])

    writers = [threading.Thread(target=write, args=(url,)) for url in urls for _ in range(2)]
    for writer in writers:
        writer.start()
    deadline = time.monotonic() + EVENTUALLY
    while len(acknowledged) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    servers[1].process.send_signal(signal.SIGKILL)  # mid-load, no chance to finish anything
    time.sleep(0.5)
    stop.set()
    for writer in writers:
        writer.join(EVENTUALLY)

    assert len(acknowledged) >= 30
    with psycopg2.connect(postgresql_url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT id FROM messages WHERE id = ANY(%s)", (acknowledged,))
        stored = {row[0] for row in cursor.fetchall()}
    conn.close()
    assert stored == set(acknowledged)
    assert len(stored) == len(acknowledged)  # no id acknowledged twice
