"""Differential tests: every repository returns the in-memory reference's id sets.

Random customers with events (unknown values, accents and case, lists, phones
in several formats, times placed on the boundaries of the rules' relative
times) and random rules over every operator run on the ``repository`` fixture
(memory, SQLite, PostgreSQL) and on a fresh MemoryRepository at the same
``now``; the id sets must be identical.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cohorts import Customer, Event
from cohorts.ast import (
    Anchor,
    And,
    Condition,
    Duration,
    InGroup,
    Month,
    Node,
    Not,
    Op,
    Or,
    Path,
    Relative,
    Unit,
    Weekday,
    Window,
    WindowKind,
)
from cohorts.errors import RuleError
from cohorts.evaluate import compile as compile_rule
from cohorts.repository import MemoryRepository
from cohorts.values import day_start, resolve_tz, shift

from .strategies import deep_pairs, deep_rules

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)

# -- data ------------------------------------------------------------------------

WORDS = [
    "Laval",
    "LAVAL",
    " laval ",
    "Lévis",
    "LÉVIS",
    "Le\u0301vis",
    "levis",
    "Straße",
    "STRASSE",
    "strasse",
    "Montréal",
    "montreal",
    "Ford Escape",
    "escape",
    "ESCAPE hybrid",
    "École",
    "z",
    "A",
    "ab",
    "10",
    "2.5",
    "-3",
    "1e3",
    "yes",
    "No",
    "TRUE",
    "0",
    "1",
    "2026-11-20",
    "2025-01-01T10:00:00",
    "ǅemal",
    "ﬁne",
    "İstanbul",
]
PHONES = [
    "(514) 555-0199",
    "+1 514 555 0199",
    "514.555.0199",
    "5145550199",
    "1-514-555-0199",
    "+33 1 23 45 67 89",
    "+44 20 7946 0958",
    "555",
    "n/a",
    "450 555 1234",
    4505551234,
]
UNITS = [Unit.MINUTES, Unit.HOURS, Unit.DAYS, Unit.WEEKS, Unit.MONTHS, Unit.YEARS]
AMOUNTS = [0, 1, 2, 7, 30, 730]

texts = st.sampled_from(WORDS) | st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=4)
unknowns = st.sampled_from([None, "", "   ", []])


@st.composite
def instants(draw: st.DrawFn, tz: dt.tzinfo) -> dt.datetime:
    """A time on (or 1 µs / 1 s beside) a boundary a relative time or a calendar day can have at NOW."""
    amount = draw(st.sampled_from(AMOUNTS))
    unit = draw(st.sampled_from(UNITS))
    base = shift(NOW, -amount if draw(st.booleans()) else amount, unit, tz)
    if draw(st.booleans()):
        base = day_start(base, tz, draw(st.sampled_from([0, 1])))
    nudge = draw(st.sampled_from([0, 0, 1, -1, 1_000_000, -1_000_000, 3_600_000_000]))
    return base + dt.timedelta(microseconds=nudge)


@st.composite
def times(draw: st.DrawFn, tz: dt.tzinfo) -> Any:
    """A stored time: aware, naive (read in the repository's zone), a date, or ISO text."""
    instant = draw(instants(tz))
    match draw(st.sampled_from(["aware", "naive", "date", "text", "utc"])):
        case "aware":
            return instant.astimezone(tz)
        case "naive":
            return instant.astimezone(tz).replace(tzinfo=None)
        case "date":
            return instant.astimezone(tz).date()
        case "text":
            return instant.astimezone(tz).replace(tzinfo=None).isoformat()
        case _:
            return instant.astimezone(dt.UTC)


def numbers() -> st.SearchStrategy[Any]:
    return (
        st.integers(-5, 2030)
        | st.sampled_from([0.5, 2.5, 1999.0, -0.25, 2015, 2019])
        | st.sampled_from(["2015", " 2019 ", "3.5", "abc"])
    )


def anything(tz: dt.tzinfo) -> st.SearchStrategy[Any]:
    scalar = st.one_of(texts, numbers(), st.booleans(), times(tz), unknowns)
    return scalar | st.lists(scalar, max_size=3)


@st.composite
def attribute_dicts(draw: st.DrawFn, tz: dt.tzinfo) -> dict[str, Any]:
    """Attributes: declared ones of the right type or not, and undeclared ones of any type."""
    plan: dict[str, st.SearchStrategy[Any]] = {
        "city": texts | unknowns,
        "vehicle_model": texts | unknowns | numbers(),
        "vehicle_year": numbers() | unknowns,
        "subscribed": st.booleans() | st.sampled_from(["yes", "no", 1, 0, "maybe"]) | unknowns,
        "phone": st.sampled_from(PHONES) | unknowns,
        "tags": st.lists(texts | numbers(), max_size=3) | texts | unknowns,
        "created_at": times(tz) | unknowns,
        "score": numbers() | texts | unknowns,
        "note": anything(tz),
        "when": times(tz) | texts,
        "flag": st.booleans() | st.sampled_from(["oui", "non", "1"]),
        "misc": st.lists(st.one_of(numbers(), texts, st.booleans(), times(tz)), max_size=3),
    }
    chosen = draw(st.lists(st.sampled_from(sorted(plan)), unique=True, max_size=len(plan)))
    return {name: draw(plan[name]) for name in chosen}


EVENT_NAMES = ["appointment", "repair_order.closed", "invoice", "visit"]


@st.composite
def events(draw: st.DrawFn, tz: dt.tzinfo) -> Event:
    name = draw(st.sampled_from(EVENT_NAMES))
    fields = {
        "service": texts | unknowns,
        "status": texts,
        "total": numbers() | unknowns,
        "rating": numbers(),
        "due": times(tz),
    }
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=3))
    return Event(name, draw(times(tz).filter(lambda t: not isinstance(t, str))), {f: draw(fields[f]) for f in chosen})


