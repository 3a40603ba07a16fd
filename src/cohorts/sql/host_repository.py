"""The host's own tables as a repository: groups, campaigns and reports over rows cohorts does not own.

A :class:`HostRepository` binds a :class:`~cohorts.sql.host.HostTable` to its
database. Customers are read in place (the mapped columns and JSON keys of the
host's table, the events of its :class:`~cohorts.sql.host.HostEvents`
tables); rules run there as one query. cohorts keeps only its own state in
tables of the same database whose names start with ``state_prefix``: the
change log, the groups' definitions, marks, memberships and history, and the
campaign ledger.

Groups follow the host's data through the change log, which is fed by

- the writes made through the repository (campaign handlers, imports), which
  go to the host's :class:`HostWriter`;
- ``updated_at`` watermark columns of the host's tables, read at every catch-up;
- :meth:`HostRepository.changed`, which the host calls after its own writes
  (deletes included), in the transaction that writes, when its tables have no
  watermark;
- triggers on the host's tables (:meth:`HostRepository.install_triggers`, PostgreSQL
  and SQLite), which log every row written, deletes included.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable, Collection, Container, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path as FilePath
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

import attrs
import sqlalchemy as sa

from ..ast import Condition, Node, Path, RuleLike, walk
from ..errors import HostWriteError
from ..model import Customer, CustomerId, Event
from ..repository import UnknownCustomerError, check_customer, check_events, consent_attribute, new_events
from ..schema import AttributeType, Schema, default_schema
from ..semantics import as_rule, moment
from ..values import resolve_tz, to_phone
from .compose import RuleClause, ids_where, install_functions, where
from .dialects import Dialect, dialect
from .host import HostCompiler, HostEvents, HostTable, JsonField, Mapped, driver_params
from .session import Session, Transactional, log_changes
from .storage import change_log, decode_id, encode_id

if TYPE_CHECKING:
    from ..timing import Plan

__all__ = ["HostRepository", "HostWriter"]

GroupLookup: TypeAlias = Callable[[str], Container[CustomerId]]

_CHUNK = 1000  # ids per IN list
_PAGE = 5000  # rows per page when iterating
_DDL_LOCK = 7302021  # creating the state tables, where the dialect has a lock
_PHONE_LOCK = 7302022  # bringing the phone table up to date: one process at a time
_ABSENT = object()
_WRITER_METHODS = ("insert", "update", "add_events", "delete")
_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}\Z")


@runtime_checkable
class HostWriter(Protocol):
    """Writes to the host's tables, supplied by the host: cohorts never writes to tables it does not own.

    Each method gets the connection of the transaction in progress, so the
    host's writes commit (or roll back) with cohorts' own rows, such as the
    campaign ledger's. A method the host does not support raises
    :class:`cohorts.HostWriteError` saying so. Attribute and event names are
    those of the mapping (``points``, ``stage``, ``campaign.points``).
    """

    def insert(self, conn: sa.Connection, customer: Customer) -> None:
        """Store a new customer (an import of an id the host's table lacks)."""
        ...

    def update(self, conn: sa.Connection, customer_id: CustomerId, values: Mapping[str, Any]) -> None:
        """Set attributes of a stored customer (None: remove it); only the attributes that change are given."""
        ...

    def add_events(self, conn: sa.Connection, customer_id: CustomerId, events: Sequence[Event]) -> None:
        """Record events of a stored customer (a campaign's ``campaign.points``, ``campaign.stage``...)."""
        ...

    def delete(self, conn: sa.Connection, customer_ids: Sequence[CustomerId]) -> None:
        """Remove stored customers."""
        ...


def _engine(url_or_engine: object) -> sa.Engine:
    try:
        from sqlalchemy.ext.asyncio import AsyncEngine
    except ImportError:  # pragma: no cover - part of SQLAlchemy 2
        AsyncEngine = ()  # type: ignore[assignment,misc]
    if isinstance(url_or_engine, AsyncEngine):
        raise TypeError(
            "HostRepository runs its queries synchronously: pass the AsyncEngine's sync_engine"
            " (HostRepository(async_engine.sync_engine, ...)), and call cohorts from async code through"
            " a thread, e.g. await asyncio.to_thread(groups.members, 'VIP')"
        )
    if not isinstance(url_or_engine, sa.Engine | str | FilePath):
        raise TypeError(f"HostRepository takes an SQLAlchemy Engine or a database URL, not {url_or_engine!r}")
    from .repository import _engine as prepared

    return prepared(url_or_engine)


def _plain_id(value: object) -> CustomerId | None:
    """A customer id as cohorts keeps ids: an integer or text (a UUID or other key as its text)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | str):
        return value
    return str(value)


_KEPT = (str, int, float, Decimal, dt.date, list, dict)
_KEPT_EXACTLY = frozenset({type(None), *_KEPT, dt.datetime, bool})


def _plain(value: object) -> object:
    """A value the host's database gave, as a customer's attribute holds it (_ABSENT: left out)."""
    if type(value) in _KEPT_EXACTLY or isinstance(value, _KEPT):  # the exact types first: most values
        return value
    if isinstance(value, uuid.UUID | dt.time):
        return str(value)
    return _ABSENT  # bytes, intervals...: nothing a rule reads


def _dig(document: object, keys: tuple[str, ...]) -> object:
    """The JSON value at ``keys`` (_ABSENT when a key is missing), parsing JSON text first."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError:
            return _ABSENT
    for key in keys:
        if not isinstance(document, dict) or key not in document:
            return _ABSENT
        document = document[key]
    return document


def _read(row: Mapping[Any, Any], mapped: Mapped) -> object:
    if isinstance(mapped, JsonField):
        return _dig(row[mapped.column], mapped.keys)
    return _plain(row[mapped])


def _table(name: str, columns: Iterable[str]) -> sa.TableClause:
    schema, _, table = name.rpartition(".")
    return sa.table(table, *(sa.column(c) for c in dict.fromkeys(columns)), schema=schema or None)


def _column_of(mapped: Mapped) -> str:
    return mapped.column if isinstance(mapped, JsonField) else mapped


def _filters(table: sa.TableClause, where: Mapping[str, Any]) -> list[sa.ColumnElement[bool]]:
    tests: list[sa.ColumnElement[bool]] = []
    for column, value in where.items():
        if value is None:
            tests.append(table.c[column].is_(None))
        elif isinstance(value, tuple):
            tests.append(table.c[column].in_(value))
        else:
            tests.append(table.c[column] == value)
    return tests


def _mark(value: object) -> list[Any] | None:
    """A watermark value as JSON (None: no row yet)."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return ["datetime", value.isoformat()]
    if isinstance(value, dt.date):
        return ["date", value.isoformat()]
    if isinstance(value, bool):
        return ["int", int(value)]
    if isinstance(value, int | float):
        return ["int" if isinstance(value, int) else "float", value]
    if isinstance(value, Decimal):
        return ["decimal", str(value)]
    return ["text", str(value)]


def _unmark(mark: list[Any]) -> object:
    kind, value = mark
    if kind == "datetime":
        return dt.datetime.fromisoformat(value)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "decimal":
        return Decimal(value)
    return value


@attrs.frozen
class _Watched:
    """A watermarked table: which column holds the customer's id, which the time of the row's last write."""

    table: str
    customer: str
    updated_at: str

    @property
    def key(self) -> str:
        return f"{self.table}.{self.updated_at}"


class HostRepository(Transactional):
    """The host's own tables as a cohorts repository: customers read in place, cohorts' state beside them.

    ``engine`` is the host's SQLAlchemy Engine (or a URL), SQLite or
    PostgreSQL; an ``AsyncEngine`` is refused with the way to pass its
    ``sync_engine``. ``host_table`` maps the host's customers table (and event
    tables) to attributes and event categories. It is accepted wherever a
    repository is: :class:`cohorts.Groups`, :func:`cohorts.audience`,
    :func:`cohorts.run_campaigns`, :func:`cohorts.report`.

    cohorts writes only its own tables, named ``state_prefix`` + ``changes``,
    ``groups``, ``group_marks``... (a prefix that a :class:`cohorts.SQLRepository`
    already uses is refused). Writes to customers (campaign handlers' points
    and stage, imports) go to ``writer``, a :class:`HostWriter`; without one
    they raise :class:`cohorts.HostWriteError`, and :func:`cohorts.run_campaigns`
    refuses a campaign whose actions would write before running anything.

    Groups see the host's writes through ``updated_at`` watermark columns of
    the :class:`HostTable` and :class:`HostEvents`, and through :meth:`changed`,
    which the host calls for the customers it wrote (its deletes, and every
    write to a table without a watermark). Or :meth:`install_triggers` installs
    triggers that log every write to the mapped tables, deletes included.

    Example:
        >>> import sqlalchemy as sa
        >>> from cohorts import Groups, HostTable
        >>> engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
        >>> with engine.begin() as conn:
        ...     _ = conn.exec_driver_sql("CREATE TABLE clients (client_no INTEGER PRIMARY KEY, town TEXT)")
        ...     _ = conn.exec_driver_sql("INSERT INTO clients VALUES (1, 'Laval'), (2, 'Lévis')")
        >>> repository = HostRepository(engine, HostTable("clients", id="client_no", columns={"city": "town"}))
        >>> groups = Groups(repository)
        >>> _ = groups.create("Laval", 'customer.city = "laval"')
        >>> sorted(groups.members("Laval"))
        [1]
        >>> with engine.begin() as conn:
        ...     _ = conn.exec_driver_sql("UPDATE clients SET town = 'Laval' WHERE client_no = 2")
        ...     repository.changed(2, connection=conn)
        >>> sorted(groups.members("Laval"))
        [1, 2]

    .. versionadded:: 0.3
    """

    def __init__(
        self,
        engine: sa.Engine | str | FilePath,
        host_table: HostTable,
        *,
        writer: HostWriter | None = None,
        state_prefix: str = "cohorts_",
    ) -> None:
        if not isinstance(host_table, HostTable):
            raise TypeError(f"HostRepository maps a cohorts.HostTable, not {type(host_table).__name__}")
        if writer is not None and not isinstance(writer, HostWriter):
            missing = [m for m in _WRITER_METHODS if not callable(getattr(writer, m, None))]
            raise TypeError(f"a writer is a cohorts.HostWriter; {type(writer).__name__} lacks {', '.join(missing)}")
        if not isinstance(state_prefix, str) or not _PREFIX.match(state_prefix):
            raise ValueError(f"state_prefix starts plain table names, such as 'cohorts_', not {state_prefix!r}")
        self.engine = _engine(engine)
        self._owns_engine = not isinstance(engine, sa.Engine)
        self.dialect: Dialect = dialect(self.engine)
        self.host_table = host_table
        self.writer = writer
        self.state_prefix = state_prefix
        self._schema = host_table.schema
        self._tz = resolve_tz(host_table.tz)
        self._session = Session(self.engine, f"cohorts_host_connection_{id(self)}")
        self._metadata = sa.MetaData()
        self._changes = change_log(self._metadata, state_prefix)
        # Where the database cannot parse phone numbers, their E.164 form, kept here for phone conditions.
        self._phones: sa.Table | None = None
        self._phones_at: sa.Table | None = None
        if not self.dialect.host_phones:
            self._phones = sa.Table(
                f"{state_prefix}phones",
                self._metadata,
                sa.Column("attribute", sa.Text, primary_key=True),
                sa.Column("customer", sa.Text, primary_key=True),
                sa.Column("phone", sa.Text, nullable=False),
            )
            self._phones_at = sa.Table(
                f"{state_prefix}phones_at",
                self._metadata,
                sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                sa.Column("attributes", sa.Text, nullable=False),
                sa.Column("position", sa.Text, nullable=False),
            )
        self._customers = _table(
            host_table.table, [host_table.id, *map(_column_of, host_table.columns.values())]
        )
        self._events = {
            category: _table(
                events.table,
                [events.customer, events.at, *events.where, *map(_column_of, events.fields.values())],
            )
            for category, events in host_table.events.items()
        }
        self._watched = self._watermarks()
        self._id_sql_type: str | None = None  # the SQL type of the host's id column, as reflected
        try:
            self._id_type = self._create()
        except BaseException:
            self.close()  # a mapping the database lacks: no connection of an engine made here stays open
            raise
        install_functions(self.engine)  # where() expressions run on the host's own sessions too

    def __repr__(self) -> str:
        url = self.engine.url.render_as_string(hide_password=True)
        return f"<HostRepository {self.host_table.table} at {url}>"

    def close(self) -> None:
        """Close the database connections, when the repository made its engine from a URL.

        An engine passed in stays the host's to dispose of (as for :meth:`cohorts.SQLRepository.close`).

        .. versionadded:: 0.3
        """
        if self._owns_engine:
            self.engine.dispose()

    def _watermarks(self) -> tuple[_Watched, ...]:
        host = self.host_table
        watched = []
        if host.updated_at is not None:
            watched.append(_Watched(host.table, host.id, host.updated_at))
        for events in host.events.values():
            if events.updated_at is not None:
                watched.append(_Watched(events.table, events.customer, events.updated_at))
        return tuple(dict.fromkeys(watched))

    def _create(self) -> type | None:
        """Create the state tables; the Python type of the host's ids (None when the column is untyped)."""
        with self.engine.begin() as conn:
            inspector = sa.inspect(conn)
            if inspector.has_table(f"{self.state_prefix}customers"):
                raise ValueError(
                    f"the tables {self.state_prefix}* of this database belong to a cohorts.SQLRepository:"
                    " give the HostRepository its own state_prefix, such as state_prefix='cohorts_host_'"
                )
            self.host_table.check(conn)
            self.dialect.lock(conn, _DDL_LOCK)
            self._metadata.create_all(conn)
            self.dialect.prepare_change_log(conn, self._changes.name)
            schema, _, name = self.host_table.table.rpartition(".")
            for column in inspector.get_columns(name, schema=schema or None):
                if column["name"] == self.host_table.id:
                    if not isinstance(column["type"], sa.types.NullType):
                        self._id_sql_type = column["type"].compile(conn.dialect)
                    try:
                        python = column["type"].python_type
                    except NotImplementedError:
                        return None
                    return python if python in (int, str) else None
        return None

    # -- settings

    @property
    def schema(self) -> Schema:
        """The schema rules are checked against: the HostTable's, or the default one."""
        return self._schema if self._schema is not None else default_schema()

    @property
    def declared_schema(self) -> Schema | None:
        """The HostTable's schema (None: undeclared attributes are typed by the rule's values)."""
        return self._schema

    @property
    def tz(self) -> dt.tzinfo:
        """The HostTable's time zone."""
        return self._tz

    @property
    def region(self) -> str:
        """The HostTable's default country of phone numbers."""
        return self.host_table.region

    @property
    def mapped_attributes(self) -> frozenset[str]:
        """The customer attributes the HostTable maps (any other is unknown for every customer)."""
        return frozenset(self.host_table.columns)

    @property
    def phone_table(self) -> str | None:
        """The table of E.164 phone numbers phone conditions read, where the database cannot parse them.

        On PostgreSQL, ``{state_prefix}phones`` holds ``(attribute, customer, phone)``: for each
        mapped customer attribute the schema declares a phone, each customer's number in E.164 form
        (read as :func:`cohorts.values.to_phone` reads it, in the HostTable's region), keyed by the
        id as text; a value that is not a phone number has no row. cohorts fills it at the first
        phone condition and brings it up to date before each query from the changes groups see
        (watermarks, triggers, :meth:`changed`). None on SQLite, which parses phone numbers in SQL.
        """
        phones = self._phones
        return None if phones is None or not self._phone_attributes() else phones.name

    @property
    def read_only_reason(self) -> str | None:
        """Why writes to customers are refused (None: they go to the writer)."""
        if self.writer is not None:
            return None
        return (
            f"the HostRepository over {self.host_table.table} has no writer: writes to the host's customers go"
            " through HostRepository(..., writer=...), a cohorts.HostWriter the host supplies"
        )

    def _mapping(self) -> HostTable:
        if self._schema is self.host_table.schema:
            return self.host_table
        return attrs.evolve(self.host_table, schema=self._schema)

    # -- the change log

    def changed(self, *customer_ids: CustomerId, connection: sa.Connection | None = None) -> None:
        """Record that the host wrote these customers (inserted, updated, deleted, or changed their events).

        Call it in the transaction that writes (``connection``), so the record
        commits with the write; groups see the change at their next read. Not
        needed for tables with an ``updated_at`` watermark, except for deletes.
        """
        ids = [i for i in (_plain_id(c) for c in customer_ids) if i is not None]
        if connection is not None:
            self._log(connection, ids)
            return
        with self.connect() as conn:
            self._log(conn, ids)

    def install_triggers(self) -> None:
        """Install triggers that log every write to the host's mapped tables (deletes, and TRUNCATE on
        PostgreSQL, included) in this repository's change log: groups follow the host's writes without
        watermarks or :meth:`changed`. See :meth:`cohorts.HostTable.install_triggers`.

        .. versionadded:: 0.3
        """
        self.host_table.install_triggers(self.engine, self.state_prefix)

    def remove_triggers(self) -> None:
        """Remove the triggers :meth:`install_triggers` installed (see :meth:`cohorts.HostTable.remove_triggers`).

        .. versionadded:: 0.3
        """
        self.host_table.remove_triggers(self.engine, self.state_prefix)

    def _log(self, conn: sa.Connection, customer_ids: Iterable[CustomerId]) -> None:
        log_changes(conn, self._changes, customer_ids)

    def change_position(self) -> str:
        """The position after every change so far: the change log's, and each watermark's."""
        with self.connect() as conn:
            marks = {}
            for watched in self._watched:
                table = _table(watched.table, [watched.updated_at])
                latest = conn.execute(sa.select(sa.func.max(table.c[watched.updated_at]))).scalar()
                marks[watched.key] = _mark(latest)
            return json.dumps({"log": self.dialect.change_position(conn, self._changes.name), "marks": marks})

    def changes_since(self, position: str) -> tuple[list[CustomerId], str]:
        """The customers written after ``position`` (repeats possible), and the new position.

        A watermarked row is read again while its ``updated_at`` is the latest
        (a write committed later in the same instant is not missed).
        """
        stored = json.loads(position)
        found: list[CustomerId] = []
        marks: dict[str, Any] = {}
        with self.connect() as conn:
            keys, log = self.dialect.changes_since(conn, self._changes.name, stored["log"])
            found.extend(decode_id(key) for key in keys)
            for watched in self._watched:
                mark = stored["marks"].get(watched.key)
                table = _table(watched.table, [watched.customer, watched.updated_at])
                column = table.c[watched.updated_at]
                query = sa.select(table.c[watched.customer], column).where(column.is_not(None))
                if mark is not None:
                    query = query.where(column >= _unmark(mark))
                latest = _unmark(mark) if mark is not None else None
                for key, at in conn.execute(query):
                    customer_id = _plain_id(key)
                    if customer_id is not None:
                        found.append(customer_id)
                    if latest is None or at > latest:
                        latest = at
                marks[watched.key] = _mark(latest)
        return found, json.dumps({"log": log, "marks": marks})

    def forget_changes(self, position: str) -> None:
        """Delete the change log's rows before ``position`` (the phone table takes in what it has not yet)."""
        with self.connect() as conn:
            self._sync_phones()
            self.dialect.forget_changes(conn, self._changes.name, json.loads(position)["log"])

    # -- the phone table

    def _phone_attributes(self) -> list[str]:
        """The mapped customer attributes the schema declares phone numbers, in name order."""
        schema = self.schema
        return sorted(
            name
            for name in self.host_table.columns
            if schema.lookup(Path("customer", name)) is AttributeType.PHONE
        )

    def _sync_phones(self, rule: RuleLike | None = None) -> None:
        """Bring the phone table up to date for ``rule`` (nothing when it reads no phone attribute): filled
        at first, then for the customers changed since. Without a rule, only a table already filled."""
        phones, at = self._phones, self._phones_at
        attributes = self._phone_attributes()
        if phones is None or at is None or not attributes:
            return
        if rule is not None:
            read = {n.path.attribute for n in walk(as_rule(rule)) if isinstance(n, Condition) and n.path.is_customer}
            if read.isdisjoint(attributes):
                return
        with self.connect() as conn:
            self.dialect.lock(conn, _PHONE_LOCK)
            stored = conn.execute(sa.select(at.c.attributes, at.c.position).where(at.c.id == 1)).first()
            if stored is None and rule is None:
                return
            if stored is not None and json.loads(stored.attributes) == attributes:
                changed, position = self.changes_since(stored.position)
                keys = self._keys(changed)
                for start in range(0, len(keys), _CHUNK):
                    chunk = keys[start : start + _CHUNK]
                    conn.execute(phones.delete().where(phones.c.customer.in_([str(k) for k in chunk])))
                    key = self._customers.c[self.host_table.id]
                    self._write_phones(conn, attributes, self._rows(conn, key.in_(chunk)))
            else:  # first use, or the phone attributes changed: every customer
                position = self.change_position()
                conn.execute(phones.delete())
                key = self._customers.c[self.host_table.id]
                where: sa.ColumnElement[bool] = sa.true()
                while rows := self._rows(conn, where, _PAGE):
                    self._write_phones(conn, attributes, rows)
                    where = key > rows[-1][self.host_table.id]
            conn.execute(at.delete())
            conn.execute(at.insert().values(id=1, attributes=json.dumps(attributes), position=position))

    def _write_phones(self, conn: sa.Connection, attributes: list[str], rows: Sequence[Mapping[Any, Any]]) -> None:
        assert self._phones is not None
        region = self.host_table.region
        found = []
        for row in rows:
            customer_id = _plain_id(row[self.host_table.id])
            if customer_id is None:
                continue
            for attribute in attributes:
                phone = to_phone(_read(row, self.host_table.columns[attribute]), region)
                if phone is not None:
                    found.append((attribute, str(customer_id), phone))
        if found:
            columns = ["attribute", "customer", "phone"]
            self.dialect.insert_many(conn, self._phones.name, columns, found, or_ignore=True)  # ids may repeat

    # -- reading the host's rows

    def _keys(self, customer_ids: Iterable[object]) -> list[CustomerId]:
        """The ids that can be in the host's id column (an integer column holds no text id)."""
        keys: list[CustomerId] = []
        for customer_id in customer_ids:
            if isinstance(customer_id, bool) or not isinstance(customer_id, int | str):
                continue
            if self._id_type is not None and not isinstance(customer_id, self._id_type):
                continue
            keys.append(customer_id)
        return list(dict.fromkeys(keys))

    def _rows(self, conn: sa.Connection, where: sa.ColumnElement[bool], limit: int | None = None) -> list[Any]:
        table = self._customers
        key = table.c[self.host_table.id]
        query = sa.select(*table.c).where(key.is_not(None), where).order_by(key)
        if limit is not None:
            query = query.limit(limit)
        return list(conn.execute(query).mappings())

    def _build(
        self, conn: sa.Connection, rows: Sequence[Mapping[Any, Any]], events: Collection[str] | None = None
    ) -> dict[CustomerId, Customer]:
        """Customers from rows of the host's table, with their events (those named in ``events``, if given)."""
        host = self.host_table
        attributes: dict[CustomerId, dict[str, Any]] = {}
        keys: dict[CustomerId, Any] = {}
        for row in rows:
            customer_id = _plain_id(row[host.id])
            if customer_id is None:
                continue
            keys[customer_id] = row[host.id]
            values = {}
            for name, mapped in host.columns.items():
                value = _read(row, mapped)
                if value is not _ABSENT:
                    values[name] = value
            attributes[customer_id] = values
        found = self._events_of(conn, list(keys.values()), events)
        return {cid: Customer(cid, values, found.get(cid, ())) for cid, values in attributes.items()}

    def _events_of(
        self, conn: sa.Connection, keys: Sequence[Any], names: Collection[str] | None = None
    ) -> dict[CustomerId, list[Event]]:
        out: dict[CustomerId, list[Event]] = {}
        if not keys:
            return out
        for category, events in self.host_table.events.items():
            if names is not None and category not in names:
                continue
            table = self._events[category]
            columns = [table.c[events.customer], table.c[events.at]]
            columns += [table.c[c] for c in dict.fromkeys(map(_column_of, events.fields.values()))]
            among = dialect(conn).among
            for start in range(0, len(keys), _CHUNK):
                query = sa.select(*dict.fromkeys(columns)).where(
                    among(table.c[events.customer], keys[start : start + _CHUNK]), *_filters(table, events.where)
                )
                for row in conn.execute(query).mappings():
                    event = _event(category, events, row)
                    customer_id = _plain_id(row[events.customer])
                    if event is not None and customer_id is not None:
                        out.setdefault(customer_id, []).append(event)
        return out

    def get(self, customer_id: CustomerId) -> Customer | None:
        """The host's customer with this id, or None."""
        return self.get_many([customer_id]).get(customer_id)

    def get_many(self, customer_ids: Iterable[CustomerId]) -> dict[CustomerId, Customer]:
        """The host's customers among ``customer_ids`` (absent ids left out), read in batches."""
        return self._get_many(customer_ids, None)

    def get_many_reading(
        self, customer_ids: Iterable[CustomerId], events: Collection[str]
    ) -> dict[CustomerId, Customer]:
        """The host's customers among ``customer_ids``, with only their events named in ``events``
        (the event tables of other names are not read)."""
        return self._get_many(customer_ids, events)

    def _get_many(
        self, customer_ids: Iterable[CustomerId], events: Collection[str] | None
    ) -> dict[CustomerId, Customer]:
        keys = self._keys(customer_ids)
        out: dict[CustomerId, Customer] = {}
        key = self._customers.c[self.host_table.id]
        with self.connect() as conn:
            among = dialect(conn).among
            for start in range(0, len(keys), _CHUNK):
                rows = self._rows(conn, among(key, keys[start : start + _CHUNK]))
                out.update(self._build(conn, rows, events))
        return {cid: out[cid] for cid in keys if cid in out}

    def existing(self, customer_ids: Iterable[CustomerId]) -> set[CustomerId]:
        """The ids among ``customer_ids`` that the host's table holds."""
        keys = self._keys(customer_ids)
        column = self._customers.c[self.host_table.id]
        found: set[CustomerId] = set()
        with self.connect() as conn:
            among = dialect(conn).among
            for start in range(0, len(keys), _CHUNK):
                query = sa.select(column).where(among(column, keys[start : start + _CHUNK]))
                found.update(i for i in map(_plain_id, conn.execute(query).scalars()) if i is not None)
        return found

    def ids(self) -> set[CustomerId]:
        """Every id of the host's table."""
        column = self._customers.c[self.host_table.id]
        with self.connect() as conn:
            return {i for i in map(_plain_id, conn.execute(sa.select(column)).scalars()) if i is not None}

    def __iter__(self) -> Iterator[Customer]:
        """Every customer of the host's table, a page at a time in id order."""
        key = self._customers.c[self.host_table.id]
        where: sa.ColumnElement[bool] = sa.true()
        while True:
            with self.connect() as conn:
                rows = self._rows(conn, where, _PAGE)
                if not rows:
                    return
                customers = self._build(conn, rows)
            yield from customers.values()
            where = key > rows[-1][self.host_table.id]

    def __len__(self) -> int:
        key = self._customers.c[self.host_table.id]
        with self.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count(key))).scalar_one())

    def __contains__(self, customer_id: object) -> bool:
        return bool(self.existing([customer_id]))  # type: ignore[list-item]

    # -- rules

    def select(
        self,
        rule: RuleLike,
        now: dt.datetime | None = None,
        *,
        groups: GroupLookup | None = None,
        limit: int | None = None,
    ) -> set[CustomerId]:
        """The ids of the host's customers for whom ``rule`` is true at ``now``, in one query on the host's tables.

        ``limit`` keeps the first ids in the id column's order.
        """
        with self.connect() as conn:
            self._sync_phones(rule)
            found = self._mapping().select(conn, rule, now, groups=groups, limit=limit, phone_table=self.phone_table)
        return {i for i in map(_plain_id, found) if i is not None}

    restricts_rules = True

    def insert_matches(
        self, rule: Node, now: dt.datetime, groups: GroupLookup | None, table: str, group_id: int, scope: str | None
    ) -> None:
        """Insert ``(group_id, key)`` into the table named ``table`` for every customer (of the table named
        ``scope``: column ``id``, the id as text) ``rule`` is true for at ``now``, keys as the group store
        writes them (``i:42`` / ``s:c1``): the ids the host's query finds, loaded in bulk."""
        with self.connect() as conn:
            self._sync_phones(rule)
            mapping = self._mapping()
            tz = resolve_tz(mapping.tz)
            compiler = HostCompiler(mapping, self.dialect, tz, moment(now, tz), groups, phone_table=self.phone_table)
            among = None
            if scope is not None:  # the scope's ids, as the host's id column types them
                quoted = conn.dialect.identifier_preparer.quote(scope)
                among = f"SELECT {self.dialect.scope_id('p', self._id_sql_type)} FROM {quoted} AS p"  # noqa: S608 - ours
            sql, params = compiler.param.render(compiler.select(as_rule(rule), among=among))
            self.dialect.host_connection(conn)
            found = (_plain_id(row[0]) for row in conn.exec_driver_sql(sql, driver_params(params)))
            rows = [(group_id, encode_id(cid)) for cid in found if cid is not None]
            self.dialect.bulk_load(conn, table, ["group_id", "customer"], rows)

    def insert_dues(
        self, plan: Plan, now: dt.datetime, groups: GroupLookup | None, table: str, group_id: int, scope: str | None
    ) -> bool:
        """False: the next instants of time-based rules over the host's tables are found in Python, from
        the customers read in batches (the host's time columns come in the host's own types)."""
        return False

    def count(self, rule: RuleLike, now: dt.datetime | None = None, *, groups: GroupLookup | None = None) -> int:
        """How many of the host's customers ``rule`` is true for at ``now``, counted by the database."""
        with self.connect() as conn:
            self._sync_phones(rule)
            return self._mapping().count(conn, rule, now, groups=groups, phone_table=self.phone_table)

    def where(
        self, rule: RuleLike, now: dt.datetime | None = None, *, groups: GroupLookup | None = None
    ) -> RuleClause:
        """``rule`` as a SQLAlchemy boolean expression over the host's table, for the host's own queries.

        As :func:`cohorts.where` over this repository's mapping (and the schema
        it was given), with phone conditions reading :attr:`phone_table`, which is
        brought up to date first: the expression sees the host's writes made
        before it is built. ``select(Client).where(repository.where(rule))``.

        .. versionadded:: 0.3
        """
        self._sync_phones(rule)
        return where(rule, self._mapping(), now, groups=groups, phone_table=self.phone_table)

    def select_ids(
        self, rule: RuleLike, now: dt.datetime | None = None, *, groups: GroupLookup | None = None
    ) -> sa.Select[Any]:
        """The ``Select`` of the ids of the host's rows ``rule`` is true for (see :meth:`where`), to order,
        paginate or join in the host's own session.

        .. versionadded:: 0.3
        """
        mapping = self._mapping()
        return ids_where(mapping, self.where(rule, now, groups=groups))

    def explain(self, rule: RuleLike, now: dt.datetime | None = None, *, groups: GroupLookup | None = None) -> str:
        """The database's query plan for ``rule`` on the host's tables, as text."""
        with self.connect() as conn:
            self._sync_phones(rule)
            return self._mapping().explain(conn, rule, now, groups=groups, phone_table=self.phone_table)

    # -- writes, through the host's writer

    def _writer(self) -> HostWriter:
        if self.writer is None:
            raise HostWriteError(str(self.read_only_reason))
        return self.writer

    def declare(self, schema: Schema) -> None:
        """Make ``schema`` the schema rules are checked against (rolled back with the transaction it is made in)."""
        if not isinstance(schema, Schema):
            raise TypeError(f"a schema is a cohorts.Schema, not {type(schema).__name__}")
        self._schema = schema

    def upsert(self, customers: Iterable[Customer]) -> None:
        """Write customers through the writer, all or nothing: new ones are inserted; stored ones get
        the attributes that differ updated and the events they lack added."""
        writer = self._writer()
        batch: dict[CustomerId, Customer] = {}
        for customer in customers:
            checked = check_customer(customer)
            old = batch.get(checked.id)
            if old is not None:
                events = (*old.events, *new_events(old.events, checked.events))
                checked = Customer(checked.id, checked.attributes, events)
            batch[checked.id] = checked
        with self.transaction(), self.connect() as conn:
            # Only events of the names written can equal those written: the other event tables are not read.
            stored = self.get_many_reading(batch, {e.name for c in batch.values() for e in c.events})
            for customer_id, customer in batch.items():
                old_customer = stored.get(customer_id)
                if old_customer is None:
                    writer.insert(conn, customer)
                    continue
                before = old_customer.attributes
                values = {k: v for k, v in customer.attributes.items() if before.get(k, _ABSENT) != v}
                values.update((k, None) for k in before if k not in customer.attributes)
                if values:
                    writer.update(conn, customer_id, values)
                added = new_events(old_customer.events, customer.events)
                if added:
                    writer.add_events(conn, customer_id, added)
            self._log(conn, batch)

    def add_events(self, customer_id: CustomerId, events: Iterable[Event]) -> None:
        """Record events of a stored customer through the writer (UnknownCustomerError when absent)."""
        writer = self._writer()
        checked = list(check_events(events))
        with self.transaction(), self.connect() as conn:
            if not self.existing([customer_id]):
                raise UnknownCustomerError(customer_id)
            if checked:
                writer.add_events(conn, customer_id, checked)
                self._log(conn, [customer_id])

    def delete(self, *customer_ids: CustomerId) -> int:
        """Remove customers through the writer; returns how many existed."""
        writer = self._writer()
        with self.transaction(), self.connect() as conn:
            stored = self.existing(customer_ids)
            found = [i for i in self._keys(customer_ids) if i in stored]
            if found:
                writer.delete(conn, found)
                self._log(conn, found)
        return len(found)

    def unsubscribe(self, customer_id: CustomerId, *, channel: str | None = None) -> None:
        """Set the customer's ``subscribed`` attribute (``<channel>_subscribed`` with ``channel``) to False
        through the writer."""
        attribute = consent_attribute(channel)
        writer = self._writer()
        with self.transaction(), self.connect() as conn:
            if not self.existing([customer_id]):
                raise UnknownCustomerError(customer_id)
            writer.update(conn, customer_id, {attribute: False})
            self._log(conn, [customer_id])


def _event(category: str, events: HostEvents, row: Mapping[Any, Any]) -> Event | None:
    """The event of a row of a host's events table (None when its time is NULL or unreadable)."""
    at = row[events.at]
    if isinstance(at, str):
        try:
            at = dt.datetime.fromisoformat(at.strip())
        except ValueError:
            return None
    if not isinstance(at, dt.date):
        return None
    fields = {}
    for name, mapped in events.fields.items():
        value = _read(row, mapped)
        if value is not _ABSENT:
            fields[name] = value
    return Event(category, at, fields)
