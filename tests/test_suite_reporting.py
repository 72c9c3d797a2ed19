"""The suite's own reporting: a run without PostgreSQL says so, loudly and last."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run_schema_tests(**env: str) -> subprocess.CompletedProcess:
    """tests/test_schema.py in a child pytest, without PostgreSQL (its PostgreSQL tests skip)."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("MSGAPI_TEST_")}
    child_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_schema.py"],
        cwd=ROOT,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_run_without_postgresql_ends_by_saying_it_did_not_run_and_how_to():
    result = _run_schema_tests()
    assert result.returncode == 0, result.stdout[-2000:]
    lines = result.stdout.rstrip().splitlines()
    [banner] = [n for n, line in enumerate(lines) if "PostgreSQL tests did NOT run" in line]
    # Counted, not assumed: the banner's count is every PostgreSQL test pytest skipped.
    counted = re.search(r"(\d+) PostgreSQL tests did NOT run", lines[banner])
    skipped = re.search(r"(\d+) skipped", lines[-1])
    assert lines[banner].startswith("!!!") and counted and skipped
    assert int(counted.group(1)) == int(skipped.group(1)) > 0
    assert any("MSGAPI_TEST_DATABASE_URL=postgresql://" in line for line in lines[banner:])
    # Last, after the list of skips; only pytest's one-line tally follows.
    assert not any(line.startswith("SKIPPED") for line in lines[banner:])


def test_a_run_that_requires_postgresql_fails_instead_and_prints_no_banner():
    result = _run_schema_tests(MSGAPI_TEST_REQUIRE_POSTGRES="1")
    assert result.returncode != 0
    assert "MSGAPI_TEST_REQUIRE_POSTGRES=1 but MSGAPI_TEST_DATABASE_URL is not set" in result.stdout
    assert "did NOT run" not in result.stdout
