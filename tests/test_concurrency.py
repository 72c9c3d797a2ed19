"""Concurrency promises, proven through the real Waitress server over loopback HTTP.

Every test runs a bounded number of requests; the 30 s client timeout is a hang
guard, never a timing assertion. Latency under a login storm is printed, not asserted;
what is asserted there is an ordering: reads are served while a hash runs.
"""

from __future__ import annotations

import itertools
import re
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from conftest import PASSWORD, WireClient, wire_login

READERS = 16
TOTAL_READS = 2000
# How long a thread waits at the start line for the others: a guard, never a measurement.
BARRIER_TIMEOUT = 30


def run_together(
    count: int, work: Callable[[int, threading.Barrier], object], at_start: Callable[[], None] | None = None
) -> list:
    """Run ``work(i, barrier)`` on ``count`` threads; re-raise the first error; results in order.

    Each thread calls ``barrier.wait()`` when ready; ``at_start`` runs once, as they are let go.
    """
    barrier = threading.Barrier(count, action=at_start, timeout=BARRIER_TIMEOUT)
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(work, i, barrier) for i in range(count)]
        return [future.result() for future in futures]


def create_message(url: str, auth: dict[str, str], content: str = "hello") -> dict:
    with WireClient(url) as client:
        response = client.request("POST", "/api/messages", {"content": content}, auth)
    assert response.status == 201, response.body
    return response.json()


def list_all(url: str) -> list[dict]:
    """Every message, following the list's ``Link: <...>; rel="next"`` pages if there are any."""
    rows: list[dict] = []
    path: str | None = "/api/messages?limit=1000"
    with WireClient(url) as client:
        while path is not None:
            response = client.request("GET", path)
            assert response.status == 200, response.body
            rows.extend(response.json())
            link = re.search(r'<([^>]+)>;\s*rel="next"', response.headers.get("Link", ""))
            path = link.group(1) if link else None
    return rows


def peek(url: str, message_id: int) -> dict:
    """The message as the list shows it: reading the list counts no view."""
    [row] = [row for row in list_all(url) if row["id"] == message_id]
    return row


def read_in_parallel(urls: list[str], message_id: int, threads: int = READERS, total: int = TOTAL_READS) -> list[int]:
    """``total`` GETs of one message from ``threads`` keep-alive clients spread over ``urls``.

    Returns the view count each response carried; every response must be 200.
    """
    assert total % threads == 0
    per_thread = total // threads

    def reader(index: int, barrier: threading.Barrier) -> list[tuple[int, int | None]]:
        results = []
        with WireClient(urls[index % len(urls)]) as client:
            barrier.wait()
            for _ in range(per_thread):
                response = client.request("GET", f"/api/messages/{message_id}")
                results.append((response.status, response.json()["views"] if response.status == 200 else None))
        return results

    results = [item for chunk in run_together(threads, reader) for item in chunk]
    statuses = {status for status, _ in results}
    assert statuses == {200}, f"statuses seen: {statuses}"
    return [views for _, views in results]


def assert_every_view_counted_once(start: int, views: list[int], final: int) -> None:
    assert len(views) == TOTAL_READS
    assert final == start + TOTAL_READS
    # Each response carries the count its own view produced: each value exactly once.
    assert sorted(views) == list(range(start + 1, start + TOTAL_READS + 1))


def test_parallel_reads_count_every_view_exactly_once(live_server):
    server = live_server()
    auth = wire_login(server.url, "reader")
    message = create_message(server.url, auth)
    start = peek(server.url, message["id"])["views"]

    views = read_in_parallel([server.url], message["id"])

    assert_every_view_counted_once(start, views, peek(server.url, message["id"])["views"])


def test_two_server_processes_on_one_postgresql_count_exactly(postgresql_url, live_server_on):
    first = live_server_on(postgresql_url)
    second = live_server_on(postgresql_url)
    auth = wire_login(first.url, "reader")
    message = create_message(second.url, auth)
    start = peek(first.url, message["id"])["views"]

    views = read_in_parallel([first.url, second.url], message["id"])

    assert_every_view_counted_once(start, views, peek(second.url, message["id"])["views"])


