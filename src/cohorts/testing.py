"""A test kit for repositories: random customers and rules, and the check that a backend agrees with memory.

The in-memory evaluator is the reference meaning of every rule. A repository of
your own (or a new SQL dialect) is right when its ``select`` returns exactly the
ids the reference returns, for any customers and any rule; this module draws
both with hypothesis (which must be installed: it is in the ``dev`` extra) and
checks that, as the cohorts test suite does on SQLite and PostgreSQL.

Example:
    >>> import cohorts
    >>> check_repository(lambda **options: cohorts.MemoryRepository(**options), examples=3)

The data: attributes of every type, declared or not, unknown values (None,
blank text, empty lists), accents and case, lists, phones in several formats,
times on (or a microsecond beside) the boundaries relative times have at
:data:`NOW`. The rules: every operator on every kind of value, counts in
windows, aggregates filtered by a where or by the events that follow or precede
theirs, two values of a customer compared,
group membership, nested AND/OR/NOT, and deep rules (:func:`deep_rules`:
chains of thousands of NOTs, and alternating AND/OR hundreds of levels deep).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from .ast import (
    Aggregate,
    Anchor,
    And,
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
    Sequel,
    Unit,
    Weekday,
    Window,
    WindowKind,
)
from .errors import RuleError
from .evaluate import compile as compile_rule
from .model import Customer, CustomerId, Event
from .repository import MemoryRepository, Repository
from .values import day_start, resolve_tz, shift

__all__ = [
    "GROUPS",
    "NOW",
    "agrees",
    "check_repository",
    "customer_lists",
    "deep_rules",
    "rules",
]

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
"""The moment every check evaluates at; the drawn times cluster on the boundaries relative times have then."""

# -- data ------------------------------------------------------------------------

WORDS = [
    "Laval",
    "LAVAL",
    " laval ",
    "Lévis",
    "LÉVIS",
    "Le\u0301vis",
    "levis",
    "Straße",
    "STRASSE",
    "strasse",
    "Montréal",
    "montreal",
    "Ford Escape",
    "escape",
    "ESCAPE hybrid",
    "École",
    "z",
    "A",
    "ab",
    "10",
    "2.5",
    "-3",
    "1e3",
    "yes",
    "No",
    "TRUE",
    "0",
    "1",
    "2026-11-20",
    "2025-01-01T10:00:00",
    "ǅemal",
    "ﬁne",
    "İstanbul",
]
PHONES = [
    "(514) 555-0199",
    "+1 514 555 0199",
    "514.555.0199",
    "5145550199",
    "1-514-555-0199",
    "+33 1 23 45 67 89",
    "+44 20 7946 0958",
    "555",
    "n/a",
    "450 555 1234",
    4505551234,
]
UNITS = [Unit.MINUTES, Unit.HOURS, Unit.DAYS, Unit.WEEKS, Unit.MONTHS, Unit.YEARS]
AMOUNTS = [0, 1, 2, 7, 30, 730]

texts = st.sampled_from(WORDS) | st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=4)
unknowns: st.SearchStrategy[Any] = st.sampled_from([None, "", "   ", []])


@st.composite
def instants(draw: st.DrawFn, tz: dt.tzinfo) -> dt.datetime:
    """A time on (or 1 µs / 1 s beside) a boundary a relative time or a calendar day can have at NOW."""
    amount = draw(st.sampled_from(AMOUNTS))
    unit = draw(st.sampled_from(UNITS))
    base = shift(NOW, -amount if draw(st.booleans()) else amount, unit, tz)
    if draw(st.booleans()):
        base = day_start(base, tz, draw(st.sampled_from([0, 1])))
    nudge = draw(st.sampled_from([0, 0, 1, -1, 1_000_000, -1_000_000, 3_600_000_000]))
    return base + dt.timedelta(microseconds=nudge)


@st.composite
def times(draw: st.DrawFn, tz: dt.tzinfo) -> Any:
    """A stored time: aware, naive (read in the repository's zone), a date, or ISO text."""
    instant = draw(instants(tz))
    match draw(st.sampled_from(["aware", "naive", "date", "text", "utc", "february"])):
        case "aware":
            return instant.astimezone(tz)
        case "naive":
            return instant.astimezone(tz).replace(tzinfo=None)
        case "date":
            return instant.astimezone(tz).date()
        case "february":  # the anniversaries at February's end
            return draw(st.sampled_from([dt.date(2024, 2, 29), dt.date(2023, 2, 28), dt.date(2020, 3, 1)]))
        case "text":
            return instant.astimezone(tz).replace(tzinfo=None).isoformat()
        case _:
            return instant.astimezone(dt.UTC)


def numbers() -> st.SearchStrategy[Any]:
    return (
        st.integers(-5, 2030)
        | st.sampled_from([0.5, 2.5, 1999.0, -0.25, 2015, 2019])
        | st.sampled_from(["2015", " 2019 ", "3.5", "abc"])
    )


def anything(tz: dt.tzinfo) -> st.SearchStrategy[Any]:
    scalar = st.one_of(texts, numbers(), st.booleans(), times(tz), unknowns)
    return scalar | st.lists(scalar, max_size=3)


@st.composite
def attribute_dicts(draw: st.DrawFn, tz: dt.tzinfo) -> dict[str, Any]:
    """Attributes: declared ones of the right type or not, and undeclared ones of any type."""
    plan: dict[str, st.SearchStrategy[Any]] = {
        "city": texts | unknowns,
        "vehicle_model": texts | unknowns | numbers(),
        "vehicle_year": numbers() | unknowns,
        "subscribed": st.booleans() | st.sampled_from(["yes", "no", 1, 0, "maybe"]) | unknowns,
        "phone": st.sampled_from(PHONES) | unknowns,
        "tags": st.lists(texts | numbers(), max_size=3) | texts | unknowns,
        "created_at": times(tz) | unknowns,
        "score": numbers() | texts | unknowns,
        "note": anything(tz),
        "when": times(tz) | texts,
        "flag": st.booleans() | st.sampled_from(["oui", "non", "1"]),
        "misc": st.lists(st.one_of(numbers(), texts, st.booleans(), times(tz)), max_size=3),
    }
    chosen = draw(st.lists(st.sampled_from(sorted(plan)), unique=True, max_size=len(plan)))
    return {name: draw(plan[name]) for name in chosen}


EVENT_NAMES = ["appointment", "repair_order.closed", "invoice", "visit"]


@st.composite
def events(draw: st.DrawFn, tz: dt.tzinfo) -> Event:
    name = draw(st.sampled_from(EVENT_NAMES))
    fields = {
        "service": texts | unknowns,
        "status": texts,
        "total": numbers() | st.sampled_from([0.1, 0.2, 0.3, 1e-05, 2.0**62, 2**62]) | unknowns,
        "rating": numbers(),
        "due": times(tz),
    }
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=3))
    return Event(name, draw(times(tz).filter(lambda t: not isinstance(t, str))), {f: draw(fields[f]) for f in chosen})


