"""HostTable: rules on a host's own tables (plain columns, JSON fields, event tables), checked against memory.

The differential test writes random customers into host-shaped tables (a
customers table with plain columns and a JSON column, one events table per
category, one of them filtered on a status column), reads the rows back as the
host has them, and checks that ``HostTable.select`` on SQLite and PostgreSQL
returns the ids a MemoryRepository of those same values returns, for random
rules at the same ``now``.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cohorts import Customer, Event, HostEvents, HostTable, JsonField, default_schema
from cohorts.ast import And, Condition, DatePart, Duration, InGroup, Node, Not, Op, Or, Path
from cohorts.errors import RuleError
from cohorts.evaluate import compile as compile_rule
from cohorts.repository import MemoryRepository
from cohorts.testing import anniversary_condition, sequels

from .strategies import NOW, groups, typed_conditions, typed_windows, units
from .strategies import _instants as instants
from .strategies import _time_values as time_values

sa = pytest.importorskip("sqlalchemy")

# -- the host's tables ---------------------------------------------------------------

SQLITE_DDL = [
    "CREATE TABLE clients (client_no INTEGER PRIMARY KEY, town TEXT, model_year, created TEXT, phone TEXT, extra TEXT)",
    "CREATE TABLE appointments (id INTEGER PRIMARY KEY, client_no INTEGER, starts_at TEXT, service TEXT, details TEXT)",
    "CREATE TABLE invoices (id INTEGER PRIMARY KEY, client_no INTEGER, issued_at TEXT, status TEXT, data TEXT)",
    "CREATE TABLE repair_orders (id INTEGER PRIMARY KEY, client_no INTEGER, closed_at TEXT, status TEXT)",
]
PG_DDL = [
    "CREATE TABLE clients (client_no INTEGER PRIMARY KEY, town TEXT, model_year INTEGER, created TIMESTAMPTZ,"
    " phone TEXT, extra JSONB)",
    "CREATE TABLE appointments (id SERIAL PRIMARY KEY, client_no INTEGER, starts_at TIMESTAMPTZ, service TEXT,"
    " details JSON)",
    "CREATE TABLE invoices (id SERIAL PRIMARY KEY, client_no INTEGER, issued_at TIMESTAMPTZ, status TEXT, data JSONB)",
    "CREATE TABLE repair_orders (id SERIAL PRIMARY KEY, client_no INTEGER, closed_at TIMESTAMPTZ, status TEXT)",
]
TABLES = ["clients", "appointments", "invoices", "repair_orders"]

COLUMNS: dict[str, str | JsonField] = {
    "city": "town",
    "vehicle_year": "model_year",
    "created_at": "created",
    "phone": "phone",
    "pet": JsonField("extra", "pet"),
    "tags": JsonField("extra", "tags"),
    "subscribed": JsonField("extra", "prefs", "subscribed"),
    "renewal": JsonField("extra", "renewal"),
}
EVENTS = {
    "appointment": HostEvents(
        "appointments",
        customer="client_no",
        at="starts_at",
        fields={"service": "service", "rating": JsonField("details", "rating")},
    ),
    "invoice": HostEvents(
        "invoices",
        customer="client_no",
        at="issued_at",
        where={"status": "final"},
        fields={"total": JsonField("data", "total")},
    ),
    "repair_order.closed": HostEvents(
        "repair_orders", customer="client_no", at="closed_at", where={"status": ["closed", "CLOSED"]}
    ),
}


def host(zone: str) -> HostTable:
    return HostTable("clients", id="client_no", columns=COLUMNS, tz=zone, events=EVENTS)


# -- random host rows ------------------------------------------------------------------

# Text PostgreSQL's ICU lowercasing folds as casefold does; SQLite reads with values.py and takes anything.
PG_WORDS = ["Laval", "laval", "LAVAL ", " laval", "Québec", "Que\u0301bec", "QUÉBEC", "strasse", "STRASSE"]
PG_WORDS += ["Escape", "ESCAPE", "cat", "Cat", "10", "2.5", "yes", "No", "z", "A", ""]
SQLITE_WORDS = [*PG_WORDS, "Straße", "ǅemal", "ﬁne", "İstanbul", " \tlaval\n", "  "]
ISO_TIMES = ["2026-12-01", "2026-11-22T10:00", "2026-11-22 10:00:00.5", "2026-11-20T23:59:59+05:30"]
ISO_TIMES += ["2025-01-01T00:00Z", "2024-02-29", "2025-02-29", "2025-02-30", "2025-13-45", "soon", "2026-11-21"]


def _iso(value: dt.date) -> str:
    return value.isoformat()


def _postgres_offset(value: dt.datetime) -> bool:
    offset = value.utcoffset()
    return offset is None or abs(offset) < dt.timedelta(hours=16)


@st.composite
def client_rows(draw: st.DrawFn, pg: bool) -> dict[str, Any]:
    """One row of ``clients``: column values, and the JSON document of ``extra`` (None: NULL)."""
    words = st.sampled_from(PG_WORDS if pg else SQLITE_WORDS)
    maybe = st.none() | st.just("")
    times: st.SearchStrategy[Any] = instants if pg else (instants | st.dates()).map(_iso) | st.just("2025-13-45")
    # PostgreSQL reads UTC offsets up to ±15:59 (real zones are within -12:00 and +14:00)
    renewals = instants.filter(_postgres_offset) if pg else instants
    extra: dict[str, Any] = {}
    plan: dict[str, st.SearchStrategy[Any]] = {
        "pet": words | st.lists(words, max_size=3) | st.none() | st.integers(0, 3) | st.booleans(),
        "tags": st.lists(st.sampled_from(["VIP", "vip", "gold", "", "vipx"]), max_size=3) | st.just("vip") | st.none(),
        "prefs": st.fixed_dictionaries(
            {}, optional={"subscribed": st.sampled_from([True, False, "yes", "no", "oui", 0, 1, 2, None, "maybe"])}
        ),
        "renewal": st.sampled_from(ISO_TIMES) | st.dates().map(_iso) | renewals.map(_iso) | st.none(),
    }
    for key in draw(st.lists(st.sampled_from(sorted(plan)), unique=True)):
        extra[key] = draw(plan[key])
    year: st.SearchStrategy[Any] = st.integers(2015, 2028) | st.none()
    if not pg:
        year = year | st.integers(2015, 2028).map(str) | st.just("n/a")
    return {
        "town": draw(words | maybe),
        "model_year": draw(year),
        "created": draw(times | st.none()),
        "phone": draw(st.sampled_from(["514-555-0199", "+1 514 555 0199", "438.555.0100", "n/a"]) | st.none()),
        "extra": draw(st.none() | st.just(extra)),
    }


@st.composite
def event_rows(draw: st.DrawFn, pg: bool, ids: list[int]) -> dict[str, list[dict[str, Any]]]:
    """Rows of the event tables, some for unknown or NULL customers, some filtered out by their status."""
    customer = st.sampled_from([*ids, 99]) | st.none()
    at: st.SearchStrategy[Any] = instants if pg else (instants | st.dates()).map(_iso)
    words = st.sampled_from(PG_WORDS if pg else SQLITE_WORDS)
    appointments = st.fixed_dictionaries(
        {
            "client_no": customer,
            "starts_at": at,
            "service": words | st.none(),
            "details": st.none() | st.fixed_dictionaries({}, optional={"rating": st.integers(1, 5) | st.just("4")}),
        }
    )
    invoices = st.fixed_dictionaries(
        {
            "client_no": customer,
            "issued_at": at,
            "status": st.sampled_from(["final", "final", "draft"]),
            "data": st.fixed_dictionaries(
                {}, optional={"total": st.integers(0, 500) | st.sampled_from(["120", "n/a", 0.1, 0.2, 120.3])}
            ),
        }
    )
    repairs = st.fixed_dictionaries(
        {"client_no": customer, "closed_at": at, "status": st.sampled_from(["closed", "CLOSED", "open"])}
    )
    return {
        "appointments": draw(st.lists(appointments, max_size=8)),
        "invoices": draw(st.lists(invoices, max_size=5)),
        "repair_orders": draw(st.lists(repairs, max_size=5)),
    }


def _fill(conn: Any, pg: bool, clients: dict[int, dict[str, Any]], events: dict[str, list[dict[str, Any]]]) -> None:
    for table in reversed(TABLES):
        conn.exec_driver_sql(f"DELETE FROM {table}")
    rows = {"clients": [{"client_no": i, **row} for i, row in clients.items()], **events}
    json_columns = {"extra", "details", "data"}
    for table, table_rows in rows.items():
        if not table_rows:
            continue
        names = list(table_rows[0])
        if pg:
            marks = [f"CAST(%({n})s AS JSONB)" if n in json_columns else f"%({n})s" for n in names]
        else:
            marks = [f":{n}" for n in names]
        sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(marks)})"
        values = [
            {n: json.dumps(v) if n in json_columns and v is not None else v for n, v in r.items()} for r in table_rows
        ]
        if pg:
            conn.exec_driver_sql(sql, values)
        else:
            conn.execute(sa.text(sql), values)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _dig(document: Any, keys: tuple[str, ...]) -> tuple[bool, Any]:
    for key in keys:
        if not isinstance(document, dict) or key not in document:
            return False, None
        document = document[key]
    return True, document


def _read(row: Any, mapped: str | JsonField) -> tuple[bool, Any]:
    if isinstance(mapped, str):
        return True, row[mapped]
    return _dig(_json(row[mapped.column]), mapped.keys)


def reference(conn: Any, table: HostTable) -> MemoryRepository:
    """A MemoryRepository of the host's rows as the database gives them back (JSON parsed, times as written)."""
    customers: dict[int, dict[str, Any]] = {}
    for row in conn.execute(sa.text(f"SELECT * FROM {table.table}")).mappings():
        attributes = {}
        for name, mapped in table.columns.items():
            found, value = _read(row, mapped)
            if found:
                attributes[name] = value
        customers[row[table.id]] = attributes
    events: dict[int, list[Event]] = {i: [] for i in customers}
    for category, spec in table.events.items():
        for row in conn.execute(sa.text(f"SELECT * FROM {spec.table} ORDER BY id")).mappings():
            if row[spec.customer] not in events:
                continue
            if any(row[c] not in (v if isinstance(v, tuple) else (v,)) for c, v in spec.where.items()):
                continue
            fields = {}
            for name, mapped in spec.fields.items():
                found, value = _read(row, mapped)
                if found:
                    fields[name] = value
            events[row[spec.customer]].append(Event(category, row[spec.at], fields))
    return MemoryRepository([Customer(i, attributes, events[i]) for i, attributes in customers.items()], tz=table.tz)