def test_two_server_processes_on_one_sqlite_file_count_exactly(sqlite_url, live_server_on):
    # One process runs SQLite requests one at a time, so only a second process can race a
    # read-modify-write count; SQLite's file lock is then all that keeps views exact.
    first = live_server_on(sqlite_url)
    second = live_server_on(sqlite_url)
    auth = wire_login(first.url, "reader")
    message = create_message(second.url, auth)
    start = peek(first.url, message["id"])["views"]

    views = read_in_parallel([first.url, second.url], message["id"])

    assert_every_view_counted_once(start, views, peek(second.url, message["id"])["views"])


def test_reads_racing_writes_leave_a_row_some_request_produced(live_server):
    server = live_server()
    auth = wire_login(server.url, "writer")
    message = create_message(server.url, auth, "original")
    readers, reads_each = 8, 75
    writers, writes_each = 2, 25

    def reader(index: int, barrier: threading.Barrier) -> list[tuple[str, int, dict]]:
        seen = []
        with WireClient(server.url) as client:
            barrier.wait()
            for _ in range(reads_each):
                response = client.request("GET", f"/api/messages/{message['id']}")
                seen.append(("GET", response.status, response.json()))
        return seen

    def writer(index: int, barrier: threading.Barrier) -> list[tuple[str, int, dict]]:
        seen = []
        with WireClient(server.url) as client:
            barrier.wait()
            for j in range(writes_each):
                response = client.request("PUT", f"/api/messages/{message['id']}", {"content": f"w{index}-{j}"}, auth)
                seen.append(("PUT", response.status, response.json()))
        return seen

    def either(index: int, barrier: threading.Barrier):
        return writer(index, barrier) if index < writers else reader(index, barrier)

    seen = [item for chunk in run_together(readers + writers, either) for item in chunk]
    statuses = {status for _, status, _ in seen}
    assert not any(status >= 500 for status in statuses), statuses
    assert statuses == {200}, statuses

    put_contents = {body["content"] for method, _, body in seen if method == "PUT"}
    assert put_contents == {f"w{i}-{j}" for i in range(writers) for j in range(writes_each)}
    assert all(body["views"] == 0 for method, _, body in seen if method == "PUT")
    gets = [body for method, _, body in seen if method == "GET"]
    assert len(gets) == readers * reads_each

    # Contents are unique per PUT, and a PUT sets views to 0, so the GETs that answered
    # content C are exactly the views counted between PUT(C) and the next PUT: 1..k, each once.
    views_by_content: dict[str, list[int]] = defaultdict(list)
    for body in gets:
        assert body["content"] in put_contents | {"original"}
        views_by_content[body["content"]].append(body["views"])
    for content, views in views_by_content.items():
        assert sorted(views) == list(range(1, len(views) + 1)), content

    final = peek(server.url, message["id"])
    assert final["content"] in put_contents
    assert 0 <= final["views"] <= len(gets)
    assert final["views"] == len(views_by_content.get(final["content"], []))


def test_concurrent_registrations_of_one_username_make_exactly_one_user(live_server):
    # Realistic hashing cost, so the window between "name free?" and the INSERT is real.
    # Threads enough that every racer is admitted to the hashing gate (half the threads):
    # the race under test is the INSERT's, not the gate's 503 for a burst.
    racers = 20
    server = live_server({"PASSWORD_HASH_ITERATIONS": "100000"}, threads=2 * racers)

    def register(index: int, barrier: threading.Barrier) -> tuple[int, dict]:
        with WireClient(server.url) as client:
            client.connection.connect()
            barrier.wait()
            response = client.request(
                "POST", "/api/auth/register/", {"username": "racer", "password": f"{PASSWORD} {index}"}
            )
            return response.status, response.json()

    results = run_together(racers, register)
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [400] * (racers - 1), statuses
    for status, body in results:
        if status == 400:
            assert body["errors"] == {"username": ["A user with that username already exists."]}
    [winner] = [index for index, (status, _) in enumerate(results) if status == 201]
    loser = (winner + 1) % racers

    # The stored user is the winner's: its password logs in, a loser's does not.
    with WireClient(server.url) as client:
        ok = client.request("POST", "/api/auth/token/", {"username": "racer", "password": f"{PASSWORD} {winner}"})
        bad = client.request("POST", "/api/auth/token/", {"username": "racer", "password": f"{PASSWORD} {loser}"})
    assert ok.status == 200 and bad.status == 401


