"""Property-based fuzzing of the whole API from openapi.yaml (schemathesis) against the real server.

Zero server errors, and every response must match its documented status,
content type, headers and schema. Bounded: a fixed number of examples per
operation, so CI stays fast; set MSGAPI_FUZZ_EXAMPLES to fuzz harder locally.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import http_json

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


def test_fuzzing_the_spec_finds_no_server_error_and_no_undocumented_answer(live_server, tmp_path):
    server = live_server()
    # A staff user, so that the staff-only operations are fuzzed past their 403.
    created = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "createuser", "fuzzer", "--staff"],
        input="fuzz-password-1\n",
        capture_output=True,
        text=True,
        env=server.env,
        cwd=ROOT,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    access = http_json(server.url, "POST", "/api/auth/token/", {"username": "fuzzer", "password": "fuzz-password-1"})[
        1
    ]["access"]
    assert http_json(server.url, "POST", "/api/messages", {"content": "something to read"}, access)[0] == 201

    examples = os.environ.get("MSGAPI_FUZZ_EXAMPLES", "120")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            str(ROOT / "openapi.yaml"),
            "--url",
            server.url,
            "--checks",
            CHECKS,
            "--max-examples",
            examples,
            "--phases",
            "examples,coverage,fuzzing",
            "--header",
            f"Authorization: Bearer {access}",
            "--request-timeout",
            "30",
            "--workers",
            "2",
            "--seed",
            os.environ.get("MSGAPI_FUZZ_SEED", "20261125"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "generated" in output and " 0 passed" not in output
