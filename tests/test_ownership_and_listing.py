"""Who may change a message, and how the message list filters, orders and pages (on both databases)."""

from __future__ import annotations

import base64
import datetime
import json
import re
from urllib.parse import parse_qs, urlencode, urlsplit

import peewee
import pytest
from conftest import assert_problem, bearer, obtain_tokens, register

from msgapi.store import schema, users

WRITE_METHODS = ["PUT", "PATCH", "DELETE"]
UPDATE_METHODS = ["PUT", "PATCH"]
MISSING_ID = 987654
ORDERINGS = ["updated_at", "-updated_at", "created_at", "-created_at", "views", "-views", "id", "-id"]
# Timestamps with and without microseconds: SQLite stores the two differently.
BASE_TIME = datetime.datetime(2024, 5, 1, 12, 0, 0)
NEXT_LINK = re.compile(r'^<([^>]*)>;\s*rel="next"$')


# --- helpers -----------------------------------------------------------------------------------------------


def login(app, username: str, *, staff: bool = False) -> dict[str, str]:
    """Register ``username`` (staff if asked) and return Bearer headers for it."""
    register(app, username)
    if staff:
        schema.User.update(is_staff=True).where(schema.User.username_key == username.casefold()).execute()
    return bearer(obtain_tokens(app, username)["access"])


def user_id(username: str) -> int:
    return users.by_username(username).id


def write(app, method: str, message_id, headers=None, body=None):
    """PUT/PATCH/DELETE a message, never raising on an error status."""
    url = f"/api/messages/{message_id}"
    if method == "DELETE":
        return app.delete(url, headers=headers or {}, expect_errors=True)
    call = app.put_json if method == "PUT" else app.patch_json
    return call(url, {"content": "changed"} if body is None else body, headers=headers or {}, expect_errors=True)


def stored_content(message_id: int) -> str:
    return schema.Message.get_by_id(message_id).content


def insert_messages(rows: list[dict]) -> list[int]:
    """Insert messages directly (fast); each row may give any column. Returns the new ids in order."""
    full = []
    for index, row in enumerate(rows):
        stamp = BASE_TIME + datetime.timedelta(seconds=index, microseconds=index % 2 * 250_000)
        full.append({"content": f"message {index}", "views": 0, "created_at": stamp, "updated_at": stamp} | row)
    before = schema.Message.select(peewee.fn.MAX(schema.Message.id)).scalar() or 0
    for start in range(0, len(full), 100):
        schema.Message.insert_many(full[start : start + 100]).execute()
    ids = [m.id for m in schema.Message.select(schema.Message.id).where(schema.Message.id > before)]
    return sorted(ids)


def insert_n(count: int, author: int | None = None) -> list[int]:
    return insert_messages([{"author": author} for _ in range(count)])


def next_url(resp) -> str | None:
    links = resp.headers.getall("Link")
    if not links:
        return None
    assert len(links) == 1, links
    match = NEXT_LINK.match(links[0])
    assert match, links[0]
    return match.group(1)


def walk(app, url: str, max_pages: int = 200) -> list[list[dict]]:
    """Follow ``rel="next"`` from ``url``; every page's body."""
    pages = []
    while url is not None:
        assert len(pages) < max_pages, "the Link chain does not end"
        resp = app.get(url)
        pages.append(resp.json)
        url = next_url(resp)
    return pages


def expected_ids(ordering: str, ids: list[int] | None = None) -> list[int]:
    """Ids in ``ordering``, ties broken by id in the same direction, computed from the stored rows."""
    field = ordering.lstrip("-")
    query = schema.Message.select()
    if ids is not None:
        query = query.where(schema.Message.id.in_(ids))
    rows = [(getattr(m, field), m.id) for m in query]
    rows.sort(reverse=ordering.startswith("-"))
    return [row[1] for row in rows]


def cursor_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["cursor"][0]


