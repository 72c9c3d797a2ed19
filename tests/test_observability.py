"""What operators see: JSON log lines on request, and /metrics when switched on."""

from __future__ import annotations

import datetime
import io
import json
import logging
import re

import pytest
from conftest import PASSWORD, http_json, wait_for_log

from msgapi import logcontext


def test_json_log_format_writes_one_object_per_line_with_the_request_id(live_server):
    server = live_server(env={"LOG_FORMAT": "json"})
    http_json(server.url, "POST", "/api/auth/register/", {"username": "logger", "password": PASSWORD})
    server.stop()
    records = [json.loads(line) for line in server.log_lines if line.strip()]
    assert records, "the server wrote no log line"
    access = [r for r in records if r["logger"] == "msgapi.access"]
    assert any(r["message"].startswith("POST /api/auth/register 201") for r in access)
    for record in access:
        assert re.fullmatch(r"[0-9a-f]{32}", record["request_id"])
        assert {"time", "level", "logger", "message", "request_id"} <= set(record)
    # Never a password, in any line.
    assert all(PASSWORD not in line for line in server.log_lines)


def test_metrics_are_off_by_default(live_server):
    server = live_server()
    status, _ = http_json(server.url, "GET", "/metrics")
    assert status == 404


def test_metrics_count_requests_by_route_and_status_with_a_latency_histogram(live_server):
    import urllib.request

    server = live_server(env={"METRICS": "true"})
    for _ in range(3):
        http_json(server.url, "GET", "/api/messages")
    http_json(server.url, "GET", "/api/messages/999")
    with urllib.request.urlopen(server.url + "/metrics", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    assert 'msgapi_requests_total{method="GET",route="/api/messages",status="200"} 3' in text
    assert 'msgapi_requests_total{method="GET",route="/api/messages/{id}",status="404"} 1' in text
    assert 'msgapi_request_duration_seconds_count{route="/api/messages"} 3' in text
    assert 'msgapi_request_duration_seconds_bucket{route="/api/messages",le="+Inf"} 3' in text
    assert re.search(r"msgapi_db_pool_connections\{state=\"in_use\"\} \d+", text)


@pytest.fixture
def own_logging():
    """``logcontext.configure`` for one test, its handler writing into a StringIO; logging restored after."""
    root = logging.getLogger()
    saved_handlers, saved_level, saved_installed = list(root.handlers), root.level, logcontext._installed

    def configure(log_format: str) -> io.StringIO:
        logcontext.configure(log_format)
        stream = io.StringIO()
        root.handlers[0].setStream(stream)
        return stream

    yield configure
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    logcontext._installed = saved_installed


TEXT_ACCESS_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO msgapi\.access \[[0-9a-f]{32}\] GET /api/messages 200 \d+\.\dms"
)


