"""The OpenAPI document: valid, shipped identically, complete, and true to what the server answers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import falcon.inspect
import peewee
import webtest
import yaml
from conftest import PASSWORD, bearer, obtain_tokens, register
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from openapi_schema_validator import validate as validate_schema
from openapi_spec_validator import validate as validate_spec

from msgapi.app import create_app
from msgapi.config import Rate
from msgapi.store import Store, listing
from msgapi.store import schema as tables_schema
from msgapi.store.connection import database

ROOT = Path(__file__).resolve().parent.parent
SPEC_FILE = ROOT / "openapi.yaml"
PACKAGED_SPEC_FILE = ROOT / "msgapi" / "openapi.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_FILE.read_bytes())

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Served but deliberately not in the spec: the Swagger UI page, its script and its
# static assets are for browsers, not part of the API.
UNDOCUMENTED_ROUTES = {"/", "/docs/init.js", "/docs/assets/{name}"}
MESSAGE = "/api/messages/{id}"
MESSAGES = "/api/messages"
REGISTER = "/api/auth/register/"
TOKEN = "/api/auth/token/"
REFRESH = "/api/auth/token/refresh/"
VERIFY = "/api/auth/token/verify/"
BLACKLIST = "/api/auth/token/blacklist/"
ME = "/api/auth/me"
PASSWORD_CHANGE = "/api/auth/password/"
USER = "/api/users/{id}"
HEALTH = "/healthz"
# Request bodies are JSON or form-encoded, and not required: the server reads an absent
# body as an empty one (see test_an_absent_body_is_read_as_an_empty_one), and a required
# body with two media types breaks openapi-python-client's generated code. The exception,
# and why: is_active must be a JSON boolean, which no form-encoded value is, so that body
# is JSON only, and required.
JSON_ONLY_BODIES = {(USER, "patch")}


def _normalise(path: str) -> str:
    # The server strips trailing slashes, so "/api/auth/token/" and "/api/auth/token" are one route.
    return path.rstrip("/") or "/"


def resolve(node: Any) -> Any:
    """``node`` with every local ``$ref`` replaced by its target (the spec has no cycles)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = SPEC
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolve(target)
        return {key: resolve(value) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(value) for value in node]
    return node