@st.composite
def customer_lists(draw: st.DrawFn, tz: dt.tzinfo) -> list[Customer]:
    """A hypothesis strategy: 3 to 12 customers with distinct ids (numbers and text), attributes and events."""
    ids = draw(
        st.lists(
            st.integers(0, 40) | st.sampled_from(["c1", "c2", "1", "2", "Ünïcode", "x y"]),
            unique=True,
            min_size=3,
            max_size=12,
        )
    )
    return [Customer(i, draw(attribute_dicts(tz)), draw(st.lists(events(tz), max_size=4))) for i in ids]


# -- rules -------------------------------------------------------------------------

ALL_TEXT_OPS = [Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE, Op.CONTAINS, Op.NOT_CONTAINS, Op.STARTS_WITH, Op.ENDS_WITH]
ORDER_OPS = [Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE]
TIME_OPS = [Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE, Op.BEFORE, Op.AFTER]

rule_texts = st.sampled_from([w for w in WORDS if w.strip()]) | st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=3
).filter(lambda t: bool(t.strip()))
rule_numbers = st.integers(-3, 2030) | st.sampled_from([0.5, 2.5, 2015, 2019, 1999.0, 3])
relatives = st.builds(Relative, st.sampled_from(AMOUNTS), st.sampled_from(UNITS), st.booleans())
rule_times = st.one_of(
    relatives,
    st.sampled_from(list(Anchor)),
    st.dates(dt.date(2024, 11, 20), dt.date(2028, 11, 24)),
    st.builds(lambda t: t.replace(microsecond=0), instants(dt.UTC)),
)