# -- random rules over the mapped vocabulary -----------------------------------------------

_ORDER = [Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE]


@st.composite
def host_conditions(draw: st.DrawFn) -> Node:
    """Conditions on what strategies.typed_rules leaves out: JSON times, JSON numbers, filtered events, parts."""
    kind = draw(
        st.sampled_from(
            ["renewal", "part", "total", "rating", "repair", "window", "list", "aggregate", "where", "compare"]
        )
    )
    if kind == "compare":  # two values of the client: columns, JSON fields, aggregates of event tables
        window = draw(st.none() | typed_windows)
        where = draw(st.none() | st.recursive(_appointment_fields(), _combine, max_leaves=2))
        if draw(st.booleans()):
            declared = [
                Path("customer", "created_at"),
                Path("appointment", "last_time", window=window, where=where),
                Path("repair_order.closed", "first_time"),
                Path("invoice", "last_time", window=window),
            ]
            loose, ops = [Path("customer", "renewal")], [*_ORDER, Op.BEFORE, Op.AFTER]
        else:
            declared = [
                Path("customer", "vehicle_year"),
                Path("appointment", "count", window=window, where=where),
                Path("invoice", "max", window=window, field="total"),
                Path("customer", "created_at", DatePart.MONTH),
                Path("customer", "renewal", DatePart.DAY),
            ]
            loose, ops = [Path("appointment", "max", field="rating", where=where)], _ORDER
        left, right = draw(st.sampled_from(declared)), draw(st.sampled_from(declared + loose))
        if draw(st.booleans()):
            left, right = right, left
        return Condition(left, draw(st.sampled_from(ops)), right)
    if kind == "where":  # an aggregate of the appointments a where keeps, by a column, a JSON field or the time
        where = draw(st.recursive(_appointment_fields(), _combine, max_leaves=3))
        aggregate = draw(st.sampled_from(["count", "first_time", "last_time", "sum", "max"]))
        field = "rating" if aggregate in ("sum", "max") else None
        then = draw(st.none() | sequels(["appointment", "invoice", "repair_order.closed"]))
        window = draw(st.none() | typed_windows)
        path = Path("appointment", aggregate, window=window, field=field, where=where, then=then)
        if aggregate in ("first_time", "last_time"):
            return _repair(draw, path)
        return Condition(path, draw(st.sampled_from(_ORDER)), draw(st.integers(0, 6)))
    if kind == "aggregate":  # a sum, average, minimum or maximum of a JSON field, in a window or not
        field = draw(st.sampled_from([("invoice", "total"), ("appointment", "rating")]))
        aggregate = draw(st.sampled_from(["sum", "avg", "min", "max"]))
        path = Path(field[0], aggregate, window=draw(st.none() | typed_windows), field=field[1])
        op = draw(st.sampled_from([*_ORDER, Op.IN, Op.IS_KNOWN, Op.IS_UNKNOWN]))
        if op in (Op.IS_KNOWN, Op.IS_UNKNOWN):
            return Condition(path, op)
        sums = st.sampled_from([0, 0.3, 3, 4.5, 120, 120.3, 240, 500])
        return Condition(path, op, tuple(draw(st.lists(sums, min_size=1, max_size=3))) if op is Op.IN else draw(sums))
    if kind == "renewal":
        op = draw(st.sampled_from([*_ORDER, Op.BEFORE, Op.AFTER, Op.WITHIN_LAST, Op.WITHIN_NEXT, Op.IS_KNOWN]))
        if op is Op.IS_KNOWN:
            return Condition(Path("customer", "renewal"), op)
        if op in (Op.WITHIN_LAST, Op.WITHIN_NEXT):
            return Condition(Path("customer", "renewal"), op, Duration(draw(st.integers(0, 40)), draw(units)))
        return Condition(Path("customer", "renewal"), op, draw(time_values))
    if kind == "part":
        base = draw(
            st.sampled_from(
                [
                    Path("customer", "renewal"),
                    Path("appointment", "last_time"),
                    Path("invoice", "first_time"),
                    Path("repair_order.closed", "at"),
                ]
            )
        )
        part = draw(st.sampled_from(list(DatePart)))
        if part is DatePart.ANNIVERSARY:
            return anniversary_condition(draw, Path(base.category, base.attribute, part))
        value = {"year": st.integers(2024, 2028), "month": st.integers(1, 12), "day": st.integers(1, 31)}.get(
            part.value, st.integers(1, 7)
        )
        path = Path(base.category, base.attribute, part)
        op = draw(st.sampled_from([*_ORDER, Op.IS_KNOWN]))
        return Condition(path, op) if op is Op.IS_KNOWN else Condition(path, op, draw(value))
    if kind in ("total", "rating"):
        path = Path("invoice", "total") if kind == "total" else Path("appointment", "rating")
        op = draw(st.sampled_from([*_ORDER, Op.IN, Op.IS_KNOWN, Op.IS_UNKNOWN]))
        if op in (Op.IS_KNOWN, Op.IS_UNKNOWN):
            return Condition(path, op)
        numbers = st.integers(0, 5) | st.sampled_from([100, 120, 250])
        return Condition(
            path, op, tuple(draw(st.lists(numbers, min_size=1, max_size=3))) if op is Op.IN else draw(numbers)
        )
    if kind == "repair":
        path = draw(
            st.sampled_from([Path("repair_order.closed", "last_time"), Path("repair_order.closed", "first_time")])
        )
        return _repair(draw, path)
    if kind == "window":
        path = Path(draw(st.sampled_from(["appointment", "repair_order.closed"])), "count", window=draw(typed_windows))
        return Condition(path, draw(st.sampled_from([*_ORDER])), draw(st.integers(0, 3)))
    path = draw(st.sampled_from([Path("customer", "tags"), Path("customer", "pet")]))
    op = draw(st.sampled_from([Op.IN, Op.NOT_IN, Op.CONTAINS, Op.NOT_CONTAINS]))
    words = st.sampled_from(["vip", "VIP", "gold", "laval", "cat", "Escape"])
    return Condition(
        path, op, tuple(draw(st.lists(words, min_size=1, max_size=3))) if op in (Op.IN, Op.NOT_IN) else draw(words)
    )


