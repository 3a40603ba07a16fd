"""Error messages, in full: the caret under the fault, what was expected, and suggestions."""

from __future__ import annotations

import pytest

from cohorts import (
    RuleError,
    RuleSyntaxError,
    RuleTypeError,
    UnknownAttributeError,
    compile,  # noqa: A004
    default_schema,
    parse,
    validate,
)

_VALUES = (
    "Expected one of: [, a date, a date and time, a day name, a month name, a number, a path, a string, false, in,"
    " today/now, true"
)
_OPERATORS = (
    "Expected one of: !=, ., <, <=, <>, =, >, >=, after, before, between, contains, does not contain,"
    " does not match, ends with, in, is, matches, not, starts with, within"
)


def _syntax_error(text: str) -> RuleSyntaxError:
    with pytest.raises(RuleSyntaxError) as caught:
        parse(text)
    return caught.value


def test_missing_value() -> None:
    """A condition without its value points just after the operator and lists what may follow."""
    error = _syntax_error("customer.city =")
    assert str(error) == f"Missing value at line 1, column 16:\ncustomer.city =\n               ^\n{_VALUES}"
    assert (error.line, error.column, error.label) == (1, 16, "Missing value")


def test_typo_in_an_operator_suggests_the_keyword() -> None:
    """contans is underlined and "contains" suggested."""
    error = _syntax_error('customer.x contans "a"')
    assert str(error) == (
        "Unexpected 'contans' at line 1, column 12:\n"
        'customer.x contans "a"\n'
        "           ^\n"
        'did you mean "contains"?\n' + _OPERATORS
    )
    assert error.hint == 'did you mean "contains"?'


def test_typo_in_a_unit() -> None:
    """dayz suggests days."""
    error = _syntax_error("customer.x < 3 dayz ago")
    assert str(error).splitlines()[:4] == [
        "Unexpected 'dayz' at line 1, column 16:",
        "customer.x < 3 dayz ago",
        "               ^",
        'did you mean "days"?',
    ]


def test_unterminated_string() -> None:
    """An unclosed quote is named as such, with the caret on the opening quote."""
    assert str(_syntax_error('customer.x = "abc')) == (
        f'Unterminated string at line 1, column 14:\ncustomer.x = "abc\n             ^\n{_VALUES}'
    )


def test_truncated_rule_points_at_the_end() -> None:
    """A rule cut short after AND puts the caret at the end of the text."""
    text = 'customer.city = "Laval" and'
    error = _syntax_error(text)
    assert str(error) == (
        "Missing condition at line 1, column 28:\n"
        f"{text}\n" + " " * 27 + "^\n"
        "Expected one of: (, a `quoted name`, a name, not"
    )
    assert error.column == len(text) + 1


def test_truncated_between() -> None:
    """between without its AND says so."""
    assert str(_syntax_error("customer.x between 1")) == (
        "Unexpected end of rule at line 1, column 21:\ncustomer.x between 1\n"
        "                    ^\nExpected one of: AND"
    )


def test_unclosed_parenthesis() -> None:
    """A missing ) is expected at the end."""
    assert str(_syntax_error("(customer.x = 1")) == (
        "Unexpected end of rule at line 1, column 16:\n(customer.x = 1\n               ^\nExpected one of: )"
    )


def test_bare_word_where_a_value_goes() -> None:
    """A date compared with a bare word says text goes in quotes."""
    assert str(_syntax_error("customer.created_at > soon")) == (
        "Unexpected 'soon' at line 1, column 23:\n"
        "customer.created_at > soon\n"
        "                      ^\n"
        'text goes in quotes: "soon"; another value of the customer is a path, as in customer.soon\n' + _VALUES
    )


def test_error_on_a_later_line() -> None:
    """Line and column count from the start of the fault's own line, which is the one shown."""
    error = _syntax_error("customer.x = 1\n  and customer.y == 2")
    assert (error.line, error.column) == (2, 19)
    assert str(error).splitlines()[:3] == [
        "Unexpected '=' at line 2, column 19:",
        "  and customer.y == 2",
        "                  ^",
    ]


