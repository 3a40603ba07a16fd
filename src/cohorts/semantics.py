"""What each operator means on each kind of value: the one definition every backend renders.

A condition is decided once, at compile time, into a :class:`Shape`: the
positive operator, whether the condition is its negation, the *kind* of value
it compares (text, number, boolean, time, phone), whether the attribute may
hold a list, and the rule's value prepared for that kind. At a moment ``now``
the shape resolves (:func:`resolve`) into a :data:`Spec`: a test of a known
value in disjunctive normal form, whose checks are ``(symbol, constant)``
pairs with relative times and windows already resolved. The in-memory
evaluator turns specs into Python, the SQL compilers into SQL, the group
timing into the instants an answer can change, and ``explain`` into text.

Three-valued logic is defined here too (:func:`connective`, :func:`polar_fold`,
:func:`kleene`): a node is true, false or unknown; a compiler that renders
"is true" and "is false" forms asks :func:`connective` which connective an
AND or OR becomes under each polarity. An unknown value never passes a test
and never fails one.
"""

from __future__ import annotations

import calendar
import datetime as dt
import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any, Literal, TypeAlias, TypeVar

import attrs

from .ast import (
    CUSTOMER,
    FIELD_AGGREGATES,
    ORDERING,
    TEXT_OPS,
    Aggregate,
    Anchor,
    And,
    Compiled,
    Condition,
    DatePart,
    Duration,
    InGroup,
    Month,
    Node,
    Not,
    Op,
    Or,
    Path,
    Relative,
    RuleLike,
    Unit,
    Weekday,
    Window,
    WindowKind,
    bounds_reversed,
    format_value,
    walk,
)
from .errors import RuleTypeError
from .parser import MAX_LITERAL_CHARS, MAX_RULE_CHARS, parse
from .pattern import PatternError, compile_pattern
from .schema import AttributeType, Schema, default_schema
from .values import Interval, Kind, exact_decimal, fold_text, resolve_time, shift, to_phone, wide_int, window

__all__ = [
    "MONTH_DAYS",
    "NEGATIONS",
    "Check",
    "Shape",
    "Spec",
    "anniversary_test",
    "as_rule",
    "conditions",
    "connective",
    "describe_spec",
    "exact_sides",
    "exact_spec",
    "from_one",
    "kind_word",
    "kleene",
    "moment",
    "monotone",
    "passes",
    "plain_test",
    "polar_fold",
    "resolve",
    "resolve_window",
    "shape_of",
    "time_test",
    "window_op",
    "window_spec",
]

T = TypeVar("T")

# Positive operators; the negative ones are NOT of these.
NEGATIONS = {
    Op.NE: Op.EQ,
    Op.NOT_CONTAINS: Op.CONTAINS,
    Op.NOT_MATCHES: Op.MATCHES,
    Op.NOT_IN: Op.IN,
    Op.IS_UNKNOWN: Op.IS_KNOWN,
}
"""Each negative operator and the positive one it negates: ``!=`` is NOT ``=``, ``is unknown`` NOT ``is known``."""
_INVERTED = {Op.LT: Op.GT, Op.LE: Op.GE, Op.GT: Op.LT, Op.GE: Op.LE}
_TYPE_KINDS = {
    AttributeType.TEXT: Kind.TEXT,
    AttributeType.LIST: Kind.TEXT,
    AttributeType.NUMBER: Kind.NUMBER,
    AttributeType.BOOLEAN: Kind.BOOLEAN,
    AttributeType.DATE: Kind.TIME,
    AttributeType.DATETIME: Kind.TIME,
    AttributeType.PHONE: Kind.PHONE,
}
# What every event has, whether or not a schema declares its category.
_IMPLICIT: dict[object, AttributeType] = {
    "at": AttributeType.DATETIME,
    Aggregate.COUNT: AttributeType.NUMBER,
    Aggregate.FIRST_TIME: AttributeType.DATETIME,
    Aggregate.LAST_TIME: AttributeType.DATETIME,
}
_KIND_OPS = {
    Kind.TEXT: {Op.EQ, Op.IN, Op.CONTAINS, Op.STARTS_WITH, Op.ENDS_WITH, Op.MATCHES, Op.BETWEEN, *ORDERING},
    Kind.NUMBER: {Op.EQ, Op.IN, Op.BETWEEN, *ORDERING},
    Kind.BOOLEAN: {Op.EQ, Op.IN},
    Kind.TIME: {Op.EQ, Op.IN, Op.BETWEEN, Op.BEFORE, Op.AFTER, Op.WITHIN_LAST, Op.WITHIN_NEXT, *ORDERING},
    Kind.PHONE: {Op.EQ, Op.IN, Op.CONTAINS, Op.STARTS_WITH, Op.ENDS_WITH},
}


def as_rule(
    rule: RuleLike, *, max_rule_chars: int = MAX_RULE_CHARS, max_literal_chars: int = MAX_LITERAL_CHARS
) -> Node:
    """``rule`` as a tree: text is parsed (within the limits), a node is returned as is, a compiled rule
    (:class:`cohorts.Predicate`) gives its tree; anything else is a TypeError."""
    if isinstance(rule, str):
        return parse(rule, max_rule_chars=max_rule_chars, max_literal_chars=max_literal_chars)
    if isinstance(rule, Node):
        return rule
    if isinstance(rule, Compiled) and isinstance(rule.rule, Node):
        return rule.rule
    raise TypeError(f"a rule is text, a cohorts AST node or a compiled Predicate, not {type(rule).__name__}")


# -- deciding how each condition compares -----------------------------------


def _value_kind(value: object) -> Kind | None:
    if isinstance(value, bool):
        return Kind.BOOLEAN
    if isinstance(value, Month | Weekday):
        return Kind.NUMBER
    if isinstance(value, int | float):
        return Kind.NUMBER
    if isinstance(value, str):
        return Kind.TEXT
    if isinstance(value, dt.date | Relative | Anchor | Duration):
        return Kind.TIME
    return None


