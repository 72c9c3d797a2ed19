"""The run's data: one account registered through the API, then messages inserted directly, fast."""

from __future__ import annotations

import dataclasses
import datetime
import json
import secrets
import time

from bench.database import DB, connect, id_range, user_id
from bench.load import LIST_PAGE, PAGE_LIMIT
from bench.progress import log
from bench.server_process import Server, request

USERNAME = "bench"
SEED_MESSAGES = 1000
# Seeded rows are timestamped one second apart, starting this far back: always in the past.
SEED_EPOCH_BACK = datetime.timedelta(days=200)


@dataclasses.dataclass
class Seeded:
    """The account and the messages the scenarios use."""

    password: str
    access: str  # the account's access token
    author_id: int
    epoch: datetime.datetime
    inserted: int  # messages inserted so far: the next one is numbered inserted + 1
    ids: tuple[int, int]  # the lowest and highest message id
    hot_id: int  # the one message the hot scenarios read
    count: int
    seconds: float
    page_size: int  # rows GET /api/messages?limit=PAGE_LIMIT returned
    username: str = USERNAME

    @property
    def page_limited(self) -> bool:
        """Whether the server honours ?limit (it returned at most a page)."""
        return self.page_size <= PAGE_LIMIT

    def summary(self) -> dict:
        return {"messages": self.count, "ids": list(self.ids), "seconds": self.seconds, "hot_id": self.hot_id}


def _api(server: Server, method: str, path: str, body: object = None, access: str = "") -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {access}"} if access else None
    status, _, data = request(server.host, server.port, method, path, body, headers)
    return status, data


def seed(server: Server, db: DB) -> Seeded:
    """Register the account through ``server``, log in, insert SEED_MESSAGES messages, read one list page."""
    password = secrets.token_urlsafe(12) + "-pw"
    status, data = _api(server, "POST", "/api/auth/register/", {"username": USERNAME, "password": password})
    if status != 201:
        raise RuntimeError(f"register answered {status}: {data[:300]!r}")
    status, data = _api(server, "POST", "/api/auth/token/", {"username": USERNAME, "password": password})
    if status != 200:
        raise RuntimeError(f"token answered {status}: {data[:300]!r}")
    access = json.loads(data)["access"]
    author_id = user_id(db, USERNAME)
    epoch = seed_epoch()
    seconds = seed_messages(db, SEED_MESSAGES, author_id, 1, epoch)
    lo, hi, n = id_range(db)
    status, data = _api(server, "GET", LIST_PAGE)
    if status != 200:
        raise RuntimeError(f"list answered {status}: {data[:300]!r}")
    seeded = Seeded(
        password=password,
        access=access,
        author_id=author_id,
        epoch=epoch,
        inserted=SEED_MESSAGES,
        ids=(lo, hi),
        hot_id=lo + (hi - lo) // 2,
        count=n,
        seconds=seconds,
        page_size=len(json.loads(data)),
    )
    log(f"seeded {n} messages (ids {lo}..{hi}) in {seconds:.2f}s; ?limit={PAGE_LIMIT} gave {seeded.page_size} rows")
    return seeded


def seed_more(db: DB, seeded: Seeded, count: int) -> float:
    """Insert ``count`` more messages after the ones already inserted; returns the seconds it took."""
    seconds = seed_messages(db, count, seeded.author_id, seeded.inserted + 1, seeded.epoch)
    seeded.inserted += count
    return seconds


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
