"""What a group's rule reads, and when time alone could change its answer.

A :class:`Plan` is a group's rule compiled once per version: its predicate,
the attributes and events it reads (for the digests that tell which groups a
data change concerns), the groups it refers to, and its *time conditions*.
For each stored answer, :meth:`Plan.next_change` gives the next instant at
which time alone could change it (``repair_order.closed.last_time < 30 days
ago`` turns false 30 days after the repair), so a read at a later ``now``
revisits only what is due.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import operator
from collections.abc import Callable, Container, Sequence
from typing import Any, TypeAlias

import attrs

from .ast import (
    EVENT_TIME,
    FIELD_AGGREGATES,
    Aggregate,
    Anchor,
    And,
    Condition,
    DatePart,
    Duration,
    InGroup,
    Node,
    Not,
    Op,
    Or,
    Path,
    Relative,
    Unit,
    transform,
    walk,
)
from .evaluate import Predicate, compile, event_filter  # noqa: A004
from .group_store import GroupDef
from .model import Customer, CustomerId, Event
from .parser import parse
from .schema import Schema
from .semantics import MONTH_DAYS, PLACEHOLDER_NAME, Shape, anniversary_test, passes, shape_of, time_test, window_op
from .values import Kind, date_part, day_start, month_start, shift, to_time

__all__ = ["Plan", "TimeCondition", "digest_keys_version", "digest_of", "read_key"]

GroupLookup: TypeAlias = Callable[[str], Container[CustomerId]]


# -- what a rule reads, and when time could change its answer --------------

_PLACEHOLDER = PLACEHOLDER_NAME
_SECOND = dt.timedelta(seconds=1)
_UNCERTAINTY = {
    Unit.MINUTES: (dt.timedelta(0), _SECOND),
    Unit.HOURS: (dt.timedelta(0), _SECOND),
    Unit.DAYS: (dt.timedelta(hours=2), dt.timedelta(hours=2)),
    Unit.WEEKS: (dt.timedelta(hours=2), dt.timedelta(hours=2)),
    Unit.MONTHS: (dt.timedelta(hours=2), dt.timedelta(days=4, hours=2)),
    Unit.YEARS: (dt.timedelta(hours=2), dt.timedelta(days=4, hours=2)),
}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_STEPS = {
    Unit.MINUTES: dt.timedelta(minutes=1),
    Unit.HOURS: dt.timedelta(hours=1),
    Unit.DAYS: dt.timedelta(days=1),
    Unit.WEEKS: dt.timedelta(weeks=1),
}
# Identical time conditions of different rules share one number, so their turning points are computed once.
_CONDITION_IDS: dict[tuple[Path, Op, Any], int] = {}
_FIXED_ZONES = frozenset({"UTC", "Etc/UTC", "GMT", "Etc/GMT", "Zulu", "Etc/Zulu"})
_ANCHOR_DAYS = {Anchor.TODAY: 0, Anchor.YESTERDAY: -1, Anchor.TOMORROW: 1}
_MONTH_ANCHORS = frozenset({Anchor.THIS_MONTH, Anchor.LAST_MONTH, Anchor.NEXT_MONTH})
_EXACT = (dt.timedelta(0), _SECOND)
# A calendar day's turning point moves from 24 hours by at most the daylight-saving change (at most 2
# hours anywhere), and :meth:`TimeCondition.candidates` allows 2 hours around it: both, either way.
_DAYLIGHT = dt.timedelta(hours=4)


def moves(value: object) -> bool:
    if isinstance(value, tuple):
        return any(moves(v) for v in value)
    return isinstance(value, Relative | Anchor | Duration)


def read_key(path: Path) -> str:
    return f"customer.{path.attribute}" if path.is_customer else f"event:{path.category}"


@attrs.frozen(eq=False)
class TimeCondition:
    """A condition whose answer moves with ``now``: what it reads and how to find its turning points."""

    path: Path
    op: Op  # the positive operator
    value: Any
    tz: dt.tzinfo
    # The test of one event that the path's where gives at a moment (None: no where).
    where: Callable[[dt.datetime], Callable[[Event], bool]] | None = None
    fixed: bool = attrs.field(init=False)
    aggregate: Aggregate | None = attrs.field(init=False)
    key: int = attrs.field(init=False)
    # (the moment, the where's test at it): one pair, replaced whole
    _last: list[tuple[dt.datetime, Callable[[Event], bool]]] = attrs.field(init=False, factory=list)
    # the anniversaries an anniversary test passes, by moment (midnights)
    _passing: dict[dt.datetime, frozenset[int]] = attrs.field(init=False, factory=dict)
    # (the moment, each anniversary's next turning point after it): one pair, replaced whole
    _flip_table: list[tuple[dt.datetime, dict[int, dt.datetime]]] = attrs.field(init=False, factory=list)

    def __attrs_post_init__(self) -> None:
        # A zone without daylight saving: calendar arithmetic is exact there.
        fixed = isinstance(self.tz, dt.timezone) or getattr(self.tz, "key", None) in _FIXED_ZONES
        object.__setattr__(self, "fixed", fixed)
        object.__setattr__(self, "aggregate", self.path.aggregate)
        object.__setattr__(
            self, "key", _CONDITION_IDS.setdefault((self.path, self.op, self.value), len(_CONDITION_IDS))
        )

    def values(self, customer: Customer, now: dt.datetime) -> list[dt.datetime]:
        """The customer's instants this condition compares at ``now``."""
        path, tz = self.path, self.tz
        if path.is_customer:
            raw = customer.attributes.get(path.attribute)
            items = raw if isinstance(raw, list | tuple | set | frozenset) else (raw,)
            return [t for item in items if (t := to_time(item, tz)) is not None]
        events: Sequence[Event] = customer.events_named(path.category)
        if self.where is not None:
            # The events the where keeps now. Those it keeps change only at the turning points of
            # its own conditions, which are conditions of the plan too (Plan).
            keep = self._filter(now)
            events = [e for e in events if keep(e)]
        aggregate = self.aggregate
        if aggregate is Aggregate.COUNT:
            return []
        if aggregate in FIELD_AGGREGATES:  # min or max of a time field
            field = path.field
            assert field is not None  # shape_of checked it
            found = [t for e in events if (t := to_time(e.attributes.get(field), tz)) is not None]
            if path.window is not None or path.then is not None or not found:
                # In a window the extreme may be any event's value (the window's own turning points
                # are another condition's): every value's turning points cover it.
                return found
            return [min(found) if aggregate is Aggregate.MIN else max(found)]
        if aggregate is not None:
            times = [t for e in events if (t := to_time(e.at, tz)) is not None]
            if path.window is not None or path.then is not None or not times:
                # in a window (or among the events another follows) the extreme may be any event's
                # time, as for min and max above
                return times
            return [min(times) if aggregate is Aggregate.FIRST_TIME else max(times)]
        if path.attribute == "at":
            return [t for e in events if (t := to_time(e.at, tz)) is not None]
        return [t for e in events if (t := to_time(e.attributes.get(path.attribute), tz)) is not None]

    def _filter(self, now: dt.datetime) -> Callable[[Event], bool]:
        """The where's test of an event at ``now``, made once per moment (a refresh reads one ``now``).

        The moment and its test are kept as one pair, read once, so threads sharing the plan never
        take one moment's test for another's.
        """
        assert self.where is not None
        cached = self._last[0] if self._last else None
        if cached is not None and cached[0] == now:
            return cached[1]
        keep = self.where(now)
        self._last[:] = [(now, keep)]
        return keep

    def candidates(self, v: dt.datetime) -> list[tuple[dt.datetime, dt.timedelta, dt.timedelta]]:
        """Instants near which the test of ``v`` can flip, each with how early and late the flip may be."""
        tz, op = self.tz, self.op
        items = self.value if isinstance(self.value, tuple) else (self.value,)
        out: list[tuple[dt.datetime, dt.timedelta, dt.timedelta]] = []
        for item in items:
            match item:
                case Relative(amount, unit, ago):
                    k = -amount if ago else amount
                    if op in (Op.EQ, Op.IN) and unit not in (Unit.MINUTES, Unit.HOURS):
                        for edge in (day_start(v, tz), day_start(v, tz, 1)):
                            out.append(self._inverse(edge, -k, unit))
                    else:
                        out.append(self._inverse(v, -k, unit))
                    out.extend(self._clamped(v, -k, unit))
                case Anchor.NOW:
                    out.append((v, *_EXACT))
                case Anchor() if item in _MONTH_ANCHORS:
                    # the month's edges: the test of v can flip only when now enters another month
                    out.extend((month_start(v, tz, k), *_EXACT) for k in range(-2, 3))
                case Anchor():
                    offset = _ANCHOR_DAYS[item]
                    out.append((day_start(v, tz, -offset), *_EXACT))
                    out.append((day_start(v, tz, 1 - offset), *_EXACT))
                case Duration(amount, unit):
                    sign = amount if op is Op.WITHIN_LAST else -amount
                    out.append((v, *_EXACT))
                    out.append(self._inverse(v, sign, unit))
                    out.extend(self._clamped(v, sign, unit))
        return out

    def offsets(self) -> list[tuple[dt.timedelta, dt.timedelta, dt.timedelta]] | None:
        """The turning points as fixed offsets from the value, when every one is (None otherwise).

        Each ``(offset, early, late)`` says the test of ``v`` can flip only within
        ``[v + offset - early, v + offset + late]``: the same instants :meth:`candidates` gives, with
        margins wide enough for daylight saving (a day on the calendar is 23 to 25 hours), so a
        database can find the next turning point with integer arithmetic. Calendar months and
        years, and days named by the calendar (``today``, ``= 3 days ago``), are not fixed offsets.
        """
        if self.path.part is DatePart.ANNIVERSARY:
            return None  # the days of the calendar
        items = self.value if isinstance(self.value, tuple) else (self.value,)
        out: list[tuple[dt.timedelta, dt.timedelta, dt.timedelta]] = []
        for item in items:
            match item:
                case Relative(amount, unit, ago) if unit in _STEPS:
                    if self.op in (Op.EQ, Op.IN) and unit not in (Unit.MINUTES, Unit.HOURS):
                        return None  # the edges of a day of the calendar
                    out.append(self._offset(amount if ago else -amount, unit))
                case Duration(amount, unit) if unit in _STEPS:
                    out.append((dt.timedelta(0), *_EXACT))
                    out.append(self._offset(amount if self.op is Op.WITHIN_LAST else -amount, unit))
                case Anchor.NOW:
                    out.append((dt.timedelta(0), *_EXACT))
                case _:
                    return None
        return out

    def _offset(self, amount: int, unit: Unit) -> tuple[dt.timedelta, dt.timedelta, dt.timedelta]:
        if self.fixed or unit in (Unit.MINUTES, Unit.HOURS):  # exact: no daylight saving, or absolute units
            return (amount * _STEPS[unit], *_EXACT)
        return (amount * _STEPS[unit], _DAYLIGHT, _DAYLIGHT)

    def _clamped(self, v: dt.datetime, amount: int, unit: Unit) -> list[tuple[dt.datetime, dt.timedelta, dt.timedelta]]:
        """The extra turning points of a month-end ``v``, where ``now ± N months`` clamps to the month's end.

        ``now - 1 month`` is Feb 28 21:00 at Mar 28 21:00 but Feb 28 00:00 at Mar 29 00:00: the boundary
        steps back at each midnight of the clamped days and passes ``v``'s clock time again each day, so
        the test of a Feb 28 21:00 event flips at Mar 29 00:00, Mar 29 21:00, Mar 30 00:00, ... Apr 1 00:00.
        """
        if unit not in (Unit.MONTHS, Unit.YEARS) or v.astimezone(self.tz).day < 28:
            return []
        instant = shift(v, amount, unit, self.tz)
        clock = instant.astimezone(self.tz).timetz().replace(tzinfo=None)
        out = []
        for days in range(1, 5):
            midnight = day_start(instant, self.tz, days)
            out.append((midnight, *_EXACT))
            local = midnight.astimezone(self.tz)
            at = local.replace(hour=clock.hour, minute=clock.minute, second=clock.second, microsecond=clock.microsecond)
            out.append((at, *_EXACT))
        return out

    def _inverse(self, v: dt.datetime, amount: int, unit: Unit) -> tuple[dt.datetime, dt.timedelta, dt.timedelta]:
        """When a boundary ``now - amount units`` reaches ``v``: about ``v + amount units``.

        Exact in a fixed-offset zone unless months clamp (Jan 31 + 1 month);
        otherwise the flip lies within the returned margins.
        """
        if self.fixed:
            step = _STEPS.get(unit)
            if step is not None:  # no daylight saving: a day is 24 hours
                return (v + amount * step, *_EXACT)
            instant = shift(v, amount, unit, self.tz)
            if shift(instant, -amount, unit, self.tz) == v:
                return (instant, *_EXACT)
            return (instant, *_UNCERTAINTY[unit])
        return (shift(v, amount, unit, self.tz), *_UNCERTAINTY[unit])

    def test_at(self, v: dt.datetime, moment: dt.datetime) -> bool:
        """The positive test of ``v`` at ``moment``: any alternative whose checks all hold."""
        spec, _ = time_test(self.op, self.value, moment, self.tz)
        return any(all(_COMPARE[symbol](v, bound) for symbol, bound in checks) for checks in spec)

    def first_flip(self, v: dt.datetime, now: dt.datetime, end: dt.datetime) -> dt.datetime | None:
        """The first instant in (now, end] at which the test of ``v`` differs from now's, or None."""
        start = self.test_at(v, now)
        step = dt.timedelta(hours=6)
        low, probe = now, min(now + step, end)
        while self.test_at(v, probe) == start:
            if probe >= end:
                return None
            low, probe = probe, min(probe + step, end)
        high = probe
        while high - low > dt.timedelta(microseconds=1):
            middle = low + (high - low) / 2
            if self.test_at(v, middle) == start:
                low = middle
            else:
                high = middle
        return high

    def next_flip(self, customer: Customer, now: dt.datetime) -> dt.datetime | None:
        """The earliest instant after ``now`` at which this condition could change for ``customer``."""
        if self.path.part is DatePart.ANNIVERSARY:
            return self._anniversary_flip(customer, now)
        found = [t for v in self.values(customer, now) if (t := self.turning_point(v, now)) is not None]
        return min(found, default=None)

    def _anniversary_flip(self, customer: Customer, now: dt.datetime) -> dt.datetime | None:
        """The first midnight after ``now`` at which the test of one of the customer's anniversaries
        changes: the days an anniversary test stands for change only when a day begins (its windows
        are of whole days, weeks, months or years), and within a year and a month every day has come
        round."""
        codes = {code for v in self.values(customer, now) if (code := date_part(v, DatePart.ANNIVERSARY, self.tz))}
        flips = self._flips(now)
        return min((flip for code in codes if (flip := flips.get(code)) is not None), default=None)

    def _flips(self, now: dt.datetime) -> dict[int, dt.datetime]:
        """For every anniversary, the first midnight after ``now`` at which its test changes: made once per
        moment, for all customers (one pair, replaced whole, as the where's test)."""
        cached = self._flip_table[0] if self._flip_table else None
        if cached is not None and cached[0] == now:
            return cached[1]
        start = self._anniversaries(now)
        pending, table = set(MONTH_DAYS), {}
        for days in range(1, 400):
            try:
                midnight = day_start(now, self.tz, days)
            except (OverflowError, ValueError):
                break
            passing = self._anniversaries(midnight)
            for code in [c for c in pending if (c in passing) != (c in start)]:
                table[code] = midnight
                pending.discard(code)
            if not pending:
                break
        self._flip_table[:] = [(now, table)]
        return table

    def _anniversaries(self, moment: dt.datetime) -> frozenset[int]:
        """The anniversaries (month-day numbers) the test passes at ``moment``, kept by moment."""
        found = self._passing.get(moment)
        if found is None:
            try:
                spec, _ = anniversary_test(self.op, self.value, moment, self.tz)
            except (OverflowError, ValueError):
                return frozenset()
            found = frozenset(code for code in MONTH_DAYS if passes(spec, code))
            if len(self._passing) > 1000:
                self._passing.clear()
            self._passing[moment] = found
        return found

    def turning_point(self, v: dt.datetime, now: dt.datetime) -> dt.datetime | None:
        """The earliest instant after ``now`` at which the test of the value ``v`` could change."""
        try:
            candidates = self.candidates(v)
        except (OverflowError, ValueError):
            return None  # beyond the calendar's range: no turning point time can reach
        best: dt.datetime | None = None
        for instant, early, late in candidates:
            found: dt.datetime | None
            try:
                if instant - early > now:
                    found = instant - early
                elif instant + late > now:
                    found = self.first_flip(v, now, instant + late)
                else:
                    found = None
            except (OverflowError, ValueError):
                found = None
            if found is not None and (best is None or found < best):
                best = found
        return best


