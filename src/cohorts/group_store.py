"""Where groups keep their state: definitions, marks and rule memberships.

:class:`cohorts.Groups` reads and writes through a :class:`GroupStore`. Two
stores exist: :class:`MemoryGroupStore` (here), attached to a
:class:`cohorts.MemoryRepository` as one of its extensions so that the
repository's ``transaction()`` covers it, and ``SQLGroupStore``
(:mod:`cohorts.sql.groups`), which keeps the same records in tables next to
the customers.

What is stored, per group and customer:

- *marks*: ``manual``, ``imported`` and ``excluded`` (set by hand or by imports);
- a :class:`RuleRow` when the rule matched at the last evaluation, or when it
  did not but could start matching later as time passes (``due`` is then the
  next instant at which the rule's answer could change).

Per customer, a *digest* of what the rules read (one short hash per attribute
or event name), so a refresh of changed customers knows which groups to
re-evaluate.

A store that is also :class:`DiffsInDatabase` (``SQLGroupStore``) evaluates a
group over every customer without the customers leaving the database.
"""

from __future__ import annotations

import array
import datetime as dt
import heapq
import itertools
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs

from .errors import GroupError
from .model import CustomerId
from .values import fold_text

if TYPE_CHECKING:
    from .ast import Node
    from .repository import GroupLookup
    from .timing import Plan

__all__ = ["MARKS", "DiffsInDatabase", "GroupDef", "GroupStore", "MemoryGroupStore", "RuleRow", "Slot"]


MARKS = ("manual", "imported", "excluded")
"""The kinds of mark a customer can have in a group."""


def group_key(name: str) -> str:
    """The key of a group's name: names are unique by it (folded: case, accents and spaces)."""
    if not isinstance(name, str):
        raise TypeError(f"a group name is text, not {type(name).__name__}")
    folded = fold_text(name)
    if folded is None:
        raise GroupError("a group needs a name that is not blank")
    return folded



@attrs.frozen
class GroupDef:
    """A group's definition as stored.

    Attributes:
        id: the store's number for the group (stable across renames).
        name: the name as given (unique case-insensitively).
        rule: the rule's canonical text, or None for a group without rules.
        description: free text.
        version: the rule's version: 1 for the first rule, +1 at every change.
        evaluated: the version every customer was last evaluated against
            (lower than ``version`` until the next refresh).
        changed_at: when the rule was last set.
        evaluated_at: the ``now`` of the last evaluation of every customer.
    """

    id: int
    name: str
    rule: str | None = None
    description: str = ""
    version: int = 0
    evaluated: int = 0
    changed_at: dt.datetime | None = None
    evaluated_at: dt.datetime | None = None


@attrs.frozen
class RuleRow:
    """What the rules said about one customer in one group at the last evaluation.

    Attributes:
        matched: the rule was true.
        version: the rule version evaluated.
        since: when the rule started matching (None when not matched).
        evaluated_at: the ``now`` of the last evaluation.
        due: the next instant at which the answer could change with no change
            of data (None: only a data or rule change can change it).
    """

    matched: bool
    version: int
    since: dt.datetime | None
    evaluated_at: dt.datetime
    due: dt.datetime | None = None


@attrs.frozen
class Slot:
    """Everything stored about one customer in one group."""

    manual: bool = False
    imported: bool = False
    excluded: bool = False
    rule: RuleRow | None = None

    @property
    def matched(self) -> bool:
        """The rules matched at the last evaluation."""
        return self.rule is not None and self.rule.matched

    @property
    def empty(self) -> bool:
        """Nothing is stored."""
        return not (self.manual or self.imported or self.excluded) and self.rule is None


EMPTY = Slot()


@attrs.frozen
class HistoryRow:
    """A stored join, leave or change of origins.

    Attributes:
        group_id: the group.
        customer_id: the customer.
        before: the origins before, as bits (1 manual, 2 imported, 4 rules; 0: not a member).
        after: the origins after, as bits.
        version: the rule version in force.
        at: the ``now`` at which it was found.
        cause: ``"data"``, ``"time"``, ``"rule"``, ``"manual"``, ``"import"``, ``"deleted"`` or ``"excluded"``.
    """

    group_id: int
    customer_id: CustomerId
    before: int
    after: int
    version: int
    at: dt.datetime
    cause: str


