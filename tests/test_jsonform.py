"""The JSON form of rules: the articles' editor shape, a lossless round trip and located errors."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cohorts import RuleError, parse
from cohorts.ast import Node
from cohorts.errors import RuleJsonError
from cohorts.jsonform import from_json, to_dict

from .strategies import conditions, deep_rules, in_groups, rules


def _row(attribute: str, operator: str, value: Any = None, category: str = "customer") -> dict[str, Any]:
    row = {"category": category, "attribute": attribute, "operator": operator}
    if value is not None:
        row["value"] = value
    return row


@given(rules())
@settings(max_examples=300, deadline=None)
def test_round_trip(rule: Node) -> None:
    """Every rule survives to_json, JSON text and from_json unchanged."""
    data = to_dict(rule)
    assert from_json(data) == rule
    assert from_json(json.dumps(data)) == rule


@given(deep_rules(rules(4), conditions() | in_groups, max_depth=3_000))
@settings(max_examples=25, deadline=None)
def test_deep_round_trip(rule: Node) -> None:
    """A rule thousands of levels deep survives to_json and from_json (as data: Python's json recurses)."""
    assert from_json(to_dict(rule)) == rule


def test_rules_are_all_and_sub_rules_any() -> None:
    """An AND of ORs fills the editor's two levels: rules all required, sub-rules any."""
    rule = parse(
        'customer.vehicle_model contains "Escape" AND (customer.vehicle_year = 2019 OR customer.vehicle_year = 2020)'
    )
    assert to_dict(rule) == {
        "rules": [
            {"sub_rules": [_row("vehicle_model", "contains", "Escape")]},
            {"sub_rules": [_row("vehicle_year", "=", 2019), _row("vehicle_year", "=", 2020)]},
        ]
    }


def test_typed_values() -> None:
    """Dates, times, relative times, durations, anchors, months and weekdays carry a type tag."""
    rule = parse(
        "customer.a = 2025-01-31 AND customer.b = 2025-01-31T09:30:00+05:30 AND customer.c < 30 days ago"
        " AND customer.d < in 1 month AND customer.e within last 2 years AND customer.f = today"
        " AND customer.g.month in [january, february] AND customer.h.weekday = sunday"
        " AND customer.i between 1 and 2.5 AND customer.j is unknown"
    )
    rows = [r["sub_rules"][0] for r in to_dict(rule)["rules"]]
    assert [r.get("value") for r in rows] == [
        {"type": "date", "value": "2025-01-31"},
        {"type": "datetime", "value": "2025-01-31T09:30:00+05:30"},
        {"type": "relative", "amount": 30, "unit": "days", "direction": "ago"},
        {"type": "relative", "amount": 1, "unit": "months", "direction": "ahead"},
        {"type": "duration", "amount": 2, "unit": "years"},
        {"type": "anchor", "value": "today"},
        [{"type": "month", "value": "january"}, {"type": "month", "value": "february"}],
        {"type": "weekday", "value": "sunday"},
        [1, 2.5],
        None,
    ]
    assert rows[6]["part"] == "month"
    assert "value" not in rows[9]
    assert from_json(json.loads(json.dumps(to_dict(rule)))) == rule


def test_what_two_levels_cannot_hold_is_nested() -> None:
    """NOT, an AND inside an OR and group membership become nested groups and membership rows."""
    rule = parse(
        'customer in group "VIP" OR NOT (customer.a = 1 OR customer.b = 2) OR (customer.c = 3 AND customer.d'
        ' = 4) OR customer not in group "Gone"'
    )
    assert to_dict(rule) == {
        "rules": [
            {
                "sub_rules": [
                    {"in_group": "VIP"},
                    {"not": {"rules": [{"sub_rules": [_row("a", "=", 1), _row("b", "=", 2)]}]}},
                    {"rules": [{"sub_rules": [_row("c", "=", 3)]}, {"sub_rules": [_row("d", "=", 4)]}]},
                    {"not_in_group": "Gone"},
                ]
            }
        ]
    }
    assert from_json(to_dict(rule)) == rule


def test_event_paths_keep_category_aggregate_and_part() -> None:
    """Dotted event names, aggregates and date parts land in category, attribute and part."""
    rule = parse("repair_order.closed.last_time.year = 2024")
    assert to_dict(rule)["rules"][0]["sub_rules"][0] == {
        "category": "repair_order.closed",
        "attribute": "last_time",
        "part": "year",
        "operator": "=",
        "value": 2024,
    }


def test_editor_spellings_are_accepted() -> None:
    """The editor's "is", "is not" and extra spaces or capitals read as the canonical operators."""
    data = {"rules": [{"sub_rules": [_row("city", "Is  Not", "Laval")]}, {"sub_rules": [_row("pet", "is", "cat")]}]}
    assert from_json(data) == parse('customer.city != "Laval" AND customer.pet = "cat"')


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "invalid rule JSON at /: expected a group (a JSON object), got a list of 0"),
        (
            "{",
            "invalid rule JSON at /: not JSON (Expecting property name enclosed in double quotes: line 1 column 2"
            " (char 1))",
        ),
        ({}, "invalid rule JSON at /: missing 'rules'"),
        ({"rules": []}, "invalid rule JSON at /rules: expected at least one item, got an empty list"),
        ({"rule": []}, "invalid rule JSON at /rule: unexpected key 'rule' in a group; did you mean 'rules'?"),
        ({"rules": [{"sub_rules": {}}]}, "invalid rule JSON at /rules/0/sub_rules: expected a list, got an object"),
        (
            {"rules": [{"sub_rules": [_row("city", "contans", "x")]}]},
            "invalid rule JSON at /rules/0/sub_rules/0/operator: unknown operator 'contans'; did you mean 'contains'?",
        ),
        (
            {"rules": [{"sub_rules": [_row("city", "=")]}]},
            "invalid rule JSON at /rules/0/sub_rules/0: missing 'value' for operator '='",
        ),
        (
            {"rules": [{"sub_rules": [{"category": "customer", "operator": "=", "value": 1}]}]},
            "invalid rule JSON at /rules/0/sub_rules/0: missing 'attribute'",
        ),
        (
            {"rules": [{"sub_rules": [_row("city", "=", 1), _row("x", "in", 3)]}]},
            "invalid rule JSON at /rules/0/sub_rules/1/value: in takes a list, got 3",
        ),
        (
            {"rules": [{"sub_rules": [_row("x", "between", [1])]}]},
            "invalid rule JSON at /rules/0/sub_rules/0/value: between takes a list of two values, got a list of 1",
        ),
        (
            {"rules": [{"sub_rules": [_row("x", "=", {"type": "date", "value": "2025-02-30"})]}]},
            "invalid rule JSON at /rules/0/sub_rules/0/value/value: not a date: '2025-02-30' (day is out of range for"
            " month)",
        ),
        (
            {"rules": [{"sub_rules": [_row("x", "<", {"type": "relative", "amount": -3, "unit": "days"})]}]},
            "invalid rule JSON at /rules/0/sub_rules/0/value/amount: expected a whole number >= 0, got -3",
        ),
        (
            {"rules": [{"sub_rules": [_row("x", "<", {"type": "relative", "amount": 3, "unit": "fortnights"})]}]},
            "invalid rule JSON at /rules/0/sub_rules/0/value/unit: expected a unit among minutes, hours, days, weeks,"
            " months, years, got 'fortnights'",
        ),
        (
            {"rules": [{"sub_rules": [_row("x", "=", {"type": "timestamp", "value": "x"})]}]},
            "invalid rule JSON at /rules/0/sub_rules/0/value/type: expected a value type among date, datetime,"
            " relative, anchor, month, weekday, got 'timestamp'",
        ),
        (
            {"rules": [{"sub_rules": [_row("x", "within last", 3)]}]},
            'invalid rule JSON at /rules/0/sub_rules/0/value: within last takes {"type": "duration", ...}, got 3',
        ),
        (
            {"rules": [{"sub_rules": [_row("x", "is known", 3)]}]},
            "invalid rule JSON at /rules/0/sub_rules/0/value: is known takes no value",
        ),
        (
            {"rules": [{"sub_rules": [_row("x", "=", 1, category="a..b")]}]},
            "invalid rule JSON at /rules/0/sub_rules/0/category: empty name in event category 'a..b'",
        ),
        (
            {"rules": [{"sub_rules": [{"not": {"rules": [{"sub_rules": [{"in_group": 3}]}]}}]}]},
            "invalid rule JSON at /rules/0/sub_rules/0/not/rules/0/sub_rules/0/in_group: expected a group name, got 3",
        ),
        (
            {"rules": [{"sub_rules": [_row("x", "=", float("nan"))]}]},
            "invalid rule JSON at /rules/0/sub_rules/0/value: a rule cannot hold the number nan",
        ),
        (
            {"rules": [{"sub_rules": [{**_row("x", "=", 1), "colour": "red"}]}]},
            "invalid rule JSON at /rules/0/sub_rules/0/colour: unexpected key 'colour' in a sub-rule; expected"
            " attribute, category, field, operator, part, sequence, value, where, window",
        ),
        (
            {"rules": [{"sub_rules": [{**_row("x", "=", 1), "part": "hour"}]}]},
            "invalid rule JSON at /rules/0/sub_rules/0/part: expected one of year, month, day, weekday, anniversary,"
            " got 'hour'",
        ),
    ],
)
def test_malformed_documents_say_where(data: Any, message: str) -> None:
    """Malformed JSON data raises RuleJsonError, a RuleError, with a JSON pointer to the fault."""
    with pytest.raises(RuleJsonError) as caught:
        from_json(data)
    assert str(caught.value) == message
    assert isinstance(caught.value, RuleError)


