"""Rules on a host's own tables: :class:`HostTable` maps attributes to columns and JSON keys, and
:class:`HostEvents` maps event categories to the host's tables; the rule compiles to one query there.

The boolean structure and the event aggregates are the repository compiler's
(:class:`cohorts.sql.compiler.Compiler`); this module says where values are, and
the dialect how the database reads them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
from collections.abc import Callable, Container, Iterator, Mapping
from decimal import Decimal
from typing import Any, TypeAlias

import attrs
import sqlalchemy as sa

from ..ast import Aggregate, Condition, DatePart, Node, Op, RuleLike
from ..errors import RuleError
from ..model import CustomerId
from ..repository import check_limit
from ..schema import Schema
from ..semantics import Shape, Spec, as_rule, element_spec, moment
from ..values import DEFAULT_REGION, Kind, resolve_tz
from .compiler import FALSE, Compiler
from .dialects import COMPARISONS, Dialect
from .dialects import dialect as find_dialect
from .storage import KIND_FIELD, PART_FIELD, change_log, part_sql

__all__ = ["HostEvents", "HostTable", "JsonField"]

GroupLookup: TypeAlias = Callable[[str], Container[CustomerId]]


def driver_params(params: dict[str, Any] | list[Any]) -> dict[str, Any] | tuple[Any, ...]:
    """Parameters as ``exec_driver_sql`` takes them."""
    return params if isinstance(params, dict) else tuple(params)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?\Z")
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def quoted(name: str) -> str:
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a plain SQL name (letters, digits, _; optionally schema.table)")
    return ".".join(f'"{part}"' for part in name.split("."))


def _column_name(name: object, what: str) -> str:
    """``name`` checked as a plain column name (``what`` says which mapping entry it is, for errors)."""
    if not isinstance(name, str) or not _COLUMN.match(name):
        raise ValueError(f"{what}: {name!r} is not a plain SQL column name (letters, digits and _)")
    return name


def table_name(value: object) -> str:
    """A table's name (``schema.table``) from text, an SQLAlchemy ``Table`` or an ORM mapped class."""
    if isinstance(value, str):
        return value
    if isinstance(value, sa.Table):
        return value.fullname
    mapper = sa.inspect(value, raiseerr=False) if isinstance(value, type) else None
    local = getattr(mapper, "local_table", None)
    if isinstance(local, sa.Table):
        return local.fullname
    raise TypeError(f"a table is a name, an SQLAlchemy Table or an ORM mapped class, not {value!r}")


def column_name(value: object) -> Any:
    """A column's name from text, an SQLAlchemy ``Column`` or an ORM attribute (``Client.town``);
    anything else is left for the checks to refuse."""
    if isinstance(value, str):
        return value
    clause = getattr(value, "__clause_element__", None)
    element = clause() if callable(clause) else value
    if isinstance(element, sa.Column):
        return element.name
    return value


def _column_names(mapping: object) -> dict[Any, Any]:
    return {name: column_name(mapped) for name, mapped in dict(mapping).items()}  # type: ignore[call-overload]


def _keyed_by_columns(mapping: object) -> dict[Any, Any]:
    return {column_name(column): value for column, value in dict(mapping).items()}  # type: ignore[call-overload]


def _optional_column(value: object) -> Any:
    return None if value is None else column_name(value)


_UNBINDABLE = re.compile("[\x00\ud800-\udfff]")  # no database takes these in a parameter


# -- triggers that feed a HostRepository's change log (the SQL is the dialect's)

_STATE_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}\Z")
_NAME_LIMIT = 63  # PostgreSQL's longest identifier
_DDL_LOCK = 7302021  # the HostRepository's lock for its state tables: installs and its creation take turns


@contextlib.contextmanager
def _transaction(engine: sa.Engine | sa.Connection) -> Iterator[sa.Connection]:
    """A connection in a transaction: the engine's own, or the transaction of the connection given."""
    if isinstance(engine, sa.Connection):
        if engine.in_transaction():
            yield engine
        else:
            with engine.begin():
                yield engine
        return
    if not isinstance(engine, sa.Engine):
        raise TypeError(f"triggers are installed with an SQLAlchemy Engine or Connection, not {engine!r}")
    with engine.begin() as conn:
        yield conn


