"""Load generators for the benchmark: ``wrk`` (when installed) or a built-in multi-process client.

Both take the same ``Load`` description and return the same result dict:
``requests``, ``ok`` (2xx), ``errors`` (non-2xx plus socket errors), ``rps``,
``p50_ms``, ``p99_ms``, ``elapsed`` and ``generator``.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import tempfile

from bench.builtin_client import builtin_plan, summarize_builtin
from bench.load import Load
from bench.parallel import run_process_groups
from bench.wrk import finish_wrk, start_wrk, wrk_path


class Generator:
    """One entry point for both: ``wrk`` when installed (``auto``), else the built-in client."""

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

    def version(self) -> str:
        """What generated the load, for the report: wrk's version line, or the built-in client."""
        if self.kind != "wrk":
            return f"python {platform.python_version()} http.client, multiprocessing"
        out = subprocess.run([wrk_path(), "--version"], capture_output=True, text=True).stdout
        return out.split(" Copyright")[0].strip() or "wrk"

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)
