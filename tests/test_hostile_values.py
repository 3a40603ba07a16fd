"""Hostile values (issue 15, item 7): every backend reads them as the in-memory reference does, or refuses them.

A seeded corpus of the cases (integers beyond 64 bits, decimal NaNs, lone
surrogates, instants outside datetime's range, JSON keys with quotes,
backslashes and accents) runs on memory, SQLite and PostgreSQL, with the
answers worked out by hand; a small hypothesis property draws more of them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohorts import Customer, Event, HostTable, JsonField
from cohorts.errors import RuleError
from cohorts.repository import CustomerDataError, MemoryRepository
from cohorts.testing import agrees
from cohorts.values import to_number, to_time

sa = pytest.importorskip("sqlalchemy")

NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
BIG = 2**63  # one past the largest 64-bit integer

# -- 1. integers beyond 64 bits ------------------------------------------------------

NUMBERS: dict[int, Any] = {
    1: BIG,
    2: BIG + 1,
    3: BIG - 1,
    4: -BIG - 1,
    5: -BIG,
    6: 10**30,
    7: 10**400,  # beyond a float too: unknown
    8: str(BIG),
    9: 5,
    10: [BIG * 2, 3],
    11: Decimal(BIG),
}

NUMBER_RULES = {
    f"customer.n > {BIG - 1}": {1, 2, 6, 8, 10, 11},
    f"customer.n = {BIG}": {1, 2, 8, 11},  # 2**63 + 1 reads as the float 2**63
    f"customer.n = {BIG - 1}": {3},
    f"customer.n >= {BIG + 1}": {1, 2, 6, 8, 10, 11},
    f"customer.n < {-BIG}": set(),  # -2**63 - 1 reads as the float -2**63
    f"customer.n <= {-BIG}": {4, 5},
    f"customer.n in [{BIG}, 5]": {1, 2, 8, 9, 11},
    f"customer.n between {BIG - 1} and {10**20}": {1, 2, 3, 8, 10, 11},
    f"customer.n contains {2 * BIG}": {10},
    "customer.n > 1e300": set(),
    "customer.n is unknown": set(),
    "customer.n > 4": {1, 2, 3, 6, 8, 9, 10, 11},
}


def _customers(values: dict[int, Any], name: str = "n") -> list[Customer]:
    return [Customer(i, {name: value}) for i, value in values.items()]


@pytest.mark.parametrize("rule", sorted(NUMBER_RULES))
def test_integers_beyond_64_bits(repository: Any, rule: str) -> None:
    """Integers of 2**63 and more (stored and in rules) compare on every backend as memory compares them."""
    repository.upsert(_customers(NUMBERS))
    assert repository.select(rule, NOW) == NUMBER_RULES[rule]


def test_integers_beyond_floats_in_rules_are_refused(repository: Any) -> None:
    """A rule's integer no float can hold is a RuleError with its text, not an OverflowError."""
    repository.upsert(_customers(NUMBERS))
    with pytest.raises(RuleError, match="too large"):
        repository.select(f"customer.n > {10**400}", NOW)


def test_wide_integers_read_as_floats() -> None:
    """The reading itself: 64-bit integers stay exact, wider ones are the nearest float, too wide is unknown."""
    assert to_number(BIG - 1) == BIG - 1 and type(to_number(BIG - 1)) is int
    assert to_number(BIG + 1) == float(BIG) and type(to_number(BIG + 1)) is float
    assert to_number(str(-BIG - 1)) == -float(BIG)
    assert to_number(10**400) is None


# -- 2. decimal NaNs -------------------------------------------------------------------

DECIMALS: dict[int, Any] = {
    1: Decimal("sNaN"),
    2: Decimal("NaN"),
    3: Decimal("-sNaN"),
    4: Decimal("Infinity"),
    5: Decimal("1e400"),
    6: Decimal("2.5"),
    7: [Decimal("sNaN"), Decimal(3)],
}

DECIMAL_RULES = {
    "customer.n > 0": {6, 7},
    "customer.n < 10": {6, 7},
    "customer.n = 3": {7},
    'customer.n = "snan"': {1, 7},
    'customer.n = "-snan"': {3},
    'customer.n = "nan"': {2},
    "customer.n is known": {1, 2, 3, 4, 5, 6, 7},
}


