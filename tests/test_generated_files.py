"""The files msgapi makes on SQLite without SECRET_KEY: the generated key, the database, its -wal and -shm.

Concurrent first starts agree on one key; a broken key file is a one-line error;
every file is owner-only on POSIX, and a file others can read is warned about.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from conftest import PASSWORD, TEST_HASH_ITERATIONS, ServerProcess, run_msgapi

from msgapi.keyfile import load_or_create_secret_key

ROOT = Path(__file__).resolve().parent.parent
KEY_NOTICE = "SECRET_KEY is not set"
# Bounded: each trial starts two servers on a fresh folder.
CONCURRENT_START_TRIALS = 20
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def environment(folder: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name != "SECRET_KEY"}
    env.update(
        {
            "DATABASE_URL": f"sqlite:///{folder / 'msgapi.sqlite3'}",
            "PASSWORD_HASH_ITERATIONS": str(TEST_HASH_ITERATIONS),
            "AUTH_RATE_LIMIT": "off",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def run(*args: str, folder: Path, stdin: str = "", prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return run_msgapi(*args, env=environment(folder), cwd=folder, stdin=stdin, prefix=prefix)


def start(folder: Path) -> ServerProcess:
    command = [sys.executable, str(ROOT / "run.py"), "--port", "0", "--threads", "2"]
    return ServerProcess(command, environment(folder), folder)


def post(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def get_status(url: str, path: str, token: str) -> int:
    request = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_two_first_starts_together_come_up_with_the_same_key(tmp_path):
    for trial in range(CONCURRENT_START_TRIALS):
        folder = tmp_path / f"trial{trial}"
        folder.mkdir()
        first, second = start(folder), start(folder)
        try:
            first_url, _ = first.wait_until_ready()
            second_url, _ = second.wait_until_ready()
            # A token one process signed is accepted by the other: one key.
            post(first_url, "/api/auth/register/", {"username": "alice", "password": PASSWORD})
            access = post(first_url, "/api/auth/token/", {"username": "alice", "password": PASSWORD})["access"]
            assert get_status(second_url, "/api/auth/me", access) == 200
        finally:
            first.stop()
            second.stop()
        assert sorted(path.name for path in folder.iterdir() if path.name.endswith((".secret_key", ".tmp"))) == [
            "msgapi.sqlite3.secret_key"
        ]


def test_a_start_waits_while_another_process_is_creating_the_database(tmp_path):
    """Switching a new file to WAL needs an exclusive lock, and SQLite refuses it at once,
    busy timeout or not, while another process holds the write lock: the opener must wait."""
    import peewee

    from msgapi.config import Config
    from msgapi.store.connection import open_database

    path = tmp_path / "msgapi.sqlite3"
    other_process = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other_process.execute("BEGIN IMMEDIATE")
    other_process.execute("CREATE TABLE started_first (id INTEGER)")
    released = threading.Timer(0.3, other_process.execute, ("COMMIT",))
    released.start()
    database = open_database(Config(database_url=f"sqlite:///{path}", secret_key="k" * 40))
    try:
        assert database.execute_sql("PRAGMA journal_mode").fetchone() == ("wal",)
        assert database.execute_sql("SELECT count(*) FROM started_first").fetchone() == (0,)
    except peewee.OperationalError as exc:
        pytest.fail(f"the second opener gave up instead of waiting: {exc}")
    finally:
        released.join()
        database.close_all()
        other_process.close()


def load_together(key_file: Path, threads: int) -> tuple[list[str], list[Exception]]:
    """Load the key from ``threads`` threads released at once: the keys read, and the errors."""
    barrier = threading.Barrier(threads)
    keys: list[str] = []
    failures: list[Exception] = []

    def load() -> None:
        barrier.wait()
        try:
            keys.append(load_or_create_secret_key(key_file)[0])
        except Exception as exc:
            failures.append(exc)

    workers = [threading.Thread(target=load) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return keys, failures


def test_first_uses_racing_in_threads_all_read_one_complete_key(tmp_path):
    """Tighter than two processes: eight threads released together, each loading the key.

    A key file that is visible before its key is written shows up here as an
    empty key or an error in most trials.
    """
    for trial in range(50):
        key_file = tmp_path / f"trial{trial}.secret_key"
        keys, failures = load_together(key_file, 8)
        assert failures == []
        assert len(set(keys)) == 1 and len(keys[0]) >= 32
        assert keys[0] == key_file.read_text(encoding="ascii").strip()
    assert not [path for path in tmp_path.iterdir() if path.name.endswith(".tmp")]


@pytest.mark.parametrize("content", [b"", b"\n", b"short\n", b"\xff\xfe not text at all, not text at all\n"])
def test_an_empty_or_malformed_key_file_is_one_line(tmp_path, content):
    (tmp_path / "msgapi.sqlite3.secret_key").write_bytes(content)
    line = one_line_error(run("--port", "0", folder=tmp_path))
    assert "msgapi.sqlite3.secret_key" in line
    assert (tmp_path / "msgapi.sqlite3.secret_key").read_bytes() == content


def test_a_folder_where_the_key_file_belongs_is_one_line(tmp_path):
    (tmp_path / "msgapi.sqlite3.secret_key").mkdir()
    line = one_line_error(run("init-db", folder=tmp_path))
    assert "msgapi.sqlite3.secret_key" in line


def _without_root_file_access() -> tuple[str, ...]:
    """A command prefix that runs root without the capabilities that ignore file modes.

    Root reads any file whatever its mode; without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
    (util-linux's setpriv drops them from the bounding set) it obeys them like anyone.
    """
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("running as root, this test needs util-linux's setpriv to drop root's file access")
    return (setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--")


def failed_start(case: str, folder: Path) -> subprocess.CompletedProcess:
    env = environment(folder)
    if case == "a setting out of range":
        return run_msgapi("--port", "0", env={**env, "PORT": "70000"}, cwd=folder)
    if case == "a thread count of 0":
        return run_msgapi("--threads", "0", "--port", "0", env=env, cwd=folder)
    if case == "the port in use":
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            return run_msgapi("--port", str(taken.getsockname()[1]), env=env, cwd=folder)
    if case == "an import source of another kind":
        return run_msgapi("import-django", "mysql://django@127.0.0.1/old", env=env, cwd=folder)
    assert case == "a missing import source"
    return run_msgapi("import-django", f"sqlite:///{folder / 'old.sqlite3'}", env=env, cwd=folder)


@pytest.mark.parametrize(
    "case",
    [
        "a setting out of range",
        "a thread count of 0",
        "the port in use",
        "an import source of another kind",
        "a missing import source",
    ],
)
def test_a_first_start_that_fails_leaves_no_key_file(tmp_path, case):
    """The README's first run has no SECRET_KEY: a start that fails must not make the key either."""
    result = failed_start(case, tmp_path)
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert list(tmp_path.iterdir()) == []


@posix_only
def test_an_unreadable_key_file_is_one_line(tmp_path):
    assert run("init-db", folder=tmp_path).returncode == 0
    key_file = tmp_path / "msgapi.sqlite3.secret_key"
    key_file.chmod(0)
    try:
        line = one_line_error(run("init-db", folder=tmp_path, prefix=_without_root_file_access()))
    finally:
        key_file.chmod(0o600)
    assert "msgapi.sqlite3.secret_key" in line


@posix_only
def test_the_key_the_database_and_its_wal_and_shm_are_owner_only(tmp_path):
    server = start(tmp_path)
    try:
        url, _ = server.wait_until_ready()
        post(url, "/api/auth/register/", {"username": "alice", "password": PASSWORD})
        names = ["msgapi.sqlite3", "msgapi.sqlite3-wal", "msgapi.sqlite3-shm", "msgapi.sqlite3.secret_key"]
        # While the server runs, WAL mode keeps -wal and -shm beside the database.
        modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in names}
    finally:
        server.stop()
    assert modes == dict.fromkeys(names, 0o600)


