"""PreparedQuery binds each argument to its own position, whatever the values, on both databases.

The three ways the sample-matching version bound wrong values silently: a bool argument
beside the constant ``is_active == True``, two arguments with equal values, and a field
whose ``db_value`` changes the type (a ``TimestampField`` froze its sample as a constant).
"""

from __future__ import annotations

import datetime

import peewee
import pytest

from msgapi.store.compiled import PreparedQuery
from msgapi.store.connection import database


class Sample(peewee.Model):
    flag = peewee.BooleanField()
    active = peewee.BooleanField()
    left = peewee.IntegerField()
    right = peewee.IntegerField()
    stamp = peewee.TimestampField(resolution=1, utc=True)

    class Meta:
        database = database
        table_name = "prepared_query_sample"


@pytest.fixture
def sample_table(wsgi_app):
    database.create_tables([Sample])
    try:
        yield Sample
    finally:
        database.drop_tables([Sample])
        database.close()


def _ids(cursor) -> list[int]:
    return sorted(row[0] for row in cursor.fetchall())


def test_a_bool_argument_does_not_replace_a_bool_constant(sample_table):
    stamp = datetime.datetime(2026, 1, 1)
    Sample.create(id=1, flag=True, active=True, left=0, right=0, stamp=stamp)
    Sample.create(id=2, flag=True, active=False, left=0, right=0, stamp=stamp)
    Sample.create(id=3, flag=False, active=True, left=0, right=0, stamp=stamp)
    query = PreparedQuery(lambda flag: Sample.select(Sample.id).where((Sample.flag == flag) & (Sample.active == True)))
    assert _ids(query.execute(True)) == [1]
    # The constant stays True when the argument is False.
    assert _ids(query.execute(False)) == [3]


def test_two_arguments_with_equal_values_are_bound_to_their_own_positions(sample_table):
    stamp = datetime.datetime(2026, 1, 1)
    Sample.create(id=1, flag=True, active=True, left=5, right=5, stamp=stamp)
    Sample.create(id=2, flag=True, active=True, left=5, right=7, stamp=stamp)
    query = PreparedQuery(
        lambda left, right: Sample.select(Sample.id).where((Sample.left == left) & (Sample.right == right))
    )
    assert _ids(query.execute(5, 5)) == [1]
    assert _ids(query.execute(5, 7)) == [2]
    assert _ids(query.execute(7, 5)) == []


def test_a_converting_field_converts_each_argument(sample_table):
    early, late = datetime.datetime(2026, 1, 1), datetime.datetime(2026, 6, 1)
    Sample.create(id=1, flag=True, active=True, left=0, right=0, stamp=early)
    Sample.create(id=2, flag=True, active=True, left=0, right=0, stamp=late)
    query = PreparedQuery(lambda when: Sample.select(Sample.id).where(Sample.stamp < when))
    assert _ids(query.execute(datetime.datetime(2026, 3, 1))) == [1]
    assert _ids(query.execute(datetime.datetime(2027, 1, 1))) == [1, 2]
    assert _ids(query.execute(datetime.datetime(2025, 1, 1))) == []


def test_a_build_that_drops_an_argument_fails_when_compiled(sample_table):
    query = PreparedQuery(lambda left, right: Sample.select(Sample.id).where(Sample.left == left))
    with pytest.raises(AssertionError, match="missing \\['right'\\]"):
        query.execute(1, 2)


def test_an_argument_declared_unused_must_not_appear(sample_table):
    query = PreparedQuery(lambda left, right: Sample.select(Sample.id).where(Sample.left == left), unused=("left",))
    with pytest.raises(AssertionError, match="declared unused but present \\['left'\\]"):
        query.execute(1, 2)
    dropped = PreparedQuery(lambda left, right: Sample.select(Sample.id).where(Sample.left == left), unused=("right",))
    assert _ids(dropped.execute(1, 2)) == []


def test_the_wrong_number_of_arguments_is_refused(sample_table):
    query = PreparedQuery(lambda left: Sample.select(Sample.id).where(Sample.left == left))
    with pytest.raises(TypeError):
        query.execute(1, 2)
    with pytest.raises(TypeError):
        PreparedQuery(lambda left: Sample.select(Sample.id), unused=("nothing",))
