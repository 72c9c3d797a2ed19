"""The README's examples, executed against a live server, so the README stays true.

Every ``sh`` block that talks to http://127.0.0.1:8000 is run, in order, in one bash
session, with ``curl`` wrapped to fail on any HTTP error; the test also checks that
every curl line in those blocks really ran. The ``python`` walk-through runs too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
README_BASE = "http://127.0.0.1:8000"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(README) if lang == language and README_BASE in body]


def _python_on_path(tmp_path: Path) -> str:
    """A PATH where ``python`` is this interpreter, as the README's commands assume.

    A wrapper that ``exec``s ``sys.executable``, not a symlink to it: a symlinked
    virtual-environment interpreter outside the environment's ``bin/`` finds no
    ``pyvenv.cfg`` and runs as the base interpreter, without msgapi's packages.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python", "python3"):
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n', encoding="utf-8")
        wrapper.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def test_the_set_up_activates_the_virtual_environment_on_linux_and_windows():
    set_up = README.split("\n## Set up\n", 1)[1].split("\n## ", 1)[0]
    before_installing = set_up[: set_up.index("pip install")]
    for activation in ("source .venv/bin/activate", ".venv\\Scripts\\activate"):
        assert activation in before_installing, activation


def test_the_readme_has_curl_examples_for_every_endpoint():
    script = "\n".join(_blocks("sh"))
    for path in (
        "/api/auth/register/",
        "/api/auth/token/",
        "/api/auth/token/refresh/",
        "/api/auth/token/verify/",
        "/api/auth/token/blacklist/",
        "/api/auth/me",
        "/api/auth/password/",
        "/api/users/1",
        "/api/messages",
        "/api/messages/1",
        "/healthz",
    ):
        assert f"{README_BASE}{path}" in script, path
    for method in ("PUT", "PATCH", "DELETE"):
        assert f"-X {method}" in script
    assert "curl -I" in script


def test_every_curl_example_in_the_readme_works(live_server, tmp_path):
    if shutil.which("curl") is None or shutil.which("bash") is None:
        pytest.fail("the README examples need curl and bash")
    server = live_server()
    blocks = _blocks("sh")
    expected_calls = sum(len(re.findall(r"(?<![\w-])curl ", block)) for block in blocks)
    log = tmp_path / "curl.log"
    script = "\n".join(
        [
            "set -euo pipefail",
            # Any HTTP error fails the walk-through; every call is counted.
            f'curl() {{ printf "%s\\n" "$*" >> "{log}"; command curl --fail-with-body -sS "$@"; }}',
            *(block.replace(README_BASE, server.url) for block in blocks),
        ]
    )
    result = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        env={**server.env, "PATH": _python_on_path(tmp_path)},
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(log.read_text().splitlines()) == expected_calls
    # What curl's exit status cannot show: the retried create made no second message, and the
    # DELETE with an out-of-date ETag was refused (the message is still there, as edited).
    carols = json.loads(urllib.request.urlopen(f"{server.url}/api/messages?author=carol", timeout=10).read())
    assert [message["content"] for message in carols] == ["Edited once"]


def test_the_python_walk_through_in_the_readme_works(live_server, tmp_path):
    (walk_through,) = _blocks("python")
    server = live_server()
    script = tmp_path / "walk.py"
    script.write_text(walk_through.replace(README_BASE, server.url), encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "walk-through ok"