def _check_prefix(state_prefix: str) -> None:
    if not isinstance(state_prefix, str) or not _STATE_PREFIX.match(state_prefix):
        raise ValueError(f"state_prefix starts plain table names, such as 'cohorts_', not {state_prefix!r}")


def _trigger_name(state_prefix: str, table: str, column: str) -> str:
    """The trigger function's (and row trigger's) name: the prefix, the table and the column, within 63 characters."""
    name = f"{state_prefix}log_{table.replace('.', '_')}_{column}"
    if len(name) + 2 > _NAME_LIMIT:  # room for the truncate trigger's "_t"
        digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:8]
        name = f"{name[: _NAME_LIMIT - 2 - 9]}_{digest}"
    return name


@attrs.frozen(init=False)
class JsonField:
    """A key of a JSON column (or a path of nested keys), mapped to an attribute of :class:`HostTable`.

    ``JsonField("extra", "prefs", "channel")`` reads ``extra["prefs"]["channel"]``.
    A missing key or a JSON ``null`` is an unknown value; a JSON array is a list
    (``contains`` and ``in`` test its elements, as the in-memory evaluator does).
    On SQLite the value is taken with JSON1 (``extra -> '$."prefs"."channel"'``),
    on PostgreSQL with ``CAST(extra AS JSONB) #> '{prefs,channel}'`` (``json``
    and ``jsonb`` columns); the keys are bound parameters. A key may hold
    quotes, backslashes and any character but NUL and lone surrogates: it
    matches the JSON key as decoded (on SQLite, such a key is looked up with
    ``json_each``, as a JSON1 path cannot spell it).

    Example:
        >>> JsonField("extra", "prefs", "channel")
        JsonField(column='extra', keys=('prefs', 'channel'))

    .. versionadded:: 0.2
    """

    column: str
    keys: tuple[str, ...]

    def __init__(self, column: str | sa.ColumnElement[Any] | Any, *keys: str) -> None:
        self.__attrs_init__(column_name(column), keys)

    def __attrs_post_init__(self) -> None:
        _column_name(self.column, "JsonField")
        if not self.keys:
            raise ValueError(f"JsonField({self.column!r}) names no key: JsonField({self.column!r}, 'key', ...)")
        for key in self.keys:
            if not isinstance(key, str) or not key or _UNBINDABLE.search(key) is not None:
                raise ValueError(
                    f"JsonField({self.column!r}): a key is non-empty text without NUL or lone surrogate, not {key!r}"
                )


Mapped: TypeAlias = str | JsonField


def _mapped(value: object, what: str) -> Mapped:
    if isinstance(value, JsonField):
        return value
    if isinstance(value, str):
        return _column_name(value, what)
    raise TypeError(f"{what} maps to a column name or a JsonField, not {type(value).__name__}")


_FILTER_TYPES = (str, int, float, Decimal, dt.date)


def _filter_value(value: object, what: str) -> Any:
    if value is None or isinstance(value, _FILTER_TYPES):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        items = tuple(value)
        for item in items:
            if item is None or not isinstance(item, _FILTER_TYPES):
                raise TypeError(
                    f"{what}: the values of an IN filter are text, numbers, booleans or dates, not {item!r}"
                )
        return items
    raise TypeError(f"{what}: a filter value is text, a number, a boolean, a date, None or a list, not {value!r}")


