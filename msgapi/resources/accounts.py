"""Accounts: ``/api/auth/me``, password change, staff admin (the field rules are in ``msgapi.rules``)."""

from __future__ import annotations

import falcon

from .. import passwords
from ..body import FieldErrors, read_body
from ..passwords import HashingGate
from ..ratelimit import RateLimiter
from ..rules import MAX_PASSWORD_LENGTH, PROFILE_FIELDS, read_new_password, read_profile
from ..store import Store, User, parse_id
from ..tokens import TokenService


def no_store(resp: falcon.Response) -> None:
    # Tokens must not be kept by browsers or proxies.
    resp.cache_control = ["no-store"]


class Me:
    """The signed-in user's own account."""

    auth_methods = frozenset({"GET", "HEAD", "PATCH"})

    def __init__(self, store: Store) -> None:
        self._store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = req.context.user.account_json()

    on_head = on_get

    def on_patch(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_body(req)
        errors = FieldErrors()
        profile = read_profile(errors, body)
        unknown = sorted(set(body) - set(PROFILE_FIELDS))
        for field in unknown:
            errors.add(field, "This field cannot be changed here.")
        errors.raise_if_any()
        resp.media = self._store.users.update_profile(req.context.user, profile).account_json()


class PasswordChange:
    """Change the password; every token issued before stops working, and a fresh pair is returned."""

    auth_methods = frozenset({"POST"})

    def __init__(
        self, store: Store, tokens: TokenService, hash_iterations: int, limiter: RateLimiter, gate: HashingGate
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._iterations = hash_iterations
        self._limiter = limiter
        self._gate = gate

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        user = req.context.user
        body = read_body(req)
        errors = FieldErrors()
        current = errors.string(body, "current_password", max_length=MAX_PASSWORD_LENGTH)
        new = read_new_password(errors, body, "new_password", user.username)
        errors.raise_if_any()
        assert current is not None and new is not None
        # Checking current_password is a login: a stolen access token must not buy unlimited
        # guesses. Same policy and budgets as the token endpoint (RateLimiter.login_attempt).
        attempt = self._limiter.login_attempt("token", req.context.client_ip, User.canonical(user.username))
        with self._gate:
            if not passwords.check_password(current, user.password, self._iterations):
                errors.add("current_password", "Your old password was entered incorrectly.")
                errors.raise_if_any()
            attempt.succeeded()
            new_hash = passwords.make_password(new, self._iterations)
        version = self._store.users.change_password(user, new_hash)
        no_store(resp)
        resp.media = self._tokens.issue_pair(user.id, version)


def _parse_user_id(raw: str) -> int:
    user_id = parse_id(raw)
    if user_id is None:
        raise falcon.HTTPNotFound(title="Not found", description="No user has this id.")
    return user_id


class UserAdmin:
    """Staff only: read a user's account, and activate or deactivate it."""

    auth_methods = frozenset({"GET", "HEAD", "PATCH"})

    def __init__(self, store: Store) -> None:
        self._store = store

    def _target(self, req: falcon.Request, raw_id: str) -> User:
        user_id = _parse_user_id(raw_id)
        if not req.context.user.is_staff:
            raise falcon.HTTPForbidden(title="Forbidden", description="Only staff may manage accounts.")
        target = self._store.users.by_id(user_id)
        if target is None:
            raise falcon.HTTPNotFound(title="Not found", description="No user has this id.")
        return target

    def on_get(self, req: falcon.Request, resp: falcon.Response, id: str) -> None:
        resp.media = self._target(req, id).account_json()

    on_head = on_get

    def on_patch(self, req: falcon.Request, resp: falcon.Response, id: str) -> None:
        target = self._target(req, id)
        body = read_body(req)
        errors = FieldErrors()
        if "is_active" not in body:
            errors.add("is_active", "This field is required.")
        elif not isinstance(body["is_active"], bool):
            errors.add("is_active", "Must be a boolean.")
        for field in sorted(set(body) - {"is_active"}):
            errors.add(field, "This field cannot be changed here.")
        if body.get("is_active") is False and target.id == req.context.user.id:
            # Locking out the last staff account would need an operator to undo.
            errors.add("is_active", "You cannot deactivate your own account.")
        errors.raise_if_any()
        resp.media = self._store.users.set_active(target, body["is_active"]).account_json()
