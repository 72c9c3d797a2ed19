"""Running functions in separate processes, all starting at the same moment.

The built-in HTTP client and the database ceiling both use it, so that the load does not
share one GIL with the benchmark and every process starts measuring together.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from typing import Any


def _spawn_entry(target: Callable, args: tuple, ready: Any, go: Any, results: Any, slot: tuple[int, int]) -> None:
    try:
        run = target(*args)  # set up (connect); returns the callable that does the timed work
        ready.put(slot)
        go.wait()
        results.put((slot, run()))
    except BaseException as exc:  # report, never hang the parent
        ready.put(slot)
        results.put((slot, {"fatal": f"{type(exc).__name__}: {exc}"}))


def run_process_groups(groups: list[list[tuple[Callable, tuple]]], max_seconds: float) -> list[list[dict]]:
    """Start every (target, args) of every group in its own process; release them together.

    ``target(*args)`` runs in the child: it sets up and returns a no-argument callable,
    which runs once every process is set up and whose return value is collected.
    """
    # fork is quick and the parent runs no threads; spawn where there is no fork.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = []
    for g, group in enumerate(groups):
        for i, (target, args) in enumerate(group):
            proc = ctx.Process(target=_spawn_entry, args=(target, args, ready, go, results, (g, i)), daemon=True)
            proc.start()
            procs.append(proc)
    try:
        for _ in procs:
            ready.get(timeout=60)
        go.set()
        out: list[list[dict | None]] = [[None] * len(group) for group in groups]
        deadline = time.monotonic() + max_seconds
        for _ in procs:
            (g, i), result = results.get(timeout=max(1.0, deadline - time.monotonic()))
            out[g][i] = result
        for proc in procs:
            proc.join(timeout=10)
        for group in out:
            for result in group:
                if result and "fatal" in result:
                    raise RuntimeError(f"a load process failed: {result['fatal']}")
        return out  # type: ignore[return-value]
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
