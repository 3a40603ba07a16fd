"""Customer repositories: the protocol every store satisfies, and the in-memory reference.

A repository keeps customers (attributes and events) and answers ``select``:
the ids of the customers a rule is true for at a moment. Every repository
takes the same rules, as text or AST, and gives the same answers; the
in-memory :class:`MemoryRepository` evaluates with :func:`cohorts.compile`
and is the reference the SQL repository is tested against.

Writes are transactional. ``upsert`` of a batch either writes all of it or,
on an error, nothing, and the error names the offending customer.
``transaction()`` groups several writes, including those of other modules'
stores (groups, campaign ledgers), into one unit that is rolled back
entirely when the block raises.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import math
import re
import threading
from collections.abc import Callable, Collection, Container, Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any, Protocol, TypeAlias, TypeVar, runtime_checkable

from .ast import RuleLike
from .errors import CohortsError
from .evaluate import compile as compile_rule
from .group_store import GroupStore, MemoryGroupStore
from .ledger import Ledger, MemoryLedger, MemoryLedgerState, held
from .model import Customer, CustomerId, Event
from .schema import Schema, default_schema
from .values import DEFAULT_REGION, event_time, resolve_tz

__all__ = [
    "CustomerDataError",
    "CustomerReader",
    "CustomerWriter",
    "MapsAttributes",
    "MayRefuseWrites",
    "MemoryRepository",
    "Repository",
    "StateStore",
    "UnknownCustomerError",
    "check_limit",
    "consent_attribute",
    "holds_attribute",
    "read_only_reason",
    "require",
]

GroupLookup: TypeAlias = Callable[[str], Container[CustomerId]]
T = TypeVar("T")


def consent_attribute(channel: str | None) -> str:
    """The attribute that says whether a customer takes marketing: ``subscribed``, or for one channel
    ``<channel>_subscribed`` (``email_subscribed``, ``sms_subscribed``).

    Example:
        >>> consent_attribute(None), consent_attribute(" SMS ")
        ('subscribed', 'sms_subscribed')
    """
    if channel is None:
        return "subscribed"
    if not isinstance(channel, str) or not channel.strip() or not channel.strip().isidentifier():
        raise ValueError(f"a channel is a name such as 'email' or 'sms', not {channel!r}")
    return f"{channel.strip().lower()}_subscribed"

class UnknownCustomerError(CohortsError, KeyError):
    """No customer has this id.

    Attributes:
        customer_id: the id that was looked for.
    """

    def __init__(self, customer_id: CustomerId) -> None:
        self.customer_id = customer_id
        super().__init__(customer_id)

    def __str__(self) -> str:
        return f"no customer with id {self.customer_id!r}"


class CustomerDataError(CohortsError, ValueError):
    """A customer cannot be stored; nothing of the batch was written.

    Attributes:
        customer_id: the offending customer's id (None when the id itself is wrong).
        reason: what is wrong with it.
    """

    def __init__(self, customer_id: object, reason: str) -> None:
        self.customer_id = customer_id
        self.reason = reason
        super().__init__(f"customer {customer_id!r}: {reason}")


class CustomerReader(Protocol):
    """What rules and reports read: the customers, their settings, and ``select``."""

    @property
    def schema(self) -> Schema:
        """The schema rules are checked against."""
        ...

    @property
    def declared_schema(self) -> Schema | None:
        """The schema the repository was given; None when undeclared attributes are typed by the rule's values."""
        ...

    @property
    def tz(self) -> dt.tzinfo:
        """The time zone of naive datetimes, calendar words and date parts."""
        ...

    @property
    def region(self) -> str:
        """The default country of phone numbers."""
        ...

    def get(self, customer_id: CustomerId) -> Customer | None:
        """The stored customer, or None."""
        ...

    def __iter__(self) -> Iterator[Customer]:
        """Every stored customer."""
        ...

    def __len__(self) -> int:
        """How many customers are stored."""
        ...

    def ids(self) -> set[CustomerId]:
        """Every stored id."""
        ...

    def existing(self, customer_ids: Iterable[CustomerId]) -> set[CustomerId]:
        """The ids among ``customer_ids`` that are stored."""
        ...

    def get_many(self, customer_ids: Iterable[CustomerId]) -> dict[CustomerId, Customer]:
        """The stored customers among ``customer_ids``, read in batches (absent ids are left out)."""
        ...

    def select(
        self, rule: RuleLike, now: dt.datetime | None = None, *, groups: GroupLookup | None = None
    ) -> set[CustomerId]:
        """The ids of the customers for whom ``rule`` is true at ``now``."""
        ...


