"""The canonical printer: ``parse(str(rule)) == rule`` and canonical text is a fixpoint."""

from __future__ import annotations

from pathlib import Path as FilePath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cohorts import parse
from cohorts.ast import Condition, Node, Op, Path

from .strategies import conditions, deep_rules, in_groups, rules

IDENTITY = FilePath(__file__).parent / "fixtures" / "identity.rules"


def _identity_rules() -> list[str]:
    lines = IDENTITY.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("text", _identity_rules())
def test_identity(text: str) -> None:
    """Every canonical rule of the fixtures file prints back exactly as written."""
    assert str(parse(text)) == text


# Any rule under hundreds of levels of NOT, AND and OR, with any condition or group test as filler.
_deep = deep_rules(rules(4), conditions() | in_groups, max_depth=800)


@given(rules())
@settings(max_examples=300, deadline=None)
def test_round_trip(rule: Node) -> None:
    """Printing any rule and parsing the text gives the same rule back."""
    assert parse(str(rule)) == rule


@given(_deep)
@settings(max_examples=25, deadline=None)
def test_deep_round_trip(rule: Node) -> None:
    """Printing a rule hundreds of levels deep and parsing the text gives the same rule back."""
    assert parse(str(rule)) == rule


@given(rules())
@settings(max_examples=150, deadline=None)
def test_canonical_text_is_a_fixpoint(rule: Node) -> None:
    """The canonical text of a parsed rule parses to itself and prints the same."""
    text = str(rule)
    assert str(parse(text)) == text


@given(_deep)
@settings(max_examples=15, deadline=None)
def test_deep_canonical_text_is_a_fixpoint(rule: Node) -> None:
    """The canonical text of a deep rule is a fixpoint too."""
    text = str(rule)
    assert str(parse(text)) == text


@given(st.sampled_from(_identity_rules()), st.sampled_from(["", " ", "\n", "  # a comment\n"]))
def test_layout_and_comments_do_not_matter(text: str, filler: str) -> None:
    """Extra spaces, newlines and comments around a rule parse to the same rule."""
    assert parse(f"{filler}{text}{filler}") == parse(text)


def test_values_of_different_types_are_different_rules() -> None:
    """``= true``, ``= 1``, ``= 1.0`` and ``= january`` are distinct rules (and hash apart)."""
    texts = ["customer.x = true", "customer.x = 1", "customer.x = 1.0", "customer.x = january", "customer.x = monday"]
    parsed = {parse(text) for text in texts}
    assert len(parsed) == len(texts)
    assert parse("customer.x in [1, true]") != parse("customer.x in [true, 1]")


def test_case_of_keywords_is_not_kept() -> None:
    """Keywords print in one spelling whatever case they were written in."""
    rule = parse('NOT Customer.city Is Not "Laval" oR customer.x WITHIN LAST 3 Days')
    assert str(rule) == 'NOT customer.city != "Laval" OR customer.x within last 3 days'


def test_names_are_quoted_only_when_needed() -> None:
    """Bare names stay bare; spaces, backquotes, leading digits and a first ``not`` get backquotes."""
    assert str(Path("customer", "Date de renouvellement")) == "customer.`Date de renouvellement`"
    assert str(Path("customer", "a`b")) == "customer.`a``b`"
    assert str(Path("customer", "1st")) == "customer.`1st`"
    assert str(Path("not", "x")) == "`not`.x"
    assert str(Path("ev", "year")) == "ev.`year`"
    assert str(Path("customer", "été")) == "customer.été"
    assert parse(str(Condition(Path("not", "x"), Op.IS_KNOWN))) == Condition(Path("not", "x"), Op.IS_KNOWN)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("Appointment.COUNT( LAST 90 Days ) >= 3", "Appointment.COUNT(last 90 days) >= 3"),
        ("appointment.count(next 1 weeks) > 0", "appointment.count(next 1 week) > 0"),
        ("invoice.count(SINCE 2026-01-01) = 0", "invoice.count(since 2026-01-01) = 0"),
        ("invoice.count(since 2026-01-01 10:00Z) = 0", "invoice.count(since 2026-01-01T10:00:00+00:00) = 0"),
        (
            "repair_order.closed.count(Between Yesterday AND in 3 days) > 0",
            "repair_order.closed.count(between yesterday and in 3 days) > 0",
        ),
        ("`a b`.count(last 2 months) is known", "`a b`.count(last 2 months) is known"),
    ],
)
def test_windows_print_canonically(text: str, canonical: str) -> None:
    """A window prints right after its aggregate, in lower case, and reads back the same."""
    assert str(parse(text)) == canonical
    assert parse(canonical) == parse(text)
