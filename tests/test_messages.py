"""/api/messages and /api/messages/{id}, plus what every response shares: bodies, errors, headers, CORS."""

from __future__ import annotations

import datetime
import json
import re
from urllib.parse import urlsplit

import pytest
import webtest
from conftest import PASSWORD, assert_problem, bearer, obtain_tokens, register, set_next_user_id

from msgapi.store import MAX_ID, messages, schema

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
MESSAGE_KEYS = {"id", "content", "views", "created_at", "updated_at", "author"}
PROBLEM_JSON = "application/problem+json"
FORM = "application/x-www-form-urlencoded"
EMOJI = "\N{GRINNING FACE}"
MAX_BODY = 64 * 1024
UNKNOWN_ID = 999
BAD_IDS = ["0", "-1", "abc", "1.5", "12345678901234567890", "2147483648"]
WRITE_METHODS = ["PUT", "PATCH", "DELETE"]
UPDATE_METHODS = ["PUT", "PATCH"]

# Content that must be refused with a field error on ``content``; None as the value means "field missing".
INVALID_CONTENT = [
    pytest.param({"content": ""}, id="empty"),
    pytest.param({"content": "   "}, id="spaces-only"),
    pytest.param({"content": " \t\n\r "}, id="whitespace-only"),
    pytest.param({"content": "x" * 161}, id="161-chars"),
    pytest.param({"content": EMOJI * 161}, id="161-emoji"),
    pytest.param({"content": 123}, id="number"),
    pytest.param({"content": None}, id="null"),
    pytest.param({"content": True}, id="boolean"),
    pytest.param({"content": ["hi"]}, id="array"),
    pytest.param({"content": {"text": "hi"}}, id="object"),
    pytest.param({"content": "a\x00b"}, id="nul-character"),
    pytest.param({}, id="missing"),
    pytest.param({"text": "hi"}, id="other-field-only"),
]


def send(app: webtest.TestApp, method: str, path: str, data=None, **kwargs) -> webtest.TestResponse:
    """Any method, with ``data`` sent as JSON, or a raw ``body`` with its ``content_type``."""
    if data is not None:
        kwargs["body"] = json.dumps(data).encode()
        kwargs.setdefault("content_type", "application/json")
    return app.request(path, method=method, expect_errors=True, **kwargs)


def allowed(resp: webtest.TestResponse) -> set[str]:
    return {method.strip() for method in resp.headers["Allow"].split(",")}


def assert_content_error(resp: webtest.TestResponse) -> None:
    body = assert_problem(resp, 400)
    assert list(body["errors"]) == ["content"]
    assert body["errors"]["content"]
    assert all(isinstance(message, str) and message for message in body["errors"]["content"])


def at(moment: datetime.datetime):
    return lambda: moment


# --- list ----------------------------------------------------------------------------------------


def test_list_is_an_empty_array_when_there_are_no_messages(app):
    resp = app.get("/api/messages")
    assert resp.status_int == 200
    assert resp.content_type == "application/json"
    assert resp.json == []


def test_list_returns_every_message(app, create_message):
    first = create_message("first")
    second = create_message("second")
    assert {m["id"]: m["content"] for m in app.get("/api/messages").json} == {
        first["id"]: "first",
        second["id"]: "second",
    }


def test_list_items_are_messages_as_the_item_shows_them(app, create_message):
    message = create_message("hello")
    [listed] = app.get("/api/messages").json
    assert listed == message


def test_list_shows_newest_message_first(app, create_message):
    ids = [create_message(f"m{n}")["id"] for n in range(3)]
    assert [m["id"] for m in app.get("/api/messages").json] == ids[::-1]


def test_list_shows_most_recently_updated_message_first(app, auth, create_message):
    older = create_message("older")
    newer = create_message("newer")
    app.put_json(f"/api/messages/{older['id']}", {"content": "edited"}, headers=auth)
    assert [m["id"] for m in app.get("/api/messages").json] == [older["id"], newer["id"]]


def test_list_orders_equal_updated_at_by_higher_id_first(app, create_message, monkeypatch):
    monkeypatch.setattr(messages, "utcnow", at(datetime.datetime(2030, 1, 1, 12, 0, 0, 500000)))
    ids = [create_message(f"m{n}")["id"] for n in range(3)]
    listed = app.get("/api/messages").json
    assert len({m["updated_at"] for m in listed}) == 1
    assert [m["id"] for m in listed] == sorted(ids, reverse=True)


def test_list_does_not_count_views(app, create_message):
    message = create_message()
    app.get("/api/messages")
    app.get("/api/messages")
    assert app.get("/api/messages").json[0]["views"] == 0
    assert app.get(f"/api/messages/{message['id']}").json["views"] == 1


def test_list_needs_no_token(app, create_message):
    create_message()
    assert len(app.get("/api/messages", status=200).json) == 1


# --- create --------------------------------------------------------------------------------------


def test_create_returns_201_with_the_new_message(app, auth):
    resp = app.post_json("/api/messages", {"content": "hello"}, headers=auth)
    assert resp.status_int == 201
    assert resp.content_type == "application/json"
    assert set(resp.json) == MESSAGE_KEYS
    assert isinstance(resp.json["id"], int)
    assert resp.json["content"] == "hello"
    assert resp.json["views"] == 0


