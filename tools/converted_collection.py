"""Runs the collection openapi-to-postmanv2 converts openapi.yaml into, as a Postman user would.

``python converted_collection.py BASE_URL COLLECTION NEWMAN`` against a server on a fresh database
(``.ci/tools`` converts the spec with ``-O parametersResolution=Example`` and starts the server).
A user registers and logs in, then runs the collection with their token as ``bearerToken``; every
request is sent with the spec's examples and must succeed, except those whose example cannot: the
ones listed in REFUSED, which must be refused exactly as listed. A request that fails otherwise
means an example the server rejects (an email that breaks the spec's own pattern, say).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import yaml

SPEC = yaml.safe_load((Path(__file__).resolve().parent.parent / "openapi.yaml").read_text(encoding="utf-8"))
HTTP_METHODS = {"get", "head", "post", "put", "patch", "delete"}
STATIC_TOKEN = "the example token is a placeholder: a real one cannot be a static example"
REFUSED = {
    ("/api/auth/token/refresh/", "post"): (401, STATIC_TOKEN),
    ("/api/auth/token/verify/", "post"): (401, STATIC_TOKEN),
    ("/api/auth/token/blacklist/", "post"): (401, STATIC_TOKEN),
    ("/api/auth/password/", "post"): (400, "the example's current password is the example user's, not the token's"),
    ("/api/users/{id}", "get"): (403, "staff only, and the token is an ordinary user's"),
    ("/api/users/{id}", "head"): (403, "staff only, and the token is an ordinary user's"),
    ("/api/users/{id}", "patch"): (403, "staff only, and the token is an ordinary user's"),
}


def call(base_url: str, method: str, path: str, body: dict, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    request = urllib.request.Request(base_url + path, json.dumps(body).encode(), headers, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def prepare(base_url: str) -> str:
    """A user of the collection's own (not the examples' alice) who owns the example message id."""
    call(base_url, "POST", "/api/auth/register/", {"username": "postman-user", "password": "not-the-example-9"})
    token = call(base_url, "POST", "/api/auth/token/", {"username": "postman-user", "password": "not-the-example-9"})
    example_id = SPEC["components"]["parameters"]["MessageId"]["example"]
    for _ in range(example_id):
        message = call(base_url, "POST", "/api/messages", {"content": "for the converted collection"}, token["access"])
    assert message["id"] == example_id, f"the database is not fresh: the example id {example_id} is not ours"
    return token["access"]


def operation_of(execution: dict) -> tuple[str, str]:
    segments = execution["item"]["request"]["url"]["path"]
    path = "/" + "/".join("{id}" if segment == ":id" else segment for segment in segments)
    return path, execution["request"]["method"].lower()


def answered_as_expected(operation: tuple[str, str], code: int) -> bool:
    if operation in REFUSED:
        return code == REFUSED[operation][0]
    return 200 <= code < 300


def main(base_url: str, collection: str, newman: str) -> None:
    token = prepare(base_url)
    with tempfile.TemporaryDirectory() as scratch:
        report_file = Path(scratch) / "report.json"
        variables = ["--env-var", f"baseUrl={base_url}", "--env-var", f"bearerToken={token}"]
        subprocess.run(
            [newman, "run", collection, *variables, "--reporters", "json", "--reporter-json-export", str(report_file)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        executions = json.loads(report_file.read_text(encoding="utf-8"))["run"]["executions"]
    answered = {operation_of(execution): execution["response"]["code"] for execution in executions}
    documented = {(path, method) for path, item in SPEC["paths"].items() for method in item if method in HTTP_METHODS}
    assert len(executions) == len(answered), "an operation was converted into more than one request"
    assert set(answered) == documented, f"converted: {sorted(answered)}; documented: {sorted(documented)}"
    wrong = [
        f"{method.upper()} {path}: {code}, expected {REFUSED.get((path, method), ('2xx',))[0]}"
        for (path, method), code in sorted(answered.items())
        if not answered_as_expected((path, method), code)
    ]
    assert not wrong, "converted collection:\n" + "\n".join(wrong)
    succeeded = len(answered) - len(REFUSED)
    print(f"converted collection: {succeeded} of {len(answered)} requests succeed with the spec's examples")
    for (path, method), (code, reason) in REFUSED.items():
        print(f"  {method.upper()} {path}: {code} as expected ({reason})")


if __name__ == "__main__":
    main(*sys.argv[1:4])
