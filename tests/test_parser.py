"""Rule text to hand-built AST, one construct at a time."""

from __future__ import annotations

import datetime as dt

import pytest

import cohorts
from cohorts import RuleSyntaxError, parse
from cohorts.ast import (
    Anchor,
    And,
    Condition,
    DatePart,
    Duration,
    InGroup,
    Month,
    Not,
    Op,
    Or,
    Path,
    Relative,
    Span,
    Unit,
    Weekday,
    Window,
    WindowKind,
)

CITY = Path("customer", "city")
X = Path("customer", "x")
AT = Path("customer", "created_at")


def c(path: Path, op: Op, value: object = None) -> Condition:
    """A condition, briefly."""
    return Condition(path, op, value)  # type: ignore[arg-type]


A, B, C, D = (c(Path("customer", name), Op.EQ, 1) for name in "abcd")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('customer.city = "Laval"', c(CITY, Op.EQ, "Laval")),
        ('customer.city is "Laval"', c(CITY, Op.EQ, "Laval")),
        ('customer.city != "Laval"', c(CITY, Op.NE, "Laval")),
        ('customer.city <> "Laval"', c(CITY, Op.NE, "Laval")),
        ('customer.city is not "Laval"', c(CITY, Op.NE, "Laval")),
        ("customer.x < 3", c(X, Op.LT, 3)),
        ("customer.x <= 3", c(X, Op.LE, 3)),
        ("customer.x > -3", c(X, Op.GT, -3)),
        ("customer.x >= +3.25", c(X, Op.GE, 3.25)),
        ("customer.x = .5", c(X, Op.EQ, 0.5)),
        ("customer.x = 2e3", c(X, Op.EQ, 2000.0)),
        ("customer.x is known", c(X, Op.IS_KNOWN)),
        ("customer.x is not unknown", c(X, Op.IS_KNOWN)),
        ("customer.x is unknown", c(X, Op.IS_UNKNOWN)),
        ("customer.x is not known", c(X, Op.IS_UNKNOWN)),
        ('customer.x contains "a"', c(X, Op.CONTAINS, "a")),
        ('customer.x does not contain "a"', c(X, Op.NOT_CONTAINS, "a")),
        ('customer.x starts with "a"', c(X, Op.STARTS_WITH, "a")),
        ('customer.x ends with "a"', c(X, Op.ENDS_WITH, "a")),
        ('customer.x in ["a", 1, true,]', c(X, Op.IN, ("a", 1, True))),
        ("customer.x not in []", c(X, Op.NOT_IN, ())),
        ("customer.x between 1 and 2", c(X, Op.BETWEEN, (1, 2))),
        ("customer.x between 2025-01-01 and today", c(X, Op.BETWEEN, (dt.date(2025, 1, 1), Anchor.TODAY))),
        ("customer.created_at before 2025-01-31", c(AT, Op.BEFORE, dt.date(2025, 1, 31))),
        ("customer.created_at after 2025-01-31T09:30", c(AT, Op.AFTER, dt.datetime(2025, 1, 31, 9, 30))),
        (
            "customer.created_at = 2025-01-31 09:30:15.5+05:30",
            c(AT, Op.EQ, dt.datetime(2025, 1, 31, 9, 30, 15, 500000, dt.timezone(dt.timedelta(hours=5, minutes=30)))),
        ),
        ("customer.created_at = 2025-01-31T09:30Z", c(AT, Op.EQ, dt.datetime(2025, 1, 31, 9, 30, tzinfo=dt.UTC))),
        ("customer.created_at within last 30 days", c(AT, Op.WITHIN_LAST, Duration(30, Unit.DAYS))),
        ("customer.created_at within next 1 week", c(AT, Op.WITHIN_NEXT, Duration(1, Unit.WEEKS))),
        ("customer.created_at < 30 days ago", c(AT, Op.LT, Relative(30, Unit.DAYS, ago=True))),
        ("customer.created_at < in 2 months", c(AT, Op.LT, Relative(2, Unit.MONTHS, ago=False))),
        ("customer.created_at > 1 year ago", c(AT, Op.GT, Relative(1, Unit.YEARS))),
        ("customer.created_at > 5 minutes ago", c(AT, Op.GT, Relative(5, Unit.MINUTES))),
        ("customer.created_at > 1 hour ago", c(AT, Op.GT, Relative(1, Unit.HOURS))),
        ("customer.created_at = today", c(AT, Op.EQ, Anchor.TODAY)),
        ("customer.created_at = yesterday", c(AT, Op.EQ, Anchor.YESTERDAY)),
        ("customer.created_at = tomorrow", c(AT, Op.EQ, Anchor.TOMORROW)),
        ("customer.created_at < now", c(AT, Op.LT, Anchor.NOW)),
        (
            "customer.created_at.month = january",
            c(Path("customer", "created_at", DatePart.MONTH), Op.EQ, Month.JANUARY),
        ),
        (
            "customer.created_at.weekday in [saturday, sunday]",
            c(Path("customer", "created_at", DatePart.WEEKDAY), Op.IN, (Weekday.SATURDAY, Weekday.SUNDAY)),
        ),
        ("customer.created_at.year = 2019", c(Path("customer", "created_at", DatePart.YEAR), Op.EQ, 2019)),
        ("customer.created_at.day = 1", c(Path("customer", "created_at", DatePart.DAY), Op.EQ, 1)),
        ("customer.subscribed = true", c(Path("customer", "subscribed"), Op.EQ, True)),
        ("customer.subscribed = false", c(Path("customer", "subscribed"), Op.EQ, False)),
    ],
)
def test_conditions(text: str, expected: Condition) -> None:
    """Every operator, value type and spelling reads as the expected condition."""
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "repair_order.closed.last_time < 730 days ago",
            c(Path("repair_order.closed", "last_time"), Op.LT, Relative(730, Unit.DAYS)),
        ),
        ("message.received.count = 0", c(Path("message.received", "count"), Op.EQ, 0)),
        ("message.sent.first_time.year = 2024", c(Path("message.sent", "first_time", DatePart.YEAR), Op.EQ, 2024)),
        ('appointment.service contains "oil"', c(Path("appointment", "service"), Op.CONTAINS, "oil")),
        ("appointment.at.weekday = monday", c(Path("appointment", "at", DatePart.WEEKDAY), Op.EQ, Weekday.MONDAY)),
        ("appointment.`year` = 1", c(Path("appointment", "year"), Op.EQ, 1)),
        (
            "customer.`Date de renouvellement`.month = february",
            c(Path("customer", "Date de renouvellement", DatePart.MONTH), Op.EQ, Month.FEBRUARY),
        ),
        ("customer.`back``quote` = 1", c(Path("customer", "back`quote"), Op.EQ, 1)),
        ("customer.`año` = 1", c(Path("customer", "año"), Op.EQ, 1)),
        ("customer.année = 1", c(Path("customer", "année"), Op.EQ, 1)),
        ("`mon événement`.`prix total` > 1", c(Path("mon événement", "prix total"), Op.GT, 1)),
        ("CUSTOMER.City = 1", c(Path("customer", "City"), Op.EQ, 1)),
        ("customer.and = 1", c(Path("customer", "and"), Op.EQ, 1)),
        ("today.at = today", c(Path("today", "at"), Op.EQ, Anchor.TODAY)),
    ],
)
def test_paths(text: str, expected: Condition) -> None:
    """Dotted event names, aggregates, date parts and backquoted names read as paths."""
    assert parse(text) == expected


