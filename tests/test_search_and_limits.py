"""Search through the trigram index, and the time limit on every list query (on both databases)."""

from __future__ import annotations

from urllib.parse import urlencode

import peewee
import pytest
from conftest import assert_problem

from msgapi.store import listing, messages, schema
from msgapi.store.connection import database

CORPUS = [
    "Hello World",
    "un été chaud",
    "UN ÉTÉ FROID",
    "Σίσυφος και ΣΊΣΥΦΟΣ",
    "100% sure",
    "1000 sure",
    "a_b",
    "axb",
    "back\\slash",
    'say "hi" twice',
    "ab",
    "x",
    "hello again, world",
    "Ünïcödé ünïcödé",
    "日本語のテキスト",
]
PATTERNS = [
    "hello", "HELLO", "lo wo", "world", "été", "ÉTÉ", "σίσυφος", "ΣΊΣ", "%", "0%", "0% s", "_", "a_b",
    "\\", "k\\s", '"hi"', '"', 'say "', "ab", "b", "x", "zz", "zzz", "ÜNÏ", "本語の", "語", "sure", "u",
]  # fmt: skip


def _insert(contents: list[str]) -> None:
    stamp = messages.utcnow()
    rows = [{"content": c, "views": 0, "created_at": stamp, "updated_at": stamp} for c in contents]
    for start in range(0, len(rows), 500):
        schema.Message.insert_many(rows[start : start + 500]).execute()


def _search(app, text: str, **params: str) -> list[str]:
    query = urlencode({"search": text, "ordering": "id", "limit": "1000", **params})
    return [m["content"] for m in app.get("/api/messages?" + query).json]


def _expected(text: str, contents: list[str]) -> list[str]:
    return [c for c in contents if text.casefold() in c.casefold()]


@pytest.mark.parametrize("text", PATTERNS)
def test_search_finds_exactly_the_case_insensitive_substrings(app, text):
    _insert(CORPUS)
    assert _search(app, text) == _expected(text, CORPUS)


@pytest.mark.parametrize("text", ["hello", "été", '"hi"', "0% s", "ab", "x"])
def test_search_answers_alike_whether_it_uses_the_index_or_scans(app, monkeypatch, text):
    # Few matches: SQLite takes them from the trigram index; past the cap it walks the
    # ordering's index instead. Both must find the same rows.
    _insert(CORPUS)
    indexed = _search(app, text)
    monkeypatch.setattr(listing, "SEARCH_INDEX_CAP", 1)
    assert _search(app, text) == indexed == _expected(text, CORPUS)


def test_search_with_more_matches_than_the_index_cap_pages_through_all_of_them(app):
    contents = [f"common {i}" + (" needle" if i % 2 else "") for i in range(2 * listing.SEARCH_INDEX_CAP + 10)]
    _insert(contents)
    found = _search(app, "NEEDLE", limit="1000")
    assert len(found) == 1000
    assert found == _expected("needle", contents)[:1000]


def test_search_follows_edits_and_deletes(app, auth, create_message):
    message = create_message("a rare walrus")
    path = f"/api/messages/{message['id']}"
    assert _search(app, "walrus") == ["a rare walrus"]
    app.get(path)  # a view changes nothing the index holds
    app.put_json(path, {"content": "now a narwhal"}, headers=auth)
    assert (_search(app, "walrus"), _search(app, "NARWHAL")) == ([], ["now a narwhal"])
    app.delete(path, headers=auth, status=204)
    assert _search(app, "narwhal") == []


def _drop_search_index() -> None:
    if isinstance(database.obj, peewee.SqliteDatabase):
        for trigger in ("insert", "delete", "update"):
            database.execute_sql(f"DROP TRIGGER messages_search_{trigger}")
        database.execute_sql("DROP TABLE messages_search")
    else:
        database.execute_sql("DROP INDEX messages_content_trgm")


def _search_index_exists() -> bool:
    if isinstance(database.obj, peewee.SqliteDatabase):
        names = ("messages_search", "messages_search_insert", "messages_search_delete", "messages_search_update")
        sql = f"SELECT count(*) FROM sqlite_master WHERE name IN ({', '.join('?' * len(names))})"
        return database.execute_sql(sql, names).fetchone()[0] == len(names)
    sql = "SELECT count(*) FROM pg_indexes WHERE indexname = 'messages_content_trgm'"
    return database.execute_sql(sql).fetchone()[0] == 1


def test_a_database_from_before_the_search_index_gains_it_at_start_up(make_app):
    app = make_app()
    _insert(["older walrus", "older narwhal"])
    _drop_search_index()
    assert not _search_index_exists()
    app = make_app()
    assert _search_index_exists()
    assert _search(app, "walrus") == ["older walrus"]


