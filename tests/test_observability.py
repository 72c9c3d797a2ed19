"""What operators see: JSON log lines on request, and /metrics when switched on."""

from __future__ import annotations

import json
import re

from conftest import PASSWORD, http_json


def test_json_log_format_writes_one_object_per_line_with_the_request_id(live_server):
    server = live_server(env={"LOG_FORMAT": "json"})
    http_json(server.url, "POST", "/api/auth/register/", {"username": "logger", "password": PASSWORD})
    server.stop()
    records = [json.loads(line) for line in server.log_lines if line.strip()]
    assert records, "the server wrote no log line"
    access = [r for r in records if r["logger"] == "msgapi.access"]
    assert any(r["message"].startswith("POST /api/auth/register 201") for r in access)
    for record in access:
        assert re.fullmatch(r"[0-9a-f]{32}", record["request_id"])
        assert {"time", "level", "logger", "message", "request_id"} <= set(record)
    # Never a password, in any line.
    assert all(PASSWORD not in line for line in server.log_lines)


def test_metrics_are_off_by_default(live_server):
    server = live_server()
    status, _ = http_json(server.url, "GET", "/metrics")
    assert status == 404


def test_metrics_count_requests_by_route_and_status_with_a_latency_histogram(live_server):
    import urllib.request

    server = live_server(env={"METRICS": "true"})
    for _ in range(3):
        http_json(server.url, "GET", "/api/messages")
    http_json(server.url, "GET", "/api/messages/999")
    with urllib.request.urlopen(server.url + "/metrics", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    assert 'msgapi_requests_total{method="GET",route="/api/messages",status="200"} 3' in text
    assert 'msgapi_requests_total{method="GET",route="/api/messages/{id}",status="404"} 1' in text
    assert 'msgapi_request_duration_seconds_count{route="/api/messages"} 3' in text
    assert 'msgapi_request_duration_seconds_bucket{route="/api/messages",le="+Inf"} 3' in text
    assert re.search(r"msgapi_db_pool_connections\{state=\"in_use\"\} \d+", text)
