"""Benchmark msgapi as deployed: ``run.py`` under Waitress, driven over loopback from separate processes.

    python bench/run.py [--pg] [--json FILE] [--duration SECONDS] [--smoke] [--growth] [--profile DIR]

See bench/README.md for what is measured and what each column means.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import dbbench  # noqa: E402
from front import NginxFront  # noqa: E402
from loadgen import Generator, Load, percentile, run_process_groups, wrk_path  # noqa: E402

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
SEED_MESSAGES = 1000
PAGE_LIMIT = 100
GROWTH_SIZES = (1_000, 100_000, 1_000_000)
# Without ?limit support the list returns every row; past this many we do not ask for it.
UNLIMITED_LIST_MAX_ROWS = 100_000
USERNAME = "bench"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Processes: the real server and the ceiling app


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
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()


def request(
    host: str, port: int, method: str, path: str, body: object = None, headers: dict | None = None, timeout: float = 60
) -> tuple[int, dict, bytes]:
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


# ---------------------------------------------------------------------------------------------
# Databases


class Database:
    """A fresh SQLite file in the temp dir, or a fresh PostgreSQL database created and dropped here."""

    def __init__(self, pg: bool, pg_url: str, tmpdir: Path) -> None:
        self.pg = pg
        self.admin_url = pg_url
        if pg:
            self.name = f"msgapi_bench_{secrets.token_hex(4)}"
            parts = urlsplit(pg_url)
            self.url = urlunsplit(parts._replace(path="/" + self.name))
            self.db: dbbench.DB = ("pg", self.url)
        else:
            self.path = tmpdir / "bench.sqlite3"
            self.url = f"sqlite:///{self.path}"
            self.db = ("sqlite", str(self.path))

    @property
    def label(self) -> str:
        return f"PostgreSQL ({self.name})" if self.pg else f"SQLite ({self.path})"

    def create(self) -> None:
        if self.pg:
            self._admin(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        if self.pg:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        import psycopg2

        conn = psycopg2.connect(self.admin_url)
        try:
            conn.autocommit = True
            conn.cursor().execute(statement)
        finally:
            conn.close()

    def version(self) -> str:
        if self.pg:
            return dbbench.query(self.db, "SHOW server_version")[0][0]
        import sqlite3

        return sqlite3.sqlite_version


# ---------------------------------------------------------------------------------------------
# Measurements


def summarize_db(parts: list[dict], conns: int, which: str) -> dict:
    lat = sorted(x for part in parts for x in part["lat"])
    elapsed = max(part["elapsed"] for part in parts)
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    return {
        "ids": which,
        "connections": conns,
        "statements": len(lat),
        "errors": sum(part["errors"] for part in parts),
        "rps": len(lat) / elapsed if elapsed else 0.0,
        "p50_ms": p50 * 1000 if p50 is not None else None,
        "p99_ms": p99 * 1000 if p99 is not None else None,
    }


def measure_db_ceiling(db: dbbench.DB, ids: tuple[int, int], conns: int, duration: float, which: str) -> dict:
    seed = secrets.randbelow(1 << 30)
    group = [(dbbench.view_worker, (db, ids, duration, seed + i)) for i in range(conns)]
    parts = run_process_groups([group], duration + 120)[0]
    return summarize_db(parts, conns, which)


def ratio(value: float | None, ceiling: float | None) -> float | None:
    if not value or not ceiling:
        return None
    return value / ceiling


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmpdir = Path(tempfile.mkdtemp(prefix="msgapi-bench-"))
        self.database = Database(args.pg, args.pg_url, self.tmpdir)
        self.root = Path(args.server_root).resolve()
        self.server: Server | None = None  # the first msgapi process: set-up requests go to it
        self.servers: list[Server] = []  # every msgapi process (--processes)
        self.front: NginxFront | None = None
        # One key for every process of the run: a token from one must be good at the others.
        self.secret_key = secrets.token_urlsafe(48)  # 64 characters, new every run
        self.gen: Generator | None = None
        self.result: dict = {}

    # -- setup ------------------------------------------------------------------------------

    def server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("THREADS", "DATABASE_URL", "SECRET_KEY")}
        env.update(
            DATABASE_URL=self.database.url,
            SECRET_KEY=self.secret_key,
            PASSWORD_HASH_ITERATIONS=str(self.args.hash_iterations),
            AUTH_RATE_LIMIT="off",
            METRICS="true",  # the view statements' count (group commit) is read from /metrics
            WRITE_RATE_LIMIT="off",
            PYTHONUNBUFFERED="1",
        )
        env["PYTHONPATH"] = str(self.root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    def load(
        self,
        name: str,
        method: str,
        path: str,
        c: int,
        *,
        ids: tuple[int, int] | None = None,
        body: object = None,
        auth: bool = False,
        duration: float | None = None,
    ) -> Load:
        headers = []
        if body is not None:
            headers.append(("Content-Type", "application/json"))
        if auth:
            headers.append(("Authorization", f"Bearer {self.access}"))
        return Load(
            name=name,
            method=method,
            path=path,
            concurrency=c,
            duration=duration if duration is not None else self.args.duration,
            id_range=ids,
            body=json.dumps(body).encode() if body is not None else None,
            headers=tuple(headers),
        )

    def run(self) -> dict:
        args = self.args
        conc = args.concurrency
        self.result = {
            "meta": {
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "database": "postgresql" if args.pg else "sqlite",
                "duration_s": args.duration,
                "concurrency": conc,
                "server_threads": args.threads,
                "processes": args.processes,
                "password_hash_iterations": args.hash_iterations,
                "smoke": args.smoke,
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "server_root": str(self.root),
                "code": code_fingerprint(self.root),
                # Other work on the machine skews every number: note how busy it was.
                "loadavg_start": _loadavg(),
            },
        }
        try:
            self.database.create()
            self.result["meta"]["database_version"] = self.database.version() if args.pg else None
            self.gen = Generator(args.generator, "127.0.0.1", 0)
            self.result["meta"]["generator"] = self.gen.kind
            self.result["meta"]["generator_version"] = self._generator_version()
            log(f"load generator: {self.gen.kind} ({self.result['meta']['generator_version']})")
            self.measure_app_ceilings(conc)
            self.start_server()
            self.seed()
            if not args.pg:
                self.result["meta"]["database_version"] = self.database.version()
            self.measure_db_ceilings()
            self.measure_scenarios(conc)
            self.measure_storm()
            self.result["rss_kb_after_scenarios"] = self.rss_kb()
            if args.profile:
                self.profile(max(conc))
            if args.growth:
                self.measure_growth()
                self.result["rss_kb_after_growth"] = self.rss_kb()
            self.result["server_log_problems"] = self.server.problems()[:20]
            self.result["server_log_problem_count"] = len(self.server.problems())
            self.result["waitress_queue_warnings"] = self.server.queue_warnings()
        finally:
            if self.front:
                self.front.stop()
            for server in self.servers:
                server.stop()
            if self.gen:
                self.gen.close()
            try:
                self.database.drop()
            finally:
                if args.keep:
                    log(f"kept {self.tmpdir}")
                else:
                    shutil.rmtree(self.tmpdir, ignore_errors=True)
        return self.result

    def _generator_version(self) -> str:
        if self.gen.kind != "wrk":
            return f"python {platform.python_version()} http.client, multiprocessing"
        out = subprocess.run([wrk_path(), "--version"], capture_output=True, text=True).stdout
        return out.split(" Copyright")[0].strip() or "wrk"

    def measure_app_ceilings(self, conc: list[int]) -> None:
        server = Server(
            "ceiling app",
            [sys.executable, str(HERE / "ceiling_app.py"), "--port", "0", "--threads", str(self.args.threads)],
            self.root,
            self.server_env(),
            self.tmpdir / "ceiling.log",
        )
        server.start()
        try:
            self.gen.retarget(server.host, server.port)
            server.wait_for_200("/item")
            ceilings = {"item": {}, "list": {}}
            for c in conc:
                for key in ("item", "list"):
                    label = "(a)" if key == "item" else "(a')"
                    log(f"ceiling {label} bare Falcon /{key}, c={c}")
                    ceilings[key][c] = self.gen.run(self.load(f"ceiling-{key}", "GET", f"/{key}", c))[0]
            self.result["app_ceiling"] = ceilings
        finally:
            server.stop()

    def start_server(self) -> None:
        for number in range(self.args.processes):
            server = Server(
                "msgapi" if number == 0 else f"msgapi #{number + 1}",
                [sys.executable, "run.py", "--host", "127.0.0.1", "--port", "0", "--threads", str(self.args.threads)],
                self.root,
                self.server_env(),
                self.tmpdir / f"msgapi-{number + 1}.log",
            )
            log(f"starting {server.name} on {self.database.label}")
            server.start()
            self.servers.append(server)
        self.server = self.servers[0]
        startup = self.server.wait_for_200("/api/messages?limit=1")
        for server in self.servers[1:]:
            server.wait_for_200("/api/messages?limit=1")
        if self.args.processes > 1:
            self.front = NginxFront([(s.host, s.port) for s in self.servers], self.tmpdir / "nginx")
            self.gen.retarget(self.front.host, self.front.port)
            log(f"nginx on {self.front.host}:{self.front.port} in front of {self.args.processes} processes")
        else:
            self.gen.retarget(self.server.host, self.server.port)
        self.result["server_url"] = self.server.url
        self.result["startup_s"] = startup
        self.result["rss_kb_idle"] = self.server.rss_kb()
        log(f"msgapi answered 200 {startup:.2f}s after spawn at {self.server.url}")

    def rss_kb(self) -> int | None:
        """Resident memory of every msgapi process together."""
        sizes = [server.rss_kb() for server in self.servers]
        return None if None in sizes else sum(sizes)

    def settle(self) -> float:
        return sum(server.settle() for server in self.servers)

    def api(self, method: str, path: str, body: object = None, auth: bool = False) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.access}"} if auth else None
        status, _, data = request(self.server.host, self.server.port, method, path, body, headers)
        return status, data

    def seed(self) -> None:
        self.password = secrets.token_urlsafe(12) + "-pw"
        self.access = ""
        status, data = self.api("POST", "/api/auth/register/", {"username": USERNAME, "password": self.password})
        if status != 201:
            raise RuntimeError(f"register answered {status}: {data[:300]!r}")
        status, data = self.api("POST", "/api/auth/token/", {"username": USERNAME, "password": self.password})
        if status != 200:
            raise RuntimeError(f"token answered {status}: {data[:300]!r}")
        self.access = json.loads(data)["access"]
        db = self.database.db
        self.author_id = dbbench.user_id(db, USERNAME)
        self.epoch = dbbench.seed_epoch()
        seconds = dbbench.seed_messages(db, SEED_MESSAGES, self.author_id, 1, self.epoch)
        self.seeded = SEED_MESSAGES
        lo, hi, n = dbbench.id_range(db)
        self.ids = (lo, hi)
        self.hot_id = lo + (hi - lo) // 2
        status, data = self.api("GET", f"/api/messages?limit={PAGE_LIMIT}")
        if status != 200:
            raise RuntimeError(f"list answered {status}: {data[:300]!r}")
        self.page_size = len(json.loads(data))
        self.page_limited = self.page_size <= PAGE_LIMIT
        self.result["seed"] = {"messages": n, "ids": [lo, hi], "seconds": seconds, "hot_id": self.hot_id}
        self.result["list_page_size"] = self.page_size
        self.result["list_limit_supported"] = self.page_limited
        log(f"seeded {n} messages (ids {lo}..{hi}) in {seconds:.2f}s; ?limit={PAGE_LIMIT} gave {self.page_size} rows")

    def measure_db_ceilings(self) -> None:
        which = [("hot", (self.hot_id, self.hot_id))]
        if not self.args.smoke:
            which.append(("random", self.ids))
        out: dict = {}
        duration = self.args.duration
        for name, ids in which:
            for conns in (1, 8):
                log(f"ceiling (b) {VIEW_LABEL} {name} id, {conns} connection(s)")
                out.setdefault(name, {})[conns] = measure_db_ceiling(self.database.db, ids, conns, duration, name)
        self.result["db_ceiling"] = out

    # -- scenarios --------------------------------------------------------------------------

    def scenario_loads(self, c: int) -> list[tuple[Load, dict]]:
        lo, hi = self.ids
        all_ = [
            (
                self.load("get_hot", "GET", f"/api/messages/{self.hot_id}", c),
                {"ceiling": "item", "db": "hot", "views": True},
            ),
            (
                self.load("get_random", "GET", "/api/messages/{id}", c, ids=(lo, hi)),
                {"ceiling": "item", "db": "random", "views": True},
            ),
            (self.load("list", "GET", f"/api/messages?limit={PAGE_LIMIT}", c), {"ceiling": "list"}),
            (
                self.load(
                    "update", "PUT", "/api/messages/{id}", c, ids=(lo, hi), body={"content": "bench update"}, auth=True
                ),
                {"ceiling": "item"},
            ),
            (
                self.load("create", "POST", "/api/messages", c, body={"content": "bench message"}, auth=True),
                {"ceiling": "item", "cleanup": True},
            ),
            (
                self.load(
                    "login", "POST", "/api/auth/token/", c, body={"username": USERNAME, "password": self.password}
                ),
                {},
            ),
        ]
        if self.args.smoke:
            all_ = [x for x in all_ if x[0].name in ("get_hot", "list", "create", "login")]
        return all_

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

    def run_measured(self, load: Load, info: dict) -> dict:
        db = self.database.db
        before = dbbench.views_sum(db) if info.get("views") else None  # the last measurement settled
        statements_before = self.view_statements() if info.get("views") else None
        started = time.monotonic()
        res = self.gen.run(load)[0]
        # Requests the generator gave up on at the bell still run on the server: wait them out.
        res["drain_s"] = self.settle()
        if info.get("views"):
            delta = dbbench.views_sum(db) - before
            res["views_delta"] = delta
            res["lost_views"] = max(0, res["status_200"] - delta)
            res["uncounted_200s"] = max(0, delta - res["status_200"])
            statements_after = self.view_statements()
            if statements_before is not None and statements_after is not None and statements_after > statements_before:
                statements = statements_after - statements_before
                res["view_statements"] = statements
                res["view_statements_per_s"] = statements / (time.monotonic() - started)
                res["views_per_statement"] = delta / statements
        if info.get("cleanup"):
            res["rows_created"] = dbbench.delete_above(db, self.ids[1])
        return res

    def measure_scenarios(self, conc: list[int]) -> None:
        rows = []
        for c in conc:
            for load, info in self.scenario_loads(c):
                log(f"scenario {load.name}, c={c}")
                res = self.run_measured(load, info)
                res.update(scenario=load.name, concurrency=c, rss_kb=self.rss_kb())
                self.add_ratios(res, info, c)
                rows.append(res)
        self.result["scenarios"] = rows

    def add_ratios(self, res: dict, info: dict, c: int) -> None:
        key = info.get("ceiling")
        if key:
            app = self.result["app_ceiling"][key].get(c, {}).get("rps")
            res["ceiling"] = "a" if key == "item" else "a'"
            res["ceiling_rps"] = app
            res["ratio"] = ratio(res["rps"], app)
            which = info.get("db")
            if which and which in self.result["db_ceiling"]:
                conns = 1 if c == 1 else 8
                db_rps = self.result["db_ceiling"][which][conns]["rps"]
                res["db_ceiling_rps"] = db_rps
                res["min_ceiling_rps"] = min(x for x in (app, db_rps) if x)
                res["ratio_min"] = ratio(res["rps"], res["min_ceiling_rps"])

    def measure_storm(self) -> None:
        log("login storm: 8 login clients + 1 GET-item reader")
        # At least 3 s: a login takes a good fraction of a second, and requests still in flight
        # when wrk's window closes are not counted.
        duration = max(2.0 if self.args.smoke else 3.0, self.args.duration)
        db = self.database.db
        self.settle()
        before = dbbench.views_sum(db)
        login, reader = self.gen.run(
            self.load(
                "storm-login",
                "POST",
                "/api/auth/token/",
                8,
                body={"username": USERNAME, "password": self.password},
                duration=duration,
            ),
            self.load("storm-reader", "GET", f"/api/messages/{self.hot_id}", 1, duration=duration),
        )
        drain = self.settle()
        delta = dbbench.views_sum(db) - before
        reader.update(
            drain_s=drain,
            views_delta=delta,
            lost_views=max(0, reader["status_200"] - delta),
            uncounted_200s=max(0, delta - reader["status_200"]),
        )
        base = next((r for r in self.result["scenarios"] if r["scenario"] == "get_hot" and r["concurrency"] == 1), None)
        self.result["storm"] = {
            "login": login,
            "reader": reader,
            "reader_alone": {k: base[k] for k in ("rps", "p50_ms", "p99_ms")} if base else None,
        }

    # -- profile ----------------------------------------------------------------------------

    def profile(self, c: int) -> None:
        pyspy = shutil.which("py-spy")
        if not pyspy:
            log("--profile: py-spy is not installed (pip install py-spy); skipped")
            self.result["profile"] = {"error": "py-spy not installed"}
            return
        outdir = Path(self.args.profile)
        outdir.mkdir(parents=True, exist_ok=True)
        duration = max(5, round(self.args.duration))
        profiles = {}
        for mode, extra in (("all", []), ("gil", ["--gil"])):
            raw = outdir / f"profile-{self.result['meta']['database']}-{mode}.txt"
            log(f"profiling hot GET item at c={c} with py-spy ({mode} threads) -> {raw}")
            cmd = [
                pyspy,
                "record",
                "--pid",
                str(self.server.proc.pid),
                "--duration",
                str(duration - 1),
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(raw),
                *extra,
            ]
            self.settle()
            spy = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(0.5)
            load_res = self.gen.run(
                self.load("profile-get_hot", "GET", f"/api/messages/{self.hot_id}", c, duration=duration)
            )[0]
            out, _ = spy.communicate(timeout=60)
            if spy.returncode != 0 or not raw.exists():
                profiles[mode] = {"error": out.strip()[-500:]}
                continue
            profiles[mode] = {"file": str(raw), "rps_while_profiling": load_res["rps"], **summarize_profile(raw)}
        self.result["profile"] = profiles

    # -- growth -----------------------------------------------------------------------------

    def measure_growth(self) -> None:
        db = self.database.db
        duration = self.args.growth_duration
        steps = []
        lo, hi, count = dbbench.id_range(db)
        for size in GROWTH_SIZES:
            seed_s = 0.0
            if count < size:
                log(f"growth: seeding {size - count} messages to reach {size}")
                seed_s = dbbench.seed_messages(db, size - count, self.author_id, self.seeded + 1, self.epoch)
                self.seeded += size - count
                lo, hi, count = dbbench.id_range(db)
            step: dict = {"messages": count, "seed_seconds": seed_s}
            log(f"growth at {count} messages: GET item (random ids), 1 client")
            step["get_item"] = self._run_growth(
                self.load("growth-get", "GET", "/api/messages/{id}", 1, ids=(lo, hi), duration=duration)
            )
            if self.page_limited or count <= UNLIMITED_LIST_MAX_ROWS:
                log(f"growth at {count} messages: list page, 1 client")
                step["list"] = self._run_growth(
                    self.load("growth-list", "GET", f"/api/messages?limit={PAGE_LIMIT}", 1, duration=duration)
                )
            else:
                step["list"] = {"skipped": f"?limit is ignored: the list would return all {count} rows"}
            steps.append(step)
        first, last = steps[0], steps[-1]
        ratios = {}
        for key in ("get_item", "list"):
            a, b = first.get(key, {}), last.get(key, {})
            ratios[key] = {m: ratio(b.get(m), a.get(m)) for m in ("p50_ms", "p99_ms")}
        self.result["growth"] = {"steps": steps, "ratio_last_to_first": ratios}

    def _run_growth(self, load: Load) -> dict:
        self.settle()
        res = self.gen.run(load)[0]
        if res["requests"] == 0 and self.gen.kind == "wrk":
            # Requests slower than wrk's whole window complete nothing; the built-in client finishes them.
            res = self.gen.run(load, kind="builtin")[0]
            res["note"] = "built-in client: no request finished within wrk's window"
        return res


VIEW_LABEL = "UPDATE…RETURNING"


def summarize_profile(raw: Path, top: int = 10) -> dict:
    """Top functions of a py-spy ``--format raw`` (collapsed stacks) file, by own and by total samples."""
    own: collections.Counter = collections.Counter()
    total: collections.Counter = collections.Counter()
    by_file: collections.Counter = collections.Counter()
    samples = idle = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame_name(f) for f in stack.split(";")]
        if (
            len(frames) >= 2
            and frames[-1].startswith("Condition.wait ")
            and frames[-2].startswith("ThreadedTaskDispatcher.handler_thread ")
        ):
            idle += n  # a Waitress worker waiting for a task: py-spy does not always see it as idle
            continue
        samples += n
        own[frames[-1]] += n
        by_file[frames[-1].rpartition(" (")[2].rstrip(")")] += n
        for name in set(frames):
            total[name] += n
    pct = (lambda n: 100.0 * n / samples) if samples else (lambda n: 0.0)
    return {
        "samples": samples,
        "idle_worker_samples_dropped": idle,
        "top_own": [{"function": f, "pct": pct(n)} for f, n in own.most_common(top)],
        "top_files": [{"file": f, "pct": pct(n)} for f, n in by_file.most_common(top)],
        "top_total": [
            {"function": f, "pct": pct(n)}
            for f, n in total.most_common()
            if not re.match(r"(Thread\.(run|_bootstrap|_bootstrap_inner)|ThreadedTaskDispatcher\.handler_thread) ", f)
        ][:top],
    }


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py)``; keeps the package for the service's own code."""
    match = re.match(r"(.*) \((.*?):\d+\)$", frame.strip())
    if not match:
        return frame.strip()
    func, path = match.groups()
    parts = Path(path).parts
    short = "/".join(parts[parts.index("msgapi") :]) if "msgapi" in parts else "/".join(parts[-2:])
    return f"{func} ({short})"


