"""Records matched with stored customers (by id, phone, email...) and written to a repository in batches."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from ..ast import CUSTOMER, Condition, Op
from ..groups import Groups
from ..model import Customer, CustomerId
from ..repository import MemoryRepository, Repository
from ..schema import AttributeType
from .cells import InvalidValue, normalise
from .mapping import ID_TARGET, Field, MappingError, Plan
from .records import Policy, Record, match_key, merge_records
from .report import ImportReport, Reject

_TEXT = AttributeType.TEXT


# -- writing ---------------------------------------------------------------------------


class Rollback(Exception):
    """Raised inside the transaction to undo it (dry run, or atomic with rejects)."""


def resolve_match_on(match_on: str | None, plan: Plan) -> Field | None:
    """The key field: ``match_on``'s, or the id column, else the phone, else the email.

    The email goes first when the first rows leave the phone nearly always
    blank (under a fifth of them) and fill the email more (a mailing list's export).
    """
    if match_on is None:
        phone, email = plan.field_for("customer.phone"), plan.field_for("customer.email")
        if phone is not None and email is not None:
            phones, emails = plan.filled.get(phone.position, 1.0), plan.filled.get(email.position, 0.0)
            if phones < 0.2 and emails > phones:
                phone, email = email, phone
        for field in (plan.field_for(ID_TARGET), phone, email):
            if field is not None:
                return field
        return None
    text = match_on.strip()
    name = text.removeprefix(f"{CUSTOMER}.")
    if name in ("id", "external_id", "external id"):
        name = "id"
    target = ID_TARGET if name == "id" else f"{CUSTOMER}.{name}"
    field = plan.field_for(target)
    if field is None:
        raise MappingError(f"match_on={match_on!r}, but no column maps to {target!r}", target=target)
    if field.kind is AttributeType.LIST:
        raise MappingError(f"match_on={match_on!r}: a list attribute cannot identify customers", target=target)
    return field


_LOOKUP_CHUNK = 64  # keys per select(): the rule's list is checked value by value
_EXACT_LIMIT = 200_000  # stored customers indexed exactly at the start of an import


_HASH_BITS = 0xFFFFFFFFFFFFFFFF


class _Bloom:
    """A set of keys in fixed memory (8 MiB), without false negatives: may say "maybe" for a new key.

    Each key sets four bits, at ``h1 + i * h2`` for i in 0..3 (two halves of
    its hash); the loops are written out, as they run for every row of an import.
    """

    def __init__(self, bits: int = 1 << 26) -> None:
        self.size = bits
        self.bits = bytearray((bits + 7) // 8)

    def add(self, key: Any) -> None:
        self.add_all((key,))

    def __contains__(self, key: Any) -> bool:
        return bool(self.maybe((key,)))

    def add_all(self, keys: Iterable[Any]) -> None:
        """Add every key."""
        bits, size = self.bits, self.size
        for key in keys:
            first = hash(key) & _HASH_BITS
            step = (first >> 32) | 1
            p = first % size
            bits[p >> 3] |= 1 << (p & 7)
            p = (first + step) % size
            bits[p >> 3] |= 1 << (p & 7)
            p = (first + 2 * step) % size
            bits[p >> 3] |= 1 << (p & 7)
            p = (first + 3 * step) % size
            bits[p >> 3] |= 1 << (p & 7)

    def maybe(self, keys: Iterable[Any]) -> list[Any]:
        """The keys that may have been added (all that were, and rarely others), in order."""
        bits, size = self.bits, self.size
        found = []
        for key in keys:
            first = hash(key) & _HASH_BITS
            step = (first >> 32) | 1
            p = first % size
            if not bits[p >> 3] >> (p & 7) & 1:
                continue
            p = (first + step) % size
            if not bits[p >> 3] >> (p & 7) & 1:
                continue
            p = (first + 2 * step) % size
            if not bits[p >> 3] >> (p & 7) & 1:
                continue
            p = (first + 3 * step) % size
            if not bits[p >> 3] >> (p & 7) & 1:
                continue
            found.append(key)
        return found


class _KeyIndex:
    """Which stored customers a match key may name, without querying for every row.

    Stored customers are indexed exactly when there are few of them (or the
    repository is in memory), else their keys go into a Bloom filter of
    fixed size; customers this import creates go into the exact index in
    memory, or into the Bloom filter otherwise, so memory does not grow with
    the file. Keys the index cannot rule out are looked up in the repository.
    """

    def __init__(self, repository: Repository, key_field: Field | None) -> None:
        self.key_field = key_field
        self.exact: dict[Any, list[CustomerId]] | None = None
        self.seen: _Bloom | None = None
        if key_field is None:
            return
        in_memory = isinstance(repository, MemoryRepository)
        if not in_memory:
            self.seen = _Bloom()
        if in_memory or len(repository) <= _EXACT_LIMIT:
            self.exact = {}
        for customer in repository:
            key = self.stored_key(customer)
            if key is None:
                continue
            if self.exact is not None:
                self.exact.setdefault(key, []).append(customer.id)
            elif self.seen is not None:
                self.seen.add_all((key,))

    def stored_key(self, customer: Customer) -> Any:
        """The match key of a stored customer, read as the file's keys are."""
        field = self.key_field
        assert field is not None
        if field.is_id:
            return str(customer.id)
        try:
            value = normalise(customer.attributes.get(field.path.attribute), field.kind or _TEXT)
        except InvalidValue:
            return None
        return None if value is None else match_key(value)

    def candidates(self, keys: Sequence[Any]) -> tuple[dict[Any, list[CustomerId]], list[Any]]:
        """The ids known for some keys, and the keys to look up in the repository."""
        if self.exact is None:
            assert self.seen is not None
            return {}, self.seen.maybe(keys)
        exact = self.exact
        known = {key: exact[key] for key in keys if key in exact}
        if self.seen is None:
            return known, []
        return known, self.seen.maybe(key for key in keys if key not in known)

    def created(self, pairs: Sequence[tuple[Any, CustomerId]]) -> None:
        """Note the customers the import created: (key, id) pairs."""
        if self.seen is not None:
            self.seen.add_all(key for key, _ in pairs)
        elif self.exact is not None:
            for key, ident in pairs:
                self.exact.setdefault(key, []).append(ident)


class Writer:
    """Writes batches of records into a repository, matching existing customers."""

    def __init__(
        self,
        repository: Repository,
        report: ImportReport,
        key_field: Field | None,
        policy: Policy,
        group: str | None,
        groups: Groups,
        refresh: bool = False,
        now: dt.datetime | None = None,
    ) -> None:
        self.repository = repository
        self.report = report
        self.key_field = key_field
        self.policy = policy
        self.group = group
        self.groups = groups
        self.refresh = refresh
        self.now = now
        self._prefix = uuid.uuid4().hex[:12]
        self._count = 0
        self._keys = _KeyIndex(repository, key_field)

    def _get(self, ident: str) -> Customer | None:
        customer: Customer | None = self.repository.get(ident)
        if customer is None and ident.isdigit() and ident[0] != "0" and len(ident) < 19:
            customer = self.repository.get(int(ident))
        return customer

    def _existing(self, records: Sequence[Record]) -> dict[Any, list[Customer]]:
        """The stored customers each record's key matches."""
        field = self.key_field
        found: dict[Any, list[Customer]] = {}
        keys = list(dict.fromkeys(r.key for r in records if r.key is not None))
        if field is None or not keys:
            return found
        known, unsure = self._keys.candidates(keys)
        for key, ids in known.items():
            customers = [c for c in map(self.repository.get, ids) if c is not None]
            if customers:
                found[key] = customers
        if not unsure:
            return found
        if field.is_id:
            for key in unsure:
                customer = self._get(key)
                if customer is not None:
                    found[key] = [customer]
            return found
        values = {r.key: r.attributes[field.path.attribute] for r in records if r.key in set(unsure)}
        wanted = list(values.values())
        for start in range(0, len(wanted), _LOOKUP_CHUNK):
            chunk = tuple(wanted[start : start + _LOOKUP_CHUNK])
            for ident in self.repository.select(Condition(field.path, Op.IN, chunk)):
                customer = self.repository.get(ident)
                key = None if customer is None else self._keys.stored_key(customer)
                if customer is not None and key in values:
                    found.setdefault(key, []).append(customer)
        return found

    def write(self, batch: Sequence[Record]) -> None:
        report = self.report
        unique: dict[Any, Record] = {}
        order: list[Record] = []
        for record in batch:
            # Rows of one customer: same key, or (without a key) the same id.
            same = record.key if record.key is not None else None if record.id is None else ("id", record.id)
            first = unique.get(same) if same is not None else None
            if first is None and record.id is not None:
                first_by_id = unique.get(("id", record.id))
                if first_by_id is not None and first_by_id.key is not None and record.key is not None:
                    reason = f"id {record.id!r} is on line {first_by_id.line} with another {self._key_name()}"
                    self._reject_row(record, reason)
                    continue
                first = first_by_id
            if first is None:
                if same is not None:
                    unique[same] = record
                if record.id is not None:
                    unique.setdefault(("id", record.id), record)
                order.append(record)
                continue
            if first.id is not None and record.id is not None and first.id != record.id:
                self._reject_row(record, f"same {self._key_name()} as line {first.line} but another id")
                continue
            first.attributes = merge_records(first.attributes, record.attributes, self.policy)
            first.events.extend(record.events)
            first.id = first.id or record.id
            if first.key is None and record.key is not None:
                first.key = record.key
                unique.setdefault(record.key, first)
            first.duplicates.append(record)
            report.merged += 1
        existing = self._existing(order)
        customers: list[Customer] = []
        created_keys: list[tuple[Any, CustomerId]] = []
        created = updated = 0
        by_id = self.key_field is not None and self.key_field.is_id
        for record in order:
            matches = existing.get(record.key, []) if record.key is not None else []
            if len(matches) > 1:
                ids = ", ".join(repr(c.id) for c in matches[:5])
                self._reject(record, f"{self._key_name()} matches {len(matches)} customers ({ids})")
                continue
            stored = matches[0] if matches else None
            if stored is not None and record.id is not None and str(stored.id) != record.id:
                self._reject(record, f"{self._key_name()} belongs to customer {stored.id!r}, not {record.id!r}")
                continue
            if stored is None and record.id is not None and not by_id:
                stored = self._get(record.id)
                if stored is not None and self._keys.stored_key(stored) not in (None, record.key):
                    self._reject(record, f"id {record.id!r} belongs to a customer with another {self._key_name()}")
                    continue
            if stored is not None:
                ident: CustomerId = stored.id
                attributes = merge_records(stored.attributes, record.attributes, self.policy)
                updated += 1
            else:
                ident = record.id if record.id is not None else self._new_id()
                attributes = record.attributes
                created += 1
                if record.key is not None:
                    created_keys.append((record.key, ident))
            customers.append(Customer(ident, attributes, record.events))
        if customers:
            self.repository.upsert(customers)  # adds the events an existing customer lacks
        self._keys.created(created_keys)
        if self.group is not None and customers:
            self.groups.add_imported(self.group, [c.id for c in customers], self.now)  # just upserted
        if self.refresh and customers:
            # Groups with rules re-read the customers this batch created or changed, in the same transaction.
            self.groups.refresh(self.now, customer_ids=[c.id for c in customers])
        report.created += created
        report.updated += updated

    def _reject_row(self, record: Record, reason: str) -> None:
        self.report.rejects.append(Reject(record.line, None, reason, record.cells))
        self.report.rejected += 1

    def _new_id(self) -> str:
        self._count += 1
        return f"{self._prefix}-{self._count}"

    def _key_name(self) -> str:
        return "id" if self.key_field is None or self.key_field.is_id else self.key_field.path.attribute

    def _reject(self, record: Record, reason: str) -> None:
        column = self.key_field.column if self.key_field is not None else None
        self.report.rejects.append(Reject(record.line, column, reason, record.cells))
        self.report.rejected += 1
        for duplicate in record.duplicates:
            again = f"{reason} (as line {record.line})"
            self.report.rejects.append(Reject(duplicate.line, column, again, duplicate.cells))
            self.report.rejected += 1
            self.report.merged -= 1
