"""Forged, tampered, expired and misused JWTs are all refused with 401 ``invalid_token``.

Every forgery is aimed at POST /api/messages. A control test signs a token the
same way with the right key and all claims, and it is accepted: so a refusal
below is the server recognising the forgery, not the harness sending nonsense.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import jwt
import pytest
from conftest import TEST_SECRET_KEY, assert_problem, bearer, obtain_tokens, register

from msgapi.store import schema
from msgapi.store.connection import database

INVALID_TOKEN = 'Bearer error="invalid_token"'
PROBLEM_JSON = "application/problem+json"
OTHER_KEY = "another-secret-key-" + "z" * 32


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unb64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def claims_for(user_id, /, **overrides) -> dict:
    now = int(time.time())
    claims = {
        "token_type": "access",
        "exp": now + 300,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "user_id": user_id,
        "ver": 0,  # a new user's token version
        "fam": uuid.uuid4().hex,  # the login the token descends from
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not DROP}


DROP = object()  # an override value that removes the claim


def sign(claims: dict, key: str = TEST_SECRET_KEY, algorithm: str = "HS256", headers: dict | None = None) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def unsigned(header: dict, claims: dict, signature: str = "") -> str:
    return f"{b64url_json(header)}.{b64url_json(claims)}.{signature}"


def post_message(app, headers: dict):
    return app.post_json("/api/messages", {"content": "forged?"}, headers=headers, expect_errors=True)


def assert_invalid_token(resp) -> None:
    assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"] == INVALID_TOKEN


def assert_nothing_stored(app) -> None:
    assert app.get("/api/messages").json == []


@pytest.fixture
def alice(app) -> dict:
    """Alice's id and tokens."""
    user = register(app, "alice")
    return {"id": user["id"], **obtain_tokens(app, "alice")}


# --- the control: the harness can produce an accepted token --------------------------------------


def test_control_a_token_signed_with_the_right_key_and_all_claims_is_accepted(app, alice):
    resp = post_message(app, bearer(sign(claims_for(alice["id"]))))
    assert resp.status_int == 201, resp.text
    assert resp.json["author"] == "alice"


def test_control_the_scheme_name_is_case_insensitive(app, alice):
    assert post_message(app, {"Authorization": f"bearer {alice['access']}"}).status_int == 201


@pytest.mark.parametrize(
    ("claim", "offset"),
    [pytest.param("iat", 10, id="iat-10s-ahead-within-leeway"), pytest.param("exp", -5, id="exp-5s-ago-within-leeway")],
)
def test_control_clock_skew_within_the_leeway_is_tolerated(app, alice, claim, offset):
    token = sign(claims_for(alice["id"], **{claim: int(time.time()) + offset}))
    assert post_message(app, bearer(token)).status_int == 201


# --- algorithm and signature forgeries -----------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", ["", "keep"], ids=["empty-signature", "stolen-signature"])
def test_alg_none_is_refused(app, alice, alg, signature):
    real_signature = alice["access"].rsplit(".", 1)[1]
    token = unsigned({"alg": alg, "typ": "JWT"}, claims_for(alice["id"]), real_signature if signature == "keep" else "")
    assert_invalid_token(post_message(app, bearer(token)))
    assert_nothing_stored(app)


def test_alg_none_encoded_by_pyjwt_is_refused(app, alice):
    token = jwt.encode(claims_for(alice["id"]), None, algorithm="none")
    assert_invalid_token(post_message(app, bearer(token)))


def test_hs256_signed_with_another_key_is_refused(app, alice):
    assert_invalid_token(post_message(app, bearer(sign(claims_for(alice["id"]), key=OTHER_KEY))))
    assert_nothing_stored(app)


def test_hs256_signed_with_an_empty_key_is_refused(app, alice):
    token = unsigned({"alg": "HS256", "typ": "JWT"}, claims_for(alice["id"]))
    signing_input = token.rsplit(".", 1)[0]
    mac = hmac.new(b"", signing_input.encode(), hashlib.sha256).digest()
    assert_invalid_token(post_message(app, bearer(f"{signing_input}.{b64url(mac)}")))


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_hs512_signed_with_the_right_key_is_refused(app, alice):
    token = sign(claims_for(alice["id"]), algorithm="HS512")
    assert jwt.get_unverified_header(token)["alg"] == "HS512"
    assert_invalid_token(post_message(app, bearer(token)))


