"""Two values of one customer compared: ``checkout.started.last_time > order.placed.last_time``.

Sequences ("started a checkout and no order since", "renewed after the last claim") compare one
value of a customer with another: times with times, numbers with numbers, each side an attribute,
a date part of one, or an aggregate of events with its window and where. The language (parse, print,
JSON, errors), the schema checks, the meaning (unknown when either side is), ``explain``, every
backend against memory, host tables, and groups that follow the windows' times. The random
differential tests draw comparisons too (``cohorts.testing.comparison_conditions``).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
import sqlalchemy as sa

import cohorts
from cohorts import Customer, Event, Groups, HostEvents, HostTable, MemoryRepository, Schema
from cohorts.ast import Condition, Op, Path
from cohorts.errors import RuleJsonError, RuleSyntaxError, RuleTypeError, UnknownAttributeError

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)

SCHEMA = Schema(
    {
        "customer": {"renewal": "date", "visits_goal": "number", "budget": "number", "city": "text", "tags": "list"},
        "checkout.started": {"total": "number"},
        "order.placed": {"total": "number"},
        "claim": {"amount": "number"},
    }
)


def _ago(days: float, hours: float = 0) -> dt.datetime:
    return NOW - dt.timedelta(days=days, hours=hours)


def _checkout(days: float, hours: float = 0, **fields: Any) -> Event:
    return Event("checkout.started", _ago(days, hours), fields)


def _order(days: float, hours: float = 0, **fields: Any) -> Event:
    return Event("order.placed", _ago(days, hours), fields)


CUSTOMERS = [
    # ordered after the checkout: not abandoned
    Customer(1, {"renewal": "2026-12-15", "visits_goal": 2}, [_checkout(2), _order(2, -0.5, total=80)]),
    # a checkout, no order since: the last order is older
    Customer(2, {"renewal": "2026-10-01", "visits_goal": 3}, [_order(30, total=20), _checkout(1, total=150)]),
    # checked out, never ordered: the comparison is unknown (no last order)
    Customer(3, {"visits_goal": "n/a"}, [_checkout(5)]),
    # ordered, never checked out (a phone order)
    Customer(4, {"renewal": "2027-01-10"}, [_order(3, total=40), _order(40, total=300)]),
    # nothing at all
    Customer(5, {}, []),
    # the same instant on both sides
    Customer(6, {"renewal": ["2026-12-01"], "visits_goal": 1}, [_checkout(4), _order(4)]),
    # a budget spent exactly, in decimals floats cannot hold
    Customer(7, {"budget": 0.3}, [_order(10, total=0.1), _order(11, total="0.2")]),
]

CASES: list[tuple[str, set[Any]]] = [
    ("checkout.started.last_time > order.placed.last_time", {2}),
    ("checkout.started.last_time after order.placed.last_time", {2}),
    ("checkout.started.last_time < order.placed.last_time", {1}),
    ("checkout.started.last_time before order.placed.last_time", {1}),
    ("checkout.started.last_time = order.placed.last_time", {6}),
    ("checkout.started.last_time != order.placed.last_time", {1, 2}),
    ("checkout.started.last_time <= order.placed.last_time", {1, 6}),
    ("order.placed.last_time >= checkout.started.last_time", {1, 6}),
    # unknown when either side is: NOT keeps it unknown
    ("NOT checkout.started.last_time > order.placed.last_time", {1, 6}),
    # the abandoned-checkout recipe: a checkout, after the last order or with no order at all
    (
        "checkout.started.count >= 1 AND (checkout.started.last_time > order.placed.last_time"
        " OR order.placed.count = 0)",
        {2, 3},
    ),
    (
        "NOT (checkout.started.count >= 1 AND (checkout.started.last_time > order.placed.last_time"
        " OR order.placed.count = 0))",
        {1, 4, 5, 6, 7},
    ),
    # counts, windows and wheres on either side
    ("order.placed.count > checkout.started.count", {4, 7}),
    ("order.placed.count = checkout.started.count", {1, 2, 5, 6}),
    ("checkout.started.count(last 3 days) > order.placed.count(last 3 days)", {2}),
    ("order.placed.last_time(where total > 100) < checkout.started.first_time", set()),
    ("order.placed.first_time(where total >= 20) < checkout.started.last_time", {2}),
    ("order.placed.max(total) > checkout.started.max(total)", set()),  # 2's checkout total is 150 > 20
    ("checkout.started.max(total) > order.placed.max(total)", {2}),
    # a sum is an exact decimal, and so is what it is compared with: 0.1 + 0.2 is 0.3
    ("order.placed.sum(total) = customer.budget", {7}),
    ("customer.budget = order.placed.sum(total)", {7}),
    ("order.placed.sum(total) > checkout.started.sum(total)", {1, 4, 7}),  # 80 > 0 (no totals), 340 > 0
    ("checkout.started.sum(total) >= order.placed.sum(total, last 3 days)", {2, 3, 5, 6, 7}),
    ("order.placed.sum(total) < order.placed.count", {6, 7}),  # nothing to add is 0: 0 < 1 for 6
    # an attribute against an aggregate: the renewal comes after the last order (a date is its midnight)
    ("customer.renewal after order.placed.last_time", {1, 4}),
    ("customer.renewal before checkout.started.first_time", {2}),
    ("customer.visits_goal <= order.placed.count", {6}),  # 3's goal is unreadable
    ("customer.visits_goal > checkout.started.count(last 3 days)", {1, 2, 6}),
    # a date part is a number
    ("customer.renewal.month > order.placed.count", {1, 2}),  # 6's renewal is a list: unknown
    ("customer.renewal.month > customer.visits_goal", {1, 2}),
]


@pytest.mark.parametrize(("rule", "expected"), CASES)
def test_meaning_on_every_backend(make_repository: Any, rule: str, expected: set[Any]) -> None:
    """Each backend selects what the comparison means, as the in-memory reference does."""
    assert MemoryRepository(CUSTOMERS, schema=SCHEMA).select(rule, NOW) == expected
    repository = make_repository(schema=SCHEMA)
    repository.upsert(CUSTOMERS)
    assert repository.select(rule, NOW) == expected


def test_an_undeclared_side_takes_the_declared_sides_kind() -> None:
    """Without a schema, ``customer.renewal`` is read as a time when compared with a last_time."""
    memory = MemoryRepository(CUSTOMERS)
    assert memory.select("customer.renewal after order.placed.last_time", NOW) == {1, 4}
    assert memory.select("customer.visits_goal >= checkout.started.count", NOW) == {1, 2, 6}


@pytest.mark.parametrize(
    "text",
    [
        "checkout.started.last_time > order.placed.last_time",
        "customer.renewal before order.last_time(last 90 days, where total > 100)",
        "customer.renewal.month = customer.`Date de naissance`.month",
        "invoice.count(since 2026-01-01) >= claim.count(where amount > 500)",
        "order.max(total) != customer.budget",
        "a.first_time <= b.last_time",
        "a.first_time after b.last_time",
    ],
)
def test_parse_print_and_json_round_trip(text: str) -> None:
    rule = cohorts.parse(text)
    assert str(rule) == text
    assert cohorts.parse(str(rule)) == rule
    assert cohorts.from_json(cohorts.to_json(rule)) == rule


def test_the_ast_holds_the_other_path_as_the_value() -> None:
    rule = cohorts.parse("checkout.started.last_time > order.placed.last_time")
    assert rule == Condition(Path("checkout.started", "last_time"), Op.GT, Path("order.placed", "last_time"))
    assert cohorts.parse("a.last_time is b.last_time") == cohorts.parse("a.last_time = b.last_time")
    assert cohorts.parse("a.last_time is not b.last_time") == cohorts.parse("a.last_time <> b.last_time")


def test_the_json_value_of_a_comparison_is_a_path() -> None:
    row = cohorts.to_dict("checkout.last_time > order.last_time(last 7 days)")["rules"][0]["sub_rules"][0]
    assert row["value"] == {
        "type": "path",
        "category": "order",
        "attribute": "last_time",
        "window": {"kind": "last", "value": {"type": "duration", "amount": 7, "unit": "days"}},
    }
    bad = {**row, "operator": "contains"}
    with pytest.raises(RuleJsonError, match="/rules/0/sub_rules/0/value/type: contains compares with a value"):
        cohorts.from_dict({"rules": [{"sub_rules": [bad]}]})
    odd = {**row, "value": {"type": "path", "category": "order", "attribute": "last_time", "operator": "="}}
    with pytest.raises(RuleJsonError, match="/rules/0/sub_rules/0/value"):
        cohorts.from_dict({"rules": [{"sub_rules": [odd]}]})


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("customer.renewal < birthday", "Unexpected .birthday.", 20),
        ("order.count(where total > shipping) > 1", "compare a field with a value, not with another field", 27),
        ("customer.city contains customer.region", "Expected", 24),
    ],
)
def test_syntax_errors_point_at_the_mistake(text: str, message: str, column: int) -> None:
    with pytest.raises(RuleSyntaxError, match=message) as caught:
        cohorts.parse(text)
    assert caught.value.column == column


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("customer.city = customer.renewal", "compare as dates or numbers, and customer.city is text"),
        ("customer.tags = customer.renewal", "customer.tags is a list: compare one value"),
        ("order.placed.count > customer.renewal", "order.placed.count is a number and customer.renewal is a date"),
        ("order.placed.total > customer.visits_goal", "order.placed.total is a field of any of the events"),
        ("order.placed.at > checkout.started.at", "compare an aggregate, such as order.placed.last_time"),
        ("order.placed.avg(total) > claim.avg(amount)", "order.placed.avg(total) compares with a number"),
        ("order.placed.last_time.month = customer.visits_goal", "compare the times themselves"),
        ("customer.visits_goal before order.placed.count", "before compares dates, and these are numbers"),
    ],
)
def test_type_errors_say_why(rule: str, message: str) -> None:
    with pytest.raises(RuleTypeError, match=re.escape(message)):
        cohorts.validate(rule, SCHEMA)


def test_undeclared_sides_and_unknown_names() -> None:
    with pytest.raises(RuleTypeError, match=r"neither customer\.a nor customer\.b has a declared type"):
        cohorts.compile("customer.a > customer.b")  # no schema: any attribute may be named
    with pytest.raises(UnknownAttributeError, match=r"did you mean 'order\.placed\.last_time'"):
        cohorts.validate("checkout.started.last_time > order.placed.last_tme", SCHEMA)
    with pytest.raises(UnknownAttributeError):
        cohorts.validate("checkout.started.last_time > odrer.placed.last_time", SCHEMA)


def test_explain_shows_both_values() -> None:
    customer, third = CUSTOMERS[1], CUSTOMERS[2]
    rule = "checkout.started.last_time > order.placed.last_time"
    assert str(cohorts.explain(rule, customer, NOW, schema=SCHEMA)) == (
        "[true] checkout.started.last_time > order.placed.last_time"
        "  (value: 2026-11-21T12:00:00+00:00; compared with 2026-10-23T12:00:00+00:00)"
    )
    assert str(cohorts.explain(rule, third, NOW, schema=SCHEMA)) == (
        "[unknown] checkout.started.last_time > order.placed.last_time"
        "  (value: 2026-11-17T12:00:00+00:00; compared with unknown)"
    )
    found = cohorts.explain("customer.visits_goal <= order.placed.count", CUSTOMERS[0], NOW, schema=SCHEMA)
    assert (found.result, found.value, found.compared_to, found.compared) == (False, 2, 1, True)


def test_a_group_follows_a_windowed_side(make_repository: Any) -> None:
    """``visit.count(last 30 days) > visit.count(between 60 days ago and 30 days ago)``: visiting more
    than in the month before. The windows move, so the group does, without a refresh."""
    repository = make_repository()
    repository.upsert([Customer("a", {}, [Event("visit", _ago(20)), Event("visit", _ago(25))])])
    groups = Groups(repository)
    groups.create("Growing", rule="visit.count(last 30 days) > visit.count(between 60 days ago and 30 days ago)")
    assert set(groups.members("Growing", now=NOW)) == {"a"}
    assert set(groups.members("Growing", now=NOW + dt.timedelta(days=6))) == set()  # one in each month
    assert set(groups.members("Growing", now=NOW + dt.timedelta(days=4))) == {"a"}  # an earlier read, recomputed
    repository.add_events("a", [Event("visit", NOW + dt.timedelta(days=7))])
    assert set(groups.members("Growing", now=NOW + dt.timedelta(days=8))) == {"a"}  # two against one
    assert set(groups.members("Growing", now=NOW + dt.timedelta(days=40))) == set()  # one against two


def test_a_group_sees_an_order_that_ends_an_abandoned_checkout(make_repository: Any) -> None:
    """A new order is a data change: the next read drops the customer, with no refresh by the host."""
    repository = make_repository(schema=SCHEMA)
    repository.upsert([Customer("a", {}, [_order(30), _checkout(1)])])
    groups = Groups(repository)
    groups.create("Abandoned", rule="checkout.started.last_time > order.placed.last_time")
    assert set(groups.members("Abandoned", now=NOW)) == {"a"}
    repository.add_events("a", [_order(0, 1)])
    assert set(groups.members("Abandoned", now=NOW)) == set()


def test_host_tables_compare_columns_and_event_tables() -> None:
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE clients (no INTEGER PRIMARY KEY, renewal TEXT)")
        conn.exec_driver_sql("CREATE TABLE carts (client INTEGER, at TEXT)")
        conn.exec_driver_sql("CREATE TABLE orders (client INTEGER, at TEXT, total REAL)")
        conn.exec_driver_sql("INSERT INTO clients VALUES (1, '2026-12-01'), (2, '2026-01-01'), (3, NULL)")
        conn.exec_driver_sql(
            "INSERT INTO carts VALUES (1, '2026-11-20T10:00'), (2, '2026-11-21T10:00'), (3, '2026-11-01T10:00')"
        )
        conn.exec_driver_sql("INSERT INTO orders VALUES (1, '2026-11-20T11:00', 50), (2, '2026-10-01T10:00', 5)")
    table = HostTable(
        "clients",
        id="no",
        columns={"renewal": "renewal"},
        schema=Schema({"customer": {"renewal": "date"}, "cart": {}, "order": {"total": "number"}}),
        events={
            "cart": HostEvents("carts", customer="client", at="at"),
            "order": HostEvents("orders", customer="client", at="at", fields={"total": "total"}),
        },
    )
    assert table.select(engine, "cart.last_time > order.last_time", NOW) == {2}
    assert table.select(engine, "customer.renewal > order.last_time(where total > 10)", NOW) == {1}
    assert table.select(engine, "order.count < cart.count", NOW) == {3}