@attrs.frozen
class HostEvents:
    """One category of events kept in a host's own table, for :class:`HostTable`.

    - ``table``: the table (``schema.table`` allowed); each row satisfying
      ``where`` is one event.
    - ``customer``: the column holding the customer's id (the value of the
      :class:`HostTable`'s ``id`` column); rows where it is NULL are ignored.
    - ``at``: the column of the event's time (a ``timestamptz`` or ``date``
      column on PostgreSQL; a date, datetime or ISO text on SQLite). Rows whose
      time is NULL or unreadable count in ``count`` but in no window, and never
      are ``first_time``/``last_time``.
    - ``where``: a fixed filter, column to value: ``{"status": "closed"}`` is
      ``status = 'closed'``; a list is ``IN``, None ``IS NULL``. The values are
      bound parameters, never SQL text.
    - ``fields``: event attribute to column or :class:`JsonField`
      (``repair_order.closed.total`` reads ``fields["total"]``).
    - ``updated_at``: a column the host sets on every insert and update of a
      row (a watermark); a :class:`cohorts.HostRepository` reads it to see
      which customers' events changed.

    Example:
        >>> closed = HostEvents("repair_orders", customer="client_no", at="closed_at", where={"status": "closed"},
        ...                     fields={"total": "amount", "advisor": JsonField("details", "advisor")})
        >>> closed.where
        {'status': 'closed'}

    .. versionadded:: 0.2
    """

    table: str = attrs.field(converter=table_name)
    customer: str = attrs.field(converter=column_name)
    at: str = attrs.field(converter=column_name)
    where: Mapping[str, Any] = attrs.field(factory=dict, converter=_keyed_by_columns)
    fields: Mapping[str, Mapped] = attrs.field(factory=dict, converter=_column_names)
    updated_at: str | None = attrs.field(default=None, converter=_optional_column)

    def __attrs_post_init__(self) -> None:
        quoted(self.table)
        _column_name(self.customer, f"the customer column of {self.table}")
        _column_name(self.at, f"the time column of {self.table}")
        if self.updated_at is not None:
            _column_name(self.updated_at, f"the updated_at column of {self.table}")
        where = {}
        for column, value in self.where.items():
            what = f"the filter of {self.table} on {column!r}"
            where[_column_name(column, what)] = _filter_value(value, what)
        object.__setattr__(self, "where", where)
        for name, mapped in self.fields.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"the fields of {self.table}: an attribute name is non-empty text, not {name!r}")
            _mapped(mapped, f"field {name!r} of {self.table}")


def _category(name: object) -> str:
    if not isinstance(name, str) or not name or any(not part for part in name.split(".")):
        raise ValueError(f"an event category is a name such as 'appointment' or 'repair_order.closed', not {name!r}")
    if name.split(".")[0].lower() == "customer":
        raise ValueError(f"{name!r} is not an event category: 'customer' names the customer's attributes")
    return name


def _events(events: Mapping[str, HostEvents]) -> dict[str, HostEvents]:
    """The events mapping as a dict of its own (a typed converter: mypy reads the constructor's type from it)."""
    return dict(events)