#: ``matches`` patterns over the words above: anchors, classes, folding, counts, alternatives, line ends.
PATTERNS = [
    "^laval$",
    "LAV",
    "^l[aé]v",
    "[^a-z]",
    "^[a-z]+$",
    "ss",
    "ß",
    "é",
    "e\u0301",
    "\\d",
    "^\\d{2,}$",
    "\\s",
    "(mont|qu)",
    "(ab)+",
    "r.al$",
    "^.$",
    "\\n",
    "a{2}",
    "\\.",
    "[0-9]+\\.[0-9]",
    "x?y*z+",
]


@st.composite
def listed(draw: st.DrawFn, values: st.SearchStrategy[Any], op: Op) -> Any:
    if op in (Op.IN, Op.NOT_IN):
        return tuple(draw(st.lists(values, min_size=1, max_size=3)))
    if op is Op.BETWEEN:
        return (draw(values), draw(values))
    return draw(values)


@st.composite
def text_conditions(draw: st.DrawFn) -> Condition:
    path = draw(
        st.sampled_from(
            [
                "customer.city",
                "customer.vehicle_model",
                "customer.note",
                "customer.tags",
                "customer.score",
                "appointment.service",
                "invoice.status",
                "visit.status",
            ]
        )
    )
    op = draw(st.sampled_from([*ALL_TEXT_OPS, Op.MATCHES, Op.NOT_MATCHES, Op.IN, Op.NOT_IN, Op.BETWEEN]))
    if op in (Op.MATCHES, Op.NOT_MATCHES):
        return Condition(Path.of(path), op, draw(st.sampled_from(PATTERNS)))
    return Condition(Path.of(path), op, draw(listed(rule_texts, op)))


@st.composite
def number_conditions(draw: st.DrawFn) -> Condition:
    path = draw(
        st.sampled_from(
            [
                "customer.vehicle_year",
                "customer.score",
                "customer.note",
                "customer.misc",
                "invoice.total",
                "appointment.rating",
                "appointment.count",
                "repair_order.closed.count",
                "invoice.count",
            ]
        )
    )
    op = draw(st.sampled_from([*ORDER_OPS, Op.IN, Op.NOT_IN, Op.BETWEEN]))
    if path == "customer.misc" and draw(st.booleans()):
        op = draw(st.sampled_from([Op.CONTAINS, Op.NOT_CONTAINS]))
    return Condition(Path.of(path), op, draw(listed(rule_numbers, op)))


@st.composite
def part_conditions(draw: st.DrawFn) -> Condition:
    base = draw(
        st.sampled_from(
            [
                "customer.created_at",
                "customer.when",
                "appointment.at",
                "visit.due",
                "repair_order.closed.last_time",
                "invoice.first_time",
            ]
        )
    )
    part = draw(st.sampled_from(["year", "month", "day", "weekday", "anniversary"]))
    if part == "anniversary":
        return anniversary_condition(draw, Path.of(f"{base}.{part}"))
    values: st.SearchStrategy[Any] = {
        "year": st.sampled_from([2024, 2025, 2026, 2027, 2028]),
        "month": st.sampled_from(list(Month)) | st.integers(1, 12),
        "day": st.integers(1, 31),
        "weekday": st.sampled_from(list(Weekday)) | st.integers(1, 7),
    }[part]
    op = draw(st.sampled_from([*ORDER_OPS, Op.IN, Op.NOT_IN, Op.BETWEEN]))
    return Condition(Path.of(f"{base}.{part}"), op, draw(listed(values, op)))


