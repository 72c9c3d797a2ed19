"""A server in a child process: started, waited for, watched (memory, CPU, idleness, its log), stopped."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import time
from pathlib import Path


def rss_kb(pid: int) -> int | None:
    """Resident memory of ``pid`` in KiB: /proc on Linux, psutil elsewhere, else None."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss // 1024
    except Exception:
        return None


class Server:
    """A child process that logs ``... serving on http://HOST:PORT/ ...`` once it listens."""

    def __init__(self, name: str, cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path) -> None:
        self.name, self.cmd, self.cwd, self.env, self.log_path = name, cmd, cwd, env, log_path
        self.proc: subprocess.Popen | None = None
        self.spawned_at = 0.0
        self.url = ""
        self.host = ""
        self.port = 0

    def start(self, timeout: float = 60) -> None:
        self._log = open(self.log_path, "wb")
        self.spawned_at = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"serving on (http://(\S+?):(\d+))/? with", self.log_text())
            if match:
                self.url, self.host, self.port = match.group(1), match.group(2), int(match.group(3))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.005)
        self.stop()
        raise RuntimeError(f"{self.name} did not start ({' '.join(self.cmd)}):\n{self.log_tail()}")

    def wait_for_200(self, path: str, timeout: float = 30) -> float:
        """Seconds from spawning the process to the first 200 on ``path``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status, _, _ = request(self.host, self.port, "GET", path, timeout=5)
                if status == 200:
                    return time.perf_counter() - self.spawned_at
            except OSError:
                pass
            time.sleep(0.005)
        raise RuntimeError(f"{self.name} never answered 200 on {path}:\n{self.log_tail()}")

    def rss_kb(self) -> int | None:
        return rss_kb(self.proc.pid) if self.proc else None

    def cpu_seconds(self) -> float | None:
        try:
            with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as handle:
                fields = handle.read().rpartition(")")[2].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def settle(self, quiet: float = 0.3, max_wait: float = 120) -> float:
        """Wait until the server is idle: almost no CPU for ``quiet`` s (Linux), else no new log line.

        When a load generator stops, Waitress still runs every request it had queued (a login
        backlog can take seconds); the next measurement must not share the CPU with it.
        Returns the seconds waited.
        """
        started = time.monotonic()
        size, cpu = self.log_path.stat().st_size, self.cpu_seconds()
        while time.monotonic() - started < max_wait:
            time.sleep(quiet)
            new_size, new_cpu = self.log_path.stat().st_size, self.cpu_seconds()
            if new_cpu is not None and cpu is not None:
                # The log is flushed periodically by the server, so only the CPU tells idleness reliably.
                if new_cpu - cpu <= 0.05 * quiet:
                    break
            elif new_size == size:
                break
            size, cpu = new_size, new_cpu
        return time.monotonic() - started

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def problems(self) -> list[str]:
        """Log lines at WARNING or worse, and traceback headers (the access log is INFO)."""
        return [
            line
            for line in self.log_text().splitlines()
            if (re.search(r" (WARNING|ERROR|CRITICAL) ", line) or line.startswith("Traceback"))
            and "Task queue depth" not in line
        ]

    def queue_warnings(self) -> int:
        """Waitress's "Task queue depth is N": a request waited because every thread was busy."""
        return self.log_text().count("Task queue depth")

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc, timeout=15)
        if getattr(self, "_log", None):
            self._log.close()


def request(
    host: str, port: int, method: str, path: str, body: object = None, headers: dict | None = None, timeout: float = 60
) -> tuple[int, dict, bytes]:
    """One request on a fresh connection (``body`` sent as JSON): status, headers and body."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        all_headers = dict(headers or {})
        if payload is not None:
            all_headers["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=all_headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it is still running after ``timeout`` seconds; reaped either way."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