@attrs.frozen
class Shape:
    """What a condition reads and how: decided once, at compile time."""

    condition: Condition
    op: Op  # positive operator
    negated: bool
    kind: Kind | None  # None: is known on an untyped attribute (raw presence)
    declared: bool  # the attribute's type comes from a schema
    is_list: bool  # the attribute holds a list (or may, when untyped)
    value: Any  # the rule's value, prepared for the kind (times stay unresolved)
    where: tuple[Shape, ...] = ()  # the shapes of the where's conditions, in the order of conditions()
    # A comparison of two values of the customer (checkout.last_time > order.last_time): the readings
    # of its two sides, each the shape of ``side is known`` with the kind both are compared as.
    compared: tuple[Shape, Shape] | None = None

    def filters(self) -> dict[int, Shape]:
        """The shapes of the where's conditions, by ``id`` of the condition."""
        return {id(inner.condition): inner for inner in self.where}


def shape_of(condition: Condition, schema: Schema | None) -> Shape:
    """Decide how ``condition`` compares, once: its kind from ``schema`` (or from its value), the prepared value.

    With a schema, an attribute it lacks raises UnknownAttributeError; an operator or value that cannot
    work on the kind raises RuleTypeError.
    """
    if isinstance(condition.value, Path):
        return _comparison(condition, condition.value, schema)
    path, op = condition.path, condition.op
    negated = op in NEGATIONS
    op = NEGATIONS.get(op, op)
    aggregated = path.field is not None or path.aggregate in FIELD_AGGREGATES
    if aggregated:
        _check_field(condition)
    where = () if path.where is None else _check_where(condition, schema)
    lookup = (schema or default_schema()).lookup(path)
    if schema is not None and lookup is None:
        schema.type_of(path)  # raises UnknownAttributeError with a suggestion
    _check_names(condition)
    _check_reach(condition)
    if path.window is not None:
        _check_window(condition)
    if path.then is not None:
        _check_sequel(condition, schema)
    if aggregated:
        lookup = _field_type(condition, lookup)
    elif lookup is None and not path.is_customer:
        lookup = _IMPLICIT.get(path.aggregate or path.attribute)
    declared = lookup is not None
    is_list = (lookup is AttributeType.LIST) or (not declared and path.is_customer)
    value = condition.value

    if path.part is not None:
        if lookup not in (None, AttributeType.DATE, AttributeType.DATETIME):
            raise RuleTypeError(str(condition), f"{path.part.value} is a part of dates, and this is {lookup.value}")
        kind: Kind | None = Kind.NUMBER
        declared, is_list = True, False
        if path.part is DatePart.ANNIVERSARY and op is not Op.IS_KNOWN:
            if op not in _ANNIVERSARY_OPS:
                raise RuleTypeError(
                    str(condition),
                    f"an anniversary comes back every year: compare it with =, !=, in, between or within,"
                    f" not {condition.op.value}",
                )
            # the rule's value is days (today, this month, a date ...): checked as times
            value = _prepare(condition, op, Kind.TIME, value, None)
            items = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, Relative | Duration) and v.unit in (Unit.MINUTES, Unit.HOURS) for v in items):
                raise RuleTypeError(
                    str(condition), "an anniversary is a day: count in days, weeks, months or years, not in hours"
                )
            return Shape(condition, op, negated, kind, declared, is_list, value, where)
    elif lookup is not None:
        kind = _TYPE_KINDS[lookup]
    elif op is Op.IS_KNOWN:
        kind = None
    else:
        values = value if isinstance(value, tuple) else (value,)
        kinds = {_value_kind(v) for v in values}
        if len(kinds) > 1:
            raise RuleTypeError(str(condition), "the values mix types")
        kind = kinds.pop() if kinds else Kind.TEXT
        if kind is None:
            raise RuleTypeError(str(condition), "this value cannot be compared")
    if op in (Op.BEFORE, Op.AFTER, Op.WITHIN_LAST, Op.WITHIN_NEXT) and kind is not Kind.TIME:
        raise RuleTypeError(str(condition), f"{condition.op.value} compares dates, and this is {kind_word(kind)}")
    if kind is not None and op is not Op.IS_KNOWN:
        if op not in _KIND_OPS[kind] and not (is_list and op is Op.CONTAINS):
            raise RuleTypeError(str(condition), f"{condition.op.value} does not apply to {kind_word(kind)}")
        value = _prepare(condition, op, kind, value, path.part)
    return Shape(condition, op, negated, kind, declared, is_list, value, where)


_ANNIVERSARY_OPS = frozenset({Op.EQ, Op.IN, Op.BETWEEN, Op.WITHIN_LAST, Op.WITHIN_NEXT})

_COMPARED_OPS = {Op.EQ: Op.EQ, Op.NE: Op.EQ, Op.BEFORE: Op.LT, Op.AFTER: Op.GT, **{op: op for op in ORDERING}}
_COMPARED_KINDS = {
    AttributeType.NUMBER: Kind.NUMBER,
    AttributeType.DATE: Kind.TIME,
    AttributeType.DATETIME: Kind.TIME,
}


