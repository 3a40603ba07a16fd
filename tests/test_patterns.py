"""``matches``: the pattern dialect, its errors with a caret, and the same answers on every engine.

The in-memory evaluator and SQLite run patterns on RE2; PostgreSQL runs its own engine on the
dialect's second rendering. The property at the end compares the two engines directly on random
patterns of the dialect and random text; the differential suites (tests/test_differential.py,
tests/test_host_table.py) draw ``matches`` conditions among their text conditions too.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cohorts import Customer, RuleSyntaxError, RuleTypeError, from_json, parse, to_dict, validate
from cohorts.ast import Condition, Op, Path
from cohorts.pattern import MAX_PATTERN_CHARS, PatternError, compile_pattern
from cohorts.repository import MemoryRepository
from cohorts.values import fold_text

from .strategies import patterns

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)


def matches(pattern: str, text: str) -> bool:
    folded = fold_text(text)
    assert folded is not None
    return compile_pattern(pattern).search(folded)


# -- what a pattern means ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        (r"^[^@]+@dealer\.ca$", "sam@dealer.ca", True),
        (r"^[^@]+@dealer\.ca$", "Sam@DEALER.CA", True),  # letters fold, in the text and in the pattern
        (r"^[^@]+@dealer\.ca$", "sam@dealer.ca.evil.com", False),
        (r"^[^@]+@dealer\.ca$", "sam@dealerxca", False),  # \. is a dot, not any character
        ("dealer", "sam@dealer.ca", True),  # anywhere in the text
        ("^[A-Z]+ Motors$", "ACME motors", True),
        ("^a.b$", "a\nb", True),  # . takes a line end too
        ("^a$", "a\nb", False),  # $ is the end of the text, not of a line
        ("b$", "a\nb", True),
        ("^a", "x\na", False),  # ^ is the start of the text
        (r"^\d+$", "2026", True),
        (r"\d", "٣", False),  # \d is ASCII
        (r"^\w+$", "école", False),  # \w is ASCII
        (r"^\w+$", "snake_case_42", True),
        (r"\s", "a\tb", True),
        ("straße", "STRASSE", True),  # ß folds to ss, in the text and the pattern
        ("ss", "Straße", True),
        ("^lévis$", "Le\u0301vis", True),  # NFC on both sides
        ("(mont|qu)", "Québec", True),
        ("^(ab)+$", "ababab", True),
        ("^(ab)+$", "ababa", False),
        ("^a{2,3}$", "aaa", True),
        ("^a{2,3}$", "aaaa", False),
        ("x?y*z+", "zz", True),
        (r"[\]x]", "]", True),
        (r"[a\-z]", "-", True),
        (r"[a\-z]", "m", False),
        ('"', 'say "hi"', True),
        (r"\\", "back\\slash", True),
        ("^ab", "  ab", True),  # the text is stripped, as every text operator reads it
    ],
)
def test_meaning(pattern: str, text: str, expected: bool) -> None:
    assert matches(pattern, text) is expected


def test_rules_read_patterns_as_written() -> None:
    """Backslashes in a pattern's quotes belong to the pattern; the canonical text keeps them as written."""
    rule = parse(r'customer.email matches "^[^@]+@dealer\.ca$" AND customer.name does not match "^test"')
    assert str(rule) == r'customer.email matches "^[^@]+@dealer\.ca$" AND customer.name does not match "^test"'
    customers = [
        Customer(1, {"email": "Sam@Dealer.ca", "name": "Sam"}),
        Customer(2, {"email": "a@dealer.ca.x", "name": "A"}),
        Customer(3, {"email": "b@dealer.ca", "name": "Test account"}),
        Customer(4, {"email": " Z@dealer.ca ", "name": "Zed"}),
        Customer(5, {"name": "No email"}),  # unknown: neither matches nor does not match
    ]
    assert MemoryRepository(customers).select(rule, NOW) == {1, 4}
    aliases = MemoryRepository(
        [Customer(1, {"aliases": ["x@gmail.com", "z@dealer.ca"]}), Customer(2, {"aliases": ["a@b.com"]})]
    )
    assert aliases.select(parse(r'customer.aliases matches "@dealer\.ca$"'), NOW) == {1}  # a list: some element
    assert aliases.select(parse(r'customer.aliases does not match "@dealer\.ca$"'), NOW) == {2}
    # Every known email holds "dealer": nobody is left.
    assert MemoryRepository(customers).select(parse('customer.email does not match "dealer"'), NOW) == set()


def test_quotes_round_trip() -> None:
    """A pattern with a double quote prints in single quotes; parsing it back gives the same rule."""
    condition = Condition(Path("customer", "note"), Op.MATCHES, 'say "hi"')
    assert str(condition) == "customer.note matches 'say \"hi\"'"
    assert parse(str(condition)) == condition
    assert from_json(to_dict(condition)) == condition


@given(patterns)
@settings(max_examples=200, deadline=None)
def test_every_pattern_of_the_dialect_prints_and_parses_back(pattern: str) -> None:
    condition = Condition(Path("customer", "email"), Op.NOT_MATCHES, pattern)
    assert parse(str(condition)) == condition
    validate(condition)


