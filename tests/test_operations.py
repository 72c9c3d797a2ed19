"""Operator commands: init-db, createuser, deactivate, import-django, and `run.py` with no subcommand."""

from __future__ import annotations

import sqlite3
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest
import webtest
from conftest import TEST_HASH_ITERATIONS, TEST_SECRET_KEY, _with_database, run_msgapi

from msgapi.app import create_app
from msgapi.store.connection import database

ROOT = Path(__file__).resolve().parent.parent
# Made by Django 5.2.19: make_password("lètmein-old-42", "seasalt4import", "pbkdf2_sha256").
DJANGO_HASH = "pbkdf2_sha256$1000000$seasalt4import$IPug6tBcXxEC3Tu8YSvAFyve/5hAmCPYke8gKY05aVk="
DJANGO_PASSWORD = "lètmein-old-42"

AUTH_USER_DDL = """CREATE TABLE auth_user (
    id INTEGER PRIMARY KEY, password VARCHAR(128) NOT NULL, last_login TIMESTAMP NULL,
    is_superuser BOOLEAN NOT NULL, username VARCHAR(150) NOT NULL UNIQUE, first_name VARCHAR(150) NOT NULL,
    last_name VARCHAR(150) NOT NULL, email VARCHAR(254) NOT NULL, is_staff BOOLEAN NOT NULL,
    is_active BOOLEAN NOT NULL, date_joined {ts} NOT NULL)"""
MESSAGE_DDL = """CREATE TABLE api_message (
    id INTEGER PRIMARY KEY, content VARCHAR(160) NOT NULL, views INTEGER NOT NULL,
    created_at {ts} NOT NULL, updated_at {ts} NOT NULL)"""

USERS = [
    (
        7,
        DJANGO_HASH,
        None,
        False,
        "olduser",
        "Old",
        "User",
        "old@example.com",
        False,
        True,
        "2021-03-04 05:06:07.123456",
    ),
    (9, DJANGO_HASH, None, True, "boss", "", "", "", True, True, "2021-03-04 05:06:08"),
]
MESSAGES = [
    (41, "first old message", 12, "2021-05-01 10:00:00.5", "2021-05-02 11:30:00.250000"),
    (42, "second old message", 0, "2021-05-03 10:00:00", "2021-05-03 10:00:00"),
]


def _run(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess:
    return run_msgapi(*args, env=env, cwd=ROOT, stdin=stdin)


@pytest.fixture
def env(database_url: str) -> dict[str, str]:
    import os

    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "PASSWORD_HASH_ITERATIONS": str(TEST_HASH_ITERATIONS),
        "AUTH_RATE_LIMIT": "off",
    }


@pytest.fixture
def api(config):
    def close() -> None:
        if database.obj is not None:
            database.close_all()

    def start() -> webtest.TestApp:
        close()
        return webtest.TestApp(create_app(config))

    yield start
    close()


@pytest.fixture(params=["sqlite", "postgresql"])
def django_source(request, tmp_path):
    """A database shaped like the old Django service's, with a real Django password hash."""
    if request.param == "sqlite":
        path = tmp_path / "django.sqlite3"
        conn = sqlite3.connect(path)
        conn.execute(AUTH_USER_DDL.format(ts="DATETIME"))
        conn.execute(MESSAGE_DDL.format(ts="DATETIME"))
        conn.executemany("INSERT INTO auth_user VALUES (?,?,?,?,?,?,?,?,?,?,?)", USERS)
        conn.executemany("INSERT INTO api_message VALUES (?,?,?,?,?)", MESSAGES)
        conn.commit()
        conn.close()
        yield f"sqlite:///{path}"
        return
    admin_url = request.getfixturevalue("postgres_url")
    name = f"django_src_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    url = _with_database(admin_url, name)
    with psycopg2.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
        cursor.execute(AUTH_USER_DDL.format(ts="TIMESTAMPTZ"))
        cursor.execute(MESSAGE_DDL.format(ts="TIMESTAMPTZ"))
        cursor.executemany("INSERT INTO auth_user VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", USERS)
        cursor.executemany("INSERT INTO api_message VALUES (%s,%s,%s,%s,%s)", MESSAGES)
    conn.close()
    yield url
    admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def test_import_django_keeps_ids_timestamps_views_and_hashes(django_source, env, api):
    result = _run("import-django", django_source, env=env)
    assert result.returncode == 0, result.stderr
    assert "users: 2 added" in result.stdout and "messages: 2 added" in result.stdout

    app = api()
    messages = {m["id"]: m for m in app.get("/api/messages").json}
    assert messages[41]["created_at"] == "2021-05-01T10:00:00.500000Z"
    assert messages[41]["updated_at"] == "2021-05-02T11:30:00.250000Z"
    assert messages[41]["views"] == 12 and messages[41]["author"] is None
    assert messages[42]["created_at"] == "2021-05-03T10:00:00.000000Z"
    # The Django hash verifies unchanged: the old password logs in.
    tokens = app.post_json("/api/auth/token/", {"username": "olduser", "password": DJANGO_PASSWORD}).json
    me = app.get("/api/auth/me", headers={"Authorization": f"Bearer {tokens['access']}"}).json
    assert me["id"] == 7 and me["email"] == "old@example.com"
    assert me["date_joined"] == "2021-03-04T05:06:07.123456Z"


