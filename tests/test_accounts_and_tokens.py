"""Accounts (/api/auth/me, password change, staff deactivation), token verify/blacklist/rotation, /healthz."""

from __future__ import annotations

import threading
import time

import jwt
import pytest
from conftest import PASSWORD, TEST_SECRET_KEY, WireClient, assert_problem, bearer, obtain_tokens, register, wire_login

from msgapi.store import revocations, schema, users
from msgapi.tokens import ACCESS, LEEWAY_SECONDS, REFRESH, InvalidToken, TokenService

NEW_PASSWORD = "a brand new passphrase"
ACCOUNT_KEYS = {"id", "username", "email", "first_name", "last_name", "is_staff", "is_active", "date_joined"}


# --- helpers -----------------------------------------------------------------------------------------------


def assert_token_not_valid(resp) -> None:
    """simplejwt's answer to a token it will not take on the token endpoints, with the Bearer challenge naming it."""
    body = assert_problem(resp, 401)
    assert (body["detail"], body["code"]) == ("Token is invalid or expired", "token_not_valid")
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def family_revoked(family: str) -> bool:
    return schema.RevokedFamily.select().where(schema.RevokedFamily.family == family).exists()


def stored_user(username: str) -> schema.User:
    return users.by_username(username)


def login_status(app, username: str, password: str) -> int:
    return app.post_json(
        "/api/auth/token/", {"username": username, "password": password}, expect_errors=True
    ).status_int


def refresh(app, token: str):
    return app.post_json("/api/auth/token/refresh/", {"refresh": token}, expect_errors=True)


def verify(app, token: str):
    return app.post_json("/api/auth/token/verify/", {"token": token}, expect_errors=True)


def blacklist(app, token: str):
    return app.post_json("/api/auth/token/blacklist/", {"refresh": token}, expect_errors=True)


def me(app, access: str):
    return app.get("/api/auth/me", headers=bearer(access), expect_errors=True)


def change_password(app, access: str, current: str = PASSWORD, new: str = NEW_PASSWORD):
    return app.post_json(
        "/api/auth/password/",
        {"current_password": current, "new_password": new},
        headers=bearer(access),
        expect_errors=True,
    )


def staff_headers(app, username: str = "carol") -> dict[str, str]:
    register(app, username)
    schema.User.update(is_staff=True).where(schema.User.username_key == username).execute()
    return bearer(obtain_tokens(app, username)["access"])


def set_active(app, headers, target_id, value):
    return app.patch_json(f"/api/users/{target_id}", {"is_active": value}, headers=headers, expect_errors=True)


def expired_token(token_type: str, user_id: int) -> str:
    """Signed with the right key, expired well beyond the decoder's leeway."""
    return TokenService(TEST_SECRET_KEY, -3600, -3600).issue(token_type, user_id, 0)


class Clock:
    """A clock the test sets: ``TokenService(..., clock=Clock(t))``."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def just_expired_refresh_token(user_id: int) -> str:
    """Signed with the right key, expired 10 s ago: still accepted, within the leeway."""
    issued = time.time() - 86400 - 10
    return TokenService(TEST_SECRET_KEY, 7200, 86400, clock=Clock(issued)).issue(REFRESH, user_id, 0)


def user_id_of(token: str) -> int:
    return jwt.decode(token, options={"verify_signature": False})["user_id"]


def family_of(token: str) -> str:
    return jwt.decode(token, options={"verify_signature": False})["fam"]


def make_user(app, username: str) -> dict:
    """Register and log in on a WebTest app; the user's token pair."""
    register(app, username)
    return obtain_tokens(app, username)


# --- /api/auth/me ------------------------------------------------------------------------------------------


def test_me_returns_the_signed_in_account(app, auth):
    body = app.get("/api/auth/me", headers=auth).json
    assert set(body) == ACCOUNT_KEYS
    assert body["username"] == "alice"
    assert body["is_active"] is True
    assert body["is_staff"] is False