@st.composite
def _appointment_fields(draw: st.DrawFn) -> Condition:
    """A condition of a where over appointments: the service column, the rating in JSON, the time."""
    kind = draw(st.sampled_from(["service", "rating", "at", "weekday"]))
    if kind == "service":
        op = draw(st.sampled_from([Op.EQ, Op.NE, Op.CONTAINS, Op.IS_KNOWN]))
        path = Path("appointment", "service")
        if op is Op.IS_KNOWN:
            return Condition(path, op)
        return Condition(path, op, draw(st.sampled_from(["cat", "vip", "Escape"])))
    if kind == "rating":
        op = draw(st.sampled_from([*_ORDER, Op.IS_UNKNOWN]))
        path = Path("appointment", "rating")
        return Condition(path, op) if op is Op.IS_UNKNOWN else Condition(path, op, draw(st.integers(1, 5)))
    if kind == "weekday":
        weekday = Path("appointment", "at", DatePart.WEEKDAY)
        return Condition(weekday, draw(st.sampled_from(_ORDER)), draw(st.integers(1, 7)))
    return _repair(draw, Path("appointment", "at"))


def _repair(draw: st.DrawFn, path: Path) -> Condition:
    op = draw(st.sampled_from([Op.LT, Op.GT, Op.BEFORE, Op.WITHIN_LAST, Op.IS_KNOWN]))
    if op is Op.IS_KNOWN:
        return Condition(path, op)
    if op is Op.WITHIN_LAST:
        return Condition(path, op, Duration(draw(st.integers(0, 800)), draw(units)))
    return Condition(path, op, draw(time_values))


