"""The in-memory evaluator: the reference meaning of every rule.

A rule is compiled once into a :class:`Predicate`. Compilation checks the rule
against a schema, decides how each condition compares (its *kind*), and
generates one Python function for the rule's boolean structure. Every value of
the rule is bound as a constant; no rule text is ever pasted into the source.

Three-valued logic costs nothing at run time: each node is compiled twice, as
"is true" and as "is false". ``NOT`` swaps the two, ``AND`` is true when every
item is true and false when any is false, ``OR`` the reverse, so the generated
code is plain short-circuit Python. A customer matches when the rule is true.
"""

from __future__ import annotations

import bisect
import builtins
import datetime as dt
import functools
import itertools
import operator
import threading
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any, TypeAlias, cast

import attrs

from ._html import html_verdicts
from .ast import (
    EVENT_TIME,
    FIELD_AGGREGATES,
    Aggregate,
    And,
    Condition,
    DatePart,
    InGroup,
    Node,
    Not,
    Op,
    Or,
    RuleLike,
    Sequel,
    abbreviations,
    fold,
)
from .errors import RuleError
from .model import Customer, CustomerId, Event
from .parser import MAX_LITERAL_CHARS, MAX_RULE_CHARS
from .schema import Schema, default_schema
from .semantics import (
    Shape,
    Spec,
    as_rule,
    conditions,
    connective,
    describe_spec,
    exact_sides,
    exact_spec,
    kleene,
    moment,
    resolve,
    resolve_window,
    shape_of,
)
from .values import (
    DEFAULT_REGION,
    Kind,
    coercer,
    date_part,
    decimal_sum,
    exact_decimal,
    is_known,
    resolve_tz,
    to_time,
)

__all__ = ["Explanation", "Predicate", "compile", "explain", "matches", "validate"]

GroupLookup: TypeAlias = Callable[[str], Container[CustomerId]]

def validate(
    rule: RuleLike,
    schema: Schema | None = None,
    *,
    max_rule_chars: int = MAX_RULE_CHARS,
    max_literal_chars: int = MAX_LITERAL_CHARS,
) -> Node:
    """Check a rule against a schema (the default one when None) and return its AST.

    Raises UnknownAttributeError for a name the schema lacks (with the nearest
    known one) and RuleTypeError when a condition cannot work on its types.
    Rule text is parsed as :func:`cohorts.parse` does, with the same limits:
    RuleLimitError when the text is over ``max_rule_chars`` characters or a
    string literal over ``max_literal_chars``.

    Example:
        >>> validate('customer.vehicle_year contains 5')
        Traceback (most recent call last):
        ...
        cohorts.errors.RuleTypeError: contains does not apply to a number: customer.vehicle_year contains 5
    """
    node = as_rule(rule, max_rule_chars=max_rule_chars, max_literal_chars=max_literal_chars)
    for condition in conditions(node):
        shape_of(condition, schema or default_schema())
    return node


# -- binding a condition to a moment ----------------------------------------


_CHECK_SOURCE = {
    "==": "{v} == {k}",
    "<": "{v} < {k}",
    "<=": "{v} <= {k}",
    ">": "{v} > {k}",
    ">=": "{v} >= {k}",
    "in": "{v} in {k}",
    "has": "{k} in {v}",
    "starts": "{v}.startswith({k})",
    "ends": "{v}.endswith({k})",
    "matches": "{k}.search({v})",
}


def _spec_source(spec: Spec, var: str, constant: Callable[[Any], str]) -> str:
    clauses = [
        " and ".join(_CHECK_SOURCE[symbol].format(v=var, k=constant(k)) for symbol, k in clause) or "True"
        for clause in spec
    ]
    if not clauses:
        return "False"
    return "(" + " or ".join(f"({c})" for c in clauses) + ")"


def _spec_function(spec: Spec) -> Callable[[Any], bool]:
    constants: list[Any] = []

    def constant(value: Any) -> str:
        constants.append(value)
        return f"_k{len(constants) - 1}"

    body = _spec_source(spec, "v", constant)
    args = "".join(f", _k{i}=_k{i}" for i in range(len(constants)))
    namespace = {f"_k{i}": value for i, value in enumerate(constants)}
    exec(_code(f"def _test(v{args}):\n    return {body}\n"), namespace)  # noqa: S102 - built from the spec
    function: Callable[[Any], bool] = namespace["_test"]
    return function