def test_many_concurrent_writers_never_see_a_5xx_and_lose_nothing(live_server):
    # On SQLite every create contends for the one write lock: "database is locked" must never reach a client.
    server = live_server()
    auth = wire_login(server.url, "writer")
    writers, creates_each = 16, 40

    def write(index: int, barrier: threading.Barrier) -> list[tuple[int, dict]]:
        results = []
        with WireClient(server.url) as client:
            barrier.wait()
            for j in range(creates_each):
                response = client.request("POST", "/api/messages", {"content": f"t{index}-{j}"}, auth)
                results.append((response.status, response.json()))
        return results

    results = [item for chunk in run_together(writers, write) for item in chunk]
    statuses = {status for status, _ in results}
    assert not any(status >= 500 for status in statuses), [body for status, body in results if status >= 500][:3]
    assert statuses == {201}, statuses

    created = {body["id"]: body["content"] for _, body in results}
    assert len(created) == writers * creates_each
    stored = {row["id"]: row["content"] for row in list_all(server.url)}
    assert stored == created


def test_reads_keep_answering_during_a_login_storm(live_server):
    # One hashing slot, always wanted by eight stormers: logins complete one hash apart. The
    # promise is that no read waits behind a hash, so while one hash runs each reader is
    # served again and again; reads queued behind logins would get one turn per hash at most.
    # A login waiting for the slot holds a server thread, so the server has more threads than
    # stormers: with as many stormers as threads, reads find no thread free until a hash ends.
    env = {"PASSWORD_HASH_ITERATIONS": "600000", "AUTH_RATE_LIMIT": "off", "HASH_CONCURRENCY": "1"}
    server = live_server(env, threads=16)
    auth = wire_login(server.url, "stormy")
    message = create_message(server.url, auth)
    stormers, readers, storm_seconds = 8, 2, 5.0
    deadline = [0.0]

    def storm(index: int, barrier: threading.Barrier) -> list[tuple[str, int, float, float]]:
        answers: list[tuple[str, int, float, float]] = []  # (kind, status, sent, answered) on the monotonic clock
        with WireClient(server.url) as client:
            barrier.wait()
            while time.monotonic() < deadline[0]:
                sent = time.monotonic()
                if index < stormers:
                    response = client.request("POST", "/api/auth/token/", {"username": "stormy", "password": PASSWORD})
                    answers.append(("login", response.status, sent, time.monotonic()))
                else:
                    response = client.request("GET", f"/api/messages/{message['id']}")
                    answers.append(("read", response.status, sent, time.monotonic()))
        return answers

    def start_storm() -> None:
        deadline[0] = time.monotonic() + storm_seconds

    answers = [answer for chunk in run_together(stormers + readers, storm, at_start=start_storm) for answer in chunk]
    logins = [status for kind, status, _, _ in answers if kind == "login"]
    reads = [(sent, answered) for kind, status, sent, answered in answers if kind == "read"]
    read_statuses = [status for kind, status, _, _ in answers if kind == "read"]
    latencies_ms = sorted((answered - sent) * 1000 for sent, answered in reads)
    # A hash runs between two consecutive successful logins; only gaps the readers saw whole.
    hashed = sorted(answered for kind, status, _, answered in answers if kind == "login" and status == 200)
    gaps = [(a, b) for a, b in itertools.pairwise(hashed) if b <= deadline[0]]
    reads_per_gap = [sum(1 for sent, answered in reads if a < sent and answered < b) for a, b in gaps]

    p50 = statistics.median(latencies_ms)
    p99 = latencies_ms[min(len(latencies_ms) - 1, int(len(latencies_ms) * 0.99))]
    print(
        f"\nlogin storm ({server.env['DATABASE_URL'].split(':')[0]}): {len(logins)} logins "
        f"({sorted(set(logins))}), {len(reads)} reads, read p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {latencies_ms[-1]:.1f} ms; reads sent and answered within each hash: {reads_per_gap}"
    )
    assert read_statuses and set(read_statuses) == {200}
    # The storm was real: logins hashed and succeeded (or were told to retry, never a 500).
    assert 200 in logins and set(logins) <= {200, 503}
    assert gaps, "no two logins completed during the storm"
    assert all(count > readers for count in reads_per_gap), reads_per_gap
