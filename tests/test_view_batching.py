"""Group commit of views on PostgreSQL, made deterministic by holding the message's row lock.

While another transaction holds the row, the first reader's statement waits on it and
every later reader queues for the next statement: releasing the lock then shows exactly
how the views were batched, what each reader was answered, and what a cut costs.
"""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest
import webtest
from conftest import TEST_HASH_ITERATIONS, TEST_SECRET_KEY, _truncate_postgres, bearer, obtain_tokens, register

from msgapi.app import create_app
from msgapi.config import Config
from msgapi.store import messages
from msgapi.store.connection import database

READERS = 6  # the test app's pool holds threads + 4 = 8 connections
EVENTUALLY = 15.0


@pytest.fixture
def pg_config(postgres_url) -> Config:
    _truncate_postgres(postgres_url)
    return Config(
        database_url=postgres_url,
        secret_key=TEST_SECRET_KEY,
        password_hash_iterations=TEST_HASH_ITERATIONS,
        threads=4,
        auth_rate_limit=None,
    )


@pytest.fixture
def pg_app(pg_config):
    app = create_app(pg_config)
    yield webtest.TestApp(app)
    database.close_all()


def _wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + EVENTUALLY
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


def _lock_waiters(admin, holder_pid: int) -> list[int]:
    with admin.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> %s",
            (holder_pid,),
        )
        return [row[0] for row in cursor.fetchall()]


def _read_all(app: webtest.TestApp, message_id: int, count: int) -> tuple[list[threading.Thread], list]:
    answers: list = []
    lock = threading.Lock()

    def read() -> None:
        response = app.get(f"/api/messages/{message_id}", expect_errors=True)
        with lock:
            answers.append((response.status_int, response.json.get("views")))

    threads = [threading.Thread(target=read) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, answers


@pytest.fixture
def held_row(pg_app, pg_config):
    """A message whose row another transaction (``holder``) locks until it ends."""
    register(pg_app, "alice")
    auth = bearer(obtain_tokens(pg_app, "alice")["access"])
    message = pg_app.post_json("/api/messages", {"content": "hot"}, headers=auth).json
    holder = psycopg2.connect(pg_config.database_url)
    admin = psycopg2.connect(pg_config.database_url)
    admin.autocommit = True
    with holder.cursor() as cursor:
        cursor.execute("SELECT id FROM messages WHERE id = %s FOR UPDATE", (message["id"],))
    try:
        yield message["id"], holder, admin
    finally:
        holder.rollback()
        holder.close()
        admin.close()


def test_readers_arriving_during_a_statement_are_counted_by_one_statement_with_distinct_counts(pg_app, held_row):
    message_id, holder, admin = held_row
    before = messages.view_statistics()
    threads, answers = _read_all(pg_app, message_id, READERS)
    _wait_until(lambda: messages.view_statistics()["waiting"] == READERS - 1, "the other readers queue")
    _wait_until(lambda: len(_lock_waiters(admin, holder.get_backend_pid())) == 1, "the first statement waits")
    holder.rollback()
    for thread in threads:
        thread.join(EVENTUALLY)
    assert sorted(answers) == [(200, n) for n in range(1, READERS + 1)]
    after = messages.view_statistics()
    # The leader's statement, then one for everyone who queued behind it.
    assert after["statements"] - before["statements"] == 2
    assert after["views"] - before["views"] == READERS
    counted = pg_app.get(f"/api/messages/{message_id}")
    assert counted.json["views"] == READERS + 1
    # The batch statement renders a message byte for byte as every other statement does.
    assert counted.text == messages.get(message_id).json


def test_a_connection_cut_mid_statement_fails_only_its_readers_and_loses_no_acknowledged_view(pg_app, held_row):
    message_id, holder, admin = held_row
    threads, answers = _read_all(pg_app, message_id, READERS)
    _wait_until(lambda: messages.view_statistics()["waiting"] == READERS - 1, "the other readers queue")
    _wait_until(lambda: len(_lock_waiters(admin, holder.get_backend_pid())) == 1, "the first statement waits")
    (leader_pid,) = _lock_waiters(admin, holder.get_backend_pid())
    with admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", (leader_pid,))
    # The queued readers' statement now runs, and waits on the row in turn.
    _wait_until(
        lambda: _lock_waiters(admin, holder.get_backend_pid()) not in ([], [leader_pid]), "the next statement waits"
    )
    holder.rollback()
    for thread in threads:
        thread.join(EVENTUALLY)
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * (READERS - 1) + [503]
    counted = sorted(views for status, views in answers if status == 200)
    assert counted == list(range(1, READERS))  # distinct, none answered twice
    with admin.cursor() as cursor:
        cursor.execute("SELECT views FROM messages WHERE id = %s", (message_id,))
        assert cursor.fetchone()[0] == READERS - 1  # every acknowledged view, and only those


def test_readers_of_a_message_deleted_while_they_wait_get_404(pg_app, held_row):
    message_id, holder, _ = held_row
    threads, answers = _read_all(pg_app, message_id, READERS)
    _wait_until(lambda: messages.view_statistics()["waiting"] == READERS - 1, "the other readers queue")
    with holder.cursor() as cursor:
        cursor.execute("DELETE FROM messages WHERE id = %s", (message_id,))
    holder.commit()
    for thread in threads:
        thread.join(EVENTUALLY)
    assert sorted(answers) == [(404, None)] * READERS