@attrs.frozen
class HostTable:
    """A host's existing customers table (and event tables), mapped declaratively: rules run on them in place.

    ``columns`` maps attribute names (as rules write them after ``customer.``)
    to columns of ``table``, or to keys of a JSON column with
    :class:`JsonField`; ``id`` is its key column. ``events`` maps event
    categories (``appointment``, ``repair_order.closed``) to the host's tables
    with :class:`HostEvents`. A rule naming an unmapped attribute or category
    is a RuleError naming it.

    ``updated_at`` names a column the host sets on every insert and update of
    a customer's row (a watermark): a :class:`cohorts.HostRepository` reads it
    to see which customers changed, so groups follow the host's writes.

    On SQLite values are read by registered functions that call the functions
    of :mod:`cohorts.values`, so answers are exactly those of the in-memory
    evaluator. On PostgreSQL they are read with SQL: text is trimmed of
    spaces, NFC-normalised and lowercased with ICU (casefolding special cases
    such as ß differ), numbers, booleans and times must be in numeric, boolean
    and ``timestamptz`` (or ``date``) columns, or JSON numbers, booleans and
    ISO text. Phone conditions read the E.164 numbers a HostRepository keeps in
    a table of its own (``phone_table``); without one they are refused with an
    error that says so. ``docs/repositories.md`` has the details.

    Example:
        >>> import sqlalchemy as sa
        >>> engine = sa.create_engine("sqlite://")
        >>> with engine.begin() as conn:
        ...     _ = conn.exec_driver_sql("CREATE TABLE clients (client_no INTEGER PRIMARY KEY, town TEXT, extra TEXT)")
        ...     _ = conn.exec_driver_sql(
        ...         "INSERT INTO clients VALUES (1, 'LAVAL', '{\\"tags\\": [\\"VIP\\"]}'), (2, 'Lévis', NULL)")
        >>> clients = HostTable("clients", id="client_no", columns={"city": "town", "tags": JsonField("extra", "tags")})
        >>> clients.select(engine, 'customer.city = "laval" or customer.tags is unknown')
        {1, 2}
        >>> clients.select(engine, 'customer.tags contains "vip"')
        {1}

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       JSON fields (:class:`JsonField`) and events in the host's tables (:class:`HostEvents`).
    .. versionchanged:: 0.3
       ``updated_at`` watermarks, :meth:`count` and ``limit``.
    """

    table: str = attrs.field(converter=table_name)
    id: str = attrs.field(converter=column_name)
    columns: Mapping[str, Mapped] = attrs.field(converter=_column_names)
    schema: Schema | None = None
    tz: str = "UTC"
    region: str = DEFAULT_REGION
    events: Mapping[str, HostEvents] = attrs.field(factory=dict, converter=_events)
    updated_at: str | None = attrs.field(default=None, converter=_optional_column)

    def __attrs_post_init__(self) -> None:
        quoted(self.table)
        _column_name(self.id, f"the id column of {self.table}")
        if self.updated_at is not None:
            _column_name(self.updated_at, f"the updated_at column of {self.table}")
        for name, mapped in self.columns.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"the columns of {self.table}: an attribute name is non-empty text, not {name!r}")
            _mapped(mapped, f"attribute {name!r} of {self.table}")
        for category, events in self.events.items():
            _category(category)
            if not isinstance(events, HostEvents):
                raise TypeError(
                    f"events {category!r} of {self.table} map to a cohorts.HostEvents, not {type(events).__name__}"
                )
        resolve_tz(self.tz)

    def check(self, engine_or_connection: sa.Engine | sa.Connection) -> None:
        """Check the mapping against the database: every table and column it names must exist.

        Raises ValueError naming the attribute (or event category) and the
        missing table or column.
        """
        with contextlib.ExitStack() as stack:
            if isinstance(engine_or_connection, sa.Engine):
                conn = stack.enter_context(engine_or_connection.connect())
            else:
                conn = engine_or_connection
            inspector = sa.inspect(conn)
            found: dict[str, set[str]] = {}

            def columns_of(table: str, what: str) -> set[str]:
                if table not in found:
                    schema, _, name = table.rpartition(".")
                    if not inspector.has_table(name, schema=schema or None):
                        raise ValueError(f"{what}: the table {table} does not exist")
                    found[table] = {c["name"] for c in inspector.get_columns(name, schema=schema or None)}
                return found[table]

            def need(table: str, column: str, what: str) -> None:
                if column not in columns_of(table, what):
                    raise ValueError(f"{what}: the table {table} has no column {column!r}")

            need(self.table, self.id, "the id column")
            if self.updated_at is not None:
                need(self.table, self.updated_at, "the updated_at column")
            for name, mapped in self.columns.items():
                need(self.table, mapped if isinstance(mapped, str) else mapped.column, f"attribute {name!r}")
            for category, events in self.events.items():
                what = f"events {category!r}"
                need(events.table, events.customer, f"{what} (customer column)")
                need(events.table, events.at, f"{what} (time column)")
                if events.updated_at is not None:
                    need(events.table, events.updated_at, f"{what} (updated_at column)")
                for column in events.where:
                    need(events.table, column, f"{what} (filter)")
                for name, mapped in events.fields.items():
                    column = mapped if isinstance(mapped, str) else mapped.column
                    need(events.table, column, f"{what}, field {name!r}")

    def install_triggers(self, engine: sa.Engine | sa.Connection, state_prefix: str = "cohorts_") -> None:
        """Install triggers that log every write to the mapped tables in the change log of ``state_prefix``.

        On the customers table (its ``id`` column) and on every
        :class:`HostEvents` table (its ``customer`` column), one PL/pgSQL
        function per (table, column), named after ``state_prefix``, the table
        and the column, is called by

        - an ``AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW`` trigger, which
          logs the row's customer (both the old and the new one when an update
          changes it; NULL customers are skipped);
        - a ``BEFORE TRUNCATE FOR EACH STATEMENT`` trigger, which logs every
          customer of the table before it is emptied.

        Each id is logged as :func:`cohorts.sql.storage.encode_id` writes it:
        ``i:42`` when the column is an integer column, ``s:...`` (its text)
        otherwise, as :class:`cohorts.HostRepository` reads the ids. Row
        triggers rather than statement triggers with transition tables: a
        transition table serves a trigger of one event only (three triggers per
        table), and a row trigger sees both ids of an update that moves a row
        to another customer without joining the old and new rows. The cost is
        one insert into the change log per written row, inside the host's
        transaction. The functions run with the installer's rights (``SECURITY
        DEFINER``, with a fixed search path and every name qualified), so the
        roles that write the host's tables need no rights on cohorts' tables,
        and a write is logged whatever the writer's search path. The change
        log table is created when missing.

        On SQLite, three triggers per (table, column), ``AFTER INSERT``,
        ``AFTER UPDATE`` and ``AFTER DELETE``, named ``{name}_i``, ``_u``,
        ``_d``, log the same in SQL: SQLite cannot call the encoder, so a value
        is logged as ``'i:' || id`` when it is stored as an integer and ``'s:'
        || id`` otherwise (integer or text ids; SQLite has no TRUNCATE, and a
        ``DELETE`` without ``WHERE`` fires the row triggers). Tables of an
        attached database are refused with NotImplementedError: an SQLite
        trigger writes only its own database's tables.

        Installing again replaces the functions and triggers (idempotent). A
        table or column of the mapping that does not exist is a ValueError
        naming it (see :meth:`check`).

        .. versionadded:: 0.3
        """
        _check_prefix(state_prefix)
        with _transaction(engine) as conn:
            dialect = find_dialect(conn)
            self.check(conn)
            dialect.lock(conn, _DDL_LOCK)
            metadata = sa.MetaData()
            log = change_log(metadata, state_prefix)
            metadata.create_all(conn)
            dialect.prepare_change_log(conn, log.name)
            dialect.install_change_triggers(conn, log.name, self._watched(state_prefix))

    def remove_triggers(self, engine: sa.Engine | sa.Connection, state_prefix: str = "cohorts_") -> None:
        """Remove the triggers (and their functions) that :meth:`install_triggers` installed for ``state_prefix``.

        Missing ones are skipped; the change log is kept. Writes after this are
        seen only through watermarks and :meth:`cohorts.HostRepository.changed`.

        .. versionadded:: 0.3
        """
        _check_prefix(state_prefix)
        with _transaction(engine) as conn:
            dialect = find_dialect(conn)
            dialect.lock(conn, _DDL_LOCK)
            dialect.remove_change_triggers(conn, self._watched(state_prefix))

    def _watched(self, state_prefix: str) -> list[tuple[str, str, str]]:
        """What triggers watch: (name, table, customer column) for the id column and each events table's customer."""
        pairs = [(self.table, self.id), *((e.table, e.customer) for e in self.events.values())]
        return [(_trigger_name(state_prefix, table, column), table, column) for table, column in dict.fromkeys(pairs)]

    def to_sql(
        self,
        rule: RuleLike,
        dialect: str | Dialect = "postgresql",
        *,
        now: dt.datetime | None = None,
        groups: GroupLookup | None = None,
        phone_table: str | None = None,
    ) -> tuple[str, dict[str, Any] | list[Any]]:
        """The query selecting the ids (column ``id``) of the rows ``rule`` is true for, and its parameters.

        On SQLite the query calls functions that :meth:`select` registers on its connection.
        ``phone_table`` names a table of ``(attribute, customer, phone)`` rows, the E.164 number of
        each customer's phone attributes keyed by the id as text, that phone conditions read on
        PostgreSQL, which cannot parse phone numbers: the one a :class:`cohorts.HostRepository`
        keeps up to date (its ``phone_table``).
        """
        tz = resolve_tz(self.tz)
        compiler = HostCompiler(self, find_dialect(dialect), tz, moment(now, tz), groups, phone_table=phone_table)
        sql = compiler.select(as_rule(rule))
        return compiler.param.render(sql)

    def select(
        self,
        engine_or_connection: sa.Engine | sa.Connection,
        rule: RuleLike,
        now: dt.datetime | None = None,
        *,
        groups: GroupLookup | None = None,
        phone_table: str | None = None,
        limit: int | None = None,
    ) -> set[Any]:
        """The ids of the rows of the host's table for which ``rule`` is true at ``now``.

        ``limit`` keeps the first ``limit`` ids in the id column's order.
        """
        check_limit(limit)
        with self._query(engine_or_connection, rule, now, groups, phone_table) as (conn, sql, params):
            if limit is not None:
                sql = f"{sql} ORDER BY 1 LIMIT {limit:d}"
            return {row[0] for row in conn.exec_driver_sql(sql, params) if row[0] is not None}

    def count(
        self,
        engine_or_connection: sa.Engine | sa.Connection,
        rule: RuleLike,
        now: dt.datetime | None = None,
        *,
        groups: GroupLookup | None = None,
        phone_table: str | None = None,
    ) -> int:
        """How many rows of the host's table ``rule`` is true for at ``now``, counted by the database."""
        with self._query(engine_or_connection, rule, now, groups, phone_table) as (conn, sql, params):
            counted = f"SELECT count(*) FROM ({sql}) AS matched WHERE matched.{quoted(self.id)} IS NOT NULL"  # noqa: S608 - names are ours; values are bound
            return int(conn.exec_driver_sql(counted, params).scalar_one())

    def explain(
        self,
        engine_or_connection: sa.Engine | sa.Connection,
        rule: RuleLike,
        now: dt.datetime | None = None,
        *,
        groups: GroupLookup | None = None,
        phone_table: str | None = None,
    ) -> str:
        """The database's plan for ``rule`` (EXPLAIN QUERY PLAN on SQLite, EXPLAIN on PostgreSQL), as text."""
        with self._query(engine_or_connection, rule, now, groups, phone_table) as (conn, sql, params):
            rows = conn.exec_driver_sql(find_dialect(conn).explain_prefix + sql, params).all()
        return "\n".join(str(row[-1]) for row in rows)

    @contextlib.contextmanager
    def _query(
        self,
        engine_or_connection: sa.Engine | sa.Connection,
        rule: RuleLike,
        now: dt.datetime | None,
        groups: GroupLookup | None,
        phone_table: str | None,
    ) -> Iterator[tuple[sa.Connection, str, Any]]:
        """A connection ready for the rule's query (SQLite's functions registered), the SQL and its parameters."""
        with contextlib.ExitStack() as stack:
            if isinstance(engine_or_connection, sa.Engine):
                conn = stack.enter_context(engine_or_connection.connect())
            else:
                conn = engine_or_connection
            found = find_dialect(conn)
            sql, params = self.to_sql(rule, found.name, now=now, groups=groups, phone_table=phone_table)
            found.host_connection(conn)
            yield conn, sql, driver_params(params)