# The days an anniversary is tested on: the calendar's words, days near NOW and February's ends.
ANNIVERSARY_DAYS = st.one_of(
    st.sampled_from([Anchor.TODAY, Anchor.TOMORROW, Anchor.YESTERDAY, Anchor.NOW]),
    st.sampled_from([Anchor.THIS_MONTH, Anchor.NEXT_MONTH, Anchor.LAST_MONTH]),
    st.sampled_from([dt.date(2027, 2, 28), dt.date(2028, 2, 28), dt.date(2028, 2, 29), dt.date(2026, 12, 31)]),
    st.builds(
        Relative,
        st.sampled_from([0, 1, 6, 7, 30, 100]),
        st.sampled_from([Unit.DAYS, Unit.WEEKS, Unit.MONTHS, Unit.YEARS]),
        st.booleans(),
    ),
)


def anniversary_condition(draw: st.DrawFn, path: Path) -> Condition:
    """A test of ``path``'s anniversary: on a day, in a list of days, between two, or in a window."""
    op = draw(st.sampled_from([Op.EQ, Op.NE, Op.IN, Op.NOT_IN, Op.BETWEEN, Op.WITHIN_LAST, Op.WITHIN_NEXT]))
    if op in (Op.WITHIN_LAST, Op.WITHIN_NEXT):
        unit = draw(st.sampled_from([Unit.DAYS, Unit.WEEKS, Unit.MONTHS, Unit.YEARS]))
        return Condition(path, op, Duration(draw(st.sampled_from([0, 1, 7, 30, 400])), unit))
    return Condition(path, op, draw(listed(ANNIVERSARY_DAYS, op)))


@st.composite
def time_conditions(draw: st.DrawFn) -> Condition:
    path = draw(
        st.sampled_from(
            [
                "customer.created_at",
                "customer.when",
                "customer.misc",
                "appointment.at",
                "repair_order.closed.at",
                "repair_order.closed.last_time",
                "invoice.first_time",
                "visit.due",
                "appointment.last_time",
            ]
        )
    )
    op = draw(st.sampled_from([*TIME_OPS, Op.IN, Op.NOT_IN, Op.BETWEEN, Op.WITHIN_LAST, Op.WITHIN_NEXT]))
    if op in (Op.WITHIN_LAST, Op.WITHIN_NEXT):
        value: Any = Duration(draw(st.sampled_from(AMOUNTS)), draw(st.sampled_from(UNITS)))
    else:
        value = draw(listed(rule_times, op))
    return Condition(Path.of(path), op, value)


@st.composite
def other_conditions(draw: st.DrawFn) -> Node:
    kind = draw(st.sampled_from(["bool", "phone", "known", "group"]))
    if kind == "bool":
        path = draw(st.sampled_from(["customer.subscribed", "customer.flag", "customer.note", "customer.misc"]))
        op = draw(st.sampled_from([Op.EQ, Op.NE, Op.IN, Op.NOT_IN]))
        return Condition(Path.of(path), op, draw(listed(st.booleans(), op)))
    if kind == "phone":
        op = draw(
            st.sampled_from(
                [Op.EQ, Op.NE, Op.IN, Op.NOT_IN, Op.CONTAINS, Op.NOT_CONTAINS, Op.STARTS_WITH, Op.ENDS_WITH]
            )
        )
        if op in (Op.CONTAINS, Op.NOT_CONTAINS, Op.STARTS_WITH, Op.ENDS_WITH):
            value: Any = draw(st.sampled_from(["514", "+1514", "0199", "555", "+33", "4505551234"]))
        else:
            value = draw(listed(st.sampled_from([p for p in PHONES if p not in ("555", "n/a")]), op))
        return Condition(Path.of("customer.phone"), op, value)
    if kind == "known":
        path = draw(
            st.sampled_from(
                [
                    "customer.city",
                    "customer.note",
                    "customer.misc",
                    "customer.tags",
                    "customer.phone",
                    "customer.created_at",
                    "customer.created_at.year",
                    "customer.subscribed",
                    "appointment.service",
                    "invoice.due",
                    "visit.at",
                    "appointment.count",
                    "invoice.first_time",
                    "repair_order.closed.last_time.month",
                    "customer.nothing",
                ]
            )
        )
        return Condition(Path.of(path), draw(st.sampled_from([Op.IS_KNOWN, Op.IS_UNKNOWN])))
    return InGroup(draw(st.sampled_from(["VIP", "Empty", "Mixed"])), draw(st.booleans()))


