"""The README's "Use it from…" client examples, written out so that CI runs them as printed.

``python readme_clients.py write OUTDIR`` writes the Python example (for the generated client) to
OUTDIR/readme_client.py and the TypeScript one to OUTDIR/readme_client.ts, each reading the
server's URL from MSGAPI_URL instead of the README's; ``python readme_clients.py register
BASE_URL`` registers the user they log in as (``.ci/tools`` then runs both against that server).
"""

from __future__ import annotations

import json
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
EXAMPLE_URL = '"http://localhost:8000"'
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
FROM_ENVIRONMENT = {
    "python": 'os.environ["MSGAPI_URL"]',
    "ts": "process.env.MSGAPI_URL!",
}


def example(language: str) -> str:
    """The one block of ``language`` in the "Use it from…" section that talks to the example URL."""
    section = README[README.index("\n## Use it from") : README.index("\n## ", README.index("\n## Use it from") + 1)]
    (block,) = [body for lang, body in BLOCK.findall(section) if lang == language and EXAMPLE_URL in body]
    return block.replace(EXAMPLE_URL, FROM_ENVIRONMENT[language])


def register(base_url: str, username: str, password: str) -> None:
    body = json.dumps({"username": username, "password": password}).encode()
    request = urllib.request.Request(
        f"{base_url}/api/auth/register/", body, {"Content-Type": "application/json"}, method="POST"
    )
    try:
        urllib.request.urlopen(request, timeout=30).close()
    except urllib.error.HTTPError as error:  # already registered by an earlier run on this database
        assert error.code == 400 and "username" in json.load(error), error


def credentials() -> tuple[str, str]:
    """The username and password both examples log in with."""
    (found,) = set(re.findall(r'username[=:] ?"(\w+)", password[=:] ?"([^"]+)"', example("python") + example("ts")))
    return found


def main(command: str, argument: str) -> None:
    if command == "register":
        register(argument, *credentials())
    else:
        assert command == "write", command
        (Path(argument) / "readme_client.py").write_text("import os\n" + example("python"), encoding="utf-8")
        (Path(argument) / "readme_client.ts").write_text(example("ts"), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:3])
