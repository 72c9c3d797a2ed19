"""The README's example responses are spelled as the server spells them (on SQLite, the README's set-up).

Messages are written by the database, other bodies by msgapi; an example must use the
spacing its kind has on the wire (today one compact spelling for both).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import webtest
from conftest import PASSWORD, TEST_HASH_ITERATIONS, TEST_SECRET_KEY, bearer

from msgapi.app import create_app
from msgapi.config import Config
from msgapi.store.connection import database

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def spelling(text: str) -> tuple[frozenset, frozenset]:
    """The whitespace around ``:`` after a key, and around ``,`` before the next key."""
    return frozenset(re.findall(r'"(\s*):(\s*)', text)), frozenset(re.findall(r'[^\s,](\s*),(\s*)"', text))


# An inline code span holding a JSON object or one member of one: `{"status":"ok"}`, `"code":"…"`.
INLINE_JSON = re.compile(r'`(\{\s*"[^`]*|"[^"`]*"\s*:[^`]*)`')


def readme_examples() -> list[str]:
    """Every example response: ``# {...}`` comments in shell blocks, JSON blocks' lines, inline spans."""
    examples = INLINE_JSON.findall(BLOCK.sub("", README))
    for language, body in BLOCK.findall(README):
        for line in body.splitlines():
            if language == "sh" and re.match(r"# [{\[]", line):
                examples.append(line[2:])
            elif language == "json" and line.strip():
                examples.append(line)
    return examples


@pytest.fixture
def wire_spelling(sqlite_url: str):
    """The server's spelling of a message and of any other body, as it answers on SQLite."""
    config = Config(database_url=sqlite_url, secret_key=TEST_SECRET_KEY, password_hash_iterations=TEST_HASH_ITERATIONS)
    app = webtest.TestApp(create_app(config))
    try:
        account = app.post_json("/api/auth/register/", {"username": "alice", "password": PASSWORD}).text
        access = app.post_json("/api/auth/token/", {"username": "alice", "password": PASSWORD}).json["access"]
        message = app.post_json("/api/messages", {"content": "Hello, world"}, headers=bearer(access)).text
        problem = app.post_json("/api/messages", {"content": ""}, headers=bearer(access), expect_errors=True).text
    finally:
        database.close_all()
    assert spelling(account) == spelling(problem)
    return {"message": spelling(message), "other": spelling(account)}


def test_the_readme_has_example_responses_of_both_kinds():
    examples = readme_examples()
    assert any('"views"' in example for example in examples)
    assert any('"views"' not in example and ":" in example for example in examples)
    assert INLINE_JSON.findall(BLOCK.sub("", README)), "inline spans such as the /healthz answer are examples too"


def test_the_readme_shows_these_answers_byte_for_byte(sqlite_url: str):
    """The problem and health examples are whole answers, so the README holds the server's exact bytes."""
    config = Config(database_url=sqlite_url, secret_key=TEST_SECRET_KEY, password_hash_iterations=TEST_HASH_ITERATIONS)
    app = webtest.TestApp(create_app(config))
    try:
        app.post_json("/api/auth/register/", {"username": "alice", "password": PASSWORD})
        access = app.post_json("/api/auth/token/", {"username": "alice", "password": PASSWORD}).json["access"]
        answers = [
            app.get("/healthz").text,
            app.post_json("/api/messages", {"content": ""}, headers=bearer(access), expect_errors=True).text,
            app.post_json("/api/messages", {"content": "x"}, headers=bearer("not-a-jwt"), expect_errors=True).text,
            app.get("/api/messages/999999", expect_errors=True).text,
        ]
    finally:
        database.close_all()
    for answer in answers:
        assert answer in README, f"the README should show this answer as the server sends it: {answer}"


@pytest.mark.parametrize("example", [example for example in readme_examples() if ":" in example])
def test_an_example_response_is_spaced_as_the_server_spaces_it(wire_spelling, example: str):
    kind = "message" if '"views"' in example else "other"
    colons, commas = spelling(example)
    wire_colons, wire_commas = wire_spelling[kind]
    # A one-member example has no comma to check; whatever it has must be spaced as on the wire.
    assert colons and colons <= wire_colons and commas <= wire_commas, f"spell it as the server does: {example}"
