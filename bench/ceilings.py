"""The ceilings the service is compared to, measured in the same run on the same machine.

(a) and (a'): a bare Falcon app under the same Waitress settings answering one message-shaped
object, and 100 of them. (b): the database alone running the statement a view costs, committed
each time, from separate processes with one connection each.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from bench.database import DB, connect, sql
from bench.load import percentile
from bench.loadgen import Generator
from bench.parallel import run_process_groups
from bench.progress import log
from bench.scenarios import APP_CEILINGS, build_load
from bench.servers import start_ceiling_app

# A view costs exactly this statement (models.count_view, less the author subquery).
VIEW_STATEMENT = (
    "UPDATE messages SET views = views + 1 WHERE id = %s RETURNING id, content, views, created_at, updated_at"
)
VIEW_LABEL = "UPDATE…RETURNING"


def measure_app_ceilings(
    gen: Generator, root: Path, env: dict[str, str], threads: int, clients: list[int], duration: float, log_path: Path
) -> dict:
    """(a) and (a') at each client count: ``{"item": {c: result}, "list": {c: result}}``."""
    server = start_ceiling_app(root, env, threads, log_path)
    try:
        gen.retarget(server.host, server.port)
        server.wait_for_200("/item")
        ceilings: dict = {"item": {}, "list": {}}
        for c in clients:
            for key, scenario in APP_CEILINGS.items():
                label = "(a)" if key == "item" else "(a')"
                log(f"ceiling {label} bare Falcon /{key}, c={c}")
                ceilings[key][c] = gen.run(build_load(scenario, c, duration))[0]
        return ceilings
    finally:
        server.stop()


def measure_db_ceilings(db: DB, hot_id: int, ids: tuple[int, int], duration: float, smoke: bool) -> dict:
    """(b) on the hot id (and, unless ``smoke``, on random ids) from 1 and 8 connections."""
    which = [("hot", (hot_id, hot_id))]
    if not smoke:
        which.append(("random", ids))
    out: dict = {}
    for name, id_range in which:
        for conns in (1, 8):
            log(f"ceiling (b) {VIEW_LABEL} {name} id, {conns} connection(s)")
            out.setdefault(name, {})[conns] = measure_db_ceiling(db, id_range, conns, duration, name)
    return out


def summarize_db(parts: list[dict], conns: int, which: str) -> dict:
    lat = sorted(x for part in parts for x in part["lat"])
    elapsed = max(part["elapsed"] for part in parts)
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    return {
        "ids": which,
        "connections": conns,
        "statements": len(lat),
        "errors": sum(part["errors"] for part in parts),
        "rps": len(lat) / elapsed if elapsed else 0.0,
        "p50_ms": p50 * 1000 if p50 is not None else None,
        "p99_ms": p99 * 1000 if p99 is not None else None,
    }


def measure_db_ceiling(db: DB, ids: tuple[int, int], conns: int, duration: float, which: str) -> dict:
    """(b) from ``conns`` processes with one connection each, all starting together."""
    seed = secrets.randbelow(1 << 30)
    group = [(view_worker, (db, ids, duration, seed + i)) for i in range(conns)]
    parts = run_process_groups([group], duration + 120)[0]
    return summarize_db(parts, conns, which)


def view_worker(db: DB, ids: tuple[int, int], duration: float, seed: int) -> Callable[[], dict]:
    """Connects in its own process; the returned callable runs VIEW_STATEMENT, committed each time."""
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