class CustomerWriter(Protocol):
    """What imports and campaign handlers write, in transactions.

    ``upsert`` writes a batch: a new customer is stored with its events; an
    existing one gets its attributes replaced, keeps its stored events, and
    gains those of the given events that are not stored yet (compared by
    value), so writing back a customer read with ``get`` adds nothing.
    """

    def upsert(self, customers: Iterable[Customer]) -> None:
        """Write a batch of customers, all or nothing."""
        ...

    def add_events(self, customer_id: CustomerId, events: Iterable[Event]) -> None:
        """Append events to a stored customer (UnknownCustomerError when absent)."""
        ...

    def delete(self, *customer_ids: CustomerId) -> int:
        """Remove customers and their events; returns how many existed."""
        ...

    def unsubscribe(self, customer_id: CustomerId, *, channel: str | None = None) -> None:
        """Set the customer's ``subscribed`` attribute to False, or with ``channel`` (``"email"``,
        ``"sms"``) its ``<channel>_subscribed`` attribute: no marketing on that channel only."""
        ...

    def declare(self, schema: Schema) -> None:
        """Make ``schema`` the repository's schema (an import adds the attributes it creates).

        Rolled back with the transaction it is made in.
        """
        ...

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """A block whose writes are all committed at its end, or all rolled back if it raises."""
        ...


class StateStore(Protocol):
    """Where the state of groups and campaigns lives: in the repository, written in its transactions.

    Every write (``upsert``, ``add_events``, ``delete``, ``unsubscribe``) records which customers
    changed, in the same transaction, in a change log that groups read to follow the data.
    """

    def change_position(self) -> str:
        """The position of the change log's end: ``changes_since`` it returns only later changes."""
        ...

    def changes_since(self, position: str) -> tuple[list[CustomerId], str]:
        """The ids of the customers written after ``position`` (repeats possible), and the new position.

        Changes of transactions still open may come again at a later call: reading a change twice is
        harmless, missing one is not.
        """
        ...

    def forget_changes(self, position: str) -> None:
        """Drop what the log holds before ``position`` (every reader has read it)."""
        ...

    def group_store(self) -> GroupStore:
        """The store of group definitions, marks and memberships (one per repository)."""
        ...

    def ledger(self) -> Ledger:
        """The campaign ledger (one per repository)."""
        ...


@runtime_checkable
class Repository(CustomerReader, CustomerWriter, StateStore, Protocol):
    """What every customer store offers; :class:`MemoryRepository` and ``SQLRepository`` satisfy it.

    A third-party backend implements these three protocols (see ``docs/repositories.md``):
    :class:`CustomerReader`, :class:`CustomerWriter` and :class:`StateStore`.
    """


def _members(protocol: type) -> list[str]:
    names: list[str] = []
    for klass in protocol.__mro__:
        if klass in (object, Protocol) or not getattr(klass, "_is_protocol", False):
            continue
        for name in vars(klass):
            if (name in ("__iter__", "__len__") or not name.startswith("_")) and name not in names:
                names.append(name)
    return names


def require(value: object, protocol: type, use: str) -> None:
    """Raise a TypeError that names what ``value`` lacks of ``protocol`` (a service boundary's check).

    Example:
        >>> require(object(), CustomerReader, "report")
        Traceback (most recent call last):
        ...
        TypeError: report needs a cohorts.CustomerReader, such as a MemoryRepository or SQLRepository; object lacks ...
    """
    missing = sorted(name for name in _members(protocol) if not hasattr(value, name))
    if missing:
        raise TypeError(
            f"{use} needs a cohorts.{protocol.__name__}, such as a MemoryRepository or SQLRepository;"
            f" {type(value).__name__} lacks {', '.join(missing)}"
        )


