"""Unit tests of msgapi.passwords and msgapi.tokens: no database, no HTTP."""

from __future__ import annotations

import base64
import hashlib
import time
import warnings

import jwt
import pytest

from msgapi import passwords
from msgapi.tokens import ACCESS, REFRESH, InvalidToken, TokenService

KEY = "unit-test-secret-key-" + "u" * 32
ACCESS_LIFETIME = 2 * 3600
REFRESH_LIFETIME = 24 * 3600
ITERATIONS = 1000
VERSION = 0  # the user's token version, an extra claim beside simplejwt's


def django_hash(password: str, iterations: int, salt: str) -> str:
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(digest).decode()}"


@pytest.fixture
def service() -> TokenService:
    return TokenService(KEY, ACCESS_LIFETIME, REFRESH_LIFETIME)


def sign(claims: dict, key: str = KEY, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The HMAC key")
        return jwt.encode(claims, key, algorithm=algorithm)


def valid_claims(**overrides) -> dict:
    now = int(time.time())
    claims = {"token_type": ACCESS, "exp": now + 600, "iat": now, "jti": "abc123", "user_id": 7, "ver": 0}
    claims["fam"] = "login1"
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


# --- passwords -----------------------------------------------------------------------------------


def test_make_password_uses_the_django_format():
    algorithm, iterations, salt, digest = passwords.make_password("secret words", ITERATIONS).split("$")
    assert (algorithm, iterations) == ("pbkdf2_sha256", str(ITERATIONS))
    assert salt.isalnum()
    assert len(base64.b64decode(digest, validate=True)) == 32


def test_make_password_matches_django_for_a_given_salt():
    assert passwords.make_password("secret words", ITERATIONS, salt="NaCl") == django_hash(
        "secret words", ITERATIONS, "NaCl"
    )


def test_make_password_salts_have_at_least_128_bits():
    salt = passwords.make_password("secret words", ITERATIONS).split("$")[2]
    assert len(salt) >= 22


def test_make_password_uses_a_fresh_salt_each_time():
    first = passwords.make_password("secret words", ITERATIONS)
    second = passwords.make_password("secret words", ITERATIONS)
    assert first.split("$")[2] != second.split("$")[2]


def test_make_password_does_not_contain_the_password():
    assert "secret words" not in passwords.make_password("secret words", ITERATIONS)


def test_verify_accepts_the_right_password():
    assert passwords.verify_password("secret words", passwords.make_password("secret words", ITERATIONS))


def test_verify_accepts_a_hash_of_a_single_iteration():
    # Any positive count is Django's format; only zero and below are malformed.
    assert passwords.verify_password("secret words", passwords.make_password("secret words", 1))


def test_verify_refuses_a_wrong_password():
    assert not passwords.verify_password("secret word", passwords.make_password("secret words", ITERATIONS))


def test_verify_is_case_sensitive():
    assert not passwords.verify_password("Secret Words", passwords.make_password("secret words", ITERATIONS))


def test_verify_accepts_a_django_hash():
    assert passwords.verify_password("lètmein ünïcode", django_hash("lètmein ünïcode", 500, "seasalt"))


def test_verify_uses_the_iterations_in_the_hash():
    encoded = django_hash("secret words", 500, "seasalt")
    assert passwords.verify_password("secret words", encoded)
    assert not passwords.verify_password("secret words", encoded.replace("$500$", "$501$"))


@pytest.mark.parametrize(
    "encoded",
    [
        pytest.param("", id="empty"),
        pytest.param("secret words", id="plain-text"),
        pytest.param(django_hash("secret words", 500, "s").replace("pbkdf2_sha256", "pbkdf2_sha1"), id="other-algo"),
        pytest.param(django_hash("secret words", 500, "s").replace("$500$", "$many$"), id="bad-iterations"),
        pytest.param(django_hash("secret words", 500, "s").replace("$500$", "$0$"), id="zero-iterations"),
        pytest.param(django_hash("secret words", 500, "s").replace("$500$", "$-5$"), id="negative-iterations"),
        pytest.param("pbkdf2_sha256$500$salt", id="missing-digest"),
        pytest.param("!unusable-password", id="django-unusable"),
    ],
)
def test_verify_refuses_a_malformed_hash(encoded):
    assert passwords.verify_password("secret words", encoded) is False


def test_needs_rehash_for_fewer_iterations():
    assert passwords.needs_rehash(django_hash("pw", 500, "s"), ITERATIONS)


def test_no_rehash_for_the_configured_iterations():
    assert not passwords.needs_rehash(django_hash("pw", ITERATIONS, "s"), ITERATIONS)


def test_no_rehash_for_more_iterations():
    assert not passwords.needs_rehash(django_hash("pw", ITERATIONS + 1, "s"), ITERATIONS)


def test_needs_rehash_for_a_malformed_hash():
    assert passwords.needs_rehash("garbage", ITERATIONS)


# --- tokens: issuing -----------------------------------------------------------------------------


@pytest.mark.parametrize("token_type", [ACCESS, REFRESH])
def test_issued_token_is_hs256(service, token_type):
    assert jwt.get_unverified_header(service.issue(token_type, 7, VERSION))["alg"] == "HS256"


@pytest.mark.parametrize("token_type", [ACCESS, REFRESH])
def test_issued_token_carries_simplejwt_claims(service, token_type):
    claims = jwt.decode(service.issue(token_type, 7, VERSION), KEY, algorithms=["HS256"])
    assert {"token_type", "exp", "iat", "jti", "user_id"} <= set(claims)
    assert (claims["token_type"], claims["user_id"]) == (token_type, 7)


@pytest.mark.parametrize(("token_type", "lifetime"), [(ACCESS, ACCESS_LIFETIME), (REFRESH, REFRESH_LIFETIME)])
def test_issued_token_lives_its_configured_lifetime(service, token_type, lifetime):
    claims = jwt.decode(service.issue(token_type, 7, VERSION), KEY, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == lifetime


def test_lifetimes_come_from_the_service_settings():
    claims = jwt.decode(TokenService(KEY, 60, 120).issue(REFRESH, 7, VERSION), KEY, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 120


def test_issued_token_iat_is_now(service):
    before = int(time.time())
    iat = jwt.decode(service.issue(ACCESS, 7, VERSION), KEY, algorithms=["HS256"])["iat"]
    assert before <= iat <= int(time.time())


def test_issued_tokens_have_distinct_jti(service):
    jtis = {jwt.decode(service.issue(ACCESS, 7, VERSION), KEY, algorithms=["HS256"])["jti"] for _ in range(5)}
    assert len(jtis) == 5


def test_issue_pair_returns_refresh_and_access(service):
    pair = service.issue_pair(7, VERSION)
    assert set(pair) == {"refresh", "access"}
    assert service.decode(pair["refresh"], REFRESH)["user_id"] == 7
    assert service.decode(pair["access"], ACCESS)["user_id"] == 7


# --- tokens: decoding ----------------------------------------------------------------------------


@pytest.mark.parametrize("token_type", [ACCESS, REFRESH])
def test_decode_returns_the_claims_of_an_issued_token(service, token_type):
    claims = service.decode(service.issue(token_type, 7, VERSION), token_type)
    assert (claims["token_type"], claims["user_id"]) == (token_type, 7)


def test_decode_refuses_a_refresh_token_as_access(service):
    with pytest.raises(InvalidToken):
        service.decode(service.issue(REFRESH, 7, VERSION), ACCESS)


def test_decode_refuses_an_access_token_as_refresh(service):
    with pytest.raises(InvalidToken):
        service.decode(service.issue(ACCESS, 7, VERSION), REFRESH)


def test_decode_refuses_a_token_from_another_key(service):
    other = TokenService("another-secret-key-" + "o" * 32, ACCESS_LIFETIME, REFRESH_LIFETIME)
    with pytest.raises(InvalidToken):
        service.decode(other.issue(ACCESS, 7, VERSION), ACCESS)


def test_decode_refuses_a_tampered_payload(service):
    header, _, signature = service.issue(ACCESS, 7, VERSION).split(".")
    forged_payload = base64.urlsafe_b64encode(b'{"token_type":"access","user_id":1}').rstrip(b"=").decode()
    with pytest.raises(InvalidToken):
        service.decode(f"{header}.{forged_payload}.{signature}", ACCESS)


def test_decode_refuses_an_expired_token(service):
    with pytest.raises(InvalidToken):
        service.decode(sign(valid_claims(exp=int(time.time()) - 3600)), ACCESS)


def test_decode_accepts_a_token_signed_with_the_key(service):
    # The counterpart of the refusals below: ``sign(valid_claims())`` on its own is accepted.
    assert service.decode(sign(valid_claims()), ACCESS)["user_id"] == 7


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("not-a-jwt", id="garbage"),
        pytest.param("a.b.c", id="three-garbage-parts"),
        pytest.param(sign(valid_claims(), algorithm="HS512"), id="hs512"),
        pytest.param(jwt.encode(valid_claims(), None, algorithm="none"), id="alg-none"),
        pytest.param(sign(valid_claims(token_type=None)), id="no-token-type"),
        pytest.param(sign(valid_claims(exp=None)), id="no-exp"),
        pytest.param(sign(valid_claims(iat=None)), id="no-iat"),
        pytest.param(sign(valid_claims(jti=None)), id="no-jti"),
        pytest.param(sign(valid_claims(user_id=None)), id="no-user-id"),
        pytest.param(sign(valid_claims(jti="")), id="empty-jti"),
        pytest.param(sign(valid_claims(jti=5)), id="number-jti"),
        pytest.param(sign(valid_claims(user_id="7")), id="string-user-id"),
        pytest.param(sign(valid_claims(user_id=True)), id="boolean-user-id"),
        pytest.param(sign(valid_claims(user_id=0)), id="zero-user-id"),
        pytest.param(sign(valid_claims(user_id=-7)), id="negative-user-id"),
        pytest.param(sign(valid_claims(user_id=7.0)), id="float-user-id"),
        pytest.param(sign(valid_claims(token_type="id")), id="unknown-type"),
        pytest.param(sign(valid_claims(fam=None)), id="no-fam"),
        pytest.param(sign(valid_claims(fam="")), id="empty-fam"),
        pytest.param(sign(valid_claims(fam=5)), id="number-fam"),
        pytest.param(sign(valid_claims(fam="f" * 65)), id="fam-longer-than-the-revocation-column"),
    ],
)
def test_decode_refuses_a_bad_token(service, token):
    with pytest.raises(InvalidToken):
        service.decode(token, ACCESS)
