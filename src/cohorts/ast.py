"""The rule AST: frozen attrs values whose ``str()`` is the canonical rule text.

Every node compares by value and ignores where it came from in the source, so
``parse(str(rule)) == rule`` holds for every rule.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import itertools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeAlias, TypeVar, overload, runtime_checkable

import attrs

__all__ = [
    "AGGREGATES",
    "DATE_PARTS",
    "FIELD_AGGREGATES",
    "Aggregate",
    "Anchor",
    "And",
    "Compiled",
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
    "RuleLike",
    "Scalar",
    "Sequel",
    "Span",
    "Unit",
    "Value",
    "Weekday",
    "Window",
    "WindowKind",
    "abbreviate",
    "abbreviations",
    "children",
    "fold",
    "transform",
    "walk",
]

T = TypeVar("T")
N = TypeVar("N")


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
    THIS_MONTH = "this month"
    LAST_MONTH = "last month"
    NEXT_MONTH = "next month"

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

    def delta(self) -> dt.timedelta:
        """The span as a fixed length: minutes, hours, days of 24 hours, weeks of 7 (not months or years).

        Example:
            >>> Duration(2, Unit.DAYS).delta()
            datetime.timedelta(days=2)
        """
        seconds = {Unit.MINUTES: 60, Unit.HOURS: 3600, Unit.DAYS: 86400, Unit.WEEKS: 604800}.get(self.unit)
        if seconds is None:
            raise ValueError(f"{self} has no fixed length")
        return dt.timedelta(seconds=self.amount * seconds)


Scalar: TypeAlias = (
    str | int | float | bool | dt.date | dt.datetime | Relative | Anchor | Month | Weekday
)
Value: TypeAlias = "Scalar | tuple[Scalar, ...] | Duration | Path | None"
"""What a condition compares with: a scalar, a list, a duration, or another path of the same customer."""


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
    MATCHES = "matches"
    NOT_MATCHES = "does not match"
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
TEXT_OPS = frozenset({Op.CONTAINS, Op.NOT_CONTAINS, Op.STARTS_WITH, Op.ENDS_WITH, Op.MATCHES, Op.NOT_MATCHES})
TIME_OPS = frozenset({Op.BEFORE, Op.AFTER, Op.WITHIN_LAST, Op.WITHIN_NEXT})
NO_VALUE = frozenset({Op.IS_KNOWN, Op.IS_UNKNOWN})


class Aggregate(enum.Enum):
    """What a path can ask of all of a customer's events of one name."""

    COUNT = "count"
    FIRST_TIME = "first_time"
    LAST_TIME = "last_time"
    SUM = "sum"
    AVG = "avg"
    MIN = "min"
    MAX = "max"


FIELD_AGGREGATES = frozenset({Aggregate.SUM, Aggregate.AVG, Aggregate.MIN, Aggregate.MAX})
"""The aggregates of one field of the events (``invoice.sum(total)``); the others read the events themselves."""


class DatePart(enum.Enum):
    """A part of a date, read in the evaluation's time zone.

    ``ANNIVERSARY`` is the date's month and day, which come back every year
    (``customer.birthday.anniversary within next 7 days``).
    """

    YEAR = "year"
    MONTH = "month"
    DAY = "day"
    WEEKDAY = "weekday"
    ANNIVERSARY = "anniversary"


AGGREGATES = frozenset(a.value for a in Aggregate)
DATE_PARTS = frozenset(p.value for p in DatePart)
CUSTOMER = "customer"
EVENT_TIME = "at"

_BARE_NAME = re.compile(r"[^\W\d]\w*\Z")


def _quote_name(name: str) -> str:
    if _BARE_NAME.match(name):
        return name
    return "`" + name.replace("`", "``") + "`"


# The words that open a window: a field spelled like one is quoted where a window could start.
_WINDOW_WORDS = frozenset({"last", "next", "since", "between", "where", "followed", "preceded", "not"})


def _quote_argument(name: str) -> str:
    return f"`{name}`" if name.lower() in _WINDOW_WORDS else _quote_name(name)


# The names a where quotes, since they would read as a keyword or an aggregate there.
_WHERE_QUOTED = frozenset({"not", "where"}) | frozenset(a.value for a in Aggregate)


def _category(name: str) -> str:
    return CUSTOMER if name.lower() == CUSTOMER else name