# -- refusals, with a caret --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "message", "offset"),
    [
        ("", "empty pattern", 0),
        ("(a+)+", "repeated group cannot contain", 4),
        ("(a|b)*", "repeated group cannot contain", 5),
        ("a**", "cannot follow another", 2),
        ("*a", "nothing before", 0),
        ("^*", "cannot be repeated", 1),
        ("ab(", "never closed", 2),
        ("ab)", "closes no group", 2),
        ("[abc", "never closed", 0),
        ("[z-a]", "backwards", 2),
        (r"\b", r"\b is not part", 0),
        (r"x\1", r"\1 is not part", 1),
        ("(?=x)", "(? constructs", 0),
        ("a{300}", "up to 255", 1),
        ("a{3,1}", "backwards", 1),
        ("a{x}", "a count reads", 1),
        ("|a", "empty on the left", 0),
        ("a|", "empty at the end", 2),
        ("()", "empty group", 1),
        ("a\\", "lone", 1),
        ("[ß]", "more than one character", 1),
        ("a\nb", "cannot be written in a rule", 1),
        ("'\"", "bare quotes", 0),
    ],
)
def test_refused(pattern: str, message: str, offset: int) -> None:
    with pytest.raises(PatternError, match=re.escape(message)) as caught:
        compile_pattern(pattern)
    assert caught.value.offset == offset


def test_a_bad_pattern_is_a_syntax_error_with_a_caret_under_the_problem() -> None:
    text = 'customer.city = "Laval" AND\n  customer.email matches "^[^@]+@(a|b)+$"'
    with pytest.raises(RuleSyntaxError) as caught:
        parse(text)
    error = caught.value
    assert (error.line, error.column) == (2, 27 + len("^[^@]+@(a|b)"))  # under the + that repeats the group
    assert "repeated group" in str(error)
    assert str(error).splitlines()[-1].index("^") == error.column - 1


@pytest.mark.parametrize("value", ["5", "[\"a\"]", "true"])
def test_matches_takes_a_pattern_in_quotes(value: str) -> None:
    with pytest.raises(RuleSyntaxError, match="pattern in quotes"):
        parse(f"customer.email matches {value}")


def test_patterns_from_json_or_built_by_hand_are_checked_by_validate() -> None:
    with pytest.raises(RuleTypeError, match=r"not a pattern: .*repeated group.*\(at character 6"):
        validate(Condition(Path("customer", "email"), Op.MATCHES, "(a|b)+"))
    with pytest.raises(RuleTypeError, match="pattern in quotes, not 5"):
        validate(Condition(Path("customer", "email"), Op.MATCHES, 5))
    with pytest.raises(RuleTypeError, match="does not apply to a number"):
        validate(parse('invoice.count matches "^2"'))


def test_too_long() -> None:
    with pytest.raises(PatternError, match="at most"):
        compile_pattern("a" * (MAX_PATTERN_CHARS + 1))


def test_matching_takes_linear_time_on_hostile_text() -> None:
    """Patterns that make a backtracking engine take quadratic or worse time run in linear time."""
    text = "a" * 200_000
    started = time.process_time()
    for pattern in ("[^@]+@x", ".*.*.*.*b", "a*a*a*a*a*b", "(ab)*c"):
        assert not compile_pattern(pattern).search(text)
    assert time.process_time() - started < 5  # Python's re: minutes for the first, far longer for the others


# -- every engine the same --------------------------------------------------------------------------

_letters = st.sampled_from("aAbB éE\u0301ßs日0129_-.@\"'\\\n\t]x")
_texts = st.lists(
    st.text(_letters, max_size=8).filter(lambda t: fold_text(t) is not None),
    min_size=1,
    max_size=6,
)


@pytest.fixture(scope="module")
def pg_connection(postgres_url: str) -> Iterator[Any]:
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        yield conn
    engine.dispose()


@pytest.mark.postgres
@given(patterns, _texts)
@settings(max_examples=300, deadline=None)
def test_postgresql_runs_the_dialect_as_re2_does(pg_connection: Any, pattern: str, texts: list[str]) -> None:
    """The ARE rendering under PostgreSQL's ``~`` gives RE2's answer for every text."""
    compiled = compile_pattern(pattern)
    folded = [fold_text(t) for t in texts]
    rows = pg_connection.exec_driver_sql(
        "SELECT t ~ %(p)s FROM unnest(%(texts)s::text[]) WITH ORDINALITY AS u(t, n) ORDER BY n",
        {"p": compiled.posix, "texts": folded},
    ).scalars().all()
    assert rows == [compiled.search(t) for t in folded if t is not None], (compiled.re2, compiled.posix)


def test_sql_backends_agree_with_memory(repository: Any) -> None:
    """A corpus of patterns over the same customers: SQLite and PostgreSQL select what memory selects."""
    customers = [
        Customer(1, {"email": "Sam@Dealer.ca", "note": "VIP\ncall back", "tags": ["gold", "Straße"]}),
        Customer(2, {"email": "x@gmail.com", "note": "a.b", "tags": ["bronze"]}),
        Customer(3, {"email": "b@dealer.ca.evil.com", "note": "2026-12-01", "tags": []}),
        Customer(4, {"email": "  QA_42@dealer.ca ", "note": 'said "hi"'}),
        Customer(5, {}),
    ]
    repository.upsert(customers)
    memory = MemoryRepository(customers)
    for text in [
        r'customer.email matches "^[^@]+@dealer\.ca$"',
        r'customer.email does not match "dealer"',
        r'customer.note matches "^vip.call"',
        r'customer.note matches "\d{4}-\d{2}"',
        r'customer.note matches "^a\.b$"',
        "customer.note matches '\"hi\"$'",
        'customer.tags matches "^str(as)+se$"',
        'customer.tags does not match "^g"',
        r'customer.email matches "^\w+@"',
    ]:
        rule = parse(text)
        assert repository.select(rule, NOW) == memory.select(rule, NOW), text
