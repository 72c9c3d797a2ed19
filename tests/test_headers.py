"""Headers every response must carry, ``no-store`` on tokens, and the password-hashing gate."""

from __future__ import annotations

import dataclasses
import re
import threading
import time

import pytest
import webtest
from conftest import PASSWORD, assert_problem, bearer, obtain_tokens, register

import msgapi.app
from msgapi.app import create_app
from msgapi.config import Rate
from msgapi.passwords import HashingBusy, HashingGate
from msgapi.store import listing
from msgapi.store.connection import database

PROBLEM_JSON = "application/problem+json"
HEX32 = re.compile(r"[0-9a-f]{32}\Z")


# --- Cache-Control: no-store on everything that carries a token ----------------------------------


def assert_no_store(resp) -> None:
    directives = {part.strip().lower() for part in resp.headers.get("Cache-Control", "").split(",")}
    assert "no-store" in directives, resp.headers


def test_token_response_is_no_store(app):
    register(app, "alice")
    resp = app.post_json("/api/auth/token/", {"username": "alice", "password": PASSWORD})
    assert resp.status_int == 200 and resp.json["access"]
    assert_no_store(resp)


def test_refresh_response_is_no_store(app, tokens):
    resp = app.post_json("/api/auth/token/refresh/", {"refresh": tokens["refresh"]})
    assert resp.status_int == 200 and resp.json["access"]
    assert_no_store(resp)


def test_rotated_refresh_response_is_no_store(config):
    app = webtest.TestApp(create_app(dataclasses.replace(config, rotate_refresh_tokens=True)))
    try:
        register(app, "alice")
        tokens = obtain_tokens(app, "alice")
        resp = app.post_json("/api/auth/token/refresh/", {"refresh": tokens["refresh"]})
        assert resp.status_int == 200 and resp.json["refresh"] != tokens["refresh"]
        assert_no_store(resp)
    finally:
        database.close_all()


def test_token_form_body_response_is_no_store(app):
    register(app, "alice")
    resp = app.post("/api/auth/token/", {"username": "alice", "password": PASSWORD})
    assert resp.status_int == 200
    assert_no_store(resp)


# --- X-Content-Type-Options: nosniff on every response -------------------------------------------

# (method, path, body, content type, needs alice's token, expected status)
REQUESTS = {
    "docs-page": ("GET", "/", None, None, False, 200),
    "docs-init": ("GET", "/docs/init.js", None, None, False, 200),
    "docs-asset": ("GET", "/docs/assets/swagger-ui.css", None, None, False, 200),
    "docs-asset-missing": ("GET", "/docs/assets/nope.js", None, None, False, 404),
    "docs-asset-traversal": ("GET", "/docs/assets/..%2F..%2F..%2Fetc%2Fpasswd", None, None, False, 404),
    "openapi": ("GET", "/openapi.yaml", None, None, False, 200),
    "health": ("GET", "/healthz", None, None, False, 200),
    "list": ("GET", "/api/messages", None, None, False, 200),
    "list-head": ("HEAD", "/api/messages", None, None, False, 200),
    "item": ("GET", "/api/messages/1", None, None, False, 200),
    "item-head": ("HEAD", "/api/messages/1", None, None, False, 200),
    "create": ("POST", "/api/messages", b'{"content": "x"}', "application/json", True, 201),
    "delete": ("DELETE", "/api/messages/1", None, None, True, 204),
    "options": ("OPTIONS", "/api/messages", None, None, False, 200),
    "unknown-route": ("GET", "/nothing/here", None, None, False, 404),
    "unknown-api-route": ("GET", "/api/nothing", None, None, False, 404),
    "unknown-id": ("GET", "/api/messages/999", None, None, False, 404),
    "bad-id": ("GET", "/api/messages/abc", None, None, False, 404),
    "head-unknown-id": ("HEAD", "/api/messages/999", None, None, False, 404),
    "method-not-allowed": ("PATCH", "/api/messages", b"{}", "application/json", True, 405),
    "no-token": ("POST", "/api/messages", b'{"content": "x"}', "application/json", False, 401),
    "bad-json": ("POST", "/api/messages", b"{", "application/json", True, 400),
    "bad-content": ("POST", "/api/messages", b'{"content": 1}', "application/json", True, 400),
    "bad-query": ("GET", "/api/messages?limit=0", None, None, False, 400),
    "wrong-type": ("POST", "/api/messages", b"x", "text/plain", True, 415),
    "too-large": ("POST", "/api/messages", b"x" * 70_000, "application/json", True, 413),
    "bad-login": ("POST", "/api/auth/token/", b'{"username": "a", "password": "b"}', "application/json", False, 401),
    "register": (
        "POST",
        "/api/auth/register/",
        b'{"username": "zed", "password": "correct horse battery"}',
        "application/json",
        False,
        201,
    ),
}


@pytest.mark.parametrize("request_", REQUESTS.values(), ids=REQUESTS.keys())
def test_every_response_carries_nosniff_and_a_request_id(app, auth, create_message, request_):
    method, path, body, content_type, needs_token, status = request_
    assert create_message()["id"] == 1
    kwargs = {"body": body, "content_type": content_type} if body is not None else {}
    resp = app.request(path, method=method, headers=auth if needs_token else {}, expect_errors=True, **kwargs)
    assert resp.status_int == status, resp.text[:300]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert HEX32.match(resp.headers["X-Request-ID"])
    if status >= 400 and method != "HEAD":
        assert resp.content_type == PROBLEM_JSON
        assert "Traceback" not in resp.text and 'File "' not in resp.text


