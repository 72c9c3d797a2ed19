"""Private parts of dependencies we rely on are checked at start-up, with a public fallback."""

from __future__ import annotations

import logging

import waitress
from waitress.task import ThreadedTaskDispatcher

from msgapi import scheduling
from msgapi.config import from_env
from msgapi.scheduling import FocusedDispatcher, focused_dispatch_unsupported, make_dispatcher


def _sqlite_config(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "sqlite:///unused.sqlite3")
    monkeypatch.setenv("SECRET_KEY", "k" * 40)  # a key file would otherwise be made beside the database
    return from_env()


def test_the_installed_waitress_has_what_the_focused_dispatcher_uses():
    assert focused_dispatch_unsupported() is None
    probe = ThreadedTaskDispatcher()
    for name in scheduling.WAITRESS_INTERNALS:
        assert hasattr(probe, name), name


def test_a_waitress_without_an_internal_gets_its_own_dispatcher_and_a_warning(monkeypatch, caplog):
    config = _sqlite_config(monkeypatch)
    monkeypatch.setattr(scheduling, "WAITRESS_INTERNALS", (*scheduling.WAITRESS_INTERNALS, "renamed_in_a_new_release"))
    with caplog.at_level(logging.WARNING, logger="msgapi"):
        dispatcher = make_dispatcher(config)
    assert type(dispatcher) is ThreadedTaskDispatcher
    assert "renamed_in_a_new_release" in caplog.text
    assert "Waitress's own dispatcher" in caplog.text
    dispatcher.shutdown()


def test_a_changed_override_signature_gets_waitress_own_dispatcher(monkeypatch, caplog):
    config = _sqlite_config(monkeypatch)
    monkeypatch.setattr(scheduling, "WAITRESS_OVERRIDES", {"handler_thread": ["thread_no", "extra"]})
    with caplog.at_level(logging.WARNING, logger="msgapi"):
        dispatcher = make_dispatcher(config)
    assert type(dispatcher) is ThreadedTaskDispatcher
    assert "handler_thread" in caplog.text
    dispatcher.shutdown()


def test_a_waitress_that_takes_no_dispatcher_gets_none(monkeypatch, caplog):
    config = _sqlite_config(monkeypatch)
    original = waitress.create_server

    def create_server(application, map=None, **kw):  # the shape without _dispatcher
        return original(application, map=map, **kw)

    monkeypatch.setattr(waitress, "create_server", create_server)
    with caplog.at_level(logging.WARNING, logger="msgapi"):
        assert make_dispatcher(config) is None
    assert "_dispatcher" in caplog.text


def test_with_everything_in_place_sqlite_gets_the_focused_dispatcher_without_a_warning(monkeypatch, caplog):
    config = _sqlite_config(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="msgapi"):
        dispatcher = make_dispatcher(config)
    assert isinstance(dispatcher, FocusedDispatcher)
    assert caplog.text == ""
    dispatcher.shutdown()


def test_users_read_through_the_public_constructor_are_the_same(app, monkeypatch):
    from conftest import register

    from msgapi.store import schema, users

    register(app, "alice", first_name="Alice")
    stored = schema.User.get(schema.User.username == "alice")
    claims = {"user_id": stored.id, "ver": stored.token_version, "fam": "a-login"}
    fast = users.for_token(claims)
    monkeypatch.setattr(users, "_RAW_MODEL_DATA", False)
    public = users.for_token(claims)
    assert public.__data__ == fast.__data__
    assert public.first_name == "Alice" and public.is_active is True
