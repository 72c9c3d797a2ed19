"""Rate-limit counters: requests per bucket and fixed window, kept in the database.

In the database, not in memory, so a limit holds across every process of a deployment.
"""

from __future__ import annotations

from .connection import database, write, write_lock, write_returning
from .schema import RateLimitHit


def count_hit(bucket: str, window_start: int) -> int:
    """Count one request in ``bucket``'s window and return the window's total, atomically."""
    query = (
        RateLimitHit.insert(bucket=bucket, window_start=window_start, hits=1)
        .on_conflict(
            conflict_target=[RateLimitHit.bucket, RateLimitHit.window_start],
            update={RateLimitHit.hits: RateLimitHit.hits + 1},
        )
        .returning(RateLimitHit.hits)
    )
    row = write_returning(query)
    assert row is not None
    return row["hits"]


def uncount_hit(bucket: str, window_start: int) -> None:
    """Take back one hit ``count_hit`` counted; a window left at zero hits is no row at all."""
    where = (RateLimitHit.bucket == bucket) & (RateLimitHit.window_start == window_start)
    with write_lock(), database.atomic():
        RateLimitHit.update(hits=RateLimitHit.hits - 1).where(where).execute()
        RateLimitHit.delete().where(where & (RateLimitHit.hits <= 0)).execute()


def hits_in_windows(bucket: str, previous_window: int, current_window: int) -> tuple[int, int]:
    """(hits, hits) in ``bucket``'s previous and current windows, in one read."""
    rows = RateLimitHit.select(RateLimitHit.window_start, RateLimitHit.hits).where(
        (RateLimitHit.bucket == bucket) & RateLimitHit.window_start.in_([previous_window, current_window])
    )
    hits = {row.window_start: row.hits for row in rows}
    return hits.get(previous_window, 0), hits.get(current_window, 0)


def prune_hits(before_window: int) -> None:
    write(RateLimitHit.delete().where(RateLimitHit.window_start < before_window))