def test_start_up_twice_keeps_one_search_index(make_app):
    make_app()
    _insert(["a walrus"])
    app = make_app()
    assert _search_index_exists()
    assert _search(app, "walrus") == ["a walrus"]


# --- the time limit ------------------------------------------------------------------------------

# Enough rows that a search the index cannot serve (two characters, no match) reads for far
# longer than a millisecond on either database.
SLOW_ROWS = 50_000


def _insert_many(count: int) -> None:
    if isinstance(database.obj, peewee.SqliteDatabase):
        sql = (
            "WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < ?) "
            "INSERT INTO messages (content, views, created_at, updated_at) "
            "SELECT 'filler message ' || n, 0, '2024-05-01 12:00:00', '2024-05-01 12:00:00' FROM k"
        )
    else:
        sql = (
            "INSERT INTO messages (content, views, created_at, updated_at) "
            "SELECT 'filler message ' || n, 0, '2024-05-01 12:00:00', '2024-05-01 12:00:00' "
            "FROM generate_series(1, %s) AS n"
        )
    database.execute_sql(sql, (count,))


def test_a_list_query_over_its_time_limit_is_503_with_retry_after(make_app):
    app = make_app(list_time_limit_ms=1)
    _insert_many(SLOW_ROWS)
    resp = app.get("/api/messages?search=zq", expect_errors=True)
    body = assert_problem(resp, 503)
    assert int(resp.headers["Retry-After"]) > 0
    assert "narrow" in body["detail"].lower()
    # The connection that was stopped still serves requests.
    assert app.get("/api/messages/1").json["id"] == 1


def test_the_same_query_within_the_default_limit_answers(make_app):
    app = make_app()
    _insert_many(SLOW_ROWS)
    assert app.get("/api/messages?search=zq").json == []



# --- the plans: what the database reads to answer ------------------------------------------------

# Enough rows that both planners prefer an index to reading the table, as they would in use.
PLAN_ROWS = 20_000


@pytest.fixture
def seeded_app(make_app):
    app = make_app()
    _insert_many(PLAN_ROWS)
    _insert(["a rare walrus"])
    # Statistics and a tidy index, as autovacuum leaves them; SQLite plans without any.
    if not isinstance(database.obj, peewee.SqliteDatabase):
        # VACUUM also moves the trigram index's pending entries (GIN's fast update) into it.
        database.execute_sql("VACUUM ANALYZE messages")
    return app


def _plan(monkeypatch, app, query: str) -> str:
    """The database's plan for the list statement a request runs: EXPLAIN of that SQL, those parameters."""
    statements = []
    real_execute_sql = database.obj.execute_sql

    def recording_execute_sql(sql, params=None, *args, **kwargs):
        statements.append((sql, params))
        return real_execute_sql(sql, params, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(database.obj, "execute_sql", recording_execute_sql)
        app.get("/api/messages?" + query)
    sql, params = statements[-1]  # the page itself is the request's last statement
    if isinstance(database.obj, peewee.SqliteDatabase):
        rows = database.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        return "\n".join(row[-1] for row in rows)
    # Sent after the statement_timeout it runs under; EXPLAIN takes the statement alone.
    statement = sql.rsplit("; ", 1)[-1]
    return "\n".join(row[0] for row in database.execute_sql("EXPLAIN " + statement, params).fetchall())


def test_a_search_with_few_matches_reads_them_from_the_trigram_index(seeded_app, monkeypatch):
    plan = _plan(monkeypatch, seeded_app, "search=walrus")
    # SQLite's only virtual table is the trigram index.
    index = "VIRTUAL TABLE INDEX" if isinstance(database.obj, peewee.SqliteDatabase) else "messages_content_trgm"
    assert index in plan, plan
    assert _search(seeded_app, "WALRUS") == ["a rare walrus"]


@pytest.mark.parametrize("ordering", sorted(listing.ORDERINGS) + ["-" + name for name in sorted(listing.ORDERINGS)])
def test_every_ordering_walks_an_index_instead_of_sorting_the_table(seeded_app, monkeypatch, ordering):
    plan = _plan(monkeypatch, seeded_app, f"ordering={ordering}&limit=20")
    if isinstance(database.obj, peewee.SqliteDatabase):
        # The page's own rows are sorted again once read ("SCAN page"); the table never is.
        reading_the_table = plan.split("SCAN page")[0]
        assert "TEMP B-TREE" not in reading_the_table, plan
    else:
        assert "Seq Scan on messages" not in plan and "Sort" not in plan, plan
