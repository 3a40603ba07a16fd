"""Rules compiled to one SQL query over the repository's tables, in any :mod:`~cohorts.sql.dialects` dialect.

The compiler renders :mod:`cohorts.semantics`: each condition's shape and its
test resolved at ``now``; :func:`cohorts.semantics.polar_fold` gives the
three-valued structure (every node compiles to SQL true exactly when it is
true, or exactly when it is false, so unknown is neither). What a database
spells differently is the dialect's. Rule values, JSON paths and resolved times
are always bound parameters.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Callable, Collection, Container, Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from ..ast import (
    EVENT_TIME,
    FIELD_AGGREGATES,
    Aggregate,
    Condition,
    DatePart,
    InGroup,
    Node,
    Not,
    Op,
    Path,
    RuleLike,
    Sequel,
)
from ..errors import RuleError
from ..model import CustomerId
from ..repository import members_of
from ..schema import Schema
from ..semantics import (
    Connective,
    Shape,
    Spec,
    as_rule,
    element_spec,
    exact_sides,
    exact_spec,
    from_one,
    moment,
    monotone,
    passes,
    polar_fold,
    resolve,
    resolve_window,
    shape_of,
)
from ..values import Kind, resolve_tz
from .dialects import Dialect, ParamStyle, dialect, sql_type
from .storage import KIND_FIELD, PART_FIELD, micros, part_sql, shadow_key

if TYPE_CHECKING:
    from ..timing import TimeCondition

__all__ = ["Compiler", "Params", "compile_rule", "to_sql"]

GroupLookup: TypeAlias = Callable[[str], Container[CustomerId]]

_MARK = re.compile("\x00([0-9]+)\x00")
FALSE = "(1 = 0)"
TRUE = "(1 = 1)"


class Params:
    """Bound parameters, written into SQL text as markers and rendered in a driver's style."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.values: list[Any] = []

    def __call__(self, value: Any, cast: str | None = None) -> str:
        self.values.append(self.dialect.parameter(value))
        return self.dialect.typed(f"\x00{len(self.values) - 1}\x00", cast)

    def render(self, sql: str, style: ParamStyle | None = None) -> tuple[str, dict[str, Any] | list[Any]]:
        """The SQL with the driver's placeholders, and the parameters it uses (dropped fragments' are left out)."""
        style = style or self.dialect.param_style
        if style == "qmark":
            ordered: list[Any] = []

            def qmark(match: re.Match[str]) -> str:
                ordered.append(self.values[int(match.group(1))])
                return "?"

            return _MARK.sub(qmark, sql), ordered
        template = "%(p{})s" if style == "pyformat" else ":p{}"
        text = _MARK.sub(lambda m: template.format(m.group(1)), sql)
        used = sorted({int(m.group(1)) for m in _MARK.finditer(sql)})
        return text, {f"p{i}": self.values[i] for i in used}


def _sort_key(value: Any) -> tuple[str, Any]:
    return (type(value).__name__, value)


def constant(value: Any) -> Any:
    """A resolved value as SQL compares it: times in microseconds, enums as integers."""
    if isinstance(value, dt.datetime):
        return micros(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)  # Month and Weekday are IntEnums
    return value


def join(connective: Connective, parts: list[str]) -> str:
    """Items joined by AND or OR, as :func:`cohorts.semantics.polar_fold` asks."""
    return "(" + f" {connective.upper()} ".join(parts) + ")"


_SYMBOLS = {Op.EQ: "==", Op.LT: "<", Op.LE: "<=", Op.GT: ">", Op.GE: ">="}
_MIRRORED = {"==": "==", "<": ">", "<=": ">=", ">": "<", ">=": "<="}  # a < b is b > a

# The events table's columns of the date parts of ``at``, by shadow part field.
_EVENT_PART_COLUMNS = {"y": "year", "mo": "month", "d": "day", "w": "weekday"}

MAX_NESTED = 3
"""Subqueries nested in one composed expression at most (SQLite's parser stack holds about four)."""


@attrs.frozen
class Layout:
    """Where the compiled SQL reads customers and events."""

    customers: str = "cohorts_customers"
    events: str = "cohorts_events"


