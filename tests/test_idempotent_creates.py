"""Idempotent creates: POST /api/messages with an Idempotency-Key creates at most one message per user and key."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import PASSWORD, WireClient, assert_problem, bearer, messages_trigger, obtain_tokens, register, wire_login

from msgapi.store import idempotency, schema
from msgapi.store.connection import database

RETRIES = 16
BARRIER_TIMEOUT = 30


def post(app, auth: dict[str, str], key: str | None, content: str = "hello", **kwargs):
    headers = dict(auth) if key is None else {**auth, "Idempotency-Key": key}
    return app.post_json("/api/messages", {"content": content}, headers=headers, expect_errors=True, **kwargs)


def message_count() -> int:
    with database.connection_context():
        return schema.Message.select().count()


def key_rows() -> list[schema.IdempotencyKey]:
    with database.connection_context():
        return list(schema.IdempotencyKey.select())


def the_answer(resp) -> tuple:
    """What a repeat must reproduce exactly."""
    return resp.status_int, resp.headers["Location"], resp.headers["ETag"], resp.body


def test_a_repeat_answers_the_first_201_and_creates_nothing(app, auth):
    first = post(app, auth, "order-42")
    assert first.status_int == 201
    again = post(app, auth, "order-42")
    assert the_answer(again) == the_answer(first)
    assert message_count() == 1


def test_a_repeat_after_the_message_changed_still_answers_the_first_201(app, auth):
    first = post(app, auth, "k")
    app.put_json(first.headers["Location"], {"content": "edited"}, headers=auth)
    assert the_answer(post(app, auth, "k")) == the_answer(first)
    app.delete(first.headers["Location"], headers=auth)
    assert the_answer(post(app, auth, "k")) == the_answer(first)
    assert message_count() == 0


def test_the_same_key_with_a_different_body_is_422(app, auth):
    post(app, auth, "k", "hello")
    assert_problem(post(app, auth, "k", "goodbye"), 422)
    assert message_count() == 1
    # The same content, trimmed or sent as a form, is the same request.
    form = app.post("/api/messages", {"content": " hello "}, headers={**auth, "Idempotency-Key": "k"})
    assert form.status_int == 201 and message_count() == 1


def test_same_content_is_the_same_request_however_the_body_spells_it(app, auth):
    """What the spec calls the same content: ``content`` once trimmed, as JSON or as a form; other members ignored."""
    first = post(app, auth, "k", "héllo")
    headers = {**auth, "Idempotency-Key": "k"}
    spellings = [
        app.post("/api/messages", '{"content": "h\\u00e9llo"}', headers=headers, content_type="application/json"),
        app.post_json("/api/messages", {"views": 7, "content": "\théllo \n", "author": "bob"}, headers=headers),
        app.post("/api/messages", {"content": "héllo", "other": "ignored"}, headers=headers),
    ]
    for again in spellings:
        assert the_answer(again) == the_answer(first)
    assert message_count() == 1
    # Without a key, such a body creates the same message: the key compares what a create uses.
    plain = app.post_json("/api/messages", {"views": 7, "content": " héllo ", "author": "bob"}, headers=auth)
    assert (plain.json["content"], plain.json["views"], plain.json["author"]) == ("héllo", 0, "alice")
    # Case and inner spacing are content, so they differ.
    for other in ("Héllo", "hé llo"):
        assert_problem(post(app, auth, "k", other), 422)


def test_keys_are_per_user(app, auth):
    register(app, "bob")
    bob = bearer(obtain_tokens(app, "bob")["access"])
    alices = post(app, auth, "shared-key")
    bobs = post(app, bob, "shared-key", "a different body is fine")
    assert alices.status_int == bobs.status_int == 201
    assert alices.json["id"] != bobs.json["id"]
    assert (alices.json["author"], bobs.json["author"]) == ("alice", "bob")
    assert the_answer(post(app, bob, "shared-key", "a different body is fine")) == the_answer(bobs)
    assert message_count() == 2


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "bell\x07", "del\x7f"])
def test_a_malformed_key_is_400(app, auth, key):
    assert_problem(post(app, auth, key), 400)
    assert message_count() == 0 and key_rows() == []


def test_the_longest_key_and_any_printable_text_are_fine(app, auth):
    for key in ("x" * 255, '"quoted", with spaces and ;=,', "8e03978e-40d5-43e8-bc93-6894a57f9324"):
        assert post(app, auth, key).status_int == 201
    assert message_count() == 3


def test_the_token_outranks_the_key(app, auth):
    assert_problem(post(app, {}, "x" * 300), 401)
    assert_problem(post(app, bearer("not-a-token"), "k"), 401)


def test_a_refused_token_user_creates_nothing_and_leaves_the_key_free(app, auth, tokens):
    with database.connection_context():
        schema.User.update(is_active=False).execute()
    assert_problem(post(app, auth, "k"), 401)
    assert key_rows() == []
    with database.connection_context():
        schema.User.update(is_active=True).execute()
    assert post(app, auth, "k").status_int == 201


def test_a_repeat_with_an_ended_token_is_401_not_the_stored_answer(app, auth):
    """A key's stored 201 is answered only to a token that may still create."""
    assert post(app, auth, "k").status_int == 201
    resp = app.post_json(
        "/api/auth/password/", {"current_password": PASSWORD, "new_password": "a brand new passphrase"}, headers=auth
    )
    assert resp.status_int == 200
    assert assert_problem(post(app, auth, "k"), 401)["code"] == "token_not_valid"
    assert assert_problem(post(app, auth, "k", "a different body"), 401)["code"] == "token_not_valid"


