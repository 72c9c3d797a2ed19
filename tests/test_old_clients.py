"""Old clients' error handling: what the old service (DRF + simplejwt) answered, case by case.

Each case below records the old service's status and body, as DRF and
rest_framework_simplejwt wrote them. msgapi answers with problem details, and
must also carry every member of the old body with the same value, and no other
member besides the problem-details ones (a stray ``code`` would make a frontend
refresh its token for nothing). Every case runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from conftest import PASSWORD, TEST_SECRET_KEY, assert_problem, bearer, obtain_tokens, register

from msgapi.tokens import ACCESS, REFRESH, TokenService

# The members problem details has whatever the old body was.
PROBLEM_MEMBERS = {"type", "title", "status", "detail", "errors"}

# The old service's texts: DRF's field messages, simplejwt's token messages, its own 404 body.
REQUIRED = ["This field is required."]
BLANK = ["This field may not be blank."]
TOO_LONG = ["Ensure this field has no more than 160 characters."]
NOT_PROVIDED = {"detail": "Authentication credentials were not provided."}


def bearer_not_valid(reason: str) -> dict:
    """simplejwt's InvalidToken for a Bearer token: why its one token class refused it."""
    return {
        "detail": "Given token not valid for any token type",
        "code": "token_not_valid",
        "messages": [{"token_class": "AccessToken", "token_type": "access", "message": reason}],
    }


BEARER_NOT_VALID = bearer_not_valid("Token is invalid or expired")
BEARER_WRONG_TYPE = bearer_not_valid("Token has wrong type")
BAD_HEADER = {
    "detail": "Authorization header must contain two space-delimited values",
    "code": "bad_authorization_header",
}
INVALID_OR_EXPIRED = {"detail": "Token is invalid or expired", "code": "token_not_valid"}
WRONG_TYPE = {"detail": "Token has wrong type", "code": "token_not_valid"}
NO_ACCOUNT = {"detail": "No active account found with the given credentials"}
MESSAGE_NOT_FOUND = {"error": "Message not found!"}
MISSING = 999_999


@dataclasses.dataclass
class Session:
    """What a case may use: alice's tokens, one of her messages, tokens that no longer work."""

    app: Any
    access: str
    refresh: str
    message_id: int
    expired_access: str
    expired_refresh: str


@dataclasses.dataclass(frozen=True)
class Case:
    method: str
    path: str
    body: Callable[[Session], dict | None] = lambda s: None
    headers: Callable[[Session], dict] = lambda s: {}
    form: bool = False
    status: int = 400
    old_body: dict = dataclasses.field(default_factory=dict)


def alice(s: Session) -> dict:
    return bearer(s.access)


