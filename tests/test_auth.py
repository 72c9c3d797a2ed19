"""/api/auth/register/, /api/auth/token/, /api/auth/token/refresh/, and Bearer authentication."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
import warnings

import jwt
import pytest
from conftest import (
    PASSWORD,
    TEST_HASH_ITERATIONS,
    TEST_SECRET_KEY,
    assert_problem,
    bearer,
    obtain_tokens,
    register,
    set_next_user_id,
)

from msgapi.store import schema, users
from msgapi.store.connection import database

REGISTER = "/api/auth/register/"
TOKEN = "/api/auth/token/"
REFRESH = "/api/auth/token/refresh/"
PROBLEM_JSON = "application/problem+json"
USER_KEYS = {"id", "username", "email", "first_name", "last_name", "is_staff"}
DJANGO_HASH = re.compile(r"^pbkdf2_sha256\$(\d+)\$([^$]+)\$([A-Za-z0-9+/]+=*)$")
SECRET_PASSWORD = "S3cret-Pa55word-never-echoed"


def assert_field_error(resp, field: str) -> None:
    body = assert_problem(resp, 400)
    assert body["errors"][field]
    assert all(isinstance(message, str) and message for message in body["errors"][field])


def stored_user(username: str) -> schema.User:
    with database.connection_context():
        return schema.User.get(schema.User.username == username)


def store_user(username: str, password_hash: str) -> None:
    with database.connection_context():
        users.create(username, password_hash)


def delete_user(username: str) -> None:
    with database.connection_context():
        schema.User.delete().where(schema.User.username == username).execute()


def django_hash(password: str, iterations: int, salt: str = "Fq3pZ8nWv1xKj2LmQ7rTsU") -> str:
    """A hash as Django's PBKDF2PasswordHasher writes it, made here with the standard library."""
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(digest).decode()}"


def forge(key: str = TEST_SECRET_KEY, algorithm: str = "HS256", **overrides) -> str:
    """A token signed by the test, with the claims the server issues unless overridden (None drops a claim)."""
    now = int(time.time())
    claims = {"token_type": "access", "exp": now + 3600, "iat": now, "jti": uuid.uuid4().hex, "user_id": 1, "ver": 0}
    claims["fam"] = uuid.uuid4().hex  # the login the token descends from
    claims.update(overrides)
    claims = {name: value for name, value in claims.items() if value is not None}
    with warnings.catch_warnings():
        # HS512 with the test key is meant to be refused; PyJWT's key-length advice is noise here.
        warnings.filterwarnings("ignore", message="The HMAC key")
        return jwt.encode(claims, key, algorithm=algorithm)


def claims_of(token: str) -> dict:
    return jwt.decode(token, TEST_SECRET_KEY, algorithms=["HS256"])


def create(app, headers: dict, expect_errors: bool = True):
    return app.post_json("/api/messages", {"content": "hello"}, headers=headers, expect_errors=expect_errors)


# --- register ------------------------------------------------------------------------------------


def test_register_answers_201_with_the_user(app):
    resp = app.post_json(REGISTER, {"username": "alice", "password": PASSWORD})
    assert resp.status_int == 201
    assert resp.content_type == "application/json"
    assert set(resp.json) == USER_KEYS
    assert isinstance(resp.json["id"], int)
    assert resp.json["username"] == "alice"


def test_register_defaults_optional_fields_to_empty_and_not_staff(app):
    user = register(app, "alice")
    assert (user["email"], user["first_name"], user["last_name"], user["is_staff"]) == ("", "", "", False)


def test_register_stores_optional_profile_fields(app):
    user = register(app, "alice", email="alice@example.com", first_name="Alice", last_name="Liddell")
    assert (user["email"], user["first_name"], user["last_name"]) == ("alice@example.com", "Alice", "Liddell")


def test_register_gives_each_user_their_own_id(app):
    assert register(app, "alice")["id"] != register(app, "bob")["id"]


def test_register_accepts_a_form_body(app):
    resp = app.post(REGISTER, {"username": "alice", "password": PASSWORD})
    assert resp.status_int == 201
    assert resp.json["username"] == "alice"


def test_registered_user_can_obtain_tokens(app):
    app.post(REGISTER, {"username": "alice", "password": PASSWORD})
    assert set(obtain_tokens(app, "alice")) == {"refresh", "access"}


def test_register_does_not_echo_the_password(app):
    resp = app.post_json(REGISTER, {"username": "alice", "password": SECRET_PASSWORD})
    assert "password" not in resp.json
    assert SECRET_PASSWORD not in resp.text
    assert SECRET_PASSWORD not in str(resp.headers)