def test_keywords_ignore_case() -> None:
    """Keywords, units, anchors, months and booleans read whatever their case."""
    assert parse('NOT customer.x IS NOT KNOWN aNd customer.y DOES NOT CONTAIN "a" Or customer.z BETWEEN 1 AND 2') == Or(
        [
            And([Not(c(X, Op.IS_UNKNOWN)), c(Path("customer", "y"), Op.NOT_CONTAINS, "a")]),
            c(Path("customer", "z"), Op.BETWEEN, (1, 2)),
        ]
    )
    assert parse("customer.x.MONTH = JANUARY") == c(Path("customer", "x", DatePart.MONTH), Op.EQ, Month.JANUARY)
    assert parse("customer.x < 3 Days AGO") == c(X, Op.LT, Relative(3, Unit.DAYS))
    assert parse("customer.x = TRUE") == c(X, Op.EQ, True)
    assert parse("customer.x = ToDay") == c(X, Op.EQ, Anchor.TODAY)


def test_and_binds_tighter_than_or() -> None:
    """a OR b AND c OR d is a OR (b AND c) OR d."""
    assert parse("customer.a = 1 OR customer.b = 1 AND customer.c = 1 OR customer.d = 1") == Or([A, And([B, C]), D])


def test_parentheses_override_precedence() -> None:
    """(a OR b) AND (c OR d) keeps both ORs."""
    assert parse("(customer.a = 1 OR customer.b = 1) AND (customer.c = 1 OR customer.d = 1)") == And(
        [Or([A, B]), Or([C, D])]
    )


def test_not_binds_to_the_next_condition() -> None:
    """NOT a AND b is (NOT a) AND b; NOT (a AND b) negates the group."""
    assert parse("NOT customer.a = 1 AND customer.b = 1") == And([Not(A), B])
    assert parse("NOT (customer.a = 1 AND customer.b = 1)") == Not(And([A, B]))
    assert parse("NOT NOT customer.a = 1") == Not(Not(A))