def test_create_names_the_creator_as_author(app, auth):
    assert app.post_json("/api/messages", {"content": "hello"}, headers=auth).json["author"] == "alice"


def test_create_names_each_creator_as_author(app, auth):
    register(app, "bob")
    bob = bearer(obtain_tokens(app, "bob")["access"])
    app.post_json("/api/messages", {"content": "from bob"}, headers=bob)
    app.post_json("/api/messages", {"content": "from alice"}, headers=auth)
    assert {m["content"]: m["author"] for m in app.get("/api/messages").json} == {
        "from bob": "bob",
        "from alice": "alice",
    }


def test_create_sets_location_to_the_new_message(app, auth):
    resp = app.post_json("/api/messages", {"content": "hello"}, headers=auth)
    assert urlsplit(resp.headers["Location"]).path == f"/api/messages/{resp.json['id']}"


def test_create_location_serves_the_created_message(app, auth):
    resp = app.post_json("/api/messages", {"content": "hello"}, headers=auth)
    fetched = app.get(urlsplit(resp.headers["Location"]).path).json
    assert fetched["id"] == resp.json["id"]
    assert fetched["content"] == "hello"


def test_create_renders_timestamps_as_rfc3339_utc_with_microseconds(app, auth):
    message = app.post_json("/api/messages", {"content": "hello"}, headers=auth).json
    assert TIMESTAMP.match(message["created_at"])
    assert TIMESTAMP.match(message["updated_at"])


def test_create_renders_whole_second_timestamps_with_microseconds(app, auth, monkeypatch):
    monkeypatch.setattr(messages, "utcnow", at(datetime.datetime(2030, 5, 6, 7, 8, 9)))
    message = app.post_json("/api/messages", {"content": "hello"}, headers=auth).json
    assert message["created_at"] == "2030-05-06T07:08:09.000000Z"
    assert app.get(f"/api/messages/{message['id']}").json["updated_at"] == "2030-05-06T07:08:09.000000Z"


AWKWARD_CONTENT = [
    'quotes " and \\ backslashes / slash',
    "tab\there, newline\nthere, carriage\rreturn",
    "\x01\x1f control characters \x7f",
    "</script><script>alert(1)</script>",
    f"emoji {EMOJI}, combining e\u0301, CJK 漢字, RTL עברית",
    "line\u2028and paragraph\u2029separators",
    "x" * 160,
]


def test_the_list_shows_each_message_exactly_as_the_item_does(app, auth, monkeypatch):
    """The list's JSON is rendered by the database, the item's by Python: they must agree."""
    stamps = [
        datetime.datetime(2030, 5, 6, 7, 8, 9),  # whole second: stored without a fraction on SQLite
        datetime.datetime(2030, 5, 6, 7, 8, 9, 5),
        datetime.datetime(1999, 12, 31, 23, 59, 59, 999999),
    ]
    created = []
    for index, content in enumerate(AWKWARD_CONTENT):
        monkeypatch.setattr(messages, "utcnow", at(stamps[index % len(stamps)]))
        created.append(app.post_json("/api/messages", {"content": content}, headers=auth).json)
    schema.Message.update(author=None).where(schema.Message.id == created[0]["id"]).execute()

    listed = app.get("/api/messages?ordering=id")
    assert listed.content_type == "application/json"
    assert [row["id"] for row in listed.json] == [message["id"] for message in created]
    for row in listed.json:
        item = app.get(f"/api/messages/{row['id']}").json  # counts a view; the list does not
        assert row == {**item, "views": item["views"] - 1}
        assert list(row) == ["id", "content", "views", "created_at", "updated_at", "author"]
    assert [row["content"] for row in listed.json] == AWKWARD_CONTENT
    assert listed.json[0]["author"] is None
    assert listed.json[1]["created_at"] == "2030-05-06T07:08:09.000005Z"
    assert listed.json[3]["updated_at"] == "2030-05-06T07:08:09.000000Z"


def test_create_timestamps_are_utc(app, auth):
    before = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    message = app.post_json("/api/messages", {"content": "hello"}, headers=auth).json
    after = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    created = datetime.datetime.strptime(message["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert before <= created <= after


def test_create_accepts_a_form_body(app, auth):
    resp = app.post("/api/messages", {"content": "from a form"}, headers=auth)
    assert resp.status_int == 201
    assert resp.json["content"] == "from a form"


def test_create_accepts_json_with_a_charset_parameter(app, auth):
    resp = app.post(
        "/api/messages",
        json.dumps({"content": "hello"}).encode(),
        headers=auth,
        content_type="application/json; charset=utf-8",
    )
    assert resp.status_int == 201


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("x", id="1-char"),
        pytest.param("x" * 160, id="160-chars"),
        pytest.param(EMOJI * 160, id="160-emoji"),
        pytest.param("\N{LATIN SMALL LETTER E WITH ACUTE}" * 160, id="160-accented"),
    ],
)
def test_create_accepts_content_of_1_to_160_code_points(app, auth, content):
    resp = app.post_json("/api/messages", {"content": content}, headers=auth, status=201)
    assert resp.json["content"] == content