def test_me_never_shows_the_password(app, auth):
    assert "password" not in app.get("/api/auth/me", headers=auth).text


def test_me_without_a_token_is_401(app):
    resp = app.get("/api/auth/me", expect_errors=True)
    assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_patch_me_without_a_token_is_401(app):
    assert_problem(app.patch_json("/api/auth/me", {"first_name": "A"}, expect_errors=True), 401)


def test_patch_me_updates_the_profile(app, auth):
    changes = {"email": "alice@example.com", "first_name": "Alice", "last_name": "Liddell"}
    body = app.patch_json("/api/auth/me", changes, headers=auth).json
    assert {key: body[key] for key in changes} == changes


def test_patch_me_is_stored(app, auth):
    app.patch_json("/api/auth/me", {"first_name": "Alice"}, headers=auth)
    assert app.get("/api/auth/me", headers=auth).json["first_name"] == "Alice"


def test_patch_me_keeps_fields_not_sent(app, auth):
    app.patch_json("/api/auth/me", {"email": "alice@example.com", "last_name": "L"}, headers=auth)
    body = app.patch_json("/api/auth/me", {"first_name": "Alice"}, headers=auth).json
    assert (body["email"], body["first_name"], body["last_name"]) == ("alice@example.com", "Alice", "L")


@pytest.mark.parametrize("email", ["not-an-email", "a@b", "a b@example.com", "@example.com"])
def test_patch_me_rejects_an_invalid_email(app, auth, email):
    body = assert_problem(app.patch_json("/api/auth/me", {"email": email}, headers=auth, expect_errors=True), 400)
    assert "email" in body["errors"]


def test_rejected_patch_me_changes_nothing(app, auth):
    app.patch_json("/api/auth/me", {"first_name": "Alice", "email": "bad"}, headers=auth, expect_errors=True)
    assert stored_user("alice").first_name == ""


@pytest.mark.parametrize("field", ["is_staff", "is_active", "username", "password", "id"])
def test_patch_me_rejects_fields_that_are_not_profile_fields(app, auth, field):
    body = assert_problem(app.patch_json("/api/auth/me", {field: True}, headers=auth, expect_errors=True), 400)
    assert field in body["errors"]


def test_staff_cannot_be_self_granted(app, auth):
    app.patch_json("/api/auth/me", {"is_staff": True}, headers=auth, expect_errors=True)
    assert stored_user("alice").is_staff is False


# --- password change ---------------------------------------------------------------------------------------


def test_password_change_returns_a_new_token_pair(app, tokens):
    resp = change_password(app, tokens["access"])
    assert resp.status_int == 200
    assert set(resp.json) == {"access", "refresh"}
    assert resp.headers["Cache-Control"] == "no-store"


def test_new_access_token_from_password_change_authenticates(app, tokens):
    pair = change_password(app, tokens["access"]).json
    assert me(app, pair["access"]).status_int == 200


def test_new_refresh_token_from_password_change_refreshes(app, tokens):
    pair = change_password(app, tokens["access"]).json
    assert refresh(app, pair["refresh"]).status_int == 200


def test_old_password_no_longer_logs_in(app, tokens):
    change_password(app, tokens["access"])
    assert login_status(app, "alice", PASSWORD) == 401


def test_new_password_logs_in(app, tokens):
    change_password(app, tokens["access"])
    assert login_status(app, "alice", NEW_PASSWORD) == 200


def test_wrong_current_password_is_400(app, tokens):
    body = assert_problem(change_password(app, tokens["access"], current="not my password"), 400)
    assert "current_password" in body["errors"]


def test_wrong_current_password_keeps_the_old_password_and_tokens(app, tokens):
    change_password(app, tokens["access"], current="not my password")
    assert login_status(app, "alice", PASSWORD) == 200
    assert me(app, tokens["access"]).status_int == 200


