"""The SQL repository: customers in SQLite or PostgreSQL (SQLAlchemy 2 Core), rules run as one query.

Attributes are stored as written and as a shadow of typed readings
(:mod:`cohorts.sql.storage`); events live in their own table, indexed on
``(name, customer_pk, at)``. What differs between databases is the
repository's :class:`~cohorts.sql.dialects.Dialect`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import random
import re
import time
import weakref
from collections.abc import Callable, Collection, Container, Iterable, Iterator, Mapping, Sequence
from pathlib import Path as FilePath
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

import sqlalchemy as sa

from ..ast import Node, RuleLike
from ..model import Customer, CustomerId, Event
from ..repository import (
    CustomerDataError,
    UnknownCustomerError,
    check_customer,
    check_events,
    check_limit,
    consent_attribute,
    new_events,
)
from ..schema import AttributeType, Schema, default_schema
from ..semantics import moment
from ..values import DEFAULT_REGION, resolve_tz
from .compiler import Compiler, Layout, Params, compile_rule, dues_query, run_staged
from .dialects import Dialect, dialect, names
from .host import driver_params
from .session import Session, Transactional, log_changes
from .storage import (
    decode_id,
    dump,
    event_at,
    event_from_row,
    load,
    shadow_of,
    shadow_text,
    shadow_text_of,
    tables,
)

if TYPE_CHECKING:
    from ..timing import Plan

__all__ = ["SCHEMA_VERSION", "SQLRepository"]

GroupLookup: TypeAlias = Callable[[str], Container[CustomerId]]

SCHEMA_VERSION = 2
"""The version of the tables this module creates, recorded in ``cohorts_meta`` (2 added ``cohorts_changes``)."""

_DDL_LOCK = 7302016  # the advisory lock taken while creating the tables, where the dialect has one

_CHUNK = 5000
_RETRIES = 8  # tries of a chunk that concurrent writers got in the way of


def _engine(url_or_engine: str | FilePath | sa.Engine) -> sa.Engine:
    if isinstance(url_or_engine, sa.Engine):
        engine = url_or_engine
    else:
        url = str(url_or_engine)
        if isinstance(url_or_engine, FilePath) or "://" not in url:
            url = "sqlite:///" + (url if url != ":memory:" else "")
        if url in ("sqlite://", "sqlite:///"):
            engine = sa.create_engine(
                "sqlite://", poolclass=sa.pool.StaticPool, connect_args={"check_same_thread": False}
            )
        else:
            engine = sa.create_engine(url)
    try:
        found = dialect(engine)
    except ValueError:
        raise ValueError(
            f"SQLRepository works with {' and '.join(names())}, not {engine.dialect.name}"
        ) from None
    if engine not in _PREPARED:
        found.prepare(engine)
        _PREPARED.add(engine)
    return engine


_PREPARED: weakref.WeakSet[sa.Engine] = weakref.WeakSet()  # engines whose connections have our settings


def _run_statement(conn: sa.Connection, compiler: Compiler, sql: str) -> None:
    """Run a statement compiled with ``staged=True`` (its stages first) that returns no rows."""

    def execute(text: str, params: dict[str, Any] | list[Any]) -> Iterable[Sequence[Any]]:
        result = conn.exec_driver_sql(text, driver_params(params))
        return result.all() if result.returns_rows else ()

    run_staged(compiler, sql, execute)


def _phones(schema: Schema | None, category: str) -> frozenset[str]:
    attributes = (schema or default_schema()).categories.get(category, {})
    return frozenset(name for name, kind in attributes.items() if kind is AttributeType.PHONE)


class SQLRepository(Transactional):
    """Customers in SQLite or PostgreSQL (SQLAlchemy 2 Core); rules run as one SQL query.

    ``url_or_engine`` is a database URL (``sqlite:///customers.db``,
    ``postgresql+psycopg://user@host/db``), a plain file path (SQLite) or an
    Engine. The tables are created when missing, and their version recorded.
    ``schema``, ``tz`` and ``region`` mean what they mean for
    :func:`cohorts.compile`; values are read with them at write time, and
    changing them later re-reads every stored value.

    Example:
        >>> from cohorts import Customer
        >>> repo = SQLRepository("sqlite://")
        >>> repo.upsert([Customer(1, {"city": "Montréal"}), Customer("c2", {"city": "Laval"})])
        >>> repo.select('customer.city = "MONTREAL"'), repo.select('customer.city = "montréal"')
        (set(), {1})

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        url_or_engine: str | FilePath | sa.Engine,
        schema: Schema | None = None,
        tz: str | dt.tzinfo | None = None,
        region: str = DEFAULT_REGION,
    ) -> None:
        self.engine = _engine(url_or_engine)
        self._owns_engine = not isinstance(url_or_engine, sa.Engine)
        self.dialect: Dialect = dialect(self.engine)
        self._schema = schema
        self._tz = resolve_tz(tz)
        self._region = region
        self._session = Session(self.engine, f"cohorts_connection_{id(self)}")
        self._phone_cache: tuple[Schema | None, dict[str, frozenset[str]]] | None = None
        self._readings: dict[str, dict[str, Any]] = {}  # text values read for shadows, in self._tz
        self._texts: dict[str, str] = {}  # the same readings as JSON text
        self.metadata, self.customers, self.events, self.meta, self.changes = tables("cohorts_")
        self.state_prefix = "cohorts_"
        self._create()

    def __repr__(self) -> str:
        return f"<SQLRepository {self.engine.url.render_as_string(hide_password=True)}>"

    def close(self) -> None:
        """Close the database connections, when the repository made its engine from a URL.

        An engine passed in stays the host's to dispose of. The repository can
        still be used afterwards: the engine opens new connections on demand.
        """
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> SQLRepository:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- settings

    @property
    def schema(self) -> Schema:
        """The schema rules are checked against (the default one unless given)."""
        return self._schema if self._schema is not None else default_schema()

    @schema.setter
    def schema(self, schema: Schema) -> None:
        self.declare(schema)

    @property
    def declared_schema(self) -> Schema | None:
        """The schema given (None: undeclared attributes are typed by the rule's values)."""
        return self._schema

    def declare(self, schema: Schema) -> None:
        """Make ``schema`` the repository's schema, re-reading stored values if their readings change.

        Rolled back with the transaction it is made in.
        """
        if not isinstance(schema, Schema):
            raise TypeError(f"a schema is a cohorts.Schema, not {type(schema).__name__}")
        self._schema = schema
        with self.connect() as conn:
            self._check_shadow(conn)

    @property
    def tz(self) -> dt.tzinfo:
        """The time zone of naive datetimes, calendar words and date parts."""
        return self._tz

    @property
    def region(self) -> str:
        """The default country of phone numbers."""
        return self._region

    # -- connections and transactions

    @contextlib.contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        # One write: its own transaction, or a savepoint inside the caller's.
        with self.transaction(), self.connect() as conn:
            yield conn

    def _create(self) -> None:
        with self.engine.begin() as conn:
            self.dialect.lock(conn, _DDL_LOCK)
            self.metadata.create_all(conn)  # version 2 added the change log: create_all adds it to version 1
            self.dialect.prepare_change_log(conn, self.changes.name)
            version = conn.execute(sa.select(self.meta.c.value).where(self.meta.c.key == "schema_version")).scalar()
            if version is None:
                conn.execute(sa.insert(self.meta), [{"key": "schema_version", "value": str(SCHEMA_VERSION)}])
            elif int(version) > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the database holds cohorts tables of version {version}; this cohorts knows {SCHEMA_VERSION}"
                )
            elif int(version) < SCHEMA_VERSION:
                conn.execute(
                    sa.update(self.meta).where(self.meta.c.key == "schema_version"), {"value": str(SCHEMA_VERSION)}
                )
            self._check_shadow(conn)

    @property
    def schema_version(self) -> int:
        """The version of the tables, as recorded in ``cohorts_meta``."""
        with self.read() as conn:
            return int(
                conn.execute(sa.select(self.meta.c.value).where(self.meta.c.key == "schema_version")).scalar_one()
            )

    # -- shadows

    def _shadow_settings(self) -> str:
        phones = {category: sorted(_phones(self._schema, category)) for category in self.schema.categories}
        return json.dumps(
            {"tz": str(self._tz), "region": self._region, "phones": {k: v for k, v in phones.items() if v}},
            sort_keys=True,
        )

    def _check_shadow(self, conn: sa.Connection) -> None:
        """Re-read every stored value when the settings the shadows were made with have changed."""
        settings = self._shadow_settings()
        stored = conn.execute(sa.select(self.meta.c.value).where(self.meta.c.key == "shadow")).scalar()
        if stored == settings:
            return
        if stored is None:
            conn.execute(sa.insert(self.meta), [{"key": "shadow", "value": settings}])
        else:
            conn.execute(sa.update(self.meta).where(self.meta.c.key == "shadow"), {"value": settings})
        self._reshadow(conn)

    def _phones_of(self, category: str) -> frozenset[str]:
        cache = self._phone_cache
        if cache is None or cache[0] is not self._schema:
            cache = self._phone_cache = (self._schema, {})
        found = cache[1].get(category)
        if found is None:
            found = cache[1][category] = _phones(self._schema, category)
        return found

    def _customer_shadow(self, attributes: Mapping[str, Any]) -> str:
        return shadow_text_of(
            attributes, self._tz, self._region, self._phones_of("customer"), self._texts, self._readings
        )

    def _event_row(self, event: Event) -> tuple[Any, ...]:
        """An event's columns after ``customer_pk``."""
        at, year, month, day, weekday, at_raw = event_at(event.at, self._tz)
        if not event.attributes:
            return (event.name, at, year, month, day, weekday, at_raw, "{}", "{}")
        attributes = dump(event.attributes)
        shadow = shadow_of(
            event.attributes, self._tz, self._region, self._phones_of(event.name), lists=False, readings=self._readings
        )
        return (event.name, at, year, month, day, weekday, at_raw, attributes, shadow_text(shadow))

    def _reshadow(self, conn: sa.Connection) -> None:
        last = 0
        update = self._sql("UPDATE cohorts_customers SET shadow = {shadow} WHERE pk = {pk}")
        while rows := conn.exec_driver_sql(
            self._sql("SELECT pk, attributes FROM cohorts_customers WHERE pk > {pk} ORDER BY pk LIMIT " + str(_CHUNK)),  # noqa: S608 - names are ours; values are bound
            self._args(pk=last),
        ).all():
            last = rows[-1][0]
            conn.exec_driver_sql(update, [self._args(shadow=self._customer_shadow(load(a)), pk=pk) for pk, a in rows])
        last = 0
        update = self._sql(
            "UPDATE cohorts_events SET at = {at}, year = {y}, month = {mo}, day = {d}, weekday = {w},"
            " shadow = {shadow} WHERE id = {id}"
        )
        while rows := conn.exec_driver_sql(
            self._sql(
                "SELECT id, name, at_raw, attributes FROM cohorts_events WHERE id > {id} ORDER BY id LIMIT "  # noqa: S608 - names are ours; values are bound
                + str(_CHUNK)
            ),
            self._args(id=last),
        ).all():
            last = rows[-1][0]
            params = []
            for event_id, name, at_raw, attributes in rows:
                row = self._event_row(event_from_row(name, at_raw, attributes))
                params.append(
                    self._args(at=row[1], y=row[2], mo=row[3], d=row[4], w=row[5], shadow=row[8], id=event_id)
                )
            conn.exec_driver_sql(update, params)

    # -- SQL text helpers

    _CASTS: ClassVar[dict[str, str]] = {"attributes": "JSON", "shadow": "JSONB"}

    def _sql(self, template: str) -> str:
        """``{name}`` placeholders in the driver's style (the JSON columns' typed where the dialect types them)."""
        names = set(re.findall(r"\{(\w+)\}", template))
        typed = self.dialect.typed_parameters
        return template.format(
            **{n: self.dialect.placeholder(n, self._CASTS.get(n) if typed else None) for n in names}
        )

    def _args(self, **values: Any) -> dict[str, Any]:
        return values

    # -- writing

    def _lookup(self, conn: sa.Connection, ids: Iterable[CustomerId]) -> dict[CustomerId, int]:
        """The pks of the stored customers among ``ids``."""
        found: dict[CustomerId, int] = {}
        keys = list(dict.fromkeys(ids))
        if len(keys) > 500:  # one statement per kind of id, the ids as one parameter
            for flag in (False, True):
                values = [str(k) for k in keys if isinstance(k, int) == flag and isinstance(k, str | int)]
                if values:
                    params = Params(self.dialect)
                    sql, bound = params.render(
                        f"SELECT pk, id FROM cohorts_customers WHERE int_id = {params(flag, 'BOOLEAN')}"  # noqa: S608 - names are ours; values are bound
                        f" AND {self.dialect.in_texts(params, 'id', values)}"
                    )
                    rows = conn.exec_driver_sql(sql, driver_params(bound))
                    found.update((int(key) if flag else key, pk) for pk, key in rows)
            return found
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            texts = [k for k in chunk if isinstance(k, str)]
            ints = [str(k) for k in chunk if isinstance(k, int)]
            for values, flag in ((texts, False), (ints, True)):
                if not values:
                    continue
                query = (
                    sa.select(self.customers.c.pk, self.customers.c.id)
                    .where(self.customers.c.int_id == flag)
                    .where(self.customers.c.id.in_(values))
                )
                for pk, key in conn.execute(query):
                    found[int(key) if flag else key] = pk
        return found

    def upsert(self, customers: Iterable[Customer]) -> None:
        """Write a batch of customers, all or nothing (see :class:`cohorts.Repository`).

        Values are checked and read before anything is written; a customer
        that cannot be stored raises CustomerDataError naming it.
        """
        with self._write() as conn:
            batch: list[Customer] = []
            for customer in customers:
                batch.append(check_customer(customer))
                if len(batch) >= _CHUNK:
                    self._upsert_retried(conn, batch)
                    batch = []
            if batch:
                self._upsert_retried(conn, batch)

    def _upsert_retried(self, conn: sa.Connection, batch: list[Customer]) -> None:
        """Write one chunk in a savepoint, again when a concurrent writer got in the way: on PostgreSQL,
        two transactions that insert the same new id (the second fails once the first commits, and its
        retry reads the first's row and updates it), a deadlock or a serialisation failure."""
        for attempt in itertools.count(1):
            try:
                with conn.begin_nested():
                    self._upsert_chunk(conn, batch)
                return
            except Exception as error:
                if attempt >= _RETRIES or not self.dialect.busy(error, conflict=True):
                    raise
                time.sleep(random.uniform(0, 0.005 * 2**attempt))

    def _upsert_chunk(self, conn: sa.Connection, batch: list[Customer]) -> None:
        # Merge repeated ids in order, as consecutive upserts would.
        merged: dict[CustomerId, Customer] = {}
        for customer in batch:
            old = merged.get(customer.id)
            if old is None:
                merged[customer.id] = customer
            else:
                added = new_events(old.events, customer.events)
                merged[customer.id] = Customer(customer.id, customer.attributes, (*old.events, *added))
        stored = self._lookup(conn, merged)
        stored_events = self._events_of(conn, [stored[i] for i, c in merged.items() if i in stored and c.events])

        inserts: list[tuple[Any, ...]] = []
        updates: list[dict[str, Any]] = []
        event_rows: list[tuple[Any, ...]] = []
        fresh = len(merged) - len(stored)
        new_pks = iter(self._allocate(conn, fresh) if fresh else ())  # the new customers' pks, in order
        customer_shadow, event_row = self._customer_shadow, self._event_row
        for customer_id, customer in merged.items():
            try:
                attributes = dump(customer.attributes)
                shadow = customer_shadow(customer.attributes)
                pk = stored.get(customer_id)
                if pk is not None:
                    updates.append(self._args(attributes=attributes, shadow=shadow, pk=pk))
                    events: Iterable[Event] = new_events(stored_events.get(pk, ()), customer.events)
                else:
                    pk = next(new_pks)
                    inserts.append((pk, str(customer_id), isinstance(customer_id, int), attributes, shadow))
                    events = customer.events
                event_rows.extend((pk, *event_row(event)) for event in events)
            except (ValueError, OverflowError) as error:
                raise CustomerDataError(customer_id, str(error)) from None
        if inserts:
            self._insert_customers(conn, inserts)
        if updates:
            conn.exec_driver_sql(
                self._sql("UPDATE cohorts_customers SET attributes = {attributes}, shadow = {shadow} WHERE pk = {pk}"),
                updates,
            )
        if event_rows:
            self._insert_events(conn, event_rows)
        self._log(conn, merged)

    def _allocate(self, conn: sa.Connection, count: int) -> list[int]:
        return self.dialect.allocate(conn, "cohorts_customers", "cohorts_meta", count)

    def _insert_customers(self, conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
        self.dialect.bulk_load(conn, "cohorts_customers", ("pk", "id", "int_id", "attributes", "shadow"), rows)

    _EVENT_COLUMNS: ClassVar[tuple[str, ...]] = (
        "customer_pk",
        "name",
        "at",
        "year",
        "month",
        "day",
        "weekday",
        "at_raw",
        "attributes",
        "shadow",
    )

    def _insert_events(self, conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
        self.dialect.bulk_load(conn, "cohorts_events", self._EVENT_COLUMNS, rows)

    def _events_of(
        self, conn: sa.Connection, pks: Sequence[int], names: Collection[str] | None = None
    ) -> dict[int, list[Event]]:
        """The events of these customers (only those whose name is in ``names``, if given)."""
        out: dict[int, list[Event]] = {}
        e = self.events
        among = self.dialect.among
        for start in range(0, len(pks), _CHUNK):
            query = (
                sa.select(e.c.customer_pk, e.c.name, e.c.at_raw, e.c.attributes)
                .where(among(e.c.customer_pk, pks[start : start + _CHUNK]))
                .order_by(e.c.customer_pk, e.c.id)
            )
            if names is not None:
                query = query.where(among(e.c.name, sorted(names)))
            for pk, name, at_raw, attributes in conn.execute(query):
                out.setdefault(pk, []).append(event_from_row(name, at_raw, attributes))
        return out

    def add_events(self, customer_id: CustomerId, events: Iterable[Event]) -> None:
        """Append events to a stored customer (UnknownCustomerError when absent)."""
        with self._write() as conn:
            pk = self._lookup(conn, [customer_id]).get(customer_id)
            if pk is None:
                raise UnknownCustomerError(customer_id)
            try:
                rows = [(pk, *self._event_row(event)) for event in check_events(events)]
            except (ValueError, OverflowError) as error:
                raise CustomerDataError(customer_id, str(error)) from None
            if rows:
                self._insert_events(conn, rows)
                self._log(conn, [customer_id])

    def delete(self, *customer_ids: CustomerId) -> int:
        """Remove customers and their events; returns how many existed."""
        with self._write() as conn:
            found = self._lookup(conn, [i for i in customer_ids if isinstance(i, str | int)])
            pks = list(found.values())
            self._log(conn, found)
            for start in range(0, len(pks), 500):
                chunk = pks[start : start + 500]
                conn.execute(sa.delete(self.events).where(self.events.c.customer_pk.in_(chunk)))
                conn.execute(sa.delete(self.customers).where(self.customers.c.pk.in_(chunk)))
        return len(pks)

    def unsubscribe(self, customer_id: CustomerId, *, channel: str | None = None) -> None:
        """Set the customer's ``subscribed`` attribute (``<channel>_subscribed`` with ``channel``) to False."""
        attribute = consent_attribute(channel)
        with self._write() as conn:
            pk = self._lookup(conn, [customer_id]).get(customer_id)
            if pk is None:
                raise UnknownCustomerError(customer_id)
            raw = conn.execute(sa.select(self.customers.c.attributes).where(self.customers.c.pk == pk)).scalar_one()
            attributes = {**load(raw), attribute: False}
            conn.exec_driver_sql(
                self._sql("UPDATE cohorts_customers SET attributes = {attributes}, shadow = {shadow} WHERE pk = {pk}"),
                self._args(attributes=dump(attributes), shadow=self._customer_shadow(attributes), pk=pk),
            )
            self._log(conn, [customer_id])

    # -- reading

    @staticmethod
    def _id(key: str, is_int: Any) -> CustomerId:
        return int(key) if is_int else key

    def get(self, customer_id: CustomerId) -> Customer | None:
        """The stored customer, or None."""
        if isinstance(customer_id, bool) or not isinstance(customer_id, str | int):
            return None
        with self.read() as conn:
            pk = self._lookup(conn, [customer_id]).get(customer_id)
            if pk is None:
                return None
            raw = conn.execute(sa.select(self.customers.c.attributes).where(self.customers.c.pk == pk)).scalar_one()
            events = self._events_of(conn, [pk]).get(pk, [])
        return Customer(customer_id, load(raw), events)

    def __iter__(self) -> Iterator[Customer]:
        last = 0
        while True:
            with self.read() as conn:
                rows = conn.execute(
                    sa.select(
                        self.customers.c.pk, self.customers.c.id, self.customers.c.int_id, self.customers.c.attributes
                    )
                    .where(self.customers.c.pk > last)
                    .order_by(self.customers.c.pk)
                    .limit(_CHUNK)
                ).all()
                if not rows:
                    return
                events = self._events_of(conn, [row[0] for row in rows])
            for pk, key, is_int, raw in rows:
                yield Customer(self._id(key, is_int), load(raw), events.get(pk, []))
            last = rows[-1][0]

    def __len__(self) -> int:
        with self.read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.customers)).scalar_one())

    def __contains__(self, customer_id: object) -> bool:
        if isinstance(customer_id, bool) or not isinstance(customer_id, str | int):
            return False
        with self.read() as conn:
            return customer_id in self._lookup(conn, [customer_id])

    def _log(self, conn: sa.Connection, customer_ids: Iterable[CustomerId]) -> None:
        log_changes(conn, self.changes, customer_ids)

    def change_position(self) -> str:
        """The position after every write committed so far."""
        with self.read() as conn:
            return self.dialect.change_position(conn, self.changes.name)

    def changes_since(self, position: str) -> tuple[list[CustomerId], str]:
        """The ids of the customers written after ``position`` (repeats possible), and the new position."""
        with self.read() as conn:
            keys, after = self.dialect.changes_since(conn, self.changes.name, position)
        return [decode_id(key) for key in keys], after

    def forget_changes(self, position: str) -> None:
        """Delete the change log's rows before ``position``."""
        with self.connect() as conn:
            self.dialect.forget_changes(conn, self.changes.name, position)

    def get_many(self, customer_ids: Iterable[CustomerId]) -> dict[CustomerId, Customer]:
        """The stored customers among ``customer_ids``: one query for their rows and one for their events."""
        return self._get_many(customer_ids, None)

    def get_many_reading(
        self, customer_ids: Iterable[CustomerId], events: Collection[str]
    ) -> dict[CustomerId, Customer]:
        """The stored customers among ``customer_ids``, with only their events whose name is in ``events``."""
        return self._get_many(customer_ids, events)

    def _get_many(
        self, customer_ids: Iterable[CustomerId], names: Collection[str] | None
    ) -> dict[CustomerId, Customer]:
        valid = [i for i in customer_ids if isinstance(i, str | int) and not isinstance(i, bool)]
        out: dict[CustomerId, Customer] = {}
        with self.read() as conn:
            for start in range(0, len(valid), _CHUNK):
                pks = self._lookup(conn, valid[start : start + _CHUNK])
                if not pks:
                    continue
                by_pk = {pk: cid for cid, pk in pks.items()}
                chunk = list(by_pk)
                query = sa.select(self.customers.c.pk, self.customers.c.attributes).where(
                    self.dialect.among(self.customers.c.pk, chunk)
                )
                rows: dict[int, Any] = dict(conn.execute(query).all())
                events = self._events_of(conn, chunk, names)
                for pk, raw in rows.items():
                    out[by_pk[pk]] = Customer(by_pk[pk], load(raw), events.get(pk, []))
        return out

    def existing(self, customer_ids: Iterable[CustomerId]) -> set[CustomerId]:
        """The ids among ``customer_ids`` that are stored (one query per 500 ids)."""
        with self.read() as conn:
            valid = [i for i in customer_ids if isinstance(i, str | int) and not isinstance(i, bool)]
            return set(self._lookup(conn, valid))

    def ids(self) -> set[CustomerId]:
        """Every stored id."""
        with self.read() as conn:
            rows = conn.execute(sa.select(self.customers.c.id, self.customers.c.int_id))
            return {self._id(key, is_int) for key, is_int in rows}

    def sql(
        self, rule: RuleLike, now: dt.datetime | None = None, *, groups: GroupLookup | None = None
    ) -> tuple[str, dict[str, Any] | list[Any]]:
        """The query :meth:`select` runs for ``rule`` at ``now``, and its parameters (driver style)."""
        sql, compiler = compile_rule(rule, self.dialect, self._schema, self._tz, now, groups)
        return compiler.param.render(sql)

    def select(
        self,
        rule: RuleLike,
        now: dt.datetime | None = None,
        *,
        groups: GroupLookup | None = None,
        limit: int | None = None,
    ) -> set[CustomerId]:
        """The ids of the customers for whom ``rule`` is true at ``now``, computed by the database.

        A rule deeper than one statement can hold runs as several, in one transaction.
        ``limit`` keeps the first ``limit`` of them in the order they were first stored.
        """
        check_limit(limit)
        limited = (lambda sql: sql) if limit is None else (lambda sql: f"{sql} ORDER BY c.pk LIMIT {limit:d}")
        rows = self._run(rule, now, groups, limited)
        return {self._id(key, is_int) for key, is_int in rows}

    def count(self, rule: RuleLike, now: dt.datetime | None = None, *, groups: GroupLookup | None = None) -> int:
        """How many customers ``rule`` is true for at ``now``, counted by the database."""
        rows = self._run(rule, now, groups, lambda sql: f"SELECT count(*) FROM ({sql}) AS matched")  # noqa: S608 - ours
        return int(rows[0][0])

    def _run(
        self, rule: RuleLike, now: dt.datetime | None, groups: GroupLookup | None, final: Callable[[str], str]
    ) -> list[Sequence[Any]]:
        """The rows of the rule's query, ``final`` wrapping its last statement."""
        sql, compiler = compile_rule(rule, self.dialect, self._schema, self._tz, now, groups, staged=True)
        with self.read() as conn:

            def execute(text: str, params: dict[str, Any] | list[Any]) -> Iterable[Sequence[Any]]:
                return conn.exec_driver_sql(text, driver_params(params)).all()

            return run_staged(compiler, final(sql), execute)

    restricts_rules = True

    def _scope_keys(self, scope: str | None) -> str | None:
        """The query of the ``pk`` of the customers named in the table ``scope`` (None: every customer)."""
        if scope is None:
            return None
        quoted = self.engine.dialect.identifier_preparer.quote(scope)
        return f"SELECT c2.pk FROM cohorts_customers AS c2 JOIN {quoted} AS p ON c2.id = p.id AND c2.int_id = p.int_id"  # noqa: S608

    def insert_matches(
        self, rule: Node, now: dt.datetime, groups: GroupLookup | None, table: str, group_id: int, scope: str | None
    ) -> None:
        """Insert ``(group_id, key)`` into the table named ``table`` for every customer (of the table named
        ``scope``: columns ``id`` and ``int_id``) ``rule`` is true for at ``now``, keys as the group store
        writes them (``i:42`` / ``s:c1``), without the customers leaving the database."""
        compiler = Compiler(self.dialect, self._schema, self._tz, moment(now, self._tz), groups, Layout(), staged=True)
        sql = compiler.select(rule, among=self._scope_keys(scope))
        with self.connect() as conn:
            insert = (
                f"INSERT INTO {conn.dialect.identifier_preparer.quote(table)} (group_id, customer)"  # noqa: S608 - ours
                f" SELECT {group_id:d}, CASE WHEN m.int_id THEN 'i:' ELSE 's:' END || m.id FROM ({sql}) AS m"
            )
            _run_statement(conn, compiler, insert)

    def insert_dues(
        self, plan: Plan, now: dt.datetime, groups: GroupLookup | None, table: str, group_id: int, scope: str | None
    ) -> bool:
        """Insert ``(group_id, key, due)`` into the table named ``table`` for every customer (of ``scope``)
        whose answer to ``plan``'s rule time alone could change, ``due`` being the earliest instant it
        could (microseconds), computed by the database from the event times. False, and nothing
        inserted, when the rule's turning points are not fixed offsets of event times."""
        with self.connect() as conn:
            insert = f"INSERT INTO {conn.dialect.identifier_preparer.quote(table)} (group_id, customer, due)"
            found = dues_query(
                plan.time,
                plan.static,
                self.dialect,
                plan.static_schema,
                self._tz,
                now,
                groups,
                insert,
                group_id,
                among=self._scope_keys(scope),
            )
            if found is None:
                return False
            sql, compiler = found
            _run_statement(conn, compiler, sql)
        return True

    def explain(self, rule: RuleLike, now: dt.datetime | None = None, *, groups: GroupLookup | None = None) -> str:
        """The database's query plan for ``rule`` (EXPLAIN QUERY PLAN / EXPLAIN), as text."""
        sql, params = self.sql(rule, now, groups=groups)
        with self.read() as conn:
            rows = conn.exec_driver_sql(self.dialect.explain_prefix + sql, driver_params(params)).all()
        return "\n".join(str(row[-1]) for row in rows)