@st.composite
def customer_lists(draw: st.DrawFn, tz: dt.tzinfo) -> list[Customer]:
    ids = draw(
        st.lists(
            st.integers(0, 40) | st.sampled_from(["c1", "c2", "1", "2", "Ünïcode", "x y"]),
            unique=True,
            min_size=3,
            max_size=12,
        )
    )
    return [Customer(i, draw(attribute_dicts(tz)), draw(st.lists(events(tz), max_size=4))) for i in ids]


# -- rules -------------------------------------------------------------------------

ALL_TEXT_OPS = [Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE, Op.CONTAINS, Op.NOT_CONTAINS, Op.STARTS_WITH, Op.ENDS_WITH]
ORDER_OPS = [Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE]
TIME_OPS = [Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE, Op.BEFORE, Op.AFTER]

rule_texts = st.sampled_from([w for w in WORDS if w.strip()]) | st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=3
).filter(lambda t: bool(t.strip()))
rule_numbers = st.integers(-3, 2030) | st.sampled_from([0.5, 2.5, 2015, 2019, 1999.0, 3])
relatives = st.builds(Relative, st.sampled_from(AMOUNTS), st.sampled_from(UNITS), st.booleans())
rule_times = st.one_of(
    relatives,
    st.sampled_from(list(Anchor)),
    st.dates(dt.date(2024, 11, 20), dt.date(2028, 11, 24)),
    st.builds(lambda t: t.replace(microsecond=0), instants(dt.UTC)),
)


@st.composite
def listed(draw: st.DrawFn, values: st.SearchStrategy[Any], op: Op) -> Any:
    if op in (Op.IN, Op.NOT_IN):
        return tuple(draw(st.lists(values, min_size=1, max_size=3)))
    if op is Op.BETWEEN:
        return (draw(values), draw(values))
    return draw(values)


@st.composite
def text_conditions(draw: st.DrawFn) -> Condition:
    path = draw(
        st.sampled_from(
            [
                "customer.city",
                "customer.vehicle_model",
                "customer.note",
                "customer.tags",
                "customer.score",
                "appointment.service",
                "invoice.status",
                "visit.status",
            ]
        )
    )
    op = draw(st.sampled_from([*ALL_TEXT_OPS, Op.IN, Op.NOT_IN, Op.BETWEEN]))
    return Condition(Path.of(path), op, draw(listed(rule_texts, op)))


@st.composite
def number_conditions(draw: st.DrawFn) -> Condition:
    path = draw(
        st.sampled_from(
            [
                "customer.vehicle_year",
                "customer.score",
                "customer.note",
                "customer.misc",
                "invoice.total",
                "appointment.rating",
                "appointment.count",
                "repair_order.closed.count",
                "invoice.count",
            ]
        )
    )
    op = draw(st.sampled_from([*ORDER_OPS, Op.IN, Op.NOT_IN, Op.BETWEEN]))
    if path == "customer.misc" and draw(st.booleans()):
        op = draw(st.sampled_from([Op.CONTAINS, Op.NOT_CONTAINS]))
    return Condition(Path.of(path), op, draw(listed(rule_numbers, op)))