def _combine(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    return st.one_of(
        st.lists(children, min_size=2, max_size=3).map(And),
        st.lists(children, min_size=2, max_size=3).map(Or),
        children.map(Not),
    )


# strategies.typed_conditions covers city, pet, vehicle_year, created_at (and parts), subscribed, phone, tags,
# appointment fields and aggregates, counts in windows and groups; host_conditions the rest of the mapping.
host_rules = st.recursive(typed_conditions | host_conditions(), _combine, max_leaves=5)


def _conditions(node: Node) -> Iterator[Condition]:
    match node:
        case And(items) | Or(items):
            for item in items:
                yield from _conditions(item)
        case Not(operand):
            yield from _conditions(operand)
        case Condition():
            yield node
        case InGroup():
            pass


def _valid(rule: Node, pg: bool) -> bool:
    if pg and any(c.path.attribute == "phone" for c in _conditions(rule)):
        return False  # phone conditions need SQLite on a host table
    try:
        compile_rule(rule)
    except RuleError:
        return False
    return True


# -- the differential test -------------------------------------------------------------------

DIFFERENTIAL = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def host_engine(request: pytest.FixtureRequest) -> Any:
    """An engine holding the host-shaped tables (empty), on SQLite or on the throwaway PostgreSQL."""
    if request.param == "sqlite":
        engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
        ddl = SQLITE_DDL
    else:
        engine = request.getfixturevalue("postgres_engine")
        ddl = PG_DDL
    with engine.begin() as conn:
        for statement in ddl:
            conn.exec_driver_sql(statement)
    return engine


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
@DIFFERENTIAL
@given(data=st.data())
def test_host_table_agrees_with_memory(host_engine: Any, zone: str, data: st.DataObject) -> None:
    """HostTable.select on the host's tables returns the ids MemoryRepository returns for the same values."""
    pg = host_engine.dialect.name == "postgresql"
    ids = data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=6, unique=True), label="ids")
    clients = {i: data.draw(client_rows(pg), label=f"client {i}") for i in ids}
    events = data.draw(event_rows(pg, ids), label="events")
    rules = [r for r in data.draw(st.lists(host_rules, min_size=1, max_size=5), label="rules") if _valid(r, pg)]
    assume(rules)
    now = data.draw(st.sampled_from([NOW, NOW + dt.timedelta(hours=13, microseconds=1)]), label="now")
    table = host(zone)
    with host_engine.begin() as conn:
        _fill(conn, pg, clients, events)
        expected_repository = reference(conn, table)
    for rule in rules:
        expected = expected_repository.select(rule, now, groups=groups)
        assert table.select(host_engine, rule, now, groups=groups) == expected, str(rule)
        assert table.select(host_engine, str(rule), now, groups=groups) == expected, str(rule)