def test_failed_register_does_not_echo_the_password(app):
    resp = app.post_json(REGISTER, {"username": "not valid!", "password": SECRET_PASSWORD}, status=400)
    assert SECRET_PASSWORD not in resp.text


@pytest.mark.parametrize("password", ["short", "1234567890", "alice"])
def test_rejected_password_is_not_echoed(app, password):
    resp = app.post_json(REGISTER, {"username": "alice", "password": password}, status=400)
    assert f'"{password}"' not in resp.text
    assert f"'{password}'" not in resp.text


@pytest.fixture
def hashing_work(monkeypatch):
    """The PBKDF2 runs (their iteration counts) and constant-time comparisons a request made.

    The real functions still run: the spy only records each call on its way through.
    """
    import types

    import msgapi.passwords

    work: dict[str, list] = {"pbkdf2": [], "compare_digest": []}

    def pbkdf2_hmac(name, password, salt, iterations, *args):
        work["pbkdf2"].append(iterations)
        return hashlib.pbkdf2_hmac(name, password, salt, iterations, *args)

    def compare_digest(a, b):
        work["compare_digest"].append((a, b))
        return hmac.compare_digest(a, b)

    monkeypatch.setattr(msgapi.passwords, "hashlib", types.SimpleNamespace(pbkdf2_hmac=pbkdf2_hmac))
    monkeypatch.setattr(msgapi.passwords, "hmac", types.SimpleNamespace(compare_digest=compare_digest))
    return work


@pytest.mark.parametrize(
    ("username", "password"),
    [
        pytest.param("nobody", PASSWORD, id="unknown-user"),
        pytest.param("alice", "wrong password", id="wrong-password"),
        pytest.param("inactive", PASSWORD, id="inactive-user"),
        pytest.param("alice", PASSWORD, id="right-password"),
    ],
)
def test_every_login_does_the_same_hashing_work(app, hashing_work, username, password):
    # Equal bodies are not enough: answering an unknown name without hashing is fast, and
    # the time alone would tell which usernames exist.
    register(app, "alice")
    register(app, "inactive")
    schema.User.update(is_active=False).where(schema.User.username_key == "inactive").execute()
    hashing_work["pbkdf2"].clear()
    hashing_work["compare_digest"].clear()
    app.post_json(
        TOKEN,
        {"username": username, "password": password},
        status=200 if username == "alice" and password == PASSWORD else 401,
    )
    assert hashing_work["pbkdf2"] == [TEST_HASH_ITERATIONS]
    assert len(hashing_work["compare_digest"]) == 1


def test_password_check_compares_in_constant_time(app, hashing_work):
    register(app, "alice")
    hashing_work["compare_digest"].clear()
    app.post_json(TOKEN, {"username": "alice", "password": "wrong password"}, status=401)
    [(computed, stored)] = hashing_work["compare_digest"]
    assert stored == stored_user("alice").password.rsplit("$", 1)[1].encode()
    assert computed != stored and len(computed) == len(stored)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"password": PASSWORD}, "username", id="missing-username"),
        pytest.param({"username": "", "password": PASSWORD}, "username", id="blank-username"),
        pytest.param({"username": "   ", "password": PASSWORD}, "username", id="spaces-username"),
        pytest.param({"username": None, "password": PASSWORD}, "username", id="null-username"),
        pytest.param({"username": 42, "password": PASSWORD}, "username", id="number-username"),
        pytest.param({"username": "alice"}, "password", id="missing-password"),
        pytest.param({"username": "alice", "password": ""}, "password", id="blank-password"),
        pytest.param({"username": "alice", "password": None}, "password", id="null-password"),
        pytest.param({"username": "alice", "password": 12345678}, "password", id="number-password"),
    ],
)
def test_register_rejects_missing_or_blank_credentials(app, body, field):
    assert_field_error(app.post_json(REGISTER, body, expect_errors=True), field)


def test_register_with_an_empty_body_names_both_fields(app):
    body = assert_problem(app.post(REGISTER, expect_errors=True), 400)
    assert {"username", "password"} <= set(body["errors"])


def test_rejected_register_creates_no_user(app):
    app.post_json(REGISTER, {"username": "alice", "password": "short"}, status=400)
    assert_problem(app.post_json(TOKEN, {"username": "alice", "password": "short"}, expect_errors=True), 401)