@st.composite
def part_conditions(draw: st.DrawFn) -> Condition:
    base = draw(
        st.sampled_from(
            [
                "customer.created_at",
                "customer.when",
                "appointment.at",
                "visit.due",
                "repair_order.closed.last_time",
                "invoice.first_time",
            ]
        )
    )
    part = draw(st.sampled_from(["year", "month", "day", "weekday"]))
    values: st.SearchStrategy[Any] = {
        "year": st.sampled_from([2024, 2025, 2026, 2027, 2028]),
        "month": st.sampled_from(list(Month)) | st.integers(1, 12),
        "day": st.integers(1, 31),
        "weekday": st.sampled_from(list(Weekday)) | st.integers(1, 7),
    }[part]
    op = draw(st.sampled_from([*ORDER_OPS, Op.IN, Op.NOT_IN, Op.BETWEEN]))
    return Condition(Path.of(f"{base}.{part}"), op, draw(listed(values, op)))


@st.composite
def time_conditions(draw: st.DrawFn) -> Condition:
    path = draw(
        st.sampled_from(
            [
                "customer.created_at",
                "customer.when",
                "customer.misc",
                "appointment.at",
                "repair_order.closed.at",
                "repair_order.closed.last_time",
                "invoice.first_time",
                "visit.due",
                "appointment.last_time",
            ]
        )
    )
    op = draw(st.sampled_from([*TIME_OPS, Op.IN, Op.NOT_IN, Op.BETWEEN, Op.WITHIN_LAST, Op.WITHIN_NEXT]))
    if op in (Op.WITHIN_LAST, Op.WITHIN_NEXT):
        value: Any = Duration(draw(st.sampled_from(AMOUNTS)), draw(st.sampled_from(UNITS)))
    else:
        value = draw(listed(rule_times, op))
    return Condition(Path.of(path), op, value)


@st.composite
def other_conditions(draw: st.DrawFn) -> Node:
    kind = draw(st.sampled_from(["bool", "phone", "known", "group"]))
    if kind == "bool":
        path = draw(st.sampled_from(["customer.subscribed", "customer.flag", "customer.note", "customer.misc"]))
        op = draw(st.sampled_from([Op.EQ, Op.NE, Op.IN, Op.NOT_IN]))
        return Condition(Path.of(path), op, draw(listed(st.booleans(), op)))
    if kind == "phone":
        op = draw(
            st.sampled_from(
                [Op.EQ, Op.NE, Op.IN, Op.NOT_IN, Op.CONTAINS, Op.NOT_CONTAINS, Op.STARTS_WITH, Op.ENDS_WITH]
            )
        )
        if op in (Op.CONTAINS, Op.NOT_CONTAINS, Op.STARTS_WITH, Op.ENDS_WITH):
            value: Any = draw(st.sampled_from(["514", "+1514", "0199", "555", "+33", "4505551234"]))
        else:
            value = draw(listed(st.sampled_from([p for p in PHONES if p not in ("555", "n/a")]), op))
        return Condition(Path.of("customer.phone"), op, value)
    if kind == "known":
        path = draw(
            st.sampled_from(
                [
                    "customer.city",
                    "customer.note",
                    "customer.misc",
                    "customer.tags",
                    "customer.phone",
                    "customer.created_at",
                    "customer.created_at.year",
                    "customer.subscribed",
                    "appointment.service",
                    "invoice.due",
                    "visit.at",
                    "appointment.count",
                    "invoice.first_time",
                    "repair_order.closed.last_time.month",
                    "customer.nothing",
                ]
            )
        )
        return Condition(Path.of(path), draw(st.sampled_from([Op.IS_KNOWN, Op.IS_UNKNOWN])))
    return InGroup(draw(st.sampled_from(["VIP", "Empty", "Mixed"])), draw(st.booleans()))


@st.composite
def window_conditions(draw: st.DrawFn) -> Condition:
    """A count in a window whose edges fall where the event times cluster (relative times and days at NOW)."""
    kind = draw(st.sampled_from(list(WindowKind)))
    value: Any
    if kind in (WindowKind.LAST, WindowKind.NEXT):
        value = Duration(draw(st.sampled_from(AMOUNTS)), draw(st.sampled_from(UNITS)))
    elif kind is WindowKind.SINCE:
        value = draw(rule_times)
    else:
        value = (draw(rule_times), draw(rule_times))
    category = draw(st.sampled_from(["appointment", "repair_order.closed", "invoice"]))
    path = Path(category, "count", window=Window(kind, value))
    op = draw(st.sampled_from([*ORDER_OPS, Op.IN, Op.NOT_IN, Op.BETWEEN, Op.IS_KNOWN, Op.IS_UNKNOWN]))
    if op in (Op.IS_KNOWN, Op.IS_UNKNOWN):
        return Condition(path, op)
    return Condition(path, op, draw(listed(st.integers(0, 3), op)))


conditions = st.one_of(
    text_conditions(),
    number_conditions(),
    part_conditions(),
    time_conditions(),
    window_conditions(),
    other_conditions(),
)