def _where_at(shape: Shape, tz: dt.tzinfo, region: str) -> Callable[[dt.datetime], Callable[[Event], bool]]:
    """The test of one event that the condition's where gives, at a moment."""

    def at(now: dt.datetime) -> Callable[[Event], bool]:
        keep = event_filter(shape, now, tz=tz, region=region)
        assert keep is not None  # the condition has a where
        return keep

    return at


def _moving(shape: Shape, tz: dt.tzinfo, region: str) -> list[TimeCondition]:
    """The conditions whose turning points are those of ``shape``'s answer, as time alone goes by."""
    path = shape.condition.path
    found = []
    if path.part is DatePart.ANNIVERSARY and shape.op is not Op.IS_KNOWN and moves(shape.value):
        # the days it stands for move with today: the anniversaries it takes in change at midnights
        where = None if path.where is None else _where_at(shape, tz, region)
        found.append(TimeCondition(path, shape.op, shape.value, tz, where))
    elif shape.kind is Kind.TIME and moves(shape.value):
        where = None if path.where is None else _where_at(shape, tz, region)
        found.append(TimeCondition(path, shape.op, shape.value, tz, where))
    for inner in shape.where:
        anniversary = inner.condition.path.part is DatePart.ANNIVERSARY and inner.op is not Op.IS_KNOWN
        if (inner.kind is Kind.TIME or anniversary) and moves(inner.value):
            # The events a where keeps change when its test of one of them flips: the
            # turning points of the same condition over any event of the category.
            found.append(TimeCondition(inner.condition.path, inner.op, inner.value, tz))
    if path.window is not None and moves(path.window.value):
        # An aggregate in a moving window changes only when one of its events enters or
        # leaves the window: when the window's test of that event's time flips.
        op, value = window_op(path.window)
        found.append(TimeCondition(Path(path.category, EVENT_TIME), op, value, tz))
    return found