def _comparison(condition: Condition, other: Path, schema: Schema | None) -> Shape:
    """The shape of ``path op other``: two values of one customer, both dates or both numbers.

    Each side is one value per customer: an attribute (not a list), ``count``, ``first_time``,
    ``last_time``, or ``min``/``max`` of a field, with their windows and wheres, or a date part of an
    attribute. An undeclared attribute (or field) takes the other side's kind; when neither side's
    kind is known, the rule is refused. ``before`` and ``after`` are ``<`` and ``>`` of dates.
    """
    op = _COMPARED_OPS.get(condition.op)
    if op is None:
        raise RuleTypeError(
            str(condition), f"{condition.op.value} does not compare two values (use =, !=, <, <=, >, >=, before, after)"
        )
    left, right = (_side(condition, side, schema) for side in (condition.path, other))
    kinds = {kind for _, kind in (left, right) if kind is not None}
    if not kinds:
        raise RuleTypeError(
            str(condition),
            f"neither {condition.path} nor {other} has a declared type: declare one in the schema (a date or a number)",
        )
    if len(kinds) > 1:
        reason = f"{condition.path} is {kind_word(left[1])} and {other} is {kind_word(right[1])}"
        raise RuleTypeError(str(condition), reason)
    (kind,) = kinds
    if condition.op in (Op.BEFORE, Op.AFTER) and kind is not Kind.TIME:
        raise RuleTypeError(str(condition), f"{condition.op.value} compares dates, and these are numbers")
    sides = tuple(attrs.evolve(shape, kind=kind, declared=True, is_list=False) for shape, _ in (left, right))
    return Shape(condition, op, condition.op is Op.NE, kind, True, False, None, compared=(sides[0], sides[1]))


def exact_sides(shape: Shape) -> bool:
    """Whether a comparison of two values compares them as exact decimals: when a side is a sum, which
    is one (:func:`cohorts.values.exact_decimal`), the other is read as the decimal its text writes."""
    return shape.compared is not None and any(
        side.condition.path.aggregate is Aggregate.SUM for side in shape.compared
    )


def _side(condition: Condition, path: Path, schema: Schema | None) -> tuple[Shape, Kind | None]:
    """One side of a comparison: the shape of its reading, and its kind (None: undeclared)."""
    try:  # (first: an unknown name is told with the nearest known one)
        shape = shape_of(Condition(path, Op.IS_KNOWN), schema)
    except RuleTypeError as error:
        raise RuleTypeError(str(condition), error.reason) from None
    aggregate = path.aggregate
    if aggregate is Aggregate.AVG:
        raise RuleTypeError(str(condition), f"{path} compares with a number, not with another value")
    if not path.is_customer and aggregate is None:
        example = Path(path.category, Aggregate.LAST_TIME.value if path.attribute == "at" else Aggregate.COUNT.value)
        raise RuleTypeError(
            str(condition),
            f"{path} is a field of any of the events, not one value: compare an aggregate, such as {example}",
        )
    if path.part is not None and not path.is_customer:
        raise RuleTypeError(str(condition), f"compare the times themselves, not {path.part.value} of {path}")
    lookup = (schema or default_schema()).lookup(path)
    if path.part is not None:
        return shape, Kind.NUMBER
    if path.is_customer:
        if lookup is AttributeType.LIST:
            raise RuleTypeError(str(condition), f"{path} is a list: compare one value")
        if lookup is None:
            return shape, None
        kind = _COMPARED_KINDS.get(lookup)
        if kind is None:
            raise RuleTypeError(str(condition), f"two values compare as dates or numbers, and {path} is {lookup.value}")
        return shape, kind
    if aggregate in (Aggregate.COUNT, Aggregate.SUM):  # (a sum is an exact decimal: see exact_sides)
        return shape, Kind.NUMBER
    if aggregate in FIELD_AGGREGATES:  # min or max: the field's type, when declared
        if lookup is None:
            return shape, None
        return shape, _COMPARED_KINDS[lookup]  # (shape_of refused the other types)
    return shape, Kind.TIME


MAX_REACH_YEARS = 1000
"""How far from ``now`` a relative time or a window may reach: far enough for any rule, and short of the
calendar's ends (years 1 and 9999) from any ``now`` in between, so a rule that validates resolves."""

_UNIT_DAYS = {
    Unit.MINUTES: 1 / 1440,
    Unit.HOURS: 1 / 24,
    Unit.DAYS: 1,
    Unit.WEEKS: 7,
    Unit.MONTHS: 31,
    Unit.YEARS: 366,
}


_BAD_NAME_CHARACTERS = re.compile("[\\x00\\n\\r\\ud800-\\udfff]")
_BAD_TEXT_CHARACTERS = re.compile("[\\x00\\ud800-\\udfff]")


PLACEHOLDER_NAME = "\x00cohorts-time-condition"
"""The name of the placeholder conditions the library builds itself (:mod:`cohorts.timing`): the one name
with a NUL, so that no rule's attribute can be mistaken for it."""


def _check_names(condition: Condition) -> None:
    """Refuse names a rule's text cannot hold: empty ones, and line ends, NUL or lone surrogates in one.

    An event name is its dotted names joined, so none of them can be empty (a name with a dot inside
    reads back as two).
    """
    path = condition.path
    if path.attribute == PLACEHOLDER_NAME and path.is_customer:
        return
    names = path.category.split(".")
    if not path.is_customer and names[0].lower() == CUSTOMER:
        raise RuleTypeError(str(condition), f"an event name cannot start with {names[0]!r} (it reads as the customer)")
    for name in (*names, path.attribute):
        if not name:
            raise RuleTypeError(str(condition), f"an empty name (or a dot inside one) in {path.category!r}")
        _check_characters(condition, (name,))


def _check_characters(condition: Condition, names: Iterable[str]) -> None:
    """Refuse a name holding a line end, NUL or lone surrogate, which a rule's text cannot hold."""
    for name in names:
        if _BAD_NAME_CHARACTERS.search(name):
            raise RuleTypeError(str(condition), f"the name {name!r} holds a line end, NUL or lone surrogate")


def check_text(condition: Condition, text: str) -> None:
    """Refuse text values that databases cannot store (NUL, lone surrogates)."""
    if _BAD_TEXT_CHARACTERS.search(text):
        raise RuleTypeError(str(condition), f"{text!r} holds a NUL or a lone surrogate, which no database stores")


def _check_reach(condition: Condition) -> None:
    """Refuse relative times and windows that reach further than :data:`MAX_REACH_YEARS` from now."""
    found: list[Any] = [condition.value]
    if condition.path.window is not None:
        found.append(condition.path.window.value)
    while found:
        value = found.pop()
        if isinstance(value, tuple | list | frozenset | set):
            found.extend(value)
        elif isinstance(value, Relative | Duration) and value.amount * _UNIT_DAYS[value.unit] > MAX_REACH_YEARS * 366:
            raise RuleTypeError(
                str(condition),
                f"{value} reaches more than {MAX_REACH_YEARS:,} years from now (relative times and windows reach"
                " at most that far, so that they stay in the calendar's range, years 1 to 9999)",
            )


