"""Hypothesis strategies: random rule ASTs, rule text and customers.

``rules()`` builds any rule the AST can hold (every operator, every value
type, awkward names), for round trips through text and JSON. ``typed_rules()``
builds rules over a small vocabulary that always compile without a schema, for
properties of the evaluator, and ``customers()`` the data they run on.
``deep_rules()`` nests either kind hundreds to thousands of levels deep, and
``deep_pairs()`` gives such a rule with the shallow rule it means.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

import attrs
from hypothesis import strategies as st

from cohorts import Customer, Event
from cohorts.ast import (
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
    Unit,
    Weekday,
    Window,
    WindowKind,
    bounds_reversed,
)
from cohorts.pattern import PatternError, compile_pattern
from cohorts.testing import PATTERNS

NOW = dt.datetime(2026, 11, 22, 15, 30, tzinfo=dt.UTC)

# -- names --------------------------------------------------------------------

_bare_names = st.from_regex(r"[^\W\d]\w{0,7}", fullmatch=True)
# Anything but a newline: spaces, accents, backquotes, dots, keywords.
_odd_names = st.text(st.characters(exclude_characters="\n"), min_size=1, max_size=8)
_keyword_names = st.sampled_from(
    ["not", "NOT", "and", "or", "in", "is", "year", "Month", "count", "last_time", "today", "days", "group", "sum",
     "last", "Since", "between", "next"]
)
names = st.one_of(_bare_names, _odd_names, _keyword_names)

# An event name's segments cannot hold dots (they separate segments) and its
# first segment cannot be "customer".
_segments = names.filter(lambda n: "." not in n)
_event_names = st.lists(_segments, min_size=1, max_size=3).filter(lambda s: s[0].lower() != "customer").map(".".join)
_parts = st.none() | st.sampled_from(DatePart)


# -- values -------------------------------------------------------------------

_offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
units = st.sampled_from(Unit)
relatives = st.builds(Relative, st.integers(0, 10_000), units, st.booleans())
durations = st.builds(Duration, st.integers(0, 10_000), units)
_any_times = st.one_of(
    st.dates(), st.datetimes(timezones=st.one_of(st.none(), _offsets)), relatives, st.sampled_from(Anchor)
)


def _ordered(pair: tuple[Any, Any]) -> tuple[Any, Any]:
    """A ``between``'s ends, lower first when their order is known (a reversed range is an error)."""
    return (pair[1], pair[0]) if bounds_reversed(*pair) else pair


def _windows(times: st.SearchStrategy[Any], spans: st.SearchStrategy[Duration]) -> st.SearchStrategy[Window]:
    return st.one_of(
        st.builds(Window, st.sampled_from([WindowKind.LAST, WindowKind.NEXT]), spans),
        st.builds(Window, st.just(WindowKind.SINCE), times),
        st.builds(Window, st.just(WindowKind.BETWEEN), st.tuples(times, times).map(_ordered)),
    )


windows = _windows(_any_times, durations)


@st.composite
def paths(draw: st.DrawFn) -> Path:
    """A customer or event path, with or without an aggregate, a date part or a window."""
    window = draw(st.none() | windows)  # the AST holds a window anywhere; validation says where it applies
    if draw(st.booleans()):
        return Path("customer", draw(names), draw(_parts), window)
    attribute = draw(names | st.sampled_from([a.value for a in Aggregate]) | st.just("at"))
    field = draw(st.none() | names)  # validation says which aggregates take one
    category = draw(_event_names)
    # a where holds conditions on fields of the same events (validation says which paths take one)
    where = None
    if draw(st.integers(0, 3)) == 3:  # a quarter of the event paths: most paths with one do not validate
        where = draw(st.recursive(conditions(field_paths(category)), _combine, max_leaves=3))
    return Path(category, attribute, draw(_parts), window, field=field, where=where)


def field_paths(category: str) -> st.SearchStrategy[Path]:
    """The paths a where names: a field of the events ``category`` names, or a date part of one."""
    return st.builds(Path, st.just(category), names | st.just("at"), _parts)

