"""``--profile``: py-spy samples of the server under hot GET load, summarized by function and file."""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import time
from pathlib import Path

from bench.measure import Target
from bench.progress import log
from bench.scenarios import PROFILED


def profile(target: Target, clients: int, outdir: Path, database: str, duration: float) -> dict:
    """Two py-spy recordings of the first msgapi process: all busy threads, then the GIL holder only."""
    pyspy = shutil.which("py-spy")
    if not pyspy:
        log("--profile: py-spy is not installed (pip install py-spy); skipped")
        return {"error": "py-spy not installed"}
    outdir.mkdir(parents=True, exist_ok=True)
    seconds = max(5, round(duration))
    profiles = {}
    for mode, extra in (("all", []), ("gil", ["--gil"])):
        raw = outdir / f"profile-{database}-{mode}.txt"
        log(f"profiling hot GET item at c={clients} with py-spy ({mode} threads) -> {raw}")
        cmd = [
            pyspy,
            "record",
            "--pid",
            str(target.service.first.proc.pid),
            "--duration",
            str(seconds - 1),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(raw),
            *extra,
        ]
        target.service.settle()
        spy = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(0.5)
        load_res = target.gen.run(target.load(PROFILED, clients, duration=seconds))[0]
        out, _ = spy.communicate(timeout=60)
        if spy.returncode != 0 or not raw.exists():
            profiles[mode] = {"error": out.strip()[-500:]}
            continue
        profiles[mode] = {"file": str(raw), "rps_while_profiling": load_res["rps"], **summarize_profile(raw)}
    return profiles


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