def _event_text(name: str) -> str:
    """An event name as a rule writes it: each dotted name quoted where it must be."""
    first, *rest = name.split(".")
    return ".".join([f"`{first}`" if first.lower() == "not" else _quote_name(first), *map(_quote_name, rest)])


@attrs.frozen
class Sequel:
    """Which of an aggregate's events another event follows or precedes: an aggregate argument.

    ``followed by order.placed within 1 hour`` keeps the events that an ``order.placed`` event comes
    after, at most an hour later (strictly later: not at the same instant); without ``within``, any
    time later. ``preceded`` looks before instead, and ``negated`` keeps the events without one.

    Example:
        >>> str(Sequel("order.placed", Duration(1, Unit.HOURS), negated=True))
        'not followed by order.placed within 1 hour'
    """

    event: str = attrs.field(converter=_category)
    within: Duration | None = None
    preceded: bool = attrs.field(default=False, kw_only=True)
    negated: bool = attrs.field(default=False, kw_only=True)

    @property
    def words(self) -> str:
        """How it starts: ``followed by``, ``not followed by``, ``preceded by`` or ``not preceded by``."""
        return ("not " if self.negated else "") + ("preceded by" if self.preceded else "followed by")

    def __str__(self) -> str:
        within = "" if self.within is None else f" within {self.within}"
        return f"{self.words} {_event_text(self.event)}{within}"


@attrs.frozen
class Path:
    """What a condition looks at.

    ``category`` is ``"customer"`` or an event name (which may be dotted, as in
    ``repair_order.closed``); ``attribute`` is a field of it, or for events an
    aggregate (``count``, ``first_time``, ``last_time``); ``part`` picks a part
    of a date; ``window`` restricts an aggregate to the events of a time window
    (``appointment.count(last 90 days)``); ``field`` is the field of the events
    that ``sum``, ``avg``, ``min`` and ``max`` aggregate (``invoice.sum(total)``).
    ``where`` keeps only the events it is true for: a rule whose conditions' paths
    are fields of the same events (``order.count(where product = "cover")``);
    ``then`` only those another event follows or precedes (a :class:`Sequel`:
    ``checkout.count(not followed by order within 1 hour)``).
    ``Path.of("customer.created_at.year")`` reads dotted text.
    """

    category: str = attrs.field(converter=_category)
    attribute: str
    part: DatePart | None = None
    window: Window | None = None
    field: str | None = attrs.field(default=None, kw_only=True)
    where: Node | None = attrs.field(default=None, kw_only=True)
    then: Sequel | None = attrs.field(default=None, kw_only=True)

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
        first, *rest = self.category.split(".")
        # A first name spelled like the keyword NOT would be read as NOT.
        text = ".".join([f"`{first}`" if first.lower() == "not" else _quote_name(first), *map(_quote_name, rest)])
        if not self.is_customer and self.attribute.lower() in DATE_PARTS:
            text += f".`{self.attribute}`"  # never read back as a date part
        else:
            text += "." + _quote_name(self.attribute)
        if self.part:
            text += f".{self.part.value}"
        arguments = [] if self.field is None else [_quote_argument(self.field)]
        if self.window is not None:
            arguments.append(str(self.window))
        if self.then is not None:
            arguments.append(str(self.then))
        if self.where is not None:
            arguments.append(f"where {_render(self.where, relative=True)}")
        return f"{text}({', '.join(arguments)})" if arguments else text

    def __repr__(self) -> str:
        # The window, field and where show only when there is one, so paths without print as they always did.
        window = "" if self.window is None else f", window={self.window!r}"
        field = "" if self.field is None else f", field={self.field!r}"
        where = "" if self.where is None else f", where={self.where!r}"
        then = "" if self.then is None else f", then={self.then!r}"
        return (
            f"Path(category={self.category!r}, attribute={self.attribute!r}, part={self.part!r}"
            f"{window}{field}{where}{then})"
        )

    def relative(self) -> str:
        """The path as a where names it: the field of the event alone (``product``, ``at.weekday``).

        Example:
            >>> Path("order", "at", DatePart.WEEKDAY).relative()
            'at.weekday'
        """
        name = self.attribute
        # A name spelled like NOT would be read as NOT, one like an aggregate as an aggregate.
        text = f"`{name}`" if name.lower() in _WHERE_QUOTED else _quote_name(name)
        return f"{text}.{self.part.value}" if self.part else text


