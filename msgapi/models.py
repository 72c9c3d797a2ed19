"""The data layer: users, messages, and every query the resources need.

Resources call these functions and never build SQL. Each write that must be
atomic is one statement (a view is ``UPDATE ... SET views = views + 1 ...
RETURNING``), so concurrent requests cannot lose an update.
"""

from __future__ import annotations

import datetime
from typing import Any

import peewee

from .db import database, utcnow

# Ids are 32-bit on PostgreSQL (SERIAL); anything larger cannot exist, on either database.
MAX_ID = 2**31 - 1


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class User(BaseModel):
    username = peewee.CharField(max_length=150)
    # The username case-folded: uniqueness is on this, so "Bob" and "bob" are one name.
    username_key = peewee.CharField(max_length=150, unique=True)
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
    def canonical(username: str) -> str:
        return username.casefold()

    @classmethod
    def by_username(cls, username: str) -> User | None:
        return cls.get_or_none(cls.username_key == cls.canonical(username))

    @classmethod
    def active_by_id(cls, user_id: int) -> User | None:
        if not 0 < user_id <= MAX_ID:
            return None
        return cls.get_or_none((cls.id == user_id) & (cls.is_active == True))

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


class Message(BaseModel):
    content = peewee.CharField(max_length=160, constraints=[peewee.Check("length(content) BETWEEN 1 AND 160")])
    views = peewee.IntegerField(default=0, constraints=[peewee.SQL("DEFAULT 0"), peewee.Check("views >= 0")])
    created_at = peewee.DateTimeField()
    updated_at = peewee.DateTimeField()
    author = peewee.ForeignKeyField(User, null=True, on_delete="SET NULL", backref="messages")

    class Meta:
        table_name = "messages"
        indexes = (
            # The list's order: newest updated_at first, ties by id.
            (("updated_at", "id"), False),
        )


def _author_name() -> peewee.Expression:
    """A scalar subquery for the author's username, usable inside RETURNING."""
    Author = User.alias("author_user")
    return Author.select(Author.username).where(Author.id == Message.author).alias("author")


def _message_columns() -> list[Any]:
    return [Message.id, Message.content, Message.views, Message.created_at, Message.updated_at]


def list_messages() -> list[dict[str, Any]]:
    """Every message, newest ``updated_at`` first, ties broken by the higher id."""
    query = (
        Message.select(*_message_columns(), User.username.alias("author"))
        .join(User, peewee.JOIN.LEFT_OUTER, on=(Message.author == User.id))
        .order_by(Message.updated_at.desc(), Message.id.desc())
        .dicts()
    )
    return list(query)


def _single_row(query: peewee.Query) -> dict[str, Any] | None:
    for row in query.dicts().execute():
        return row
    return None


def get_message(message_id: int) -> dict[str, Any] | None:
    """The message without counting a view (HEAD, and the pre-write existence check)."""
    query = Message.select(*_message_columns(), _author_name()).where(Message.id == message_id)
    return _single_row(query)


def count_view(message_id: int) -> dict[str, Any] | None:
    """Count one view and return the message as that view left it, in one statement."""
    query = (
        Message.update(views=Message.views + 1)
        .where(Message.id == message_id)
        .returning(*_message_columns(), _author_name())
    )
    return _single_row(query)


def create_message(content: str, author: User) -> dict[str, Any]:
    now = utcnow()
    query = Message.insert(content=content, views=0, created_at=now, updated_at=now, author=author).returning(
        *_message_columns()
    )
    row = _single_row(query)
    assert row is not None
    row["author"] = author.username
    return row


def replace_content(message_id: int, content: str) -> dict[str, Any] | None:
    """New content, views back to 0, ``updated_at`` now; None if the message is gone."""
    query = (
        Message.update(content=content, views=0, updated_at=utcnow())
        .where(Message.id == message_id)
        .returning(*_message_columns(), _author_name())
    )
    return _single_row(query)


def delete_message(message_id: int) -> bool:
    return Message.delete().where(Message.id == message_id).execute() > 0


def message_exists(message_id: int) -> bool:
    return Message.select(Message.id).where(Message.id == message_id).exists()


def create_user(username: str, password_hash: str, **profile: Any) -> User:
    """Insert a user; raises ``peewee.IntegrityError`` when the name is taken (in any case)."""
    with database.atomic():
        return User.create(
            username=username,
            username_key=User.canonical(username),
            password=password_hash,
            **profile,
        )


def set_password_hash(user: User, password_hash: str) -> None:
    User.update(password=password_hash).where(User.id == user.id).execute()


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


def count_hit(bucket: str, window_start: int) -> int:
    """Count one request in ``bucket``'s window and return the window's total, atomically."""
    query = (
        RateLimitHit.insert(bucket=bucket, window_start=window_start, hits=1)
        .on_conflict(
            conflict_target=[RateLimitHit.bucket, RateLimitHit.window_start],
            update={RateLimitHit.hits: RateLimitHit.hits + 1},
        )
        .returning(RateLimitHit.hits)
    )
    row = _single_row(query)
    assert row is not None
    return row["hits"]


def hits_in_window(bucket: str, window_start: int) -> int:
    row = (
        RateLimitHit.select(RateLimitHit.hits)
        .where((RateLimitHit.bucket == bucket) & (RateLimitHit.window_start == window_start))
        .first()
    )
    return row.hits if row else 0


def prune_hits(before_window: int) -> None:
    RateLimitHit.delete().where(RateLimitHit.window_start < before_window).execute()


ALL_MODELS = (User, Message, RateLimitHit)


def create_tables() -> None:
    """Create missing tables and indexes; safe to run from several processes at once."""
    with database.atomic():
        if isinstance(database.obj, peewee.PostgresqlDatabase):
            # CREATE TABLE IF NOT EXISTS still races in PostgreSQL's catalog; serialise it.
            database.execute_sql("SELECT pg_advisory_xact_lock(7466734)")
        database.create_tables(ALL_MODELS, safe=True)


def render_timestamp(value: datetime.datetime) -> str:
    """RFC 3339 in UTC, always with microseconds: ``2026-11-24T18:35:32.123456Z``."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
