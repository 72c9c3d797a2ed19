"""Start-up and operator failures end in one line on stderr and a non-zero exit, leaving nothing behind.

Each case runs ``run.py`` with this interpreter, as an operator would, and checks
the exit code (2: a setting or argument is wrong; 1: the task failed), that
stderr is one line without a traceback, and that no file appeared.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from conftest import TEST_SECRET_KEY, run_msgapi

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = (
    "DATABASE_URL",
    "SECRET_KEY",
    "PASSWORD_HASH_ITERATIONS",
    "THREADS",
    "LOG_FORMAT",
    "AUTH_RATE_LIMIT",
    "ACCESS_TOKEN_LIFETIME",
    "REFRESH_TOKEN_LIFETIME",
)


def run(*args: str, cwd: Path, **settings: str) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if name not in SETTINGS}
    env.update({"SECRET_KEY": TEST_SECRET_KEY, **settings})
    return run_msgapi(*args, env=env, cwd=cwd)


def one_line_error(result: subprocess.CompletedProcess, exit_code: int) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == exit_code, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """``path`` made unwritable even for root (immutable attribute), or by its mode otherwise."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
        pytest.skip("running as root, and this file system cannot make a file immutable")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def with_database(url: str, **changes: str) -> str:
    return urlunsplit(urlsplit(url)._replace(**changes))


# --- serve: the port -------------------------------------------------------------------------------


def test_a_port_in_use_is_one_line_and_creates_no_database(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("--port", str(port), cwd=tmp_path, DATABASE_URL="sqlite:///msgapi.sqlite3")
    line = one_line_error(result, 1)
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("port", ["-5", "65536", "80000", "eighty"])
@pytest.mark.parametrize("command", [[], ["serve"]])
def test_a_port_outside_0_to_65535_is_a_usage_error(tmp_path, command, port):
    result = run(*command, "--port", port, cwd=tmp_path, DATABASE_URL="sqlite:///msgapi.sqlite3")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "argument --port" in error and (port in error)
    assert list(tmp_path.iterdir()) == []


# --- serve and operator commands: the database ------------------------------------------------------


@pytest.mark.parametrize("command", [["--port", "0"], ["init-db"]])
def test_a_sqlite_file_in_a_missing_folder_is_one_line(tmp_path, command):
    result = run(*command, cwd=tmp_path, DATABASE_URL="sqlite:///no/such/folder/msgapi.sqlite3")
    line = one_line_error(result, 2)
    assert "DATABASE_URL" in line and "does not exist" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["--port", "0"], ["createuser", "alice"]])
def test_a_sqlite_file_in_an_unwritable_folder_is_one_line(tmp_path, command):
    folder = tmp_path / "locked"
    folder.mkdir()
    with unwritable(folder):
        result = run(*command, cwd=tmp_path, DATABASE_URL="sqlite:///locked/msgapi.sqlite3")
    line = one_line_error(result, 2)
    assert "DATABASE_URL" in line and "not writable" in line
    assert list(folder.iterdir()) == []


def test_an_unwritable_sqlite_file_is_one_line(tmp_path):
    assert run("init-db", cwd=tmp_path, DATABASE_URL="sqlite:///msgapi.sqlite3").returncode == 0
    database = tmp_path / "msgapi.sqlite3"
    with unwritable(database):
        result = run("--port", "0", cwd=tmp_path, DATABASE_URL="sqlite:///msgapi.sqlite3")
    assert "DATABASE_URL" in one_line_error(result, 2)


@pytest.mark.parametrize("command", [["--port", "0"], ["init-db"]])
def test_a_missing_postgresql_database_is_one_line_naming_it(tmp_path, postgresql_url, command):
    url = with_database(postgresql_url, path="/msgapi_no_such_database")
    line = one_line_error(run(*command, cwd=tmp_path, DATABASE_URL=url), 2)
    parts = urlsplit(url)
    assert f"'msgapi_no_such_database' on {parts.hostname}:{parts.port}" in line
    assert "createdb msgapi_no_such_database" in line


@pytest.mark.parametrize("command", [["--port", "0"], ["init-db"]])
def test_an_unreachable_postgresql_server_is_one_line_naming_it(tmp_path, command):
    port = free_port()
    url = f"postgresql://postgres@127.0.0.1:{port}/msgapi"
    line = one_line_error(run(*command, cwd=tmp_path, DATABASE_URL=url), 2)
    assert f"'msgapi' on 127.0.0.1:{port}" in line
    assert "check that PostgreSQL is running" in line


def test_refused_postgresql_credentials_are_one_line_without_the_password(tmp_path, postgresql_url):
    url = with_database(
        postgresql_url, netloc=f"msgapi_no_such_role:Pa55-w0rd-xyz@{urlsplit(postgresql_url).netloc.split('@')[-1]}"
    )
    result = run("--port", "0", cwd=tmp_path, DATABASE_URL=url)
    line = one_line_error(result, 2)
    assert "msgapi_no_such_role" in line and "check the user name and password" in line
    assert "Pa55-w0rd-xyz" not in result.stderr + result.stdout


