"""Rate limits (auth brute force, writes), shared by every process through the database.

A sliding-window counter: hits are counted in fixed windows (one atomic upsert
per counted request), and the previous window's count is weighted by how much of
it still overlaps the sliding window. Unlike a plain fixed window this never lets
a client through with twice the limit at a window boundary.

A refused request counts nowhere and writes nothing: it is refused on a read,
and a request that was counted but lost a race for the last slot takes its hit
back. So a flood of refused requests neither grows the table nor spends anyone
else's budget. Bucket keys have a bounded size: account names are hashed, and
IPv6 clients are keyed by their prefix (a /64 is one client, as one host gets one).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from typing import Any

from .config import Rate

# A failing account may take this many times the per-address budget: one address
# (or prefix) can never spend it all, several together still get slowed.
ACCOUNT_BUDGET_FACTOR = 3


class RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"rate limited, retry after {retry_after}s")
        self.retry_after = retry_after


def address_key(address: str, ipv6_prefix: int = 64) -> str:
    """The part of a client address that is budgeted: IPv4 whole, IPv6 by its prefix."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return _fixed_size(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{ipv6_prefix}", strict=False))
    return str(ip)


def _fixed_size(value: str) -> str:
    """sha256 hex prefix: 128 bits are plenty to tell buckets apart and bound the key."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class LoginAttempt:
    """One password check let through by ``RateLimiter.login_attempt``; see there."""

    def __init__(self, limits: Any, account_slot: tuple[str, int] | None) -> None:
        self._limits = limits
        self._account_slot = account_slot

    def succeeded(self) -> None:
        """The password was right: give the account's slot back (success is not guessing)."""
        if self._account_slot is not None:
            self._limits.uncount_hit(*self._account_slot)
            self._account_slot = None


class RateLimiter:
    def __init__(self, limits: Any, rate: Rate | None, ipv6_prefix: int = 64, clock=time.time) -> None:
        """``limits``: the store's rate-limit counters (``Store.limits``)."""
        self._limits = limits
        self._rate = rate
        self._ipv6_prefix = ipv6_prefix
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self._rate is not None

    def address_bucket(self, scope: str, address: str) -> str:
        """``scope:ip:<address or IPv6 prefix>``."""
        return f"{scope}:ip:{address_key(address, self._ipv6_prefix)}"

    @staticmethod
    def account_bucket(scope: str, account: str) -> str:
        """``scope:user:<hash>``: any name, however long, gives a key of one size."""
        return f"{scope}:user:{_fixed_size(account)}"

    def hit(self, *buckets: str) -> None:
        """Count one request in each bucket, or raise ``RateLimited`` if any is over its limit.

        A refused request counts in none of them.
        """
        if self._rate is None:
            return
        self._take([(bucket, self._rate.limit) for bucket in buckets])

    def login_attempt(self, scope: str, address: str, account: str) -> LoginAttempt:
        """Let one password check through, or raise ``RateLimited``.

        The policy for every endpoint that checks a password:
        1. the client address (IPv6: its prefix) has the whole budget; every attempt
           that gets past both checks counts, right or wrong;
        2. the account has ``ACCOUNT_BUDGET_FACTOR`` times the budget, spent only by
           attempts that passed the address check and then failed. It is reserved
           here, before the (slow) check, and given back by ``succeeded()``.
        A refused attempt counts nowhere. So one address can never spend an account's
        budget: its owner still logs in from elsewhere, while guessing spread over
        many addresses is still slowed. Use::

            attempt = limiter.login_attempt("token", req.context.client_ip, account)
            ...  # check the password; raise on a wrong one
            attempt.succeeded()
        """
        if self._rate is None:
            return LoginAttempt(self._limits, None)
        limit = self._rate.limit
        _, account_slot = self._take(
            [
                (self.address_bucket(scope, address), limit),
                (self.account_bucket(scope, account), limit * ACCOUNT_BUDGET_FACTOR),
            ]
        )
        return LoginAttempt(self._limits, account_slot)

    def _take(self, limits: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """One hit in each (bucket, limit) if every one fits, as (bucket, window) slots; else raise.

        Every bucket is read first, so a refused request writes nothing; a request
        that counted and then lost a race for a last slot takes its hits back.
        """
        assert self._rate is not None
        period = self._rate.period
        now = self._clock()
        window = int(now // period) * period
        overlap = 1.0 - (now - window) / period  # share of the previous window still inside
        weighted: list[float] = []
        for bucket, limit in limits:
            previous, current = self._limits.hits_in_windows(bucket, window - period, window)
            if current + 1 + previous * overlap > limit:
                raise RateLimited(self._wait(now, window, current + 1, limit))
            weighted.append(previous * overlap)
        taken: list[tuple[str, int]] = []
        for (bucket, limit), weighted_previous in zip(limits, weighted, strict=True):
            counted = self._limits.count_hit(bucket, window)
            taken.append((bucket, window))
            if counted + weighted_previous > limit:
                for slot in taken:
                    self._limits.uncount_hit(*slot)
                raise RateLimited(self._wait(now, window, counted, limit))
            if counted == 1:
                # First hit of a new window for this bucket: a cheap moment to drop old windows.
                self._limits.prune_hits(window - period)
        return taken

    def _wait(self, now: float, window: int, current: int, limit: int) -> int:
        # Conservative: to the end of this window, then until this window's weighted
        # count (as next window's "previous") leaves room for one more request.
        assert self._rate is not None
        period = self._rate.period
        drain = period * max(0.0, 1.0 - (limit - 1) / current)
        return max(1, math.ceil(window + period - now + drain))
