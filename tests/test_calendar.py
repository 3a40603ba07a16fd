"""``this month``, ``last month``, ``next month``: calendar months in the repository's time zone.

A month word is the whole month, as ``today`` is the whole day: ``= this month`` is within it,
``before this month`` before its first midnight, ``> this month`` from the next month's first
midnight on. Groups whose rules read a month word change at month ends, and catch up there.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cohorts import Customer, Event, from_json, parse, to_dict
from cohorts.ast import Anchor
from cohorts.groups import Groups
from cohorts.repository import MemoryRepository
from cohorts.values import month_start, resolve_time

MONTREAL = ZoneInfo("America/Montreal")


def test_the_words_parse_print_and_round_trip() -> None:
    rule = parse("customer.renewal_date = THIS  Month OR invoice.at after last month OR customer.x < next month")
    assert str(rule) == "customer.renewal_date = this month OR invoice.at after last month OR customer.x < next month"
    assert from_json(to_dict(rule)) == rule
    window = parse("appointment.count(since last month) >= 2")
    assert str(window) == "appointment.count(since last month) >= 2"


@pytest.mark.parametrize(
    ("anchor", "start", "end"),
    [
        (Anchor.THIS_MONTH, dt.datetime(2026, 3, 1), dt.datetime(2026, 4, 1)),
        (Anchor.LAST_MONTH, dt.datetime(2026, 2, 1), dt.datetime(2026, 3, 1)),
        (Anchor.NEXT_MONTH, dt.datetime(2026, 4, 1), dt.datetime(2026, 5, 1)),
    ],
)
def test_a_month_is_its_local_midnights(anchor: Anchor, start: dt.datetime, end: dt.datetime) -> None:
    """In Montreal, March 2026 (daylight saving starts on the 8th) runs from its local midnights."""
    now = dt.datetime(2026, 3, 31, 23, 30, tzinfo=MONTREAL)  # 03:30 UTC on April 1st: still March here
    interval = resolve_time(anchor, now, MONTREAL)
    assert interval.start == start.replace(tzinfo=MONTREAL)
    assert interval.end == end.replace(tzinfo=MONTREAL)


def test_month_start_crosses_years() -> None:
    utc = dt.UTC
    assert month_start(dt.date(2026, 12, 7), utc, 1) == dt.datetime(2027, 1, 1, tzinfo=utc)
    assert month_start(dt.date(2026, 1, 7), utc, -1) == dt.datetime(2025, 12, 1, tzinfo=utc)
    assert month_start(dt.date(2026, 1, 31), utc, -13) == dt.datetime(2024, 12, 1, tzinfo=utc)


def _customers() -> list[Customer]:
    days = [dt.datetime(2026, 1, 1, tzinfo=MONTREAL) + dt.timedelta(days=d, hours=h) for d in (0, 30, 31, 58, 59, 89)
            for h in (0, 23)]
    return [
        Customer(i, {"renewal": at.isoformat()}, [Event("invoice", at)])
        for i, at in enumerate(days)
    ]


RULES = [
    "customer.renewal = this month",
    "customer.renewal = last month",
    "customer.renewal != next month",
    "customer.renewal before this month",
    "customer.renewal >= next month",
    "invoice.last_time = last month",
    "invoice.count(since this month) >= 1",
]


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@given(steps=st.lists(st.integers(1, 20 * 24), min_size=1, max_size=8))
@settings(max_examples=25, deadline=None)
def test_groups_follow_month_ends(backend: str, steps: list[int]) -> None:
    """Reads at later and later ``now`` (hours apart, across month ends and DST) equal a fresh evaluation."""
    customers = _customers()
    repository: Any
    if backend == "memory":
        repository = MemoryRepository(customers, tz=MONTREAL)
    else:
        from cohorts.sql import SQLRepository

        repository = SQLRepository("sqlite://", tz=MONTREAL)
        repository.upsert(customers)
    groups = Groups(repository)
    for i, rule in enumerate(RULES):
        groups.create(f"g{i}", rule)
    now = dt.datetime(2026, 1, 20, 12, tzinfo=MONTREAL)
    reference = MemoryRepository(customers, tz=MONTREAL)
    for hours in steps:
        now += dt.timedelta(hours=hours)
        for i, rule in enumerate(RULES):
            assert set(groups.members(f"g{i}", now)) == reference.select(parse(rule), now), (rule, now)