def encode(document) -> str:
    raw = json.dumps(document).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def list_error(app, query: str, name: str) -> dict:
    body = assert_problem(app.get(f"/api/messages?{query}", expect_errors=True), 400)
    assert name in body["errors"], body
    return body


# --- ownership ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_author_may_update_their_message(app, auth, create_message, method):
    message = create_message("mine")
    resp = write(app, method, message["id"], auth)
    assert resp.status_int == 200
    assert resp.json["content"] == "changed"


def test_author_may_delete_their_message(app, auth, create_message):
    message = create_message("mine")
    assert write(app, "DELETE", message["id"], auth).status_int == 204
    assert not schema.Message.select().where(schema.Message.id == message["id"]).exists()


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_other_user_gets_403_problem(app, create_message, method):
    message = create_message("alice's")
    bob = login(app, "bob")
    body = assert_problem(write(app, method, message["id"], bob), 403)
    assert body["title"] == "Forbidden"


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_forbidden_write_leaves_the_message_unchanged(app, create_message, method):
    message = create_message("alice's")
    bob = login(app, "bob")
    write(app, method, message["id"], bob)
    assert stored_content(message["id"]) == "alice's"


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_staff_may_update_any_message(app, create_message, method):
    message = create_message("alice's")
    staff = login(app, "carol", staff=True)
    resp = write(app, method, message["id"], staff)
    assert resp.status_int == 200
    assert resp.json["content"] == "changed"
    # The message keeps its author: staff edit it, they do not take it over.
    assert resp.json["author"] == "alice"


def test_staff_may_delete_any_message(app, create_message):
    message = create_message("alice's")
    staff = login(app, "carol", staff=True)
    assert write(app, "DELETE", message["id"], staff).status_int == 204


def test_staff_flag_takes_effect_for_an_already_issued_token(app, create_message):
    message = create_message("alice's")
    carol = login(app, "carol")
    schema.User.update(is_staff=True).where(schema.User.username_key == "carol").execute()
    assert write(app, "PATCH", message["id"], carol).status_int == 200


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_authorless_message_is_forbidden_to_its_former_author(app, auth, create_message, method):
    message = create_message("orphan")
    schema.Message.update(author=None).where(schema.Message.id == message["id"]).execute()
    assert_problem(write(app, method, message["id"], auth), 403)


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_authorless_message_is_forbidden_to_other_users(app, create_message, method):
    message = create_message("orphan")
    schema.Message.update(author=None).where(schema.Message.id == message["id"]).execute()
    bob = login(app, "bob")
    assert_problem(write(app, method, message["id"], bob), 403)


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_authorless_message_may_be_changed_by_staff(app, create_message, method):
    message = create_message("orphan")
    schema.Message.update(author=None).where(schema.Message.id == message["id"]).execute()
    staff = login(app, "carol", staff=True)
    assert write(app, method, message["id"], staff).status_int in (200, 204)


@pytest.mark.parametrize("method", WRITE_METHODS)
@pytest.mark.parametrize("target", ["existing", "missing", "malformed"])
def test_no_token_is_401_before_404_or_403(app, create_message, method, target):
    message = create_message("alice's")
    message_id = {"existing": message["id"], "missing": MISSING_ID, "malformed": "abc"}[target]
    body = assert_problem(write(app, method, message_id, body={"content": ""}), 401)
    assert body["title"] == "Not authenticated"


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_bad_token_is_401_before_404(app, method):
    assert_problem(write(app, method, MISSING_ID, bearer("not.a.token"), body={}), 401)


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_missing_message_is_404_before_403_and_body_errors(app, auth, method):
    bob = login(app, "bob")
    assert_problem(write(app, method, MISSING_ID, bob, body={"content": ""}), 404)


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_non_author_with_a_bad_body_is_403_not_400(app, create_message, method):
    message = create_message("alice's")
    bob = login(app, "bob")
    assert_problem(write(app, method, message["id"], bob, body={"content": ""}), 403)


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_author_with_a_bad_body_is_400(app, auth, create_message, method):
    message = create_message("alice's")
    body = assert_problem(write(app, method, message["id"], auth, body={"content": ""}), 400)
    assert "content" in body["errors"]


