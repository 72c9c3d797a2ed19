"""/api/auth/register/, /api/auth/token/ and /api/auth/token/refresh/."""

from __future__ import annotations

import re

import falcon
import peewee

from .. import models, passwords
from ..body import FieldErrors, read_body
from ..errors import ValidationFailed, unauthorized
from ..passwords import HashingGate
from ..ratelimit import RateLimiter
from ..tokens import REFRESH, InvalidToken, TokenService

# Django's UnicodeUsernameValidator: letters, digits and @ . + - _
_USERNAME = re.compile(r"[\w.@+-]+\Z")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+\Z")
MAX_USERNAME_LENGTH = 150
MIN_PASSWORD_LENGTH = 8
# Long enough for any passphrase; short enough that nobody sends megabytes to hash.
MAX_PASSWORD_LENGTH = 1024
USERNAME_TAKEN = "A user with that username already exists."
BAD_CREDENTIALS = "No active account found with the given credentials."


def _username_problem(value: str) -> str | None:
    if not _USERNAME.match(value):
        return "Enter a valid username. This value may contain only letters, numbers, and @/./+/-/_ characters."
    return None


def _email_problem(value: str) -> str | None:
    return None if _EMAIL.match(value) else "Enter a valid email address."


def _password_problems(password: str, username: str | None) -> list[str]:
    problems = []
    if password.isdigit():
        problems.append("This password is entirely numeric.")
    if username and password.casefold() == username.casefold():
        problems.append("The password is too similar to the username.")
    return problems


def _no_store(resp: falcon.Response) -> None:
    # Tokens must not be kept by browsers or proxies.
    resp.cache_control = ["no-store"]


class Register:
    def __init__(self, hash_iterations: int, limiter: RateLimiter, gate: HashingGate) -> None:
        self._iterations = hash_iterations
        self._limiter = limiter
        self._gate = gate

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._limiter.hit(f"register:ip:{req.context.client_ip}")
        body = read_body(req)
        errors = FieldErrors()
        username = errors.string(body, "username", max_length=MAX_USERNAME_LENGTH, check=_username_problem)
        password = errors.string(body, "password", min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)
        profile = {
            "email": errors.string(
                body, "email", required=False, allow_blank=True, max_length=254, check=_email_problem
            ),
            "first_name": errors.string(body, "first_name", required=False, allow_blank=True, max_length=150),
            "last_name": errors.string(body, "last_name", required=False, allow_blank=True, max_length=150),
        }
        if password is not None:
            for problem in _password_problems(password, username):
                errors.add("password", problem)
        if username is not None and models.User.by_username(username) is not None:
            errors.add("username", USERNAME_TAKEN)
        errors.raise_if_any()
        assert username is not None and password is not None
        with self._gate:
            # Checked again after queueing for a hashing slot: in a burst of registrations
            # of one name, the losers answer at once instead of each hashing for nothing.
            if models.User.by_username(username) is not None:
                raise ValidationFailed({"username": [USERNAME_TAKEN]})
            password_hash = passwords.make_password(password, self._iterations)
        try:
            user = models.create_user(
                username,
                password_hash,
                **{field: value for field, value in profile.items() if value is not None},
            )
        except peewee.IntegrityError:
            # Lost a race with a registration of the same name.
            raise ValidationFailed({"username": [USERNAME_TAKEN]}) from None
        resp.status = falcon.HTTP_201
        resp.media = user.public_json()


class TokenObtain:
    def __init__(self, tokens: TokenService, hash_iterations: int, limiter: RateLimiter, gate: HashingGate) -> None:
        self._tokens = tokens
        self._iterations = hash_iterations
        self._limiter = limiter
        self._gate = gate
        self._dummy = passwords.DummyHasher(hash_iterations)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_body(req)
        errors = FieldErrors()
        username = errors.string(body, "username", max_length=MAX_USERNAME_LENGTH)
        password = errors.string(body, "password", max_length=MAX_PASSWORD_LENGTH)
        errors.raise_if_any()
        assert username is not None and password is not None
        self._limiter.hit(f"token:ip:{req.context.client_ip}", f"token:user:{models.User.canonical(username)}")
        user = models.User.by_username(username)
        with self._gate:
            if user is None or not user.is_active:
                # Same work and same answer as a wrong password: no user enumeration.
                self._dummy.burn(password)
                raise unauthorized(BAD_CREDENTIALS, token_sent=False)
            if not passwords.verify_password(password, user.password):
                raise unauthorized(BAD_CREDENTIALS, token_sent=False)
            if passwords.needs_rehash(user.password, self._iterations):
                models.set_password_hash(user, passwords.make_password(password, self._iterations))
        _no_store(resp)
        resp.media = self._tokens.issue_pair(user.id)


class TokenRefresh:
    def __init__(self, tokens: TokenService) -> None:
        self._tokens = tokens

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        errors = FieldErrors()
        refresh = errors.string(read_body(req), "refresh")
        errors.raise_if_any()
        assert refresh is not None
        try:
            claims = self._tokens.decode(refresh, REFRESH)
        except InvalidToken:
            raise unauthorized("Token is invalid or expired.", token_sent=True) from None
        if models.User.active_by_id(claims["user_id"]) is None:
            raise unauthorized("Token is invalid or expired.", token_sent=True)
        _no_store(resp)
        resp.media = {"access": self._tokens.issue("access", claims["user_id"])}