class HostCompiler(Compiler):
    """Compiles rules onto a host's tables: attributes read from columns and JSON fields, events from
    :class:`HostEvents` tables. The boolean structure and the event aggregates are the repository
    compiler's; this class says where values are and how they are read.

    On PostgreSQL, times are ``timestamptz`` values compared with ``timestamptz`` parameters, so a
    btree index on a time column serves ``< 730 days ago``; on SQLite, integer microseconds.
    """

    def __init__(
        self,
        host: HostTable,
        dialect: Dialect,
        tz: dt.tzinfo,
        now: dt.datetime,
        groups: GroupLookup | None,
        *,
        inline: bool = False,
        phone_table: str | None = None,
    ) -> None:
        super().__init__(dialect, host.schema, tz, now, groups)
        self.host = host
        # Where the database cannot read phone numbers, a table of (attribute, customer, phone) E.164 numbers.
        self.phone_table = phone_table
        self.region = host.region
        # Inline, the expression goes in the host's own query, which names the table itself.
        self.inline = inline
        self.row = quoted(host.table) if inline else "c"
        self.customer_key = f"{self.row}.{quoted(host.id)}"

    @property
    def tz_name(self) -> str:
        return self.host.tz

    def select(self, rule: Node, among: str | None = None) -> str:
        where = self.where(rule)
        if among is not None:
            where = f"{self.customer_key} IN ({among}) AND {where}"
        return f"{self.with_clause()}SELECT {self.customer_key} FROM {quoted(self.host.table)} AS c WHERE {where}"  # noqa: S608 - names are ours; values are bound

    def rows(self) -> tuple[str, str]:
        return quoted(self.host.table), self.customer_key

    def membership(self, group: str) -> str:
        members = sorted(map(str, self.members(group)))
        return f"({self.dialect.in_texts(self.bind, f'CAST({self.customer_key} AS TEXT)', members)})"

    def check(self, x: str, symbol: str, value: Any, kind: Kind | None) -> str:
        if kind is Kind.TIME and self.dialect.host_native_times:  # the database's times, not microseconds
            time = self.dialect.host_time
            if symbol == "in":
                values = sorted(value)
                if not values:
                    return FALSE
                return f"{x} IN ({', '.join(time(self.bind, v) for v in values)})"
            return f"{x} {COMPARISONS[symbol]} {time(self.bind, value)}"
        return super().check(x, symbol, value, kind)

    # -- where values are, and how they are read

    def source(self, alias: str, mapped: Mapped) -> tuple[str, bool]:
        """The SQL of a mapped value (a column, or the JSON value at a JSON field's keys), and whether it is JSON."""
        if isinstance(mapped, str):
            return f"{alias}.{quoted(mapped)}", False
        return self.dialect.json_at(self.bind, f"{alias}.{quoted(mapped.column)}", mapped.keys), True

    def read(self, source: str, is_json: bool, reading: str, condition: Condition) -> str:
        """``source`` read as values.py reads it (``reading`` is a shadow field: t, n, b, m, p, y, mo, d, w, or k
        for known): NULL when unknown. A JSON array or object reads as NULL (but is known)."""
        try:
            return self.dialect.host_read(self, source, is_json, reading)
        except RuleError as error:
            raise RuleError(f"{condition}: {error}") from None

    def time_part(self, time: str, reading: str) -> str:
        """The year, month, day or ISO weekday of ``time`` (as this compiler reads times) in the host's zone."""
        return self.dialect.host_part(self, time, reading)

    def json_elements(self, source: str, reading: str, kind: Kind | None, spec: Spec) -> str:
        """SQL true when the JSON value ``source`` is an array with an element whose reading passes ``spec``."""
        return self.dialect.host_elements(self, source, reading, lambda v: self.test(spec, v, kind))

    # -- conditions on the customer's attributes

    def mapped(self, shape: Shape) -> Mapped:
        """Where the condition's customer attribute is: its column or JSON field."""
        path = shape.condition.path
        mapped = self.host.columns.get(path.attribute)
        if mapped is None:
            known = ", ".join(sorted(self.host.columns)) or "none"
            raise RuleError(
                f"{shape.condition}: {path} is not mapped to a column of {self.host.table} (mapped: {known})"
            )
        return mapped

    def customer_condition(self, shape: Shape, holds: bool) -> str:
        path, kind = shape.condition.path, shape.kind
        source, is_json = self.source(self.row, self.mapped(shape))
        if path.part is not None:
            reading, value_kind = PART_FIELD[path.part.value], Kind.NUMBER
        elif kind is None:
            reading, value_kind = "k", Kind.TEXT
        else:
            reading, value_kind = KIND_FIELD[kind], kind
        if reading == "p" and not self.dialect.host_phones and self.phone_table is not None:
            x = self.phone(path.attribute)
        elif path.part is not None:
            x = part_sql(path.part, lambda field: self.read(source, is_json, field, shape.condition))
        else:
            x = self.read(source, is_json, reading, shape.condition)
        # A JSON array is a list: its elements are tested as the evaluator tests a list's.
        listed = is_json and shape.is_list and path.part is None and kind is not None
        if shape.op is Op.IS_KNOWN:
            known = f"({x} IS NOT NULL)"
            if listed:
                known = f"({known} OR {self.json_elements(source, reading, value_kind, ((),))})"
            return known if holds else f"NOT {known}"
        spec = self.spec(shape)
        if not listed:
            if holds:
                return self.test(spec, x, value_kind)
            return f"({x} IS NOT NULL AND NOT {self.test(spec, x, value_kind)})"
        elements = element_spec(shape, spec)
        if holds:
            return (
                f"({self.test(spec, x, value_kind)} OR {self.json_elements(source, reading, value_kind, elements)})"
            )
        scalar = f"({x} IS NOT NULL AND NOT {self.test(spec, x, value_kind)})"
        present = self.json_elements(source, reading, value_kind, ((),))
        passing = self.json_elements(source, reading, value_kind, elements)
        return f"({scalar} OR ({present} AND NOT {passing}))"

    def customer_value(self, shape: Shape) -> str:
        path, kind = shape.condition.path, shape.kind
        assert kind is not None
        source, is_json = self.source(self.row, self.mapped(shape))
        if path.part is not None:
            return part_sql(path.part, lambda field: self.read(source, is_json, field, shape.condition))
        return self.read(source, is_json, KIND_FIELD[kind], shape.condition)

    def phone(self, attribute: str) -> str:
        """The E.164 number of the customer's ``attribute`` in the phone table (NULL when it is not a phone number)."""
        assert self.phone_table is not None
        ph = self.alias("ph")
        return (
            f"(SELECT {ph}.phone FROM {quoted(self.phone_table)} AS {ph} WHERE {ph}.attribute ="  # noqa: S608 - names are ours; values are bound
            f" {self.bind(attribute, 'TEXT')} AND {ph}.customer = CAST({self.customer_key} AS TEXT))"
        )

    # -- conditions on events: the repository compiler's, reading the host's event tables

    def host_events(self, shape: Shape) -> HostEvents:
        category = shape.condition.path.category
        events = self.host.events.get(category)
        if events is None:
            mapped = ", ".join(sorted(self.host.events)) or "none"
            raise RuleError(
                f'{shape.condition}: the host table {self.host.table} maps no events named "{category}"'
                f" (mapped: {mapped})"
            )
        return events

    def event_source(self, shape: Shape, e: str) -> tuple[str, str]:
        rows, key = self.event_rows(shape, e)
        return f"SELECT {key} AS customer_pk FROM {rows}", key  # noqa: S608 - names are ours; values are bound

    def event_rows(self, shape: Shape, e: str) -> tuple[str, str]:
        events = self.host_events(shape)
        key = f"{e}.{quoted(events.customer)}"
        where = [f"{key} IS NOT NULL"]
        for column, value in events.where.items():
            name = f"{e}.{quoted(column)}"
            if value is None:
                where.append(f"{name} IS NULL")
            elif isinstance(value, tuple):
                where.append(f"{name} IN ({', '.join(self.param(v) for v in value)})" if value else "(1 = 0)")
            else:
                where.append(f"{name} = {self.param(value)}")
        return f"{quoted(events.table)} AS {e} WHERE {' AND '.join(where)}", key

    def event_key(self, shape: Shape, e: str) -> str:
        return f"{e}.{quoted(self.host_events(shape).customer)}"

    def shift_time(self, time: str, delta: dt.timedelta) -> str:
        if self.dialect.host_native_times:  # the database's times: an interval of whole microseconds
            return f"({time} + make_interval(secs => {delta // dt.timedelta(microseconds=1):d} / 1000000.0))"
        return super().shift_time(time, delta)

    def event_time(self, shape: Shape, e: str) -> str:
        column = f"{e}.{quoted(self.host_events(shape).at)}"
        return self.read(column, False, "m", shape.condition)

    def event_timed(self, shape: Shape, e: str) -> str | None:
        return f"{self.event_time(shape, e)} IS NOT NULL"

    def event_time_part(self, shape: Shape, e: str, part: DatePart) -> str:
        column = f"{e}.{quoted(self.host_events(shape).at)}"
        return part_sql(part, lambda field: self.read(column, False, field, shape.condition))

    def event_mapped(self, shape: Shape, e: str) -> tuple[str, bool]:
        events = self.host_events(shape)
        attribute = shape.condition.path.attribute
        mapped = events.fields.get(attribute)
        if mapped is None:
            known = ", ".join(sorted(events.fields)) or "none"
            raise RuleError(
                f"{shape.condition}: {shape.condition.path} is not mapped to a column of {events.table}"
                f" (mapped: {known})"
            )
        return self.source(e, mapped)

    def event_value(self, shape: Shape, e: str, field: str, kind: Kind) -> str:
        source, is_json = self.event_mapped(shape, e)
        return self.read(source, is_json, field, shape.condition)

    def event_known(self, shape: Shape, e: str) -> str:
        source, is_json = self.event_mapped(shape, e)
        return f"{self.read(source, is_json, 'k', shape.condition)} IS NOT NULL"

    def extreme_part(self, shape: Shape, spec: Spec, holds: bool, base: str, e: str, key: str) -> str:
        path = shape.condition.path
        assert path.part is not None
        extreme = "min" if path.aggregate is Aggregate.FIRST_TIME else "max"
        latest = f"{extreme}({self.event_time(shape, e)})"
        time = part_sql(path.part, lambda field: self.time_part(latest, field))
        test = self.test(spec, time, Kind.NUMBER)
        return self.semi(f"{base} GROUP BY {key} HAVING {test if holds else 'NOT ' + test}", negate=False)