def test_staff_writing_to_a_missing_message_is_404(app):
    staff = login(app, "carol", staff=True)
    assert_problem(write(app, "PUT", MISSING_ID, staff), 404)


# --- listing: body and page size ---------------------------------------------------------------------------


def test_list_body_is_a_plain_json_array(app, auth, create_message):
    create_message("one")
    create_message("two")
    resp = app.get("/api/messages?limit=1")
    assert resp.content_type == "application/json"
    assert isinstance(resp.json, list)
    assert len(resp.json) == 1
    assert set(resp.json[0]) == {"id", "content", "views", "created_at", "updated_at", "author"}


def test_empty_list_is_an_empty_array_without_link(app):
    resp = app.get("/api/messages")
    assert resp.json == []
    assert next_url(resp) is None


def test_default_page_size_is_100(app, config):
    assert config.list_page_size == 100
    insert_n(101)
    resp = app.get("/api/messages")
    assert len(resp.json) == 100
    assert next_url(resp) is not None


def test_second_default_page_holds_the_rest_without_link(app):
    ids = insert_n(101)
    resp = app.get(next_url(app.get("/api/messages")))
    assert [m["id"] for m in resp.json] == [ids[0]]
    assert next_url(resp) is None


def test_default_page_size_comes_from_config(make_app):
    app = make_app(list_page_size=3)
    insert_n(5)
    resp = app.get("/api/messages")
    assert len(resp.json) == 3
    assert next_url(resp) is not None


@pytest.mark.parametrize("limit", [1, 7, 1000])
def test_limit_sets_the_page_size(app, limit):
    insert_n(8)
    assert len(app.get(f"/api/messages?limit={limit}").json) == min(limit, 8)


def test_limit_1000_returns_more_than_the_default_page(app):
    insert_n(150)
    resp = app.get("/api/messages?limit=1000")
    assert len(resp.json) == 150
    assert next_url(resp) is None


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "abc", "", "1.5", "+5", "1e2", "99999999999999999999", "١٢"])
def test_invalid_limit_is_400_naming_limit(app, limit):
    insert_n(3)
    body = list_error(app, urlencode({"limit": limit}), "limit")
    assert "limit" in body["detail"]


def test_limit_above_1000_is_refused_not_clamped(app):
    insert_n(3)
    resp = app.get("/api/messages?limit=1001", expect_errors=True)
    assert resp.status_int == 400


# --- listing: the next-page link ---------------------------------------------------------------------------


def test_no_link_when_everything_fits(app):
    insert_n(5)
    assert next_url(app.get("/api/messages?limit=5")) is None


def test_no_link_on_an_exactly_full_last_page(app):
    insert_n(10)
    second = app.get(next_url(app.get("/api/messages?limit=5")))
    assert len(second.json) == 5
    assert next_url(second) is None


def test_next_link_is_a_relative_url_to_the_list(app):
    insert_n(3)
    url = next_url(app.get("/api/messages?limit=2"))
    assert url.startswith("/")
    assert not url.startswith("//")
    assert urlsplit(url).path == "/api/messages"


def test_next_link_carries_every_other_parameter_and_a_cursor(app, auth, create_message):
    for index in range(3):
        create_message(f"needle {index}")
    params = {"author": "alice", "search": "needle", "ordering": "-views", "limit": "1", "format": "json"}
    url = next_url(app.get("/api/messages?" + urlencode(params)))
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert {name: values for name, values in query.items() if name != "cursor"} == {
        name: [value] for name, value in params.items()
    }
    assert len(query["cursor"]) == 1 and query["cursor"][0]


