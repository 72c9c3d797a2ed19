"""Operator tasks behind the command line: create users, deactivate them, import the old Django data."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import peewee
from playhouse.db_url import connect as connect_url

from . import models, passwords, rules
from .config import sqlite_path
from .db import database, describe_open_failure, write_lock


class OperationError(Exception):
    """The task cannot be done as asked; the message says why, for the operator."""


def create_user(username: str, password: str, *, staff: bool, iterations: int) -> models.User:
    from .body import FieldErrors

    errors = FieldErrors()
    body = {"username": username, "password": password}
    rules.read_username(errors, body)
    rules.read_new_password(errors, body, "password", username)
    if errors.errors:
        raise OperationError("; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in errors.errors.items()))
    try:
        return models.create_user(username, passwords.make_password(password, iterations), is_staff=staff)
    except peewee.IntegrityError:
        raise OperationError(f"a user named {username!r} (in any letter case) already exists") from None


def deactivate_user(username: str) -> models.User:
    user = models.User.by_username(username)
    if user is None:
        raise OperationError(f"no user named {username!r}")
    return models.set_active(user, False)


@dataclasses.dataclass
class ImportReport:
    users_added: int = 0
    users_present: int = 0
    messages_added: int = 0
    messages_present: int = 0
    unusable_password_hashes: int = 0
    skipped_messages: list[str] = dataclasses.field(default_factory=list)


def _as_utc_naive(value: Any) -> datetime.datetime:
    """Django with USE_TZ stores UTC: text on SQLite, timestamptz on PostgreSQL."""
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value


def _columns(source: peewee.Database, table: str) -> set[str]:
    return {column.name for column in source.get_columns(table)}


def open_source(source_url: str) -> peewee.Database:
    """The old database, connected; a SQLite source is opened read-only and never created."""
    scheme = source_url.split("://", 1)[0] if "://" in source_url else ""
    if scheme == "sqlite":
        path = sqlite_path(source_url)
        if not path.is_file():
            raise OperationError(f"no SQLite database at {path}; check the source URL")
        source = peewee.SqliteDatabase(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    elif scheme in ("postgres", "postgresql"):
        source = connect_url(source_url, connect_timeout=5)
    else:
        raise OperationError(f"the source URL must start with sqlite:/// or postgresql://, got scheme {scheme!r}")
    try:
        source.connect()
    except (peewee.OperationalError, peewee.InterfaceError) as exc:
        raise OperationError(describe_open_failure(source_url, exc, "the source URL")) from None
    return source


def import_django(source: peewee.Database) -> ImportReport:
    """Copy users and messages from the old Django service's database (see ``open_source``), keeping their ids.

    Idempotent: rows whose id is already here are left alone. Usernames that differ
    only in letter case (one name here) stop the import before anything is written.
    """
    try:
        tables = set(source.get_tables())
        missing = {"auth_user", "api_message"} - tables
        if missing:
            raise OperationError(f"the source has no {', '.join(sorted(missing))} table")
        user_rows = source.execute_sql(
            "SELECT id, username, password, email, first_name, last_name, is_staff, is_active, date_joined "
            "FROM auth_user ORDER BY id"
        ).fetchall()
        has_author = "author_id" in _columns(source, "api_message")
        message_rows = source.execute_sql(
            "SELECT id, content, views, created_at, updated_at"
            + (", author_id" if has_author else "")
            + " FROM api_message ORDER BY id"
        ).fetchall()
    finally:
        source.close()

    by_key: dict[str, list[str]] = {}
    for row in user_rows:
        by_key.setdefault(models.User.canonical(row[1]), []).append(row[1])
    clashes = [names for names in by_key.values() if len(names) > 1]
    if clashes:
        listed = "; ".join(", ".join(names) for names in clashes)
        raise OperationError(f"usernames that differ only in letter case are one name here: {listed}")

    report = ImportReport()
    with write_lock(), database.atomic():
        existing = {user.id: user for user in models.User.select()}
        existing_keys = {user.username_key: user.id for user in existing.values()}
        new_users = []
        for uid, username, password, email, first, last, staff, active, joined in user_rows:
            key = models.User.canonical(username)
            if uid in existing:
                if existing[uid].username_key != key:
                    raise OperationError(f"user id {uid} is {existing[uid].username!r} here but {username!r} there")
                report.users_present += 1
                continue
            if key in existing_keys:
                raise OperationError(f"{username!r} already exists here with another id ({existing_keys[key]})")
            if not password.startswith(passwords.ALGORITHM + "$"):
                report.unusable_password_hashes += 1
            new_users.append(
                {
                    "id": uid,
                    "username": username,
                    "username_key": key,
                    "password": password,
                    "email": email or "",
                    "first_name": first or "",
                    "last_name": last or "",
                    "is_staff": bool(staff),
                    "is_active": bool(active),
                    "token_version": 0,
                    "date_joined": _as_utc_naive(joined),
                }
            )
        for batch in peewee.chunked(new_users, 500):
            models.User.insert_many(batch).execute()
        report.users_added = len(new_users)

        present_ids = {row[0] for row in models.Message.select(models.Message.id).tuples()}
        known_user_ids = set(existing) | {user["id"] for user in new_users}
        new_messages = []
        for row in message_rows:
            mid, content, views, created, updated = row[:5]
            author_id = row[5] if has_author else None
            if mid in present_ids:
                report.messages_present += 1
                continue
            content = (content or "").strip()
            if not 1 <= len(content) <= 160 or "\x00" in content:
                report.skipped_messages.append(f"message {mid}: content is empty, too long or has NUL")
                continue
            new_messages.append(
                {
                    "id": mid,
                    "content": content,
                    "views": max(0, int(views or 0)),
                    "created_at": _as_utc_naive(created),
                    "updated_at": _as_utc_naive(updated),
                    "author": author_id if author_id in known_user_ids else None,
                }
            )
        for batch in peewee.chunked(new_messages, 500):
            models.Message.insert_many(batch).execute()
        report.messages_added = len(new_messages)

        if isinstance(database.obj, peewee.PostgresqlDatabase):
            # Explicit ids leave the sequences behind; the next insert would collide.
            for table in ("users", "messages"):
                database.execute_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"GREATEST((SELECT MAX(id) FROM {table}), 1))"
                )
    return report