@st.composite
def windows(draw: st.DrawFn) -> Window:
    """A window whose edges fall where the event times cluster (relative times and days at NOW)."""
    kind = draw(st.sampled_from(list(WindowKind)))
    value: Any
    if kind in (WindowKind.LAST, WindowKind.NEXT):
        value = Duration(draw(st.sampled_from(AMOUNTS)), draw(st.sampled_from(UNITS)))
    elif kind is WindowKind.SINCE:
        value = draw(rule_times)
    else:
        value = (draw(rule_times), draw(rule_times))
    return Window(kind, value)


@st.composite
def window_conditions(draw: st.DrawFn) -> Condition:
    """A count in a window (:func:`windows`)."""
    category = draw(st.sampled_from(["appointment", "repair_order.closed", "invoice"]))
    path = Path(category, "count", window=draw(windows()))
    op = draw(st.sampled_from([*ORDER_OPS, Op.IN, Op.NOT_IN, Op.BETWEEN, Op.IS_KNOWN, Op.IS_UNKNOWN]))
    if op in (Op.IS_KNOWN, Op.IS_UNKNOWN):
        return Condition(path, op)
    return Condition(path, op, draw(listed(st.integers(0, 3), op)))


# Sums near the drawn totals, decimals that floats cannot hold (0.1 + 0.2 is 0.3), and beyond 64 bits.
_AGGREGATE_NUMBERS = st.sampled_from([0, 0.3, 0.5, 0.15, 1, 2.5, 3, -0.25, 2015, 2019, 4034, 2**63, 0.6000000000000001])


@st.composite
def aggregate_conditions(draw: st.DrawFn) -> Condition:
    """A sum, average, minimum or maximum of an event field (a number, or for min and max a time),
    over all the events of a name or those of a window."""
    aggregate = draw(st.sampled_from([Aggregate.SUM, Aggregate.AVG, Aggregate.MIN, Aggregate.MAX]))
    category = draw(st.sampled_from(["appointment", "repair_order.closed", "invoice", "visit"]))
    window = draw(st.none() | windows())
    if aggregate in (Aggregate.MIN, Aggregate.MAX) and draw(st.booleans()):
        path = Path(category, aggregate.value, window=window, field="due")
        op = draw(st.sampled_from([*TIME_OPS, Op.IN, Op.NOT_IN, Op.BETWEEN, Op.WITHIN_LAST, Op.WITHIN_NEXT]))
        if op in (Op.WITHIN_LAST, Op.WITHIN_NEXT):
            return Condition(path, op, Duration(draw(st.sampled_from(AMOUNTS)), draw(st.sampled_from(UNITS))))
        return Condition(path, op, draw(listed(rule_times, op)))
    path = Path(category, aggregate.value, window=window, field=draw(st.sampled_from(["total", "rating"])))
    op = draw(st.sampled_from([*ORDER_OPS, Op.IN, Op.NOT_IN, Op.BETWEEN, Op.IS_KNOWN, Op.IS_UNKNOWN]))
    if op in (Op.IS_KNOWN, Op.IS_UNKNOWN):
        return Condition(path, op)
    return Condition(path, op, draw(listed(_AGGREGATE_NUMBERS, op)))


