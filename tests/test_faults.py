"""Fault promises, proven through the real Waitress server over loopback HTTP.

PostgreSQL is taken away through a TCP proxy the test owns (the machine's shared
PostgreSQL is never stopped); the server is killed with SIGKILL mid-write on
SQLite; request ids are checked in responses and in the server's own log lines.
Every wait is bounded; the 30 s client timeout is a hang guard, never a timing assertion.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import signal
import socket
import sqlite3
import threading
import time
from urllib.parse import urlsplit, urlunsplit

from conftest import WireClient, WireResponse, wait_for_log, wire_login

from msgapi.database_url import sqlite_path

POLL_ATTEMPTS = 20
POLL_INTERVAL = 0.5


class TcpProxy:
    """A threaded loopback TCP proxy that can cut every connection and refuse new ones, then restore."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._cut = False
        self.accepted = 0
        self.refused = 0
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # the listener was closed
                return
            with self._lock:
                if self._cut:
                    self.refused += 1
                    _hang_up(client)
                    continue
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _hang_up(client)
                continue
            with self._lock:
                if self._cut:
                    _hang_up(client)
                    _hang_up(upstream)
                    continue
                self.accepted += 1
                self._sockets.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with self._lock:
                    self._sockets.discard(sock)
                _hang_up(sock)

    def cut(self) -> None:
        """Close every current connection, both ways, and hang up on new ones until ``restore``."""
        with self._lock:
            self._cut = True
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            _hang_up(sock)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._listener.close()
        self.cut()