def test_and_or_are_flattened() -> None:
    """Chains and redundant parentheses give one n-ary node."""
    assert parse("customer.a = 1 AND (customer.b = 1 AND customer.c = 1)") == And([A, B, C])
    assert parse("((customer.a = 1)) OR (customer.b = 1 OR customer.c = 1)") == Or([A, B, C])


def test_between_and_is_not_a_logical_and() -> None:
    """The AND of between ... and ... belongs to between."""
    assert parse("customer.x between 1 and 2 and customer.a = 1") == And([c(X, Op.BETWEEN, (1, 2)), A])


def test_in_group() -> None:
    """customer in group / not in group read as group tests."""
    assert parse('customer in group "VIP"') == InGroup("VIP")
    assert parse("Customer NOT IN GROUP 'VIP customers'") == InGroup("VIP customers", negated=True)
    assert parse('customer in group "VIP" and customer.a = 1') == And([InGroup("VIP"), A])


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (r'"say \"hi\""', 'say "hi"'),
        (r"'it\'s'", "it's"),
        ("'double \" inside'", 'double " inside'),
        (r'"a\\b"', "a\\b"),
        (r'"line\nnext\ttab\rcr"', "line\nnext\ttab\rcr"),
        (r'"\u00e9\x41\U0001F600\/\0"', "éA😀/\0"),
        ('"Québec 日本"', "Québec 日本"),
        ('""', ""),
    ],
)
def test_string_escapes(text: str, value: str) -> None:
    """Strings take double or single quotes and the usual backslash escapes."""
    assert parse(f"customer.x = {text}") == c(X, Op.EQ, value)


def test_comments_and_layout() -> None:
    """# starts a comment to the end of the line; newlines and tabs are spaces."""
    text = '# VIPs in Laval\ncustomer.city = "Laval"  # the town\n\tAND customer.a = 1 # done'
    assert parse(text) == And([c(CITY, Op.EQ, "Laval"), A])
    assert parse('customer.x = "# not a comment"') == c(X, Op.EQ, "# not a comment")


def test_spans_locate_nodes_but_do_not_count_for_equality() -> None:
    """Parsed nodes carry their line and column; equality ignores them."""
    rule = parse('customer.a = 1 AND\n  customer.city = "Laval"')
    assert isinstance(rule, And)
    assert rule.items[1].span == Span(2, 3, 21, 44)  # type: ignore[attr-defined]
    assert rule == And([A, c(CITY, Op.EQ, "Laval")])


def test_parse_cache_returns_equal_rules() -> None:
    """Parsing the same text twice gives equal rules."""
    assert parse("customer.a = 1") == parse("customer.a = 1") == A


def test_parse_rejects_non_text() -> None:
    """parse() takes text; anything else is a TypeError."""
    with pytest.raises(TypeError, match="rule text"):
        parse(42)  # type: ignore[arg-type]


# -- windows of event counts ----------------------------------------------------


def _count(window: Window, category: str = "appointment") -> Path:
    return Path(category, "count", window=window)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "appointment.count(last 90 days) >= 3",
            c(_count(Window(WindowKind.LAST, Duration(90, Unit.DAYS))), Op.GE, 3),
        ),
        (
            "APPOINTMENT.count( Last 1 Month ) >= 3",
            c(Path("APPOINTMENT", "count", window=Window(WindowKind.LAST, Duration(1, Unit.MONTHS))), Op.GE, 3),
        ),
        (
            "appointment.count(NEXT 30 days) > 0",
            c(_count(Window(WindowKind.NEXT, Duration(30, Unit.DAYS))), Op.GT, 0),
        ),
        (
            "invoice.count(since 2026-01-01) = 0",
            c(_count(Window(WindowKind.SINCE, dt.date(2026, 1, 1)), "invoice"), Op.EQ, 0),
        ),
        (
            "invoice.count(Since 3 weeks ago) = 0",
            c(_count(Window(WindowKind.SINCE, Relative(3, Unit.WEEKS)), "invoice"), Op.EQ, 0),
        ),
        (
            "repair_order.closed.count(between 2026-01-01 and 2026-03-31) > 0",
            c(
                _count(Window(WindowKind.BETWEEN, (dt.date(2026, 1, 1), dt.date(2026, 3, 31))), "repair_order.closed"),
                Op.GT,
                0,
            ),
        ),
        (
            "appointment.count(between today and in 2 weeks) between 1 and 2",
            c(
                _count(Window(WindowKind.BETWEEN, (Anchor.TODAY, Relative(2, Unit.WEEKS, ago=False)))),
                Op.BETWEEN,
                (1, 2),
            ),
        ),
    ],
)
def test_windows(text: str, expected: Condition) -> None:
    """A window in parentheses after an aggregate: last, next, since and between, keywords in any case."""
    assert parse(text) == expected