@attrs.frozen
class _Bound:
    """A condition ready to run at one ``now``: how to read a customer and test the value."""

    shape: Shape
    get: Callable[[Customer], Any]  # value to test: None when unknown
    test: Callable[[Any], bool]  # two-valued test of a known value
    existential: bool  # get returns a list of values; the condition is any(test)
    shown: Any  # the resolved value, for explanations
    spec: Spec | None = None  # the test as checks, when the generated code can inline it
    get_source: tuple[str, tuple[Any, ...]] | None = None  # ``get`` as source: template and constants
    window: str | None = None  # a count's window, resolved, for explanations
    sides: Callable[[Customer], tuple[Any, Any]] | None = None  # a comparison's two values, for explanations
    kept: Callable[[Customer], Sequence[Event]] | None = None  # the events a where or a sequel keeps


def _reader(shape: Shape, tz: dt.tzinfo, region: str) -> Callable[[Any], Any]:
    """How the condition reads a stored value: its kind's reading, a date part, or (untyped) known-ness."""
    kind, path = shape.kind, shape.condition.path
    if path.part is not None:
        part, as_time = path.part, coercer(Kind.TIME, tz, region)
        return lambda raw: None if (t := as_time(raw)) is None else date_part(t, part, tz)
    if kind is None:
        return lambda raw: True if is_known(raw) else None
    return coercer(kind, tz, region)


def _known(bound: _Bound) -> _Bound:
    """``is known`` of a value: true or false, never unknown."""
    get = bound.get
    return attrs.evolve(
        bound, get=lambda c: get(c) is not None, test=lambda v: v, spec=((("==", True),),), get_source=None
    )


def _bind(shape: Shape, now: dt.datetime, tz: dt.tzinfo, region: str) -> _Bound:
    if shape.compared is not None:
        return _bind_comparison(shape, now, tz, region)
    read = _reader(shape, tz, region)
    spec, shown = resolve(shape, now, tz)
    counted = resolve_window(shape, now, tz)
    keep = event_filter(shape, now, tz=tz, region=region)
    bound = _bind_source(shape, read, spec, shown, tz, region, counted, keep)
    if shape.op is Op.IS_KNOWN and not bound.existential:
        return _known(bound)
    return bound


_ORDER_TESTS: dict[Op, Callable[[Any, Any], bool]] = {
    Op.EQ: operator.eq,
    Op.LT: operator.lt,
    Op.LE: operator.le,
    Op.GT: operator.gt,
    Op.GE: operator.ge,
}


def _bind_comparison(shape: Shape, now: dt.datetime, tz: dt.tzinfo, region: str) -> _Bound:
    """Two values of the customer compared: unknown when either is, else the test of the pair."""
    assert shape.compared is not None
    left, right = (_value_getter(side, now, tz, region) for side in shape.compared)
    if exact_sides(shape):  # a sum is an exact decimal: so is the other side, as its text writes it
        left, right = _exact(left), _exact(right)
    order = _ORDER_TESTS[shape.op]

    def get(c: Customer) -> tuple[Any, Any] | None:
        if (a := left(c)) is None or (b := right(c)) is None:
            return None
        return a, b

    def test(pair: tuple[Any, Any]) -> bool:
        return order(pair[0], pair[1])

    return _Bound(shape, get, test, False, None, sides=lambda c: (left(c), right(c)))