_NUMBER_TYPES = frozenset({AttributeType.NUMBER})
_ORDERED_TYPES = frozenset({AttributeType.NUMBER, AttributeType.DATE, AttributeType.DATETIME})


def _field_type(condition: Condition, declared: AttributeType | None) -> AttributeType | None:
    """The type of what ``sum``/``avg``/``min``/``max`` give, from the declared type of the field they read.

    ``sum`` and ``avg`` add numbers: they give a number. ``min`` and ``max`` give a value of the field's
    type, a number or a date; an undeclared field takes the kind of the rule's value. Raises
    RuleTypeError for a field of another type, a missing field, or a field given to another path.
    """
    path = condition.path
    aggregate = path.aggregate
    assert aggregate is not None
    field = f"{path.category}.{path.field}"
    if aggregate in (Aggregate.SUM, Aggregate.AVG):
        if declared is not None and declared not in _NUMBER_TYPES:
            raise RuleTypeError(str(condition), f"{aggregate.value} adds numbers, and {field} is {declared.value}")
        return AttributeType.NUMBER
    if declared is not None and declared not in _ORDERED_TYPES:
        reason = f"{aggregate.value} compares numbers or dates, and {field} is {declared.value}"
        raise RuleTypeError(str(condition), reason)
    if declared is None:
        values = condition.value if isinstance(condition.value, tuple) else (condition.value,)
        kinds = {_value_kind(v) for v in values}
        if kinds == {Kind.TIME}:
            return AttributeType.DATETIME
        if not kinds <= {Kind.NUMBER, None}:
            shown = format_value(condition.value)
            raise RuleTypeError(str(condition), f"{aggregate.value} compares numbers or dates, and {shown} is neither")
        return AttributeType.NUMBER
    return declared


def _check_field(condition: Condition) -> None:
    """Only ``sum``, ``avg``, ``min`` and ``max`` read a field, and they need one."""
    path = condition.path
    aggregate = path.aggregate
    if aggregate not in FIELD_AGGREGATES:
        bare = attrs.evolve(path, field=None)
        raise RuleTypeError(
            str(condition), f"only sum, avg, min and max read a field of the events, and {bare} is none of them"
        )
    assert aggregate is not None
    if path.field is None:
        raise RuleTypeError(str(condition), f"{path} needs the field it reads, as in {path}(total)")
    if path.part is not None:
        raise RuleTypeError(str(condition), f"{aggregate.value} gives no {path.part.value}: compare the value itself")


def _aggregate_hint(path: Path) -> str:
    """``; did you mean ...?`` when the path's attribute is a misspelt aggregate (``lst_time``), or nothing."""
    if path.is_customer:
        return ""
    close = difflib.get_close_matches(path.attribute.lower(), sorted(a.value for a in Aggregate), n=1, cutoff=0.7)
    return f" (did you mean {path.category}.{close[0]}?)" if close else ""


def _check_window(condition: Condition) -> None:
    """A window restricts an aggregate to the events of a time window; it needs times."""
    path = condition.path
    window = path.window
    assert window is not None
    if path.is_customer or path.aggregate is None:
        bare = attrs.evolve(path, window=None)
        example = Path("appointment" if path.is_customer else path.category, Aggregate.COUNT.value, window=window)
        raise RuleTypeError(
            str(condition),
            f"a window restricts an aggregate of events (count, first_time, last_time, sum, avg, min, max),"
            f" as in {example}; {bare} is not one" + _aggregate_hint(path),
        )
    if window.kind in (WindowKind.SINCE, WindowKind.BETWEEN):
        times = window.value if isinstance(window.value, tuple) else (window.value,)
        if len(times) == 2 and bounds_reversed(*times):
            raise RuleTypeError(str(condition), f"the window {window} is empty")
        for time in times:
            if isinstance(time, bool) or not isinstance(time, dt.date | Relative | Anchor):
                raise RuleTypeError(str(condition), f"a window takes times, and {format_value(time)} is not a time")


_SEQUEL_UNITS = frozenset({Unit.MINUTES, Unit.HOURS, Unit.DAYS, Unit.WEEKS})


def _check_sequel(condition: Condition, schema: Schema | None) -> None:
    """A followed by or preceded by keeps an aggregate's events by the times of other events: of a
    name the schema has, within a span of fixed length (minutes, hours, days of 24 hours, weeks)."""
    path = condition.path
    then = path.then
    assert then is not None
    if path.is_customer or path.aggregate is None:
        bare = attrs.evolve(path, then=None)
        example = Path("checkout" if path.is_customer else path.category, Aggregate.COUNT.value)
        raise RuleTypeError(
            str(condition),
            f"{then.words} keeps the events of an aggregate (count, first_time, last_time, sum, avg, min, max),"
            f" as in {example}({then}); {bare} is not one" + _aggregate_hint(path),
        )
    names = then.event.split(".")
    if then.event == CUSTOMER or names[0].lower() == CUSTOMER or not all(names):
        raise RuleTypeError(str(condition), f"{then.words} names events, and {then.event!r} is not an event name")
    _check_characters(condition, names)
    if then.within is not None and then.within.unit not in _SEQUEL_UNITS:
        raise RuleTypeError(
            str(condition),
            f"{then.words} ... within takes minutes, hours, days or weeks (a span of fixed length),"
            f" not {then.within.unit.value}",
        )
    if then.within is not None and then.within.amount * _UNIT_DAYS[then.within.unit] > MAX_REACH_YEARS * 366:
        raise RuleTypeError(str(condition), f"{then.within} reaches more than {MAX_REACH_YEARS:,} years")
    if schema is not None and schema.lookup(Path(then.event, Aggregate.COUNT.value)) is None:
        schema.type_of(Path(then.event, Aggregate.COUNT.value))  # raises UnknownAttributeError with a suggestion


