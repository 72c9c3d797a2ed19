"""Conditional writes (RFC 9110): ETag on every message response, If-Match on PUT, PATCH and DELETE.

Without If-Match every write behaves as before (the rest of the suite pins that down).
"""

from __future__ import annotations

import datetime
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import WireClient, assert_problem, bearer, messages_trigger, obtain_tokens, register, wire_login

from msgapi.config import ConfigError, from_env
from msgapi.store import schema
from msgapi.store.connection import database

STRONG_ETAG = re.compile(r'"[!#-~]+"\Z')
EDITORS = 8
ROUNDS = 5
BARRIER_TIMEOUT = 30


def url_of(message: dict) -> str:
    return f"/api/messages/{message['id']}"


def write(app, method: str, url: str, headers: dict[str, str], content: str = "changed"):
    """A PUT, PATCH (JSON body) or DELETE, errors included."""
    if method == "DELETE":
        return app.delete(url, headers=headers, expect_errors=True)
    return app.request(
        url,
        method=method,
        body=f'{{"content": "{content}"}}'.encode(),
        content_type="application/json",
        headers=headers,
        expect_errors=True,
    )


def test_every_message_response_carries_the_same_strong_etag_until_an_edit(app, auth):
    created = app.post_json("/api/messages", {"content": "hello"}, headers=auth)
    etag = created.headers["ETag"]
    assert STRONG_ETAG.match(etag)
    url = url_of(created.json)
    # Reads count views, and views are not part of the validator.
    assert app.get(url).headers["ETag"] == etag
    assert app.get(url).headers["ETag"] == etag
    assert app.head(url).headers["ETag"] == etag
    replaced = app.put_json(url, {"content": "hello"}, headers=auth)
    assert replaced.headers["ETag"] != etag
    patched = app.patch_json(url, {"content": "again"}, headers=auth)
    assert patched.headers["ETag"] not in (etag, replaced.headers["ETag"])
    assert app.get(url).headers["ETag"] == patched.headers["ETag"]


def test_a_write_with_the_current_etag_succeeds(app, auth, create_message):
    url = url_of(create_message())
    etag = app.get(url).headers["ETag"]
    resp = app.put_json(url, {"content": "edited"}, headers={**auth, "If-Match": etag})
    assert resp.json["content"] == "edited"
    resp = app.patch(url, {"content": "patched"}, headers={**auth, "If-Match": resp.headers["ETag"]})
    assert resp.json["content"] == "patched"
    assert app.delete(url, headers={**auth, "If-Match": resp.headers["ETag"]}).status_int == 204
    assert app.get(url, expect_errors=True).status_int == 404


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_a_stale_etag_is_412_and_changes_nothing(app, auth, create_message, method):
    url = url_of(create_message("first"))
    stale = app.head(url).headers["ETag"]
    current = app.put_json(url, {"content": "second"}, headers=auth).json
    assert_problem(write(app, method, url, {**auth, "If-Match": stale}, "third"), 412)
    assert app.get(url).json["content"] == current["content"] == "second"


def test_weak_etags_and_other_servers_tags_never_match(app, auth, create_message):
    url = url_of(create_message())
    etag = app.head(url).headers["ETag"]
    malformed = (etag.strip('"'), f"{etag} {etag}", f"{etag};", f'{etag}, "unclosed')
    for header in (f"W/{etag}", '"not-ours"', "", "garbage", f'"{"f" * 40}"', *malformed):
        resp = app.put_json(url, {"content": "x"}, headers={**auth, "If-Match": header}, expect_errors=True)
        assert_problem(resp, 412)
    assert app.get(url).json["content"] == "hello"


def test_if_match_lists_and_star(app, auth, create_message):
    url = url_of(create_message())
    etag = app.head(url).headers["ETag"]
    resp = app.put_json(url, {"content": "listed"}, headers={**auth, "If-Match": f'W/{etag}, "other", {etag}'})
    assert resp.json["content"] == "listed"
    # "*": whatever the state, as long as the message exists.
    resp = app.put_json(url, {"content": "starred"}, headers={**auth, "If-Match": "*"})
    assert resp.json["content"] == "starred"
    assert app.delete(url, headers={**auth, "If-Match": "*"}).status_int == 204
    resp = app.put_json(url, {"content": "gone"}, headers={**auth, "If-Match": "*"}, expect_errors=True)
    assert_problem(resp, 404)


