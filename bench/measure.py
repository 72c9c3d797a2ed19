"""Measuring the running service: each scenario with its view counts and ratios, and the login storm."""

from __future__ import annotations

import dataclasses
import time

from bench.database import DB, delete_above, views_sum
from bench.load import Load
from bench.loadgen import Generator
from bench.progress import log
from bench.scenarios import STORM_LOGIN, STORM_READER, Scenario, build_load, scenarios
from bench.seeding import Seeded
from bench.servers import Service


@dataclasses.dataclass
class Target:
    """What every measurement of the running service uses."""

    gen: Generator
    service: Service
    db: DB
    seeded: Seeded
    duration: float  # seconds per measurement unless one says otherwise

    def load(
        self, scenario: Scenario, clients: int, duration: float | None = None, ids: tuple[int, int] | None = None
    ) -> Load:
        return build_load(scenario, clients, self.duration if duration is None else duration, self.seeded, ids)


def ratio(value: float | None, ceiling: float | None) -> float | None:
    if not value or not ceiling:
        return None
    return value / ceiling


def run_measured(target: Target, scenario: Scenario, load: Load) -> dict:
    """Run ``load``, wait for the server to drain, then check the views it counted and delete rows it made."""
    db = target.db
    counts_views = scenario.counts_views
    before = views_sum(db) if counts_views else None  # the last measurement settled
    statements_before = target.service.view_statements() if counts_views else None
    started = time.monotonic()
    res = target.gen.run(load)[0]
    # Requests the generator gave up on at the bell still run on the server: wait them out.
    res["drain_s"] = target.service.settle()
    if counts_views:
        delta = views_sum(db) - before
        res["views_delta"] = delta
        res["lost_views"] = max(0, res["status_200"] - delta)
        res["uncounted_200s"] = max(0, delta - res["status_200"])
        statements_after = target.service.view_statements()
        if statements_before is not None and statements_after is not None and statements_after > statements_before:
            statements = statements_after - statements_before
            res["view_statements"] = statements
            res["view_statements_per_s"] = statements / (time.monotonic() - started)
            res["views_per_statement"] = delta / statements
    if scenario.creates_rows:
        res["rows_created"] = delete_above(db, target.seeded.ids[1])
    return res


def measure_scenarios(target: Target, clients: list[int], smoke: bool, app_ceiling: dict, db_ceiling: dict) -> list:
    """Every scenario at every client count, in that order, each with its ratios to the ceilings."""
    rows = []
    for c in clients:
        for scenario in scenarios(smoke):
            log(f"scenario {scenario.name}, c={c}")
            res = run_measured(target, scenario, target.load(scenario, c))
            res.update(scenario=scenario.name, concurrency=c, rss_kb=target.service.rss_kb())
            add_ratios(res, scenario, c, app_ceiling, db_ceiling)
            rows.append(res)
    return rows


def add_ratios(res: dict, scenario: Scenario, c: int, app_ceiling: dict, db_ceiling: dict) -> None:
    key = scenario.ceiling
    if key:
        app = app_ceiling[key].get(c, {}).get("rps")
        res["ceiling"] = "a" if key == "item" else "a'"
        res["ceiling_rps"] = app
        res["ratio"] = ratio(res["rps"], app)
        which = scenario.db_ceiling
        if which and which in db_ceiling:
            conns = 1 if c == 1 else 8
            db_rps = db_ceiling[which][conns]["rps"]
            res["db_ceiling_rps"] = db_rps
            res["min_ceiling_rps"] = min(x for x in (app, db_rps) if x)
            res["ratio_min"] = ratio(res["rps"], res["min_ceiling_rps"])


def measure_storm(target: Target, smoke: bool, scenario_rows: list[dict]) -> dict:
    """8 clients logging in while one reader GETs the hot message; the reader alone for comparison."""
    log("login storm: 8 login clients + 1 GET-item reader")
    # At least 3 s: a login takes a good fraction of a second, and requests still in flight
    # when wrk's window closes are not counted.
    duration = max(2.0 if smoke else 3.0, target.duration)
    db = target.db
    target.service.settle()
    before = views_sum(db)
    login, reader = target.gen.run(
        target.load(STORM_LOGIN, 8, duration=duration), target.load(STORM_READER, 1, duration=duration)
    )
    drain = target.service.settle()
    delta = views_sum(db) - before
    reader.update(
        drain_s=drain,
        views_delta=delta,
        lost_views=max(0, reader["status_200"] - delta),
        uncounted_200s=max(0, delta - reader["status_200"]),
    )
    base = next((r for r in scenario_rows if r["scenario"] == "get_hot" and r["concurrency"] == 1), None)
    return {
        "login": login,
        "reader": reader,
        "reader_alone": {k: base[k] for k in ("rps", "p50_ms", "p99_ms")} if base else None,
    }