def _check_where(condition: Condition, schema: Schema | None) -> tuple[Shape, ...]:
    """A where filters the events of an aggregate by the events' own fields: the shapes of its conditions.

    Each condition reads one field of the same events (no aggregate, group test or customer
    attribute) and is checked as that field's condition would be.
    """
    path = condition.path
    assert path.where is not None
    bare = attrs.evolve(path, where=None)
    if path.is_customer or path.aggregate is None:
        example = Path("order" if path.is_customer else path.category, Aggregate.COUNT.value)
        raise RuleTypeError(
            str(condition),
            f"a where filters the events of an aggregate (count, first_time, last_time, sum, avg, min, max),"
            f' as in {example}(where product = "cover"); {bare} is not one' + _aggregate_hint(path),
        )
    for node in walk(path.where):
        if isinstance(node, InGroup):
            raise RuleTypeError(str(condition), f"a where filters events by their fields: put {node} outside {bare}")
        if not isinstance(node, Condition):
            continue
        if isinstance(node.value, Path):
            raise RuleTypeError(str(condition), f"inside a where, compare a field with a value: {node} compares two")
        inner = node.path
        if inner.is_customer or inner.category != path.category:
            raise RuleTypeError(
                str(condition), f"a where reads fields of the {path.category} events, and {inner} is not one of them"
            )
        arguments = (inner.window, inner.field, inner.where, inner.then)
        if inner.aggregate is not None or any(x is not None for x in arguments):
            raise RuleTypeError(str(condition), f"aggregates do not nest: {inner} inside a where")
    return tuple(shape_of(inner, schema) for inner in conditions(path.where))


def window_spec(window: Window, now: dt.datetime, tz: dt.tzinfo) -> Spec:
    """The test an event's time passes to be in ``window`` at ``now``: the one its words have on ``at``.

    ``last N units`` is ``at within last N units``, ``next N units`` is
    ``at within next N units``, ``between X and Y`` is ``at between X and Y``
    and ``since X`` is ``NOT at before X``. Raises OverflowError or ValueError
    when a bound is out of the calendar's range.
    """
    if window.kind is WindowKind.SINCE:
        start = resolve_time(window.value, now, tz).start
        return (((">=", start),),)
    spec, _ = time_test(window_op(window)[0], window.value, now, tz)
    return spec


def window_op(window: Window) -> tuple[Op, Any]:
    """A condition on the event time that flips at the same instants as membership of ``window``.

    The same test for last, next and between; for ``since X``, ``before X``
    (its negation, which flips at the same instants).
    """
    match window.kind:
        case WindowKind.LAST:
            return Op.WITHIN_LAST, window.value
        case WindowKind.NEXT:
            return Op.WITHIN_NEXT, window.value
        case WindowKind.BETWEEN:
            return Op.BETWEEN, window.value
    return Op.BEFORE, window.value


def describe_spec(spec: Spec) -> str:
    """A window's resolved bounds as an interval: ``[a, b]``, ``[a, b)``, ``[a, ...)``."""
    if len(spec) != 1:
        return " or ".join(describe_spec((clause,)) for clause in spec)
    low, high = "(...", "...)"
    for symbol, bound in spec[0]:
        shown = bound.isoformat() if isinstance(bound, dt.datetime) else str(bound)
        if symbol in (">=", ">"):
            low = ("[" if symbol == ">=" else "(") + shown
        elif symbol in ("<=", "<"):
            high = shown + ("]" if symbol == "<=" else ")")
    return f"{low}, {high}"


def kind_word(kind: Kind | None) -> str:
    """The kind of a value in words, as error messages say it: "text", "a number", "a date" ..."""
    return {
        Kind.TEXT: "text",
        Kind.NUMBER: "a number",
        Kind.BOOLEAN: "a boolean",
        Kind.TIME: "a date",
        Kind.PHONE: "a phone number",
        None: "unknown",
    }[kind]


def _prepare(condition: Condition, op: Op, kind: Kind, value: Any, part: object) -> Any:
    """Check the rule's value against the kind and turn it into what is compared."""
    if op is Op.IN:
        if not isinstance(value, tuple):
            raise RuleTypeError(str(condition), "in takes a list")
        return tuple(_prepare_scalar(condition, kind, v, part) for v in value)
    if op is Op.BETWEEN:
        low, high = value
        if bounds_reversed(low, high):
            raise RuleTypeError(str(condition), f"between {format_value(low)} and {format_value(high)} is empty")
        return (_prepare_scalar(condition, kind, low, part), _prepare_scalar(condition, kind, high, part))
    if op in (Op.WITHIN_LAST, Op.WITHIN_NEXT):
        return value
    if isinstance(value, tuple):
        raise RuleTypeError(str(condition), f"{op.value} takes one value, not a list")
    if op is Op.MATCHES:
        if not isinstance(value, str):
            raise RuleTypeError(str(condition), f"matches takes a pattern in quotes, not {format_value(value)}")
        try:
            return compile_pattern(value)
        except PatternError as error:
            raise RuleTypeError(
                str(condition), f"not a pattern: {error.message} (at character {error.offset + 1} of the pattern)"
            ) from None
    if op in TEXT_OPS and kind is Kind.PHONE:  # part of a number: digits, not a whole phone number
        digits = "".join(ch for ch in str(value) if ch.isdigit() or ch == "+")
        if not digits or isinstance(value, bool):
            raise RuleTypeError(str(condition), f"{format_value(value)} is not part of a phone number")
        return digits
    return _prepare_scalar(condition, kind, value, part)


def _mismatch(condition: Condition, kind: Kind, value: Any) -> RuleTypeError:
    """The error for a rule value of the wrong kind; built only when raised, as ``str(condition)``
    costs the rule's length and values are checked one by one (``in`` lists)."""
    return RuleTypeError(str(condition), f"{format_value(value)} is not {kind_word(kind)}")


