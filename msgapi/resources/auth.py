"""Registration and the simplejwt-compatible token endpoints: obtain, refresh, verify, blacklist."""

from __future__ import annotations

import falcon
import peewee

from .. import passwords, rules
from ..body import FieldErrors, read_body
from ..errors import TOKEN_INVALID_OR_EXPIRED, TOKEN_WRONG_TYPE, ValidationFailed, unauthorized
from ..passwords import HashingGate
from ..ratelimit import RateLimiter
from ..store import Store, User
from ..store.revocations import LOGOUT, ROTATED
from ..tokens import ACCESS, REFRESH, InvalidToken, TokenService, WrongTokenType
from .accounts import no_store

USERNAME_TAKEN = "A user with that username already exists."
# simplejwt's text, without a final period: clients compare it.
BAD_CREDENTIALS = "No active account found with the given credentials"


def _verified_claims(tokens: TokenService, token: str, expected_type: str | None) -> dict:
    """The token's claims, or 401 ``invalid_token``."""
    try:
        return tokens.decode(token, expected_type)
    except WrongTokenType:
        raise unauthorized(TOKEN_WRONG_TYPE, token_sent=True) from None
    except InvalidToken:
        raise unauthorized(TOKEN_INVALID_OR_EXPIRED, token_sent=True) from None


def _read_token_field(req: falcon.Request, field: str) -> str:
    errors = FieldErrors()
    token = errors.string(read_body(req), field, max_length=4096)
    errors.raise_if_any()
    assert token is not None
    return token


class Register:
    def __init__(self, store: Store, hash_iterations: int, limiter: RateLimiter, gate: HashingGate) -> None:
        self._store = store
        self._iterations = hash_iterations
        self._limiter = limiter
        self._gate = gate

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._limiter.hit(self._limiter.address_bucket("register", req.context.client_ip))
        body = read_body(req)
        errors = FieldErrors()
        username = rules.read_username(errors, body)
        password = rules.read_new_password(errors, body, "password", username)
        profile = rules.read_profile(errors, body)
        if username is not None and self._store.users.by_username(username) is not None:
            errors.add("username", USERNAME_TAKEN)
        errors.raise_if_any()
        assert username is not None and password is not None
        with self._gate:
            # Checked again after queueing for a hashing slot: in a burst of registrations
            # of one name, the losers answer at once instead of each hashing for nothing.
            if self._store.users.by_username(username) is not None:
                raise ValidationFailed({"username": [USERNAME_TAKEN]})
            password_hash = passwords.make_password(password, self._iterations)
        try:
            user = self._store.users.create(username, password_hash, **profile)
        except peewee.IntegrityError:
            # Lost a race with a registration of the same name.
            raise ValidationFailed({"username": [USERNAME_TAKEN]}) from None
        resp.status = falcon.HTTP_201
        resp.location = "/api/auth/me"
        resp.media = user.public_json()


class TokenObtain:
    def __init__(
        self, store: Store, tokens: TokenService, hash_iterations: int, limiter: RateLimiter, gate: HashingGate
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._iterations = hash_iterations
        self._limiter = limiter
        self._gate = gate
        self._dummy = passwords.DummyHasher(hash_iterations)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_body(req)
        errors = FieldErrors()
        username = errors.string(body, "username", max_length=rules.MAX_USERNAME_LENGTH)
        password = errors.string(body, "password", max_length=rules.MAX_PASSWORD_LENGTH)
        errors.raise_if_any()
        assert username is not None and password is not None
        attempt = self._limiter.login_attempt("token", req.context.client_ip, User.canonical(username))
        user = self._store.users.by_username(username)
        with self._gate:
            if user is None or not user.is_active:
                # Same work and same answer as a wrong password: no user enumeration.
                self._dummy.burn(password)
                raise unauthorized(BAD_CREDENTIALS, token_sent=False)
            # At least the configured work whatever the stored hash: the time tells nothing.
            if not passwords.check_password(password, user.password, self._iterations):
                raise unauthorized(BAD_CREDENTIALS, token_sent=False)
            attempt.succeeded()
            if passwords.needs_rehash(user.password, self._iterations):
                self._store.users.upgrade_password_hash(user, passwords.make_password(password, self._iterations))
        no_store(resp)
        resp.media = self._tokens.issue_pair(user.id, user.token_version)


class TokenRefresh:
    """simplejwt's refresh; with rotation on, each refresh token is single-use.

    Presenting a refresh token that was already rotated means two parties hold it
    (one of them a thief): the whole family descended from that login is revoked.
    """

    def __init__(self, store: Store, tokens: TokenService, rotate: bool) -> None:
        self._store = store
        self._tokens = tokens
        self._rotate = rotate

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        refresh = _read_token_field(req, "refresh")
        claims = _verified_claims(self._tokens, refresh, REFRESH)
        user = self._store.users.for_token(claims)  # also refuses a revoked family
        if user is None:
            raise unauthorized(TOKEN_INVALID_OR_EXPIRED, token_sent=True)
        no_store(resp)
        if not self._rotate:
            if self._store.revocations.is_token_revoked(claims["jti"]):
                raise unauthorized(TOKEN_INVALID_OR_EXPIRED, token_sent=True)
            resp.media = {"access": self._tokens.issue(ACCESS, user.id, user.token_version, claims["fam"])}
            return
        now = self._tokens.now()
        # Spend the token first: of two refreshes racing with it, only one records it.
        keep_until = self._tokens.revocation_expiry(claims)
        earlier = self._store.revocations.revoke_token(claims["jti"], claims["fam"], ROTATED, keep_until, now)
        if earlier is not None:
            if earlier == ROTATED:
                # Reuse: two parties hold this login. End all of it, access tokens too.
                self._store.revocations.revoke_family(claims["fam"], self._tokens.family_revocation_expiry(), now)
            raise unauthorized(TOKEN_INVALID_OR_EXPIRED, token_sent=True)
        resp.media = self._tokens.issue_pair(user.id, user.token_version, family=claims["fam"])


class TokenVerify:
    """simplejwt's verify: 200 ``{}`` for a token that would be accepted now, else 401."""

    def __init__(self, store: Store, tokens: TokenService) -> None:
        self._store = store
        self._tokens = tokens

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        token = _read_token_field(req, "token")
        claims = _verified_claims(self._tokens, token, None)
        if self._store.users.for_token(claims) is None:  # also refuses a revoked family
            raise unauthorized(TOKEN_INVALID_OR_EXPIRED, token_sent=True)
        if claims["token_type"] == REFRESH and self._store.revocations.is_token_revoked(claims["jti"]):
            raise unauthorized(TOKEN_INVALID_OR_EXPIRED, token_sent=True)
        resp.media = {}


class TokenBlacklist:
    """simplejwt's blacklist (log out): the refresh token stops working, in every process."""

    def __init__(self, store: Store, tokens: TokenService) -> None:
        self._store = store
        self._tokens = tokens

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        refresh = _read_token_field(req, "refresh")
        claims = _verified_claims(self._tokens, refresh, REFRESH)
        keep_until = self._tokens.revocation_expiry(claims)
        self._store.revocations.revoke_token(claims["jti"], claims["fam"], LOGOUT, keep_until, self._tokens.now())
        resp.media = {}
