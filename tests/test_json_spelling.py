"""One JSON spelling: every body compact, as DRF wrote it, and byte for byte the same on both databases."""

from __future__ import annotations

import datetime
import json
import re

import pytest
import webtest
from conftest import TEST_HASH_ITERATIONS, TEST_SECRET_KEY, bearer, obtain_tokens, register

from msgapi.app import create_app
from msgapi.config import Config
from msgapi.store import schema
from msgapi.store.connection import database
from msgapi.store.render import render_timestamp

CONTENT = 'héllo "quoted" \\ back\tslash \x01 ✓ </script> \u2028'
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def _compact(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _bodies(database_url: str) -> dict[str, str]:
    """The text of one of each kind of response, timestamps masked (they differ between runs)."""
    app = webtest.TestApp(
        create_app(
            Config(
                database_url=database_url,
                secret_key=TEST_SECRET_KEY,
                password_hash_iterations=TEST_HASH_ITERATIONS,
                auth_rate_limit=None,
            )
        )
    )
    try:
        register(app, "alice", email="alice@example.com", first_name="Ålice")
        auth = bearer(obtain_tokens(app, "alice")["access"])
        created = app.post_json("/api/messages", {"content": CONTENT}, headers=auth)
        item = f"/api/messages/{created.json['id']}"
        bodies = {
            "create": created.text,
            "get": app.get(item).text,
            "put": app.put_json(item, {"content": CONTENT + "!"}, headers=auth).text,
            "list": app.get("/api/messages").text,
            "me": app.get("/api/auth/me", headers=auth).text,
            "not found": app.get("/api/messages/999999", expect_errors=True).text,
            "field errors": app.post_json("/api/messages", {"content": ""}, headers=auth, expect_errors=True).text,
            "no token": app.post_json("/api/messages", {"content": "x"}, expect_errors=True).text,
        }
    finally:
        database.close_all()
    return {name: TIMESTAMP.sub("<time>", text) for name, text in bodies.items()}


def test_every_body_is_compact_json_and_the_same_bytes_on_both_databases(sqlite_url, postgresql_url):
    on_sqlite = _bodies(sqlite_url)
    on_postgresql = _bodies(postgresql_url)
    for name, text in on_sqlite.items():
        assert text == _compact(json.loads(text)), (name, text)
        assert text == on_postgresql[name], (name, text, on_postgresql[name])
    assert json.loads(on_sqlite["get"])["content"] == CONTENT.strip()


# The timestamp as both renderers write it: SQL for messages (render.timestamp_sql), Python for
# accounts (render.render_timestamp). Whole seconds are the case SQLite stores without a fraction.
@pytest.mark.parametrize(
    "moment",
    [
        datetime.datetime(2026, 11, 24, 18, 35, 32),
        datetime.datetime(2026, 11, 24, 18, 35, 32, 1),
        datetime.datetime(1999, 1, 2, 3, 4, 5, 999999),
        datetime.datetime(2030, 12, 31, 23, 59, 59, 120000),
    ],
)
def test_the_database_and_python_render_a_timestamp_alike(app, create_message, moment):
    message_id = create_message()["id"]
    schema.Message.update(created_at=moment).where(schema.Message.id == message_id).execute()
    shown = app.get(f"/api/messages/{message_id}").json["created_at"]
    assert shown == render_timestamp(moment)
    assert TIMESTAMP.fullmatch(shown)