def test_create_trims_surrounding_whitespace(app, auth):
    resp = app.post_json("/api/messages", {"content": " \t hello world \n "}, headers=auth)
    assert resp.json["content"] == "hello world"


def test_create_counts_length_after_trimming(app, auth):
    resp = app.post_json("/api/messages", {"content": "   " + "x" * 160 + "   "}, headers=auth, status=201)
    assert resp.json["content"] == "x" * 160


def test_create_stores_content_exactly(app, auth):
    content = "Grüße, 世界 \N{GRINNING FACE} <b>&amp;</b> 'quotes' \"double\""
    message = app.post_json("/api/messages", {"content": content}, headers=auth).json
    assert app.get(f"/api/messages/{message['id']}").json["content"] == content


@pytest.mark.parametrize("body", INVALID_CONTENT)
def test_create_rejects_invalid_content_with_a_field_error(app, auth, body):
    assert_content_error(send(app, "POST", "/api/messages", body, headers=auth))


def test_create_rejects_a_nul_character_in_a_form_body(app, auth):
    resp = app.post("/api/messages", "content=a%00b", headers=auth, content_type=FORM, expect_errors=True)
    assert_content_error(resp)


def test_create_rejects_an_empty_body_with_a_field_error(app, auth):
    assert_content_error(app.post("/api/messages", headers=auth, expect_errors=True))


def test_rejected_create_stores_nothing(app, auth):
    app.post_json("/api/messages", {"content": "x" * 161}, headers=auth, status=400)
    assert app.get("/api/messages").json == []


def test_create_without_token_is_401(app):
    resp = app.post_json("/api/messages", {"content": "hello"}, expect_errors=True)
    assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"] == "Bearer"


def test_create_without_token_stores_nothing(app):
    app.post_json("/api/messages", {"content": "hello"}, status=401)
    assert app.get("/api/messages").json == []


def test_create_with_a_garbage_token_is_401_invalid_token(app):
    resp = app.post_json("/api/messages", {"content": "hello"}, headers=bearer("not-a-jwt"), expect_errors=True)
    assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_create_without_token_and_with_a_bad_body_is_401(app):
    assert_problem(send(app, "POST", "/api/messages", {"content": ""}), 401)


def end_tokens_by_a_password_change(app: webtest.TestApp, auth: dict[str, str]) -> None:
    resp = app.post_json(
        "/api/auth/password/", {"current_password": PASSWORD, "new_password": "a brand new passphrase"}, headers=auth
    )
    assert resp.status_int == 200


@pytest.mark.parametrize("body", [{"content": ""}, {"content": "x" * 161}, {}], ids=["empty", "too-long", "missing"])
def test_create_with_an_ended_token_and_a_bad_body_is_401_not_400(app, auth, body):
    """The token is valid but its user's tokens were ended: the refusal outranks the body's error."""
    end_tokens_by_a_password_change(app, auth)
    resp = app.post_json("/api/messages", body, headers=auth, expect_errors=True)
    assert assert_problem(resp, 401)["code"] == "token_not_valid"
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


# --- get and head --------------------------------------------------------------------------------


def test_get_returns_the_message(app, create_message):
    message = create_message("hello")
    resp = app.get(f"/api/messages/{message['id']}")
    assert resp.status_int == 200
    assert resp.content_type == "application/json"
    assert set(resp.json) == MESSAGE_KEYS
    assert {k: resp.json[k] for k in ("id", "content", "author", "created_at", "updated_at")} == {
        k: message[k] for k in ("id", "content", "author", "created_at", "updated_at")
    }


def test_new_message_has_no_views(create_message):
    assert create_message()["views"] == 0


def test_get_counts_its_own_view(app, create_message):
    message = create_message()
    assert app.get(f"/api/messages/{message['id']}").json["views"] == 1


def test_each_get_counts_exactly_one_view(app, create_message):
    message = create_message()
    views = [app.get(f"/api/messages/{message['id']}").json["views"] for _ in range(3)]
    assert views == [1, 2, 3]


def test_views_are_counted_per_message(app, create_message):
    first = create_message("first")
    second = create_message("second")
    app.get(f"/api/messages/{first['id']}")
    app.get(f"/api/messages/{first['id']}")
    assert app.get(f"/api/messages/{second['id']}").json["views"] == 1


def test_get_needs_no_token(app, create_message):
    message = create_message()
    app.get(f"/api/messages/{message['id']}", status=200)


def test_get_unknown_id_is_404(app):
    assert_problem(app.get(f"/api/messages/{UNKNOWN_ID}", expect_errors=True), 404)


def test_head_item_answers_200_without_a_body(app, create_message):
    message = create_message()
    resp = app.head(f"/api/messages/{message['id']}")
    assert resp.status_int == 200
    assert resp.content_type == "application/json"
    assert resp.body == b""


def test_head_item_does_not_count_a_view(app, create_message):
    message = create_message()
    app.head(f"/api/messages/{message['id']}")
    app.head(f"/api/messages/{message['id']}")
    assert app.get(f"/api/messages/{message['id']}").json["views"] == 1


