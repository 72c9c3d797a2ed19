"""Hostile and malformed input: every case has an expected status, and none is a 5xx.

Every 4xx must be ``application/problem+json`` with ``title``, ``status`` and
``detail``, and must not leak a Python traceback.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import io
import json
import re
import socket
import wsgiref.util
from urllib.parse import urlsplit

import pytest
import webtest
from conftest import assert_problem, register

PROBLEM_JSON = "application/problem+json"
FORM = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"
THUMBS_UP = "\N{THUMBS UP SIGN}"  # one code point
# man ZWJ woman ZWJ girl ZWJ boy: one glyph, seven code points
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"
HEX32 = re.compile(r"[0-9a-f]{32}\Z")


def j(value) -> bytes:
    return json.dumps(value).encode()


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def cursor(*parts) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).rstrip(b"=").decode()


@dataclasses.dataclass(frozen=True)
class Case:
    method: str
    path: str
    status: int
    body: bytes | None = None
    content_type: str | None = JSON_TYPE
    auth: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    environ: tuple[tuple[str, str], ...] = ()


def msg(body: bytes, status: int, content_type: str | None = JSON_TYPE) -> Case:
    """POST /api/messages as alice."""
    return Case("POST", "/api/messages", status, body, content_type, auth=True)


def reg(body: bytes, status: int, content_type: str | None = JSON_TYPE) -> Case:
    return Case("POST", "/api/auth/register/", status, body, content_type)


def login(body: bytes, status: int) -> Case:
    return Case("POST", "/api/auth/token/", status, body)


def get(path: str, status: int, **kwargs) -> Case:
    return Case("GET", path, status, **kwargs)


def user(username, password="correct horse battery", **extra) -> bytes:
    return j({"username": username, "password": password, **extra})


CASES = {
    # --- malformed and truncated JSON ---
    "json-truncated-object": msg(b'{"content": "hi"', 400),
    "json-truncated-string": msg(b'{"content": "hi', 400),
    "json-truncated-escape": msg(b'{"content": "\\u12"}', 400),
    "json-missing-value": msg(b'{"content": }', 400),
    "json-unquoted-key": msg(b'{content: "hi"}', 400),
    "json-single-quotes": msg(b"{'content': 'hi'}", 400),
    "json-trailing-comma": msg(b'{"content": "hi",}', 400),
    "json-trailing-garbage": msg(b'{"content": "hi"} extra', 400),
    "json-two-documents": msg(b'{"content": "hi"}{"content": "x"}', 400),
    "json-invalid-escape": msg(b'{"content": "\\x41"}', 400),
    "json-raw-control-char": msg(b'{"content": "a\nb"}', 400),
    "json-comment": msg(b'{"content": "hi" /* c */}', 400),
    "json-invalid-utf8": msg(b'{"content": "\xff\xfe"}', 400),
    "json-overlong-utf8": msg(b'{"content": "\xc0\xaf"}', 400),
    "json-utf8-encoded-surrogate": msg(b'{"content": "\xed\xa0\x80"}', 400),
    "json-utf16": msg('{"content": "hi"}'.encode("utf-16"), 400),
    "json-bom": msg(b'\xef\xbb\xbf{"content": "hi"}', 400),
    "json-only-open-brace": msg(b"{", 400),
    # --- JSON that is not an object ---
    "json-array": msg(b'[{"content": "hi"}]', 400),
    "json-empty-array": msg(b"[]", 400),
    "json-number": msg(b"42", 400),
    "json-negative-zero": msg(b"-0", 400),
    "json-string": msg(b'"content"', 400),
    "json-null": msg(b"null", 400),
    "json-true": msg(b"true", 400),
    "json-huge-float": msg(b"1e999", 400),
    # --- content of the wrong type ---
    "content-int": msg(j({"content": 42}), 400),
    "content-float": msg(j({"content": 1.5}), 400),
    "content-null": msg(j({"content": None}), 400),
    "content-list": msg(j({"content": ["hi"]}), 400),
    "content-empty-list": msg(j({"content": []}), 400),
    "content-object": msg(j({"content": {"text": "hi"}}), 400),
    "content-true": msg(j({"content": True}), 400),
    "content-false": msg(j({"content": False}), 400),
    "content-1e400": msg(b'{"content": 1e400}', 400),
    "content-huge-int": msg(j({"content": 10**100}), 400),
    "content-int-over-4300-digits": msg(b'{"content": 1' + b"0" * 5000 + b"}", 400),
    # --- NUL bytes and lone surrogates ---
    "content-nul": msg(b'{"content": "a\\u0000b"}', 400),
    "content-only-nul": msg(b'{"content": "\\u0000"}', 400),
    "content-lone-high-surrogate": msg(b'{"content": "\\ud800"}', 400),
    "content-lone-low-surrogate": msg(b'{"content": "a\\udfffb"}', 400),
    "content-reversed-surrogates": msg(b'{"content": "\\ude00\\ud83d"}', 400),
    "content-valid-surrogate-pair": msg(b'{"content": "\\ud83d\\ude00"}', 201),
    "form-content-nul": msg(b"content=a%00b", 400, FORM),
    "form-content-invalid-utf8": msg(b"content=%ff%fe", 400, FORM),
    "form-content-surrogate-utf8": msg(b"content=%ed%a0%80", 400, FORM),
    "form-duplicate-field": msg(b"content=a&content=b", 400, FORM),
    "form-too-many-fields": msg(b"&".join(b"f%d=x" % n for n in range(60)) + b"&content=hi", 400, FORM),
    "form-non-ascii-raw": msg("content=caf\u00e9".encode(), 400, FORM),
    "form-body-is-json": msg(j({"content": "hi"}), 400, FORM),
    "register-username-nul": reg(user("ali\x00ce"), 400),
    "register-password-nul": reg(user("alice2", "correct\x00horse battery"), 400),
    "register-username-surrogate": reg(b'{"username": "a\\ud800", "password": "correct horse battery"}', 400),
    "register-password-surrogate": reg(b'{"username": "bob", "password": "correct horse \\udc00"}', 400),
    "register-email-nul": reg(user("bob", email="bob\x00@example.com"), 400),
    "login-username-nul": login(user("ali\x00ce"), 400),
    "login-password-nul": login(user("alice", "pw\x00"), 400),
    "login-password-surrogate": login(b'{"username": "alice", "password": "\\ud800"}', 400),
    # --- bodies that are too big ---
    "message-2mb": msg(j({"content": "x" * 2 * 1024 * 1024}), 413),
    "register-2mb": reg(user("bob", "p" * 2 * 1024 * 1024), 413),
    "login-2mb": login(user("bob", "p" * 2 * 1024 * 1024), 413),
    "message-100000-open-brackets": msg(b"[" * 100_000, 413),
    # --- content types we do not read ---
    "type-text-plain": msg(j({"content": "hi"}), 415, "text/plain"),
    "type-text-json": msg(j({"content": "hi"}), 415, "text/json"),
    "type-multipart": msg(
        b'--x\r\nContent-Disposition: form-data; name="content"\r\n\r\nhi\r\n--x--\r\n',
        415,
        "multipart/form-data; boundary=x",
    ),
    "type-xml": msg(b"<content>hi</content>", 415, "application/xml"),
    "type-jsonx": msg(j({"content": "hi"}), 415, "application/jsonx"),
    "type-octet-stream": msg(j({"content": "hi"}), 415, "application/octet-stream"),
    "type-missing": msg(j({"content": "hi"}), 415, None),
    "type-empty": msg(j({"content": "hi"}), 415, ""),
    "type-garbage": msg(j({"content": "hi"}), 415, "!!!"),
    "type-uppercase-json": msg(j({"content": "hi"}), 201, "APPLICATION/JSON"),
    "type-plus-json": msg(j({"content": "hi"}), 201, "application/merge-patch+json"),
    "register-type-text-plain": reg(user("bob"), 415, "text/plain"),
    "register-type-missing": reg(user("bob"), 415, None),
    # --- duplicate keys ---
    "json-duplicate-key": msg(b'{"content": "a", "content": "b"}', 400),
    "json-duplicate-nested-key": msg(b'{"content": "a", "x": {"k": 1, "k": 2}}', 400),
    "register-duplicate-username": reg(b'{"username": "bob", "username": "alice", "password": "xyzzy-plugh"}', 400),
    # --- deep nesting (inside the 64 KiB limit) ---
    "json-60000-open-brackets": msg(b"[" * 60_000, 400),
    "json-30000-nested-arrays": msg(b"[" * 30_000 + b"]" * 30_000, 400),
    "json-deep-array-in-content": msg(b'{"content": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", 400),
    "json-5000-nested-objects": msg(b'{"a": ' * 5_000 + b"1" + b"}" * 5_000, 400),
    # --- NaN and infinities ---
    "json-nan": msg(b'{"content": NaN}', 400),
    "json-infinity": msg(b'{"content": Infinity}', 400),
    "json-minus-infinity": msg(b'{"content": -Infinity}', 400),
    "json-nan-in-other-field": msg(b'{"content": "hi", "x": NaN}', 400),
    # --- huge numbers elsewhere ---
    "json-huge-int-unknown-field": msg(b'{"content": "hi", "n": 1' + b"0" * 4000 + b"}", 201),
    "json-int-over-4300-digits-unknown-field": msg(b'{"content": "hi", "n": 1' + b"0" * 5000 + b"}", 400),
    # --- ids ---
    "id-huge": get("/api/messages/99999999999999999999", 404),
    "id-max-int32": get("/api/messages/2147483647", 404),
    "id-over-int32": get("/api/messages/2147483648", 404),
    "id-over-int64": get("/api/messages/9223372036854775808", 404),
    "id-negative": get("/api/messages/-1", 404),
    "id-zero": get("/api/messages/0", 404),
    "id-leading-zero": get("/api/messages/01", 404),
    "id-many-leading-zeros": get("/api/messages/0000000001", 404),
    "id-exponent": get("/api/messages/1e3", 404),
    "id-float": get("/api/messages/1.0", 404),
    "id-hex": get("/api/messages/0x1", 404),
    "id-plus": get("/api/messages/+1", 404),
    "id-space-before": get("/api/messages/%201", 404),
    "id-space-after": get("/api/messages/1%20", 404),
    "id-arabic-indic-one": get("/api/messages/%D9%A1", 404),
    "id-fullwidth-one": get("/api/messages/%EF%BC%91", 404),
    "id-superscript-one": get("/api/messages/%C2%B9", 404),
    "id-nul": get("/api/messages/1%00", 404),
    "id-invalid-utf8": get("/api/messages/%FF", 404),
    "id-sql": get("/api/messages/1%20OR%201=1", 404),
    "put-id-leading-zero": Case("PUT", "/api/messages/01", 404, j({"content": "x"}), auth=True),
    "put-id-arabic-indic": Case("PUT", "/api/messages/%D9%A1", 404, j({"content": "x"}), auth=True),
    "delete-id-huge": Case("DELETE", "/api/messages/99999999999999999999", 404, auth=True),
    "delete-id-exponent": Case("DELETE", "/api/messages/1e0", 404, auth=True),
    # --- usernames and passwords ---
    "username-150": reg(user("u" * 150), 201),
    "username-151": reg(user("u" * 151), 400),
    "username-10000": reg(user("u" * 10_000), 400),
    "password-1024": reg(user("bob", "p" * 1024), 201),
    "password-1025": reg(user("bob", "p" * 1025), 400),
    "password-10000": reg(user("bob", "p" * 10_000), 400),
    "username-space": reg(user("bob smith"), 400),
    "username-leading-space": reg(user(" bob"), 400),
    "username-slash": reg(user("bob/smith"), 400),
    "username-backslash": reg(user("bob\\smith"), 400),
    "username-dot-dot-slash": reg(user("../etc"), 400),
    "username-double-quote": reg(user('bob"smith'), 400),
    "username-single-quote": reg(user("bob'; DROP TABLE users; --"), 400),
    "username-angle-brackets": reg(user("<script>"), 400),
    "username-newline": reg(user("bob\nsmith"), 400),
    "username-tab": reg(user("bob\tsmith"), 400),
    "username-zero-width-joiner": reg(user("bob\u200dsmith"), 400),
    "username-rtl-override": reg(user("bob\u202esmith"), 400),
    "username-empty": reg(user(""), 400),
    "username-number": reg(j({"username": 123, "password": "correct horse battery"}), 400),
    "username-list": reg(j({"username": ["bob"], "password": "correct horse battery"}), 400),
    "password-number": reg(j({"username": "bob", "password": 12345678}), 400),
    "email-255": reg(user("bob", email="a" * 243 + "@example.com"), 400),
    "login-username-151": login(user("u" * 151), 400),
    "login-password-10000": login(user("alice", "p" * 10_000), 400),
    "login-username-list": login(j({"username": ["alice"], "password": "x"}), 400),
    "login-json-array": login(b'["alice", "pw"]', 400),
    "refresh-token-10000": Case("POST", "/api/auth/token/refresh/", 400, j({"refresh": "x" * 10_000})),
    "refresh-token-number": Case("POST", "/api/auth/token/refresh/", 400, j({"refresh": 12345})),
    "refresh-token-nul": Case("POST", "/api/auth/token/refresh/", 400, j({"refresh": "a\x00b"})),
    "refresh-token-garbage": Case("POST", "/api/auth/token/refresh/", 401, j({"refresh": "garbage"})),
    # --- query strings on the list ---
    "list-limit-zero": get("/api/messages?limit=0", 400),
    "list-limit-negative": get("/api/messages?limit=-1", 400),
    "list-limit-huge": get("/api/messages?limit=99999999999999999999", 400),
    "list-limit-text": get("/api/messages?limit=abc", 400),
    "list-limit-arabic-indic": get("/api/messages?limit=%D9%A1", 400),
    "list-limit-twice": get("/api/messages?limit=1&limit=2", 400),
    "list-limit-blank": get("/api/messages?limit=", 400),
    "list-ordering-bogus": get("/api/messages?ordering=password", 400),
    "list-ordering-sql": get("/api/messages?ordering=id;DROP%20TABLE%20users", 400),
    "list-unknown-param": get("/api/messages?debug=1", 400),
    "list-cursor-garbage": get("/api/messages?cursor=!!!", 400),
    "list-cursor-not-base64-json": get("/api/messages?cursor=" + base64.urlsafe_b64encode(b"\xff\xfe").decode(), 400),
    "list-cursor-json-object": get("/api/messages?cursor=e30", 400),
    "list-cursor-wrong-arity": get("/api/messages?cursor=" + cursor("-updated_at", 1), 400),
    "list-cursor-bool-id": get("/api/messages?cursor=" + cursor("-id", 5, True) + "&ordering=-id", 400),
    "list-cursor-bad-date": get("/api/messages?cursor=" + cursor("-updated_at", "yesterday", 1), 400),
    "list-cursor-nul": get("/api/messages?cursor=%00", 400),
    "list-cursor-5000-nested-arrays": get("/api/messages?cursor=" + b64("[" * 5000), 400),
    "list-cursor-nested-arrays-closed": get("/api/messages?cursor=" + b64("[" * 3000 + "]" * 3000), 400),
    "list-cursor-nested-value": get(
        "/api/messages?ordering=-id&cursor=" + b64('["-id",' + "[" * 2000 + "]" * 2000 + ",1]"), 400
    ),
    "list-cursor-long-string-value": get("/api/messages?cursor=" + cursor("-updated_at", "x" * 5000, 1), 400),
    "list-search-nul": get("/api/messages?search=a%00b", 400),
    # Falcon decodes a bad UTF-8 query string with U+FFFD replacement: a search like any other.
    "list-search-invalid-utf8": get("/api/messages?search=%FF", 200),
    "list-search-161": get("/api/messages?search=" + "x" * 161, 400),
    "list-search-percent": get("/api/messages?search=%25", 200),
    "list-search-underscore": get("/api/messages?search=_", 200),
    "list-search-sql": get("/api/messages?search=%27%20OR%201%3D1%20--", 200),
    "list-author-sql": get("/api/messages?author=%27%3B%20DROP%20TABLE%20users%3B%20--", 200),
    # --- percent-encoded and odd paths ---
    "path-encoded-digit": get("/api/messages/%31", 200),
    "path-encoded-slash-in-id": get("/api/messages/1%2F2", 404),
    "path-encoded-letter": get("/api/%6Dessages", 200),
    "path-dot-dot-encoded-slash": get("/api/messages/..%2F", 404),
    "path-encoded-dot-dot": get("/api/messages/%2E%2E", 404),
    "path-dot-dot-segment": get("/api/messages/../messages", 404),
    "path-double-slash-inside": get("/api//messages", 404),
    "path-double-slash-before-id": get("/api/messages//1", 404),
    "path-double-slash-leading": get("/", 200, environ=(("PATH_INFO", "//api/messages"),)),
    "path-item-trailing-slash": get("/api/messages/1/", 200),
    "path-encoded-nul": get("/api/messages%00", 404),
    "path-very-long": get("/api/messages/" + "9" * 10_000, 404),
    "path-unknown": get("/api/nothing-here", 404),
    "path-wrong-method": Case("PATCH", "/api/messages", 405, j({"content": "x"}), auth=True),
}


def _send(app: webtest.TestApp, case: Case, auth: dict[str, str]) -> webtest.TestResponse:
    headers = dict(case.headers)
    if case.auth:
        headers.update(auth)
    kwargs = {}
    if case.body is not None:
        kwargs["body"] = case.body
        if case.content_type is not None:
            kwargs["content_type"] = case.content_type
    return app.request(
        case.path,
        method=case.method,
        headers=headers,
        environ=dict(case.environ),
        expect_errors=True,
        **kwargs,
    )


@pytest.fixture
def message_one(app, create_message) -> dict:
    """Alice's message with id 1 (the database is fresh), so id spellings of 1 can be told apart."""
    message = create_message("the first")
    assert message["id"] == 1
    return message


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_hostile_input(app, auth, message_one, case):
    resp = _send(app, case, auth)
    assert resp.status_int < 500, resp.text[:500]
    if 400 <= case.status < 500:
        assert_problem(resp, case.status)
    else:
        assert resp.status_int == case.status, resp.text[:500]


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("ordering=-id&cursor=" + cursor("-id", 2**70, 2**70), id="id-2^70"),
        pytest.param("ordering=id&cursor=" + cursor("id", 2**63, 2**63), id="id-2^63"),
        pytest.param("ordering=views&cursor=" + cursor("views", 2**70, 1), id="views-2^70"),
        pytest.param("ordering=-views&cursor=" + cursor("-views", -(2**70), 1), id="views-minus-2^70"),
        pytest.param("cursor=" + cursor("-updated_at", "2030-01-01T00:00:00", 2**70), id="last-id-2^70"),
    ],
)
def test_cursor_with_out_of_range_integers_is_400(app, message_one, query):
    """No message can have such an id or view count: the cursor is refused, not bound as an SQL parameter.

    (On SQLite an int beyond 64 bits cannot be bound at all: that was a 500.)
    """
    body = assert_problem(app.get(f"/api/messages?{query}", expect_errors=True), 400)
    assert list(body["errors"]) == ["cursor"]