def check_limit(limit: object) -> None:
    """Raise ValueError unless ``limit`` is None or a whole number >= 0 (``select(..., limit=)``)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit is a whole number >= 0 or None, not {limit!r}")


@runtime_checkable
class MayRefuseWrites(Protocol):
    """A repository that may refuse writes to customers (a ``HostRepository`` without a writer)."""

    @property
    def read_only_reason(self) -> str | None:
        """Why writes to customers are refused, or None when they are taken."""
        ...


@runtime_checkable
class MapsAttributes(Protocol):
    """A repository whose customers hold only some attributes (a ``HostRepository``: the mapped ones)."""

    @property
    def mapped_attributes(self) -> frozenset[str]:
        """The attributes a customer can hold; any other is unknown for every customer."""
        ...


@runtime_checkable
class ReadsSomeEvents(Protocol):
    """A repository that can read customers with only some of their events (a ``HostRepository``), which
    saves reading event tables no rule looks at."""

    def get_many_reading(
        self, customer_ids: Iterable[CustomerId], events: Collection[str]
    ) -> dict[CustomerId, Customer]:
        """The customers among ``customer_ids``, each with only its events whose name is in ``events``."""
        ...


def read_only_reason(repository: object) -> str | None:
    """Why ``repository`` refuses writes to customers (a ``HostRepository`` without a writer), or None.

    Example:
        >>> read_only_reason(MemoryRepository()) is None
        True
    """
    return repository.read_only_reason if isinstance(repository, MayRefuseWrites) else None


def holds_attribute(repository: object, attribute: str) -> bool:
    """Whether customers of ``repository`` can hold ``attribute`` (see :class:`MapsAttributes`).

    Example:
        >>> holds_attribute(MemoryRepository(), "status")
        True
    """
    return not isinstance(repository, MapsAttributes) or attribute in repository.mapped_attributes


# -- checking what a customer holds ------------------------------------------

_SCALARS = (str, int, float, bool, dt.date, Decimal)
_PLAIN = frozenset({str, int, float, bool, dt.date, dt.datetime, Decimal, type(None)})  # exactly these classes


_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(text: str, where: str) -> None:
    """Raise ValueError (with ``where``) when ``text`` holds a lone surrogate, which UTF-8 cannot encode.

    Every repository refuses such text, so memory and the databases hold the same.
    """
    if not text.isascii() and _SURROGATE.search(text) is not None:
        raise ValueError(f"{where} holds a lone surrogate, which no database stores: {text!r}")


def check_id(customer_id: object) -> CustomerId:
    """A customer id: text or an integer (not a boolean)."""
    if isinstance(customer_id, bool) or not isinstance(customer_id, str | int):
        raise CustomerDataError(customer_id, f"an id is text or an integer, not {type(customer_id).__name__}")
    if isinstance(customer_id, str):
        try:
            check_text(customer_id, "the id")
        except ValueError as error:
            raise CustomerDataError(customer_id, str(error)) from None
    return customer_id


def check_value(value: object, where: str) -> None:
    """Raise ValueError (with ``where``) unless a repository can store ``value``."""
    if isinstance(value, str):
        check_text(value, where)
        return
    if value is None or isinstance(value, _SCALARS):
        return
    if isinstance(value, list | tuple | set | frozenset):
        for item in value:
            check_value(item, where)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has a key that is not text: {key!r}")
            check_text(key, f"a key of {where}")
            check_value(item, where)
        return
    raise ValueError(f"{where} holds a {type(value).__name__}, which a repository cannot store")


def check_customer(customer: object) -> Customer:
    """The customer, checked: a Customer with a valid id, text attribute names and storable values."""
    if not isinstance(customer, Customer):
        raise CustomerDataError(getattr(customer, "id", None), f"not a Customer: {type(customer).__name__}")
    check_id(customer.id)
    try:
        for name, value in customer.attributes.items():
            cls = value.__class__
            if cls in _PLAIN and name.__class__ is str and name.isascii() and (cls is not str or value.isascii()):
                continue  # plain ASCII text (by far the most common), a number, a date: nothing more to check
            if not isinstance(name, str):
                raise ValueError(f"attribute name {name!r} is not text")
            check_text(name, f"attribute name {name!r}")
            check_value(value, f"attribute {name!r}")
        check_events(customer.events)
    except ValueError as error:
        raise CustomerDataError(customer.id, str(error)) from None
    return customer


def check_events(events: Iterable[object]) -> tuple[Event, ...]:
    """The events, checked (ValueError otherwise)."""
    checked = []
    for event in events:
        if not isinstance(event, Event):
            raise ValueError(f"not an Event: {type(event).__name__}")
        if not isinstance(event.name, str) or not event.name:
            raise ValueError(f"an event's name is non-empty text, not {event.name!r}")
        check_text(event.name, "an event's name")
        for name, value in event.attributes.items():
            cls = value.__class__
            if cls in _PLAIN and name.__class__ is str and name.isascii() and (cls is not str or value.isascii()):
                continue  # plain ASCII text, a number, a date: nothing more to check
            if not isinstance(name, str):
                raise ValueError(f"event {event.name!r} has a field name that is not text: {name!r}")
            check_text(name, f"a field name of event {event.name!r}")
            check_value(value, f"field {name!r} of event {event.name!r}")
        checked.append(event)
    return tuple(checked)


def new_events(stored: Iterable[Event], given: Iterable[Event]) -> list[Event]:
    """The events of ``given`` that ``stored`` lacks, counting duplicates (an upsert's merge)."""
    remaining = list(stored)
    added = []
    for event in given:
        for index, old in enumerate(remaining):
            if _same_event(old, event):
                del remaining[index]
                break
        else:
            added.append(event)
    return added


def _same_event(a: Event, b: Event) -> bool:
    return a.name == b.name and type(a.at) is type(b.at) and a.at == b.at and _same(a.attributes, b.attributes)


def _same(a: Any, b: Any) -> bool:
    # Equality that also compares types, so 1, 1.0 and True are different values.
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, Decimal) and (a.is_nan() or b.is_nan()):  # == beside a signalling NaN raises
        return a.is_nan() and b.is_nan() and a.is_snan() == b.is_snan()
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@runtime_checkable
class Transactional(Protocol):
    """State a :class:`MemoryRepository` extension keeps that its transactions roll back."""

    def snapshot(self) -> object: ...

    def restore(self, snapshot: object) -> None: ...