def _exact(get: Callable[[Customer], Any]) -> Callable[[Customer], Any]:
    """``get`` with its numbers as exact decimals (:func:`cohorts.values.exact_decimal`)."""

    def exact(c: Customer) -> Any:
        value = get(c)
        return exact_decimal(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    return exact


def _value_getter(side: Shape, now: dt.datetime, tz: dt.tzinfo, region: str) -> Callable[[Customer], Any]:
    """The reading of one side of a comparison: one value per customer, None when unknown."""
    read = _reader(side, tz, region)
    counted = resolve_window(side, now, tz)
    keep = event_filter(side, now, tz=tz, region=region)
    # (a side is never a list: an undeclared attribute holding one reads as unknown)
    return _bind_source(side, read, ((),), None, tz, region, counted, keep).get


def event_filter(shape: Shape, now: dt.datetime, *, tz: dt.tzinfo, region: str) -> Callable[[Event], bool] | None:
    """The test of one event that the aggregate's where gives (None without a where): true keeps it.

    Each condition of the where reads the one event, so the where is generated as a rule is, with
    the event in the place of the customer: an event the where is false or unknown for is left out.
    """
    where = shape.condition.path.where
    if where is None:
        return None
    bound = {}
    for inner in shape.where:
        read = _reader(inner, tz, region)
        spec, shown = resolve(inner, now, tz)
        get, source = _field_getter(inner.condition.path.attribute, read)
        # (the generated code reads the event where a rule reads the customer: both hold attributes)
        one = _Bound(inner, cast(Callable[[Customer], Any], get), _spec_function(spec), False, shown, spec, source)
        bound[id(inner.condition)] = _known(one) if inner.op is Op.IS_KNOWN else one
    test = _generate(where, bound)
    return lambda e: test(e, _no_groups)  # type: ignore[arg-type]


def _field_getter(name: str, read: Callable[[Any], Any]) -> tuple[Callable[[Event], Any], tuple[str, tuple[Any, ...]]]:
    """The reading of field ``name`` of one event (its time for ``at``), and the same as source."""
    if name == EVENT_TIME:
        return (lambda e: read(e.at)), ("{0}(c.at)", (read,))
    return (lambda e: read(e.attributes.get(name))), ("{0}(c.attributes.get({1}))", (read, name))


def _bind_source(
    shape: Shape,
    read: Callable[[Any], Any],
    spec: Spec,
    shown: Any,
    tz: dt.tzinfo,
    region: str,
    counted: Spec | None = None,
    keep: Callable[[Event], bool] | None = None,
) -> _Bound:
    """Attach the condition's test to where its value comes from (``counted``: an aggregate's window,
    ``keep``: its where)."""
    op, path = shape.op, shape.condition.path
    test = _spec_function(spec)
    if path.is_customer:
        name = path.attribute
        if shape.is_list:
            get = _list_getter(name, read)
            if op is Op.CONTAINS and shape.kind is Kind.TEXT:
                # On a list, contains means "has an element equal to".
                contains_test, equal = test, shape.value

                def test(v: Any) -> bool:
                    if type(v) is list:
                        return equal in v
                    return contains_test(v)

            # (the element-equality test above sees the whole list: no _any_of around it)
            whole_list = op is Op.CONTAINS and shape.kind is Kind.TEXT
            return _Bound(shape, get, test if whole_list else _any_of(test), False, shown)
        get = lambda c: read(c.attributes.get(name))
        return _Bound(shape, get, test, False, shown, spec, ("{0}(c.attributes.get({1}))", (read, name)))

    event = path.category
    aggregate = path.aggregate
    window = None if counted is None else describe_spec(counted)
    events: Callable[[Customer], Sequence[Event]]
    filtered = keep is not None or path.then is not None
    if aggregate is not None and (counted is not None or filtered):
        inside = None if counted is None else _spec_function(counted)
        events = _events_kept(event, inside, keep, tz, None if path.then is None else _sequel_test(path.then, tz))
    else:
        events = lambda c: c.events_named(event)
    kept = events if filtered else None  # for explanations: how many of the events the aggregate read
    if aggregate is Aggregate.COUNT:
        if counted is None and not filtered:
            get = lambda c: len(c.events_named(event))
            return _Bound(shape, get, test, False, shown, spec, ("len(c.events_named({0}))", (event,)))
        get = lambda c: len(events(c))
        return _Bound(shape, get, test, False, shown, spec, ("{0}(c)", (get,)), window, kept=kept)
    if aggregate in FIELD_AGGREGATES:
        assert aggregate is not None and path.field is not None
        get = _field_aggregate(events, path.field, aggregate, read)
        if aggregate in (Aggregate.SUM, Aggregate.AVG):  # compared as exact decimals
            spec = exact_spec(spec)
            test = _spec_function(spec)
        return _Bound(shape, get, test, False, shown, spec, ("{0}(c)", (get,)), window, kept=kept)
    if aggregate is not None:
        get = _extreme_time(events, aggregate is Aggregate.LAST_TIME, tz)
        if path.part is not None:
            part, extreme = path.part, get
            get = lambda c: None if (t := extreme(c)) is None else date_part(t, part, tz)
        return _Bound(shape, get, test, False, shown, spec, ("{0}(c)", (get,)), window, kept=kept)

    field = path.attribute
    if field == "at":

        def get(c: Customer) -> Any:
            return [v for e in c.events_named(event) if (v := read(e.at)) is not None]
    else:

        def get(c: Customer) -> Any:
            return [v for e in c.events_named(event) if (v := read(e.attributes.get(field))) is not None]

    return _Bound(shape, get, test, True, shown)


def _events_kept(
    event: str,
    inside: Callable[[Any], bool] | None,
    keep: Callable[[Event], bool] | None,
    tz: dt.tzinfo,
    then: Callable[[Customer], Callable[[Event], bool]] | None = None,
) -> Callable[[Customer], list[Event]]:
    """The getter of the events named ``event`` that an aggregate reads: those whose readable time
    passes the window's test ``inside``, that ``keep`` (the where) keeps, and that the customer's
    test ``then`` (a followed by or preceded by) keeps, when given."""
    datetime = dt.datetime

    def get(c: Customer) -> list[Event]:
        found = []
        sequel = None if then is None else then(c)
        for e in c.events_named(event):
            if sequel is not None and not sequel(e):
                continue
            if inside is not None:
                t = e.at
                if t.__class__ is not datetime or t.tzinfo is None:
                    t = to_time(t, tz)  # type: ignore[assignment]
                    if t is None:
                        continue
                if not inside(t):
                    continue
            if keep is None or keep(e):
                found.append(e)
        return found

    return get


def _sequel_test(then: Sequel, tz: dt.tzinfo) -> Callable[[Customer], Callable[[Event], bool]]:
    """For a customer, the test of one of their events that ``then`` gives: whether an event named
    ``then.event`` comes strictly after it (before it, when preceded), within the span when given."""
    other, span = then.event, None if then.within is None else then.within.delta()
    preceded, negated = then.preceded, then.negated

    def for_customer(c: Customer) -> Callable[[Event], bool]:
        times = sorted(t for e in c.events_named(other) if (t := to_time(e.at, tz)) is not None)

        def test(e: Event) -> bool:
            t = to_time(e.at, tz)
            if t is None:
                return False  # (never: an event's time is checked when it is stored)
            if preceded:
                index = bisect.bisect_left(times, t) - 1
                found = index >= 0 and (span is None or times[index] >= t - span)
            else:
                index = bisect.bisect_right(times, t)
                found = index < len(times) and (span is None or times[index] <= t + span)
            return found != negated

        return test

    return for_customer


def _field_aggregate(
    events: Callable[[Customer], Sequence[Event]], field: str, aggregate: Aggregate, read: Callable[[Any], Any]
) -> Callable[[Customer], Any]:
    """The getter of ``sum``, ``avg``, ``min`` or ``max`` of ``field`` over the customer's ``events``
    (those of the window and the where): the values ``read`` gives, unreadable ones skipped.

    A sum is exact (:func:`cohorts.values.decimal_sum`), 0 over no values; an average is the exact
    fraction sum / count; the average, minimum and maximum of no values are unknown (None).
    """

    def values(c: Customer) -> list[Any]:
        return [v for e in events(c) if (v := read(e.attributes.get(field))) is not None]

    match aggregate:
        case Aggregate.SUM:
            return lambda c: decimal_sum(values(c))
        case Aggregate.AVG:
            return lambda c: Fraction(decimal_sum(found)) / len(found) if (found := values(c)) else None
        case Aggregate.MIN:
            return lambda c: min(found) if (found := values(c)) else None
    return lambda c: max(found) if (found := values(c)) else None


def _extreme_time(
    events: Callable[[Customer], Sequence[Event]], latest: bool, tz: dt.tzinfo
) -> Callable[[Customer], dt.datetime | None]:
    """The getter of ``first_time`` / ``last_time``: the earliest or latest readable time of ``events``."""
    datetime = dt.datetime

    def get(c: Customer) -> dt.datetime | None:
        best = None
        for e in events(c):
            t = e.at
            if t.__class__ is not datetime or t.tzinfo is None:
                t = to_time(t, tz)  # type: ignore[assignment]
                if t is None:
                    continue
            if best is None or (t > best if latest else t < best):
                best = t
        return best  # type: ignore[return-value]

    return get


def _list_getter(name: str, read: Callable[[Any], Any]) -> Callable[[Customer], Any]:
    def get(c: Customer) -> Any:
        raw = c.attributes.get(name)
        if isinstance(raw, list | tuple | set | frozenset):
            values = [v for item in raw if (v := read(item)) is not None]
            return values or None
        return read(raw)

    return get


def _any_of(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def run(v: Any) -> bool:
        if type(v) is list:
            return any(test(item) for item in v)
        return test(v)

    return run


# -- generating the rule's function ----------------------------------------

# Subtrees deeper than this become functions of their own, so generated source
# never nests beyond what Python's parser accepts (200 parentheses, a condition
# adding a few). Evaluating a rule then takes one call per this many levels.
_MAX_INLINE_DEPTH = 64


class _Codegen:
    def __init__(self) -> None:
        self.constants: list[Any] = []
        self.functions: list[str] = []
        self.counter = itertools.count()

    def constant(self, value: Any) -> str:
        self.constants.append(value)
        return f"_k{len(self.constants) - 1}"

    def node(self, root: Node, bound: Mapping[int, _Bound]) -> tuple[str, str]:
        """Source of (is true, is false) for ``root``, built bottom-up without recursion.

        A subtree nested deeper than ``_MAX_INLINE_DEPTH`` becomes a pair of functions.
        """

        def step(node: Node, parts: list[tuple[str, str, int]]) -> tuple[str, str, int]:
            true_src, false_src, nesting = self.combine(node, parts, bound)
            if nesting <= _MAX_INLINE_DEPTH:
                return true_src, false_src, nesting
            name = f"_sub{next(self.counter)}"
            self.functions.append(
                f"def {name}_t(c, _groups):\n    return {true_src}\n"
                f"def {name}_f(c, _groups):\n    return {false_src}\n"
            )
            return f"{name}_t(c, _groups)", f"{name}_f(c, _groups)", 0

        true_src, false_src, _ = fold(root, step)  # (true, false, nesting)
        return true_src, false_src

    def combine(
        self, node: Node, parts: list[tuple[str, str, int]], bound: Mapping[int, _Bound]
    ) -> tuple[str, str, int]:
        """Source of (is true, is false, nesting) for ``node`` from the sources of its children."""
        match node:
            case And() | Or():
                nesting = 1 + max(n for _, _, n in parts)
                true_join, false_join = f" {connective(node, True)} ", f" {connective(node, False)} "
                return (
                    "(" + true_join.join(t for t, _, _ in parts) + ")",
                    "(" + false_join.join(f for _, f, _ in parts) + ")",
                    nesting,
                )
            case Not():
                true_src, false_src, nesting = parts[0]
                return false_src, true_src, nesting
            case InGroup(group, negated):
                name = self.constant(group)
                true_src = f"(c.id in _groups({name}))"
                false_src = f"(c.id not in _groups({name}))"
                return (false_src, true_src, 0) if negated else (true_src, false_src, 0)
            case Condition():
                return (*self.condition(bound[id(node)]), 0)
        raise TypeError(f"not a rule node: {node!r}")

    def condition(self, b: _Bound) -> tuple[str, str]:
        var = f"_v{next(self.counter)}"
        if b.spec is not None and b.get_source is not None and not b.existential:
            template, constants = b.get_source
            get_src = template.format(*(self.constant(k) for k in constants))
            test_src = _spec_source(b.spec, var, self.constant)
            true_src = f"(({var} := {get_src}) is not None and {test_src})"
            false_src = f"(({var} := {get_src}) is not None and not {test_src})"
            return (false_src, true_src) if b.shape.negated else (true_src, false_src)
        get = self.constant(b.get)
        test = self.constant(b.test)
        if b.existential:
            true_src = f"any(map({test}, {get}(c)))"
            false_src = f"(not {true_src})"
        else:
            true_src = f"(({var} := {get}(c)) is not None and {test}({var}))"
            false_src = f"(({var} := {get}(c)) is not None and not {test}({var}))"
        if b.shape.negated:
            return false_src, true_src
        return true_src, false_src


def _no_groups(name: str) -> Container[CustomerId]:
    raise RuleError(f'the rule refers to group "{name}"; evaluate it with groups=...')


def _generate(rule: Node, bound: Mapping[int, _Bound]) -> Callable[[Customer, GroupLookup], bool]:
    gen = _Codegen()
    true_src, _ = gen.node(rule, bound)
    names = ", ".join(f"_k{i}" for i in range(len(gen.constants)))
    unpack = f"    {names}, = _K\n" if gen.constants else ""
    source = (
        f"{''.join(gen.functions)}"
        "def _make(_K):\n"
        f"{unpack}"
        "    def _rule(c, _groups):\n"
        f"        return {true_src}\n"
        "    return _rule\n"
    )
    # The functions of deep subtrees sit beside _make and read the constants as globals: nested in
    # _make, each would have Python's compiler copy all of _make's names (seconds for a deep rule).
    namespace: dict[str, Any] = {f"_k{i}": value for i, value in enumerate(gen.constants)} if gen.functions else {}
    exec(_code(source), namespace)  # noqa: S102 - generated from the AST, values bound as constants
    rule_fn: Callable[[Customer, GroupLookup], bool] = namespace["_make"](tuple(gen.constants))
    return rule_fn


@functools.lru_cache(maxsize=1024)
def _code(source: str) -> Any:
    # Rules of the same structure share one code object.
    return builtins.compile(source, "<cohorts rule>", "exec")


# -- the public API ---------------------------------------------------------


class Predicate:
    """A compiled rule: call it on a customer, or ``select`` over many.

    Thread-safe and reusable. Relative times (``30 days ago``) are resolved
    once per ``now``, not per customer.

    Example:
        >>> from cohorts import Customer
        >>> p = compile('customer.city = "Laval"')
        >>> p(Customer(1, {"city": "LAVAL"}))
        True
        >>> list(p.select([Customer(1, {"city": "Laval"}), Customer(2, {})]))
        [1]
    """

    def __init__(self, rule: Node, schema: Schema | None, tz: dt.tzinfo, region: str) -> None:
        self.rule = rule
        self.schema = schema
        self.tz = tz
        self.region = region
        self._shapes = {id(c): shape_of(c, schema) for c in conditions(rule)}
        self._lock = threading.Lock()
        self._cached: tuple[dt.datetime, Callable[[Customer, GroupLookup], bool]] | None = None
        self._has_time = any(
            s.kind is Kind.TIME
            or s.condition.path.window is not None
            or s.condition.path.part is DatePart.ANNIVERSARY  # (the days it stands for move with now)
            or any(w.kind is Kind.TIME or w.condition.path.part is DatePart.ANNIVERSARY for w in s.where)
            for shape in self._shapes.values()
            for s in (shape.compared or (shape,))
        )

    def __repr__(self) -> str:
        return f"<Predicate {self.rule}>"

    def __str__(self) -> str:
        """The rule's canonical text, which parses back to the same rule."""
        return str(self.rule)

    def _bound(self, now: dt.datetime) -> dict[int, _Bound]:
        return {key: _bind(shape, now, self.tz, self.region) for key, shape in self._shapes.items()}

    def _function(self, now: dt.datetime) -> Callable[[Customer, GroupLookup], bool]:
        cached = self._cached
        if cached is not None and (cached[0] == now or not self._has_time):
            return cached[1]
        fn = _generate(self.rule, self._bound(now))
        with self._lock:
            self._cached = (now, fn)
        return fn

    def __call__(
        self, customer: Customer, now: dt.datetime | None = None, *, groups: GroupLookup | None = None
    ) -> bool:
        """True when the rule is true for ``customer`` at ``now``."""
        fn = self._function(moment(now, self.tz))
        return bool(fn(customer, groups or _no_groups))

    def select(
        self, customers: Iterable[Customer], now: dt.datetime | None = None, *, groups: GroupLookup | None = None
    ) -> Iterator[CustomerId]:
        """The ids of the customers for whom the rule is true, in order."""
        fn = self._function(moment(now, self.tz))
        lookup = groups or _no_groups
        for customer in customers:
            if fn(customer, lookup):
                yield customer.id

    def explain(
        self, customer: Customer, now: dt.datetime | None = None, *, groups: GroupLookup | None = None
    ) -> Explanation:
        """Why the rule is true, false or unknown for ``customer``."""
        at = moment(now, self.tz)
        return _explain(self.rule, self._bound(at), customer, groups or _no_groups)


@functools.lru_cache(maxsize=256)
def _compile_cached(rule: Node, schema: Schema | None, tz: dt.tzinfo, region: str) -> Predicate:
    return Predicate(rule, schema, tz, region)


def compile(  # noqa: A001 - the public name the API promises
    rule: RuleLike,
    schema: Schema | None = None,
    tz: str | dt.tzinfo | None = None,
    region: str = DEFAULT_REGION,
) -> Predicate:
    """Compile a rule (text or AST) into a reusable, thread-safe :class:`Predicate`.

    The rule is validated against ``schema``; without one, the attributes of
    :func:`default_schema` keep their types and others are typed by the
    rule's values. ``tz`` (default UTC) reads naive datetimes and calendar
    words; ``region`` is the default country of phone numbers.

    Example:
        >>> import datetime as dt
        >>> from cohorts import Customer, Event
        >>> rule = compile('repair_order.closed.last_time < 730 days ago'
        ...                ' AND customer.vehicle_model contains "Escape"')
        >>> c = Customer("c1", {"vehicle_model": "Ford Escape"},
        ...              [Event("repair_order.closed", "2026-03-01T10:00")])
        >>> rule(c, now=dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc))
        True

    .. versionadded:: 0.1
    """
    node = as_rule(rule)
    zone = resolve_tz(tz)
    try:
        return _compile_cached(node, schema, zone, region)
    except TypeError:  # an unhashable schema mapping: compile without the cache
        return Predicate(node, schema, zone, region)


def matches(
    rule: RuleLike,
    customer: Customer,
    now: dt.datetime | None = None,
    *,
    schema: Schema | None = None,
    tz: str | dt.tzinfo | None = None,
    groups: GroupLookup | None = None,
) -> bool:
    """True when ``rule`` is true for ``customer`` at ``now``.

    Example:
        >>> from cohorts import Customer
        >>> matches('customer.city != "Laval"', Customer(1, {}))  # unknown is not a match
        False
    """
    return compile(rule, schema=schema, tz=tz)(customer, now, groups=groups)


# -- explanations -----------------------------------------------------------


@attrs.frozen(eq=False, repr=False)  # eq, hash and repr below, without recursion
class Explanation:
    """How a rule (or one of its parts) came out for one customer.

    Attributes:
        rule: the node explained, as canonical text.
        result: True, False, or None for unknown.
        value: the customer's value the condition looked at (conditions only).
        compared_to: the resolved value it was compared with (``30 days ago``
            becomes an instant).
        children: the explanations of an AND, OR or NOT's parts.
        window: for a count in a window (``appointment.count(last 90 days)``),
            the window resolved at ``now``, as an interval of instants
            (``[start, end]``; a parenthesis excludes its end).
        stored: the customer's attribute as stored, where ``value`` is a reading of it
            that differs (text folded to ``'ford escape se'``, a phone as E.164);
            None otherwise.
        aggregate: with a window, what the condition computes over the window's events
            (``count``, ``sum``, ``avg``, ``min``, ``max``).
        kept: for an aggregate with a where or a followed by / preceded by, how many of the
            customer's events of that name it read, and how many there are: ``(2, 5)``.
        compared: the condition compares two values of the customer
            (``checkout.last_time > order.last_time``): ``value`` is the first one's and
            ``compared_to`` the other's, None when unknown.
    """

    rule: str
    result: bool | None
    value: Any = None
    compared_to: Any = None
    children: tuple[Explanation, ...] = ()
    window: str | None = attrs.field(default=None, repr=False)  # shown by str(); reprs stay as before windows
    stored: Any = attrs.field(default=None, repr=False)
    aggregate: str | None = attrs.field(default=None, repr=False)
    compared: bool = attrs.field(default=False, repr=False)
    kept: tuple[int, int] | None = attrs.field(default=None, repr=False)

    @property
    def matched(self) -> bool:
        """True when the customer matches (the rule is true)."""
        return self.result is True

    def lines(self, indent: int = 0) -> Iterator[str]:
        """The explanation as indented lines (without recursion: rules may nest deeply)."""
        stack: list[tuple[Explanation, int]] = [(self, indent)]
        while stack:
            node, level = stack.pop()
            word = {True: "true", False: "false", None: "unknown"}[node.result]
            line = f"{'  ' * level}[{word}] {node.rule}"
            if not node.children:
                if node.stored is not None:
                    line += f"  (value: {_show(node.stored)}, read as {_show(node.value)}"
                else:
                    line += f"  (value: {_show(node.value)}"
                if node.window is not None:
                    counted = node.aggregate in (None, Aggregate.COUNT.value)
                    line += f" {'counted in' if counted else 'over the events in'} {node.window}"
                if node.kept is not None:
                    line += f", from {node.kept[0]} of {node.kept[1]} events"
                if node.compared_to is not None or node.compared:
                    line += f"; compared with {_show(node.compared_to)}"
                line += ")"
            yield line
            stack.extend((child, level + 1) for child in reversed(node.children))

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's plain text: the same text as ``str``."""
        printer.text(str(self))

    def _repr_html_(self) -> str:
        return html_verdicts(str(self))

    def _own(self) -> tuple[Any, ...]:
        return (
            self.rule,
            self.result,
            self.value,
            self.compared_to,
            self.window,
            self.stored,
            self.aggregate,
            self.compared,
            self.kept,
        )

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Explanation)
        pairs = [(self, other)]
        while pairs:
            mine, theirs = pairs.pop()
            if mine is theirs:
                continue
            if len(mine.children) != len(theirs.children) or mine._own() != theirs._own():
                return False
            pairs.extend(zip(mine.children, theirs.children, strict=True))
        return True

    def __hash__(self) -> int:
        return fold(self, lambda node, parts: hash((*node._own(), *parts)), children=lambda node: node.children)

    def __repr__(self) -> str:
        out: list[str] = []
        stack: list[Explanation | str] = [self]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                out.append(item)
                continue
            out.append(
                f"Explanation(rule={item.rule!r}, result={item.result!r}, value={item.value!r}, "
                f"compared_to={item.compared_to!r}, children=("
            )
            pieces: list[Explanation | str] = []
            for index, child in enumerate(item.children):
                pieces.extend((", ", child) if index else (child,))
            pieces.append(",))" if len(item.children) == 1 else "))")
            stack.extend(reversed(pieces))
        return "".join(out)


def _show(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, Fraction):  # an average: as a decimal, to 28 digits where it does not end
        return str(Decimal(value.numerator) / Decimal(value.denominator))
    return repr(value) if isinstance(value, str) else str(value)


def _differs(stored: Any, read: Any) -> bool:
    """Whether the text a condition read (folded, a phone as E.164) would not show the text stored;
    times and numbers read from text show as what they were read as."""
    if isinstance(stored, list | tuple) and isinstance(read, list | tuple):
        return len(stored) != len(read) or any(_differs(a, b) for a, b in zip(stored, read, strict=True))
    return isinstance(stored, str) and isinstance(read, str) and stored != read


def _explain(root: Node, bound: Mapping[int, _Bound], customer: Customer, groups: GroupLookup) -> Explanation:
    """Explain every node, children before parents, without recursion (rules may nest deeply)."""
    texts = abbreviations(root, 100)
    return fold(root, lambda node, parts: _explain_node(node, tuple(parts), texts, bound, customer, groups))


def _explain_node(
    node: Node,
    children: tuple[Explanation, ...],
    texts: Mapping[int, str],
    bound: Mapping[int, _Bound],
    customer: Customer,
    groups: GroupLookup,
) -> Explanation:
    match node:
        case And() | Or() | Not():
            return Explanation(texts[id(node)], kleene(node, [child.result for child in children]), children=children)
        case InGroup(group, negated):
            member = customer.id in groups(group)
            return Explanation(str(node), member != negated, value="member" if member else "not a member")
        case Condition():
            b = bound[id(node)]
            if b.sides is not None:  # two values of the customer compared
                mine, theirs = b.sides(customer)
                compared = None if mine is None or theirs is None else b.test((mine, theirs)) != b.shape.negated
                return Explanation(str(node), compared, value=mine, compared_to=theirs, compared=True)
            value = b.get(customer)
            outcome: bool | None = None
            if b.existential:
                outcome = any(b.test(v) for v in value)
            elif value is not None:
                outcome = b.test(value)
            if b.shape.negated and outcome is not None:
                outcome = not outcome
            stored = None
            if node.path.is_customer and node.path.part is None:
                raw = customer.attributes.get(node.path.attribute)
                if b.shape.op is Op.IS_KNOWN:
                    value = raw  # show what was there
                elif raw is not None and _differs(raw, value):
                    stored = raw
            aggregate = node.path.aggregate
            kept = None
            if b.kept is not None:
                kept = (len(b.kept(customer)), len(customer.events_named(node.path.category)))
            return Explanation(
                str(node),
                outcome,
                value=value,
                compared_to=b.shown,
                window=b.window,
                stored=stored,
                aggregate=None if aggregate is None or b.window is None else aggregate.value,
                kept=kept,
            )
    raise TypeError(f"not a rule node: {node!r}")


def explain(
    rule: RuleLike,
    customer: Customer,
    now: dt.datetime | None = None,
    *,
    schema: Schema | None = None,
    tz: str | dt.tzinfo | None = None,
    groups: GroupLookup | None = None,
) -> Explanation:
    """Explain a rule for one customer: every condition, its result and the values compared.

    Example:
        >>> import datetime as dt
        >>> from cohorts import Customer
        >>> print(explain('customer.city = "Laval" or customer.vehicle_year >= 2019',
        ...               Customer(1, {"vehicle_year": 2017})))
        [unknown] customer.city = "Laval" OR customer.vehicle_year >= 2019
          [unknown] customer.city = "Laval"  (value: unknown; compared with 'laval')
          [false] customer.vehicle_year >= 2019  (value: 2017; compared with 2019)
    """
    return compile(rule, schema=schema, tz=tz).explain(customer, now, groups=groups)