@pytest.mark.parametrize("rule", sorted(DECIMAL_RULES))
def test_decimal_nans_are_not_numbers(repository: Any, rule: str) -> None:
    """A decimal NaN (quiet or signalling) or infinity is no number on any backend; its text still reads."""
    repository.upsert(_customers(DECIMALS))
    assert repository.select(rule, NOW) == DECIMAL_RULES[rule]


def test_signalling_nans_in_events_merge(repository: Any) -> None:
    """Upserting an event with a signalling NaN again keeps one event (no InvalidOperation); a new one adds."""
    event = Event("claim", NOW, {"amount": Decimal("sNaN")})
    repository.upsert([Customer(1, {}, (event,))])
    repository.upsert([Customer(1, {}, (Event("claim", NOW, {"amount": Decimal("sNaN")}),))])
    assert repository.select("claim.count = 1", NOW) == {1}
    repository.upsert([Customer(1, {}, (event, Event("claim", NOW, {"amount": Decimal("NaN")})))])
    assert repository.select("claim.count = 2", NOW) == {1}
    assert repository.select("claim.amount > 0", NOW) == set()
    assert repository.select('claim.amount = "snan"', NOW) == {1}


# -- 3. lone surrogates ------------------------------------------------------------------

SURROGATE = "\ud800"

HOSTILE_CUSTOMERS = {
    "attribute": (Customer(2, {"name": f"a{SURROGATE}b"}), "attribute 'name'"),
    "attribute name": (Customer(2, {f"x{SURROGATE}": "ok"}), "attribute name"),
    "list element": (Customer(2, {"tags": ["ok", SURROGATE]}), "attribute 'tags'"),
    "map key": (Customer(2, {"extra": {SURROGATE: 1}}), "a key of attribute 'extra'"),
    "event field": (Customer(2, {}, (Event("visit", NOW, {"note": SURROGATE}),)), "field 'note' of event 'visit'"),
    "event name": (Customer(2, {}, (Event(f"v{SURROGATE}", NOW),)), "an event's name"),
    "id": (Customer(f"c{SURROGATE}", {}), "the id"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CUSTOMERS))
def test_lone_surrogates_are_refused_naming_the_customer(repository: Any, case: str) -> None:
    """Text with a lone surrogate is a CustomerDataError naming the customer and the value; nothing is written."""
    customer, where = HOSTILE_CUSTOMERS[case]
    with pytest.raises(CustomerDataError, match="lone surrogate") as caught:
        repository.upsert([Customer(1, {"name": "fine"}), customer])
    assert caught.value.customer_id == customer.id
    assert where in str(caught.value)
    assert set(repository.ids()) == set()


def test_lone_surrogates_in_added_events_are_refused(repository: Any) -> None:
    """add_events refuses a surrogate in a field the same way, and adds nothing."""
    repository.upsert([Customer(1, {})])
    with pytest.raises(CustomerDataError, match="field 'note' of event 'visit'"):
        repository.add_events(1, [Event("visit", NOW), Event("visit", NOW, {"note": SURROGATE})])
    assert repository.select("visit.count >= 1", NOW) == set()


def test_lone_surrogates_in_rules_are_rule_errors(repository: Any) -> None:
    """A rule's literal with a lone surrogate is a RuleError showing the condition."""
    repository.upsert([Customer(1, {"name": "x"})])
    with pytest.raises(RuleError, match="lone surrogate") as caught:
        repository.select(f'customer.name = "{SURROGATE}"', NOW)
    assert "customer.name" in str(caught.value)


# -- 4. instants outside datetime's range --------------------------------------------------

PLUS_14 = dt.timezone(dt.timedelta(hours=14))
TIMES: dict[int, Any] = {
    1: "0001-01-01T00:00:00+14:00",  # before 0001-01-01 UTC
    2: dt.datetime(1, 1, 1, tzinfo=PLUS_14),
    3: "9999-12-31T23:00:00-05:00",  # after 9999-12-31 UTC
    4: dt.datetime.max,  # naive: out of range west of Greenwich only
    5: dt.datetime.min,  # naive: out of range east of Greenwich only
    6: "2020-06-01T00:00:00Z",
    7: dt.datetime(9999, 12, 31, 23, tzinfo=dt.UTC),  # in range in UTC, not at +05:30
    8: dt.date(1, 1, 1),
}

