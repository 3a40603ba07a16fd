"""Conditions on the same event: ``order.count(where product = "cover" and colour = "red") >= 2``.

A where keeps the events it is true for, before the aggregate reads them, so every condition of it
looks at one event. The language (parse, print, JSON, errors with the caret), the schema checks, the
meaning (unknowns leave an event out), ``explain``, every backend against memory on the named cases,
host tables, and groups that follow a where's times. The random differential tests draw wheres too
(``cohorts.testing``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

import cohorts
from cohorts import Customer, Event, Groups, MemoryRepository, Schema
from cohorts.ast import Aggregate, And, Condition, Op, Path
from cohorts.errors import RuleJsonError, RuleSyntaxError, RuleTypeError, UnknownAttributeError

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)  # a Sunday


def _ago(days: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


def _order(days: float, **fields: Any) -> Event:
    return Event("order", _ago(days), fields)


CUSTOMERS = [
    # a red cover, and a cover and a red mat: "a red cover" once, though both words appear twice
    Customer(1, {}, [_order(3, product="cover", colour="red", total=40), _order(30, product="cover", colour="blue"),
                     _order(40, product="mat", colour="red", total=15)]),
    # two red covers (written as people write them), one old
    Customer(2, {}, [_order(1, product="Cover", colour="RED", total="120.50"),
                     _order(200, product=" cover ", colour="red", total=99.5)]),
    Customer(3, {}, []),
    # no colour on one cover; an unreadable total
    Customer(4, {}, [_order(2, product="cover", total="n/a"), _order(5, product="cover", colour="red", total=200)]),
    Customer(5, {}, [_order(7, product="mat", colour="green", total=500)]),  # a Sunday order, over 100
]

CASES: list[tuple[str, set[Any]]] = [
    ('order.count(where product = "cover" and colour = "red") >= 2', {2}),
    ('order.count(where product = "cover" and colour = "red") >= 1', {1, 2, 4}),
    ('order.count(where product = "cover" and colour = "red") = 0', {3, 5}),
    ('order.count(where product = "cover") >= 2', {1, 2, 4}),
    ('order.count(last 90 days, where product = "cover" and colour = "red") >= 1', {1, 2, 4}),
    ('order.count(where product = "cover" and colour = "red", last 90 days) >= 2', set()),
    # an event the where is unknown for is left out: customer 4's cover without a colour
    ('order.count(where colour != "red") >= 1', {1, 5}),
    ('order.count(where NOT colour = "red") >= 1', {1, 5}),
    ("order.count(where colour is unknown) >= 1", {4}),
    ('order.count(where colour = "red" OR total > 100) = 2', {1, 2}),  # 4: unknown OR "n/a" > 100
    ("order.last_time(where total > 100) within last 90 days", {2, 4, 5}),
    ("order.last_time(where total > 100) within last 6 days", {2, 4}),
    ("order.last_time(where total > 100) is unknown", {1, 3}),
    ("order.first_time(where total > 100) before 6 days ago", {5}),  # "before" an instant: earlier
    ('order.sum(total, where product = "cover") = 40', {1}),
    ('order.sum(total, where product = "cover") = 220', {2}),  # 120.50 + 99.5, exactly
    ('order.sum(total, where product = "cover") = 0', {3, 5}),  # no such orders: 0, as any sum of nothing
    ('order.sum(total, last 30 days, where colour = "red") > 100', {2, 4}),
    ('order.avg(total, where colour = "red") = 110', {2}),
    ('order.avg(total, where colour = "red") is unknown', {3, 5}),
    ('order.max(total, where product = "mat") >= 15', {1, 5}),
    ('order.min(total, where product in ["cover", "mat"]) < 20', {1}),
    ("order.count(where at.weekday = sunday) >= 1", {5}),
    ('order.count(where product starts with "co" and not colour in ["blue", "green"]) >= 2', {2}),
    ('NOT order.count(where product = "cover" and colour = "red") >= 1', {3, 5}),
]


@pytest.mark.parametrize(("rule", "expected"), CASES)
def test_meaning_on_every_backend(repository: Any, rule: str, expected: set[Any]) -> None:
    """Each backend selects what the rule means, as the in-memory reference does."""
    repository.upsert(CUSTOMERS)
    assert MemoryRepository(CUSTOMERS).select(rule, NOW) == expected
    assert repository.select(rule, NOW) == expected


def test_the_where_sees_one_event_not_any_event() -> None:
    """Two conditions on the same event type outside a where are checked separately: any cover, any
    red order. Inside, both must hold for one order, which is what "bought a red cover" means."""
    memory = MemoryRepository(CUSTOMERS)
    assert memory.select('order.product = "cover" AND order.colour = "red"', NOW) == {1, 2, 4}
    assert memory.select('order.count(where product = "cover" and colour = "red") >= 1', NOW) == {1, 2, 4}
    # customer 1 bought a mat (red) and a blue cover, but no blue mat
    assert memory.select('order.product = "mat" AND order.colour = "blue"', NOW) == {1}
    assert memory.select('order.count(where product = "mat" and colour = "blue") >= 1', NOW) == set()


@pytest.mark.parametrize(
    "text",
    [
        'order.count(where product = "cover" AND colour = "red") >= 2',
        "order.last_time(where total > 100) within last 90 days",
        'order.sum(total, last 12 months, where product in ["a", "b"] OR NOT at.weekday = sunday) > 5',
        "order.count(last 90 days, where (a = 1 OR b = 2) AND c is known) = 0",
        "order.count(where `not` = 1 AND `count` = 2 AND `Date de visite` before 2026-01-01) = 1",
        "repair_order.closed.count(where at.month = january) >= 1",
        "order.max(`where`, where `where` > 1) > 1",
    ],
)
def test_parse_print_and_json_round_trip(text: str) -> None:
    rule = cohorts.parse(text)
    assert str(rule) == text
    assert cohorts.parse(str(rule)) == rule
    assert cohorts.from_json(cohorts.to_json(rule)) == rule


def test_the_ast_holds_the_where_with_paths_of_the_same_events() -> None:
    rule = cohorts.parse('order.count(where product = "cover" and colour = "red") >= 2')
    where = And([Condition(Path("order", "product"), Op.EQ, "cover"), Condition(Path("order", "colour"), Op.EQ, "red")])
    assert rule == Condition(Path("order", "count", where=where), Op.GE, 2)
    assert isinstance(rule, Condition) and rule.path.aggregate is Aggregate.COUNT
    # the written order of window and where does not matter; the canonical text puts the window first
    assert cohorts.parse("order.count(where a = 1, last 9 days) > 1") == cohorts.parse(
        "order.count(last 9 days, where a = 1) > 1"
    )


def test_the_json_rows_of_a_where_name_the_field_alone() -> None:
    data = cohorts.to_dict('order.count(where product = "cover") >= 2')
    row = data["rules"][0]["sub_rules"][0]
    assert row["where"] == {"rules": [{"sub_rules": [{"attribute": "product", "operator": "=", "value": "cover"}]}]}
    same = {**row, "where": {"rules": [{"sub_rules": [
        {"category": "order", "attribute": "product", "operator": "=", "value": "cover"}]}]}}
    expected = cohorts.parse('order.count(where product = "cover") >= 2')
    assert cohorts.from_dict({"rules": [{"sub_rules": [same]}]}) == expected


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"category": "invoice", "attribute": "x", "operator": "=", "value": 1}, "reads fields of the order events"),
        ({"in_group": "VIP"}, "no group test in it"),
        ({"attribute": "x", "field": "y", "operator": "=", "value": 1}, "aggregates do not nest"),
    ],
)
def test_bad_json_wheres_say_where(where: dict[str, Any], message: str) -> None:
    row = {"category": "order", "attribute": "count", "operator": ">", "value": 1,
           "where": {"rules": [{"sub_rules": [where]}]}}
    with pytest.raises(RuleJsonError) as caught:
        cohorts.from_dict({"rules": [{"sub_rules": [row]}]})
    assert message in str(caught.value)
    assert "/rules/0/sub_rules/0/where/rules/0/sub_rules/0" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("order.count(where order.product = 1) > 1", "name a field of the event alone, as in product", 19),
        ("order.count(where count > 1) > 1", "Aggregates do not nest", 19),
        ("order.count(where a.count(where b = 1) > 1) > 1", "Aggregates do not nest", 19),
        ('order.count(where customer in group "VIP") > 1', "put the group test outside", 19),
        ("order.count(where a = 1, where b = 2) > 1", "one where: join its conditions with AND", 26),
        ("order.count(last 9 days, last 3 days) > 1", "takes one window", 26),
        ("order.sum(last 9 days, total) > 1", "The field comes first", 24),
        ("order.count(wher a = 1) > 1", "Unexpected 'wher'", 13),
        ("order.count(where) > 1", "Unexpected ')'", 18),
        ("product = 1", "A path needs a category and an attribute", 1),
    ],
)
def test_syntax_errors_point_at_the_problem(text: str, message: str, column: int) -> None:
    with pytest.raises(RuleSyntaxError) as caught:
        cohorts.parse(text)
    assert message in str(caught.value)
    assert caught.value.column == column


def test_a_misspelt_where_is_named() -> None:
    with pytest.raises(RuleSyntaxError) as caught:
        cohorts.parse("order.count(wher a = 1) > 1")
    assert 'did you mean "where"?' in str(caught.value)


SCHEMA = Schema(
    {
        "order": {"product": "text", "colour": "text", "total": "number", "placed": "date"},
        "invoice": {"total": "number"},
    }
)


@pytest.mark.parametrize(
    ("rule", "error", "message"),
    [
        ('order.count(where prodct = "cover") > 1', UnknownAttributeError, "did you mean 'order.product'?"),
        ("order.count(where total contains 5) > 1", RuleTypeError, "contains does not apply to a number"),
        ("order.count(where placed within last 3) > 1", RuleSyntaxError, "Unexpected"),
        ('order.product(where colour = "red") = "x"', RuleTypeError, "a where filters the events of an aggregate"),
        ('customer.city(where colour = "red") = "x"', RuleTypeError, "a where filters the events of an aggregate"),
    ],
)
def test_schema_checks_say_what_is_wrong(rule: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as caught:
        cohorts.validate(rule, SCHEMA)
    assert message in str(caught.value)


def test_hand_built_wheres_are_checked() -> None:
    """The AST can hold what the text cannot: a where over other events, a group test, an aggregate."""
    other = Condition(Path("order", "count", where=Condition(Path("invoice", "total"), Op.GT, 1)), Op.GE, 1)
    with pytest.raises(RuleTypeError, match=r"reads fields of the order events, and invoice\.total is not"):
        cohorts.validate(other, SCHEMA)
    group = Condition(Path("order", "count", where=cohorts.ast.InGroup("VIP")), Op.GE, 1)
    with pytest.raises(RuleTypeError, match="put customer in group"):
        cohorts.validate(group, SCHEMA)
    nested = Condition(Path("order", "count", where=Condition(Path("order", "count"), Op.GT, 1)), Op.GE, 1)
    with pytest.raises(RuleTypeError, match="aggregates do not nest"):
        cohorts.validate(nested, SCHEMA)


def test_explain_shows_the_value_over_the_kept_events() -> None:
    text = str(cohorts.explain('order.count(where product = "cover" and colour = "red") >= 2', CUSTOMERS[0], now=NOW))
    assert text.startswith("[false]")
    assert "value: 1" in text
    text = str(cohorts.explain('order.sum(total, last 30 days, where colour = "red") > 100', CUSTOMERS[1], now=NOW))
    assert "[true]" in text and "120.5" in text and "last 30 days" in text


def test_a_group_follows_a_where_over_times(make_repository: Any) -> None:
    """``policy.count(where renewal within next 30 days) >= 1``: the where's own times move the group."""
    customers = [
        Customer("a", {}, [Event("policy", _ago(300), {"renewal": NOW + dt.timedelta(days=40), "kind": "home"})]),
        Customer("b", {}, [Event("policy", _ago(300), {"renewal": NOW + dt.timedelta(days=10), "kind": "auto"})]),
    ]
    repository = make_repository()
    repository.upsert(customers)
    groups = Groups(repository)
    groups.create("Renewals", rule='policy.count(where renewal within next 30 days and kind != "life") >= 1')
    assert set(groups.members("Renewals", now=NOW)) == {"b"}
    assert set(groups.members("Renewals", now=NOW + dt.timedelta(days=11))) == {"a"}  # b's passed, a's is near
    assert set(groups.members("Renewals", now=NOW + dt.timedelta(days=41))) == set()


