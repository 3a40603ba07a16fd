"""Birthdays and anniversaries: ``customer.birthday.anniversary within next 7 days``.

A date's anniversary is its month and day, which come back every year. A test of it names days
(``= today``, ``= this month``, ``within next 7 days``, ``between X and Y``) and passes when the
anniversary falls on one of them; February 29 falls on February 28 in years without one. The
language (parse, print, JSON, errors), the meaning on every backend against memory, host tables,
``explain``, and groups that move by themselves day by day. The random differential tests draw
anniversaries too (``cohorts.testing.anniversary_condition``).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
import sqlalchemy as sa

import cohorts
from cohorts import Customer, Event, Groups, HostTable, MemoryRepository, Schema
from cohorts.ast import Condition, DatePart, Duration, Op, Path, Unit
from cohorts.errors import RuleTypeError
from cohorts.values import MonthDay

NOW = dt.datetime(2026, 11, 16, 14, 0, tzinfo=dt.UTC)  # a Monday
SCHEMA = Schema({"customer": {"birthday": "date", "hired": "datetime", "city": "text"}, "policy": {"start": "date"}})

CUSTOMERS = [
    Customer(1, {"birthday": "1980-11-16"}),  # today
    Customer(2, {"birthday": "1975-11-23"}),  # a week from today
    Customer(3, {"birthday": "1990-11-24"}),  # a week and a day
    Customer(4, {"birthday": "2000-02-29"}),  # a leap day
    Customer(5, {"birthday": "1969-12-31"}),
    Customer(6, {"birthday": "1988-01-02"}),  # across the new year
    Customer(7, {"birthday": "1999-11-10"}),  # last week
    Customer(8, {}),  # unknown
    Customer(9, {"birthday": "not a date"}),
]

CASES: list[tuple[str, set[Any]]] = [
    ("customer.birthday.anniversary = today", {1}),
    ("customer.birthday.anniversary != today", {2, 3, 4, 5, 6, 7}),  # unknown stays unknown
    ("customer.birthday.anniversary within next 7 days", {1, 2}),  # today and the 7 days after it
    ("customer.birthday.anniversary within last 7 days", {1, 7}),  # the 7 days before and today
    ("customer.birthday.anniversary within next 2 months", {1, 2, 3, 5, 6}),
    ("customer.birthday.anniversary = this month", {1, 2, 3, 7}),
    ("customer.birthday.anniversary = next month", {5}),
    ("customer.birthday.anniversary in [tomorrow, 2027-01-02]", {6}),
    ("customer.birthday.anniversary between 2026-12-25 and 2027-01-05", {5, 6}),
    # February 29 on February 28 of a common year, and only on February 29 of a leap year
    ("customer.birthday.anniversary = 2027-02-28", {4}),
    ("customer.birthday.anniversary = 2028-02-28", set()),
    ("customer.birthday.anniversary = 2028-02-29", {4}),
    ("customer.birthday.anniversary = 2027-03-01", set()),
    ("customer.birthday.anniversary within next 400 days", {1, 2, 3, 4, 5, 6, 7}),
    ("customer.birthday.anniversary is known", {1, 2, 3, 4, 5, 6, 7}),
    ("customer.birthday.anniversary is unknown", {8, 9}),
    ("NOT customer.birthday.anniversary within next 7 days", {3, 4, 5, 6, 7}),
]


@pytest.mark.parametrize(("rule", "expected"), CASES)
def test_meaning_on_every_backend(make_repository: Any, rule: str, expected: set[Any]) -> None:
    assert MemoryRepository(CUSTOMERS, schema=SCHEMA).select(rule, NOW) == expected
    repository = make_repository(schema=SCHEMA)
    repository.upsert(CUSTOMERS)
    assert repository.select(rule, NOW) == expected


EVENTS = [
    Customer("a", {}, [Event("policy", "2024-11-18T10:00", {"start": "2024-11-20"})]),
    Customer("b", {}, [Event("policy", "2025-03-01T10:00", {"start": "2025-03-01"}), Event("visit", "2019-11-16")]),
]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("policy.start.anniversary within next 7 days", {"a"}),  # any policy's
        ("policy.at.anniversary within next 7 days", {"a"}),
        ("policy.first_time.anniversary = next month", set()),
        ("policy.last_time.anniversary between 2027-02-27 and 2027-03-02", {"b"}),
        ("visit.at.anniversary = today", {"b"}),
        ("policy.count(where start.anniversary within next 30 days) >= 1", {"a"}),
    ],
)
def test_event_dates_have_anniversaries(make_repository: Any, rule: str, expected: set[Any]) -> None:
    assert MemoryRepository(EVENTS).select(rule, NOW) == expected
    repository = make_repository()
    repository.upsert(EVENTS)
    assert repository.select(rule, NOW) == expected


def test_in_the_repository_time_zone() -> None:
    """The anniversary of an instant is its day in the repository's zone, and so is today."""
    late = [Customer(1, {"hired": "2020-11-17T02:00:00+00:00"})]  # still the 16th in Montréal
    assert MemoryRepository(late, schema=SCHEMA).select("customer.hired.anniversary = today", NOW) == set()
    montreal = MemoryRepository(late, schema=SCHEMA, tz="America/Montreal")
    assert montreal.select("customer.hired.anniversary = today", NOW) == {1}


