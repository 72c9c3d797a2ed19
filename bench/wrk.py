"""``wrk`` as the load generator: a Lua script per ``Load``, and its ``--latency`` output parsed."""

from __future__ import annotations

import math
import os
import random
import re
import shutil
import subprocess
from typing import Any

from bench.load import Load


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
