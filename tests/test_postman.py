"""The Postman collection keeps in step with openapi.yaml (CI runs it with Newman: .ci/tools)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from test_openapi import SPEC, operations, resolve

ROOT = Path(__file__).resolve().parent.parent
COLLECTION = json.loads((ROOT / "postman" / "msgapi.postman_collection.json").read_text(encoding="utf-8"))
ENVIRONMENT = json.loads((ROOT / "postman" / "msgapi.postman_environment.json").read_text(encoding="utf-8"))
VARIABLE = re.compile(r"^\{\{\w+\}\}$")


def requests(items: list[dict[str, Any]] = COLLECTION["item"]) -> list[dict[str, Any]]:
    """Every request of the collection, in run order (folders flattened)."""
    found = []
    for item in items:
        found += requests(item["item"]) if "item" in item else [item]
    return found


def operation_of(item: dict[str, Any]) -> tuple[str, str]:
    """(spec path, method) of a collection request: ``{{messageId}}`` in the path is ``{id}``."""
    url = item["request"]["url"]
    assert url["host"] == ["{{baseUrl}}"], item["name"]
    path = "/" + "/".join("{id}" if VARIABLE.match(segment) else segment for segment in url["path"])
    return path, item["request"]["method"].lower()


def test_every_operation_of_the_spec_has_a_request_and_every_request_is_an_operation():
    documented = {(path, method) for path, method, _ in operations()}
    in_collection = {operation_of(item) for item in requests()}
    assert documented - in_collection == set(), "operations without a request"
    assert in_collection - documented == set(), "requests for no documented operation"


def test_every_request_tests_its_status_and_the_status_is_documented():
    for item in requests():
        path, method = operation_of(item)
        scripts = ["\n".join(event["script"]["exec"]) for event in item["event"] if event["listen"] == "test"]
        statuses = {int(code) for script in scripts for code in re.findall(r"to\.have\.status\((\d{3})\)", script)}
        assert statuses, f"{item['name']}: no status assertion"
        documented = {int(code) for code in SPEC["paths"][path][method]["responses"]}
        assert statuses <= documented, f"{item['name']}: asserts undocumented {statuses - documented}"


def test_the_failure_cases_are_in_the_collection():
    statuses = {
        int(code)
        for item in requests()
        for event in item["event"]
        for code in re.findall(r"to\.have\.status\((\d{3})\)", "\n".join(event["script"]["exec"]))
    }
    assert {401, 403, 404, 429} <= statuses
    no_token = [item for item in requests() if item["request"].get("auth") == {"type": "noauth"}]
    assert any(
        operation_of(item) == ("/api/auth/me", "get") and "status(401)" in json.dumps(item["event"])
        for item in no_token
    ), "401 without a token"


def test_login_stores_the_tokens_and_requests_use_them():
    login = next(item for item in requests() if item["name"] == "Log in")
    script = "\n".join(login["event"][0]["script"]["exec"])
    assert 'pm.collectionVariables.set("access"' in script and 'pm.collectionVariables.set("refresh"' in script
    bearer = {"type": "bearer", "bearer": [{"key": "token", "value": "{{access}}", "type": "string"}]}
    assert COLLECTION["auth"] == bearer
    # Operations that need a token inherit the collection's Bearer auth, or name another token.
    for item in requests():
        path, method = operation_of(item)
        auth = item["request"].get("auth")
        if SPEC["paths"][path][method]["security"] and auth is not None:
            assert auth["type"] == "bearer" or "401" in json.dumps(item["event"]), item["name"]


def _properties(schema: dict[str, Any]) -> set[str]:
    schema = resolve(schema)
    names = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        names |= _properties(part)
    return names


def test_bodies_use_the_documented_media_types_and_fields():
    for item in requests():
        body = item["request"].get("body")
        if body is None:
            continue
        path, method = operation_of(item)
        content = resolve(SPEC["paths"][path][method]["requestBody"])["content"]
        if body["mode"] == "raw":
            media_type, fields = "application/json", set(json.loads(body["raw"]))
            assert {"key": "Content-Type", "value": media_type} in item["request"]["header"], item["name"]
        else:
            assert body["mode"] == "urlencoded", item["name"]
            media_type, fields = "application/x-www-form-urlencoded", {pair["key"] for pair in body["urlencoded"]}
        assert media_type in content, item["name"]
        assert fields <= _properties(content[media_type]["schema"]), item["name"]


def test_the_environment_names_the_base_url():
    values = {value["key"]: value["value"] for value in ENVIRONMENT["values"]}
    assert values == {"baseUrl": "http://127.0.0.1:8000"}
    # Every variable a request uses is the environment's or the collection's.
    known = set(values) | {variable["key"] for variable in COLLECTION["variable"]}
    used = set(re.findall(r"\{\{(\w+)\}\}", json.dumps(COLLECTION)))
    assert used <= known
