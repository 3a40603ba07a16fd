"""Group membership as values: origins, a group's definition, and the records of joins and leaves.

A customer is in a group for one or more *origins*: added by hand
(:attr:`Origin.MANUAL`), imported (:attr:`Origin.IMPORTED`), or matched by
the group's rule (:attr:`Origin.RULES`). A manual exclusion keeps a customer
out whatever the origins. :class:`Group` and :func:`origins` answer for one
customer without any store; :class:`Change`, :class:`HistoryEntry`,
:class:`Why` and :class:`Preview` are what :class:`cohorts.Groups` reports.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from typing import Any, TypeAlias

import attrs

from ._html import html_table, html_text, html_verdicts
from .ast import Node, RuleLike
from .evaluate import Explanation, compile  # noqa: A004
from .group_store import Slot
from .model import Customer, CustomerId
from .schema import Schema
from .semantics import as_rule
from .values import DEFAULT_REGION

__all__ = ["Change", "Group", "HistoryEntry", "Members", "Origin", "Preview", "Why", "origins"]

GroupLookup: TypeAlias = Callable[[str], Container[CustomerId]]


class Origin(enum.Enum):
    """Why a customer is in a group."""

    MANUAL = "manual"
    IMPORTED = "imported"
    RULES = "rules"

    def __str__(self) -> str:
        return self.value


NO_ORIGINS: frozenset[Origin] = frozenset()


def optional_rule(rule: RuleLike | None) -> Node | None:
    return None if rule is None else as_rule(rule)


def _ids(values: Iterable[CustomerId]) -> frozenset[CustomerId]:
    if isinstance(values, str | int):
        raise TypeError("customer ids are given as a collection, not a single id")
    return frozenset(values)


@attrs.frozen
class Group:
    """A group's definition and its manual, imported and excluded customer ids, as a value.

    Example:
        >>> vip = Group("VIP", 'customer.status = "gold"', manual=["c2"], excluded=["c3"])
        >>> vip.rule
        Condition(path=Path(category='customer', attribute='status', part=None), op=<Op.EQ: '='>, value='gold')
        >>> sorted(vip.manual)
        ['c2']
    """

    name: str
    rule: Node | None = attrs.field(default=None, converter=optional_rule)
    manual: frozenset[CustomerId] = attrs.field(default=(), converter=_ids)
    imported: frozenset[CustomerId] = attrs.field(default=(), converter=_ids)
    excluded: frozenset[CustomerId] = attrs.field(default=(), converter=_ids)


def origins(
    group: Group,
    customer: Customer,
    now: dt.datetime | None = None,
    *,
    groups: GroupLookup | None = None,
    schema: Schema | None = None,
    tz: str | dt.tzinfo | None = None,
    region: str = DEFAULT_REGION,
) -> frozenset[Origin]:
    """Why ``customer`` is in ``group`` at ``now``: the empty set when they are not.

    An excluded customer has no origin whatever the rule says. ``groups``
    answers ``customer in group "X"`` conditions of the rule.

    Example:
        >>> from cohorts import Customer
        >>> vip = Group("VIP", 'customer.status = "gold"', manual=["c2"], excluded=["c3"])
        >>> sorted(map(str, origins(vip, Customer("c2", {"status": "Gold"}))))
        ['manual', 'rules']
        >>> origins(vip, Customer("c3", {"status": "gold"}))
        frozenset()

    .. versionadded:: 0.1
    """
    if customer.id in group.excluded:
        return NO_ORIGINS
    found = set()
    if customer.id in group.manual:
        found.add(Origin.MANUAL)
    if customer.id in group.imported:
        found.add(Origin.IMPORTED)
    if group.rule is not None and compile(group.rule, schema=schema, tz=tz, region=region)(
        customer, now, groups=groups
    ):
        found.add(Origin.RULES)
    return frozenset(found)


def _origin_set(manual: bool, imported: bool, rules: bool) -> frozenset[Origin]:
    found = ((Origin.MANUAL, manual), (Origin.IMPORTED, imported), (Origin.RULES, rules))
    return frozenset(origin for origin, on in found if on)


# Every combination of marks and rule answer, computed once: (manual, imported, matched) -> origins.
_ORIGIN_SETS = {key: _origin_set(*key) for key in itertools.product((False, True), repeat=3)}


def slot_origins(slot: Slot) -> frozenset[Origin]:
    if slot.excluded:
        return NO_ORIGINS
    rule = slot.rule
    return _ORIGIN_SETS[slot.manual, slot.imported, rule is not None and rule.matched]


def show_origins(found: frozenset[Origin]) -> str:
    return ", ".join(o.value for o in Origin if o in found) or "none"


@attrs.frozen
class Change:
    """A customer's origins in a group changed: a join, a leave, or a change of origins.

    Attributes:
        group: the group's name.
        customer_id: the customer.
        before: the origins before (empty: was not a member).
        after: the origins after (empty: is not a member any more).
        at: the ``now`` at which the change was found.
        cause: why: ``"data"`` (the customer's data changed), ``"time"`` (time alone changed the rule's
            answer), ``"rule"`` (the rule was set or changed), ``"manual"``, ``"import"``, ``"excluded"``
            (an exclusion was set or lifted) or ``"deleted"`` (the customer was deleted).
    """

    group: str
    customer_id: CustomerId
    before: frozenset[Origin]
    after: frozenset[Origin]
    at: dt.datetime
    cause: str = "data"

    @property
    def joined(self) -> bool:
        """The customer was not a member and now is."""
        return not self.before and bool(self.after)

    @property
    def left(self) -> bool:
        """The customer was a member and now is not."""
        return bool(self.before) and not self.after

    @property
    def kind(self) -> str:
        """``"joined"``, ``"left"`` or ``"changed"`` (origins changed, still a member)."""
        return "joined" if self.joined else "left" if self.left else "changed"

    @property
    def gained(self) -> frozenset[Origin]:
        """Origins the customer has now and did not have."""
        return self.after - self.before

    @property
    def lost(self) -> frozenset[Origin]:
        """Origins the customer had and has no more."""
        return self.before - self.after

    def __str__(self) -> str:
        return (
            f"{self.customer_id!r} {self.kind} {self.group!r} "
            f"({show_origins(self.before)} -> {show_origins(self.after)})"
        )


@attrs.frozen
class Why:
    """Why a customer is, or is not, in a group.

    Attributes:
        group: the group's name.
        customer_id: the customer.
        origins: the customer's origins (empty: not a member).
        manual, imported, excluded: the marks set by hand or by imports.
        rule: the group's rule text (None without rules).
        rule_version: the rule's current version.
        matched_version: the version that admitted the customer (None when the
            rules do not match).
        since: when the rules started matching.
        evaluated_at: when the rules were last evaluated for this customer.
        next_check: the next instant time alone could change the answer.
        explanation: the rule's :class:`cohorts.Explanation` at ``now``.
    """

    group: str
    customer_id: CustomerId
    origins: frozenset[Origin]
    manual: bool
    imported: bool
    excluded: bool
    rule: str | None
    rule_version: int
    matched_version: int | None
    since: dt.datetime | None
    evaluated_at: dt.datetime | None
    next_check: dt.datetime | None
    explanation: Explanation | None

    @property
    def member(self) -> bool:
        """The customer is in the group."""
        return bool(self.origins)

    def lines(self) -> Iterator[str]:
        """The answer as lines of text."""
        state = "is in" if self.member else "is not in"
        yield f"customer {self.customer_id!r} {state} group {self.group!r}"
        if self.excluded:
            yield "  excluded by hand: kept out whatever the origins"
        yield f"  origins: {show_origins(self.origins)}"
        marks = [word for word, on in (("added by hand", self.manual), ("imported", self.imported)) if on]
        if marks:
            yield "  marks: " + ", ".join(marks)
        if self.rule is None:
            yield "  the group has no rules"
            return
        if self.matched_version is not None:
            when = f" since {_day(self.since)}" if self.since else ""
            yield f"  matched rule version {self.matched_version}{when}"
        else:
            yield f"  does not match rule version {self.rule_version}"
        if self.evaluated_at is not None:
            yield f"  last evaluated {self.evaluated_at.isoformat()}"
        if self.next_check is not None:
            yield f"  the answer may change with time at {self.next_check.isoformat()}"
        if self.explanation is not None:
            yield from ("  " + line for line in self.explanation.lines())

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's plain text: the same text as ``str``."""
        printer.text(str(self))

    def _repr_html_(self) -> str:
        return html_verdicts(str(self))  # the explanation lines keep their coloured verdicts