class GroupStore(Protocol):
    """The records of :class:`cohorts.Groups`; every write happens in the repository's transaction."""

    def definitions(self) -> list[GroupDef]:
        """Every group definition."""
        ...

    def save_definition(self, definition: GroupDef) -> None:
        """Insert or replace the definition with this id."""
        ...

    def save_definitions(self, definitions: Sequence[GroupDef]) -> None:
        """Insert or replace several definitions."""
        ...

    def new_id(self) -> int:
        """An id no group uses."""
        ...

    def drop_group(self, group_id: int) -> None:
        """Delete a group's definition and everything stored for it."""
        ...

    def slots(self, customer_ids: Collection[CustomerId]) -> dict[CustomerId, dict[int, Slot]]:
        """The non-empty slots of these customers, by group id."""
        ...

    def group_slots(self, group_id: int) -> dict[CustomerId, Slot]:
        """The non-empty slots of one group, by customer."""
        ...

    def set_marks(self, group_id: int, kind: str, customer_ids: Iterable[CustomerId], value: bool) -> None:
        """Set or clear a mark (``manual``, ``imported``, ``excluded``)."""
        ...

    def put_rules(self, group_id: int, rows: Mapping[CustomerId, RuleRow | None], *, new: bool = False) -> None:
        """Store rule rows (None deletes the row); ``new`` promises none of them is stored yet."""
        ...

    def put_many(self, rows: Mapping[int, Mapping[CustomerId, RuleRow | None]], *, new: bool = False) -> None:
        """:meth:`put_rules` for several groups at once."""
        ...

    def forget(self) -> None:
        """Drop what the store caches of stored state (after a rollback)."""
        ...

    def due(self, now: dt.datetime) -> list[tuple[int, CustomerId]]:
        """The (group id, customer id) pairs whose ``due`` is at or before ``now``."""
        ...

    def digests(self, customer_ids: Collection[CustomerId]) -> dict[CustomerId, tuple[str, bytes]]:
        """The stored (keys version, digest) of these customers."""
        ...

    def put_digests(self, rows: Mapping[CustomerId, tuple[str, bytes] | None]) -> None:
        """Store digests (None deletes)."""
        ...

    def customer_ids(self) -> set[CustomerId]:
        """Every customer with a digest or a slot."""
        ...

    def drop_customers(self, customer_ids: Collection[CustomerId]) -> None:
        """Forget these customers everywhere."""
        ...

    def get_meta(self, key: str) -> str | None:
        """A stored setting."""
        ...

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting."""
        ...

    def lock(self) -> None:
        """Hold the store for this transaction: other processes' catch-ups wait until it ends."""
        ...

    def add_history(self, rows: Sequence[HistoryRow]) -> None:
        """Append entries to the membership history."""
        ...

    def history(
        self,
        group_id: int | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        customer_id: CustomerId | None = None,
    ) -> list[HistoryRow]:
        """History entries in the order they were added (``start <= at < end``)."""
        ...

    def forget_history(self, before: dt.datetime) -> None:
        """Delete the entries found before ``before``."""
        ...


@runtime_checkable
class DiffsInDatabase(Protocol):
    """A group store in the repository's own database, which evaluates a group's rule over every customer
    and writes the difference with the stored rows there: a full refresh costs a few statements per
    group, not a round trip per customer.

    A pass calls :meth:`start_pass`, then for each group :meth:`stage_rule` and later
    :meth:`apply_rule` (groups of groups in dependency order), in one transaction.
    """

    def start_pass(self, scope: Collection[CustomerId] | None = None) -> None:
        """Forget what an earlier pass staged; with ``scope``, the pass evaluates and writes only these
        customers (when :attr:`scopes`)."""
        ...

    @property
    def scopes(self) -> bool:
        """Whether a pass restricted to some customers is computed in the database too."""
        ...

    def stage_rule(self, group_id: int, rule: Node, now: dt.datetime, groups: GroupLookup | None) -> None:
        """Evaluate ``rule`` over every customer at ``now`` and keep the matches for :meth:`apply_rule`."""
        ...

    def stage_dues(self, group_id: int, plan: Plan, now: dt.datetime, groups: GroupLookup | None) -> bool:
        """Find, in the database, the next instant time alone could change each answer of ``plan``'s
        rule (kept for :meth:`apply_rule`); False when they must be computed in Python."""
        ...

    def staged_members(self, group_id: int) -> set[CustomerId]:
        """The members the group has once its staged matches are applied (or kept after)."""
        ...

    def members(self, group_id: int) -> set[CustomerId]:
        """The group's stored members (its ids only)."""
        ...

    def apply_rule(
        self,
        group_id: int,
        version: int,
        now: dt.datetime,
        dues: Mapping[CustomerId, dt.datetime],
        cause: str,
        *,
        keep: bool = False,
    ) -> list[tuple[CustomerId, int, int]]:
        """Store the staged matches and ``dues`` as the group's rule rows, with their history rows;
        returns each change as (customer, origins before, origins after), in the bits of
        :class:`HistoryRow`. ``keep``: :meth:`staged_members` still answers for the group."""
        ...