@pytest.mark.parametrize("new", ["short", "1234567890123", "", "alice"])
def test_weak_new_password_is_400(app, tokens, new):
    body = assert_problem(change_password(app, tokens["access"], new=new), 400)
    assert "new_password" in body["errors"]


def test_weak_new_password_keeps_the_old_one(app, tokens):
    change_password(app, tokens["access"], new="1234567890123")
    assert login_status(app, "alice", PASSWORD) == 200


def test_password_change_without_a_token_is_401(app, tokens):
    resp = app.post_json(
        "/api/auth/password/", {"current_password": PASSWORD, "new_password": NEW_PASSWORD}, expect_errors=True
    )
    assert_problem(resp, 401)


def test_password_change_ends_the_previous_access_token(app, tokens):
    change_password(app, tokens["access"])
    assert_problem(me(app, tokens["access"]), 401)


def test_password_change_ends_the_previous_refresh_token(app, tokens):
    change_password(app, tokens["access"])
    assert_token_not_valid(refresh(app, tokens["refresh"]))


def test_password_change_ends_tokens_from_every_login(app, tokens):
    other = obtain_tokens(app, "alice")
    change_password(app, tokens["access"])
    assert me(app, other["access"]).status_int == 401
    assert refresh(app, other["refresh"]).status_int == 401


def test_password_change_bumps_the_token_version(app, tokens):
    before = stored_user("alice").token_version
    change_password(app, tokens["access"])
    assert stored_user("alice").token_version == before + 1


def test_password_change_leaves_other_users_tokens_alone(app, tokens):
    bob = make_user(app, "bob")
    change_password(app, tokens["access"])
    assert me(app, bob["access"]).status_int == 200


# --- verify ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [ACCESS, REFRESH])
def test_verify_accepts_a_valid_token(app, tokens, kind):
    resp = verify(app, tokens[kind])
    assert resp.status_int == 200
    assert resp.json == {}


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.x", " "])
def test_verify_refuses_garbage(app, tokens, token):
    assert_problem(verify(app, token), 401)


def test_verify_without_a_token_is_400_naming_the_field(app):
    body = assert_problem(app.post_json("/api/auth/token/verify/", {}, expect_errors=True), 400)
    assert "token" in body["errors"]


def test_verify_refuses_a_token_signed_with_another_key(app, tokens):
    claims = jwt.decode(tokens["access"], options={"verify_signature": False})
    forged = jwt.encode(claims, "another-secret-key-" + "x" * 32, algorithm="HS256")
    assert_problem(verify(app, forged), 401)


@pytest.mark.parametrize("kind", [ACCESS, REFRESH])
def test_verify_refuses_an_expired_token(app, tokens, kind):
    assert_problem(verify(app, expired_token(kind, stored_user("alice").id)), 401)


# A token is verified once and remembered; the clock must still be read on every use. These
# tokens are accepted first, then the decoder's clock moves past exp + leeway (or before iat).


@pytest.fixture
def token_clock(monkeypatch):
    """``token_clock(t)`` sets the time the token decoder reads to the epoch second ``t``."""
    import types

    import msgapi.tokens

    now = [time.time()]
    monkeypatch.setattr(msgapi.tokens, "time", types.SimpleNamespace(time=lambda: now[0]))

    def set_to(seconds: float) -> None:
        now[0] = seconds

    return set_to


def claim(token: str, name: str) -> int:
    return jwt.decode(token, options={"verify_signature": False})[name]


def test_a_used_bearer_token_is_refused_once_it_expires(app, tokens, token_clock):
    expires = claim(tokens["access"], "exp")
    assert me(app, tokens["access"]).status_int == 200
    token_clock(expires + LEEWAY_SECONDS - 1)
    assert me(app, tokens["access"]).status_int == 200
    token_clock(expires + LEEWAY_SECONDS)
    assert_problem(me(app, tokens["access"]), 401)