# --- what the odd paths actually address ---------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/messages/%31", "/api/messages/%31/"])
def test_percent_encoded_id_is_the_same_message(app, message_one, path):
    assert app.get(path).json["id"] == 1


def test_percent_encoded_letter_in_the_collection_path_is_the_list(app, message_one):
    assert app.get("/api/%6Dessages").json == app.get("/api/messages").json


def test_leading_double_slash_is_the_list(app, message_one):
    resp = app.get("/", extra_environ={"PATH_INFO": "//api/messages"})
    assert [m["id"] for m in resp.json] == [1]


def test_leading_zero_id_does_not_touch_message_one(app, auth, message_one):
    app.put_json("/api/messages/01", {"content": "overwritten"}, headers=auth, status=404)
    app.delete("/api/messages/001", headers=auth, status=404)
    assert app.get("/api/messages/1").json["content"] == "the first"


# --- content lengths count code points -----------------------------------------------------------


def post_content(app, auth, content: str):
    return app.post_json("/api/messages", {"content": content}, headers=auth, expect_errors=True)


def test_160_thumbs_up_are_accepted(app, auth):
    assert len(THUMBS_UP) == 1
    resp = post_content(app, auth, THUMBS_UP * 160)
    assert resp.status_int == 201
    assert resp.json["content"] == THUMBS_UP * 160