def replace_nodes(node: Node, chosen: set[int], placeholder: Node) -> Node:
    return transform(node, lambda item: placeholder if id(item) in chosen else item)


class Plan:
    """A group's rule, compiled once per version: predicate, reads, references and time conditions."""

    def __init__(
        self, definition: GroupDef, schema: Schema | None, tz: dt.tzinfo, region: str, known: Callable[[str], int]
    ) -> None:
        self.definition = definition
        self.gid = definition.id
        self.version = definition.version
        self.rule = None if definition.rule is None else parse(definition.rule)
        self.predicate: Predicate | None = None
        self.reads: frozenset[str] = frozenset()
        self.refs: frozenset[int] = frozenset()
        self.time: tuple[TimeCondition, ...] = ()
        # The rule with its time conditions replaced by an unknown (None: nothing else in it), and the
        # schema that reads it: a customer it is true or false for never changes with time.
        self.static: Node | None = None
        self.static_schema: Schema | None = schema
        self._static: tuple[Predicate, Predicate] | None = None
        if self.rule is None:
            return
        self.predicate = compile(self.rule, schema=schema, tz=tz, region=region)
        reads: set[str] = set()
        refs: set[int] = set()
        timed: list[tuple[Node, TimeCondition]] = []
        for node in walk(self.rule):
            if isinstance(node, Condition):
                shape = shape_of(node, schema)
                # (a comparison of two values reads both, and moves when either one's events do)
                for side in shape.compared or (shape,):
                    timed.extend((node, found) for found in _moving(side, tz, region))
                    reads.add(read_key(side.condition.path))
                    if side.condition.path.then is not None:  # the events it follows or precedes
                        reads.add(read_key(Path(side.condition.path.then.event, EVENT_TIME)))
            elif isinstance(node, InGroup):
                refs.add(known(node.group))
        self.reads, self.refs = frozenset(reads), frozenset(refs)
        self.time = tuple(t for _, t in timed)
        if timed:
            placeholder = Condition(Path("customer", _PLACEHOLDER), Op.EQ, "?")
            static = replace_nodes(self.rule, {id(n) for n, _ in timed}, placeholder)
            if all(isinstance(n, And | Or | Not) or n == placeholder for n in walk(static)):
                return  # nothing but time: the answer always depends on it
            static_schema = None if schema is None else schema.add("customer", _PLACEHOLDER, "text")
            self.static, self.static_schema = static, static_schema
            self._static = (
                compile(static, schema=static_schema, tz=tz, region=region),
                compile(Not(static), schema=static_schema, tz=tz, region=region),
            )

    def matches(self, customer: Customer, now: dt.datetime, groups: GroupLookup) -> bool:
        return self.predicate is not None and self.predicate(customer, now, groups=groups)

    def next_change(
        self,
        customer: Customer,
        now: dt.datetime,
        groups: GroupLookup,
        memo: dict[int, dt.datetime | None] | None = None,
    ) -> dt.datetime | None:
        """The next instant time alone could change the rule's answer for ``customer`` (None: never).

        ``memo`` shares the turning points of identical conditions between
        the rules evaluated for one customer at one ``now``.
        """
        if not self.time:
            return None
        best: dt.datetime | None = None
        for condition in self.time:
            if memo is None:
                found = condition.next_flip(customer, now)
            elif condition.key in memo:
                found = memo[condition.key]
            else:
                found = memo[condition.key] = condition.next_flip(customer, now)
            if found is not None and (best is None or found < best):
                best = found
        if best is None or self._static is None:
            return best
        definitely_true, definitely_false = self._static
        if definitely_true(customer, now, groups=groups) or definitely_false(customer, now, groups=groups):
            return None  # the answer does not depend on the conditions that move with time
        return best


def digest_keys_version(keys: Sequence[str]) -> str:
    return hashlib.blake2b("\n".join(keys).encode(), digest_size=8).hexdigest()


def _read_value(key: str, customer: Customer) -> object:
    if key.startswith("customer."):
        return customer.attributes.get(key[len("customer.") :])
    return tuple((e.at, dict(e.attributes)) for e in customer.events_named(key[len("event:") :]))


def digest_of(keys: Sequence[str], customer: Customer) -> bytes:
    return b"".join(hashlib.blake2b(repr(_read_value(k, customer)).encode(), digest_size=8).digest() for k in keys)