@pytest.mark.parametrize("text", ["", "   ", "\n\t\n", "# only a comment", "  \n # comment\n# another"])
def test_blank_rule(text: str) -> None:
    """Empty, blank and comment-only rules are RuleSyntaxError "Empty rule"."""
    error = _syntax_error(text)
    assert error.label == "Empty rule"
    assert (error.line, error.column) == (1, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "customer.x = 2025-02-30",
            "Invalid date (day is out of range for month) at line 1, column 14:\n"
            "customer.x = 2025-02-30\n             ^",
        ),
        (
            'customer.x = "\\q"',
            'Unknown escape \\q in string at line 1, column 14:\ncustomer.x = "\\q"\n             ^',
        ),
        (
            "customer.x < 3.5 days ago",
            "Expected a whole number of units at line 1, column 14:\ncustomer.x < 3.5 days ago\n             ^",
        ),
        ('bob in group "VIP"', 'Expected "customer in group" at line 1, column 1:\nbob in group "VIP"\n^'),
        (
            "customer.a.b = 1",
            "Customer paths name one attribute: 'customer.a.b' at line 1, column 1:\ncustomer.a.b = 1\n^",
        ),
        ("customer.x = 1e999", "Number too large at line 1, column 14:\ncustomer.x = 1e999\n             ^"),
        (
            'customer.x = "\\UFFFFFFFF"',
            'Escape \\UFFFFFFFF is beyond Unicode at line 1, column 14:\ncustomer.x = "\\UFFFFFFFF"\n             ^',
        ),
        (
            "customer.x = " + "9" * 5000,
            "Number too large at line 1, column 14:\ncustomer.x = " + "9" * 5000 + "\n             ^",
        ),
    ],
)
def test_invalid_tokens(text: str, message: str) -> None:
    """Tokens that lex but make no value (bad dates, escapes, amounts, paths) point at themselves."""
    assert str(_syntax_error(text)) == message


def test_unknown_attribute_suggests_the_nearest_one() -> None:
    """With a schema, a misspelt attribute names the nearest known one."""
    with pytest.raises(UnknownAttributeError) as caught:
        validate('customer.cty = "Laval"', default_schema())
    assert str(caught.value) == "unknown attribute 'customer.cty'; did you mean 'customer.city'?"
    assert caught.value.suggestion == "customer.city"


def test_unknown_custom_attribute_suggests_the_host_one() -> None:
    """Custom attributes added by the host are suggested too."""
    schema = default_schema().add("customer", "Date de renouvellement", "date")
    with pytest.raises(UnknownAttributeError) as caught:
        compile("customer.`date de renouvelement`.month = january", schema=schema)
    assert str(caught.value) == (
        "unknown attribute 'customer.`date de renouvelement`.month'; "
        "did you mean 'customer.`Date de renouvellement`.month'?"
    )


def test_unknown_event_category() -> None:
    """A misspelt event name suggests the category."""
    with pytest.raises(UnknownAttributeError, match=r"did you mean 'appointment\.service'"):
        validate('apointment.service = "oil"', default_schema())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("customer.vehicle_year contains 5", "contains does not apply to a number: customer.vehicle_year contains 5"),
        ('customer.created_at = "soon"', '"soon" is not a date: customer.created_at = "soon"'),
        ('customer.created_at > "2025-01-01"', '"2025-01-01" is not a date: customer.created_at > "2025-01-01"'),
        ('customer.subscribed = "yes"', '"yes" is not a boolean: customer.subscribed = "yes"'),
        (
            "customer.city within last 3 days",
            "within last compares dates, and this is text: customer.city within last 3 days",
        ),
        ("customer.city.year = 2020", "year is a part of dates, and this is text: customer.city.year = 2020"),
        ("customer.vehicle_year = january", "month names compare with .month: customer.vehicle_year = january"),
        ('customer.phone = "call me"', '"call me" is not a phone number: customer.phone = "call me"'),
    ],
)
def test_type_errors_before_evaluation(text: str, message: str) -> None:
    """Type errors are found when the rule is validated, never a silent false."""
    with pytest.raises(RuleTypeError) as caught:
        validate(text)
    assert str(caught.value) == message
    with pytest.raises(RuleTypeError):
        compile(text)


def test_every_rule_error_is_a_value_error() -> None:
    """Callers may catch RuleError or ValueError for any fault in a rule."""
    for text, kind in [
        ("customer.x =", RuleSyntaxError),
        ("customer.cty = 1", UnknownAttributeError),
        ("customer.vehicle_year contains 5", RuleTypeError),
    ]:
        with pytest.raises(kind) as caught:
            validate(text, default_schema())
        assert isinstance(caught.value, RuleError)
        assert isinstance(caught.value, ValueError)