@pytest.mark.parametrize(
    "username",
    [
        pytest.param("a", id="1-char"),
        pytest.param("a" * 150, id="150-chars"),
        pytest.param("a.b@c+d-e_f", id="all-symbols"),
        pytest.param("user123", id="digits"),
        pytest.param("jürgen", id="non-ascii-letters"),
        pytest.param("@.+-_", id="symbols-only"),
    ],
)
def test_register_accepts_valid_usernames(app, username):
    resp = app.post_json(REGISTER, {"username": username, "password": PASSWORD}, status=201)
    assert resp.json["username"] == username


@pytest.mark.parametrize(
    "username",
    [
        pytest.param("a" * 151, id="151-chars"),
        pytest.param("has space", id="space"),
        pytest.param("bad!", id="exclamation"),
        pytest.param("a/b", id="slash"),
        pytest.param("semi;colon", id="semicolon"),
        pytest.param("line\nbreak", id="newline"),
        pytest.param("trailing\n", id="trailing-newline"),
        pytest.param("<script>", id="markup"),
    ],
)
def test_register_rejects_invalid_usernames(app, username):
    assert_field_error(
        app.post_json(REGISTER, {"username": username, "password": PASSWORD}, expect_errors=True), "username"
    )


def test_register_rejects_a_taken_username(app):
    register(app, "bob")
    assert_field_error(
        app.post_json(REGISTER, {"username": "bob", "password": PASSWORD}, expect_errors=True), "username"
    )


@pytest.mark.parametrize("second", ["Bob", "BOB", "bOb"])
def test_register_rejects_a_username_differing_only_in_case(app, second):
    register(app, "bob")
    resp = app.post_json(REGISTER, {"username": second, "password": PASSWORD}, expect_errors=True)
    assert_field_error(resp, "username")


FULLWIDTH_ADMIN = "\uff41\uff44\uff4d\uff49\uff4e"  # "admin" in fullwidth letters; NFKC makes it "admin"


@pytest.mark.parametrize("second", [FULLWIDTH_ADMIN, FULLWIDTH_ADMIN.upper()])
def test_register_rejects_a_username_equal_after_nfkc_normalisation(app, second):
    register(app, "admin")
    resp = app.post_json(REGISTER, {"username": second, "password": PASSWORD}, expect_errors=True)
    assert_field_error(resp, "username")


def test_register_stores_a_username_nfkc_normalised(app):
    assert register(app, FULLWIDTH_ADMIN)["username"] == "admin"


def test_login_with_a_nfkc_equivalent_username_is_the_same_account(app):
    user = register(app, "admin")
    resp = app.post_json(TOKEN, {"username": FULLWIDTH_ADMIN, "password": PASSWORD}, status=200)
    assert claims_of(resp.json["access"])["user_id"] == user["id"]


def test_register_accepts_a_name_whose_case_folded_key_just_fits(app):
    assert register(app, "\u00df" * 75)["username"] == "\u00df" * 75  # ß folds to "ss": 150 characters


@pytest.mark.parametrize("name", ["\u00df" * 76, "\ufb03" * 51], ids=["sharp-s-76", "ffi-ligature-51"])
def test_register_refuses_a_name_too_long_once_normalised_or_case_folded(app, name):
    resp = app.post_json(REGISTER, {"username": name, "password": PASSWORD}, expect_errors=True)
    assert_field_error(resp, "username")


@pytest.mark.parametrize("name", ["\ufb03" * 150, "\u00df" * 150], ids=["ffi-ligature-150", "sharp-s-150"])
def test_login_with_a_name_too_long_once_case_folded_is_the_normal_401(app, name):
    resp = app.post_json(TOKEN, {"username": name, "password": PASSWORD}, expect_errors=True)
    assert_problem(resp, 401)


def test_register_keeps_the_first_user_when_a_name_is_taken(app):
    register(app, "bob")
    app.post_json(REGISTER, {"username": "Bob", "password": "another password"}, status=400)
    app.post_json(TOKEN, {"username": "bob", "password": PASSWORD}, status=200)


def test_register_rejects_a_7_character_password(app):
    assert_field_error(
        app.post_json(REGISTER, {"username": "alice", "password": "abcdefg"}, expect_errors=True), "password"
    )


def test_register_accepts_an_8_character_password(app):
    app.post_json(REGISTER, {"username": "alice", "password": "abcdefgh"}, status=201)


def test_register_rejects_an_all_digit_password(app):
    assert_field_error(
        app.post_json(REGISTER, {"username": "alice", "password": "1234567890"}, expect_errors=True), "password"
    )


def test_register_rejects_a_password_equal_to_the_username(app):
    resp = app.post_json(REGISTER, {"username": "alice12345", "password": "alice12345"}, expect_errors=True)
    assert_field_error(resp, "password")