# A mistyped port, or a password with an unescaped '/' or '[', makes the URL itself unreadable.
MALFORMED_URLS = {
    "a port that is not a number": "postgresql://msgapi:Pa55/w0rd-xyz@127.0.0.1:5432/msgapi",
    "a port above 65535": "postgresql://msgapi:Pa55-w0rd-xyz@127.0.0.1:99999/msgapi",
    "an unmatched bracket": "postgresql://msgapi:Pa55[w0rd-xyz@127.0.0.1:5432/msgapi",
    "no database name": "postgresql://msgapi:Pa55-w0rd-xyz@127.0.0.1:5432/",
    "an option libpq does not know": "postgresql://msgapi:Pa55-w0rd-xyz@127.0.0.1:5432/msgapi?colour=blue",
    "an option of the pool's": "postgresql://msgapi:Pa55-w0rd-xyz@127.0.0.1:5432/msgapi?max_connections=3",
}


@pytest.mark.parametrize("url", MALFORMED_URLS.values(), ids=MALFORMED_URLS.keys())
@pytest.mark.parametrize("command", [["--port", "0"], ["init-db"]])
def test_a_malformed_database_url_is_one_line_without_the_password(tmp_path, command, url):
    result = run(*command, cwd=tmp_path, DATABASE_URL=url)
    assert "DATABASE_URL" in one_line_error(result, 2)
    assert "w0rd-xyz" not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []


# --- import-django: the source -----------------------------------------------------------------------


def test_import_from_an_unsupported_scheme_is_one_line(tmp_path):
    result = run("import-django", "mysql://django@127.0.0.1/old", cwd=tmp_path, DATABASE_URL="sqlite:///msgapi.sqlite3")
    line = one_line_error(result, 1)
    assert "'mysql'" in line
    assert list(tmp_path.iterdir()) == []


def test_import_from_a_missing_sqlite_file_creates_nothing(tmp_path):
    result = run("import-django", "sqlite:///old.sqlite3", cwd=tmp_path, DATABASE_URL="sqlite:///msgapi.sqlite3")
    line = one_line_error(result, 1)
    assert "no SQLite database at old.sqlite3" in line
    assert list(tmp_path.iterdir()) == []


def test_import_from_a_missing_postgresql_database_is_one_line(tmp_path, postgresql_url):
    source = with_database(postgresql_url, path="/msgapi_no_such_source")
    result = run("import-django", source, cwd=tmp_path, DATABASE_URL="sqlite:///msgapi.sqlite3")
    line = one_line_error(result, 1)
    assert "'msgapi_no_such_source'" in line and "the source URL" in line
    assert list(tmp_path.iterdir()) == []


def test_import_from_an_unreachable_postgresql_server_is_one_line(tmp_path):
    port = free_port()
    source = f"postgresql://django:s3cret-source-pw@127.0.0.1:{port}/old"
    result = run("import-django", source, cwd=tmp_path, DATABASE_URL="sqlite:///msgapi.sqlite3")
    line = one_line_error(result, 1)
    assert f"'old' on 127.0.0.1:{port}" in line
    assert "s3cret-source-pw" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def sqlite_source(folder: Path, *statements: str) -> Path:
    """An old database made of ``statements``, in a folder of its own."""
    folder.mkdir()
    path = folder / "old.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        for statement in statements:
            connection.execute(statement)
    return path


DJANGO_TABLES = (
    "CREATE TABLE auth_user (id INTEGER PRIMARY KEY, username TEXT, password TEXT, email TEXT,"
    " first_name TEXT, last_name TEXT, is_staff BOOL, is_active BOOL, date_joined TEXT)",
    "CREATE TABLE api_message (id INTEGER PRIMARY KEY, content TEXT, views INTEGER, created_at TEXT,"
    " updated_at TEXT)",
)


@pytest.mark.parametrize(
    "statements, reason",
    [
        (("CREATE TABLE unrelated (id INTEGER)",), "the source has no api_message, auth_user table"),
        (
            (
                *DJANGO_TABLES,
                "INSERT INTO auth_user (id, username, password, is_staff, is_active, date_joined)"
                " VALUES (1, 'Alice', '!', 0, 1, '2020-01-01'), (2, 'alice', '!', 0, 1, '2020-01-01')",
            ),
            "usernames that differ only in letter case are one name here: Alice, alice",
        ),
    ],
    ids=["no-django-tables", "case-clash"],
)
def test_a_source_that_cannot_be_imported_creates_nothing_of_ours(tmp_path, statements, reason):
    """The source is read and checked before msgapi's database (or its generated key) exists."""
    source = sqlite_source(tmp_path / "old", *statements)
    result = run("import-django", f"sqlite:///{source}", cwd=tmp_path, DATABASE_URL="sqlite:///msgapi.sqlite3")
    assert one_line_error(result, 1).endswith(reason)
    assert [path.name for path in tmp_path.iterdir()] == ["old"]


@pytest.mark.parametrize("source", MALFORMED_URLS.values(), ids=MALFORMED_URLS.keys())
def test_import_from_a_malformed_source_url_is_one_line_without_the_password(tmp_path, source):
    result = run("import-django", source, cwd=tmp_path, DATABASE_URL="sqlite:///msgapi.sqlite3")
    assert "the source URL" in one_line_error(result, 1)
    assert "w0rd-xyz" not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []


# --- help ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["serve"]])
def test_help_lists_the_settings_and_points_to_the_readme(tmp_path, command):
    result = run(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0
    for setting in ("DATABASE_URL", "SECRET_KEY", "THREADS", "README.md"):
        assert setting in result.stdout
