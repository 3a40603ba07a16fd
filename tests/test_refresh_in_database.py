"""A full refresh computed by the database gives what the in-memory reference gives.

On SQL, a group's evaluation is staged, diffed and written by the database
(:class:`cohorts.group_store.DiffsInDatabase`), and the next instants of
time-based answers are computed there from event times
(:meth:`cohorts.timing.TimeCondition.offsets`). These tests compare that path
with a :class:`MemoryRepository` over the same customers: the changes and the
history of the refresh, the members read at later moments (which revisit what
the stored instants say is due), and the instants themselves, which may be
earlier than the reference's but never later.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cohorts import Customer, Event, Groups, MemoryRepository
from cohorts.ast import Anchor, Duration, Op, Path, Relative, Unit
from cohorts.group_store import DiffsInDatabase
from cohorts.timing import TimeCondition

NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
CITIES = ["Laval", "Lévis", "Montréal", None]
MODELS = ["Ford Escape", "Ford Focus", "Honda Civic"]
RULES = [
    ("city", 'customer.city = "laval"'),
    ("recent", "repair.last_time within last 30 days"),
    ("recent escape", 'repair.last_time < 14 days ago and customer.model contains "escape"'),
    ("old or focus", 'repair.first_time > 100 days ago or customer.model contains "focus"'),
    ("visits", "visit.count(last 7 days) >= 2"),
    ("visit soon", "visit.at within next 3 days"),
    ("hours", "visit.last_time > 36 hours ago"),
    ("months", "repair.last_time within last 2 months"),  # calendar months: instants found in Python
    ("today", "visit.at = today"),  # a calendar day: instants found in Python
    ("signed up", "customer.signed_up < 20 days ago"),  # a customer's attribute: instants found in Python
    ("both", 'customer in group "city" and customer not in group "recent"'),
    ("either", 'customer in group "visits" or customer in group "recent escape"'),
]


def _customers(count: int, seed: int) -> list[Customer]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        events = [
            Event(name, NOW + dt.timedelta(minutes=rng.randint(-90 * 24 * 60, 5 * 24 * 60)))
            for name in ("repair", "visit", "visit")
            for _ in range(rng.randint(0, 2))
        ]
        attributes: dict[str, Any] = {"city": rng.choice(CITIES), "model": rng.choice(MODELS)}
        if rng.random() < 0.7:
            attributes["signed_up"] = NOW - dt.timedelta(hours=rng.randint(0, 60 * 24))
        out.append(Customer(i if i % 3 else f"c{i}", attributes, events))
    return out


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def sql_repository(request: pytest.FixtureRequest) -> Callable[..., Any]:
    from cohorts.sql import SQLRepository

    def make(**options: Any) -> Any:
        if request.param == "sqlite":
            return SQLRepository("sqlite://", **options)
        return SQLRepository(request.getfixturevalue("postgres_engine"), **options)

    return make


def _groups(repository: Any, customers: list[Customer]) -> Groups:
    repository.upsert(customers)
    groups = Groups(repository)
    for name, rule in RULES:
        groups.create(name, rule)
    return groups


@pytest.mark.parametrize("tz", ["UTC", "America/Montreal"])
def test_a_full_refresh_in_the_database_equals_the_reference(sql_repository: Callable[..., Any], tz: str) -> None:
    customers = _customers(160, seed=5)
    sql = _groups(sql_repository(tz=tz), customers)
    memory = _groups(MemoryRepository(tz=tz), customers)
    assert isinstance(sql._store, DiffsInDatabase)

    def key(changes: list[Any]) -> Counter[tuple[Any, ...]]:
        return Counter((c.group, c.customer_id, c.before, c.after, c.cause) for c in changes)

    found, expected = sql.refresh(NOW), memory.refresh(NOW)
    assert expected and key(found) == key(expected)
    def entries(groups: Groups) -> Counter[tuple[Any, ...]]:
        return Counter((e.group, e.customer_id, e.joined, e.origins, e.cause) for e in groups.history())

    assert entries(sql) == entries(memory)  # each change written once, by the database

    # The stored instants: never later than the reference's (earlier only within daylight-saving margins).
    for definition in memory._store.definitions():
        reference = memory._store.group_slots(definition.id)
        for cid, slot in sql._store.group_slots(definition.id).items():
            if reference.get(cid) is None or reference[cid].rule is None:
                assert slot.rule is None or not slot.rule.matched
                continue
            want = reference[cid].rule
            assert slot.rule is not None and want is not None
            assert slot.rule.matched == want.matched
            if want.due is not None:
                assert slot.rule.due is not None and slot.rule.due <= want.due, (definition.name, cid)
            if tz == "UTC":
                assert slot.rule.due == want.due, (definition.name, cid)

    # Later reads revisit what is due, and agree with the reference at every moment.
    for hours in (0, 5, 13, 30, 49, 24 * 4 + 1, 24 * 8, 24 * 15, 24 * 31, 24 * 62, 24 * 101):
        at = NOW + dt.timedelta(hours=hours)
        for name, _ in RULES:
            assert sql.members(name, at) == memory.members(name, at), (name, hours)


def test_a_second_full_refresh_changes_nothing_and_a_rule_change_diffs(sql_repository: Callable[..., Any]) -> None:
    customers = _customers(80, seed=8)
    sql = _groups(sql_repository(), customers)
    memory = _groups(MemoryRepository(), customers)
    sql.refresh(NOW)
    memory.refresh(NOW)
    assert sql.refresh(NOW, full=True) == []
    sql.add("city", customers[1].id, now=NOW)
    sql.exclude("city", customers[2].id, now=NOW)
    memory.add("city", customers[1].id, now=NOW)
    memory.exclude("city", customers[2].id, now=NOW)
    for groups in (sql, memory):
        groups.set_rule("city", 'customer.city in ["levis", "laval"]')
    changed = sql.refresh(NOW)
    assert {(c.customer_id, c.before, c.after) for c in changed} == {
        (c.customer_id, c.before, c.after) for c in memory.refresh(NOW)
    }
    assert sql.members("both", NOW) == memory.members("both", NOW)
    assert sql.members("city", NOW) == memory.members("city", NOW)


def test_a_failing_rule_in_the_database_leaves_the_other_groups(
    sql_repository: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    customers = _customers(40, seed=2)
    sql = _groups(sql_repository(), customers)
    sql.refresh(NOW)
    before = {name: sql.members(name, NOW) for name, _ in RULES}
    store = sql._store
    assert isinstance(store, DiffsInDatabase)
    stage = store.stage_rule
    broken = sql.definition("recent").id

    def failing(group_id: int, *args: Any) -> None:
        stage(group_id, *args)
        if group_id == broken:
            raise RuntimeError("the database refused the query")

    monkeypatch.setattr(store, "stage_rule", failing)
    sql.refresh(NOW, full=True)
    assert "refused" in sql.errors(NOW)["recent"]
    for name, _ in RULES:
        if name != "recent":
            assert sql.members(name, NOW) == before[name], name


def test_a_catch_up_after_many_writes_is_computed_in_the_database(
    sql_repository: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    customers = _customers(700, seed=11)
    sql = _groups(sql_repository(), customers)
    memory = _groups(MemoryRepository(), customers)
    sql.refresh(NOW)
    memory.refresh(NOW)
    store = sql._store
    assert isinstance(store, DiffsInDatabase) and store.scopes
    scopes: list[int] = []
    start = store.start_pass

    def spy(scope: Any = None) -> None:
        scopes.append(-1 if scope is None else len(scope))
        start(scope)

    monkeypatch.setattr(store, "start_pass", spy)
    rng = random.Random(4)
    edited = [
        c.with_attributes(city=rng.choice(CITIES), model=rng.choice(MODELS))
        for c in rng.sample(customers, 560)
    ]
    later = NOW + dt.timedelta(hours=3)
    for groups in (sql, memory):
        groups.repository.upsert(edited)
        for c in edited[:40]:
            groups.repository.add_events(c.id, [Event("visit", later - dt.timedelta(hours=1))])
        groups.repository.delete(*[c.id for c in edited[40:60]])
    for name, _ in RULES:
        assert sql.members(name, later) == memory.members(name, later), name
    assert scopes and scopes[0] == 540  # one pass over the changed customers still stored
    for hours in (24, 24 * 9, 24 * 40):
        at = later + dt.timedelta(hours=hours)
        for name, _ in RULES:
            assert sql.members(name, at) == memory.members(name, at), (name, hours)
    # Their digests went with the pass: a later small edit of one of them is seen in full.
    one = edited[0].with_attributes(city="Laval")
    for groups in (sql, memory):
        groups.repository.upsert([one])
        groups.repository.upsert([one.with_attributes(city=edited[0].attributes["city"])])
    for name, _ in RULES:
        assert sql.members(name, later) == memory.members(name, later), name


# -- the offsets bound the turning points -------------------------------------------

ZONES = [dt.UTC, ZoneInfo("America/Montreal"), ZoneInfo("Australia/Lord_Howe"), ZoneInfo("Antarctica/Troll")]
UNITS = [Unit.MINUTES, Unit.HOURS, Unit.DAYS, Unit.WEEKS]
moments = st.datetimes(
    min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2029, 12, 31), timezones=st.just(dt.UTC)
)
relative = st.builds(Relative, st.integers(0, 400), st.sampled_from(UNITS), st.booleans())
conditions = st.one_of(
    st.tuples(st.sampled_from([Op.LT, Op.LE, Op.GT, Op.GE]), st.one_of(relative, st.just(Anchor.NOW))),
    st.tuples(
        st.sampled_from([Op.WITHIN_LAST, Op.WITHIN_NEXT]),
        st.builds(Duration, st.integers(1, 400), st.sampled_from(UNITS)),
    ),
    st.tuples(st.just(Op.EQ), st.builds(Relative, st.integers(0, 400), st.sampled_from(UNITS[:2]), st.booleans())),
)


def _bound(condition: TimeCondition, v: dt.datetime, now: dt.datetime) -> dt.datetime | None:
    """The instant the database computes from the offsets (see cohorts.sql.compiler.dues_query)."""
    offsets = condition.offsets()
    assert offsets is not None
    found = []
    for offset, early, late in offsets:
        if v + offset - early > now:
            found.append(v + offset - early)
        elif v + offset + late > now:
            found.append(now + dt.timedelta(microseconds=1))
    return min(found, default=None)


@settings(max_examples=300, deadline=None)
@given(conditions, st.sampled_from(ZONES), moments, moments)
def test_the_offsets_never_pass_a_turning_point(
    spec: tuple[Op, Any], tz: dt.tzinfo, v: dt.datetime, now: dt.datetime
) -> None:
    op, value = spec
    condition = TimeCondition(Path("visit", "at"), op, value, tz)
    exact = condition.turning_point(v, now)
    bound = _bound(condition, v, now)
    if exact is not None:
        assert bound is not None and now < bound <= exact


def test_calendar_turning_points_are_left_to_python() -> None:
    for op, value in [
        (Op.LT, Relative(2, Unit.MONTHS, True)),
        (Op.EQ, Relative(3, Unit.DAYS, True)),
        (Op.EQ, Anchor.TODAY),
        (Op.EQ, Anchor.THIS_MONTH),
        (Op.WITHIN_LAST, Duration(1, Unit.YEARS)),
    ]:
        assert TimeCondition(Path("visit", "at"), op, value, dt.UTC).offsets() is None