@pytest.mark.parametrize("django_source", ["postgresql"], indirect=True)
def test_import_django_decodes_a_percent_encoded_user_name_and_password(django_source, env, api):
    """As in DATABASE_URL: a password with '@' or '/' can only be written percent-encoded."""
    parts = urlsplit(django_source)
    user = "".join(f"%{ord(letter):02X}" for letter in parts.username)
    encoded = parts._replace(netloc=f"{user}:s%40me%2Fpass@{parts.netloc.split('@')[-1]}").geturl()
    result = _run("import-django", encoded, env=env)
    assert result.returncode == 0, result.stderr
    assert "users: 2 added" in result.stdout


def test_import_django_twice_adds_nothing(django_source, env, api):
    assert _run("import-django", django_source, env=env).returncode == 0
    again = _run("import-django", django_source, env=env)
    assert again.returncode == 0, again.stderr
    assert "users: 0 added, 2 already here" in again.stdout
    assert "messages: 0 added, 2 already here" in again.stdout
    assert len(api().get("/api/messages").json) == 2


def test_new_rows_after_import_get_fresh_ids(django_source, env, api):
    assert _run("import-django", django_source, env=env).returncode == 0
    app = api()
    # Sequences were advanced past the imported ids (PostgreSQL); SQLite does it by itself.
    user = app.post_json("/api/auth/register/", {"username": "newbie", "password": "fresh-pass-1"}).json
    assert user["id"] > 9
    tokens = app.post_json("/api/auth/token/", {"username": "newbie", "password": "fresh-pass-1"}).json
    created = app.post_json(
        "/api/messages", {"content": "after import"}, headers={"Authorization": f"Bearer {tokens['access']}"}
    ).json
    assert created["id"] > 42


def test_import_stops_before_writing_on_usernames_differing_only_in_case(django_source, env, api):
    if django_source.startswith("sqlite"):
        conn = sqlite3.connect(django_source.removeprefix("sqlite:///"))
        conn.execute("INSERT INTO auth_user VALUES (10,'x',NULL,0,'OldUser','','','',0,1,'2021-01-01 00:00:00')")
        conn.commit()
        conn.close()
    else:
        with psycopg2.connect(django_source) as conn, conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO auth_user VALUES (10,'x',NULL,false,'OldUser','','','',false,true,'2021-01-01')"
            )
        conn.close()
    result = _run("import-django", django_source, env=env)
    assert result.returncode == 1
    assert "olduser" in result.stderr.lower() and "OldUser" in result.stderr
    assert api().get("/api/messages").json == []


def test_createuser_reads_the_password_from_stdin_and_can_make_staff(env, api):
    result = _run("createuser", "operator", "--staff", env=env, stdin="operator-pass-1\n")
    assert result.returncode == 0, result.stderr
    assert "operator-pass-1" not in result.stdout + result.stderr
    app = api()
    tokens = app.post_json("/api/auth/token/", {"username": "operator", "password": "operator-pass-1"}).json
    me = app.get("/api/auth/me", headers={"Authorization": f"Bearer {tokens['access']}"}).json
    assert me["is_staff"] is True


def test_createuser_refuses_a_weak_password(env):
    result = _run("createuser", "weakling", env=env, stdin="12345678\n")
    assert result.returncode == 1
    assert "entirely numeric" in result.stderr


def test_deactivate_ends_login_and_existing_tokens(env, api):
    assert _run("createuser", "leaver", env=env, stdin="leaver-pass-1\n").returncode == 0
    app = api()
    tokens = app.post_json("/api/auth/token/", {"username": "leaver", "password": "leaver-pass-1"}).json
    result = _run("deactivate", "leaver", env=env)
    assert result.returncode == 0, result.stderr
    headers = {"Authorization": f"Bearer {tokens['access']}"}
    assert app.get("/api/auth/me", headers=headers, expect_errors=True).status_int == 401
    assert (
        app.post_json("/api/auth/token/refresh/", {"refresh": tokens["refresh"]}, expect_errors=True).status_int == 401
    )
    login = {"username": "leaver", "password": "leaver-pass-1"}
    assert app.post_json("/api/auth/token/", login, expect_errors=True).status_int == 401


def test_init_db_is_idempotent(env):
    assert _run("init-db", env=env).returncode == 0
    assert _run("init-db", env=env).returncode == 0


def test_a_malformed_setting_stops_start_up_with_one_line_naming_it(env):
    result = _run("--port", "0", env={**env, "ACCESS_TOKEN_LIFETIME": "soon"})
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "ACCESS_TOKEN_LIFETIME" in errors[0]


def test_a_short_secret_key_is_refused(env):
    result = _run("--port", "0", env={**env, "SECRET_KEY": "too-short"})
    assert result.returncode == 2
    assert "SECRET_KEY must be at least 32 characters" in result.stderr