def test_161_thumbs_up_are_refused(app, auth):
    resp = post_content(app, auth, THUMBS_UP * 161)
    assert assert_problem(resp, 400)["errors"]["content"]


def test_a_family_emoji_counts_each_of_its_code_points(app, auth):
    assert len(FAMILY) == 7
    fits = FAMILY * 22 + "x" * 6  # 154 + 6 = 160 code points, 22 glyphs + 6
    assert post_content(app, auth, fits).status_int == 201
    too_long = FAMILY * 23  # 161 code points, though only 23 glyphs
    assert assert_problem(post_content(app, auth, too_long), 400)["errors"]["content"]


def test_emoji_round_trip_exactly(app, auth):
    content = FAMILY + " " + THUMBS_UP + " \U0001f1fa\U0001f1f3"
    created = post_content(app, auth, content).json
    assert app.get(f"/api/messages/{created['id']}").json["content"] == content


# --- sizes and the 413 -----------------------------------------------------------------------------


def test_2mb_body_is_a_problem_json_413(app, auth):
    resp = app.post(
        "/api/messages", b"{" + b" " * (2 * 1024 * 1024) + b"}", headers=auth, content_type=JSON_TYPE, status="*"
    )
    body = assert_problem(resp, 413)
    assert "65536" in body["detail"]


