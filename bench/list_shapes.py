"""Latency of each shape of ``GET /api/messages`` on a seeded table, in-process (no network).

    python -m bench.list_shapes [--pg] [--rows 200000] [--repeat 7]

Builds the app with ``create_app`` on a fresh database (a temporary SQLite file, or a
PostgreSQL database created from ``--pg-url`` and dropped afterwards), seeds ``--rows``
messages in one statement, then times each list shape through ``falcon.testing`` and
prints the median and the maximum in ms, with the status. Also times the hot GET of one
message (which every index on ``messages`` can slow down). Seeded content:
``seed message #k plain`` (every row), ``kiwi`` in 1 row of 100, ``quokka`` in 1 of 50,000.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import falcon.testing

from msgapi.app import create_app
from msgapi.config import Config
from msgapi.store.connection import database

SHAPES = {
    "default (-updated_at)": "",
    "ordering=views": "ordering=views",
    "ordering=-views": "ordering=-views",
    "ordering=created_at": "ordering=created_at",
    "ordering=-id": "ordering=-id",
    "author": "author=bench",
    "search common (every row)": "search=MESSAGE",
    "search 1 %": "search=kiwi",
    "search rare (1 in 50,000)": "search=quokka",
    "search no match": "search=zebra",
    "search rare, ordering=views": "search=quokka&ordering=views",
    "search 1 %, ordering=-views": "search=kiwi&ordering=-views",
    "search 2 chars, no match": "search=zq",
    "search 2 chars, common": "search=ki",
}

SEED_SQL = """
INSERT INTO messages (content, views, created_at, updated_at, author_id)
SELECT 'seed message #' || k || CASE WHEN k % 100 = 0 THEN ' kiwi' ELSE ' plain' END
       || CASE WHEN k % 50000 = 0 THEN ' quokka' ELSE '' END,
       ((k % 1000) * 7919) % 1000, {ts}, {ts}, {author}
FROM {series}
"""


def seed(rows: int, author_id: int, is_sqlite: bool) -> float:
    started = time.perf_counter()
    if is_sqlite:
        sql = "WITH RECURSIVE seq(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM seq WHERE k < ?) " + SEED_SQL.format(
            ts="strftime('%Y-%m-%d %H:%M:%S', 1700000000 + k, 'unixepoch') || '.000000'", author="?", series="seq"
        )
        database.execute_sql(sql, (rows, author_id))
    else:
        sql = SEED_SQL.replace(" % ", " %% ").format(
            ts="timestamp '2023-11-14 22:13:20' + k * interval '1 second'",
            author="%s",
            series="generate_series(1, %s) AS k",
        )
        database.execute_sql(sql, (author_id, rows))
        database.execute_sql("ANALYZE messages")
    return time.perf_counter() - started


def timed(client: falcon.testing.TestClient, path: str, query: str, repeat: int) -> tuple[float, float, int]:
    client.simulate_get(path, query_string=query)  # warm-up
    times, status = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        status = client.simulate_get(path, query_string=query).status_code
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times), status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--hot-gets", type=int, default=3000)
    parser.add_argument("--hot-only", action="store_true", help="time only the hot GET")
    args = parser.parse_args()

    scratch = tempfile.TemporaryDirectory()
    admin = None
    if args.pg:
        import psycopg2

        name = f"msgapi_bench_{uuid.uuid4().hex[:10]}"
        admin = psycopg2.connect(args.pg_url)
        admin.autocommit = True
        admin.cursor().execute(f'CREATE DATABASE "{name}"')
        url = urlunsplit(urlsplit(args.pg_url)._replace(path="/" + name))
    else:
        url = f"sqlite:///{Path(scratch.name) / 'bench.sqlite3'}"
    try:
        config = Config(database_url=url, secret_key=os.urandom(32).hex(), password_hash_iterations=1000)
        client = falcon.testing.TestClient(create_app(config))
        account = {"username": "bench", "password": "x" * 12 + "-Pw9"}
        registered = client.simulate_post("/api/auth/register/", json=account)
        assert registered.status_code == 201, registered.text
        author_id = database.execute_sql("SELECT id FROM users WHERE username = 'bench'").fetchone()[0]
        seconds = seed(args.rows, author_id, not args.pg)
        print(f"{'PostgreSQL' if args.pg else 'SQLite'}, {args.rows:,} messages seeded in {seconds:.1f} s; "
              f"median / max of {args.repeat} in ms, in-process")
        for label, query in {} if args.hot_only else SHAPES.items():
            median, worst, status = timed(client, "/api/messages", query, args.repeat)
            print(f"  {label:32} {median:8.1f} {worst:8.1f}  {status}")
        hot = args.rows // 2
        median, worst, status = timed(client, f"/api/messages/{hot}", "", args.hot_gets)
        print(f"  {'hot GET item (x' + str(args.hot_gets) + ')':32} {median:8.3f} {worst:8.1f}  {status}")
    finally:
        database.close_all()
        if admin is not None:
            admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()
        scratch.cleanup()


if __name__ == "__main__":
    main()