def _combine(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    return st.one_of(
        st.lists(children, min_size=2, max_size=3).map(And),
        st.lists(children, min_size=2, max_size=3).map(Or),
        children.map(Not),
    )


rules = st.recursive(conditions, _combine, max_leaves=5)

# Rules hundreds of levels deep (chains of NOT, AND and OR over these rules). The SQL compilers still
# recurse over rules, so the differential test draws them only with DEEP_SQL on; meanwhile
# test_deep_rules_select_like_their_shallow_rule runs them in memory.
DEEP_SQL = False
deep_sql_rules = deep_rules(rules, conditions, max_depth=600)
differential_rules = st.one_of(rules, deep_sql_rules) if DEEP_SQL else rules

GROUPS: dict[str, frozenset[Any]] = {
    "VIP": frozenset({1, 2, 3, "c1", "Ünïcode"}),
    "Empty": frozenset(),
    "Mixed": frozenset({"1", 2, "x y", 40, 7}),
}


def _valid(rule: Node) -> bool:
    try:
        compile_rule(rule)  # lenient: undeclared attributes are typed by the rule's values
    except RuleError:
        return False
    return True


# -- the properties ------------------------------------------------------------------

DIFFERENTIAL = settings(
    max_examples=35,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
@DIFFERENTIAL
@given(data=st.data())
def test_select_agrees_with_memory(make_repository: Callable[..., Any], zone: str, data: st.DataObject) -> None:
    """Every backend selects exactly the ids the in-memory reference selects, for random data and rules."""
    tz = resolve_tz(zone)
    repository = _repository(make_repository, zone)
    customers = data.draw(customer_lists(tz), label="customers")
    drawn = data.draw(st.lists(differential_rules, min_size=1, max_size=6), label="rules")
    checked = [rule for rule in drawn if _valid(rule)]
    assume(checked)
    now = data.draw(st.sampled_from([NOW, NOW + dt.timedelta(hours=13, microseconds=1)]), label="now")
    reference = MemoryRepository(customers, tz=zone)
    repository.delete(*repository.ids())
    repository.upsert(customers)
    for rule in checked:
        expected = reference.select(rule, now, groups=GROUPS.__getitem__)
        assert repository.select(rule, now, groups=GROUPS.__getitem__) == expected, str(rule)
        assert repository.select(str(rule), now, groups=GROUPS.__getitem__) == expected, str(rule)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_deep_rules_select_like_their_shallow_rule(data: st.DataObject) -> None:
    """In memory, a rule under hundreds of levels of NOT and neutral ANDs and ORs selects what the rule means."""
    customers = data.draw(customer_lists(dt.UTC), label="customers")
    deep, shallow = data.draw(deep_pairs(rules, max_depth=1_000), label="rules")
    assume(_valid(shallow))
    repository = MemoryRepository(customers, tz="UTC")
    assert repository.select(deep, NOW, groups=GROUPS.__getitem__) == repository.select(
        shallow, NOW, groups=GROUPS.__getitem__
    )


_made: dict[tuple[int, str], Any] = {}


def _repository(make_repository: Callable[..., Any], zone: str) -> Any:
    # One repository per test invocation, reused (and emptied) by every example.
    key = (id(make_repository), zone)
    if key not in _made:
        _made.clear()
        _made[key] = make_repository(tz=zone)
    return _made[key]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_round_trip(make_repository: Callable[..., Any], data: st.DataObject) -> None:
    """What a repository stores reads back equal (lists come back as lists)."""
    repository = _repository(make_repository, "UTC")
    customers = data.draw(customer_lists(dt.UTC))
    repository.delete(*repository.ids())
    repository.upsert(customers)
    assert repository.ids() == {c.id for c in customers}
    assert len(repository) == len(customers)
    for customer in customers:
        stored = repository.get(customer.id)
        assert stored is not None
        assert stored.attributes == _listy(customer.attributes)
        assert stored.events == customer.events
    assert sorted(map(repr, (c.id for c in repository))) == sorted(map(repr, (c.id for c in customers)))


def _listy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _listy(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_listy(v) for v in value]
    return value


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_window_bounds_are_bound_parameters(dialect: str) -> None:
    """A count in a window compiles to a COUNT over the events whose time is between bound parameters."""
    from cohorts.sql import micros, to_sql

    sql, params = to_sql("invoice.count(between 2026-01-01 and 2026-03-31) >= 2", dialect, now=NOW)
    values = list(params.values()) if isinstance(params, dict) else params
    low = micros(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    high = micros(dt.datetime(2026, 4, 1, tzinfo=dt.UTC))
    assert values == ["invoice", low, high, 2]
    assert "count(*)" in sql
    assert "2026" not in sql and str(low) not in sql and "invoice" not in sql.replace("cohorts_events", "")