def test_a_used_refresh_token_is_refused_once_it_expires(app, tokens, token_clock):
    expires = claim(tokens["refresh"], "exp")
    assert refresh(app, tokens["refresh"]).status_int == 200
    token_clock(expires + LEEWAY_SECONDS - 1)
    assert refresh(app, tokens["refresh"]).status_int == 200
    token_clock(expires + LEEWAY_SECONDS)
    assert_problem(refresh(app, tokens["refresh"]), 401)


@pytest.mark.parametrize("kind", [ACCESS, REFRESH])
def test_verify_refuses_a_verified_token_once_it_expires(app, tokens, token_clock, kind):
    expires = claim(tokens[kind], "exp")
    assert verify(app, tokens[kind]).status_int == 200
    token_clock(expires + LEEWAY_SECONDS - 1)
    assert verify(app, tokens[kind]).status_int == 200
    token_clock(expires + LEEWAY_SECONDS)
    assert_problem(verify(app, tokens[kind]), 401)


@pytest.mark.parametrize("kind", [ACCESS, REFRESH])
def test_verify_refuses_a_verified_token_on_a_clock_before_its_issue(app, tokens, token_clock, kind):
    issued = claim(tokens[kind], "iat")
    assert verify(app, tokens[kind]).status_int == 200
    token_clock(issued - LEEWAY_SECONDS)
    assert verify(app, tokens[kind]).status_int == 200
    token_clock(issued - LEEWAY_SECONDS - 1)
    assert_problem(verify(app, tokens[kind]), 401)


def test_a_used_bearer_token_is_refused_on_a_clock_before_its_issue(app, tokens, token_clock):
    issued = claim(tokens["access"], "iat")
    assert me(app, tokens["access"]).status_int == 200
    token_clock(issued - LEEWAY_SECONDS - 1)
    assert_problem(me(app, tokens["access"]), 401)


def test_verify_refuses_a_blacklisted_refresh_token(app, tokens):
    blacklist(app, tokens["refresh"])
    assert_token_not_valid(verify(app, tokens["refresh"]))


@pytest.mark.parametrize("kind", [ACCESS, REFRESH])
def test_verify_refuses_tokens_revoked_by_a_password_change(app, tokens, kind):
    change_password(app, tokens["access"])
    assert_token_not_valid(verify(app, tokens[kind]))


# --- blacklist ---------------------------------------------------------------------------------------------


def test_blacklist_answers_200_empty(app, tokens):
    resp = blacklist(app, tokens["refresh"])
    assert resp.status_int == 200
    assert resp.json == {}


def test_blacklisted_refresh_token_cannot_refresh(app, tokens):
    blacklist(app, tokens["refresh"])
    assert_token_not_valid(refresh(app, tokens["refresh"]))


def test_blacklisting_one_refresh_token_leaves_other_logins_working(app, tokens):
    other = obtain_tokens(app, "alice")
    blacklist(app, tokens["refresh"])
    assert refresh(app, other["refresh"]).status_int == 200


def test_blacklist_refuses_an_access_token(app, tokens):
    assert_problem(blacklist(app, tokens["access"]), 401)


def test_blacklist_is_seen_by_another_server_process(live_server):
    first, second = live_server(), live_server()
    with WireClient(first.url) as client:
        client.request("POST", "/api/auth/register/", {"username": "alice", "password": PASSWORD})
        pair = client.request("POST", "/api/auth/token/", {"username": "alice", "password": PASSWORD}).json()
    with WireClient(second.url) as client:
        assert client.request("POST", "/api/auth/token/refresh/", {"refresh": pair["refresh"]}).status == 200
    with WireClient(first.url) as client:
        assert client.request("POST", "/api/auth/token/blacklist/", {"refresh": pair["refresh"]}).status == 200
    with WireClient(second.url) as client:
        assert client.request("POST", "/api/auth/token/refresh/", {"refresh": pair["refresh"]}).status == 401