def test_pointer_escapes_slashes_and_tildes() -> None:
    """Keys holding / or ~ are escaped as JSON pointers require."""
    with pytest.raises(RuleJsonError) as caught:
        from_json({"rules": [{"sub_rules": [{**_row("x", "=", 1), "a/b~c": 1}]}]})
    assert caught.value.pointer == "/rules/0/sub_rules/0/a~1b~0c"


def test_to_dict_and_to_json_take_any_rule() -> None:
    """Rule text, an AST and a compiled predicate give the same JSON form: data from to_dict, text from
    to_json (as every to_json of cohorts gives text); from_dict reads the data back, from_json either."""
    import cohorts
    from cohorts import from_dict, to_json

    text = 'customer.city = "Laval" AND customer.visits > 2'
    forms = [to_dict(text), to_dict(parse(text)), to_dict(cohorts.compile(text))]
    assert forms[0] == forms[1] == forms[2]
    assert json.loads(to_json(text)) == forms[0] and to_json(text, indent=2).startswith('{\n  "rules"')
    assert from_dict(forms[0]) == from_json(to_json(text)) == parse(text)
    assert to_json('customer.city = "Québec"').endswith('"value": "Québec"}]}]}')  # text, not escapes
    with pytest.raises(TypeError, match="from_json reads text"):
        from_dict(to_json(text))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        to_dict(42)  # type: ignore[arg-type]


