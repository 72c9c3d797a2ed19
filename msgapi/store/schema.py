"""The tables: users, messages, rate-limit hits, revocations and idempotency keys, as Peewee models.

Only the store's modules use these; everything else reaches the data through ``Store``.
"""

from __future__ import annotations

import datetime
import unicodedata
from typing import Any

import peewee

from .connection import database, dialect
from .render import render_timestamp

# Ids are 32-bit on PostgreSQL (SERIAL); anything larger cannot exist, on either database.
MAX_ID = 2**31 - 1
# Django's; both the name and its case-folded key must fit (see User.canonical).
MAX_USERNAME_LENGTH = 150


def parse_id(raw: str) -> int | None:
    """A path segment as a row id, or None if no row can have it (0, -1, "1.5", "01", 20 digits)."""
    if raw.isascii() and raw.isdigit() and raw[0] != "0" and len(raw) <= 10 and int(raw) <= MAX_ID:
        return int(raw)
    return None


def utcnow() -> datetime.datetime:
    """Now in UTC, naive: the database stores UTC without a zone, and we render it with ``Z``."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)



class NeverReusedId(peewee.AutoField):
    """A row id never handed out twice, even after the newest row is deleted.

    SQLite's plain INTEGER PRIMARY KEY gives the next row the highest id + 1, so a
    deleted newest user's id (and the unexpired tokens naming it) would go to the
    next one to register; AUTOINCREMENT never reuses one. PostgreSQL's SERIAL
    (a sequence) never does anyway.
    """

    def ddl(self, ctx: Any) -> peewee.NodeList:
        return dialect().never_reused_id(super().ddl(ctx))


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class User(BaseModel):
    id = NeverReusedId()
    username = peewee.CharField(max_length=MAX_USERNAME_LENGTH)  # NFKC-normalised, as Django stores it
    # The username case-folded: uniqueness is on this, so "Bob" and "bob" are one name.
    username_key = peewee.CharField(max_length=MAX_USERNAME_LENGTH, unique=True)
    password = peewee.CharField(max_length=255)
    email = peewee.CharField(max_length=254, default="")
    first_name = peewee.CharField(max_length=150, default="")
    last_name = peewee.CharField(max_length=150, default="")
    is_staff = peewee.BooleanField(default=False)
    is_active = peewee.BooleanField(default=True)
    # Bumped when every token already issued to the user must stop working.
    token_version = peewee.IntegerField(default=0)
    date_joined = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "users"

    @staticmethod
    def normalize(username: str) -> str:
        """The form a username is stored in: NFKC, as Django's ``normalize_username``."""
        return unicodedata.normalize("NFKC", username)

    @staticmethod
    def canonical(username: str) -> str:
        """The key of a name: NFKC, case-folded, NFKC again; fullwidth "admin", "Admin" and "admin" are one.

        It may be longer than the name ("ß" folds to "ss", "ﬃ" to "ffi").
        """
        return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username).casefold())

    def public_json(self) -> dict[str, Any]:
        """The user as the old service showed it (never the password)."""
        return {
            "id": self.id,
            "username": self.username,
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "is_staff": self.is_staff,
        }

    def account_json(self) -> dict[str, Any]:
        """What the user sees of their own account, and staff of anyone's."""
        return {**self.public_json(), "is_active": self.is_active, "date_joined": render_timestamp(self.date_joined)}


class Message(BaseModel):
    id = NeverReusedId()
    content = peewee.CharField(max_length=160, constraints=[peewee.Check("length(content) BETWEEN 1 AND 160")])
    views = peewee.IntegerField(default=0, constraints=[peewee.SQL("DEFAULT 0"), peewee.Check("views >= 0")])
    created_at = peewee.DateTimeField()
    updated_at = peewee.DateTimeField()
    # Indexed below, with the default order: an author's messages, newest first.
    author = peewee.ForeignKeyField(User, null=True, on_delete="SET NULL", backref="messages", index=False)

    class Meta:
        table_name = "messages"
        indexes = (
            # The list's orders: keyset pages walk these, forwards or backwards.
            (("updated_at", "id"), False),
            (("created_at", "id"), False),
            # Without it ordering=views sorts the whole table. It costs every view an
            # index write (and rules out PostgreSQL's HOT updates): measured, that is cheap.
            (("views", "id"), False),
            # ?author=: that author's rows in the default order, without sorting them all. It
            # also serves the foreign key (a deleted user's messages are found by it).
            (("author", "updated_at", "id"), False),
        )


class RateLimitHit(BaseModel):
    """Requests counted per bucket (e.g. ``token:ip:10.0.0.1``) and fixed time window.

    Kept in the database, not in memory, so the limit holds across processes.
    """

    bucket = peewee.CharField(max_length=200)
    window_start = peewee.BigIntegerField()
    hits = peewee.IntegerField()

    class Meta:
        table_name = "rate_limit_hits"
        primary_key = peewee.CompositeKey("bucket", "window_start")
        indexes = ((("window_start",), False),)


class RevokedToken(BaseModel):
    """A refresh token that may not be used again: logged out, or spent by rotation.

    A row is kept until ``expires_at``, which the caller sets past the last moment
    any process could still accept the token (``TokenService.revocation_expiry``);
    rows past it are pruned on every revocation write.
    """

    jti = peewee.CharField(max_length=64, primary_key=True)
    family = peewee.CharField(max_length=64)
    reason = peewee.CharField(max_length=16)  # "logout" or "rotated"
    expires_at = peewee.BigIntegerField(index=True)  # Unix time

    class Meta:
        table_name = "revoked_tokens"


class RevokedFamily(BaseModel):
    """Every token descended from one login, access and refresh: revoked when a spent refresh token is reused."""

    family = peewee.CharField(max_length=64, primary_key=True)
    expires_at = peewee.BigIntegerField(index=True)

    class Meta:
        table_name = "revoked_families"


class IdempotencyKey(BaseModel):
    """A create's ``Idempotency-Key``, per user: claimed while its message is written, then its answer.

    Kept in the database so that a retry reaching another process, or this one after a
    restart, finds it. ``response`` is None while the create is in flight.
    """

    user = peewee.ForeignKeyField(User, on_delete="CASCADE", index=False)
    key = peewee.CharField(max_length=255)
    fingerprint = peewee.CharField(max_length=64)  # SHA-256 of the request's content
    claim = peewee.CharField(max_length=32)  # the request creating it now (random)
    created_at = peewee.BigIntegerField(index=True)  # Unix time: claimed, or taken over
    message_id = peewee.IntegerField(null=True)  # no foreign key: the answer outlives the message
    response = peewee.TextField(null=True)
    etag = peewee.CharField(max_length=32, null=True)

    class Meta:
        table_name = "idempotency_keys"
        primary_key = peewee.CompositeKey("user", "key")


ALL_MODELS = (User, Message, RateLimitHit, RevokedToken, RevokedFamily, IdempotencyKey)