def test_without_the_header_nothing_is_stored(app, auth):
    assert post(app, auth, None).status_int == 201
    assert post(app, auth, None).status_int == 201
    assert message_count() == 2 and key_rows() == []


def _claim(key: str, content: str, age: int) -> None:
    """A claim as a request in flight (or one that died) leaves it: no answer yet."""
    with database.connection_context():
        schema.IdempotencyKey.insert(
            user=1,
            key=key,
            fingerprint=hashlib.sha256(content.encode()).hexdigest(),
            claim="someone-else",
            created_at=int(time.time()) - age,
        ).execute()


# What a trigger, added by another connection, does on every INSERT into messages: (SQLite, PostgreSQL).
_ON_MESSAGE_INSERT = {
    "fail": ("SELECT RAISE(ABORT, 'injected failure');", "RAISE EXCEPTION 'injected failure';"),
    # Another request takes the key over between this one's claim and its create.
    "take over the claim": (
        "UPDATE idempotency_keys SET claim = 'taken-over';",
        "UPDATE idempotency_keys SET claim = 'taken-over'; RETURN NEW;",
    ),
}


@contextlib.contextmanager
def on_message_insert(database_url: str, what: str):
    sqlite_body, postgres_body = _ON_MESSAGE_INSERT[what]
    with messages_trigger(database_url, "AFTER INSERT", sqlite_body, postgres_body):
        yield


def test_a_create_that_fails_releases_its_key_and_reports_its_own_error(app, auth, database_url, caplog):
    """A retry need not wait out the lease of a create that failed, and the log names the failure."""
    with on_message_insert(database_url, "fail"):
        assert_problem(post(app, auth, "k"), 500)
    assert "injected failure" in caplog.text
    assert post(app, auth, "k").status_int == 201
    assert len(app.get("/api/messages").json) == 1


def test_a_claim_taken_over_during_the_create_is_409_and_creates_nothing(app, auth, database_url):
    with on_message_insert(database_url, "take over the claim"):
        resp = post(app, auth, "k")
    assert_problem(resp, 409)
    assert resp.headers["Retry-After"] == "1"
    assert app.get("/api/messages").json == []


def test_a_repeat_while_the_first_is_in_flight_is_409(app, auth):
    _claim("k", "hello", age=0)
    resp = post(app, auth, "k")
    assert_problem(resp, 409)
    assert resp.headers["Retry-After"] == "1"
    assert message_count() == 0
    # A different body is still a different request.
    assert_problem(post(app, auth, "k", "other"), 422)


def test_a_claim_left_by_a_request_that_died_is_taken_over(app, auth):
    _claim("k", "hello", age=idempotency.IDEMPOTENCY_LEASE_SECONDS + 1)
    first = post(app, auth, "k")
    assert first.status_int == 201
    assert the_answer(post(app, auth, "k")) == the_answer(first)
    assert message_count() == 1