def test_order_of_checks_is_401_404_403_412_then_the_body(app, auth, create_message):
    url = url_of(create_message())
    stale = {"If-Match": '"1"'}
    register(app, "bob")
    bob = bearer(obtain_tokens(app, "bob")["access"])
    bad_body = {"content": ""}
    assert_problem(app.put_json(url, bad_body, headers=stale, expect_errors=True), 401)
    assert_problem(app.put_json("/api/messages/999", bad_body, headers={**auth, **stale}, expect_errors=True), 404)
    assert_problem(app.put_json(url, bad_body, headers={**bob, **stale}, expect_errors=True), 403)
    assert_problem(app.put_json(url, bad_body, headers={**auth, **stale}, expect_errors=True), 412)
    resp = app.put(url, "x", content_type="text/plain", headers={**auth, **stale}, expect_errors=True)
    assert_problem(resp, 412)
    current = {"If-Match": app.head(url).headers["ETag"]}
    assert_problem(app.put_json(url, bad_body, headers={**auth, **current}, expect_errors=True), 400)
    assert_problem(app.delete(url, headers={**bob, **stale}, expect_errors=True), 403)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_a_write_that_lost_a_race_is_404_if_unconditional_and_412_if_the_message_remains(
    app, auth, create_message, database_url, method
):
    """The race, put in the write itself: a trigger skips the row, as a delete or an edit committed
    between the checks and the write would. An unconditional write then changed nothing only because
    the message is gone (404); a conditional one finds it still there, changed (412)."""
    message = create_message()
    url = url_of(message)
    etag = app.get(url).headers["ETag"]
    event = "BEFORE DELETE" if method == "DELETE" else "BEFORE UPDATE"
    with messages_trigger(database_url, event, "SELECT RAISE(IGNORE);", "RETURN NULL;"):
        assert_problem(write(app, method, url, auth), 404)
        assert_problem(write(app, method, url, {**auth, "If-Match": etag}), 412)


def test_two_edits_in_one_microsecond_still_get_different_etags(app, auth, create_message):
    """An edit moves updated_at past the previous one even when the clock has not (or went back)."""
    message = create_message()
    future = datetime.datetime(2100, 1, 1, 12, 0, 0)
    with database.connection_context():
        schema.Message.update(updated_at=future).where(schema.Message.id == message["id"]).execute()
    url = url_of(message)
    first = app.head(url).headers["ETag"]
    edited = app.put_json(url, {"content": "edited"}, headers={**auth, "If-Match": first})
    assert edited.json["updated_at"] == "2100-01-01T12:00:00.000001Z"
    second = app.put_json(url, {"content": "again"}, headers={**auth, "If-Match": edited.headers["ETag"]})
    assert second.json["updated_at"] == "2100-01-01T12:00:00.000002Z"
    assert len({first, edited.headers["ETag"], second.headers["ETag"]}) == 3
    assert_problem(app.put_json(url, {"content": "x"}, headers={**auth, "If-Match": first}, expect_errors=True), 412)


def test_preconditions_can_be_required(make_app):
    app = make_app(require_preconditions=True)
    register(app, "alice")
    auth = bearer(obtain_tokens(app, "alice")["access"])
    created = app.post_json("/api/messages", {"content": "hello"}, headers=auth)
    url = url_of(created.json)
    for method in ("PUT", "PATCH", "DELETE"):
        assert_problem(write(app, method, url, auth), 428)
    assert app.get(url).json["content"] == "hello"
    resp = app.put_json(url, {"content": "x"}, headers={**auth, "If-Match": created.headers["ETag"]})
    assert resp.json["content"] == "x"
    assert app.delete(url, headers={**auth, "If-Match": "*"}).status_int == 204


