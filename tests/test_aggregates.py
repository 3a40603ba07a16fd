"""Sums, averages, minimums and maximums of an event field: ``invoice.sum(total, last 12 months) > 500``.

The language (parse, print, JSON), the schema checks, the meaning (exact decimal sums, unknowns),
``explain``, every backend against memory on the named cases, and groups that follow a window as
time passes. The random differential tests draw these conditions too (``cohorts.testing``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

import cohorts
from cohorts import Customer, Event, Groups, MemoryRepository, Schema
from cohorts.ast import Aggregate, Condition, Duration, Op, Path, Unit, Window, WindowKind
from cohorts.errors import RuleTypeError, UnknownAttributeError

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def _ago(days: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


CUSTOMERS = [
    # 0.1 + 0.2: 0.30000000000000004 as floats, 0.3 as the decimals people wrote
    Customer(1, {}, [Event("invoice", _ago(10), {"total": 0.1}), Event("invoice", _ago(400), {"total": 0.2})]),
    Customer(2, {}, []),
    Customer(3, {}, [Event("invoice", _ago(1), {"total": "n/a"}), Event("invoice", _ago(2), {})]),
    Customer(4, {}, [Event("invoice", _ago(5), {"total": "250.50"}), Event("invoice", _ago(40), {"total": 300})]),
    Customer(5, {}, [Event("invoice", _ago(3), {"total": 2**62}), Event("invoice", _ago(3), {"total": 2**62})]),
    Customer(6, {}, [Event("order", _ago(1), {"total": 80, "due": _ago(-3)}), Event("order", _ago(90), {"total": 79})]),
]

CASES: list[tuple[str, set[Any]]] = [
    ("invoice.sum(total) = 0.3", {1}),
    ("invoice.sum(total) > 0.3", {4, 5}),
    ("invoice.sum(total) > 500", {4, 5}),
    ("invoice.sum(total, last 12 months) = 0.1", {1}),
    ("invoice.sum(total, last 30 days) > 500", {5}),
    ("invoice.sum(total) = 0", {2, 3, 6}),  # no readable totals: the sum is 0, never unknown
    ("invoice.sum(total) is unknown", set()),
    ("invoice.sum(total) > 9223372036854775807", {5}),  # exact beyond 64 bits
    ("NOT invoice.sum(total) > 0.1", {2, 3, 6}),
    ("invoice.avg(total) = 0.15", {1}),
    ("invoice.avg(total) = 275.25", {4}),
    ("invoice.avg(total) is unknown", {2, 3, 6}),  # an average of nothing is unknown
    ("NOT invoice.avg(total) >= 1", {1}),
    ("order.avg(total) >= 80", set()),
    ("order.avg(total) >= 79.5", {6}),
    ("order.avg(total, last 30 days) >= 80", {6}),
    ("invoice.min(total) < 0.15", {1}),
    ("invoice.max(total) in [0.2, 300]", {1, 4}),
    ("invoice.max(total) is known", {1, 4, 5}),
    ("invoice.min(total, since 2026-11-01) = 250.5", {4}),
    ("order.max(due) within next 7 days", {6}),
    ("invoice.sum(total) between 0.3 and 551", {1, 4}),
]


@pytest.mark.parametrize(("rule", "expected"), CASES)
def test_meaning_on_every_backend(repository: Any, rule: str, expected: set[Any]) -> None:
    """Each backend selects what the rule means, as the in-memory reference does."""
    repository.upsert(CUSTOMERS)
    assert MemoryRepository(CUSTOMERS).select(rule, NOW) == expected
    assert repository.select(rule, NOW) == expected


@pytest.mark.parametrize(
    "text",
    [
        "invoice.sum(total, last 12 months) > 500",
        "order.avg(total) >= 80",
        "order.min(total) < 10",
        "order.max(total, between 2026-01-01 and 2026-03-31) >= 100",
        "invoice.sum(`last`, since 30 days ago) = 0",
        "visit.max(`Date de visite`) before 2026-01-01",
    ],
)
def test_parse_print_and_json_round_trip(text: str) -> None:
    rule = cohorts.parse(text)
    assert str(rule) == text
    assert cohorts.parse(str(rule)) == rule
    assert cohorts.from_json(cohorts.to_json(rule)) == rule


def test_the_ast_names_the_field_and_the_window() -> None:
    rule = cohorts.parse("invoice.sum(total, last 12 months) > 500")
    assert rule == Condition(
        Path("invoice", "sum", window=Window(WindowKind.LAST, Duration(12, Unit.MONTHS)), field="total"), Op.GT, 500
    )
    assert isinstance(rule, Condition) and rule.path.aggregate is Aggregate.SUM
    assert cohorts.to_dict(rule)["rules"][0]["sub_rules"][0]["field"] == "total"


SCHEMA = Schema({"invoice": {"total": "number", "status": "text", "due": "date"}})


@pytest.mark.parametrize(
    ("rule", "error", "message"),
    [
        ("invoice.sum > 5", RuleTypeError, "invoice.sum needs the field it reads, as in invoice.sum(total)"),
        ("invoice.count(total) > 1", RuleTypeError, "only sum, avg, min and max read a field"),
        ("customer.city(total) = 1", RuleTypeError, "only sum, avg, min and max read a field"),
        ("invoice.sum(status) > 1", RuleTypeError, "sum adds numbers, and invoice.status is text"),
        ("invoice.max(status) > 1", RuleTypeError, "max compares numbers or dates, and invoice.status is text"),
        ("invoice.avg(total) contains 1", RuleTypeError, "contains does not apply to a number"),
        ("invoice.sum(total) > 2026-01-01", RuleTypeError, "2026-01-01 is not a number"),
        ("invoice.sum(totl) > 1", UnknownAttributeError, "did you mean 'invoice.sum(total)'?"),
    ],
)
def test_schema_checks_say_what_is_wrong(rule: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as caught:
        cohorts.validate(rule, SCHEMA)
    assert message in str(caught.value)


def test_min_and_max_of_a_declared_date_compare_times() -> None:
    customer = Customer(1, {}, [Event("invoice", NOW, {"due": "2026-12-01"}), Event("invoice", NOW, {"due": "n/a"})])
    predicate = cohorts.compile("invoice.max(due) within next 30 days", schema=SCHEMA)
    assert predicate(customer, NOW)
    assert not cohorts.compile("invoice.min(due) before 2026-11-01", schema=SCHEMA)(customer, NOW)


def test_an_undeclared_field_takes_the_kind_of_the_value() -> None:
    with pytest.raises(RuleTypeError, match='min compares numbers or dates, and "x" is neither'):
        cohorts.compile('order.min(total) = "x"')


def test_a_misspelt_window_keyword_is_pointed_at() -> None:
    with pytest.raises(cohorts.RuleSyntaxError) as caught:
        cohorts.parse("invoice.sum(total, lst 12 months) > 500")
    assert str(caught.value).splitlines()[:4] == [
        "Unexpected 'lst' at line 1, column 20:",
        "invoice.sum(total, lst 12 months) > 500",
        "                   ^",
        'did you mean "last"?',
    ]


def test_explain_shows_the_exact_value_and_the_window() -> None:
    text = str(cohorts.explain("invoice.avg(total) = 0.15 AND invoice.sum(total, last 30 days) < 1", CUSTOMERS[0], NOW))
    assert "[true] invoice.avg(total) = 0.15  (value: 0.15; compared with 0.15)" in text
    assert "(value: 0.1 over the events in [2026-10-23T12:00:00+00:00, 2026-11-22T12:00:00+00:00]" in text
    unknown = cohorts.explain("invoice.avg(total) > 1", CUSTOMERS[2], NOW)
    assert unknown.result is None and "(value: unknown" in str(unknown)


def test_sql_binds_the_field_and_the_decimals() -> None:
    sql, params = cohorts.to_sql("invoice.sum(total, last 30 days) > 500.10", "postgresql", now=NOW)
    assert "sum(" in sql and "500.10" not in sql and "500.1" in params.values()
    sql, params = cohorts.to_sql("invoice.avg(total) > 80", "sqlite", now=NOW)
    assert "cohorts_compare(cohorts_sum(" in sql and "count(" in sql


def test_a_group_on_a_windowed_sum_follows_time(make_repository: Any) -> None:
    """A customer leaves "spent over 500 in 30 days" when the invoice that made it turns 30 days old."""
    repository = make_repository()
    repository.upsert(
        [
            Customer(1, {}, [Event("invoice", _ago(28), {"total": 450}), Event("invoice", _ago(2), {"total": 100})]),
            Customer(2, {}, [Event("invoice", _ago(1), {"total": 20})]),
        ]
    )
    groups = Groups(repository)
    groups.create("Big spenders", rule="invoice.sum(total, last 30 days) > 500")
    assert set(groups.members("Big spenders", now=NOW)) == {1}
    assert set(groups.members("Big spenders", now=NOW + dt.timedelta(days=3))) == set()
    repository.add_events(2, [Event("invoice", NOW + dt.timedelta(days=3), {"total": 490.5})])
    assert set(groups.members("Big spenders", now=NOW + dt.timedelta(days=3, hours=1))) == {2}


def test_a_group_on_the_latest_due_date_moves_by_itself(make_repository: Any) -> None:
    repository = make_repository(schema=SCHEMA)
    repository.upsert([Customer(1, {}, [Event("invoice", _ago(30), {"due": "2026-12-10"})])])
    groups = Groups(repository)
    groups.create("Due soon", rule="invoice.max(due) within next 7 days")
    assert set(groups.members("Due soon", now=NOW)) == set()
    assert set(groups.members("Due soon", now=dt.datetime(2026, 12, 4, tzinfo=dt.UTC))) == {1}
    assert set(groups.members("Due soon", now=dt.datetime(2026, 12, 11, tzinfo=dt.UTC))) == set()