def test_blacklisting_prunes_expired_revocations(app, tokens):
    schema.RevokedToken.create(
        jti="expired-jti", family="expired-fam", reason="logout", expires_at=int(time.time()) - 60
    )
    assert blacklist(app, tokens["refresh"]).status_int == 200
    assert not schema.RevokedToken.select().where(schema.RevokedToken.jti == "expired-jti").exists()


def test_blacklisting_keeps_unexpired_revocations(app, tokens):
    schema.RevokedToken.create(jti="live-jti", family="live-fam", reason="logout", expires_at=int(time.time()) + 3600)
    blacklist(app, tokens["refresh"])
    jtis = {row.jti for row in schema.RevokedToken.select()}
    assert "live-jti" in jtis
    assert jwt.decode(tokens["refresh"], options={"verify_signature": False})["jti"] in jtis


def test_every_revocation_write_prunes_both_kinds_of_expired_revocation(app):
    revocations.revoke_token("old-jti", "old-login", revocations.LOGOUT, 100, 50)
    revocations.revoke_family("old-login", 100, 50)
    assert revocations.is_token_revoked("old-jti") and family_revoked("old-login")
    revocations.revoke_family("new-login", 10_000, 101)
    assert not revocations.is_token_revoked("old-jti") and not family_revoked("old-login")

    revocations.revoke_token("old-jti-2", "old-login-2", revocations.LOGOUT, 200, 150)
    revocations.revoke_family("old-login-2", 200, 150)
    revocations.revoke_token("new-jti", "new-login", revocations.LOGOUT, 10_000, 201)
    assert not revocations.is_token_revoked("old-jti-2") and not family_revoked("old-login-2")
    assert revocations.is_token_revoked("new-jti") and family_revoked("new-login")


def test_a_logged_out_token_stays_refused_after_its_exp_while_the_leeway_accepts_it(app, tokens):
    token = just_expired_refresh_token(user_id_of(tokens["access"]))
    assert refresh(app, token).status_int == 200  # the control: past exp, still accepted
    assert blacklist(app, token).status_int == 200
    assert blacklist(app, tokens["refresh"]).status_int == 200  # another revocation write prunes
    assert_problem(refresh(app, token), 401)


@pytest.mark.parametrize("reason", [revocations.LOGOUT, revocations.ROTATED])
def test_a_revocation_is_kept_while_any_process_could_accept_the_token(app, reason):
    clock = Clock(2_000_000_000.5)
    service = TokenService(TEST_SECRET_KEY, 7200, 86400, clock=clock)
    token = service.issue(REFRESH, 1, 0)
    claims = service.decode(token, REFRESH)
    revocations.revoke_token(claims["jti"], claims["fam"], reason, service.revocation_expiry(claims), service.now())

    # The last moment a process with the right clock accepts the token...
    clock.now = claims["exp"] + LEEWAY_SECONDS - 0.001
    service.decode(token, REFRESH)
    # ...while the process pruning revocations runs the whole leeway ahead.
    revocations.revoke_token("other", "other", revocations.LOGOUT, 0, service.now() + LEEWAY_SECONDS)
    assert revocations.is_token_revoked(claims["jti"])

    # Once no process accepts the token, its revocation may go: the table stays small.
    clock.now = claims["exp"] + LEEWAY_SECONDS
    with pytest.raises(InvalidToken):
        service.decode(token, REFRESH)
    revocations.revoke_token("other-2", "other", revocations.LOGOUT, 0, service.now() + LEEWAY_SECONDS + 1)
    assert not revocations.is_token_revoked(claims["jti"])