TIME_RULES: dict[str, dict[str, set[int]]] = {
    "customer.t < 2000-01-01": {"UTC": {5, 8}, "America/New_York": {5, 8}, "Asia/Kolkata": set()},
    "customer.t > 2000-01-01": {"UTC": {4, 6, 7}, "America/New_York": {6, 7}, "Asia/Kolkata": {4, 6, 7}},
    "customer.t.year = 9999": {"UTC": {4, 7}, "America/New_York": {7}, "Asia/Kolkata": {4}},
    "customer.t.year = 1": {"UTC": {5, 8}, "America/New_York": {5, 8}, "Asia/Kolkata": set()},
    "customer.t.weekday = monday": {"UTC": {5, 6, 8}, "America/New_York": {5, 8}, "Asia/Kolkata": {6}},
}


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kolkata"])
@pytest.mark.parametrize("rule", sorted(TIME_RULES))
def test_instants_out_of_range_are_unknown(make_repository: Callable[..., Any], zone: str, rule: str) -> None:
    """An instant no backend can place in UTC is unknown everywhere; a date part it lacks in the zone too."""
    repository = make_repository(tz=zone)
    repository.upsert(_customers(TIMES, "t"))
    assert repository.select(rule, NOW) == TIME_RULES[rule][zone]


@pytest.mark.parametrize(
    ("at", "zone"),
    [
        (dt.datetime(1, 1, 1, tzinfo=PLUS_14), "UTC"),
        (dt.datetime.max, "America/New_York"),
        (dt.datetime(9999, 12, 31, 23, tzinfo=dt.UTC), "Asia/Kolkata"),
        (dt.date(1, 1, 1), "Asia/Kolkata"),
    ],
)
def test_events_out_of_range_are_refused(make_repository: Callable[..., Any], at: Any, zone: str) -> None:
    """An event whose time (or its date in the zone) is out of range is a CustomerDataError on every backend."""
    repository = make_repository(tz=zone)
    with pytest.raises(CustomerDataError, match="out of range"):
        repository.upsert([Customer(1, {}, (Event("visit", at),))])
    assert set(repository.ids()) == set()
    repository.upsert([Customer(1, {})])
    with pytest.raises(CustomerDataError, match="out of range"):
        repository.add_events(1, [Event("visit", at)])
    assert repository.select("visit.count >= 1", NOW) == set()


def test_to_time_refuses_what_utc_cannot_hold() -> None:
    """The reading itself: None beyond the range, the instant within it (even right at its ends)."""
    assert to_time("0001-01-01T00:00:00+14:00", dt.UTC) is None
    assert to_time(dt.datetime.max, dt.timezone(dt.timedelta(hours=-1))) is None
    assert to_time("0001-01-01T00:00:00-01:00", dt.UTC) == dt.datetime(1, 1, 1, 1, tzinfo=dt.UTC)
    assert to_time(dt.datetime.max, dt.UTC) == dt.datetime.max.replace(tzinfo=dt.UTC)


# -- 5. JSON keys with quotes, backslashes and accents on a host table ------------------------

