"""The suite's server starter: a bounded wait for readiness, the log on failure, the process always stopped."""

from __future__ import annotations

import os
import sys

import pytest
from conftest import ServerProcess


def python(code: str) -> ServerProcess:
    return ServerProcess([sys.executable, "-c", code], dict(os.environ), cwd=None)


def test_readiness_gives_the_url_and_the_log_up_to_the_serving_line_and_the_log_is_read_to_the_end():
    server = python(
        "import time\n"
        "print('starting', flush=True)\n"
        "print('msgapi serving on http://127.0.0.1:4321/ with 2 threads', flush=True)\n"
        "print('after', flush=True)\n"
        "time.sleep(600)\n"
    )
    try:
        url, log = server.wait_until_ready()
        assert url == "http://127.0.0.1:4321"
        assert log == ["starting\n", "msgapi serving on http://127.0.0.1:4321/ with 2 threads\n"]
    finally:
        server.stop()
    assert server.process.returncode is not None
    assert server.log_lines[-1] == "after\n"


def test_a_server_that_never_gets_ready_fails_within_the_bound_with_its_log_and_is_stopped():
    server = python("import time\nprint('still starting', flush=True)\ntime.sleep(600)\n")
    with pytest.raises(pytest.fail.Exception, match=r"not ready within 1\.0 s:\nstill starting"):
        server.wait_until_ready(timeout=1.0)
    assert server.process.returncode is not None


def test_a_server_that_exits_before_it_is_ready_fails_with_its_exit_status_and_log():
    server = python("print('cannot listen', flush=True)\nraise SystemExit(3)\n")
    with pytest.raises(pytest.fail.Exception, match=r"exited with 3:\ncannot listen"):
        server.wait_until_ready()
    server.stop()