def test_hs384_signed_with_the_right_key_is_refused(app, alice):
    assert_invalid_token(post_message(app, bearer(sign(claims_for(alice["id"]), algorithm="HS384"))))


def _rsa_private_key_pem() -> bytes | None:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        return None
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_rs256_token_is_refused(app, alice):
    pem = _rsa_private_key_pem()
    if pem is not None:
        token = jwt.encode(claims_for(alice["id"]), pem, algorithm="RS256")
    else:  # no cryptography: an RS256 header with a garbage signature tells the same story
        token = unsigned({"alg": "RS256", "typ": "JWT"}, claims_for(alice["id"]), b64url(b"\x01" * 256))
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert_invalid_token(post_message(app, bearer(token)))


def test_rs256_header_over_an_hs256_signature_is_refused(app, alice):
    """Key confusion the other way: a valid HMAC, but the header claims RS256."""
    _, payload, signature = alice["access"].split(".")
    forged_header = b64url_json({"alg": "RS256", "typ": "JWT"})
    assert_invalid_token(post_message(app, bearer(f"{forged_header}.{payload}.{signature}")))


def test_tampered_payload_with_the_original_signature_is_refused(app, alice):
    bob = register(app, "bob")
    header, payload, signature = alice["access"].split(".")
    claims = json.loads(unb64url(payload))
    assert claims["user_id"] == alice["id"]
    claims["user_id"] = bob["id"]
    tampered = f"{header}.{b64url_json(claims)}.{signature}"
    assert_invalid_token(post_message(app, bearer(tampered)))
    assert_nothing_stored(app)
    # Bob's own real token works, so the refusal is the signature, not Bob.
    assert post_message(app, bearer(obtain_tokens(app, "bob")["access"])).status_int == 201


def test_tampered_expiry_with_the_original_signature_is_refused(app, alice):
    header, payload, signature = alice["access"].split(".")
    claims = json.loads(unb64url(payload))
    claims["exp"] += 10 * 365 * 86400
    assert_invalid_token(post_message(app, bearer(f"{header}.{b64url_json(claims)}.{signature}")))


def test_truncated_signature_is_refused(app, alice):
    assert_invalid_token(post_message(app, bearer(alice["access"][:-4])))


# --- claims --------------------------------------------------------------------------------------


# The verify and refresh endpoints take either type, or a refresh token: a signed token must
# still be one of ours in every claim they read.


@pytest.mark.parametrize("token_type", ["id", "admin", "Access", ""])
def test_verify_refuses_a_signed_token_of_an_unknown_type(app, alice, token_type):
    token = sign(claims_for(alice["id"], token_type=token_type))
    assert_invalid_token(app.post_json("/api/auth/token/verify/", {"token": token}, expect_errors=True))


@pytest.mark.parametrize("family", [DROP, "", None, 7])
@pytest.mark.parametrize("endpoint", ["verify", "refresh", "blacklist"])
def test_a_signed_refresh_token_without_a_family_is_refused(app, alice, endpoint, family):
    token = sign(claims_for(alice["id"], token_type="refresh", fam=family))
    field = "token" if endpoint == "verify" else "refresh"
    assert_invalid_token(app.post_json(f"/api/auth/token/{endpoint}/", {field: token}, expect_errors=True))


@pytest.mark.parametrize("claim", ["exp", "jti", "token_type", "user_id", "iat", "ver", "fam"])
def test_token_missing_a_required_claim_is_refused(app, alice, claim):
    assert_invalid_token(post_message(app, bearer(sign(claims_for(alice["id"], **{claim: DROP})))))
    assert_nothing_stored(app)


def test_expired_token_is_refused(app, alice):
    now = int(time.time())
    token = sign(claims_for(alice["id"], iat=now - 7200, exp=now - 600))
    assert_invalid_token(post_message(app, bearer(token)))


def test_iat_in_the_future_beyond_the_leeway_is_refused(app, alice):
    now = int(time.time())
    token = sign(claims_for(alice["id"], iat=now + 600, exp=now + 3600))
    assert_invalid_token(post_message(app, bearer(token)))


