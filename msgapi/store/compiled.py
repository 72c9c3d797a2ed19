"""Compiled queries: a Peewee query compiled to SQL once per database, run with fresh parameters.

Building and compiling a Peewee query costs far more than running it, and the hot
statements never change shape.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import Any

import peewee

from .connection import database


class _Slot:
    """Where argument ``index`` goes in a compiled query's parameters, and how it is converted.

    Not a ``peewee.Node`` and equal only to itself, so no constant of a query can be taken
    for it, whatever the argument's value.
    """

    __slots__ = ("converter", "index")

    def __init__(self, index: int, converter: Callable[[Any], Any] | None) -> None:
        self.index = index
        self.converter = converter


class Placeholder(peewee.Value):
    """Stands for argument ``index`` while a query is built and compiled.

    When compiled it leaves a ``_Slot`` at its position in the parameters, carrying the
    converter in scope: compared with a field (``Message.created_at < placeholder``),
    that is the field's ``db_value``, applied to each argument at run time just as Peewee
    would have applied it to a literal value.
    """

    def __init__(self, index: int) -> None:
        super().__init__(None, converter=False, unpack=False)
        self.index = index

    def __sql__(self, ctx: Any) -> Any:
        return ctx.value(_Slot(self.index, ctx.state.converter), converter=False)


class PreparedQuery:
    """A Peewee query compiled to SQL once per database, then run with fresh parameters.

    ``build`` is called once per database with one
    ``Placeholder`` per parameter of its signature; each placeholder marks its own
    position in the compiled parameters, so an argument can never be bound where a
    constant belongs, nor two arguments to one position. Every parameter must appear in
    the query, except those named in ``unused`` (which must not): a build that drops an
    argument fails when compiled, instead of ignoring it on every run.
    """

    def __init__(self, build: Callable[..., peewee.Query], unused: tuple[str, ...] = ()) -> None:
        names = list(inspect.signature(build).parameters)
        unknown = set(unused) - set(names)
        if unknown:
            raise TypeError(f"unused names no parameter of the query: {sorted(unknown)}")
        self._build = build
        self._arity = len(names)
        self._names = names
        self._unused = frozenset(names.index(name) for name in unused)
        self._compiled: weakref.WeakKeyDictionary[peewee.Database, tuple[str, list[tuple[int, Any, Any]]]] = (
            weakref.WeakKeyDictionary()
        )

    def _compile(self, db: peewee.Database) -> tuple[str, list[tuple[int, Any, Any]]]:
        query = self._build(*(Placeholder(index) for index in range(self._arity)))
        sql, params = db.get_sql_context().sql(query).query()
        # (index of the argument, or -1 for a constant; the constant; the argument's converter)
        slots = [
            (param.index, None, param.converter) if isinstance(param, _Slot) else (-1, param, None)
            for param in params
        ]
        used = {index for index, _, _ in slots if index >= 0}
        missing = set(range(self._arity)) - used - self._unused
        unexpected = used & self._unused
        if missing or unexpected:
            raise AssertionError(
                f"compiled query misplaces its arguments: missing {[self._names[i] for i in sorted(missing)]}, "
                f"declared unused but present {[self._names[i] for i in sorted(unexpected)]}"
            )
        compiled = (sql, slots)
        self._compiled[db] = compiled
        return compiled

    def sql(self, db: peewee.Database) -> tuple[str, list[tuple[int, Any, Any]]]:
        """The compiled SQL and its parameter slots for ``db`` (compiled on first use)."""
        return self._compiled.get(db) or self._compile(db)

    def execute(self, *args: Any, sql_prefix: str = "") -> Any:
        """The cursor, after executing with ``args`` bound to the build's parameters, in order.

        ``sql_prefix``: statements without parameters sent before this one in the same
        string (PostgreSQL only; see ``connection.time_limit``).
        """
        if len(args) != self._arity:
            raise TypeError(f"expected {self._arity} arguments, got {len(args)}")
        sql, slots = self.sql(database.obj)
        params = [
            value if index < 0 else (converter(args[index]) if converter else args[index])
            for index, value, converter in slots
        ]
        return database.execute_sql(sql_prefix + sql, params)