def test_head_unknown_item_is_404(app):
    assert app.head(f"/api/messages/{UNKNOWN_ID}", expect_errors=True).status_int == 404


@pytest.mark.parametrize("path", ["/api/messages", "/api/messages/"])
def test_head_list_answers_like_get(app, create_message, path):
    create_message()
    get = app.get(path)
    resp = app.head(path, expect_errors=True)
    assert resp.status_int == 200
    assert resp.content_type == get.content_type
    assert resp.body == b""


# --- update (PUT and PATCH) ----------------------------------------------------------------------


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_replaces_the_content(app, auth, create_message, method):
    message = create_message("before")
    resp = send(app, method, f"/api/messages/{message['id']}", {"content": "after"}, headers=auth)
    assert resp.status_int == 200
    assert set(resp.json) == MESSAGE_KEYS
    assert resp.json["id"] == message["id"]
    assert resp.json["content"] == "after"


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_is_stored(app, auth, create_message, method):
    message = create_message("before")
    send(app, method, f"/api/messages/{message['id']}", {"content": "after"}, headers=auth)
    assert app.get(f"/api/messages/{message['id']}").json["content"] == "after"


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_resets_views_to_zero(app, auth, create_message, method):
    message = create_message()
    for _ in range(3):
        app.get(f"/api/messages/{message['id']}")
    resp = send(app, method, f"/api/messages/{message['id']}", {"content": "after"}, headers=auth)
    assert resp.json["views"] == 0


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_views_count_again_from_zero_after_update(app, auth, create_message, method):
    message = create_message()
    app.get(f"/api/messages/{message['id']}")
    send(app, method, f"/api/messages/{message['id']}", {"content": "after"}, headers=auth)
    assert app.get(f"/api/messages/{message['id']}").json["views"] == 1


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_sets_updated_at_to_now(app, auth, create_message, monkeypatch, method):
    message = create_message()
    monkeypatch.setattr(messages, "utcnow", at(datetime.datetime(2031, 2, 3, 4, 5, 6, 789012)))
    resp = send(app, method, f"/api/messages/{message['id']}", {"content": "after"}, headers=auth)
    assert resp.json["updated_at"] == "2031-02-03T04:05:06.789012Z"


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_moves_updated_at_forward_on_the_real_clock(app, auth, create_message, monkeypatch, method):
    # Created at a fixed moment in the past, updated on the real clock: an update that
    # kept the old timestamp (or wrote created_at again) would answer the old value.
    with monkeypatch.context() as clock:
        clock.setattr(messages, "utcnow", at(datetime.datetime(2020, 1, 2, 3, 4, 5, 678901)))
        message = create_message()
    assert message["updated_at"] == "2020-01-02T03:04:05.678901Z"
    resp = send(app, method, f"/api/messages/{message['id']}", {"content": "after"}, headers=auth)
    assert TIMESTAMP.match(resp.json["updated_at"])
    assert resp.json["updated_at"] > message["updated_at"]
    assert resp.json["created_at"] == message["created_at"]


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_never_changes_created_at(app, auth, create_message, monkeypatch, method):
    message = create_message()
    monkeypatch.setattr(messages, "utcnow", at(datetime.datetime(2031, 2, 3, 4, 5, 6, 789012)))
    resp = send(app, method, f"/api/messages/{message['id']}", {"content": "after"}, headers=auth)
    assert resp.json["created_at"] == message["created_at"]
    assert app.get(f"/api/messages/{message['id']}").json["created_at"] == message["created_at"]


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_keeps_the_author(app, auth, create_message, method):
    message = create_message()
    resp = send(app, method, f"/api/messages/{message['id']}", {"content": "after"}, headers=auth)
    assert resp.json["author"] == "alice"


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_with_the_same_content_succeeds(app, auth, create_message, method):
    message = create_message("same")
    resp = send(app, method, f"/api/messages/{message['id']}", {"content": "same"}, headers=auth)
    assert resp.status_int == 200
    assert resp.json["content"] == "same"


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_trims_surrounding_whitespace(app, auth, create_message, method):
    message = create_message()
    resp = send(app, method, f"/api/messages/{message['id']}", {"content": "  after \n"}, headers=auth)
    assert resp.json["content"] == "after"


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_accepts_160_characters(app, auth, create_message, method):
    message = create_message()
    resp = send(app, method, f"/api/messages/{message['id']}", {"content": "y" * 160}, headers=auth)
    assert resp.status_int == 200
    assert resp.json["content"] == "y" * 160


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_accepts_a_form_body(app, auth, create_message, method):
    message = create_message()
    resp = app.request(
        f"/api/messages/{message['id']}",
        method=method,
        body=b"content=from+a+form",
        headers=auth,
        content_type=FORM,
    )
    assert resp.json["content"] == "from a form"