class Node:
    """Base class of the rule AST."""

    __slots__ = ()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's plain text: the same text as ``str``.

        Subclasses repeat it in their own body: IPython takes the first of
        ``_repr_pretty_`` or ``__repr__`` it finds along the MRO, and attrs
        gives each node class its own ``__repr__``.
        """
        printer.text(str(self))

    def _repr_html_(self) -> str:
        """The canonical text in a notebook."""
        import html

        return f"<code>{html.escape(str(self))}</code>"


class _Branch(Node):
    """AND, OR and NOT: equality and hashing by value, without recursion (rules may nest deeply)."""

    _repr_pretty_ = Node._repr_pretty_

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return _same(self, other)

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self) -> int:
        return _hash(self)

    def __repr__(self) -> str:
        return _render(self, as_repr=True)

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle and copy.deepcopy would recurse through the items: hand them the nodes in a flat list.
        return _from_preorder, (_preorder(self),)


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


def quote_pattern(pattern: str) -> str:
    r"""A ``matches`` pattern in quotes, as written: its backslashes belong to the pattern, not the string.

    The quotes are double unless the pattern holds a bare ``"`` (one not after a backslash). A pattern no
    literal can hold as written (a line end, or bare quotes of both kinds: both refused by the pattern
    dialect) is quoted as a string, for display.

    Example:
        >>> print(quote_pattern(r"^[^@]+@dealer\.ca$"), quote_pattern('say "hi"'))
        "^[^@]+@dealer\.ca$" 'say "hi"'
    """
    bare = bare_quotes(pattern)
    odd_end = (len(pattern) - len(pattern.rstrip("\\"))) % 2 == 1  # a last backslash would escape the quote
    if "\n" in pattern or odd_end or len(bare) == 2:
        return _quote_string(pattern)
    quote = "'" if '"' in bare else '"'
    return quote + pattern + quote


_BARE_QUOTE = re.compile(r"(?<!\\)(?:\\\\)*([\"'])")  # a quote after an even number of backslashes


def bare_quotes(pattern: str) -> set[str]:
    """The quote characters ``pattern`` holds unescaped (after an even number of backslashes)."""
    return set(_BARE_QUOTE.findall(pattern))

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


def bounds_reversed(low: object, high: object) -> bool:
    """Whether ``between low and high`` is certainly empty because its bounds come in the wrong order.

    Only bounds whose order is known from the rule alone count: two numbers, two dates, two
    date-times of the same kind (naive or aware), or two relative times of the same unit.

    >>> bounds_reversed(2, 1), bounds_reversed(1, 2), bounds_reversed(Relative(7, Unit.DAYS), Relative(30, Unit.DAYS))
    (True, False, True)
    """
    if isinstance(low, Relative) and isinstance(high, Relative):
        if low.unit is not high.unit:
            return False
        return (low.amount if not low.ago else -low.amount) > (high.amount if not high.ago else -high.amount)
    numbers = (int, float, decimal.Decimal)
    if isinstance(low, numbers) and isinstance(high, numbers):
        return not isinstance(low, bool) and not isinstance(high, bool) and low > high
    if isinstance(low, dt.datetime) and isinstance(high, dt.datetime):
        return (low.tzinfo is None) == (high.tzinfo is None) and low > high
    if type(low) is dt.date and type(high) is dt.date:
        return low > high
    return False


def format_value(value: Value) -> str:
    """The canonical text of a condition value."""
    if isinstance(value, tuple):
        return "[" + ", ".join(_format_scalar(v) for v in value) + "]"
    if isinstance(value, Duration):
        return str(value)
    if value is None:
        return ""
    if isinstance(value, Path):
        return str(value)
    return _format_scalar(value)


def _as_value(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def _value_key(value: object) -> object:
    """What a condition value compares by: its type too, so ``true``, ``1``, ``1.0`` and ``january`` differ."""
    if isinstance(value, tuple):
        return (tuple, tuple(_value_key(v) for v in value))
    if isinstance(value, dt.datetime):
        # Equal instants written with different offsets are different rules.
        return (dt.datetime, value, value.utcoffset())
    return (type(value), value)


class WindowKind(enum.Enum):
    """How a window is written; the value is its keyword."""

    LAST = "last"
    NEXT = "next"
    SINCE = "since"
    BETWEEN = "between"


def _window_value(instance: Window, attribute: attrs.Attribute[Value], value: Value) -> None:
    if instance.kind in (WindowKind.LAST, WindowKind.NEXT):
        if not isinstance(value, Duration):
            raise ValueError(f"a {instance.kind.value} window takes a Duration, not {value!r}")
    elif instance.kind is WindowKind.BETWEEN:
        if not isinstance(value, tuple) or len(value) != 2:
            raise ValueError(f"a between window takes a pair of times, not {value!r}")
    elif value is None or isinstance(value, tuple | Duration):
        raise ValueError(f"a since window takes one time, not {value!r}")


@attrs.frozen
class Window:
    """Which events an aggregate looks at: those whose time falls in the window.

    Each kind reads as the condition of the same words on the event's time:
    ``last 90 days`` as ``at within last 90 days``, ``next 30 days`` as
    ``at within next 30 days``, ``between X and Y`` as ``at between X and Y``;
    ``since X`` keeps the events not ``before X``. ``value`` is a ``Duration``
    for last/next, a pair for between and one time for since.

    Example:
        >>> str(Window(WindowKind.LAST, Duration(90, Unit.DAYS)))
        'last 90 days'
    """

    kind: WindowKind
    value: Value = attrs.field(converter=_as_value, eq=_value_key, validator=_window_value)

    def __str__(self) -> str:
        if self.kind is WindowKind.BETWEEN:
            assert isinstance(self.value, tuple)
            low, high = self.value
            return f"between {_format_scalar(low)} and {_format_scalar(high)}"
        return f"{self.kind.value} {format_value(self.value)}"


@attrs.frozen
class Condition(Node):
    """``path op value``: one test of one attribute.

    ``value`` is a scalar, a tuple for ``in``/``not in``, a pair for
    ``between``, a ``Duration`` for ``within``, and ``None`` for
    ``is known``/``is unknown``. A :class:`Path` compares the path with another
    value of the same customer (``checkout.last_time > order.last_time``).
    """

    _repr_pretty_ = Node._repr_pretty_

    path: Path
    op: Op
    value: Value = attrs.field(default=None, converter=_as_value, eq=_value_key)
    span: Span | None = _span_field()

    def __str__(self) -> str:
        return self.text(str(self.path))

    def text(self, path: str) -> str:
        """The condition's text with ``path`` written for its path (inside a where, the field alone)."""
        match self.op:
            case Op.IS_KNOWN | Op.IS_UNKNOWN:
                return f"{path} {self.op.value}"
            case Op.BETWEEN:
                assert isinstance(self.value, tuple)
                low, high = self.value
                return f"{path} between {_format_scalar(low)} and {_format_scalar(high)}"
            case Op.MATCHES | Op.NOT_MATCHES if isinstance(self.value, str):
                return f"{path} {self.op.value} {quote_pattern(self.value)}"
            case _:
                return f"{path} {self.op.value} {format_value(self.value)}"