_SHARED_ROWS = 4096


class _HistoryChunk:
    """History rows added together, kept column by column: a row costs about 40 bytes, not an object."""

    __slots__ = ("after", "at", "before", "causes", "customers", "groups", "versions")

    def __init__(self, rows: Iterable[HistoryRow]) -> None:
        self.groups, self.versions = array.array("q"), array.array("q")
        self.before, self.after = bytearray(), bytearray()
        self.customers: list[CustomerId] = []
        self.at: list[dt.datetime] = []  # one refresh's rows share their moment and cause objects
        self.causes: list[str] = []
        for row in rows:
            self.groups.append(row.group_id)
            self.customers.append(row.customer_id)
            self.before.append(row.before)
            self.after.append(row.after)
            self.versions.append(row.version)
            self.at.append(row.at)
            self.causes.append(row.cause)

    def __len__(self) -> int:
        return len(self.customers)

    def rows(self) -> Iterator[HistoryRow]:
        columns = (self.groups, self.customers, self.before, self.after, self.versions, self.at, self.causes)
        return itertools.starmap(HistoryRow, zip(*columns, strict=True))


class _Mark:
    """A snapshot handle: the journal position when the snapshot was taken."""

    __slots__ = ("__weakref__", "position")

    def __init__(self, position: int) -> None:
        self.position = position