class Compiler:
    """Turns a rule into the WHERE clause of a query over the customers table (alias ``c``)."""

    customer_key = "c.pk"
    """The customer's key in the outer query, which event queries return as ``customer_pk``."""

    inline = False
    """Whether :meth:`split` writes subqueries in place (for an expression without its own statement)."""
    nested = 0
    """How many subqueries :meth:`split` wrote in place."""
    key_type = "BIGINT"
    """The SQL type of the key."""

    def __init__(
        self,
        dialect: Dialect,
        schema: Schema | None,
        tz: dt.tzinfo,
        now: dt.datetime,
        groups: GroupLookup | None,
        layout: Layout = Layout(),
        *,
        staged: bool = False,
    ) -> None:
        self.dialect = dialect
        self.schema = schema
        self.tz = tz
        self.now = now
        self.groups = groups
        self.layout = layout
        self.param = Params(dialect)
        self._aliases = itertools.count(1)
        self._ctes: list[str] = []
        self.staged = staged
        self.stages: list[tuple[str, int]] = []
        """Queries of keys to run first, in order, and the index of the parameter each one's keys fill."""

    def alias(self, prefix: str) -> str:
        """A fresh table alias."""
        return f"{prefix}{next(self._aliases)}"

    def bind(self, value: Any, cast: str | None = None) -> str:
        return self.param(value, cast)

    def select(self, rule: Node, among: str | None = None) -> str:
        """The query of the ids ``rule`` is true for (among the customers whose key, as
        :attr:`customer_key`, the query ``among`` returns, when given)."""
        where = self.where(rule)
        if among is not None:
            where = f"{self.customer_key} IN ({among}) AND {where}"
        return f"{self.with_clause()}SELECT c.id, c.int_id FROM {self.layout.customers} AS c WHERE {where}"  # noqa: S608 - names are ours; values are bound

    def rows(self) -> tuple[str, str]:
        """The table the rule filters (alias ``c``) and the expression of its key."""
        return self.layout.customers, self.customer_key

    def where(self, rule: Node) -> str:
        """SQL true exactly when ``rule`` is true.

        Groups nested deeper than the dialect's ``max_nesting`` become common table
        expressions of the keys they hold for, so no rule is too deep for the database's parser.
        """
        limit, width, tree = self.dialect.max_nesting, self.dialect.max_width, self.dialect.max_tree

        def leaf(node: Condition | InGroup, holds: bool) -> _Part:
            return self.leaf(node, holds), 1, _LEAF_TREE

        def group(connective: Connective, parts: list[_Part]) -> _Part:
            sql = join(connective, [text for text, _, _ in parts])
            depth = 1 + max(depth for _, depth, _ in parts)
            deep = len(parts) + max(t for _, _, t in parts)
            if depth > limit or (tree and deep > tree):
                return self.split(sql), 1, _LEAF_TREE
            return sql, depth, deep

        def joined(connective: Connective, parts: list[_Part]) -> _Part:
            while width and len(parts) > width:  # a wide group as groups of groups (AND and OR are associative)
                parts = [group(connective, parts[i : i + width]) for i in range(0, len(parts), width)]
            return group(connective, parts)

        return polar_fold(rule, True, leaf, joined)[0]

    def split(self, condition: str) -> str:
        """``condition`` as a set of the keys it is true for, and the test of a key in that set.

        In one statement (``to_sql``) the set is a common table expression; a
        repository that runs the query itself compiles with ``staged=True``, and
        each set is then a query of its own (:attr:`stages`) whose keys are bound
        as one parameter of the next, so no statement is too deep.
        """
        table, key = self.rows()
        if self.inline:  # one expression, no statement around it: the set is a subquery of its own
            self.nested += 1
            if self.nested > MAX_NESTED:
                raise RuleError(
                    "the rule is too deep to compose into one SQL expression; select it with a HostRepository"
                    " or HostTable.select, which run it in stages"
                )
            return f"{key} IN (SELECT {key} FROM {table} WHERE {condition})"  # noqa: S608 - names are ours; values are bound
        query = f"SELECT {key} FROM {table} AS c WHERE {condition}"  # noqa: S608 - names are ours; values are bound
        if self.staged:
            index = len(self.param.values)
            test = self.dialect.in_keys(self.bind, key, None, self.key_type)
            self.stages.append((query, index))
            return test
        name = self.alias("d")
        self._ctes.append(f"{name}(k) AS MATERIALIZED ({query})")
        return f"{key} IN (SELECT k FROM {name})"  # noqa: S608 - names are ours

    def with_clause(self) -> str:
        """``WITH ...`` for the expressions :meth:`split` made, or nothing."""
        return f"WITH {', '.join(self._ctes)} " if self._ctes else ""

    def leaf(self, node: Condition | InGroup, holds: bool) -> str:
        if isinstance(node, InGroup):
            member = self.membership(node.group)
            return member if holds != node.negated else f"NOT {member}"
        shape = shape_of(node, self.schema)
        positive = holds != shape.negated
        if shape.compared is not None:
            return self.comparison(shape, positive)
        if shape.condition.path.is_customer:
            return self.customer_condition(shape, positive)
        return self.event_condition(shape, positive)

    def members(self, group: str) -> Collection[CustomerId]:
        """The members of ``group``, from the lookup the rule is evaluated with."""
        if self.groups is None:
            raise RuleError(f'the rule refers to group "{group}"; evaluate it with groups=...')
        return members_of(self.groups, group)

    def membership(self, group: str) -> str:
        members = self.members(group)
        ints = sorted(str(m) for m in members if isinstance(m, int) and not isinstance(m, bool))
        texts = sorted(m for m in members if isinstance(m, str))
        parts = [
            f"({'c.int_id' if flag else 'NOT c.int_id'} AND {self.dialect.in_texts(self.bind, 'c.id', ids)})"
            for ids, flag in ((ints, True), (texts, False))
            if ids
        ]
        return "(" + " OR ".join(parts) + ")" if parts else FALSE

    # -- tests of values

    def spec(self, shape: Shape) -> Spec:
        """The condition's test at ``now``, exactly as the evaluator binds it."""
        return resolve(shape, self.now, self.tz)[0]

    def test(self, spec: Spec, x: str, kind: Kind | None) -> str:
        """SQL true when known value ``x`` passes ``spec`` (NULL or false when ``x`` is NULL)."""
        if not spec:
            return FALSE
        clauses = []
        for clause in spec:
            if not clause:
                return f"({x} IS NOT NULL)"
            clauses.append(" AND ".join(self.check(x, symbol, value, kind) for symbol, value in clause))
        return "(" + " OR ".join(f"({c})" for c in clauses) + ")"

    def check(self, x: str, symbol: str, value: Any, kind: Kind | None) -> str:
        cast = sql_type(kind)
        d, p = self.dialect, self.bind
        if symbol == "in":
            values = sorted((constant(v) for v in value), key=_sort_key)
            if not values:
                return FALSE
            return d.in_list(p, x, values, cast)
        if symbol == "has":
            return d.has(x, p(value, cast))
        if symbol == "starts":
            return d.starts(x, p(value, cast))
        if symbol == "ends":
            return d.ends(x, p(value, cast))
        if symbol == "matches":
            return d.matches(x, p(d.pattern_source(value), "TEXT"))
        return d.compare(x, symbol, p(constant(value), cast), cast)

    # -- reading the shadow

    def field(self, column: str, attribute: str, field: str, kind: Kind | None) -> str:
        """The typed shadow value ``field`` of ``attribute`` (NULL when unknown)."""
        return self.dialect.shadow_field(self.bind, column, shadow_key(attribute), field, kind)

    def present(self, column: str, attribute: str, field: str | None = None) -> str:
        """SQL true when the shadow has ``attribute`` (or one of its fields)."""
        return self.dialect.shadow_present(self.bind, column, shadow_key(attribute), field)

    def elements(self, column: str, attribute: str, field: str, kind: Kind | None, spec: Spec) -> str:
        """SQL true when some element of the list field passes ``spec``."""
        return self.dialect.shadow_elements(
            self.bind, self.alias("j"), column, shadow_key(attribute), field, kind, lambda v: self.test(spec, v, kind)
        )

    def contained(self, attribute: str, field: str, spec: Spec, as_list: bool) -> str | None:
        """Equality tests as containment of shadow documents, where the dialect has an index for it."""
        if len(spec) != 1 or len(spec[0]) != 1:
            return None
        symbol, value = spec[0][0]
        if symbol == "==":
            values = [value]
        elif symbol == "in" and len(value) <= self.dialect.max_list:
            values = sorted(value, key=_sort_key)
        else:
            return None
        key = shadow_key(attribute)
        documents = [{key: {field: [constant(v)] if as_list else constant(v)}} for v in values]
        return self.dialect.shadow_contains(self.bind, "c.shadow", documents)

    # -- conditions on the customer's attributes

    def customer_condition(self, shape: Shape, holds: bool) -> str:
        path, kind = shape.condition.path, shape.kind
        name = path.attribute
        if shape.op is Op.IS_KNOWN:
            if kind is None:
                known = self.present("c.shadow", name)
            else:
                field = KIND_FIELD[kind] if path.part is None else PART_FIELD[path.part.value]
                known = self.present("c.shadow", name, field)
                if shape.is_list and path.part is None:
                    known = f"({known} OR {self.present('c.shadow', name, 'l' + field)})"
            return known if holds else f"NOT ({known})"
        assert kind is not None
        spec = self.spec(shape)
        if path.part is not None:
            field, value_kind = PART_FIELD[path.part.value], Kind.NUMBER
            x = self.shadow_part("c.shadow", name, path.part)
        else:
            field, value_kind = KIND_FIELD[kind], kind
            x = self.field("c.shadow", name, field, value_kind)
        if not shape.is_list:
            if holds:
                # (an anniversary is read from two fields: no one document holds it)
                contained = None if path.part is DatePart.ANNIVERSARY else self.contained(name, field, spec, False)
                return contained or self.test(spec, x, value_kind)
            return f"({x} IS NOT NULL AND NOT {self.test(spec, x, value_kind)})"
        list_field = "l" + field
        elements = element_spec(shape, spec)
        if holds:
            scalar = self.contained(name, field, spec, False) or self.test(spec, x, value_kind)
            listed = self.contained(name, list_field, elements, True) or self.elements(
                "c.shadow", name, list_field, value_kind, elements
            )
            return f"({scalar} OR {listed})"
        scalar = f"({x} IS NOT NULL AND NOT {self.test(spec, x, value_kind)})"
        present = self.present("c.shadow", name, list_field)
        listed = self.elements("c.shadow", name, list_field, value_kind, elements)
        return f"({scalar} OR ({present} AND NOT {listed}))"

    def customer_value(self, shape: Shape) -> str:
        """The customer's attribute read as the shape's kind, or its date part (NULL when unknown; a list
        has no one value)."""
        path, kind = shape.condition.path, shape.kind
        assert kind is not None
        if path.part is not None:
            return self.shadow_part("c.shadow", path.attribute, path.part)
        return self.field("c.shadow", path.attribute, KIND_FIELD[kind], kind)

    def shadow_part(self, column: str, attribute: str, part: DatePart) -> str:
        """A date part of ``attribute`` in the shadow, as a number (NULL when unknown)."""
        return part_sql(part, lambda field: self.field(column, attribute, field, Kind.NUMBER))

    # -- two values of the customer compared

    def comparison(self, shape: Shape, holds: bool) -> str:
        """SQL true when the comparison of two values is true (false, with ``holds`` False); NULL when
        either value is unknown, so neither."""
        assert shape.compared is not None and shape.kind is not None
        first, second = shape.compared
        symbol = _SYMBOLS[shape.op]
        if exact_sides(shape):  # a sum first: compared as exact decimals (Dialect.exact_compare)
            if first.condition.path.aggregate is not Aggregate.SUM:
                first, second, symbol = second, first, _MIRRORED[symbol]
            test = self.dialect.exact_compare(self.value_of(first), symbol, self.value_of(second), None)
        else:
            test = self.dialect.compare(self.value_of(first), symbol, self.value_of(second), sql_type(shape.kind))
        return f"({test})" if holds else f"(NOT ({test}))"

    def value_of(self, side: Shape) -> str:
        """One side of a comparison as a value of the customer's row: an attribute, or an aggregate of
        the customer's events (of its window and where) as a correlated subquery."""
        path, kind = side.condition.path, side.kind
        if path.is_customer:
            return self.customer_value(side)
        assert kind is not None
        e = self.alias("e")
        rows, key = self.event_rows(side, e)
        aggregate = path.aggregate
        if aggregate is Aggregate.COUNT:
            value = "count(*)"
        elif aggregate in (Aggregate.FIRST_TIME, Aggregate.LAST_TIME):
            extreme = "min" if aggregate is Aggregate.FIRST_TIME else "max"
            value = f"{extreme}({self.event_time(side, e)})"
        else:
            assert aggregate in (Aggregate.SUM, Aggregate.MIN, Aggregate.MAX) and path.field is not None
            read = attrs.evolve(side, condition=attrs.evolve(side.condition, path=Path(path.category, path.field)))
            x = self.event_value(read, e, KIND_FIELD[kind], kind)
            if aggregate is Aggregate.SUM:  # exact, and 0 over no values
                value = f"COALESCE({self.dialect.exact_sum(x)}, 0)"
            else:
                value = f"{aggregate.value}({x})"
        return f"(SELECT {value} FROM {rows}{self.event_filter(side, e)} AND {key} = {self.customer_key})"  # noqa: S608 - names are ours; values are bound

    # -- conditions on events

    def semi(self, select: str, negate: bool) -> str:
        """SQL true when the customer's key is (not) among those ``select`` returns."""
        return self.dialect.semi(self.customer_key, select, self.alias("s"), negate)

    # Where events are read: the hooks a compiler over other tables overrides.

    def event_rows(self, shape: Shape, e: str) -> tuple[str, str]:
        """The condition's events as ``table AS e WHERE ...`` (a FROM clause), and the expression of their
        customer's key."""
        name = self.bind(shape.condition.path.category, "TEXT")
        return f"{self.layout.events} AS {e} WHERE {e}.name = {name}", f"{e}.customer_pk"

    def event_source(self, shape: Shape, e: str) -> tuple[str, str]:
        """The query of the customer keys of the condition's events (alias ``e``), and the key's expression."""
        rows, key = self.event_rows(shape, e)
        return f"SELECT {key} FROM {rows}", key  # noqa: S608 - names are ours; values are bound

    def event_time(self, shape: Shape, e: str) -> str:
        """The time of event ``e``, as the TIME tests of this compiler read times."""
        return f"{e}.at"

    def event_timed(self, shape: Shape, e: str) -> str | None:
        """SQL true when event ``e`` has a readable time (None: every event has one)."""
        return None

    def event_time_part(self, shape: Shape, e: str, part: DatePart) -> str:
        """A date part of the time of event ``e``, as a number."""
        return part_sql(part, lambda field: f"{e}.{_EVENT_PART_COLUMNS[field]}")

    def event_part(self, shape: Shape, e: str, part: DatePart) -> str:
        """A date part of the condition's attribute on event ``e``, as a number (NULL when unknown)."""
        return part_sql(part, lambda field: self.event_value(shape, e, field, Kind.NUMBER))

    def event_value(self, shape: Shape, e: str, field: str, kind: Kind) -> str:
        """The reading ``field`` of the condition's attribute on event ``e`` (NULL when unknown)."""
        return self.field(f"{e}.shadow", shape.condition.path.attribute, field, kind)

    def event_known(self, shape: Shape, e: str) -> str:
        """SQL true when the condition's attribute is known on event ``e``."""
        return self.present(f"{e}.shadow", shape.condition.path.attribute)

    def extreme_part(self, shape: Shape, spec: Spec, holds: bool, base: str, e: str, key: str) -> str:
        """A date part of ``first_time``/``last_time``: the part of the customer's earliest/latest event."""
        path = shape.condition.path
        assert path.part is not None
        extreme = "min" if path.aggregate is Aggregate.FIRST_TIME else "max"
        e2 = self.alias("e")
        name2 = self.bind(path.category, "TEXT")
        latest = (
            f"(SELECT {extreme}({e2}.at) FROM {self.layout.events} AS {e2}"  # noqa: S608 - names are ours; values are bound
            f" WHERE {e2}.customer_pk = {key} AND {e2}.name = {name2}{self.event_filter(shape, e2)})"
        )
        test = self.test(spec, self.event_time_part(shape, e, path.part), Kind.NUMBER)
        return self.semi(f"{base} AND {e}.at = {latest} AND {test if holds else 'NOT ' + test}", negate=False)

    def field_aggregate(self, shape: Shape, holds: bool, base: str, e: str, key: str) -> str:
        """``sum``, ``avg``, ``min`` or ``max`` of a field of the events (``base``: those of the window and
        the where): grouped per customer.

        Sums and averages are compared as exact decimals (:meth:`Dialect.exact_compare`; an average as
        ``sum <op> constant * count``); a sum of no values is 0, the others are then unknown.
        """
        path, kind = shape.condition.path, shape.kind
        aggregate = path.aggregate
        assert path.field is not None and kind is not None
        read = attrs.evolve(shape, condition=attrs.evolve(shape.condition, path=Path(path.category, path.field)))
        x = self.event_value(read, e, KIND_FIELD[kind], kind)
        base += f" AND {x} IS NOT NULL"
        if shape.op is Op.IS_KNOWN:
            if aggregate is Aggregate.SUM:
                return TRUE if holds else FALSE
            return self.semi(base, negate=not holds)  # known when some event has a value
        spec = self.spec(shape)
        if aggregate in (Aggregate.MIN, Aggregate.MAX):
            test = self.test(spec, f"{aggregate.value}({x})", kind)
        else:
            spec = exact_spec(spec)
            times = f"count({x})" if aggregate is Aggregate.AVG else None
            test = self.exact_test(spec, self.dialect.exact_sum(x), times)
        having = test if holds else f"NOT {test}"
        if aggregate is Aggregate.SUM and passes(spec, Decimal(0)) == holds:  # no values: 0, which passes
            return self.semi(f"{base} GROUP BY {key} HAVING NOT {having}", negate=True)
        return self.semi(f"{base} GROUP BY {key} HAVING {having}", negate=False)

    def exact_test(self, spec: Spec, total: str, times: str | None) -> str:
        """SQL true when the exact decimal ``total`` (times ``times``: an average) passes ``spec``."""
        d = self.dialect

        def check(symbol: str, value: Any) -> str:
            if symbol == "in":
                found = sorted(value)
                if not found:
                    return FALSE
                return "(" + " OR ".join(check("==", v) for v in found) + ")"
            return d.exact_compare(total, symbol, self.bind(str(value), "NUMERIC"), times)

        if not spec:
            return FALSE
        clauses = [" AND ".join(check(symbol, value) for symbol, value in clause) or TRUE for clause in spec]
        return "(" + " OR ".join(f"({c})" for c in clauses) + ")"

    def event_filter(self, shape: Shape, e: str) -> str:
        """`` AND`` the tests of event ``e`` that the aggregate's window and where give (or nothing).

        The window's bounds are parameters. The where's test is true exactly when the where is: an
        event it is false or unknown for is left out.
        """
        out = ""
        window = resolve_window(shape, self.now, self.tz)
        if window is not None:
            out += f" AND {self.test(window, self.event_time(shape, e), Kind.TIME)}"
        then = shape.condition.path.then
        if then is not None:
            out += f" AND {self.sequel(shape, then, e)}"
        where = shape.condition.path.where
        if where is None:
            return out
        inner = shape.filters()

        def leaf(node: Condition | InGroup, holds: bool) -> str:
            assert isinstance(node, Condition)  # semantics refuses group tests in a where
            return self.field_test(inner[id(node)], holds, e)

        return f"{out} AND {polar_fold(where, True, leaf, join)}"

    def sequel(self, shape: Shape, then: Sequel, e: str) -> str:
        """SQL true when event ``e`` is followed (preceded) by an event named ``then.event`` of the same
        customer, strictly later (earlier) and within the span when given; or is not, when negated."""
        f = self.alias("f")
        other = attrs.evolve(shape, condition=attrs.evolve(shape.condition, path=Path(then.event, EVENT_TIME)))
        rows, key = self.event_rows(other, f)
        mine, theirs = self.event_time(shape, e), self.event_time(other, f)
        if then.preceded:
            tests = [f"{theirs} < {mine}"]
            if then.within is not None:
                tests.append(f"{theirs} >= {self.shift_time(mine, -then.within.delta())}")
        else:
            tests = [f"{theirs} > {mine}"]
            if then.within is not None:
                tests.append(f"{theirs} <= {self.shift_time(mine, then.within.delta())}")
        found = f"EXISTS (SELECT 1 FROM {rows} AND {key} = {self.event_key(shape, e)} AND {' AND '.join(tests)})"  # noqa: S608 - names are ours; values are bound
        return f"NOT {found}" if then.negated else found

    def event_key(self, shape: Shape, e: str) -> str:
        """The customer key of event ``e`` (of the condition's events)."""
        return f"{e}.customer_pk"

    def shift_time(self, time: str, delta: dt.timedelta) -> str:
        """``time`` (as :meth:`event_time` reads times) moved by ``delta``."""
        return f"({time} + {delta // dt.timedelta(microseconds=1):d})"

    def field_test(self, shape: Shape, holds: bool, e: str) -> str:
        """SQL true when the condition on a field of event ``e`` is true for it (false, with ``holds`` False)."""
        path, kind = shape.condition.path, shape.kind
        positive = holds != shape.negated
        if path.attribute == EVENT_TIME:
            if path.part is None:
                x, value_kind = self.event_time(shape, e), Kind.TIME
            else:
                x, value_kind = self.event_time_part(shape, e, path.part), Kind.NUMBER
        elif kind is None:  # is known, untyped: the value's presence
            known = self.event_known(shape, e)
            return known if positive else f"NOT ({known})"
        elif path.part is not None:
            x, value_kind = self.event_part(shape, e, path.part), Kind.NUMBER
        else:
            x, value_kind = self.event_value(shape, e, KIND_FIELD[kind], kind), kind
        if shape.op is Op.IS_KNOWN:
            return f"({x} IS NOT NULL)" if positive else f"({x} IS NULL)"
        test = self.test(self.spec(shape), x, value_kind)
        return test if positive else f"({x} IS NOT NULL AND NOT {test})"

    def event_condition(self, shape: Shape, holds: bool) -> str:
        path, kind = shape.condition.path, shape.kind
        e = self.alias("e")
        base, key = self.event_source(shape, e)
        base += self.event_filter(shape, e)
        aggregate = path.aggregate
        if aggregate in FIELD_AGGREGATES:
            return self.field_aggregate(shape, holds, base, e, key)
        if shape.op is Op.IS_KNOWN and aggregate is not None:
            if aggregate is Aggregate.COUNT:
                return TRUE if holds else FALSE
            timed = self.event_timed(shape, e)  # first/last time: known when there are events with times
            return self.semi(base if timed is None else f"{base} AND {timed}", negate=not holds)
        spec = self.spec(shape)

        if aggregate is Aggregate.COUNT:
            none, some = passes(spec, 0), from_one(spec)
            if some is not None and some != none:  # "some event" or "no event": nothing to count
                return self.semi(base, negate=some != holds)
            test = self.test(spec, "count(*)", Kind.NUMBER)
            having = test if holds else f"NOT {test}"
            if none == holds:  # customers without events pass too
                return self.semi(f"{base} GROUP BY {key} HAVING NOT {having}", negate=True)
            return self.semi(f"{base} GROUP BY {key} HAVING {having}", negate=False)

        if aggregate is not None:
            if path.part is not None:
                return self.extreme_part(shape, spec, holds, base, e, key)
            extreme = "min" if aggregate is Aggregate.FIRST_TIME else "max"
            if holds and monotone(spec) == ("down" if extreme == "min" else "up"):
                # the latest time passes a lower bound when some time does (the earliest, an upper one)
                return self.semi(f"{base} AND {self.test(spec, self.event_time(shape, e), Kind.TIME)}", negate=False)
            test = self.test(spec, f"{extreme}({self.event_time(shape, e)})", Kind.TIME)
            having = test if holds else f"NOT {test}"
            return self.semi(f"{base} GROUP BY {key} HAVING {having}", negate=False)

        # a field of any event of that name: existential, never unknown
        if path.attribute == "at":
            if path.part is None:
                test = self.test(spec, self.event_time(shape, e), Kind.TIME)
            else:
                test = self.test(spec, self.event_time_part(shape, e, path.part), Kind.NUMBER)
        elif kind is None:
            test = self.event_known(shape, e)
        elif path.part is not None:
            test = self.test(spec, self.event_part(shape, e, path.part), Kind.NUMBER)
        else:
            test = self.test(spec, self.event_value(shape, e, KIND_FIELD[kind], kind), kind)
        return self.semi(f"{base} AND {test}", negate=not holds)