@attrs.frozen
class InGroup(Node):
    """``customer in group "NAME"``, or with ``negated``, ``not in group``."""

    _repr_pretty_ = Node._repr_pretty_

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


@attrs.frozen(eq=False, repr=False)
class And(_Branch):
    """True when every item is true (n-ary; nested ``And`` items are flattened)."""

    items: tuple[Node, ...] = attrs.field(
        converter=_flatten_and,
        validator=_at_least_two,
    )
    span: Span | None = _span_field()

    def __str__(self) -> str:
        return _render(self)


@attrs.frozen(eq=False, repr=False)
class Or(_Branch):
    """True when any item is true (n-ary; nested ``Or`` items are flattened)."""

    items: tuple[Node, ...] = attrs.field(
        converter=_flatten_or,
        validator=_at_least_two,
    )
    span: Span | None = _span_field()

    def __str__(self) -> str:
        return _render(self)


@attrs.frozen(eq=False, repr=False)
class Not(_Branch):
    """True when the operand is false; unknown stays unknown."""

    operand: Node
    span: Span | None = _span_field()

    def __str__(self) -> str:
        return _render(self)


Rule: TypeAlias = Node
"""A parsed rule: the root node of its tree (an ``And``, ``Or``, ``Not``, a condition or a group test).

What ``cohorts.parse`` and ``cohorts.from_json`` return; ``str(rule)`` is its canonical text.
"""