@pytest.mark.parametrize("method", UPDATE_METHODS)
@pytest.mark.parametrize("body", INVALID_CONTENT)
def test_update_rejects_invalid_content_with_a_field_error(app, auth, create_message, method, body):
    message = create_message()
    assert_content_error(send(app, method, f"/api/messages/{message['id']}", body, headers=auth))


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_without_a_body_is_a_field_error(app, auth, create_message, method):
    message = create_message()
    assert_content_error(send(app, method, f"/api/messages/{message['id']}", headers=auth))


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_rejected_update_leaves_the_message_unchanged(app, auth, create_message, method):
    message = create_message("before")
    app.get(f"/api/messages/{message['id']}")
    send(app, method, f"/api/messages/{message['id']}", {"content": "z" * 161}, headers=auth)
    stored = app.get(f"/api/messages/{message['id']}").json
    assert stored["content"] == "before"
    assert stored["views"] == 2
    assert stored["updated_at"] == message["updated_at"]


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_without_token_is_401(app, create_message, method):
    message = create_message("before")
    resp = send(app, method, f"/api/messages/{message['id']}", {"content": "after"})
    assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_without_token_changes_nothing(app, create_message, method):
    message = create_message("before")
    send(app, method, f"/api/messages/{message['id']}", {"content": "after"})
    assert app.get(f"/api/messages/{message['id']}").json["content"] == "before"


# --- delete --------------------------------------------------------------------------------------


def test_delete_answers_204_with_an_empty_body(app, auth, create_message):
    message = create_message()
    resp = app.delete(f"/api/messages/{message['id']}", headers=auth)
    assert resp.status_int == 204
    assert resp.body == b""


def test_deleted_message_is_gone(app, auth, create_message):
    message = create_message()
    app.delete(f"/api/messages/{message['id']}", headers=auth)
    assert_problem(app.get(f"/api/messages/{message['id']}", expect_errors=True), 404)


def test_deleted_message_leaves_the_list(app, auth, create_message):
    kept = create_message("kept")
    gone = create_message("gone")
    app.delete(f"/api/messages/{gone['id']}", headers=auth)
    assert [m["id"] for m in app.get("/api/messages").json] == [kept["id"]]


def test_deleting_twice_is_404(app, auth, create_message):
    message = create_message()
    app.delete(f"/api/messages/{message['id']}", headers=auth)
    assert_problem(app.delete(f"/api/messages/{message['id']}", headers=auth, expect_errors=True), 404)


def test_delete_without_token_is_401(app, create_message):
    message = create_message()
    resp = app.delete(f"/api/messages/{message['id']}", expect_errors=True)
    assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"] == "Bearer"


def test_delete_without_token_keeps_the_message(app, create_message):
    message = create_message()
    app.delete(f"/api/messages/{message['id']}", expect_errors=True)
    app.get(f"/api/messages/{message['id']}", status=200)


# --- ids and the order of checks -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_unknown_id_is_404_for_every_method(app, auth, create_message, method):
    create_message()
    resp = send(app, method, f"/api/messages/{UNKNOWN_ID}", {"content": "valid"}, headers=auth)
    assert_problem(resp, 404)


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("message_id", [*BAD_IDS, "2147483647"])
def test_impossible_ids_are_404(app, auth, create_message, method, message_id):
    create_message()
    resp = send(app, method, f"/api/messages/{message_id}", {"content": "valid"}, headers=auth)
    assert_problem(resp, 404)


@pytest.mark.parametrize("message_id", BAD_IDS)
def test_head_with_impossible_id_is_404(app, message_id):
    assert app.head(f"/api/messages/{message_id}", expect_errors=True).status_int == 404


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_write_without_token_to_unknown_id_is_401(app, method):
    assert_problem(send(app, method, f"/api/messages/{UNKNOWN_ID}", {"content": "valid"}), 401)


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_write_with_bad_token_to_unknown_id_is_401(app, method):
    resp = send(app, method, f"/api/messages/{UNKNOWN_ID}", {"content": "x"}, headers=bearer("bad"))
    assert_problem(resp, 401)


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_write_without_token_to_impossible_id_is_401(app, method):
    assert_problem(send(app, method, "/api/messages/abc", {"content": "valid"}), 401)


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_without_token_or_body_to_unknown_id_is_401(app, method):
    assert_problem(send(app, method, f"/api/messages/{UNKNOWN_ID}"), 401)


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_without_body_to_unknown_id_is_404(app, auth, method):
    assert_problem(send(app, method, f"/api/messages/{UNKNOWN_ID}", headers=auth), 404)


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_with_invalid_content_to_unknown_id_is_404(app, auth, method):
    assert_problem(send(app, method, f"/api/messages/{UNKNOWN_ID}", {"content": "x" * 161}, headers=auth), 404)


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_with_malformed_json_to_unknown_id_is_404(app, auth, method):
    resp = send(app, method, f"/api/messages/{UNKNOWN_ID}", body=b"{", content_type="application/json", headers=auth)
    assert_problem(resp, 404)


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_with_unsupported_content_type_to_unknown_id_is_404(app, auth, method):
    resp = send(app, method, f"/api/messages/{UNKNOWN_ID}", body=b"hi", content_type="text/plain", headers=auth)
    assert_problem(resp, 404)


# --- methods -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/messages", "/api/messages/"])
@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_collection_refuses_item_methods_with_405(app, auth, path, method):
    resp = send(app, method, path, {"content": "valid"}, headers=auth)
    assert_problem(resp, 405)
    assert {"GET", "POST"} <= allowed(resp)
    assert method not in allowed(resp)


