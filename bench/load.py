"""What a load generator is asked to send (``Load``), and the percentile every result uses."""

from __future__ import annotations

import dataclasses
import math
import random

# The list scenario's page: the size every list figure (and the ceiling (a')) is measured at.
PAGE_LIMIT = 100
LIST_PAGE = f"/api/messages?limit={PAGE_LIMIT}"


@dataclasses.dataclass(frozen=True)
class Load:
    """``concurrency`` clients sending ``method path`` for ``duration`` seconds.

    ``path`` may contain ``{id}``: each request then takes a random id in ``id_range``.
    """

    name: str
    method: str
    path: str
    concurrency: int
    duration: float
    id_range: tuple[int, int] | None = None
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 60.0

    def make_path(self, rng: random.Random) -> str:
        if self.id_range is None:
            return self.path
        return self.path.replace("{id}", str(rng.randint(*self.id_range)))


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (``q`` in 0..100)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]