# -- focused examples ------------------------------------------------------------------------

NOW_FIXED = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def crm() -> Any:
    """A small SQLite CRM: clients with a JSON column, repair orders with a status."""
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE clients (client_no INTEGER PRIMARY KEY, town TEXT, extra TEXT)")
        conn.exec_driver_sql(
            "CREATE TABLE repair_orders (id INTEGER PRIMARY KEY, client_no INTEGER, status TEXT, closed_at TEXT,"
            " amount REAL)"
        )
        conn.exec_driver_sql(
            "INSERT INTO clients VALUES (1, 'Laval', ?), (2, 'Lévis', ?), (3, NULL, NULL)",
            (json.dumps({"tags": ["VIP", "gold"], "prefs": {"channel": "SMS"}}), json.dumps({"tags": "vip"})),
        )
        conn.exec_driver_sql(
            "INSERT INTO repair_orders VALUES (1, 1, 'closed', '2026-01-01T10:00', 100),"
            " (2, 1, 'open', '2026-11-01', 5), (3, 2, 'closed', '2020-01-01', 50), (4, 2, 'closed', '2026-11-01', 60),"
            " (5, NULL, 'closed', '2026-11-01', 1)"
        )
    return engine


CRM = HostTable(
    "clients",
    id="client_no",
    columns={"city": "town", "tags": JsonField("extra", "tags"), "channel": JsonField("extra", "prefs", "channel")},
    events={
        "repair_order.closed": HostEvents(
            "repair_orders",
            customer="client_no",
            at="closed_at",
            where={"status": "closed"},
            fields={"total": "amount"},
        )
    },
)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ('customer.tags contains "vip"', {1, 2}),
        ('customer.tags in ["gold"]', {1}),
        ('not customer.tags contains "gold"', {2}),
        ('customer.channel = "sms"', {1}),
        ("repair_order.closed.count >= 2", {2}),
        ("repair_order.closed.count(last 90 days) >= 1", {2}),
        ("repair_order.closed.last_time < 730 days ago", {1, 2}),
        ("repair_order.closed.total > 70", {1}),
        ("repair_order.closed.first_time.year = 2020", {2}),
        ("not repair_order.closed.count >= 1", {3}),
    ],
)
def test_json_fields_and_events_on_sqlite(crm: Any, rule: str, expected: set[int]) -> None:
    """Lists in JSON, nested keys, a filtered event table: the answers worked out by hand."""
    assert CRM.select(crm, rule, NOW_FIXED) == expected