@pytest.mark.parametrize("path", ["/api/messages", "/api/messages/"])
@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_collection_refuses_item_methods_with_405_even_without_token(app, path, method):
    assert_problem(send(app, method, path, {"content": "valid"}), 405)


@pytest.mark.parametrize("path", ["/api/messages/{id}", "/api/messages/{id}/"])
def test_item_refuses_post_with_405(app, auth, create_message, path):
    message = create_message()
    resp = send(app, "POST", path.format(id=message["id"]), {"content": "valid"}, headers=auth)
    assert_problem(resp, 405)
    assert {"GET", "PUT", "PATCH", "DELETE"} <= allowed(resp)
    assert "POST" not in allowed(resp)


def test_item_refuses_post_without_token_with_405_not_401(app, create_message):
    message = create_message()
    resp = send(app, "POST", f"/api/messages/{message['id']}", {"content": "valid"})
    assert_problem(resp, 405)
    assert "Allow" in resp.headers


def test_post_to_unknown_item_is_405(app):
    assert_problem(send(app, "POST", f"/api/messages/{UNKNOWN_ID}", {"content": "valid"}), 405)


def test_options_on_collection_lists_allowed_methods(app):
    resp = app.options("/api/messages")
    assert resp.status_int == 200
    assert {"GET", "POST"} <= allowed(resp)
    assert not {"PUT", "PATCH", "DELETE"} & allowed(resp)


def test_options_on_item_lists_allowed_methods(app, create_message):
    message = create_message()
    resp = app.options(f"/api/messages/{message['id']}")
    assert resp.status_int == 200
    assert {"GET", "PUT", "PATCH", "DELETE"} <= allowed(resp)
    assert "POST" not in allowed(resp)


# --- trailing slashes ----------------------------------------------------------------------------


def test_list_path_works_with_trailing_slash(app, create_message):
    message = create_message()
    assert [m["id"] for m in app.get("/api/messages/").json] == [message["id"]]


def test_create_works_with_trailing_slash(app, auth):
    resp = app.post_json("/api/messages/", {"content": "slash"}, headers=auth)
    assert resp.status_int == 201
    assert app.get(f"/api/messages/{resp.json['id']}").json["content"] == "slash"


def test_item_get_works_with_trailing_slash(app, create_message):
    message = create_message()
    assert app.get(f"/api/messages/{message['id']}/").json["id"] == message["id"]


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_item_update_works_with_trailing_slash(app, auth, create_message, method):
    message = create_message()
    resp = send(app, method, f"/api/messages/{message['id']}/", {"content": "slash"}, headers=auth)
    assert resp.status_int == 200
    assert resp.json["content"] == "slash"


def test_item_delete_works_with_trailing_slash(app, auth, create_message):
    message = create_message()
    assert app.delete(f"/api/messages/{message['id']}/", headers=auth).status_int == 204


# --- request bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/xml", "multipart/form-data; boundary=x", "application/octet-stream"],
)
def test_unsupported_content_type_is_415(app, auth, content_type):
    resp = send(app, "POST", "/api/messages", body=b"content=hello", content_type=content_type, headers=auth)
    assert_problem(resp, 415)


def test_body_without_content_type_is_415(app, auth):
    resp = app.request("/api/messages", method="POST", body=b'{"content": "hello"}', headers=auth, expect_errors=True)
    assert resp.request.content_type == ""
    assert_problem(resp, 415)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"{", id="unterminated"),
        pytest.param(b'{"content": }', id="missing-value"),
        pytest.param(b"content=hello", id="form-as-json"),
        pytest.param(b"{'content': 'hello'}", id="single-quotes"),
        pytest.param(b'{"content": "\xff"}', id="not-utf8"),
        pytest.param(b'{"content": NaN}', id="nan"),
    ],
)
def test_malformed_json_is_400(app, auth, raw):
    assert_problem(send(app, "POST", "/api/messages", body=raw, content_type="application/json", headers=auth), 400)


@pytest.mark.parametrize("raw", [b"[]", b'[{"content": "hello"}]', b'"hello"', b"42", b"true", b"null"])
def test_json_that_is_not_an_object_is_400(app, auth, raw):
    assert_problem(send(app, "POST", "/api/messages", body=raw, content_type="application/json", headers=auth), 400)


def test_body_over_64_kib_is_413(app, auth):
    raw = json.dumps({"content": "x" * MAX_BODY}).encode()
    assert len(raw) > MAX_BODY
    assert_problem(send(app, "POST", "/api/messages", body=raw, content_type="application/json", headers=auth), 413)


def test_body_one_byte_over_64_kib_is_413(app, auth):
    prefix, suffix = b'{"content": "', b'"}'
    raw = prefix + b"x" * (MAX_BODY + 1 - len(prefix) - len(suffix)) + suffix
    assert len(raw) == MAX_BODY + 1
    assert_problem(send(app, "POST", "/api/messages", body=raw, content_type="application/json", headers=auth), 413)


