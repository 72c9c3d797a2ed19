"""Benchmark msgapi as deployed: ``run.py`` under Waitress, driven over loopback from separate processes.

    python -m bench.run [--pg] [--json FILE] [--duration SECONDS] [--smoke] [--growth] [--profile DIR]

See bench/README.md for what is measured and what each column means.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:
    # Run as a file (python bench/run.py): put the repo root where the bench/ folder was, so that
    # ``bench`` imports as the package it is.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import secrets
import shutil
import tempfile
import time

from bench.ceilings import measure_app_ceilings, measure_db_ceilings
from bench.database import Database
from bench.growth import measure_growth
from bench.loadgen import Generator
from bench.measure import Target, measure_scenarios, measure_storm
from bench.meta import loadavg, run_meta
from bench.profiling import profile
from bench.progress import log
from bench.report import render, render_totals, write_json
from bench.seeding import seed
from bench.servers import Service, server_env

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
REPO_ROOT = Path(__file__).resolve().parent.parent


def bench(args: argparse.Namespace) -> dict:
    """One whole run: ceilings, the service with its scenarios, and the optional parts; always cleans up."""
    tmpdir = Path(tempfile.mkdtemp(prefix="msgapi-bench-"))
    database = Database(args.pg, args.pg_url, tmpdir)
    root = Path(args.server_root).resolve()
    # One key for every process of the run: a token from one must be good at the others.
    secret_key = secrets.token_urlsafe(48)  # 64 characters, new every run
    env = server_env(root, database.url, secret_key, args.hash_iterations)
    service = Service(root, env, tmpdir)
    gen: Generator | None = None
    meta = run_meta(args, root)
    result: dict = {"meta": meta}
    try:
        database.create()
        meta["database_version"] = database.version() if args.pg else None
        gen = Generator(args.generator, "127.0.0.1", 0)
        meta["generator"] = gen.kind
        meta["generator_version"] = gen.version()
        log(f"load generator: {gen.kind} ({meta['generator_version']})")
        result["app_ceiling"] = measure_app_ceilings(
            gen, root, env, args.threads, args.concurrency, args.duration, tmpdir / "ceiling.log"
        )
        startup = service.start(args.processes, args.threads, database.label)
        gen.retarget(*service.entry)
        result["server_url"] = service.first.url
        result["startup_s"] = startup
        result["rss_kb_idle"] = service.first.rss_kb()
        log(f"msgapi answered 200 {startup:.2f}s after spawn at {service.first.url}")
        seeded = seed(service.first, database.db)
        result["seed"] = seeded.summary()
        result["list_page_size"] = seeded.page_size
        result["list_limit_supported"] = seeded.page_limited
        if not args.pg:
            meta["database_version"] = database.version()
        result["db_ceiling"] = measure_db_ceilings(database.db, seeded.hot_id, seeded.ids, args.duration, args.smoke)
        target = Target(gen, service, database.db, seeded, args.duration)
        result["scenarios"] = measure_scenarios(
            target, args.concurrency, args.smoke, result["app_ceiling"], result["db_ceiling"]
        )
        result["storm"] = measure_storm(target, args.smoke, result["scenarios"])
        result["rss_kb_after_scenarios"] = service.rss_kb()
        if args.profile:
            result["profile"] = profile(
                target, max(args.concurrency), Path(args.profile), meta["database"], args.duration
            )
        if args.growth:
            result["growth"] = measure_growth(target, args.growth_duration)
            result["rss_kb_after_growth"] = service.rss_kb()
        problems = service.first.problems()
        result["server_log_problems"] = problems[:20]
        result["server_log_problem_count"] = len(problems)
        result["waitress_queue_warnings"] = service.first.queue_warnings()
    finally:
        service.stop()
        if gen:
            gen.close()
        try:
            database.drop()
        finally:
            if args.keep:
                log(f"kept {tmpdir}")
            else:
                shutil.rmtree(tmpdir, ignore_errors=True)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark msgapi under Waitress (see bench/README.md).")
    parser.add_argument("--pg", action="store_true", help="run on a fresh PostgreSQL database instead of SQLite")
    parser.add_argument(
        "--pg-url", default=DEFAULT_PG_URL, help=f"admin URL to create the database from ({DEFAULT_PG_URL})"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--duration", type=float, default=None, help="seconds per measurement (default 5; --smoke 1)")
    parser.add_argument("--smoke", action="store_true", help="quick check: 1 s, concurrency 1 and 4, fewer scenarios")
    parser.add_argument("--growth", action="store_true", help="also measure at 1k, 100k and 1M messages")
    parser.add_argument("--growth-duration", type=float, default=2.0, help="seconds per growth measurement (2)")
    parser.add_argument("--concurrency", default=None, help="comma-separated client counts (default 1,16; --smoke 1,4)")
    parser.add_argument(
        "--threads", type=int, default=16, help="server threads, also the ceiling app's (16, the server default)"
    )
    parser.add_argument("--hash-iterations", type=int, default=600_000, help="PASSWORD_HASH_ITERATIONS (600000)")
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "builtin"),
        default="auto",
        help="load generator: wrk if installed (auto), or force one",
    )
    parser.add_argument("--profile", metavar="DIR", help="also profile the server under hot GET load with py-spy")
    parser.add_argument("--server-root", default=str(REPO_ROOT), help="folder holding run.py (the repo root)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (database file, server logs)")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="msgapi processes; more than 1 puts nginx in front of them, as deploy/nginx.conf does (1)",
    )
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 1.0 if args.smoke else 5.0
    if args.concurrency is None:
        args.concurrency = "1,4" if args.smoke else "1,16"
    args.concurrency = [int(x) for x in str(args.concurrency).split(",") if x.strip()]
    if args.smoke and args.growth:
        log("--growth is skipped with --smoke")
        args.growth = False
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    result = bench(args)
    result["meta"]["wall_seconds"] = time.perf_counter() - started
    result["meta"]["loadavg_end"] = loadavg()
    print(render(result))
    print(render_totals(result["meta"]))
    if args.json:
        write_json(result, args.json)
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