_Part: TypeAlias = tuple[str, int, int]  # SQL, groups nested, expression-tree depth (a flat AND/OR of n counts n)
_LEAF_TREE = 12  # about how deep one condition's own SQL is (EXISTS, json_each, CASE ...)


def run_staged(
    compiler: Compiler, sql: str, execute: Callable[[str, dict[str, Any] | list[Any]], Iterable[Sequence[Any]]]
) -> list[Sequence[Any]]:
    """Run a query compiled with ``staged=True``: its stages first, each one's keys bound into the next."""
    params = compiler.param
    for query, index in compiler.stages:
        keys = [row[0] for row in execute(*params.render(query))]
        params.values[index] = compiler.dialect.key_list(keys)
    return list(execute(*params.render(sql)))


def compile_rule(
    rule: RuleLike,
    dialect_name: str | Dialect,
    schema: Schema | None,
    tz: dt.tzinfo,
    now: dt.datetime | None,
    groups: GroupLookup | None,
    layout: Layout = Layout(),
    *,
    staged: bool = False,
) -> tuple[str, Compiler]:
    """The query of ``rule`` and its compiler (whose ``param`` holds the parameters), in the dialect's markers."""
    found = dialect(dialect_name)
    node = as_rule(rule)
    compiler = Compiler(found, schema, tz, moment(now, tz), groups, layout, staged=staged)
    return compiler.select(node), compiler


