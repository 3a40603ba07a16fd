"""The parser raises nothing but RuleSyntaxError, and huge or deep rules do not hit the recursion limit."""

from __future__ import annotations

import datetime as dt
from pathlib import Path as FilePath

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohorts import Customer, Event, RuleSyntaxError, compile, explain, parse  # noqa: A004
from cohorts.ast import And, Condition, Node, Not, Op, Or, Path

from .strategies import NOW, rules

_FIXTURES = [
    line
    for line in (FilePath(__file__).parent / "fixtures" / "identity.rules").read_text(encoding="utf-8").splitlines()
    if line and not line.startswith("#")
]
# Pieces of rule text, so random text often gets deep into the grammar.
_TOKENS = [
    "customer",
    ".",
    "city",
    "`a b`",
    "`",
    "repair_order",
    "closed",
    "last_time",
    "count",
    "year",
    "month",
    "=",
    "!=",
    "<>",
    "<",
    "<=",
    ">",
    ">=",
    "is",
    "not",
    "known",
    "unknown",
    "contains",
    "does",
    "contain",
    "starts",
    "ends",
    "with",
    "in",
    "between",
    "and",
    "AND",
    "or",
    "OR",
    "NOT",
    "(",
    ")",
    "[",
    "]",
    ",",
    "before",
    "after",
    "within",
    "last",
    "next",
    "ago",
    "days",
    "month",
    "today",
    "now",
    "january",
    "monday",
    "group",
    '"x"',
    '"',
    "'",
    "\\",
    '"\\u12"',
    "1",
    "-2.5",
    "1e999",
    "9" * 5000,
    "2025-01-31",
    "2025-02-30",
    "2025-01-31T09:30",
    "9999-12-31T23:59+14:00",
    "true",
    "false",
    "#",
    '"\\UFFFFFFFF"',
    '"\\x4"',
    "٢٠٢٥-٠١-٠١",
    "١٢",
    "\n",
    " ",
    "\t",
    "é",
    "\x00",
]


def _parses_or_says_why(text: str) -> None:
    try:
        result = parse(text)
    except RuleSyntaxError as error:
        assert error.line >= 1 and error.column >= 1
        assert "^" in str(error)
    else:
        assert isinstance(result, Node)


@given(st.text(max_size=60))
@settings(max_examples=400, deadline=None)
def test_random_text(text: str) -> None:
    """Arbitrary text parses or raises RuleSyntaxError with a caret, never another exception."""
    _parses_or_says_why(text)


@given(st.lists(st.sampled_from(_TOKENS), max_size=25).map(" ".join))
@settings(max_examples=300, deadline=None)
def test_random_token_soup(text: str) -> None:
    """Sequences of the language's own words parse or raise RuleSyntaxError."""
    _parses_or_says_why(text)


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    text: str = draw(st.sampled_from(_FIXTURES) | rules(max_leaves=4).map(str))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.sampled_from(_TOKENS) | st.characters())
        if kind == "insert":
            text = text[:position] + piece + text[position:]
        elif kind == "delete":
            text = text[:position] + text[position + draw(st.integers(1, 5)) :]
        else:
            text = text[:position] + piece + text[position + 1 :]
    return text


@given(_mutated())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_rules(text: str) -> None:
    """Valid rules with characters inserted, deleted or replaced parse or raise RuleSyntaxError."""
    _parses_or_says_why(text)


def _check_big(rule: Node, text: str) -> None:
    assert parse(text) == rule
    canonical = str(rule)
    assert parse(canonical) == rule
    assert str(parse(canonical)) == canonical
    assert hash(parse(text)) == hash(rule)
    assert repr(rule).startswith(type(rule).__name__)


_CUSTOMER = Customer(7, {"x": 9_999, "city": "Laval"}, [Event("appointment", NOW - dt.timedelta(days=3))])


def test_ten_thousand_conditions() -> None:
    """A rule of 10,000 conditions parses, prints, compares equal and evaluates."""
    conditions = [Condition(Path("customer", "x"), Op.EQ, i) for i in range(10_000)]
    rule = Or(conditions)
    text = " OR ".join(f"customer.x = {i}" for i in range(10_000))
    _check_big(rule, text)
    predicate = compile(text)
    assert predicate(_CUSTOMER, NOW) is True
    assert predicate(_CUSTOMER.with_attributes(x=10_000), NOW) is False
    explanation = explain(rule, _CUSTOMER, NOW)
    assert explanation.result is True
    assert len(explanation.children) == 10_000
    assert [c.result for c in explanation.children[-2:]] == [False, True]