def test_nbf_in_the_future_is_refused(app, alice):
    token = sign(claims_for(alice["id"], nbf=int(time.time()) + 600))
    assert_invalid_token(post_message(app, bearer(token)))


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"exp": "tomorrow"}, id="exp-string"),
        pytest.param({"iat": "now"}, id="iat-string"),
        pytest.param({"jti": ""}, id="jti-empty"),
        pytest.param({"jti": 12345}, id="jti-number"),
        pytest.param({"jti": None}, id="jti-null"),
        pytest.param({"token_type": "Access"}, id="token-type-capitalised"),
        pytest.param({"token_type": "refresh"}, id="token-type-refresh"),
        pytest.param({"token_type": "admin"}, id="token-type-other"),
        pytest.param({"token_type": None}, id="token-type-null"),
        pytest.param({"ver": 1}, id="ver-not-the-users"),
        pytest.param({"ver": -1}, id="ver-negative"),
        pytest.param({"ver": "0"}, id="ver-string"),
        pytest.param({"ver": False}, id="ver-false"),
        pytest.param({"ver": None}, id="ver-null"),
    ],
)
def test_token_with_a_malformed_claim_is_refused(app, alice, overrides):
    assert_invalid_token(post_message(app, bearer(sign(claims_for(alice["id"], **overrides)))))


@pytest.mark.parametrize(
    "user_id",
    [
        pytest.param("ID", id="string-own-id"),
        pytest.param("1", id="string-digit"),
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param(0, id="zero"),
        pytest.param(-1, id="negative"),
        pytest.param(1.0, id="float"),
        pytest.param(None, id="null"),
        pytest.param([1], id="list"),
        pytest.param({"id": 1}, id="object"),
        pytest.param(2**31, id="2^31"),
        pytest.param(2**63, id="2^63"),
        pytest.param(10**30, id="10^30"),
    ],
)
def test_token_with_a_bad_user_id_is_refused(app, alice, user_id):
    if user_id == "ID":
        user_id = str(alice["id"])
    assert alice["id"] == 1  # so "1", True and 1.0 all name a real user if coerced
    assert_invalid_token(post_message(app, bearer(sign(claims_for(user_id)))))
    assert_nothing_stored(app)


def test_json_array_payload_is_refused(app, alice):
    token = unsigned({"alg": "HS256", "typ": "JWT"}, [claims_for(alice["id"])])
    signing_input = token.rsplit(".", 1)[0]
    mac = hmac.new(TEST_SECRET_KEY.encode(), signing_input.encode(), hashlib.sha256).digest()
    assert_invalid_token(post_message(app, bearer(f"{signing_input}.{b64url(mac)}")))


# --- the wrong kind of token, or the wrong endpoint ----------------------------------------------


def test_refresh_token_as_bearer_is_refused(app, alice):
    assert_invalid_token(post_message(app, bearer(alice["refresh"])))
    assert_nothing_stored(app)


def test_access_token_at_the_refresh_endpoint_is_refused(app, alice):
    resp = app.post_json("/api/auth/token/refresh/", {"refresh": alice["access"]}, expect_errors=True)
    assert_invalid_token(resp)
    assert "access" not in resp.json


def test_forged_refresh_token_is_refused(app, alice):
    token = sign(claims_for(alice["id"], token_type="refresh", fam=uuid.uuid4().hex), key=OTHER_KEY)
    resp = app.post_json("/api/auth/token/refresh/", {"refresh": token}, expect_errors=True)
    assert_invalid_token(resp)


# --- tokens whose user is gone -------------------------------------------------------------------


def _run(query) -> None:
    try:
        query.execute()
    finally:
        database.close()


def test_token_of_a_deleted_user_is_refused(app, alice):
    _run(schema.User.delete().where(schema.User.id == alice["id"]))
    assert_invalid_token(post_message(app, bearer(alice["access"])))
    assert_nothing_stored(app)


def test_refresh_token_of_a_deleted_user_is_refused(app, alice):
    _run(schema.User.delete().where(schema.User.id == alice["id"]))
    resp = app.post_json("/api/auth/token/refresh/", {"refresh": alice["refresh"]}, expect_errors=True)
    assert_invalid_token(resp)


def test_token_of_a_deactivated_user_is_refused(app, alice):
    _run(schema.User.update(is_active=False).where(schema.User.id == alice["id"]))
    assert_invalid_token(post_message(app, bearer(alice["access"])))
    assert_nothing_stored(app)


def test_refresh_token_of_a_deactivated_user_is_refused(app, alice):
    _run(schema.User.update(is_active=False).where(schema.User.id == alice["id"]))
    resp = app.post_json("/api/auth/token/refresh/", {"refresh": alice["refresh"]}, expect_errors=True)
    assert_invalid_token(resp)


