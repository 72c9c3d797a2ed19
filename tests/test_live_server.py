"""The real thing: run.py under Waitress, spoken to over loopback HTTP."""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import urlsplit

from conftest import PASSWORD


def _request(url: str, method: str, path: str, body: dict | None = None, headers: dict | None = None):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        all_headers = {"Content-Type": "application/json", **(headers or {})} if payload else dict(headers or {})
        conn.request(method, path, body=payload, headers=all_headers)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def test_full_round_trip_through_waitress(live_server):
    server = live_server()
    status, _, _ = _request(server.url, "POST", "/api/auth/register/", {"username": "wire", "password": PASSWORD})
    assert status == 201
    status, headers, body = _request(server.url, "POST", "/api/auth/token/", {"username": "wire", "password": PASSWORD})
    assert status == 200 and headers["Cache-Control"] == "no-store"
    access = json.loads(body)["access"]
    auth = {"Authorization": f"Bearer {access}"}
    status, headers, body = _request(server.url, "POST", "/api/messages", {"content": "over the wire"}, auth)
    assert status == 201
    location = headers["Location"]
    assert [json.loads(_request(server.url, "GET", location)[2])["views"] for _ in range(3)] == [1, 2, 3]
    status, headers, body = _request(server.url, "DELETE", location, headers=auth)
    assert (status, body) == (204, b"")


def test_waitress_answers_head_without_a_body_and_without_counting(live_server):
    server = live_server()
    _request(server.url, "POST", "/api/auth/register/", {"username": "wire", "password": PASSWORD})
    access = json.loads(
        _request(server.url, "POST", "/api/auth/token/", {"username": "wire", "password": PASSWORD})[2]
    )["access"]
    location = _request(server.url, "POST", "/api/messages", {"content": "x"}, {"Authorization": f"Bearer {access}"})[
        1
    ]["Location"]
    status, headers, body = _request(server.url, "HEAD", location)
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    assert json.loads(_request(server.url, "GET", location)[2])["views"] == 1


def test_oversized_body_is_a_problem_json_413_from_the_app(live_server):
    server = live_server()
    status, headers, body = _request(
        server.url, "POST", "/api/auth/register/", {"username": "x", "password": "y" * 70_000}
    )
    assert status == 413
    assert headers["Content-Type"] == "application/problem+json"
    assert json.loads(body)["status"] == 413


def test_access_log_line_carries_the_request_id(live_server):
    server = live_server()
    status, headers, _ = _request(server.url, "GET", "/api/messages", headers={"X-Request-ID": "trace-42"})
    assert status == 200 and headers["X-Request-ID"] == "trace-42"
    server.stop()
    assert any("GET /api/messages 200" in line and "[trace-42]" in line for line in server.log_lines)


def _idle_connections(url: str, count: int) -> list[socket.socket]:
    """``count`` connections that say nothing, or half a request, and then wait."""
    parts = urlsplit(url)
    idle = []
    for n in range(count):
        sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        if n % 2:
            sock.sendall(b"GET /api/messages HTTP/1.1\r\nHost: x\r\n")  # never finished
        idle.append(sock)
    return idle


def test_a_client_is_answered_while_150_idle_connections_are_open(live_server_on, sqlite_url):
    server = live_server_on(sqlite_url)
    idle = _idle_connections(server.url, 150)
    try:
        for _ in range(3):
            status, _, body = _request(server.url, "GET", "/healthz")
            assert status == 200, body
    finally:
        for sock in idle:
            sock.close()


def test_idle_connections_are_closed_after_channel_timeout(live_server_on, sqlite_url):
    server = live_server_on(sqlite_url, {"CHANNEL_TIMEOUT": "1"})
    (sock,) = _idle_connections(server.url, 1)
    try:
        sock.settimeout(30)  # a bound for the test; the server closes it within about two seconds
        assert sock.recv(1) == b""
    finally:
        sock.close()