def test_next_link_replaces_the_cursor_instead_of_repeating_it(app):
    insert_n(5)
    second = next_url(app.get("/api/messages?limit=2"))
    third = next_url(app.get(second))
    assert len(parse_qs(urlsplit(third).query)["cursor"]) == 1


def test_next_link_keeps_non_ascii_search_intact(app, auth, create_message):
    for _ in range(3):
        create_message("un été chaud")
    url = next_url(app.get("/api/messages?" + urlencode({"search": "été", "limit": "1"})))
    assert parse_qs(urlsplit(url).query)["search"] == ["été"]
    assert len(app.get(url).json) == 1


def test_next_cursor_header_is_the_cursor_in_the_link(app):
    insert_n(5)
    resp = app.get("/api/messages?limit=2&ordering=id")
    assert resp.headers.getall("X-Next-Cursor") == [cursor_of(next_url(resp))]
    head = app.head("/api/messages?limit=2&ordering=id")
    assert head.headers["X-Next-Cursor"] == resp.headers["X-Next-Cursor"]


def test_following_next_cursor_walks_every_message_once(app):
    ids = insert_n(7)
    seen, cursor = [], ""
    while cursor is not None:
        resp = app.get("/api/messages", {"limit": 3, "ordering": "id", "cursor": cursor})
        seen += [message["id"] for message in resp.json]
        cursor = resp.headers.get("X-Next-Cursor")
        assert (cursor is None) == (next_url(resp) is None)
    assert seen == ids


def test_next_cursor_is_exposed_to_browsers(app):
    insert_n(2)
    resp = app.get("/api/messages?limit=1", headers={"Origin": "https://app.example"})
    exposed = {name.strip().lower() for name in resp.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"link", "x-next-cursor"} <= exposed


# --- listing: walking pages --------------------------------------------------------------------------------


def _varied_messages() -> list[int]:
    """33 messages whose orderings disagree with id order and have ties within and across pages."""
    rows = []
    for index in range(33):
        created = BASE_TIME + datetime.timedelta(seconds=(index * 7) % 5)
        updated = BASE_TIME + datetime.timedelta(minutes=(index * 5) % 4, microseconds=(index % 3) * 10)
        rows.append({"created_at": created, "updated_at": updated, "views": (index * 13) % 4})
    return insert_messages(rows)


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_walking_links_visits_every_message_once_in_order(app, ordering):
    _varied_messages()
    pages = walk(app, f"/api/messages?ordering={ordering}&limit=4")
    seen = [m["id"] for page in pages for m in page]
    assert seen == expected_ids(ordering)


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_walking_links_yields_no_duplicates(app, ordering):
    ids = _varied_messages()
    pages = walk(app, f"/api/messages?ordering={ordering}&limit=5")
    seen = [m["id"] for page in pages for m in page]
    assert len(seen) == len(set(seen)) == len(ids)


def test_default_ordering_is_newest_update_first(app):
    ids = insert_n(5)
    schema.Message.update(updated_at=BASE_TIME + datetime.timedelta(days=1)).where(
        schema.Message.id == ids[1]
    ).execute()
    assert [m["id"] for m in app.get("/api/messages").json] == [ids[1], ids[4], ids[3], ids[2], ids[0]]


@pytest.mark.parametrize("ordering", ["-updated_at", "updated_at"])
def test_identical_updated_at_pages_by_id(app, ordering):
    ids = insert_n(23)
    schema.Message.update(updated_at=BASE_TIME).execute()
    pages = walk(app, f"/api/messages?ordering={ordering}&limit=5")
    seen = [m["id"] for page in pages for m in page]
    assert seen == (sorted(ids, reverse=True) if ordering.startswith("-") else sorted(ids))
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]