@pytest.mark.parametrize("field", ["username", "password", "email", "first_name", "last_name"])
def test_register_rejects_a_nul_character_in_any_field(app, field):
    body = {"username": "alice", "password": PASSWORD, "email": "a@example.com", "first_name": "A", "last_name": "L"}
    body[field] = body[field][:1] + "\x00" + body[field][1:]
    assert_field_error(app.post_json(REGISTER, body, expect_errors=True), field)


def test_register_rejects_a_nul_character_in_a_form_body(app):
    resp = app.post(
        REGISTER,
        "username=al%00ice&password=correct+horse+battery",
        content_type="application/x-www-form-urlencoded",
        expect_errors=True,
    )
    assert_field_error(resp, "username")


def test_register_rejects_an_unsupported_content_type(app):
    resp = app.post(REGISTER, b"username=alice", content_type="text/plain", expect_errors=True)
    assert_problem(resp, 415)


def test_register_rejects_malformed_json(app):
    resp = app.post(REGISTER, b'{"username": "alice",', content_type="application/json", expect_errors=True)
    assert_problem(resp, 400)


def test_register_rejects_json_that_is_not_an_object(app):
    resp = app.post(REGISTER, b'["alice", "pw"]', content_type="application/json", expect_errors=True)
    assert_problem(resp, 400)


# --- password storage ----------------------------------------------------------------------------


def test_password_is_stored_in_django_pbkdf2_format(app):
    register(app, "alice")
    assert DJANGO_HASH.match(stored_user("alice").password)


def test_stored_hash_is_the_pbkdf2_of_the_password(app):
    register(app, "alice")
    iterations, salt, _ = stored_user("alice").password.split("$")[1:]
    assert stored_user("alice").password == django_hash(PASSWORD, int(iterations), salt)


def test_password_is_hashed_with_the_configured_iterations(app):
    register(app, "alice")
    assert DJANGO_HASH.match(stored_user("alice").password).group(1) == str(TEST_HASH_ITERATIONS)


def test_equal_passwords_get_different_salts(app):
    register(app, "alice")
    register(app, "bob")
    assert stored_user("alice").password.split("$")[2] != stored_user("bob").password.split("$")[2]


def test_a_django_hash_logs_in(app):
    store_user("legacy", django_hash("legacy password", TEST_HASH_ITERATIONS))
    resp = app.post_json(TOKEN, {"username": "legacy", "password": "legacy password"})
    assert resp.status_int == 200
    assert claims_of(resp.json["access"])["user_id"] == stored_user("legacy").id


def test_a_django_hash_refuses_the_wrong_password(app):
    store_user("legacy", django_hash("legacy password", TEST_HASH_ITERATIONS))
    assert_problem(app.post_json(TOKEN, {"username": "legacy", "password": "wrong password"}, expect_errors=True), 401)


def test_login_upgrades_a_hash_with_fewer_iterations(app):
    store_user("legacy", django_hash("legacy password", 500))
    app.post_json(TOKEN, {"username": "legacy", "password": "legacy password"}, status=200)
    upgraded = DJANGO_HASH.match(stored_user("legacy").password)
    assert upgraded.group(1) == str(TEST_HASH_ITERATIONS)


def test_upgraded_hash_still_verifies(app):
    store_user("legacy", django_hash("legacy password", 500))
    app.post_json(TOKEN, {"username": "legacy", "password": "legacy password"}, status=200)
    app.post_json(TOKEN, {"username": "legacy", "password": "legacy password"}, status=200)
    _, iterations, salt, _ = stored_user("legacy").password.split("$")
    assert stored_user("legacy").password == django_hash("legacy password", int(iterations), salt)


def test_failed_login_does_not_upgrade_the_hash(app):
    original = django_hash("legacy password", 500)
    store_user("legacy", original)
    app.post_json(TOKEN, {"username": "legacy", "password": "wrong password"}, status=401)
    assert stored_user("legacy").password == original


def test_a_hash_upgrade_does_not_undo_a_password_change(app):
    register(app, "alice")
    access = obtain_tokens(app, "alice")["access"]
    checked = stored_user("alice")  # what a login read and checked, before a change landed
    new = {"current_password": PASSWORD, "new_password": "a brand new passphrase"}
    app.post_json("/api/auth/password/", new, headers=bearer(access), status=200)
    with database.connection_context():
        assert not users.upgrade_password_hash(checked, django_hash(PASSWORD, TEST_HASH_ITERATIONS))
    app.post_json(TOKEN, {"username": "alice", "password": "a brand new passphrase"}, status=200)
    app.post_json(TOKEN, {"username": "alice", "password": PASSWORD}, status=401)