def test_access_lines_written_directly_look_as_the_logging_module_writes_them(app, own_logging):
    stream = own_logging("text")
    app.get("/api/messages?search=secret")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and TEXT_ACCESS_LINE.fullmatch(lines[0]), lines

    stream = own_logging("json")
    app.get("/api/messages")
    (record,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert list(record) == ["time", "level", "logger", "message", "request_id"]
    assert record["level"] == "INFO" and record["logger"] == "msgapi.access"
    assert re.fullmatch(r"GET /api/messages 200 \d+\.\dms", record["message"])
    assert datetime.datetime.fromisoformat(record["time"]).tzinfo is not None


@pytest.mark.parametrize("formatter", [logcontext.TextFormatter(), logcontext.JsonFormatter()], ids=["text", "json"])
def test_the_direct_line_is_the_formatted_record(formatter):
    record = logging.LogRecord("msgapi.access", logging.INFO, __file__, 1, "GET %s 200", ("/x",), None)
    record.request_id = "abc"
    assert formatter.line(record.created, "INFO", "msgapi.access", "abc", "GET /x 200") == formatter.format(record)


FORGED = "/api/x\r\n2026-01-01 00:00:00,000 INFO msgapi.access [abc] GET /admin 200 1.0ms"
HOSTILE_PATHS = {
    "crlf": "/api%0D%0A2026-01-01%2000:00:00,000%20INFO%20msgapi.access%20[abc]%20GET%20/admin%20200",
    "lone-lf": "/api%0A2026-01-01%20INFO%20fake",
    "terminal-escape": "/api%1B[2J%1B]0;owned%07",
    "del-and-c1": "/api%7F%C2%85%C2%9B31m",
    "line-separator": "/api%E2%80%A8%E2%80%A9",
    "bidi-override": "/api%E2%80%AEtxt.exe",
    "backslash": "/api%5Cx0d",
}


@pytest.mark.parametrize("path", HOSTILE_PATHS.values(), ids=HOSTILE_PATHS.keys())
def test_a_hostile_path_stays_on_its_own_text_log_line_escaped(app, own_logging, path):
    stream = own_logging("text")
    app.get(path, expect_errors=True)
    text = stream.getvalue()
    (line,) = text.splitlines()  # one record, one line, whatever splitlines counts as a break
    assert line.isprintable(), repr(line)  # no control, separator or format character at all
    assert re.fullmatch(r"\S+ \S+ INFO msgapi\.access \[[0-9a-f]{32}\] GET /api.* 404 \d+\.\dms", line), line


def test_the_escaped_path_says_which_characters_were_sent(app, own_logging):
    stream = own_logging("text")
    app.get(HOSTILE_PATHS["crlf"], expect_errors=True)
    app.get(HOSTILE_PATHS["backslash"], expect_errors=True)
    first, second = stream.getvalue().splitlines()
    assert " GET /api\\x0d\\x0a2026-01-01 00:00:00,000 INFO msgapi.access [abc] GET /admin 200 404 " in first
    assert " GET /api\\\\x0d 404 " in second  # a backslash sent is not an escape


@pytest.mark.parametrize("path", HOSTILE_PATHS.values(), ids=HOSTILE_PATHS.keys())
def test_a_hostile_path_stays_on_its_own_json_log_line_exactly(app, own_logging, path):
    stream = own_logging("json")
    app.get(path, expect_errors=True)
    text = stream.getvalue()
    (line,) = text.splitlines()
    assert line.isprintable(), repr(line)
    message = json.loads(line)["message"]
    assert message.startswith("GET /api") and " 404 " in message  # the path as sent, decoded


@pytest.mark.parametrize("formatter", [logcontext.TextFormatter(), logcontext.JsonFormatter()], ids=["text", "json"])
def test_every_logger_is_escaped_and_the_direct_line_matches(formatter):
    message = "unhandled error on GET %s"
    record = logging.LogRecord("msgapi.errors", logging.ERROR, __file__, 1, message, (FORGED,), None)
    record.request_id = "abc"
    formatted = formatter.format(record)
    assert len(formatted.splitlines()) == 1 and formatted.isprintable()
    assert formatter.line(record.created, "ERROR", "msgapi.errors", "abc", record.getMessage()) == formatted


def test_a_traceback_keeps_its_lines_but_escapes_what_they_carry():
    try:
        raise ValueError("bad value \x1b[31m\r")
    except ValueError:
        import sys

        record = logging.LogRecord("msgapi.errors", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    record.request_id = "abc"
    formatted = logcontext.TextFormatter().format(record)
    assert "Traceback (most recent call last):" in formatted.splitlines()
    assert "ValueError: bad value \\x1b[31m\\x0d" in formatted.splitlines()
    assert all(line.isprintable() for line in formatted.splitlines())


def test_a_hostile_path_over_the_wire_writes_one_escaped_access_line(live_server):
    import socket
    from urllib.parse import urlsplit

    server = live_server()
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        request_line = f"GET {HOSTILE_PATHS['crlf']}%1B[2J HTTP/1.1"
        sock.sendall(f"{request_line}\r\nHost: x\r\nX-Request-ID: forge-1\r\nConnection: close\r\n\r\n".encode())
        while sock.recv(65536):
            pass
    (line,) = wait_for_log(server, lambda line: "[forge-1]" in line)
    assert "GET /api\\x0d\\x0a2026-01-01 00:00:00,000 INFO msgapi.access [abc] GET /admin 200\\x1b[2J 404" in line
    server.stop()
    assert not [line for line in server.log_lines if line.startswith("2026-01-01")]
    assert not any("\x1b" in line for line in server.log_lines)


def test_access_lines_go_through_logging_when_someone_else_listens(app, own_logging):
    stream = own_logging("text")
    heard: list[logging.LogRecord] = []
    listener = logging.Handler()
    listener.emit = heard.append  # an embedding application's (or a test's) handler
    logging.getLogger().addHandler(listener)
    app.get("/api/messages")
    assert [(record.name, record.getMessage()[:20]) for record in heard] == [("msgapi.access", "GET /api/messages 20")]
    assert TEXT_ACCESS_LINE.fullmatch(stream.getvalue().strip())  # and our handler wrote it too


def test_metrics_labels_stay_bounded_whatever_methods_clients_invent(live_server_on, sqlite_url):
    import random
    import socket
    import string
    import urllib.request
    from urllib.parse import urlsplit

    server = live_server_on(sqlite_url, {"METRICS": "true"})
    parts = urlsplit(server.url)
    rng = random.Random(12)
    invented = ["".join(rng.choices(string.ascii_uppercase, k=2000)) for _ in range(30)]
    for method in invented:
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
            sock.sendall(f"{method} /api/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 4"), answer[:100]
    http_json(server.url, "GET", "/api/messages")
    with urllib.request.urlopen(server.url + "/metrics", timeout=30) as response:
        text = response.read().decode()
    methods = set(re.findall(r'msgapi_requests_total\{method="([^"]*)"', text))
    assert methods == {"GET", "other"}
    assert re.search(r'msgapi_requests_total\{method="other",route="/api/messages",status="4\d\d"\} 30', text)
    assert len(text) < 10_000
