"""What a run measured and on what: the settings, the machine, the code and how busy the machine was."""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import subprocess
from pathlib import Path


def run_meta(args: argparse.Namespace, root: Path) -> dict:
    """The report's ``meta`` at the start of a run (the database and generator are added once known)."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "database": "postgresql" if args.pg else "sqlite",
        "duration_s": args.duration,
        "concurrency": args.concurrency,
        "server_threads": args.threads,
        "processes": args.processes,
        "password_hash_iterations": args.hash_iterations,
        "smoke": args.smoke,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "server_root": str(root),
        "code": code_fingerprint(root),
        # Other work on the machine skews every number: note how busy it was.
        "loadavg_start": loadavg(),
    }


def code_fingerprint(root: Path) -> dict:
    """Which code was measured: git HEAD, whether msgapi/ has changes on top, and a hash of its files."""
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


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None