class MemoryGroupStore:
    """A :class:`GroupStore` in dictionaries, with an undo journal for transactions.

    ``snapshot()`` costs nothing: it returns a handle on the undo journal, and
    ``restore(handle)`` undoes every write made since. The journal is only
    kept while a snapshot handle is alive, so it does not grow between
    transactions.

    Example:
        >>> store = MemoryGroupStore()
        >>> store.save_definition(GroupDef(store.new_id(), "VIP"))
        >>> mark = store.snapshot()
        >>> store.set_marks(1, "manual", ["c1"], True)
        >>> store.restore(mark)
        >>> store.slots(["c1"])
        {}
    """

    def __init__(self) -> None:
        self._defs: dict[int, GroupDef] = {}
        self._marks: dict[str, dict[int, set[CustomerId]]] = {kind: {} for kind in MARKS}
        self._rules: dict[int, dict[CustomerId, RuleRow]] = {}
        self._shared: dict[RuleRow, RuleRow] = {}  # equal rows share one object (a membership costs its entry)
        self._digests: dict[CustomerId, tuple[str, bytes]] = {}
        self._meta: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._heap: list[tuple[dt.datetime, int, int, CustomerId]] = []
        self._seq = itertools.count()
        self._history: list[_HistoryChunk] = []
        self._journal: list[Callable[[], None]] = []
        self._live: weakref.WeakSet[_Mark] = weakref.WeakSet()

    # -- transactions ------------------------------------------------------

    def snapshot(self) -> _Mark:
        """A handle to :meth:`restore` to this moment."""
        if not self._live:
            self._journal.clear()
        mark = _Mark(len(self._journal))
        self._live.add(mark)
        return mark

    def restore(self, snapshot: object) -> None:
        """Undo every write since ``snapshot`` was taken."""
        if not isinstance(snapshot, _Mark):
            raise TypeError(f"not a snapshot of this store: {snapshot!r}")
        while len(self._journal) > snapshot.position:
            self._journal.pop()()
        self._rebuild_heap()

    def release(self, snapshot: object) -> None:
        """Forget a snapshot that will not be restored (its transaction committed)."""
        self._live.discard(snapshot)  # type: ignore[arg-type]
        if not self._live:
            self._journal.clear()

    def _undo(self, action: Callable[[], None]) -> None:
        if self._live:
            self._journal.append(action)

    # -- definitions -------------------------------------------------------

    def definitions(self) -> list[GroupDef]:
        """Every group definition."""
        return list(self._defs.values())

    def save_definition(self, definition: GroupDef) -> None:
        """Insert or replace the definition with this id."""
        gid = definition.id
        old = self._defs.get(gid)
        self._defs[gid] = definition
        self._undo(lambda: self._put_def(gid, old))

    def save_definitions(self, definitions: Sequence[GroupDef]) -> None:
        """Insert or replace several definitions."""
        for definition in definitions:
            self.save_definition(definition)

    def _put_def(self, gid: int, definition: GroupDef | None) -> None:
        if definition is None:
            self._defs.pop(gid, None)
        else:
            self._defs[gid] = definition

    def new_id(self) -> int:
        """An id no group uses."""
        while True:
            gid = next(self._ids)
            if gid not in self._defs:
                return gid

    def drop_group(self, group_id: int) -> None:
        """Delete a group's definition and everything stored for it."""
        old_def = self._defs.pop(group_id, None)
        old_marks = {kind: self._marks[kind].pop(group_id, None) for kind in MARKS}
        old_rules = self._rules.pop(group_id, None)
        old_history = self._history
        self._history = self._kept_history(lambda row: row.group_id != group_id)

        def undo() -> None:
            self._history = old_history
            self._put_def(group_id, old_def)
            for kind, ids in old_marks.items():
                if ids is not None:
                    self._marks[kind][group_id] = ids
            if old_rules is not None:
                self._rules[group_id] = old_rules

        self._undo(undo)

    # -- slots -------------------------------------------------------------

    def _slot(self, gid: int, cid: CustomerId) -> Slot:
        manual = cid in self._marks["manual"].get(gid, ())
        imported = cid in self._marks["imported"].get(gid, ())
        excluded = cid in self._marks["excluded"].get(gid, ())
        rule = self._rules.get(gid, {}).get(cid)
        if not (manual or imported or excluded) and rule is None:
            return EMPTY
        return Slot(manual, imported, excluded, rule)

    def slots(self, customer_ids: Collection[CustomerId]) -> dict[CustomerId, dict[int, Slot]]:
        """The non-empty slots of these customers, by group id."""
        out: dict[CustomerId, dict[int, Slot]] = {}
        gids = list(self._defs)
        for cid in customer_ids:
            found = {gid: slot for gid in gids if (slot := self._slot(gid, cid)) is not EMPTY}
            if found:
                out[cid] = found
        return out

    def group_slots(self, group_id: int) -> dict[CustomerId, Slot]:
        """The non-empty slots of one group, by customer."""
        ids: set[CustomerId] = set(self._rules.get(group_id, ()))
        for kind in MARKS:
            ids.update(self._marks[kind].get(group_id, ()))
        return {cid: self._slot(group_id, cid) for cid in ids}

    def set_marks(self, group_id: int, kind: str, customer_ids: Iterable[CustomerId], value: bool) -> None:
        """Set or clear a mark (``manual``, ``imported``, ``excluded``)."""
        if kind not in MARKS:
            raise ValueError(f"unknown mark {kind!r}")
        marks = self._marks[kind].setdefault(group_id, set())
        if value:
            changed = [cid for cid in customer_ids if cid not in marks]
            marks.update(changed)
            self._undo(lambda: marks.difference_update(changed))
        else:
            changed = [cid for cid in customer_ids if cid in marks]
            marks.difference_update(changed)
            self._undo(lambda: marks.update(changed))

    def put_rules(self, group_id: int, rows: Mapping[CustomerId, RuleRow | None], *, new: bool = False) -> None:
        """Store rule rows (None deletes the row)."""
        table = self._rules.setdefault(group_id, {})
        journal = bool(self._live)
        old: list[tuple[CustomerId, RuleRow | None]] = []
        if len(self._shared) > _SHARED_ROWS:
            self._shared.clear()  # rows of older refreshes: those still stored stay as they are
        for cid, row in rows.items():
            previous = table.pop(cid, None) if row is None else table.get(cid)
            if journal:
                old.append((cid, previous))
            if row is not None:
                if row.due is None:  # most rows of a refresh are alike: one object for all of them
                    row = self._shared.setdefault(row, row)
                table[cid] = row
                if row.due is not None:
                    heapq.heappush(self._heap, (row.due, next(self._seq), group_id, cid))

        def undo() -> None:
            for cid, previous in reversed(old):
                if previous is None:
                    table.pop(cid, None)
                else:
                    table[cid] = previous

        if journal:
            self._undo(undo)

    def put_many(self, rows: Mapping[int, Mapping[CustomerId, RuleRow | None]], *, new: bool = False) -> None:
        for gid, group_rows in rows.items():
            if group_rows:
                self.put_rules(gid, group_rows, new=new)

    def forget(self) -> None:
        """Nothing is cached: the state is this object's."""

    def due(self, now: dt.datetime) -> list[tuple[int, CustomerId]]:
        """The (group id, customer id) pairs whose ``due`` is at or before ``now``."""
        found: list[tuple[int, CustomerId]] = []
        seen: set[tuple[int, CustomerId]] = set()
        kept: list[tuple[dt.datetime, int, int, CustomerId]] = []
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            due, _, gid, cid = entry
            row = self._rules.get(gid, {}).get(cid)
            if row is None or row.due != due or (gid, cid) in seen:
                continue  # a stale entry: the row changed since
            seen.add((gid, cid))
            found.append((gid, cid))
            kept.append(entry)
        for entry in kept:  # still due until the caller stores a new row
            heapq.heappush(self._heap, entry)
        return found

    def _rebuild_heap(self) -> None:
        self._heap = [
            (row.due, next(self._seq), gid, cid)
            for gid, table in self._rules.items()
            for cid, row in table.items()
            if row.due is not None
        ]
        heapq.heapify(self._heap)

    # -- digests and customers ----------------------------------------------

    def digests(self, customer_ids: Collection[CustomerId]) -> dict[CustomerId, tuple[str, bytes]]:
        """The stored (keys version, digest) of these customers."""
        return {cid: d for cid in customer_ids if (d := self._digests.get(cid)) is not None}

    def put_digests(self, rows: Mapping[CustomerId, tuple[str, bytes] | None]) -> None:
        """Store digests (None deletes)."""
        journal = bool(self._live)
        old: list[tuple[CustomerId, tuple[str, bytes] | None]] = []
        store = self._digests
        for cid, digest in rows.items():
            previous = store.pop(cid, None) if digest is None else store.get(cid)
            if journal:
                old.append((cid, previous))
            if digest is not None:
                store[cid] = digest

        def undo() -> None:
            for cid, previous in reversed(old):
                if previous is None:
                    store.pop(cid, None)
                else:
                    store[cid] = previous

        if journal:
            self._undo(undo)

    def customer_ids(self) -> set[CustomerId]:
        """Every customer with a digest or a slot."""
        ids: set[CustomerId] = set(self._digests)
        for table in self._rules.values():
            ids.update(table)
        for kind in MARKS:
            for marks in self._marks[kind].values():
                ids.update(marks)
        return ids

    def drop_customers(self, customer_ids: Collection[CustomerId]) -> None:
        """Forget these customers everywhere."""
        ids = set(customer_ids)
        for gid in list(self._defs):
            for kind in MARKS:
                self.set_marks(gid, kind, ids, False)
            table = self._rules.get(gid, {})
            self.put_rules(gid, {cid: None for cid in ids if cid in table})
        self.put_digests({cid: None for cid in ids if cid in self._digests})

    def get_meta(self, key: str) -> str | None:
        """A stored setting."""
        return self._meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting."""
        old = self._meta.get(key)
        self._meta[key] = value

        def undo() -> None:
            if old is None:
                self._meta.pop(key, None)
            else:
                self._meta[key] = old

        self._undo(undo)

    def lock(self) -> None:
        """Nothing to hold: the store is this process's."""

    def add_history(self, rows: Sequence[HistoryRow]) -> None:
        """Append entries to the membership history."""
        if not rows:
            return
        size = len(self._history)
        self._history.append(_HistoryChunk(rows))
        self._undo(lambda: self._history.__delitem__(slice(size, None)))

    def history(
        self,
        group_id: int | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        customer_id: CustomerId | None = None,
    ) -> list[HistoryRow]:
        """History entries in the order they were added (``start <= at < end``)."""
        return [
            row
            for chunk in self._history
            for row in chunk.rows()
            if (group_id is None or row.group_id == group_id)
            and (customer_id is None or (row.customer_id == customer_id and type(row.customer_id) is type(customer_id)))
            and (start is None or row.at >= start)
            and (end is None or row.at < end)
        ]

    def forget_history(self, before: dt.datetime) -> None:
        """Delete the entries found before ``before``."""
        if any(moment < before for chunk in self._history for moment in chunk.at):
            old = self._history
            self._history = self._kept_history(lambda row: row.at >= before)
            self._undo(lambda: setattr(self, "_history", old))

    def _kept_history(self, keep: Callable[[HistoryRow], bool]) -> list[_HistoryChunk]:
        """The history without the rows ``keep`` refuses (chunks without any are kept as they are)."""
        out = []
        for chunk in self._history:
            rows = list(chunk.rows())
            kept = [row for row in rows if keep(row)]
            if len(kept) == len(rows):
                out.append(chunk)
            elif kept:
                out.append(_HistoryChunk(kept))
        return out