def test_the_settings_are_read_from_the_environment():
    key = {"SECRET_KEY": "k" * 40}
    defaults = from_env(key)
    assert (defaults.require_preconditions, defaults.idempotency_key_ttl) == (False, 86400)
    config = from_env({**key, "REQUIRE_PRECONDITIONS": "true", "IDEMPOTENCY_KEY_TTL": "60"})
    assert (config.require_preconditions, config.idempotency_key_ttl) == (True, 60)
    for name, value in (("REQUIRE_PRECONDITIONS", "sometimes"), ("IDEMPOTENCY_KEY_TTL", "0")):
        with pytest.raises(ConfigError, match=name):
            from_env({**key, name: value})


def test_cors_exposes_the_etag(app):
    resp = app.get("/api/messages", headers={"Origin": "https://a.example"})
    exposed = {h.strip().lower() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}
    assert "etag" in exposed


# --- Over a live server: editors racing with the same ETag ------------------------------------


def _race(url: str, auth: dict[str, str], path: str, etag: str, requests: list[tuple[str, dict | None]]) -> list:
    """Send ``requests`` (method, body) at once, each with ``If-Match: etag``; (status, body) in order."""
    barrier = threading.Barrier(len(requests), timeout=BARRIER_TIMEOUT)

    def send(index: int) -> tuple[int, dict | None]:
        method, body = requests[index]
        with WireClient(url) as client:
            client.request("HEAD", path)  # connected before the start line
            barrier.wait()
            response = client.request(method, path, body, {**auth, "If-Match": etag})
        return response.status, (response.json() if response.body else None)

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(send, range(len(requests))))


def test_editors_racing_with_one_etag_exactly_one_wins(live_server):
    server = live_server()
    auth = wire_login(server.url, "alice")
    with WireClient(server.url) as client:
        created = client.request("POST", "/api/messages", {"content": "v0"}, auth)
        path = f"/api/messages/{created.json()['id']}"
        etag = created.headers["ETag"]
        for round_number in range(ROUNDS):
            edits = [("PUT" if n % 2 else "PATCH", {"content": f"r{round_number} editor {n}"}) for n in range(EDITORS)]
            answers = _race(server.url, auth, path, etag, edits)
            statuses = sorted(status for status, _ in answers)
            assert statuses == [200] + [412] * (EDITORS - 1), answers
            (winner,) = [body for status, body in answers if status == 200]
            current = client.request("GET", path)
            assert current.json()["content"] == winner["content"]
            assert current.headers["ETag"] != etag
            etag = current.headers["ETag"]


def test_a_delete_and_edits_racing_with_one_etag_exactly_one_wins(live_server):
    server = live_server()
    auth = wire_login(server.url, "alice")
    with WireClient(server.url) as client:
        created = client.request("POST", "/api/messages", {"content": "v0"}, auth)
        path = f"/api/messages/{created.json()['id']}"
        requests = [("DELETE", None)] + [("PUT", {"content": f"editor {n}"}) for n in range(EDITORS - 1)]
        answers = _race(server.url, auth, path, created.headers["ETag"], requests)
        winners = [
            (method, status) for (method, _), (status, _) in zip(requests, answers, strict=True) if status in (200, 204)
        ]
        assert len(winners) == 1, answers
        losers = [status for status, _ in answers if status not in (200, 204)]
        # An edit that lost to the delete may find the message gone (404); every other loser is 412.
        assert set(losers) <= {412, 404}
        if winners[0][0] == "DELETE":
            assert client.request("GET", path).status == 404
        else:
            assert client.request("GET", path).status == 200
            assert 404 not in losers


def test_conditional_answers_conform_to_the_spec(make_app):
    from test_openapi import MESSAGE, MESSAGES, conforms

    app = make_app(require_preconditions=True)
    register(app, "alice")
    auth = bearer(obtain_tokens(app, "alice")["access"])
    created = app.post_json(MESSAGES, {"content": "hello"}, headers=auth)
    conforms(created, MESSAGES, "post")
    url = url_of(created.json)
    conforms(app.get(url), MESSAGE, "get")
    conforms(app.head(url), MESSAGE, "head")
    stale = {**auth, "If-Match": '"1"'}
    for method in ("put", "patch", "delete"):
        conforms(write(app, method.upper(), url, stale), MESSAGE, method)
        conforms(write(app, method.upper(), url, auth), MESSAGE, method)
    current = {**auth, "If-Match": created.headers["ETag"]}
    conforms(app.put_json(url, {"content": "x"}, headers=current), MESSAGE, "put")
    conforms(app.patch_json(url, {"content": "y"}, headers={**auth, "If-Match": "*"}), MESSAGE, "patch")
    conforms(app.delete(url, headers={**auth, "If-Match": "*"}), MESSAGE, "delete")