def test_token_for_a_user_id_that_never_existed_is_refused(app, alice):
    assert_invalid_token(post_message(app, bearer(sign(claims_for(alice["id"] + 1000)))))


# Creating a message checks the token's user inside the INSERT; every way that check can fail.
REFUSED_AUTHORS = {
    "deleted": lambda user_id: schema.User.delete().where(schema.User.id == user_id),
    "deactivated": lambda user_id: schema.User.update(is_active=False).where(schema.User.id == user_id),
    "tokens-ended": lambda user_id: schema.User.update(token_version=1).where(schema.User.id == user_id),
}


@pytest.mark.parametrize("change", REFUSED_AUTHORS)
def test_a_refused_token_user_outranks_a_bad_body_and_creates_nothing(app, alice, change):
    _run(REFUSED_AUTHORS[change](alice["id"]))
    headers = bearer(alice["access"])
    assert_invalid_token(post_message(app, headers))
    for bad_body in ({"content": ""}, {"text": "hi"}):
        assert_invalid_token(app.post_json("/api/messages", bad_body, headers=headers, expect_errors=True))
    unsupported = app.post(
        "/api/messages", "content=hi", headers=headers, content_type="text/plain", expect_errors=True
    )
    assert_invalid_token(unsupported)
    assert_nothing_stored(app)


@pytest.mark.parametrize(
    "claims",
    [{"user_id": 2**31}, {"user_id": 2**63}, {"ver": -1}, {"ver": 2**31}, {"ver": 2**63}],
    ids=["user_id-2^31", "user_id-2^63", "ver--1", "ver-2^31", "ver-2^63"],
)
def test_signed_claims_out_of_the_databases_range_are_refused_not_errors(app, alice, claims):
    token = sign({**claims_for(alice["id"]), **claims})
    assert_invalid_token(post_message(app, bearer(token)))
    assert_invalid_token(app.get("/api/auth/me", headers=bearer(token), expect_errors=True))
    assert_nothing_stored(app)


# --- the Authorization header itself -------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Bearer", id="bearer-alone"),
        pytest.param("Bearer ", id="bearer-one-space"),
        pytest.param("Bearer   ", id="bearer-spaces"),
        pytest.param("Bearer \t", id="bearer-tab"),
    ],
)
def test_bearer_without_a_token_is_refused(app, alice, header):
    assert_invalid_token(post_message(app, {"Authorization": header}))


@pytest.mark.parametrize(
    "scheme",
    ["Basic", "Token", "JWT", "Digest", "Bearer:", "Bearerx"],
)
def test_other_schemes_are_refused(app, alice, scheme):
    """A valid access token under another scheme is still refused.

    RFC 6750 section 3.1: for an unsupported authentication method the challenge
    SHOULD NOT carry an error code, so this is the bare ``Bearer`` challenge.
    """
    value = base64.b64encode(f"alice:{alice['access']}".encode()).decode() if scheme == "Basic" else alice["access"]
    resp = post_message(app, {"Authorization": f"{scheme} {value}"})
    assert resp.status_int == 401
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert resp.content_type == PROBLEM_JSON
    assert_nothing_stored(app)


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b.c",
        "...",
        "..",
        "a.b",
        "a.b.c.d",
        "eyJhbGciOiJIUzI1NiJ9..",
        "eyJhbGciOiJIUzI1NiJ9.e30.",
        "eyJ.eyJ.sig",
        "!!!.@@@.###",
        "null",
        "0",
        "x" * 8000,
        "\xe9\xe8\xff",
        "Bearer xyz",
    ],
    ids=lambda token: token[:20].encode("unicode_escape").decode(),
)
def test_garbage_tokens_are_refused(app, alice, token):
    assert_invalid_token(post_message(app, bearer(token)))


def test_a_token_with_whitespace_inside_is_refused(app, alice):
    header, payload, signature = alice["access"].split(".")
    assert_invalid_token(post_message(app, bearer(f"{header}. {payload}.{signature}")))


def test_a_token_whose_header_is_not_an_object_is_refused(app, alice):
    _, payload, signature = alice["access"].split(".")
    assert_invalid_token(post_message(app, bearer(f"{b64url_json(['HS256'])}.{payload}.{signature}")))