scalars: st.SearchStrategy[Any] = st.one_of(
    st.text(max_size=12),
    st.sampled_from(['say "hi"', "back\\slash", "tab\there", "new\nline", "é", "e\u0301", "Straße", "日本", "\x00"]),
    st.integers(-(10**18), 10**18),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.dates(),
    st.datetimes(timezones=st.one_of(st.none(), _offsets)),
    relatives,
    st.sampled_from(Anchor),
    st.sampled_from(Month),
    st.sampled_from(Weekday),
)
value_lists = st.lists(scalars, max_size=4).map(tuple)

def _is_pattern(text: str) -> bool:
    try:
        compile_pattern(text)
    except PatternError:
        return False
    return True


_PATTERN_ATOMS = st.sampled_from([
    "a", "B", "é", "e\u0301", "ß", "日", " ", ".", "\\d", "\\W", "\\s", "\\.", "\\\\", '"', "\\'",
    "[a-z]", "[^0-9]", "[\\]x-]",
])
_REPEATS = st.sampled_from(["", "", "", "*", "+", "?", "{2}", "{1,3}", "*?"])
_PATTERN_PARTS = st.one_of(
    st.tuples(_PATTERN_ATOMS, _REPEATS).map("".join),
    st.tuples(st.lists(_PATTERN_ATOMS, min_size=1, max_size=3).map("".join), _REPEATS).map(lambda p: f"({p[0]}){p[1]}"),
    st.lists(_PATTERN_ATOMS, min_size=2, max_size=3).map(lambda alternatives: f"({'|'.join(alternatives)})"),
)
#: Patterns of the ``matches`` dialect, built to be valid (anchors, repetitions, groups, alternatives).
patterns = st.tuples(
    st.sampled_from(["", "^"]), st.lists(_PATTERN_PARTS, min_size=1, max_size=4), st.sampled_from(["", "$"])
).map(lambda p: p[0] + "".join(p[1]) + p[2]).filter(_is_pattern)

_SCALAR_OPS = [Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE, Op.CONTAINS, Op.NOT_CONTAINS, Op.STARTS_WITH, Op.ENDS_WITH]


@st.composite
def conditions(draw: st.DrawFn, path_strategy: st.SearchStrategy[Path] | None = None) -> Condition:
    """A condition with any operator and a value of the shape the operator takes (on a path of
    ``path_strategy``, or of :func:`paths`)."""
    path = draw(path_strategy if path_strategy is not None else paths())
    op = draw(st.sampled_from(Op))
    value: Any
    if op in (Op.IS_KNOWN, Op.IS_UNKNOWN):
        value = None
    elif op in (Op.IN, Op.NOT_IN):
        value = draw(value_lists)
    elif op is Op.BETWEEN:
        value = _ordered((draw(scalars), draw(scalars)))
    elif op in (Op.WITHIN_LAST, Op.WITHIN_NEXT):
        value = draw(durations)
    elif op in (Op.MATCHES, Op.NOT_MATCHES):  # the parser checks a pattern: only those of the dialect print back
        value = draw(patterns)
    else:
        value = draw(scalars | value_lists)
    return Condition(path, op, value)


in_groups = st.builds(InGroup, st.text(max_size=10), st.booleans())