@pytest.fixture
def pbkdf2_rounds(monkeypatch) -> list[int]:
    """The iterations of every PBKDF2 computed from now on; a spy: the real function still runs."""
    rounds: list[int] = []
    real = hashlib.pbkdf2_hmac

    def spy(hash_name, password, salt, iterations, dklen=None):
        rounds.append(iterations)
        return real(hash_name, password, salt, iterations, dklen)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", spy)
    return rounds


def set_up_account(state: str) -> None:
    """An account ``victim`` in ``state`` (password PASSWORD where it has one), or none."""
    hashes = {
        "configured-hash": django_hash(PASSWORD, TEST_HASH_ITERATIONS),
        "weaker-hash": django_hash(PASSWORD, TEST_HASH_ITERATIONS // 10),
        "stronger-hash": django_hash(PASSWORD, TEST_HASH_ITERATIONS * 2),
        "inactive": django_hash(PASSWORD, TEST_HASH_ITERATIONS),
        # Imported from Django with another hasher, or marked unusable there.
        "other-algorithm": "bcrypt_sha256$$2b$12$Pjbc3F3oN0eFxGfwB8tQFO1xYQ8bdVnhZOvtbs6Q5KHcOKfPf3i1W",
        "unusable": "!" + "x" * 40,
    }
    if state == "unknown":
        return
    store_user("victim", hashes[state])
    if state == "inactive":
        with database.connection_context():
            schema.User.update(is_active=False).where(schema.User.username == "victim").execute()


@pytest.mark.parametrize(
    "state", ["configured-hash", "weaker-hash", "inactive", "other-algorithm", "unusable", "unknown"]
)
def test_a_failed_login_spends_the_configured_work_whatever_the_account(app, pbkdf2_rounds, state):
    set_up_account(state)
    pbkdf2_rounds.clear()
    app.post_json(TOKEN, {"username": "victim", "password": "not the password"}, status=401)
    assert sum(pbkdf2_rounds) == TEST_HASH_ITERATIONS


def test_a_stronger_imported_hash_is_checked_at_its_own_cost(app, pbkdf2_rounds):
    set_up_account("stronger-hash")
    pbkdf2_rounds.clear()
    app.post_json(TOKEN, {"username": "victim", "password": "not the password"}, status=401)
    assert sum(pbkdf2_rounds) == 2 * TEST_HASH_ITERATIONS


def test_a_login_with_a_weaker_hash_spends_the_configured_work_before_the_upgrade(app, pbkdf2_rounds):
    set_up_account("weaker-hash")
    pbkdf2_rounds.clear()
    app.post_json(TOKEN, {"username": "victim", "password": PASSWORD}, status=200)
    # The check, then the new hash it is upgraded to.
    assert sum(pbkdf2_rounds) == 2 * TEST_HASH_ITERATIONS
    assert stored_user("victim").password.startswith(f"pbkdf2_sha256${TEST_HASH_ITERATIONS}$")


def test_a_wrong_current_password_spends_the_configured_work_whatever_the_hash(app, pbkdf2_rounds):
    register(app, "alice")
    access = obtain_tokens(app, "alice")["access"]
    with database.connection_context():
        weaker = django_hash(PASSWORD, TEST_HASH_ITERATIONS // 10)
        schema.User.update(password=weaker).where(schema.User.username == "alice").execute()
    pbkdf2_rounds.clear()
    body = {"current_password": "not the password", "new_password": "a brand new passphrase"}
    app.post_json("/api/auth/password/", body, headers=bearer(access), status=400)
    assert sum(pbkdf2_rounds) == TEST_HASH_ITERATIONS


def test_login_keeps_a_hash_with_the_configured_iterations(app):
    register(app, "alice")
    before = stored_user("alice").password
    obtain_tokens(app, "alice")
    assert stored_user("alice").password == before


# --- token ---------------------------------------------------------------------------------------


def test_token_answers_200_with_refresh_and_access(app):
    register(app, "alice")
    resp = app.post_json(TOKEN, {"username": "alice", "password": PASSWORD})
    assert resp.status_int == 200
    assert set(resp.json) == {"refresh", "access"}
    assert all(isinstance(token, str) and token for token in resp.json.values())


def test_token_response_is_not_stored_by_caches(app):
    register(app, "alice")
    resp = app.post_json(TOKEN, {"username": "alice", "password": PASSWORD})
    assert "no-store" in resp.headers["Cache-Control"]


def test_token_accepts_a_form_body(app):
    register(app, "alice")
    resp = app.post(TOKEN, {"username": "alice", "password": PASSWORD})
    assert set(resp.json) == {"refresh", "access"}


def test_token_does_not_echo_the_password(app):
    register(app, "alice", password=SECRET_PASSWORD)
    resp = app.post_json(TOKEN, {"username": "alice", "password": SECRET_PASSWORD})
    assert SECRET_PASSWORD not in resp.text
    assert SECRET_PASSWORD not in json.dumps([claims_of(token) for token in resp.json.values()])


def test_failed_token_does_not_echo_the_password(app):
    register(app, "alice")
    resp = app.post_json(TOKEN, {"username": "alice", "password": SECRET_PASSWORD}, status=401)
    assert SECRET_PASSWORD not in resp.text


def test_token_with_wrong_password_is_401(app):
    register(app, "alice")
    resp = app.post_json(TOKEN, {"username": "alice", "password": "wrong password"}, expect_errors=True)
    assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_token_for_unknown_user_is_401(app):
    resp = app.post_json(TOKEN, {"username": "nobody", "password": PASSWORD}, expect_errors=True)
    assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_wrong_password_and_unknown_user_answer_the_same(app):
    register(app, "alice")
    wrong_password = app.post_json(TOKEN, {"username": "alice", "password": "wrong password"}, status=401)
    unknown_user = app.post_json(TOKEN, {"username": "nobody", "password": "wrong password"}, status=401)
    assert wrong_password.json == unknown_user.json
    assert wrong_password.headers["WWW-Authenticate"] == unknown_user.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"password": PASSWORD}, "username", id="missing-username"),
        pytest.param({"username": "", "password": PASSWORD}, "username", id="blank-username"),
        pytest.param({"username": None, "password": PASSWORD}, "username", id="null-username"),
        pytest.param({"username": "alice"}, "password", id="missing-password"),
        pytest.param({"username": "alice", "password": ""}, "password", id="blank-password"),
        pytest.param({"username": "alice", "password": None}, "password", id="null-password"),
        pytest.param({"username": "alice", "password": "a\x00b"}, "password", id="nul-password"),
        pytest.param({"username": "ali\x00ce", "password": PASSWORD}, "username", id="nul-username"),
    ],
)
def test_token_rejects_missing_or_blank_credentials(app, body, field):
    register(app, "alice")
    assert_field_error(app.post_json(TOKEN, body, expect_errors=True), field)


