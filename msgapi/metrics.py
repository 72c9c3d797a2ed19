"""``GET /metrics`` in Prometheus' text format, written by hand.

Three families are all we expose (requests by route and status, a latency
histogram, pool use); a dozen lines of exposition beat a dependency whose
process-global registry would fight the one-app-per-test factory. Metrics are
per process by nature: Prometheus scrapes each process and adds them up.
"""

from __future__ import annotations

import bisect
import threading
import time
from typing import Any

import falcon

from .store import Store

# Labels taken from a request come from fixed sets: Waitress accepts any token as a
# method, and a label per made-up method would grow without bound.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Seconds; chosen around this service's real latencies (sub-ms reads to hashing logins).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = {}
        self._bucket_counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        index = bisect.bisect_left(BUCKETS, seconds)
        with self._lock:
            key = (method, route, status)
            self._requests[key] = self._requests.get(key, 0) + 1
            counts = self._bucket_counts.setdefault(route, [0] * (len(BUCKETS) + 1))
            counts[index] += 1
            self._sums[route] = self._sums.get(route, 0.0) + seconds

    def exposition(self, store: Store) -> str:
        with self._lock:
            requests = dict(self._requests)
            bucket_counts = {route: list(counts) for route, counts in self._bucket_counts.items()}
            sums = dict(self._sums)
        lines = [
            "# HELP msgapi_requests_total Requests answered, by method, route template and status.",
            "# TYPE msgapi_requests_total counter",
        ]
        for (method, route, status), count in sorted(requests.items()):
            lines.append(f'msgapi_requests_total{{method="{method}",route="{route}",status="{status}"}} {count}')
        lines += [
            "# HELP msgapi_request_duration_seconds Time from request to response, by route template.",
            "# TYPE msgapi_request_duration_seconds histogram",
        ]
        for route, counts in sorted(bucket_counts.items()):
            cumulative = 0
            for bound, count in zip((*BUCKETS, float("inf")), counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(f'msgapi_request_duration_seconds_bucket{{route="{route}",le="{le}"}} {cumulative}')
            lines.append(f'msgapi_request_duration_seconds_sum{{route="{route}"}} {sums[route]:.6f}')
            lines.append(f'msgapi_request_duration_seconds_count{{route="{route}"}} {cumulative}')
        views = store.view_statistics()
        lines += [
            "# HELP msgapi_view_statements_total Statements that counted views (PostgreSQL counts many views in one).",
            "# TYPE msgapi_view_statements_total counter",
            f"msgapi_view_statements_total {views['statements']}",
            "# HELP msgapi_views_counted_total Views counted by those statements.",
            "# TYPE msgapi_views_counted_total counter",
            f"msgapi_views_counted_total {views['views']}",
        ]
        pool = store.pool_statistics()
        lines += [
            "# HELP msgapi_db_pool_connections Pooled database connections, by state.",
            "# TYPE msgapi_db_pool_connections gauge",
            f'msgapi_db_pool_connections{{state="in_use"}} {pool["in_use"]}',
            f'msgapi_db_pool_connections{{state="idle"}} {pool["idle"]}',
            f"msgapi_db_pool_max_connections {pool['max']}",
        ]
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool) -> None:
        # The template, not the path: /api/messages/{id} is one series, not one per id.
        route = req.uri_template or "unmatched"
        method = req.method if req.method in KNOWN_METHODS else "other"
        # Started by RequestContext, which runs first.
        elapsed = time.perf_counter() - req.context.started
        self._metrics.observe(method, route, resp.status_code, elapsed)


class MetricsResource:
    def __init__(self, metrics: Metrics, store: Store) -> None:
        self._metrics = metrics
        self._store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "text/plain; version=0.0.4; charset=utf-8"
        resp.text = self._metrics.exposition(self._store)