def test_body_of_exactly_64_kib_is_read(app, auth):
    prefix, suffix = b'{"content": "', b'"}'
    raw = prefix + b"x" * (MAX_BODY - len(prefix) - len(suffix)) + suffix
    assert len(raw) == MAX_BODY
    assert_content_error(send(app, "POST", "/api/messages", body=raw, content_type="application/json", headers=auth))


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_body_over_64_kib_is_413(app, auth, create_message, method):
    message = create_message()
    raw = json.dumps({"content": "x" * MAX_BODY}).encode()
    resp = send(app, method, f"/api/messages/{message['id']}", body=raw, content_type="application/json", headers=auth)
    assert_problem(resp, 413)


# --- problem details -----------------------------------------------------------------------------


ERRORS = [
    pytest.param(lambda app, auth: send(app, "POST", "/api/messages", {"content": ""}, headers=auth), 400, id="400"),
    pytest.param(lambda app, auth: send(app, "POST", "/api/messages", {"content": "x"}), 401, id="401"),
    pytest.param(lambda app, auth: send(app, "GET", "/api/messages/999"), 404, id="404-item"),
    pytest.param(lambda app, auth: send(app, "GET", "/api/nothing-here"), 404, id="404-route"),
    pytest.param(lambda app, auth: send(app, "DELETE", "/api/messages", headers=auth), 405, id="405"),
    pytest.param(
        lambda app, auth: send(
            app, "POST", "/api/messages", body=b"x" * (MAX_BODY + 1), content_type=FORM, headers=auth
        ),
        413,
        id="413",
    ),
    pytest.param(
        lambda app, auth: send(app, "POST", "/api/messages", body=b"hi", content_type="text/plain", headers=auth),
        415,
        id="415",
    ),
]


@pytest.mark.parametrize(("request_", "status"), ERRORS)
def test_errors_are_problem_details(app, auth, request_, status):
    assert_problem(request_(app, auth), status)


def test_validation_error_names_the_field_with_a_list_of_messages(app, auth):
    body = send(app, "POST", "/api/messages", {"content": ""}, headers=auth).json
    assert isinstance(body["errors"], dict)
    assert isinstance(body["errors"]["content"], list)
    assert all(isinstance(message, str) for message in body["errors"]["content"])


@pytest.mark.parametrize(("request_", "status"), ERRORS)
def test_error_responses_carry_nosniff_and_request_id(app, auth, request_, status):
    resp = request_(app, auth)
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Request-ID"]


# --- headers every response carries --------------------------------------------------------------


SUCCESSES = [
    pytest.param(lambda app, auth, mid: app.get("/api/messages"), id="list"),
    pytest.param(lambda app, auth, mid: app.get(f"/api/messages/{mid}"), id="get"),
    pytest.param(lambda app, auth, mid: app.head(f"/api/messages/{mid}"), id="head"),
    pytest.param(lambda app, auth, mid: app.options("/api/messages"), id="options"),
    pytest.param(lambda app, auth, mid: app.post_json("/api/messages", {"content": "x"}, headers=auth), id="create"),
    pytest.param(
        lambda app, auth, mid: app.put_json(f"/api/messages/{mid}", {"content": "y"}, headers=auth), id="update"
    ),
    pytest.param(lambda app, auth, mid: app.delete(f"/api/messages/{mid}", headers=auth), id="delete"),
]


@pytest.mark.parametrize("request_", SUCCESSES)
def test_every_response_carries_nosniff(app, auth, create_message, request_):
    resp = request_(app, auth, create_message()["id"])
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("request_", SUCCESSES)
def test_every_response_carries_a_request_id(app, auth, create_message, request_):
    resp = request_(app, auth, create_message()["id"])
    assert resp.headers["X-Request-ID"].strip()


def test_generated_request_ids_differ(app):
    ids = {app.get("/api/messages").headers["X-Request-ID"] for _ in range(3)}
    assert len(ids) == 3


@pytest.mark.parametrize("request_id", ["abc-123", "4f9c2a7e-0d1b-4c5e-9a2f-6b8d3e1f0a7c", "req_1.2:3", "x" * 128])
def test_sane_request_id_is_echoed(app, request_id):
    assert app.get("/api/messages", headers={"X-Request-ID": request_id}).headers["X-Request-ID"] == request_id


@pytest.mark.parametrize(
    "request_id",
    [
        pytest.param("x" * 300, id="300-chars"),
        pytest.param("has spaces in it", id="spaces"),
        pytest.param("<script>", id="markup"),
        pytest.param("a;b=c", id="separators"),
    ],
)
def test_insane_request_id_is_replaced(app, request_id):
    echoed = app.get("/api/messages", headers={"X-Request-ID": request_id}).headers["X-Request-ID"]
    assert echoed
    assert echoed != request_id
    assert " " not in echoed
    assert len(echoed) <= 128


def test_request_id_is_echoed_on_errors(app):
    resp = app.get(f"/api/messages/{UNKNOWN_ID}", headers={"X-Request-ID": "trace-404"}, status=404)
    assert resp.headers["X-Request-ID"] == "trace-404"


# --- CORS ----------------------------------------------------------------------------------------

ORIGIN = "https://client.example"


