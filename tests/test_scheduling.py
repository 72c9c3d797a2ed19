"""The focused dispatcher: one request runs at a time, waits step aside, a stuck request does not stall the rest."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from conftest import LiveServer, http_json
from waitress.task import ThreadedTaskDispatcher

from msgapi import scheduling
from msgapi.config import from_env
from msgapi.passwords import HashingBusy, HashingGate
from msgapi.scheduling import FocusedDispatcher, make_dispatcher

# Generous bounds for "it happened": the machine is shared; none of these is a speed target.
EVENTUALLY = 10.0


class Task:
    """What Waitress queues: an object with ``service()``."""

    def __init__(self, body) -> None:
        self.body = body
        self.done = threading.Event()
        self.thread: str | None = None

    def service(self) -> None:
        self.thread = threading.current_thread().name
        try:
            self.body()
        finally:
            self.done.set()


class Overlap:
    """Counts how many tasks run at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def run(self, seconds: float = 0.002) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(seconds)
        with self.lock:
            self.now -= 1


@pytest.fixture
def dispatcher():
    dispatcher = FocusedDispatcher()
    dispatcher.set_thread_count(4)
    yield dispatcher
    dispatcher.shutdown(timeout=EVENTUALLY)
    assert not dispatcher.threads


def test_queued_requests_run_one_at_a_time_and_all_of_them(dispatcher):
    overlap = Overlap()
    tasks = [Task(overlap.run) for _ in range(40)]
    for task in tasks:
        dispatcher.add_task(task)
    for task in tasks:
        assert task.done.wait(EVENTUALLY)
    assert overlap.most == 1
    # The runner took queued work itself instead of waking other threads for it.
    assert len({task.thread for task in tasks}) < len(tasks)


def test_a_request_that_steps_aside_lets_the_next_one_run(dispatcher):
    release = threading.Event()

    def long_wait() -> None:
        scheduling.step_aside()
        try:
            assert release.wait(EVENTUALLY)
        finally:
            scheduling.step_back()

    waiting, quick = Task(long_wait), Task(lambda: None)
    dispatcher.add_task(waiting)
    dispatcher.add_task(quick)
    assert quick.done.wait(EVENTUALLY)
    assert not waiting.done.is_set()
    release.set()
    assert waiting.done.wait(EVENTUALLY)
    # The handler thread lowers its count just after the task's done event: wait (bounded).
    deadline = time.monotonic() + EVENTUALLY
    while dispatcher.running != 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert dispatcher.running == 0


def _run_as_request(dispatcher, body) -> None:
    """Run ``body`` as a request and wait for it (the thread's own count drops a moment later)."""
    task = Task(body)
    dispatcher.add_task(task)
    assert task.done.wait(EVENTUALLY)


def test_a_request_hashing_steps_aside_for_the_hash_and_back_after(dispatcher):
    gate, seen = HashingGate(1, EVENTUALLY), {}

    def login() -> None:
        seen["before"] = dispatcher.running
        with gate:
            seen["hashing"] = dispatcher.running
        seen["after"] = dispatcher.running

    _run_as_request(dispatcher, login)
    assert seen == {"before": 1, "hashing": 0, "after": 1}


def test_a_request_refused_a_hashing_slot_steps_back(dispatcher):
    gate, seen = HashingGate(1, 0.05), {}

    def login() -> None:
        try:
            with gate:
                seen["hashed"] = True
        except HashingBusy:
            seen["after_busy"] = dispatcher.running

    with gate:  # this thread is no dispatcher's: it holds the only slot without stepping aside
        _run_as_request(dispatcher, login)
    assert seen == {"after_busy": 1}


