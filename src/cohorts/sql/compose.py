"""Rules as SQLAlchemy expressions on a host's own tables, to compose into the host's queries.

:func:`where` gives a ``ColumnElement[bool]`` that SQLAlchemy compiles for the
database it runs on (the rule is compiled for that dialect when the statement
is); its values are bound parameters with names of their own, so several rules
can sit in one statement. :func:`ids` gives the ``Select`` of the ids it is
true for. On SQLite the expression calls cohorts' functions: the engine needs
:func:`install_functions` once (a :class:`~cohorts.HostRepository` does it).
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import weakref
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from ..ast import RuleLike
from ..semantics import as_rule, moment
from ..values import resolve_tz
from .compiler import _MARK
from .dialects import dialect as find_dialect
from .host import GroupLookup, HostCompiler, HostTable

__all__ = ["RuleClause", "install_functions", "select_ids", "where"]

_CLAUSES = itertools.count(1)


class RuleClause(sa.sql.expression.ColumnElement[bool]):
    """A rule on a :class:`HostTable`, as a boolean SQL expression over the host's table (not aliased).

    Compiled when the statement around it is, for that statement's database.
    """

    inherit_cache = False
    type = sa.Boolean()

    def __init__(
        self,
        rule: RuleLike,
        host_table: HostTable,
        now: dt.datetime | None,
        groups: GroupLookup | None,
        phone_table: str | None = None,
    ) -> None:
        if not isinstance(host_table, HostTable):
            raise TypeError(f"where() takes a cohorts.HostTable, not {type(host_table).__name__}")
        self.rule = as_rule(rule)
        self.host_table = host_table
        tz = resolve_tz(host_table.tz)
        self.now = moment(now, tz)
        self.groups = groups
        self.phone_table = phone_table
        self.name = f"cohorts_{next(_CLAUSES)}"
        self.sql("sqlite")  # the rule is checked against the mapping now, not when the query runs

    def sql(self, dialect_name: str) -> tuple[str, list[Any]]:
        """The expression in ``dialect_name``, with ``\\x00n\\x00`` markers, and the values they stand for."""
        tz = resolve_tz(self.host_table.tz)
        compiler = HostCompiler(
            self.host_table,
            find_dialect(dialect_name),
            tz,
            self.now,
            self.groups,
            inline=True,
            phone_table=self.phone_table,
        )
        return compiler.where(self.rule), compiler.param.values

    def __str__(self) -> str:
        return str(self.rule)


@compiles(RuleClause)
def _compile(element: RuleClause, compiler: SQLCompiler, **kw: Any) -> str:
    try:
        found = find_dialect(compiler.dialect.name)
    except ValueError:
        name = compiler.dialect.name
        raise sa.exc.CompileError(f"cohorts rules compile for SQLite and PostgreSQL, not {name}") from None
    text, values = element.sql(found.name)

    def bind(match: re.Match[str]) -> str:
        index = int(match.group(1))
        return compiler.process(sa.bindparam(f"{element.name}_{index}", values[index], unique=True), **kw)

    return f"({_MARK.sub(bind, text)})"


def where(
    rule: RuleLike,
    host_table: HostTable,
    now: dt.datetime | None = None,
    *,
    groups: GroupLookup | None = None,
    phone_table: str | None = None,
) -> RuleClause:
    """``rule`` as a SQLAlchemy boolean expression over the host's table, to use in the host's own queries.

    The table must appear in the query under its own name (not an alias):
    ``select(Client).where(cohorts.where(rule, clients)).order_by(Client.name).limit(20)``.
    Its values are bound parameters; times relative to ``now`` (default: when
    ``where`` is called) are resolved then. A rule naming an unmapped attribute
    is a RuleError here, not when the query runs.

    On PostgreSQL, phone conditions read the E.164 numbers of ``phone_table``
    (a :attr:`cohorts.HostRepository.phone_table`); without one they are a
    RuleError when the query is compiled. :meth:`cohorts.HostRepository.where`
    brings that table up to date and passes it.

    Example:
        >>> clients = HostTable("clients", id="client_no", columns={"city": "town"})
        >>> query = sa.select(sa.column("client_no")).select_from(sa.table("clients"))
        >>> print(query.where(where('customer.city = "laval"', clients)).compile(
        ...     dialect=sa.dialects.postgresql.dialect()))  # doctest: +ELLIPSIS
        SELECT client_no
        FROM clients
        WHERE ((((CASE WHEN octet_length(CAST("clients"."town" AS TEXT)) ... = CAST(%(cohorts_..._0_1)s...
    """
    return RuleClause(rule, host_table, now, groups, phone_table)


def select_ids(
    rule: RuleLike,
    host_table: HostTable,
    now: dt.datetime | None = None,
    *,
    groups: GroupLookup | None = None,
    phone_table: str | None = None,
) -> sa.Select[Any]:
    """The ``Select`` of the ids (the ``id`` column) of the host's rows ``rule`` is true for, to order,
    paginate or join: ``session.scalars(select_ids(rule, clients).order_by("client_no").limit(20))``.

    ``groups`` and ``phone_table`` are as for :func:`where`.
    """
    return ids_where(host_table, where(rule, host_table, now, groups=groups, phone_table=phone_table))


def ids_where(host_table: HostTable, clause: RuleClause) -> sa.Select[Any]:
    schema, _, name = host_table.table.rpartition(".")
    table = sa.table(name, sa.column(host_table.id), schema=schema or None)
    return sa.select(table.c[host_table.id]).where(clause)


def install_functions(engine: sa.Engine) -> None:
    """Make cohorts' SQL functions available on the engine's SQLite connections (nothing on PostgreSQL).

    Needed once per engine before running :func:`where` expressions on SQLite;
    the functions are registered on each connection as the pool hands it out.
    """
    if find_dialect(engine).name != "sqlite" or engine in _INSTALLED:
        return
    from . import functions

    @sa.event.listens_for(engine, "checkout")
    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        functions.register_driver(dbapi_connection)

    _INSTALLED.add(engine)


_INSTALLED: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