def test_cors_allows_every_origin_by_default(app):
    resp = app.get("/api/messages", headers={"Origin": ORIGIN})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


def test_cors_does_not_allow_credentials(app):
    resp = app.get("/api/messages", headers={"Origin": ORIGIN})
    assert resp.headers.get("Access-Control-Allow-Credentials", "false").lower() != "true"


def test_cors_answers_error_responses_too(app):
    resp = app.get(f"/api/messages/{UNKNOWN_ID}", headers={"Origin": ORIGIN}, status=404)
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


def test_cors_preflight_allows_the_requested_method(app):
    resp = app.options(
        "/api/messages",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert resp.status_int in (200, 204)
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in {m.strip() for m in resp.headers["Access-Control-Allow-Methods"].split(",")}


def test_cors_preflight_allows_authorization_and_content_type_headers(app, create_message):
    message = create_message()
    resp = app.options(
        f"/api/messages/{message['id']}",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    allowed_headers = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed_headers
    assert "PUT" in {m.strip() for m in resp.headers["Access-Control-Allow-Methods"].split(",")}


def test_cors_preflight_needs_no_token(app):
    # POST /api/messages needs a Bearer token; its preflight (which never carries one) must not.
    resp = app.options(
        "/api/messages",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
        expect_errors=True,
    )
    assert resp.status_int == 200
    assert resp.body == b""
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert [m.strip() for m in resp.headers["Access-Control-Allow-Methods"].split(",")] == ["GET", "HEAD", "POST"]
    assert resp.headers["Access-Control-Max-Age"] == "86400"
    assert "WWW-Authenticate" not in resp.headers


def test_cors_exposes_location_and_request_id(app):
    resp = app.get("/api/messages", headers={"Origin": ORIGIN})
    exposed = {h.strip().lower() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"location", "x-request-id"} <= exposed


def test_cors_can_be_turned_off(make_app):
    app = make_app(cors_allow_origins=None)
    resp = app.get("/api/messages", headers={"Origin": ORIGIN})
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_cors_turned_off_sends_no_preflight_headers(make_app):
    app = make_app(cors_allow_origins=None)
    resp = app.options("/api/messages", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert "Access-Control-Allow-Methods" not in resp.headers


def test_cors_narrowed_allows_a_listed_origin(make_app):
    app = make_app(cors_allow_origins=(ORIGIN, "https://other.example"))
    resp = app.get("/api/messages", headers={"Origin": ORIGIN})
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_cors_narrowed_refuses_an_unlisted_origin(make_app):
    app = make_app(cors_allow_origins=(ORIGIN,))
    resp = app.get("/api/messages", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers


def _vary(resp) -> set[str]:
    return {v.strip().lower() for v in resp.headers.get("Vary", "").split(",") if v.strip()}


@pytest.mark.parametrize("origin", [ORIGIN, "https://evil.example", None])
def test_cors_narrowed_varies_on_origin(make_app, origin):
    # Listed, unlisted or absent: a cache must not reuse one of these answers for another origin.
    app = make_app(cors_allow_origins=(ORIGIN,))
    resp = app.get("/api/messages", headers={"Origin": origin} if origin else {})
    assert "origin" in _vary(resp)


def test_cors_narrowed_varies_on_origin_for_errors_and_preflights(make_app):
    app = make_app(cors_allow_origins=(ORIGIN,))
    missing = app.get(f"/api/messages/{UNKNOWN_ID}", headers={"Origin": ORIGIN}, status=404)
    preflight = app.options("/api/messages", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert "origin" in _vary(missing)
    assert "origin" in _vary(preflight)


# --- the old service's scenario, end to end ------------------------------------------------------


def test_message_lifecycle(app, auth):
    created = app.post_json("/api/messages", {"content": "hello"}, headers=auth, status=201).json
    path = f"/api/messages/{created['id']}"
    assert app.get(path).json["views"] == 1
    updated = app.patch_json(path, {"content": "hello again"}, headers=auth).json
    assert (updated["content"], updated["views"]) == ("hello again", 0)
    app.delete(path, headers=auth, status=204)
    app.get(path, status=404)
    assert app.get("/api/messages").json == []


# --- the token's user, checked inside the INSERT ----------------------------------------------------


def test_a_user_with_the_last_id_and_the_last_token_version_still_creates(app, database_url):
    """Ids and token versions are 32-bit columns: 2**31 - 1 of each is a user like any other."""
    last = MAX_ID
    set_next_user_id(database_url, last)
    assert register(app, "last")["id"] == last
    schema.User.update(token_version=last).where(schema.User.id == last).execute()
    access = obtain_tokens(app, "last")["access"]
    created = app.post_json("/api/messages", {"content": "from the end"}, headers=bearer(access))
    assert created.status_int == 201 and created.json["author"] == "last"


def test_a_deactivated_users_token_creates_nothing(app, auth):
    schema.User.update(is_active=False).where(schema.User.username == "alice").execute()
    resp = app.post_json("/api/messages", {"content": "ghost"}, headers=auth, expect_errors=True)
    assert_problem(resp, 401)
    assert schema.Message.select().count() == 0