CASES = {
    # Field errors: DRF's wording, each field at the top level of the body.
    "register without fields": Case(
        "POST", "/api/auth/register/", lambda s: {}, old_body={"username": REQUIRED, "password": REQUIRED}
    ),
    "register a taken username": Case(
        "POST",
        "/api/auth/register/",
        lambda s: {"username": "alice", "password": PASSWORD},
        old_body={"username": ["A user with that username already exists."]},
    ),
    "register a taken username, form-encoded": Case(
        "POST",
        "/api/auth/register/",
        lambda s: {"username": "alice", "password": PASSWORD},
        form=True,
        old_body={"username": ["A user with that username already exists."]},
    ),
    "login without fields": Case(
        "POST", "/api/auth/token/", lambda s: {}, old_body={"username": REQUIRED, "password": REQUIRED}
    ),
    "login with a blank password": Case(
        "POST", "/api/auth/token/", lambda s: {"username": "alice", "password": ""}, old_body={"password": BLANK}
    ),
    "refresh without a token": Case("POST", "/api/auth/token/refresh/", lambda s: {}, old_body={"refresh": REQUIRED}),
    "verify without a token": Case("POST", "/api/auth/token/verify/", lambda s: {}, old_body={"token": REQUIRED}),
    "create without content": Case("POST", "/api/messages", lambda s: {}, alice, old_body={"content": REQUIRED}),
    "create blank content": Case(
        "POST", "/api/messages", lambda s: {"content": ""}, alice, old_body={"content": BLANK}
    ),
    "create 161 characters": Case(
        "POST", "/api/messages", lambda s: {"content": "x" * 161}, alice, old_body={"content": TOO_LONG}
    ),
    "create 161 characters, form-encoded": Case(
        "POST", "/api/messages", lambda s: {"content": "x" * 161}, alice, form=True, old_body={"content": TOO_LONG}
    ),
    "replace with blank content": Case(
        "PUT", "/api/messages/{id}", lambda s: {"content": ""}, alice, old_body={"content": BLANK}
    ),
    "patch with 161 characters": Case(
        "PATCH", "/api/messages/{id}", lambda s: {"content": "x" * 161}, alice, old_body={"content": TOO_LONG}
    ),
    # Wrong login: simplejwt's text, no code.
    "login with a wrong password": Case(
        "POST",
        "/api/auth/token/",
        lambda s: {"username": "alice", "password": "wrong password"},
        status=401,
        old_body=NO_ACCOUNT,
    ),
    "login as nobody": Case(
        "POST",
        "/api/auth/token/",
        lambda s: {"username": "nobody", "password": PASSWORD},
        status=401,
        old_body=NO_ACCOUNT,
    ),
    # Bearer: no token is DRF's NotAuthenticated; a bad one is simplejwt's InvalidToken.
    "create without a token": Case(
        "POST", "/api/messages", lambda s: {"content": "hi"}, status=401, old_body=NOT_PROVIDED
    ),
    "create with a garbage token": Case(
        "POST",
        "/api/messages",
        lambda s: {"content": "hi"},
        lambda s: bearer("not-a-jwt"),
        status=401,
        old_body=BEARER_NOT_VALID,
    ),
    "create with an expired token": Case(
        "POST",
        "/api/messages",
        lambda s: {"content": "hi"},
        lambda s: bearer(s.expired_access),
        status=401,
        old_body=BEARER_NOT_VALID,
    ),
    "create with a refresh token": Case(
        "POST",
        "/api/messages",
        lambda s: {"content": "hi"},
        lambda s: bearer(s.refresh),
        status=401,
        old_body=BEARER_WRONG_TYPE,
    ),
    "create with Bearer and no token": Case(
        "POST",
        "/api/messages",
        lambda s: {"content": "hi"},
        lambda s: {"Authorization": "Bearer"},
        status=401,
        old_body=BAD_HEADER,
    ),
    "create with two values after Bearer": Case(
        "POST",
        "/api/messages",
        lambda s: {"content": "hi"},
        lambda s: {"Authorization": f"Bearer {s.access} extra"},
        status=401,
        old_body=BAD_HEADER,
    ),
    "create with another scheme": Case(
        "POST",
        "/api/messages",
        lambda s: {"content": "hi"},
        lambda s: {"Authorization": f"Basic {s.access}"},
        status=401,
        old_body=NOT_PROVIDED,
    ),
    "replace with an expired token": Case(
        "PUT",
        "/api/messages/{id}",
        lambda s: {"content": "hi"},
        lambda s: bearer(s.expired_access),
        status=401,
        old_body=BEARER_NOT_VALID,
    ),
    "delete with a garbage token": Case(
        "DELETE", "/api/messages/{id}", headers=lambda s: bearer("a.b.c"), status=401, old_body=BEARER_NOT_VALID
    ),
    # Token endpoints: simplejwt's InvalidToken with the TokenError's text.
    "refresh a garbage token": Case(
        "POST", "/api/auth/token/refresh/", lambda s: {"refresh": "not-a-jwt"}, status=401, old_body=INVALID_OR_EXPIRED
    ),
    "refresh an expired token": Case(
        "POST",
        "/api/auth/token/refresh/",
        lambda s: {"refresh": s.expired_refresh},
        status=401,
        old_body=INVALID_OR_EXPIRED,
    ),
    "refresh with an access token": Case(
        "POST", "/api/auth/token/refresh/", lambda s: {"refresh": s.access}, status=401, old_body=WRONG_TYPE
    ),
    "verify a garbage token": Case(
        "POST", "/api/auth/token/verify/", lambda s: {"token": "not-a-jwt"}, status=401, old_body=INVALID_OR_EXPIRED
    ),
    "verify an expired token": Case(
        "POST",
        "/api/auth/token/verify/",
        lambda s: {"token": s.expired_access},
        status=401,
        old_body=INVALID_OR_EXPIRED,
    ),
    # Log-out (simplejwt's TokenBlacklistView): the same InvalidToken as refresh.
    "blacklist without a token": Case(
        "POST", "/api/auth/token/blacklist/", lambda s: {}, old_body={"refresh": REQUIRED}
    ),
    "blacklist a garbage token": Case(
        "POST",
        "/api/auth/token/blacklist/",
        lambda s: {"refresh": "not-a-jwt"},
        status=401,
        old_body=INVALID_OR_EXPIRED,
    ),
    "blacklist an expired token": Case(
        "POST",
        "/api/auth/token/blacklist/",
        lambda s: {"refresh": s.expired_refresh},
        status=401,
        old_body=INVALID_OR_EXPIRED,
    ),
    "blacklist an access token": Case(
        "POST", "/api/auth/token/blacklist/", lambda s: {"refresh": s.access}, status=401, old_body=WRONG_TYPE
    ),
    # The old service's own 404 body for a message id it does not have.
    "read a missing message": Case("GET", f"/api/messages/{MISSING}", status=404, old_body=MESSAGE_NOT_FOUND),
    "replace a missing message": Case(
        "PUT", f"/api/messages/{MISSING}", lambda s: {"content": "hi"}, alice, status=404, old_body=MESSAGE_NOT_FOUND
    ),
    "patch a missing message": Case(
        "PATCH", f"/api/messages/{MISSING}", lambda s: {"content": "hi"}, alice, status=404, old_body=MESSAGE_NOT_FOUND
    ),
    "delete a missing message": Case(
        "DELETE", f"/api/messages/{MISSING}", headers=alice, status=404, old_body=MESSAGE_NOT_FOUND
    ),
}