def test_identical_updated_at_with_microseconds_pages_by_id(app):
    ids = insert_n(12)
    schema.Message.update(updated_at=BASE_TIME.replace(microsecond=123456)).execute()
    seen = [m["id"] for page in walk(app, "/api/messages?limit=5") for m in page]
    assert seen == sorted(ids, reverse=True)


def test_walk_filtered_by_author_visits_only_their_messages(app):
    register(app, "alice")
    register(app, "bob")
    alice_ids = insert_messages([{"author": user_id("alice")} for _ in range(7)])
    insert_messages([{"author": user_id("bob")} for _ in range(6)])
    seen = [m["id"] for page in walk(app, "/api/messages?author=alice&limit=3&ordering=id") for m in page]
    assert seen == alice_ids


def test_walk_filtered_by_search_visits_only_matches(app):
    ids = insert_messages([{"content": f"{'match' if i % 3 == 0 else 'other'} {i}"} for i in range(20)])
    expected = [message_id for i, message_id in enumerate(ids) if i % 3 == 0]
    seen = [m["id"] for page in walk(app, "/api/messages?search=MATCH&limit=2&ordering=id") for m in page]
    assert seen == expected


def test_page_far_into_the_list_has_the_right_rows(app):
    insert_n(620)
    resp = app.get("/api/messages?limit=100")
    for _ in range(5):
        resp = app.get(next_url(resp))
    assert [m["id"] for m in resp.json] == expected_ids("-updated_at")[500:600]


def test_keyset_page_continues_after_the_last_row_seen_despite_new_rows(app):
    insert_n(600)
    resp = app.get("/api/messages?ordering=-id&limit=100")
    for _ in range(4):
        resp = app.get(next_url(resp))
    last_seen = resp.json[-1]["id"]
    # New rows at the head would shift an OFFSET page; a keyset page is unaffected.
    insert_n(50)
    page = app.get(next_url(resp)).json
    assert [m["id"] for m in page] == list(range(last_seen - 1, last_seen - 101, -1))


# --- listing: filters --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice", "ALICE", "Alice"])
def test_author_filter_ignores_case(app, name):
    register(app, "alice")
    register(app, "bob")
    mine = insert_messages([{"author": user_id("alice")}, {"author": user_id("alice")}])
    insert_messages([{"author": user_id("bob")}, {"author": None}])
    assert sorted(m["id"] for m in app.get(f"/api/messages?author={name}").json) == mine


def test_author_filter_for_an_unknown_user_is_an_empty_array(app):
    insert_n(3)
    assert app.get("/api/messages?author=nobody").json == []


@pytest.mark.parametrize("text", ["hello", "HELLO", "lo wo", "World"])
def test_search_is_a_case_insensitive_substring(app, text):
    insert_messages([{"content": "Hello World"}, {"content": "goodbye"}])
    assert [m["content"] for m in app.get("/api/messages?" + urlencode({"search": text})).json] == ["Hello World"]


@pytest.mark.parametrize("text", ["ÉTÉ", "été", "Été"])
def test_search_folds_non_ascii_case(app, text):
    insert_messages([{"content": "un été chaud"}, {"content": "un hiver froid"}])
    assert [m["content"] for m in app.get("/api/messages?" + urlencode({"search": text})).json] == ["un été chaud"]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("%", ["100% sure"]),
        ("0%", ["100% sure"]),
        ("_", ["a_b"]),
        ("a_b", ["a_b"]),
        ("\\", ["back\\slash"]),
    ],
)
def test_search_treats_like_wildcards_literally(app, text, found):
    insert_messages([{"content": c} for c in ["100% sure", "1000 sure", "a_b", "axb", "back\\slash", "backslash"]])
    contents = [m["content"] for m in app.get("/api/messages?" + urlencode({"search": text, "ordering": "id"})).json]
    assert contents == found


def test_search_and_author_combine(app):
    register(app, "alice")
    register(app, "bob")
    (wanted,) = insert_messages([{"author": user_id("alice"), "content": "cats"}])
    insert_messages([{"author": user_id("alice"), "content": "dogs"}, {"author": user_id("bob"), "content": "cats"}])
    assert [m["id"] for m in app.get("/api/messages?author=alice&search=cat").json] == [wanted]