@st.composite
def field_conditions(draw: st.DrawFn, category: str) -> Condition:
    """A condition on one field of an event named ``category``, as a where holds: text, a number, a
    time or a part of one, the event's own time, or whether a field is known."""
    kind = draw(st.sampled_from(["text", "number", "time", "part", "known"]))
    if kind == "text":
        path = Path(category, draw(st.sampled_from(["service", "status"])))
        op = draw(st.sampled_from([*ALL_TEXT_OPS, Op.IN, Op.NOT_IN]))
        return Condition(path, op, draw(listed(rule_texts, op)))
    if kind == "number":
        path = Path(category, draw(st.sampled_from(["total", "rating"])))
        op = draw(st.sampled_from([*ORDER_OPS, Op.IN, Op.BETWEEN]))
        return Condition(path, op, draw(listed(rule_numbers | _AGGREGATE_NUMBERS, op)))
    if kind == "part":
        part = draw(st.sampled_from([DatePart.MONTH, DatePart.WEEKDAY, DatePart.DAY]))
        path = Path(category, draw(st.sampled_from(["at", "due"])), part)
        return Condition(path, draw(st.sampled_from(ORDER_OPS)), draw(st.integers(1, 12)))
    if kind == "known":
        path = Path(category, draw(st.sampled_from(["service", "total", "due", "at"])))
        return Condition(path, draw(st.sampled_from([Op.IS_KNOWN, Op.IS_UNKNOWN])))
    path = Path(category, draw(st.sampled_from(["at", "due"])))
    op = draw(st.sampled_from([*TIME_OPS, Op.IN, Op.BETWEEN, Op.WITHIN_LAST, Op.WITHIN_NEXT]))
    if op in (Op.WITHIN_LAST, Op.WITHIN_NEXT):
        return Condition(path, op, Duration(draw(st.sampled_from(AMOUNTS)), draw(st.sampled_from(UNITS))))
    return Condition(path, op, draw(listed(rule_times, op)))


def sequels(names: Sequence[str] = EVENT_NAMES) -> st.SearchStrategy[Sequel]:
    """An aggregate's followed by / preceded by: another event of ``names``, within a span or not."""
    spans = st.builds(
        Duration, st.sampled_from([0, 1, 2, 7, 30]), st.sampled_from([Unit.MINUTES, Unit.HOURS, Unit.DAYS, Unit.WEEKS])
    )
    return st.builds(
        Sequel, st.sampled_from(list(names)), st.none() | spans, preceded=st.booleans(), negated=st.booleans()
    )


@st.composite
def where_conditions(draw: st.DrawFn) -> Condition:
    """An aggregate of the events a where keeps (and a window, or not, and a followed by / preceded
    by, or not): a count, the first or last time, a sum, average, minimum or maximum; the where is up
    to three conditions on one event."""
    category = draw(st.sampled_from(["appointment", "repair_order.closed", "invoice", "visit"]))
    where = draw(st.none() | st.recursive(field_conditions(category), _combine, max_leaves=3))
    then = draw(st.none() | sequels())
    if where is None and then is None:
        where = draw(field_conditions(category))
    window = draw(st.none() | windows())
    aggregate = draw(st.sampled_from(list(Aggregate)))
    if aggregate in (Aggregate.FIRST_TIME, Aggregate.LAST_TIME):
        path = Path(category, aggregate.value, window=window, where=where, then=then)
        op = draw(st.sampled_from([*TIME_OPS, Op.BETWEEN, Op.WITHIN_LAST, Op.WITHIN_NEXT, Op.IS_KNOWN]))
        if op is Op.IS_KNOWN:
            return Condition(path, op)
        if op in (Op.WITHIN_LAST, Op.WITHIN_NEXT):
            return Condition(path, op, Duration(draw(st.sampled_from(AMOUNTS)), draw(st.sampled_from(UNITS))))
        return Condition(path, op, draw(listed(rule_times, op)))
    field = None if aggregate is Aggregate.COUNT else draw(st.sampled_from(["total", "rating"]))
    path = Path(category, aggregate.value, window=window, field=field, where=where, then=then)
    op = draw(st.sampled_from([*ORDER_OPS, Op.IN, Op.BETWEEN, Op.IS_UNKNOWN]))
    if op is Op.IS_UNKNOWN:
        return Condition(path, op)
    values = st.integers(0, 3) if aggregate is Aggregate.COUNT else _AGGREGATE_NUMBERS
    return Condition(path, op, draw(listed(values, op)))