def test_a_revoked_login_is_kept_while_any_of_its_tokens_could_be_accepted(app):
    clock = Clock(2_000_000_000.5)
    service = TokenService(TEST_SECRET_KEY, 7200, 86400, clock=clock)
    revoked_at = service.now()
    revocations.revoke_family("the-login", service.family_revocation_expiry(), revoked_at)
    # The login's youngest possible token: issued just then, by a process whose clock runs ahead.
    ahead = TokenService(TEST_SECRET_KEY, 7200, 86400, clock=Clock(revoked_at + LEEWAY_SECONDS))
    token = ahead.issue(REFRESH, 1, 0, "the-login")
    claims = service.decode(token, REFRESH)

    clock.now = claims["exp"] + LEEWAY_SECONDS - 0.001
    service.decode(token, REFRESH)  # still accepted by a verifier with the right clock
    revocations.revoke_token("other", "other", revocations.LOGOUT, 0, service.now() + LEEWAY_SECONDS)
    assert family_revoked("the-login")


# --- refresh-token rotation --------------------------------------------------------------------------------


def test_rotation_is_off_by_default(config):
    assert config.rotate_refresh_tokens is False


def test_refresh_without_rotation_returns_only_an_access_token(app, tokens):
    resp = refresh(app, tokens["refresh"])
    assert resp.status_int == 200
    assert set(resp.json) == {"access"}


def test_refresh_token_is_reusable_without_rotation(app, tokens):
    for _ in range(5):
        assert refresh(app, tokens["refresh"]).status_int == 200


@pytest.fixture
def rotating(make_app):
    """An app with refresh-token rotation on, and alice's token pair."""
    app = make_app(rotate_refresh_tokens=True)
    return app, make_user(app, "alice")


def test_rotation_returns_a_new_access_and_refresh_token(rotating):
    app, pair = rotating
    resp = refresh(app, pair["refresh"])
    assert resp.status_int == 200
    assert set(resp.json) == {"access", "refresh"}
    assert resp.json["refresh"] != pair["refresh"]


def test_rotated_access_token_authenticates(rotating):
    app, pair = rotating
    assert me(app, refresh(app, pair["refresh"]).json["access"]).status_int == 200


def test_rotated_refresh_token_refreshes_in_turn(rotating):
    app, pair = rotating
    token = pair["refresh"]
    for _ in range(3):
        resp = refresh(app, token)
        assert resp.status_int == 200
        token = resp.json["refresh"]


def test_rotation_keeps_the_family(rotating):
    app, pair = rotating
    rotated = refresh(app, pair["refresh"]).json["refresh"]
    family = jwt.decode(pair["refresh"], options={"verify_signature": False})["fam"]
    assert jwt.decode(rotated, options={"verify_signature": False})["fam"] == family


def test_reusing_a_rotated_refresh_token_is_401(rotating):
    app, pair = rotating
    refresh(app, pair["refresh"])
    assert_token_not_valid(refresh(app, pair["refresh"]))


def test_reusing_a_rotated_refresh_token_revokes_the_newest_of_its_family(rotating):
    app, pair = rotating
    first = refresh(app, pair["refresh"]).json["refresh"]
    newest = refresh(app, first).json["refresh"]
    refresh(app, pair["refresh"])  # the reuse
    assert_problem(refresh(app, newest), 401)


def test_refreshing_a_logged_out_token_is_refused_without_ending_its_login(rotating):
    """Only a rotated token coming back shows two holders; a logged-out one is just refused."""
    app, pair = rotating
    assert blacklist(app, pair["refresh"]).status_int == 200
    assert_token_not_valid(refresh(app, pair["refresh"]))
    assert me(app, pair["access"]).status_int == 200


def test_family_revocation_leaves_other_logins_working(rotating):
    app, pair = rotating
    other = obtain_tokens(app, "alice")
    refresh(app, pair["refresh"])
    refresh(app, pair["refresh"])  # the reuse
    assert refresh(app, other["refresh"]).status_int == 200


def test_a_spent_token_stays_spent_after_its_exp_while_the_leeway_accepts_it(rotating):
    app, pair = rotating
    token = just_expired_refresh_token(user_id_of(pair["access"]))
    assert refresh(app, token).status_int == 200  # spends it
    assert blacklist(app, pair["refresh"]).status_int == 200  # another revocation write prunes
    assert_problem(refresh(app, token), 401)