class Members(Mapping[CustomerId, frozenset[Origin]]):
    """A group's members at a moment and the origins of each, as :meth:`cohorts.Groups.members`
    returns them: a read-only mapping in id order, equal to the dict of the same items.

    In a notebook it shows as a table with a column per origin; :meth:`rows` gives the same rows as
    plain dicts, for ``pandas.DataFrame(members.rows())`` or ``csv.DictWriter``.

    Example:
        >>> import datetime as dt
        >>> members = Members("VIP", dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        ...                   {1: frozenset({Origin.RULES}), 2: frozenset({Origin.MANUAL, Origin.RULES})})
        >>> members[2] == {Origin.MANUAL, Origin.RULES}, len(members)
        (True, 2)
        >>> members.rows()[1]
        {'customer_id': 2, 'manual': True, 'imported': False, 'rules': True}
    """

    __slots__ = ("_origins", "at", "group")

    #: How many rows a notebook shows (the rest is counted below the table).
    SHOWN = 50

    def __init__(self, group: str, at: dt.datetime, origins: Mapping[CustomerId, frozenset[Origin]]) -> None:
        self.group = group
        self.at = at
        self._origins = {cid: origins[cid] for cid in sorted_ids(origins)}

    def __getitem__(self, customer_id: CustomerId) -> frozenset[Origin]:
        return self._origins[customer_id]

    def __iter__(self) -> Iterator[CustomerId]:
        return iter(self._origins)

    def __len__(self) -> int:
        return len(self._origins)

    def __repr__(self) -> str:
        return repr(self._origins)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per member: ``customer_id`` and a true/false column per origin."""
        return [_member_row(cid, found) for cid, found in self._origins.items()]

    def _repr_html_(self) -> str:
        caption = f"{self.group}: {len(self):,} members at {self.at.isoformat()}"
        rows = [_member_row(cid, found) for cid, found in itertools.islice(self._origins.items(), self.SHOWN)]
        more = len(self) - len(rows)
        tail = f"<p>… and {more:,} more (<code>.rows()</code> has them all)</p>" if more else ""
        return html_table(rows, caption) + tail


def _member_row(customer_id: CustomerId, found: frozenset[Origin]) -> dict[str, Any]:
    return {"customer_id": customer_id, **{origin.value: origin in found for origin in Origin}}


def _day(moment: dt.datetime | None) -> str:
    return "" if moment is None else moment.date().isoformat()


@attrs.frozen
class Preview:
    """Who a new rule would bring in and send out, before it is saved.

    Attributes:
        group: the group's name.
        rule: the proposed rule's text.
        before: how many members the group has now.
        after: how many it would have.
        joining: how many customers would join.
        leaving: how many would leave.
        joining_sample: up to ``sample`` of those who would join.
        leaving_sample: up to ``sample`` of those who would leave.
    """

    group: str
    rule: str | None
    before: int
    after: int
    joining: int
    leaving: int
    joining_sample: tuple[CustomerId, ...]
    leaving_sample: tuple[CustomerId, ...]

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's plain text: the same text as ``str``."""
        printer.text(str(self))

    def _repr_html_(self) -> str:
        return html_text(str(self))

    def __str__(self) -> str:
        lines = [
            f"group {self.group!r}: {self.before} -> {self.after} members "
            f"({self.joining} joining, {self.leaving} leaving)"
        ]
        if self.joining_sample:
            lines.append("  joining: " + ", ".join(map(repr, self.joining_sample)))
        if self.leaving_sample:
            lines.append("  leaving: " + ", ".join(map(repr, self.leaving_sample)))
        return "\n".join(lines)


