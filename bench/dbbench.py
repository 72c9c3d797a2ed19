"""Direct database work for the benchmark: fast seeding, checks, and the statement-rate ceiling.

A database is ``("sqlite", path)`` or ``("pg", dsn)``; both go through the driver the
service uses (``sqlite3`` / ``psycopg2``), never through the service.
"""

from __future__ import annotations

import datetime
import random
import time
from collections.abc import Callable
from typing import Any

# A view costs exactly this statement (models.count_view, less the author subquery).
VIEW_STATEMENT = (
    "UPDATE messages SET views = views + 1 WHERE id = %s RETURNING id, content, views, created_at, updated_at"
)
# Seeded rows are timestamped one second apart, starting this far back: always in the past.
SEED_EPOCH_BACK = datetime.timedelta(days=200)

DB = tuple[str, str]


def connect(db: DB) -> Any:
    kind, target = db
    if kind == "sqlite":
        import sqlite3

        conn = sqlite3.connect(target, timeout=10)
        # The service's pragmas (msgapi.db.SQLITE_PRAGMAS).
        for pragma in (
            "journal_mode = wal",
            "synchronous = normal",
            "foreign_keys = 1",
            "busy_timeout = 10000",
            "cache_size = -16000",
        ):
            conn.execute(f"PRAGMA {pragma}")
        # The search index's triggers call it (msgapi.db registers the same on its connections).
        conn.create_function("msgapi_casefold", 1, lambda value: value.casefold() if isinstance(value, str) else value)
        return conn
    import psycopg2

    return psycopg2.connect(target)


def sql(db: DB, statement: str) -> str:
    """The statement in the driver's parameter style (``%s`` -> ``?`` for sqlite3)."""
    return statement.replace("%s", "?") if db[0] == "sqlite" else statement


def query(db: DB, statement: str, params: tuple = ()) -> list[tuple]:
    conn = connect(db)
    try:
        cur = conn.cursor()
        cur.execute(sql(db, statement), params)
        rows = cur.fetchall() if cur.description else []
        conn.commit()
        return rows
    finally:
        conn.close()


def seed_epoch() -> datetime.datetime:
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None, microsecond=0)
    return now - SEED_EPOCH_BACK


def seed_messages(db: DB, count: int, author_id: int, first_index: int, epoch: datetime.datetime) -> float:
    """Insert ``count`` messages in one statement; row k (from ``first_index``) is stamped epoch + k s.

    Naive UTC timestamps, views 0, the given author. Returns the seconds it took.
    """
    started = time.perf_counter()
    conn = connect(db)
    try:
        cur = conn.cursor()
        if db[0] == "sqlite":
            base = int(epoch.replace(tzinfo=datetime.timezone.utc).timestamp())
            cur.execute(
                """
                WITH RECURSIVE seq(k) AS (SELECT ? UNION ALL SELECT k + 1 FROM seq WHERE k < ?)
                INSERT INTO messages (content, views, created_at, updated_at, author_id)
                SELECT 'seed message #' || k, 0, ts, ts, ?
                FROM (SELECT k, strftime('%Y-%m-%d %H:%M:%S', ? + k, 'unixepoch') || '.000000' AS ts FROM seq)
                """,
                (first_index, first_index + count - 1, author_id, base),
            )
        else:
            cur.execute(
                """
                INSERT INTO messages (content, views, created_at, updated_at, author_id)
                SELECT 'seed message #' || k, 0, %s + k * interval '1 second', %s + k * interval '1 second', %s
                FROM generate_series(%s, %s) AS k
                """,
                (epoch, epoch, author_id, first_index, first_index + count - 1),
            )
        conn.commit()
        if db[0] == "pg":
            conn.autocommit = True
            cur.execute("ANALYZE messages")
    finally:
        conn.close()
    return time.perf_counter() - started


def views_sum(db: DB) -> int:
    return int(query(db, "SELECT COALESCE(SUM(views), 0) FROM messages")[0][0])


def id_range(db: DB) -> tuple[int, int, int]:
    lo, hi, n = query(db, "SELECT MIN(id), MAX(id), COUNT(*) FROM messages")[0]
    return int(lo), int(hi), int(n)


def delete_above(db: DB, max_id: int) -> int:
    conn = connect(db)
    try:
        cur = conn.cursor()
        cur.execute(sql(db, "DELETE FROM messages WHERE id > %s"), (max_id,))
        deleted = cur.rowcount
        conn.commit()
        return deleted
    finally:
        conn.close()


def user_id(db: DB, username: str) -> int:
    return int(query(db, "SELECT id FROM users WHERE username = %s", (username,))[0][0])


# ---------------------------------------------------------------------------------------------
# The statement-rate ceiling: one connection per process, committed after every statement


def view_worker(db: DB, ids: tuple[int, int], duration: float, seed: int) -> Callable[[], dict]:
    conn = connect(db)
    statement = sql(db, VIEW_STATEMENT)
    rng = random.Random(seed)

    def run() -> dict:
        cur = conn.cursor()
        lat: list[float] = []
        errors = 0
        start = time.perf_counter()
        deadline = start + duration
        now = start
        while now < deadline:
            t0 = time.perf_counter()
            try:
                cur.execute(statement, (rng.randint(*ids),))
                cur.fetchone()
                conn.commit()
            except Exception:
                errors += 1
                conn.rollback()
            now = time.perf_counter()
            lat.append(now - t0)
        conn.close()
        return {"lat": lat, "errors": errors, "elapsed": now - start}

    return run
