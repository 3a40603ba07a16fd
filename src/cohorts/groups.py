"""Customer groups: members by origin, kept up to date as data and time move.

The values (origins, :class:`Group`, :class:`Change`, :class:`HistoryEntry`...)
are in :mod:`cohorts.membership`, and what a rule reads and when time could
change its answer in :mod:`cohorts.timing`; both are re-exported here.

- :class:`Groups`, the stateful service over a repository. It stores the
  definitions and the memberships beside the customers (memory or SQL), and
  keeps rule memberships current without re-reading every customer: each
  stored answer records the next instant at which time alone could change it
  (``repair_order.closed.last_time < 30 days ago`` turns false 30 days after
  the repair), and a digest of what the rules read, so a refresh of changed
  customers re-evaluates only the groups whose rules read what changed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import heapq
import itertools
import json
from collections.abc import Callable, Collection, Container, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, TypeAlias

import attrs

from .ast import (
    InGroup,
    Node,
    RuleLike,
    transform,
    walk,
)
from .errors import GroupError, GroupNotEmptyError, RuleError, UnknownGroupError
from .evaluate import compile  # noqa: A004
from .group_store import (
    EMPTY,
    DiffsInDatabase,
    GroupDef,
    GroupStore,
    HistoryRow,
    MemoryGroupStore,
    RuleRow,
    Slot,
    group_key,
)
from .membership import (
    NO_ORIGINS,
    Change,
    Group,
    HistoryEntry,
    Members,
    Origin,
    Preview,
    Why,
    optional_rule,
    origin_bits,
    origins,
    origins_of_bits,
    slot_origins,
    sorted_ids,
)
from .model import Customer, CustomerId
from .parser import parse
from .progress import Progress, ProgressCallback
from .repository import ReadsSomeEvents, Repository, UnknownCustomerError, require
from .schema import Schema
from .timing import Plan, digest_keys_version, digest_of

__all__ = ["Change", "Group", "Groups", "HistoryEntry", "Members", "Origin", "Preview", "Why", "origins"]

GroupLookup: TypeAlias = Callable[[str], Container[CustomerId]]


# -- the service -------------------------------------------------------------


class _Catalog:
    """The definitions and compiled plans of one moment, with the dependency order."""

    def __init__(self, defs: Iterable[GroupDef], groups: Groups) -> None:
        self.defs = {d.id: d for d in defs}
        self.by_key = {group_key(d.name): d.id for d in self.defs.values()}
        # Groups whose rule failed (at this version): skipped by catch-ups until the rule changes.
        self.broken: dict[int, str] = {}
        self.invalid: dict[int, str] = {}  # stored rules that no longer compile
        self.plans = {}
        for gid, d in self.defs.items():
            try:
                self.plans[gid] = groups._plan(d, self.known)
            except RuleError as error:
                self.invalid[gid] = str(error)
                self.plans[gid] = groups._plan(attrs.evolve(d, rule=None), self.known)
        self.dependents: dict[int, set[int]] = {gid: set() for gid in self.defs}
        for plan in self.plans.values():
            for ref in plan.refs:
                self.dependents[ref].add(plan.gid)
        self.order = _topological(self.plans)
        self.rank = {gid: i for i, gid in enumerate(self.order)}
        keys: set[str] = set()
        self.readers: dict[str, set[int]] = {}
        for plan in self.plans.values():
            for key in plan.reads:
                keys.add(key)
                self.readers.setdefault(key, set()).add(plan.gid)
        self.keys = tuple(sorted(keys))
        self.keys_version = digest_keys_version(self.keys)
        self.event_names = frozenset(key[len("event:") :] for key in self.keys if key.startswith("event:"))
        self.ruled = frozenset(gid for gid, plan in self.plans.items() if plan.rule is not None)

    def closure(self, gids: Iterable[int]) -> list[int]:
        """These groups and every group whose rule refers to them, directly or not, in dependency order."""
        found: set[int] = set()
        stack = list(gids)
        while stack:
            gid = stack.pop()
            if gid not in found:
                found.add(gid)
                stack.extend(self.dependents[gid])
        return [gid for gid in self.order if gid in found]

    def known(self, name: str) -> int:
        gid = self.by_key.get(group_key(name))
        if gid is None:
            raise UnknownGroupError(name, _suggest(name, [d.name for d in self.defs.values()]))
        return gid

    def changed_groups(
        self, old: tuple[str, bytes] | None, new: bytes, key_sets: Callable[[str], tuple[str, ...] | None]
    ) -> set[int]:
        """The groups whose rules read something that differs between two digests.

        Digests taken with another set of keys are compared key by key; keys
        the old digest lacks count as changed.
        """
        if old is None:
            return set(self.ruled)
        version, previous = old
        keys = self.keys if version == self.keys_version else key_sets(version)
        if keys is None:
            return set(self.ruled)
        before = {key: previous[8 * i : 8 * i + 8] for i, key in enumerate(keys)}
        found: set[int] = set()
        for i, key in enumerate(self.keys):
            if before.get(key) != new[8 * i : 8 * i + 8]:
                found.update(self.readers[key])
        return found


def _topological(plans: Mapping[int, Plan]) -> list[int]:
    indegree = {gid: len(plan.refs) for gid, plan in plans.items()}
    users: dict[int, list[int]] = {gid: [] for gid in plans}
    for plan in plans.values():
        for ref in plan.refs:
            users[ref].append(plan.gid)
    ready = sorted(gid for gid, n in indegree.items() if n == 0)
    order: list[int] = []
    while ready:
        gid = ready.pop()
        order.append(gid)
        for user in users[gid]:
            indegree[user] -= 1
            if indegree[user] == 0:
                ready.append(user)
    if len(order) != len(plans):
        names = sorted(plans[g].definition.name for g, n in indegree.items() if n > 0)
        raise RuleError("group rules refer to each other in a cycle: " + ", ".join(names))
    return order


def _suggest(name: str, names: Sequence[str]) -> str | None:
    by_key = {group_key(n): n for n in names}
    close = difflib.get_close_matches(group_key(name), list(by_key), n=1, cutoff=0.6)
    return by_key[close[0]] if close else None


def _rename_refs(node: Node, old_key: str, new: str) -> Node:
    def rename(item: Node) -> Node:
        if isinstance(item, InGroup) and group_key(item.group) == old_key:
            return InGroup(new, item.negated)
        return item

    return transform(node, rename)


_AS_OF = "as_of"
_CHANGES = "changes"  # the position in the repository's change log up to which the stored state follows it
_HISTORY_TRIMMED = "history_trimmed"
_ERRORS = "rule_errors"  # JSON: {group id: [rule version, message]} for rules that failed at evaluation
_IN_DATABASE = 500  # changed customers from which a catch-up is computed by the database, group by group
_BATCH = 1000


def _describe(error: Exception) -> str:
    lines = str(error).strip().splitlines()  # a database error's first line; the statement follows
    text = (lines[0] if lines else "") or type(error).__name__
    text = text if len(text) <= 300 else text[:299] + "…"
    return text if isinstance(error, RuleError) else f"{type(error).__name__}: {text}"


@attrs.define
class _Work:
    """What a pass collects before writing: rule rows, digests, changes."""

    rows: dict[int, dict[CustomerId, RuleRow | None]] = attrs.field(factory=dict)
    digests: dict[CustomerId, tuple[str, bytes] | None] = attrs.field(factory=dict)
    changes: list[Change] = attrs.field(factory=list)

    def flush(self, store: GroupStore) -> None:
        if self.rows:
            store.put_many(self.rows)
        if self.digests:
            store.put_digests(self.digests)
        self.rows, self.digests = {}, {}


class Groups:
    """Customer groups over a repository: definitions, memberships by origin, refreshes.

    State lives with the repository: in a :class:`cohorts.MemoryRepository`
    as one of its extensions (rolled back by its ``transaction()``), in a
    ``SQLRepository`` in tables of its database. Several ``Groups`` objects
    over one repository share it. Every method is all-or-nothing.

    Reads (``members``, ``origins``, ``count``, ``groups_of``, ``why``) first
    bring the stored memberships up to date at their ``now``: new or changed
    rules are evaluated, and memberships whose rules could have changed their
    answer since the last evaluation (time-based rules) are revisited, and
    the customers the repository's change log names are re-evaluated: a host
    never has to call ``refresh`` for reads to be right.
    ``progress``, when given, is called with a :class:`cohorts.Progress` as a
    full evaluation goes through the rules and then the customers.

    Example:
        >>> import datetime as dt
        >>> from cohorts import Customer, Event
        >>> from cohorts.repository import MemoryRepository
        >>> now = dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc)
        >>> repo = MemoryRepository([
        ...     Customer("c1", {"vehicle_model": "Ford Escape"}, [Event("repair_order.closed", "2026-11-10")]),
        ...     Customer("c2", {"vehicle_model": "Ford Focus"}),
        ... ])
        >>> groups = Groups(repo)
        >>> groups.create("Recent Escapes", 'repair_order.closed.last_time < 30 days ago'
        ...               ' AND customer.vehicle_model contains "Escape"')
        >>> [str(change) for change in groups.add("Recent Escapes", "c2", now=now)]
        ["'c1' joined 'Recent Escapes' (none -> rules)", "'c2' joined 'Recent Escapes' (none -> manual)"]
        >>> {cid: sorted(map(str, o)) for cid, o in groups.members("Recent Escapes", now).items()}
        {'c1': ['rules'], 'c2': ['manual']}
        >>> [str(c) for c in groups.refresh(now + dt.timedelta(days=30))]
        ["'c1' left 'Recent Escapes' (rules -> none)"]

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        repository: Repository,
        *,
        store: GroupStore | None = None,
        progress: ProgressCallback | None = None,
        history: dt.timedelta | None = dt.timedelta(days=400),
    ) -> None:
        require(repository, Repository, "Groups")
        if history is not None and (not isinstance(history, dt.timedelta) or history <= dt.timedelta(0)):
            raise ValueError(f"history is a positive timedelta (how long entries are kept) or None, not {history!r}")
        self.repository = repository
        self.progress = progress
        self.history_retention = history
        self._unreported: list[Change] = []  # changes made for the history only (the importer's bulk path)
        self._historied: list[Change] = []  # changes whose history rows the store wrote itself
        self._store: GroupStore = store if store is not None else repository.group_store()
        self._subscribers: list[tuple[Callable[[Change], object], str | None, bool, bool]] = []
        self._plans: dict[tuple[int, int, str | None], Plan] = {}
        self._cached_catalog: tuple[tuple[GroupDef, ...], _Catalog] | None = None
        self._schema: Schema | None = None if repository.declared_schema is None else repository.schema
        self._tz: dt.tzinfo = repository.tz
        self._region: str = repository.region

    def __repr__(self) -> str:
        return f"<Groups: {len(self._store.definitions())} groups>"

    # -- plumbing ------------------------------------------------------------

    def _report(self, progress: Progress) -> None:
        if self.progress is not None:
            self.progress(progress)

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[list[Change]]:
        changes: list[Change] = []
        store = self._store
        marks = len(self._unreported), len(self._historied)
        if isinstance(store, MemoryGroupStore):
            mark = store.snapshot()
            try:
                yield changes
                self._record(changes, *marks)
            except BaseException:
                store.restore(mark)
                del self._unreported[marks[0] :], self._historied[marks[1] :]
                raise
            store.release(mark)
        else:
            try:
                with self.repository.transaction():
                    # Writes of group state queue behind one another across processes (PostgreSQL would
                    # otherwise give two creates the same new id, or deadlock two catch-ups).
                    store.lock()
                    yield changes
                    self._record(changes, *marks)
            except BaseException:
                store.forget()  # cached definitions may come from the rolled-back transaction
                del self._unreported[marks[0] :], self._historied[marks[1] :]
                raise
        self._notify(changes)

    def _record(self, changes: Sequence[Change], unreported: int, historied: int) -> None:
        """Write the block's changes to the membership history, in its transaction (but those whose
        rows the store wrote)."""
        written = {id(change) for change in self._historied[historied:]}
        del self._historied[historied:]
        found = [change for change in (*changes, *self._unreported[unreported:]) if id(change) not in written]
        del self._unreported[unreported:]
        if not found:
            return
        catalog = self._catalog()
        rows = []
        for change in found:
            gid = catalog.by_key.get(group_key(change.group))
            if gid is None:
                continue  # the group was deleted in this block: its history goes with it
            version = catalog.defs[gid].version
            rows.append(
                HistoryRow(
                    gid,
                    change.customer_id,
                    origin_bits(change.before),
                    origin_bits(change.after),
                    version,
                    change.at,
                    change.cause,
                )
            )
        self._store.add_history(rows)

    def _plan(self, definition: GroupDef, known: Callable[[str], int]) -> Plan:
        cache_key = (definition.id, definition.version, definition.rule)
        plan = self._plans.get(cache_key)
        if plan is None or plan.definition.name != definition.name:
            plan = Plan(definition, self._schema, self._tz, self._region, known)
            self._plans[cache_key] = plan
        else:
            plan.definition = definition
        return plan

    def _catalog(self) -> _Catalog:
        defs = tuple(self._store.definitions())
        cached = self._cached_catalog
        if cached is not None and cached[0] == defs:
            return cached[1]
        catalog = _Catalog(defs, self)
        self._cached_catalog = (defs, catalog)
        return catalog

    def _now(self, now: dt.datetime | None) -> dt.datetime:
        if now is None:
            return dt.datetime.now(dt.UTC)
        if not isinstance(now, dt.datetime):
            raise TypeError(f"now is a datetime, not {type(now).__name__}")
        return now if now.tzinfo is not None else now.replace(tzinfo=self._tz)

    def _as_of(self) -> dt.datetime | None:
        text = self._store.get_meta(_AS_OF)
        return None if text is None else dt.datetime.fromisoformat(text)

    def _mark_time(self, now: dt.datetime | None) -> dt.datetime:
        """The moment of a manual change: the given one, else the stored state's, else the clock's."""
        if now is not None:
            return self._now(now)
        as_of = self._as_of()
        return as_of if as_of is not None else self._now(None)

    # -- rules that fail at evaluation -------------------------------------------

    def _load_broken(self, catalog: _Catalog, *, retry: bool = False) -> None:
        """Mark the groups whose current rule version failed before (``retry`` forgets them)."""
        catalog.broken = dict(catalog.invalid)
        if retry:
            if self._store.get_meta(_ERRORS) not in (None, "{}"):
                self._store.set_meta(_ERRORS, "{}")
            return
        text = self._store.get_meta(_ERRORS)
        for key, (version, message) in (json.loads(text) if text else {}).items():
            gid = int(key)
            if gid in catalog.defs and catalog.defs[gid].version == version:
                catalog.broken.setdefault(gid, str(message))

    def _fail(self, catalog: _Catalog, gid: int, error: Exception) -> None:
        """Record that a group's rule failed: the group is skipped until its rule changes."""
        catalog.broken[gid] = _describe(error)
        stored = {
            str(g): [catalog.defs[g].version, message]
            for g, message in sorted(catalog.broken.items())
            if g not in catalog.invalid
        }
        self._store.set_meta(_ERRORS, json.dumps(stored, sort_keys=True))

    def _guarded(self) -> contextlib.AbstractContextManager[None]:
        """A savepoint around one rule's query: a database error in it leaves the transaction usable."""
        if isinstance(self._store, MemoryGroupStore):
            return contextlib.nullcontext()
        return self.repository.transaction()

    def _check_working(self, catalog: _Catalog, gid: int) -> None:
        message = catalog.broken.get(gid)
        if message is not None:
            name = catalog.defs[gid].name
            raise RuleError(
                f"the rule of group {name!r} fails, so its members are unknown: {message}"
                " (change it with set_rule, or delete the group)"
            )

    def errors(self, now: dt.datetime | None = None) -> dict[str, str]:
        """The groups whose rule failed at evaluation, by name, with the reason.

        Such a group is left out of refreshes (its members, count and ``why``
        raise RuleError) until its rule is changed with :meth:`set_rule` or the
        group is deleted; ``refresh(full=True)`` tries every rule again. Other
        groups are not affected.

        .. versionadded:: 0.4
        """
        catalog, _, _ = self._read(now)
        return {catalog.defs[gid].name: message for gid, message in sorted(catalog.broken.items())}

    # -- subscriptions ---------------------------------------------------------

    def subscribe(
        self,
        callback: Callable[[Change], object],
        *,
        group: str | None = None,
        joins: bool = True,
        leaves: bool = True,
    ) -> Callable[[], None]:
        """Call ``callback(change)`` for every join and/or leave (of one group, or all).

        Callbacks run after the change is committed. Returns a function that
        unsubscribes.

        Example:
            >>> from cohorts import Customer
            >>> from cohorts.repository import MemoryRepository
            >>> groups = Groups(MemoryRepository([Customer(1)]))
            >>> groups.create("VIP")
            >>> seen = []
            >>> stop = groups.subscribe(seen.append, group="vip", leaves=False)
            >>> _ = groups.add("VIP", 1)
            >>> [(c.customer_id, c.kind) for c in seen]
            [(1, 'joined')]
            >>> stop()
        """
        entry = (callback, None if group is None else group_key(group), joins, leaves)
        self._subscribers.append(entry)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(entry)

        return unsubscribe

    def _notify(self, changes: Sequence[Change]) -> None:
        if not self._subscribers:
            return
        for change in changes:
            for callback, key, joins, leaves in list(self._subscribers):
                if key is not None and group_key(change.group) != key:
                    continue
                if (change.joined and joins) or (change.left and leaves):
                    callback(change)

    # -- definitions -----------------------------------------------------------

    def _check_rule(self, catalog: _Catalog, gid: int | None, rule: RuleLike | None) -> Node | None:
        node = optional_rule(rule)
        if node is None:
            return None
        compile(node, schema=self._schema, tz=self._tz, region=self._region)  # validates
        text = str(node)
        try:
            same = parse(text) == node
        except RuleError:
            same = False
        if not same:  # what is stored is the text: it must read back as this rule
            raise RuleError(f"the rule cannot be stored: its text does not read back as the same rule: {text!r}")
        refs = {catalog.known(n.group) for n in walk(node) if isinstance(n, InGroup)}
        if gid is None:
            return node
        # A cycle: the group itself is reachable from what the rule refers to.
        stack, seen = list(refs), set()
        while stack:
            current = stack.pop()
            if current == gid:
                name = catalog.defs[gid].name
                raise RuleError(f"the rule of group {name!r} would refer to itself through group references")
            if current in seen:
                continue
            seen.add(current)
            stack.extend(catalog.plans[current].refs)
        return node

    def names(self) -> list[str]:
        """Every group's name, sorted case-insensitively."""
        return sorted((d.name for d in self._store.definitions()), key=group_key)

    def definition(self, name: str) -> GroupDef:
        """The stored definition of a group (name, rule, description, version)."""
        catalog = self._catalog()
        return catalog.defs[catalog.known(name)]

    def create(self, name: str, rule: RuleLike | None = None, description: str = "") -> None:
        """Create a group, with rules or without (then members are added by hand or imports).

        Raises GroupError when the name is taken (case-insensitively) and
        RuleError for an invalid rule. Members are evaluated at the next read
        or refresh.
        """
        if not isinstance(description, str):
            raise TypeError("a description is text")
        with self._atomic():
            catalog = self._catalog()
            key = group_key(name)
            if key in catalog.by_key:
                taken = catalog.defs[catalog.by_key[key]].name
                raise GroupError(f"a group named {taken!r} exists already")
            node = self._check_rule(catalog, None, rule)
            text = None if node is None else str(node)
            gid = self._store.new_id()
            now = self._now(None)
            version = 0 if text is None else 1
            self._store.save_definition(
                GroupDef(gid, name.strip(), text, description, version, 0, now if text else None)
            )

    def rename(self, old: str, new: str) -> None:
        """Rename a group; rules of other groups that refer to it follow."""
        with self._atomic():
            catalog = self._catalog()
            gid = catalog.known(old)
            key = group_key(new)
            if key in catalog.by_key and catalog.by_key[key] != gid:
                raise GroupError(f"a group named {catalog.defs[catalog.by_key[key]].name!r} exists already")
            old_key = group_key(catalog.defs[gid].name)
            self._store.save_definition(attrs.evolve(catalog.defs[gid], name=new.strip()))
            for user in catalog.dependents[gid]:
                definition = catalog.defs[user]
                if definition.rule is not None:
                    text = str(_rename_refs(parse(definition.rule), old_key, new.strip()))
                    self._store.save_definition(attrs.evolve(definition, rule=text))

    def set_rule(self, name: str, rule: RuleLike | None) -> None:
        """Change a group's rule (None removes it): a new rule version, evaluated at the next read or refresh.

        Raises RuleError for an invalid rule or one that would make group
        references go round in a cycle; nothing changes then.
        """
        with self._atomic():
            catalog = self._catalog()
            gid = catalog.known(name)
            node = self._check_rule(catalog, gid, rule)
            definition = catalog.defs[gid]
            text = None if node is None else str(node)
            if text == definition.rule:
                return
            self._store.save_definition(
                attrs.evolve(definition, rule=text, version=definition.version + 1, changed_at=self._now(None))
            )

    def describe(self, name: str, description: str) -> None:
        """Change a group's description."""
        with self._atomic():
            catalog = self._catalog()
            definition = catalog.defs[catalog.known(name)]
            self._store.save_definition(attrs.evolve(definition, description=description))

    def delete(self, name: str, force: bool = False) -> None:
        """Delete a group. One with members needs ``force=True`` (GroupNotEmptyError says how many, of which origins).

        A group that other groups' rules refer to cannot be deleted (GroupError).
        """
        with self._atomic() as changes:
            caught = self._catch_up(self._mark_time(None))
            if caught is not None:
                changes.extend(caught[1])
            catalog = self._catalog()
            gid = catalog.known(name)
            users = sorted(catalog.defs[u].name for u in catalog.dependents[gid])
            if users:
                raise GroupError(
                    f"group {catalog.defs[gid].name!r} is used by the rules of " + ", ".join(map(repr, users))
                )
            definition = catalog.defs[gid]
            members = {cid: o for cid, slot in self._store.group_slots(gid).items() if (o := slot_origins(slot))}
            if members and not force:
                counts: dict[str, int] = {}
                for found in members.values():
                    for origin in found:
                        counts[origin.value] = counts.get(origin.value, 0) + 1
                raise GroupNotEmptyError(definition.name, len(members), counts)
            at = self._mark_time(None)
            for cid in sorted_ids(members):
                changes.append(Change(definition.name, cid, members[cid], NO_ORIGINS, at, "rule"))
            self._store.drop_group(gid)

    # -- manual membership -----------------------------------------------------

    def add(
        self, name: str, *customer_ids: CustomerId, origin: Origin = Origin.MANUAL, now: dt.datetime | None = None
    ) -> list[Change]:
        """Add customers by hand (or, with ``origin=Origin.IMPORTED``, as imported). Returns the changes.

        Unknown customer ids raise UnknownCustomerError and nothing is added.
        """
        match origin:
            case Origin.MANUAL:
                kind = "manual"
            case Origin.IMPORTED:
                kind = "imported"
            case _:
                raise GroupError("customers join by rules through the group's rule, not add()")
        return self._mark(name, customer_ids, kind, True, now, must_exist=True)

    def remove(self, name: str, *customer_ids: CustomerId, now: dt.datetime | None = None) -> list[Change]:
        """Remove the manual and imported origins; a customer the rules match stays, by rules alone."""
        with self._atomic() as changes:
            changes.extend(
                self._set_marks(name, customer_ids, {"manual": False, "imported": False}, now, False, cause="manual")
            )
        return changes

    def exclude(self, name: str, *customer_ids: CustomerId, now: dt.datetime | None = None) -> list[Change]:
        """Keep customers out of the group whatever their origins, until :meth:`unexclude`."""
        return self._mark(name, customer_ids, "excluded", True, now, must_exist=True)

    def unexclude(self, name: str, *customer_ids: CustomerId, now: dt.datetime | None = None) -> list[Change]:
        """Undo :meth:`exclude`."""
        return self._mark(name, customer_ids, "excluded", False, now, must_exist=False)

    def _mark(
        self,
        name: str,
        customer_ids: Sequence[CustomerId],
        kind: str,
        value: bool,
        now: dt.datetime | None,
        must_exist: bool,
    ) -> list[Change]:
        cause = {"manual": "manual", "imported": "import", "excluded": "excluded"}[kind]
        with self._atomic() as changes:
            changes.extend(self._set_marks(name, customer_ids, {kind: value}, now, must_exist, cause=cause))
        return changes

    def add_imported(self, name: str, customer_ids: Sequence[CustomerId], now: dt.datetime | None = None) -> None:
        """``add(name, *customer_ids, origin=Origin.IMPORTED)`` for customers just written (bulk imports).

        The importer's bulk path: the ids are not looked up in the repository
        again (they were upserted in the same transaction), so adding a batch
        costs the batch's size, not the repository's; the changes are only
        made for subscribers.
        """
        with self._atomic() as changes:
            listened = bool(self._subscribers)
            changes.extend(
                self._set_marks(
                    name, customer_ids, {"imported": True}, now, True, stored=True, quiet=not listened, cause="import"
                )
            )

    def _set_marks(
        self,
        name: str,
        customer_ids: Sequence[CustomerId],
        marks: Mapping[str, bool],
        now: dt.datetime | None,
        must_exist: bool,
        *,
        stored: bool = False,
        quiet: bool = False,
        cause: str = "manual",
    ) -> list[Change]:
        """Set marks; ``stored`` promises the ids are stored customers, ``quiet`` leaves their own changes out
        of what is returned (they are still recorded in the history)."""
        at = self._mark_time(now)
        caught = self._catch_up(at)
        changes = [] if caught is None else caught[1]
        catalog = self._catalog()
        gid = catalog.known(name)
        ids = list(dict.fromkeys(customer_ids))
        slots = self._store.slots(ids)
        exists = set(ids) if stored else self._existing(ids)
        for cid in ids:
            if cid not in exists and (must_exist or gid not in slots.get(cid, {})):
                raise UnknownCustomerError(cid)
        for kind, value in marks.items():
            self._store.set_marks(gid, kind, ids, value)
        work = _Work()
        group_name = catalog.defs[gid].name
        # Most customers share a few slots (none, mostly): work out each slot's change once.
        outcomes: dict[Slot, tuple[Slot, frozenset[Origin], frozenset[Origin]]] = {}
        for cid in ids:
            current = slots.setdefault(cid, {})
            before_slot = current.get(gid, EMPTY)
            outcome = outcomes.get(before_slot)
            if outcome is None:
                after_slot = attrs.evolve(
                    before_slot,
                    manual=marks.get("manual", before_slot.manual),
                    imported=marks.get("imported", before_slot.imported),
                    excluded=marks.get("excluded", before_slot.excluded),
                )
                outcome = outcomes[before_slot] = (after_slot, slot_origins(before_slot), slot_origins(after_slot))
            after_slot, before, after = outcome
            current[gid] = after_slot
            if before != after:
                change = Change(group_name, cid, before, after, at, cause)
                (self._unreported if quiet else changes).append(change)
            if bool(before) != bool(after) and cid in exists and catalog.dependents[gid]:
                customer = self.repository.get(cid)
                if customer is not None:
                    self._process(
                        catalog, customer, current, set(catalog.dependents[gid]), at, work, digest=False, cause=cause
                    )
        work.flush(self._store)
        return changes + work.changes

    def _existing(self, customer_ids: Sequence[CustomerId]) -> set[CustomerId]:
        """Which of these ids the repository holds, at a cost in their number (not the repository's size)."""
        return self.repository.existing(customer_ids)

    # -- evaluation ------------------------------------------------------------

    def _process(
        self,
        catalog: _Catalog,
        customer: Customer,
        current: dict[int, Slot],
        todo: set[int],
        now: dt.datetime,
        work: _Work,
        *,
        digest: bool = True,
        old_digest: tuple[str, bytes] | None = None,
        cause: str = "data",
    ) -> None:
        """Evaluate some groups' rules for one customer (and the groups that refer to those that change)."""
        cid = customer.id
        if digest:
            new = digest_of(catalog.keys, customer)
            todo = todo | catalog.changed_groups(old_digest, new, self._key_set)
            work.digests[cid] = (catalog.keys_version, new)

        def lookup(group: str) -> Container[CustomerId]:
            slot = current.get(catalog.known(group), EMPTY)
            return (cid,) if slot_origins(slot) else ()

        memo: dict[int, dt.datetime | None] = {}
        rank = catalog.rank
        heap = [(rank[gid], gid) for gid in todo]
        heapq.heapify(heap)
        done: set[int] = set()
        while heap:
            _, gid = heapq.heappop(heap)
            if gid in done:
                continue
            done.add(gid)
            if gid in catalog.broken:
                continue
            plan = catalog.plans[gid]
            slot = current.get(gid, EMPTY)
            old = slot.rule
            row: RuleRow | None = None
            if plan.rule is not None:
                try:
                    matched = plan.matches(customer, now, lookup)
                    due = plan.next_change(customer, now, lookup, memo)
                except Exception as error:  # isolated: this group reports it, the others go on
                    self._fail(catalog, gid, error)
                    continue
                if matched or due is not None:
                    since = old.since if (matched and old is not None and old.matched) else (now if matched else None)
                    row = RuleRow(matched, plan.version, since, now, due)
            if row is None and old is None:
                continue
            work.rows.setdefault(gid, {})[cid] = row
            new_slot = attrs.evolve(slot, rule=row)
            current[gid] = new_slot
            before, after = slot_origins(slot), slot_origins(new_slot)
            if before != after:
                work.changes.append(Change(plan.definition.name, cid, before, after, now, cause))
            if bool(before) != bool(after):
                for user in catalog.dependents[gid]:
                    heapq.heappush(heap, (rank[user], user))

    def _drop(self, catalog: _Catalog, customer_ids: Collection[CustomerId], now: dt.datetime) -> list[Change]:
        """Forget deleted customers; they leave every group."""
        changes = []
        for cid, found in self._store.slots(customer_ids).items():
            for gid, slot in found.items():
                before = slot_origins(slot)
                if before:
                    changes.append(Change(catalog.defs[gid].name, cid, before, NO_ORIGINS, now, "deleted"))
        self._store.drop_customers(customer_ids)
        return changes

    def _key_set(self, version: str) -> tuple[str, ...] | None:
        """The keys a stored digest version was taken over (None when unknown)."""
        text = self._store.get_meta(f"keys:{version}")
        return None if text is None else tuple(text.split("\n")) if text else ()

    def _remember_keys(self, catalog: _Catalog) -> None:
        if self._store.get_meta(f"keys:{catalog.keys_version}") is None:
            self._store.set_meta(f"keys:{catalog.keys_version}", "\n".join(catalog.keys))

    def _full_pass(self, catalog: _Catalog, forced: set[int], now: dt.datetime) -> list[Change]:
        """Evaluate some groups (and those referring to them) over every customer, group by group.

        Rules run through ``repository.select`` (pushed down as SQL on SQL
        repositories); a store in the repository's database
        (:class:`cohorts.group_store.DiffsInDatabase`) also compares the matches with the stored
        rows and writes the difference there. One pass over the customers then takes the digests
        and, for time-based rules, the next instant each answer could change.
        """
        self._remember_keys(catalog)
        order = [gid for gid in catalog.closure(forced) if gid not in catalog.broken]
        if isinstance(self._store, DiffsInDatabase):
            return self._pass_in_database(catalog, self._store, order, now)
        store = self._store
        old = {gid: store.group_slots(gid) for gid in order}
        effective: dict[int, set[CustomerId]] = {}

        def members(gid: int) -> set[CustomerId]:
            if gid not in effective:
                effective[gid] = set(self._stored_members(gid))
            return effective[gid]

        lookup = self._lookup_of(catalog, members)
        matched_by: dict[int, set[CustomerId]] = {}
        for index, gid in enumerate(order):
            self._report(Progress(index, index / len(order), what="groups", stage="refresh: rules"))
            plan = catalog.plans[gid]
            matched = set()
            if plan.rule is not None:
                try:
                    with self._guarded():
                        matched = set(self.repository.select(plan.rule, now, groups=lookup))
                except Exception as error:  # isolated: this group reports it, the others go on
                    self._fail(catalog, gid, error)
                    effective[gid] = set(self._stored_members(gid))
                    continue
            matched_by[gid] = matched
            slots = old[gid]
            found = {cid for cid, slot in slots.items() if not slot.excluded and (slot.manual or slot.imported)}
            found.update(cid for cid in matched if not slots.get(cid, EMPTY).excluded)
            effective[gid] = found

        order = [gid for gid in order if gid not in catalog.broken]
        timed = [gid for gid in order if catalog.plans[gid].time]
        dues, stale_customers, seen = self._customer_pass(catalog, timed, catalog.ruled - set(order), now, lookup)

        order = [gid for gid in order if gid not in catalog.broken]
        changes: list[Change] = []
        for gid in order:
            plan, slots, matched = catalog.plans[gid], old[gid], matched_by[gid]
            group_dues = dues.get(gid, {})
            rows: dict[CustomerId, RuleRow | None] = {}
            fresh: dict[CustomerId, RuleRow | None] = {}
            for cid in matched | group_dues.keys() | {c for c, slot in slots.items() if slot.rule is not None}:
                slot = slots.get(cid, EMPTY)
                previous_row = slot.rule
                is_matched = cid in matched
                due = group_dues.get(cid)
                row: RuleRow | None = None
                if is_matched or due is not None:
                    kept = previous_row is not None and previous_row.matched and is_matched
                    since = previous_row.since if kept and previous_row is not None else (now if is_matched else None)
                    row = RuleRow(is_matched, plan.version, since, now, due)
                    if previous_row is not None and attrs.evolve(previous_row, evaluated_at=now) == row:
                        continue  # same answer: the group's evaluation time covers it
                elif previous_row is None:
                    continue
                (rows if previous_row is not None else fresh)[cid] = row
                before = slot_origins(slot)
                after = slot_origins(Slot(slot.manual, slot.imported, slot.excluded, row))
                if before != after:
                    changes.append(Change(plan.definition.name, cid, before, after, now, "rule"))
            if rows:
                store.put_rules(gid, rows)
            if fresh:
                store.put_rules(gid, fresh, new=True)
        return self._end_pass(catalog, order, stale_customers, seen, now, changes)

    def _pass_in_database(
        self, catalog: _Catalog, store: DiffsInDatabase, order: list[int], now: dt.datetime
    ) -> list[Change]:
        """:meth:`_full_pass` computed by the database: each group's matches are staged there and
        compared with its stored rows there; Python reads the customers only for the next instants
        of time-based rules."""
        store.start_pass()
        staged: set[int] = set()  # whose staged matches the store keeps: read by the groups referring to them
        effective: dict[int, set[CustomerId]] = {}

        def members(gid: int) -> set[CustomerId]:
            if gid not in effective:
                effective[gid] = store.staged_members(gid) if gid in staged else store.members(gid)
            return effective[gid]

        lookup = self._lookup_of(catalog, members)
        changes: list[Change] = []
        timed: list[int] = []
        for index, gid in enumerate(order):
            self._report(Progress(index, index / len(order), what="groups", stage="refresh: rules"))
            plan = catalog.plans[gid]
            later = self._stage_in_database(catalog, store, gid, now, lookup)
            if later is None:
                continue
            keep = bool(catalog.dependents[gid])
            if keep or later:
                staged.add(gid)
            if later:
                timed.append(gid)
            else:  # a group without a rule stages no match: its rule rows go
                changes.extend(self._apply_in_database(store, plan, now, {}, keep))
        self._report(Progress(len(order), 1.0, what="groups", stage="refresh: rules"))
        order = [gid for gid in order if gid not in catalog.broken]
        dues, stale_customers, seen = self._customer_pass(catalog, timed, catalog.ruled - set(order), now, lookup)
        for gid in timed:
            if gid not in catalog.broken:
                keep = bool(catalog.dependents[gid])
                changes.extend(self._apply_in_database(store, catalog.plans[gid], now, dues[gid], keep))
        order = [gid for gid in order if gid not in catalog.broken]
        return self._end_pass(catalog, order, stale_customers, seen, now, changes)

    def _pass_in_database_for(
        self, catalog: _Catalog, store: DiffsInDatabase, ids: list[CustomerId], now: dt.datetime
    ) -> list[Change]:
        """Re-evaluate these customers (whose data changed) for every group, computed by the database as a
        full pass is but restricted to them; those no longer stored leave every group."""
        existing = self.repository.existing(ids)
        changes = self._drop(catalog, [cid for cid in ids if cid not in existing], now)
        store.start_pass(existing)
        self._store.put_digests(dict.fromkeys(existing))  # what they read changed: their digests are stale
        effective: dict[int, set[CustomerId]] = {}

        def members(gid: int) -> set[CustomerId]:  # every group a rule refers to comes before it
            if gid not in effective:
                effective[gid] = store.members(gid)
            return effective[gid]

        lookup = self._lookup_of(catalog, members)
        customers: Mapping[CustomerId, Customer] | None = None
        for gid in catalog.order:
            plan, definition = catalog.plans[gid], catalog.defs[gid]
            if plan.rule is None or gid in catalog.broken or definition.evaluated != definition.version:
                continue  # a rule not evaluated yet is evaluated in full next
            later = self._stage_in_database(catalog, store, gid, now, lookup)
            if later is None:
                continue
            dues: dict[CustomerId, dt.datetime] = {}
            if later:  # few customers: read them and ask each (the full pass streams every customer instead)
                if customers is None:
                    customers = self._read_customers(catalog, list(existing))
                try:
                    with self._guarded():
                        for cid, customer in customers.items():
                            if (due := plan.next_change(customer, now, lookup)) is not None:
                                dues[cid] = due
                except Exception as error:  # isolated: this group reports it, the others go on
                    self._fail(catalog, gid, error)
                    continue
            changes.extend(self._apply_in_database(store, plan, now, dues, False, "data"))
        return changes

    def _stage_in_database(
        self, catalog: _Catalog, store: DiffsInDatabase, gid: int, now: dt.datetime, lookup: GroupLookup
    ) -> bool | None:
        """Stage a group's matches in the store, and the next instants of its answers where the database
        computes them. None when the rule failed (recorded on the group: the others go on); else whether
        those instants are left to Python."""
        plan = catalog.plans[gid]
        if plan.rule is None:
            return False
        try:
            with self._guarded():
                store.stage_rule(gid, plan.rule, now, lookup)
                return bool(plan.time) and not store.stage_dues(gid, plan, now, lookup)
        except Exception as error:
            self._fail(catalog, gid, error)
            return None

    def _apply_in_database(
        self,
        store: DiffsInDatabase,
        plan: Plan,
        now: dt.datetime,
        dues: Mapping[CustomerId, dt.datetime],
        keep: bool,
        cause: str = "rule",
    ) -> list[Change]:
        name = plan.definition.name
        found = [
            Change(name, cid, origins_of_bits(before), origins_of_bits(after), now, cause)
            for cid, before, after in store.apply_rule(plan.gid, plan.version, now, dues, cause, keep=keep)
        ]
        self._historied.extend(found)  # the store wrote their history rows
        return found

    def _lookup_of(self, catalog: _Catalog, members: Callable[[int], set[CustomerId]]) -> GroupLookup:
        known: dict[str, int] = {}

        def lookup(name: str) -> set[CustomerId]:
            gid = known.get(name)
            if gid is None:
                gid = known[name] = catalog.known(name)
            return members(gid)

        return lookup

    def _customer_pass(
        self, catalog: _Catalog, timed: Sequence[int], others: AbstractSet[int], now: dt.datetime, lookup: GroupLookup
    ) -> tuple[dict[int, dict[CustomerId, dt.datetime]], dict[CustomerId, set[int]], set[CustomerId] | None]:
        """One pass over every customer, for the groups of a full pass: the next instant time could change
        each answer of the ``timed`` ones, and the digests. Returns the dues by group, the customers whose
        data changed for the ``others`` groups since their last evaluation, and every customer seen
        (None: no pass was needed, the store computes without the digests)."""
        dues: dict[int, dict[CustomerId, dt.datetime]] = {gid: {} for gid in timed}
        stale_customers: dict[CustomerId, set[int]] = {}
        if not timed and isinstance(self._store, DiffsInDatabase):
            return dues, stale_customers, None
        store = self._store
        seen: set[CustomerId] = set()
        iterator = iter(self.repository)
        total = len(self.repository) if self.progress is not None else None
        while batch := list(itertools.islice(iterator, _BATCH)):
            self._report(Progress(len(seen), _share(len(seen), total), what="customers", stage="refresh: customers"))
            previous = store.digests([c.id for c in batch])
            digests: dict[CustomerId, tuple[str, bytes] | None] = {}
            for customer in batch:
                cid = customer.id
                seen.add(cid)
                new = digest_of(catalog.keys, customer)
                digests[cid] = (catalog.keys_version, new)
                if others:
                    changed = catalog.changed_groups(previous.get(cid), new, self._key_set) & others
                    if changed:
                        stale_customers[cid] = changed
                memo: dict[int, dt.datetime | None] = {}
                for gid in timed:
                    if gid in catalog.broken:
                        continue
                    try:
                        due = catalog.plans[gid].next_change(customer, now, lookup, memo)
                    except Exception as error:
                        self._fail(catalog, gid, error)
                        continue
                    if due is not None:
                        dues[gid][cid] = due
            store.put_digests(digests)
        self._report(Progress(len(seen), 1.0, what="customers", stage="refresh: customers"))
        return dues, stale_customers, seen

    def _end_pass(
        self,
        catalog: _Catalog,
        order: Sequence[int],
        stale_customers: Mapping[CustomerId, set[int]],
        seen: set[CustomerId] | None,
        now: dt.datetime,
        changes: list[Change],
    ) -> list[Change]:
        """Record the groups evaluated, revisit the customers found stale, and drop those deleted."""
        store = self._store
        store.save_definitions(
            [attrs.evolve(catalog.defs[gid], evaluated=catalog.defs[gid].version, evaluated_at=now) for gid in order]
        )
        if stale_customers:
            changes.extend(self._revisit(catalog, stale_customers, now, check_data=False, cause="rule"))
        stored = store.customer_ids()
        gone = stored - (seen if seen is not None else self.repository.existing(stored))
        if gone:
            changes.extend(self._drop(catalog, gone, now))
        return changes

    def _revisit(
        self,
        catalog: _Catalog,
        todo: Mapping[CustomerId, set[int]],
        now: dt.datetime,
        check_data: bool,
        cause: str = "data",
    ) -> list[Change]:
        """Evaluate these customers again (for the groups given, and with ``check_data`` those whose reads
        changed), reading them in batches; customers no longer stored leave every group."""
        changes: list[Change] = []
        ids = list(todo)
        for start in range(0, len(ids), _BATCH):
            batch = ids[start : start + _BATCH]
            work = _Work()
            slots = self._store.slots(batch)
            digests = self._store.digests(batch) if check_data else {}
            customers = self._read_customers(catalog, batch)
            missing = []
            for cid in batch:
                customer = customers.get(cid)
                if customer is None:
                    missing.append(cid)
                    continue
                current = slots.setdefault(cid, {})
                self._process(
                    catalog,
                    customer,
                    current,
                    todo[cid],
                    now,
                    work,
                    digest=check_data,
                    old_digest=digests.get(cid),
                    cause=cause,
                )
            work.flush(self._store)
            changes.extend(work.changes)
            if missing:
                changes.extend(self._drop(catalog, missing, now))
        return changes

    def _read_customers(self, catalog: _Catalog, ids: Sequence[CustomerId]) -> Mapping[CustomerId, Customer]:
        """These customers, with only the events some rule reads where the repository can leave the others."""
        if isinstance(self.repository, ReadsSomeEvents):
            return self.repository.get_many_reading(ids, catalog.event_names)
        return self.repository.get_many(ids)

    def _catch_up(
        self,
        now: dt.datetime,
        *,
        force_all: bool = False,
        as_of: dt.datetime | None = None,
        also: Sequence[CustomerId] = (),
    ) -> tuple[_Catalog, list[Change]] | None:
        """Bring stored memberships to ``now``; None when ``now`` is before the stored state.

        ``also`` are customers to re-evaluate as if the change log named them.
        """
        as_of = as_of if as_of is not None else self._as_of()
        if as_of is not None and now < as_of and not force_all:
            return None
        store = self._store
        store.lock()  # one catch-up at a time, across processes: the next one starts from this one's state
        catalog = self._catalog()
        self._load_broken(catalog, retry=force_all)
        changes: list[Change] = []
        position = store.get_meta(_CHANGES)
        changed: list[CustomerId] = []
        after = position
        if position is None:  # a new store follows the log from here; its groups are evaluated in full
            after = self.repository.change_position()
        else:
            changed, after = self.repository.changes_since(position)
        if not force_all:
            due: dict[CustomerId, set[int]] = {}
            for gid, cid in store.due(now):
                if gid in catalog.defs and gid not in catalog.broken:
                    due.setdefault(cid, set()).add(gid)
            written = dict.fromkeys([*changed, *also])
            if due:
                changes.extend(
                    self._revisit(catalog, {c: g for c, g in due.items() if c not in written}, now, False, "time")
                )
            store_diffs = isinstance(store, DiffsInDatabase) and store.scopes
            if store_diffs and len(written) >= _IN_DATABASE:  # many customers changed: every group, in SQL
                assert isinstance(store, DiffsInDatabase)
                changes.extend(self._pass_in_database_for(catalog, store, list(written), now))
            elif written:  # the data changed: the groups whose rules read what changed (and any due)
                todo = {cid: due.get(cid, set()) for cid in written}
                changes.extend(self._revisit(catalog, todo, now, check_data=True, cause="data"))
        stale = set(catalog.defs) if force_all else {gid for gid, d in catalog.defs.items() if d.evaluated != d.version}
        stale -= catalog.broken.keys()
        if stale:
            changes.extend(self._full_pass(catalog, stale, now))
            catalog = self._catalog()
            self._load_broken(catalog)
        if after is not None and after != position:
            store.set_meta(_CHANGES, after)
            self.repository.forget_changes(after)
        if as_of is None or now != as_of:
            store.set_meta(_AS_OF, now.isoformat())
        self._trim_history(now)
        return catalog, changes

    def _trim_history(self, now: dt.datetime) -> None:
        """Forget history older than the retention, once a day at most."""
        if self.history_retention is None:
            return
        day = now.date().isoformat()
        if self._store.get_meta(_HISTORY_TRIMMED) != day:
            self._store.forget_history(now - self.history_retention)
            self._store.set_meta(_HISTORY_TRIMMED, day)

    def refresh(
        self, now: dt.datetime | None = None, customer_ids: Iterable[CustomerId] | None = None, *, full: bool = False
    ) -> list[Change]:
        """Bring stored memberships up to date at ``now``; returns who joined, left or changed origins.

        Without arguments it evaluates new or changed rules and revisits the
        memberships that time could have changed since the last refresh.
        ``customer_ids`` also re-evaluates those customers (after their data
        changed, or they were added or deleted), for the groups whose rules
        read what changed. ``full=True`` re-evaluates everything. A refresh
        at a ``now`` before the stored state's re-evaluates everything at it.
        """
        moment = self._now(now)
        ids = None if customer_ids is None else list(dict.fromkeys(_check_ids(customer_ids)))
        with self._atomic() as changes:
            if ids:  # known: stored, or with stored state (a deleted customer's, until it is caught up)
                known = set(self._store.digests(ids)) | set(self._store.slots(ids)) | self.repository.existing(ids)
                for cid in ids:
                    if cid not in known:
                        raise UnknownCustomerError(cid)
            as_of = self._as_of()
            rewind = as_of is not None and moment < as_of
            caught = self._catch_up(moment, force_all=full or rewind, as_of=as_of, also=ids or ())
            assert caught is not None
            changes.extend(caught[1])  # the customers given were re-evaluated with the changed ones
        return changes

    # -- reading ---------------------------------------------------------------

    def _read(self, now: dt.datetime | None) -> tuple[_Catalog, dt.datetime, bool]:
        """Catch up at ``now``; returns the catalog, the moment, and whether the stored state answers."""
        moment = self._now(now)
        with self._atomic() as changes:
            caught = self._catch_up(moment)
            if caught is None:
                catalog = self._catalog()
                self._load_broken(catalog)
                return catalog, moment, False
            catalog, found = caught
            changes.extend(found)
        return catalog, moment, True

    def _stored_members(self, gid: int) -> dict[CustomerId, frozenset[Origin]]:
        return {cid: found for cid, slot in self._store.group_slots(gid).items() if (found := slot_origins(slot))}

    def _members_at(
        self, catalog: _Catalog, gid: int, now: dt.datetime, memo: dict[int, dict[CustomerId, frozenset[Origin]]]
    ) -> dict[CustomerId, frozenset[Origin]]:
        """Members computed afresh at ``now`` (for a ``now`` before the stored state)."""
        if gid in memo:
            return memo[gid]
        self._check_working(catalog, gid)
        plan = catalog.plans[gid]
        slots = self._store.group_slots(gid)
        matched: set[CustomerId] = set()
        if plan.rule is not None:
            matched = self.repository.select(
                plan.rule, now, groups=lambda n: set(self._members_at(catalog, catalog.known(n), now, memo))
            )
        result: dict[CustomerId, frozenset[Origin]] = {}
        stored = matched | self.repository.existing(slots)  # marks of deleted customers not caught up yet count not
        for cid in stored:
            slot = slots.get(cid, EMPTY)
            if slot.excluded:
                continue
            found = {o for o, on in ((Origin.MANUAL, slot.manual), (Origin.IMPORTED, slot.imported)) if on}
            if cid in matched:
                found.add(Origin.RULES)
            if found:
                result[cid] = frozenset(found)
        memo[gid] = result
        return result

    def members(self, name: str, now: dt.datetime | None = None) -> Members:
        """The group's members at ``now`` and the origins of each, in id order (a read-only mapping that
        shows as a table in notebooks; ``.rows()`` gives plain rows for pandas)."""
        catalog, moment, stored = self._read(now)
        gid = catalog.known(name)
        self._check_working(catalog, gid)
        found = self._stored_members(gid) if stored else self._members_at(catalog, gid, moment, {})
        return Members(catalog.defs[gid].name, moment, found)

    def count(self, name: str, now: dt.datetime | None = None) -> int:
        """How many members the group has at ``now``."""
        catalog, moment, stored = self._read(now)
        gid = catalog.known(name)
        self._check_working(catalog, gid)
        if not stored:
            return len(self._members_at(catalog, gid, moment, {}))
        if isinstance(self._store, DiffsInDatabase):
            return len(self._store.members(gid))  # the ids only, from the database
        return len(self._stored_members(gid))

    def origins(self, name: str, customer_id: CustomerId, now: dt.datetime | None = None) -> frozenset[Origin]:
        """Why a customer is in the group at ``now`` (empty: not a member)."""
        return self.groups_of(customer_id, now).get(self._catalog_name(name), NO_ORIGINS)

    def _catalog_name(self, name: str) -> str:
        catalog = self._catalog()
        return catalog.defs[catalog.known(name)].name

    def groups_of(self, customer_id: CustomerId, now: dt.datetime | None = None) -> Mapping[str, frozenset[Origin]]:
        """The groups a customer is in at ``now``, with the origins in each."""
        catalog, moment, stored = self._read(now)
        self._check_customer(customer_id)
        if stored:
            found = self._store.slots([customer_id]).get(customer_id, {})
            return {catalog.defs[gid].name: o for gid, slot in found.items() if (o := slot_origins(slot))}
        memo: dict[int, dict[CustomerId, frozenset[Origin]]] = {}
        result = {}
        for gid in catalog.order:
            if gid in catalog.broken:
                continue
            members = self._members_at(catalog, gid, moment, memo)
            if customer_id in members:
                result[catalog.defs[gid].name] = members[customer_id]
        return result

    def _check_customer(self, customer_id: CustomerId) -> None:
        if self.repository.get(customer_id) is None and not self._store.slots([customer_id]):
            raise UnknownCustomerError(customer_id)

    def why(self, name: str, customer_id: CustomerId, now: dt.datetime | None = None) -> Why:
        """Why a customer is or is not in the group: origins, exclusion, rule version, and the rule's explanation."""
        catalog, moment, stored = self._read(now)
        gid = catalog.known(name)
        self._check_working(catalog, gid)
        self._check_customer(customer_id)
        definition, plan = catalog.defs[gid], catalog.plans[gid]
        slot = self._store.slots([customer_id]).get(customer_id, {}).get(gid, EMPTY)
        customer = self.repository.get(customer_id)
        explanation = None
        if stored:
            found = slot_origins(slot)
            current = self._store.slots([customer_id]).get(customer_id, {})

            def lookup(group: str) -> Container[CustomerId]:
                return (customer_id,) if slot_origins(current.get(catalog.known(group), EMPTY)) else ()

        else:
            memo: dict[int, dict[CustomerId, frozenset[Origin]]] = {}
            found = self._members_at(catalog, gid, moment, memo).get(customer_id, NO_ORIGINS)

            def lookup(group: str) -> Container[CustomerId]:
                return set(self._members_at(catalog, catalog.known(group), moment, memo))

        if plan.predicate is not None and customer is not None:
            explanation = plan.predicate.explain(customer, moment, groups=lookup)
        row = slot.rule if stored else None
        return Why(
            group=definition.name,
            customer_id=customer_id,
            origins=found,
            manual=slot.manual,
            imported=slot.imported,
            excluded=slot.excluded,
            rule=definition.rule,
            rule_version=definition.version,
            matched_version=(row.version if row is not None and row.matched else None)
            if stored
            else (definition.version if explanation is not None and explanation.result else None),
            since=row.since if row is not None else None,
            evaluated_at=_latest(row.evaluated_at if row is not None else None, definition.evaluated_at)
            if stored
            else moment,
            next_check=row.due if row is not None else None,
            explanation=explanation,
        )

    # -- history -----------------------------------------------------------------

    def history(
        self,
        name: str | None = None,
        *,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        customer_id: CustomerId | None = None,
    ) -> list[HistoryEntry]:
        """Every join, leave and change of origins (of group ``name``, or of every group), in the order found.

        ``start <= at < end`` when given; ``customer_id`` keeps one customer's. Data written since the
        last read is caught up first (at the stored state's ``now``), so the history is complete. Entries
        older than the ``history`` retention given to :class:`Groups` are forgotten.

        Example:
            >>> import datetime as dt
            >>> from cohorts import Customer, MemoryRepository
            >>> now = dt.datetime(2026, 11, 16, tzinfo=dt.timezone.utc)
            >>> repo = MemoryRepository([Customer(1, {"city": "Laval"}), Customer(2)])
            >>> groups = Groups(repo)
            >>> groups.create("Laval", 'customer.city = "Laval"')
            >>> _ = groups.members("Laval", now)
            >>> repo.upsert([Customer(2, {"city": "laval"})])      # no refresh: the group follows the data
            >>> _ = groups.add("Laval", 1, now=now + dt.timedelta(hours=1))
            >>> for entry in groups.history("Laval"):
            ...     print(entry.customer_id, entry.joined, sorted(o.value for o in entry.origins), entry.cause)
            1 True ['rules'] rule
            2 True ['rules'] data
            1 True ['manual', 'rules'] manual

        .. versionadded:: 0.3
        """
        as_of = self._as_of()
        if as_of is not None:
            self._read(as_of)
        catalog = self._catalog()
        gid = None if name is None else catalog.known(name)
        rows = self._store.history(gid, start, end, customer_id)
        entries = []
        for row in rows:
            definition = catalog.defs.get(row.group_id)
            if definition is None:
                continue
            before, after = origins_of_bits(row.before), origins_of_bits(row.after)
            entries.append(
                HistoryEntry(
                    definition.name,
                    row.customer_id,
                    bool(after),
                    after,
                    after - before,
                    before - after,
                    row.version,
                    row.at,
                    row.cause,
                )
            )
        return entries

    def sizes(
        self, name: str, start: dt.datetime, end: dt.datetime, every: dt.timedelta = dt.timedelta(days=1)
    ) -> list[dict[str, Any]]:
        """The group's size at ``start``, ``start + every``, ... up to ``end``, from the membership history.

        Rows are plain dicts (``{"at": datetime, "members": int}``), ready for a chart or a DataFrame.
        The history starts when the group was created (and is kept for the ``history`` retention).

        .. versionadded:: 0.3
        """
        if every <= dt.timedelta(0):
            raise ValueError("every is a positive timedelta")
        if end < start:
            raise ValueError("end is before start")
        entries = self.history(name, end=end + dt.timedelta(microseconds=1))
        members: set[CustomerId] = set()
        rows: list[dict[str, Any]] = []
        index = 0
        at = start
        while at <= end:
            while index < len(entries) and entries[index].at <= at:
                entry = entries[index]
                if entry.joined:
                    members.add(entry.customer_id)
                else:
                    members.discard(entry.customer_id)
                index += 1
            rows.append({"at": at, "members": len(members)})
            at += every
        return rows

    def preview(self, name: str, rule: RuleLike | None, now: dt.datetime | None = None, *, sample: int = 10) -> Preview:
        """Who would join and who would leave if the group's rule became ``rule`` (nothing is saved)."""
        catalog, moment, stored = self._read(now)
        gid = catalog.known(name)
        node = self._check_rule(catalog, gid, rule)
        memo: dict[int, dict[CustomerId, frozenset[Origin]]] = {}

        def members(of: int) -> dict[CustomerId, frozenset[Origin]]:
            if stored:
                if of not in memo:
                    memo[of] = self._stored_members(of)
                return memo[of]
            return self._members_at(catalog, of, moment, memo)

        before = set(members(gid))
        matched: set[CustomerId] = set()
        if node is not None:
            matched = self.repository.select(node, moment, groups=lambda n: set(members(catalog.known(n))))
        after = set()
        for cid, slot in self._store.group_slots(gid).items():
            if not slot.excluded and (slot.manual or slot.imported):
                after.add(cid)
        excluded = {cid for cid, slot in self._store.group_slots(gid).items() if slot.excluded}
        after |= matched - excluded
        joining, leaving = sorted_ids(after - before), sorted_ids(before - after)
        return Preview(
            catalog.defs[gid].name,
            None if node is None else str(node),
            len(before),
            len(after),
            len(joining),
            len(leaving),
            tuple(joining[:sample]),
            tuple(leaving[:sample]),
        )


def _share(done: int, total: int | None) -> float | None:
    return None if not total else min(1.0, done / total)


def _latest(*moments: dt.datetime | None) -> dt.datetime | None:
    known = [m for m in moments if m is not None]
    return max(known) if known else None


def _check_ids(customer_ids: Iterable[CustomerId]) -> Iterable[CustomerId]:
    if isinstance(customer_ids, str | int):
        raise TypeError("customer_ids is a collection of ids, not a single id")
    return customer_ids