def sorted_ids(ids: Iterable[CustomerId]) -> list[CustomerId]:
    return sorted(ids, key=lambda i: (isinstance(i, str), i))


_ORIGIN_BITS = {Origin.MANUAL: 1, Origin.IMPORTED: 2, Origin.RULES: 4}


def origin_bits(found: frozenset[Origin]) -> int:
    return sum(_ORIGIN_BITS[o] for o in found)


_OF_BITS = tuple(frozenset(o for o, bit in _ORIGIN_BITS.items() if bits & bit) for bits in range(8))


def origins_of_bits(bits: int) -> frozenset[Origin]:
    return _OF_BITS[bits]


@attrs.frozen
class HistoryEntry:
    """One join, leave or change of origins of a customer in a group, as :meth:`Groups.history` gives it.

    Attributes:
        group: the group's name (its current name, if it was renamed since).
        customer_id: the customer.
        joined: whether the customer is a member after this entry (False: it left).
        origins: the origins after this entry (empty when it left).
        gained: the origins it gained.
        lost: the origins it lost.
        version: the version of the group's rule in force.
        at: the ``now`` at which it was found.
        cause: ``"data"``, ``"time"``, ``"rule"``, ``"manual"``, ``"import"``, ``"excluded"`` or ``"deleted"``
            (see :class:`Change`).

    .. versionadded:: 0.3
    """

    group: str
    customer_id: CustomerId
    joined: bool
    origins: frozenset[Origin]
    gained: frozenset[Origin]
    lost: frozenset[Origin]
    version: int
    at: dt.datetime
    cause: str

    def __str__(self) -> str:
        what = "in" if self.joined else "out"
        return f"{self.at.isoformat()} {self.group!r} {self.customer_id!r} {what} ({self.cause})"