def test_token_with_an_empty_body_names_both_fields(app):
    body = assert_problem(app.post(TOKEN, expect_errors=True), 400)
    assert {"username", "password"} <= set(body["errors"])


def test_token_rejects_an_unsupported_content_type(app):
    assert_problem(app.post(TOKEN, b"alice:pw", content_type="text/plain", expect_errors=True), 415)


# --- token claims --------------------------------------------------------------------------------


def test_tokens_are_hs256_jwts(tokens):
    assert jwt.get_unverified_header(tokens["access"])["alg"] == "HS256"
    assert jwt.get_unverified_header(tokens["refresh"])["alg"] == "HS256"


@pytest.mark.parametrize("kind", ["access", "refresh"])
def test_token_carries_simplejwt_claims(tokens, kind):
    assert {"token_type", "exp", "iat", "jti", "user_id"} <= set(claims_of(tokens[kind]))


@pytest.mark.parametrize("kind", ["access", "refresh"])
def test_token_type_claim_names_the_kind(tokens, kind):
    assert claims_of(tokens[kind])["token_type"] == kind


def test_token_user_id_is_the_registered_user(app):
    user = register(app, "bob")
    assert claims_of(obtain_tokens(app, "bob")["access"])["user_id"] == user["id"]


def test_access_token_lives_two_hours(tokens):
    claims = claims_of(tokens["access"])
    assert claims["exp"] - claims["iat"] == 2 * 3600


def test_refresh_token_lives_24_hours(tokens):
    claims = claims_of(tokens["refresh"])
    assert claims["exp"] - claims["iat"] == 24 * 3600


def test_token_is_issued_now(app):
    register(app, "alice")
    before = int(time.time())
    issued = claims_of(obtain_tokens(app, "alice")["access"])["iat"]
    assert before <= issued <= int(time.time())


def test_every_token_has_its_own_jti(app, tokens):
    again = obtain_tokens(app, "alice")
    jtis = {claims_of(token)["jti"] for token in (*tokens.values(), *again.values())}
    assert len(jtis) == 4


# --- refresh -------------------------------------------------------------------------------------


