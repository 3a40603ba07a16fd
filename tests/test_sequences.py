"""Events that follow or precede others: ``checkout.count(not followed by order within 1 hour) >= 1``.

"Started a checkout and did not order within the hour", "ordered within a day of a visit": an
aggregate keeps the events another event comes after (``followed by``) or before (``preceded by``),
strictly later or earlier, within a span when given. The language (parse, print, JSON, errors with
the caret), the meaning on every backend against memory, host tables, and groups that see the new
events. The random differential tests draw them (``cohorts.testing.sequels``).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
import sqlalchemy as sa

import cohorts
from cohorts import Customer, Event, Groups, HostEvents, HostTable, MemoryRepository, Schema
from cohorts.ast import Condition, Duration, Op, Path, Sequel, Unit
from cohorts.errors import RuleJsonError, RuleSyntaxError, RuleTypeError, UnknownAttributeError

NOW = dt.datetime(2026, 11, 16, 14, 0, tzinfo=dt.UTC)
SCHEMA = Schema({"customer": {}, "checkout": {"total": "number"}, "order": {"total": "number"}, "visit": {}})


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


CUSTOMERS = [
    # ordered 30 minutes after one checkout, two hours after another; a last checkout with no order
    Customer(1, {}, [
        Event("checkout", _at("2026-11-10T10:00"), {"total": 50}), Event("order", _at("2026-11-10T10:30")),
        Event("checkout", _at("2026-11-12T10:00"), {"total": 500}), Event("order", _at("2026-11-12T12:00")),
        Event("checkout", _at("2026-11-15T10:00"), {"total": 80}),
    ]),
    # an order at the very instant of the checkout: not "after" it
    Customer(2, {}, [Event("checkout", _at("2026-11-15T10:00")), Event("order", _at("2026-11-15T10:00"))]),
    # orders, never a checkout
    Customer(3, {}, [Event("order", _at("2026-11-01T09:00"))]),
    Customer(4, {}, []),
    # a visit, an order the next day
    Customer(5, {}, [Event("visit", _at("2026-11-02T17:00")), Event("order", _at("2026-11-03T09:00"))]),
]

CASES: list[tuple[str, set[Any]]] = [
    ("checkout.count(followed by order) >= 1", {1}),
    ("checkout.count(followed by order) = 2", {1}),
    ("checkout.count(followed by order within 1 hour) = 1", {1}),
    ("checkout.count(followed by order within 2 hours) = 2", {1}),  # the end is included
    ("checkout.count(not followed by order) >= 1", {1, 2}),  # 2's order is not after its checkout
    ("checkout.count(not followed by order within 1 hour) = 2", {1}),
    # abandoned: the last checkout had no order within the hour, and the hour is over
    ("checkout.last_time(not followed by order within 1 hour) before 1 hour ago", {1, 2}),
    ("checkout.last_time(followed by order within 1 hour) within last 7 days", {1}),
    ("order.count(preceded by checkout within 30 minutes) >= 1", {1}),
    ("order.count(not preceded by checkout) >= 1", {2, 3, 5}),
    ("order.count(preceded by visit within 1 day) >= 1", {5}),
    ("order.count(preceded by visit within 15 hours) >= 1", set()),  # 16 hours later
    ("checkout.sum(total, followed by order within 3 hours) = 550", {1}),
    ("checkout.max(total, not followed by order) = 80", {1}),
    ("checkout.count(last 5 days, followed by order) >= 1", {1}),
    ("checkout.count(where total > 100, followed by order within 1 hour) >= 1", set()),
    ("checkout.count(followed by checkout within 3 days) = 2", {1}),  # an event of its own name
    ("NOT checkout.count(followed by order) >= 1", {2, 3, 4, 5}),
    ("review.count(followed by order) = 0", {1, 2, 3, 4, 5}),  # no such events: nothing counts
]


@pytest.mark.parametrize(("rule", "expected"), CASES)
def test_meaning_on_every_backend(make_repository: Any, rule: str, expected: set[Any]) -> None:
    assert MemoryRepository(CUSTOMERS).select(rule, NOW) == expected
    repository = make_repository()
    repository.upsert(CUSTOMERS)
    assert repository.select(rule, NOW) == expected


@pytest.mark.parametrize(
    "text",
    [
        "checkout.count(not followed by order within 1 hour) >= 1",
        "checkout.last_time(followed by order.placed) within last 7 days",
        "order.count(preceded by visit within 2 days) >= 1",
        "order.count(not preceded by `not`.seen) = 0",
        "order.sum(total, last 30 days, followed by refund within 1 week, where total > 10) > 100",
        "checkout.last_time(followed by a) > order.last_time(preceded by b within 5 minutes)",
    ],
)
def test_parse_print_and_json_round_trip(text: str) -> None:
    rule = cohorts.parse(text)
    assert str(rule) == text
    assert cohorts.parse(str(rule)) == rule
    assert cohorts.from_json(cohorts.to_json(rule)) == rule


def test_the_ast_holds_a_sequel() -> None:
    rule = cohorts.parse("checkout.count(not followed by order within 1 hour) >= 1")
    then = Sequel("order", Duration(1, Unit.HOURS), negated=True)
    assert rule == Condition(Path("checkout", "count", then=then), Op.GE, 1)
    row = cohorts.to_dict(rule)["rules"][0]["sub_rules"][0]
    assert row["sequence"] == {
        "kind": "not followed by",
        "event": "order",
        "within": {"type": "duration", "amount": 1, "unit": "hours"},
    }
    bad = {**row, "sequence": {"kind": "followed", "event": "order"}}
    with pytest.raises(RuleJsonError, match="/rules/0/sub_rules/0/sequence/kind: expected one of followed by"):
        cohorts.from_dict({"rules": [{"sub_rules": [bad]}]})


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("a.count(followed by b, preceded by c) > 1", "An aggregate takes one followed by or preceded by", 24),
        ("a.count(folowed by b) > 1", 'did you mean "followed"?', 9),
        ("a.count(followed b) > 1", "Unexpected", 18),
        ("a.count(followed by b within 2) > 1", "Unexpected", 31),
    ],
)
def test_syntax_errors_point_at_the_mistake(text: str, message: str, column: int) -> None:
    with pytest.raises(RuleSyntaxError, match=re.escape(message)) as caught:
        cohorts.parse(text)
    assert caught.value.column == column


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("customer.city(followed by order) = 1", "keeps the events of an aggregate"),
        ("checkout.total(followed by order) = 1", "checkout.total is not one"),
        ("checkout.count(followed by order within 1 month) >= 1", "takes minutes, hours, days or weeks"),
        ("checkout.count(followed by customer) >= 1", "'customer' is not an event name"),
        ("checkout.cont(followed by order) >= 1", "checkout.cont is not one (did you mean checkout.count?)"),
        ("checkout.lst_time(where total > 1) > 2026-01-01", "(did you mean checkout.last_time?)"),
    ],
)
def test_type_errors_say_why(rule: str, message: str) -> None:
    with pytest.raises(RuleTypeError, match=re.escape(message)):
        cohorts.compile(rule)


def test_a_schema_knows_the_events_followed() -> None:
    with pytest.raises(UnknownAttributeError, match="did you mean 'order"):
        cohorts.validate("checkout.count(followed by ordr) >= 1", SCHEMA)
    cohorts.validate("checkout.count(followed by order within 1 hour) >= 1", SCHEMA)


def test_explain_counts_the_events_kept() -> None:
    found = cohorts.explain("checkout.count(not followed by order within 1 hour) >= 3", CUSTOMERS[0], NOW)
    assert (found.result, found.value, found.kept) == (False, 2, (2, 3))
    assert str(found) == (
        "[false] checkout.count(not followed by order within 1 hour) >= 3  (value: 2, from 2 of 3 events;"
        " compared with 3)"
    )


def test_a_group_sees_the_order_that_follows(make_repository: Any) -> None:
    """An order after an abandoned checkout is a data change: the next read lets the customer go."""
    repository = make_repository()
    repository.upsert([Customer("a", {}, [Event("checkout", NOW - dt.timedelta(hours=3))])])
    groups = Groups(repository)
    groups.create("Abandoned", rule="checkout.last_time(not followed by order within 1 day) before 2 hours ago")
    assert set(groups.members("Abandoned", now=NOW)) == {"a"}
    assert set(groups.members("Abandoned", now=NOW - dt.timedelta(hours=2))) == set()  # not yet 2 hours
    repository.add_events("a", [Event("order", NOW - dt.timedelta(hours=1))])
    assert set(groups.members("Abandoned", now=NOW)) == set()


def test_host_tables_follow_events_across_tables() -> None:
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE clients (no INTEGER PRIMARY KEY)")
        conn.exec_driver_sql("CREATE TABLE carts (client INTEGER, at TEXT)")
        conn.exec_driver_sql("CREATE TABLE orders (client INTEGER, at TEXT)")
        conn.exec_driver_sql("INSERT INTO clients VALUES (1), (2), (3)")
        conn.exec_driver_sql(
            "INSERT INTO carts VALUES (1, '2026-11-10T10:00'), (2, '2026-11-10T10:00'), (3, '2026-11-10T10:00')"
        )
        conn.exec_driver_sql("INSERT INTO orders VALUES (1, '2026-11-10T10:20'), (2, '2026-11-10T13:00')")
    table = HostTable(
        "clients",
        id="no",
        columns={},
        events={
            "cart": HostEvents("carts", customer="client", at="at"),
            "order": HostEvents("orders", customer="client", at="at"),
        },
    )
    assert table.select(engine, "cart.count(followed by order within 1 hour) >= 1", NOW) == {1}
    assert table.select(engine, "cart.count(not followed by order within 1 hour) >= 1", NOW) == {2, 3}
    assert table.select(engine, "order.count(preceded by cart within 3 hours) >= 1", NOW) == {1, 2}