def test_access_and_refresh_tokens_carry_their_login(rotating):
    app, pair = rotating
    assert family_of(pair["access"]) == family_of(pair["refresh"])
    rotated = refresh(app, pair["refresh"]).json
    assert family_of(rotated["access"]) == family_of(rotated["refresh"]) == family_of(pair["refresh"])
    assert family_of(obtain_tokens(app, "alice")["access"]) != family_of(pair["access"])


def test_refreshed_access_token_carries_the_login_without_rotation(app, tokens):
    assert family_of(refresh(app, tokens["refresh"]).json["access"]) == family_of(tokens["refresh"])


def reuse_after_rotation(app, pair: dict) -> dict:
    """Rotate ``pair`` once, then present its spent refresh token again; the rotated pair."""
    rotated = refresh(app, pair["refresh"]).json
    assert me(app, pair["access"]).status_int == 200  # the control: both logins' tokens work
    assert me(app, rotated["access"]).status_int == 200
    assert_problem(refresh(app, pair["refresh"]), 401)  # the reuse
    return rotated


def test_reuse_ends_every_access_token_of_the_login_on_bearer_auth(rotating):
    app, pair = rotating
    rotated = reuse_after_rotation(app, pair)
    for access in (pair["access"], rotated["access"]):
        assert_problem(me(app, access), 401)


def test_reuse_ends_every_access_token_of_the_login_for_creating(rotating):
    app, pair = rotating
    rotated = reuse_after_rotation(app, pair)
    for access in (pair["access"], rotated["access"]):
        resp = app.post_json("/api/messages", {"content": "still me?"}, headers=bearer(access), expect_errors=True)
        assert_problem(resp, 401)
    assert app.get("/api/messages").json == []


def test_reuse_ends_every_token_of_the_login_on_verify(rotating):
    app, pair = rotating
    rotated = reuse_after_rotation(app, pair)
    for token in (pair["access"], rotated["access"], rotated["refresh"]):
        assert_problem(verify(app, token), 401)


def test_reuse_leaves_the_access_tokens_of_other_logins_working(rotating):
    app, pair = rotating
    other = obtain_tokens(app, "alice")
    reuse_after_rotation(app, pair)
    assert me(app, other["access"]).status_int == 200
    assert verify(app, other["access"]).status_int == 200


def test_reuse_ends_the_login_in_another_server_process(live_server):
    env = {"ROTATE_REFRESH_TOKENS": "true"}
    first, second = live_server(env=env), live_server(env=env)
    headers = wire_login(first.url, "alice")
    with WireClient(first.url) as client:
        pair = client.request("POST", "/api/auth/token/", {"username": "alice", "password": PASSWORD}).json()
    with WireClient(second.url) as client:  # the second process verifies and caches the token
        assert client.request("GET", "/api/auth/me", headers=bearer(pair["access"])).status == 200
    with WireClient(first.url) as client:
        assert client.request("POST", "/api/auth/token/refresh/", {"refresh": pair["refresh"]}).status == 200
        assert client.request("POST", "/api/auth/token/refresh/", {"refresh": pair["refresh"]}).status == 401
    with WireClient(second.url) as client:
        assert client.request("GET", "/api/auth/me", headers=bearer(pair["access"])).status == 401
        assert client.request("GET", "/api/auth/me", headers=headers).status == 200  # another login


def test_blacklisted_token_with_rotation_is_401(rotating):
    app, pair = rotating
    blacklist(app, pair["refresh"])
    assert_problem(refresh(app, pair["refresh"]), 401)