def test_datetime_values_keep_their_offset() -> None:
    """A datetime's UTC offset survives the round trip."""
    rule = parse("customer.x < 2025-06-01T12:00:00-04:00")
    value = from_json(json.dumps(to_dict(rule))).value  # type: ignore[attr-defined]
    assert value.utcoffset() == dt.timedelta(hours=-4)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=5)
    | st.sampled_from(["rules", "sub_rules", "customer", "=", "in", "between", "date", "relative", "month", "not"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "rules",
                    "sub_rules",
                    "category",
                    "attribute",
                    "operator",
                    "value",
                    "type",
                    "amount",
                    "unit",
                    "part",
                    "not",
                    "in_group",
                    "direction",
                    "x",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=15,
)


@given(_json)
@settings(max_examples=400, deadline=None)
def test_random_documents_raise_only_rule_json_error(data: Any) -> None:
    """Any JSON data either reads as a rule or raises RuleJsonError, never another exception."""
    try:
        rule = from_json(data)
    except RuleJsonError:
        return
    assert from_json(to_dict(rule)) == rule


def test_windows_round_trip_as_a_row_key() -> None:
    """A count's window is the row's "window": its kind and value, typed like condition values."""
    rule = parse("appointment.count(last 90 days) >= 3 AND invoice.count(between 2026-01-01 and today) = 0")
    data = to_dict(rule)
    rows = [r["sub_rules"][0] for r in data["rules"]]
    assert rows[0]["window"] == {"kind": "last", "value": {"type": "duration", "amount": 90, "unit": "days"}}
    assert rows[1]["window"] == {
        "kind": "between",
        "value": [{"type": "date", "value": "2026-01-01"}, {"type": "anchor", "value": "today"}],
    }
    assert from_json(data) == rule
    assert from_json(json.dumps(data)) == rule


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"kind": "lately", "value": 3}, "/window/kind: expected one of last, next, since, between, got 'lately'"),
        ({"kind": "last", "value": 90}, '/window/value: a last window takes {"type": "duration", ...}, got 90'),
        ({"kind": "since", "value": "monday"}, "/window/value: a window takes times (dates, relative times,"
         " today...), got 'monday'"),
        ({"kind": "between", "value": [{"type": "date", "value": "2026-01-01"}]},
         "/window/value: a between window takes a list of two times, got a list of 1"),
        ({"kind": "since"}, "/window: missing 'value' for a since window"),
        ({"kind": "since", "value": {"type": "date", "value": "2026-01-01"}, "to": 1},
         "/window/to: unexpected key 'to' in a window; expected kind, value"),
    ],
)
def test_malformed_windows_say_where(window: Any, message: str) -> None:
    """A malformed window is a RuleJsonError pointing into the row's "window"."""
    row = {"category": "appointment", "attribute": "count", "window": window, "operator": ">=", "value": 3}
    with pytest.raises(RuleJsonError) as caught:
        from_json({"rules": [{"sub_rules": [row]}]})
    assert str(caught.value) == f"invalid rule JSON at /rules/0/sub_rules/0{message}"