# -- the in-memory repository -------------------------------------------------


class MemoryRepository:
    """Customers kept in a dict, evaluated with the compiled predicate: the reference repository.

    ``schema`` (default: lenient :func:`default_schema`, where undeclared
    attributes are typed by the rule's values), ``tz`` (default UTC) and
    ``region`` (default "US") are passed to :func:`cohorts.compile`.

    Example:
        >>> from cohorts import Customer
        >>> repo = MemoryRepository([Customer(1, {"city": "Laval"}), Customer("c2", {"city": "Lévis"})])
        >>> sorted(map(str, repo.select('customer.city starts with "l"')))
        ['1', 'c2']
        >>> repo.select('customer.city = "LÉVIS"')
        {'c2'}

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        customers: Iterable[Customer] = (),
        schema: Schema | None = None,
        tz: str | dt.tzinfo | None = None,
        region: str = DEFAULT_REGION,
    ) -> None:
        self._customers: dict[CustomerId, Customer] = {}
        self._schema = schema
        self._tz = resolve_tz(tz)
        self._region = region
        self._extensions: dict[str, Any] = {}
        self._log: list[CustomerId] = []  # the change log: the ids written, in order
        self._log_start = 0  # the position of the log's first entry
        self._depth = 0  # how many transactions are open
        self.upsert(customers)

    def __repr__(self) -> str:
        return f"<MemoryRepository of {len(self._customers)} customers>"

    # -- settings

    @property
    def schema(self) -> Schema:
        """The schema rules are checked against (the default one unless given)."""
        return self._schema if self._schema is not None else default_schema()

    @schema.setter
    def schema(self, schema: Schema) -> None:
        self.declare(schema)

    @property
    def declared_schema(self) -> Schema | None:
        """The schema given (None: undeclared attributes are typed by the rule's values)."""
        return self._schema

    def declare(self, schema: Schema) -> None:
        """Make ``schema`` the repository's schema (rolled back with the transaction it is made in)."""
        if not isinstance(schema, Schema):
            raise TypeError(f"a schema is a cohorts.Schema, not {type(schema).__name__}")
        self._schema = schema

    @property
    def tz(self) -> dt.tzinfo:
        """The time zone of naive datetimes, calendar words and date parts."""
        return self._tz

    @property
    def region(self) -> str:
        """The default country of phone numbers."""
        return self._region

    # -- writing

    def upsert(self, customers: Iterable[Customer]) -> None:
        """Write a batch: new customers are added, existing ones get new attributes (see Repository).

        Every customer is checked before anything is written, so a bad one
        leaves the repository unchanged and the CustomerDataError names it.
        """
        batch = [self._check_times(check_customer(c)) for c in customers]
        staged: dict[CustomerId, Customer] = {}
        for customer in batch:
            old = staged.get(customer.id) or self._customers.get(customer.id)
            if old is None:
                staged[customer.id] = customer
            else:
                added = new_events(old.events, customer.events)
                staged[customer.id] = Customer(customer.id, dict(customer.attributes), (*old.events, *added))
        self._customers.update(staged)
        self._log.extend(staged)

    def _check_times(self, customer: Customer) -> Customer:
        """The customer, once each event's time is known to be in range here (as SQL repositories check)."""
        try:
            for event in customer.events:
                event_time(event.at, self._tz)
        except ValueError as error:
            raise CustomerDataError(customer.id, str(error)) from None
        return customer

    def add_events(self, customer_id: CustomerId, events: Iterable[Event]) -> None:
        """Append events to a stored customer (UnknownCustomerError when absent)."""
        customer = self._customers.get(customer_id)
        if customer is None:
            raise UnknownCustomerError(customer_id)
        try:
            checked = check_events(events)
            for event in checked:
                event_time(event.at, self._tz)
        except ValueError as error:
            raise CustomerDataError(customer_id, str(error)) from None
        if checked:
            self._customers[customer_id] = customer.with_events(checked)
            self._log.append(customer_id)

    def delete(self, *customer_ids: CustomerId) -> int:
        """Remove customers and their events; returns how many existed."""
        removed = 0
        for customer_id in dict.fromkeys(customer_ids):
            if self._customers.pop(customer_id, None) is not None:
                removed += 1
                self._log.append(customer_id)
        return removed

    def unsubscribe(self, customer_id: CustomerId, *, channel: str | None = None) -> None:
        """Set the customer's ``subscribed`` attribute (``<channel>_subscribed`` with ``channel``) to False."""
        attribute = consent_attribute(channel)
        customer = self._customers.get(customer_id)
        if customer is None:
            raise UnknownCustomerError(customer_id)
        self._customers[customer_id] = customer.with_attributes(**{attribute: False})
        self._log.append(customer_id)

    # -- reading

    def get(self, customer_id: CustomerId) -> Customer | None:
        """The stored customer, or None."""
        return self._customers.get(customer_id)

    def __iter__(self) -> Iterator[Customer]:
        return iter(list(self._customers.values()))

    def __len__(self) -> int:
        return len(self._customers)

    def __contains__(self, customer_id: object) -> bool:
        return customer_id in self._customers

    def ids(self) -> set[CustomerId]:
        """Every stored id."""
        return set(self._customers)

    def existing(self, customer_ids: Iterable[CustomerId]) -> set[CustomerId]:
        """The ids among ``customer_ids`` that are stored."""
        customers = self._customers
        return {cid for cid in customer_ids if cid in customers}

    def get_many(self, customer_ids: Iterable[CustomerId]) -> dict[CustomerId, Customer]:
        """The stored customers among ``customer_ids``."""
        customers = self._customers
        return {cid: found for cid in customer_ids if (found := customers.get(cid)) is not None}

    # -- the change log

    def change_position(self) -> str:
        """The position after the last write."""
        return str(self._log_start + len(self._log))

    def changes_since(self, position: str) -> tuple[list[CustomerId], str]:
        """The ids written after ``position``, and the new position.

        Example:
            >>> from cohorts import Customer
            >>> repo = MemoryRepository([Customer(1)])
            >>> start = repo.change_position()
            >>> repo.upsert([Customer(2), Customer(1, {"city": "Laval"})])
            >>> repo.changes_since(start)
            ([2, 1], '3')
        """
        offset = max(0, int(position) - self._log_start)
        return self._log[offset:], self.change_position()

    def forget_changes(self, position: str) -> None:
        """Drop the log's entries before ``position`` (not inside a transaction, which could roll them back)."""
        if self._depth:
            return
        drop = min(len(self._log), int(position) - self._log_start)
        if drop > 0:
            del self._log[:drop]
            self._log_start += drop

    def select(
        self,
        rule: RuleLike,
        now: dt.datetime | None = None,
        *,
        groups: GroupLookup | None = None,
        limit: int | None = None,
    ) -> set[CustomerId]:
        """The ids of the customers for whom ``rule`` is true at ``now`` (default: the current time).

        ``limit`` keeps the first ``limit`` of them in the order they were first stored.
        """
        check_limit(limit)
        predicate = compile_rule(rule, schema=self._schema, tz=self._tz, region=self._region)
        found = set(predicate.select(self._customers.values(), now, groups=groups))
        if limit is None or len(found) <= limit:
            return found
        return set(itertools.islice((cid for cid in self._customers if cid in found), limit))

    def count(self, rule: RuleLike, now: dt.datetime | None = None, *, groups: GroupLookup | None = None) -> int:
        """How many customers ``rule`` is true for at ``now``."""
        return len(self.select(rule, now, groups=groups))

    # -- other modules' state, and transactions

    def group_store(self) -> GroupStore:
        """The groups' state, kept in this repository and rolled back with its transactions."""
        store: MemoryGroupStore = self.extension("cohorts.groups", MemoryGroupStore)
        return store

    def ledger(self) -> Ledger:
        """The campaign ledger, kept in this repository and rolled back with its transactions."""
        return MemoryLedger(self.extension("cohorts.campaigns.ledger", MemoryLedgerState))

    def runner_lock(self, *, wait: bool = False) -> contextlib.AbstractContextManager[bool]:
        """The lock one campaign run at a time holds (see :class:`cohorts.ledger.RunnerLocks`): this
        repository's, in this process."""
        return held(self.extension("cohorts.campaigns.runner", threading.Lock), wait)

    def extension(self, key: str, factory: Callable[[], T]) -> T:
        """A per-repository object kept under ``key``, made by ``factory`` on first use.

        Other modules keep their state here (group memberships, campaign
        ledgers). During :meth:`transaction`, an extension with ``snapshot()``
        and ``restore(snapshot)`` methods is rolled back with the customers.

        Example:
            >>> repo = MemoryRepository()
            >>> repo.extension("notes", dict) is repo.extension("notes", dict)
            True
        """
        if key not in self._extensions:
            self._extensions[key] = factory()
        value: T = self._extensions[key]
        return value

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Writes inside the block are kept at its end, or all undone if it raises.

        Transactions nest: an inner block that raises undoes its own writes.

        Example:
            >>> from cohorts import Customer
            >>> repo = MemoryRepository([Customer(1)])
            >>> try:
            ...     with repo.transaction():
            ...         repo.upsert([Customer(2)])
            ...         raise RuntimeError("crash")
            ... except RuntimeError:
            ...     pass
            >>> repo.ids()
            {1}
        """
        customers = dict(self._customers)
        schema = self._schema
        log_end = self._log_start + len(self._log)
        extensions = dict(self._extensions)
        snapshots = {key: v.snapshot() for key, v in self._extensions.items() if isinstance(v, Transactional)}
        self._depth += 1
        try:
            yield
        except BaseException:
            self._customers = customers
            self._schema = schema
            del self._log[log_end - self._log_start :]  # the block's writes leave the log
            for key, snapshot in snapshots.items():
                extensions[key].restore(snapshot)
            self._extensions = extensions
            raise
        finally:
            self._depth -= 1


def members_of(groups: GroupLookup, name: str) -> Collection[CustomerId]:
    """The members of group ``name`` as a collection SQL can bind (TypeError when not iterable)."""
    members = groups(name)
    if isinstance(members, Collection):
        return members
    raise TypeError(f"groups({name!r}) must return a collection of customer ids, not {type(members).__name__}")