def test_filter_values_and_json_keys_are_bound_parameters() -> None:
    """The event filter's value and the JSON keys never appear in the SQL text."""
    for dialect in ("sqlite", "postgresql"):
        sql, params = CRM.to_sql(
            'repair_order.closed.count(last 90 days) >= 3 and customer.channel = "sms"', dialect, now=NOW_FIXED
        )
        values = list(params.values()) if isinstance(params, dict) else params
        assert "closed'" not in sql and "'closed" not in sql and "channel" not in sql and "prefs" not in sql
        assert "closed" in values
        assert (["prefs", "channel"] if dialect == "postgresql" else '$."prefs"."channel"') in values


def test_postgres_times_compare_with_timestamptz_parameters() -> None:
    """On PostgreSQL a time column is compared as it is (no epoch arithmetic), with a timestamptz parameter."""
    sql, params = CRM.to_sql("repair_order.closed.last_time < 730 days ago", "postgresql", now=NOW_FIXED)
    assert "EXTRACT(EPOCH" not in sql
    assert 'AND ((CAST(e1."closed_at" AS TIMESTAMPTZ) > CAST(%(p1)s AS TIMESTAMPTZ)))' in sql
    assert isinstance(params, dict) and params["p1"] == dt.datetime(2024, 11, 22, 12, tzinfo=dt.UTC)