def test_a_stuck_request_does_not_stall_the_queue(dispatcher):
    release = threading.Event()
    stuck = Task(lambda: release.wait(EVENTUALLY))  # blocks without saying so
    dispatcher.add_task(stuck)
    followers = [Task(lambda: None) for _ in range(3)]
    for task in followers:
        dispatcher.add_task(task)
    for task in followers:
        assert task.done.wait(EVENTUALLY)
    assert not stuck.done.is_set()
    release.set()
    assert stuck.done.wait(EVENTUALLY)


def test_a_failing_request_is_logged_and_the_thread_goes_on(dispatcher, caplog):
    def boom() -> None:
        raise RuntimeError("boom")

    failing, after = Task(boom), Task(lambda: None)
    dispatcher.add_task(failing)
    dispatcher.add_task(after)
    assert after.done.wait(EVENTUALLY)
    assert "Exception when servicing" in caplog.text
    assert len(dispatcher.threads) == 4


def test_stepping_aside_outside_a_dispatcher_thread_touches_no_dispatcher(dispatcher):
    # In-process callers (tests, CLI commands) hash passwords too: their step aside must not
    # count against a dispatcher serving requests on other threads, nor fail.
    release = threading.Event()
    busy = Task(lambda: release.wait(EVENTUALLY))
    dispatcher.add_task(busy)
    deadline = time.monotonic() + EVENTUALLY
    while busy.thread is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert busy.thread is not None
    with dispatcher.lock:
        assert dispatcher.running == 1
    scheduling.step_aside()
    with dispatcher.lock:
        assert dispatcher.running == 1
    scheduling.step_back()
    with dispatcher.lock:
        assert dispatcher.running == 1
    release.set()
    assert busy.done.wait(EVENTUALLY)


@pytest.mark.parametrize(
    ("url", "expected"),
    [("sqlite:///x.sqlite3", FocusedDispatcher), ("postgresql://u@h/db", ThreadedTaskDispatcher)],
)
def test_sqlite_gets_the_focused_dispatcher_postgresql_waitress_own(monkeypatch, url, expected):
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("SECRET_KEY", "k" * 40)
    dispatcher = make_dispatcher(from_env())
    try:
        assert type(dispatcher) is expected
        assert len(dispatcher.threads) == from_env().threads
    finally:
        dispatcher.shutdown(timeout=EVENTUALLY)


def test_reads_go_on_while_a_write_waits_for_another_process(tmp_path: Path):
    """Another process holds SQLite's write lock: the server's write blocks in SQLite, unannounced.

    The stall guard must start the reads queued behind it; the write completes once the lock is gone.
    """
    database = tmp_path / "shared.sqlite3"
    server = LiveServer(f"sqlite:///{database}")
    try:
        http_json(server.url, "POST", "/api/auth/register", {"username": "writer", "password": "a long password 1"})
        token = http_json(
            server.url, "POST", "/api/auth/token", {"username": "writer", "password": "a long password 1"}
        )[1]["access"]
        status, _ = http_json(server.url, "POST", "/api/messages", {"content": "first"}, token=token)
        assert status == 201

        other = sqlite3.connect(database, isolation_level=None, timeout=EVENTUALLY)
        other.execute("BEGIN IMMEDIATE")  # the write lock, held by another process's connection
        results: dict[str, object] = {}

        def write() -> None:
            results["write"] = http_json(server.url, "POST", "/api/messages", {"content": "second"}, token=token)[0]

        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.3)  # the write is now waiting in SQLite's busy handler
        started = time.monotonic()
        for _ in range(5):
            # The list: a pure read, which WAL lets through while another connection writes.
            status, page = http_json(server.url, "GET", "/api/messages")
            assert status == 200
            assert [message["content"] for message in page] == ["first"]
        reads_took = time.monotonic() - started
        assert writer.is_alive(), "the write should still be waiting for the lock"
        other.execute("COMMIT")
        other.close()
        writer.join(EVENTUALLY)
        assert results["write"] == 201
        # Not a speed target: far below the 10 s the write could wait, so the reads did not queue behind it.
        assert reads_took < 5
    finally:
        server.stop()
