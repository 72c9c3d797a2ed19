"""schema.sql (for operators) and the Peewee models (what the service creates) must agree.

Both are applied to PostgreSQL in two fresh schemas, and the catalogues compared:
tables, columns (type, length, nullability, default), constraints and indexes.
schema.sql is PostgreSQL's by design; SQLite tables always come from the models.
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg2
import pytest

from msgapi import models
from msgapi.config import Config
from msgapi.db import database, open_database

SCHEMA_SQL = Path(__file__).resolve().parent.parent / "schema.sql"


def _catalogue(cursor, schema: str) -> dict[str, list]:
    cursor.execute(
        """SELECT table_name, column_name, data_type, character_maximum_length, is_nullable, column_default
           FROM information_schema.columns WHERE table_schema = %s ORDER BY table_name, column_name""",
        (schema,),
    )
    columns = [tuple(row) for row in cursor.fetchall()]
    cursor.execute(
        """SELECT cls.relname, con.contype, pg_get_constraintdef(con.oid)
           FROM pg_constraint con JOIN pg_class cls ON cls.oid = con.conrelid
           JOIN pg_namespace ns ON ns.oid = cls.relnamespace
           WHERE ns.nspname = %s ORDER BY 1, 2, 3""",
        (schema,),
    )
    constraints = [tuple(row) for row in cursor.fetchall()]
    cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY 1", (schema,))
    indexes = [tuple(row) for row in cursor.fetchall()]

    def unqualified(rows: list[tuple]) -> list[tuple]:
        # Index definitions and sequence defaults name the schema; compare without it.
        return [tuple(v.replace(f"{schema}.", "") if isinstance(v, str) else v for v in row) for row in rows]

    # CHECK constraints render with PostgreSQL's own normalisation, so they compare as text.
    return {
        "catalogue": [unqualified(columns), unqualified(constraints), unqualified(indexes)],
        "tables": sorted({c[0] for c in columns}),
    }


@pytest.fixture
def schemas(postgres_url: str):
    conn = psycopg2.connect(postgres_url)
    conn.autocommit = True
    with conn.cursor() as cursor:
        # Extensions belong to the database, not a schema's tables: installed once in public,
        # which both search paths below include, so neither schema's CASCADE drops it.
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
        for name in ("from_sql", "from_models"):
            cursor.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}")
    yield conn
    with conn.cursor() as cursor:
        cursor.execute("DROP SCHEMA IF EXISTS from_sql CASCADE; DROP SCHEMA IF EXISTS from_models CASCADE")
    conn.close()


def test_schema_sql_matches_the_models(schemas, postgres_url: str):
    with schemas.cursor() as cursor:
        cursor.execute("SET search_path TO from_sql, public")
        cursor.execute(SCHEMA_SQL.read_text(encoding="utf-8"))
        cursor.execute("SET search_path TO public")

    url = postgres_url + "?options=-csearch_path%3Dfrom_models,public"
    database.initialize(open_database(Config(database_url=url, secret_key="k" * 40)))
    try:
        models.create_tables()
    finally:
        database.close_all()

    with schemas.cursor() as cursor:
        from_sql = _catalogue(cursor, "from_sql")
        from_models = _catalogue(cursor, "from_models")
    assert from_sql["tables"] == sorted(model._meta.table_name for model in models.ALL_MODELS)
    assert from_sql["catalogue"] == from_models["catalogue"]


def test_schema_sql_is_idempotent(schemas):
    sql = SCHEMA_SQL.read_text(encoding="utf-8")
    with schemas.cursor() as cursor:
        cursor.execute("SET search_path TO from_sql, public")
        cursor.execute(sql)
        cursor.execute(sql)
        cursor.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'from_sql'")
        assert cursor.fetchone()[0] == len(models.ALL_MODELS)
    assert re.search(r"CREATE TABLE IF NOT EXISTS", sql)