def test_refresh_answers_200_with_a_new_access_token(app, tokens):
    resp = app.post_json(REFRESH, {"refresh": tokens["refresh"]})
    assert resp.status_int == 200
    assert set(resp.json) == {"access"}
    assert claims_of(resp.json["access"])["token_type"] == "access"


def test_refreshed_access_token_is_for_the_same_user(app, tokens):
    access = app.post_json(REFRESH, {"refresh": tokens["refresh"]}).json["access"]
    assert claims_of(access)["user_id"] == claims_of(tokens["refresh"])["user_id"]


def test_refreshed_access_token_lives_two_hours(app, tokens):
    claims = claims_of(app.post_json(REFRESH, {"refresh": tokens["refresh"]}).json["access"])
    assert claims["exp"] - claims["iat"] == 2 * 3600


def test_refreshed_access_token_authenticates(app, tokens):
    access = app.post_json(REFRESH, {"refresh": tokens["refresh"]}).json["access"]
    assert create(app, bearer(access), expect_errors=False).status_int == 201


def test_refresh_response_is_not_stored_by_caches(app, tokens):
    resp = app.post_json(REFRESH, {"refresh": tokens["refresh"]})
    assert "no-store" in resp.headers["Cache-Control"]


def test_refresh_accepts_a_form_body(app, tokens):
    resp = app.post(REFRESH, {"refresh": tokens["refresh"]})
    assert set(resp.json) == {"access"}


def test_refresh_refuses_an_access_token(app, tokens):
    resp = app.post_json(REFRESH, {"refresh": tokens["access"]}, expect_errors=True)
    assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("not-a-jwt", id="garbage"),
        pytest.param(forge(token_type="refresh", key="another-key-" + "x" * 32), id="wrong-key"),
        pytest.param(forge(token_type="refresh", exp=int(time.time()) - 3600), id="expired"),
        pytest.param(forge(token_type="refresh", algorithm="HS512"), id="hs512"),
        pytest.param(forge(token_type="refresh", jti=None), id="no-jti"),
        pytest.param(forge(token_type="refresh", user_id=None), id="no-user-id"),
        pytest.param(forge(token_type="something"), id="unknown-type"),
        pytest.param(
            jwt.encode(
                {"token_type": "refresh", "exp": 2**40, "iat": 0, "jti": "x", "user_id": 1, "ver": 0, "fam": "f"},
                None,
                "none",
            ),
            id="alg-none",
        ),
    ],
)
def test_refresh_refuses_a_bad_token(app, tokens, token):
    resp = app.post_json(REFRESH, {"refresh": token}, expect_errors=True)
    assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_refresh_accepts_a_token_forged_with_the_right_key(app, tokens):
    # The counterpart of the bad-token table: the forging helper itself makes valid tokens.
    user_id = claims_of(tokens["refresh"])["user_id"]
    app.post_json(REFRESH, {"refresh": forge(token_type="refresh", user_id=user_id)}, status=200)


def test_refresh_for_a_deleted_user_is_401(app, tokens):
    delete_user("alice")
    assert_problem(app.post_json(REFRESH, {"refresh": tokens["refresh"]}, expect_errors=True), 401)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="missing"),
        pytest.param({"refresh": ""}, id="blank"),
        pytest.param({"refresh": None}, id="null"),
        pytest.param({"refresh": 5}, id="number"),
        pytest.param({"refresh": "abc\x00def"}, id="nul"),
    ],
)
def test_refresh_rejects_a_missing_or_blank_token(app, body):
    assert_field_error(app.post_json(REFRESH, body, expect_errors=True), "refresh")


def test_refresh_rejects_an_unsupported_content_type(app, tokens):
    assert_problem(app.post(REFRESH, tokens["refresh"].encode(), content_type="text/plain", expect_errors=True), 415)


# --- Bearer authentication -----------------------------------------------------------------------


def test_access_token_authenticates(app, tokens):
    assert create(app, bearer(tokens["access"]), expect_errors=False).status_int == 201