@pytest.fixture
def session(app) -> Session:
    user = register(app, "alice")
    pair = obtain_tokens(app, "alice")
    message = app.post_json("/api/messages", {"content": "hello"}, headers=bearer(pair["access"])).json
    # Signed with the server's key, but expired an hour ago (well past the clock-skew leeway).
    expired = TokenService(TEST_SECRET_KEY, access_lifetime=-3600, refresh_lifetime=-3600)
    return Session(
        app=app,
        access=pair["access"],
        refresh=pair["refresh"],
        message_id=message["id"],
        expired_access=expired.issue(ACCESS, user["id"], 0),
        expired_refresh=expired.issue(REFRESH, user["id"], 0),
    )


def send(s: Session, case: Case):
    path = case.path.replace("{id}", str(s.message_id))
    body = case.body(s)
    headers = case.headers(s)
    method = case.method.lower()
    if body is None:
        return getattr(s.app, method)(path, headers=headers, expect_errors=True)
    if case.form:
        return getattr(s.app, method)(path, body, headers=headers, expect_errors=True)
    return getattr(s.app, f"{method}_json")(path, body, headers=headers, expect_errors=True)


@pytest.mark.parametrize("name", list(CASES))
def test_old_clients_read_what_the_old_service_answered(session: Session, name: str):
    case = CASES[name]
    resp = send(session, case)
    body = assert_problem(resp, case.status)
    if "detail" in case.old_body:
        assert body["detail"] == case.old_body["detail"]
    old_members = {key: value for key, value in case.old_body.items() if key != "detail"}
    extensions = {key: value for key, value in body.items() if key not in PROBLEM_MEMBERS}
    assert extensions == old_members
    for field, messages in old_members.items():
        if isinstance(messages, list) and field != "messages":  # simplejwt's reasons, not a field
            assert body["errors"][field] == messages


def test_revoked_tokens_carry_simplejwts_code(app):
    """A token ended by a password change or a log-out is refused like an invalid one."""
    register(app, "alice")
    pair = obtain_tokens(app, "alice")
    app.post_json(
        "/api/auth/password/",
        {"current_password": PASSWORD, "new_password": "another good passphrase"},
        headers=bearer(pair["access"]),
    )
    resp = app.post_json("/api/messages", {"content": "hi"}, headers=bearer(pair["access"]), expect_errors=True)
    body = assert_problem(resp, 401)
    assert (body["detail"], body["code"]) == (BEARER_NOT_VALID["detail"], "token_not_valid")
    resp = app.post_json("/api/auth/token/refresh/", {"refresh": pair["refresh"]}, expect_errors=True)
    body = assert_problem(resp, 401)
    assert (body["detail"], body["code"]) == (INVALID_OR_EXPIRED["detail"], "token_not_valid")

    fresh = obtain_tokens(app, "alice", "another good passphrase")
    app.post_json("/api/auth/token/blacklist/", {"refresh": fresh["refresh"]})
    resp = app.post_json("/api/auth/token/refresh/", {"refresh": fresh["refresh"]}, expect_errors=True)
    body = assert_problem(resp, 401)
    assert (body["detail"], body["code"]) == (INVALID_OR_EXPIRED["detail"], "token_not_valid")


@pytest.mark.parametrize("member", ["type", "title", "status", "detail", "instance", "errors", "code", "error"])
def test_a_field_named_like_a_problem_member_stays_under_errors(app, member: str):
    """Field names come from the client (unknown fields are errors too); none may replace a member."""
    register(app, "alice")
    auth = bearer(obtain_tokens(app, "alice")["access"])
    resp = app.patch_json("/api/auth/me", {member: "x"}, headers=auth, expect_errors=True)
    body = assert_problem(resp, 400)
    assert body["errors"] == {member: ["This field cannot be changed here."]}
    assert body["type"] == "about:blank" and body["title"] == "Invalid request"
    assert body.get(member) != ["This field cannot be changed here."]
