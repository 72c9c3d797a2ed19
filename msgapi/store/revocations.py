"""Revoked refresh tokens and revoked logins, shared by every process through the database.

A row is kept until its ``expires_at``, which the caller sets past the last moment any
process could still accept the token (``TokenService.revocation_expiry``); rows past it
are pruned on every revocation write.
"""

from __future__ import annotations

import peewee

from .connection import database, single_row, write_lock
from .schema import RevokedFamily, RevokedToken

LOGOUT = "logout"
ROTATED = "rotated"


def login_not_revoked(family: object) -> peewee.Node:
    """True unless the login ``family`` was revoked: an index probe, in the statement that needs it."""
    return ~peewee.fn.EXISTS(RevokedFamily.select(peewee.SQL("1")).where(RevokedFamily.family == family))


def _prune(now: int) -> None:
    RevokedToken.delete().where(RevokedToken.expires_at < now).execute()
    RevokedFamily.delete().where(RevokedFamily.expires_at < now).execute()


def revoke_token(jti: str, family: str, reason: str, expires_at: int, now: int) -> str | None:
    """Record ``jti`` as unusable. Returns None if this call recorded it, else the earlier reason.

    One INSERT decides between concurrent callers: exactly one of two refreshes
    racing with the same token records it; the other learns it was already spent.
    """
    with write_lock(), database.atomic():
        _prune(now)
        inserted = single_row(
            RevokedToken.insert(jti=jti, family=family, reason=reason, expires_at=expires_at)
            .on_conflict_ignore()
            .returning(RevokedToken.jti)
        )
        if inserted is not None:
            return None
        earlier = RevokedToken.get_or_none(RevokedToken.jti == jti)
        return earlier.reason if earlier else reason


def revoke_family(family: str, expires_at: int, now: int) -> None:
    """Revoke every token of one login, access and refresh (a spent refresh token was reused)."""
    with write_lock(), database.atomic():
        _prune(now)
        RevokedFamily.insert(family=family, expires_at=expires_at).on_conflict_ignore().execute()


def is_token_revoked(jti: str) -> bool:
    return RevokedToken.select().where(RevokedToken.jti == jti).exists()
