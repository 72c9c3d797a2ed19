"""Running on a PaaS: the Procfile's command, PORT from the platform, DATABASE_URL as platforms spell it."""

from __future__ import annotations

import os
import re
import shlex
import socket
import sys
import urllib.request
from pathlib import Path

import peewee
import pytest
import tomllib
from conftest import TEST_SECRET_KEY, ServerProcess

from msgapi.config import from_env
from msgapi.store.connection import open_database

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        return probe.getsockname()[1]


def test_the_procfile_command_serves_on_the_platforms_port(database_url):
    (web,) = [line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")]
    command = shlex.split(web.removeprefix("web:"))
    assert command[0] == "msgapi"
    # What the installed `msgapi` command runs: the console script pyproject.toml declares.
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["msgapi"] == "msgapi.cli:main"
    port = free_port()
    env = {**os.environ, "PORT": str(port), "DATABASE_URL": database_url, "SECRET_KEY": TEST_SECRET_KEY}
    env.pop("PYTHONPATH", None)
    server = ServerProcess(
        [sys.executable, "-c", "import sys; from msgapi.cli import main; sys.exit(main())", *command[1:]], env, ROOT
    )
    try:
        _, log = server.wait_until_ready()
        assert re.search(rf"serving on http://0\.0\.0\.0:{port}/", "".join(log)), "".join(log)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            assert (response.status, response.read()) == (200, b'{"status":"ok"}')
    finally:
        server.stop()
    assert server.process.returncode == 0


def test_a_postgres_url_as_platforms_spell_it_passes_its_parameters_to_libpq(postgresql_url):
    url = postgresql_url.replace("postgresql://", "postgres://", 1) + "?application_name=msgapi-paas&sslmode=prefer"
    database = open_database(from_env({"DATABASE_URL": url, "SECRET_KEY": TEST_SECRET_KEY}))
    try:
        with database.connection_context():
            assert database.execute_sql("SELECT current_setting('application_name')").fetchone() == ("msgapi-paas",)
    finally:
        database.close_all()


def test_sslmode_require_reaches_libpq(postgresql_url):
    url = postgresql_url.replace("postgresql://", "postgres://", 1) + "?sslmode=require"
    database = open_database(from_env({"DATABASE_URL": url, "SECRET_KEY": TEST_SECRET_KEY}))
    try:
        with database.connection_context():
            in_use = database.execute_sql("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert in_use == (True,)
    except peewee.OperationalError as exc:  # a server without TLS: libpq refuses, as sslmode=require asks
        assert "SSL was required" in str(exc), exc
    finally:
        database.close_all()


@pytest.mark.parametrize(("raw", "port"), [("", 8000), ("5000", 5000), ("0", 0)])
def test_port_comes_from_the_environment(raw, port):
    assert from_env({"SECRET_KEY": TEST_SECRET_KEY, "PORT": raw}).port == port