ODD_KEYS = {"back": "a\\b", "quote": 'say "hi"', "accent": "naïve", "mixed": 'é"\\', "dot": "a.b", "plain": "ok"}
HOST = HostTable(
    "clients",
    id="client_no",
    columns={
        **{name: JsonField("extra", key) for name, key in ODD_KEYS.items()},
        "nested": JsonField("extra", "ü", "k\\", "plain"),
        "half": JsonField("extra", "plain", "ü"),
    },
)
HOST_ROWS: dict[int, Any] = {
    1: dict.fromkeys(ODD_KEYS.values(), "yes") | {"ü": {"k\\": {"plain": "deep"}}},
    2: {"a\\\\b": "yes", 'say \\"hi\\"': "yes", "na\\u00efve": "yes", "ab": "yes", "a": {"b": "yes"}},
    3: {"plain": {"ü": "half"}, "ü": {"k": {"plain": "deep"}}},
    4: None,
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def host_engine(request: pytest.FixtureRequest) -> Any:
    """The host's table, on SQLite (JSON as text) or PostgreSQL (JSONB), both ASCII-escaped and not."""
    if request.param == "sqlite":
        engine = sa.create_engine("sqlite://")
        kind = "TEXT"
    else:
        engine = request.getfixturevalue("postgres_engine")
        kind = "JSONB"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE clients (client_no INTEGER PRIMARY KEY, extra {kind})")
        for client, document in HOST_ROWS.items():
            text = None if document is None else json.dumps(document, ensure_ascii=client % 2 == 0)
            conn.execute(sa.text("INSERT INTO clients VALUES (:c, :e)"), {"c": client, "e": text})
    return engine


HOST_RULES = {
    **{f'customer.{name} = "yes"': {1} for name in ODD_KEYS},
    'customer.nested = "deep"': {1},
    'customer.half = "half"': {3},
    "customer.back is unknown": {2, 3, 4},
    "customer.mixed is known": {1},
}


@pytest.mark.parametrize("rule", sorted(HOST_RULES))
def test_json_keys_with_quotes_backslashes_and_accents(host_engine: Any, rule: str) -> None:
    """A JsonField key is matched as the decoded JSON key, on SQLite and PostgreSQL, as memory matches it."""
    reference = MemoryRepository([Customer(i, _host_attributes(document)) for i, document in HOST_ROWS.items()])
    assert reference.select(rule, NOW) == HOST_RULES[rule]
    assert HOST.select(host_engine, rule, NOW) == HOST_RULES[rule]


def _host_attributes(document: Any) -> dict[str, Any]:
    attributes = {}
    for name, field in HOST.columns.items():
        assert isinstance(field, JsonField)
        value = document
        for key in field.keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            attributes[name] = value
    return attributes


# -- a property over more of them ------------------------------------------------------------

EDGE_INTS = st.sampled_from([BIG - 1, BIG, BIG + 1, -BIG, -BIG - 1, 2**64, -(2**64), 2**53 + 1, 0])
EXTREME_INTS = EDGE_INTS | st.integers(-(2**70), 2**70)
DECIMALS_ODD = st.decimals(allow_nan=True, allow_infinity=True) | st.sampled_from([Decimal("sNaN"), Decimal("-NaN")])
EDGE_TIMES = st.builds(
    lambda day, offset: f"{day.isoformat()}T12:00:00{offset}",
    st.sampled_from([dt.date(1, 1, 1), dt.date(1, 1, 2), dt.date(9999, 12, 31), dt.date(9999, 12, 30)]),
    st.sampled_from(["", "Z", "+14:00", "-12:00", "+23:59", "-23:59"]),
)
ODD_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00"), max_size=6)
VALUES = EXTREME_INTS | DECIMALS_ODD | EDGE_TIMES | ODD_TEXT | st.datetimes() | st.lists(EXTREME_INTS, max_size=3)

PROPERTY = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def hostile_rules(draw: st.DrawFn) -> list[str]:
    """Rules comparing ``customer.v`` with extreme numbers and times near datetime's limits."""
    number = draw(EXTREME_INTS)
    day = draw(st.dates(dt.date(1, 1, 3), dt.date(9999, 12, 29)))
    op = draw(st.sampled_from(["=", "!=", "<", "<=", ">", ">="]))
    return [
        f"customer.v {op} {number}",
        f"customer.v in [{number}, {draw(EXTREME_INTS)}]",
        f"customer.v {op} {day.isoformat()}",
        f"customer.v.year {op} {day.year}",
        f'customer.v = "{draw(st.sampled_from(["snan", "nan", "x", "é"]))}"',
    ]


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Kiritimati"])
@PROPERTY
@given(values=st.lists(VALUES, max_size=8), rules=hostile_rules())
def test_hostile_values_agree_with_memory(
    make_repository: Callable[..., Any], zone: str, values: list[Any], rules: list[str]
) -> None:
    """Random extreme values select on every backend exactly what the in-memory reference selects."""
    repository = make_repository(tz=zone)
    customers = [Customer(i, {"v": value}) for i, value in enumerate(values)]
    agrees(repository, customers, rules, NOW, zone)


@PROPERTY
@given(text=st.text(min_size=1, max_size=4).map(lambda t: t + SURROGATE))
def test_surrogate_text_is_refused_everywhere(make_repository: Callable[..., Any], text: str) -> None:
    """Any text holding a lone surrogate is refused by every backend with the customer's id."""
    repository = make_repository()
    with pytest.raises(CustomerDataError, match="lone surrogate"):
        repository.upsert([Customer(7, {"v": text})])
