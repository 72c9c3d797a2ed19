"""The app reaches its data only through the store it is given.

``create_app(config, store=...)`` takes any object with the store's shape: these tests
give it one that holds a few answers in memory and records what it was asked, and check
that the resources, the middleware and the error handlers use nothing else (no database
file appears). Inside the store, only the dialects branch on which database is open.
"""

from __future__ import annotations

import ast
import types
from pathlib import Path

import peewee
import webtest
from conftest import TEST_HASH_ITERATIONS, TEST_SECRET_KEY

from msgapi.app import create_app
from msgapi.config import Config
from msgapi.store import RenderedMessage

KNOWN_ID = 7
KNOWN = RenderedMessage('{"id":7,"content":"from the fake","views":3}', '"1a2b"')


class FakeStore:
    """A store holding one message; ``asked`` records every call, in order."""

    def __init__(self) -> None:
        self.asked: list[tuple] = []
        self.broken = False
        self.messages = types.SimpleNamespace(count_view=self._count_view, get=self._get)
        self.limits = None  # both rate limits are off: never counted

    def _count_view(self, message_id: int) -> RenderedMessage | None:
        self.asked.append(("count_view", message_id))
        if self.broken:
            raise peewee.OperationalError("server closed the connection unexpectedly")
        return KNOWN if message_id == KNOWN_ID else None

    def _get(self, message_id: int) -> RenderedMessage | None:
        self.asked.append(("get", message_id))
        return KNOWN if message_id == KNOWN_ID else None

    def release(self) -> None:
        self.asked.append(("release",))

    def discard_broken(self) -> None:
        self.asked.append(("discard_broken",))

    def ping(self) -> None:
        self.asked.append(("ping",))


def fake_app(tmp_path) -> tuple[webtest.TestApp, FakeStore]:
    store = FakeStore()
    config = Config(
        database_url=f"sqlite:///{tmp_path / 'never.sqlite3'}",
        secret_key=TEST_SECRET_KEY,
        password_hash_iterations=TEST_HASH_ITERATIONS,
        auth_rate_limit=None,
        write_rate_limit=None,
    )
    return webtest.TestApp(create_app(config, store=store)), store


def test_a_read_is_answered_from_the_given_store_and_no_database_is_opened(tmp_path):
    app, store = fake_app(tmp_path)
    resp = app.get(f"/api/messages/{KNOWN_ID}")
    assert resp.text == KNOWN.json
    assert resp.headers["ETag"] == KNOWN.etag
    assert app.get("/api/messages/8", expect_errors=True).status_int == 404
    assert app.head(f"/api/messages/{KNOWN_ID}").headers["ETag"] == KNOWN.etag
    assert store.asked == [
        ("count_view", KNOWN_ID),
        ("release",),
        ("count_view", 8),
        ("release",),
        ("get", KNOWN_ID),
        ("release",),
    ]
    assert app.get("/healthz").json == {"status": "ok"} and store.asked[-2:] == [("ping",), ("release",)]
    assert list(tmp_path.iterdir()) == []


def test_a_database_error_from_the_store_is_a_503_and_the_store_drops_its_connections(tmp_path):
    app, store = fake_app(tmp_path)
    store.broken = True
    resp = app.get(f"/api/messages/{KNOWN_ID}", expect_errors=True)
    assert resp.status_int == 503 and resp.headers["Retry-After"]
    assert store.asked == [("count_view", KNOWN_ID), ("discard_broken",), ("release",)]


def _dialect_branches(path: Path):
    """Where ``path`` branches on which dialect is open: its name, its class, or which of the two it is."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "name":
            value = node.value
            called = value.func if isinstance(value, ast.Call) else value
            if (isinstance(called, ast.Name) and called.id == "dialect") or (
                isinstance(called, ast.Attribute) and called.attr == "dialect"
            ):
                yield node.lineno
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(isinstance(operand, ast.Name) and operand.id in _DIALECTS for operand in operands):
                yield node.lineno
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
            if any(isinstance(arg, ast.Name) and arg.id in _DIALECT_CLASSES for arg in ast.walk(node.args[1])):
                yield node.lineno


_DIALECTS = {"SQLITE", "POSTGRES"}
_DIALECT_CLASSES = {"SqliteDialect", "PostgresDialect"}


def test_only_the_dialects_branch_on_which_database_is_open():
    package = Path(__file__).resolve().parent.parent / "msgapi"
    found = [
        f"{path.relative_to(package)}:{line}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "dialect.py"
        for line in _dialect_branches(path)
    ]
    assert found == []


def test_the_scan_itself_catches_each_kind_of_dialect_branch(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "if dialect().name == 'sqlite': pass\n"
        "if db.dialect.name == 'postgresql': pass\n"
        "if dialect() is SQLITE: pass\n"
        "if isinstance(dialect(), PostgresDialect): pass\n"
        "dialect().create_search_index(database)\n",
        encoding="utf-8",
    )
    assert sorted(_dialect_branches(sample)) == [1, 2, 3, 4]
