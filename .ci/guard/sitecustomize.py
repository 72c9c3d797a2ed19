"""CI guard: any Python process started during the test run must be the test environment's own.

CI puts this folder on PYTHONPATH for the test command only, and names the environment in
MSGAPI_CI_EXPECTED_PREFIX. A test that reaches another interpreter (``python`` from PATH, a
symlinked interpreter that lost its ``pyvenv.cfg``) would pass on a machine with msgapi's
packages installed globally and fail on a bare one; here it fails on every machine, loudly.
"""

import os
import sys

_expected = os.environ.get("MSGAPI_CI_EXPECTED_PREFIX")
if _expected and os.path.realpath(sys.prefix) != os.path.realpath(_expected):
    sys.stderr.write(
        f"CI guard: this Python ({sys.executable}, prefix {sys.prefix}) is not the test environment's "
        f"interpreter (prefix {_expected}); start Python with sys.executable, never a `python` found on PATH "
        "or a symlink to the interpreter\n"
    )
    sys.stderr.flush()
    os._exit(97)