@pytest.mark.parametrize(
    "text",
    [
        "customer.birthday.anniversary within next 7 days",
        "customer.birthday.anniversary = today",
        "customer.`date d'embauche`.anniversary in [today, tomorrow]",
        "customer.birthday.anniversary between 2026-12-01 and 2026-12-31",
        "policy.start.anniversary = this month",
        "policy.count(where start.anniversary within next 30 days) >= 1",
    ],
)
def test_parse_print_and_json_round_trip(text: str) -> None:
    rule = cohorts.parse(text)
    assert str(rule) == text
    assert cohorts.from_json(cohorts.to_json(rule)) == rule


def test_the_ast_and_json_hold_a_part() -> None:
    rule = cohorts.parse("customer.birthday.anniversary within next 7 days")
    assert rule == Condition(Path("customer", "birthday", DatePart.ANNIVERSARY), Op.WITHIN_NEXT, Duration(7, Unit.DAYS))
    row = cohorts.to_dict(rule)["rules"][0]["sub_rules"][0]
    assert row["part"] == "anniversary"
    assert cohorts.parse("customer.`anniversary` = 1") == Condition(Path("customer", "anniversary"), Op.EQ, 1)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("customer.birthday.anniversary < today", "compare it with =, !=, in, between or within, not <"),
        ("customer.birthday.anniversary before today", "not before"),
        ("customer.birthday.anniversary = 12", "12 is not a date"),
        ("customer.birthday.anniversary within next 12 hours", "an anniversary is a day"),
        ("customer.birthday.anniversary = in 3 hours", "an anniversary is a day"),
        ("customer.city.anniversary = today", "anniversary is a part of dates, and this is text"),
    ],
)
def test_type_errors_say_why(rule: str, message: str) -> None:
    with pytest.raises(RuleTypeError, match=re.escape(message)):
        cohorts.validate(rule, SCHEMA)


def test_explain_shows_the_month_day_and_the_days() -> None:
    found = cohorts.explain("customer.birthday.anniversary within next 7 days", CUSTOMERS[1], NOW, schema=SCHEMA)
    assert str(found) == (
        "[true] customer.birthday.anniversary within next 7 days"
        "  (value: --11-23; compared with [2026-11-16, 2026-11-23])"
    )
    assert found.value == MonthDay(1123) and found.value == 1123
    assert str(MonthDay(229)) == "--02-29"


def test_a_birthday_group_moves_by_itself(make_repository: Any) -> None:
    """Each read is right at its now, day after day, with no data change and no refresh."""
    repository = make_repository(schema=SCHEMA, tz="America/Montreal")
    repository.upsert(CUSTOMERS)
    groups = Groups(repository)
    groups.create("Birthdays", rule="customer.birthday.anniversary within next 7 days")
    reference = MemoryRepository(CUSTOMERS, schema=SCHEMA, tz="America/Montreal")
    for days in [0, 1, 2, 6, 7, 8, 30, 40, 46, 47, 100, 101, 102, 103, 104, 105, 365, 366, 470, 471]:
        now = NOW + dt.timedelta(days=days)
        expected = reference.select("customer.birthday.anniversary within next 7 days", now)
        assert set(groups.members("Birthdays", now=now)) == expected, days
    # and back: an earlier read is recomputed as well
    assert set(groups.members("Birthdays", now=NOW)) == {1, 2}


def test_a_leap_day_birthday_comes_every_year(make_repository: Any) -> None:
    repository = make_repository(schema=SCHEMA)
    repository.upsert([Customer("leap", {"birthday": "2000-02-29"})])
    groups = Groups(repository)
    groups.create("Today", rule="customer.birthday.anniversary = today")
    for year, day in [(2027, 28), (2028, 29), (2029, 28)]:
        on = dt.datetime(year, 2, day, 9, tzinfo=dt.UTC)
        assert set(groups.members("Today", now=on)) == {"leap"}, year
        assert set(groups.members("Today", now=on + dt.timedelta(days=1))) == set(), year
        assert set(groups.members("Today", now=on - dt.timedelta(days=1))) == set(), year


def test_host_tables_read_the_anniversary_of_a_column() -> None:
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE clients (no INTEGER PRIMARY KEY, born TEXT)")
        conn.exec_driver_sql("INSERT INTO clients VALUES (1, '1980-11-20'), (2, '2000-02-29'), (3, NULL), (4, 'x')")
    table = HostTable("clients", id="no", columns={"birthday": "born"}, schema=SCHEMA)
    assert table.select(engine, "customer.birthday.anniversary within next 7 days", NOW) == {1}
    assert table.select(engine, "customer.birthday.anniversary = 2027-02-28", NOW) == {2}
    assert table.select(engine, "customer.birthday.anniversary is unknown", NOW) == {3, 4}