# -- errors --------------------------------------------------------------------------------------


def test_unmapped_attribute_names_it_and_the_table(crm: Any) -> None:
    with pytest.raises(
        RuleError, match=r"customer\.email is not mapped to a column of clients \(mapped: channel, city"
    ):
        CRM.select(crm, 'customer.email = "x"', NOW_FIXED)


def test_unmapped_event_category_names_it(crm: Any) -> None:
    with pytest.raises(RuleError, match=r'maps no events named "appointment" \(mapped: repair_order\.closed\)'):
        CRM.select(crm, "appointment.count > 1", NOW_FIXED)
    with pytest.raises(RuleError, match=r"repair_order\.closed\.advisor is not mapped to a column of repair_orders"):
        CRM.select(crm, 'repair_order.closed.advisor = "Kim"', NOW_FIXED)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: HostTable("clients", id="client no", columns={}), ValueError, "the id column of clients"),
        (lambda: HostTable("clients", id="id", columns={"city": "town; drop"}), ValueError, "attribute 'city'"),
        (lambda: HostTable("clients", id="id", columns={"city": 3}), TypeError, "attribute 'city' of clients"),
        (lambda: JsonField("extra"), ValueError, "names no key"),
        (lambda: JsonField("extra", "a\x00b"), ValueError, "a key is non-empty text"),
        (lambda: JsonField("ex tra", "a"), ValueError, "JsonField"),
        (
            lambda: HostTable("c", id="id", columns={}, events={"customer.x": HostEvents("e", "c", "at")}),
            ValueError,
            "not an event category",
        ),
        (
            lambda: HostTable("c", id="id", columns={}, events={"visit": ("e", "c", "at")}),  # type: ignore[dict-item]
            TypeError,
            "events 'visit' of c map to a cohorts.HostEvents",
        ),
        (lambda: HostEvents("visits", customer="client", at="at time"), ValueError, "the time column of visits"),
        (
            lambda: HostEvents("visits", "c", "at", where={"status": object()}),
            TypeError,
            "filter of visits on 'status'",
        ),
        (lambda: HostEvents("visits", "c", "at", fields={"note": ["a"]}), TypeError, "field 'note' of visits"),
    ],
)
def test_bad_mappings_are_refused_with_clear_errors(make: Callable[[], Any], error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        make()


def test_check_names_a_missing_table_or_column(crm: Any) -> None:
    """HostTable.check compares the mapping with the database and names what is missing."""
    CRM.check(crm)
    bad = HostTable("clients", id="client_no", columns={"city": "city_name"})
    with pytest.raises(ValueError, match="attribute 'city': the table clients has no column 'city_name'"):
        bad.check(crm)
    missing = HostTable("clients", id="client_no", columns={}, events={"visit": HostEvents("visits", "c", "at")})
    with pytest.raises(ValueError, match=r"events 'visit' .*: the table visits does not exist"):
        missing.check(crm)


def test_phone_conditions_on_postgres_read_the_phone_table() -> None:
    """Without a phone table the error says where phones are read; with one, the query reads it."""
    table = HostTable("clients", id="client_no", columns={"phone": "phone"})
    with pytest.raises(RuleError, match=r"HostRepository.*phone_table"):
        table.to_sql('customer.phone = "514-555-0199"', "postgresql", now=NOW_FIXED)
    sql, _ = table.to_sql('customer.phone = "514-555-0199"', "postgresql", now=NOW_FIXED, phone_table="cohorts_phones")
    assert '"cohorts_phones"' in sql


# -- PostgreSQL: plain indexes on time columns, expression indexes on JSON keys ---------------------------


DOCUMENTED_JSON_INDEX = (
    "CREATE INDEX clients_channel ON clients ((CASE WHEN jsonb_typeof(extra #> '{prefs,channel}')"
    " IN ('string', 'number') THEN (CASE WHEN octet_length(((extra #> '{prefs,channel}') #>> '{}'))"
    " = char_length(((extra #> '{prefs,channel}') #>> '{}'))"
    " THEN NULLIF(lower(btrim(((extra #> '{prefs,channel}') #>> '{}')) COLLATE \"C\"), '')"
    " ELSE NULLIF(lower(normalize(btrim(((extra #> '{prefs,channel}') #>> '{}')), NFC) COLLATE \"und-x-icu\")"
    " COLLATE \"C\", '') END) END))"
)


@pytest.mark.postgres
def test_postgres_indexes_serve_host_conditions(postgres_engine: Any) -> None:
    """``< 730 days ago`` on a timestamptz column and a count in a window are served by plain btree indexes,
    text equality on a JSON key by the expression index docs/repositories.md gives."""
    docs = (pathlib.Path(__file__).parent.parent / "docs" / "repositories.md").read_text(encoding="utf-8")
    assert "crm_clients " + DOCUMENTED_JSON_INDEX.split(" ON clients ", 1)[1] + ";" in docs
    with postgres_engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE clients (client_no INTEGER PRIMARY KEY, created TIMESTAMPTZ, extra JSONB)")
        conn.exec_driver_sql("CREATE TABLE visits (id SERIAL PRIMARY KEY, client_no INTEGER, at TIMESTAMPTZ)")
        conn.exec_driver_sql(
            "INSERT INTO clients SELECT n, TIMESTAMPTZ '2026-11-22 12:00+00' - n * INTERVAL '1 day',"
            " jsonb_build_object('prefs', jsonb_build_object('channel', 'Channel ' || n))"
            " FROM generate_series(1, 5000) AS n"
        )
        conn.exec_driver_sql(
            "INSERT INTO visits (client_no, at) SELECT mod(n, 5000) + 1,"
            " TIMESTAMPTZ '2026-11-22 12:00+00' - n * INTERVAL '1 hour' FROM generate_series(1, 20000) AS n"
        )
        conn.exec_driver_sql("CREATE INDEX clients_created ON clients (created)")
        conn.exec_driver_sql("CREATE INDEX visits_client_at ON visits (client_no, at)")
        conn.exec_driver_sql(DOCUMENTED_JSON_INDEX)
        conn.exec_driver_sql("ANALYZE clients")
        conn.exec_driver_sql("ANALYZE visits")
    table = HostTable(
        "clients",
        id="client_no",
        columns={"created_at": "created", "channel": JsonField("extra", "prefs", "channel")},
        # declared text (not a list), the key is read by one expression, which an index can hold
        schema=default_schema().add("customer", "channel", "text").add("visit", "room", "text"),
        events={"visit": HostEvents("visits", customer="client_no", at="at")},
    )
    recent = "customer.created_at < 730 days ago"
    window = "visit.count(last 3 days) >= 1"
    channel = 'customer.channel in ["CHANNEL 42", "channel 4242"]'
    with postgres_engine.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        plans = {rule: table.explain(conn, rule, NOW_FIXED) for rule in (recent, window, channel)}
        found = {rule: table.select(conn, rule, NOW_FIXED) for rule in (recent, window, channel)}
    assert "clients_created" in plans[recent], plans[recent]
    assert "visits_client_at" in plans[window], plans[window]
    assert "clients_channel" in plans[channel], plans[channel]
    assert found[channel] == {42, 4242}
    start = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
    assert found[recent] == {
        n for n in range(1, 5001) if start - dt.timedelta(days=n) > NOW_FIXED - dt.timedelta(days=730)
    }
    hours = [n for n in range(1, 20001) if start - dt.timedelta(hours=n) >= NOW_FIXED - dt.timedelta(days=3)]
    assert found[window] == {n % 5000 + 1 for n in hours}