@posix_only
@pytest.mark.parametrize("name", ["msgapi.sqlite3", "msgapi.sqlite3.secret_key"])
def test_a_key_or_database_others_can_read_is_warned_about_at_start(tmp_path, name):
    assert run("init-db", folder=tmp_path).returncode == 0
    (tmp_path / name).chmod(0o644)
    result = run("init-db", folder=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "readable by other users" in line]
    assert len(warnings) == 1 and str(tmp_path / name) in warnings[0]


def test_operator_commands_show_the_key_notice_only_when_they_make_the_key(tmp_path):
    first = run("init-db", folder=tmp_path)
    created = run("createuser", "alice", folder=tmp_path, stdin=PASSWORD + "\n")
    assert created.returncode == 0, created.stderr
    again = created.stderr + run("init-db", folder=tmp_path).stderr
    assert first.stderr.count(KEY_NOTICE) == 1
    assert again.count(KEY_NOTICE) == 0


def test_serve_shows_the_key_notice_on_every_start(tmp_path):
    assert run("init-db", folder=tmp_path).returncode == 0
    server = start(tmp_path)
    try:
        _, log = server.wait_until_ready()
    finally:
        server.stop()
    # Logged before "serving on", so the log read so far holds it.
    assert sum(KEY_NOTICE in line for line in log) == 1
