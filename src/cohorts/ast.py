"""The rule AST: frozen attrs values whose ``str()`` is the canonical rule text.

Every node compares by value and ignores where it came from in the source, so
``parse(str(rule)) == rule`` holds for every rule.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import math
import re
from collections.abc import Iterable, Iterator
from typing import Any, TypeAlias

import attrs

__all__ = [
    "AGGREGATES",
    "DATE_PARTS",
    "Aggregate",
    "Anchor",
    "And",
    "Condition",
    "DatePart",
    "Duration",
    "InGroup",
    "Month",
    "Node",
    "Not",
    "Op",
    "Or",
    "Path",
    "Relative",
    "Rule",
    "Scalar",
    "Span",
    "Unit",
    "Value",
    "Weekday",
    "walk",
]


@attrs.frozen
class Span:
    """Where a node sits in the rule text (1-based line and column, 0-based offsets)."""

    line: int
    column: int
    start: int
    end: int


class Unit(enum.Enum):
    """A unit of time. Months and years are calendar units (dateutil's relativedelta)."""

    MINUTES = "minutes"
    HOURS = "hours"
    DAYS = "days"
    WEEKS = "weeks"
    MONTHS = "months"
    YEARS = "years"

    @classmethod
    def from_word(cls, word: str) -> Unit:
        """Read ``day``, ``Days``, ``months`` ... as a unit."""
        word = word.lower()
        return cls(word if word.endswith("s") else word + "s")

    def word(self, amount: int) -> str:
        """The unit's word, singular for one."""
        return self.value[:-1] if amount == 1 else self.value


class Anchor(enum.Enum):
    """A named point in time, resolved against the evaluation's ``now``."""

    NOW = "now"
    TODAY = "today"
    YESTERDAY = "yesterday"
    TOMORROW = "tomorrow"

    def __str__(self) -> str:
        return self.value


class Month(enum.IntEnum):
    """A month name, equal to its number, for comparisons with ``.month``."""

    JANUARY = 1
    FEBRUARY = 2
    MARCH = 3
    APRIL = 4
    MAY = 5
    JUNE = 6
    JULY = 7
    AUGUST = 8
    SEPTEMBER = 9
    OCTOBER = 10
    NOVEMBER = 11
    DECEMBER = 12

    def __str__(self) -> str:
        return self.name.lower()


class Weekday(enum.IntEnum):
    """A day name, equal to its ISO number (Monday is 1), for ``.weekday``."""

    MONDAY = 1
    TUESDAY = 2
    WEDNESDAY = 3
    THURSDAY = 4
    FRIDAY = 5
    SATURDAY = 6
    SUNDAY = 7

    def __str__(self) -> str:
        return self.name.lower()


@attrs.frozen
class Relative:
    """``N units ago`` (``ago=True``) or ``in N units`` (``ago=False``)."""

    amount: int
    unit: Unit
    ago: bool = True

    def __str__(self) -> str:
        text = f"{self.amount} {self.unit.word(self.amount)}"
        return f"{text} ago" if self.ago else f"in {text}"


@attrs.frozen
class Duration:
    """A span of time, as in ``within last 30 days``."""

    amount: int
    unit: Unit

    def __str__(self) -> str:
        return f"{self.amount} {self.unit.word(self.amount)}"


Scalar: TypeAlias = (
    str | int | float | bool | dt.date | dt.datetime | Relative | Anchor | Month | Weekday
)
Value: TypeAlias = Scalar | tuple[Scalar, ...] | Duration | None


class Op(enum.Enum):
    """A condition's operator; the value is its canonical spelling."""

    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    CONTAINS = "contains"
    NOT_CONTAINS = "does not contain"
    STARTS_WITH = "starts with"
    ENDS_WITH = "ends with"
    IN = "in"
    NOT_IN = "not in"
    BETWEEN = "between"
    BEFORE = "before"
    AFTER = "after"
    WITHIN_LAST = "within last"
    WITHIN_NEXT = "within next"
    IS_KNOWN = "is known"
    IS_UNKNOWN = "is unknown"


ORDERING = frozenset({Op.LT, Op.LE, Op.GT, Op.GE})
TEXT_OPS = frozenset({Op.CONTAINS, Op.NOT_CONTAINS, Op.STARTS_WITH, Op.ENDS_WITH})
TIME_OPS = frozenset({Op.BEFORE, Op.AFTER, Op.WITHIN_LAST, Op.WITHIN_NEXT})
NO_VALUE = frozenset({Op.IS_KNOWN, Op.IS_UNKNOWN})


class Aggregate(enum.Enum):
    """What a path can ask of all of a customer's events of one name."""

    COUNT = "count"
    FIRST_TIME = "first_time"
    LAST_TIME = "last_time"


class DatePart(enum.Enum):
    """A part of a date, read in the evaluation's time zone."""

    YEAR = "year"
    MONTH = "month"
    DAY = "day"
    WEEKDAY = "weekday"


AGGREGATES = frozenset(a.value for a in Aggregate)
DATE_PARTS = frozenset(p.value for p in DatePart)
CUSTOMER = "customer"
EVENT_TIME = "at"

_BARE_NAME = re.compile(r"[^\W\d]\w*\Z")


def _quote_name(name: str) -> str:
    if _BARE_NAME.match(name):
        return name
    return "`" + name.replace("`", "``") + "`"


def _category(name: str) -> str:
    return CUSTOMER if name.lower() == CUSTOMER else name


@attrs.frozen
class Path:
    """What a condition looks at.

    ``category`` is ``"customer"`` or an event name (which may be dotted, as in
    ``repair_order.closed``); ``attribute`` is a field of it, or for events an
    aggregate (``count``, ``first_time``, ``last_time``); ``part`` picks a part
    of a date. ``Path.of("customer.created_at.year")`` reads dotted text.
    """

    category: str = attrs.field(converter=_category)
    attribute: str
    part: DatePart | None = None

    @classmethod
    def of(cls, segments: str | Iterable[str], *, last_is_quoted: bool = False) -> Path:
        """Read a path from its dot-separated names (no backquotes).

        The first name ``customer`` means the customer's own attributes;
        anything else is an event name, extended with the following names up
        to the attribute. A last name that is a date part is the part.

        Example:
            >>> Path.of("repair_order.closed.last_time")
            Path(category='repair_order.closed', attribute='last_time', part=None)
        """
        names = segments.split(".") if isinstance(segments, str) else list(segments)
        if len(names) < 2:
            raise ValueError(f"a path needs a category and an attribute, not {names!r}")
        part = None
        if len(names) > 2 and not last_is_quoted and names[-1].lower() in DATE_PARTS:
            part = DatePart(names.pop().lower())
        if names[0].lower() == CUSTOMER:
            if len(names) != 2:
                raise ValueError(f"customer paths name one attribute: {'.'.join(names)!r}")
            return cls(CUSTOMER, names[1], part)
        return cls(".".join(names[:-1]), names[-1], part)

    @property
    def is_customer(self) -> bool:
        """True for the customer's own attributes."""
        return self.category == CUSTOMER

    @property
    def aggregate(self) -> Aggregate | None:
        """The aggregate an event path asks for, if any."""
        if self.is_customer or self.attribute not in AGGREGATES:
            return None
        return Aggregate(self.attribute)

    def __str__(self) -> str:
        text = ".".join(_quote_name(n) for n in self.category.split("."))
        if not self.is_customer and self.attribute.lower() in DATE_PARTS:
            text += f".`{self.attribute}`"  # never read back as a date part
        else:
            text += "." + _quote_name(self.attribute)
        return f"{text}.{self.part.value}" if self.part else text


class Node:
    """Base class of the rule AST."""

    __slots__ = ()


def _span_field() -> Any:
    return attrs.field(default=None, eq=False, repr=False, kw_only=True)


def _format_scalar(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote_string(value)
    if isinstance(value, enum.IntEnum):  # Month, Weekday
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"rules cannot hold {value!r}")
        return repr(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _quote_string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 or 0xD800 <= ord(char) < 0xE000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def format_value(value: Value) -> str:
    """The canonical text of a condition value."""
    if isinstance(value, tuple):
        return "[" + ", ".join(_format_scalar(v) for v in value) + "]"
    if isinstance(value, Duration):
        return str(value)
    if value is None:
        return ""
    return _format_scalar(value)


def _as_value(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


@attrs.frozen
class Condition(Node):
    """``path op value``: one test of one attribute.

    ``value`` is a scalar, a tuple for ``in``/``not in``, a pair for
    ``between``, a ``Duration`` for ``within``, and ``None`` for
    ``is known``/``is unknown``.
    """

    path: Path
    op: Op
    value: Value = attrs.field(default=None, converter=_as_value)
    span: Span | None = _span_field()

    def __str__(self) -> str:
        match self.op:
            case Op.IS_KNOWN | Op.IS_UNKNOWN:
                return f"{self.path} {self.op.value}"
            case Op.BETWEEN:
                assert isinstance(self.value, tuple)
                low, high = self.value
                return f"{self.path} between {_format_scalar(low)} and {_format_scalar(high)}"
            case _:
                return f"{self.path} {self.op.value} {format_value(self.value)}"


@attrs.frozen
class InGroup(Node):
    """``customer in group "NAME"``, or with ``negated``, ``not in group``."""

    group: str
    negated: bool = False
    span: Span | None = _span_field()

    def __str__(self) -> str:
        word = "not in" if self.negated else "in"
        return f"customer {word} group {_quote_string(self.group)}"


def _flatten_and(items: Iterable[Node]) -> tuple[Node, ...]:
    return tuple(itertools.chain.from_iterable(i.items if type(i) is And else (i,) for i in items))


def _flatten_or(items: Iterable[Node]) -> tuple[Node, ...]:
    return tuple(itertools.chain.from_iterable(i.items if type(i) is Or else (i,) for i in items))


def _at_least_two(instance: Node, attribute: attrs.Attribute[tuple[Node, ...]], value: tuple[Node, ...]) -> None:
    if len(value) < 2:
        raise ValueError(f"{type(instance).__name__} needs at least two items, got {len(value)}")


@attrs.frozen
class And(Node):
    """True when every item is true (n-ary; nested ``And`` items are flattened)."""

    items: tuple[Node, ...] = attrs.field(
        converter=_flatten_and,
        validator=_at_least_two,
    )
    span: Span | None = _span_field()

    def __str__(self) -> str:
        return " AND ".join(f"({item})" if isinstance(item, Or) else str(item) for item in self.items)


@attrs.frozen
class Or(Node):
    """True when any item is true (n-ary; nested ``Or`` items are flattened)."""

    items: tuple[Node, ...] = attrs.field(
        converter=_flatten_or,
        validator=_at_least_two,
    )
    span: Span | None = _span_field()

    def __str__(self) -> str:
        return " OR ".join(str(item) for item in self.items)


@attrs.frozen
class Not(Node):
    """True when the operand is false; unknown stays unknown."""

    operand: Node
    span: Span | None = _span_field()

    def __str__(self) -> str:
        if isinstance(self.operand, And | Or):
            return f"NOT ({self.operand})"
        return f"NOT {self.operand}"


Rule: TypeAlias = Node


def walk(rule: Node) -> Iterator[Node]:
    """Every node of ``rule``, parents before children, without recursion."""
    stack = [rule]
    while stack:
        node = stack.pop()
        yield node
        match node:
            case And(items) | Or(items):
                stack.extend(reversed(items))
            case Not(operand):
                stack.append(operand)
