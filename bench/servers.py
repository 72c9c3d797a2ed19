"""The servers a run starts: the bare ceiling app, and msgapi as deployed (nginx in front of several processes)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from bench.front import NginxFront
from bench.progress import log
from bench.server_process import Server, request

CEILING_APP = Path(__file__).resolve().parent / "ceiling_app.py"
# Answers 200 once the service is up and its database is reachable.
READY_PATH = "/api/messages?limit=1"


def server_env(root: Path, database_url: str, secret_key: str, hash_iterations: int) -> dict[str, str]:
    """The environment of every server process of the run: the caller's, with the benchmark's settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("THREADS", "DATABASE_URL", "SECRET_KEY")}
    env.update(
        DATABASE_URL=database_url,
        SECRET_KEY=secret_key,
        PASSWORD_HASH_ITERATIONS=str(hash_iterations),
        AUTH_RATE_LIMIT="off",
        METRICS="true",  # the view statements' count (group commit) is read from /metrics
        WRITE_RATE_LIMIT="off",
        PYTHONUNBUFFERED="1",
    )
    env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def start_ceiling_app(root: Path, env: dict[str, str], threads: int, log_path: Path) -> Server:
    """The bare Falcon app under Waitress (``ceiling_app.py``), started; the caller stops it."""
    server = Server(
        "ceiling app",
        [sys.executable, str(CEILING_APP), "--port", "0", "--threads", str(threads)],
        root,
        env,
        log_path,
    )
    server.start()
    return server


class Service:
    """msgapi as deployed for the run: ``run.py`` processes sharing one database and one key.

    With more than one process, nginx spreads the load over them as deploy/nginx.conf does.
    Set-up requests, the profile and the log checks use the first process.
    """

    def __init__(self, root: Path, env: dict[str, str], tmpdir: Path) -> None:
        self.root, self.env, self.tmpdir = root, env, tmpdir
        self.servers: list[Server] = []
        self.front: NginxFront | None = None

    @property
    def first(self) -> Server:
        return self.servers[0]

    def start(self, processes: int, threads: int, database_label: str) -> float:
        """Start ``processes`` servers (and nginx for more than one); seconds from spawn to the first 200."""
        for number in range(processes):
            server = Server(
                "msgapi" if number == 0 else f"msgapi #{number + 1}",
                [sys.executable, "run.py", "--host", "127.0.0.1", "--port", "0", "--threads", str(threads)],
                self.root,
                self.env,
                self.tmpdir / f"msgapi-{number + 1}.log",
            )
            log(f"starting {server.name} on {database_label}")
            server.start()
            self.servers.append(server)
        startup = self.first.wait_for_200(READY_PATH)
        for server in self.servers[1:]:
            server.wait_for_200(READY_PATH)
        if processes > 1:
            self.front = NginxFront([(s.host, s.port) for s in self.servers], self.tmpdir / "nginx")
            log(f"nginx on {self.front.host}:{self.front.port} in front of {processes} processes")
        return startup

    @property
    def entry(self) -> tuple[str, int]:
        """Where the load goes: nginx when it is in front, else the one process."""
        if self.front:
            return self.front.host, self.front.port
        return self.first.host, self.first.port

    def rss_kb(self) -> int | None:
        """Resident memory of every msgapi process together."""
        sizes = [server.rss_kb() for server in self.servers]
        return None if None in sizes else sum(sizes)

    def settle(self) -> float:
        return sum(server.settle() for server in self.servers)

    def view_statements(self) -> int | None:
        """The processes' count of view statements so far (PostgreSQL batches views), from /metrics."""
        total = 0
        for server in self.servers:
            status, _, data = request(server.host, server.port, "GET", "/metrics")
            match = re.search(rb"^msgapi_view_statements_total (\d+)$", data, re.M) if status == 200 else None
            if match is None:
                return None
            total += int(match.group(1))
        return total

    def stop(self) -> None:
        if self.front:
            self.front.stop()
        for server in self.servers:
            server.stop()