def _prepare_scalar(condition: Condition, kind: Kind, value: Any, part: object) -> Any:
    match kind:
        case Kind.TEXT:
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise _mismatch(condition, kind, value)
            if isinstance(value, str):
                check_text(condition, value)
            folded = fold_text(value)
            if folded is None:
                raise RuleTypeError(str(condition), 'blank text matches nothing; use "is unknown"')
            return folded
        case Kind.NUMBER:
            if isinstance(value, Month) and getattr(part, "value", None) != "month":
                raise RuleTypeError(str(condition), "month names compare with .month")
            if isinstance(value, Weekday) and getattr(part, "value", None) != "weekday":
                raise RuleTypeError(str(condition), "day names compare with .weekday")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _mismatch(condition, kind, value)
            if isinstance(value, Month | Weekday):
                return int(value)
            return _rule_number(condition, value)
        case Kind.BOOLEAN:
            if not isinstance(value, bool):
                raise _mismatch(condition, kind, value)
            return value
        case Kind.TIME:
            if not isinstance(value, dt.date | Relative | Anchor):
                raise _mismatch(condition, kind, value)
            return value
        case Kind.PHONE:
            phone = to_phone(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
            if phone is None:
                raise _mismatch(condition, kind, value)
            return phone
    raise AssertionError(kind)


def _rule_number(condition: Condition, value: int | float) -> int | float:
    """A rule's number as stored numbers are read: an integer beyond 64 bits is the nearest float."""
    if isinstance(value, float):
        return value
    number = wide_int(value)
    if number is None:
        raise RuleTypeError(str(condition), f"{format_value(value)} is too large to be a number")
    return number


def conditions(node: Node) -> Iterator[Condition]:
    """Every condition of the rule under ``node``, however deep (without recursion)."""
    stack = [node]
    while stack:
        current = stack.pop()
        match current:
            case Condition():
                yield current
            case And(items) | Or(items):
                stack.extend(items)
            case Not(operand):
                stack.append(operand)


# A test of a known value, in disjunctive normal form: any clause whose checks all
# hold. A check is (symbol, constant); ``has`` is "constant in value".
Check: TypeAlias = tuple[str, Any]
"""One check of a known value: a symbol (``==``, ``<``, ``<=``, ``>``, ``>=``, ``in``, ``has``, ``starts``,
``ends``) and the constant it compares with; ``has`` is "the constant is in the value"."""
Spec: TypeAlias = tuple[tuple[Check, ...], ...]
"""A test of a known value in disjunctive normal form: it passes when all the checks of any one clause hold."""


def time_test(op: Op, value: Any, now: dt.datetime, tz: dt.tzinfo) -> tuple[Spec, Any]:
    """The test of a time for ``op`` and the rule's ``value`` at ``now``, and the resolved interval(s) it uses.

    With ``=`` and ``in`` a date means any instant of that day in ``tz``; ``< N days ago`` means "more
    recent than N days ago".
    """
    if op is Op.EQ:
        iv = resolve_time(value, now, tz, as_day=True)
        return (_time_eq(iv),), iv
    if op is Op.IN:
        ivs = [resolve_time(v, now, tz, as_day=True) for v in value]
        return tuple(_time_eq(iv) for iv in ivs), ivs
    if op in ORDERING:
        if isinstance(value, Relative) and value.ago:
            op = _INVERTED[op]
        iv = resolve_time(value, now, tz)
        return (_time_order(op, iv),), iv
    if op is Op.BEFORE:
        iv = resolve_time(value, now, tz)
        return (_time_order(Op.LT, iv),), iv
    if op is Op.AFTER:
        iv = resolve_time(value, now, tz)
        return (_time_order(Op.GT, iv),), iv
    if op is Op.BETWEEN:
        a, b = (resolve_time(v, now, tz) for v in value)
        low, high = (a, b) if a.start <= b.start else (b, a)
        upper: Check = ("<", high.end) if high.end is not None else ("<=", high.start)
        return ((((">=", low.start), upper)),), (low, high)
    if op in (Op.WITHIN_LAST, Op.WITHIN_NEXT):
        first, last = window(value, now, tz, last=op is Op.WITHIN_LAST)
        return (((">=", first), ("<=", last)),), (Interval(first), Interval(last))
    raise AssertionError(op)


def _time_eq(iv: Interval) -> tuple[Check, ...]:
    if iv.end is None:
        return (("==", iv.start),)
    return ((">=", iv.start), ("<", iv.end))


def _time_order(op: Op, iv: Interval) -> tuple[Check, ...]:
    start, end = iv.start, iv.end
    match op:
        case Op.LT:
            return (("<", start),)
        case Op.GE:
            return ((">=", start),)
        case Op.LE:
            return (("<", end),) if end is not None else (("<=", start),)
        case Op.GT:
            return ((">=", end),) if end is not None else ((">", start),)
    raise AssertionError(op)


_PLAIN_SYMBOLS = {
    Op.EQ: "==",
    Op.LT: "<",
    Op.LE: "<=",
    Op.GT: ">",
    Op.GE: ">=",
    Op.CONTAINS: "has",
    Op.STARTS_WITH: "starts",
    Op.ENDS_WITH: "ends",
    Op.MATCHES: "matches",
}


def plain_test(op: Op, value: Any) -> Spec:
    """The test of a value that is no time (text, number, boolean, phone) for the positive ``op``."""
    if op is Op.IN:
        return ((("in", frozenset(value)),),)
    if op is Op.BETWEEN:
        low, high = sorted(value)
        return (((">=", low), ("<=", high)),)
    return (((_PLAIN_SYMBOLS[op], value),),)


def resolve(shape: Shape, now: dt.datetime, tz: dt.tzinfo) -> tuple[Spec, Any]:
    """The condition's test at ``now`` and the value it compares to, resolved (for explanations).

    ``is known`` passes every known value. ``contains`` on a list of numbers,
    booleans or times is "has an element equal to". A relative time out of the
    calendar's range at ``now`` is a RuleTypeError saying so.
    """
    op, kind = shape.op, shape.kind
    if op is Op.IS_KNOWN:
        return ((),), None
    if shape.condition.path.part is DatePart.ANNIVERSARY:
        try:
            return anniversary_test(op, shape.value, now, tz)
        except (OverflowError, ValueError):
            raise RuleTypeError(str(shape.condition), f"the time is out of range at {now.isoformat()}") from None
    if kind is Kind.TIME:
        try:
            return time_test(Op.EQ if op is Op.CONTAINS else op, shape.value, now, tz)
        except (OverflowError, ValueError):
            raise RuleTypeError(str(shape.condition), f"the time is out of range at {now.isoformat()}") from None
    equality = op is Op.CONTAINS and kind is not Kind.TEXT and kind is not Kind.PHONE
    return plain_test(Op.EQ if equality else op, shape.value), shape.value


def anniversary_test(op: Op, value: Any, now: dt.datetime, tz: dt.tzinfo) -> tuple[Spec, Any]:
    """The test of an anniversary (a :class:`~cohorts.values.MonthDay`) for ``op`` and the rule's value at
    ``now``, and the days it stands for, as ``(first, last)`` dates.

    An anniversary passes when it falls on one of the days: ``= today`` is today, ``= this month`` any
    day of this month, ``within next 7 days`` today and the 7 days after it, ``within last 7 days`` the
    7 days before today and today, ``between X and Y`` the days from X's to Y's. February 29 falls on
    February 28 in the years without one. The test is ranges of month-day numbers, which every backend
    compares as it compares numbers.
    """
    spans: list[tuple[dt.date, dt.date]] = []
    today = now.astimezone(tz).date()
    match op:
        case Op.EQ:
            spans.append(_days(value, now, tz))
        case Op.IN:
            spans.extend(_days(item, now, tz) for item in value)
        case Op.BETWEEN:  # (bounds in either order, as between takes times)
            low, high = sorted((_days(value[0], now, tz), _days(value[1], now, tz)))
            spans.append((low[0], max(low[1], high[1])))
        case Op.WITHIN_NEXT:
            spans.append((today, shift(now, value.amount, value.unit, tz).astimezone(tz).date()))
        case Op.WITHIN_LAST:
            spans.append((shift(now, -value.amount, value.unit, tz).astimezone(tz).date(), today))
        case _:
            raise AssertionError(op)
    codes: set[int] = set()
    for first, last in spans:
        if (last - first).days >= 365:
            codes.update(MONTH_DAYS)  # a year of days holds every anniversary
            continue
        day = first
        while day <= last:
            codes.add(day.month * 100 + day.day)
            if (day.month, day.day) == (2, 28) and not calendar.isleap(day.year):
                codes.add(229)
            day += dt.timedelta(days=1)
    clauses: list[tuple[Check, ...]] = []
    run: list[int] = []
    for code in [*MONTH_DAYS, 0]:  # runs of consecutive days, each a range of codes
        if code in codes:
            run.append(code)
            continue
        if run:
            clauses.append(((">=", run[0]), ("<=", run[-1])) if len(run) > 1 else (("==", run[0]),))
            run = []
    return tuple(clauses), spans[0] if len(spans) == 1 else spans


def _days(value: Any, now: dt.datetime, tz: dt.tzinfo) -> tuple[dt.date, dt.date]:
    """The first and last day a rule's time value covers at ``now`` (in ``tz``)."""
    iv = resolve_time(value, now, tz, as_day=True)
    first = iv.start.astimezone(tz).date()
    last = first if iv.end is None else (iv.end - dt.timedelta(microseconds=1)).astimezone(tz).date()
    return first, last


MONTH_DAYS = tuple(
    day.month * 100 + day.day for day in (dt.date(2000, 1, 1) + dt.timedelta(days=n) for n in range(366))
)
"""Every month-day number (``month * 100 + day``) of a leap year, in calendar order: every anniversary."""


def element_spec(shape: Shape, spec: Spec) -> Spec:
    """The test of a list's elements: ``contains`` on a list of text is "has an element equal to"."""
    if shape.op is Op.CONTAINS and shape.kind is Kind.TEXT:
        return ((("==", shape.value),),)
    return spec


def exact_spec(spec: Spec) -> Spec:
    """``spec`` with its numbers as exact decimals (:func:`cohorts.values.exact_decimal`): the test of a sum
    or an average, which are compared as decimals (``0.1 + 0.2 = 0.3`` holds), not as floats."""

    def exact(value: Any) -> Any:
        if isinstance(value, frozenset):
            return frozenset(exact(v) for v in value)
        return exact_decimal(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    return tuple(tuple((symbol, exact(value)) for symbol, value in clause) for clause in spec)


def resolve_window(shape: Shape, now: dt.datetime, tz: dt.tzinfo) -> Spec | None:
    """The test of an event time in the window of a count at ``now`` (None: the count has no window)."""
    path_window = shape.condition.path.window
    if path_window is None:
        return None
    try:
        return window_spec(path_window, now, tz)
    except (OverflowError, ValueError):
        raise RuleTypeError(str(shape.condition), f"the window is out of range at {now.isoformat()}") from None


_CHECKS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda v, k: bool(v == k),
    "<": lambda v, k: bool(v < k),
    "<=": lambda v, k: bool(v <= k),
    ">": lambda v, k: bool(v > k),
    ">=": lambda v, k: bool(v >= k),
    "in": lambda v, k: v in k,
    "has": lambda v, k: k in v,
    "starts": lambda v, k: bool(v.startswith(k)),
    "ends": lambda v, k: bool(v.endswith(k)),
    "matches": lambda v, k: bool(k.search(v)),
}


def passes(spec: Spec, value: Any) -> bool:
    """Whether the known ``value`` passes ``spec`` (the meaning the backends render).

    Example:
        >>> passes(plain_test(Op.BETWEEN, (1, 3)), 2), passes(plain_test(Op.IN, (1, 3)), 2)
        (True, False)
    """
    return any(all(_CHECKS[symbol](value, constant) for symbol, constant in clause) for clause in spec)


def monotone(spec: Spec) -> Literal["up", "down"] | None:
    """Whether passing ``spec`` is kept by larger values ("up") or by smaller ones ("down").

    Only lower bounds (``>``, ``>=``) are "up" and only upper bounds "down": then
    the latest (earliest) of some values passes exactly when one of them does,
    which lets ``last_time``/``first_time`` and ``count >= 1`` be read as "some
    event passes" instead of an aggregate. None for every other test.

    Example:
        >>> monotone(plain_test(Op.GT, 3)), monotone(plain_test(Op.BETWEEN, (1, 3))), monotone(plain_test(Op.LE, 1))
        ('up', None, 'down')
    """
    symbols = {symbol for clause in spec for symbol, _ in clause}
    if not symbols or not all(clause for clause in spec):
        return None
    if symbols <= {">", ">="}:
        return "up"
    if symbols <= {"<", "<="}:
        return "down"
    return None


def from_one(spec: Spec) -> bool | None:
    """Whether every count from 1 on passes ``spec``, or none does; None when that depends on the count.

    Then a count condition is "some event" or "no event", with no counting.

    Example:
        >>> from_one(plain_test(Op.GE, 1)), from_one(plain_test(Op.EQ, 0)), from_one(plain_test(Op.GE, 2))
        (True, False, None)
    """
    direction = monotone(spec)
    if direction == "up" and passes(spec, 1):
        return True
    if direction == "down" and not passes(spec, 1):
        return False

    def below_one(check: Check) -> bool:
        symbol, value = check
        if symbol not in ("==", "in"):
            return False
        values = value if symbol == "in" else (value,)
        return all(isinstance(v, int | float | Decimal) and not isinstance(v, bool) and v < 1 for v in values)

    if spec and all(any(below_one(check) for check in clause) for clause in spec):
        return False  # every clause asks for a count under 1
    return None


def moment(now: dt.datetime | None, tz: dt.tzinfo) -> dt.datetime:
    """``now`` as an aware datetime (naive ones are in ``tz``); the current time when None."""
    if now is None:
        return dt.datetime.now(dt.UTC)
    if not isinstance(now, dt.datetime):
        raise TypeError(f"now is a datetime, not {type(now).__name__}")
    return now if now.tzinfo is not None else now.replace(tzinfo=tz)


# -- three-valued logic ---------------------------------------------------------------

Connective: TypeAlias = Literal["and", "or"]


def connective(node: And | Or, holds: bool) -> Connective:
    """The connective of ``node``'s items in its "is true" (``holds``) or "is false" form.

    AND is true when every item is true and false when any is false; OR the reverse.
    """
    return "and" if isinstance(node, And) == holds else "or"


def kleene(node: Node, results: Sequence[bool | None]) -> bool | None:
    """The truth value of an AND, OR or NOT from its items' values (None: unknown)."""
    if isinstance(node, Not):
        (result,) = results
        return None if result is None else not result
    decisive = isinstance(node, Or)  # True decides an OR, False an AND
    if decisive in results:
        return decisive
    return None if None in results else not decisive


def polar_fold(
    root: Node,
    holds: bool,
    leaf: Callable[[Condition | InGroup, bool], T],
    join: Callable[[Connective, list[T]], T],
) -> T:
    """Render the "is true" (``holds``) or "is false" form of a rule, without recursion.

    NOT flips the polarity of its operand; AND and OR join their items'
    forms with :func:`connective`; ``leaf(node, holds)`` renders a condition
    or group test in its polarity. Nested groups that join with the same
    connective (and groups of one item) are flattened into their parent, so
    a chain of NOTs or of one-item groups renders as flat as the rule means.
    """
    out: list[T] = []  # rendered forms, in order
    stack: list[tuple[Node, bool] | tuple[Connective, int]] = [(root, holds)]
    while stack:
        top = stack.pop()
        if isinstance(top[0], str):  # a group's items are rendered: join them
            joined, count = top
            assert isinstance(count, int)
            parts = out[len(out) - count :]
            del out[len(out) - count :]
            out.append(join(joined, parts))
            continue
        node, positive = top
        assert isinstance(node, Node) and isinstance(positive, bool)
        node, positive = _unwrap(node, positive)
        if isinstance(node, Condition | InGroup):
            out.append(leaf(node, positive))
            continue
        if not isinstance(node, And | Or):
            raise TypeError(f"not a rule node: {node!r}")
        joined = connective(node, positive)
        items = _flat_items(node, positive, joined)
        stack.append((joined, len(items)))
        stack.extend(reversed(items))
    (result,) = out
    return result


def _unwrap(node: Node, positive: bool) -> tuple[Node, bool]:
    """``node`` without the NOTs and one-item groups around what it means, and its polarity."""
    while True:
        if isinstance(node, Not):
            node, positive = node.operand, not positive
        elif isinstance(node, And | Or) and len(node.items) == 1:
            node = node.items[0]
        else:
            return node, positive


def _flat_items(node: And | Or, positive: bool, joined: Connective) -> list[tuple[Node, bool]]:
    """The items of a group with their polarities, with nested groups of the same connective spliced in."""
    items: list[tuple[Node, bool]] = []
    stack = [(item, positive) for item in reversed(node.items)]
    while stack:
        item, polarity = _unwrap(*stack.pop())
        if isinstance(item, And | Or) and connective(item, polarity) == joined:
            stack.extend((inner, polarity) for inner in reversed(item.items))
        else:
            items.append((item, polarity))
    return items


def all_conditions(nodes: Iterable[Node]) -> Iterator[Condition]:
    """The conditions of several rules."""
    for node in nodes:
        yield from conditions(node)
