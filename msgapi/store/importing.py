"""Adding the old Django service's users and messages, keeping their ids (``msgapi import-django``)."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence
from typing import Any

import peewee

from .. import passwords
from .connection import database, dialect, write_lock
from .schema import Message, User


class ImportConflict(Exception):
    """The rows cannot be added as they are; the message says why, for the operator."""


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


def add(user_rows: Sequence[Sequence[Any]], message_rows: Sequence[Sequence[Any]], has_author: bool) -> ImportReport:
    """Add the users and messages whose ids are not here yet, in one transaction.

    Rows are as read from ``auth_user`` and ``api_message`` (see ``operations.read_django_source``).
    """
    report = ImportReport()
    with write_lock(), database.atomic():
        existing = {user.id: user for user in User.select()}
        existing_keys = {user.username_key: user.id for user in existing.values()}
        new_users = []
        for uid, username, password, email, first, last, staff, active, joined in user_rows:
            key = User.canonical(username)
            if uid in existing:
                if existing[uid].username_key != key:
                    raise ImportConflict(f"user id {uid} is {existing[uid].username!r} here but {username!r} there")
                report.users_present += 1
                continue
            if key in existing_keys:
                raise ImportConflict(f"{username!r} already exists here with another id ({existing_keys[key]})")
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
            User.insert_many(batch).execute()
        report.users_added = len(new_users)

        present_ids = {row[0] for row in Message.select(Message.id).tuples()}
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
            Message.insert_many(batch).execute()
        report.messages_added = len(new_messages)

        dialect().after_explicit_ids(database, ("users", "messages"))
    return report
