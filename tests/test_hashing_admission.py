"""Logins can hold at most part of the server's threads: the hashing gate admits a bounded number.

A login queued for a hashing slot holds a Waitress thread. Unbounded, as many concurrent
logins as the server has threads left no thread for reads (seen: a read's median rose to
one hash, ~500 ms, with 8 threads and 8 logins). Over ``max_admitted`` a login is refused
at once with 503 and ``Retry-After``, so the other threads stay free.
"""

from __future__ import annotations

import threading

import pytest

from msgapi.app import create_app
from msgapi.config import Config
from msgapi.passwords import HashingBusy, HashingGate
from msgapi.store.connection import database

EVENTUALLY = 10.0


def test_one_more_than_the_admitted_is_refused_without_queueing():
    gate = HashingGate(1, EVENTUALLY, max_admitted=2)
    holding, release, waiting_done = threading.Event(), threading.Event(), threading.Event()
    outcome = {}

    def holder():
        with gate:
            holding.set()
            release.wait(EVENTUALLY)

    def waiter():
        holding.wait(EVENTUALLY)
        with gate:
            outcome["waiter"] = "entered"
        waiting_done.set()

    threads = [threading.Thread(target=holder), threading.Thread(target=waiter)]
    for thread in threads:
        thread.start()
    holding.wait(EVENTUALLY)
    # Wait until the second is queued inside the gate (its admission counted).
    for _ in range(1000):
        if gate.admitted == 2:
            break
        threading.Event().wait(0.01)
    assert gate.admitted == 2
    with pytest.raises(HashingBusy), gate:
        pass
    # Refused without taking the queued one's place: it is still waiting for the slot.
    assert not waiting_done.is_set()
    release.set()
    for thread in threads:
        thread.join(EVENTUALLY)
    assert outcome == {"waiter": "entered"}
    # Everyone has left: the gate admits again, up to its bound.
    assert gate.admitted == 0
    with gate:
        pass


def test_a_refused_wait_gives_its_admission_back():
    gate = HashingGate(1, 0.05, max_admitted=2)
    with gate:
        with pytest.raises(HashingBusy), gate:  # admitted, then timed out waiting
            pass
        with pytest.raises(HashingBusy), gate:  # admitted again: the first gave its place back
            pass
    assert gate.admitted == 0


def test_the_app_admits_at_most_half_its_threads_to_logins(tmp_path):
    def gate_of(threads: int) -> HashingGate:
        config = Config(
            database_url=f"sqlite:///{tmp_path / f'db{threads}.sqlite3'}",
            secret_key="k" * 40,
            threads=threads,
            hash_concurrency=1,
        )
        app = create_app(config)
        database.close_all()
        token_resource = app._router.find("/api/auth/token")[0]
        return token_resource._gate

    assert gate_of(16).max_admitted == 8
    assert gate_of(8).max_admitted == 4
    assert gate_of(2).max_admitted == 2  # never fewer than one hashing and one queued
