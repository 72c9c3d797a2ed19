"""Default arguments of every kind the mutation runner must apply, for its own test.

The service's code keeps no default that its callers never override (a mutant there could
only survive), so the runner's handling of defaults is shown on these instead.
"""

from __future__ import annotations


def page(*, limit: int, time_limit_ms: int = 500, ordering: str = "-id") -> tuple[int, int, str]:
    return limit, time_limit_ms, ordering


def keep_for(seconds: int = 24 * 3600) -> int:
    return seconds


class Limiter:
    def __init__(self, rate: int, prefix: int = 64, strict: bool = False) -> None:
        self.rate, self.prefix, self.strict = rate, prefix, strict