def test_cors_preflight_carries_nosniff(app):
    resp = app.options(
        "/api/messages",
        headers={
            "Origin": "https://example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_rate_limited_response_carries_nosniff(config):
    app = webtest.TestApp(create_app(dataclasses.replace(config, auth_rate_limit=Rate(1, 60))))
    try:
        app.post_json("/api/auth/token/", {"username": "a", "password": "b"}, expect_errors=True)
        resp = app.post_json("/api/auth/token/", {"username": "a", "password": "b"}, expect_errors=True)
        assert resp.status_int == 429
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    finally:
        database.close_all()


def test_unexpected_error_is_a_generic_500_with_nosniff_and_no_traceback(app, monkeypatch, caplog):
    def boom(**kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(listing, "page", boom)
    with caplog.at_level("ERROR"):
        resp = app.get("/api/messages", expect_errors=True)
    assert resp.status_int == 500
    assert resp.content_type == PROBLEM_JSON
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert HEX32.match(resp.headers["X-Request-ID"])
    for leak in ("secret internal detail", "RuntimeError", "Traceback", 'File "'):
        assert leak not in resp.text
    # ...while the log has what an operator needs.
    assert "secret internal detail" in caplog.text


# --- the hashing gate ----------------------------------------------------------------------------


def test_gate_lets_up_to_its_capacity_in_at_once():
    gate = HashingGate(2, 0.1)
    with gate, gate:
        pass
    with gate:
        pass


def test_second_acquirer_waits_then_gets_hashing_busy():
    gate = HashingGate(1, 0.2)
    outcome = {}

    def second():
        started = time.monotonic()
        try:
            with gate:
                outcome["result"] = "entered"
        except HashingBusy:
            outcome["result"] = "busy"
        outcome["waited"] = time.monotonic() - started

    with gate:
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(timeout=5)
    assert outcome["result"] == "busy"
    assert 0.15 <= outcome["waited"] < 2


def test_second_acquirer_gets_in_when_the_slot_frees_within_the_wait():
    gate = HashingGate(1, 2.0)
    outcome = {}
    holding = threading.Event()

    def first():
        with gate:
            holding.set()
            time.sleep(0.2)

    def second():
        holding.wait(5)
        started = time.monotonic()
        with gate:
            outcome["waited"] = time.monotonic() - started

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert 0.05 <= outcome["waited"] < 2


def test_gate_slot_is_released_after_an_exception():
    gate = HashingGate(1, 0.05)
    with pytest.raises(ValueError), gate:
        raise ValueError
    with gate:
        pass


def test_busy_acquirer_does_not_release_a_slot_it_never_had():
    gate = HashingGate(1, 0.05)
    with gate:
        with pytest.raises(HashingBusy), gate:
            pass
        # Still held by us: a third acquirer is still refused.
        with pytest.raises(HashingBusy), gate:
            pass
    with gate:
        pass


@pytest.fixture
def gated(config, monkeypatch):
    """An app whose one hashing slot the test can hold: (TestApp, the app's HashingGate)."""
    gates: list[HashingGate] = []

    class RecordingGate(HashingGate):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            gates.append(self)

    monkeypatch.setattr(msgapi.app, "HashingGate", RecordingGate)
    wsgi = create_app(dataclasses.replace(config, hash_concurrency=1, hash_wait_seconds=0.05))
    assert len(gates) == 1 and gates[0].max_concurrent == 1
    yield webtest.TestApp(wsgi), gates[0]
    database.close_all()


def assert_busy(resp) -> None:
    assert_problem(resp, 503)
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_login_while_every_hashing_slot_is_taken_is_503(gated):
    app, gate = gated
    register(app, "alice")
    with gate:
        resp = app.post_json("/api/auth/token/", {"username": "alice", "password": PASSWORD}, expect_errors=True)
    assert_busy(resp)
    # The slot is free again: the same login succeeds.
    assert app.post_json("/api/auth/token/", {"username": "alice", "password": PASSWORD}).status_int == 200


def test_unknown_user_login_while_busy_is_503_too(gated):
    """The dummy hash for unknown users goes through the gate as well: no enumeration by status."""
    app, gate = gated
    with gate:
        resp = app.post_json("/api/auth/token/", {"username": "ghost", "password": PASSWORD}, expect_errors=True)
    assert_busy(resp)


def test_register_while_every_hashing_slot_is_taken_is_503_and_creates_nobody(gated):
    app, gate = gated
    with gate:
        resp = app.post_json("/api/auth/register/", {"username": "bob", "password": PASSWORD}, expect_errors=True)
    assert_busy(resp)
    assert app.post_json("/api/auth/register/", {"username": "bob", "password": PASSWORD}).status_int == 201


def test_reads_do_not_need_a_hashing_slot(gated):
    app, gate = gated
    register(app, "alice")
    access = obtain_tokens(app, "alice")["access"]
    with gate:
        assert app.get("/api/messages").status_int == 200
        assert app.post_json("/api/messages", {"content": "hi"}, headers=bearer(access)).status_int == 201
