"""The benchmark's database: a fresh one per run, and the direct queries that check the service.

A database is ``("sqlite", path)`` or ``("pg", dsn)``; both go through the driver the
service uses (``sqlite3`` / ``psycopg2``), never through the service.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DB = tuple[str, str]


def connect(db: DB) -> Any:
    kind, target = db
    if kind == "sqlite":
        import sqlite3

        conn = sqlite3.connect(target, timeout=10)
        # The service's pragmas (msgapi.store.connection.SQLITE_PRAGMAS).
        for pragma in (
            "journal_mode = wal",
            "synchronous = normal",
            "foreign_keys = 1",
            "busy_timeout = 10000",
            "cache_size = -16000",
        ):
            conn.execute(f"PRAGMA {pragma}")
        # The search index's triggers call it (msgapi.store.connection registers the same on its connections).
        conn.create_function("msgapi_casefold", 1, lambda value: value.casefold() if isinstance(value, str) else value)
        return conn
    import psycopg2

    return psycopg2.connect(target)


def sql(db: DB, statement: str) -> str:
    """The statement in the driver's parameter style (``%s`` -> ``?`` for sqlite3)."""
    return statement.replace("%s", "?") if db[0] == "sqlite" else statement


def query(db: DB, statement: str, params: tuple = ()) -> list[tuple]:
    conn = connect(db)
    try:
        cur = conn.cursor()
        cur.execute(sql(db, statement), params)
        rows = cur.fetchall() if cur.description else []
        conn.commit()
        return rows
    finally:
        conn.close()


def views_sum(db: DB) -> int:
    return int(query(db, "SELECT COALESCE(SUM(views), 0) FROM messages")[0][0])


def id_range(db: DB) -> tuple[int, int, int]:
    lo, hi, n = query(db, "SELECT MIN(id), MAX(id), COUNT(*) FROM messages")[0]
    return int(lo), int(hi), int(n)


def delete_above(db: DB, max_id: int) -> int:
    conn = connect(db)
    try:
        cur = conn.cursor()
        cur.execute(sql(db, "DELETE FROM messages WHERE id > %s"), (max_id,))
        deleted = cur.rowcount
        conn.commit()
        return deleted
    finally:
        conn.close()


def user_id(db: DB, username: str) -> int:
    return int(query(db, "SELECT id FROM users WHERE username = %s", (username,))[0][0])


class Database:
    """A fresh SQLite file in the temp dir, or a fresh PostgreSQL database created and dropped here."""

    def __init__(self, pg: bool, pg_url: str, tmpdir: Path) -> None:
        self.pg = pg
        self.admin_url = pg_url
        if pg:
            self.name = f"msgapi_bench_{secrets.token_hex(4)}"
            parts = urlsplit(pg_url)
            self.url = urlunsplit(parts._replace(path="/" + self.name))
            self.db: DB = ("pg", self.url)
        else:
            self.path = tmpdir / "bench.sqlite3"
            self.url = f"sqlite:///{self.path}"
            self.db = ("sqlite", str(self.path))

    @property
    def label(self) -> str:
        return f"PostgreSQL ({self.name})" if self.pg else f"SQLite ({self.path})"

    def create(self) -> None:
        if self.pg:
            self._admin(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        if self.pg:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        import psycopg2

        conn = psycopg2.connect(self.admin_url)
        try:
            conn.autocommit = True
            conn.cursor().execute(statement)
        finally:
            conn.close()

    def version(self) -> str:
        if self.pg:
            return query(self.db, "SHOW server_version")[0][0]
        import sqlite3

        return sqlite3.sqlite_version