class CountingInput(io.BytesIO):
    """A request body stream that counts the bytes the app took from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.taken = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.taken += len(chunk)
        return chunk

    def readline(self, size: int | None = -1) -> bytes:
        line = super().readline(size)
        self.taken += len(line)
        return line


@pytest.mark.parametrize("token", [None, "not-a-token"], ids=["no-token", "bad-token"])
def test_2mb_body_without_a_token_is_still_refused_before_it_is_read(wsgi_app, token):
    # Called as WSGI directly, so the body stream is one we can count: the limit is checked
    # from Content-Length before authentication and before a single byte of the body is read.
    body = CountingInput(b"x" * (2 * 1024 * 1024))
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/api/messages", "CONTENT_TYPE": JSON_TYPE}
    environ.update({"CONTENT_LENGTH": str(2 * 1024 * 1024), "wsgi.input": body})
    if token:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    wsgiref.util.setup_testing_defaults(environ)
    started: list[str] = []
    chunks = wsgi_app(environ, lambda status, headers, exc_info=None: started.append(status))
    response = json.loads(b"".join(chunks))
    assert [status.split()[0] for status in started] == ["413"]
    assert response["status"] == 413
    assert body.taken == 0


def test_long_username_and_password_are_accepted_at_the_limit(app):
    register(app, "u" * 150, "p" * 1024)
    tokens = app.post_json("/api/auth/token/", {"username": "u" * 150, "password": "p" * 1024}).json
    assert tokens["access"]


# --- X-Request-ID ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "has spaces",
        "x" * 129,
        "caf\u00e9",
        "a;b",
        "<script>",
        "id\tid",
        "",
        "a" * 10_000,
    ],
    ids=["spaces", "129-chars", "non-ascii", "semicolon", "angle-brackets", "tab", "empty", "10000-chars"],
)
def test_unsafe_request_id_is_replaced_by_a_generated_one(app, value):
    resp = app.get("/api/messages", headers={"X-Request-ID": value})
    assert resp.status_int == 200
    assert HEX32.match(resp.headers["X-Request-ID"])
    assert resp.headers["X-Request-ID"] != value


def test_unsafe_request_id_on_an_error_is_replaced_too(app):
    resp = app.get("/api/messages/abc", headers={"X-Request-ID": "evil id"}, status=404)
    assert HEX32.match(resp.headers["X-Request-ID"])


def test_safe_request_id_of_128_chars_is_echoed(app):
    value = "a1._:-" + "z" * 122
    assert app.get("/api/messages", headers={"X-Request-ID": value}).headers["X-Request-ID"] == value


def test_without_a_request_id_a_fresh_one_is_generated_per_request(app):
    first = app.get("/api/messages").headers["X-Request-ID"]
    second = app.get("/api/messages").headers["X-Request-ID"]
    assert HEX32.match(first) and HEX32.match(second) and first != second


# --- the same over real HTTP: Waitress decodes the path and de-chunks the body --------------------


def _wire(url: str, method: str, path: str, body=None, headers=None, chunked: bool = False):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def _raw(url: str, request: bytes) -> bytes:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_hostile_paths_and_bodies_over_the_wire(live_server):
    server = live_server()
    url = server.url
    status, _, _ = _wire(
        url,
        "POST",
        "/api/auth/register/",
        j({"username": "wire", "password": "correct horse 1"}),
        {"Content-Type": JSON_TYPE},
    )
    assert status == 201
    _, _, body = _wire(
        url,
        "POST",
        "/api/auth/token/",
        j({"username": "wire", "password": "correct horse 1"}),
        {"Content-Type": JSON_TYPE},
    )
    auth = {"Authorization": "Bearer " + json.loads(body)["access"], "Content-Type": JSON_TYPE}
    status, _, body = _wire(url, "POST", "/api/messages", j({"content": "one"}), auth)
    assert status == 201 and json.loads(body)["id"] == 1

    expected = {
        "/api/messages/%31": 200,
        "/api/%6Dessages": 200,
        "/api/messages/1%2F2": 404,
        "/api/messages/..%2F": 404,
        "/api/messages/%2E%2E": 404,
        "/api/messages/01": 404,
        "/api/messages/%D9%A1": 404,
        "/api/messages/%FF": 404,
        "/api/messages/1%00": 404,
        "/api//messages": 404,
        "/api/messages/99999999999999999999": 404,
    }
    for path, want in expected.items():
        status, headers, body = _wire(url, "GET", path)
        assert status == want, (path, status, body[:300])
        if status == 404:
            assert headers["Content-Type"] == PROBLEM_JSON, path
            assert b"Traceback" not in body and b'File "' not in body
    assert json.loads(_wire(url, "GET", "/api/messages/%31")[2])["id"] == 1

    # 2 MB sent chunked, so there is no Content-Length for the app to check up front.
    two_mb = (b"x" * 65536 for _ in range(32))
    status, headers, body = _wire(url, "POST", "/api/messages", two_mb, auth, chunked=True)
    assert status == 413, body[:300]
    assert headers["Content-Type"] == PROBLEM_JSON

    # A bare CR inside a header value: refused by the server, and nothing is injected.
    raw = _raw(
        url,
        b"GET /api/messages HTTP/1.1\r\nHost: x\r\nX-Request-ID: evil\rX-Injected: 1\r\nConnection: close\r\n\r\n",
    )
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert not head.startswith(b"HTTP/1.1 5"), head
    assert b"X-Injected" not in head
    assert b"\nX-Request-ID: evil" not in head