def test_window_between_and_the_logical_and_do_not_mix() -> None:
    """The window's AND stays inside its parentheses; the next AND joins conditions."""
    rule = parse("appointment.count(between 2026-01-01 and 2026-02-01) > 0 and customer.a = 1")
    assert isinstance(rule, And)
    assert rule.items[0] == c(
        _count(Window(WindowKind.BETWEEN, (dt.date(2026, 1, 1), dt.date(2026, 2, 1)))), Op.GT, 0
    )
    assert rule.items[1] == A


def test_window_words_stay_names_elsewhere() -> None:
    """since, last and next remain usable as attribute names."""
    assert parse("customer.since = 1") == c(Path("customer", "since"), Op.EQ, 1)
    assert parse("customer.last is known") == c(Path("customer", "last"), Op.IS_KNOWN)


def test_windows_compare_by_value() -> None:
    """Equal windows make equal, equally hashed paths; different windows and no window differ."""
    last = parse("appointment.count(last 90 days) >= 3")
    assert hash(last) == hash(parse("appointment.count(LAST 90 DAY) >= 3"))
    assert len({last, parse("appointment.count(last 91 days) >= 3"), parse("appointment.count >= 3")}) == 3
    assert parse("a.count(since 2026-01-01T10:00+01:00) = 0") != parse("a.count(since 2026-01-01T09:00+00:00) = 0")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "appointment.count(last 90) >= 3",
            "Unexpected ')' at line 1, column 26:\n"
            "appointment.count(last 90) >= 3\n"
            "                         ^\n"
            "Expected one of: a unit (days, months...)",
        ),
        (
            "appointment.count(lst 90 days) >= 3",
            "Unexpected 'lst' at line 1, column 19:\n"
            "appointment.count(lst 90 days) >= 3\n"
            "                  ^\n"
            'did you mean "last"?\n'
            "Expected one of: between, followed, last, next, preceded, since, where",
        ),
        (
            "appointment.count(last 90 days >= 3",
            "Unexpected '>=' at line 1, column 32:\n"
            "appointment.count(last 90 days >= 3\n"
            "                               ^\n"
            "Expected one of: ), ,",
        ),
        (
            'invoice.count(since "monday") = 0',
            "Unexpected '\"monday\"' at line 1, column 21:\n"
            'invoice.count(since "monday") = 0\n'
            "                    ^\n"
            "Expected one of: a date, a date and time, a number, in, today/now",
        ),
        (
            "appointment.count(last 1.5 days) = 0",
            "Expected a whole number of units at line 1, column 24:\n"
            "appointment.count(last 1.5 days) = 0\n"
            "                       ^",
        ),
        (
            "customer.a = 1 and\n  invoice.count(between 2026-01-01) = 1",
            "Unexpected ')' at line 2, column 35:\n"
            "  invoice.count(between 2026-01-01) = 1\n"
            "                                  ^\n"
            "Expected one of: AND",
        ),
    ],
)
def test_malformed_windows_point_at_the_fault(text: str, message: str) -> None:
    """A malformed window is a RuleSyntaxError with its line, column, caret and what was expected."""
    with pytest.raises(RuleSyntaxError) as caught:
        parse(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("rule", "column"),
    [
        ("customer.age between 2 and 1", 28),
        ("customer.age between 2.5 and -1", 30),
        ("customer.created_at between 2024-01-01 and 2023-01-01", 44),
        ("invoice.count(between 2024-01-01 and 2023-01-01) >= 1", 38),
        ("customer.created_at between 7 days ago and 30 days ago", 1),
        ("customer.renewal between in 10 days and 10 days ago", 1),
    ],
)
def test_a_reversed_between_is_an_error_with_a_caret(rule: str, column: int) -> None:
    with pytest.raises(RuleSyntaxError, match="Empty range") as caught:
        parse(rule)
    assert (caught.value.line, caught.value.column) == (1, column)


def test_between_bounds_whose_order_needs_now_are_left_to_the_evaluation() -> None:
    """Different units (a month against 30 days) are ordered only at a given now; equal ends are a point."""
    assert parse("customer.renewal between 1 months ago and 30 days ago").value == (
        Relative(1, Unit.MONTHS),
        Relative(30, Unit.DAYS),
    )
    assert parse("customer.age between 3 and 3").value == (3, 3)


def test_a_reversed_between_built_as_a_tree_is_refused_when_checked() -> None:
    with pytest.raises(cohorts.RuleTypeError, match="is empty"):
        cohorts.validate(Condition(Path("customer", "vehicle_year"), Op.BETWEEN, (2021, 2019)))