# ---------------------------------------------------------------------------------------------
# Output


def code_fingerprint(root: Path) -> dict:
    """Which code was measured: git HEAD, whether msgapi/ has changes on top, and a hash of its files."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((root / "msgapi").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    info = {"msgapi_sha256": digest.hexdigest()[:16]}
    try:
        git = ["git", "-C", str(root)]
        info["git_head"] = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            [*git, "status", "--porcelain", "--", "msgapi", "run.py"], capture_output=True, text=True, check=True
        ).stdout
        info["msgapi_modified"] = bool(status.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def fmt(value: object, spec: str = ".0f", none: str = "-") -> str:
    if value is None:
        return none
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def mib(kb: int | None) -> str:
    return "n/a" if kb is None else f"{kb / 1024:.0f} MiB"


def render(result: dict) -> str:
    meta = result["meta"]
    out = []
    db_name = "PostgreSQL" if meta["database"] == "postgresql" else "SQLite"
    out.append(
        f"msgapi benchmark: {db_name} {meta.get('database_version') or ''}, generator {meta['generator']} "
        f"({meta['generator_version']}), {meta['server_threads']} server threads"
        f"{' x ' + str(meta['processes']) + ' processes behind nginx' if meta.get('processes', 1) > 1 else ''}, "
        f"{meta['duration_s']:g}s per run, "
        f"{meta['cpus']} CPUs, PBKDF2 {meta['password_hash_iterations']} iterations"
    )
    out.append(
        f"startup (spawn -> first 200): {result['startup_s']:.2f}s   RSS idle {mib(result.get('rss_kb_idle'))}, "
        f"after scenarios {mib(result.get('rss_kb_after_scenarios'))}"
        + (f", after growth {mib(result['rss_kb_after_growth'])}" if "rss_kb_after_growth" in result else "")
    )
    code = meta.get("code", {})
    out.append(
        f"code: git {code.get('git_head', '?')}"
        + (" + uncommitted changes in msgapi/" if code.get("msgapi_modified") else "")
        + f", msgapi/ sha256 {code.get('msgapi_sha256')}"
    )
    page = result["list_page_size"]
    out.append(
        f"list page: GET /api/messages?limit={PAGE_LIMIT} returned {page} rows"
        + ("" if result["list_limit_supported"] else " (the server ignores ?limit: every row)")
    )
    out.append("")
    out.append("Ceilings")
    out.append(f"  {'ceiling':<44}{'c':>4}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for key, label in (
        ("item", "(a)  bare Falcon+Waitress, one object"),
        ("list", "(a') bare Falcon+Waitress, 100 objects"),
    ):
        for c, r in result["app_ceiling"][key].items():
            out.append(
                f"  {label:<44}{c:>4}{fmt(r['rps']):>9}{fmt(r['p50_ms'], '.2f'):>9}"
                f"{fmt(r['p99_ms'], '.2f'):>9}{r['errors']:>8}"
            )
    for which, by_conns in result["db_ceiling"].items():
        for conns, r in by_conns.items():
            label = f"(b)  {VIEW_LABEL}, {which} id, {conns} conn"
            out.append(
                f"  {label:<44}{conns:>4}{fmt(r['rps']):>9}{fmt(r['p50_ms'], '.2f'):>9}"
                f"{fmt(r['p99_ms'], '.2f'):>9}{r['errors']:>8}"
            )
    out.append("")
    out.append("Scenarios")
    out.append(
        f"  {'scenario':<11}{'c':>3}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>7}"
        f"{'vs ceiling':>15}{'vs min(a,b)':>13}  notes"
    )
    for r in result["scenarios"]:
        vs = f"{r['ratio']:.2f} of {r['ceiling']}" if r.get("ratio") is not None else "-"
        vs_min = f"{r['ratio_min']:.2f}" if r.get("ratio_min") is not None else "-"
        notes = []
        if "views_delta" in r:
            notes.append(f"views +{r['views_delta']} for {r['status_200']} 200s, lost {r['lost_views']}")
            if r.get("view_statements"):
                notes.append(
                    f"{fmt(r['view_statements_per_s'])} view statements/s, "
                    f"{r['views_per_statement']:.1f} views each"
                )
            if r["uncounted_200s"]:
                notes.append(f"{r['uncounted_200s']} in flight at the bell")
        if r["scenario"] == "list":
            notes.append(f"page {page} rows")
        if r.get("drain_s", 0) > 2:
            notes.append(f"server busy {r['drain_s']:.0f}s after the clients stopped")
        if "rows_created" in r:
            notes.append(f"{r['rows_created']} rows created")
        if r["errors"]:
            notes.append(
                f"status {r.get('status', {})}, socket errors {r['socket_errors']}"
                if r["generator"] == "builtin"
                else f"non-2xx {r['non_2xx']}, socket errors {r['socket_errors']}"
            )
        out.append(
            f"  {r['scenario']:<11}{r['concurrency']:>3}{fmt(r['rps']):>8}{fmt(r['p50_ms'], '.2f'):>9}"
            f"{fmt(r['p99_ms'], '.2f'):>9}{r['errors']:>7}{vs:>15}{vs_min:>13}  {'; '.join(notes)}"
        )
    storm = result.get("storm")
    if storm:
        out.append("")
        rd, lg, alone = storm["reader"], storm["login"], storm["reader_alone"]
        out.append(
            f"Login storm: 8 clients logging in ({fmt(lg['rps'], '.1f')} logins/s, p50 {fmt(lg['p50_ms'], '.0f')} ms, "
            f"errors {lg['errors']}) while 1 reader GETs an item: p50 {fmt(rd['p50_ms'], '.2f')} ms, "
            f"p99 {fmt(rd['p99_ms'], '.2f')} ms, {fmt(rd['rps'])} req/s, errors {rd['errors']}, "
            f"lost views {rd['lost_views']}"
        )
        if alone:
            out.append(
                f"  the same reader alone (get_hot c=1): p50 {fmt(alone['p50_ms'], '.2f')} ms, "
                f"p99 {fmt(alone['p99_ms'], '.2f')} ms, {fmt(alone['rps'])} req/s"
            )
    growth = result.get("growth")
    if growth:
        out.append("")
        out.append("Growth (1 client, random ids; list = one page)")
        out.append(
            f"  {'messages':>10}{'seed s':>8}{'GET p50':>9}{'GET p99':>9}{'GET r/s':>9}"
            f"{'list p50':>10}{'list p99':>10}{'list r/s':>10}"
        )
        for step in growth["steps"]:
            g, lst = step["get_item"], step["list"]
            if "skipped" in lst:
                list_cols = f"{'skipped':>10}{'':>10}{'':>10}"
            else:
                list_cols = (
                    f"{fmt(lst['p50_ms'], '.2f'):>10}{fmt(lst['p99_ms'], '.2f'):>10}{fmt(lst['rps'], '.1f'):>10}"
                )
            out.append(
                f"  {step['messages']:>10}{step['seed_seconds']:>8.1f}{fmt(g['p50_ms'], '.2f'):>9}"
                f"{fmt(g['p99_ms'], '.2f'):>9}{fmt(g['rps']):>9}{list_cols}"
            )
        rat = growth["ratio_last_to_first"]
        first, last = growth["steps"][0]["messages"], growth["steps"][-1]["messages"]
        out.append(
            f"  cost at {last} / cost at {first}: GET p50 x{fmt(rat['get_item']['p50_ms'], '.2f')}, "
            f"p99 x{fmt(rat['get_item']['p99_ms'], '.2f')}; list p50 x{fmt(rat['list']['p50_ms'], '.2f')}, "
            f"p99 x{fmt(rat['list']['p99_ms'], '.2f')}"
            + ("" if result["list_limit_supported"] else " (list skipped at sizes it would return in full)")
        )
    prof = result.get("profile")
    if prof:
        for mode, p in prof.items():
            out.append("")
            if "error" in p:
                out.append(f"Profile ({mode}): failed: {p['error']}")
                continue
            what = "all busy threads" if mode == "all" else "the thread holding the GIL only"
            out.append(f"Profile of hot GET item ({what}; {p['samples']} samples; {p['file']})")
            out.append(f"  {'own %':>6}  function")
            for row in p["top_own"]:
                out.append(f"  {row['pct']:>6.1f}  {row['function']}")
            out.append(f"  {'own %':>6}  by file")
            for row in p["top_files"]:
                out.append(f"  {row['pct']:>6.1f}  {row['file']}")
            out.append(f"  {'total %':>6}  function (including what it calls)")
            for row in p["top_total"]:
                out.append(f"  {row['pct']:>6.1f}  {row['function']}")
    if result.get("waitress_queue_warnings"):
        out.append("")
        out.append(
            f"Server log: {result['waitress_queue_warnings']} waitress 'Task queue depth' warnings "
            "(a request waited for a free thread)"
        )
    count = result.get("server_log_problem_count")
    if count:
        out.append("")
        out.append(f"Server log: {count} warning/error lines, e.g.:")
        out.extend("  " + line[:200] for line in result["server_log_problems"][:5])
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark msgapi under Waitress (see bench/README.md).")
    parser.add_argument("--pg", action="store_true", help="run on a fresh PostgreSQL database instead of SQLite")
    parser.add_argument(
        "--pg-url", default=DEFAULT_PG_URL, help=f"admin URL to create the database from ({DEFAULT_PG_URL})"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--duration", type=float, default=None, help="seconds per measurement (default 5; --smoke 1)")
    parser.add_argument("--smoke", action="store_true", help="quick check: 1 s, concurrency 1 and 4, fewer scenarios")
    parser.add_argument("--growth", action="store_true", help="also measure at 1k, 100k and 1M messages")
    parser.add_argument("--growth-duration", type=float, default=2.0, help="seconds per growth measurement (2)")
    parser.add_argument("--concurrency", default=None, help="comma-separated client counts (default 1,16; --smoke 1,4)")
    parser.add_argument(
        "--threads", type=int, default=16, help="server threads, also the ceiling app's (16, the server default)"
    )
    parser.add_argument("--hash-iterations", type=int, default=600_000, help="PASSWORD_HASH_ITERATIONS (600000)")
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "builtin"),
        default="auto",
        help="load generator: wrk if installed (auto), or force one",
    )
    parser.add_argument("--profile", metavar="DIR", help="also profile the server under hot GET load with py-spy")
    parser.add_argument("--server-root", default=str(HERE.parent), help="folder holding run.py (the repo root)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (database file, server logs)")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="msgapi processes; more than 1 puts nginx in front of them, as deploy/nginx.conf does (1)",
    )
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 1.0 if args.smoke else 5.0
    if args.concurrency is None:
        args.concurrency = "1,4" if args.smoke else "1,16"
    args.concurrency = [int(x) for x in str(args.concurrency).split(",") if x.strip()]
    if args.smoke and args.growth:
        log("--growth is skipped with --smoke")
        args.growth = False
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    result = Bench(args).run()
    result["meta"]["wall_seconds"] = time.perf_counter() - started
    result["meta"]["loadavg_end"] = _loadavg()
    print(render(result))
    print(
        f"\n(total {result['meta']['wall_seconds']:.0f}s; load average before {result['meta']['loadavg_start']}, "
        f"after {result['meta']['loadavg_end']})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
