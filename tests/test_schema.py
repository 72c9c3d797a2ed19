"""schema.sql (for operators) and the Peewee models (what the service creates) must agree.

Both are applied to PostgreSQL in two fresh schemas, and the catalogues compared:
tables, columns (type, length, nullability, default), constraints and indexes.
schema.sql is PostgreSQL's by design; SQLite tables always come from the models,
and SQLite databases made before ids were never reused are rebuilt at start.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
import webtest
from conftest import PASSWORD, bearer, obtain_tokens, register

from msgapi.app import create_app
from msgapi.config import Config
from msgapi.store import schema, tables
from msgapi.store.connection import database, open_database

SCHEMA_SQL = Path(__file__).resolve().parent.parent / "schema.sql"


def _catalogue(cursor, schema: str) -> dict[str, list]:
    cursor.execute(
        """SELECT table_name, column_name, data_type, character_maximum_length, is_nullable, column_default
           FROM information_schema.columns WHERE table_schema = %s ORDER BY table_name, column_name""",
        (schema,),
    )
    columns = [tuple(row) for row in cursor.fetchall()]
    cursor.execute(
        """SELECT cls.relname, con.contype, pg_get_constraintdef(con.oid)
           FROM pg_constraint con JOIN pg_class cls ON cls.oid = con.conrelid
           JOIN pg_namespace ns ON ns.oid = cls.relnamespace
           WHERE ns.nspname = %s ORDER BY 1, 2, 3""",
        (schema,),
    )
    constraints = [tuple(row) for row in cursor.fetchall()]
    cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY 1", (schema,))
    indexes = [tuple(row) for row in cursor.fetchall()]

    def unqualified(rows: list[tuple]) -> list[tuple]:
        # Index definitions and sequence defaults name the schema; compare without it.
        return [tuple(v.replace(f"{schema}.", "") if isinstance(v, str) else v for v in row) for row in rows]

    # CHECK constraints render with PostgreSQL's own normalisation, so they compare as text.
    return {
        "catalogue": [unqualified(columns), unqualified(constraints), unqualified(indexes)],
        "tables": sorted({c[0] for c in columns}),
    }


@pytest.fixture
def schemas(postgres_url: str):
    conn = psycopg2.connect(postgres_url)
    conn.autocommit = True
    with conn.cursor() as cursor:
        # Extensions belong to the database, not a schema's tables: installed once in public,
        # which both search paths below include, so neither schema's CASCADE drops it.
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
        for name in ("from_sql", "from_models"):
            cursor.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}")
    yield conn
    with conn.cursor() as cursor:
        cursor.execute("DROP SCHEMA IF EXISTS from_sql CASCADE; DROP SCHEMA IF EXISTS from_models CASCADE")
    conn.close()


def test_schema_sql_matches_the_models(schemas, postgres_url: str):
    with schemas.cursor() as cursor:
        cursor.execute("SET search_path TO from_sql, public")
        cursor.execute(SCHEMA_SQL.read_text(encoding="utf-8"))
        cursor.execute("SET search_path TO public")

    url = postgres_url + "?options=-csearch_path%3Dfrom_models,public"
    database.initialize(open_database(Config(database_url=url, secret_key="k" * 40)))
    try:
        tables.create_tables()
    finally:
        database.close_all()

    with schemas.cursor() as cursor:
        from_sql = _catalogue(cursor, "from_sql")
        from_models = _catalogue(cursor, "from_models")
    assert from_sql["tables"] == sorted(model._meta.table_name for model in schema.ALL_MODELS)
    assert from_sql["catalogue"] == from_models["catalogue"]


def test_schema_sql_is_idempotent(schemas):
    sql = SCHEMA_SQL.read_text(encoding="utf-8")
    with schemas.cursor() as cursor:
        cursor.execute("SET search_path TO from_sql, public")
        cursor.execute(sql)
        cursor.execute(sql)
        cursor.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'from_sql'")
        assert cursor.fetchone()[0] == len(schema.ALL_MODELS)
    assert re.search(r"CREATE TABLE IF NOT EXISTS", sql)


# --- ids are never reused ------------------------------------------------------------------------------


def test_a_deleted_newest_user_id_goes_to_nobody_else(app):
    register(app, "alice")
    bob = register(app, "bob")
    bobs_token = obtain_tokens(app, "bob")["access"]
    schema.User.delete_by_id(bob["id"])
    carol = register(app, "carol")
    assert carol["id"] > bob["id"]
    # The deleted user's unexpired token does not speak for the newcomer.
    assert app.get("/api/auth/me", headers=bearer(bobs_token), expect_errors=True).status_int == 401


def test_a_deleted_newest_message_id_goes_to_no_other_message(app, create_message, auth):
    create_message("first")
    newest = create_message("second")
    app.delete(f"/api/messages/{newest['id']}", headers=auth, status=204)
    assert create_message("third")["id"] > newest["id"]


# The tables as SQLite databases were created before ids were never reused.
OLD_SQLITE_DDL = [
    'CREATE TABLE "users" ("id" INTEGER NOT NULL PRIMARY KEY, "username" VARCHAR(150) NOT NULL, '
    '"username_key" VARCHAR(150) NOT NULL, "password" VARCHAR(255) NOT NULL, "email" VARCHAR(254) NOT NULL, '
    '"first_name" VARCHAR(150) NOT NULL, "last_name" VARCHAR(150) NOT NULL, "is_staff" INTEGER NOT NULL, '
    '"is_active" INTEGER NOT NULL, "token_version" INTEGER NOT NULL, "date_joined" DATETIME NOT NULL)',
    'CREATE UNIQUE INDEX "users_username_key" ON "users" ("username_key")',
    'CREATE TABLE "messages" ("id" INTEGER NOT NULL PRIMARY KEY, "content" VARCHAR(160) NOT NULL '
    'CHECK (length(content) BETWEEN 1 AND 160), "views" INTEGER NOT NULL DEFAULT 0 CHECK (views >= 0), '
    '"created_at" DATETIME NOT NULL, "updated_at" DATETIME NOT NULL, "author_id" INTEGER, '
    'FOREIGN KEY ("author_id") REFERENCES "users" ("id") ON DELETE SET NULL)',
    'CREATE INDEX "messages_updated_at_id" ON "messages" ("updated_at", "id")',
    'CREATE INDEX "messages_created_at_id" ON "messages" ("created_at", "id")',
    'CREATE INDEX "messages_author_id" ON "messages" ("author_id")',
]
OLD_ROWS = [
    "INSERT INTO users VALUES (1, 'alice', 'alice', 'pbkdf2_sha256$1000$s$h', 'a@example.com', 'Al', 'Ice', "
    "0, 1, 3, '2026-01-02 03:04:05.123456')",
    "INSERT INTO users VALUES (7, 'Bob', 'bob', 'pbkdf2_sha256$1000$s$h', '', '', '', 1, 0, 0, '2026-01-03 00:00:00')",
    "INSERT INTO messages VALUES (4, 'by alice', 5, '2026-01-04 00:00:00', '2026-01-05 00:00:00.5', 1)",
    "INSERT INTO messages VALUES (9, 'by bob', 0, '2026-01-04 00:00:00', '2026-01-04 00:00:00', 7)",
    "INSERT INTO messages VALUES (11, 'imported', 2, '2026-01-04 00:00:00', '2026-01-04 00:00:00', NULL)",
]


def _old_sqlite_database(path) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for statement in OLD_SQLITE_DDL + OLD_ROWS:
            conn.execute(statement)
    conn.close()


def _sqlite_schema(path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall())
    finally:
        conn.close()


def _rows(path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(path)
    try:
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall() for table in ("users", "messages")}
    finally:
        conn.close()


def test_new_sqlite_tables_never_reuse_ids(sqlite_url, tmp_path):
    create_app(Config(database_url=sqlite_url, secret_key="k" * 40))
    database.close_all()
    schema = _sqlite_schema(tmp_path / "msgapi.sqlite3")
    assert "AUTOINCREMENT" in schema["users"] and "AUTOINCREMENT" in schema["messages"]


def test_an_old_sqlite_database_is_rebuilt_at_start_keeping_every_row_index_and_key(sqlite_url, tmp_path):
    old = tmp_path / "msgapi.sqlite3"
    _old_sqlite_database(old)
    rows_before = _rows(old)
    fresh = tmp_path / "fresh.sqlite3"
    create_app(Config(database_url=f"sqlite:///{fresh}", secret_key="k" * 40))
    database.close_all()

    app = webtest.TestApp(create_app(Config(database_url=sqlite_url, secret_key="k" * 40, auth_rate_limit=None)))
    try:
        assert _sqlite_schema(old) == _sqlite_schema(fresh)  # same tables, same AUTOINCREMENT, every index
        assert _rows(old) == rows_before
        # The sequence starts after the highest id; a deleted newest row's id is not handed out again.
        newcomer = app.post_json("/api/auth/register/", {"username": "carol", "password": PASSWORD}).json
        assert newcomer["id"] == 8
        schema.User.delete_by_id(newcomer["id"])
        assert app.post_json("/api/auth/register/", {"username": "dave", "password": PASSWORD}).json["id"] == 9
        # Foreign keys are on again and still point at users: deleting bob orphans his message.
        assert database.execute_sql("PRAGMA foreign_keys").fetchone() == (1,)
        schema.User.delete_by_id(7)
        assert schema.Message.get_by_id(9).author_id is None
        assert database.execute_sql("PRAGMA foreign_key_check").fetchall() == []
        assert database.execute_sql("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        database.close_all()


def test_rebuilding_an_old_sqlite_database_is_done_once(sqlite_url, tmp_path):
    old = tmp_path / "msgapi.sqlite3"
    _old_sqlite_database(old)
    for _ in range(2):
        create_app(Config(database_url=sqlite_url, secret_key="k" * 40))
        database.close_all()
        after = _sqlite_schema(old)
    assert _sqlite_schema(old) == after
    assert "users_rebuilt" not in after and "messages_rebuilt" not in after


def test_init_db_rebuilds_an_old_sqlite_database(sqlite_url, tmp_path):
    old = tmp_path / "msgapi.sqlite3"
    _old_sqlite_database(old)
    env = {**os.environ, "DATABASE_URL": sqlite_url, "SECRET_KEY": "k" * 40}
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, str(root / "run.py"), "init-db"], env=env, cwd=root, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    schema = _sqlite_schema(old)
    assert "AUTOINCREMENT" in schema["users"] and "AUTOINCREMENT" in schema["messages"]
    assert len(_rows(old)["messages"]) == 3


def test_concurrent_starts_rebuild_an_old_sqlite_database_once(sqlite_url, tmp_path):
    old = tmp_path / "msgapi.sqlite3"
    _old_sqlite_database(old)
    rows_before = _rows(old)
    env = {**os.environ, "DATABASE_URL": sqlite_url, "SECRET_KEY": "k" * 40}
    root = Path(__file__).resolve().parent.parent
    processes = [
        subprocess.Popen(
            [sys.executable, str(root / "run.py"), "init-db"],
            env=env,
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
    assert _rows(old) == rows_before
    schema = _sqlite_schema(old)
    assert "AUTOINCREMENT" in schema["users"] and "users_rebuilt" not in schema


def test_sqlite_page_caches_of_all_threads_stay_small(tmp_path):
    """Each Waitress thread keeps its own SQLite connection, and its page cache fills over time:
    the process holds every thread's cache at once, so their sum must fit a small server."""
    config = Config(database_url=f"sqlite:///{tmp_path / 'msgapi.sqlite3'}", secret_key="k" * 40)
    db = open_database(config)
    try:
        (cache_size,) = db.execute_sql("PRAGMA cache_size").fetchone()
    finally:
        db.close_all()
    per_connection_kib = -cache_size if cache_size < 0 else cache_size * 4  # pages of 4 KiB
    assert config.threads * per_connection_kib <= 48 * 1024
