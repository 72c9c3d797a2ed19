"""Operator tasks behind the command line: create users, deactivate them, import the old Django data."""

from __future__ import annotations

import dataclasses

import peewee

from . import passwords, rules
from .database_url import database_url_problem, postgresql_parameters, sqlite_path
from .store import Store, User, describe_open_failure
from .store.importing import ImportReport


class OperationError(Exception):
    """The task cannot be done as asked; the message says why, for the operator."""


def create_user(store: Store, username: str, password: str, *, staff: bool, iterations: int) -> User:
    from .body import FieldErrors

    errors = FieldErrors()
    body = {"username": username, "password": password}
    rules.read_username(errors, body)
    rules.read_new_password(errors, body, "password", username)
    if errors.errors:
        raise OperationError("; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in errors.errors.items()))
    try:
        return store.users.create(username, passwords.make_password(password, iterations), is_staff=staff)
    except peewee.IntegrityError:
        raise OperationError(f"a user named {username!r} (in any letter case) already exists") from None


def deactivate_user(store: Store, username: str) -> User:
    user = store.users.by_username(username)
    if user is None:
        raise OperationError(f"no user named {username!r}")
    return store.users.set_active(user, False)


def _columns(source: peewee.Database, table: str) -> set[str]:
    return {column.name for column in source.get_columns(table)}


def open_source(source_url: str) -> peewee.Database:
    """The old database, connected; a SQLite source is opened read-only and never created."""
    problem = database_url_problem(source_url, "the source URL")
    if problem:
        raise OperationError(problem)
    if source_url.startswith("sqlite"):
        path = sqlite_path(source_url)
        if not path.is_file():
            raise OperationError(f"no SQLite database at {path}; check the source URL")
        source = peewee.SqliteDatabase(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    else:
        params = postgresql_parameters(source_url)
        source = peewee.PostgresqlDatabase(params.pop("database"), **{"connect_timeout": 5, **params})
    try:
        source.connect()
    except (peewee.OperationalError, peewee.InterfaceError) as exc:
        raise OperationError(describe_open_failure(source_url, exc, "the source URL")) from None
    return source


@dataclasses.dataclass(frozen=True)
class DjangoRows:
    """What the old service's database holds, read and checked, ready to import."""

    users: list[tuple]
    messages: list[tuple]
    has_author: bool


def read_django_source(source: peewee.Database) -> DjangoRows:
    """Read users and messages from the old Django database (see ``open_source``), then close it.

    Everything that can stop an import is checked here, before msgapi's own database is
    opened (and, on a first run, created): missing tables, and usernames that differ only
    in letter case (one name here).
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
        by_key.setdefault(User.canonical(row[1]), []).append(row[1])
    clashes = [names for names in by_key.values() if len(names) > 1]
    if clashes:
        listed = "; ".join(", ".join(names) for names in clashes)
        raise OperationError(f"usernames that differ only in letter case are one name here: {listed}")
    return DjangoRows(user_rows, message_rows, has_author)


def import_django(store: Store, rows: DjangoRows) -> ImportReport:
    """Copy the old service's users and messages, keeping their ids.

    Idempotent: rows whose id is already here are left alone.
    """
    try:
        return store.importing.add(rows.users, rows.messages, rows.has_author)
    except store.importing.ImportConflict as exc:
        raise OperationError(str(exc)) from None