@runtime_checkable
class Compiled(Protocol):
    """What carries a parsed rule: a :class:`cohorts.Predicate` (``compile(...)``), taken wherever a rule is."""

    @property
    def rule(self) -> Node:
        """The parsed rule."""
        ...


RuleLike: TypeAlias = "Node | str | Compiled"
"""A rule as every function that takes one accepts it: its text, its tree, or a compiled :class:`Compiled`."""


def _children(node: Node) -> tuple[Node, ...]:
    match node:
        case And(items) | Or(items):
            return items
        case Not(operand):
            return (operand,)
    return ()


def _same(left: Node, right: Node) -> bool:
    stack = [(left, right)]
    while stack:
        a, b = stack.pop()
        if a is b:
            continue
        if type(a) is not type(b):
            return False
        if isinstance(a, _Branch):
            mine, theirs = _children(a), _children(b)
            if len(mine) != len(theirs):
                return False
            stack.extend(zip(mine, theirs, strict=True))
        elif a != b:
            return False
    return True


def _hash(root: Node) -> int:
    def combine(node: Node, parts: list[int]) -> int:
        return hash((type(node).__name__, *parts)) if isinstance(node, _Branch) else hash(node)

    return fold(root, combine)


# A branch in the flat form pickle sees: its class, number of items and span.
_Entry: TypeAlias = "tuple[type[And] | type[Or] | type[Not], int, Span | None] | Node"


def _preorder(root: Node) -> tuple[_Entry, ...]:
    return tuple(
        (type(node), len(_children(node)), node.span) if isinstance(node, And | Or | Not) else node
        for node in walk(root)
    )


def _from_preorder(entries: Sequence[_Entry]) -> Node:
    """The rule ``_preorder`` flattened: read backwards, each branch takes its items off a stack."""
    stack: list[Node] = []
    for entry in reversed(entries):
        if isinstance(entry, Node):
            stack.append(entry)
            continue
        kind, count, span = entry
        items = [stack.pop() for _ in range(count)]
        if kind is Not:
            stack.append(Not(items[0], span=span))
        else:
            stack.append((And if kind is And else Or)(items, span=span))
    (root,) = stack
    return root


def children(node: Node) -> tuple[Node, ...]:
    """The items of an AND or OR, the operand of a NOT, nothing for a condition or group test."""
    return _children(node)


@overload
def fold(root: Node, combine: Callable[[Node, list[T]], T]) -> T: ...


@overload
def fold(root: N, combine: Callable[[N, list[T]], T], *, children: Callable[[N], Sequence[N]]) -> T: ...


def fold(root: Any, combine: Callable[[Any, list[T]], T], *, children: Callable[[Any], Sequence[Any]] = _children) -> T:
    """Combine a rule bottom-up: ``combine(node, results of its children)``, children first, without
    recursion (rules may nest deeply).

    ``children`` folds another tree: it gives a node's children, in order. It is called once per node,
    parents before children, so it may check a node before its children are read.

    Example:
        >>> known = [Condition(Path("customer", name), Op.IS_KNOWN) for name in "ab"]
        >>> rule = Or([known[0], Not(known[1])])
        >>> fold(rule, lambda node, parts: 1 + sum(parts))
        4
        >>> fold((1, [(2, []), (3, [])]), lambda node, parts: [node[0], *parts], children=lambda node: node[1])
        [1, [2], [3]]
    """
    results: list[T] = []  # the results of the children of the nodes under way, in order
    stack: list[tuple[Any, Sequence[Any] | None]] = [(root, None)]
    while stack:
        node, items = stack.pop()
        if items is None:
            items = children(node)
            if items:
                stack.append((node, items))
                stack.extend((item, None) for item in reversed(items))
                continue
        start = len(results) - len(items)
        parts = results[start:]
        del results[start:]
        results.append(combine(node, parts))
    return results[0]