def test_refresh_token_is_not_accepted_as_an_access_token(app, tokens):
    resp = create(app, bearer(tokens["refresh"]))
    assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_missing_token_is_challenged_without_an_error(app):
    resp = create(app, {})
    assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("not-a-jwt", id="garbage"),
        pytest.param(forge(key="another-key-" + "x" * 32), id="wrong-key"),
        pytest.param(forge(exp=int(time.time()) - 3600), id="expired"),
        pytest.param(forge(algorithm="HS512"), id="hs512"),
        pytest.param(forge(token_type=None), id="no-token-type"),
        pytest.param(forge(jti=None), id="no-jti"),
        pytest.param(forge(exp=None), id="no-exp"),
        pytest.param(forge(user_id="1"), id="string-user-id"),
        pytest.param(
            jwt.encode(
                {"token_type": "access", "exp": 2**40, "iat": 0, "jti": "x", "user_id": 1, "ver": 0}, None, "none"
            ),
            id="alg-none",
        ),
    ],
)
def test_bad_access_token_is_401_invalid_token(app, tokens, token):
    resp = create(app, bearer(token))
    assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_a_token_forged_with_the_right_key_authenticates(app, tokens):
    # The counterpart of the bad-token table: the forging helper itself makes valid tokens.
    user_id = claims_of(tokens["access"])["user_id"]
    assert create(app, bearer(forge(user_id=user_id)), expect_errors=False).status_int == 201


def test_access_token_for_an_unknown_user_id_is_401(app, tokens):
    assert_problem(create(app, bearer(forge(user_id=4242))), 401)


def test_access_token_for_a_deleted_user_is_401(app, tokens):
    delete_user("alice")
    resp = create(app, bearer(tokens["access"]))
    assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_other_authorization_scheme_is_401(app, tokens):
    credentials = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    resp = create(app, {"Authorization": f"Basic {credentials}"})
    assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_bearer_without_a_token_is_401(app, tokens):
    assert_problem(create(app, {"Authorization": "Bearer"}), 401)


# --- paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/auth/register", "/api/auth/register/"])
def test_register_path_works_with_or_without_trailing_slash(app, path):
    app.post_json(path, {"username": "alice", "password": PASSWORD}, status=201)


@pytest.mark.parametrize("path", ["/api/auth/token", "/api/auth/token/"])
def test_token_path_works_with_or_without_trailing_slash(app, path):
    register(app, "alice")
    assert set(app.post_json(path, {"username": "alice", "password": PASSWORD}).json) == {"refresh", "access"}


@pytest.mark.parametrize("path", ["/api/auth/token/refresh", "/api/auth/token/refresh/"])
def test_refresh_path_works_with_or_without_trailing_slash(app, tokens, path):
    assert set(app.post_json(path, {"refresh": tokens["refresh"]}).json) == {"access"}


@pytest.mark.parametrize("path", [REGISTER, TOKEN, REFRESH])
@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_auth_paths_refuse_other_methods_with_405(app, path, method):
    resp = app.request(path, method=method, expect_errors=True)
    assert_problem(resp, 405)
    assert "POST" in resp.headers["Allow"]


@pytest.mark.parametrize("path", [REGISTER, TOKEN, REFRESH])
def test_auth_paths_carry_nosniff_and_request_id(app, path):
    resp = app.post_json(path, {}, expect_errors=True)
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Request-ID"]


@pytest.mark.parametrize("path", [REGISTER, TOKEN, REFRESH])
def test_auth_body_over_64_kib_is_413(app, path):
    raw = json.dumps({"username": "x" * 70_000, "password": PASSWORD, "refresh": "x"}).encode()
    assert_problem(app.post(path, raw, content_type="application/json", expect_errors=True), 413)


def test_a_body_of_exactly_the_limit_is_read(app, config):
    raw = json.dumps({"username": "edge", "password": PASSWORD}).encode()
    raw += b" " * (config.max_body_bytes - len(raw))  # JSON allows trailing whitespace
    assert len(raw) == config.max_body_bytes
    assert app.post(REGISTER, raw, content_type="application/json").status_int == 201


# --- the old service's scenario, end to end ------------------------------------------------------


def test_register_obtain_and_refresh(app):
    user = app.post_json(REGISTER, {"username": "carol", "password": PASSWORD}, status=201).json
    pair = app.post_json(TOKEN, {"username": "carol", "password": PASSWORD}, status=200).json
    access = app.post_json(REFRESH, {"refresh": pair["refresh"]}, status=200).json["access"]
    message = create(app, bearer(access), expect_errors=False).json
    assert claims_of(access)["user_id"] == user["id"]
    assert message["author"] == "carol"


def test_the_highest_possible_user_id_still_authenticates(app, database_url):
    """Ids run up to 2**31 - 1 (a 32-bit signed column); the last one is a user like any other."""
    last_id = 2**31 - 1
    set_next_user_id(database_url, last_id)
    assert register(app, "last")["id"] == last_id
    access = obtain_tokens(app, "last")["access"]
    assert app.get("/api/auth/me", headers=bearer(access)).json["id"] == last_id