@st.composite
def _side(draw: st.DrawFn, kind: str, declared: bool) -> Path:
    """One value of a customer, of ``kind`` ("time" or "number"): an attribute, a date part, or an
    aggregate of events (with a window or a where, or not). ``declared``: of a type the schema gives."""
    category = draw(st.sampled_from(["appointment", "repair_order.closed", "invoice", "visit"]))
    window = draw(st.none() | windows())
    where = draw(st.none() | st.recursive(field_conditions(category), _combine, max_leaves=2))
    then = draw(st.none() | sequels())
    if kind == "time":
        aggregate = draw(st.sampled_from([Aggregate.FIRST_TIME, Aggregate.LAST_TIME]))
        choices = [
            Path.of("customer.created_at"),
            Path(category, aggregate.value, window=window, where=where, then=then),
        ]
        if not declared:  # undeclared: they take the other side's kind
            extreme = draw(st.sampled_from([Aggregate.MIN, Aggregate.MAX])).value
            choices += [Path.of("customer.when"), Path.of("customer.note"), Path(category, extreme, field="due")]
    else:
        choices = [
            Path.of("customer.vehicle_year"),
            Path.of("customer.created_at.month"),
            Path(category, Aggregate.COUNT.value, window=window, where=where),
        ]
        if category in ("repair_order.closed", "invoice"):  # (where total is declared a number)
            extreme = draw(st.sampled_from([Aggregate.MIN, Aggregate.MAX, Aggregate.SUM])).value
            choices.append(Path(category, extreme, window=window, field="total", where=where))
        if not declared:
            choices += [Path.of("customer.score"), Path.of("customer.misc"), Path("visit", "max", field="rating")]
    return draw(st.sampled_from(choices))


@st.composite
def comparison_conditions(draw: st.DrawFn) -> Condition:
    """Two values of the customer compared (``appointment.last_time > invoice.last_time``): dates or
    numbers, at least one side of a declared type."""
    kind = draw(st.sampled_from(["time", "number"]))
    sides = [draw(_side(kind, True)), draw(_side(kind, False))]
    if draw(st.booleans()):
        sides.reverse()
    op = draw(st.sampled_from(TIME_OPS if kind == "time" else ORDER_OPS))
    return Condition(sides[0], op, sides[1])


conditions = st.one_of(
    comparison_conditions(),
    where_conditions(),
    aggregate_conditions(),
    text_conditions(),
    number_conditions(),
    part_conditions(),
    time_conditions(),
    window_conditions(),
    other_conditions(),
)