def _hang_up(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _via_proxy(database_url: str, port: int) -> str:
    parts = urlsplit(database_url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def assert_database_unavailable(response: WireResponse) -> None:
    assert response.status == 503, (response.status, response.body)
    assert response.headers["Content-Type"] == "application/problem+json"
    retry_after = response.headers.get("Retry-After")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) > 0
    body = response.json()
    assert body["status"] == 503 and body["type"] and body["title"] and body["detail"]
    text = response.body.decode()
    for leak in ("Traceback", "psycopg2", "OperationalError", "InterfaceError", "server closed", 'File "'):
        assert leak not in text, text


def test_postgresql_lost_and_back_is_503_then_recovers_without_a_restart(postgresql_url, live_server_on):
    target = urlsplit(postgresql_url)
    proxy = TcpProxy((target.hostname or "127.0.0.1", target.port or 5432))
    try:
        server = live_server_on(_via_proxy(postgresql_url, proxy.port))
        auth = wire_login(server.url, "faulty")
        with WireClient(server.url) as client:
            created = client.request("POST", "/api/messages", {"content": "before the outage"}, auth)
            assert created.status == 201
            item = f"/api/messages/{created.json()['id']}"

            # Fill the pool with several connections, all of which the cut will kill.
            warm(server.url, item, clients=8)
            assert proxy.accepted >= 2

            proxy.cut()
            requests = [
                ("GET", item, None),
                ("GET", "/api/messages", None),
                ("POST", "/api/messages", {"content": "during the outage"}),
                ("GET", "/healthz", None),
            ]
            slowest = 0.0
            for round_ in range(3):
                for method, path, body in requests:
                    request_id = f"pg-lost-{method.lower()}-{round_}"
                    headers = {**auth, "X-Request-ID": request_id}
                    began = time.perf_counter()
                    response = client.request(method, path, body, headers)
                    slowest = max(slowest, time.perf_counter() - began)
                    assert_database_unavailable(response)
                    assert response.headers["X-Request-ID"] == request_id
            assert proxy.refused >= 1, "the server never tried to reconnect during the outage"

            # The error log line names the request it is about.
            assert wait_for_log(server, lambda line: "database unavailable" in line and "[pg-lost-get-0]" in line)

            proxy.restore()
            after_outage = recover_then_stay_up(client, item, auth)

            # A blip nobody noticed: every pooled connection is dead, and the pool must not keep handing them out.
            warm(server.url, item, clients=8)
            proxy.cut()
            proxy.restore()
            after_blip = recover_then_stay_up(client, item, auth)
            print(
                f"\nPostgreSQL lost: slowest 503 {slowest * 1000:.0f} ms; polls to recover: "
                f"{after_outage} after the outage, {after_blip} after the blip"
            )
    finally:
        proxy.close()


def warm(url: str, item: str, clients: int) -> None:
    """``clients`` requests at once, so the server's pool holds several connections.

    The list too, not only the item: on PostgreSQL the views of concurrent readers are
    counted by one statement on one connection (group commit), so item reads alone
    would not open several.
    """
    barrier = threading.Barrier(clients, timeout=30)
    statuses: list[int] = []

    def one() -> None:
        with WireClient(url) as client:
            client.connection.connect()
            barrier.wait()
            for _ in range(3):
                statuses.append(client.request("GET", item).status)
                statuses.append(client.request("GET", "/api/messages").status)

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert statuses == [200] * (6 * clients)


def recover_then_stay_up(client: WireClient, item: str, auth: dict[str, str]) -> int:
    """Within a bounded number of polls a request succeeds; then the next ten all do. Returns the polls."""
    polls = 0
    while True:
        polls += 1
        response = client.request("GET", item)
        if response.status == 200:
            break
        assert_database_unavailable(response)
        assert polls < POLL_ATTEMPTS, f"no success in {POLL_ATTEMPTS} polls after the database came back"
        time.sleep(POLL_INTERVAL)
    requests = [
        ("GET", item, None, 200),
        ("GET", "/api/messages", None, 200),
        ("POST", "/api/messages", {"content": "after the outage"}, 201),
        ("PUT", item, {"content": "replaced after the outage"}, 200),
        ("HEAD", item, None, 200),
    ]
    answered = [client.request(method, path, body, auth).status for method, path, body, _ in requests * 2]
    assert answered == [expected for *_, expected in requests * 2]
    return polls


def test_sigkill_mid_write_on_sqlite_loses_no_acknowledged_create(sqlite_url, live_server_on):
    server = live_server_on(sqlite_url)
    auth = wire_login(server.url, "killed")
    acknowledged: dict[int, str] = {}
    refused: list[tuple[int, bytes]] = []  # asserted after join: a failed assert in a thread fails nothing
    lock = threading.Lock()
    stop = threading.Event()

    def create(index: int) -> None:
        with WireClient(server.url) as client:
            for j in range(100_000):  # bounded; the kill or the stop flag ends it long before
                if stop.is_set():
                    return
                content = f"k{index}-{j}"
                try:
                    response = client.request("POST", "/api/messages", {"content": content}, auth)
                except (OSError, http.client.HTTPException):
                    return  # the server died under us: this create was never acknowledged
                with lock:
                    if response.status == 201:
                        acknowledged[response.json()["id"]] = content
                    else:
                        refused.append((response.status, response.body))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    server.process.kill()
    server.process.wait(timeout=30)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert server.process.returncode == -signal.SIGKILL
    assert len(acknowledged) > 0
    assert [(status, body) for status, body in refused if status >= 500] == []

    path = sqlite_path(sqlite_url)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]

    restarted = live_server_on(sqlite_url)
    missing = []
    with WireClient(restarted.url) as client:
        for message_id, content in sorted(acknowledged.items()):
            response = client.request("GET", f"/api/messages/{message_id}")
            if response.status != 200 or response.json()["content"] != content:
                missing.append((message_id, response.status))
    print(f"\nSIGKILL mid-write: {len(acknowledged)} creates acknowledged before the kill, {len(missing)} lost")
    assert missing == []
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_a_sane_request_id_is_echoed_and_logged(live_server):
    server = live_server()
    with WireClient(server.url) as client:
        ok = client.request("GET", "/api/messages", headers={"X-Request-ID": "trace-ok.1:A_b-2"})
        missing = client.request("GET", "/api/messages/999999", headers={"X-Request-ID": "trace-404"})
    assert ok.status == 200 and ok.headers["X-Request-ID"] == "trace-ok.1:A_b-2"
    assert missing.status == 404 and missing.headers["X-Request-ID"] == "trace-404"
    assert wait_for_log(server, lambda line: "GET /api/messages 200" in line and "[trace-ok.1:A_b-2]" in line)
    assert wait_for_log(server, lambda line: "GET /api/messages/999999 404" in line and "[trace-404]" in line)


INSANE_REQUEST_IDS = [
    "has spaces in it",
    "x" * 300,
    "a,b",
    "a;b",
    "<script>",
    'quote"d',
    "",
]


def test_an_insane_request_id_is_replaced_by_a_generated_one(live_server):
    server = live_server()
    generated = set()
    with WireClient(server.url) as client:
        for incoming in INSANE_REQUEST_IDS:
            response = client.request("GET", "/api/messages", headers={"X-Request-ID": incoming})
            assert response.status == 200
            echoed = response.headers["X-Request-ID"]
            assert echoed != incoming
            assert re.fullmatch(r"[0-9a-f]{32}", echoed), echoed
            generated.add(echoed)
        plain = client.request("GET", "/api/messages")
    assert re.fullmatch(r"[0-9a-f]{32}", plain.headers["X-Request-ID"])
    assert len(generated) == len(INSANE_REQUEST_IDS)  # a fresh one each time
    for request_id in generated:
        assert wait_for_log(server, lambda line, rid=request_id: f"[{rid}]" in line)
    logged = "".join(server.log_lines)
    for incoming in INSANE_REQUEST_IDS:
        if incoming:
            assert f"[{incoming}]" not in logged