def _combine(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    return st.one_of(
        st.lists(children, min_size=2, max_size=4).map(And),
        st.lists(children, min_size=2, max_size=4).map(Or),
        children.map(Not),
    )


def rules(max_leaves: int = 12) -> st.SearchStrategy[Node]:
    """Any rule: AND, OR, NOT over every kind of condition and group test."""
    return st.recursive(conditions() | in_groups, _combine, max_leaves=max_leaves)


# -- rules that compile -------------------------------------------------------

_words = st.sampled_from(["Laval", "laval", "LAVAL ", "Québec", "Que\u0301bec", "Straße", "strasse", "Escape", "cat"])
_days = st.dates(dt.date(2024, 1, 1), dt.date(2028, 12, 31))
_instants = st.datetimes(dt.datetime(2024, 1, 1), dt.datetime(2028, 12, 31), timezones=st.one_of(st.none(), _offsets))
_time_values = st.one_of(
    _days, _instants, st.builds(Relative, st.integers(0, 40), units, st.booleans()), st.sampled_from(Anchor)
)
_ORDER = [Op.LT, Op.LE, Op.GT, Op.GE]


@st.composite
def _text_condition(draw: st.DrawFn) -> Condition:
    path = draw(st.sampled_from([Path("customer", "city"), Path("customer", "pet"), Path("appointment", "service")]))
    op = draw(st.sampled_from([*_SCALAR_OPS, Op.MATCHES, Op.NOT_MATCHES, Op.IN, Op.NOT_IN, Op.BETWEEN]))
    if op in (Op.MATCHES, Op.NOT_MATCHES):
        return Condition(path, op, draw(st.sampled_from(PATTERNS) | patterns))
    if op in (Op.IN, Op.NOT_IN):
        return Condition(path, op, tuple(draw(st.lists(_words, max_size=3))))
    if op is Op.BETWEEN:
        return Condition(path, op, _ordered((draw(_words), draw(_words))))
    return Condition(path, op, draw(_words))


@st.composite
def _number_condition(draw: st.DrawFn) -> Condition:
    path = draw(
        st.sampled_from(
            [
                Path("customer", "vehicle_year"),
                Path("appointment", "count"),
                Path("customer", "created_at", DatePart.YEAR),
            ]
        )
    )
    op = draw(st.sampled_from([Op.EQ, Op.NE, *_ORDER, Op.IN, Op.NOT_IN, Op.BETWEEN]))
    numbers = st.integers(0, 3) | st.integers(2018, 2028)
    if op in (Op.IN, Op.NOT_IN):
        return Condition(path, op, tuple(draw(st.lists(numbers, max_size=3))))
    if op is Op.BETWEEN:
        return Condition(path, op, _ordered((draw(numbers), draw(numbers))))
    return Condition(path, op, draw(numbers))


@st.composite
def _time_condition(draw: st.DrawFn) -> Condition:
    path = draw(
        st.sampled_from(
            [
                Path("customer", "created_at"),
                Path("appointment", "at"),
                Path("appointment", "last_time"),
                Path("appointment", "first_time"),
            ]
        )
    )
    op = draw(
        st.sampled_from([Op.EQ, Op.NE, *_ORDER, Op.BEFORE, Op.AFTER, Op.BETWEEN, Op.WITHIN_LAST, Op.WITHIN_NEXT, Op.IN])
    )
    if op in (Op.WITHIN_LAST, Op.WITHIN_NEXT):
        return Condition(path, op, Duration(draw(st.integers(0, 40)), draw(units)))
    if op is Op.BETWEEN:
        return Condition(path, op, _ordered((draw(_time_values), draw(_time_values))))
    if op is Op.IN:
        return Condition(path, op, tuple(draw(st.lists(_time_values, max_size=2))))
    return Condition(path, op, draw(_time_values))


typed_windows = _windows(_time_values, st.builds(Duration, st.integers(0, 40), units))


@st.composite
def _window_condition(draw: st.DrawFn) -> Condition:
    """A count of appointments (or invoices) in a window, compared with a small number."""
    path = Path(draw(st.sampled_from(["appointment", "invoice"])), "count", window=draw(typed_windows))
    op = draw(st.sampled_from([Op.EQ, Op.NE, *_ORDER, Op.IN, Op.BETWEEN, Op.IS_KNOWN]))
    numbers = st.integers(0, 3)
    if op is Op.IN:
        return Condition(path, op, tuple(draw(st.lists(numbers, max_size=3))))
    if op is Op.BETWEEN:
        return Condition(path, op, _ordered((draw(numbers), draw(numbers))))
    if op is Op.IS_KNOWN:
        return Condition(path, op)
    return Condition(path, op, draw(numbers))


_other_conditions = st.one_of(
    st.builds(Condition, st.just(Path("customer", "subscribed")), st.sampled_from([Op.EQ, Op.NE]), st.booleans()),
    st.builds(
        Condition,
        st.just(Path("customer", "created_at", DatePart.MONTH)),
        st.sampled_from([Op.EQ, Op.NE]),
        st.sampled_from(Month),
    ),
    st.builds(
        Condition,
        st.just(Path("customer", "created_at", DatePart.WEEKDAY)),
        st.sampled_from([Op.EQ, Op.NE]),
        st.sampled_from(Weekday),
    ),
    st.builds(
        Condition,
        st.just(Path("customer", "phone")),
        st.sampled_from([Op.EQ, Op.NE]),
        st.sampled_from(["514-555-0199", "(514) 555 0199", "+1 438 555 0100"]),
    ),
    st.builds(
        Condition,
        st.just(Path("customer", "tags")),
        st.sampled_from([Op.CONTAINS, Op.NOT_CONTAINS, Op.EQ]),
        st.sampled_from(["vip", "VIP", "gold"]),
    ),
    st.builds(
        Condition,
        st.sampled_from(
            [
                Path("customer", "city"),
                Path("customer", "tags"),
                Path("customer", "pet"),
                Path("customer", "created_at"),
                Path("appointment", "service"),
                Path("appointment", "last_time"),
            ]
        ),
        st.sampled_from([Op.IS_KNOWN, Op.IS_UNKNOWN]),
    ),
    st.builds(InGroup, st.sampled_from(["VIP", "Wholesale"]), st.booleans()),
)

typed_conditions = st.one_of(
    _text_condition(), _number_condition(), _time_condition(), _window_condition(), _other_conditions
)


def typed_rules(max_leaves: int = 8) -> st.SearchStrategy[Node]:
    """Rules over the sample vocabulary that compile without a schema."""
    return st.recursive(typed_conditions, _combine, max_leaves=max_leaves)


GROUPS: dict[str, frozenset[Any]] = {"VIP": frozenset({1, 3}), "Wholesale": frozenset({2})}


def groups(name: str) -> frozenset[Any]:
    """The membership lookup typed rules are evaluated with."""
    return GROUPS[name]


# -- deep rules ---------------------------------------------------------------

# Conditions true (and false) for every customer, known either way: the fillers that leave the
# meaning of an AND (an OR) to its other item. No strategy sets the attribute.
ALWAYS_TRUE = Condition(Path("customer", "never_set"), Op.IS_UNKNOWN)
ALWAYS_FALSE = Condition(Path("customer", "never_set"), Op.IS_KNOWN)

# One level of a chain: NOT, or an AND / OR of the rule below and a filler (first or last of the two).
_Link: TypeAlias = tuple[Literal["not", "and", "or"], Node | None, bool]


@st.composite
def _links(draw: st.DrawFn, fillers: st.SearchStrategy[Node] | None) -> list[_Link]:
    """A pattern of a few levels, repeated down the chain. No filler: the neutral ones."""
    kinds = draw(st.lists(st.sampled_from(["not", "and", "or"]), min_size=1, max_size=4))
    # An AND right under an AND would flatten into it (an OR under an OR too): a NOT keeps them
    # apart, also where the pattern ends and starts again.
    spaced: list[Literal["not", "and", "or"]] = []
    for kind in kinds:
        if spaced and kind != "not" and spaced[-1] == kind:
            spaced.append("not")
        spaced.append(kind)
    if spaced[-1] != "not" and spaced[-1] == spaced[0]:
        spaced.append("not")
    return [(kind, None if fillers is None else draw(fillers), draw(st.booleans())) for kind in spaced]


def _chain(rule: Node, links: Sequence[_Link], depth: int) -> Node:
    """``rule`` under ``depth`` levels of ``links``, repeated; each filler is a fresh copy."""
    for level in range(depth):
        kind, filler, first = links[level % len(links)]
        if kind == "not":
            rule = Not(rule)
            continue
        item = attrs.evolve(filler if filler is not None else ALWAYS_TRUE if kind == "and" else ALWAYS_FALSE)
        pair = [item, rule] if first else [rule, item]
        rule = And(pair) if kind == "and" else Or(pair)
    return rule


@st.composite
def _deep(
    draw: st.DrawFn,
    base: st.SearchStrategy[Node],
    fillers: st.SearchStrategy[Node] | None,
    min_depth: int,
    max_depth: int,
) -> tuple[Node, Node]:
    rule = draw(base, label="base")
    links = draw(_links(fillers), label="links")
    depth = draw(st.integers(min_depth, max_depth), label="depth")
    nots = sum(links[level % len(links)][0] == "not" for level in range(depth))
    return _chain(rule, links, depth), Not(rule) if nots % 2 else rule


def deep_rules(
    base: st.SearchStrategy[Node] | None = None,
    fillers: st.SearchStrategy[Node] | None = None,
    *,
    min_depth: int = 100,
    max_depth: int = 1_000,
) -> st.SearchStrategy[Node]:
    """A ``base`` rule (``typed_rules(4)`` by default) under a chain of NOT, AND and OR, ``min_depth``
    to ``max_depth`` levels deep: a NOT chain, alternating AND(OR(...)), or any mix.

    Each AND or OR holds the rule below and one filler drawn from ``fillers`` (conditions, by default
    ``typed_conditions``), before or after it. Give ``fillers=None`` for fillers that change nothing
    (see ``deep_pairs``).
    """
    chosen = typed_conditions if fillers is None else fillers
    return _deep(typed_rules(4) if base is None else base, chosen, min_depth, max_depth).map(lambda pair: pair[0])


def deep_pairs(
    base: st.SearchStrategy[Node] | None = None, *, min_depth: int = 100, max_depth: int = 1_000
) -> st.SearchStrategy[tuple[Node, Node]]:
    """A deep rule and the shallow rule it means: the base, or NOT of it for an odd number of NOTs.

    The chain's fillers are ``ALWAYS_TRUE`` under AND and ``ALWAYS_FALSE`` under OR, so they change
    nothing, unknowns included.
    """
    return _deep(typed_rules(4) if base is None else base, None, min_depth, max_depth)


# -- customers ----------------------------------------------------------------

_garbage = st.sampled_from(["", "   ", "n/a", "2025-13-45", "not a phone", "1e999", float("nan"), object(), b"bytes"])
_attribute_values: dict[str, st.SearchStrategy[Any]] = {
    "city": _words | st.none() | _garbage | st.integers(0, 5),
    "pet": _words | st.lists(_words, max_size=3) | st.none() | _garbage,
    "vehicle_year": st.integers(2015, 2028) | st.integers(2015, 2028).map(str) | st.none() | _garbage,
    "subscribed": st.booleans() | st.sampled_from(["yes", "no", 0, 1]) | st.none() | _garbage,
    "created_at": _days | _instants | _days.map(dt.date.isoformat) | st.none() | _garbage,
    "phone": st.sampled_from(["514-555-0199", "+1 514 555 0199", "438.555.0100"]) | st.none() | _garbage,
    "tags": st.lists(st.sampled_from(["VIP", "vip", "gold", "", "vipx"]), max_size=3) | st.none() | _garbage,
}


@st.composite
def attribute_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """A customer's attributes as a plain dict: some missing, some malformed."""
    keys = draw(st.lists(st.sampled_from(sorted(_attribute_values)), unique=True))
    return {key: draw(_attribute_values[key]) for key in keys}


_event_times = _instants | _days | _days.map(dt.date.isoformat)


@st.composite
def events(draw: st.DrawFn) -> Event:
    """An appointment (or another event), with or without a service."""
    name = draw(st.sampled_from(["appointment", "appointment", "invoice"]))
    service = draw(st.none() | _words | _garbage)
    return Event(name, draw(_event_times), {} if service is None else {"service": service})


@st.composite
def customers(draw: st.DrawFn) -> Customer:
    """A customer with random attributes and events; ids 1-4 so groups hold some."""
    return Customer(draw(st.integers(1, 4)), draw(attribute_dicts()), draw(st.lists(events(), max_size=3)))