def test_concurrent_refreshes_with_one_token_succeed_at_most_once(live_server):
    server = live_server(env={"ROTATE_REFRESH_TOKENS": "true"}, threads=12)
    with WireClient(server.url) as client:
        client.request("POST", "/api/auth/register/", {"username": "alice", "password": PASSWORD})
        token = client.request("POST", "/api/auth/token/", {"username": "alice", "password": PASSWORD}).json()
    clients = [WireClient(server.url) for _ in range(10)]
    barrier = threading.Barrier(len(clients))
    statuses: list[int] = []

    def fire(client: WireClient) -> None:
        barrier.wait()
        statuses.append(client.request("POST", "/api/auth/token/refresh/", {"refresh": token["refresh"]}).status)

    threads = [threading.Thread(target=fire, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for client in clients:
        client.close()
    assert len(statuses) == len(clients)
    assert set(statuses) <= {200, 401}, statuses
    assert statuses.count(200) <= 1, statuses


# --- deactivation ------------------------------------------------------------------------------------------


@pytest.fixture
def staff(app, tokens) -> dict[str, str]:
    """Headers for the staff user ``carol`` (``alice`` exists too)."""
    return staff_headers(app)


def alice_id() -> int:
    return stored_user("alice").id


def test_staff_deactivates_a_user(app, staff):
    resp = set_active(app, staff, alice_id(), False)
    assert resp.status_int == 200
    assert resp.json["is_active"] is False
    assert resp.json["username"] == "alice"


def test_deactivated_user_cannot_log_in(app, staff):
    set_active(app, staff, alice_id(), False)
    assert login_status(app, "alice", PASSWORD) == 401


def test_deactivated_user_cannot_refresh(app, tokens, staff):
    set_active(app, staff, alice_id(), False)
    assert_problem(refresh(app, tokens["refresh"]), 401)


def test_deactivated_users_access_token_is_refused(app, tokens, staff):
    set_active(app, staff, alice_id(), False)
    assert_problem(me(app, tokens["access"]), 401)


def test_non_staff_cannot_deactivate(app, tokens):
    bob = bearer(make_user(app, "bob")["access"])
    assert_problem(set_active(app, bob, alice_id(), False), 403)
    assert stored_user("alice").is_active is True


def test_user_cannot_deactivate_themselves_without_staff(app, tokens):
    assert_problem(set_active(app, bearer(tokens["access"]), alice_id(), False), 403)


def test_deactivating_without_a_token_is_401(app, tokens):
    assert_problem(app.patch_json(f"/api/users/{alice_id()}", {"is_active": False}, expect_errors=True), 401)


@pytest.mark.parametrize("target", ["987654", "0", "abc"])
def test_deactivating_an_unknown_user_is_404(app, staff, target):
    assert_problem(set_active(app, staff, target, False), 404)


@pytest.mark.parametrize("value", ["false", 0, None, "no", [False]])
def test_non_boolean_is_active_is_400(app, staff, value):
    body = assert_problem(set_active(app, staff, alice_id(), value), 400)
    assert "is_active" in body["errors"]
    assert stored_user("alice").is_active is True


def test_reactivation_restores_login(app, staff):
    set_active(app, staff, alice_id(), False)
    resp = set_active(app, staff, alice_id(), True)
    assert resp.status_int == 200
    assert resp.json["is_active"] is True
    assert login_status(app, "alice", PASSWORD) == 200


def test_reactivation_gives_working_tokens(app, staff):
    set_active(app, staff, alice_id(), False)
    set_active(app, staff, alice_id(), True)
    pair = obtain_tokens(app, "alice")
    assert me(app, pair["access"]).status_int == 200
    assert refresh(app, pair["refresh"]).status_int == 200


def test_reactivation_does_not_revive_tokens_issued_before_deactivation(app, tokens, staff):
    set_active(app, staff, alice_id(), False)
    set_active(app, staff, alice_id(), True)
    assert me(app, tokens["access"]).status_int == 401
    assert refresh(app, tokens["refresh"]).status_int == 401


# --- health ------------------------------------------------------------------------------------------------


def test_healthz_is_ok(app):
    resp = app.get("/healthz")
    assert resp.status_int == 200
    assert resp.json == {"status": "ok"}