def test_many_ands_with_nots_inside_one_or() -> None:
    """1,000 ANDs inside one OR, each with a NOT, print canonically, evaluate and explain."""
    text = " OR ".join(f'(customer.x = {i} AND NOT customer.city = "Montréal")' for i in range(1_000))
    rule = parse(text)
    assert isinstance(rule, Or) and len(rule.items) == 1_000
    assert str(rule) == text.replace("(", "").replace(")", "")
    assert parse(str(rule)) == rule
    assert compile(rule)(_CUSTOMER.with_attributes(x=999), NOW) is True
    assert compile(rule)(_CUSTOMER.with_attributes(x=999, city="MONTRÉAL"), NOW) is False
    assert explain(rule, _CUSTOMER.with_attributes(x=1), NOW).result is True
    assert explain(rule, _CUSTOMER.with_attributes(x=3, city=None), NOW).result is None


def _nested(depth: int) -> tuple[Node, str]:
    """``(a0 OR (b0 AND (a1 OR (b1 AND ... innermost))))``: ``depth`` parenthesised levels, each a real node."""
    innermost: Node = Condition(Path("customer", "x"), Op.EQ, 9_999)
    rule, text = innermost, "customer.x = 9999"
    for level in reversed(range(depth)):
        leaf = Condition(Path("customer", "y" if level % 2 else "x"), Op.EQ, level)
        if level % 2:
            rule, text = And([leaf, rule]), f"{leaf} AND ({text})"
        else:
            rule, text = Or([leaf, rule]), f"{leaf} OR ({text})"
    return rule, text


@pytest.mark.parametrize("depth", [200, 1000])
def test_deeply_nested_parentheses(depth: int) -> None:
    """A rule with hundreds of levels of parentheses parses, prints, compares equal and evaluates."""
    rule, text = _nested(depth)
    assert text.count("(") == depth
    _check_big(rule, text)
    predicate = compile(text)
    # y is unknown, x is 9999: every AND is unknown, so every OR is unknown and the rule does not match.
    assert predicate(_CUSTOMER, NOW) is False
    assert explain(text, _CUSTOMER, NOW).result is None
    # y = 1 makes the first AND's left side true, and x = 2 the OR inside it.
    assert explain(rule, Customer(1, {"x": 2, "y": 1}), NOW).result is True
    assert predicate(Customer(1, {"x": 2, "y": 1}), NOW) is True
    assert explain(rule, Customer(1, {"x": 9_999, "y": 1}), NOW).result is False


def test_deep_not_chain() -> None:
    """NOT nested 300 times (with and without parentheses) keeps its meaning."""
    condition = Condition(Path("customer", "x"), Op.EQ, 9_999)
    rule: Node = condition
    for _ in range(300):
        rule = Not(rule)
    for text in ("NOT " * 300 + "customer.x = 9999", "NOT (" * 300 + "customer.x = 9999" + ")" * 300):
        assert parse(text) == rule
    assert str(rule) == "NOT " * 300 + "customer.x = 9999"
    assert compile(rule)(_CUSTOMER, NOW) is True  # an even number of NOTs
    assert explain(rule, _CUSTOMER, NOW).result is True


def test_too_deep_is_a_syntax_error_not_a_crash() -> None:
    """Absurd nesting gives RuleSyntaxError (or parses), never RecursionError."""
    text = "(" * 20_000 + "customer.x = 1" + ")" * 20_000
    _parses_or_says_why(text)


def test_flattening_keeps_huge_and_or_flat() -> None:
    """Chains of AND written with parentheses flatten into one n-ary node."""
    text = "(" * 50 + " AND ".join(f"customer.x != {i}" for i in range(50)) + ")" * 50
    rule = parse(text)
    assert isinstance(rule, And) and len(rule.items) == 50


@given(st.text(alphabet="\\uUx0123456789abcdefABCDEFgq\"'n", max_size=12))
@settings(max_examples=300, deadline=None)
def test_random_escapes_in_strings(body: str) -> None:
    """Any backslash sequence inside a string literal parses or raises RuleSyntaxError."""
    _parses_or_says_why(f'customer.x = "{body}"')
    _parses_or_says_why(f'customer in group "{body}"')
