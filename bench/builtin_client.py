"""The built-in load generator: several processes, each with threads holding one keep-alive connection.

Running several processes keeps the client from being one GIL. A client finishes the request
it has in flight when the time is up, so every request the server answered is counted (which
the lost-views check relies on).
"""

from __future__ import annotations

import http.client
import os
import random
import time
from collections.abc import Callable

from bench.load import Load, percentile


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