def check_instance(instance: Any, schema: dict[str, Any]) -> None:
    validate_schema(instance, resolve(schema), cls=OAS30Validator, format_checker=oas30_format_checker)


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in SPEC["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def conforms(resp, path: str, method: str) -> None:
    """Assert that ``resp`` is a documented answer of the operation, headers and body included."""
    responses = SPEC["paths"][path][method]["responses"]
    status = str(resp.status_int)
    assert status in responses, f"{method.upper()} {path} answered undocumented {status}"
    response = resolve(responses[status])
    for name, header in response.get("headers", {}).items():
        value = resp.headers.get(name)
        if value is None:
            assert not header.get("required"), f"{status} lacks required header {name}"
            continue
        check_instance(int(value) if header["schema"]["type"] == "integer" else value, header["schema"])
    content = response.get("content")
    if not content or method == "head":
        assert resp.body == b""
        return
    assert resp.content_type in content, f"{status} answered {resp.content_type}, documented {list(content)}"
    if resp.content_type.endswith("json"):
        check_instance(json.loads(resp.body), content[resp.content_type]["schema"])


# --- The document itself (no database) ---------------------------------------------------------


def test_spec_is_valid_openapi_3_0():
    validate_spec(SPEC)
    assert SPEC["openapi"] == "3.0.3"
    assert SPEC["info"]["version"] == "1.0.0"
    assert SPEC["servers"] == [{"url": "/"}]


def test_paths_are_spelled_as_clients_know_them():
    assert set(SPEC["paths"]) == {
        REGISTER,
        TOKEN,
        REFRESH,
        VERIFY,
        BLACKLIST,
        ME,
        PASSWORD_CHANGE,
        USER,
        MESSAGES,
        MESSAGE,
        HEALTH,
        "/openapi.yaml",
    }


def test_packaged_copy_is_byte_identical():
    assert PACKAGED_SPEC_FILE.read_bytes() == SPEC_FILE.read_bytes()


def test_operations_are_named_tagged_and_secured():
    ids = [operation["operationId"] for _, _, operation in operations()]
    assert len(ids) == len(set(ids))
    tags = {tag["name"] for tag in SPEC["tags"]}
    secured = set()
    for path, method, operation in operations():
        assert operation["tags"] and set(operation["tags"]) <= tags
        # 405 is for undocumented methods and 500 is never expected.
        assert not {"405", "500"} & set(operation["responses"])
        # Every operation says whether it needs a token: public ones declare an empty list.
        assert operation["security"] in ([], [{"bearerAuth": []}]), f"{method.upper()} {path}"
        if operation["security"]:
            secured.add((path, method))
    # Exactly the methods the resources list in ``auth_methods`` (and serve).
    assert secured == {
        (MESSAGES, "post"),
        (MESSAGE, "put"),
        (MESSAGE, "patch"),
        (MESSAGE, "delete"),
        (ME, "get"),
        (ME, "head"),
        (ME, "patch"),
        (PASSWORD_CHANGE, "post"),
        (USER, "get"),
        (USER, "head"),
        (USER, "patch"),
    }
    scheme = SPEC["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")


def test_every_body_has_both_media_types_and_valid_examples():
    checked = 0
    for path, method, operation in operations():
        if "requestBody" in operation:
            body = resolve(operation["requestBody"])
            assert body["required"] is ((path, method) in JSON_ONLY_BODIES), path
            media_types = {"application/json"}
            if (path, method) not in JSON_ONLY_BODIES:
                media_types.add("application/x-www-form-urlencoded")
            assert set(body["content"]) == media_types, path
            for media in body["content"].values():
                check_instance(media["example"], media["schema"])
                checked += 1
        for status, response in operation["responses"].items():
            for media in resolve(response).get("content", {}).values():
                examples = (
                    [media["example"]] if "example" in media else [e["value"] for e in media["examples"].values()]
                )
                assert examples, f"{method.upper()} {path} {status} has no example"
                for example in examples:
                    check_instance(example, media["schema"])
                    if int(status) >= 400:  # a problem: its status is the response's
                        assert example["status"] == int(status)
                    checked += 1
    assert checked > 30


def test_an_absent_body_is_read_as_an_empty_one(app, auth, create_message):
    """What ``required: false`` on the bodies promises: no body is answered as ``{}`` is."""
    message = f"{MESSAGES}/{create_message()['id']}"
    checked = 0
    for path, method, operation in operations():
        if "requestBody" not in operation or resolve(operation["requestBody"])["required"]:
            continue
        url = message if path == MESSAGE else path
        headers = auth if operation.get("security") else {}
        absent = app.request(url, method=method.upper(), headers=headers, expect_errors=True)
        empty = app.request(
            url, method=method.upper(), body=b"{}", content_type="application/json", headers=headers, expect_errors=True
        )
        assert absent.status_int == empty.status_int, f"{method.upper()} {path}"
        assert absent.json.get("errors") == empty.json.get("errors"), f"{method.upper()} {path}"
        conforms(absent, path, method)
        checked += 1
    assert checked == 10


def test_parameter_and_header_examples_are_valid():
    checked = 0
    for path, _method, operation in operations():
        parameters = SPEC["paths"][path].get("parameters", []) + operation.get("parameters", [])
        for parameter in map(resolve, parameters):
            check_instance(parameter["example"], parameter["schema"])
            if "default" in parameter["schema"]:
                check_instance(parameter["schema"]["default"], parameter["schema"])
            checked += 1
        for response in map(resolve, operation["responses"].values()):
            for header in response.get("headers", {}).values():
                check_instance(header["example"], header["schema"])
                checked += 1
    assert checked > 100


def test_the_if_match_example_sent_as_it_is_lets_each_write_through(app, auth, create_message):
    # Postman's import (openapi-to-postmanv2 -O parametersResolution=Example) sends every optional
    # header with its example: a static ETag there would turn each converted write into a 412.
    example = SPEC["components"]["parameters"]["IfMatch"]["example"]
    url = f"{MESSAGES}/{create_message()['id']}"
    headers = {**auth, "If-Match": example}
    assert app.put_json(url, {"content": "replaced"}, headers=headers).status_int == 200
    assert app.patch_json(url, {"content": "changed"}, headers=headers).status_int == 200
    assert app.delete(url, headers=headers).status_int == 204


def schema_examples(node: Any, where: str) -> list[tuple[str, Any, dict[str, Any]]]:
    """Every (place, example, schema) in a schema and the schemas nested in it."""
    found = [(where, node["example"], node)] if "example" in node else []
    nested = [(f"{where}.properties.{name}", value) for name, value in node.get("properties", {}).items()]
    for key in ("allOf", "anyOf", "oneOf"):
        nested += [(f"{where}.{key}[{i}]", value) for i, value in enumerate(node.get(key, []))]
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            nested.append((f"{where}.{key}", node[key]))
    for place, value in nested:
        found += schema_examples(value, place)
    return found


def every_schema(node: Any, where: str = "#") -> list[tuple[str, dict[str, Any]]]:
    """Every schema the document holds: the named ones and each ``schema`` of a parameter, header or media type."""
    if isinstance(node, list):
        return [found for i, value in enumerate(node) for found in every_schema(value, f"{where}[{i}]")]
    if not isinstance(node, dict):
        return []
    found = []
    for key, value in node.items():
        if key == "schema" and isinstance(value, dict):
            found.append((f"{where}.schema", value))
        elif where == "#.components" and key == "schemas":
            found += [(f"#.components.schemas.{name}", schema) for name, schema in value.items()]
        elif key != "example":
            found += every_schema(value, f"{where}.{key}")
    return found


def enums(node: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    """Every schema holding an ``enum`` in ``node`` and the schemas nested in it."""
    found = [(where, node)] if "enum" in node else []
    nested = [(f"{where}.properties.{name}", value) for name, value in node.get("properties", {}).items()]
    for key in ("allOf", "anyOf", "oneOf"):
        nested += [(f"{where}.{key}[{i}]", value) for i, value in enumerate(node.get(key, []))]
    if isinstance(node.get("items"), dict):
        nested.append((f"{where}.items", node["items"]))
    return found + [hit for place, value in nested for hit in enums(value, place)]


def test_enums_offer_no_empty_value_and_generated_clients_name_every_member():
    # openapi-python-client names a member after its value only when the value starts with a
    # letter, otherwise VALUE_<position> (`-id` was ListMessagesOrdering.VALUE_7); headers are
    # not turned into types.
    checked = 0
    for where, schema in every_schema(SPEC):
        if ".headers." in where:
            continue
        for place, node in enums(resolve(schema), where):
            values = node["enum"]
            assert "" not in values, f"{place}: an empty value is offered"
            if all(isinstance(value, str) and value[:1].isalpha() for value in values):
                continue
            names = node.get("x-enum-varnames", [])
            assert len(names) == len(set(names)) == len(values), f"{place}: x-enum-varnames must name each value"
            assert all(name.isidentifier() and name.isupper() for name in names), place
            checked += 1
    assert checked >= 1


def test_every_schema_example_is_valid_against_its_schema():
    # Tools build requests and mock answers from these (Postman, Swagger UI's "Try it out").
    checked = 0
    for where, schema in every_schema(SPEC):
        for place, example, node in schema_examples(schema, where):
            try:
                check_instance(example, node)
            except Exception as exc:
                raise AssertionError(f"{place}: example {example!r} does not match its schema: {exc}") from None
            checked += 1
    assert checked > 40


# --- The document against the running app ------------------------------------------------------


def test_every_route_is_documented_and_every_operation_is_served(wsgi_app):
    served = set()
    for route in falcon.inspect.inspect_routes(wsgi_app):
        for method in route.methods:
            # "internal" methods are Falcon's defaults (405, and OPTIONS for CORS), not ours.
            if not method.internal and method.method != "OPTIONS":
                served.add((_normalise(route.path), method.method))
    for static in falcon.inspect.inspect_static_routes(wsgi_app):
        served.add((_normalise(static.prefix), "GET"))
    served = {(path, method) for path, method in served if path not in UNDOCUMENTED_ROUTES}
    # HEAD is compared too: it is documented exactly where a resource answers it.
    documented = {(_normalise(path), method.upper()) for path, method, _ in operations()}
    assert served == documented


def test_undocumented_methods_are_405(app):
    for path, item in SPEC["paths"].items():
        url = path.replace("{id}", "1")
        for method in ("get", "post", "put", "patch", "delete"):
            if method not in item:
                resp = app.request(url, method=method.upper(), expect_errors=True)
                assert resp.status_int == 405, f"{method.upper()} {path}"


def test_served_spec_is_the_file(app):
    resp = app.get("/openapi.yaml")
    assert resp.body == SPEC_FILE.read_bytes()
    conforms(resp, "/openapi.yaml", "get")
    head = app.head("/openapi.yaml")
    assert head.headers["Content-Length"] == resp.headers["Content-Length"]
    conforms(head, "/openapi.yaml", "head")


def test_auth_answers_conform(app):
    resp = app.post_json("/api/auth/register/", {"username": "alice", "password": "correct horse"})
    assert resp.headers["Location"] == "/api/auth/me"
    conforms(resp, "/api/auth/register/", "post")
    conforms(
        app.post(
            "/api/auth/register/",
            {"username": "carol", "password": "correct horse", "email": "", "first_name": "C"},
        ),
        "/api/auth/register/",
        "post",
    )
    resp = app.post_json("/api/auth/register/", {"username": "ALICE", "password": "12345678"}, expect_errors=True)
    assert resp.status_int == 400 and set(resp.json["errors"]) == {"username", "password"}
    conforms(resp, "/api/auth/register/", "post")

    resp = app.post_json("/api/auth/token/", {"username": "alice", "password": "correct horse"})
    assert resp.headers["Cache-Control"] == "no-store"
    conforms(resp, "/api/auth/token/", "post")
    refresh = resp.json["refresh"]
    resp = app.post_json("/api/auth/token/", {"username": "alice", "password": "wrong horse"}, expect_errors=True)
    assert resp.status_int == 401
    conforms(resp, "/api/auth/token/", "post")
    resp = app.post("/api/auth/token/", "not json", content_type="text/plain", expect_errors=True)
    assert resp.status_int == 415
    conforms(resp, "/api/auth/token/", "post")

    resp = app.post("/api/auth/token/refresh/", {"refresh": refresh})
    assert set(resp.json) == {"access"}
    conforms(resp, "/api/auth/token/refresh/", "post")
    resp = app.post_json("/api/auth/token/refresh/", {"refresh": "nonsense"}, expect_errors=True)
    assert resp.status_int == 401
    conforms(resp, "/api/auth/token/refresh/", "post")
    resp = app.post("/api/auth/token/refresh/", b"[1]", content_type="application/json", expect_errors=True)
    assert resp.status_int == 400 and "errors" not in resp.json
    conforms(resp, "/api/auth/token/refresh/", "post")


def test_message_answers_conform(app, auth, create_message):
    resp = app.post_json(MESSAGES, {"content": "  hello  "}, headers=auth)
    assert resp.status_int == 201 and resp.json["content"] == "hello"
    conforms(resp, MESSAGES, "post")
    message_id = resp.json["id"]
    imported = create_message("imported")
    with database.connection_context():
        tables_schema.Message.update(author=None).where(tables_schema.Message.id == imported["id"]).execute()

    for bad in (
        app.post_json(MESSAGES, {"content": "x"}, expect_errors=True),
        app.post_json(MESSAGES, {"content": " "}, headers=auth, expect_errors=True),
        app.post(MESSAGES, b"{", content_type="application/json", headers=auth, expect_errors=True),
        app.post(MESSAGES, b"x" * 70_000, content_type="application/json", headers=auth, expect_errors=True),
    ):
        conforms(bad, MESSAGES, "post")

    resp = app.get(MESSAGES)
    assert [m["author"] for m in resp.json] == [None, "alice"]
    conforms(resp, MESSAGES, "get")

    url = f"{MESSAGES}/{message_id}"
    conforms(app.get(url), MESSAGE, "get")
    conforms(app.head(url), MESSAGE, "head")
    conforms(app.put_json(url, {"content": "changed"}, headers=auth), MESSAGE, "put")
    conforms(app.patch(url, {"content": "form-encoded"}, headers=auth), MESSAGE, "patch")
    conforms(app.put_json(url, {"content": "x" * 161}, headers=auth, expect_errors=True), MESSAGE, "put")
    conforms(app.delete(url, headers=bearer("not-a-token"), expect_errors=True), MESSAGE, "delete")
    conforms(app.delete(url, headers=auth), MESSAGE, "delete")

    # Unknown ids and ids that cannot exist are all 404, for every operation.
    for raw in (str(message_id), "abc", "0", "007", "-1", "2147483648", "99999999999"):
        url = f"{MESSAGES}/{raw}"
        for resp, method in (
            (app.get(url, expect_errors=True), "get"),
            (app.head(url, expect_errors=True), "head"),
            (app.put_json(url, {"content": "x"}, headers=auth, expect_errors=True), "put"),
            (app.patch_json(url, {"content": "x"}, headers=auth, expect_errors=True), "patch"),
            (app.delete(url, headers=auth, expect_errors=True), "delete"),
        ):
            assert resp.status_int == 404, f"{method.upper()} {url}"
            conforms(resp, MESSAGE, method)


def test_rate_limited_answers_conform(config):
    app = webtest.TestApp(create_app(dataclasses.replace(config, auth_rate_limit=Rate(limit=1, period=60))))
    try:
        credentials = {"username": "alice", "password": "correct horse"}
        app.post_json("/api/auth/register/", credentials)
        resp = app.post_json("/api/auth/register/", {**credentials, "username": "bob"}, expect_errors=True)
        assert resp.status_int == 429 and int(resp.headers["Retry-After"]) >= 1
        conforms(resp, "/api/auth/register/", "post")
        access = app.post_json("/api/auth/token/", credentials).json["access"]
        resp = app.post_json("/api/auth/token/", credentials, expect_errors=True)
        assert resp.status_int == 429
        conforms(resp, "/api/auth/token/", "post")
        change = {"current_password": "correct horse", "new_password": "another horse"}
        resp = app.post_json(
            "/api/auth/password/", change, headers={"Authorization": f"Bearer {access}"}, expect_errors=True
        )
        assert resp.status_int == 429
        conforms(resp, "/api/auth/password/", "post")
    finally:
        database.close_all()


def test_write_rate_limited_answers_conform(config):
    app = webtest.TestApp(create_app(dataclasses.replace(config, write_rate_limit=Rate(limit=1, period=60))))
    try:
        register(app, "alice")
        auth = bearer(obtain_tokens(app, "alice")["access"])
        message_id = app.post_json("/api/messages", {"content": "hi"}, headers=auth).json["id"]
        url, collection = f"/api/messages/{message_id}", "/api/messages"
        for resp, path, method in (
            (app.post_json(collection, {"content": "x"}, headers=auth, expect_errors=True), collection, "post"),
            (app.put_json(url, {"content": "x"}, headers=auth, expect_errors=True), MESSAGE, "put"),
            (app.patch_json(url, {"content": "x"}, headers=auth, expect_errors=True), MESSAGE, "patch"),
            (app.delete(url, headers=auth, expect_errors=True), MESSAGE, "delete"),
        ):
            assert resp.status_int == 429 and int(resp.headers["Retry-After"]) >= 1, method
            conforms(resp, path, method)
    finally:
        database.close_all()


def test_a_declared_oversized_body_is_a_documented_413_even_where_no_body_is_read(app):
    headers = {"Content-Length": "70000"}
    for path in (HEALTH, "/openapi.yaml"):
        for method in ("get", "head"):
            resp = app.request(path, method=method.upper(), headers=headers, body=b"x" * 70_000, expect_errors=True)
            assert resp.status_int == 413, f"{method.upper()} {path}"
            conforms(resp, path, method)


def test_database_outage_is_a_documented_503(app, monkeypatch):
    def unavailable(*args, **kwargs):
        raise peewee.OperationalError("database is locked")

    monkeypatch.setattr(listing, "page", unavailable)
    resp = app.get(MESSAGES, expect_errors=True)
    assert resp.status_int == 503 and resp.headers["Retry-After"] == "2"
    conforms(resp, MESSAGES, "get")
    resp = app.head(MESSAGES, expect_errors=True)
    assert resp.status_int == 503
    conforms(resp, MESSAGES, "head")


# --- Features added after the first spec ------------------------------------------------------


def make_staff(username: str) -> None:
    with database.connection_context():
        tables_schema.User.update(is_staff=True).where(tables_schema.User.username == username).execute()


def next_url(resp) -> str | None:
    """The URL in a ``Link: <...>; rel="next"`` header, if there is one."""
    link = resp.headers.get("Link")
    if link is None:
        return None
    assert link.endswith('>; rel="next"') and link.startswith("<")
    return link[1 : link.index(">")]


def test_message_list_query_answers_conform(app, create_message):
    ids = [create_message(f"Message {n}")["id"] for n in range(5)]

    resp = app.get(MESSAGES, {"limit": 2})
    assert [m["id"] for m in resp.json] == ids[::-1][:2] and resp.headers["Link"]
    conforms(resp, MESSAGES, "get")
    head = app.head(f"{MESSAGES}?limit=2")
    assert head.headers["Link"] == resp.headers["Link"]
    assert head.headers["Content-Length"] == resp.headers["Content-Length"]
    conforms(head, MESSAGES, "head")
    first_cursor = parse_qs(urlsplit(next_url(resp)).query)["cursor"][0]

    # Following the Link headers walks every message once; the last page has none.
    seen = []
    url: str | None = f"{MESSAGES}?limit=2&ordering=id&format=json"
    while url is not None:
        resp = app.get(url)
        conforms(resp, MESSAGES, "get")
        seen += [m["id"] for m in resp.json]
        url = next_url(resp)
    assert seen == ids

    for params, count in (
        ({"author": "ALICE", "search": "message 3"}, 1),
        ({"author": "nobody"}, 0),
        ({"search": "", "ordering": "", "cursor": "", "limit": "1000"}, 5),
        ({"ordering": "-views", "format": "api"}, 5),
    ):
        resp = app.get(MESSAGES, params)
        assert len(resp.json) == count, params
        conforms(resp, MESSAGES, "get")

    for query, name in (
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=", "limit"),
        ("limit=ten", "limit"),
        ("limit=1&limit=2", "limit"),
        ("page=2", "page"),
        ("ordering=content", "ordering"),
        ("cursor=abc", "cursor"),
        (f"ordering=id&cursor={first_cursor}", "cursor"),
        ("search=" + "x" * 161, "search"),
        ("search=%0A", "search"),
        ("author=%00", "author"),
    ):
        resp = app.get(f"{MESSAGES}?{query}", expect_errors=True)
        assert resp.status_int == 400 and set(resp.json["errors"]) == {name}, query
        conforms(resp, MESSAGES, "get")
        resp = app.head(f"{MESSAGES}?{query}", expect_errors=True)
        assert resp.status_int == 400, query
        conforms(resp, MESSAGES, "head")


def test_message_permission_answers_conform(app, auth, create_message):
    url = f"{MESSAGES}/{create_message('mine')['id']}"
    register(app, "bob")
    bob = bearer(obtain_tokens(app, "bob")["access"])

    # 403 for anyone but the author, before the body is looked at.
    for resp, method in (
        (app.put_json(url, {"content": "x"}, headers=bob, expect_errors=True), "put"),
        (app.patch(url, "x", content_type="text/plain", headers=bob, expect_errors=True), "patch"),
        (app.delete(url, headers=bob, expect_errors=True), "delete"),
    ):
        assert resp.status_int == 403, method
        conforms(resp, MESSAGE, method)

    # A message without an author is for staff only, whoever wrote it.
    with database.connection_context():
        tables_schema.Message.update(author=None).execute()
    resp = app.patch_json(url, {"content": "x"}, headers=auth, expect_errors=True)
    assert resp.status_int == 403
    conforms(resp, MESSAGE, "patch")
    make_staff("bob")
    resp = app.put_json(url, {"content": "moderated"}, headers=bob)
    assert resp.json["author"] is None
    conforms(resp, MESSAGE, "put")
    conforms(app.delete(url, headers=bob), MESSAGE, "delete")


def test_own_account_answers_conform(app, auth):
    resp = app.get(ME, headers=auth)
    assert resp.json["username"] == "alice" and resp.json["is_active"] is True
    conforms(resp, ME, "get")
    resp = app.get(ME, expect_errors=True)
    assert resp.status_int == 401
    conforms(resp, ME, "get")

    resp = app.patch_json(ME, {"email": " alice@example.org ", "first_name": "Alice", "last_name": None}, headers=auth)
    assert (resp.json["email"], resp.json["first_name"]) == ("alice@example.org", "Alice")
    conforms(resp, ME, "patch")
    conforms(app.patch(ME, {"last_name": "Liddell"}, headers=auth), ME, "patch")
    resp = app.patch(ME, headers=auth)
    assert resp.json["last_name"] == "Liddell"
    conforms(resp, ME, "patch")

    for body in ({"is_staff": True}, {"email": "not an email"}, {"username": "mallory", "first_name": 7}):
        resp = app.patch_json(ME, body, headers=auth, expect_errors=True)
        assert resp.status_int == 400 and set(resp.json["errors"]) == set(body), body
        conforms(resp, ME, "patch")
    for resp, status in (
        (app.patch(ME, b"[]", content_type="application/json", headers=auth, expect_errors=True), 400),
        (app.patch(ME, "x", content_type="text/plain", headers=auth, expect_errors=True), 415),
        (app.patch(ME, b"x" * 70_000, content_type="application/json", headers=auth, expect_errors=True), 413),
        (app.patch_json(ME, {"email": ""}, headers=bearer("not-a-token"), expect_errors=True), 401),
    ):
        assert resp.status_int == status
        conforms(resp, ME, "patch")


def test_password_change_answers_conform(app, tokens, auth):
    for body, fields in (
        ({"current_password": "wrong horse battery", "new_password": "new horse battery"}, {"current_password"}),
        ({"current_password": PASSWORD, "new_password": "12345678"}, {"new_password"}),
        ({}, {"current_password", "new_password"}),
    ):
        resp = app.post_json(PASSWORD_CHANGE, body, headers=auth, expect_errors=True)
        assert resp.status_int == 400 and set(resp.json["errors"]) == fields, body
        conforms(resp, PASSWORD_CHANGE, "post")
    resp = app.post_json(PASSWORD_CHANGE, {}, expect_errors=True)
    assert resp.status_int == 401
    conforms(resp, PASSWORD_CHANGE, "post")

    resp = app.post(PASSWORD_CHANGE, {"current_password": PASSWORD, "new_password": "new horse battery"}, headers=auth)
    assert resp.headers["Cache-Control"] == "no-store" and set(resp.json) == {"refresh", "access"}
    conforms(resp, PASSWORD_CHANGE, "post")
    conforms(app.get(ME, headers=bearer(resp.json["access"])), ME, "get")

    # Every token issued before the change is void.
    resp = app.get(ME, headers=auth, expect_errors=True)
    assert resp.status_int == 401
    conforms(resp, ME, "get")
    resp = app.post_json(REFRESH, {"refresh": tokens["refresh"]}, expect_errors=True)
    assert resp.status_int == 401
    conforms(resp, REFRESH, "post")


def test_verify_and_blacklist_answers_conform(app, tokens):
    for token in (tokens["access"], tokens["refresh"]):
        resp = app.post_json(VERIFY, {"token": token})
        assert resp.json == {}
        conforms(resp, VERIFY, "post")
    conforms(app.post(VERIFY, {"token": tokens["access"]}), VERIFY, "post")
    for body, status in (({"token": "nonsense"}, 401), ({}, 400), ({"token": "x" * 4097}, 400)):
        resp = app.post_json(VERIFY, body, expect_errors=True)
        assert resp.status_int == status, body
        conforms(resp, VERIFY, "post")

    for body, status in (({}, 400), ({"refresh": tokens["access"]}, 401), ({"refresh": "nonsense"}, 401)):
        resp = app.post_json(BLACKLIST, body, expect_errors=True)
        assert resp.status_int == status, body
        conforms(resp, BLACKLIST, "post")
    resp = app.post(BLACKLIST, "x", content_type="text/plain", expect_errors=True)
    assert resp.status_int == 415
    conforms(resp, BLACKLIST, "post")
    for _ in range(2):  # blacklisting twice is no error
        resp = app.post(BLACKLIST, {"refresh": tokens["refresh"]})
        assert resp.json == {}
        conforms(resp, BLACKLIST, "post")

    for url, body in ((REFRESH, {"refresh": tokens["refresh"]}), (VERIFY, {"token": tokens["refresh"]})):
        resp = app.post_json(url, body, expect_errors=True)
        assert resp.status_int == 401, url
        conforms(resp, url, "post")


def test_rotated_refresh_answers_conform(config):
    app = webtest.TestApp(create_app(dataclasses.replace(config, rotate_refresh_tokens=True)))
    try:
        register(app, "alice")
        first = obtain_tokens(app, "alice")["refresh"]
        resp = app.post_json(REFRESH, {"refresh": first})
        assert set(resp.json) == {"access", "refresh"} and resp.headers["Cache-Control"] == "no-store"
        conforms(resp, REFRESH, "post")
        second = resp.json["refresh"]
        # Reusing a spent token is 401, and so is every token of its family from then on.
        for token in (first, second):
            resp = app.post_json(REFRESH, {"refresh": token}, expect_errors=True)
            assert resp.status_int == 401
            conforms(resp, REFRESH, "post")
    finally:
        database.close_all()


def test_user_admin_answers_conform(app, auth):
    bob_id = register(app, "bob")["id"]
    bob = bearer(obtain_tokens(app, "bob")["access"])
    url = f"/api/users/{bob_id}"

    # Token first, then a well-formed id, then staff.
    for resp, method, status in (
        (app.get(url, expect_errors=True), "get", 401),
        (app.patch_json(url, {"is_active": False}, headers=bearer("x"), expect_errors=True), "patch", 401),
        (app.get("/api/users/abc", headers=auth, expect_errors=True), "get", 404),
        (app.get(url, headers=auth, expect_errors=True), "get", 403),
        (app.patch(url, "x", content_type="text/plain", headers=auth, expect_errors=True), "patch", 403),
    ):
        assert resp.status_int == status, (method, status)
        conforms(resp, USER, method)

    make_staff("alice")
    resp = app.get(url, headers=auth)
    assert resp.json["username"] == "bob" and resp.json["is_active"] is True
    conforms(resp, USER, "get")
    for raw in ("99999", "abc", "0", "007", "-1", "2147483648"):
        for resp, method in (
            (app.get(f"/api/users/{raw}", headers=auth, expect_errors=True), "get"),
            (app.patch_json(f"/api/users/{raw}", {"is_active": True}, headers=auth, expect_errors=True), "patch"),
        ):
            assert resp.status_int == 404, (method, raw)
            conforms(resp, USER, method)

    for body, fields in (
        ({}, {"is_active"}),
        ({"is_active": "false"}, {"is_active"}),
        ({"is_active": False, "is_staff": True}, {"is_staff"}),
    ):
        resp = app.patch_json(url, body, headers=auth, expect_errors=True)
        assert resp.status_int == 400 and set(resp.json["errors"]) == fields, body
        conforms(resp, USER, "patch")
    # Form values are text, never booleans: form-encoded bodies are documented as not accepted.
    resp = app.patch(url, {"is_active": "false"}, headers=auth, expect_errors=True)
    assert resp.status_int == 400 and set(resp.json["errors"]) == {"is_active"}
    resp = app.patch(url, "x", content_type="text/plain", headers=auth, expect_errors=True)
    assert resp.status_int == 415
    conforms(resp, USER, "patch")

    resp = app.patch_json(url, {"is_active": False}, headers=auth)
    assert resp.json["is_active"] is False
    conforms(resp, USER, "patch")
    assert app.get(ME, headers=bob, expect_errors=True).status_int == 401
    assert app.post_json(TOKEN, {"username": "bob", "password": PASSWORD}, expect_errors=True).status_int == 401
    resp = app.patch_json(url, {"is_active": True}, headers=auth)
    assert resp.json["is_active"] is True
    conforms(resp, USER, "patch")


def test_health_answers_conform(app, monkeypatch):
    resp = app.get(HEALTH)
    assert resp.json == {"status": "ok"} and resp.headers["Cache-Control"] == "no-store"
    conforms(resp, HEALTH, "get")
    conforms(app.head(HEALTH), HEALTH, "head")

    def unreachable(store) -> None:
        raise peewee.OperationalError("could not connect to server")

    monkeypatch.setattr(Store, "ping", unreachable)
    for resp, method in ((app.get(HEALTH, expect_errors=True), "get"), (app.head(HEALTH, expect_errors=True), "head")):
        assert resp.status_int == 503 and resp.headers["Retry-After"] == "2", method
        conforms(resp, HEALTH, method)
