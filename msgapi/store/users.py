"""Accounts: finding a user by name or by token, creating one, changing password, profile, activity."""

from __future__ import annotations

import logging
from typing import Any

from .compiled import PreparedQuery
from .connection import database, write, write_lock, write_returning
from .render import parse_timestamp
from .revocations import login_not_revoked
from .schema import MAX_ID, MAX_USERNAME_LENGTH, User


def by_username(username: str) -> User | None:
    key = User.canonical(username)
    if len(key) > MAX_USERNAME_LENGTH:
        return None  # no account can have it, and the column could not hold it
    return User.get_or_none(User.username_key == key)


def by_id(user_id: int) -> User | None:
    return User.get_or_none(User.id == user_id)


def for_token(claims: dict[str, Any]) -> User | None:
    """The active user a verified token speaks for, if the token is still current for them.

    Current means: on the user's token version, and from a login (``fam``) that was
    not revoked. Every authenticated request asks, so it is one compiled query.
    """
    user_id = claims["user_id"]
    if not 0 < user_id <= MAX_ID:
        return None
    row = _TOKEN_USER.execute(user_id, claims["fam"]).fetchone()
    if row is None:
        return None
    values = {name: convert(value) for (name, convert), value in zip(_USER_CONVERTERS, row, strict=True)}
    if values["token_version"] != claims["ver"]:
        return None
    if not _RAW_MODEL_DATA:
        return User(**values)
    # Without defaults (Peewee's own __no_default__) and with the values put in place at
    # once: the constructor's defaults and per-field setters cost several times as much.
    user = User(__no_default__=True)
    user.__data__ = values
    return user


def _raw_model_data_works() -> bool:
    """Whether this Peewee builds a model without defaults and keeps its values in ``__data__``.

    Both are Peewee internals (stable from 3.x to 4.x); a release that changes them gets
    the public constructor instead, with a warning, rather than users with wrong fields.
    """
    try:
        probe = User(__no_default__=True)
        probe.__data__ = {"username": "probe"}
        works = probe.username == "probe" and probe.is_active is None
    except Exception:
        works = False
    if not works:
        logging.getLogger("msgapi").warning(
            "this Peewee release builds models differently from what msgapi expects: using the public constructor"
        )
    return works


_RAW_MODEL_DATA = _raw_model_data_works()

_USER_FIELDS = User._meta.sorted_fields
_USER_CONVERTERS = [
    (field.name, parse_timestamp if field is User.date_joined else field.python_value) for field in _USER_FIELDS
]
_TOKEN_USER = PreparedQuery(
    lambda user_id, family: User.select(*_USER_FIELDS).where(
        (User.id == user_id) & (User.is_active == True) & login_not_revoked(family)
    ),
)


def create(username: str, password_hash: str, **profile: Any) -> User:
    """Insert a user; raises ``peewee.IntegrityError`` when the name is taken (in any case).

    The name must have been validated, its key's length too (``rules``).
    """
    with write_lock(), database.atomic():
        return User.create(
            username=User.normalize(username),
            username_key=User.canonical(username),
            password=password_hash,
            **profile,
        )


def upgrade_password_hash(user: User, password_hash: str) -> bool:
    """Store a rehash of the same password (a work-factor upgrade): tokens stay valid.

    Only if the stored hash is still ``user.password``, the one that was checked: a
    login racing a password change must not put the old password back.
    """
    checked = (User.id == user.id) & (User.password == user.password)
    return write(User.update(password=password_hash).where(checked)) > 0


def change_password(user: User, password_hash: str) -> int:
    """Store a new password and end every token issued before; returns the new token version."""
    row = write_returning(
        User.update(password=password_hash, token_version=User.token_version + 1)
        .where(User.id == user.id)
        .returning(User.token_version)
    )
    assert row is not None
    return row["token_version"]


def update_profile(user: User, profile: dict[str, str]) -> User:
    if profile:
        write(User.update(**profile).where(User.id == user.id))
    return User.get_by_id(user.id)


def set_active(user: User, active: bool) -> User:
    """Activate or deactivate; deactivating also ends every token already issued."""
    changes: dict[Any, Any] = {User.is_active: active}
    if not active:
        changes[User.token_version] = User.token_version + 1
    write(User.update(changes).where(User.id == user.id))
    return User.get_by_id(user.id)
