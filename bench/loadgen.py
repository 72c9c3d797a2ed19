"""Load generators for the benchmark: ``wrk`` (when installed) or a built-in multi-process client.

Both take the same ``Load`` description and return the same result dict:
``requests``, ``ok`` (2xx), ``errors`` (non-2xx plus socket errors), ``rps``,
``p50_ms``, ``p99_ms``, ``elapsed`` and ``generator``.

The built-in client runs several processes (so the client is not one GIL), each
with a few threads that each hold one keep-alive ``http.client`` connection. A
client finishes the request it has in flight when the time is up, so every
request the server answered is counted (which the lost-views check relies on).
"""

from __future__ import annotations

import dataclasses
import http.client
import math
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

# ---------------------------------------------------------------------------------------------
# What to send


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


# ---------------------------------------------------------------------------------------------
# Running functions in separate processes, all starting at the same moment


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


# ---------------------------------------------------------------------------------------------
# Built-in HTTP client


def _http_worker(load: Load, host: str, port: int, threads: int, seed: int) -> Callable[[], dict]:
    import threading

    headers = dict(load.headers)
    conns = [http.client.HTTPConnection(host, port, timeout=load.timeout) for _ in range(threads)]
    for conn in conns:
        conn.connect()
    stats = [{"lat": [], "status": {}, "socket_errors": 0, "last": 0.0} for _ in range(threads)]

    def client(i: int, start: float, deadline: float) -> None:
        conn, st, rng = conns[i], stats[i], random.Random(seed * 1000 + i)
        lat, status = st["lat"], st["status"]
        now = start
        while now < deadline:
            path = load.make_path(rng)
            t0 = time.perf_counter()
            try:
                conn.request(load.method, path, body=load.body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                now = time.perf_counter()
                lat.append(now - t0)
                status[resp.status] = status.get(resp.status, 0) + 1
                if resp.will_close:
                    conn.close()
            except (OSError, http.client.HTTPException):
                now = time.perf_counter()
                st["socket_errors"] += 1
                conn.close()  # http.client reconnects on the next request
        st["last"] = now

    def run() -> dict:
        start = time.perf_counter()
        deadline = start + load.duration
        workers = [threading.Thread(target=client, args=(i, start, deadline)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        for conn in conns:
            conn.close()
        merged: dict[int, int] = {}
        for st in stats:
            for code, n in st["status"].items():
                merged[code] = merged.get(code, 0) + n
        return {
            "lat": [x for st in stats for x in st["lat"]],
            "status": merged,
            "socket_errors": sum(st["socket_errors"] for st in stats),
            "elapsed": max(st["last"] for st in stats) - start,
        }

    return run


def builtin_plan(load: Load, host: str, port: int, max_processes: int | None = None) -> list[tuple[Callable, tuple]]:
    """Split ``load.concurrency`` clients over a few processes (threads within each)."""
    procs = min(load.concurrency, max_processes or max(2, 2 * (os.cpu_count() or 1)))
    base, extra = divmod(load.concurrency, procs)
    seed = random.randrange(1 << 30)
    return [(_http_worker, (load, host, port, base + (1 if p < extra else 0), seed + p)) for p in range(procs)]


def summarize_builtin(load: Load, parts: list[dict]) -> dict:
    lat = sorted(x for part in parts for x in part["lat"])
    status: dict[int, int] = {}
    for part in parts:
        for code, n in part["status"].items():
            status[code] = status.get(code, 0) + n
    socket_errors = sum(part["socket_errors"] for part in parts)
    elapsed = max(part["elapsed"] for part in parts) or load.duration
    ok = sum(n for code, n in status.items() if 200 <= code < 300)
    requests = sum(status.values())
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    return {
        "generator": "builtin",
        "requests": requests,
        "ok": ok,
        "status_200": status.get(200, 0),
        "status": {str(k): v for k, v in sorted(status.items())},
        "non_2xx": requests - ok,
        "socket_errors": socket_errors,
        "errors": requests - ok + socket_errors,
        "elapsed": elapsed,
        "rps": requests / elapsed if elapsed > 0 else 0.0,
        "p50_ms": p50 * 1000 if p50 is not None else None,
        "p99_ms": p99 * 1000 if p99 is not None else None,
    }


# ---------------------------------------------------------------------------------------------
# wrk


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _lua_str(text: str) -> str:
    level = 1
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def wrk_script(load: Load) -> str:
    lines = [f"wrk.method = {_lua_str(load.method)}"]
    if load.body is not None:
        lines.append(f"wrk.body = {_lua_str(load.body.decode())}")
    for name, value in load.headers:
        lines.append(f"wrk.headers[ {_lua_str(name)} ] = {_lua_str(value)}")
    if load.id_range is not None:
        lo, hi = load.id_range
        prefix, _, suffix = load.path.partition("{id}")
        lines += [
            "local counter = 1",
            "function setup(thread) thread:set('tid', counter); counter = counter + 1 end",
            "function init(args)",
            f"  math.randomseed(os.time() * 1000 + (tid or 0) * 7919 + {random.randrange(1 << 20)})",
            "end",
            "request = function()",
            f"  return wrk.format(nil, {_lua_str(prefix)} .. math.random({lo}, {hi}) .. {_lua_str(suffix)})",
            "end",
        ]
    return "\n".join(lines) + "\n"


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"unknown wrk time {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict:
    """Requests, errors and the 50%/99% lines of wrk's ``--latency`` output."""
    result: dict[str, Any] = {}
    dist = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", output, re.M))
    result["p50_ms"] = _to_ms(dist["50"]) if "50" in dist else None
    result["p99_ms"] = _to_ms(dist["99"]) if "99" in dist else None
    match = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", output)
    if not match:
        raise ValueError("wrk printed no request count:\n" + output)
    result["requests"] = int(match.group(1))
    result["elapsed"] = _to_ms(match.group(2) + match.group(3)) / 1000
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    result["socket_errors"] = sum(int(x) for x in match.groups()) if match else 0
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["non_2xx"] = int(match.group(1)) if match else 0
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    result["rps"] = float(match.group(1)) if match else 0.0
    return result


def start_wrk(load: Load, base_url: str, tmpdir: str) -> tuple[subprocess.Popen, str]:
    script = os.path.join(tmpdir, f"wrk-{load.name}-{load.concurrency}-{random.randrange(1 << 30)}.lua")
    with open(script, "w", encoding="utf-8") as handle:
        handle.write(wrk_script(load))
    threads = max(1, min(load.concurrency, os.cpu_count() or 1))
    url = base_url.rstrip("/") + (load.path.partition("{id}")[0] if load.id_range else load.path)
    cmd = [
        wrk_path() or "wrk",
        f"-t{threads}",
        f"-c{load.concurrency}",
        f"-d{max(1, round(load.duration))}s",
        f"--timeout={max(1, math.ceil(load.timeout))}s",
        "--latency",
        "-s",
        script,
        url,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, " ".join(cmd)


def finish_wrk(proc: subprocess.Popen, cmd: str, timeout: float) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    script = cmd.split(" -s ")[1].split(" ")[0]
    if proc.returncode != 0 or f"{script}:" in out:  # wrk reports Lua errors yet exits 0
        raise RuntimeError(f"wrk failed ({proc.returncode}): {cmd}\n{out}")
    result = parse_wrk(out)
    ok = result["requests"] - result["non_2xx"]
    result.update(
        generator="wrk",
        ok=ok,
        # wrk cannot tell 200 from other 2xx/3xx; for the GETs measured here they are all 200.
        status_200=ok,
        errors=result["non_2xx"] + result["socket_errors"],
    )
    return result


# ---------------------------------------------------------------------------------------------
# One entry point for both


class Generator:
    def __init__(self, kind: str, base_url_host: str, port: int) -> None:
        if kind == "auto":
            kind = "wrk" if wrk_path() else "builtin"
        if kind == "wrk" and not wrk_path():
            raise RuntimeError("--generator wrk: wrk is not installed")
        self.kind = kind
        self.host = base_url_host
        self.port = port
        self._tmp = tempfile.mkdtemp(prefix="msgapi-bench-wrk-")

    def retarget(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def run(self, *loads: Load, kind: str | None = None) -> list[dict]:
        """Run the loads at the same time (each with its own clients); one result each."""
        kind = kind or self.kind
        longest = max(load.duration for load in loads)
        max_seconds = longest + max(load.timeout for load in loads) + 60
        if kind == "wrk":
            started = [start_wrk(load, self.base_url, self._tmp) for load in loads]
            return [finish_wrk(proc, cmd, max_seconds) for proc, cmd in started]
        plans = [builtin_plan(load, self.host, self.port) for load in loads]
        parts = run_process_groups(plans, max_seconds)
        return [summarize_builtin(load, group) for load, group in zip(loads, parts, strict=True)]

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)


__all__ = ["Generator", "Load", "percentile", "run_process_groups"]
