"""Brute-force limits for the auth endpoints, shared by every process through the database.

A sliding-window counter: hits are counted in fixed windows (one atomic upsert
per request), and the previous window's count is weighted by how much of it still
overlaps the sliding window. Unlike a plain fixed window this never lets a client
through with twice the limit at a window boundary.
"""

from __future__ import annotations

import math
import time

from . import models
from .config import Rate


class RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"rate limited, retry after {retry_after}s")
        self.retry_after = retry_after


class RateLimiter:
    def __init__(self, rate: Rate | None, clock=time.time) -> None:
        self._rate = rate
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self._rate is not None

    def hit(self, *buckets: str) -> None:
        """Count one request in each bucket; raise ``RateLimited`` if any is over its limit."""
        if self._rate is None:
            return
        period, limit = self._rate.period, self._rate.limit
        now = self._clock()
        window = int(now // period) * period
        overlap = 1.0 - (now - window) / period  # share of the previous window still inside
        worst_wait = 0
        for bucket in buckets:
            current = models.count_hit(bucket, window)
            if current == 1:
                # First hit of a new window for this bucket: a cheap moment to drop old windows.
                models.prune_hits(window - period)
            estimate = current + models.hits_in_window(bucket, window - period) * overlap
            if estimate > limit:
                # Conservative: to the end of this window, then until this window's weighted
                # count (as next window's "previous") leaves room for one more request.
                drain = period * max(0.0, 1.0 - (limit - 1) / current)
                worst_wait = max(worst_wait, math.ceil(window + period - now + drain))
        if worst_wait:
            raise RateLimited(max(1, worst_wait))