_MICRO = dt.timedelta(microseconds=1)


def dues_query(
    conditions: Sequence[TimeCondition],
    undecided: Node | None,
    dialect_name: str | Dialect,
    schema: Schema | None,
    tz: dt.tzinfo,
    now: dt.datetime,
    groups: GroupLookup | None,
    insert: str,
    group_id: int,
    *,
    among: str | None = None,
) -> tuple[str, Compiler] | None:
    """The statement ``insert`` + ``SELECT group_id, key, due`` of the next instant at which time alone could change
    a rule's answer, for every customer it could change for, compiled with ``staged=True``.

    ``conditions`` are the rule's conditions that move with time; the query reads the times of
    their events and adds each turning point's offset (:meth:`TimeCondition.offsets`), keeping the
    earliest after ``now``, or ``now`` plus a microsecond when a turning point's margin spans
    ``now`` (the next catch-up then looks closer). ``undecided`` is the rule with those conditions
    replaced by an unknown: a customer it is true or false for never changes with time. ``among``,
    a query of customers' ``pk``, restricts it to them. None when a condition's turning points are
    not fixed offsets of event times (the caller computes them).
    """
    found = dialect(dialect_name)
    at = moment(now, tz)
    compiler = Compiler(found, schema, tz, at, groups, Layout(), staged=True)
    events, n = compiler.layout.events, micros(at)
    parts = []
    for condition in conditions:
        path, offsets = condition.path, condition.offsets()
        if offsets is None or path.is_customer or any(x is not None for x in (path.where, path.window, path.then)):
            return None  # (the extreme of the events a window or a where keeps: computed in Python)
        name = compiler.bind(path.category, "TEXT")
        if among is not None:
            name = f"{name} AND customer_pk IN ({among})"
        if path.aggregate in (Aggregate.LAST_TIME, Aggregate.FIRST_TIME):
            extreme = "MAX" if path.aggregate is Aggregate.LAST_TIME else "MIN"
            source = (
                f"SELECT customer_pk AS pk, {extreme}(at) AS x FROM {events}"  # noqa: S608 - names are ours; values are bound
                f" WHERE name = {name} GROUP BY customer_pk"
            )
        elif path.aggregate is None and path.attribute == EVENT_TIME:
            source = f"SELECT customer_pk AS pk, at AS x FROM {events} WHERE name = {name}"  # noqa: S608 - ours
        else:
            return None
        for offset, early, late in offsets:
            low, high = (offset - early) // _MICRO, (offset + late) // _MICRO
            parts.append(
                f"SELECT s.pk, CASE WHEN s.x + {low:d} > {n:d} THEN s.x + {low:d}"  # noqa: S608 - numbers and our names
                f" WHEN s.x + {high:d} > {n:d} THEN {n + 1:d} END AS due FROM ({source}) AS s"
            )
    if not parts:
        return None
    moving = TRUE  # the customers whose answer depends on the conditions that move
    if undecided is not None:
        # where() is true exactly when the rule is: it may be NULL otherwise.
        true, false = compiler.where(undecided), compiler.where(Not(undecided))
        moving = f"NOT COALESCE({true}, {FALSE}) AND NOT COALESCE({false}, {FALSE})"
    sql = (
        f"{compiler.with_clause()}{insert} SELECT {group_id:d},"  # noqa: S608 - numbers and our names
        " CASE WHEN c.int_id THEN 'i:' ELSE 's:' END || c.id, u.due"
        f" FROM (SELECT a.pk, MIN(a.due) AS due FROM ({' UNION ALL '.join(parts)}) AS a"
        f" WHERE a.due IS NOT NULL GROUP BY a.pk) AS u"
        f" JOIN {compiler.layout.customers} AS c ON c.pk = u.pk WHERE {moving}"
    )
    return sql, compiler


def to_sql(
    rule: RuleLike,
    dialect: str = "postgresql",
    *,
    now: dt.datetime | None = None,
    schema: Schema | None = None,
    tz: str | dt.tzinfo | None = None,
    groups: GroupLookup | None = None,
) -> tuple[str, dict[str, Any] | list[Any]]:
    """The SQL query selecting the ids of the customers ``rule`` is true for, and its bound parameters.

    The query reads the tables :class:`SQLRepository` creates. For
    ``"postgresql"`` the parameters are a dict for ``%(name)s`` placeholders
    (psycopg); for ``"sqlite"`` a list for ``?`` placeholders (sqlite3).
    Values, JSON paths and times resolved at ``now`` are parameters, never
    SQL text.

    Example:
        >>> sql, params = to_sql('customer.city = "Laval"', "sqlite")
        >>> sql
        'SELECT c.id, c.int_id FROM cohorts_customers AS c WHERE ((json_extract(c.shadow, ?) = ?))'
        >>> params
        ['$."city".t', 'laval']

    .. versionadded:: 0.1
    """
    sql, compiler = compile_rule(rule, dialect, schema, resolve_tz(tz), now, groups)
    return compiler.param.render(sql)