def _combine(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    return st.one_of(
        st.lists(children, min_size=2, max_size=3).map(And),
        st.lists(children, min_size=2, max_size=3).map(Or),
        children.map(Not),
    )


rules = st.recursive(conditions, _combine, max_leaves=5)
"""A hypothesis strategy of rules: conditions of every kind, combined with AND, OR and NOT (up to 5 of them)."""

GROUPS: dict[str, frozenset[Any]] = {
    "VIP": frozenset({1, 2, 3, "c1", "Ünïcode"}),
    "Empty": frozenset(),
    "Mixed": frozenset({"1", 2, "x y", 40, 7}),
}
"""The groups that drawn ``customer in group`` conditions name, with their members' ids (``agrees``' default)."""


# -- deep rules ------------------------------------------------------------------------


@st.composite
def deep_rules(draw: st.DrawFn, base: st.SearchStrategy[Node] | None = None, max_depth: int = 3000) -> Node:
    """A drawn rule wrapped in a deep structure.

    Chains of NOTs up to ``max_depth`` levels, and two-item AND/OR trees that
    alternate (each level adding a condition, with or without a NOT) up to a
    few hundred levels: what a rule generator or a long "any of these" list builds.
    """
    rule = draw(base if base is not None else rules)
    shape = draw(st.sampled_from(["not", "alternating", "negated"]))
    if shape == "not":
        for _ in range(draw(st.integers(1, max_depth))):
            rule = Not(rule)
        return rule
    depth = draw(st.integers(1, min(max_depth, 300)))
    extra = draw(st.lists(conditions, min_size=1, max_size=3))
    for level in range(depth):
        other = extra[level % len(extra)]
        rule = And([rule, other]) if level % 2 else Or([rule, other])
        if shape == "negated":  # NOT at every level: the connectives alternate under the polarities
            rule = Not(rule)
    return rule


def _valid(rule: Node) -> bool:
    try:
        compile_rule(rule)  # lenient: undeclared attributes are typed by the rule's values
    except RuleError:
        return False
    return True


# -- the check -------------------------------------------------------------------------


def agrees(
    repository: Repository,
    customers: Sequence[Customer],
    checked: Sequence[Node],
    now: dt.datetime,
    zone: str,
    groups: Mapping[str, frozenset[CustomerId]] | None = None,
) -> None:
    """Store ``customers`` in ``repository`` (emptied first) and assert each rule selects what memory selects."""
    lookup = (groups if groups is not None else GROUPS).__getitem__
    reference = MemoryRepository(customers, tz=zone)
    repository.delete(*repository.ids())
    repository.upsert(customers)
    for rule in checked:
        expected = reference.select(rule, now, groups=lookup)
        got = repository.select(rule, now, groups=lookup)
        assert got == expected, f"{rule}: {sorted(map(repr, got))} != {sorted(map(repr, expected))} (memory)"


def check_repository(
    make_repository: Callable[..., Repository],
    *,
    examples: int = 50,
    zones: Sequence[str] = ("UTC", "Asia/Kolkata"),
    deep: bool = True,
    shrink: bool = True,
) -> None:
    """Check with hypothesis that repositories ``make_repository(tz=zone)`` makes agree with the reference.

    Each example draws customers and up to six rules (deep ones too, unless
    ``deep=False``) and two moments; an AssertionError shows the smallest
    disagreement hypothesis finds (``shrink=False``: the first one, sooner).
    ``make_repository`` is called once per zone.
    """
    drawn_rules = (rules | deep_rules()) if deep else rules
    for zone in zones:
        _agreement(make_repository(tz=zone), zone, drawn_rules, examples, shrink)()


def _agreement(
    repository: Repository, zone: str, drawn_rules: st.SearchStrategy[Node], examples: int, shrink: bool
) -> Callable[[], None]:
    """The hypothesis property that ``repository`` (in ``zone``) selects what the reference selects."""
    tz = resolve_tz(zone)

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
        database=None,
        phases=tuple(Phase) if shrink else (Phase.explicit, Phase.reuse, Phase.generate),
    )
    @given(data=st.data())
    def agree(data: st.DataObject) -> None:
        customers = data.draw(customer_lists(tz), label="customers")
        checked = [r for r in data.draw(st.lists(drawn_rules, min_size=1, max_size=6), label="rules") if _valid(r)]
        assume(checked)
        now = data.draw(st.sampled_from([NOW, NOW + dt.timedelta(hours=13, microseconds=1)]), label="now")
        agrees(repository, customers, checked, now, zone)

    return agree