def test_an_expired_key_may_be_used_again_and_old_keys_are_pruned_in_bounded_batches(make_app):
    app = make_app(idempotency_key_ttl=60)
    register(app, "alice")
    auth = bearer(obtain_tokens(app, "alice")["access"])
    first = post(app, auth, "k")
    old = int(time.time()) - 61
    with database.connection_context():
        schema.IdempotencyKey.update(created_at=old).execute()
        schema.IdempotencyKey.insert_many(
            [{"user": 1, "key": f"old-{n}", "fingerprint": "f", "claim": "c", "created_at": old} for n in range(150)]
        ).execute()
    second = post(app, auth, "k")
    assert second.status_int == 201 and second.json["id"] != first.json["id"]
    # One batch of expired keys went (the old "k" may have been one of them), not all.
    pruned = 150 - sum(row.key.startswith("old-") for row in key_rows())
    assert pruned in (idempotency.IDEMPOTENCY_PRUNE_BATCH - 1, idempotency.IDEMPOTENCY_PRUNE_BATCH)
    assert post(app, auth, "another").status_int == 201
    assert {row.key for row in key_rows()} == {"k", "another"}


def test_concurrent_creates_prune_expired_keys_together_without_error(app, auth):
    old = int(time.time()) - 2 * 86400
    with database.connection_context():
        schema.IdempotencyKey.insert_many(
            [{"user": 1, "key": f"old-{n}", "fingerprint": "f", "claim": "c", "created_at": old} for n in range(400)]
        ).execute()
    barrier = threading.Barrier(8, timeout=BARRIER_TIMEOUT)

    def create(index: int) -> int:
        barrier.wait()
        return post(app, auth, f"new-{index}", f"message {index}").status_int

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(create, range(8))) == [201] * 8
    assert message_count() == 8
    assert sum(row.key.startswith("old-") for row in key_rows()) < 400


# --- Over a live server: concurrent retries, and a restart between a create and its retry ------


def test_concurrent_retries_with_one_key_create_one_message(live_server):
    server = live_server(threads=RETRIES)
    auth = {**wire_login(server.url, "alice"), "Idempotency-Key": "one-create"}
    barrier = threading.Barrier(RETRIES, timeout=BARRIER_TIMEOUT)

    def retry(_: int):
        with WireClient(server.url) as client:
            client.request("HEAD", "/api/messages")  # connected before the start line
            barrier.wait()
            response = client.request("POST", "/api/messages", {"content": "exactly once"}, auth)
        return response.status, response.headers.get("Location"), response.headers.get("ETag"), response.body

    with ThreadPoolExecutor(max_workers=RETRIES) as pool:
        answers = list(pool.map(retry, range(RETRIES)))
    created = {answer for answer in answers if answer[0] == 201}
    assert len(created) == 1, answers
    assert all(status in (201, 409) for status, *_ in answers), answers
    with WireClient(server.url) as client:
        listed = client.request("GET", "/api/messages").json()
    assert len(listed) == 1
    # A retry after the dust settles gets the same 201.
    with WireClient(server.url) as client:
        response = client.request("POST", "/api/messages", {"content": "exactly once"}, auth)
    assert (response.status, response.headers["Location"], response.headers["ETag"], response.body) in created


def test_a_retry_after_a_restart_gets_the_first_answer(live_server):
    first_server = live_server()
    auth = {**wire_login(first_server.url, "alice"), "Idempotency-Key": "before-the-restart"}
    with WireClient(first_server.url) as client:
        first = client.request("POST", "/api/messages", {"content": "survives"}, auth)
    assert first.status == 201
    first_server.stop()

    second_server = live_server()
    with WireClient(second_server.url) as client:
        again = client.request("POST", "/api/messages", {"content": "survives"}, auth)
        listed = client.request("GET", "/api/messages").json()
    assert (again.status, again.headers["Location"], again.headers["ETag"], again.body) == (
        first.status,
        first.headers["Location"],
        first.headers["ETag"],
        first.body,
    )
    assert len(listed) == 1


def test_idempotent_answers_conform_to_the_spec(app, auth):
    from test_openapi import MESSAGES, conforms

    for resp in (post(app, auth, "k"), post(app, auth, "k"), post(app, auth, "k", "other"), post(app, auth, "")):
        conforms(resp, MESSAGES, "post")
    _claim("in-flight", "hello", age=0)
    conforms(post(app, auth, "in-flight"), MESSAGES, "post")