def test_a_group_follows_the_latest_kept_event(make_repository: Any) -> None:
    """``last_time(where ...)`` turns at the latest kept event, not at the latest event of all."""
    repository = make_repository()
    repository.upsert([Customer("a", {}, [_order(80, total=500), _order(1, total=5)])])
    groups = Groups(repository)
    groups.create("Big spenders", rule="order.last_time(where total > 100) within last 90 days")
    assert set(groups.members("Big spenders", now=NOW)) == {"a"}
    assert set(groups.members("Big spenders", now=NOW + dt.timedelta(days=11))) == set()


WINDOWED: list[tuple[str, set[Any]]] = [
    ("order.last_time(last 30 days) before 4 days ago", {5}),  # 1's latest in the window is 3 days ago
    ("order.first_time(last 30 days) before 4 days ago", {1, 4, 5}),  # the window's first day counts
    ("order.first_time(last 100 days) is unknown", {3}),
    ("order.first_time(since 2026-11-01) within last 3 days", {1, 2}),
    ("order.last_time(between 2026-01-01 and 2026-11-01, where total > 90) is known", {2}),
    ('order.last_time(next 10 days, where product = "cover") is known', set()),
    ("order.last_time.weekday(last 10 days) = sunday", {5}),
    ("order.last_time.weekday(last 6 days) = sunday", set()),
]


@pytest.mark.parametrize(("rule", "expected"), WINDOWED)
def test_first_and_last_time_take_a_window(repository: Any, rule: str, expected: set[Any]) -> None:
    """``order.last_time(last 30 days)``: the latest of the window's events, as a where on ``at`` would keep."""
    repository.upsert(CUSTOMERS)
    assert MemoryRepository(CUSTOMERS).select(rule, NOW) == expected
    assert repository.select(rule, NOW) == expected


def test_a_windowed_first_time_follows_time(make_repository: Any) -> None:
    """The earliest order of the last 30 days changes as orders leave the window: the group follows."""
    repository = make_repository()
    repository.upsert([Customer(1, {}, [_order(25), _order(2)])])
    groups = Groups(repository)
    groups.create("Regulars", rule="order.first_time(last 30 days) before 20 days ago")
    assert set(groups.members("Regulars", now=NOW)) == {1}
    assert set(groups.members("Regulars", now=NOW + dt.timedelta(days=6))) == set()  # the 25-day order left
    assert set(groups.members("Regulars", now=NOW + dt.timedelta(days=23))) == {1}  # the 2-day one is 25 days old