def test_format_json_is_accepted(app):
    insert_n(2)
    resp = app.get("/api/messages?format=json")
    assert resp.status_int == 200
    assert len(resp.json) == 2


# --- listing: bad parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["page", "offset", "page_size", "Limit"])
def test_unknown_parameter_is_400_naming_it(app, name):
    list_error(app, f"{name}=1", name)


def test_unknown_ordering_is_400(app):
    list_error(app, "ordering=content", "ordering")


@pytest.mark.parametrize(
    "query",
    [
        "limit=1&limit=2",
        "limit=5&limit=5",
        "ordering=id&ordering=-id",
        "author=a&author=b",
        "search=a&search=b",
        "format=json&format=json",
    ],
)
def test_repeated_parameter_is_400(app, query):
    list_error(app, query, query.split("=", 1)[0])


def test_repeated_cursor_is_400(app):
    insert_n(5)
    cursor = cursor_of(next_url(app.get("/api/messages?limit=2")))
    list_error(app, urlencode([("limit", "2"), ("cursor", cursor), ("cursor", cursor)]), "cursor")


@pytest.mark.parametrize("cursor", ["garbage", "!!!", "e30", "bnVsbA", "W10", "é"])
def test_malformed_cursor_is_400(app, cursor):
    insert_n(3)
    list_error(app, urlencode({"cursor": cursor}), "cursor")


def test_truncated_cursor_is_400(app):
    insert_n(5)
    cursor = cursor_of(next_url(app.get("/api/messages?limit=2")))
    list_error(app, urlencode({"limit": "2", "cursor": cursor[:-4]}), "cursor")


@pytest.mark.parametrize(
    ("ordering", "document"),
    [
        pytest.param("-updated_at", ["-updated_at", "not a time", 1], id="bad-timestamp"),
        pytest.param("-updated_at", ["-updated_at", "2024-05-01T12:00:00+00:00", 1], id="zoned-timestamp"),
        pytest.param("-updated_at", ["-updated_at", 5, 1], id="number-for-timestamp"),
        pytest.param("-updated_at", ["-updated_at", "2024-05-01T12:00:00", "1"], id="string-id"),
        pytest.param("-updated_at", ["-updated_at", "2024-05-01T12:00:00", True], id="boolean-id"),
        pytest.param("-updated_at", ["-updated_at", "2024-05-01T12:00:00", 1, 2], id="extra-item"),
        pytest.param("-updated_at", ["-updated_at", "2024-05-01T12:00:00"], id="missing-id"),
        pytest.param("-updated_at", {"ordering": "-updated_at"}, id="object"),
        pytest.param("views", ["views", "3", 1], id="string-views"),
        pytest.param("views", ["views", 1.5, 1], id="float-views"),
        pytest.param("id", ["id", None, 1], id="null-id-value"),
        pytest.param("id", ["id", 10**30, 10**30], id="id-out-of-range"),
        pytest.param("views", ["views", 10**30, 1], id="views-out-of-range"),
    ],
)
def test_tampered_cursor_is_400(app, ordering, document):
    insert_n(3)
    list_error(app, urlencode({"ordering": ordering, "cursor": encode(document)}), "cursor")


@pytest.mark.parametrize(("issued_for", "used_with"), [("id", "-id"), ("-updated_at", "created_at"), ("views", "")])
def test_cursor_from_another_ordering_is_400(app, issued_for, used_with):
    insert_n(5)
    cursor = cursor_of(next_url(app.get(f"/api/messages?ordering={issued_for}&limit=2")))
    query = {"cursor": cursor, "limit": "2"} | ({"ordering": used_with} if used_with else {})
    list_error(app, urlencode(query), "cursor")
