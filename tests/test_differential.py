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

from cohorts.parser import parse
from cohorts.repository import MemoryRepository
from cohorts.testing import GROUPS, NOW, _valid, agrees, customer_lists, deep_rules, rules
from cohorts.values import resolve_tz

from .strategies import deep_pairs

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
    drawn = data.draw(st.lists(rules | deep_rules(max_depth=250), min_size=1, max_size=6), label="rules")
    checked = [rule for rule in drawn if _valid(rule)]
    assume(checked)
    now = data.draw(st.sampled_from([NOW, NOW + dt.timedelta(hours=13, microseconds=1)]), label="now")
    agrees(repository, customers, checked, now, zone)
    shallow = [rule for rule in checked if len(str(rule)) < 20_000]
    agrees(repository, customers, [parse(str(rule)) for rule in shallow], now, zone)  # and as text


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
