"""``--growth``: the cost of a GET and of a list page as the table grows from 1k to 1M messages."""

from __future__ import annotations

from bench.database import id_range
from bench.load import Load
from bench.measure import Target, ratio
from bench.progress import log
from bench.scenarios import GROWTH_GET, GROWTH_LIST
from bench.seeding import seed_more

GROWTH_SIZES = (1_000, 100_000, 1_000_000)
# Without ?limit support the list returns every row; past this many we do not ask for it.
UNLIMITED_LIST_MAX_ROWS = 100_000


def measure_growth(target: Target, duration: float) -> dict:
    """One client, random ids, at each size: ``{"steps": [...], "ratio_last_to_first": {...}}``."""
    db = target.db
    steps = []
    lo, hi, count = id_range(db)
    for size in GROWTH_SIZES:
        seed_s = 0.0
        if count < size:
            log(f"growth: seeding {size - count} messages to reach {size}")
            seed_s = seed_more(db, target.seeded, size - count)
            lo, hi, count = id_range(db)
        step: dict = {"messages": count, "seed_seconds": seed_s}
        log(f"growth at {count} messages: GET item (random ids), 1 client")
        step["get_item"] = _run_growth(target, target.load(GROWTH_GET, 1, duration=duration, ids=(lo, hi)))
        if target.seeded.page_limited or count <= UNLIMITED_LIST_MAX_ROWS:
            log(f"growth at {count} messages: list page, 1 client")
            step["list"] = _run_growth(target, target.load(GROWTH_LIST, 1, duration=duration))
        else:
            step["list"] = {"skipped": f"?limit is ignored: the list would return all {count} rows"}
        steps.append(step)
    first, last = steps[0], steps[-1]
    ratios = {}
    for key in ("get_item", "list"):
        a, b = first.get(key, {}), last.get(key, {})
        ratios[key] = {m: ratio(b.get(m), a.get(m)) for m in ("p50_ms", "p99_ms")}
    return {"steps": steps, "ratio_last_to_first": ratios}


def _run_growth(target: Target, load: Load) -> dict:
    target.service.settle()
    res = target.gen.run(load)[0]
    if res["requests"] == 0 and target.gen.kind == "wrk":
        # Requests slower than wrk's whole window complete nothing; the built-in client finishes them.
        res = target.gen.run(load, kind="builtin")[0]
        res["note"] = "built-in client: no request finished within wrk's window"
    return res
