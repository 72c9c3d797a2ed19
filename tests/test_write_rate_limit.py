"""WRITE_RATE_LIMIT: creates, updates and deletes of messages, per user, shared through the database."""

from __future__ import annotations

import pytest
import webtest
from conftest import (
    PASSWORD,
    TEST_HASH_ITERATIONS,
    TEST_SECRET_KEY,
    WireClient,
    assert_problem,
    bearer,
    obtain_tokens,
    register,
    wire_login,
)

from msgapi import config as config_module
from msgapi.app import create_app
from msgapi.config import Rate
from msgapi.store.connection import database

LIMIT = 3


def assert_429(resp) -> None:
    assert_problem(resp, 429)
    assert 1 <= int(resp.headers["Retry-After"]) <= 2 * 60


@pytest.fixture
def limited(make_app):
    """An app limited to 3 message writes a minute per user, and Bearer headers for alice and bob."""
    app = make_app(write_rate_limit=Rate(LIMIT, 60))
    headers = {}
    for name in ("alice", "bob"):
        register(app, name)
        headers[name] = bearer(obtain_tokens(app, name)["access"])
    return app, headers


def create(app, headers, content: str = "hello"):
    return app.post_json("/api/messages", {"content": content}, headers=headers, expect_errors=True)


def test_creates_are_limited_per_user(limited):
    app, users = limited
    for n in range(LIMIT):
        assert create(app, users["alice"], f"m{n}").status_int == 201
    assert_429(create(app, users["alice"], "one too many"))
    # Another user has a budget of their own.
    assert create(app, users["bob"]).status_int == 201


def test_refused_create_stores_nothing(limited):
    app, users = limited
    for n in range(LIMIT):
        create(app, users["alice"], f"m{n}")
    for _ in range(5):
        assert_429(create(app, users["alice"], "refused"))
    assert sorted(m["content"] for m in app.get("/api/messages").json) == [f"m{n}" for n in range(LIMIT)]


def test_updates_and_deletes_share_the_budget_with_creates(limited):
    app, users = limited
    alice = users["alice"]
    message_id = create(app, alice).json["id"]
    assert app.put_json(f"/api/messages/{message_id}", {"content": "edited"}, headers=alice).status_int == 200
    assert app.delete(f"/api/messages/{message_id}", headers=alice).status_int == 204
    assert_429(create(app, alice))
    assert_429(app.patch_json(f"/api/messages/{message_id}", {"content": "x"}, headers=alice, expect_errors=True))
    assert_429(app.delete(f"/api/messages/{message_id}", headers=alice, expect_errors=True))


def test_refused_update_changes_nothing(limited):
    app, users = limited
    alice = users["alice"]
    message_id = create(app, alice, "original").json["id"]
    for n in range(LIMIT - 1):
        create(app, alice, f"m{n}")
    assert_429(app.put_json(f"/api/messages/{message_id}", {"content": "x"}, headers=alice, expect_errors=True))
    assert_429(app.delete(f"/api/messages/{message_id}", headers=alice, expect_errors=True))
    assert app.get(f"/api/messages/{message_id}").json["content"] == "original"


def test_a_revoked_token_spends_nothing_of_its_owners_budget(limited):
    app, _ = limited
    register(app, "carol")
    stolen = bearer(obtain_tokens(app, "carol")["access"])
    # The owner changes the password: the thief's copy of the old token is revoked.
    changed = app.post_json(
        "/api/auth/password/",
        {"current_password": PASSWORD, "new_password": "a brand new secret"},
        headers=stolen,
    ).json
    for _ in range(2 * LIMIT):
        assert_problem(create(app, stolen, "thief"), 401)
        assert_problem(app.post_json("/api/messages", {}, headers=stolen, expect_errors=True), 401)
    owner = bearer(changed["access"])
    for n in range(LIMIT):
        assert create(app, owner, f"m{n}").status_int == 201
    assert_429(create(app, owner))


def test_reads_are_not_limited(limited):
    app, users = limited
    message_id = None
    for n in range(LIMIT):
        message_id = create(app, users["alice"], f"m{n}").json["id"]
    for _ in range(3 * LIMIT):
        assert app.get(f"/api/messages/{message_id}", headers=users["alice"]).status_int == 200
        assert app.get("/api/messages", headers=users["alice"]).status_int == 200


def test_off_disables_the_write_limit(make_app):
    app = make_app(write_rate_limit=None)
    register(app, "alice")
    alice = bearer(obtain_tokens(app, "alice")["access"])
    for n in range(40):
        assert create(app, alice, f"m{n}").status_int == 201


def test_write_rate_limit_from_the_environment():
    base = {"DATABASE_URL": "sqlite:///x.sqlite3", "SECRET_KEY": TEST_SECRET_KEY}
    assert config_module.from_env(base).write_rate_limit == Rate(30, 60)
    assert config_module.from_env({**base, "WRITE_RATE_LIMIT": "5/second"}).write_rate_limit == Rate(5, 1)
    for off in ("off", "OFF", "none", "0"):
        assert config_module.from_env({**base, "WRITE_RATE_LIMIT": off}).write_rate_limit is None
    with pytest.raises(config_module.ConfigError, match="WRITE_RATE_LIMIT"):
        config_module.from_env({**base, "WRITE_RATE_LIMIT": "lots"})


def test_the_default_write_limit_applies(database_url):
    settings = config_module.from_env(
        {
            "DATABASE_URL": database_url,
            "SECRET_KEY": TEST_SECRET_KEY,
            "PASSWORD_HASH_ITERATIONS": str(TEST_HASH_ITERATIONS),
        }
    )
    app = webtest.TestApp(create_app(settings))
    try:
        register(app, "alice")
        alice = bearer(obtain_tokens(app, "alice")["access"])
        for n in range(30):
            assert create(app, alice, f"m{n}").status_int == 201
        assert_429(create(app, alice))
    finally:
        database.close_all()


def test_the_write_limit_holds_across_two_server_processes(live_server):
    env = {"WRITE_RATE_LIMIT": f"{LIMIT}/minute"}
    first, second = live_server(env), live_server(env)
    alice = wire_login(first.url, "alice")
    statuses = []
    for n, server in enumerate([first, second, first, second]):
        with WireClient(server.url) as client:
            statuses.append(client.request("POST", "/api/messages", {"content": f"m{n}"}, alice).status)
    assert statuses == [201] * LIMIT + [429]