def test_a_conditional_replace_resets_the_views_like_any_replace(app, auth, create_message):
    url = url_of(create_message())
    app.get(url)
    etag = app.get(url).headers["ETag"]
    assert app.put_json(url, {"content": "fresh"}, headers={**auth, "If-Match": etag}).json["views"] == 0


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_a_conditional_write_touches_only_its_message_when_another_shares_its_timestamp(
    app, auth, create_message, method
):
    """The entity tag is the message's updated_at; the statement must still match on the id too."""
    target, other = create_message("target"), create_message("other")
    same = datetime.datetime(2030, 1, 2, 3, 4, 5, 600000)
    schema.Message.update(updated_at=same).where(schema.Message.id.in_([target["id"], other["id"]])).execute()
    etag = app.get(url_of(target)).headers["ETag"]
    assert write(app, method, url_of(target), {**auth, "If-Match": etag}).status_int in (200, 204)
    untouched = app.get(url_of(other)).json
    assert (untouched["content"], untouched["updated_at"]) == ("other", "2030-01-02T03:04:05.600000Z")


# --- The order of checks, pair by pair ----------------------------------------------------------
#
# Each fault below makes one check fail. A request with two faults must be refused by the earlier
# check; the same request without the earlier fault, by the later one. So every pair is pinned
# down, with and without REQUIRE_PRECONDITIONS (where a missing If-Match is the fourth fault).

CHECK_ORDER = ("no token", "unknown id", "not the author", "precondition", "bad body", "not JSON")
FAULT_STATUS = {"no token": 401, "unknown id": 404, "not the author": 403, "bad body": 400, "not JSON": 415}


def _faulty_write(app, method: str, url: str, faults: set[str], users: dict, etag: str, required: bool):
    headers = {} if "no token" in faults else dict(users["bob" if "not the author" in faults else "alice"])
    if "precondition" in faults:
        if not required:  # with REQUIRE_PRECONDITIONS, the fault is having no If-Match at all
            headers["If-Match"] = '"1"'
    else:
        headers["If-Match"] = etag
    target = "/api/messages/999999" if "unknown id" in faults else url
    if "not JSON" in faults and method != "DELETE":
        return app.request(
            target, method=method, body=b"x", content_type="text/plain", headers=headers, expect_errors=True
        )
    return write(app, method, target, headers, "" if "bad body" in faults else "would change it")


@pytest.mark.parametrize("required", [False, True], ids=["if-match-optional", "if-match-required"])
@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_every_pair_of_checks_answers_the_earlier_one(make_app, method, required):
    app = make_app(require_preconditions=required)
    users = {}
    for name in ("alice", "bob"):
        register(app, name)
        users[name] = bearer(obtain_tokens(app, name)["access"])
    created = app.post_json("/api/messages", {"content": "hello"}, headers=users["alice"])
    url, etag = url_of(created.json), created.headers["ETag"]
    status = {**FAULT_STATUS, "precondition": 428 if required else 412}
    checks = [c for c in CHECK_ORDER if method != "DELETE" or c not in ("bad body", "not JSON")]
    pairs = [
        (earlier, later)
        for index, earlier in enumerate(checks)
        for later in checks[index + 1 :]
        # Without a token there is no user to be refused, and a body has only one fault at a time.
        if (earlier, later) not in (("no token", "not the author"), ("bad body", "not JSON"))
    ]
    for earlier, later in pairs:
        both = _faulty_write(app, method, url, {earlier, later}, users, etag, required)
        assert both.status_int == status[earlier], (earlier, later, both.text)
        assert_problem(both, status[earlier])
        alone = _faulty_write(app, method, url, {later}, users, etag, required)
        assert alone.status_int == status[later], (later, alone.text)
        assert_problem(alone, status[later])
    resp = app.get(url)
    assert (resp.json["content"], resp.headers["ETag"]) == ("hello", etag)