def transform(root: Node, change: Callable[[Node], Node]) -> Node:
    """The rule with some of its nodes replaced, without recursion (rules may nest deeply).

    ``change(node)`` returns what takes the node's place, or the node itself to keep it and go on to
    its items. Nodes are offered parents first, and the items of a replaced node are not offered.
    A branch with a replaced item is rebuilt (with its span; nested ANDs and ORs flatten again);
    everything else is kept as it is, not copied.

    Example:
        >>> a, b = (Condition(Path("customer", name), Op.IS_KNOWN) for name in "ab")
        >>> str(transform(Not(And([a, b])), lambda node: Not(a) if node == b else node))
        'NOT (customer.a is known AND NOT customer.a is known)'
    """
    replaced: dict[int, Node] = {}

    def items(node: Node) -> tuple[Node, ...]:
        new = change(node)
        if new is node:
            return _children(node)
        replaced[id(node)] = new
        return ()

    def combine(node: Node, parts: list[Node]) -> Node:
        if id(node) in replaced:
            return replaced[id(node)]
        if all(new is old for new, old in zip(parts, _children(node), strict=True)):
            return node
        match node:
            case And(span=span):
                return And(parts, span=span)
            case Or(span=span):
                return Or(parts, span=span)
            case Not(span=span):
                return Not(parts[0], span=span)
        raise TypeError(f"not a rule node: {node!r}")

    return fold(root, combine, children=items)


def abbreviate(node: Node, width: int = 100) -> str:
    """The rule's canonical text cut to ``width`` characters (with "..."), without printing all of a huge rule.

    Example:
        >>> abbreviate(Or([Condition(Path("customer", f"a{i}"), Op.IS_KNOWN) for i in range(50)]), 40)
        'customer.a0 is known OR customer.a1 i...'
    """
    return _cut(_render(node, limit=width + 1), width)


def abbreviations(root: Node, width: int = 100) -> dict[int, str]:
    """``abbreviate(node, width)`` of every node of the rule, by ``id(node)``, in time linear in the rule.

    Each node's text starts with those of its items, so one fold cuts them all; abbreviating node
    by node would read up to ``width`` levels below each of a deep rule's nodes.

    Example:
        >>> a, b = (Condition(Path("customer", name), Op.IS_KNOWN) for name in "ab")
        >>> rule = Not(Or([a, b]))
        >>> abbreviations(rule, 30)[id(rule)]
        'NOT (customer.a is known OR...'
    """
    texts: dict[int, str] = {}

    def start(node: Node, parts: list[str]) -> str:  # the first width + 1 characters of the node's text
        if not parts:
            text = str(node)[: width + 1]
        else:
            items, out, size = iter(parts), [], 0
            for piece in _pieces(node):
                out.append(piece if isinstance(piece, str) else next(items))
                size += len(out[-1])
                if size > width:
                    break
            text = "".join(out)[: width + 1]
        texts[id(node)] = _cut(text, width)
        return text

    fold(root, start)
    return texts


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _pieces(node: Node) -> list[Node | str]:
    """One level of a branch's canonical text: its items, with the words and parentheses around them."""
    pieces: list[Node | str] = []
    match node:
        case And(items):
            for index, item in enumerate(items):
                if index:
                    pieces.append(" AND ")
                pieces.extend(("(", item, ")") if isinstance(item, Or) else (item,))
        case Or(items):
            for index, item in enumerate(items):
                if index:
                    pieces.append(" OR ")
                pieces.append(item)
        case Not(operand):
            pieces.extend(("NOT (", operand, ")") if isinstance(operand, And | Or) else ("NOT ", operand))
    return pieces


def _render(root: Node, *, as_repr: bool = False, limit: int | None = None, relative: bool = False) -> str:
    """The canonical text (or the repr) of a rule, built without recursion (rules may nest deeply).

    With ``limit``, stops soon after that many characters (the text is then cut short); with
    ``relative``, conditions name their fields as a where does (:meth:`Path.relative`).
    """
    out: list[str] = []
    size = 0
    stack: list[Node | str] = [root]
    while stack and (limit is None or size < limit):
        item = stack.pop()
        parts: list[Node | str] = []
        text: str | None = None
        if isinstance(item, str):
            text = item
        elif as_repr and isinstance(item, _Branch):
            field = "operand=" if isinstance(item, Not) else "items=("
            parts.append(f"{type(item).__name__}({field}")
            for index, child in enumerate(_children(item)):
                parts.extend((", ", child) if index else (child,))
            parts.append(")" if isinstance(item, Not) else "))")
        elif as_repr or not isinstance(item, _Branch):
            if as_repr:
                text = repr(item)
            elif relative and isinstance(item, Condition):
                text = item.text(item.path.relative())
            else:
                text = str(item)  # a leaf: Condition or InGroup
        else:
            parts = _pieces(item)
        if text is not None:
            out.append(text)
            size += len(text)
        stack.extend(reversed(parts))
    return "".join(out)


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
